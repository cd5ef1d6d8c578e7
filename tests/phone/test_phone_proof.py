"""A phone's !join/!bet carried by a validator: only the phone's own signed packets count.

Frames are built byte for byte by the upstream rules (tests/phone/upstream_rules.py), so
this is what a real phone sends. Forgeries a Byzantine validator could try: a wrong
signature, another key's announce or message, a replay (inside and after the window)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_answers import Phone
from upstream_rules import sign_v1

from ble_bridge.consensus.app import InvalidOperation
from ble_bridge.consensus.phone_proof import ReplayWindow, parse_command, verify_phone_command
from ble_bridge.wire.identity import Identity
from ble_bridge.wire.packet import Packet, PacketType, encode

TS = 1_765_000_000_000


def _refused(reason: str, ann: bytes, msg: bytes, table: str = "felt") -> None:
    with pytest.raises(InvalidOperation) as exc:
        verify_phone_command(ann, msg, table)
    assert exc.value.reason == reason


def test_a_phones_own_bet_verifies() -> None:
    p = Phone("alice")
    cmd = verify_phone_command(p.announce(TS), p.public("!bet felt pass 10", TS + 5), "FELT")
    assert (cmd.key, cmd.nickname, cmd.verb, cmd.kind, cmd.amount) == (
        p.signing_public,
        "alice",
        "bet",
        "pass",
        10,
    )
    assert cmd.timestamp == TS + 5 and len(cmd.packet_id) == 16
    join = verify_phone_command(p.announce(TS), p.public("!join felt", TS + 6), "felt")
    assert join.verb == "join"


def test_forgeries_by_a_validator_are_refused() -> None:
    p, other = Phone("alice"), Phone("mallory")
    validator = Identity.from_seed(b"byzantine-validator")
    ann, msg = p.announce(TS), p.public("!bet felt pass 10", TS + 5)
    # a flipped signature byte, on either frame
    _refused("phone_bad_signature", ann, msg[:-1] + bytes([msg[-1] ^ 1]))
    _refused("phone_bad_signature", ann[:-1] + bytes([ann[-1] ^ 1]), msg)
    # a changed amount under the phone's signature
    _refused("phone_bad_signature", ann, msg.replace(b"pass 10", b"pass 99"))
    # the message signed by another phone's key, under alice's sender id
    forged = sign_v1(other.signing, 0x02, p.peer_id, b"!bet felt pass 10", TS + 5)
    _refused("phone_bad_signature", ann, forged)
    # another phone's announce with alice's message: sender ids differ
    _refused("phone_wrong_sender", other.announce(TS), msg)
    # the validator's own key: it signs a message as itself, with alice's announce
    own = Packet(PacketType.MESSAGE, p.peer_id, b"!bet felt pass 10", TS + 5).signed(validator)
    _refused("phone_bad_signature", ann, encode(own))
    # an announce whose sender id is not its noise key's peer id
    fake_ann = sign_v1(p.signing, 0x01, other.peer_id, ann[22:-64], TS)
    _refused("phone_bad_announce", fake_ann, msg)
    # a bet for another table, or types swapped
    _refused("phone_wrong_table", ann, msg, table="dice")
    _refused("phone_bad_frame", msg, ann)
    _refused("phone_bad_frame", b"\x01" * 40, msg)


def test_replays_are_refused_inside_and_after_the_window() -> None:
    p = Phone("alice")
    ann = p.announce(TS)
    first = verify_phone_command(ann, p.public("!bet felt field 5", TS + 1), "felt")
    second = verify_phone_command(ann, p.public("!bet felt field 5", TS + 2), "felt")
    w = ReplayWindow(window=10, capacity=4).add(first, height=3)
    with pytest.raises(InvalidOperation, match="phone_replayed"):
        w.add(first, height=4)
    w = w.add(second, height=4)  # the same words again, a new packet: a new bet
    w = w.advance(20)  # both left the window: the floor keeps them out
    assert w.applied == () and dict(w.floors)[p.signing_public] == TS + 2
    for cmd in (first, second):
        with pytest.raises(InvalidOperation, match="phone_replayed_old"):
            w.check(cmd)
    later = verify_phone_command(ann, p.public("!bet felt field 5", TS + 3), "felt")
    w.check(later)
    full = ReplayWindow(window=10, capacity=1).add(later, 1)
    with pytest.raises(InvalidOperation, match="phone_window_full"):
        full.check(second)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_parse_never_accepts_what_is_not_a_command(text: str) -> None:
    try:
        verb, kind, amount = parse_command(text, "felt")
    except InvalidOperation as exc:
        assert exc.reason.startswith("phone_")
        return
    words = text.split()
    assert words[0].lower() in ("!join", "!bet") and words[1].lower() == "felt"
    assert verb == "join" or (kind in ("pass", "dont-pass", "field") and amount > 0)
