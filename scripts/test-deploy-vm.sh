#!/usr/bin/env bash
# Slow tier: the installed service under a real systemd. Boots a Debian 12 guest (QEMU) whose
# PID 1 is systemd, installs ble-bridge with deploy/install.sh --offline (an x86_64 bundle from
# scripts/bundle.sh) as a user would, and checks in the guest (scripts/deploy-vm/guest.sh):
# the hardened unit reaches active (Type=notify: READY=1) and serves the control socket, runs
# as ble-bridge with NoNewPrivs, seccomp and no capabilities; MemoryDenyWriteExecute and the
# SystemCallFilter bite in this guest (a probe under the same properties is refused) while the
# node lives under them; memory stays under MemoryHigh=64M (memory.peak, memory.events high=0)
# with a table committing; WATCHDOG=1 pings arrive; kill -9 is restarted (Restart=), a stalled
# loop (SIGSTOP) is restarted by the watchdog; SIGTERM stops cleanly; a rerun of install.sh
# keeps bluetoothd running; pairing through our Agent1 with the real bluetoothd from a second
# controller (scripts/deploy-vm/pair.py: refused while the window is closed, refused by the
# agent, accepted inside the window, refused with no agent; the error names are recorded);
# uninstall.sh and --purge leave /etc, /opt, /var/lib, /usr/local as they were.
#
#   sudo bash scripts/test-deploy-vm.sh [--logs DIR]
#
# The guest: the installer test's Debian 12 root (scripts/debian-root.sh: systemd, dbus,
# bluez, python3-venv, as on Raspberry Pi OS) with the kernel and modules of the VM tier's
# bookworm base (scripts/bluez-vm/rootfs.sh, shared cache with scripts/test-bluez-vm.sh and its
# lock, held only while a base or image is built), BlueZ's btvirt for two virtual LE
# controllers (hci0 for the node, hci1 for the pairing phone), no network. Environment:
# BLUEZ_VM_CACHE, BLUEZ_VM_KVM=1, BLUEZ_VM_MEM (MiB, default 1024), BLUEZ_VM_TIMEOUT (s, 2400).
# Last line, exactly:
#   deploy-vm checks=<int> failed=<int> mem_peak_mib=<float> restarts=<int> pair_closed=<error> pair_refused=<error> pair_open=<ok|error> pair_no_agent=<error>
# Exit status 0 when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
HERE=$REPO/scripts/deploy-vm
LOGS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --logs) LOGS=$2; shift 2 ;;
    -h | --help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "test-deploy-vm: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
say() { echo "test-deploy-vm: $*" >&2; }
hash_of() { sha256sum | cut -c1-12; }
[ "$(id -u)" -eq 0 ] || { say "needs root (debootstrap, chroot, mkfs)"; exit 2; }
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
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

# The kernel: the VM tier's bookworm base (same recipe and key as scripts/test-bluez-vm.sh).
base_key=$( (cat "$REPO/scripts/bluez-vm/rootfs.sh"; echo bookworm) | hash_of)
BASE=$CACHE/base-bookworm-$base_key
if [ ! -d "$BASE" ]; then
  say "building the bookworm base (debootstrap; a few minutes, once)"
  rm -rf "$BASE.tmp"
  BLUEZ_VM_MIRROR=${BLUEZ_VM_MIRROR:-} bash "$REPO/scripts/bluez-vm/rootfs.sh" bookworm "$BASE.tmp"
  mv "$BASE.tmp" "$BASE"
fi
# The system: the installer test's Debian 12 root (systemd as on Raspberry Pi OS).
tarball=$(bash scripts/debian-root.sh "${BLE_BRIDGE_CHROOT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ble-bridge-chroot}")

WORK=$(mktemp -d "$CACHE/.deploy-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
image_key=$( (echo "$base_key"; stat -c '%s %Y' "$tarball"; sed -n '/^# --- image/,/^# --- end image/p' "$0"; cat "$HERE"/*.service) | hash_of)
IMAGE=$CACHE/deploy-image-$image_key
# --- image: the Debian 12 root + the base's kernel modules and btvirt + the test units -------
if [ ! -f "$IMAGE/rootfs.img" ]; then
  say "building the deploy image $image_key"
  rm -rf "$IMAGE.tmp"
  mkdir -p "$IMAGE.tmp"
  ROOT=$WORK/rootfs
  mkdir -p "$ROOT"
  tar -C "$ROOT" -xf "$tarball"
  kver=$(ls "$BASE/rootfs/usr/lib/modules" | head -1)
  mkdir -p "$ROOT/usr/lib/modules"
  cp -a "$BASE/rootfs/usr/lib/modules/$kver" "$ROOT/usr/lib/modules/"
  install -m 755 "$BASE/rootfs/usr/bin/btvirt" "$ROOT/usr/local/bin/btvirt"
  install -m 644 "$HERE"/*.service "$ROOT/etc/systemd/system/"
  mkdir -p "$ROOT/etc/systemd/system/multi-user.target.wants"
  ln -sf /etc/systemd/system/deploy-vm-check.service "$ROOT/etc/systemd/system/multi-user.target.wants/"
  echo deploy-vm >"$ROOT/etc/hostname"
  : >"$ROOT/etc/machine-id"
  size_mb=$(($(du -sm "$ROOT" | cut -f1) + 600))
  truncate -s "${size_mb}M" "$IMAGE.tmp/rootfs.img"
  mkfs.ext4 -q -F -L deploy-vm -d "$ROOT" "$IMAGE.tmp/rootfs.img"
  cp "$BASE/vmlinuz" "$BASE/initrd.img" "$IMAGE.tmp/"
  rm -rf "$ROOT" "$IMAGE"
  mv "$IMAGE.tmp" "$IMAGE"
  ls -dt "$CACHE"/deploy-image-* 2>/dev/null | grep -v '\.tmp$' | tail -n +3 | xargs -r rm -rf
fi
# --- end image
flock -u 9   # built: the boot below reads the image (snapshot=on) and needs no lock

share=${LOGS:-$CACHE/runs/deploy-$(date -u +%Y%m%dT%H%M%S)}
mkdir -p "$share"
share=$(cd "$share" && pwd)
rm -rf "$share/out" "$share/src" "$share/bundle" "$share/exitcode"
mkdir -p "$share/out" "$share/src"
git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -C "$share/src" -xf -
say "bundle: scripts/bundle.sh --arch x86_64"
bash scripts/bundle.sh --arch x86_64 --out "$share/bundle" 2>"$WORK/bundle.log" | tail -1 >&2 || {
  cat "$WORK/bundle.log" >&2
  exit 1
}
cp "$HERE/guest.sh" "$HERE/pair.py" "$share/"

ACCEL=(-accel tcg,thread=multi -cpu max)
[ "${BLUEZ_VM_KVM:-0}" = 1 ] && ACCEL=(-accel kvm -cpu host)
say "booting (systemd as PID 1; logs in $share)"
t0=$(date +%s)
rc=0
timeout "${BLUEZ_VM_TIMEOUT:-2400}" qemu-system-x86_64 "${ACCEL[@]}" -m "${BLUEZ_VM_MEM:-1024}" -smp 1 \
  -kernel "$IMAGE/vmlinuz" -initrd "$IMAGE/initrd.img" \
  -append "console=ttyS0 root=/dev/vda rw panic=-1 systemd.show_status=0 loglevel=3" \
  -drive "file=$IMAGE/rootfs.img,if=virtio,format=raw,snapshot=on" \
  -virtfs "local,path=$share,mount_tag=host0,security_model=none,id=host0" \
  -device virtio-rng-pci -nic none -display none -monitor none -no-reboot \
  -serial "file:$share/console.log" &
qpid=$!
tail -n +1 -F "$share/console.log" 2>/dev/null | grep --line-buffered -E '^\[guest' >&2 &
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
  say "guest driver exit code: $guest_rc (see $share/out/guest.log, $share/console.log)"
  failed=$((failed + 1))
fi
m() { grep -m1 "^$1=" "$share/out/measure.txt" | cut -d= -f2- || true; }
echo "deploy-vm checks=$checks failed=$failed mem_peak_mib=$(m mem_peak_mib) restarts=$(m restarts) pair_closed=$(m pair_closed) pair_refused=$(m pair_refused) pair_open=$(m pair_open) pair_no_agent=$(m pair_no_agent)"
[ "$failed" -eq 0 ]
