#!/usr/bin/env bash
# The gpio-sim kernel module for the VM tier's guest kernel, built out of tree.
# Debian's kernel has neither CONFIG_GPIO_SIM nor CONFIG_GPIO_MOCKUP (nor CONFIG_IRQ_SIM,
# which gpio-sim needs for its line interrupts), so both sources come from the
# linux-source-6.1 package of the kernel's own version and are built together, as one
# module, against that kernel's linux-headers-<ver> build tree.
#   module.sh BASEDIR OUTDIR     (needs root: chroot, apt in a copy of BASEDIR/rootfs)
# BASEDIR is the bookworm base of scripts/bluez-vm/rootfs.sh (its rootfs has the kernel).
# Produces OUTDIR/gpio-sim.ko, OUTDIR/kernel-version, OUTDIR/build.log.
set -euo pipefail
BASE=${1:?base folder}
OUT=${2:?output folder}
t0=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
kver=$(ls "$BASE/rootfs/usr/lib/modules" | head -1)
# The image package's version is the source package's (linux-image-6.1.0-50-amd64 6.1.176-1
# is built from linux 6.1.176-1, which also makes linux-source-6.1 and the headers).
pkgver=$(chroot "$BASE/rootfs" dpkg-query -W -f '${Version}' "linux-image-$kver")
mkdir -p "$OUT"
ROOT=$OUT/buildroot
rm -rf "$ROOT"
cp -a "$BASE/rootfs" "$ROOT"
trap 'umount "$ROOT/proc" 2>/dev/null || true; [ -n "${KEEP_BUILDROOT:-}" ] || rm -rf "$ROOT"' EXIT
mount -t proc proc "$ROOT/proc"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
{
  chroot "$ROOT" apt-get update -q
  chroot "$ROOT" apt-get install -y -q --no-install-recommends make gcc-12 libc6-dev \
    "linux-headers-$kver=$pkgver" "linux-source-6.1=$pkgver"
} >"$OUT/build.log" 2>&1 || {
  tail -20 "$OUT/build.log" >&2
  echo "module: cannot install linux-headers-$kver=$pkgver and linux-source-6.1=$pkgver" \
    "(the mirror may have moved past the cached base's kernel: rebuild the base)" >&2
  exit 1
}
src=$ROOT/usr/src/gpio-sim
mkdir -p "$src"
tar -xJf "$ROOT/usr/src/linux-source-6.1.tar.xz" -C "$src" --strip-components=1 \
  linux-source-6.1/drivers/gpio/gpio-sim.c linux-source-6.1/drivers/gpio/gpiolib.h \
  linux-source-6.1/kernel/irq/irq_sim.c
# gpio-sim.c includes the private drivers/gpio/gpiolib.h (struct gpio_desc and its flags), which
# the headers package lacks; from the same source and version, its layouts are the kernel's.
cp "$src/drivers/gpio/gpio-sim.c" "$src/drivers/gpio/gpiolib.h" "$src/kernel/irq/irq_sim.c" "$src/"
# One module from both files; the Kbuild is ours, the C sources are the kernel's own.
printf 'obj-m := gpio-sim.o\ngpio-sim-y := gpio-sim-main.o irq_sim.o\n' >"$src/Kbuild"
mv "$src/gpio-sim.c" "$src/gpio-sim-main.c"
# irq_sim.c is built-in code and calls irq_to_desc(), which a module cannot (not exported):
# generic_handle_irq() (exported) finds the same descriptor and runs its flow handler, the
# handle_simple_irq that irq_sim itself sets on every line of its domain.
grep -q 'handle_simple_irq(irq_to_desc(irqnum));' "$src/irq_sim.c" || {
  echo "module: irq_sim.c no longer calls handle_simple_irq(irq_to_desc(irqnum)): check the source" >&2
  exit 1
}
sed -i 's/handle_simple_irq(irq_to_desc(irqnum));/generic_handle_irq(irqnum);/' "$src/irq_sim.c"
chroot "$ROOT" make -C "/usr/src/linux-headers-$kver" M=/usr/src/gpio-sim CC=gcc-12 modules \
  >>"$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log" >&2; exit 1; }
cp "$src/gpio-sim.ko" "$OUT/gpio-sim.ko"
echo "$kver" >"$OUT/kernel-version"
modinfo -F vermagic "$OUT/gpio-sim.ko" >"$OUT/vermagic" 2>/dev/null || true
echo "module: gpio-sim.ko for $kver ($pkgver) built in $(($(date +%s) - t0)) s" >&2
