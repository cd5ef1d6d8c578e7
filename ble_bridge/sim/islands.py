"""Several BLE islands, each its own loopback air, one table across them through gateways.

Island ``k`` is a :class:`~.network.Network` (its own air, seed and identities); the first
``gateways`` nodes of each island also have an uplink transport, made by the factory the
caller gives: the real MQTT one (tests and ``bench/uplink.py`` with a real mosquitto, on the
wall clock) or the simulator's broker (:mod:`.broker`, virtual time). Every node is a real
:class:`~ble_bridge.node.Node` with one craps session whose validators are all nodes of all
islands; every node plays it with a :class:`~ble_bridge.node.Seat`. Runs on whatever loop
is running.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..air.network import Network, NodeSpec, SimNode
from ..air.profiles import get_profile
from ..air.topology import full
from ..bridge import BridgeConfig, BridgeError
from ..consensus.craps import TablePlayer, check_invariants
from ..consensus.engine import Committed
from ..consensus.testing import LedgerApp, add_op
from ..mesh.config import MeshConfig
from ..node import Node, NodeConfig, NodeSection, Seat, SessionSection, make_app
from ..transport import Transport
from ..wire.identity import Identity

log = logging.getLogger(__name__)

ISLANDS_SESSION = "islands-table"

UplinkFactory = Callable[[int, int, Identity], Transport]
"""(island, node index, identity) -> the gateway's uplink transport."""


@dataclass(frozen=True, slots=True)
class IslandsConfig:
    sizes: tuple[int, ...] = (4, 4)
    gateways: int = 1
    """Gateways per island: its first nodes."""
    profile: str = "pi-tuned"
    seed: int = 1
    play_interval: float = 0.25
    warmup: float = 0.0
    """Seconds before the players sit down."""
    ledger_rate: float = 0.0
    """Above 0: instead of the craps table, the test ledger (``consensus.testing``) with
    every node submitting an add op at this rate (Poisson), as ``bench/consensus.py``."""
    mesh: MeshConfig = field(default_factory=MeshConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)

    @property
    def nodes(self) -> int:
        return sum(self.sizes)


def islands_session_id(seed: int) -> bytes:
    return hashlib.sha256(b"ble-bridge/sim/islands/%d" % seed).digest()[:16]


@dataclass(slots=True)
class Record:
    chain: dict[int, bytes] = field(default_factory=dict)
    ops_at: dict[int, int] = field(default_factory=dict)
    commit_times: dict[int, float] = field(default_factory=dict)
    invariant_errors: list[str] = field(default_factory=list)
    final_height: int = 0
    mesh_stats: dict[str, int] = field(default_factory=dict)
    """The node's mesh counters when it stopped."""


class Islands:
    """The networks, the nodes, the players and what every node committed."""

    def __init__(self, config: IslandsConfig, uplink: UplinkFactory) -> None:
        self.config = config
        self.uplink_factory = uplink
        self.session_id = islands_session_id(config.seed)
        self.networks: list[Network] = []
        self.validators: list[Identity] = []
        self.records: dict[tuple[int, int], Record] = {}
        self.seats: dict[tuple[int, int], Seat] = {}
        self.uplinks: dict[tuple[int, int], Transport] = {}
        self.submitted: dict[bytes, tuple[tuple[int, int], float]] = {}
        self.latencies: list[float] = []
        self._stop = asyncio.Event()
        self._player: asyncio.Task[None] | None = None

    # -- building -------------------------------------------------------------------------

    def _factory(self, island: int) -> Callable[[NodeSpec], SimNode]:
        def make(spec: NodeSpec) -> SimNode:
            cfg = self.config
            node_config = NodeConfig(
                node=NodeSection(board="generic", control_socket=Path()),
                mesh=cfg.mesh,
                bridge=cfg.bridge,
                sessions=(
                    SessionSection(
                        name=ISLANDS_SESSION,
                        validators=tuple(v.signing_public.hex() for v in self.validators),
                        id=self.session_id.hex(),
                    ),
                ),
            )
            uplink = None
            if spec.index < cfg.gateways:
                uplink = self.uplink_factory(island, spec.index, spec.identity)
                self.uplinks[(island, spec.index)] = uplink
            ledger = cfg.ledger_rate > 0
            node = Node(
                node_config,
                app_factory=(lambda _name: LedgerApp()) if ledger else make_app,
                identity=spec.identity,
                transport=spec.transport,
                rng=spec.rng,
                wall_offset=spec.wall_offset,
                store_path=None,
                peer_keys={v.peer_id: v.signing_public for v in self.validators},
                uplink_transport=uplink,
            )
            key = (island, spec.index)
            rec = self.records.setdefault(key, Record())
            node.bridge.commit_hooks.append(self._hook(key, rec))
            if key not in self.seats and not ledger:
                rng = random.Random(f"islands-player-{cfg.seed}-{island}-{spec.index}")
                self.seats[key] = Seat(
                    TablePlayer(spec.identity.signing_public, rng), self.session_id
                )
            return node

        return make

    def _hook(self, key: tuple[int, int], rec: Record) -> Callable[[bytes, Committed], None]:
        def hook(session_id: bytes, ev: Committed) -> None:
            now = asyncio.get_running_loop().time()
            rec.chain[ev.height] = ev.block.hash
            rec.ops_at[ev.height] = len(ev.ops)
            rec.commit_times[ev.height] = now
            for op in ev.ops:
                sub = self.submitted.get(op.op_id)
                if sub is not None and sub[0] == key:
                    del self.submitted[op.op_id]
                    self.latencies.append(now - sub[1])

        return hook

    async def start(self) -> None:
        cfg = self.config
        profile = get_profile(cfg.profile)
        for k, n in enumerate(cfg.sizes):
            net = Network(full(n), profile, self._factory(k), seed=cfg.seed * 1000 + k, trace=False)
            self.networks.append(net)
            self.validators.extend(net.identities)
        for net in self.networks:
            await net.start()
        self._player = asyncio.get_running_loop().create_task(self._play())

    async def stop(self) -> None:
        self._stop.set()
        if self._player is not None:
            await self._player
        for k, net in enumerate(self.networks):
            for i, node in enumerate(net.nodes):
                if isinstance(node, Node):
                    self._final(k, i, node)
            await net.stop()

    def _final(self, island: int, index: int, node: Node) -> None:
        rec = self.records.setdefault((island, index), Record())
        engine = node.bridge.engine(self.session_id)
        rec.final_height = engine.height
        rec.mesh_stats = node.mesh.stats()
        if self.config.ledger_rate > 0:
            return  # the test ledger has no craps invariants
        try:
            check_invariants(engine.state)
        except Exception as exc:  # any failure is a safety violation
            rec.invariant_errors.append(f"{type(exc).__name__}: {exc}")

    async def _play(self) -> None:
        loop = asyncio.get_running_loop()
        if self.config.warmup > 0:
            await asyncio.sleep(self.config.warmup)
        if self.config.ledger_rate > 0:
            await self._load()
            return
        while not self._stop.is_set():
            now = loop.time()
            for key, node in self.nodes().items():
                seat = self.seats.get(key)
                if seat is None:
                    continue
                turn = seat.play(node.bridge, now)
                for op_id in turn.submitted:
                    if len(self.submitted) < 100_000:
                        self.submitted[op_id] = (key, now)
            await asyncio.sleep(self.config.play_interval)

    async def _load(self) -> None:
        """Add ops at ``ledger_rate`` per node, Poisson, at random nodes."""
        loop = asyncio.get_running_loop()
        rng = random.Random(f"islands-load-{self.config.seed}")
        total = self.config.ledger_rate * self.config.nodes
        while not self._stop.is_set():
            await asyncio.sleep(rng.expovariate(total))
            nodes = self.nodes()
            if not nodes:
                continue
            key = sorted(nodes)[rng.randrange(len(nodes))]
            try:
                op_id = nodes[key].bridge.submit_operation(
                    self.session_id, add_op(rng.randint(1, 1000))
                )
            except BridgeError:
                continue
            if len(self.submitted) < 100_000:
                self.submitted[op_id] = (key, loop.time())

    # -- reading --------------------------------------------------------------------------

    def nodes(self) -> dict[tuple[int, int], Node]:
        out: dict[tuple[int, int], Node] = {}
        for k, net in enumerate(self.networks):
            for i, node in enumerate(net.nodes):
                if isinstance(node, Node):
                    out[(k, i)] = node
        return out

    def heights(self) -> dict[tuple[int, int], int]:
        return {
            key: node.bridge.engine(self.session_id).height for key, node in self.nodes().items()
        }

    def min_height(self, island: int | None = None) -> int:
        hs = [h for (k, _), h in self.heights().items() if island is None or k == island]
        return min(hs, default=0)

    def agreement(self) -> bool:
        """Every node that committed a height committed the same block there."""
        by_height: dict[int, bytes] = {}
        for rec in self.records.values():
            for h, bh in rec.chain.items():
                if by_height.setdefault(h, bh) != bh:
                    return False
        return True

    def safe(self) -> bool:
        return self.agreement() and not any(r.invariant_errors for r in self.records.values())

    def latency(self, q: float) -> float:
        if not self.latencies:
            return math.nan
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]

    async def wait_for(
        self, predicate: Callable[[], bool], timeout: float, poll: float = 0.1
    ) -> bool:
        """Wait until ``predicate()`` holds, at most ``timeout`` seconds of loop time."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not predicate():
            if loop.time() >= end:
                return False
            await asyncio.sleep(poll)
        return True


# -- the simulator: islands joined through a simulated broker, in virtual time -------------


@dataclass(frozen=True, slots=True)
class IslandsRun:
    """``ble-bridge simulate --islands``: the islands, how long, and a broker outage."""

    islands: IslandsConfig = field(default_factory=lambda: IslandsConfig(warmup=3.0))
    duration: float = 60.0
    outage: tuple[float, float] | None = None
    """(start, end) in simulated seconds: the broker is down in between."""
    internet: str = "city"
    mesh_id: str = "sim-islands"


@dataclass(slots=True)
class IslandsResult:
    run: IslandsRun
    heights: int
    ops: int
    latencies: list[float]
    safe: bool
    final_heights: dict[tuple[int, int], int]
    marks: dict[str, dict[tuple[int, int], int]]
    uplink_frames: int
    uplink_stats: Counter[str]
    broker_stats: Counter[str]
    wall_time: float
    vote_delays: dict[tuple[int, int], float | None] = field(default_factory=dict)
    """Each node's measured vote delay at the end (its engine's round timeouts follow it)."""
    vote_timeouts: dict[tuple[int, int], float] = field(default_factory=dict)
    """Each node's round-0 vote timeout at the end, as its engine computes it."""

    def latency(self, q: float) -> float:
        if not self.latencies:
            return math.nan
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]

    def island_gain(self, island: int, start: str, end: str) -> int:
        """Heights the slowest node of ``island`` committed between two marks."""
        a, b = self.marks.get(start, {}), self.marks.get(end, {})
        keys = [k for k in b if k[0] == island]
        return min((b[k] - a.get(k, 0) for k in keys), default=0)

    def last_line(self) -> str:
        p50, p95 = self.latency(0.5) * 1000, self.latency(0.95) * 1000
        return (
            f"simulate heights={self.heights} ops={self.ops} p50_ms={p50:.1f} "
            f"p95_ms={p95:.1f} safety={'ok' if self.safe else 'violated'} "
            f"islands={len(self.run.islands.sizes)} uplink_frames={self.uplink_frames}"
        )


async def run_islands(run: IslandsRun) -> IslandsResult:
    """Run the islands on the running (virtual) loop."""
    import time

    from ..air.broker import INTERNET_PROFILES, SimBroker, SimUplinkTransport
    from ..air.clock import Seeds
    from ..uplink.config import UplinkConfig

    wall0 = time.perf_counter()
    loop = asyncio.get_running_loop()
    seeds = Seeds(run.islands.seed)
    broker = SimBroker(loop, seeds.rng("broker"))
    profile = INTERNET_PROFILES[run.internet]
    ucfg = UplinkConfig(broker="mqtt://sim-broker", mesh_id=run.mesh_id)

    def uplink(island: int, index: int, ident: Identity) -> Transport:
        rng = seeds.rng("uplink", island, index)
        return SimUplinkTransport(broker, ucfg, ident.peer_id, profile, rng)

    islands = Islands(run.islands, uplink)
    marks: dict[str, dict[tuple[int, int], int]] = {}
    t0 = loop.time()

    def outage() -> None:
        marks["outage"] = islands.heights()
        broker.go_down()

    def heal() -> None:
        marks["heal"] = islands.heights()
        broker.come_up()

    if run.outage is not None:
        loop.call_at(t0 + run.outage[0], outage)
        loop.call_at(t0 + run.outage[1], heal)
    await islands.start()
    await asyncio.sleep(run.duration)
    marks["end"] = islands.heights()
    engines = {k: n.bridge.engine(islands.session_id) for k, n in islands.nodes().items()}
    vote_delays = {k: e.vote_delay for k, e in sorted(engines.items())}
    vote_timeouts = {k: e._timeout("vote", 0) for k, e in sorted(engines.items())}
    await islands.stop()
    stats: Counter[str] = Counter()
    for u in islands.uplinks.values():
        if isinstance(u, SimUplinkTransport):
            stats.update(u.core.stats)
    ops_at: dict[int, int] = {}
    for rec in islands.records.values():
        ops_at.update(rec.ops_at)
    final = {k: r.final_height for k, r in sorted(islands.records.items())}
    return IslandsResult(
        run=run,
        heights=max(final.values(), default=0),
        ops=sum(ops_at.values()),
        latencies=islands.latencies,
        safe=islands.safe(),
        final_heights=final,
        marks=marks,
        uplink_frames=stats["frames_out"],
        uplink_stats=stats,
        broker_stats=broker.stats,
        wall_time=time.perf_counter() - wall0,
        vote_delays=vote_delays,
        vote_timeouts=vote_timeouts,
    )


def simulate_islands(run: IslandsRun) -> IslandsResult:
    """Run the islands on a fresh virtual loop, deterministic by seed."""
    from ..air.clock import run_virtual

    return run_virtual(run_islands(run), seed=run.islands.seed)
