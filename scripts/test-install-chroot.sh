#!/usr/bin/env bash
# Slow tier: deploy/install.sh and uninstall.sh in a throwaway Debian 12 root (debootstrap,
# cached by scripts/debian-root.sh), offline from an x86_64 bundle, without booting systemd:
# install, rerun (same result), a run that fails half-way then a rerun, systemd-analyze
# verify/security on the installed unit, the network drop-in ([uplink] or [metrics] listen),
# uninstall (state kept), reinstall (same key), uninstall --purge; then `bundle.sh --arch A --check` for aarch64, armv7l
# and x86_64 (each arch resolves completely). Needs root. Last line:
#   install-chroot checks=N failed=0
# Cache: BLE_BRIDGE_CHROOT_CACHE (default ~/.cache/ble-bridge-chroot).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
cache=${BLE_BRIDGE_CHROOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ble-bridge-chroot}
[ "$(id -u)" -eq 0 ] || { echo "test-install-chroot.sh: needs root (chroot)" >&2; exit 1; }
tarball=$(bash scripts/debian-root.sh "$cache")
work=$(mktemp -d /tmp/ble-bridge-chroot.XXXXXX)
root=$work/root
cleanup() {
  for m in proc dev; do mountpoint -q "$root/$m" && umount -l "$root/$m"; done
  rm -rf "$work"
}
trap cleanup EXIT
checks=0 failed=0
check() {  # check NAME COMMAND...
  checks=$((checks + 1))
  if "${@:2}"; then echo "ok   $1"; else echo "FAIL $1"; failed=$((failed + 1)); fi
}
quiet() { "$@" >/dev/null; }
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }

echo "bundle: scripts/bundle.sh --arch x86_64" >&2
bash scripts/bundle.sh --arch x86_64 --out "$work/bundle" 2>&1 | tail -1 >&2
mkdir -p "$root"
tar -C "$root" -xf "$tarball"
mount --bind /dev "$root/dev"
mount -t proc proc "$root/proc"
mkdir -p "$root/src" "$root/bundle"
git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -C "$root/src" -xf -
cp -a "$work/bundle/." "$root/bundle/"
cp -a "$root/etc/bluetooth/main.conf" "$work/main.conf.pristine"

snapshot() {  # what must be equal after an install and a rerun
  in_root sh -c 'cd / && sha256sum etc/ble-bridge/config.toml var/lib/ble-bridge/identity.key \
    etc/bluetooth/main.conf etc/systemd/system/ble-bridge.service \
    etc/udev/rules.d/99-ble-bridge-leds.rules; ls -l etc/systemd/system/multi-user.target.wants/ \
    | grep -o "ble-bridge.service.*"; stat -c "%n %a %U %G" var/lib/ble-bridge var/lib/ble-bridge/identity.key etc/ble-bridge; id ble-bridge'
}
installed_ok() {  # installed_ok LABEL
  check "$1: unit enabled" test -L "$root/etc/systemd/system/multi-user.target.wants/ble-bridge.service"
  check "$1: key 0600 ble-bridge" test "$(in_root stat -c '%a %U' /var/lib/ble-bridge/identity.key)" = "600 ble-bridge"
  check "$1: the venv's ble-bridge reads the key" quiet in_root /opt/ble-bridge/.venv/bin/ble-bridge keygen --show /var/lib/ble-bridge/identity.key
  check "$1: BlueZ block once" test "$(grep -c -- '--- ble-bridge' "$root/etc/bluetooth/main.conf")" = 1
  check "$1: groups bluetooth gpio" bash -c "chroot '$root' id -nG ble-bridge | grep -qw bluetooth && chroot '$root' id -nG ble-bridge | grep -qw gpio"
}

out=$(in_root bash /src/deploy/install.sh --offline /bundle 2>&1) || { echo "$out"; false; }
check "install exits 0" true
check "install says what is deferred to first boot" grep -q "^deferred: ble-bridge.service" <<<"$out"
installed_ok installed
first=$(snapshot)
check "no network drop-in without [metrics]/[uplink]" test ! -e "$root/etc/systemd/system/ble-bridge.service.d/network.conf"
verify=$(systemd-analyze --root="$root" verify ble-bridge.service 2>&1) && check "systemd-analyze verify (installed root)" test -z "$verify" \
  || { echo "$verify"; check "systemd-analyze verify (installed root)" false; }
score() { systemd-analyze security --offline=yes --root="$root" ble-bridge.service 2>/dev/null | sed -n 's/.*Overall exposure level for ble-bridge.service: \([0-9.]*\).*/\1/p'; }
s=$(score); echo "exposure default=$s"
check "exposure <= 2.0" awk -v s="$s" 'BEGIN{exit !(s!="" && s<=2.0)}'

in_root bash /src/deploy/install.sh --offline /bundle >/dev/null 2>&1
check "rerun exits 0 and gives the same result" test "$(snapshot)" = "$first"

# a run that fails half-way (a wheel missing: pip fails after user, groups, venv removal)
mkdir -p "$root/broken" && cp -a "$root/bundle/." "$root/broken/" && rm -f "$root"/broken/wheels/cryptography-*.whl
if in_root bash /src/deploy/install.sh --offline /broken >/dev/null 2>&1; then check "broken bundle fails" false; else check "broken bundle fails" true; fi
check "the failed run left no working venv" test ! -x "$root/opt/ble-bridge/.venv/bin/ble-bridge"
in_root bash /src/deploy/install.sh --offline /bundle >/dev/null 2>&1
check "rerun after the failure completes it (same result)" test "$(snapshot)" = "$first"
installed_ok "after the failed run"

printf '\n[uplink]\nbroker = "mqtt://127.0.0.1:1883"\nmesh_id = "test"\n' >> "$root/etc/ble-bridge/config.toml"
in_root bash /src/deploy/install.sh --offline /bundle >/dev/null 2>&1
check "[uplink] installs the network drop-in" test -f "$root/etc/systemd/system/ble-bridge.service.d/network.conf"
s=$(score); echo "exposure network=$s"
check "exposure with drop-in <= 2.5" awk -v s="$s" 'BEGIN{exit !(s!="" && s<=2.5)}'
sed -i '/^\[uplink\]/,$d' "$root/etc/ble-bridge/config.toml"
printf '\n[metrics]\nmax_clients = 4\n' >> "$root/etc/ble-bridge/config.toml"  # metrics off: no listen
in_root bash /src/deploy/install.sh --offline /bundle >/dev/null 2>&1
check "without [uplink], [metrics] with no listen: the drop-in goes again" test ! -e "$root/etc/systemd/system/ble-bridge.service.d"
printf 'listen = "127.0.0.1:9464"\n' >> "$root/etc/ble-bridge/config.toml"
in_root bash /src/deploy/install.sh --offline /bundle >/dev/null 2>&1
check "[metrics] listen installs the network drop-in" test -f "$root/etc/systemd/system/ble-bridge.service.d/network.conf"
sed -i '/^\[metrics\]/,$d' "$root/etc/ble-bridge/config.toml"

key=$(sha256sum < "$root/var/lib/ble-bridge/identity.key")
in_root bash /src/deploy/uninstall.sh >/dev/null
check "uninstall: unit, venv, config, udev rule gone" test ! -e "$root/etc/systemd/system/ble-bridge.service" -a ! -e "$root/opt/ble-bridge" -a ! -e "$root/etc/ble-bridge" -a ! -e "$root/etc/udev/rules.d/99-ble-bridge-leds.rules" -a ! -L "$root/etc/systemd/system/multi-user.target.wants/ble-bridge.service"
check "uninstall: main.conf as before" cmp -s "$work/main.conf.pristine" "$root/etc/bluetooth/main.conf"
check "uninstall: state dir and key kept" test "$(sha256sum < "$root/var/lib/ble-bridge/identity.key")" = "$key"
in_root bash /src/deploy/uninstall.sh >/dev/null
check "uninstall rerun exits 0" true
in_root bash /src/deploy/install.sh --offline /bundle >/dev/null 2>&1
check "reinstall keeps the key" test "$(sha256sum < "$root/var/lib/ble-bridge/identity.key")" = "$key"
in_root bash /src/deploy/uninstall.sh --purge >/dev/null
check "purge: state dir and user gone" test ! -e "$root/var/lib/ble-bridge"
check "purge: user gone" bash -c "! chroot '$root' id ble-bridge >/dev/null 2>&1"
check "purge: main.conf as before" cmp -s "$work/main.conf.pristine" "$root/etc/bluetooth/main.conf"
# Every Pi arch's bundle resolves completely as binary wheels (+ the Debian packages named for
# armv7l): what scripts/bundle.sh would put on a handheld at an event without internet.
for arch in aarch64 armv7l x86_64; do
  check "bundle --arch $arch --check resolves" quiet bash scripts/bundle.sh --arch "$arch" --check
done
echo "install-chroot checks=$checks failed=$failed"
[ "$failed" -eq 0 ]
