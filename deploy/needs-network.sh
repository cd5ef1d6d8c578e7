#!/usr/bin/env bash
# Exit 0 when the config file given has an [uplink] or a [metrics] section (the MQTT uplink
# and the Prometheus endpoint need IP sockets: the installer adds the unit's network
# drop-in), 1 when it has neither. Commented-out sections do not count.
set -euo pipefail
grep -Eq '^[[:space:]]*\[(uplink|metrics)\][[:space:]]*(#.*)?$' "$1"
