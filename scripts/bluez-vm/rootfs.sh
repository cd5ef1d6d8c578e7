#!/usr/bin/env bash
# Stage 1 of the real-BlueZ VM image: a Debian root tree with BlueZ, btvirt, dbus, Python and
# a kernel with a small initramfs. No project code here: this stage is cached by the hash of
# this file and the suite, so it is rebuilt only when the recipe changes.
#   rootfs.sh SUITE OUTDIR      (needs root: debootstrap and chroot)
# Produces OUTDIR/rootfs/ (the tree), OUTDIR/vmlinuz, OUTDIR/initrd.img.
set -euo pipefail
SUITE=${1:?suite (bookworm|trixie)}
OUT=${2:?output folder}
MIRROR=${BLUEZ_VM_MIRROR:-}   # empty: debootstrap's default mirror
ROOT=$OUT/rootfs
t0=$(date +%s)
export DEBIAN_FRONTEND=noninteractive

rm -rf "$ROOT"
mkdir -p "$OUT"
# bluez-test-tools ships btvirt (virtual controllers on /dev/vhci); btmgmt is in bluez.
debootstrap --variant=minbase \
  --include=bluez,bluez-test-tools,dbus,python3,python3-venv,linux-image-amd64,kmod,procps,util-linux \
  "$SUITE" "$ROOT" ${MIRROR:+"$MIRROR"} >"$OUT/debootstrap.log" 2>&1 || {
  tail -30 "$OUT/debootstrap.log" >&2
  exit 1
}
echo "rootfs: debootstrap $SUITE done after $(($(date +%s) - t0)) s" >&2

# Small initramfs: only what mounts a virtio ext4 root (boots in half the time of MODULES=most).
sed -i 's/^MODULES=.*/MODULES=list/' "$ROOT/etc/initramfs-tools/initramfs.conf"
printf 'virtio_pci\nvirtio_blk\next4\n' >>"$ROOT/etc/initramfs-tools/modules"
chroot "$ROOT" update-initramfs -u -k all >"$OUT/initramfs.log" 2>&1
cp "$ROOT"/boot/vmlinuz-* "$OUT/vmlinuz"
cp "$ROOT"/boot/initrd.img-* "$OUT/initrd.img"

# Keep a pristine main.conf: the image stage appends the project's deploy/bluetooth settings.
cp "$ROOT/etc/bluetooth/main.conf" "$ROOT/etc/bluetooth/main.conf.debian"
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*
echo bluez-vm >"$ROOT/etc/hostname"
chroot "$ROOT" python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")' >"$OUT/python-version"
chroot "$ROOT" dpkg-query -W -f '${Version}' bluez >"$OUT/bluez-version"
echo "rootfs: $SUITE ready after $(($(date +%s) - t0)) s (python $(cat "$OUT/python-version"), bluez $(cat "$OUT/bluez-version"))" >&2
