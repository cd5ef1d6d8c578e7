"""Phone players at a craps table: a ledger account keyed by the phone's Ed25519 key, moved
only by the phone's own signed packets, checked by every validator; replays refused by the
committed window; limits; balances conserved."""

from __future__ import annotations

import hashlib

import pytest
from test_answers import Phone
from upstream_rules import sign_v1

from ble_bridge.consensus.app import BlockContext, InvalidOperation
from ble_bridge.consensus.craps import (
    MAX_PHONE_BETS_PER_ROUND,
    BetKind,
    CrapsApp,
    CrapsState,
    PhoneOp,
    TableRules,
    check_invariants,
    decode_op,
    encode_op,
)
from ble_bridge.consensus.testing import SimNetwork
from ble_bridge.wire.identity import Identity
from ble_bridge.wire.packet import Packet, PacketType, encode

TS = 1_765_000_000_000
RULES = TableRules(seats=8)
KEYS = tuple(hashlib.sha256(b"v%d" % i).digest() for i in range(4))


def _op(p: Phone, text: str, ts: int) -> bytes:
    return encode_op(PhoneOp(p.announce(TS), p.public(text, ts)))


def _app() -> CrapsApp:
    return CrapsApp(RULES, table_name="felt")


def _forgeries(alice: Phone, mallory: Phone, applied: list[bytes]) -> dict[str, bytes]:
    """What a Byzantine validator could submit to move alice's tokens."""
    ann = alice.announce(TS)
    msg = alice.public("!bet felt field 50", TS + 10)
    validator = Identity.from_seed(b"byzantine")
    own = Packet(PacketType.MESSAGE, alice.peer_id, b"!bet felt field 50", TS + 11)
    out = {
        "wrong signature": encode_op(PhoneOp(ann, msg[:-1] + bytes([msg[-1] ^ 0x40]))),
        "changed amount": encode_op(PhoneOp(ann, msg.replace(b"field 50", b"field 90"))),
        "another key": encode_op(
            PhoneOp(ann, sign_v1(mallory.signing, 0x02, alice.peer_id, b"!bet felt field 50", TS))
        ),
        "validator's key": encode_op(PhoneOp(ann, encode(own.signed(validator)))),
        "mallory's announce": encode_op(PhoneOp(mallory.announce(TS), msg)),
    }
    for i, body in enumerate(applied):
        out[f"replay {i}"] = body
    return out


def test_every_honest_validator_refuses_forged_bets_and_balances_are_conserved() -> None:
    alice, mallory = Phone("alice"), Phone("mallory")
    replicas = [_app() for _ in range(4)]  # four honest validators, each its own cache
    states: list[CrapsState] = [a.initial_state(KEYS) for a in replicas]
    applied = [_op(alice, "!join felt", TS + 1), _op(alice, "!bet felt pass 10", TS + 2)]
    for h, body in enumerate(applied, start=1):
        ctx = BlockContext(h, KEYS[0], KEYS)
        for i, app in enumerate(replicas):
            app.check(states[i], KEYS[0], body, ctx)
            states[i] = app.end_block(app.apply(states[i], KEYS[0], body, ctx), ctx)
    assert all(s == states[0] for s in states)
    s0 = states[0]
    assert s0.phone_balance(alice.signing_public) == RULES.starting_balance - 10
    assert s0.bet_of(alice.signing_public, BetKind.PASS_LINE) == 10
    ctx = BlockContext(3, KEYS[1], KEYS)
    for name, body in _forgeries(alice, mallory, applied).items():
        for i, app in enumerate(replicas):
            with pytest.raises(InvalidOperation) as exc:
                app.check(states[i], KEYS[1], body, ctx)
            assert exc.value.reason.startswith("phone_"), (name, exc.value.reason)
            with pytest.raises(InvalidOperation):
                app.apply(states[i], KEYS[1], body, ctx)
    for s in states:
        check_invariants(s)
        assert s.total_tokens == s.supply
        assert s.phone_balance(alice.signing_public) == RULES.starting_balance - 10
    # the snapshot carries the phone accounts and the replay window, and restores them
    app = replicas[0]
    assert app.snapshot(s0)[4] == 3 and app.restore(app.snapshot(s0)) == s0
    plain = app.initial_state(KEYS)
    assert app.snapshot(plain)[4] == 2  # no phones: the old bytes


def test_replays_stay_refused_after_the_window_and_limits_hold() -> None:
    alice = Phone("alice")
    app = _app()
    s = app.initial_state(KEYS)
    join = _op(alice, "!join felt", TS + 1)
    s = app.apply(s, KEYS[0], join, BlockContext(1, KEYS[0], KEYS))
    after_join = s
    h = 1
    for k in range(MAX_PHONE_BETS_PER_ROUND):
        h += 1
        ctx = BlockContext(h, KEYS[0], KEYS)
        s = app.end_block(
            app.apply(s, KEYS[0], _op(alice, "!bet felt field 1", TS + 10 + k), ctx), ctx
        )
    with pytest.raises(InvalidOperation, match="too_many_bets"):
        app.check(
            s, KEYS[0], _op(alice, "!bet felt field 1", TS + 99), BlockContext(h, KEYS[0], KEYS)
        )
    h += s.replay.window + 1
    s = app.end_block(s, BlockContext(h, KEYS[0], KEYS))
    assert s.replay.applied == ()
    with pytest.raises(InvalidOperation, match="phone_replayed_old"):
        app.check(s, KEYS[0], join, BlockContext(h + 1, KEYS[0], KEYS))
    # more than the table's phone players
    full = s
    for i in range(40):
        p = Phone(f"p{i}")
        try:
            full = app.apply(
                full, KEYS[0], _op(p, "!join felt", TS + 1), BlockContext(h, KEYS[0], KEYS)
            )
        except InvalidOperation as exc:
            assert exc.reason == "table_full"
            break
    else:
        raise AssertionError("no phone-player limit")
    # a validator key cannot submit for a table it does not sit at
    with pytest.raises(InvalidOperation, match="not_validator"):
        app.check(
            s, b"x" * 32, _op(alice, "!bet felt field 1", TS + 500), BlockContext(h, KEYS[0], KEYS)
        )
    with pytest.raises(InvalidOperation, match="insufficient_balance"):
        app.check(
            after_join,
            KEYS[0],
            _op(alice, "!bet felt field 5000", TS + 501),
            BlockContext(h, KEYS[0], KEYS),
        )
    assert decode_op(join) == PhoneOp(alice.announce(TS), alice.public("!join felt", TS + 1))


def test_a_phone_bet_commits_through_consensus_and_forgeries_do_not() -> None:
    alice, mallory = Phone("alice"), Phone("mallory")
    net = SimNetwork(4, seed=3, app_factory=_app)
    net.start()
    net.run(1.0)
    join = _op(alice, "!join felt", TS + 1)
    bet = _op(alice, "!bet felt dont-pass 25", TS + 2)
    net.submit(0, join)
    assert net.run_until_height(1, 20.0)
    net.submit(1, bet)
    net.run(net.now + 3.0)
    forged = _forgeries(alice, mallory, [join, bet])
    for i, body in enumerate(forged.values()):
        net.submit(2 + i % 2, body)  # validators 2 and 3 try every forgery
    net.run(net.now + 6.0)
    states = [net.nodes[i].engine.state for i in range(4) if net.nodes[i].engine is not None]
    assert len(states) == 4 and all(s == states[0] for s in states)
    s = states[0]
    assert isinstance(s, CrapsState)
    assert s.phone_balance(alice.signing_public) is not None
    assert s.bet_of(alice.signing_public, BetKind.DONT_PASS) in (0, 25)  # 0 once rolled
    assert s.phone_balance(mallory.signing_public) is None
    assert len([e for e in s.replay.applied if e[1] == alice.signing_public]) == 2
    check_invariants(s)
    assert s.total_tokens == s.supply
