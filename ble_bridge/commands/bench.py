"""``ble-bridge bench``: run the benchmarks of a source checkout (``bench/*.py``)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


def benches(bench_dir: Path = BENCH_DIR) -> list[str]:
    """Every benchmark in ``bench/`` (``NAME.py``, not ``_private.py``), sorted."""
    return sorted(p.stem for p in bench_dir.glob("*.py") if not p.name.startswith("_"))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "bench", help="run benchmarks; each prints a ratio against a same-run baseline"
    )
    p.add_argument(
        "names", nargs="*", metavar="NAME", help="benchmarks in bench/ (default all; --list)"
    )
    p.add_argument("--list", action="store_true", help="print the benchmarks in bench/")
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    known = benches()
    if not known:
        print(
            f"ble-bridge bench: no benchmarks in {BENCH_DIR} (they ship with a source checkout)",
            file=sys.stderr,
        )
        return 2
    if args.list:
        print("\n".join(known))
        return 0
    names = args.names or known
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"ble-bridge bench: unknown {unknown}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    status = 0
    summary = []
    for name in names:
        script = BENCH_DIR / f"{name}.py"
        if not script.exists():
            print(
                f"ble-bridge bench: {script} not found (benchmarks ship with a source checkout)",
                file=sys.stderr,
            )
            return 2
        print(f"== bench {name}", flush=True)
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        lines = proc.stdout.strip().splitlines()
        summary.append(lines[-1] if lines else f"{name} failed")
        status = status or proc.returncode
    print("== summary")
    print("\n".join(summary))
    return status
