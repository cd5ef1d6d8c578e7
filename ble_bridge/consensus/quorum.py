"""Thresholds, vote sets, commit certificates and equivocation evidence.

``quorum(n) = floor(2n/3) + 1``: with n >= 4 that tolerates f = floor((n-1)/3) faulty
validators; with n < 4 it needs every validator (1 of 1, 2 of 2, 3 of 3).
"""

from __future__ import annotations

import enum
import hashlib
from collections import OrderedDict
from collections.abc import Sequence

from ..wire.identity import verify_signature
from ..wire.messages import NIL, CommitCertificate, Evidence, Step, Vote

__all__ = [
    "AddResult",
    "CommitCertificate",
    "Evidence",
    "SignatureCache",
    "VoteSet",
    "max_faulty",
    "quorum",
]


def quorum(n: int) -> int:
    """Votes needed to decide among ``n`` validators."""
    return n * 2 // 3 + 1


def max_faulty(n: int) -> int:
    """f = floor((n-1)/3), the Byzantine validators a session of ``n`` tolerates."""
    return max(0, (n - 1) // 3)


class SignatureCache:
    """Ed25519 verification memoised by (key, signature, message); bounded LRU, and with a
    ``ttl`` each result is forgotten ``ttl`` seconds after it was last used.

    Verification (~60 µs) dominates consensus cost: the same vote arrives by several
    relays and again inside certificates, within seconds, so each distinct triple is checked
    once. An entry nobody asked for in ``ttl`` seconds belongs to a decided height; keeping
    it only made the cache fill for minutes (RSS growth) — forgetting it costs at most one
    more verification. The cache's clock is the ``now`` last given to :meth:`expire`
    (the engine calls it on every message and timer).
    """

    def __init__(self, max_entries: int = 8192, ttl: float | None = None) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        # digest -> (result, last used); the (result, time) pairs are shared by every entry
        # stamped at the same time, so a stamp costs no memory per entry
        self._seen: OrderedDict[bytes, tuple[bool, float]] = OrderedDict()
        self._now = float("-inf")
        self._stamps = {True: (True, self._now), False: (False, self._now)}
        self.hits = 0
        self.verified = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._seen)

    def __call__(self, key: bytes, signature: bytes, message: bytes) -> bool:
        return self.verify(key, signature, message)

    @staticmethod
    def _key(key: bytes, signature: bytes, message: bytes) -> bytes:
        # a 16-byte digest, not the ~200-byte triple: a full cache is ~1.3 MB instead of
        # ~3.8 MB (it fills over the first ~20 minutes of play, which showed as RSS growth)
        return hashlib.blake2b(key + signature + message, digest_size=16).digest()

    def expire(self, now: float) -> None:
        """Advance the cache's clock to ``now``; forget results unused for ``ttl`` seconds."""
        if now <= self._now:
            return
        self._now = now
        self._stamps = {True: (True, now), False: (False, now)}
        if self.ttl is None:
            return
        seen = self._seen
        while seen:
            k, (_, t) = next(iter(seen.items()))
            if now - t < self.ttl:
                break
            del seen[k]
            self.expired += 1

    def verify(self, key: bytes, signature: bytes, message: bytes) -> bool:
        k = self._key(key, signature, message)
        got = self._seen.get(k)
        if got is not None:
            self.hits += 1
            self._store(k, got[0])
            return got[0]
        ok = verify_signature(key, signature, message)
        self.verified += 1
        self._store(k, ok)
        return ok

    def remember(self, key: bytes, signature: bytes, message: bytes) -> None:
        """Seed the cache with a signature known good (one we made ourselves)."""
        self._store(self._key(key, signature, message), True)

    def _store(self, k: bytes, ok: bool) -> None:
        self._seen[k] = self._stamps[ok]
        self._seen.move_to_end(k)
        while len(self._seen) > self.max_entries:
            self._seen.popitem(last=False)


class AddResult(enum.Enum):
    """What :meth:`VoteSet.add` did with a vote (non-ADDED values are drop reasons)."""

    ADDED = "added"
    DUPLICATE = "duplicate"
    CONFLICT = "equivocation"
    CONFLICT_KNOWN = "equivocation_known"
    NOT_VALIDATOR = "not_validator"
    BAD_SIGNATURE = "bad_signature"
    WRONG_SET = "wrong_round"


class VoteSet:
    """The votes of one (height, round, step): each validator counted once per block.

    A validator's first vote counts towards "q votes of any kind". A conflicting vote is
    evidence, and it is also counted for its own block (up to ``max_blocks_per_validator``
    blocks), so a proof-of-lock a proposer re-gossips still adds up for a node that first
    heard the equivocator's other vote. That cannot hurt safety: two quorums for different
    blocks would still need an honest validator to vote twice.
    """

    max_blocks_per_validator = 3

    def __init__(
        self,
        session_id: bytes,
        validators: Sequence[bytes],
        height: int,
        round: int,
        step: Step,
        cache: SignatureCache | None = None,
    ) -> None:
        self.session_id = session_id
        self.validators = tuple(sorted(validators))
        self._index = {v: i for i, v in enumerate(self.validators)}
        self.height = height
        self.round = round
        self.step = step
        self.cache = cache if cache is not None else SignatureCache()
        self.threshold = quorum(len(self.validators))
        self.votes: dict[bytes, Vote] = {}  # first vote of each validator
        self.by_block: dict[bytes, dict[bytes, Vote]] = {}
        self._blocks_of: dict[bytes, int] = {}
        self.evidence: dict[bytes, Evidence] = {}

    def add(self, vote: Vote) -> tuple[AddResult, Evidence | None]:
        """Count ``vote`` if it is new, from a validator and validly signed."""
        if (vote.height, vote.round, vote.step) != (self.height, self.round, self.step):
            return AddResult.WRONG_SET, None
        v = vote.validator
        if v not in self._index:
            return AddResult.NOT_VALIDATOR, None
        prior = self.votes.get(v)
        if prior is not None:
            if v in self.by_block.get(vote.block_hash, {}):
                return AddResult.DUPLICATE, None
            if self._blocks_of[v] >= self.max_blocks_per_validator:
                return AddResult.CONFLICT_KNOWN, None
        if not self.cache.verify(v, vote.signature, vote.signing_bytes(self.session_id)):
            return AddResult.BAD_SIGNATURE, None
        self.by_block.setdefault(vote.block_hash, {})[v] = vote
        self._blocks_of[v] = self._blocks_of.get(v, 0) + 1
        if prior is None:
            self.votes[v] = vote
            return AddResult.ADDED, None
        if v in self.evidence:
            return AddResult.CONFLICT_KNOWN, None
        ev = Evidence.of(prior, vote)
        self.evidence[v] = ev
        return AddResult.CONFLICT, ev

    def count(self, block_hash: bytes) -> int:
        return len(self.by_block.get(block_hash, ()))

    def votes_for(self, block_hash: bytes) -> list[Vote]:
        return list(self.by_block.get(block_hash, {}).values())

    @property
    def total(self) -> int:
        """Distinct validators heard from."""
        return len(self.votes)

    def has_quorum_any(self) -> bool:
        """q votes of any kind (the "2f+1 for anything" condition that starts a timeout)."""
        return len(self.votes) >= self.threshold

    def quorum_block(self) -> bytes | None:
        """A non-nil block hash with q votes, if any."""
        for block, voters in self.by_block.items():
            if block != NIL and len(voters) >= self.threshold:
                return block
        return None

    def has_quorum_nil(self) -> bool:
        return self.count(NIL) >= self.threshold

    def certificate(self, block_hash: bytes) -> CommitCertificate | None:
        """A commit certificate from these precommits for ``block_hash``, if q of them agree."""
        if self.step != Step.PRECOMMIT or block_hash == NIL:
            return None
        voters = self.by_block.get(block_hash, {})
        if len(voters) < self.threshold:
            return None
        idx = sorted(self._index[v] for v in voters)[: self.threshold]
        return CommitCertificate(
            self.height,
            self.round,
            block_hash,
            len(self.validators),
            tuple(idx),
            tuple(voters[self.validators[i]].signature for i in idx),
        )
