"""A craps table formed at runtime: seats open and close by committed set changes, the
ledger balances through every one of them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ble_bridge.consensus.app import InvalidOperation
from ble_bridge.consensus.craps import (
    BetKind,
    CrapsApp,
    CrapsState,
    PlaceBet,
    TableRules,
    apply_op,
    check_invariants,
    decode_state,
    encode_op,
    encode_state,
    seat_player,
    unseat_player,
)
from ble_bridge.consensus.engine import ConsensusEngine
from ble_bridge.consensus.testing import UNIT_SESSION, exchange, unit_identities

RULES = TableRules(seats=4, starting_balance=500, min_bet=5)
KEYS = [bytes([i]) * 32 for i in range(1, 8)]


def _table(n: int = 1) -> CrapsState:
    state = CrapsApp(RULES).initial_state(KEYS[:1])
    assert state.balance_of(KEYS[0]) == RULES.starting_balance  # the opener sits at once
    for k in KEYS[1:n]:
        state = seat_player(state, k, 0)
    return state


def test_seating_gives_the_buy_in_and_keeps_the_ledger_balanced() -> None:
    state = _table(3)
    assert state.validators == tuple(sorted(KEYS[:3]))
    assert state.balance_of(KEYS[2]) == 500 and state.seats_free == 1
    check_invariants(state)
    assert decode_state(encode_state(state)) == state


def test_a_full_table_a_second_seat_and_a_wrong_buy_in_are_refused() -> None:
    state = _table(4)
    with pytest.raises(InvalidOperation) as full:
        seat_player(state, KEYS[5], 0)
    assert full.value.reason == "table_full"
    with pytest.raises(InvalidOperation) as twice:
        seat_player(_table(2), KEYS[1], 0)
    assert twice.value.reason == "already_seated"
    with pytest.raises(InvalidOperation) as buy:
        seat_player(_table(2), KEYS[5], 7)
    assert buy.value.reason == "bad_buy_in"


def test_leaving_with_bets_forfeits_them_and_cashes_out_the_balance() -> None:
    state = _table(3)
    state = apply_op(state, KEYS[1], PlaceBet(0, BetKind.PASS_LINE, 50), 2)
    bank = state.bank
    after = unseat_player(state, KEYS[1])
    check_invariants(after)
    assert KEYS[1] not in after.validators and after.bank == bank + 50
    assert after.cashed_out == ((KEYS[1], 450),)
    assert decode_state(encode_state(after)) == after


def test_bets_below_the_minimum_are_refused() -> None:
    with pytest.raises(InvalidOperation) as low:
        apply_op(_table(2), KEYS[1], PlaceBet(0, BetKind.FIELD, 4), 2)
    assert low.value.reason == "below_min_bet"


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 6), st.integers(1, 80)), max_size=30))
def test_any_sequence_of_seats_leaves_and_bets_conserves_tokens(
    steps: list[tuple[bool, int, int]],
) -> None:
    state = _table(1)
    for sit, who, amount in steps:
        key = KEYS[who]
        try:
            if sit:
                state = seat_player(state, key, 0)
            elif key in state.validators and len(state.validators) > 1:
                if amount % 2:
                    state = unseat_player(state, key)
                else:
                    state = apply_op(state, key, PlaceBet(state.round, BetKind.FIELD, amount), 1)
        except InvalidOperation:
            continue
        check_invariants(state)
        assert state.total_tokens == state.supply


def test_players_sit_down_through_the_engine_and_bet() -> None:
    ids = unit_identities(4)
    opener = ids[0].signing_public
    group = [ConsensusEngine(UNIT_SESSION, ident, [opener], CrapsApp(RULES)) for ident in ids]
    for e in group:
        e.start(0.0)
    now = 0.0
    for k, e in enumerate(group[1:], start=1):
        e.request_join(now, nonce=k, buy_in=500)
        now = exchange(group, now) + 0.5
    state = group[0].state
    assert isinstance(state, CrapsState)
    assert len(state.validators) == 4 and state.seats_free == 0
    assert all(e.is_validator for e in group)
    group[3].submit(now, encode_op(PlaceBet(state.round, BetKind.PASS_LINE, 25)))
    now = exchange(group, now) + 0.5
    state = group[1].state
    assert isinstance(state, CrapsState)
    assert state.bet_of(ids[3].signing_public, BetKind.PASS_LINE) == 25
    # a fifth key finds the table full: refused before anyone sponsors it
    extra = unit_identities(5)[4]
    late = ConsensusEngine(UNIT_SESSION, extra, [opener], CrapsApp(RULES))
    late.start(now)
    req = late.request_join(now, nonce=1, buy_in=500)
    group[0].receive(now, req)
    assert group[0].stats["drop_join_table_full"] == 1
    check_invariants(state)
    assert len({e.state_hash for e in group}) == 1
