"""The craps application: op codec, betting rules, commit-reveal rounds, payouts, snapshots."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
import textwrap
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ble_bridge.consensus.app import Application, BlockContext, InvalidOperation
from ble_bridge.consensus.craps import (
    MAX_SNAPSHOT_BYTES,
    Bet,
    BetKind,
    CommitRandomness,
    CrapsApp,
    CrapsState,
    Join,
    Op,
    OpDecodeError,
    Phase,
    PlaceBet,
    RevealRandomness,
    Stage,
    TablePlayer,
    TableRules,
    check_invariants,
    commitment,
    decode_op,
    dice_from_seed,
    encode_op,
    resolve_roll,
    roll_dice,
    settle,
    table_id,
)

CONFORMS: Application[CrapsState] = CrapsApp()  # mypy checks the protocol here

KEYS = tuple(bytes([i]) * 32 for i in range(1, 5))
OUTSIDER = b"\xee" * 32
A, B, C, D = KEYS


def ctx(height: int, validators: tuple[bytes, ...] = KEYS) -> BlockContext:
    return BlockContext(height=height, proposer=validators[0], validators=validators)


def submit(app: CrapsApp, state: CrapsState, who: bytes, op: Op, height: int = 1) -> CrapsState:
    raw = encode_op(op)
    app.check(state, who, raw, ctx(height))
    return app.apply(state, who, raw, ctx(height))


def refused(app: CrapsApp, state: CrapsState, who: bytes, op: Op | bytes) -> str:
    raw = op if isinstance(op, bytes) else encode_op(op)
    with pytest.raises(InvalidOperation) as info:
        app.check(state, who, raw, ctx(1))
    with pytest.raises(InvalidOperation):
        app.apply(state, who, raw, ctx(1))
    return info.value.reason


def seated(app: CrapsApp | None = None, players: tuple[bytes, ...] = KEYS) -> CrapsState:
    app = app or CrapsApp()
    state = app.initial_state(KEYS)
    for p in players:
        state = submit(app, state, p, Join())
    return state


def secret_for_roll(state: CrapsState, player: bytes, dice: tuple[int, int]) -> bytes:
    """A secret that, as the only reveal of the round, rolls ``dice``."""
    tid = table_id(state.validators)
    for i in range(10_000):
        secret = i.to_bytes(32, "big")
        if roll_dice(tid, state.round, [(player, secret)]) == dice:
            return secret
    raise AssertionError("no secret found")


def roll(app: CrapsApp, state: CrapsState, dice: tuple[int, int], height: int = 10) -> CrapsState:
    """Drive one commit-reveal round where only A reveals, rolling ``dice``."""
    secret = secret_for_roll(state, A, dice)
    state = submit(app, state, A, CommitRandomness(state.round, commitment(A, state.round, secret)))
    state = app.end_block(state, ctx(height + state.rules.commit_window))
    assert state.stage == Stage.REVEALING
    state = submit(app, state, A, RevealRandomness(state.round, secret))
    others_committed = len(state.commits) > 1
    end = (
        height + state.rules.commit_window + (state.rules.reveal_window if others_committed else 1)
    )
    state = app.end_block(state, ctx(end))
    assert state.stage == Stage.BETTING
    assert state.history[-1] == dice
    return state


# --- op codec ---------------------------------------------------------------------------

ops_strategy = st.one_of(
    st.just(Join()),
    st.builds(
        PlaceBet,
        st.integers(0, 2**32 - 1),
        st.sampled_from(list(BetKind)),
        st.integers(0, 2**32 - 1),
    ),
    st.builds(CommitRandomness, st.integers(0, 2**32 - 1), st.binary(min_size=32, max_size=32)),
    st.builds(RevealRandomness, st.integers(0, 2**32 - 1), st.binary(min_size=32, max_size=32)),
)


@given(ops_strategy)
def test_op_encoding_round_trips(op: Op) -> None:
    assert decode_op(encode_op(op)) == op


def test_op_encoding_is_compact() -> None:
    assert len(encode_op(Join())) == 1
    assert len(encode_op(PlaceBet(3, BetKind.FIELD, 25))) == 10
    assert len(encode_op(CommitRandomness(3, b"\0" * 32))) == 37
    assert len(encode_op(RevealRandomness(3, b"\0" * 32))) == 37


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x01\x00",
        b"\x02" + b"\0" * 8,
        b"\x02\0\0\0\0\x04\0\0\0\x01",
        b"\x03" + b"\0" * 35,
        b"\x04" + b"\0" * 38,
        b"\x09",
    ],
)
def test_malformed_ops_are_refused(raw: bytes) -> None:
    with pytest.raises(OpDecodeError):
        decode_op(raw)
    assert refused(CrapsApp(), seated(), A, raw) == "malformed_op"


@given(st.binary(max_size=64))
def test_decode_op_raises_only_op_decode_error(raw: bytes) -> None:
    try:
        op = decode_op(raw)
    except OpDecodeError:
        return
    assert encode_op(op) == raw


# --- genesis and joining ----------------------------------------------------------------


def test_genesis_funds_the_bank_and_the_unclaimed_pool() -> None:
    state = CrapsApp().initial_state(list(reversed(KEYS)))
    assert state.validators == KEYS
    assert state.bank == 4 * 10_000
    assert state.unclaimed == 4 * 1000
    assert state.total_tokens == state.supply


@pytest.mark.parametrize(
    "validators", [[], [b"short"], [i.to_bytes(32, "big") for i in range(1025)]]
)
def test_genesis_refuses_bad_validator_sets(validators: list[bytes]) -> None:
    with pytest.raises(ValueError):
        CrapsApp().initial_state(validators)


def test_join_moves_the_starting_balance_out_of_the_unclaimed_pool() -> None:
    app = CrapsApp()
    state = submit(app, app.initial_state(KEYS), B, Join())
    assert state.balance_of(B) == 1000
    assert state.balance_of(A) is None
    assert state.unclaimed == 3000


def test_join_refusals() -> None:
    app = CrapsApp()
    state = seated(app, (A,))
    assert refused(app, state, A, Join()) == "already_joined"
    assert refused(app, state, OUTSIDER, Join()) == "not_validator"
    assert refused(app, app.ban(state, B, ctx(1)), B, Join()) == "banned"


# --- betting rules ----------------------------------------------------------------------


def test_bet_escrows_tokens_and_repeat_bets_add_up() -> None:
    app = CrapsApp()
    state = seated(app)
    state = submit(app, state, A, PlaceBet(0, BetKind.PASS_LINE, 100))
    state = submit(app, state, A, PlaceBet(0, BetKind.PASS_LINE, 50))
    assert state.balance_of(A) == 850
    assert state.bets == (Bet(A, BetKind.PASS_LINE, 150),)
    assert state.escrow == 150
    assert state.total_tokens == state.supply


def test_bet_refusals() -> None:
    app = CrapsApp()
    state = seated(app, (A, B))
    assert refused(app, state, C, PlaceBet(0, BetKind.FIELD, 10)) == "not_joined"
    assert refused(app, state, OUTSIDER, PlaceBet(0, BetKind.FIELD, 10)) == "not_validator"
    assert refused(app, state, A, PlaceBet(0, BetKind.FIELD, 0)) == "bad_amount"
    assert refused(app, state, A, PlaceBet(0, BetKind.FIELD, 1001)) == "insufficient_balance"
    assert refused(app, state, A, PlaceBet(1, BetKind.FIELD, 10)) == "stale_round"
    banned = app.ban(state, B, ctx(1))
    assert refused(app, banned, B, PlaceBet(0, BetKind.FIELD, 10)) == "banned"


def test_whole_balance_may_be_bet() -> None:
    app = CrapsApp()
    state = submit(app, seated(app), A, PlaceBet(0, BetKind.DONT_PASS, 1000))
    assert state.balance_of(A) == 0


def test_contract_bets_only_on_the_come_out_but_field_any_time() -> None:
    app = CrapsApp()
    state = roll(app, seated(app), (2, 2))  # point 4
    assert (state.phase, state.point) == (Phase.POINT, 4)
    rnd = state.round
    assert refused(app, state, B, PlaceBet(rnd, BetKind.PASS_LINE, 10)) == "wrong_phase"
    assert refused(app, state, B, PlaceBet(rnd, BetKind.DONT_PASS, 10)) == "wrong_phase"
    submit(app, state, B, PlaceBet(rnd, BetKind.FIELD, 10))


def test_bank_refuses_bets_it_could_not_cover() -> None:
    app = CrapsApp(TableRules(bank_fund_per_validator=100))  # bank 400
    state = seated(app)
    state = submit(app, state, A, PlaceBet(0, BetKind.FIELD, 150))  # exposure 300
    assert refused(app, state, B, PlaceBet(0, BetKind.PASS_LINE, 101)) == "bank_exposure"
    state = submit(app, state, B, PlaceBet(0, BetKind.PASS_LINE, 100))
    assert state.exposure == state.bank == 400


def test_bets_close_when_the_commits_are_in() -> None:
    app = CrapsApp()
    state = seated(app, (A,))
    state = submit(app, state, A, CommitRandomness(0, commitment(A, 0, b"s" * 32)))
    state = app.end_block(state, ctx(1))
    assert state.stage == Stage.REVEALING
    assert refused(app, state, A, PlaceBet(0, BetKind.FIELD, 10)) == "wrong_stage"
    assert refused(app, state, A, CommitRandomness(0, b"\0" * 32)) == "wrong_stage"


# --- commit-reveal ----------------------------------------------------------------------


def test_commit_refusals() -> None:
    app = CrapsApp()
    state = seated(app, (A,))
    assert refused(app, state, B, CommitRandomness(0, b"\0" * 32)) == "not_joined"
    state = submit(app, state, A, CommitRandomness(0, b"\0" * 32))
    assert refused(app, state, A, CommitRandomness(0, b"\1" * 32)) == "duplicate_commit"


def test_reveal_refusals() -> None:
    app = CrapsApp()
    state = seated(app, (A, B))
    secret = b"a" * 32
    assert refused(app, state, A, RevealRandomness(0, secret)) == "wrong_stage"
    state = submit(app, state, A, CommitRandomness(0, commitment(A, 0, secret)))
    state = app.end_block(state, ctx(1 + state.rules.commit_window))
    assert state.stage == Stage.REVEALING
    assert refused(app, state, B, RevealRandomness(0, secret)) == "no_commit"
    assert refused(app, state, A, RevealRandomness(0, b"b" * 32)) == "reveal_mismatch"
    assert refused(app, state, A, RevealRandomness(1, secret)) == "stale_round"
    state = submit(app, state, A, RevealRandomness(0, secret))
    assert refused(app, state, A, RevealRandomness(0, secret)) == "duplicate_reveal"


def test_commits_close_early_when_every_active_player_committed() -> None:
    app = CrapsApp()
    state = seated(app, (A, B))
    state = submit(app, state, A, CommitRandomness(0, b"\0" * 32), height=5)
    assert state.deadline == 5 + state.rules.commit_window
    assert app.end_block(state, ctx(5)).stage == Stage.BETTING
    state = submit(app, state, B, CommitRandomness(0, b"\1" * 32), height=6)
    assert app.end_block(state, ctx(6)).stage == Stage.REVEALING


def test_commits_close_at_the_deadline_without_the_laggards() -> None:
    app = CrapsApp()
    state = seated(app, (A, B))
    state = submit(app, state, A, CommitRandomness(0, b"\0" * 32), height=5)
    deadline = state.deadline
    assert app.end_block(state, ctx(deadline - 1)).stage == Stage.BETTING
    after = app.end_block(state, ctx(deadline))
    assert after.stage == Stage.REVEALING
    assert after.deadline == deadline + state.rules.reveal_window


def test_an_idle_table_waits_for_a_first_commit() -> None:
    app = CrapsApp()
    state = seated(app)
    assert app.end_block(state, ctx(10_000)) == state


def test_dice_come_from_all_reveals_in_canonical_order() -> None:
    app = CrapsApp()
    state = seated(app, (A, B, C))
    secrets = {A: b"1" * 32, B: b"2" * 32, C: b"3" * 32}
    for p in (C, A, B):
        state = submit(app, state, p, CommitRandomness(0, commitment(p, 0, secrets[p])))
    state = app.end_block(state, ctx(1))
    for p in (B, C, A):
        state = submit(app, state, p, RevealRandomness(0, secrets[p]), height=2)
    after = app.end_block(state, ctx(2))
    expected = roll_dice(table_id(KEYS), 0, [(A, secrets[A]), (B, secrets[B]), (C, secrets[C])])
    assert after.history == (expected,)
    assert (after.round, after.stage, after.commits, after.reveals) == (1, Stage.BETTING, (), ())


def test_non_revealer_forfeits_bets_and_the_roll_uses_the_reveals_that_came() -> None:
    app = CrapsApp()
    state = seated(app, (A, B))
    state = submit(app, state, A, PlaceBet(0, BetKind.PASS_LINE, 10))
    state = submit(app, state, B, PlaceBet(0, BetKind.FIELD, 40))
    state = submit(app, state, A, CommitRandomness(0, commitment(A, 0, b"a" * 32)))
    state = submit(app, state, B, CommitRandomness(0, commitment(B, 0, b"b" * 32)))
    state = app.end_block(state, ctx(1))
    state = submit(app, state, A, RevealRandomness(0, b"a" * 32), height=2)
    assert app.end_block(state, ctx(1 + state.rules.reveal_window - 1)).stage == Stage.REVEALING
    bank_before = state.bank
    after = app.end_block(state, ctx(1 + state.rules.reveal_window))
    assert after.history == (roll_dice(table_id(KEYS), 0, [(A, b"a" * 32)]),)
    assert after.balance_of(B) == 960
    assert all(b.player != B for b in after.bets)
    pass_result = settle(BetKind.PASS_LINE, Phase.COME_OUT, 0, sum(after.history[0]))
    a_paid = 0 if pass_result in (None, -1) else 10 * (1 + pass_result)
    assert after.balance_of(A) == 990 + a_paid
    assert after.bank == bank_before + 40 + (10 if pass_result == -1 else 0) - (
        10 if pass_result == 1 else 0
    )
    assert after.total_tokens == after.supply


def test_no_reveals_voids_the_roll_and_forfeits_the_committers() -> None:
    app = CrapsApp()
    state = seated(app, (A, B))
    state = submit(app, state, A, PlaceBet(0, BetKind.PASS_LINE, 10))
    state = submit(app, state, B, PlaceBet(0, BetKind.PASS_LINE, 20))
    state = submit(app, state, A, CommitRandomness(0, b"\0" * 32))
    state = app.end_block(state, ctx(1 + state.rules.commit_window))
    after = app.end_block(state, ctx(1 + state.rules.commit_window + state.rules.reveal_window))
    assert after.history == ()
    assert after.round == 1
    assert after.bets == (Bet(B, BetKind.PASS_LINE, 20),)  # B did not commit: its bet rides
    assert after.bank == state.bank + 10


# --- payouts ----------------------------------------------------------------------------

COME_OUT_PASS = {7: 1, 11: 1, 2: -1, 3: -1, 12: -1}
COME_OUT_DONT = {2: 1, 3: 1, 12: 0, 7: -1, 11: -1}
FIELD = {2: 2, 12: 2, 3: 1, 4: 1, 9: 1, 10: 1, 11: 1, 5: -1, 6: -1, 7: -1, 8: -1}


@pytest.mark.parametrize("total", range(2, 13))
def test_settle_matches_the_craps_table(total: int) -> None:
    assert settle(BetKind.PASS_LINE, Phase.COME_OUT, 0, total) == COME_OUT_PASS.get(total)
    assert settle(BetKind.DONT_PASS, Phase.COME_OUT, 0, total) == COME_OUT_DONT.get(total)
    assert settle(BetKind.FIELD, Phase.COME_OUT, 0, total) == FIELD[total]
    assert settle(BetKind.FIELD, Phase.POINT, 6, total) == FIELD[total]
    on_point = {6: 1, 7: -1}.get(total)
    assert settle(BetKind.PASS_LINE, Phase.POINT, 6, total) == on_point
    assert settle(BetKind.DONT_PASS, Phase.POINT, 6, total) == (
        None if on_point is None else -on_point
    )


def table_with_bets(*bets: tuple[bytes, BetKind, int]) -> tuple[CrapsApp, CrapsState]:
    app = CrapsApp()
    state = seated(app)
    for who, kind, amount in bets:
        state = submit(app, state, who, PlaceBet(state.round, kind, amount))
    return app, state


def test_pass_line_natural_pays_even_money_and_dont_pass_loses() -> None:
    _, state = table_with_bets((A, BetKind.PASS_LINE, 100), (B, BetKind.DONT_PASS, 100))
    after = resolve_roll(state, 5, 2)
    assert (after.balance_of(A), after.balance_of(B)) == (1100, 900)
    assert after.bank == state.bank and after.bets == ()
    assert after.phase == Phase.COME_OUT


def test_craps_on_the_come_out_loses_pass_and_pays_dont_pass() -> None:
    _, state = table_with_bets((A, BetKind.PASS_LINE, 100), (B, BetKind.DONT_PASS, 100))
    after = resolve_roll(state, 1, 2)
    assert (after.balance_of(A), after.balance_of(B)) == (900, 1100)


def test_dont_pass_pushes_on_bar_twelve() -> None:
    _, state = table_with_bets((A, BetKind.PASS_LINE, 100), (B, BetKind.DONT_PASS, 100))
    after = resolve_roll(state, 6, 6)
    assert (after.balance_of(A), after.balance_of(B)) == (900, 1000)
    assert after.bank == state.bank + 100


def test_point_is_set_then_made() -> None:
    _, state = table_with_bets((A, BetKind.PASS_LINE, 100), (B, BetKind.DONT_PASS, 100))
    state = resolve_roll(state, 4, 4)
    assert (state.phase, state.point, len(state.bets)) == (Phase.POINT, 8, 2)
    state = resolve_roll(state, 3, 3)  # 6: nothing happens
    assert (state.phase, len(state.bets)) == (Phase.POINT, 2)
    state = resolve_roll(state, 5, 3)
    assert (state.phase, state.point, state.bets) == (Phase.COME_OUT, 0, ())
    assert (state.balance_of(A), state.balance_of(B)) == (1100, 900)


def test_seven_out_pays_dont_pass() -> None:
    _, state = table_with_bets((A, BetKind.PASS_LINE, 100), (B, BetKind.DONT_PASS, 100))
    state = resolve_roll(resolve_roll(state, 2, 2), 3, 4)
    assert (state.phase, state.bets) == (Phase.COME_OUT, ())
    assert (state.balance_of(A), state.balance_of(B)) == (900, 1100)


@pytest.mark.parametrize(
    ("dice", "balance"),
    [
        ((1, 1), 1200),
        ((6, 6), 1200),
        ((1, 2), 1100),
        ((5, 6), 1100),
        ((4, 5), 1100),
        ((3, 3), 900),
        ((3, 4), 900),
    ],
)
def test_field_is_a_one_roll_bet(dice: tuple[int, int], balance: int) -> None:
    _, state = table_with_bets((C, BetKind.FIELD, 100))
    after = resolve_roll(state, *dice)
    assert after.balance_of(C) == balance
    assert after.bets == ()
    assert after.total_tokens == after.supply


def test_full_round_trip_through_commit_reveal_pays_out() -> None:
    app, state = table_with_bets((B, BetKind.PASS_LINE, 100), (C, BetKind.FIELD, 50))
    state = roll(app, state, (6, 5))  # 11: pass wins, field wins even
    assert (state.balance_of(B), state.balance_of(C)) == (1100, 1050)


def test_history_is_bounded() -> None:
    app = CrapsApp(TableRules(history_limit=3))
    state = seated(app)
    for d in range(1, 6):
        state = resolve_roll(state, d, 1)
    assert state.history == ((3, 1), (4, 1), (5, 1))


# --- bans -------------------------------------------------------------------------------


def test_ban_forfeits_bets_and_drops_the_commit() -> None:
    app, state = table_with_bets((B, BetKind.PASS_LINE, 100), (B, BetKind.FIELD, 10))
    state = submit(app, state, B, CommitRandomness(0, b"\0" * 32))
    after = app.ban(state, B, ctx(2))
    assert after.banned == (B,)
    assert (after.bets, after.commits, after.deadline) == ((), (), 0)
    assert after.bank == state.bank + 110
    assert after.balance_of(B) == 890  # frozen, still counted
    assert after.total_tokens == after.supply
    assert B not in after.active_players()
    assert app.ban(after, B, ctx(3)) == after
    assert app.ban(after, OUTSIDER, ctx(3)) == after


def test_banning_the_last_non_revealer_lets_the_roll_happen() -> None:
    app = CrapsApp()
    state = seated(app, (A, B))
    state = submit(app, state, A, CommitRandomness(0, commitment(A, 0, b"a" * 32)))
    state = submit(app, state, B, CommitRandomness(0, commitment(B, 0, b"b" * 32)))
    state = app.end_block(state, ctx(1))
    state = submit(app, state, A, RevealRandomness(0, b"a" * 32), height=2)
    state = app.ban(state, B, ctx(2))
    after = app.end_block(state, ctx(2))
    assert after.history == (roll_dice(table_id(KEYS), 0, [(A, b"a" * 32)]),)


def test_banned_player_does_not_hold_up_the_commits() -> None:
    app = CrapsApp()
    state = seated(app, (A, B))
    state = submit(app, state, A, CommitRandomness(0, b"\0" * 32))
    state = app.ban(state, B, ctx(1))
    assert app.end_block(state, ctx(1)).stage == Stage.REVEALING


# --- dice -------------------------------------------------------------------------------


def test_dice_are_roughly_uniform() -> None:
    tid = table_id(KEYS)
    counts = Counter(roll_dice(tid, r, [(A, r.to_bytes(32, "big"))]) for r in range(36 * 200))
    assert set(counts) == {(a, b) for a in range(1, 7) for b in range(1, 7)}
    assert all(120 <= n <= 290 for n in counts.values()), counts


def test_dice_skip_bytes_that_would_bias_them() -> None:
    assert dice_from_seed(bytes([255, 252, 3, 10, 9])) == (4, 5)
    assert dice_from_seed(bytes([251, 5])) == (6, 6)
    tail = dice_from_seed(bytes([255] * 32))  # all rejected: continues on the rehash
    assert all(1 <= d <= 6 for d in tail)


def test_dice_ignore_the_order_reveals_are_given_in() -> None:
    reveals = [(C, b"c" * 32), (A, b"a" * 32), (B, b"b" * 32)]
    tid = table_id(KEYS)
    assert roll_dice(tid, 3, reveals) == roll_dice(tid, 3, sorted(reveals))
    assert roll_dice(tid, 3, reveals) == roll_dice(tid, 3, reversed(reveals))


def test_dice_depend_on_the_table_and_round() -> None:
    reveals = [(A, b"x" * 32), (B, b"y" * 32)]
    draws = {roll_dice(table_id(KEYS[: n + 1]), r, reveals) for n in range(4) for r in range(8)}
    assert len(draws) > 10


# --- snapshots --------------------------------------------------------------------------


def busy_state() -> tuple[CrapsApp, CrapsState]:
    app, state = table_with_bets((A, BetKind.PASS_LINE, 100), (B, BetKind.FIELD, 30))
    state = roll(app, state, (2, 2))
    state = app.ban(state, D, ctx(30))
    state = submit(
        app, state, C, CommitRandomness(state.round, commitment(C, state.round, b"c" * 32))
    )
    state = submit(
        app, state, A, CommitRandomness(state.round, commitment(A, state.round, b"a" * 32))
    )
    state = app.end_block(state, ctx(31))
    state = submit(app, state, C, RevealRandomness(state.round, b"c" * 32), height=32)
    return app, state


def test_snapshot_restore_are_exact_inverses() -> None:
    app, state = busy_state()
    assert state.stage == Stage.REVEALING and state.reveals and state.banned
    data = app.snapshot(state)
    restored = app.restore(data)
    assert restored == state
    assert app.snapshot(restored) == data
    assert app.state_hash(restored) == app.state_hash(state)
    assert len(app.state_hash(state)) == 32


def test_state_hash_changes_with_the_state() -> None:
    app, state = busy_state()
    other = replace(state, bank=state.bank - 1, unclaimed=state.unclaimed + 1)
    assert app.state_hash(other) != app.state_hash(state)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda s: replace(s, bank=s.bank + 1),  # tokens created
        lambda s: replace(s, reveals=((s.reveals[0][0], b"z" * 32),)),  # reveal mismatch
        lambda s: replace(s, point=7),  # not a point number
        lambda s: replace(s, phase=Phase.COME_OUT),  # phase and point disagree
        lambda s: replace(s, validators=tuple(reversed(s.validators))),
        lambda s: replace(s, history=((7, 1),)),
        lambda s: replace(s, stage=Stage.BETTING),  # reveals while betting
    ],
)
def test_restore_refuses_states_that_break_invariants(corrupt: object) -> None:
    app, state = busy_state()
    bad = corrupt(state)  # type: ignore[operator]
    with pytest.raises(ValueError):
        app.restore(app.snapshot(bad))


def test_check_invariants_flags_negative_balances() -> None:
    _, state = busy_state()
    check_invariants(state)
    bad = replace(state, balances=((A, -5), *state.balances[1:]), bank=state.bank + 5 + 1000)
    with pytest.raises(ValueError, match="negative"):
        check_invariants(bad)


def test_restore_caps_size_and_refuses_trailing_bytes() -> None:
    app, state = busy_state()
    with pytest.raises(ValueError):
        app.restore(b"\0" * (MAX_SNAPSHOT_BYTES + 1))
    with pytest.raises(ValueError):
        app.restore(app.snapshot(state) + b"\0")


@given(st.binary(max_size=400))
def test_restore_of_random_bytes_raises_only_value_error(data: bytes) -> None:
    app = CrapsApp()
    try:
        state = app.restore(data)
    except ValueError:
        return
    assert app.snapshot(state) == data


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_restore_of_mutated_snapshots_raises_only_value_error(data: st.DataObject) -> None:
    app, state = SNAPSHOT_FIXTURE
    raw = bytearray(app.snapshot(state))
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if action == "flip" and raw:
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del raw[pos : pos + data.draw(st.integers(1, 40))]
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=40))
    try:
        restored = app.restore(bytes(raw))
    except ValueError:
        return
    assert restored.total_tokens == restored.supply
    assert app.snapshot(restored) == bytes(raw)


SNAPSHOT_FIXTURE = busy_state()


# --- simulated players ------------------------------------------------------------------


def holdings(state: CrapsState, player: bytes) -> int:
    """A player's balance plus its bets on the table."""
    return (state.balance_of(player) or 0) + sum(state.bet_of(player, k) for k in BetKind)


def play(
    seed: int,
    heights: int,
    *,
    withhold: bytes | None = None,
    drop: float = 0.0,
    delay: int = 0,
    calls: int = 1,
    trace: list[CrapsState] | None = None,
) -> tuple[CrapsApp, CrapsState, Counter[str]]:
    """Players at a table, each asked ``calls`` times a height what to submit: an op
    submitted at height h lands (in the player's submission order, like nonces) at a height
    in h..h+delay, and is reported committed or refused; a dropped op is reported failed
    when it would have landed. Returns the app, the final state and refusals by reason."""
    app = CrapsApp()
    state = app.initial_state(KEYS)
    rng = random.Random(seed)
    players = [
        TablePlayer(
            k, random.Random(rng.random()), reveal_probability=0.0 if k == withhold else 1.0
        )
        for k in KEYS
    ]
    queues: dict[bytes, list[tuple[int, bytes, bool]]] = {k: [] for k in KEYS}
    refusals: Counter[str] = Counter()
    for h in range(1, heights + 1):
        for player in players:
            queue = queues[player.key]
            for _ in range(calls):
                for raw in player.next_ops(state):
                    due = max(h + rng.randint(0, delay), queue[-1][0] if queue else h)
                    queue.append((due, raw, rng.random() < drop))
            while queue and queue[0][0] <= h:
                _, raw, lost = queue.pop(0)
                if lost:
                    player.settled(raw, False)
                    continue
                try:
                    app.check(state, player.key, raw, ctx(h))
                except InvalidOperation as exc:
                    refusals[exc.reason] += 1
                    player.settled(raw, False)
                    continue
                state = app.apply(state, player.key, raw, ctx(h))
                player.settled(raw, True)
        state = app.end_block(state, ctx(h))
        check_invariants(state)
        if trace is not None:
            trace.append(state)
    return app, state, refusals


def test_players_play_a_lively_valid_game() -> None:
    app, state, refusals = play(seed=7, heights=200)
    assert state.round >= 90  # one roll per two heights when everyone is honest
    assert not refusals
    assert len(state.history) == state.rules.history_limit
    assert state.balances != tuple((k, 1000) for k in KEYS)
    assert app.restore(app.snapshot(state)) == state


def test_players_are_deterministic_per_seed() -> None:
    hashes = {CrapsApp().state_hash(play(seed=3, heights=80)[1]) for _ in range(2)}
    assert len(hashes) == 1
    assert CrapsApp().state_hash(play(seed=4, heights=80)[1]) not in hashes


def test_withholding_player_forfeits_and_the_table_moves_on() -> None:
    trace: list[CrapsState] = []
    _, state, _ = play(seed=11, heights=200, withhold=D, trace=trace)
    assert state.round >= 200 // (state.rules.reveal_window + 2)
    held = [holdings(s, D) for s in trace if s.is_joined(D)]
    assert all(later <= earlier for earlier, later in itertools.pairwise(held))  # never wins
    assert held[-1] < 1000
    assert all(D not in dict(s.reveals) for s in trace)
    assert max(holdings(state, k) for k in (A, B, C)) > held[-1]


def decoded(raws: list[bytes]) -> list[Op]:
    return [decode_op(raw) for raw in raws]


def bettor(key: bytes, seed: int = 1) -> TablePlayer:
    """A player that always makes one contract bet on the come-out and never a field bet."""
    return TablePlayer(key, random.Random(seed), contract_probability=1.0, field_probability=0.0)


def test_player_does_not_rejoin_while_its_join_is_in_flight() -> None:
    app = CrapsApp()
    state = app.initial_state(KEYS)
    player = TablePlayer(A, random.Random(1))
    assert decoded(player.next_ops(state)) == [Join()]
    assert [player.next_ops(state) for _ in range(20)] == [[]] * 20
    assert player.in_flight == (Join(),)
    state = submit(app, state, A, Join())
    ops = decoded(player.next_ops(state))
    assert Join() not in ops and Join() not in player.in_flight  # the join is done
    assert isinstance(ops[-1], CommitRandomness)
    assert ops[-1].commitment == commitment(A, 0, player.secret_for(0))
    assert all(isinstance(op, PlaceBet) for op in ops[:-1])


def test_player_joins_again_after_its_join_failed() -> None:
    state = CrapsApp().initial_state(KEYS)
    player = TablePlayer(A, random.Random(1))
    (raw,) = player.next_ops(state)
    player.settled(raw, committed=False)  # e.g. timed out
    assert player.in_flight == ()
    assert decoded(player.next_ops(state)) == [Join()]


def test_player_does_not_double_commit_or_rebet_while_they_are_in_flight() -> None:
    app = CrapsApp()
    state = seated(app, (A, B))
    player = bettor(A)
    first = decoded(player.next_ops(state))
    assert [type(op) for op in first] == [PlaceBet, CommitRandomness]
    assert [player.next_ops(state) for _ in range(20)] == [[]] * 20
    state = submit(app, state, A, first[0])  # the bet lands, the commit is still in flight
    player.settled(encode_op(first[0]), committed=True)
    assert player.in_flight == (first[1],)
    assert player.next_ops(state) == []  # one bet a roll; no second commit


def test_player_commits_again_after_its_commit_failed_but_not_after_it_landed() -> None:
    app = CrapsApp()
    state = seated(app, (A, B))
    player = bettor(A)
    bet_raw, commit_raw = player.next_ops(state)
    player.settled(bet_raw, committed=True)
    player.settled(commit_raw, committed=False)
    assert player.next_ops(state) == [commit_raw]  # planned again: same roll, same secret
    state = submit(app, state, A, decode_op(commit_raw))
    assert player.next_ops(state) == []
    assert player.in_flight == ()


def test_player_replaces_a_failed_bet_only_while_bets_are_open() -> None:
    app = CrapsApp()
    state = seated(app, (A, B))
    player = bettor(A)
    bet_raw, commit_raw = player.next_ops(state)
    player.settled(bet_raw, committed=False)
    (again,) = decoded(player.next_ops(state))  # still betting: a new bet, no second commit
    assert isinstance(again, PlaceBet) and again.round == 0
    for who, op in ((A, decode_op(commit_raw)), (B, CommitRandomness(0, b"\x01" * 32))):
        state = submit(app, state, who, op)
    state = app.end_block(state, ctx(1))  # every player committed: bets are closed
    assert state.stage == Stage.REVEALING
    player.settled(encode_op(again), committed=False)  # refused: wrong_stage
    assert decoded(player.next_ops(state)) == [RevealRandomness(0, player.secret_for(0))]


def test_player_forgets_ops_of_a_roll_that_went_on_without_it() -> None:
    app = CrapsApp()
    state = seated(app, (A, B))
    a, b = bettor(A), TablePlayer(B, random.Random(2))
    assert len(a.next_ops(state)) == 2  # bet and commit sent, never heard of again
    for raw in b.next_ops(state):
        state = app.apply(state, B, raw, ctx(1))
    height = 1
    while state.stage == Stage.BETTING:  # the commit window closes without A
        state = app.end_block(state, ctx(height))
        height += 1
    assert a.next_ops(state) == [] and a.in_flight == ()  # A never committed: nothing to reveal
    for raw in b.next_ops(state):
        state = app.apply(state, B, raw, ctx(height))
    state = app.end_block(state, ctx(height))
    assert state.round == 1
    ops = decoded(a.next_ops(state))
    assert ops[-1] == CommitRandomness(1, commitment(A, 1, a.secret_for(1)))


def test_players_with_slow_ops_never_send_ones_the_table_refuses() -> None:
    # asked four times a height, ops landing up to three heights late: a player resending
    # what is still in flight would get already_joined, duplicate_commit, wrong_stage...
    _, state, refusals = play(seed=9, heights=200, delay=3, calls=4)
    assert refusals == Counter()
    assert state.round >= 200 // 8


def test_player_reveals_once_the_commits_are_in() -> None:
    app = CrapsApp()
    state = seated(app, (A,))
    player = TablePlayer(A, random.Random(2))
    for raw in player.next_ops(state):
        state = app.apply(state, A, raw, ctx(1))
    assert player.next_ops(state) == []
    state = app.end_block(state, ctx(1))
    assert [decode_op(raw) for raw in player.next_ops(state)] == [
        RevealRandomness(0, player.secret_for(0))
    ]


def test_players_replan_lost_ops_and_keep_playing() -> None:
    _, state, _ = play(seed=5, heights=300, drop=0.3, delay=2)
    assert state.round >= 30


# --- determinism across processes -------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
_REPLAY = textwrap.dedent(
    """
    import random
    from ble_bridge.consensus.app import Application, BlockContext, InvalidOperation
    from ble_bridge.consensus.craps import CrapsApp, TablePlayer
    keys = tuple(bytes([i]) * 32 for i in range(1, 8))
    app = CrapsApp()
    state = app.initial_state(keys)
    players = [TablePlayer(k, random.Random(i)) for i, k in enumerate(keys)]
    for h in range(1, 120):
        c = BlockContext(h, keys[0], keys)
        for p in players:
            for raw in p.next_ops(state):
                try:
                    state = app.apply(state, p.key, raw, c)
                except InvalidOperation:
                    pass
        state = app.end_block(state, c)
    print(app.state_hash(state).hex(), state.round)
    """
)


def test_two_processes_with_different_hash_seeds_agree() -> None:
    outputs = set()
    for hash_seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO)}
        done = subprocess.run(
            [sys.executable, "-c", _REPLAY],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        outputs.add(done.stdout)
    assert len(outputs) == 1
    assert int(outputs.pop().split()[1]) > 30


# --- stateful: random valid and invalid op sequences ------------------------------------


class CrapsTable(RuleBasedStateMachine):
    """Two replicas fed the same random ops must agree and keep the ledger invariants."""

    @initialize(
        bank=st.one_of(st.just(10_000), st.integers(0, 500)),
        commit_window=st.integers(1, 3),
        reveal_window=st.integers(1, 3),
        seated=st.sets(st.sampled_from(KEYS)),
    )
    def genesis(
        self, bank: int, commit_window: int, reveal_window: int, seated: set[bytes]
    ) -> None:
        rules = TableRules(
            bank_fund_per_validator=bank,
            commit_window=commit_window,
            reveal_window=reveal_window,
            history_limit=4,
        )
        self.app = CrapsApp(rules)
        self.other = CrapsApp(rules)
        self.state = self.app.initial_state(KEYS)
        self.replica = self.other.restore(self.app.snapshot(self.state))
        self.height = 1
        self.secrets: dict[bytes, bytes] = {}
        for who in sorted(seated):
            self._offer(who, encode_op(Join()))

    def _offer(self, who: bytes, raw: bytes) -> None:
        c = ctx(self.height)
        try:
            self.app.check(self.state, who, raw, c)
        except InvalidOperation as exc:
            assert exc.reason
            with pytest.raises(InvalidOperation):
                self.other.apply(self.replica, who, raw, c)
            return
        self.state = self.app.apply(self.state, who, raw, c)
        self.replica = self.other.apply(self.replica, who, raw, c)

    @rule(who=st.sampled_from((*KEYS, OUTSIDER)))
    def join(self, who: bytes) -> None:
        self._offer(who, encode_op(Join()))

    @rule(
        who=st.sampled_from(KEYS),
        kind=st.sampled_from(list(BetKind)),
        amount=st.one_of(st.integers(0, 3), st.integers(1, 200), st.integers(0, 1200)),
        stale=st.booleans(),
    )
    def bet(self, who: bytes, kind: BetKind, amount: int, stale: bool) -> None:
        rnd = self.state.round + (1 if stale else 0)
        self._offer(who, encode_op(PlaceBet(rnd, kind, amount)))

    @rule(who=st.sampled_from(KEYS), secret=st.binary(min_size=32, max_size=32))
    def commit(self, who: bytes, secret: bytes) -> None:
        rnd = self.state.round
        if self.state.commitment_of(who) is None:
            self.secrets[who] = secret
        self._offer(who, encode_op(CommitRandomness(rnd, commitment(who, rnd, secret))))

    @rule(secret=st.binary(min_size=32, max_size=32))
    def everyone_commits(self, secret: bytes) -> None:
        for who in self.state.active_players():
            self.commit(who, secret)

    @rule()
    def everyone_reveals(self) -> None:
        for who, _ in self.state.commits:
            self.reveal(who, honest=True)

    @rule(secret=st.binary(min_size=32, max_size=32), withholders=st.sets(st.sampled_from(KEYS)))
    def full_roll(self, secret: bytes, withholders: set[bytes]) -> None:
        self.everyone_commits(secret)
        for _ in range(8):
            if self.state.stage == Stage.REVEALING:
                break
            self.end_blocks(1)
        for who, _ in self.state.commits:
            if who not in withholders:
                self.reveal(who, honest=True)
        start = self.state.round
        for _ in range(8):
            if self.state.round != start:
                break
            self.end_blocks(1)

    @rule(who=st.sampled_from(KEYS), honest=st.booleans())
    def reveal(self, who: bytes, honest: bool) -> None:
        secret = self.secrets.get(who, b"\0" * 32) if honest else b"\x5a" * 32
        self._offer(who, encode_op(RevealRandomness(self.state.round, secret)))

    @rule(who=st.sampled_from(KEYS), raw=st.binary(max_size=40))
    def garbage(self, who: bytes, raw: bytes) -> None:
        self._offer(who, raw)

    @rule(blocks=st.integers(1, 4))
    def end_blocks(self, blocks: int) -> None:
        for _ in range(blocks):
            c = ctx(self.height)
            self.state = self.app.end_block(self.state, c)
            self.replica = self.other.end_block(self.replica, c)
            self.height += 1

    @rule(who=st.sampled_from((*KEYS, OUTSIDER)), odds=st.integers(0, 3))
    def ban(self, who: bytes, odds: int) -> None:
        if odds:  # bans are rare: most steps should see a live table
            return
        c = ctx(self.height)
        self.state = self.app.ban(self.state, who, c)
        self.replica = self.other.ban(self.replica, who, c)

    @invariant()
    def tokens_are_conserved_and_never_negative(self) -> None:
        s = self.state
        check_invariants(s)
        assert s.total_tokens == s.supply
        assert min(s.bank, s.unclaimed, *(v for _, v in s.balances)) >= 0
        assert all(b.amount > 0 for b in s.bets)
        assert s.exposure <= s.bank

    @invariant()
    def replicas_agree(self) -> None:
        assert self.other.state_hash(self.replica) == self.app.state_hash(self.state)

    @invariant()
    def snapshot_round_trip_keeps_the_hash(self) -> None:
        data = self.app.snapshot(self.state)
        restored = self.other.restore(data)
        assert restored == self.state
        assert self.other.state_hash(restored) == self.app.state_hash(self.state)


CrapsTable.TestCase.settings = settings(
    max_examples=80,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestCrapsTable = CrapsTable.TestCase
