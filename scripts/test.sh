#!/usr/bin/env bash
# Run every check: lint, format, types, and the test suite. Exits non-zero on any failure.
#
# With no arguments the suite runs in two phases: the virtual-clock tests (simulations, codecs,
# state machines: CPU-bound and deterministic by seed) on every core with pytest-xdist, then the
# wall-clock tests (marked `wallclock` by conftest.py: real processes on the fake BlueZ, a real
# mosquitto) one at a time, so their waits are not starved by a second worker.
# With arguments, pytest runs once with them (e.g. `bash scripts/test.sh tests/wire -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
status=0
echo "== ruff check";         .venv/bin/ruff check . || status=1
echo "== ruff format --check"; .venv/bin/ruff format --check . || status=1
echo "== mypy --strict";      .venv/bin/mypy --strict || status=1
if [ "$#" -gt 0 ]; then
  echo "== pytest $*"
  .venv/bin/pytest -q "$@" || status=$?
  exit "$status"
fi
start=$(date +%s)
echo "== pytest, virtual-clock tests (-n auto)"
.venv/bin/pytest -q -n auto -m "not wallclock" || status=$?
echo "== pytest, wall-clock tests (serial)"
.venv/bin/pytest -q -m wallclock || status=$?
echo "== pytest: both phases in $(( $(date +%s) - start )) s"
exit "$status"
