"""Seed sweep of the craps-table consensus over the loopback air with random fault schedules.

Each seed draws a small session (4-7 validators), up to f Byzantine nodes of random
behaviours, and maybe a minority partition, crashes with restarts from SQLite, frame loss.
Faults end at half the run; safety (agreement, validity, ledger invariants, no double
sign, no lost block) must always hold, and honest nodes must commit again after that::

    python -m ble_bridge.sim.sweep --seeds 10000          # soak
    python -m ble_bridge.sim.sweep --seeds 200 --start 0  # what CI runs
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import random
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..air.faults import Crash, Fault, FaultPlan, Loss
from .byzantine import Behaviour
from .scenario import ScenarioConfig
from .table import TableConfig, TableResult, simulate_table

DURATION = 16.0


@dataclass(frozen=True, slots=True)
class SweepOutcome:
    seed: int
    description: str
    safe: bool
    live: bool
    heights: int
    wall: float

    @property
    def ok(self) -> bool:
        return self.safe and self.live


def random_table(seed: int, duration: float = DURATION, *, small: bool = False) -> TableConfig:
    """The random session and fault schedule of ``seed`` (``small``: 4-5 validators)."""
    rng = random.Random(f"sweep/{seed}")
    n = rng.choice((4, 5) if small else (4, 4, 5, 7))
    duration *= 2.0 if n == 7 else 1.0  # multi-hop: slower heights
    f = (n - 1) // 3
    faults_end = duration * 0.5
    byz = rng.randint(0, f)
    behaviour = rng.choice(list(Behaviour))
    faults: list[Fault] = []
    partition = None
    if rng.random() < 0.3:
        start = rng.uniform(2.0, faults_end - 2.0)
        partition = (start, min(faults_end, start + rng.uniform(1.0, 4.0)))
    if rng.random() < 0.3:
        node = rng.randrange(n)
        faults.append(Crash(rng.uniform(2.0, faults_end - 1.0), node, rng.uniform(0.5, 3.0)))
    if rng.random() < 0.3:
        start = rng.uniform(1.0, faults_end - 1.0)
        faults.append(Loss(start, faults_end, rng.uniform(0.01, 0.1)))
    scenario = ScenarioConfig(
        nodes=n,
        duration=duration,
        warmup=2.0,
        drain=0.5,
        seed=seed,
        faults=FaultPlan(tuple(faults)),
        trace=False,
    )
    return TableConfig(
        scenario=scenario,
        byzantine=byz,
        behaviour=behaviour,
        partition=partition,
        watch_votes=True,
    )


def describe(c: TableConfig) -> str:
    parts = [f"n={c.scenario.nodes}"]
    if c.byzantine:
        parts.append(f"byz={c.byzantine}x{c.behaviour.value}")
    if c.partition:
        parts.append(f"partition={c.partition[0]:.1f}:{c.partition[1]:.1f}")
    parts += [type(f).__name__.lower() for f in c.scenario.faults.faults]
    return " ".join(parts)


def faults_end(c: TableConfig) -> float:
    ends = [c.scenario.warmup]
    if c.partition:
        ends.append(c.partition[1])
    for f in c.scenario.faults.faults:
        if isinstance(f, Crash):
            ends.append(f.at + (f.restart_after or 0.0))
        elif isinstance(f, Loss):
            ends.append(f.end)
    return max(ends)


def live(result: TableResult, end: float) -> bool:
    """Every honest node committed something after the faults ended."""
    return all(result.last_commit_at.get(i, -1.0) > end for i in result.honest)


def run_seed(seed: int, duration: float = DURATION, *, small: bool = False) -> SweepOutcome:
    config = random_table(seed, duration, small=small)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ble-bridge-sweep-") as tmp:
        result = simulate_table(config, store_dir=Path(tmp))
    return SweepOutcome(
        seed,
        describe(config),
        result.safe,
        live(result, faults_end(config)),
        result.heights,
        time.perf_counter() - t,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ble_bridge.sim.sweep", description=__doc__)
    p.add_argument("--seeds", type=int, default=200, help="number of seeds (default 200)")
    p.add_argument("--start", type=int, default=0, help="first seed")
    p.add_argument("--duration", type=float, default=DURATION, help="simulated s per seed")
    p.add_argument("--small", action="store_true", help="4-5 validators only (what CI runs)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    args = p.parse_args(argv)
    failures: list[SweepOutcome] = []
    t0 = time.perf_counter()
    seeds = range(args.start, args.start + args.seeds)
    job = functools.partial(run_seed, duration=args.duration, small=args.small)
    if args.jobs > 1:
        with concurrent.futures.ProcessPoolExecutor(args.jobs) as pool:
            outcomes: Iterable[SweepOutcome] = pool.map(job, seeds, chunksize=4)
            failures = _report(outcomes)
    else:
        failures = _report(map(job, seeds))
    wall = time.perf_counter() - t0
    print(
        f"sweep seeds={args.seeds} unsafe={sum(not f.safe for f in failures)} "
        f"stalled={sum(f.safe and not f.live for f in failures)} wall_s={wall:.1f}"
    )
    return 0 if not any(not f.safe for f in failures) else 1


def _report(outcomes: Iterable[SweepOutcome]) -> list[SweepOutcome]:
    failures = []
    for out in outcomes:
        if not out.ok:
            failures.append(out)
            verdict = "UNSAFE" if not out.safe else "stalled"
            print(
                f"seed {out.seed}: {verdict} ({out.description}, heights {out.heights})", flush=True
            )
    return failures


if __name__ == "__main__":
    sys.exit(main())
