"""The craps table recovers from a partition plus a crash: stranded nodes get a link again.

8 validators (quorum 6): a minority of 2 is cut off at 10 s and a majority node crashes
at 18 s, restarting 30 s later. After the heal at 25 s only 7 are up, so the majority
commits only once the healed minority is linked in again. Greedy link budgets left every
majority node full and the minority alone: the chain stopped at the stall point for good.
"""

from __future__ import annotations

from ble_bridge.air.faults import Crash, FaultPlan
from ble_bridge.sim.scenario import ScenarioConfig
from ble_bridge.sim.table import TableConfig, minority_groups, simulate_table


def test_table_keeps_committing_after_partition_heal_and_crash() -> None:
    seed = 1
    minority, majority = minority_groups(8, seed)
    victim = majority[0]
    plan = FaultPlan((Crash(18.0, victim, 30.0),))
    scenario = ScenarioConfig(
        nodes=8, duration=70, warmup=2.0, drain=3.0, seed=seed, faults=plan, trace=False
    )
    r = simulate_table(TableConfig(scenario=scenario, partition=(10.0, 25.0)))
    assert r.agreement and r.valid and r.invariants and r.double_signs == 0
    stall = max(r.marks["heal"].values())
    # every validator, the healed minority and the restarted node included, moved on
    assert min(r.final_heights.values()) >= stall + 8, (stall, r.final_heights)
    assert all(r.final_heights[i] >= stall + 8 for i in minority)
    assert r.scenario.air_stats["link_rotations"] >= 1
