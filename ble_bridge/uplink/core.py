"""Sans-IO gateway: what to publish, which remote gateways are links, what comes down.

:class:`GatewayCore` is fed the broker's messages, connection events and the mesh's frames,
each with an explicit ``now``, and hands back publishes, link events and frames. The asyncio
service (:mod:`.service`) and the simulator's broker (:mod:`ble_bridge.sim.uplink`) drive the
same object, so the simulator runs exactly these decisions.

Each remote gateway that is present (retained presence) and heard within ``link_timeout``
is one link, the highest priorities first when more than ``max_gateways`` are present.
Upward, frames queued within ``batch_linger`` leave together: a frame queued to every link
(a flood, an announce) as one message on ``all``, a frame for some links only (neighbour
gossip) in one message per gateway on ``to/<gateway>``. Budgets are token buckets (frames/s
and bytes/s; inbound, one pair per remote gateway); frames wait for them in bounded
per-link queues, whose depth the bridge sees as a busy link. Downward, every message passes a size check, topic and mesh checks, the
inbound budget, the frame-type filter and a long seen window before the router gets its
frames. Liveness: a heartbeat on ``all`` and a probe to our own inbox every
``heartbeat_interval``; a probe that does not come back within ``link_timeout`` means the
broker stopped delivering (``stalled``): the service reconnects, with the backoff of
:class:`Backoff`.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..transport import LinkInfo, LinkRole, SendResult
from ..wire.fragment import FRAGMENT_HEADER, FRAGMENT_HEADER_LEN
from ..wire.packet import PacketType, WireError, decode
from .config import UplinkConfig
from .wire import (
    MAX_FRAMES_PER_MESSAGE,
    Kind,
    Presence,
    TopicKind,
    Topics,
    UplinkWireError,
    decode_message,
    decode_presence,
    encode_message,
    encode_presence,
    mesh_tag,
    message_size,
)

UPLINK_DROPS = frozenset(
    {
        "oversized",  # MQTT payload above max_message_bytes
        "malformed",  # not a message / presence
        "bad_version",
        "frame_too_large",
        "unknown_topic",
        "unknown_mesh",  # another mesh's topic or tag
        "unknown_gateway",  # frames from a gateway that is not one of our links
        "own_message",  # our own message came back (not the probe)
        "presence_mismatch",  # presence topic and payload name different gateways
        "gateways_full",  # more gateways present than max_known_gateways
        "budget_frames",  # inbound frames/s budget spent
        "budget_bytes",  # inbound bytes/s budget spent
        "type_filtered",  # a frame type that does not cross the uplink
        "seen",  # frame digest in the uplink's long seen window (a replay or a second copy)
        "beyond_window",  # a packet older than what the seen window has forgotten
        "not_connected",  # a message arrived while we consider ourselves disconnected
    }
)
"""Every reason the core drops an inbound message or frame (``stats[reason]``)."""

ADDRESS_PREFIX = "mqtt:"


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens a second up to ``burst``; rate 0 means no limit."""

    rate: float
    burst: float
    tokens: float = math.nan
    at: float = math.nan

    def _refill(self, now: float) -> None:
        if math.isnan(self.tokens):
            self.tokens, self.at = self.burst, now
            return
        if now > self.at:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now

    def available(self, now: float) -> float:
        if self.rate <= 0:
            return math.inf
        self._refill(now)
        return self.tokens

    def take(self, now: float, cost: float) -> bool:
        if self.rate <= 0:
            return True
        self._refill(now)
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True

    def ready_at(self, now: float, cost: float) -> float:
        """When ``cost`` tokens will be there (now, if they are)."""
        if self.rate <= 0:
            return now
        self._refill(now)
        cost = min(cost, self.burst)
        return now if self.tokens >= cost else now + (cost - self.tokens) / self.rate


@dataclass(slots=True)
class SeenWindow:
    """Digests seen within ``ttl`` seconds, at most ``capacity`` (oldest evicted), each with
    the signed timestamp of its packet.

    ``horizon`` is the newest packet timestamp ever forgotten: a frame not in the window
    whose packet is that old or older may be a replay of a forgotten one, so
    :meth:`check_and_add` refuses it too. A hostile broker can therefore not replay a frame
    once the window has forgotten it (the mesh's own freshness check rejects it later
    still), however many genuine frames it floods to push it out."""

    capacity: int
    ttl: float
    _seen: OrderedDict[bytes, tuple[float, int]] = field(default_factory=OrderedDict)
    evicted: int = 0
    horizon: int = -1

    def check_and_add(self, now: float, key: bytes, stamp: int = 0) -> str | None:
        """``"seen"`` (in the window), ``"beyond_window"`` (older than what it forgot), or
        None: new, and now recorded."""
        refused = self.check(now, key, stamp)
        if refused is None:
            self.add(now, key, stamp)
        return refused

    def check(self, now: float, key: bytes, stamp: int = 0) -> str | None:
        """As :meth:`check_and_add`, without recording a new key."""
        self._expire(now)
        if key in self._seen:
            return "seen"
        if stamp <= self.horizon:
            return "beyond_window"
        return None

    def add(self, now: float, key: bytes, stamp: int = 0) -> None:
        """Record a key :meth:`check` found new."""
        self._seen[key] = (now, stamp)
        while len(self._seen) > self.capacity:
            _, (_, old) = self._seen.popitem(last=False)
            self.evicted += 1
            self.horizon = max(self.horizon, old)
        return None

    def _expire(self, now: float) -> None:
        while self._seen:
            at, stamp = next(iter(self._seen.values()))
            if now - at <= self.ttl:
                break
            self._seen.popitem(last=False)
            self.horizon = max(self.horizon, stamp)

    def __len__(self) -> int:
        return len(self._seen)


@dataclass(slots=True)
class Backoff:
    """Reconnect delays: ``initial`` doubling to ``maximum``, each drawn in [d/2, d]
    (so gateways a broker restart disconnected at once do not return at once)."""

    initial: float
    maximum: float
    rng: random.Random
    attempt: int = 0

    def next_delay(self) -> float:
        d = min(self.maximum, self.initial * (2.0 ** min(self.attempt, 30)))
        self.attempt += 1
        return self.rng.uniform(d / 2, d)

    def reset(self) -> None:
        self.attempt = 0


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    retain: bool = False


@dataclass(frozen=True, slots=True)
class LinkUp:
    info: LinkInfo


@dataclass(frozen=True, slots=True)
class LinkDown:
    link_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class FrameIn:
    link_id: int
    frame: bytes


Event = LinkUp | LinkDown | FrameIn


@dataclass(slots=True)
class RemoteGateway:
    """A gateway we heard on the broker."""

    peer_id: bytes
    priority: int
    present: bool = True
    last_heard: float = -math.inf
    link_id: int | None = None
    last_seq: int | None = None
    messages_in: int = 0
    frames_in: int = 0
    bytes_in: int = 0
    frames_out: int = 0
    bytes_out: int = 0
    seq_gaps: int = 0
    drops: Counter[str] = field(default_factory=Counter)
    in_frames: TokenBucket = field(default_factory=lambda: TokenBucket(0.0, 1.0))
    in_bytes: TokenBucket = field(default_factory=lambda: TokenBucket(0.0, 1.0))


@dataclass(slots=True)
class _Pending:
    """One frame waiting to go up, to the links in ``links``."""

    frame: bytes
    links: set[int]
    queued_at: float


def frame_packet_type(frame: bytes) -> int | None:
    """The packet type a frame carries (a fragment's original type), None if unreadable."""
    if len(frame) < 3:
        return None
    ptype = frame[1]
    if ptype != PacketType.FRAGMENT:
        return ptype
    try:
        packet = decode(frame)
    except WireError:
        return None
    if len(packet.payload) < FRAGMENT_HEADER_LEN:
        return None
    return int(FRAGMENT_HEADER.unpack_from(packet.payload)[3])


class GatewayCore:
    """One gateway's uplink state; explicit ``now`` everywhere, no I/O."""

    def __init__(
        self,
        config: UplinkConfig,
        peer_id: bytes,
        *,
        rng: random.Random | None = None,
        wall_ms: Callable[[float], int] | None = None,
    ) -> None:
        self.config = config
        self.peer_id = peer_id
        self.topics = Topics(config.topic_prefix, config.mesh_id)
        self.mesh = mesh_tag(config.mesh_id)
        self.rng = rng or random.Random()
        self.wall_ms = wall_ms or (lambda now: int(now * 1000))
        self.types = config.packet_types
        self.stats: Counter[str] = Counter()
        self.gateways: dict[bytes, RemoteGateway] = {}
        self._by_link: dict[int, RemoteGateway] = {}
        self._link_ids = itertools.count(1)
        self._events: deque[Event] = deque()
        self._pending: deque[_Pending] = deque()
        self._pending_by_frame: dict[bytes, _Pending] = {}
        self._depth: Counter[int] = Counter()
        burst = config.burst_s
        self.out_frames = TokenBucket(config.frames_per_s, max(1.0, config.frames_per_s * burst))
        self.out_bytes = TokenBucket(
            config.bytes_per_s, max(float(config.max_message_bytes), config.bytes_per_s * burst)
        )
        self.seen = SeenWindow(config.seen_capacity, config.seen_ttl)
        self.backoff = Backoff(config.reconnect_initial, config.reconnect_max, self.rng)
        self.connected = False
        self.stalled = False
        self._seq = itertools.count(1)
        self._connected_at = -math.inf
        self._next_heartbeat = math.inf
        self._probe_ok_at = -math.inf
        self._next_expiry = math.inf
        self.rtt: float | None = None
        """Smoothed round trip of our probe through the broker (seconds)."""
        self.rtt_samples: deque[float] = deque(maxlen=256)

    # -- the connection -------------------------------------------------------------------

    @property
    def client_id(self) -> str:
        return self.config.client_id or f"ble-bridge-{self.peer_id.hex()}"

    def will(self) -> Publish:
        """The last will: an empty retained presence (we are gone)."""
        return Publish(self.topics.presence(self.peer_id), b"", 1, retain=True)

    def presence(self) -> Publish:
        p = Presence(self.peer_id, self.config.priority, self.mesh)
        return Publish(self.topics.presence(self.peer_id), encode_presence(p), 1, retain=True)

    def subscriptions(self) -> list[tuple[str, int, bool]]:
        """(topic filter, QoS, no_local): our own messages on ``all`` need not come back
        (MQTT 5; with 3.1.1 they do, and are dropped as ``own_message``)."""
        qos, t = self.config.qos, self.topics
        return [
            (t.presence_filter, 1, False),
            (t.all, qos, True),
            (t.inbox(self.peer_id), qos, False),
        ]

    def on_connected(self, now: float) -> list[Publish]:
        """Subscribed and ready: what to publish first (our presence)."""
        self.connected = True
        self.stalled = False
        self._connected_at = now
        self._probe_ok_at = now
        self._next_heartbeat = now
        self.stats["connects"] += 1
        return [self.presence()]

    def on_disconnected(self, now: float, reason: str) -> float:
        """The connection is gone: every link goes down. Returns the delay before the next
        connection attempt (the backoff restarts after a connection that lasted a while)."""
        if self.connected:
            self.stats["disconnects"] += 1
            if now - self._connected_at >= 4 * self.config.link_timeout:
                self.backoff.reset()
        self.connected = False
        self._next_heartbeat = math.inf
        for gw in self.gateways.values():
            self._link_down(gw, reason)
        self.gateways.clear()  # retained presence tells us again after reconnecting
        self._drop_pending()
        return self.backoff.next_delay()

    def connect_failed(self, now: float, reason: str) -> float:
        self.stats["connect_failures"] += 1
        return self.on_disconnected(now, reason)

    def goodbye(self) -> Publish:
        """Published before a clean disconnect (the will covers the rest)."""
        return self.will()

    # -- inbound --------------------------------------------------------------------------

    def _drop(self, reason: str, gw: RemoteGateway | None = None) -> None:
        self.stats[reason] += 1
        if gw is not None:
            gw.drops[reason] += 1

    def receive(self, now: float, topic: str, payload: bytes) -> None:
        """One message from the broker; never raises on bad input (it is counted)."""
        self.stats["messages_in"] += 1
        self.stats["message_bytes_in"] += len(payload)
        if not self.connected:
            return self._drop("not_connected")
        if len(payload) > self.config.max_message_bytes:
            return self._drop("oversized")
        try:
            kind, gw_id = self.topics.parse(topic)
            if kind is TopicKind.PRESENCE:
                assert gw_id is not None
                self._presence(now, gw_id, payload)
            else:
                self._message(now, kind, gw_id, payload)
        except UplinkWireError as exc:
            self._drop(exc.reason)
        return None

    def _presence(self, now: float, gw_id: bytes, payload: bytes) -> None:
        if gw_id == self.peer_id:
            return  # our own retained presence (or someone squatting on it: ignored)
        gw = self.gateways.get(gw_id)
        if not payload:
            if gw is not None:
                gw.present = False
                self._link_down(gw, "gateway left")
                del self.gateways[gw_id]
                self.stats["gateways_left"] += 1
            return
        p = decode_presence(payload)
        if p.peer_id != gw_id:
            raise UplinkWireError("presence_mismatch")
        if p.mesh != self.mesh:
            raise UplinkWireError("unknown_mesh")
        if gw is None:
            if len(self.gateways) >= self.config.max_known_gateways:
                raise UplinkWireError("gateways_full")
            gw = self.gateways[gw_id] = RemoteGateway(gw_id, p.priority)
            gw.in_frames, gw.in_bytes = self._inbound_buckets()
            self.stats["gateways_seen"] += 1
        gw.priority = p.priority
        gw.present = True
        gw.last_heard = max(gw.last_heard, now)
        self._reconcile(now)

    def _inbound_buckets(self) -> tuple[TokenBucket, TokenBucket]:
        """A remote gateway's own inbound budget: one that floods (or a broker flooding in
        its name) spends its own allowance, not that of the other gateways."""
        cfg = self.config
        frames = TokenBucket(cfg.frames_per_s, max(1.0, cfg.frames_per_s * cfg.burst_s))
        size = TokenBucket(
            cfg.bytes_per_s, max(float(cfg.max_message_bytes), cfg.bytes_per_s * cfg.burst_s)
        )
        return frames, size

    def _message(self, now: float, kind: TopicKind, gw_id: bytes | None, payload: bytes) -> None:
        cfg = self.config
        msg = decode_message(payload, cfg.max_frame)
        if msg.mesh != self.mesh:
            raise UplinkWireError("unknown_mesh")
        if kind is TopicKind.INBOX and gw_id != self.peer_id:
            raise UplinkWireError("unknown_topic")  # we subscribe only to our own inbox
        if msg.source == self.peer_id:
            if msg.kind is Kind.PROBE:
                self._probe_back(now, msg.sent_ms)
                return
            raise UplinkWireError("own_message")
        gw = self.gateways.get(msg.source)
        if gw is None or not gw.present:
            raise UplinkWireError("unknown_gateway")
        if msg.kind is Kind.PROBE:
            raise UplinkWireError("malformed")  # probes go only to one's own inbox
        gw.messages_in += 1
        if gw.last_seq is not None and msg.seq > gw.last_seq + 1:
            gw.seq_gaps += msg.seq - gw.last_seq - 1
        gw.last_seq = msg.seq if gw.last_seq is None else max(gw.last_seq, msg.seq)
        gw.last_heard = now
        if gw.link_id is None:
            self._reconcile(now)
        if msg.kind is Kind.HEARTBEAT or gw.link_id is None:
            if msg.kind is Kind.FRAMES:
                self._drop("unknown_gateway", gw)  # present but not linked (over the limit)
            return
        if not gw.in_bytes.take(now, len(payload)):
            return self._drop("budget_bytes", gw)
        for frame in msg.frames:
            # type and seen window before the frames budget: second copies (a broker
            # duplicating or replaying) do not spend the gateway's allowance for new frames
            ptype = frame_packet_type(frame)
            if ptype is None or ptype not in self.types:
                self._drop("type_filtered", gw)
                continue
            digest = hashlib.blake2b(frame, digest_size=16).digest()
            stamp = int.from_bytes(frame[3:11], "big")
            seen = self.seen.check(now, digest, stamp)
            if seen is not None:
                self._drop(seen, gw)
                continue
            if not gw.in_frames.take(now, 1):
                self._drop("budget_frames", gw)  # not recorded: a later copy may pass
                continue
            self.seen.add(now, digest, stamp)
            gw.frames_in += 1
            gw.bytes_in += len(frame)
            self.stats["frames_in"] += 1
            self._events.append(FrameIn(gw.link_id, frame))
        return None

    def _probe_back(self, now: float, sent_ms: int) -> None:
        self._probe_ok_at = now
        rtt = max(0.0, (self.wall_ms(now) - sent_ms) / 1000)
        self.rtt_samples.append(rtt)
        self.rtt = rtt if self.rtt is None else 0.875 * self.rtt + 0.125 * rtt
        self.stats["probes_back"] += 1

    # -- links ----------------------------------------------------------------------------

    def _reconcile(self, now: float) -> None:
        """Links for the best present gateways heard within ``link_timeout``."""
        cfg = self.config
        alive = [
            gw
            for gw in self.gateways.values()
            if gw.present and now - gw.last_heard <= cfg.link_timeout
        ]
        alive.sort(key=lambda g: (-g.priority, g.peer_id))
        chosen = {g.peer_id for g in alive[: cfg.max_gateways]}
        for gw in self.gateways.values():
            if gw.link_id is not None and gw.peer_id not in chosen:
                quiet = now - gw.last_heard > cfg.link_timeout
                self._link_down(gw, "gateway silent" if quiet else "outranked")
        for gw in alive[: cfg.max_gateways]:
            if gw.link_id is None:
                gw.link_id = next(self._link_ids)
                self._by_link[gw.link_id] = gw
                self.stats["links_up"] += 1
                self._events.append(LinkUp(self._info(gw)))
        quiet_at = [g.last_heard + cfg.link_timeout for g in self.gateways.values() if g.link_id]
        self._next_expiry = min(quiet_at, default=math.inf)

    def _info(self, gw: RemoteGateway) -> LinkInfo:
        assert gw.link_id is not None
        mtu = self.config.max_frame + 3
        return LinkInfo(gw.link_id, ADDRESS_PREFIX + gw.peer_id.hex(), mtu, LinkRole.UPLINK)

    def _link_down(self, gw: RemoteGateway, reason: str) -> None:
        lid = gw.link_id
        if lid is None:
            return
        gw.link_id = None
        del self._by_link[lid]
        self.stats["links_down"] += 1
        for p in list(self._pending):
            if lid in p.links:
                p.links.discard(lid)
        self._depth.pop(lid, None)
        self._events.append(LinkDown(lid, reason))

    def links(self) -> list[LinkInfo]:
        return [self._info(gw) for _, gw in sorted(self._by_link.items())]

    def gateway(self, link_id: int) -> RemoteGateway | None:
        return self._by_link.get(link_id)

    # -- outbound -------------------------------------------------------------------------

    def send(self, now: float, link_id: int, frame: bytes) -> SendResult:
        """Queue a frame for the gateway on ``link_id``."""
        if link_id not in self._by_link:
            return SendResult.NO_SUCH_LINK
        if len(frame) > self.config.max_frame:
            return SendResult.TOO_LARGE
        if self._depth[link_id] >= self.config.queue_frames:
            self.stats["queue_full"] += 1
            return SendResult.QUEUE_FULL
        ptype = frame_packet_type(frame)
        if ptype is None or ptype not in self.types:
            # not for the uplink: taken and dropped, so the link's breaker stays closed
            self.stats["type_filtered_out"] += 1
            return SendResult.QUEUED
        pending = self._pending_by_frame.get(frame)
        if pending is not None and link_id not in pending.links:
            pending.links.add(link_id)
        else:
            pending = _Pending(frame, {link_id}, now)
            self._pending.append(pending)
            self._pending_by_frame[frame] = pending
        self._depth[link_id] += 1
        return SendResult.QUEUED

    def queue_depth(self, link_id: int) -> int:
        return self._depth.get(link_id, 0)

    def _drop_pending(self) -> None:
        self.stats["dropped_on_disconnect"] += len(self._pending)
        self._pending.clear()
        self._pending_by_frame.clear()
        self._depth.clear()

    def poll(self, now: float) -> list[Publish]:
        """Messages to publish now: batched frames within the budget, heartbeats, probes."""
        out: list[Publish] = []
        if not self.connected:
            return out
        self._heartbeat(now, out)
        if not self._pending or now < self._pending[0].queued_at + self.config.batch_linger:
            return out
        all_links = set(self._by_link)
        batches: dict[str, list[bytes]] = {}
        sizes: dict[str, int] = {}
        order: list[str] = []
        limit = self.config.max_message_bytes
        while self._pending:
            p = self._pending[0]
            if not p.links:  # its links went down
                self._forget(p)
                continue
            dests = (
                [self.topics.all]
                if p.links >= all_links
                else [self.topics.inbox(self._by_link[lid].peer_id) for lid in sorted(p.links)]
            )
            cost = sum(2 + len(p.frame) for _ in dests)
            if not (
                self.out_frames.available(now) >= len(dests)
                and self.out_bytes.available(now) >= cost
            ):
                break
            self.out_frames.take(now, len(dests))
            self.out_bytes.take(now, cost)
            self._forget(p)
            for lid in p.links:
                gw = self._by_link[lid]
                gw.frames_out += 1
                gw.bytes_out += len(p.frame)
            for topic in dests:
                frames = batches.get(topic)
                if frames is None:
                    frames = batches[topic] = []
                    sizes[topic] = message_size(())
                    order.append(topic)
                elif (
                    sizes[topic] + 2 + len(p.frame) > limit or len(frames) >= MAX_FRAMES_PER_MESSAGE
                ):
                    out.append(self._frames_message(now, topic, frames))
                    frames = batches[topic] = []
                    sizes[topic] = message_size(())
                frames.append(p.frame)
                sizes[topic] += 2 + len(p.frame)
                self.stats["frames_out"] += 1
        for topic in order:
            if batches[topic]:
                out.append(self._frames_message(now, topic, batches[topic]))
        return out

    def _forget(self, p: _Pending) -> None:
        self._pending.popleft()
        if self._pending_by_frame.get(p.frame) is p:
            del self._pending_by_frame[p.frame]
        for lid in p.links:
            self._depth[lid] -= 1
            if self._depth[lid] <= 0:
                del self._depth[lid]

    def _frames_message(self, now: float, topic: str, frames: list[bytes]) -> Publish:
        payload = encode_message(
            Kind.FRAMES, self.mesh, self.peer_id, next(self._seq), self.wall_ms(now), frames
        )
        self.stats["messages_out"] += 1
        self.stats["message_bytes_out"] += len(payload)
        return Publish(topic, payload, self.config.qos)

    def _heartbeat(self, now: float, out: list[Publish]) -> None:
        if now < self._next_heartbeat:
            return
        self._next_heartbeat = now + self.config.heartbeat_interval
        sent = self.wall_ms(now)
        hb = encode_message(Kind.HEARTBEAT, self.mesh, self.peer_id, next(self._seq), sent)
        probe = encode_message(Kind.PROBE, self.mesh, self.peer_id, 0, sent)
        out.append(Publish(self.topics.all, hb, 0))
        out.append(Publish(self.topics.inbox(self.peer_id), probe, 0))
        self.stats["heartbeats_out"] += 1

    # -- timers ---------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        """Expire silent gateways; notice a stalled broker."""
        if not self.connected:
            return
        if now >= self._next_expiry:
            self._reconcile(now)
        if now - self._probe_ok_at > self.config.link_timeout and not self.stalled:
            self.stalled = True
            self.stats["broker_stalled"] += 1

    def next_timer(self, now: float) -> float | None:
        if not self.connected:
            return None
        t = min(
            self._next_heartbeat,
            self._next_expiry,
            self._probe_ok_at + self.config.link_timeout + 1e-3,
        )
        if self._pending:
            first = self._pending[0]
            due = first.queued_at + self.config.batch_linger
            cost = 2 + len(first.frame)
            due = max(due, self.out_frames.ready_at(now, 1), self.out_bytes.ready_at(now, cost))
            t = min(t, due)
        return t

    def events(self) -> list[Event]:
        out = list(self._events)
        self._events.clear()
        return out

    def snapshot(self, now: float) -> dict[str, object]:
        """Counters and per-gateway rows, for ``status``."""
        return {
            "connected": self.connected,
            "stalled": self.stalled,
            "rtt_ms": None if self.rtt is None else round(self.rtt * 1000, 1),
            "queued_frames": len(self._pending),
            "seen_entries": len(self.seen),
            "seen_evicted": self.seen.evicted,
            "stats": dict(self.stats),
            "gateways": [
                {
                    "peer_id": gw.peer_id.hex(),
                    "priority": gw.priority,
                    "link_id": gw.link_id,
                    "last_heard_s": None
                    if gw.last_heard == -math.inf
                    else round(now - gw.last_heard, 3),
                    "messages_in": gw.messages_in,
                    "frames_in": gw.frames_in,
                    "bytes_in": gw.bytes_in,
                    "frames_out": gw.frames_out,
                    "bytes_out": gw.bytes_out,
                    "seq_gaps": gw.seq_gaps,
                    "drops": dict(gw.drops),
                }
                for gw in sorted(self.gateways.values(), key=lambda g: g.peer_id)
            ],
        }
