#!/usr/bin/env bash
# Install ble-bridge as a systemd service on Raspberry Pi OS / Debian 12. Run as root from a
# checkout: `sudo deploy/install.sh`. Idempotent; re-run after `git pull` to upgrade.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
prefix=/opt/ble-bridge
conf=/etc/ble-bridge/config.toml

[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root (sudo)" >&2; exit 1; }

apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv bluez dbus rsync >/dev/null

id ble-bridge >/dev/null 2>&1 || useradd --system --home-dir /var/lib/ble-bridge --shell /usr/sbin/nologin ble-bridge
getent group gpio >/dev/null || groupadd --system gpio  # the unit's SupplementaryGroups=
usermod -aG bluetooth ble-bridge

mkdir -p "$prefix"
rsync -a --delete --exclude .venv --exclude .git "$src"/ "$prefix"/
[ -x "$prefix/.venv/bin/python" ] || python3 -m venv "$prefix/.venv"
"$prefix/.venv/bin/pip" install -q --upgrade pip
"$prefix/.venv/bin/pip" install -q "$prefix"

install -d -m 0755 /etc/ble-bridge
[ -f "$conf" ] || install -m 0644 "$src/deploy/config.example.toml" "$conf"
install -d -o ble-bridge -g ble-bridge -m 0700 /var/lib/ble-bridge
[ -f /var/lib/ble-bridge/identity.key ] || \
  runuser -u ble-bridge -- "$prefix/.venv/bin/ble-bridge" keygen --out /var/lib/ble-bridge/identity.key

# BlueZ: merge our settings (a backup of main.conf is kept once).
if [ -f /etc/bluetooth/main.conf ] && ! grep -q 'ble-bridge' /etc/bluetooth/main.conf; then
  cp -n /etc/bluetooth/main.conf /etc/bluetooth/main.conf.before-ble-bridge
  { echo; echo "# --- ble-bridge ---"; cat "$src/deploy/bluetooth/main.conf.d-ble-bridge.conf"; } >> /etc/bluetooth/main.conf
  systemctl restart bluetooth
fi

install -m 0644 "$src/deploy/99-ble-bridge-leds.rules" /etc/udev/rules.d/
udevadm control --reload-rules || true
install -m 0644 "$src/deploy/ble-bridge.service" /etc/systemd/system/ble-bridge.service
# [uplink] and [metrics] need IP sockets: the network drop-in, only for such a config
dropin=/etc/systemd/system/ble-bridge.service.d/network.conf
had=$([ -f "$dropin" ] && echo yes || echo no)
if bash "$src/deploy/needs-network.sh" "$conf"; then
  install -d -m 0755 /etc/systemd/system/ble-bridge.service.d
  install -m 0644 "$src/deploy/ble-bridge.service.d/network.conf" "$dropin"
else
  rm -f "$dropin"
fi
now=$([ -f "$dropin" ] && echo yes || echo no)
systemctl daemon-reload
systemctl enable --now ble-bridge.service
[ "$had" = "$now" ] || systemctl try-restart ble-bridge.service  # the sockets it may open changed
echo "ble-bridge installed; logs: journalctl -u ble-bridge -f; health: $prefix/.venv/bin/ble-bridge status"
