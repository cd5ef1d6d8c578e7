"""Benchmark: what a node costs in normal play: RSS, RSS growth and CPU of real processes.

A 4-node ``ble-bridge lab`` on the fake BlueZ (real ``ble-bridge run`` processes, bless,
bleak, SQLite) plays the craps table for ``--minutes`` (default 10). Every second each node's
RSS (``VmRSS``) and CPU time (``utime + stime``) are read from ``/proc``. Reported:

  rss_mb         the largest RSS of any node at the end (median of its last 30 s of samples)
  rss_growth_mb  the largest growth of any node over the second half of the run (median of
                 the last 30 s minus median of the 30 s around the half)
  cpu_core_pct   the mean CPU of a node, in percent of one core, from when all nodes run
                 to the end

Goals (issue 13): rss_mb <= 64, rss_growth_mb <= 1.0, cpu_core_pct <= 15; each ratio is
value / goal (<= 1 meets it). The machine is shared, so CPU swings with its load; the
hour-long slow-tier run (tests/gatt/test_gatt_memory.py) decides a leak, this is the quick
signal. Last line: ``node rss_mb=<float> rss_growth_mb=<float> cpu_core_pct=<float>``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gatt.fakebluez import FakeBluezConfig, LinkModel
from gatt.lab import ProcRecorder, run_lab

GOALS = {"rss_mb": 64.0, "rss_growth_mb": 1.0, "cpu_core_pct": 15.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="how long the table plays")
    ap.add_argument("--nodes", type=int, default=4)
    args = ap.parse_args()
    duration = args.minutes * 60.0
    rec = ProcRecorder()
    result = run_lab(
        args.nodes,
        duration,
        FakeBluezConfig(adapters=args.nodes, link=LinkModel(mtu=247)),
        progress=False,
        on_poll=rec,
    )
    pids = sorted(rec.rss)
    last = {pid: rec.rss_end(pid) for pid in pids}
    mid = {pid: rec.rss_around(pid, rec.end / 2) for pid in pids}
    growth = {pid: last[pid] - mid[pid] for pid in pids}
    cpus = [rec.cpu_pct(pid) for pid in pids]
    values = {
        "rss_mb": max(last.values()),
        "rss_growth_mb": max(growth.values()),
        "cpu_core_pct": statistics.mean(cpus),
    }
    print(result.last_line())
    for pid in sorted(rec.rss):
        first = rec.rss[pid][0][1]
        print(
            f"pid {pid}: rss start {first:.1f} MiB, half {mid[pid]:.1f}, end {last[pid]:.1f} "
            f"(growth over the second half {growth[pid]:+.2f})"
        )
    print(f"cpu of each node, % of one core: {', '.join(f'{c:.1f}' for c in cpus)}")
    for key, goal in GOALS.items():
        print(f"{key} {values[key]:.2f} goal <= {goal:g} ratio {values[key] / goal:.2f}")
    print(
        f"node rss_mb={values['rss_mb']:.2f} rss_growth_mb={values['rss_growth_mb']:.2f} "
        f"cpu_core_pct={values['cpu_core_pct']:.2f}"
    )
    return 0 if result.safe else 1


if __name__ == "__main__":
    sys.exit(main())
