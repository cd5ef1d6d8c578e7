"""Thin asyncio service around :class:`Router`: the same node over BlueZ or the loopback air.

It only moves bytes and time: transport events go into the router with ``loop.time()`` as
``now``, frames come back out into ``Transport.send``, one ``call_at`` timer follows
``router.next_timer()``, and delivered packets go to subscribers. A virtual-clock loop in
the simulator therefore drives real node code.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable

from ..events import kv
from ..timer import TimerSlot
from ..transport import LinkInfo, SendResult, Transport
from ..wire.identity import Identity
from ..wire.packet import Packet
from .config import MeshConfig
from .reconnects import ReconnectWatch
from .router import Delivered, Router

log = logging.getLogger(__name__)

Subscriber = Callable[[Delivered], None]


class MeshNode:
    """A mesh node on any :class:`Transport`; implements ``TransportHandler``."""

    def __init__(
        self,
        identity: Identity,
        transport: Transport,
        config: MeshConfig | None = None,
        *,
        rng: random.Random | None = None,
        wall_offset: float | None = None,
    ) -> None:
        self.identity = identity
        self.transport = transport
        self.config = config or MeshConfig()
        self._fixed_wall_offset = wall_offset is not None
        offset = wall_offset if wall_offset is not None else time.time() - time.monotonic()
        self.router = Router(identity, self.config, rng or random.Random(), offset)
        self._subscribers: dict[int | None, list[Subscriber]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer = TimerSlot(self._on_timer, self._timer_failed)
        self._running = False
        self.counters: Counter[str] = Counter()
        self._identified: dict[int, bytes] = {}
        """link id -> peer id last told to the transport (:meth:`Transport.link_identified`)"""
        self.reconnects = ReconnectWatch()

    @property
    def peer_id(self) -> bytes:
        return self.identity.peer_id

    async def start(self) -> None:
        """Attach to the transport, start it and arm the router's timer."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        if not self._fixed_wall_offset:
            self.router.wall_offset = time.time() - loop.time()
        self._running = True
        self.transport.attach(self)
        self.router.extra_capabilities = self.transport.announce_capabilities()
        await self.transport.start()
        self._pump()

    async def stop(self) -> None:
        """Stop timers and the transport; idempotent."""
        self._running = False
        self._timer.cancel()
        await self.transport.stop()
        if self._loop is not None:
            now = self._loop.time()
            for link_id in list(self.router.peers.links):
                self.router.link_down(now, link_id, "node stopped")
        self.router.frames_to_send()  # nothing can leave any more

    # -- API ----------------------------------------------------------------------------

    def send(
        self,
        ptype: int,
        payload: bytes,
        recipient: bytes | None = None,
        *,
        ttl: int | None = None,
        neighbour: bytes | None = None,
        sign: bool = True,
    ) -> Packet:
        """Originate a signed packet now; frames leave before this returns (``neighbour``:
        only on that linked peer's links; ``sign`` False: unsigned, see :meth:`Router.send`)."""
        packet = self.router.send(
            self._now(), ptype, payload, recipient, ttl=ttl, neighbour=neighbour, sign=sign
        )
        self._pump()
        return packet

    def subscribe(self, ptype: int | None, callback: Subscriber) -> None:
        """Call ``callback`` for each delivered packet of ``ptype`` (``None``: every type)."""
        self._subscribers.setdefault(ptype, []).append(callback)

    def add_peer_key(self, peer_id: bytes, signing_key: bytes) -> None:
        self.router.add_peer_key(peer_id, signing_key)

    def stats(self) -> dict[str, int]:
        """Router counters plus gauges of every bounded structure and node counters."""
        r = self.router
        out = dict(r.stats)
        out.update(self.counters)
        out["links"] = len(r.peers.links)
        out["peers_known"] = len(r.peers)
        out["seen_entries"] = len(r.seen)
        out["pending_relays"] = r.pending_relays
        out["outbound_frames"] = r.outbound_frames
        return out

    # -- TransportHandler -----------------------------------------------------------------

    def link_up(self, info: LinkInfo) -> None:
        if self._running:
            self.router.link_up(self._now(), info)
            log.info(
                kv(
                    "link_up",
                    link=info.link_id,
                    address=info.peer_address,
                    role=info.role.value,
                    mtu=info.mtu,
                    links=len(self.router.peers.links),
                )
            )
            self._pump()

    def link_down(self, link_id: int, reason: str) -> None:
        peer = self._identified.pop(link_id, None)
        if self._running and link_id in self.router.peers.links:
            log.info(
                kv(
                    "link_down",
                    link=link_id,
                    peer=peer.hex() if peer else None,
                    reason=reason,
                    links=len(self.router.peers.links) - 1,
                )
            )
        if self._running:
            self.router.link_down(self._now(), link_id, reason)
            self._pump()

    def frame_received(self, link_id: int, data: bytes) -> None:
        if self._running:
            self.router.receive(self._now(), link_id, data)
            self._tell_identity(link_id)
            self._pump()

    def _tell_identity(self, link_id: int) -> None:
        """Tell the transport when the router bound a link to its peer (or re-bound it)."""
        link = self.router.peers.links.get(link_id)
        if link is None or link.peer_id is None or self._identified.get(link_id) == link.peer_id:
            return
        self._identified[link_id] = link.peer_id
        rec = self.router.peers.get(link.peer_id)
        nickname = rec.nickname if rec else None
        log.info(kv("link_identified", link=link_id, peer=link.peer_id.hex(), nickname=nickname))
        span = self.reconnects.identified(self._now(), link.peer_id)
        if span is not None:
            self.counters["peer_reconnecting"] += 1
            log.warning(
                kv(
                    "peer_reconnecting",
                    peer=link.peer_id.hex(),
                    nickname=nickname,
                    links=self.reconnects.config.threshold,
                    within_s=round(span, 1),
                )
            )
        try:
            self.transport.link_identified(link_id, link.peer_id, rec.capabilities if rec else 0)
        except Exception:  # a transport bug must not stop the node
            log.exception("transport.link_identified failed on link %d", link_id)
            self.counters["transport_identify_error"] += 1

    # -- plumbing ---------------------------------------------------------------------------

    def now(self) -> float:
        """The node's clock (the event loop's time), the ``now`` its sans-IO parts use."""
        return self._now()

    def _now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    def _pump(self) -> None:
        """Flush frames, dispatch events, re-arm the single timer."""
        router = self.router
        now = self._now()
        for link_id, frame in router.frames_to_send():
            try:
                result = self.transport.send(link_id, frame)
            except Exception:  # a transport bug must not stop the node; count it as a failure
                log.exception("transport.send failed on link %d", link_id)
                self.counters["transport_send_error"] += 1
                result = SendResult.QUEUE_FULL
            router.send_result(now, link_id, result)
        for event in router.events():
            self._dispatch(event)
        self._arm()

    def _dispatch(self, event: Delivered) -> None:
        for key in (event.packet.type, None):
            for callback in self._subscribers.get(key, ()):
                try:
                    callback(event)
                except Exception:
                    self.counters["subscriber_error"] += 1
                    log.exception("mesh subscriber failed on a type 0x%02x packet", key or 0)

    def _arm(self) -> None:
        if not self._running or self._loop is None:
            return
        self._timer.arm(self._loop, self.router.next_timer())

    def _on_timer(self) -> None:
        if not self._running:
            return
        try:
            self.router.handle_timer(self._now())
        except Exception:  # a bug must not leave the node without its timer
            log.exception("mesh router timer failed")
            self.counters["timer_error"] += 1
        self._pump()

    def _timer_failed(self, exc: BaseException) -> None:
        """Pumping after the timer failed (a bug): logged and counted; the next input
        arms the timer again."""
        log.error("mesh timer callback failed", exc_info=exc)
        self.counters["timer_error"] += 1
