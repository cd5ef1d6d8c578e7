"""What comes in: dedup keys, the bounded per-session inbox, the catch-up request limit.
Sans-IO, explicit ``now``.

An :class:`Inbound` holds the message once decoded (a vote expanded from a VoteSet goes in
as a :class:`~ble_bridge.wire.messages.Vote`, never decoded a second time), the payload
whose hash deduplicates it, and where it came from. The caller counts refusals by reason.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from dataclasses import dataclass

from ..wire.messages import SESSION_ID_LEN, Kind, Message

_UNSIGNED_KINDS = frozenset(
    {
        Kind.STATE_ANNOUNCE,
        Kind.SNAPSHOT_REQUEST,
        Kind.COMMIT_REQUEST,
        Kind.CERTIFICATE_REQUEST,
        Kind.PROPOSAL_REQUEST,
    }
)
# Catch-up answers an engine may refuse for now and take later (a commit of a height whose
# validator set it does not know yet: a joiner two heights behind): the same answer sent
# again in a later epoch is new, or a joiner that saw it too early never takes it.
_REPEATABLE_KINDS = frozenset({Kind.COMMIT, Kind.CERTIFICATE})
_KIND_AT = 1 + SESSION_ID_LEN


def dedup_key(payload: bytes, sender: bytes | None, epoch: int) -> bytes:
    """Payload hash. Signed messages are the same message whoever relays or replays them.
    Unsigned kinds (announcements, catch-up requests) and catch-up answers are keyed by the
    authenticated sender and a time ``epoch`` too: two nodes announcing one state are two
    announcements, a request repeated after its answer was lost is a new request, and an
    answer repeated later is a new answer."""
    kind = payload[_KIND_AT] & 0x7F if len(payload) > _KIND_AT else 0
    if kind not in _UNSIGNED_KINDS and kind not in _REPEATABLE_KINDS:
        return hashlib.blake2b(payload, digest_size=16).digest()
    key = (sender or b"") + epoch.to_bytes(8, "big", signed=True)
    return hashlib.blake2b(payload, digest_size=16, key=key).digest()


@dataclass(slots=True)
class Inbound:
    """One queued inbound message of a session."""

    payload: bytes  # the full 0x1C payload (its hash is the dedup key)
    sender: bytes | None  # signing key of the mesh sender, when known
    at: float
    via: bytes | None = None  # peer id of the neighbour it came from
    flooded: bool = False  # a mesh flood that the routers relay on: no gossip needed
    vouched: bool = False  # ``via`` sent it itself (its engine accepted it), not a relay
    msg: Message | None = None  # decoded already (expanded from a batch item)


class Inbox:
    """A session's queue of inbound messages; full at ``capacity`` (the caller refuses)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._q: deque[Inbound] = deque()

    def __len__(self) -> int:
        return len(self._q)

    @property
    def full(self) -> bool:
        return len(self._q) >= self.capacity

    def push(self, item: Inbound) -> bool:
        if self.full:
            return False
        self._q.append(item)
        return True

    def pop(self) -> Inbound:
        return self._q.popleft()


class RequestLimit:
    """Catch-up requests passed on per (sender, kind): ``burst`` per ``interval``.

    Each request makes some node broadcast a block or a snapshot: a laggard asks for the
    next few heights at once; replayed or spammed requests stop here. Remembers at most
    ``capacity`` (sender, kind) windows, the oldest forgotten first."""

    def __init__(self, interval: float, burst: int) -> None:
        self.interval = interval
        self.burst = burst
        self._windows: dict[tuple[bytes, str], tuple[float, int]] = {}

    def __len__(self) -> int:
        return len(self._windows)

    def allow(self, now: float, sender: bytes, kind: str, capacity: int) -> bool:
        key = (sender, kind)
        start, count = self._windows.get(key, (-math.inf, 0))
        if now - start >= self.interval:
            start, count = now, 0
        if count >= self.burst:
            return False
        self._windows[key] = (start, count + 1)
        if len(self._windows) > capacity:
            self._windows.pop(next(iter(self._windows)))
        return True
