"""Neighbour table, per-link circuit breaker and per-link inbound rate limit. Sans-IO.

A *link* is one BLE connection; a *peer* is a mesh node known by its 8-byte id. A link is
bound to a peer when that peer's own (not relayed) announce arrives on it. Peers learned
from announces are kept in a bounded LRU; pinned keys (validator sets) are never evicted.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..transport import LinkInfo
from ..wire.fragment import Reassembler, ReassemblyLimits
from ..wire.packet import Packet

LOSS_EWMA = 0.1


class TokenBucket:
    """Classic token bucket: ``rate`` tokens per second, at most ``burst`` banked."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = now

    def allow(self, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens if available."""
        if now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Closed → open after N consecutive failures → half-open single probe after a pause.

    A failed probe reopens with a doubled pause (capped); a success closes and resets it.
    """

    def __init__(self, failures_to_open: int, open_time: float, max_open_time: float) -> None:
        if failures_to_open <= 0:
            raise ValueError("failures_to_open must be positive")
        self.failures_to_open = failures_to_open
        self.base_open_time = open_time
        self.max_open_time = max_open_time
        self.open_time = open_time
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.probe_in_flight = False
        self.times_opened = 0

    def allow(self, now: float) -> bool:
        """May one frame be sent now? In half-open, exactly one probe is let through."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if now < self.opened_at + self.open_time:
                return False
            self.state = BreakerState.HALF_OPEN
            self.probe_in_flight = False
        if self.probe_in_flight:
            return False
        self.probe_in_flight = True
        return True

    def record_success(self) -> None:
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.open_time = self.base_open_time
        self.probe_in_flight = False

    def record_failure(self, now: float) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self.open_time = min(self.open_time * 2, self.max_open_time)
            self._open(now)
        elif self.state is BreakerState.CLOSED:
            self.failures += 1
            if self.failures >= self.failures_to_open:
                self._open(now)

    def _open(self, now: float) -> None:
        self.state = BreakerState.OPEN
        self.opened_at = now
        self.probe_in_flight = False
        self.times_opened += 1


@dataclass(slots=True)
class PeerRecord:
    """What this node knows about one mesh peer (direct neighbour or not)."""

    peer_id: bytes
    signing_key: bytes | None = None
    noise_key: bytes | None = None
    nickname: str | None = None
    capabilities: int = 0
    pinned: bool = False
    links: set[int] = field(default_factory=set)
    neighbors: frozenset[bytes] = frozenset()
    neighbors_at: float = float("-inf")
    last_heard: float = float("-inf")
    frames_in: int = 0
    bytes_in: int = 0
    frames_out: int = 0
    bytes_out: int = 0
    loss: float = 0.0
    announce: Packet | None = None  # its latest verified announce, replayed to new neighbours
    announce_at: float = float("-inf")

    @property
    def is_neighbor(self) -> bool:
        return bool(self.links)


@dataclass(slots=True)
class LinkState:
    """One live link with its breaker, inbound allowance and reassembly buffer."""

    info: LinkInfo
    breaker: CircuitBreaker
    bucket: TokenBucket
    reassembler: Reassembler
    peer_id: bytes | None = None
    up_since: float = 0.0
    frames_in: int = 0
    bytes_in: int = 0
    frames_out: int = 0
    bytes_out: int = 0
    send_failures: int = 0
    loss: float = 0.0  # EWMA of failed sends

    def record_send(self, ok: bool) -> None:
        self.loss += LOSS_EWMA * ((0.0 if ok else 1.0) - self.loss)
        if not ok:
            self.send_failures += 1


class PeerTable:
    """Bounded table of peers plus the live links; peers with links or pins stay put."""

    def __init__(self, max_peers: int) -> None:
        self.max_peers = max_peers
        self._peers: OrderedDict[bytes, PeerRecord] = OrderedDict()
        self.links: dict[int, LinkState] = {}
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._peers)

    def __iter__(self) -> Iterator[PeerRecord]:
        return iter(list(self._peers.values()))

    def __contains__(self, peer_id: bytes) -> bool:
        return peer_id in self._peers

    def get(self, peer_id: bytes) -> PeerRecord | None:
        return self._peers.get(peer_id)

    def signing_key(self, peer_id: bytes) -> bytes | None:
        rec = self._peers.get(peer_id)
        return rec.signing_key if rec is not None else None

    def touch(self, peer_id: bytes) -> PeerRecord:
        """The record of ``peer_id`` (created if new), marked most recently used."""
        rec = self._peers.get(peer_id)
        if rec is None:
            rec = PeerRecord(peer_id)
            self._peers[peer_id] = rec
            self._shrink()
        else:
            self._peers.move_to_end(peer_id)
        return rec

    def _shrink(self) -> None:
        while len(self._peers) > self.max_peers:
            victim = next((p for p, r in self._peers.items() if not r.pinned and not r.links), None)
            if victim is None:
                return  # everything is pinned or linked: those are bounded elsewhere
            del self._peers[victim]
            self.evicted += 1

    def bind(self, link_id: int, peer_id: bytes) -> bool:
        """Record that ``link_id`` reaches ``peer_id`` directly; True when that is news."""
        link = self.links[link_id]
        if link.peer_id == peer_id:
            return False
        if link.peer_id is not None:
            old = self._peers.get(link.peer_id)
            if old is not None:
                old.links.discard(link_id)
        link.peer_id = peer_id
        self.touch(peer_id).links.add(link_id)
        return True

    def unlink(self, link_id: int) -> LinkState | None:
        link = self.links.pop(link_id, None)
        if link is not None and link.peer_id is not None:
            rec = self._peers.get(link.peer_id)
            if rec is not None:
                rec.links.discard(link_id)
        return link

    def rows(self, now: float) -> list[dict[str, object]]:
        """One readable row per known peer (neighbours first), for ``ble-bridge peers``."""
        out: list[dict[str, object]] = []
        for rec in sorted(self._peers.values(), key=lambda r: (not r.links, -r.last_heard)):
            out.append(
                {
                    "peer_id": rec.peer_id.hex(),
                    "nickname": rec.nickname or "",
                    "links": sorted(rec.links),
                    "last_heard_s": None
                    if rec.last_heard == float("-inf")
                    else now - rec.last_heard,
                    "frames_in": rec.frames_in,
                    "bytes_in": rec.bytes_in,
                    "frames_out": rec.frames_out,
                    "bytes_out": rec.bytes_out,
                    "loss": round(rec.loss, 3),
                    "pinned": rec.pinned,
                    "neighbors": len(rec.neighbors),
                }
            )
        return out

    def neighbor_ids(self) -> list[bytes]:
        """Ids of peers with a live link, most recently heard first."""
        recs = [r for r in self._peers.values() if r.links]
        recs.sort(key=lambda r: (-r.last_heard, r.peer_id))
        return [r.peer_id for r in recs]


def new_link(
    info: LinkInfo,
    now: float,
    *,
    rate: float,
    burst: float,
    failures_to_open: int,
    open_time: float,
    max_open_time: float,
    reassembly: ReassemblyLimits,
) -> LinkState:
    return LinkState(
        info=info,
        breaker=CircuitBreaker(failures_to_open, open_time, max_open_time),
        bucket=TokenBucket(rate, burst, now),
        reassembler=Reassembler(reassembly),
        up_since=now,
    )
