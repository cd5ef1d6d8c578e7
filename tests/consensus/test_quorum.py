"""Quorum thresholds, vote counting, certificates and equivocation evidence."""

from __future__ import annotations

import hashlib

import pytest

from ble_bridge.consensus.quorum import AddResult, SignatureCache, VoteSet, max_faulty, quorum
from ble_bridge.wire.identity import Identity
from ble_bridge.wire.messages import NIL, Step, Vote

SESSION = b"\x11" * 16
IDS = [Identity.from_seed(b"q%d" % i) for i in range(7)]
KEYS = [i.signing_public for i in IDS]
BLOCK = hashlib.sha256(b"b").digest()


def vote(i: int, block: bytes = BLOCK, step: Step = Step.PRECOMMIT, h: int = 1, r: int = 0) -> Vote:
    return Vote.create(IDS[i].sign, KEYS[i], SESSION, step, h, r, block)


@pytest.mark.parametrize(
    ("n", "q", "f"),
    [(1, 1, 0), (2, 2, 0), (3, 3, 0), (4, 3, 1), (7, 5, 2), (8, 6, 2), (50, 34, 16)],
)
def test_quorum_and_fault_tolerance(n: int, q: int, f: int) -> None:
    assert quorum(n) == q
    assert max_faulty(n) == f
    # two quorums always overlap in at least one honest validator
    assert 2 * q - n >= f + 1


def test_each_validator_counts_once() -> None:
    vs = VoteSet(SESSION, KEYS, 1, 0, Step.PRECOMMIT)
    assert vs.add(vote(0))[0] is AddResult.ADDED
    assert vs.add(vote(0))[0] is AddResult.DUPLICATE
    assert vs.count(BLOCK) == 1


def test_forged_and_foreign_votes_do_not_count() -> None:
    vs = VoteSet(SESSION, KEYS, 1, 0, Step.PRECOMMIT)
    forged = Vote(Step.PRECOMMIT, 1, 0, BLOCK, KEYS[1], IDS[2].sign(vote(1).signing_bytes(SESSION)))
    assert vs.add(forged)[0] is AddResult.BAD_SIGNATURE
    stranger = Identity.from_seed(b"stranger")
    v = Vote.create(stranger.sign, stranger.signing_public, SESSION, Step.PRECOMMIT, 1, 0, BLOCK)
    assert vs.add(v)[0] is AddResult.NOT_VALIDATOR
    assert vs.add(vote(1, r=1))[0] is AddResult.WRONG_SET
    assert vs.total == 0


def test_quorum_of_precommits_forms_verifiable_certificate() -> None:
    vs = VoteSet(SESSION, KEYS, 1, 0, Step.PRECOMMIT)
    for i in range(4):
        vs.add(vote(i))
    assert vs.quorum_block() is None and vs.certificate(BLOCK) is None
    vs.add(vote(4))
    assert vs.quorum_block() == BLOCK
    cert = vs.certificate(BLOCK)
    assert cert is not None and cert.verify(KEYS, SESSION)
    assert cert.verify(list(reversed(KEYS)), SESSION)  # order of the set does not matter


def test_nil_quorum_is_not_a_block_quorum() -> None:
    vs = VoteSet(SESSION, KEYS, 1, 0, Step.PREVOTE)
    for i in range(5):
        vs.add(vote(i, NIL, Step.PREVOTE))
    assert vs.has_quorum_nil() and vs.has_quorum_any()
    assert vs.quorum_block() is None


def test_conflicting_votes_become_evidence_once() -> None:
    vs = VoteSet(SESSION, KEYS, 1, 0, Step.PRECOMMIT)
    vs.add(vote(3))
    result, ev = vs.add(vote(3, NIL))
    assert result is AddResult.CONFLICT and ev is not None
    assert ev.offender == KEYS[3] and ev.verify(SESSION, KEYS)
    assert vs.add(vote(3, b"\x07" * 32))[0] is AddResult.CONFLICT_KNOWN
    assert vs.add(vote(3, b"\x08" * 32))[0] is AddResult.CONFLICT_KNOWN  # beyond the cap
    assert vs.count(BLOCK) == 1 and vs.count(NIL) == 1 and vs.count(b"\x08" * 32) == 0
    assert vs.total == 1  # one validator heard from


def test_signature_cache_verifies_each_triple_once() -> None:
    cache = SignatureCache(max_entries=4)
    v = vote(0)
    for _ in range(5):
        assert cache(v.validator, v.signature, v.signing_bytes(SESSION))
    assert cache.verified == 1 and cache.hits == 4
    for i in range(1, 6):
        w = vote(i)
        cache(w.validator, w.signature, w.signing_bytes(SESSION))
    assert len(cache._seen) == 4


def test_signature_cache_forgets_results_unused_for_ttl_seconds() -> None:
    cache = SignatureCache(max_entries=100, ttl=60.0)
    a, b = vote(0), vote(1)
    cache.expire(0.0)
    assert cache(a.validator, a.signature, a.signing_bytes(SESSION))
    cache.expire(30.0)
    assert cache(b.validator, b.signature, b.signing_bytes(SESSION))
    cache.expire(59.0)
    assert cache(a.validator, a.signature, a.signing_bytes(SESSION))  # a hit refreshes a
    assert cache.verified == 2 and cache.hits == 1
    cache.expire(90.0)  # b last used at 30: gone; a used at 59: kept
    assert len(cache) == 1 and cache.expired == 1
    assert cache(a.validator, a.signature, a.signing_bytes(SESSION))
    assert cache.hits == 2 and cache.verified == 2
    assert cache(b.validator, b.signature, b.signing_bytes(SESSION))  # verified again
    assert cache.verified == 3
    cache.expire(1000.0)
    assert len(cache) == 0


def test_signature_cache_keeps_failures_and_own_signatures_under_the_same_clock() -> None:
    cache = SignatureCache(max_entries=100, ttl=10.0)
    v = vote(2)
    forged = v.signature[:-1] + bytes([v.signature[-1] ^ 1])
    cache.expire(5.0)
    cache.remember(v.validator, v.signature, v.signing_bytes(SESSION))
    assert not cache(v.validator, forged, v.signing_bytes(SESSION))
    assert not cache(v.validator, forged, v.signing_bytes(SESSION))  # the failure is memoised
    assert cache.verified == 1 and cache.hits == 1
    cache.expire(4.0)  # a clock that goes back changes nothing
    assert len(cache) == 2
    cache.expire(15.0)
    assert len(cache) == 0 and cache.expired == 2


def test_signature_cache_with_a_steady_stream_stays_at_ttl_times_rate() -> None:
    # the point of the ttl: at a steady rate the cache levels off after ttl seconds,
    # far below its LRU bound, instead of growing until the bound is reached
    cache = SignatureCache(max_entries=10_000, ttl=20.0)
    sizes = []
    for t in range(120):  # 5 new signatures a second for two minutes
        cache.expire(float(t))
        for j in range(5):
            cache.remember(KEYS[0], t.to_bytes(4, "big") + bytes([j]) * 60, b"m")
        sizes.append(len(cache))
    assert sizes[-1] == 100 == max(sizes[20:])
