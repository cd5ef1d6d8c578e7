"""Many tables on one mesh: 12 tables of 8 handhelds and 4 relays on a 100-node air.

People at an event sit at tables: each table's handhelds are near each other, the tables
are spread over the room, so the air is a random geometric mesh of clusters
(:func:`~ble_bridge.air.topology.clustered`) where every table hears itself and a few
handhelds of the tables next to it. Every table is its own consensus session (its 8 nodes
the validators); the relays run only the mesh. All tables play at once.

Two runs with the same seed and positions:

- *together*: every table at a light load (latency), then every table saturated
  (throughput);
- *alone*: the tables take turns, one saturated while the eleven others are present but
  idle (the baseline of each table's throughput).

Per table: it commits, safety holds (every node of a table committed the same block at
each height), its throughput together / alone, and its light-load p50 latency over the
protocol minimum (three message delays of one hop x the table's diameter over the air's
links, as ``bench/consensus.py``'s latency_ratio). Deterministic by seed on a virtual clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import statistics
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..air.clock import Seeds, run_virtual
from ..air.network import Network, NodeSpec, SimNode
from ..air.profiles import get_profile
from ..air.topology import clustered
from ..bridge import BridgeError
from ..consensus.engine import Committed
from ..consensus.testing import LedgerApp, add_op
from ..wire.identity import Identity
from ..wire.messages import Step, Vote, encode_message
from ..wire.packet import Packet, PacketType, encode
from .scenario import mesh_node_factory
from .table import TableNode


def many_session_id(table: int) -> bytes:
    return hashlib.sha256(b"ble-bridge/sim/many-tables/%d" % table).digest()[:16]


@dataclass(frozen=True, slots=True)
class ManyTablesConfig:
    tables: int = 12
    seats: int = 8
    relays: int = 4
    profile: str = "pi-tuned"
    seed: int = 1
    warmup: float = 20.0  # links form (100 radios: ~15 s) before anyone submits
    light: float = 15.0  # together: every table at the light load for this long...
    light_rate: float = 0.25  # ...ops/s a node
    saturated: float = 20.0  # ...then every table saturated for this long
    rate: float = 10.0  # ops/s offered a node when saturated (capped by pending_capacity)
    slot: float = 10.0  # alone: each table saturated this long while the others idle
    ramp: float = 2.0  # the first seconds of a saturated period are not counted


@dataclass(slots=True)
class TableStats:
    """What one table did in one run."""

    latencies: list[float] = field(default_factory=list)  # light load, submit -> commit
    ops: int = 0  # committed while saturated (counted periods)
    counted: float = 0.0  # seconds of counted saturated periods
    heights: int = 0  # highest height any node of the table committed
    blocks: dict[int, set[bytes]] = field(default_factory=dict)  # height -> hashes committed
    committers: set[int] = field(default_factory=set)  # nodes that committed something
    foreign: int = 0  # ops committed here that were submitted at another table (never)
    diameter: int = 0

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.counted if self.counted else 0.0

    @property
    def safe(self) -> bool:
        """Every node that committed a height committed the same block there, and only
        the table's own ops."""
        return self.foreign == 0 and all(len(hashes) == 1 for hashes in self.blocks.values())


@dataclass(slots=True)
class ManyTablesResult:
    config: ManyTablesConfig
    together: list[TableStats]
    alone: list[TableStats]
    hop: float
    wall: float
    busy: list[float] = field(default_factory=list)  # each radio, together, saturated

    def minimum(self, table: int) -> float:
        return 3 * self.hop * max(1, self.together[table].diameter)

    def latency_ratio(self, table: int) -> float:
        lat = self.together[table].latencies
        return statistics.median(lat) / self.minimum(table) if lat else math.inf

    def share(self, table: int) -> float:
        """Throughput together / alone."""
        alone = self.alone[table].ops_per_s
        return self.together[table].ops_per_s / alone if alone else 0.0

    @property
    def safe(self) -> bool:
        return all(t.safe for t in self.together + self.alone)

    def ok(self, min_share: float = 0.5, max_latency_ratio: float = 2.0) -> bool:
        """Every table commits in both runs, safety holds, each keeps ``min_share`` of its
        throughput alone and a latency_ratio of at most ``max_latency_ratio``."""
        return self.safe and all(
            self.together[k].heights > 0
            and self.alone[k].heights > 0
            and self.share(k) >= min_share
            and self.latency_ratio(k) <= max_latency_ratio
            for k in range(self.config.tables)
        )


def vote_frame_size(session: bytes) -> int:
    """Encoded size of a signed mesh packet carrying one prevote (TTL 7, compressed)."""
    ident = Identity.from_seed(b"bench-one-hop".ljust(32, b"."))
    vote = Vote.create(ident.sign, ident.signing_public, session, Step.PREVOTE, 1, 0, bytes(32))
    p = Packet(
        type=PacketType.CONSENSUS,
        sender=ident.peer_id,
        payload=encode_message(session, vote),
        timestamp=1_790_000_000_000,
        ttl=7,
    )
    return len(encode(p.compress().signed(ident)))


def one_hop_delay(profile_name: str, session: bytes) -> float:
    """A connection interval plus the airtime of a vote frame on one link: the message
    delay of the latency minimum (``bench/consensus.py``'s too)."""
    p = get_profile(profile_name)
    return sum(p.conn_interval) / 2 + p.frame_seconds(vote_frame_size(session), p.link_rate)


def hops_between(pairs: Sequence[tuple[int, int]], members: Sequence[int]) -> int:
    """The largest hop count between two of ``members`` over the links ``pairs`` (any node
    may be on the path); the number of nodes if some member is unreachable."""
    adj: dict[int, set[int]] = {}
    for a, b in pairs:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    best = 0
    for src in members:
        dist = {src: 0}
        queue = deque([src])
        while queue:
            u = queue.popleft()
            for v in adj.get(u, ()):
                if v not in dist:
                    dist[v] = dist[u] + 1
                    queue.append(v)
        if any(m not in dist for m in members):
            return len(adj) + 1
        best = max(best, *(dist[m] for m in members))
    return best


class _Run:
    """One run's node factory, hooks and load (``schedule``: when each table submits)."""

    def __init__(self, config: ManyTablesConfig) -> None:
        self.config = config
        self.stats = [TableStats() for _ in range(config.tables)]
        self.submitted: dict[bytes, tuple[int, float]] = {}  # op id -> (node, submit time)
        self.counting: list[bool] = [False] * config.tables
        self.light: list[bool] = [False] * config.tables
        self.relay = mesh_node_factory()

    def table_of(self, index: int) -> int | None:
        k = index // self.config.seats
        return k if k < self.config.tables else None

    def factory(self, spec: NodeSpec) -> SimNode:
        k = self.table_of(spec.index)
        if k is None:
            return self.relay(spec)
        n = self.config.seats
        return TableNode(spec, many_session_id(k), app=LedgerApp, seats=range(k * n, k * n + n))

    def started(self, index: int, node: SimNode) -> None:
        k = self.table_of(index)
        if k is None or not isinstance(node, TableNode):
            return
        stats = self.stats[k]
        net = self.network

        def hook(_sid: bytes, ev: Committed) -> None:
            stats.blocks.setdefault(ev.height, set()).add(ev.block.hash)
            stats.heights = max(stats.heights, ev.height)
            stats.committers.add(index)
            if index == k * self.config.seats and self.counting[k]:
                stats.ops += len(ev.ops)
            for op in ev.ops:
                sub = self.submitted.get(op.op_id)
                if sub is not None and self.table_of(sub[0]) != k:
                    stats.foreign += 1
                if sub is not None and sub[0] == index:
                    del self.submitted[op.op_id]
                    if self.light[k]:
                        stats.latencies.append(net.now - sub[1])

        node.bridge.commit_hooks.append(hook)

    async def load(self, tables: Sequence[int], rate: float, seconds: float) -> None:
        """Poisson ops at ``rate`` a node of ``tables`` for ``seconds``."""
        net = self.network
        rng = net.seeds.rng("many-tables-load", net.now)
        nodes = [
            i for k in tables for i in range(k * self.config.seats, (k + 1) * self.config.seats)
        ]
        if not nodes:
            await asyncio.sleep(seconds)
            return
        end = net.now + seconds
        t = net.now
        while True:
            t += rng.expovariate(rate * len(nodes))
            if t >= end:
                break
            await asyncio.sleep(t - net.now)
            i = rng.choice(nodes)
            node = net.nodes[i]
            if not isinstance(node, TableNode):
                continue
            try:
                op_id = node.bridge.submit_operation(node.session_id, add_op(rng.randint(1, 99)))
            except BridgeError:
                continue  # pending_full: the table is saturated
            self.submitted[op_id] = (i, net.now)
        await asyncio.sleep(max(0.0, end - net.now))

    async def saturate(self, tables: Sequence[int], seconds: float) -> None:
        cfg = self.config
        ramp = asyncio.ensure_future(self.load(tables, cfg.rate, seconds))
        await asyncio.sleep(min(cfg.ramp, seconds))
        for k in tables:
            self.counting[k] = True
        t0 = self.network.now
        await ramp
        for k in tables:
            self.counting[k] = False
            self.stats[k].counted += self.network.now - t0

    async def main(self, together: bool) -> list[float]:
        cfg = self.config
        n = cfg.tables * cfg.seats + cfg.relays
        topo = clustered(cfg.tables, cfg.seats, cfg.relays, Seeds(cfg.seed).rng("topology"))
        assert len(topo) == n
        self.network = net = Network(
            topo, get_profile(cfg.profile), self.factory, seed=cfg.seed, trace=False
        )
        net.on_node_start.append(self.started)
        await net.start()
        await asyncio.sleep(cfg.warmup)
        everyone = list(range(cfg.tables))
        busy: list[float] = []
        if together:
            self.light = [True] * cfg.tables
            await self.load(everyone, cfg.light_rate, cfg.light)
            await asyncio.sleep(2.0)  # the last light ops commit
            self.light = [False] * cfg.tables
            pairs = net.air.link_pairs()
            for k in everyone:
                self.stats[k].diameter = hops_between(
                    pairs, range(k * cfg.seats, (k + 1) * cfg.seats)
                )
            b0 = [net.air.busy_seconds(i) for i in range(n)]
            t0 = net.now
            await self.saturate(everyone, cfg.saturated)
            busy = [(net.air.busy_seconds(i) - b) / (net.now - t0) for i, b in enumerate(b0)]
        else:
            for k in everyone:
                await self.saturate([k], cfg.slot)
        await asyncio.sleep(2.0)
        await net.stop()
        return busy

    network: Network


def run_many_tables(config: ManyTablesConfig | None = None) -> ManyTablesResult:
    """Both runs (together and alone) of one seed."""
    cfg = config or ManyTablesConfig()
    wall = time.perf_counter()
    together = _Run(cfg)
    busy = run_virtual(together.main(True), seed=cfg.seed)
    alone = _Run(cfg)
    run_virtual(alone.main(False), seed=cfg.seed)
    return ManyTablesResult(
        cfg,
        together.stats,
        alone.stats,
        one_hop_delay(cfg.profile, many_session_id(0)),
        time.perf_counter() - wall,
        busy,
    )
