#!/usr/bin/env bash
# Make (once) a cached Debian 12 root for the installer test: debootstrap minbase with what a
# Raspberry Pi OS image already has (systemd, dbus, bluez, python3-venv), packed as a tarball.
# Usage: scripts/debian-root.sh [CACHE_DIR]   (default: ${XDG_CACHE_HOME:-~/.cache}/ble-bridge)
# Prints the tarball's path. Needs root and debootstrap (apt-get install -y debootstrap).
set -euo pipefail
cache=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/ble-bridge}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=systemd,systemd-sysv,dbus,python3,python3-venv,bluez,rsync,udev
tarball="$cache/debian12-root.tar"
if [ -f "$tarball" ]; then echo "$tarball"; exit 0; fi
[ "$(id -u)" -eq 0 ] || { echo "debian-root.sh: needs root (debootstrap)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "debian-root.sh: apt-get install -y debootstrap" >&2; exit 1; }
mkdir -p "$cache"
work=$(mktemp -d "$cache/root.XXXXXX")
trap 'rm -rf "$work"' EXIT
debootstrap --variant=minbase --include="$packages" bookworm "$work/root" "$mirror" >&2
rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
tar -C "$work/root" -cf "$tarball.part" .
mv "$tarball.part" "$tarball"
echo "$tarball"
