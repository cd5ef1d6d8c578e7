#!/usr/bin/env bash
# Install ble-bridge as a systemd service on Debian 12 / Raspberry Pi OS (bookworm).
#   sudo deploy/install.sh                 # from a checkout, packages from apt and PyPI
#   sudo deploy/install.sh --offline DIR   # wheels from scripts/bundle.sh --arch ... (no internet)
# Idempotent: a rerun gives the same result, and every step checks the system itself (no
# marker files), so a run that failed half-way is finished by running it again. Works into a
# root whose systemd is installed but not running (an SD-card image being built, a chroot):
# the unit is enabled without starting, and what is deferred to first boot is printed.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
prefix=/opt/ble-bridge
etc=/etc/ble-bridge
conf=$etc/config.toml
state=/var/lib/ble-bridge
unitdir=/etc/systemd/system
bluez_conf=/etc/bluetooth/main.conf
begin="# --- ble-bridge (deploy/install.sh; removed by deploy/uninstall.sh) ---"
end="# --- end ble-bridge ---"
offline=""
while [ $# -gt 0 ]; do
  case "$1" in
    --offline) offline=$(cd "$2" && pwd); shift 2 ;;
    -h | --help) sed -n 2,8p "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (--offline DIR)" >&2; exit 2 ;;
  esac
done
say() { echo "install.sh: $*" >&2; }
[ "$(id -u)" -eq 0 ] || { say "run as root (sudo)"; exit 1; }
booted=0
[ -d /run/systemd/system ] && booted=1  # sd_booted(): systemd is PID 1 here
deferred=()

# 1. Debian packages. Offline, they must already be in the image (Pi OS has them).
debs=(python3 python3-venv bluez dbus)
if [ -n "$offline" ]; then
  [ -d "$offline/wheels" ] || { say "$offline has no wheels/ (make it with scripts/bundle.sh)"; exit 2; }
  arch=$(cat "$offline/arch" 2>/dev/null || echo "?")
  [ "$arch" = "$(uname -m)" ] || say "warning: bundle is for $arch, this machine is $(uname -m)"
  mapfile -t extra < <(grep -v '^\s*$' "$offline/debian-packages.txt" 2>/dev/null || true)
  debs+=("${extra[@]}")
fi
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ -n "$offline" ]; then
    say "offline and not installed: ${missing[*]}; add them to the image (apt-get install ${missing[*]})"
    exit 1
  fi
  say "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. The user and its groups (bluez creates `bluetooth`; Pi OS has `gpio`, Debian may not).
getent group bluetooth >/dev/null || groupadd --system bluetooth
getent group gpio >/dev/null || groupadd --system gpio
getent group ble-bridge >/dev/null || groupadd --system ble-bridge
id ble-bridge >/dev/null 2>&1 || useradd --system --gid ble-bridge --home-dir "$state" \
  --no-create-home --shell /usr/sbin/nologin ble-bridge
usermod -aG bluetooth,gpio ble-bridge

# 3. The venv, rebuilt each run (a half-built one from a failed run is never reused).
site=()
[ -n "$offline" ] && [ -s "$offline/debian-packages.txt" ] && site=(--system-site-packages)
install -d -m 0755 "$prefix"
rm -rf "$prefix/.venv"
python3 -m venv "${site[@]}" "$prefix/.venv"
if [ -n "$offline" ]; then
  "$prefix/.venv/bin/pip" install -q --isolated --no-index --find-links "$offline/wheels" ble-bridge
else
  "$prefix/.venv/bin/pip" install -q "$src"
fi
"$prefix/.venv/bin/ble-bridge" --help >/dev/null
install -m 0644 "$src/README.md" "$prefix/README.md"

# 4. Directories, config (never overwritten), key (0600, created once).
install -d -o root -g ble-bridge -m 0750 "$etc"
[ -f "$conf" ] || install -o root -g ble-bridge -m 0640 "$src/deploy/config.example.toml" "$conf"
install -d -o ble-bridge -g ble-bridge -m 0700 "$state"
if [ ! -s "$state/identity.key" ]; then
  rm -f "$state/identity.key" "$state/identity.key.signer"
  runuser -u ble-bridge -- "$prefix/.venv/bin/ble-bridge" keygen --out "$state/identity.key" >/dev/null
fi
chown -R ble-bridge:ble-bridge "$state"
chmod 0600 "$state/identity.key"

# 5. BlueZ settings: main.conf without our block, plus the block; rewritten only if it differs.
bluez_changed=0
if [ -f "$bluez_conf" ]; then
  want=$(mktemp)
  awk -v b="$begin" -v e="$end" '$0==b || $0=="# --- ble-bridge ---" {skip=1} !skip {print} $0==e {skip=0}' \
    "$bluez_conf" | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}' > "$want"
  { echo; echo "$begin"; grep -v '^#' "$src/deploy/bluetooth/main.conf.d-ble-bridge.conf" | grep -v '^\s*$'; echo "$end"; } >> "$want"
  if ! cmp -s "$want" "$bluez_conf"; then
    chmod --reference="$bluez_conf" "$want"
    mv "$want" "$bluez_conf"
    bluez_changed=1
    say "BlueZ settings merged into $bluez_conf"
  else
    rm -f "$want"
  fi
else
  say "warning: $bluez_conf missing (bluez not installed?); BlueZ settings not merged"
fi

# 6. udev rule, unit, and the network drop-in only when the node opens IP sockets
#    ([uplink], or [metrics] with a listen address).
install -m 0644 "$src/deploy/99-ble-bridge-leds.rules" /etc/udev/rules.d/99-ble-bridge-leds.rules
install -m 0644 "$src/deploy/ble-bridge.service" "$unitdir/ble-bridge.service"
net=0
bash "$src/deploy/needs-network.sh" "$conf" || net=$?
case "$net" in
  0)
    install -d -m 0755 "$unitdir/ble-bridge.service.d"
    install -m 0644 "$src/deploy/ble-bridge.service.d/network.conf" "$unitdir/ble-bridge.service.d/network.conf"
    say "IP sockets allowed ([uplink], or [metrics] listen, in $conf)"
    ;;
  1)
    rm -f "$unitdir/ble-bridge.service.d/network.conf"
    rmdir "$unitdir/ble-bridge.service.d" 2>/dev/null || true
    ;;
  *) say "$conf is not valid TOML; fix it and run the installer again"; exit 1 ;;
esac

# 7. systemd: enable; start/restart only what runs (on a booted system).
systemctl enable bluetooth.service >/dev/null 2>&1 || say "warning: could not enable bluetooth.service"
systemctl enable ble-bridge.service >/dev/null 2>&1
if [ "$booted" -eq 1 ]; then
  systemctl daemon-reload
  udevadm control --reload-rules 2>/dev/null || true
  if systemctl is-active -q bluetooth.service; then
    # restart when main.conf is newer than the running bluetoothd (also after a failed run)
    started=$(systemctl show -P ActiveEnterTimestamp bluetooth.service)
    if [ "$bluez_changed" -eq 1 ] || [ -z "$started" ] ||
      [ "$(stat -c %Y "$bluez_conf")" -ge "$(date -d "$started" +%s)" ]; then
      systemctl restart bluetooth.service
    fi
  else
    systemctl start bluetooth.service || say "warning: bluetooth.service did not start"
  fi
  systemctl restart ble-bridge.service
else
  deferred+=("ble-bridge.service and bluetooth.service are enabled; they start at first boot")
  deferred+=("bluetoothd reads $bluez_conf at first boot; udev reads the LED rule at first boot")
fi

echo "ble-bridge installed in $prefix (config $conf, state $state, key $state/identity.key)"
for d in "${deferred[@]}"; do echo "deferred: $d"; done
cat <<MSG
next: the node runs with no table; open or join one at runtime:
  $prefix/.venv/bin/ble-bridge table open NAME   (or: table list, table join NAME)
  or add a [[session]] with the table's validator keys to $conf and restart the service.
logs: journalctl -u ble-bridge -f; health: $prefix/.venv/bin/ble-bridge status
MSG
