"""The loopback air: simulated BLE radios, links between them, and one Transport per node.

:class:`Air` plays the controllers and BlueZ of every node at once: it scans, advertises,
connects within each node's link budget, carries frames with the latency and goodput of
a :class:`~.profiles.LinkProfile`, drops links on supervision timeout, and reconnects.
:class:`SimTransport` is what a node sees: the same :class:`~ble_bridge.transport.Transport`
as the BlueZ link manager. The air runs on the asyncio loop's clock (virtual in sims).
"""

from __future__ import annotations

import asyncio
import logging
import math
import zlib
from collections import Counter, deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from ..mesh.links import NeighbourLink, StrandedWatch
from ..transport import LinkInfo, LinkRole, SendResult, Transport, TransportHandler, frame_limit
from .capture import AirEvent, PcapWriter
from .clock import Seeds
from .profiles import LinkProfile
from .topology import Topology

log = logging.getLogger(__name__)

TraceEvent = tuple[object, ...]
"""``(time, kind, *details)``; plain values only, so traces compare across runs."""


@dataclass(frozen=True, slots=True)
class AirLimits:
    """Bounds of the air's own bookkeeping."""

    max_trace: int = 200_000
    scan_retry: tuple[float, float] = (0.1, 0.3)


@dataclass(slots=True)
class _Direction:
    """One direction of a link: frames in flight, in arrival order."""

    queue: deque[tuple[float, bytes]] = field(default_factory=deque)
    next_free: float = 0.0
    timer: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class _Link:
    link_id: int
    central: int
    peripheral: int
    mtu: int
    interval: float
    anchor: float
    supervision: float
    created: float
    to_peripheral: _Direction = field(default_factory=_Direction)
    to_central: _Direction = field(default_factory=_Direction)
    broken: bool = False
    down: bool = False
    drop_timer: asyncio.TimerHandle | None = None

    def peer(self, node: int) -> int:
        return self.peripheral if node == self.central else self.central

    def outbound(self, node: int) -> _Direction:
        return self.to_peripheral if node == self.central else self.to_central

    def next_event(self, t: float) -> float:
        """The first connection event at or after ``t``."""
        k = math.ceil((t - self.anchor) / self.interval - 1e-9)
        return self.anchor + max(k, 0) * self.interval


@dataclass(slots=True)
class _Radio:
    """One node's controller + BlueZ state."""

    index: int
    address: str
    transport: SimTransport | None = None
    mtu: int = 517
    links: dict[int, _Link] = field(default_factory=dict)
    initiating: bool = False
    adv_resume_at: float = 0.0
    busy_until: float = 0.0
    scan_timer: asyncio.TimerHandle | None = None
    attempted: set[int] = field(default_factory=set)
    backoff: dict[int, float] = field(default_factory=dict)
    backoff_until: dict[int, float] = field(default_factory=dict)
    frames_sent: int = 0
    busy: float = 0.0  # seconds of airtime carried (sent and received), for the benchmarks
    watch: StrandedWatch[int] = field(default_factory=lambda: StrandedWatch(0))

    @property
    def up(self) -> bool:
        return self.transport is not None


def node_address(index: int) -> str:
    """A static random BLE address for simulated node ``index``."""
    return f"C0:5B:00:00:{(index >> 8) & 0xFF:02X}:{index & 0xFF:02X}"


class Air:
    """Every simulated radio and link; deterministic for a given seed and event order."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        topology: Topology,
        profile: LinkProfile,
        seeds: Seeds,
        *,
        capture: PcapWriter | None = None,
        trace: bool = True,
        limits: AirLimits | None = None,
    ) -> None:
        self.loop = loop
        self.topology = topology
        self.profile = profile
        self.limits = limits or AirLimits()
        self.capture = capture
        self.tracing = trace
        self.trace: list[TraceEvent] = []
        self.trace_dropped = 0
        self.stats: Counter[str] = Counter()
        self.type_frames: Counter[int] = Counter()
        """Frames accepted for sending, by packet type byte (-1: too short to have one)."""
        self._rng = seeds.rng("air", "links")
        self._fault_rng = seeds.rng("air", "faults")
        self._radios = [_Radio(i, node_address(i)) for i in range(len(topology))]
        self._links: dict[int, _Link] = {}
        self._next_link_id = 1
        self._groups: list[int] | None = None
        self.loss: float = 0.0
        self.loss_nodes: frozenset[int] | None = None
        self.extra_delay: float = 0.0
        self.on_link: list[Callable[[int, int, int, bool], None]] = []

    # -- queries -----------------------------------------------------------------------

    @property
    def now(self) -> float:
        return self.loop.time()

    def __len__(self) -> int:
        return len(self._radios)

    def address(self, node: int) -> str:
        return self._radios[node].address

    def is_up(self, node: int) -> bool:
        return self._radios[node].up

    def audible(self, i: int, j: int) -> bool:
        """In radio range and on the same side of any partition."""
        if self._groups is not None and self._groups[i] != self._groups[j]:
            return False
        return self.topology.in_range(i, j)

    def link_pairs(self) -> list[tuple[int, int]]:
        """Live links as (central, peripheral), by link id."""
        return [(lk.central, lk.peripheral) for lk in self._links.values() if not lk.down]

    def link_ids(self, node: int | None = None) -> list[int]:
        """Ids of links not yet broken, of one node or of the whole air, ascending."""
        links = self._links if node is None else self._radios[node].links
        return sorted(lid for lid, lk in links.items() if not lk.broken)

    def link_ends(self, link_id: int) -> tuple[int, int] | None:
        """(central, peripheral) of a link not yet down."""
        lk = self._links.get(link_id)
        return None if lk is None else (lk.central, lk.peripheral)

    def node_mtu(self, node: int) -> int:
        """The ATT MTU a node offers (drawn at power-on when the profile has choices)."""
        return self._radios[node].mtu

    def degree(self, node: int) -> int:
        return len(self._radios[node].links)

    def busy_seconds(self, node: int) -> float:
        """Airtime node ``node``'s radio has carried so far (its frames sent and received,
        at the rate left after scanning), in seconds: busy_seconds / elapsed is its load."""
        return self._radios[node].busy

    def frames_sent(self, node: int) -> int:
        return self._radios[node].frames_sent

    def record(self, kind: str, *details: object) -> None:
        if not self.tracing:
            return
        if len(self.trace) >= self.limits.max_trace:
            self.trace_dropped += 1
            return
        self.trace.append((round(self.now, 6), kind, *details))

    # -- node power --------------------------------------------------------------------

    def power_on(self, node: int, transport: SimTransport) -> None:
        radio = self._radios[node]
        if radio.up:
            raise RuntimeError(f"node {node} is already on the air")
        radio.transport = transport
        p = self.profile
        radio.mtu = self._rng.choice(p.mtu_choices) if p.mtu_choices else p.att_mtu
        radio.initiating = False
        radio.adv_resume_at = self.now
        radio.attempted.clear()
        radio.backoff.clear()
        radio.backoff_until.clear()
        radio.watch = StrandedWatch(p.max_links)
        self.record("power_on", node)
        self._schedule_scan(radio, self._rng.uniform(0.0, self.profile.scan_period))

    def power_off(self, node: int, *, crash: bool) -> None:
        """Leave the air: cleanly (peers told at once) or by crash (peers time out)."""
        radio = self._radios[node]
        if not radio.up:
            return
        self.record("crash" if crash else "power_off", node)
        radio.transport = None
        if radio.scan_timer is not None:
            radio.scan_timer.cancel()
            radio.scan_timer = None
        for link in sorted(radio.links.values(), key=lambda lk: lk.link_id):
            if crash:
                self.break_link(link.link_id, "supervision_timeout")
            else:
                self._link_down(link, "remote_close")

    # -- partitions and faults -----------------------------------------------------------

    def partition(self, groups: Sequence[Collection[int]]) -> None:
        """Split the air; nodes in different groups cannot hear each other until :meth:`heal`."""
        owner = [-1] * len(self._radios)
        for g, members in enumerate(groups):
            for i in members:
                owner[i] = g
        rest = len(groups)
        self._groups = [o if o >= 0 else rest for o in owner]
        self.record("partition", tuple(tuple(sorted(g)) for g in groups))
        self.check_range()

    def heal(self) -> None:
        self._groups = None
        self.record("heal")
        for radio in self._radios:
            if radio.up:
                self._schedule_scan(radio, self._rng.uniform(*self.limits.scan_retry))

    def check_range(self) -> None:
        """Break links whose ends can no longer hear each other (movement, partition)."""
        for link in list(self._links.values()):
            if not link.broken and not self.audible(link.central, link.peripheral):
                self.break_link(link.link_id, "supervision_timeout")

    def break_link(self, link_id: int, reason: str) -> bool:
        """The radio link fails now; both ends notice after the supervision timeout."""
        link = self._links.get(link_id)
        if link is None or link.broken:
            return False
        link.broken = True
        self.stats[f"link_break_{reason}"] += 1
        self.record("link_break", link_id, reason)
        for d in (link.to_peripheral, link.to_central):
            self._discard(link, d, "link_lost")
        if link.drop_timer is not None:
            link.drop_timer.cancel()
        link.drop_timer = self.loop.call_later(link.supervision, self._link_down, link, reason)
        return True

    def inject(self, node: int, frame: bytes, *, link_id: int | None = None) -> bool:
        """Hand ``node`` a frame as if a neighbour sent it (for junk floods); False if no link."""
        radio = self._radios[node]
        if radio.transport is None or not radio.links:
            return False
        lid = link_id if link_id is not None else min(radio.links)
        link = radio.links.get(lid)
        if link is None:
            return False
        peer = link.peer(node)
        if self.capture is not None:
            self.capture.write(
                self.now, AirEvent.INJECTED, peer, node, lid, peer == link.central, frame
            )
        self.stats["frames_injected"] += 1
        radio.transport.deliver(lid, frame)
        return True

    # -- sending -----------------------------------------------------------------------

    def send(self, node: int, link_id: int, frame: bytes) -> SendResult:
        radio = self._radios[node]
        link = radio.links.get(link_id)
        if link is None or link.down:
            self.stats["send_no_such_link"] += 1
            return SendResult.NO_SUCH_LINK
        if len(frame) > frame_limit(link.mtu):
            self.stats["send_too_large"] += 1
            return SendResult.TOO_LARGE
        d = link.outbound(node)
        if len(d.queue) >= self.profile.queue_limit:
            self.stats["drop_queue_full"] += 1
            return SendResult.QUEUE_FULL
        peer = self._radios[link.peer(node)]
        now = self.now
        radio.frames_sent += 1
        self.stats["frames_sent"] += 1
        self.stats["bytes_sent"] += len(frame)
        self.type_frames[frame[1] if len(frame) > 1 else -1] += 1
        if link.broken:
            self._lost(link, node, frame, AirEvent.LOST_LINK, "drop_link_lost")
            return SendResult.QUEUED
        p = self.profile
        # Fluid airtime model: the link direction and both radios each work off their own
        # backlog; the frame is through when all three have carried it.
        n = len(frame)
        d.next_free = max(now, d.next_free) + p.frame_seconds(n, p.link_rate)
        for r in (radio, peer):
            rate = p.radio_rate * (1.0 - self._scan_share(r))
            seconds = p.frame_seconds(n, rate)
            r.busy_until = max(now, r.busy_until) + seconds
            r.busy += seconds
        done = max(d.next_free, radio.busy_until, peer.busy_until)
        if (
            self.loss > 0
            and (self.loss_nodes is None or node in self.loss_nodes)
            and self._fault_rng.random() < self.loss
        ):
            self._lost(link, node, frame, AirEvent.LOST_FAULT, "drop_fault_loss")
            return SendResult.QUEUED
        arrival = link.next_event(done) + self.extra_delay
        if d.queue:
            arrival = max(arrival, d.queue[-1][0])
        d.queue.append((arrival, frame))
        if d.timer is None:
            d.timer = self.loop.call_at(arrival, self._deliver, link, node)
        return SendResult.QUEUED

    def queue_depth(self, node: int, link_id: int) -> int:
        link = self._radios[node].links.get(link_id)
        return 0 if link is None else len(link.outbound(node).queue)

    def _scan_share(self, radio: _Radio) -> float:
        return self.profile.scan_airtime if len(radio.links) < self.profile.max_links else 0.0

    def _deliver(self, link: _Link, sender: int) -> None:
        d = link.outbound(sender)
        d.timer = None
        if link.broken:
            self._discard(link, d, "link_lost")
            return
        now = self.now
        receiver = link.peer(sender)
        target = self._radios[receiver].transport
        while d.queue and d.queue[0][0] <= now + 1e-12:
            _, frame = d.queue.popleft()
            self.stats["frames_delivered"] += 1
            if self.tracing:
                self.record("frame", sender, receiver, link.link_id, len(frame), zlib.crc32(frame))
            if self.capture is not None:
                self.capture.write(
                    now,
                    AirEvent.DELIVERED,
                    sender,
                    receiver,
                    link.link_id,
                    sender == link.central,
                    frame,
                )
            if target is not None:
                target.deliver(link.link_id, frame)
            if link.broken or link.down:
                self._discard(link, d, "link_lost")
                return
        if d.queue:
            d.timer = self.loop.call_at(d.queue[0][0], self._deliver, link, sender)

    def _discard(self, link: _Link, d: _Direction, reason: str) -> None:
        sender = link.central if d is link.to_peripheral else link.peripheral
        while d.queue:
            _, frame = d.queue.popleft()
            self._lost(link, sender, frame, AirEvent.LOST_LINK, f"drop_{reason}")
        if d.timer is not None:
            d.timer.cancel()
            d.timer = None

    def _lost(self, link: _Link, sender: int, frame: bytes, event: AirEvent, stat: str) -> None:
        self.stats[stat] += 1
        if self.capture is not None:
            self.capture.write(
                self.now,
                event,
                sender,
                link.peer(sender),
                link.link_id,
                sender == link.central,
                frame,
            )

    # -- advertising, scanning, connecting -------------------------------------------------

    def _advertising(self, radio: _Radio) -> bool:
        return (
            radio.up
            and not radio.initiating
            and len(radio.links) < self.profile.max_links
            and self.now >= radio.adv_resume_at
        )

    def _linked(self, a: _Radio, b: int) -> bool:
        return any(lk.peer(a.index) == b for lk in a.links.values())

    def _schedule_scan(self, radio: _Radio, delay: float) -> None:
        if radio.scan_timer is not None:
            radio.scan_timer.cancel()
        radio.scan_timer = self.loop.call_later(delay, self._scan, radio)

    def _eligible(self, radio: _Radio, j: int) -> bool:
        other = self._radios[j]
        return (
            self._advertising(other)
            and self.audible(radio.index, j)
            and not self._linked(radio, j)
            and radio.backoff_until.get(j, 0.0) <= self.now
        )

    def _scan(self, radio: _Radio) -> None:
        radio.scan_timer = None
        if not radio.up:
            return
        p = self.profile
        if not radio.initiating and len(radio.links) >= p.max_links:
            self._listen_when_full(radio)
        if radio.initiating or len(radio.links) >= p.max_links:
            self._schedule_scan(radio, p.scan_period)
            return
        candidates = [j for j in self.topology.neighbours(radio.index) if self._eligible(radio, j)]
        if not candidates:
            self._schedule_scan(radio, p.scan_period * self._rng.uniform(0.75, 1.25))
            return
        self._initiate(radio, self._rng.choice(candidates))

    def _initiate(self, radio: _Radio, target: int) -> None:
        p = self.profile
        radio.initiating = True  # the controller cannot advertise while initiating
        delay = self._rng.uniform(*p.discovery_delay) + self._rng.uniform(*p.connect_setup)
        self.record("connect_start", radio.index, target)
        self.loop.call_later(delay, self._connect_done, radio, target)

    def reachable(self, node: int) -> set[int]:
        """Nodes with a path of working links from ``node`` (what the mesh's announces tell)."""
        seen = {node}
        todo = [node]
        while todo:
            for lk in self._radios[todo.pop()].links.values():
                for end in (lk.central, lk.peripheral):
                    if not lk.broken and end not in seen:
                        seen.add(end)
                        todo.append(end)
        return seen

    def _listen_when_full(self, radio: _Radio) -> None:
        """A full node hears who advertises; it gives up a link for a stranded node."""
        now = self.now
        i = radio.index
        reached: set[int] | None = None
        for j in self.topology.neighbours(i):
            other = self._radios[j]
            if self._advertising(other) and self.audible(i, j) and not self._linked(radio, j):
                reached = self.reachable(i) if reached is None else reached
                radio.watch.heard(j, now, reachable=j in reached)
        links = [
            NeighbourLink(lk.peer(i), len(self._radios[lk.peer(i)].links), now - lk.created)
            for lk in sorted(radio.links.values(), key=lambda lk: lk.link_id)
            if not lk.broken
        ]
        rotation = radio.watch.decide(now, links)
        if rotation is None:
            return
        drop = next(lk for lk in radio.links.values() if lk.peer(i) == rotation.drop)
        self.stats["link_rotations"] += 1
        self.record("rotate", i, rotation.drop, rotation.join)
        self._link_down(drop, "rotated")
        self._initiate(radio, rotation.join)

    def _connect_done(self, radio: _Radio, target: int) -> None:
        radio.initiating = False
        if not radio.up:
            return
        p = self.profile
        other = self._radios[target]
        first = target not in radio.attempted
        radio.attempted.add(target)
        failure = p.first_connect_failure if first else p.reconnect_failure
        reason = ""
        if not other.up or not self.audible(radio.index, target):
            reason = "unreachable"
        elif self._linked(radio, target):
            reason = "already_linked"
        elif len(radio.links) >= p.max_links or len(other.links) >= p.max_links:
            reason = "no_slot"
        elif not self._advertising(other):
            reason = "not_advertising"
        elif self._rng.random() < failure:
            reason = "failed"
        if reason:
            self.stats[f"connect_{reason}"] += 1
            self.record("connect_fail", radio.index, target, reason)
            if reason in ("failed", "unreachable"):
                lo, hi = p.connect_backoff
                back = min(hi, radio.backoff.get(target, lo / 2) * 2)
                radio.backoff[target] = back
                radio.backoff_until[target] = self.now + back * self._rng.uniform(0.5, 1.0)
            self._schedule_scan(radio, self._rng.uniform(*self.limits.scan_retry))
            return
        radio.backoff.pop(target, None)
        radio.backoff_until.pop(target, None)
        self._link_up(radio, other)
        self._schedule_scan(radio, self._rng.uniform(*self.limits.scan_retry))

    def _link_up(self, central: _Radio, peripheral: _Radio) -> None:
        p = self.profile
        lo, hi = p.conn_interval
        interval = round(self._rng.uniform(lo, hi) / 0.00125) * 0.00125 or lo
        link = _Link(
            link_id=self._next_link_id,
            central=central.index,
            peripheral=peripheral.index,
            mtu=min(central.mtu, peripheral.mtu),
            interval=interval,
            anchor=self.now + self._rng.uniform(0.0, interval),
            supervision=self._rng.uniform(*p.supervision_timeout),
            created=self.now,
        )
        self._next_link_id += 1
        self._links[link.link_id] = link
        central.links[link.link_id] = link
        peripheral.links[link.link_id] = link
        # BlueZ stops the connectable advertisement once a central has connected.
        if p.readvertise_delay is None:
            peripheral.adv_resume_at = math.inf
        else:
            peripheral.adv_resume_at = self.now + p.readvertise_delay
        if p.mean_link_lifetime is not None:
            life = self._rng.expovariate(1.0 / p.mean_link_lifetime)
            link.drop_timer = self.loop.call_later(
                life, self.break_link, link.link_id, "supervision_timeout"
            )
        central.watch.linked(peripheral.index)
        peripheral.watch.linked(central.index)
        self.stats["links_up"] += 1
        self.record("link_up", link.link_id, central.index, peripheral.index, link.mtu)
        for cb in self.on_link:
            cb(link.link_id, central.index, peripheral.index, True)
        for radio, role in ((central, LinkRole.CENTRAL), (peripheral, LinkRole.PERIPHERAL)):
            peer = link.peer(radio.index)
            info = LinkInfo(link.link_id, self._radios[peer].address, link.mtu, role)
            if radio.transport is not None:
                radio.transport.notify_up(info)

    def _link_down(self, link: _Link, reason: str) -> None:
        if link.down:
            return
        link.down = True
        link.broken = True
        if link.drop_timer is not None:
            link.drop_timer.cancel()
            link.drop_timer = None
        for d in (link.to_peripheral, link.to_central):
            self._discard(link, d, "link_lost")
        self._links.pop(link.link_id, None)
        self.stats["links_down"] += 1
        self.record("link_down", link.link_id, reason)
        for cb in self.on_link:
            cb(link.link_id, link.central, link.peripheral, False)
        for idx in (link.central, link.peripheral):
            radio = self._radios[idx]
            radio.links.pop(link.link_id, None)
            inbound = any(lk.peripheral == idx for lk in radio.links.values())
            if math.isinf(radio.adv_resume_at) and not inbound:
                radio.adv_resume_at = self.now  # BlueZ resumes advertising on disconnect
            if radio.transport is not None:
                radio.transport.notify_down(link.link_id, reason)
                self._schedule_scan(radio, self._rng.uniform(*self.limits.scan_retry))

    def close_link(self, node: int, link_id: int) -> None:
        """A clean disconnect initiated by ``node`` (the peer is told at once)."""
        link = self._radios[node].links.get(link_id)
        if link is not None:
            self._link_down(link, "local_close")


class SimTransport(Transport):
    """One node's view of the air: the :class:`Transport` the node code runs on."""

    def __init__(self, air: Air, node: int) -> None:
        self.air = air
        self.node = node
        self._handler: TransportHandler | None = None
        self._links: dict[int, LinkInfo] = {}
        self._running = False
        self.handler_errors = 0

    @property
    def address(self) -> str:
        return self.air.address(self.node)

    def attach(self, handler: TransportHandler) -> None:
        self._handler = handler

    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        self.air.power_on(self.node, self)

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        self._links.clear()
        self.air.power_off(self.node, crash=False)

    def crash(self) -> None:
        """Lose power: no more events, peers notice only by supervision timeout."""
        if not self._running:
            return
        self._running = False
        self._links.clear()
        self.air.power_off(self.node, crash=True)

    def send(self, link_id: int, frame: bytes) -> SendResult:
        if not self._running or link_id not in self._links:
            return SendResult.NO_SUCH_LINK
        return self.air.send(self.node, link_id, frame)

    def links(self) -> Sequence[LinkInfo]:
        return list(self._links.values())

    def queue_depth(self, link_id: int) -> int:
        if link_id not in self._links:
            return 0
        return self.air.queue_depth(self.node, link_id)

    # -- called by the air ----------------------------------------------------------------

    def notify_up(self, info: LinkInfo) -> None:
        self._links[info.link_id] = info
        if self._handler is not None:
            self._call(self._handler.link_up, info)

    def notify_down(self, link_id: int, reason: str) -> None:
        if self._links.pop(link_id, None) is not None and self._handler is not None:
            self._call(self._handler.link_down, link_id, reason)

    def deliver(self, link_id: int, frame: bytes) -> None:
        if link_id in self._links and self._handler is not None:
            self._call(self._handler.frame_received, link_id, frame)

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        except Exception:  # a node bug must not take down the air
            self.handler_errors += 1
            self.air.stats["handler_error"] += 1
            log.exception("node %d handler raised", self.node)
