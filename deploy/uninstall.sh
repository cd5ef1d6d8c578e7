#!/usr/bin/env bash
# Remove ble-bridge: the service, unit and drop-in, udev rule, venv, config and our block in
# BlueZ's main.conf. The state dir (/var/lib/ble-bridge: key, database) and the user are kept
# unless --purge. Safe to rerun; works in a root whose systemd is not running.
set -euo pipefail
prefix=/opt/ble-bridge
state=/var/lib/ble-bridge
unitdir=/etc/systemd/system
bluez_conf=/etc/bluetooth/main.conf
begin="# --- ble-bridge (deploy/install.sh; removed by deploy/uninstall.sh) ---"
end="# --- end ble-bridge ---"
purge=0
case "${1:-}" in
  --purge) purge=1 ;;
  "") ;;
  *) echo "uninstall.sh: unknown argument $1 (--purge)" >&2; exit 2 ;;
esac
[ "$(id -u)" -eq 0 ] || { echo "uninstall.sh: run as root (sudo)" >&2; exit 1; }
booted=0
[ -d /run/systemd/system ] && booted=1

if [ -f "$unitdir/ble-bridge.service" ]; then
  [ "$booted" -eq 1 ] && systemctl stop ble-bridge.service 2>/dev/null || true
  systemctl disable ble-bridge.service >/dev/null 2>&1 || true
fi
rm -rf "$unitdir/ble-bridge.service" "$unitdir/ble-bridge.service.d" /etc/udev/rules.d/99-ble-bridge-leds.rules
rm -rf "$prefix"
if [ -f "$bluez_conf" ] && grep -Fqx -e "$begin" -e "# --- ble-bridge ---" "$bluez_conf"; then
  tmp=$(mktemp)
  awk -v b="$begin" -v e="$end" '$0==b || $0=="# --- ble-bridge ---" {skip=1} !skip {print} $0==e {skip=0}' \
    "$bluez_conf" | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}' > "$tmp"
  chmod --reference="$bluez_conf" "$tmp"
  mv "$tmp" "$bluez_conf"
  rm -f "$bluez_conf.before-ble-bridge"
  if [ "$booted" -eq 1 ] && systemctl is-active -q bluetooth.service; then
    systemctl restart bluetooth.service
  fi
fi
rm -rf /etc/ble-bridge
if [ "$booted" -eq 1 ]; then
  systemctl daemon-reload
  udevadm control --reload-rules 2>/dev/null || true
fi
if [ "$purge" -eq 1 ]; then
  rm -rf "$state"
  id ble-bridge >/dev/null 2>&1 && userdel ble-bridge
  getent group ble-bridge >/dev/null && groupdel ble-bridge
  echo "ble-bridge removed, with its state, user and group"
else
  echo "ble-bridge removed; kept $state (key, database) and the ble-bridge user (--purge removes them)"
fi
