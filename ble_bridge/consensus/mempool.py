"""Pending signed operations, bounded, released to blocks in each submitter's nonce order.

Gossip over a mesh reorders operations: a submitter's nonce ``n+1`` may reach a proposer
before ``n``. Proposing ``n+1`` first would commit it and turn ``n`` stale, so an operation
whose nonce is above its submitter's next expected one is *held* until the missing nonce
arrives, is known never to commit here (rejected, see :meth:`Mempool.skip`), or the op has
waited ``gap_wait`` seconds (then the gap is jumped: nonces may legitimately have gaps).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable

from ..wire.messages import Operation

MAX_GAP_CHECK = 64  # longer gaps are never closed by known-skipped nonces, only by waiting


class Mempool:
    """Pending signed operations, bounded by count and bytes, in arrival order."""

    def __init__(
        self,
        max_ops: int,
        max_bytes: int,
        per_submitter: int | None = None,
        max_skipped: int = 64,
    ) -> None:
        self.max_ops = max_ops
        self.max_bytes = max_bytes
        self.per_submitter = per_submitter or max_ops
        self.max_skipped = max_skipped
        self.count_of: Counter[bytes] = Counter()
        self.ops: OrderedDict[bytes, Operation] = OrderedDict()
        self.by_key: dict[tuple[bytes, int], bytes] = {}
        self.added_at: dict[bytes, int] = {}  # committed height when the op arrived
        self.arrived: dict[bytes, float] = {}  # time the op arrived
        self.failures: Counter[bytes] = Counter()  # block builds an op failed
        self.fail_reason: dict[bytes, str] = {}  # why it failed last
        self.skipped: OrderedDict[tuple[bytes, int], None] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.ops)

    def __contains__(self, op_id: bytes) -> bool:
        return op_id in self.ops

    def add(self, op: Operation, op_id: bytes, height: int, now: float = 0.0) -> str | None:
        """Add ``op``; return a drop reason instead when it is refused."""
        if op_id in self.ops:
            return "duplicate"
        if (op.submitter, op.nonce) in self.by_key:
            return "nonce_conflict"
        size = len(op.encode())
        if len(self.ops) >= self.max_ops or self.bytes + size > self.max_bytes:
            return "mempool_full"
        if self.count_of[op.submitter] >= self.per_submitter:
            return "mempool_submitter_full"
        self.count_of[op.submitter] += 1
        self.ops[op_id] = op
        self.by_key[(op.submitter, op.nonce)] = op_id
        self.added_at[op_id] = height
        self.arrived[op_id] = now
        self.bytes += size
        return None

    def remove(self, op_id: bytes) -> Operation | None:
        op = self.ops.pop(op_id, None)
        if op is not None:
            self.count_of[op.submitter] -= 1
            if self.count_of[op.submitter] <= 0:
                del self.count_of[op.submitter]
            self.by_key.pop((op.submitter, op.nonce), None)
            self.added_at.pop(op_id, None)
            self.arrived.pop(op_id, None)
            self.failures.pop(op_id, None)
            self.fail_reason.pop(op_id, None)
            self.bytes -= len(op.encode())
        return op

    def skip(self, submitter: bytes, nonce: int) -> None:
        """Remember that ``nonce`` of ``submitter`` will not commit here (it was rejected),
        so its successors need not wait for it."""
        self.skipped[(submitter, nonce)] = None
        while len(self.skipped) > self.max_skipped:
            self.skipped.popitem(last=False)

    def forget_skipped(self, committed: Callable[[bytes], int]) -> None:
        """Drop skipped nonces at or below the committed ones (they can no longer matter)."""
        for key in [k for k in self.skipped if k[1] <= committed(k[0])]:
            del self.skipped[key]

    def _gap_closed(self, submitter: bytes, expected: int, nonce: int) -> bool:
        if nonce - expected > MAX_GAP_CHECK:
            return False
        return all((submitter, n) in self.skipped for n in range(expected, nonce))

    def ready(
        self, committed: Callable[[bytes], int], now: float, gap_wait: float
    ) -> list[tuple[bytes, Operation]]:
        """Ops a block may carry now: each submitter's in nonce order from its committed
        nonce on, stopping at a gap that is neither closed nor waited out. Submitters keep
        their arrival slots, so one busy submitter cannot push the others out of a block."""
        items = list(self.ops.items())
        slots: dict[bytes, list[int]] = {}
        for i, (_, op) in enumerate(items):
            slots.setdefault(op.submitter, []).append(i)
        out: list[tuple[bytes, Operation] | None] = [None] * len(items)
        for submitter, idx in slots.items():
            expected = committed(submitter) + 1
            chain: list[tuple[bytes, Operation]] = []
            for op_id, op in sorted((items[i] for i in idx), key=lambda it: it[1].nonce):
                if op.nonce < expected:
                    continue  # stale: purged after the next commit
                if op.nonce > expected and not (
                    now >= self.release_at(op_id, gap_wait)
                    or self._gap_closed(submitter, expected, op.nonce)
                ):
                    break
                chain.append((op_id, op))
                expected = op.nonce + 1
            for i, it in zip(idx, chain, strict=False):
                out[i] = it
        return [it for it in out if it is not None]

    def release_at(self, op_id: bytes, gap_wait: float) -> float:
        """When held ``op_id`` may jump its gap. :meth:`ready` and :meth:`next_release` must
        share this one float (``now - arrived >= wait`` can be False at ``arrived + wait``)."""
        return self.arrived.get(op_id, 0.0) + gap_wait

    def next_release(self, committed: Callable[[bytes], int], gap_wait: float) -> float | None:
        """When the earliest held op (first gap of a submitter) may jump its gap; None when
        nothing is held."""
        first: dict[bytes, tuple[int, bytes]] = {}
        for op_id, op in self.ops.items():
            if op.nonce <= committed(op.submitter):
                continue
            best = first.get(op.submitter)
            if best is None or op.nonce < best[0]:
                first[op.submitter] = (op.nonce, op_id)
        due = [
            self.release_at(op_id, gap_wait)
            for sub, (nonce, op_id) in first.items()
            if nonce > committed(sub) + 1
        ]
        return min(due) if due else None
