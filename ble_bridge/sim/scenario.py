"""Scenarios: a network, a workload and faults on virtual time, summarised as metrics.

``simulate(ScenarioConfig(...))`` builds N nodes with a node factory (default: mesh-only
:class:`~ble_bridge.mesh.service.MeshNode`), runs a :class:`Workload` (default: every node
floods broadcasts at a rate) and returns a :class:`ScenarioResult`: delivery ratio,
duplicates, transmissions per delivery, latency percentiles, drops by reason, and the
event trace used by determinism tests. A consensus node plugs in through ``factory`` and
its own workload.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..air.air import TraceEvent
from ..air.capture import PcapWriter
from ..air.clock import Seeds, run_virtual
from ..air.faults import FaultPlan
from ..air.network import Network, NodeFactory, NodeSpec, SimNode
from ..air.profiles import DEFAULT_PROFILE, get_profile
from ..air.topology import build
from ..mesh.config import MeshConfig
from ..mesh.router import DROP_REASONS, Delivered
from ..mesh.service import MeshNode
from ..wire.packet import PacketType

BROADCAST_FRAME_TYPES = (PacketType.MESSAGE, PacketType.FRAGMENT)


def mesh_of(node: object) -> MeshNode | None:
    """The MeshNode of a simulated node: the node itself, or its ``mesh`` attribute
    (how a consensus node wrapping a MeshNode exposes it to workloads and metrics)."""
    if isinstance(node, MeshNode):
        return node
    inner = getattr(node, "mesh", None)
    return inner if isinstance(inner, MeshNode) else None


def mesh_node_factory(config: MeshConfig | None = None, *, share_keys: bool = True) -> NodeFactory:
    """Factory of mesh-only nodes; ``share_keys`` pins every identity's signing key up front."""

    def make(spec: NodeSpec) -> SimNode:
        node = MeshNode(
            spec.identity, spec.transport, config, rng=spec.rng, wall_offset=spec.wall_offset
        )
        if share_keys:
            for other in spec.network.identities:
                if other.peer_id != spec.identity.peer_id:
                    node.add_peer_key(other.peer_id, other.signing_public)
        return node

    return make


@dataclass(frozen=True, slots=True)
class ScenarioConfig:
    """One simulated run; every field has a CLI option of ``ble-bridge simulate``."""

    nodes: int = 8
    topology: str = "full"
    radio_range: float | None = None
    profile: str = DEFAULT_PROFILE
    duration: float = 60.0
    warmup: float = 10.0
    """Seconds for links to form before the workload starts."""
    drain: float = 5.0
    """Seconds at the end with no new broadcasts, so late deliveries count."""
    seed: int = 0
    faults: FaultPlan = field(default_factory=FaultPlan)
    rate: float = 0.2
    """Broadcasts per node per second."""
    payload_size: int = 64
    mesh: MeshConfig = field(default_factory=MeshConfig)
    capture: Path | None = None
    trace: bool = True
    progress_interval: float = 1.0


@dataclass(slots=True)
class Progress:
    """A snapshot for live display."""

    sim_time: float
    duration: float
    nodes_up: int
    links: int
    sent: int
    delivered: int
    frames: int


@dataclass(slots=True)
class ScenarioResult:
    config: ScenarioConfig
    sent: int
    expected: int
    delivered: int
    duplicates_delivered: int
    duplicates_suppressed: int
    broadcast_frames: int
    frames_total: int
    latencies: list[float]
    drops: Counter[str]
    air_stats: Counter[str]
    router_stats: Counter[str]
    trace: list[TraceEvent]
    sim_time: float
    wall_time: float
    links_up: int
    handler_errors: int
    task_errors: int
    final_degrees: list[int] = field(default_factory=list)
    """Links per node at the end of the run (before the nodes stop)."""

    @property
    def naive_flood_tx(self) -> float:
        """Frames per delivery if every node re-sent each new broadcast on all links but one."""
        n = len(self.final_degrees)
        return (sum(self.final_degrees) - (n - 1)) / (n - 1) if n > 1 else float("nan")

    @property
    def delivery_ratio(self) -> float:
        return self.delivered / self.expected if self.expected else 0.0

    @property
    def tx_per_delivery(self) -> float:
        return self.broadcast_frames / self.delivered if self.delivered else float("inf")

    @property
    def sim_speed(self) -> float:
        return self.sim_time / self.wall_time if self.wall_time > 0 else float("inf")

    def latency(self, q: float) -> float:
        """Delivery latency quantile ``q`` in seconds (nearest rank); NaN without deliveries."""
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]

    def summary_rows(self) -> list[tuple[str, str]]:
        rows = [
            (
                "delivered / expected",
                f"{self.delivered} / {self.expected} ({self.delivery_ratio:.1%})",
            ),
            ("broadcasts sent", str(self.sent)),
            ("duplicates delivered", str(self.duplicates_delivered)),
            ("duplicates suppressed", str(self.duplicates_suppressed)),
            (
                "relays pruned / suppressed",
                f"{self.router_stats['relay_pruned']} / {self.router_stats['relay_suppressed']}",
            ),
            ("tx per delivered broadcast", f"{self.tx_per_delivery:.3f}"),
            (
                "latency p50 / p95",
                f"{self.latency(0.5) * 1000:.1f} / {self.latency(0.95) * 1000:.1f} ms",
            ),
            ("links formed", str(self.links_up)),
            ("frames on the air", str(self.frames_total)),
            (
                "sim speed",
                f"{self.sim_speed:.1f}x ({self.sim_time:.0f} s in {self.wall_time:.2f} s)",
            ),
        ]
        rows += [(f"drop: {k}", str(v)) for k, v in sorted(self.drops.items()) if v]
        return rows


class Workload(Protocol):
    """Traffic a scenario drives; sees every node life through the network's hooks."""

    delivered: int
    duplicates: int
    latencies: list[float]

    def attach(self, network: Network) -> None: ...

    async def run(self, network: Network, start: float, stop: float) -> None: ...

    @property
    def sent(self) -> int: ...

    @property
    def expected(self) -> int: ...


@dataclass(slots=True)
class _Broadcast:
    origin: int
    sent_at: float
    expected: int
    reached: set[int] = field(default_factory=set)


class BroadcastWorkload:
    """Every running node floods MESSAGE broadcasts of random text at ``rate`` per second."""

    def __init__(self, rate: float, payload_size: int, *, max_tracked: int = 100_000) -> None:
        self.rate = rate
        self.payload_size = payload_size
        self.max_tracked = max_tracked
        self.broadcasts: dict[bytes, _Broadcast] = {}
        self.untracked = 0
        self.delivered = 0
        self.duplicates = 0
        self.foreign = 0
        self.latencies: list[float] = []
        self.network: Network | None = None

    def attach(self, network: Network) -> None:
        self.network = network
        network.on_node_start.append(self._subscribe)

    def _subscribe(self, index: int, node: SimNode) -> None:
        mesh = mesh_of(node)
        if mesh is not None:
            mesh.subscribe(PacketType.MESSAGE, lambda ev: self._delivered(index, ev))

    def _delivered(self, index: int, event: Delivered) -> None:
        b = self.broadcasts.get(event.packet.packet_id)
        if b is None:
            self.foreign += 1
            return
        if index in b.reached:
            self.duplicates += 1
            if self.network is not None:
                self.network.air.record("duplicate_delivery", index, event.packet.packet_id.hex())
            return
        b.reached.add(index)
        self.delivered += 1
        self.latencies.append(event.received_at - b.sent_at)
        if self.network is not None:
            self.network.air.record("deliver", index, event.packet.packet_id.hex()[:12])

    def send_from(self, index: int, payload: bytes) -> bytes | None:
        """Originate one broadcast at node ``index`` now; returns its packet id."""
        net = self.network
        node = mesh_of(net.nodes[index]) if net is not None else None
        if net is None or node is None:
            return None
        packet = node.send(PacketType.MESSAGE, payload)
        pid = packet.packet_id
        if len(self.broadcasts) >= self.max_tracked:
            self.untracked += 1
            return pid
        others = sum(1 for i in net.up() if i != index)
        self.broadcasts[pid] = _Broadcast(index, net.now, others)
        net.air.record("send", index, pid.hex()[:12])
        return pid

    async def run(self, network: Network, start: float, stop: float) -> None:
        rng = network.seeds.rng("workload")
        loop = network.loop
        total_rate = self.rate * len(network)
        if total_rate <= 0:
            return
        t = max(loop.time(), start)
        while True:
            t += rng.expovariate(total_rate)
            if t >= stop:
                return
            await asyncio.sleep(t - loop.time())
            index = rng.randrange(len(network))
            text = "".join(
                rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(self.payload_size)
            )
            self.send_from(index, text.encode())

    @property
    def sent(self) -> int:
        return len(self.broadcasts)

    @property
    def expected(self) -> int:
        return sum(b.expected for b in self.broadcasts.values())


ProgressCallback = Callable[[Progress], None]


async def run_scenario(
    config: ScenarioConfig,
    *,
    factory: NodeFactory | None = None,
    workload: Workload | None = None,
    progress: ProgressCallback | None = None,
) -> ScenarioResult:
    """Run one scenario on the running loop (use :func:`simulate` for a virtual loop)."""
    wall0 = time.perf_counter()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    profile = get_profile(config.profile)
    network_seed = config.seed
    topo = build(
        config.topology, config.nodes, Seeds(network_seed).rng("topology"), config.radio_range
    )
    capture = PcapWriter(config.capture) if config.capture is not None else None
    network = Network(
        topo,
        profile,
        factory or mesh_node_factory(config.mesh),
        seed=network_seed,
        faults=config.faults,
        capture=capture,
        trace=config.trace,
    )
    wl: Workload = workload or BroadcastWorkload(config.rate, config.payload_size)
    wl.attach(network)
    retired: Counter[str] = Counter()

    def retire(index: int, node: SimNode) -> None:
        mesh = mesh_of(node)
        if mesh is not None:
            retired.update(mesh.router.stats)

    network.on_node_stop.append(retire)
    ticker: asyncio.TimerHandle | None = None

    def tick() -> None:
        nonlocal ticker
        if progress is not None:
            progress(_progress(network, wl, config, loop.time() - t0))
        ticker = loop.call_later(config.progress_interval, tick)

    try:
        await network.start()
        if progress is not None:
            tick()
        frames_before = Counter(network.air.type_frames)
        stop_at = t0 + max(config.warmup, config.duration - config.drain)
        await wl.run(network, t0 + config.warmup, stop_at)
        await asyncio.sleep(max(0.0, t0 + config.duration - loop.time()))
        frames_after = network.air.type_frames
        bframes = sum(frames_after[t] - frames_before[t] for t in BROADCAST_FRAME_TYPES)
        router_stats: Counter[str] = Counter()
        for node in network.nodes:
            mesh = mesh_of(node)
            if mesh is not None:
                router_stats.update(mesh.router.stats)
        router_stats.update(retired)
        degrees = [network.air.degree(i) for i in range(len(network))]
        if progress is not None:
            progress(_progress(network, wl, config, loop.time() - t0))
    finally:
        if ticker is not None:
            ticker.cancel()
        await network.stop()
        if capture is not None:
            capture.close()
    air = network.air
    drops: Counter[str] = Counter({k: v for k, v in router_stats.items() if k in DROP_REASONS})
    drops.update({f"air_{k[5:]}": v for k, v in air.stats.items() if k.startswith("drop_")})
    handler_errors = air.stats["handler_error"]
    return ScenarioResult(
        config=config,
        sent=wl.sent,
        expected=wl.expected,
        delivered=wl.delivered,
        duplicates_delivered=wl.duplicates,
        duplicates_suppressed=router_stats["duplicate"],
        broadcast_frames=bframes,
        frames_total=air.stats["frames_sent"],
        latencies=wl.latencies,
        drops=drops,
        air_stats=Counter(air.stats),
        router_stats=router_stats,
        trace=air.trace,
        sim_time=loop.time() - t0,
        wall_time=time.perf_counter() - wall0,
        links_up=air.stats["links_up"],
        handler_errors=handler_errors,
        task_errors=network.task_errors,
        final_degrees=degrees,
    )


def _progress(network: Network, wl: Workload, config: ScenarioConfig, t: float) -> Progress:
    air = network.air
    return Progress(
        sim_time=t,
        duration=config.duration,
        nodes_up=len(network.up()),
        links=len(air.link_ids()),
        sent=wl.sent,
        delivered=wl.delivered,
        frames=air.stats["frames_sent"],
    )


def simulate(
    config: ScenarioConfig,
    *,
    factory: NodeFactory | None = None,
    workload: Workload | None = None,
    progress: ProgressCallback | None = None,
) -> ScenarioResult:
    """Run a scenario on a fresh virtual-time loop seeded by ``config.seed``."""
    return run_virtual(
        run_scenario(config, factory=factory, workload=workload, progress=progress),
        seed=config.seed,
    )
