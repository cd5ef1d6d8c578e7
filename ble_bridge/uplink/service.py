"""The uplink as a :class:`Transport`: :class:`GatewayCore` on a real MQTT connection.

Thin: aiomqtt (asyncio over paho-mqtt) moves the bytes; every decision is the core's. One
task keeps the connection (connect, subscribe, presence, read messages, reconnect after the
core's backoff), one ``call_at`` timer follows ``core.next_timer``, and publishes leave
through a bounded backlog with at most ``MAX_INFLIGHT`` publishes awaiting the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import aiomqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from ..events import kv
from ..transport import LinkInfo, SendResult, Transport, TransportHandler
from .config import UplinkConfig
from .core import FrameIn, GatewayCore, LinkDown, LinkUp, Publish

log = logging.getLogger(__name__)

MAX_INFLIGHT = 64
MAX_BACKLOG = 1024


class _ClientLog(logging.Filter):
    """aiomqtt reports a full incoming queue only in its log: count it, log it sparingly."""

    def __init__(self, core: GatewayCore) -> None:
        super().__init__()
        self.core = core

    def filter(self, record: logging.LogRecord) -> bool:
        if "queue is full" in record.getMessage():
            self.core.stats["inbound_queue_full"] += 1
            return self.core.stats["inbound_queue_full"] in (1, 10, 100, 1000, 10000)
        return True


class UplinkTransport(Transport):
    """Remote gateways heard on an MQTT broker, one link each."""

    def __init__(
        self, config: UplinkConfig, peer_id: bytes, *, rng: random.Random | None = None
    ) -> None:
        self.config = config
        self.core = GatewayCore(config, peer_id, rng=rng or random.Random(), wall_ms=self._wall)
        self._handler: TransportHandler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._backlog: deque[Publish] = deque()
        self._inflight = 0
        self._publish_tasks: set[asyncio.Task[None]] = set()
        self._stalled: asyncio.Event | None = None
        self._running = False
        self._offset = time.time() - time.monotonic()
        self._log = logging.getLogger(f"{__name__}.client.{peer_id.hex()}")
        if not self._log.filters:
            self._log.addFilter(_ClientLog(self.core))

    def _wall(self, now: float) -> int:
        return int((now + self._offset) * 1000)

    # -- Transport ------------------------------------------------------------------------

    def attach(self, handler: TransportHandler) -> None:
        self._handler = handler

    async def start(self) -> None:
        if self._running:
            return
        self._loop = asyncio.get_running_loop()
        self._offset = time.time() - self._loop.time()
        self._running = True
        self._task = self._loop.create_task(self._run(), name="uplink")

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        client = self._client
        if client is not None:
            with contextlib.suppress(Exception):
                goodbye = self.core.goodbye()
                await asyncio.wait_for(
                    client.publish(goodbye.topic, goodbye.payload, goodbye.qos, goodbye.retain),
                    timeout=1.0,
                )
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for t in list(self._publish_tasks):
            t.cancel()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def send(self, link_id: int, frame: bytes) -> SendResult:
        result = self.core.send(self._now(), link_id, frame)
        if result is SendResult.QUEUED:
            self._kick()
        return result

    def links(self) -> Sequence[LinkInfo]:
        return self.core.links()

    def queue_depth(self, link_id: int) -> int:
        return self.core.queue_depth(link_id)

    def snapshot(self) -> dict[str, object]:
        out = self.core.snapshot(self._now())
        out["broker"] = f"{self.config.address.host}:{self.config.address.port}"
        out["publish_backlog"] = len(self._backlog)
        return out

    # -- the connection -------------------------------------------------------------------

    def _now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    def _client_args(self) -> dict[str, Any]:
        cfg = self.config
        address = cfg.address
        user, password = cfg.credentials()
        tls: ssl.SSLContext | None = None
        if address.tls:
            tls = ssl.create_default_context(
                cafile=str(cfg.ca_file) if cfg.ca_file is not None else None
            )
            if cfg.cert_file is not None and cfg.key_file is not None:
                tls.load_cert_chain(str(cfg.cert_file), str(cfg.key_file))
        will = self.core.will()
        return {
            "hostname": address.host,
            "port": address.port,
            "username": user,
            "password": password,
            "identifier": self.core.client_id,
            "will": aiomqtt.Will(will.topic, will.payload, will.qos, will.retain),
            "keepalive": cfg.keepalive,
            "timeout": cfg.connect_timeout,
            "tls_context": tls,
            "protocol": aiomqtt.ProtocolVersion.V5
            if cfg.mqtt_version == 5
            else aiomqtt.ProtocolVersion.V311,
            "max_queued_incoming_messages": cfg.inbound_queue,
            "max_queued_outgoing_messages": MAX_BACKLOG,
            "logger": self._log,
        }

    async def _run(self) -> None:
        while self._running:
            delay = await self._session()
            if not self._running:
                return
            log.info(kv("uplink_reconnect", in_s=round(delay, 1)))
            await asyncio.sleep(delay)

    async def _session(self) -> float:
        """One connection's life; returns the delay before the next attempt."""
        reason = "closed"
        connected = False
        try:
            async with aiomqtt.Client(**self._client_args()) as client:
                client.pending_calls_threshold = MAX_INFLIGHT + 1  # ours are bounded
                for topic, qos, no_local in self.core.subscriptions():
                    if self.config.mqtt_version == 5:
                        opts = SubscribeOptions(qos=qos, noLocal=no_local)
                        await client.subscribe(topic, options=opts)
                    else:
                        await client.subscribe(topic, qos)
                self._client = client
                self._stalled = asyncio.Event()
                connected = True
                log.info(kv("uplink_connected", broker=self.config.broker))
                self._emit(self.core.on_connected(self._now()))
                self._pump()
                reader = asyncio.create_task(self._read(client), name="uplink-read")
                stalled = asyncio.create_task(self._stalled.wait(), name="uplink-stall")
                try:
                    done, _ = await asyncio.wait(
                        {reader, stalled}, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    for t in (reader, stalled):
                        t.cancel()
                    for t in (reader, stalled):
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await t
                if stalled in done:
                    reason = "broker stalled (our probe did not come back)"
                    log.warning(kv("uplink_lost", reason=reason))
                elif reader.exception() is not None:
                    raise reader.exception()  # type: ignore[misc]
        except aiomqtt.MqttError as exc:
            reason = f"mqtt: {exc}"
            log.warning(kv("uplink_lost", reason=reason))
        except OSError as exc:
            reason = f"os: {exc}"
            log.warning(kv("uplink_lost", reason=reason))
        except asyncio.CancelledError:
            self._lost("stopped")
            raise
        except Exception:  # a bug must not end the uplink for good; counted, retried
            log.exception("uplink session failed")
            self.core.stats["session_error"] += 1
            reason = "internal error"
        return self._lost(reason) if connected else self._failed(reason)

    def _lost(self, reason: str) -> float:
        self._client = None
        self._backlog.clear()
        delay = self.core.on_disconnected(self._now(), reason)
        self._pump()
        return delay

    def _failed(self, reason: str) -> float:
        delay = self.core.connect_failed(self._now(), reason)
        self._pump()
        return delay

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                self.core.stats["malformed"] += 1
                continue
            self.core.receive(self._now(), str(message.topic), bytes(payload))
            self._pump()

    # -- plumbing -------------------------------------------------------------------------

    def _kick(self) -> None:
        """Frames were queued: let the timer decide when they leave (linger, budget)."""
        self._arm()

    def _pump(self) -> None:
        now = self._now()
        core = self.core
        try:
            core.handle_timer(now)
            self._emit(core.poll(now))
        except Exception:  # a bug must not stop the node; counted
            log.exception("uplink core failed")
            core.stats["internal_error"] += 1
        if core.stalled and self._stalled is not None:
            self._stalled.set()
        handler = self._handler
        for ev in core.events():
            if handler is None:
                continue
            if isinstance(ev, FrameIn):
                handler.frame_received(ev.link_id, ev.frame)
            elif isinstance(ev, LinkUp):
                log.info(kv("uplink_link_up", link=ev.info.link_id, gateway=ev.info.peer_address))
                handler.link_up(ev.info)
            elif isinstance(ev, LinkDown):
                log.info(kv("uplink_link_down", link=ev.link_id, reason=ev.reason))
                handler.link_down(ev.link_id, ev.reason)
        self._arm()

    def _emit(self, publishes: list[Publish]) -> None:
        for p in publishes:
            if len(self._backlog) >= MAX_BACKLOG:
                self.core.stats["publish_backlog_full"] += 1
                continue
            self._backlog.append(p)
        self._flush_backlog()

    def _flush_backlog(self) -> None:
        client = self._client
        if client is None or self._loop is None:
            return
        while self._backlog and self._inflight < MAX_INFLIGHT:
            p = self._backlog.popleft()
            self._inflight += 1
            task = self._loop.create_task(self._publish(client, p))
            self._publish_tasks.add(task)
            task.add_done_callback(self._publish_tasks.discard)

    async def _publish(self, client: aiomqtt.Client, p: Publish) -> None:
        try:
            await client.publish(p.topic, p.payload, p.qos, p.retain, timeout=10.0)
            self.core.stats["published"] += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the connection broke: the session notices and reconnects
            self.core.stats["publish_error"] += 1
            log.debug("uplink publish failed: %s", exc)
        finally:
            self._inflight -= 1
            self._flush_backlog()

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
