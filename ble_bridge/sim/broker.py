"""A simulated MQTT broker on the loop's clock, and the uplink transport that uses it.

The uplink link type of the loopback air: gateways reach the broker over an internet path
(:class:`InternetProfile`: one-way latency with jitter, and loss, which TCP turns into a
retransmission delay rather than a lost message). :class:`SimBroker` keeps MQTT's
semantics the gateways rely on: topic filters with ``+``/``#``, retained messages, a last
will published when a client vanishes, *no local* subscriptions, per-publisher order to
each subscriber, and no persistence (a broker that goes down forgets retained messages and
drops every client without sending wills). :class:`SimUplinkTransport` drives the very
:class:`~ble_bridge.uplink.core.GatewayCore` the MQTT service drives, so the simulator runs
the gateway's real decisions in virtual time, deterministic by seed.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..transport import LinkInfo, SendResult, Transport, TransportHandler
from ..uplink.config import UplinkConfig
from ..uplink.core import FrameIn, GatewayCore, LinkDown, LinkUp, Publish
from .clock import SIM_EPOCH


@dataclass(frozen=True, slots=True)
class InternetProfile:
    """One gateway's path to the broker."""

    name: str
    latency: float
    """One-way base latency, seconds."""
    jitter: float
    """Uniform extra one-way delay, up to this many seconds."""
    loss: float
    """Chance a message needs a TCP retransmission (costs ``rto`` more)."""
    rto: float = 0.2
    connect_time: float = 0.05
    """Connect + subscribe handshake (a few round trips)."""


INTERNET_PROFILES: dict[str, InternetProfile] = {
    p.name: p
    for p in (
        # two homes in one city on consumer broadband, broker in a nearby cloud region
        InternetProfile("city", latency=0.015, jitter=0.010, loss=0.005),
        # islands on two continents through one broker
        InternetProfile("intercontinental", latency=0.080, jitter=0.030, loss=0.01),
        # a handheld gateway on a mobile hotspot
        InternetProfile("cellular", latency=0.045, jitter=0.060, loss=0.02, rto=0.3),
    )
}


def topic_matches(pattern: str, topic: str) -> bool:
    """MQTT topic filter matching (``+`` one level, ``#`` the rest)."""
    pp, tt = pattern.split("/"), topic.split("/")
    for i, p in enumerate(pp):
        if p == "#":
            return True
        if i >= len(tt) or (p != "+" and p != tt[i]):
            return False
    return len(pp) == len(tt)


@dataclass(slots=True)
class _Session:
    client: SimUplinkTransport
    will: Publish
    subscriptions: list[tuple[str, bool]] = field(default_factory=list)
    last_delivery: dict[int, float] = field(default_factory=dict)


class SimBroker:
    """Every simulated gateway's broker; ``go_down``/``come_up`` play an outage."""

    def __init__(self, loop: asyncio.AbstractEventLoop, rng: random.Random) -> None:
        self.loop = loop
        self.rng = rng
        self.up = True
        self.retained: dict[str, bytes] = {}
        self.sessions: dict[int, _Session] = {}
        self.stats: Counter[str] = Counter()
        self._ids = 0

    def _delay(self, profile: InternetProfile) -> float:
        d = profile.latency + self.rng.uniform(0.0, profile.jitter)
        if self.rng.random() < profile.loss:
            d += profile.rto
        return d

    def connect(self, client: SimUplinkTransport, will: Publish) -> int | None:
        if not self.up:
            return None
        self._ids += 1
        self.sessions[self._ids] = _Session(client, will)
        self.stats["connects"] += 1
        return self._ids

    def subscribe(self, sid: int, pattern: str, no_local: bool) -> None:
        s = self.sessions.get(sid)
        if s is None:
            return
        s.subscriptions.append((pattern, no_local))
        for topic, payload in sorted(self.retained.items()):
            if topic_matches(pattern, topic):
                self._deliver(sid, s, topic, payload, self.loop.time())

    def disconnect(self, sid: int, *, graceful: bool) -> None:
        s = self.sessions.pop(sid, None)
        if s is None:
            return
        if not graceful:
            self._route(sid, s.will, self.loop.time())

    def publish(self, sid: int, p: Publish) -> None:
        """A client's publish; it reaches the broker after the client's path delay."""
        s = self.sessions.get(sid)
        if s is None:
            return
        at = self.loop.time() + self._delay(s.client.profile)
        self.loop.call_at(at, self._arrive, sid, p)

    def _arrive(self, sid: int, p: Publish) -> None:
        if not self.up or sid not in self.sessions:
            self.stats["lost_in_flight"] += 1
            return
        self._route(sid, p, self.loop.time())

    def _route(self, sid: int, p: Publish, now: float) -> None:
        self.stats["messages"] += 1
        self.stats["bytes"] += len(p.payload)
        if p.retain:
            if p.payload:
                self.retained[p.topic] = p.payload
            else:
                self.retained.pop(p.topic, None)
        for other, s in list(self.sessions.items()):
            for pattern, no_local in s.subscriptions:
                if topic_matches(pattern, p.topic) and not (no_local and other == sid):
                    self._deliver(other, s, p.topic, p.payload, now, source=sid)
                    break

    def _deliver(
        self, sid: int, s: _Session, topic: str, payload: bytes, now: float, source: int = 0
    ) -> None:
        # per publisher, in order (one TCP connection each way)
        at = max(now + self._delay(s.client.profile), s.last_delivery.get(source, 0.0))
        s.last_delivery[source] = at
        self.stats["deliveries"] += 1
        self.loop.call_at(at, self._hand_over, sid, topic, payload)

    def _hand_over(self, sid: int, topic: str, payload: bytes) -> None:
        s = self.sessions.get(sid)
        if s is None or not self.up:
            self.stats["lost_in_flight"] += 1
            return
        s.client.deliver(topic, payload)

    def go_down(self) -> None:
        """The broker dies: every connection breaks, retained state is gone, no wills."""
        self.up = False
        self.retained.clear()
        sessions, self.sessions = self.sessions, {}
        for s in sessions.values():
            s.client.connection_lost("broker went down")
        self.stats["outages"] += 1

    def come_up(self) -> None:
        self.up = True


class SimUplinkTransport(Transport):
    """A gateway's uplink through :class:`SimBroker` (the loop's clock)."""

    def __init__(
        self,
        broker: SimBroker,
        config: UplinkConfig,
        peer_id: bytes,
        profile: InternetProfile,
        rng: random.Random,
    ) -> None:
        self.broker = broker
        self.profile = profile
        self.core = GatewayCore(
            config, peer_id, rng=rng, wall_ms=lambda now: int((SIM_EPOCH + now) * 1000)
        )
        self._handler: TransportHandler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sid: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._running = False

    def attach(self, handler: TransportHandler) -> None:
        self._handler = handler

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._running = True
        self._connect()

    async def stop(self) -> None:
        self._running = False
        if self._sid is not None:
            self.broker.publish(self._sid, self.core.goodbye())
            self.broker.disconnect(self._sid, graceful=True)
            self._sid = None
        for h in (self._timer, self._retry):
            if h is not None:
                h.cancel()
        self._timer = self._retry = None

    def send(self, link_id: int, frame: bytes) -> SendResult:
        result = self.core.send(self._now(), link_id, frame)
        if result is SendResult.QUEUED:
            self._arm()
        return result

    def links(self) -> Sequence[LinkInfo]:
        return self.core.links()

    def queue_depth(self, link_id: int) -> int:
        return self.core.queue_depth(link_id)

    def snapshot(self) -> dict[str, object]:
        return self.core.snapshot(self._now())

    # -- the connection -------------------------------------------------------------------

    def _now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    def _connect(self) -> None:
        self._retry = None
        if not self._running or self._loop is None:
            return
        sid = self.broker.connect(self, self.core.will())
        if sid is None:
            delay = self.core.connect_failed(self._now(), "broker unreachable")
            self._pump()
            self._retry = self._loop.call_later(delay, self._connect)
            return
        self._loop.call_later(self.profile.connect_time, self._ready, sid)

    def _ready(self, sid: int) -> None:
        if not self._running or sid not in self.broker.sessions:
            return
        self._sid = sid
        for topic, _qos, no_local in self.core.subscriptions():
            self.broker.subscribe(sid, topic, no_local)
        self._publish(self.core.on_connected(self._now()))
        self._pump()

    def connection_lost(self, reason: str) -> None:
        if self._sid is None:
            return
        self._sid = None
        delay = self.core.on_disconnected(self._now(), reason)
        self._pump()
        if self._running and self._loop is not None:
            self._retry = self._loop.call_later(delay, self._connect)

    def deliver(self, topic: str, payload: bytes) -> None:
        if self._sid is None:
            return
        self.core.receive(self._now(), topic, payload)
        self._pump()

    def _publish(self, publishes: list[Publish]) -> None:
        if self._sid is None:
            return
        for p in publishes:
            self.broker.publish(self._sid, p)

    def _pump(self) -> None:
        now = self._now()
        core = self.core
        core.handle_timer(now)
        self._publish(core.poll(now))
        if core.stalled and self._sid is not None:
            sid = self._sid
            self.broker.disconnect(sid, graceful=False)
            self.connection_lost("broker stalled")
            return
        handler = self._handler
        for ev in core.events():
            if handler is None:
                continue
            if isinstance(ev, FrameIn):
                handler.frame_received(ev.link_id, ev.frame)
            elif isinstance(ev, LinkUp):
                handler.link_up(ev.info)
            elif isinstance(ev, LinkDown):
                handler.link_down(ev.link_id, ev.reason)
        self._arm()

    def _arm(self) -> None:
        if not self._running or self._loop is None:
            return
        at = self.core.next_timer(self._now())
        if at == self._timer_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = at
        if at is not None:
            self._timer = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self._running:
            self._pump()
