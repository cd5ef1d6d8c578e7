"""The shared Byzantine behaviours: what a lying validator sends for one honest message."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ble_bridge.consensus.byzantine import (
    Behaviour,
    forged_commit,
    garbage,
    invalid_proposal,
    misbehave,
)
from ble_bridge.wire.identity import Identity, verify_signature
from ble_bridge.wire.messages import (
    NIL,
    Block,
    BlockHeader,
    Commit,
    Evidence,
    MessageError,
    Operation,
    Proposal,
    Step,
    Vote,
    body_hash,
    decode_message,
    encode_message,
    proposal_signing_bytes,
)

SID = b"\x42" * 16
IDS = [Identity.from_seed(b"byz-%d" % i) for i in range(4)]
KEYS = [i.signing_public for i in IDS]
LIAR = IDS[0]


def _vote(block_hash: bytes = b"\x07" * 32) -> Vote:
    return Vote.create(LIAR.sign, LIAR.signing_public, SID, Step.PREVOTE, 5, 1, block_hash)


def _proposal() -> Proposal:
    header = BlockHeader(5, LIAR.signing_public, b"\x01" * 32, b"\x02" * 32, body_hash((), ()))
    block = Block(header, ())
    pre = proposal_signing_bytes(SID, 5, 0, -1, block.hash)
    return Proposal(5, 0, -1, block, LIAR.sign(pre))


def _poison() -> Operation:
    return Operation.create(LIAR.sign, LIAR.signing_public, SID, 9, b"!")


def _decode(payload: bytes) -> object:
    sid, msg = decode_message(payload)
    assert sid == SID
    return msg


def _lie(b: Behaviour, msg: Vote | Proposal, seed: int = 1, **kw: object):  # type: ignore[no-untyped-def]
    return misbehave(b, SID, msg, LIAR, random.Random(seed), validators=KEYS, poison=_poison, **kw)


@pytest.mark.parametrize("block_hash", [b"\x07" * 32, NIL])
def test_equivocating_twin_is_validly_signed_and_conflicts(block_hash: bytes) -> None:
    vote = _vote(block_hash)
    out = _lie(Behaviour.EQUIVOCATE, vote)
    assert out.honest and out.instead is None
    (twin,) = (_decode(p) for p in out.extra)
    assert isinstance(twin, Vote)
    assert Evidence.of(vote, twin).verify(SID, KEYS)


def test_forged_votes_and_commit_carry_no_valid_signature() -> None:
    out = _lie(Behaviour.FORGE, _vote())
    msgs = [_decode(p) for p in out.extra]
    votes = [m for m in msgs if isinstance(m, Vote)]
    (commit,) = [m for m in msgs if isinstance(m, Commit)]
    assert out.honest and len(votes) == 2
    assert all(v.validator in KEYS for v in votes)
    assert not any(verify_signature(v.validator, v.signature, v.signing_bytes(SID)) for v in votes)
    assert not commit.certificate.verify(sorted(KEYS), SID)


def test_forged_commit_claims_a_quorum() -> None:
    commit = forged_commit(3, LIAR.signing_public, 7, random.Random(0))
    assert len(commit.certificate.signers) == 5 and commit.block.header.height == 3


def test_invalid_proposal_replaces_the_honest_one_with_a_signed_poisoned_block() -> None:
    p = _proposal()
    out = _lie(Behaviour.INVALID, p)
    assert not out.honest and not out.extra and out.instead is not None
    bad = _decode(out.instead)
    assert isinstance(bad, Proposal)
    assert bad.block.ops[-1].body == b"!"
    assert bad.block.header.height == p.block.header.height
    assert verify_signature(LIAR.signing_public, bad.signature, bad.signing_bytes(SID))
    assert bad == invalid_proposal(p, LIAR, SID, _poison())


def test_invalid_leaves_votes_alone_and_needs_a_poison_for_proposals() -> None:
    out = _lie(Behaviour.INVALID, _vote())
    assert out.honest and out.instead is None and not out.extra
    with pytest.raises(ValueError, match="poison"):
        misbehave(Behaviour.INVALID, SID, _proposal(), LIAR, random.Random(0), validators=KEYS)


def test_withhold_sends_nothing() -> None:
    out = _lie(Behaviour.WITHHOLD, _vote())
    assert not out.honest and out.instead is None and not out.extra


def test_replay_picks_from_what_was_heard() -> None:
    heard = [encode_message(SID, _vote(bytes([i]) * 32)) for i in range(10)]
    out = _lie(Behaviour.REPLAY, _vote(), heard=heard, replays=3)
    assert out.honest and len(out.extra) == 3 and set(out.extra) <= set(heard)
    assert _lie(Behaviour.REPLAY, _vote(), heard=[]).extra == ()


@given(st.integers(min_value=0, max_value=2**32))
def test_garbage_signs_nothing_new_and_repeats_by_seed(seed: int) -> None:
    vote = _vote()
    honest = encode_message(SID, vote)
    a = garbage(SID, honest, random.Random(seed))
    assert a == garbage(SID, honest, random.Random(seed))
    assert len(a) == 3 and a[0] != honest and len(a[0]) == len(honest)
    for payload in a:
        try:
            msg = _decode(payload)
        except (MessageError, AssertionError):
            continue
        # a flip may land where the decoder ignores it (e.g. an LZ4 token's unused nibble)
        if isinstance(msg, Vote) and msg != vote:
            assert not verify_signature(msg.validator, msg.signature, msg.signing_bytes(SID))


@pytest.mark.parametrize("behaviour", list(Behaviour))
def test_same_seed_same_lies(behaviour: Behaviour) -> None:
    heard = [encode_message(SID, _vote(bytes([i]) * 32)) for i in range(5)]
    for msg in (_vote(), _proposal()):
        assert _lie(behaviour, msg, 3, heard=heard) == _lie(behaviour, msg, 3, heard=heard)
