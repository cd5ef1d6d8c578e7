"""Simulated BitChat phones at a simulated table (virtual clock, deterministic by seed):
they see the nodes, join and bet through the public chat, and get private replies over
Noise, beside a Byzantine validator."""

from __future__ import annotations

from ble_bridge.sim.byzantine import Behaviour
from ble_bridge.sim.scenario import ScenarioConfig
from ble_bridge.sim.table import TableConfig, simulate_table


def test_phones_join_bet_and_get_dm_replies_next_to_a_byzantine_validator() -> None:
    sc = ScenarioConfig(nodes=4, duration=40.0, warmup=3.0, drain=5.0, trace=False, seed=2)
    r = simulate_table(
        TableConfig(scenario=sc, phones=2, byzantine=1, behaviour=Behaviour.EQUIVOCATE)
    )
    assert r.safe
    pt = r.phone_totals
    assert pt["phone_dms"] >= 2  # each phone read a private reply
    assert pt["phone_bets"] >= 1  # committed PhoneOps that are bets
    assert pt["phone_bets"] <= pt["phone_bets_sent"]
    line = r.last_line()
    assert line.endswith(f" phone_bets={pt['phone_bets']} phone_dms={pt['phone_dms']}")
    assert sorted(r.final_heights) == [0, 1, 2, 3]  # the phones are not validators
