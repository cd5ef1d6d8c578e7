#!/usr/bin/env bash
# Real-BlueZ test tier (slow; not part of scripts/test.sh): N `ble-bridge run` nodes of one
# table on N virtual LE controllers driven by real bluetoothd, in Debian guests under QEMU.
#
#   sudo bash scripts/test-bluez-vm.sh [--logs DIR] [--duration S] [--nodes N]
#                                      [--scenario play|kill|chaos] [--link-wait S] [--no-retry]
#                                      [--chaos S] [--kills K] [--seed X]
#                                      [--one-vm] [--debug (bluetoothd -d, btmon)]
#                                      [--verbose (nodes -vv)]
#
# Topology: by default one VM per node, as on real Pis: each VM has its own kernel, bluetoothd
# and one controller, created on /dev/vhci by relay.py --vhci and wired over the VM's second
# serial port to a small "air" VM running `btvirt -s` (BlueZ 5.66's emulator, patched: see the
# btvirt stage below); the host's watch.py judges the table from the rows every VM writes.
# --one-vm (and --scenario kill, which inspects one bluetoothd) runs all nodes on
# `btvirt -L -lN` controllers of one bluetoothd in one VM instead: there the one-bluetoothd
# connect race (ATT before mgmt's Device Connected, "is already connected") adds failures.
#
# Environment: SUITE=bookworm (BlueZ 5.66, default) | trixie (BlueZ 5.82);
#   BLUEZ_VM_KVM=1 boots with KVM instead of TCG (nested KVM hangs a guest kernel on some
#   hosts, so TCG is the default); BLUEZ_VM_CACHE (default $XDG_CACHE_HOME/ble-bridge-vm or
#   ~/.cache/ble-bridge-vm); BLUEZ_VM_MEM (MiB per VM, default 768; 1536 with --one-vm);
#   BLUEZ_VM_SMP (default 1; 2 with --one-vm);
#   BLUEZ_VM_TIMEOUT (s, default 900); BLUEZ_VM_MIRROR (Debian mirror for debootstrap).
#
# The image is built once and cached, keyed by its inputs: the base (Debian + BlueZ + kernel)
# by this recipe and the suite; the image by the base, the project wheel, the dependency
# wheels (downloaded on the host: nothing is downloaded in the VM), the guest init and the
# project's BlueZ settings (deploy/bluetooth, appended to main.conf as deploy/install.sh does).
# Building needs root (debootstrap, chroot). Every run keeps its logs (node logs, bluetoothd,
# status polls, result.json) under --logs DIR or the cache's runs/ folder.
#
# Checks: every node pair linked both ways, heights still rising at the end, one state hash
# per height (and one block per height in the nodes' stores), no traceback in any node log.
# --scenario chaos (one VM per node; the lab's --chaos on real bluetoothd): once the links
# formed and the table commits, every --chaos S s (default 20) after the previous rejoin a
# random node (--seed) is killed with SIGKILL and restarted on its state, --kills K times
# (default 3); each must rejoin (linked both ways to every node, height above its height
# before the kill) within 90 s of the kill; then 35 s more play. The last line then adds
# kills=<int> rejoined=<int> worst_rejoin_s=<s>.
# If a run fails only because links did not form and the logs show the connect race (bluetoothd's
# "is already connected" or a node's failed connect), or a VM's controller never came up, the
# whole VM set is retried once, and the output says so; a traceback, a safety violation, a node
# that exited or a kill that did not rejoin never retries (scripts/bluez-vm/verdict.py).
# Last line, exactly:
#   bluez-vm nodes=<int> links=<int> heights=<int> rising=<yes|no> safety=<ok|violated>
# Exit status 0 when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
HERE=$REPO/scripts/bluez-vm

SUITE=${SUITE:-bookworm}
NODES=3
DURATION=90
SCENARIO=play
RETRY=1
DEBUG=0
VERBOSE=1
LINK_WAIT=180
LOGS=""
ONE_VM=0
CHAOS=20
KILLS=3
SEED=""
while [ $# -gt 0 ]; do
  case "$1" in
    --logs) LOGS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --nodes) NODES=$2; shift 2 ;;
    --scenario) SCENARIO=$2; shift 2 ;;
    --no-retry) RETRY=0; shift ;;
    --one-vm) ONE_VM=1; shift ;;
    --debug) DEBUG=1; shift ;;
    --verbose) VERBOSE=2; shift ;;
    --link-wait) LINK_WAIT=$2; shift 2 ;;
    --chaos) CHAOS=$2; shift 2 ;;
    --kills) KILLS=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    -h | --help) sed -n '2,48p' "$0"; exit 0 ;;
    *) echo "test-bluez-vm: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ "$SCENARIO" = kill ] && ONE_VM=1
case "$SCENARIO" in
  play | kill) ;;
  chaos) [ "$ONE_VM" = 1 ] && { echo "test-bluez-vm: --scenario chaos runs one VM per node (no --one-vm)" >&2; exit 2; } ;;
  *) echo "test-bluez-vm: --scenario must be play, kill or chaos" >&2; exit 2 ;;
esac
case "$SUITE" in bookworm | trixie) ;; *) echo "test-bluez-vm: SUITE must be bookworm or trixie" >&2; exit 2 ;; esac

CACHE=${BLUEZ_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ble-bridge-vm}
mkdir -p "$CACHE"
say() { echo "test-bluez-vm: $*" >&2; }
hash_of() { sha256sum | cut -c1-12; }

if [ "$(id -u)" -ne 0 ]; then
  say "needs root (debootstrap and chroot build the image; run with sudo)"
  exit 2
fi
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
command -v gcc >/dev/null || missing+=(gcc libc6-dev)
command -v patch >/dev/null || missing+=(patch)
command -v curl >/dev/null || missing+=(curl)
command -v xz >/dev/null || missing+=(xz-utils)
command -v python3 >/dev/null || missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} with apt"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# One build at a time per cache (two runs may share it).
exec 9>"$CACHE/.lock"
flock 9

# --- stage 1: Debian + BlueZ + kernel, keyed by the recipe and the suite --------------------
base_key=$( (cat "$HERE/rootfs.sh"; echo "$SUITE") | hash_of)
BASE=$CACHE/base-$SUITE-$base_key
if [ ! -d "$BASE" ]; then
  say "building the $SUITE base (debootstrap; a few minutes, once)"
  rm -rf "$BASE.tmp"
  BLUEZ_VM_MIRROR=${BLUEZ_VM_MIRROR:-} bash "$HERE/rootfs.sh" "$SUITE" "$BASE.tmp"
  mv "$BASE.tmp" "$BASE"
fi
PYV=$(cat "$BASE/python-version")

# --- wheels, built and downloaded on the host --------------------------------------------------
WORK=$(mktemp -d "$CACHE/.build-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/project"
python3 -m pip wheel -q --no-deps -w "$WORK/project" "$REPO" >"$WORK/wheel.log" 2>&1 || {
  cat "$WORK/wheel.log" >&2
  exit 1
}
WHEEL=$(ls "$WORK"/project/*.whl)
# The wheel's bytes change with build time stamps; its members' contents do not.
wheel_key=$(python3 - "$WHEEL" <<'EOF' | hash_of
import hashlib, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in sorted(z.namelist()):
        print(name, hashlib.sha256(z.read(name)).hexdigest())
EOF
)
deps_key=$( (echo "$PYV"; python3 - "$WHEEL" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    print("\n".join(l for l in z.read(meta).decode().splitlines() if l.startswith("Requires-Dist")))
EOF
) | hash_of)
DEPS=$CACHE/wheels-py$PYV-$deps_key
if [ ! -d "$DEPS" ]; then
  say "downloading dependency wheels for Python $PYV"
  rm -rf "$DEPS.tmp"
  mkdir -p "$DEPS.tmp"
  # Host pip settings (find-links, constraints) must not pick wheels for the host's Python.
  env -u PIP_FIND_LINKS -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null python3 -m pip download -q \
    -d "$DEPS.tmp" --only-binary=:all: --python-version "$PYV" --implementation cp \
    --abi "cp${PYV/./}" --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform linux_x86_64 \
    --platform any \
    "$WHEEL"
  rm -f "$DEPS.tmp"/ble_bridge-*.whl
  mv "$DEPS.tmp" "$DEPS"
fi

# --- stage 2: the image, keyed by everything that goes into it --------------------------------
image_key=$( (echo "$base_key $wheel_key $deps_key"; cat "$HERE/init" deploy/bluetooth/*.conf) | hash_of)
IMAGE=$CACHE/image-$SUITE-$image_key
if [ ! -f "$IMAGE/rootfs.img" ]; then
  say "building the $SUITE image $image_key"
  t0=$(date +%s)
  rm -rf "$IMAGE.tmp"
  mkdir -p "$IMAGE.tmp"
  ROOT=$WORK/rootfs
  cp -a "$BASE/rootfs" "$ROOT"
  mkdir -p "$ROOT/opt/wheels"
  cp "$DEPS"/*.whl "$WHEEL" "$ROOT/opt/wheels/"
  chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin sh -c \
    "python3 -m venv /opt/venv && /opt/venv/bin/pip install -q --no-index --find-links /opt/wheels /opt/wheels/$(basename "$WHEEL")" \
    >"$WORK/venv.log" 2>&1 || { cat "$WORK/venv.log" >&2; exit 1; }
  chroot "$ROOT" /opt/venv/bin/pip freeze >"$IMAGE.tmp/pip-freeze.txt" 2>/dev/null
  rm -rf "$ROOT/opt/wheels"
  # The project's BlueZ settings, appended to the Debian main.conf as deploy/install.sh does.
  cp "$ROOT/etc/bluetooth/main.conf.debian" "$ROOT/etc/bluetooth/main.conf"
  { echo; echo "# --- ble-bridge ---"; cat deploy/bluetooth/main.conf.d-ble-bridge.conf; } \
    >>"$ROOT/etc/bluetooth/main.conf"
  install -m 755 "$HERE/init" "$ROOT/sbin/bluez-vm-init"
  size_mb=$(($(du -sm "$ROOT" | cut -f1) + 400))
  truncate -s "${size_mb}M" "$IMAGE.tmp/rootfs.img"
  mkfs.ext4 -q -F -L bluez-vm -d "$ROOT" "$IMAGE.tmp/rootfs.img"
  cp "$BASE/vmlinuz" "$BASE/initrd.img" "$BASE/bluez-version" "$IMAGE.tmp/"
  rm -rf "$ROOT" "$IMAGE"
  mv "$IMAGE.tmp" "$IMAGE"
  say "image built in $(($(date +%s) - t0)) s"
  # Keep the two newest images per suite.
  ls -dt "$CACHE"/image-"$SUITE"-* 2>/dev/null | grep -v '\.tmp$' | tail -n +3 | xargs -r rm -rf
fi
# --- the air's controller emulator: BlueZ 5.66's btvirt, patched, built on the host ----------
# btvirt's LE links get a handle per end from the lowest free number on each controller, but the
# remote is told (and sent ACL data under) the initiator's handle: in a triangle of 3 nodes the
# third link's ends disagree and its data goes to another link or nowhere (links form, then ATT
# requests vanish and connects time out). btdev-one-handle.patch gives both ends one handle.
# Both forms run this btvirt (the air VM; the one VM, in place of the image's), for both suites:
# it is the emulated controllers, not the host stack under test. Source: Debian's orig tarball, checked by hash.
BZ_SRC_SHA=a231fb9d151780edf6d2536c81914e2dbd3daa36b68f486badaf98a7f34021e4
btvirt_key=$( (echo "$BZ_SRC_SHA"; cat "$HERE/btdev-one-handle.patch"; sed -n '/^# --- the air/,/^# --- end air/p' "$0") | hash_of)
BTVIRT=$CACHE/btvirt-$btvirt_key
if [ ! -x "$BTVIRT" ]; then
  say "building the patched btvirt (BlueZ 5.66 emulator)"
  src=$WORK/bluez-src
  mkdir -p "$src"
  curl -sfL -o "$src/bluez.tar.xz" \
    "${BLUEZ_VM_MIRROR:-http://deb.debian.org/debian}/pool/main/b/bluez/bluez_5.66.orig.tar.xz"
  echo "$BZ_SRC_SHA  $src/bluez.tar.xz" | sha256sum -c --quiet
  tar -xJf "$src/bluez.tar.xz" -C "$src"
  (
    cd "$src/bluez-5.66"
    patch -s -p1 <"$HERE/btdev-one-handle.patch"
    mkdir -p lib/bluetooth
    for h in lib/*.h; do ln -sf "../$(basename "$h")" "lib/bluetooth/$(basename "$h")"; done
    printf '#define VERSION "5.66+ble-bridge-one-handle"\n' >config.h
    gcc -O1 -w -include config.h -I. -Ilib -o "$BTVIRT.tmp" \
      emulator/main.c emulator/serial.c emulator/server.c emulator/vhci.c emulator/btdev.c \
      emulator/bthost.c emulator/smp.c emulator/phy.c emulator/amp.c emulator/le.c \
      lib/bluetooth.c lib/hci.c lib/uuid.c src/shared/queue.c src/shared/util.c \
      src/shared/crypto.c src/shared/ecc.c src/shared/io-mainloop.c \
      src/shared/timeout-mainloop.c src/shared/mainloop.c src/shared/mainloop-notify.c
  )
  mv "$BTVIRT.tmp" "$BTVIRT"
fi
# --- end air
flock -u 9

# --- run ------------------------------------------------------------------------------------
stamp=$(date -u +%Y%m%dT%H%M%SZ)
LOGS=${LOGS:-$CACHE/runs/$SUITE-$stamp}
mkdir -p "$LOGS"
LOGS=$(cd "$LOGS" && pwd)
ACCEL=(-accel tcg,thread=multi -cpu max)
[ "${BLUEZ_VM_KVM:-0}" = 1 ] && ACCEL=(-accel kvm -cpu host)
say "suite $SUITE (BlueZ $(cat "$IMAGE/bluez-version")), image $image_key, logs $LOGS"

# One VM boot: writes $share/out/result.json; echoes nothing; returns qemu/guest status.
boot() {
  local share=$1
  mkdir -p "$share"
  cp "$HERE/guest.py" "$share/"
  cp "$BTVIRT" "$share/btvirt"
  cat >"$share/guest.sh" <<EOF
#!/bin/sh
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
exec /opt/venv/bin/python /mnt/host/guest.py --nodes $NODES --duration $DURATION \\
  --scenario $SCENARIO --link-wait $LINK_WAIT --verbose $VERBOSE --out /mnt/host/out
EOF
  chmod +x "$share/guest.sh"
  rm -f "$share/exitcode"
  local extra=""
  [ "$DEBUG" = 1 ] && extra="bzvm.debug=1"
  set +e
  timeout "${BLUEZ_VM_TIMEOUT:-900}" qemu-system-x86_64 "${ACCEL[@]}" \
    -m "${BLUEZ_VM_MEM:-1536}" -smp "${BLUEZ_VM_SMP:-2}" \
    -kernel "$IMAGE/vmlinuz" -initrd "$IMAGE/initrd.img" \
    -append "console=ttyS0 root=/dev/vda rw init=/sbin/bluez-vm-init quiet loglevel=3 panic=-1 bzvm.ctrls=$NODES $extra" \
    -drive "file=$IMAGE/rootfs.img,if=virtio,format=raw,snapshot=on" \
    -virtfs "local,path=$share,mount_tag=host0,security_model=none,id=host0" \
    -device virtio-rng-pci -nic none -display none -monitor none -no-reboot \
    -serial "file:$share/console.log" &
  local qpid=$!
  # Show the guest's progress lines while it runs.
  tail -n +1 -F "$share/console.log" 2>/dev/null | grep --line-buffered -E '^\[(init|guest)' >&2 &
  local tpid=$!
  wait $qpid
  local qrc=$?
  kill $tpid 2>/dev/null
  wait $tpid 2>/dev/null
  set -e
  if [ -f "$share/exitcode" ]; then
    return "$(cat "$share/exitcode")"
  fi
  say "the VM ended without an exit code (qemu/timeout status $qrc)"
  return 99
}

# One VM per node, plus an "air" VM: `btvirt -s` needs the kernel's AF_ALG crypto sockets,
# which this host's container lacks, so it runs in a VM of its own whose virtio-serial ports
# (relay.py) are wired, through unix sockets here, to the second serial port of each node's VM.
boot_split() {
  local att=$1 i
  mkdir -p "$att/exchange" "$att/wire" "$att/air"
  rm -f "$att/exchange/stop" "$att/exchange/air-ready" "$att"/exchange/node*.json "$att"/wire/*.sock "$att/air/exitcode"
  cp "$HERE/relay.py" "$att/air/"
  cp "$BTVIRT" "$att/air/btvirt"
  {
    echo '#!/bin/sh'
    echo 'stdbuf -oL /mnt/host/btvirt -s >/mnt/host/out/btvirt.log 2>&1 &'
    echo "exec python3 -u /mnt/host/relay.py $NODES"
  } >"$att/air/guest.sh"
  chmod +x "$att/air/guest.sh"
  local wires=()
  for i in $(seq 0 $((NODES - 1))); do
    wires+=(-chardev "socket,id=n$i,path=$att/wire/n$i.sock,server=on,wait=off"
      -device "virtserialport,chardev=n$i,name=n$i")
  done
  timeout "${BLUEZ_VM_TIMEOUT:-900}" qemu-system-x86_64 "${ACCEL[@]}" -m 384 -smp 1 \
    -kernel "$IMAGE/vmlinuz" -initrd "$IMAGE/initrd.img" \
    -append "console=ttyS0 root=/dev/vda rw init=/sbin/bluez-vm-init quiet loglevel=3 panic=-1 bzvm.air=1" \
    -drive "file=$IMAGE/rootfs.img,if=virtio,format=raw,snapshot=on" \
    -virtfs "local,path=$att/air,mount_tag=host0,security_model=none,id=host0" \
    -virtfs "local,path=$att/exchange,mount_tag=exchange,security_model=none,id=exchange" \
    -device virtio-rng-pci -nic none -display none -monitor none -no-reboot \
    -serial "file:$att/air/console.log" -device virtio-serial-pci "${wires[@]}" \
    2>"$att/air/qemu.log" &
  local bpid=$!
  local w=0
  until [ -S "$att/wire/n$((NODES - 1)).sock" ] || [ $w -gt 100 ]; do
    sleep 0.1
    w=$((w + 1))
  done
  local extra=""
  [ "$DEBUG" = 1 ] && extra="bzvm.debug=1"
  local pids=()
  for i in $(seq 0 $((NODES - 1))); do
    local share=$att/vm$i
    mkdir -p "$share"
    cp "$HERE/guest.py" "$HERE/relay.py" "$share/"
    {
      echo '#!/bin/sh'
      echo 'export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1'
      echo "exec /opt/venv/bin/python /mnt/host/guest.py --node $i --nodes $NODES" \
        "--exchange /mnt/exchange --link-wait $LINK_WAIT --bound ${BLUEZ_VM_TIMEOUT:-900}" \
        "--verbose $VERBOSE --out /mnt/host/out"
    } >"$share/guest.sh"
    chmod +x "$share/guest.sh"
    rm -f "$share/exitcode"
    timeout "${BLUEZ_VM_TIMEOUT:-900}" qemu-system-x86_64 "${ACCEL[@]}" \
      -m "${BLUEZ_VM_MEM:-768}" -smp "${BLUEZ_VM_SMP:-1}" \
      -kernel "$IMAGE/vmlinuz" -initrd "$IMAGE/initrd.img" \
      -append "console=ttyS0 root=/dev/vda rw init=/sbin/bluez-vm-init quiet loglevel=3 panic=-1 bzvm.uart=1 $extra" \
      -drive "file=$IMAGE/rootfs.img,if=virtio,format=raw,snapshot=on" \
      -virtfs "local,path=$share,mount_tag=host0,security_model=none,id=host0" \
      -virtfs "local,path=$att/exchange,mount_tag=exchange,security_model=none,id=exchange" \
      -device virtio-rng-pci -nic none -display none -monitor none -no-reboot \
      -serial "file:$share/console.log" -chardev "socket,id=bt,path=$att/wire/n$i.sock" \
      -serial chardev:bt &
    pids+=($!)
  done
  set +e
  local chaos=()
  [ "$SCENARIO" = chaos ] && chaos=(--chaos "$CHAOS" --kills "$KILLS" ${SEED:+--seed "$SEED"})
  python3 "$HERE/watch.py" "$att" --nodes "$NODES" --duration "$DURATION" \
    --link-wait "$LINK_WAIT" "${chaos[@]}"
  local rc=0 q
  for q in "${pids[@]}"; do
    wait "$q" || rc=$?
  done
  kill "$bpid" 2>/dev/null
  wait "$bpid" 2>/dev/null
  set -e
  for i in $(seq 0 $((NODES - 1))); do
    if [ ! -f "$att/vm$i/exitcode" ]; then
      say "VM $i ended without an exit code (qemu/timeout status $rc)"
      return 99
    fi
    [ "$(cat "$att/vm$i/exitcode")" = 0 ] || rc=$(cat "$att/vm$i/exitcode")
  done
  return "$rc"
}

if [ "$ONE_VM" = 1 ]; then
  say "topology: one VM, one bluetoothd, $NODES btvirt controllers"
else
  say "topology: $NODES VMs, one bluetoothd each, controllers of one btvirt LE server (air VM)"
fi

attempt=1
while :; do
  share=$LOGS/attempt$attempt
  t0=$(date +%s)
  rc=0
  if [ "$ONE_VM" = 1 ]; then
    boot "$share" || rc=$?
  else
    boot_split "$share" || rc=$?
  fi
  say "attempt $attempt: $(($(date +%s) - t0)) s wall, guest status $rc"
  verdict=$(python3 "$HERE/verdict.py" "$share" "$NODES")
  if [ "$verdict" = retry ] && [ "$RETRY" = 1 ] && [ $attempt -eq 1 ]; then
    why=$(python3 -c 'import json, sys; print("; ".join(json.load(open(sys.argv[1]))["reasons"]))' "$share/verdict.json")
    say "retrying the whole VM once (the environment, not the node: one-bluetoothd connect race or a controller that never came up): $why"
    attempt=2
    continue
  fi
  break
done
[ $attempt -gt 1 ] && say "this result is from the retry (attempt $attempt of 2)"
say "logs in $LOGS"
python3 "$HERE/verdict.py" --last-line "$share"
[ "$verdict" = ok ]
