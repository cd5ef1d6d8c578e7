"""Seed sweep of runtime tables with set changes (``simulate --churn``) and random faults.

Each seed draws 4-6 nodes that open, join, leave and rejoin one table (``sim/churn.py``),
maybe up to f Byzantine nodes of any behaviour (the wire-level ones of ``--byzantine`` and
the set-change attacks of ``sim/churn_attacks.py``), and maybe a partition of the halves, a
crash (restarting from SQLite, or not: then it is removed for silence) and frame loss.
Safety must always hold (no two honest nodes commit different blocks at one height, one
table, no attack seated); liveness is not judged here (a churn run may end mid-join)::

    python -m ble_bridge.sim.churn_sweep --seeds 500           # the slow tier's sweep
    python -m ble_bridge.sim.churn_sweep --seeds 4 --start 0   # what the default suite runs

Last line: ``churn_sweep seeds=<int> unsafe=<int> joins=<int> leaves=<int> removals=<int>
wall_s=<float>``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import random
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from ..air.faults import Crash, Fault, FaultPlan, Loss, Partition
from ..air.faults import Heal as HealFault
from .byzantine import BEHAVIOURS
from .churn import choose_byzantine, simulate_churn
from .churn_attacks import CHURN_BEHAVIOURS
from .scenario import ScenarioConfig

DURATION = 45.0


@dataclass(frozen=True, slots=True)
class ChurnOutcome:
    seed: int
    description: str
    safe: bool
    heights: int
    joins: int
    leaves: int
    removals: int
    violations: tuple[str, ...]
    wall: float


def random_churn(
    seed: int, duration: float = DURATION
) -> tuple[ScenarioConfig, dict[int, str], str]:
    """The random run of ``seed``: its scenario, Byzantine nodes and a description."""
    rng = random.Random(f"churn-sweep/{seed}")
    n = rng.choice((4, 5, 5, 6))
    f = (n - 1) // 3
    byz_count = rng.randint(0, f)
    behaviour = rng.choice(BEHAVIOURS + CHURN_BEHAVIOURS + CHURN_BEHAVIOURS)
    faults: list[Fault] = []
    parts = [f"n={n}"]
    end = duration * 0.7
    if rng.random() < 0.3:
        start = rng.uniform(8.0, end - 6.0)
        heal = start + rng.uniform(3.0, 8.0)
        half = n // 2
        faults += [Partition(start, (tuple(range(half)), tuple(range(half, n)))), HealFault(heal)]
        parts.append(f"partition={start:.0f}:{heal:.0f}")
    if rng.random() < 0.3:
        node = rng.randrange(1, n)
        restart = rng.choice((None, rng.uniform(1.0, 5.0)))
        faults.append(Crash(rng.uniform(5.0, end), node, restart))
        parts.append(f"crash={node}{'' if restart is None else '+restart'}")
    if rng.random() < 0.3:
        start = rng.uniform(3.0, end - 3.0)
        p = rng.uniform(0.01, 0.08)
        faults.append(Loss(start, min(end, start + rng.uniform(5.0, 15.0)), p))
        parts.append(f"loss={p:.2f}")
    scenario = ScenarioConfig(
        nodes=n,
        duration=duration,
        warmup=3.0,
        seed=seed,
        faults=FaultPlan(tuple(faults)),
        trace=False,
    )
    byz = choose_byzantine(n, byz_count, behaviour, seed) if byz_count else {}
    if byz:
        parts.append(f"byz={byz_count}x{behaviour}")
    return scenario, byz, " ".join(parts)


def run_seed(seed: int, duration: float = DURATION) -> ChurnOutcome:
    scenario, byz, description = random_churn(seed, duration)
    t = time.perf_counter()
    r = simulate_churn(scenario, byzantine=byz)
    return ChurnOutcome(
        seed,
        description,
        r.safe,
        r.heights,
        r.joins,
        r.leaves,
        r.removals,
        tuple(r.reasons()),
        time.perf_counter() - t,
    )


def sweep(
    seeds: Iterable[int], duration: float = DURATION, jobs: int = 1
) -> Iterator[ChurnOutcome]:
    """Each seed's outcome in seed order, as it comes (``jobs`` worker processes)."""
    seeds = list(seeds)
    if jobs > 1:
        with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
            yield from pool.map(run_seed, seeds, [duration] * len(seeds))
        return
    for s in seeds:
        yield run_seed(s, duration)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ble_bridge.sim.churn_sweep", description=__doc__)
    p.add_argument("--seeds", type=int, default=500, help="number of seeds (default 500)")
    p.add_argument("--start", type=int, default=0, help="first seed")
    p.add_argument("--duration", type=float, default=DURATION, help="simulated s per seed")
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    p.add_argument("--verbose", action="store_true", help="one line per seed")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    outcomes = []
    seeds = range(args.start, args.start + args.seeds)
    for out in sweep(seeds, args.duration, args.jobs):
        outcomes.append(out)
        if args.verbose or not out.safe:
            verdict = "ok" if out.safe else f"UNSAFE {list(out.violations)}"
            print(
                f"seed {out.seed}: {verdict} ({out.description}) heights={out.heights} "
                f"joins={out.joins} leaves={out.leaves} removals={out.removals} "
                f"wall={out.wall:.1f}s",
                flush=True,
            )
    wall = time.perf_counter() - t0
    print(
        f"churn_sweep seeds={len(outcomes)} unsafe={sum(not o.safe for o in outcomes)} "
        f"joins={sum(o.joins for o in outcomes)} leaves={sum(o.leaves for o in outcomes)} "
        f"removals={sum(o.removals for o in outcomes)} wall_s={wall:.1f}"
    )
    return 0 if all(o.safe for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
