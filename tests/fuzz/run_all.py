"""Run the wire fuzz targets under atheris (libFuzzer), one process per target.

    .venv/bin/python tests/fuzz/run_all.py --runs 1000000          # every target
    .venv/bin/python tests/fuzz/run_all.py --target envelope --runs 100000

Each target starts from a seed corpus of valid inputs written to a temporary directory;
a crash leaves libFuzzer's ``crash-*`` reproducer in the current directory and makes the
exit status non-zero.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

NAMES = ("frame_decode", "announce", "fragment", "envelope")


def _fuzz_one(name: str, runs: int, extra: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=["ble_bridge"]):
        import fuzz_targets
    target = fuzz_targets.TARGETS[name]
    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    for i, seed in enumerate(fuzz_targets.seeds(name)):
        (corpus / f"seed-{i}").write_bytes(seed)
    argv = [sys.argv[0], f"-runs={runs}", "-max_len=4096", *extra, str(corpus)]
    atheris.Setup(argv, target)
    atheris.Fuzz()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=100_000, help="inputs per target")
    ap.add_argument("--target", choices=NAMES, help="one target (default: all, in turn)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args, extra = ap.parse_known_args()
    if args.child:
        assert args.target is not None
        _fuzz_one(args.target, args.runs, extra)
        return 0
    failed = []
    for name in [args.target] if args.target else NAMES:
        print(f"== {name}: {args.runs} runs", flush=True)
        cmd = [sys.executable, __file__, "--child", "--target", name, "--runs", str(args.runs)]
        if subprocess.run([*cmd, *extra]).returncode != 0:
            failed.append(name)
    print("fuzz failures: " + (", ".join(failed) if failed else "none"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
