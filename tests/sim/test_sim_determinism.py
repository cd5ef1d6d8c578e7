"""One seed makes a run reproducible bit for bit, in-process and across processes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap

from ble_bridge.air.faults import ClockSkew, Crash, FaultPlan, Heal, Loss, Movement, Partition
from ble_bridge.sim.scenario import ScenarioConfig, ScenarioResult, simulate

FAULTS = FaultPlan(
    (
        Crash(8.0, 3, restart_after=5.0),
        Partition(12.0, ((0, 1, 2, 3),)),
        Heal(18.0),
        Loss(5.0, 25.0, 0.05),
        Movement(),
        ClockSkew(2, 30.0),
    )
)


def _run(seed: int) -> ScenarioResult:
    return simulate(
        ScenarioConfig(
            nodes=10,
            topology="random",
            profile="pi-tuned",
            duration=30.0,
            warmup=5.0,
            seed=seed,
            faults=FAULTS,
            rate=0.5,
        )
    )


def _digest(trace: object) -> str:
    return hashlib.sha256(repr(trace).encode()).hexdigest()


def test_same_seed_gives_an_identical_event_trace() -> None:
    a, b = _run(1), _run(1)
    assert len(a.trace) > 1000
    assert {e[1] for e in a.trace} >= {"frame", "link_up", "link_break", "send", "deliver", "crash"}
    assert a.trace == b.trace
    assert (a.delivered, a.sent, a.latencies) == (b.delivered, b.sent, b.latencies)


def test_different_seed_gives_a_different_trace() -> None:
    assert _run(1).trace != _run(2).trace


def test_trace_does_not_depend_on_the_process_hash_seed() -> None:
    script = textwrap.dedent(
        """
        import hashlib, sys
        sys.path.insert(0, sys.argv[1])
        from test_sim_determinism import _run, _digest
        print(_digest(_run(1).trace))
        """
    )
    here = os.path.dirname(__file__)
    digests = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        out = subprocess.run(
            [sys.executable, "-c", script, here],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        digests.add(out.stdout.strip())
    assert digests == {_digest(_run(1).trace)}
