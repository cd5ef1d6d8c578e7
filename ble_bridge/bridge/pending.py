"""Local operations from submission to commit or failure. Sans-IO, explicit ``now``.

One :class:`PendingOperations` per session holds what is in flight (the caller bounds it
with ``pending_capacity``); one :class:`FinishedOperations` per bridge remembers what
finished, bounded, for lookups, with the latencies of the committed ones.
"""

from __future__ import annotations

import enum
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NewType

ProposalId = NewType("ProposalId", bytes)
"""The id of a submitted operation (the engine's op id: hash of the signed operation)."""


class OperationStatus(enum.Enum):
    PENDING = "pending"
    COMMITTED = "committed"
    FAILED = "failed"


@dataclass(slots=True)
class PendingOperation:
    """A local operation from submission to commit (or failure)."""

    proposal_id: ProposalId
    session_id: bytes
    submitted_at: float
    required_votes: int
    votes_received: int = 0
    status: OperationStatus = OperationStatus.PENDING
    nonce: int | None = None
    block_hash: bytes | None = None
    height: int | None = None
    finished_at: float | None = None
    reason: str = ""

    @property
    def latency(self) -> float | None:
        if self.status is not OperationStatus.COMMITTED or self.finished_at is None:
            return None
        return self.finished_at - self.submitted_at


class PendingOperations:
    """One session's operations in flight, by the caller's :data:`ProposalId`.

    The engine re-issues an operation with a fresh nonce (a new op id) when its first one
    can no longer commit; ``get`` finds it by either id. The re-issue map is pruned to the
    operations still pending at every re-issue, so it stays as small as the pending set."""

    def __init__(self) -> None:
        self._ops: OrderedDict[bytes, PendingOperation] = OrderedDict()
        self._reissued: dict[bytes, bytes] = {}  # engine op id -> the caller's ProposalId

    def __len__(self) -> int:
        return len(self._ops)

    def __bool__(self) -> bool:
        return bool(self._ops)

    def __iter__(self) -> Iterator[PendingOperation]:
        return iter(list(self._ops.values()))

    def add(self, op: PendingOperation) -> None:
        self._ops[op.proposal_id] = op

    def by_proposal(self, proposal_id: bytes) -> PendingOperation | None:
        return self._ops.get(proposal_id)

    def get(self, op_id: bytes) -> PendingOperation | None:
        """The operation an engine op id (first or re-issued) belongs to."""
        return self._ops.get(self._reissued.get(op_id, op_id))

    def reissued(self, old_id: bytes, new_id: bytes) -> PendingOperation | None:
        """The engine re-issued ``old_id`` as ``new_id``: the caller keeps its ProposalId."""
        op = self.get(old_id)
        if op is None:
            return None
        self._reissued = {k: v for k, v in self._reissued.items() if v in self._ops}
        self._reissued.pop(old_id, None)
        self._reissued[new_id] = op.proposal_id
        return op

    def remove(self, proposal_id: bytes) -> None:
        self._ops.pop(proposal_id, None)

    def older_than(self, now: float, limit: float) -> list[PendingOperation]:
        """Operations pending for more than ``limit`` seconds: they have failed."""
        return [op for op in self._ops.values() if now - op.submitted_at > limit]

    def note_votes(self, votes_for: Callable[[bytes], int]) -> None:
        """Raise each operation's vote count to what its block has (``votes_for(hash)``)."""
        for op in self._ops.values():
            if op.block_hash is not None:
                op.votes_received = max(op.votes_received, votes_for(op.block_hash))


class FinishedOperations:
    """Committed and failed operations, the newest ``capacity`` kept, and the submit ->
    commit latencies of the last ``latency_samples`` committed ones."""

    def __init__(self, capacity: int, latency_samples: int, counters: Counter[str]) -> None:
        self.capacity = capacity
        self._ops: OrderedDict[bytes, PendingOperation] = OrderedDict()
        self.latencies: deque[float] = deque(maxlen=latency_samples)
        self._counters = counters

    def __len__(self) -> int:
        return len(self._ops)

    def get(self, proposal_id: bytes) -> PendingOperation | None:
        return self._ops.get(proposal_id)

    def finish(
        self, op: PendingOperation, status: OperationStatus, now: float, reason: str = ""
    ) -> None:
        """Mark ``op`` finished (the caller removes it from its session's pending set)."""
        op.status, op.finished_at, op.reason = status, now, reason
        if status is OperationStatus.COMMITTED:
            self._counters["operations_committed"] += 1
            self.latencies.append(now - op.submitted_at)
        else:
            self._counters["operations_failed"] += 1
            self._counters[f"failed_{reason or 'unknown'}"] += 1
        self._ops[op.proposal_id] = op
        while len(self._ops) > self.capacity:
            self._ops.popitem(last=False)
