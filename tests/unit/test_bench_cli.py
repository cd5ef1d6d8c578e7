"""``ble-bridge bench`` lists every benchmark in bench/, and the README's usage table names
each one."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_list_is_every_script_in_bench() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ble_bridge.cli", "bench", "--list"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    scripts = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if not p.name.startswith("_"))
    assert proc.stdout.split() == scripts
    assert {"node", "phones", "uplink"} <= set(scripts)


def test_unknown_bench_is_a_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ble_bridge.cli", "bench", "nosuch"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2 and "known:" in proc.stderr


def test_readme_usage_table_names_every_bench() -> None:
    row = next(
        line
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.startswith("| `ble-bridge bench")
    )
    for p in (ROOT / "bench").glob("*.py"):
        if not p.name.startswith("_"):
            assert re.search(rf"\b{p.stem}\b", row), p.stem
