#!/usr/bin/env bash
# Run every check: lint, format, types, and the test suite. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
status=0
echo "== ruff check";         .venv/bin/ruff check . || status=1
echo "== ruff format --check"; .venv/bin/ruff format --check . || status=1
echo "== mypy --strict";      .venv/bin/mypy --strict || status=1
echo "== pytest"
.venv/bin/pytest -q "$@" || status=$?
exit "$status"
