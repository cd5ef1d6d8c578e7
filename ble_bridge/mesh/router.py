"""Sans-IO mesh router: verify, dedup, deliver and relay BitChat frames with explicit ``now``.

Receive path per frame: link known → inbound token bucket → decode (size limits) → per-link
reassembly of type-0x20 fragments → own/duplicate check → signature (keys learned from
announces, trust on first use, or pinned out of band) → freshness against the mesh-time
estimate → seen cache → deliver (broadcast or addressed to us) → schedule a relay.

A relay waits a degree-dependent jitter (hearing more copies meanwhile), then goes only to
the links :func:`.relay.relay_targets` picks; one with nothing left to send to, or that heard
more than ``suppression_threshold`` copies, is cancelled. A unicast to a direct neighbour
goes on that neighbour's link only. Neighbour lists come from announces; only a newer
announce updates a peer, and a new neighbour gets the recent announces we hold, so keys
cross a freshly joined link at once. Every frame ends in exactly one outcome counter: a
reason in :data:`DROP_REASONS`, ``fragment_buffered`` or ``accepted``.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import logging
import random
from collections import Counter, deque
from dataclasses import dataclass, replace

from ..transport import LinkInfo, SendResult
from ..wire.fragment import split
from ..wire.identity import Identity, peer_id_from_noise_key, verify_signature
from ..wire.packet import (
    BROADCAST,
    OversizeError,
    Packet,
    PacketType,
    WireError,
    decode,
    encode,
    pad,
)
from ..wire.payloads import MAX_NEIGHBORS, Announce
from .clock import MeshClock
from .config import CAP_RELAY_DEFERRAL, MeshConfig
from .peers import LinkState, PeerTable, new_link
from .relay import PendingRelay, relay_targets
from .seen import SeenCache

log = logging.getLogger(__name__)

_REASSEMBLY_FRAME_DROPS = (
    "fragment_malformed",
    "fragment_too_many",
    "fragment_bad_index",
    "fragment_inconsistent",
    "fragment_duplicate",
    "fragment_set_too_large",
    "fragment_buffer_full",
)
_REASSEMBLY_SET_DROPS = ("fragment_evicted", "fragment_timeout")

DROP_REASONS: frozenset[str] = frozenset(
    {
        "unknown_link",  # frame on a link that is not up
        "rate_limited",  # the link's inbound token bucket is empty
        "malformed",  # the frame does not decode
        "too_large",  # frame or declared size above the decode limits
        *_REASSEMBLY_FRAME_DROPS,
        "fragment_nested",  # a reassembled frame that is itself a fragment
        "own_packet",  # our own packet came back
        "duplicate",  # packet id already in the seen cache
        "unsigned",  # no signature and not a type relayed opaquely
        "bad_announce",  # announce without keys or whose keys do not match its sender id
        "key_conflict",  # announce with a different signing key than the one we trust
        "unknown_sender",  # no signing key known for the sender
        "bad_signature",  # the signature does not verify
        "stale",  # timestamp more than freshness_window from mesh time
        "internal_error",  # a bug; logged
    }
)
"""Every reason a received frame is dropped; each frame counts exactly one outcome."""


VERIFIED_CACHE_SIZE = 8192
# A copy of a packet reaches every node of a process within the flood time; once the
# default freshness window has passed since its last use, the next copy is dropped as stale
# right after verification anyway, so an older entry saves nothing. Without the expiry the
# memo filled for ~20 minutes in a one-node-per-process lab (RSS growth).
VERIFIED_TTL = MeshConfig().freshness_window
_VERIFIED = SeenCache(VERIFIED_CACHE_SIZE, VERIFIED_TTL)


def verify_packet(now: float, packet: Packet, signing_key: bytes) -> bool:
    """``packet.verify`` remembering successes by digest of (key, signature, signed bytes).

    Every node of a process (a simulated mesh) verifies the same packets; Ed25519 verification
    dominates the cost of a frame, so one bounded process-wide memo saves most of it.
    Entries are forgotten ``VERIFIED_TTL`` seconds after their last use (``now``: the
    caller's clock; the nodes of one process share one).
    """
    if packet.signature is None:
        return False
    message = packet.signing_bytes()
    digest = hashlib.blake2b(signing_key + packet.signature + message, digest_size=16).digest()
    if _VERIFIED.seen(now, digest):
        return True
    if not verify_signature(signing_key, packet.signature, message):
        return False
    _VERIFIED.add(now, digest)
    return True


@dataclass(frozen=True, slots=True)
class Delivered:
    """A verified packet for this node (broadcast or addressed to us), delivered once."""

    packet: Packet
    link_id: int | None
    received_at: float


class Router:
    """One node's routing state; feed it link events, frames and timers, read frames back."""

    def __init__(
        self, identity: Identity, config: MeshConfig, rng: random.Random, wall_offset: float
    ) -> None:
        self.identity = identity
        self.config = config
        self.rng = rng
        self.wall_offset = wall_offset
        self.peer_id = identity.peer_id
        self.stats: Counter[str] = Counter()
        self.peers = PeerTable(config.max_peers)
        self.seen = SeenCache(config.seen_capacity, config.seen_ttl)
        self.clock = MeshClock(config.clock_samples, config.clock_sample_ttl)
        self._pending: dict[bytes, PendingRelay] = {}
        self._relay_heap: list[tuple[float, int, bytes]] = []
        self._seq = itertools.count()
        self._outbound: deque[tuple[int, bytes]] = deque()
        self._events: deque[Delivered] = deque()
        self._started = False
        self._next_announce = 0.0
        self._last_announce = float("-inf")
        self._next_housekeeping = 0.0
        self._last_timestamp = 0
        self.extra_capabilities = 0
        """Capability bits the transport adds to our announces (e.g. CAP_LINK_KEEPALIVE)."""

    # -- time ---------------------------------------------------------------------------

    def wall_ms(self, now: float) -> int:
        """This node's own wall clock in ms (possibly wrong by hours)."""
        return int((self.wall_offset + now) * 1000)

    def mesh_time_ms(self, now: float) -> int:
        """Estimated mesh time in ms: own clock corrected by the median peer offset."""
        return self.wall_ms(now) + self.clock.offset_ms(now)

    def _start(self, now: float) -> None:
        if self._started:
            return
        self._started = True
        self._next_announce = now + self.rng.uniform(*self.config.announce_on_link_up)
        self._next_housekeeping = now + self.config.housekeeping_interval

    # -- links --------------------------------------------------------------------------

    def link_up(self, now: float, info: LinkInfo) -> None:
        self._start(now)
        cfg = self.config
        self.peers.unlink(info.link_id)
        self.peers.links[info.link_id] = new_link(
            info,
            now,
            rate=cfg.inbound_rate,
            burst=cfg.inbound_burst,
            failures_to_open=cfg.breaker_failures,
            open_time=cfg.breaker_open_time,
            max_open_time=cfg.breaker_max_open_time,
            reassembly=cfg.reassembly,
        )
        self.stats["links_up"] += 1
        self._announce_soon(now)

    def link_down(self, now: float, link_id: int, reason: str) -> None:
        self._start(now)
        link = self.peers.unlink(link_id)
        if link is None:
            return
        self.stats["fragment_link_down"] += len(link.reassembler)  # unfinished sets dropped
        self.stats["links_down"] += 1
        log.debug("link %d down: %s", link_id, reason)
        if self.peers.links:
            self._announce_soon(now)

    def _announce_soon(self, now: float) -> None:
        at = max(
            now + self.rng.uniform(*self.config.announce_on_link_up),
            self._last_announce + self.config.min_announce_spacing,
        )
        self._next_announce = min(self._next_announce, at)

    # -- receive ------------------------------------------------------------------------

    def receive(self, now: float, link_id: int, frame: bytes) -> None:
        """Handle one frame from a link; never raises on bad bytes."""
        self._start(now)
        self.stats["frames_in"] += 1
        self.stats["bytes_in"] += len(frame)
        try:
            self._receive(now, link_id, frame)
        except Exception:  # a bug must not kill the node; the frame is counted
            log.exception("router failed on a frame from link %d", link_id)
            self.stats["internal_error"] += 1

    def _drop(self, reason: str) -> None:
        self.stats[reason] += 1

    def _receive(self, now: float, link_id: int, frame: bytes) -> None:
        link = self.peers.links.get(link_id)
        if link is None:
            return self._drop("unknown_link")
        link.frames_in += 1
        link.bytes_in += len(frame)
        peer = self.peers.get(link.peer_id) if link.peer_id is not None else None
        if peer is not None:
            peer.frames_in += 1
            peer.bytes_in += len(frame)
            peer.last_heard = now
        if not link.bucket.allow(now):
            return self._drop("rate_limited")
        packet = self._decode(frame)
        if packet is None:
            return None
        if packet.type == PacketType.FRAGMENT:
            before = Counter(link.reassembler.drops)
            whole = link.reassembler.feed(now, packet)
            reason = self._collect_reassembly_drops(link, before)
            if whole is None:
                return self._drop(reason) if reason else self._drop("fragment_buffered")
            self.stats["fragments_reassembled"] += 1
            packet = self._decode(whole)
            if packet is None:
                return None
            if packet.type == PacketType.FRAGMENT:
                return self._drop("fragment_nested")
        self._handle_packet(now, link, packet)
        return None

    def _decode(self, frame: bytes) -> Packet | None:
        try:
            return decode(frame, self.config.decode_limits)
        except WireError as exc:
            self.stats[f"decode_{exc.reason}"] += 1
            self._drop("too_large" if exc.reason == "too_large" else "malformed")
            return None

    def _collect_reassembly_drops(self, link: LinkState, before: Counter[str]) -> str | None:
        """Mirror reassembler counters into stats; returns this frame's drop reason, if any."""
        frame_reason = None
        for key, value in link.reassembler.drops.items():
            delta = value - before.get(key, 0)
            if delta <= 0:
                continue
            if key in _REASSEMBLY_SET_DROPS:
                self.stats[key] += delta
            elif key in _REASSEMBLY_FRAME_DROPS:
                frame_reason = key
        return frame_reason

    def _handle_packet(self, now: float, link: LinkState, packet: Packet) -> None:
        sender = packet.sender
        if sender == self.peer_id:
            return self._drop("own_packet")
        pid = packet.packet_id
        if self.seen.seen(now, pid):
            self._heard_again(link, packet, pid)
            return self._drop("duplicate")
        announce: Announce | None = None
        if packet.signature is None:
            if packet.type not in self.config.unsigned_relay_types:
                return self._drop("unsigned")
        elif packet.type == PacketType.ANNOUNCE:
            result = self._verify_announce(now, packet)
            if isinstance(result, str):
                return self._drop(result)
            announce = result
        else:
            key = self.peers.signing_key(sender)
            if key is None:
                return self._drop("unknown_sender")
            if not verify_packet(now, packet, key):
                return self._drop("bad_signature")
        wall = self.wall_ms(now)
        if packet.signature is not None:
            self.clock.observe(now, sender, packet.timestamp, wall)
        mesh_now = wall + self.clock.offset_ms(now)
        if abs(packet.timestamp - mesh_now) > self.config.freshness_window * 1000:
            return self._drop("stale")
        self.seen.add(now, pid)
        self.stats["accepted"] += 1
        if packet.signature is None:
            if (
                packet.recipient == self.peer_id
                and packet.type in self.config.deliver_unsigned_types
            ):
                # BitChat's Noise frames are unsigned; the session authenticates them
                self.stats["unsigned_delivered"] += 1
                self._deliver(Delivered(packet, link.info.link_id, now))
            else:
                self.stats["unsigned_relayed_opaque"] += 1
        else:
            rec = self.peers.touch(sender)
            rec.last_heard = now
            if announce is not None:
                self._learn(now, link, packet, announce)
            if packet.is_broadcast or packet.recipient == self.peer_id:
                self._deliver(Delivered(packet, link.info.link_id, now))
        if packet.recipient == self.peer_id:
            self.stats["relay_not_needed"] += 1
        elif packet.ttl <= 1:
            self.stats["ttl_expired"] += 1
        else:
            self._schedule_relay(now, link, packet, pid)
        return None

    def _verify_announce(self, now: float, packet: Packet) -> Announce | str:
        try:
            ann = Announce.decode(packet.payload)
        except WireError:
            return "bad_announce"
        if ann.noise_key is None or ann.signing_key is None:
            return "bad_announce"
        if peer_id_from_noise_key(ann.noise_key) != packet.sender:
            return "bad_announce"
        known = self.peers.signing_key(packet.sender)
        if known is not None and known != ann.signing_key:
            return "key_conflict"
        if not verify_packet(now, packet, ann.signing_key):
            return "bad_signature"
        return ann

    def _learn(self, now: float, link: LinkState, packet: Packet, ann: Announce) -> None:
        rec = self.peers.touch(packet.sender)
        if rec.signing_key is None:
            rec.signing_key = ann.signing_key
            self.stats["keys_learned"] += 1
        if rec.announce is None or packet.timestamp > rec.announce.timestamp:
            # only a newer announce describes the peer now (late or replayed copies do not)
            age = max(0.0, (self.mesh_time_ms(now) - packet.timestamp) / 1000)
            rec.noise_key = ann.noise_key
            rec.nickname = ann.nickname
            rec.capabilities = ann.capabilities or 0
            rec.neighbors = frozenset(ann.neighbors)
            rec.neighbors_at = now - age
            rec.announce = packet
            rec.announce_at = now - age
        # not relayed: the sender is on this very link; a new neighbour is worth announcing
        first = link.peer_id is None
        if packet.ttl >= self.config.ttl and self.peers.bind(link.info.link_id, packet.sender):
            self.stats["links_bound" if first else "links_rebound"] += 1
            if first:  # once per link: a peer re-binding its link cannot make us amplify
                self._announce_soon(now)
                self._sync_announces(now, link)

    def _sync_announces(self, now: float, link: LinkState) -> None:
        """Relay the recent announces we hold to a new neighbour, as a late relay would.

        Without this, nodes on the far side of a new link learn our side's keys only at
        the next periodic announces (up to 30 s) and drop their packets as
        ``unknown_sender`` until then. Within one connected mesh these copies are mere
        duplicates for the neighbour; across a link that joins two meshes they flood on.
        """
        horizon = self.config.freshness_window / 2
        copies = [
            (r.announce_at, r.peer_id, r.announce)
            for r in self.peers
            if r.announce is not None
            and r.peer_id != link.peer_id
            and now - r.announce_at <= horizon
        ]
        copies.sort(key=lambda c: (-c[0], c[1]))
        for _, _, packet in copies[: self.config.sync_announces]:
            copy = replace(packet, ttl=max(packet.ttl - 1, 1))
            self._queue(now, link, copy, encode(copy))
            self.stats["announces_synced"] += 1

    def _deliver(self, event: Delivered) -> None:
        if len(self._events) >= self.config.max_events:
            self._events.popleft()
            self.stats["event_overflow"] += 1
        self._events.append(event)
        self.stats["delivered"] += 1

    # -- relaying -----------------------------------------------------------------------

    def _schedule_relay(self, now: float, link: LinkState, packet: Packet, pid: bytes) -> None:
        if len(self._pending) >= self.config.max_pending_relays:
            self.stats["relay_queue_full"] += 1
            return
        lo, hi = self.config.jitter_range(len(self.peers.links))
        due = now + self.rng.uniform(lo, hi)
        pending = PendingRelay(packet, due, {link.info.link_id})
        if link.peer_id is not None:
            pending.heard_peers[link.peer_id] = packet.ttl
        self._pending[pid] = pending
        heap = self._relay_heap
        if len(heap) >= 2 * self.config.max_pending_relays:  # shed cancelled entries
            heap[:] = [e for e in heap if self._live(e)]
            heapq.heapify(heap)
        heapq.heappush(heap, (due, next(self._seq), pid))

    def _live(self, entry: tuple[float, int, bytes]) -> bool:
        pending = self._pending.get(entry[2])
        return pending is not None and pending.due == entry[0]

    def _heard_again(self, link: LinkState, packet: Packet, pid: bytes) -> None:
        """A copy of a packet we plan to relay: its sender link (and peer) already has it."""
        pending = self._pending.get(pid)
        if pending is None or packet.signature != pending.packet.signature:
            return  # only an exact copy of the verified packet counts
        if packet.ttl > pending.packet.ttl:  # a shorter path: relay with the better ttl
            pending.packet = replace(pending.packet, ttl=packet.ttl)
        pending.heard_links.add(link.info.link_id)
        if link.peer_id is not None:
            best = pending.heard_peers.get(link.peer_id, 0)
            pending.heard_peers[link.peer_id] = max(best, packet.ttl)
        if len(pending.heard_links) > self.config.suppression_threshold:
            del self._pending[pid]
            self.stats["relay_suppressed"] += 1

    def _relay(self, now: float, pending: PendingRelay) -> None:
        direct = self._direct_links(pending.packet, pending.heard_links)
        if direct is not None:
            self.stats["relay_direct"] += 1
            targets = direct
        else:
            targets = relay_targets(now, pending, self.peers, self.peer_id, self.config, self.stats)
        if not targets:
            self.stats["relay_pruned"] += 1
            return
        out = pending.packet.relayed()
        frame = encode(out)
        for link in targets:
            self._queue(now, link, out, frame)
        self.stats["relayed"] += 1

    # -- sending ------------------------------------------------------------------------

    def send(
        self,
        now: float,
        ptype: int,
        payload: bytes,
        recipient: bytes | None = None,
        *,
        ttl: int | None = None,
        neighbour: bytes | None = None,
        sign: bool = True,
    ) -> Packet:
        """Originate a signed packet; returns it (its ``packet_id`` is the dedup key).

        ``sign`` False sends it unsigned and padded, as the BitChat apps send their Noise
        frames (types 0x10/0x11: the Noise session authenticates them).

        It goes on every link, or only to the recipient's links when it is a neighbour,
        or (``neighbour``, a linked peer id) only to that neighbour's links without naming
        a recipient: with ``ttl`` 1 a frame for that neighbour alone, 8 bytes shorter.
        ``ttl`` defaults to ``config.ttl``. Raises ``ValueError`` above the payload limit.
        """
        self._start(now)
        ttl = self.config.ttl if ttl is None else ttl
        if not 0 <= ttl <= 255:
            raise ValueError(f"ttl {ttl} is not a byte")
        limits = self.config.decode_limits
        if len(payload) > limits.max_payload:
            raise ValueError(f"payload of {len(payload)} bytes > limit {limits.max_payload}")
        timestamp = max(self.mesh_time_ms(now), self._last_timestamp + 1)
        self._last_timestamp = timestamp
        packet = Packet(
            type=ptype,
            sender=self.peer_id,
            payload=payload,
            timestamp=timestamp,
            ttl=ttl,
            recipient=recipient,
        ).compress()
        wire_len = len(packet.wire_payload if packet.wire_payload is not None else payload)
        if wire_len + 2 > 0xFFFF:
            packet = Packet(
                type=ptype,
                sender=self.peer_id,
                payload=packet.payload,
                timestamp=timestamp,
                ttl=ttl,
                version=2,
                recipient=recipient,
                wire_payload=packet.wire_payload,
            )
        if sign:
            packet = packet.signed(self.identity)
        self.seen.add(now, packet.packet_id)
        frame = encode(packet) if sign else pad(encode(packet))
        if neighbour is not None:
            links = self._peer_links(neighbour, set())
        else:
            links = self._direct_links(packet, set()) or [
                link for _, link in sorted(self.peers.links.items())
            ]
        for link in links:
            self._queue(now, link, packet, frame)
        self.stats["originated"] += 1
        return packet

    def _direct_links(self, packet: Packet, skip: set[int]) -> list[LinkState] | None:
        """The recipient's own links when a unicast packet's recipient is our neighbour."""
        recipient = packet.recipient
        if recipient is None or recipient == BROADCAST or not self.config.direct_to_neighbor:
            return None
        return self._peer_links(recipient, skip) or None

    def _peer_links(self, peer_id: bytes, skip: set[int]) -> list[LinkState]:
        """A linked peer's links (but ``skip``), in link id order; [] if it has none."""
        rec = self.peers.get(peer_id)
        if rec is None:
            return []
        return [self.peers.links[i] for i in sorted(rec.links - skip) if i in self.peers.links]

    def _queue(self, now: float, link: LinkState, packet: Packet, frame: bytes) -> None:
        try:
            frames = split(frame, packet, link.info.max_frame, self.rng.randbytes(8))
        except OversizeError:
            self.stats["too_large_for_link"] += 1
            return
        if len(self._outbound) + len(frames) > self.config.max_outbound_frames:
            self.stats["outbound_full"] += 1
            return
        if not link.breaker.allow(now):
            self.stats["breaker_open"] += 1
            return
        for f in frames:
            self._outbound.append((link.info.link_id, f))

    def frames_to_send(self) -> list[tuple[int, bytes]]:
        """Drain the frames to hand to the transport, each ≤ its link's ``max_frame``."""
        out: list[tuple[int, bytes]] = []
        links = self.peers.links
        while self._outbound:
            link_id, frame = self._outbound.popleft()
            link = links.get(link_id)
            if link is None:
                self.stats["link_gone"] += 1
                continue
            link.frames_out += 1
            link.bytes_out += len(frame)
            if link.peer_id is not None:
                peer = self.peers.get(link.peer_id)
                if peer is not None:
                    peer.frames_out += 1
                    peer.bytes_out += len(frame)
            self.stats["frames_out"] += 1
            self.stats["bytes_out"] += len(frame)
            out.append((link_id, frame))
        return out

    def send_result(self, now: float, link_id: int, result: SendResult) -> None:
        """Feed a transport's answer for one frame into the link's breaker and counters."""
        link = self.peers.links.get(link_id)
        if link is None or result is SendResult.NO_SUCH_LINK:
            self.stats["send_no_such_link"] += 1
            return
        ok = result is SendResult.QUEUED
        link.record_send(ok)
        if link.peer_id is not None:
            peer = self.peers.get(link.peer_id)
            if peer is not None:
                peer.loss = link.loss
        if ok:
            link.breaker.record_success()
            return
        self.stats["queue_full" if result is SendResult.QUEUE_FULL else "send_too_large"] += 1
        link.breaker.record_failure(now)

    # -- timers and events --------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        """Run every timer due at ``now``: relays, announce, housekeeping."""
        self._start(now)
        heap = self._relay_heap
        while heap and heap[0][0] <= now:
            due, _, pid = heapq.heappop(heap)
            pending = self._pending.get(pid)
            if pending is None or pending.due != due:
                continue
            del self._pending[pid]
            self._relay(now, pending)
        if now >= self._next_announce:
            self._announce(now)
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + self.config.housekeeping_interval
            for link in self.peers.links.values():
                before = Counter(link.reassembler.drops)
                link.reassembler.expire(now)
                self._collect_reassembly_drops(link, before)
            self.seen.expire(now)
            self.stats["seen_evicted"] = self.seen.evicted

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` should run next (``0.0`` before the first call)."""
        if not self._started:
            return 0.0
        heap = self._relay_heap
        while heap and not self._live(heap[0]):
            heapq.heappop(heap)
        t = min(self._next_announce, self._next_housekeeping)
        if heap:
            t = min(t, heap[0][0])
        return t

    def events(self) -> list[Delivered]:
        """Drain delivered packets (announces included), oldest first."""
        out = list(self._events)
        self._events.clear()
        return out

    def add_peer_key(self, peer_id: bytes, signing_key: bytes) -> None:
        """Trust ``signing_key`` for ``peer_id`` (known out of band); pinned, never evicted."""
        rec = self.peers.touch(peer_id)
        rec.signing_key = signing_key
        rec.pinned = True

    # -- announces ----------------------------------------------------------------------

    def announce_payload(self) -> bytes:
        ident = self.identity
        caps = self.config.capabilities
        if self.config.relay_deferral:
            caps = (caps or 0) | CAP_RELAY_DEFERRAL
        if self.extra_capabilities:
            caps = (caps or 0) | self.extra_capabilities
        return Announce(
            nickname=self.config.nickname,
            noise_key=ident.noise_public,
            signing_key=ident.signing_public,
            neighbors=tuple(self.peers.neighbor_ids()[:MAX_NEIGHBORS]),
            capabilities=caps,
        ).encode()

    def _announce(self, now: float) -> None:
        cfg = self.config
        if not self.peers.links:
            self._next_announce = now + cfg.announce_interval_alone
            return
        self.send(now, PacketType.ANNOUNCE, self.announce_payload())
        self._last_announce = now
        self.stats["announces_sent"] += 1
        if any(link.peer_id is not None for link in self.peers.links.values()):
            self._next_announce = now + self.rng.uniform(*cfg.announce_interval_linked)
        else:  # links up but no neighbour identified yet: keep announcing briskly
            self._next_announce = now + cfg.announce_interval_alone

    @property
    def pending_relays(self) -> int:
        return len(self._pending)

    @property
    def outbound_frames(self) -> int:
        return len(self._outbound)

    @property
    def pending_events(self) -> int:
        return len(self._events)


__all__ = ["BROADCAST", "DROP_REASONS", "Delivered", "MeshConfig", "Router"]
