#!/usr/bin/env bash
# Slow tier: the handheld's button and LED on real GPIO lines. Debian's kernel ships neither
# gpio-sim nor gpio-mockup, so this builds gpio-sim out of tree for the VM tier's bookworm guest
# kernel (scripts/gpio-vm/module.sh: drivers/gpio/gpio-sim.c and kernel/irq/irq_sim.c from
# linux-source-6.1 of the kernel's version, against its linux-headers build tree), boots that
# kernel under QEMU, makes a simulated chip through configfs (28 lines labelled like a Pi's
# header chip) and runs the project's hardware.gpio.GpiodPanelIo (libgpiod v2, the gpiod wheel)
# on it (scripts/gpio-vm/guest.py): the lines as requested (pull-up, LED output, active low),
# edges from gpio-sim's pull attribute with kernel timestamps; the panel service on the lines
# (a short press: the link count on the LED; a 3 s press: the pairing window while held;
# the pairing blink read back from the LED line's value); then `ble-bridge run --transport sim`
# with [hardware] backend = "gpiod" on the chip: a long press opens the window (pair --status:
# origin button), the LED blinks it, pair --close ends it, a short press shows the link count,
# SIGTERM leaves the LED dark and the lines free.
#
#   sudo bash scripts/test-gpio-vm.sh [--logs DIR]
#
# Cache: the VM tier's (BLUEZ_VM_CACHE, default ~/.cache/ble-bridge-vm): its bookworm base
# (scripts/bluez-vm/rootfs.sh, same key as scripts/test-bluez-vm.sh), gpio-sim-<key>/ (the
# module) and gpio-image-<key>/ (the base as an ext4 image with scripts/gpio-vm/init), built
# under the cache's lock, which is released before the boot. The project and its dependencies
# are installed for the guest's Python with pip --target on the host into the run's share (no
# network in the guest). Environment: BLUEZ_VM_KVM=1, BLUEZ_VM_MEM (MiB, default 768), BLUEZ_VM_SMP (default 2),
# BLUEZ_VM_TIMEOUT (s, default 900).
# Last line, exactly:
#   gpio-vm checks=<int> failed=<int> service_long_press_s=<s> service_pairing_blink=<on_s>/<off_s>x<segments> node_long_press_s=<s> node_pairing_blink=<on_s>/<off_s>x<segments> node_readout_blinks=<int|None>
# Exit status 0 when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
HERE=$REPO/scripts/gpio-vm
LOGS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --logs) LOGS=$2; shift 2 ;;
    -h | --help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "test-gpio-vm: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
say() { echo "test-gpio-vm: $*" >&2; }
hash_of() { sha256sum | cut -c1-12; }
[ "$(id -u)" -eq 0 ] || { say "needs root (debootstrap, chroot, mkfs)"; exit 2; }
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} with apt"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

CACHE=${BLUEZ_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ble-bridge-vm}
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"   # the VM cache's lock: one build at a time (held only while building)
if ! flock -n 9; then
  say "waiting for another build in the VM cache (lock $CACHE/.lock)"
  flock 9
fi
base_key=$( (cat "$REPO/scripts/bluez-vm/rootfs.sh"; echo bookworm) | hash_of)
BASE=$CACHE/base-bookworm-$base_key
if [ ! -d "$BASE" ]; then
  say "building the bookworm base (debootstrap; a few minutes, once)"
  rm -rf "$BASE.tmp"
  BLUEZ_VM_MIRROR=${BLUEZ_VM_MIRROR:-} bash "$REPO/scripts/bluez-vm/rootfs.sh" bookworm "$BASE.tmp"
  mv "$BASE.tmp" "$BASE"
fi
kver=$(ls "$BASE/rootfs/usr/lib/modules" | head -1)
mod_key=$( (echo "$base_key $kver"; cat "$HERE/module.sh") | hash_of)
MOD=$CACHE/gpio-sim-$mod_key
if [ ! -f "$MOD/gpio-sim.ko" ]; then
  say "building gpio-sim for $kver (linux-source and headers in a copy of the base; once)"
  rm -rf "$MOD.tmp"
  bash "$HERE/module.sh" "$BASE" "$MOD.tmp"
  mv "$MOD.tmp" "$MOD"
fi
image_key=$( (echo "$base_key"; cat "$HERE/init") | hash_of)
IMAGE=$CACHE/gpio-image-$image_key
if [ ! -f "$IMAGE/rootfs.img" ]; then
  say "building the gpio image $image_key"
  rm -rf "$IMAGE.tmp"
  mkdir -p "$IMAGE.tmp"
  ROOT=$IMAGE.tmp/rootfs
  cp -a "$BASE/rootfs" "$ROOT"
  install -m 755 "$HERE/init" "$ROOT/sbin/gpio-vm-init"
  size_mb=$(($(du -sm "$ROOT" | cut -f1) + 300))
  truncate -s "${size_mb}M" "$IMAGE.tmp/rootfs.img"
  mkfs.ext4 -q -F -L gpio-vm -d "$ROOT" "$IMAGE.tmp/rootfs.img"
  rm -rf "$ROOT"
  cp "$BASE/vmlinuz" "$BASE/initrd.img" "$IMAGE.tmp/"
  rm -rf "$IMAGE"
  mv "$IMAGE.tmp" "$IMAGE"
  ls -dt "$CACHE"/gpio-image-* 2>/dev/null | grep -v '\.tmp$' | tail -n +3 | xargs -r rm -rf
fi
PYV=$(cat "$BASE/python-version")
flock -u 9

share=${LOGS:-$CACHE/runs/gpio-$(date -u +%Y%m%dT%H%M%S)}
mkdir -p "$share"
share=$(cd "$share" && pwd)
rm -rf "$share/out" "$share/site" "$share/exitcode"
mkdir -p "$share/out"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
say "the project and its dependencies for the guest's Python $PYV (pip --target)"
python3 -m pip wheel -q --no-deps -w "$WORK" "$REPO" >"$WORK/wheel.log" 2>&1 || { cat "$WORK/wheel.log" >&2; exit 1; }
env -u PIP_FIND_LINKS -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null python3 -m pip install -q \
  --target "$share/site" --only-binary=:all: --python-version "$PYV" --implementation cp \
  --abi "cp${PYV/./}" --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform linux_x86_64 \
  --platform any "$WORK"/ble_bridge-*.whl >"$WORK/pip.log" 2>&1 || { cat "$WORK/pip.log" >&2; exit 1; }
cp "$HERE/guest.py" "$MOD/gpio-sim.ko" "$share/"
cat >"$share/guest.sh" <<'EOF'
#!/bin/sh
export PYTHONPATH=/mnt/host/site PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
exec python3 /mnt/host/guest.py
EOF

ACCEL=(-accel tcg,thread=multi -cpu max)
[ "${BLUEZ_VM_KVM:-0}" = 1 ] && ACCEL=(-accel kvm -cpu host)
say "booting $kver with gpio-sim (logs in $share)"
t0=$(date +%s)
rc=0
timeout "${BLUEZ_VM_TIMEOUT:-900}" qemu-system-x86_64 "${ACCEL[@]}" -m "${BLUEZ_VM_MEM:-768}" -smp "${BLUEZ_VM_SMP:-2}" \
  -kernel "$IMAGE/vmlinuz" -initrd "$IMAGE/initrd.img" \
  -append "console=ttyS0 root=/dev/vda rw init=/sbin/gpio-vm-init quiet loglevel=3 panic=-1" \
  -drive "file=$IMAGE/rootfs.img,if=virtio,format=raw,snapshot=on" \
  -virtfs "local,path=$share,mount_tag=host0,security_model=none,id=host0" \
  -device virtio-rng-pci -nic none -display none -monitor none -no-reboot \
  -serial "file:$share/console.log" &
qpid=$!
tail -n +1 -F "$share/console.log" 2>/dev/null | grep --line-buffered -E '^\[(init|guest)' >&2 &
tpid=$!
wait $qpid || rc=$?
kill $tpid 2>/dev/null || true
say "VM ran $(($(date +%s) - t0)) s (qemu status $rc)"
touch "$share/out/checks.txt" "$share/out/measure.txt"
cat "$share/out/checks.txt"
checks=$(grep -c -E '^(ok|FAIL) ' "$share/out/checks.txt" || true)
failed=$(grep -c '^FAIL ' "$share/out/checks.txt" || true)
guest_rc=$(cat "$share/exitcode" 2>/dev/null || echo none)
if [ "$guest_rc" != 0 ]; then
  say "guest exit code: $guest_rc (see $share/out/guest.log, $share/console.log)"
  failed=$((failed + 1))
fi
m() { grep -m1 "^$1=" "$share/out/measure.txt" | cut -d= -f2- || true; }
echo "gpio-vm checks=$checks failed=$failed service_long_press_s=$(m service_long_press_s) service_pairing_blink=$(m service_pairing_blink) node_long_press_s=$(m node_long_press_s) node_pairing_blink=$(m node_pairing_blink) node_readout_blinks=$(m node_readout_blinks)"
[ "$failed" -eq 0 ]
