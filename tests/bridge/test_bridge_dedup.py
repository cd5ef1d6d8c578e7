"""The bridge's dedup key: which repeats are the same message and which are new."""

from __future__ import annotations

from ble_bridge.bridge.inbox import dedup_key as _dedup_key
from ble_bridge.wire.messages import Kind

SID = bytes(range(16))


def payload(kind: Kind) -> bytes:
    return bytes((1,)) + SID + bytes((kind,)) + b"body"


def test_a_catch_up_answer_repeated_in_a_later_epoch_is_new() -> None:
    # a joiner that saw a commit before it knew the set of its height refused it; the same
    # answer sent again later must reach its engine again
    for kind in (Kind.COMMIT, Kind.CERTIFICATE):
        p = payload(kind)
        assert _dedup_key(p, b"a", 1) == _dedup_key(p, b"a", 1)
        assert _dedup_key(p, b"a", 1) != _dedup_key(p, b"a", 2)


def test_votes_are_the_same_message_whoever_relays_them_whenever() -> None:
    p = payload(Kind.VOTE)
    assert _dedup_key(p, b"a", 1) == _dedup_key(p, b"b", 7)
