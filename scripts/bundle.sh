#!/usr/bin/env bash
# Make an offline wheelhouse for deploy/install.sh --offline DIR: this checkout's wheel and
# every dependency as a binary wheel for the handheld's Python (3.11, Debian 12 / Pi OS
# bookworm, glibc 2.36) and CPU. Handhelds at an event have no internet.
# Usage: scripts/bundle.sh --arch aarch64|armv7l|x86_64 [--out DIR] [--check]
#   --check: only prove that the arch's dependencies resolve completely as binary wheels
#            (pip download --only-binary=:all: --platform ... --python-version 3.11).
# Packages PyPI has no wheel for on an arch come from Debian instead (DEBIAN_<arch> below):
# install.sh then installs the Debian package and builds the venv with
# --system-site-packages. The last line is machine-readable: bundle arch=… wheels=… debian=…
set -euo pipefail
cd "$(dirname "$0")/.."
arch="" out="" check=0
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --check) check=1; shift ;;
    *) echo "bundle.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
nodeps="" absent="" pins=()
case "$arch" in
  x86_64 | aarch64) debian="" ;;
  # 32-bit Pi OS (3B+, Zero 2 W): PyPI has no armv7l wheel of cffi, lz4 or uvloop, so
  # Debian's are used; cryptography >= 46 needs cffi >= 2 (bookworm has 1.15.1), so it is
  # held below 46 and its own requirements are checked against Debian's cffi. gpiod >= 2.2
  # has no armv7l wheel and Debian's python3-libgpiod is libgpiod v1 (another API): no
  # GPIO button/LED there (the board's LED through sysfs still works).
  armv7l)
    # bleak and bless need a compiled dbus-fast (no armv7l wheel): Debian's 1.84.2, which
    # bleak < 3 accepts (3.x needs dbus-fast >= 4): armv7l gets bleak 2.x, which the test
    # suite (bleak 3.1) does not run against. Their pure-Python requirements come as wheels.
    debian="cffi:python3-cffi lz4:python3-lz4 uvloop:python3-uvloop dbus-fast:python3-dbus-fast"
    nodeps="cryptography<46 bleak<3 bless dbus-next typing-extensions>=4.7" absent="gpiod"
    # bookworm's versions (apt-cache policy), checked against every requirement
    pins=("cffi==1.15.1" "dbus-fast==1.84.2" "lz4==4.0.2" "uvloop==0.17.0") ;;
  *) echo "bundle.sh: --arch aarch64|armv7l|x86_64" >&2; exit 2 ;;
esac
out=${out:-dist/bundle-$arch}
py=${PYTHON:-python3}
platforms=()
for minor in $(seq 36 -1 17); do platforms+=(--platform "manylinux_2_${minor}_$arch"); done
platforms+=(--platform "manylinux2014_$arch" --platform "linux_$arch")

# The dependency list from pyproject.toml, minus the ones Debian supplies on this arch.
mapfile -t deps < <("$py" - "$debian $(printf '%s\n' $nodeps | sed 's/[<>=].*//' | paste -sd" " -) $absent" <<'PY'
import sys, tomllib, re
skip = {d.split(":")[0] for d in sys.argv[1].split()}
for dep in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]:
    name = re.split(r"[<>=!~; \[]", dep, maxsplit=1)[0]
    if name not in skip:
        print(dep)
PY
)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# --isolated: no find-links or extra indexes from the local pip config; PyPI only.
"$py" -m pip download --isolated --quiet --only-binary=:all: --python-version 3.11 \
  --implementation cp --abi cp311 --abi abi3 --abi none "${platforms[@]}" \
  --dest "$tmp/wheels" "${deps[@]}"
# this checkout's wheel, built from a copy (no build/ left in the checkout); its own
# requirements are checked below with the rest
mkdir -p "$tmp/src"
git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -C "$tmp/src" -xf -
"$py" -m pip wheel --isolated --quiet --no-deps --wheel-dir "$tmp/wheels" "$tmp/src"
if [ -n "$nodeps" ]; then
  "$py" -m pip download --isolated --quiet --only-binary=:all: --python-version 3.11 \
    --implementation cp --abi cp311 --abi abi3 --abi none "${platforms[@]}" --no-deps \
    --dest "$tmp/wheels" $nodeps
  # the no-deps wheel's requirements must be met by the wheels here or Debian's versions
  "$py" - "$tmp/wheels" "$arch" "${pins[@]}" <<'PY'
import sys, zipfile, pathlib, re
from email.parser import Parser
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name
wheels, arch, pins = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
have = {canonicalize_name(w.name.split("-")[0]): w.name.split("-")[1] for w in wheels.glob("*.whl")}
have.update((canonicalize_name(n), v) for n, v in (p.split("==") for p in pins))
env = {"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux",
       "platform_machine": arch, "platform_python_implementation": "CPython",
       "implementation_name": "cpython", "os_name": "posix", "extra": ""}
bad = []
for w in sorted(wheels.glob("*.whl")):
    with zipfile.ZipFile(w) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        reqs = Parser().parsestr(z.read(meta).decode()).get_all("Requires-Dist") or []
    for text in reqs:
        r = Requirement(text)
        if r.marker is not None and not r.marker.evaluate(env):
            continue
        name = canonicalize_name(r.name)
        if name not in have:
            bad.append(f"{w.name}: {text} (nothing provides {name})")
        elif not r.specifier.contains(have[name], prereleases=True):
            bad.append(f"{w.name}: {text} (have {name} {have[name]})")
if bad:
    sys.exit("bundle: unresolved on " + arch + ":\n  " + "\n  ".join(bad))
PY
fi
if [ "$check" -eq 0 ]; then
  rm -rf "$out.part"
  mkdir -p "$out.part"
  mv "$tmp/wheels" "$out.part/wheels"
  printf '%s\n' $debian | sed 's/.*://' > "$out.part/debian-packages.txt"
  echo "$arch" > "$out.part/arch"
  rm -rf "$out"
  mv "$out.part" "$out"
  wheels=$(ls "$out/wheels" | wc -l)
else
  wheels=$(ls "$tmp/wheels" | wc -l)
fi
for d in $debian; do echo "bundle: ${d%%:*} has no $arch wheel on PyPI: Debian's ${d#*:} is used" >&2; done
for d in $absent; do echo "bundle: $d has no $arch wheel on PyPI and no compatible Debian package: left out" >&2; done
echo "bundle arch=$arch wheels=$wheels debian=$(printf '%s\n' $debian | sed 's/.*://' | paste -sd, -) check=$check"
