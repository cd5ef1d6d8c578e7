#!/usr/bin/env bash
# Exit 0 when the node this config file describes opens IP sockets, so the installer adds the
# unit's network drop-in: an [uplink] section (the MQTT uplink), or [metrics] with a
# non-empty `listen` (the Prometheus endpoint's host:port; without it metrics are off, as in
# ble_bridge/node.py). Exit 1 when it opens none, 2 when the file is not readable TOML.
# The file is parsed as TOML (python3's tomllib: Debian 12 has 3.11), not grepped, so
# comments, strings and a [metrics] with only max_clients count as they do for the node.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: needs-network.sh CONFIG.toml" >&2; exit 2; }
exec python3 - "$1" <<'PY'
import sys
import tomllib

path = sys.argv[1]
try:
    with open(path, "rb") as f:
        doc = tomllib.load(f)
except (OSError, tomllib.TOMLDecodeError) as e:
    print(f"needs-network.sh: {path}: {e}", file=sys.stderr)
    sys.exit(2)
metrics = doc.get("metrics")
listen = metrics.get("listen", "") if isinstance(metrics, dict) else ""
sys.exit(0 if "uplink" in doc or listen else 1)
PY
