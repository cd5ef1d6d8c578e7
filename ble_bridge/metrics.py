"""``[metrics]``: the node's counters in the Prometheus text format, on an optional address.

What is exported is what ``status`` reports, read at scrape time (one source of truth):
every link with its role and its own counters (a remote gateway of the uplink is a link
like a radio neighbour), the mesh router's counters, each session's height and round, and
the uplink's state, counters and remote gateways. :func:`families` turns a status document
into metric families (pure); :class:`MetricsServer` answers ``GET /metrics`` on a small
asyncio listener with prometheus_client's exposition. Bounded: a request head of at most
``MAX_REQUEST`` bytes read within ``REQUEST_TIMEOUT`` seconds, at most ``max_clients``
connections at once (more are closed at once and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

MAX_REQUEST = 8192
REQUEST_TIMEOUT = 5.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LINK_COUNTERS = ("frames_in", "bytes_in", "frames_out", "bytes_out", "send_failures")
GATEWAY_COUNTERS = ("messages_in", "frames_in", "bytes_in", "frames_out", "bytes_out", "seq_gaps")
MESH_GAUGES = frozenset(
    {"links", "peers_known", "seen_entries", "pending_relays", "outbound_frames"}
)
"""Entries of the mesh's ``stats`` that are levels, not counts (exported as gauges)."""


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """``[metrics]``."""

    listen: str = ""
    """``host:port`` to serve ``/metrics`` on (e.g. ``127.0.0.1:9464``); empty: off."""
    max_clients: int = 8

    def __post_init__(self) -> None:
        if self.listen:
            parse_listen(self.listen)
        if not 1 <= self.max_clients <= 256:
            raise ValueError(f"max_clients = {self.max_clients}: 1 to 256")


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too); raises ``ValueError`` naming the key."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen = {listen!r}: host:port, e.g. 127.0.0.1:9464")
    return host, int(port)


def _num(value: object) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return None


def families(status: Mapping[str, Any]) -> Iterator[Metric]:
    """Metric families of one ``status`` document (see the module doc)."""
    info = GaugeMetricFamily(
        "ble_bridge_node_info", "This node (value 1)", labels=["peer_id", "health"]
    )
    info.add_metric([str(status.get("peer_id", "")), str(status.get("health", ""))], 1.0)
    yield info

    links = [li for li in status.get("links", []) if isinstance(li, Mapping)]
    by_role: Counter[str] = Counter(str(li.get("role", "")) for li in links)
    up = GaugeMetricFamily("ble_bridge_links", "Live links by role", labels=["role"])
    for role in sorted(by_role):
        up.add_metric([role], float(by_role[role]))
    yield up
    labels = ["link", "role", "peer"]
    for name in LINK_COUNTERS:
        fam = CounterMetricFamily(
            f"ble_bridge_link_{name}", f"Per-link {name.replace('_', ' ')}", labels=labels
        )
        for li in links:
            v = _num(li.get(name))
            if v is not None:
                key = [str(li.get("link_id")), str(li.get("role")), str(li.get("peer"))]
                fam.add_metric(key, v)
        yield fam

    mesh = status.get("mesh")
    if isinstance(mesh, Mapping):
        counts = CounterMetricFamily(
            "ble_bridge_mesh_events", "Mesh router counters (drops by reason too)", labels=["event"]
        )
        levels = GaugeMetricFamily("ble_bridge_mesh_level", "Mesh router levels", labels=["name"])
        for k, v in sorted(mesh.items()):
            n = _num(v)
            if n is not None:
                (levels if k in MESH_GAUGES else counts).add_metric([str(k)], n)
        yield counts
        yield levels

    height = GaugeMetricFamily("ble_bridge_session_height", "Session height", labels=["session"])
    rnd = GaugeMetricFamily("ble_bridge_session_round", "Session round", labels=["session"])
    for s in status.get("sessions", []):
        if not isinstance(s, Mapping):
            continue
        name = str(s.get("name", s.get("id", "")))
        h, r = _num(s.get("height")), _num(s.get("round"))
        if h is not None:
            height.add_metric([name], h)
        if r is not None:
            rnd.add_metric([name], r)
    yield height
    yield rnd

    uplink = status.get("uplink")
    if isinstance(uplink, Mapping):
        yield from _uplink(uplink)


def _uplink(uplink: Mapping[str, Any]) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "ble_bridge_uplink_connected",
        "1 while the uplink is connected to its broker",
        value=1.0 if uplink.get("connected") else 0.0,
    )
    rtt = _num(uplink.get("rtt_ms"))
    if rtt is not None:
        yield GaugeMetricFamily(
            "ble_bridge_uplink_rtt_seconds",
            "Smoothed round trip of the gateway's probe through the broker",
            value=rtt / 1000,
        )
    queued = _num(uplink.get("queued_frames"))
    if queued is not None:
        yield GaugeMetricFamily(
            "ble_bridge_uplink_queued_frames", "Frames waiting to go up", value=queued
        )
    events = CounterMetricFamily(
        "ble_bridge_uplink_events",
        "Uplink counters: messages, frames, connects, drops by reason",
        labels=["event"],
    )
    stats = uplink.get("stats")
    if isinstance(stats, Mapping):
        for k, v in sorted(stats.items()):
            n = _num(v)
            if n is not None:
                events.add_metric([str(k)], n)
    yield events
    gateways = [g for g in uplink.get("gateways", []) if isinstance(g, Mapping)]
    for name in GATEWAY_COUNTERS:
        fam = CounterMetricFamily(
            f"ble_bridge_uplink_gateway_{name}",
            f"Per remote gateway {name.replace('_', ' ')}",
            labels=["gateway"],
        )
        for g in gateways:
            v = _num(g.get(name))
            if v is not None:
                fam.add_metric([str(g.get("peer_id"))], v)
        yield fam
    drops = CounterMetricFamily(
        "ble_bridge_uplink_gateway_drops",
        "Per remote gateway inbound drops by reason",
        labels=["gateway", "reason"],
    )
    for g in gateways:
        d = g.get("drops")
        if isinstance(d, Mapping):
            for reason, v in sorted(d.items()):
                n = _num(v)
                if n is not None:
                    drops.add_metric([str(g.get("peer_id")), str(reason)], n)
    yield drops


class StatusCollector(Collector):
    """A prometheus_client collector over a ``status()`` callable."""

    def __init__(self, status: Callable[[], Mapping[str, Any]]) -> None:
        self.status = status

    def collect(self) -> Iterable[Metric]:
        return list(families(self.status()))


def exposition(status: Callable[[], Mapping[str, Any]]) -> bytes:
    """The Prometheus text format of one ``status()`` document."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(status))
    return generate_latest(registry)


class MetricsServer:
    """``GET /metrics`` on ``config.listen``; anything else is a 404 or 405."""

    def __init__(self, config: MetricsConfig, status: Callable[[], Mapping[str, Any]]) -> None:
        self.config = config
        self.status = status
        self.host, self.port = parse_listen(config.listen)
        self.stats: Counter[str] = Counter()
        self._server: asyncio.Server | None = None
        self._clients = 0

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (the port the system chose for port 0)."""
        if self._server is None or not self._server.sockets:
            return self.host, self.port
        sockname = self._server.sockets[0].getsockname()
        return str(sockname[0]), int(sockname[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=MAX_REQUEST
        )
        log.info("metrics on http://%s:%d/metrics", *self.address)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= self.config.max_clients:
            self.stats["refused_busy"] += 1
            writer.close()
            return
        self._clients += 1
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            status, body = self._answer(head)
            writer.write(
                b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n" % (status.encode(), CONTENT_TYPE.encode(), len(body))
            )
            writer.write(body)
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            self.stats["bad_request"] += 1
        except (OSError, ValueError):
            self.stats["client_error"] += 1
        except Exception:  # a bug in a scrape must not end the listener
            log.exception("metrics request failed")
            self.stats["internal_error"] += 1
        finally:
            self._clients -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _answer(self, head: bytes) -> tuple[str, bytes]:
        line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        if len(line) != 3 or not line[2].startswith("HTTP/"):
            self.stats["bad_request"] += 1
            return "400 Bad Request", b"bad request\n"
        method, target = line[0], line[1].split("?", 1)[0]
        if method != "GET":
            self.stats["bad_method"] += 1
            return "405 Method Not Allowed", b"GET only\n"
        if target != "/metrics":
            self.stats["not_found"] += 1
            return "404 Not Found", b"see /metrics\n"
        self.stats["scrapes"] += 1
        return "200 OK", exposition(self.status)
