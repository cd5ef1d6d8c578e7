"""Byzantine set-change attacks on a runtime table (loopback air, virtual clock, by seed):
a seat sponsoring keys it controls, forged join requests, replayed join requests after
leaving, votes signed with a removed key. Safety and the table's bounds must hold; what
the honest nodes refused shows each attack reached them."""

from __future__ import annotations

import pytest

from ble_bridge.sim.churn import TABLE, ChurnResult, choose_byzantine, simulate_churn
from ble_bridge.sim.churn_attacks import Attacker
from ble_bridge.sim.churn_sweep import sweep
from ble_bridge.sim.scenario import ScenarioConfig

pytestmark = pytest.mark.timeout(900)


def attacked(behaviour: str, seed: int = 1, nodes: int = 5) -> tuple[ChurnResult, Attacker]:
    config = ScenarioConfig(nodes=nodes, duration=60.0, warmup=3.0, seed=seed, trace=False)
    byz = choose_byzantine(nodes, 1, behaviour, seed)
    [index] = byz
    result = simulate_churn(config, byzantine=byz)
    assert result.safe, (result.violations, result.last_line())
    assert result.tables == 1 and result.final_sets
    assert len({tuple(s) for s in result.final_sets}) == 1  # one set at every honest node
    return result, Attacker(index, behaviour, TABLE, seed)


def test_a_seat_sponsoring_keys_it_controls_never_overfills_the_table() -> None:
    """Valid requests for free seats are honoured (they look like people), but one seat on
    probation at a time: each silent key is removed before the next one sits, so the
    table keeps its quorum and goes on (without probation all three sat and it stalled at
    height 31 of this run)."""
    r, a = attacked("sponsor")
    assert r.attacks["sybil_join_requests"] > 0
    [keys] = {tuple(s) for s in r.final_sets}
    assert len(a.sybil_keys & set(keys)) <= 1
    assert len(keys) <= 8  # never more than the seats
    assert r.removals >= 1  # a silent key sat and was removed on probation
    assert r.heights >= 80


def test_forged_join_requests_are_refused_and_never_seated() -> None:
    r, _ = attacked("forged-join")
    assert r.attacks["forged_join_requests"] > 10
    assert r.refused.get("drop_join_bad_signature", 0) > 0
    assert not r.violations


def test_replayed_join_requests_seat_nobody_again() -> None:
    r, _ = attacked("join-replay")
    assert r.attacks["replayed_join_requests"] > 10
    [keys] = {tuple(s) for s in r.final_sets}
    assert len(keys) >= 2 and r.leaves >= 1
    # refused somewhere on the way: the bridge's dedup, or the engine (seated / replayed)
    refused = ("duplicate", "drop_join_replayed", "drop_join_already_validator")
    assert sum(r.refused.get(k, 0) for k in refused) > 0


def test_votes_signed_with_a_removed_key_never_count() -> None:
    r, _ = attacked("removed-votes")
    assert r.attacks["removed_votes"] > 10
    assert r.refused.get("vote_bad_signature", 0) + r.refused.get("drop_not_validator", 0) > 0
    assert r.heights > 40  # the table went on without it


def test_a_small_churn_sweep_of_random_faults_and_attacks_stays_safe() -> None:
    # the default suite's share; the slow tier runs 500 (below)
    outcomes = list(sweep(range(3)))
    unsafe = [o for o in outcomes if not o.safe]
    assert not unsafe, [f"{o.seed}: {o.description} {o.violations}" for o in unsafe]
    assert sum(o.joins for o in outcomes) >= 9


@pytest.mark.slow
@pytest.mark.timeout(14400)
def test_a_sweep_of_500_churn_seeds_stays_safe() -> None:
    outcomes = list(sweep(range(500), jobs=2))
    unsafe = [o for o in outcomes if not o.safe]
    assert not unsafe, [f"{o.seed}: {o.description} {o.violations}" for o in unsafe]
