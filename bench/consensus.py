"""Consensus over the loopback air: commit latency, throughput and airtime cost per op.

8 validators on the default topology and the ``pi-tuned`` BLE profile, every node
submitting ledger operations (Poisson) through its NetworkConsensusBridge for 55 simulated
seconds, starting at 15 s, once the mesh has formed (links need 10-15 s on this profile;
with the load starting at 5 s, a fifth of the run measures mesh formation instead:
gossip then gave latency 4.4, 20.2 ops/s, bytes 2.9 over seeds 1-4). Bytes on air count
the whole run, formation included. The two 8-node parts (light load, saturated) run for
seeds 1-8, one process per seed (``--jobs``, default 2); the key is the median over the
seeds, the worst seed is printed above the last line. The numbers are ratios against
bounds computed in the same run:

- latency_ratio: p50 commit latency (submit -> commit at the submitter), at a light load,
  / the protocol minimum, three message delays of (one-hop delay of the link model x
  network diameter); one-hop delay = a connection interval + the airtime of a vote frame
  on one link. Also printed: the consensus part alone (proposal -> commit at every node),
  and, over every light-load op of every seed, a histogram of where submit -> commit
  went: op to proposer, height in progress (until the proposer sends the block's
  proposal), proposal (until the submitter knows the block), prevote and precommit
  (until it counts a quorum of each), commit at the submitter.
- ops_per_s: committed operations per simulated second under a saturating load; each
  radio's busy fraction (airtime sent + received / time, ``Air.busy_seconds``) is printed.
- bytes_per_op_ratio: bytes on air per committed op / its lower bound: per committed
  block, the proposal and 2n votes at their encoded frame sizes received once by each of
  the other n-1 nodes, divided by the ops in the block.

Run once (seed 1, or ``--seed N``), beside the seeds:

- nodes50: a 50-validator session on ``pi-tuned`` links on a grid (``--nodes50-profile``,
  ``--nodes50-topology``) commits 10 heights in 45 simulated seconds; nodes50_rate: the
  slowest node's heights per simulated second from the load's start (goal >= 0.2).
  ``--nodes50-ideal`` also prints the former default, ``ideal`` links (with a per-link
  inbound guard sized for them, see ``nodes50_mesh``), labelled, not the key. On a grid
  the mesh is ~13 hops across, beyond the TTL of 7, so no node learns the whole validator
  graph from announces, gossip trees cannot be built and everyone floods: state
  announcements, votes and ops fill the 20 kB/s radios. Laid out at random, views converge
  by ~40 s, but height 1 waits for 34 prevotes before any timer runs, while the
  formation's floods still fill the air.
- tables12: ``ble_bridge.sim.many_tables``: a 100-node ``pi-tuned`` clustered random
  geometric mesh, 12 tables of 8 (each its own session) and 4 relays, all tables playing;
  ok when every table commits, safety holds, each keeps >= 50 % of the throughput it has
  alone (the eleven others present but idle, same seed and positions) and its light-load
  latency_ratio (over its own diameter) is <= 2.0.
- join_heights: on a 7-validator ``pi-tuned`` table formed at runtime
  (``ble_bridge.sim.runtime``, the seated nodes betting so heights go on), an 8th node
  joins 20 times, leaving in between; the median number of heights from the height in
  progress when the first validator hears its join request to the first height whose
  certificate counts its vote (goal <= 3).

The same two 8-node runs are repeated with neighbour gossip off (``BridgeConfig(gossip=
False)``: every consensus message one mesh flood) and printed as the baseline line
``flood latency_ratio=... ops_per_s=... bytes_per_op_ratio=...`` (medians over the
seeds; skip with ``--no-flood``).

``--seed N`` runs the 8-node parts for seed N only (the single parts with seed N);
``--quick`` only the 8-node parts, of seed 1 (or of ``--seed N``, or ``--seeds a,b,..``):
then nodes50 and tables12 read ``skip`` and the other single parts ``nan``.

Last line, exactly:
``consensus latency_ratio=<float> ops_per_s=<float> bytes_per_op_ratio=<float> nodes50=<ok|fail> join_heights=<float> tables12=<ok|fail> nodes50_rate=<float>``
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import math
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ble_bridge.air.clock import run_virtual
from ble_bridge.air.network import Network, SimNode
from ble_bridge.bridge import BridgeConfig, BridgeError
from ble_bridge.consensus.engine import Committed
from ble_bridge.consensus.testing import LedgerApp, add_op
from ble_bridge.mesh.config import MeshConfig
from ble_bridge.sim.many_tables import ManyTablesConfig, one_hop_delay, run_many_tables
from ble_bridge.sim.scenario import ScenarioConfig, run_scenario
from ble_bridge.sim.table import TableNode, table_node_factory
from ble_bridge.wire.identity import Identity
from ble_bridge.wire.messages import (
    Block,
    Message,
    Operation,
    Proposal,
    Step,
    Vote,
    encode_message,
)
from ble_bridge.wire.packet import Packet, PacketType, encode

SESSION = hashlib.sha256(b"bench/consensus").digest()[:16]
SEEDS = tuple(range(1, 9))
STAGES = (
    "op to proposer",  # submit -> the op in the proposer's engine
    "height in progress",  # -> the proposer sends the block's proposal
    "proposal",  # -> the submitter knows the block (its proposal, or a vote naming it)
    "prevote",  # -> the submitter counts a quorum of prevotes for it
    "precommit",  # -> a quorum of precommits
    "commit at submitter",  # -> the block commits there
)


@dataclass
class LoadWorkload:
    """Every running node submits ``add_op`` at ``rate`` per second (Poisson)."""

    rate: float
    delivered: int = 0
    duplicates: int = 0
    latencies: list[float] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    submitted: dict[bytes, tuple[int, float]] = field(default_factory=dict)
    refused: int = 0
    links: list[tuple[int, int]] = field(default_factory=list)
    heights: dict[int, int] = field(default_factory=dict)
    proposed: dict[bytes, float] = field(default_factory=dict)  # block hash -> first proposal
    decide: list[float] = field(default_factory=list)  # proposal -> commit, every node
    stages: list[tuple[float, ...]] = field(default_factory=list)  # per op, see STAGES
    busy: list[float] = field(default_factory=list)  # each radio's busy fraction, load period
    track: bool = False  # per-stage timestamps (costs a look at the engine per message)
    _seen_op: dict[int, dict[bytes, float]] = field(default_factory=dict)
    _seen_block: dict[int, dict[bytes, list[float]]] = field(default_factory=dict)
    _sent: int = 0
    network: Network | None = None

    def attach(self, network: Network) -> None:
        self.network = network
        network.on_node_start.append(self._started)
        network.on_node_stop.append(self._stopped)

    def _started(self, index: int, node: SimNode) -> None:
        assert isinstance(node, TableNode)

        engine = node.engine
        self._seen_op.setdefault(index, {})
        seen_block = self._seen_block.setdefault(index, {})

        def hook(sid: bytes, ev: Committed) -> None:
            now = self.network.now if self.network is not None else 0.0
            if index == 0:
                self.blocks.append(ev.block)
            if ev.block.hash in self.proposed:
                self.decide.append(now - self.proposed[ev.block.hash])
            proposer = self._index_of(engine.proposer(ev.height, ev.round))
            for op in ev.ops:
                sub = self.submitted.get(op.op_id)
                if sub is not None and sub[0] == index:
                    del self.submitted[op.op_id]
                    self.delivered += 1
                    self.latencies.append(now - sub[1])
                    if self.track:
                        self.stages.append(self._stages(index, proposer, op.op_id, ev, sub, now))
            if self.track:
                fresh = {k: t for k, t in self._seen_op[index].items() if now - t < 60.0}
                self._seen_op[index] = fresh
                seen_block.pop(ev.block.hash, None)

        node.bridge.commit_hooks.append(hook)
        if self.track:
            receive = engine.receive

            def spy_receive(now: float, msg: Message) -> None:
                if isinstance(msg, Operation):
                    self._seen_op[index].setdefault(msg.op_id, now)
                receive(now, msg)
                h = engine.height + 1
                for bh in engine.known_blocks(h):
                    marks = seen_block.setdefault(bh, [now, math.inf, math.inf])
                    if marks[1] == math.inf and engine.votes_for(bh, Step.PREVOTE) >= engine.quorum:
                        marks[1] = now
                    if marks[2] == math.inf and engine.votes_for(bh) >= engine.quorum:
                        marks[2] = now
                if len(seen_block) > 256:
                    seen_block.pop(next(iter(seen_block)))

            engine.receive = spy_receive  # type: ignore[method-assign]
        outbox = engine.outbox

        def spy_outbox() -> list[Message]:
            out = outbox()
            for msg in out:
                if isinstance(msg, Proposal) and self.network is not None:
                    self.proposed.setdefault(msg.block.hash, self.network.now)
            return out

        engine.outbox = spy_outbox  # type: ignore[method-assign]

    def _index_of(self, key: bytes) -> int | None:
        if self.network is None:
            return None
        for i, node in enumerate(self.network.nodes):
            if isinstance(node, TableNode) and node.identity.signing_public == key:
                return i
        return None

    def _stages(
        self,
        index: int,
        proposer: int | None,
        op_id: bytes,
        ev: Committed,
        sub: tuple[int, float],
        now: float,
    ) -> tuple[float, ...]:
        """Where one op's submit -> commit went (see STAGES); each mark at least the one
        before it, a missing one (seen inside the same step as the next) at the next."""
        submit = sub[1]
        at_proposer = submit if proposer in (None, index) else math.inf
        if proposer is not None and proposer != index:
            at_proposer = self._seen_op.get(proposer, {}).get(op_id, math.inf)
        proposed = self.proposed.get(ev.block.hash, math.inf)
        marks = self._seen_block.get(index, {}).get(ev.block.hash, [math.inf] * 3)
        if proposer == index:
            marks = [min(marks[0], proposed), *marks[1:]]
        points = [submit, at_proposer, proposed, *marks, now]
        for k in range(len(points) - 2, 0, -1):  # a missing mark: when the next one was
            points[k] = min(points[k], points[k + 1])
        for k in range(1, len(points)):
            points[k] = max(points[k], points[k - 1])
        return tuple(b - a for a, b in itertools.pairwise(points))

    def _stopped(self, index: int, node: SimNode) -> None:
        assert isinstance(node, TableNode)
        self.heights[index] = node.engine.height

    async def run(self, network: Network, start: float, stop: float) -> None:
        rng = network.seeds.rng("bench-load")
        loop = network.loop
        total = self.rate * len(network)
        t = max(loop.time(), start)
        await asyncio.sleep(max(0.0, start - loop.time()))
        air = network.air
        busy0 = [air.busy_seconds(i) for i in range(len(network))]
        while True:
            t += rng.expovariate(total)
            if t >= stop:
                break
            await asyncio.sleep(t - loop.time())
            i = rng.randrange(len(network))
            node = network.nodes[i]
            if not isinstance(node, TableNode):
                continue
            try:
                op_id = node.bridge.submit_operation(SESSION, add_op(rng.randint(1, 1000)))
            except BridgeError:
                self.refused += 1
                continue
            self._sent += 1
            self.submitted[op_id] = (i, loop.time())
        await asyncio.sleep(max(0.0, stop - loop.time()))
        self.links = network.air.link_pairs()
        span = max(1e-9, loop.time() - start)
        self.busy = [(air.busy_seconds(i) - b) / span for i, b in enumerate(busy0)]

    @property
    def sent(self) -> int:
        return self._sent

    @property
    def expected(self) -> int:
        return self._sent


@dataclass
class LoadResult:
    n: int
    profile: str
    play: float
    ops: int
    heights: int
    latencies: list[float]
    decide: list[float]
    bytes_on_air: int
    lower_bound_bytes: int
    diameter: int
    min_height: int
    wall: float
    stages: list[tuple[float, ...]] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) if self.latencies else math.nan

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.play

    @property
    def bytes_ratio(self) -> float:
        return self.bytes_on_air / self.lower_bound_bytes if self.lower_bound_bytes else math.inf

    @property
    def minimum(self) -> float:
        """The protocol minimum of submit -> commit: three message delays across the mesh."""
        return 3 * one_hop_delay(self.profile, SESSION) * max(1, self.diameter)

    @property
    def latency_ratio(self) -> float:
        return self.p50 / self.minimum


def diameter(n: int, pairs: list[tuple[int, int]]) -> int:
    adj: dict[int, set[int]] = {i: set() for i in range(n)}
    for a, b in pairs:
        adj[a].add(b)
        adj[b].add(a)
    best = 0
    for src in range(n):
        dist = {src: 0}
        queue = deque([src])
        while queue:
            u = queue.popleft()
            for v in adj[u]:
                if v not in dist:
                    dist[v] = dist[u] + 1
                    queue.append(v)
        if len(dist) < n:
            return n  # disconnected: no finite diameter
        best = max(best, max(dist.values()))
    return best


def frame_size(identity: Identity, payload: bytes) -> int:
    """Encoded size of the signed 0x1C mesh packet carrying ``payload``."""
    p = Packet(
        type=PacketType.CONSENSUS,
        sender=identity.peer_id,
        payload=payload,
        timestamp=1_790_000_000_000,
        ttl=7,
    )
    return len(encode(p.compress().signed(identity)))


def lower_bound(n: int, blocks: list[Block]) -> int:
    """Bytes the committed blocks need at least: proposal + 2n votes, to n-1 receivers."""
    ident = Identity.from_seed(b"bench-lower-bound".ljust(32, b"."))
    key = ident.signing_public
    vote = Vote.create(ident.sign, key, SESSION, Step.PREVOTE, 1, 0, b"\x01" * 32)
    vote_frame = frame_size(ident, encode_message(SESSION, vote))
    total = 0
    for block in blocks:
        proposal = Proposal(block.height, 0, -1, block, bytes(64))
        prop_frame = frame_size(ident, encode_message(SESSION, proposal))
        total += (prop_frame + 2 * n * vote_frame) * (n - 1)
    return total


def run_load(
    n: int,
    *,
    profile: str = "pi-tuned",
    topology: str = "full",
    duration: float = 70.0,
    warmup: float = 15.0,
    rate: float = 10.0,
    seed: int = 1,
    bridge: BridgeConfig | None = None,
    mesh: MeshConfig | None = None,
    track: bool = False,
) -> LoadResult:
    wl = LoadWorkload(rate, track=track)
    config = ScenarioConfig(
        nodes=n,
        topology=topology,
        profile=profile,
        duration=duration,
        warmup=warmup,
        drain=0.0,
        seed=seed,
        trace=False,
    )
    factory = table_node_factory(SESSION, mesh_config=mesh, bridge_config=bridge, app=LedgerApp)
    t = time.perf_counter()
    result = run_virtual(run_scenario(config, factory=factory, workload=wl), seed=seed)
    wall = time.perf_counter() - t
    ops = sum(len(b.ops) for b in wl.blocks)
    return LoadResult(
        n=n,
        profile=profile,
        play=duration - warmup,
        ops=ops,
        heights=len(wl.blocks),
        latencies=wl.latencies,
        decide=wl.decide,
        bytes_on_air=result.air_stats["bytes_sent"],
        lower_bound_bytes=lower_bound(n, wl.blocks),
        diameter=diameter(n, wl.links),
        min_height=min(wl.heights.values()) if wl.heights else 0,
        wall=wall,
        stages=wl.stages,
        busy=wl.busy,
    )


def nodes50_mesh(profile_name: str) -> MeshConfig | None:
    """The mesh's per-link inbound guard (100 frames/s, burst 200) is sized for BLE links
    of ~20 kB/s, which cannot carry much more. On the ``ideal`` profile's 10 MB/s links the
    50-node grid's floods exceed it: a corner node dropped 17 % of its frames as
    rate-limited, missed blocks, and its catch-up answers too (slowest node 49 heights
    against 61 with a guard of 1000 frames/s). Sized for the links, as on hardware."""
    if profile_name != "ideal":
        return None
    return MeshConfig(inbound_rate=1000.0, inbound_burst=2000.0)


def run_join_heights(seed: int, joins: int = 20) -> tuple[list[int], float]:
    """Heights from a join request's arrival to the joiner's first counted vote, per join."""
    from ble_bridge.air.profiles import PI_TUNED
    from ble_bridge.air.topology import full
    from ble_bridge.sim.runtime import Bettor, ChurnLog, RuntimeNode, runtime_node_factory
    from ble_bridge.tables.errors import TableError

    wall0 = time.perf_counter()
    samples: list[int] = []

    async def main() -> None:
        net = Network(full(8), PI_TUNED, runtime_node_factory(ChurnLog()), seed=seed, trace=False)
        await net.start()
        ns = [n for n in net.nodes if isinstance(n, RuntimeNode)]
        bettor = Bettor()
        stop = False

        async def bet() -> None:
            while not stop:
                for n in ns:
                    bettor.play(n)
                await asyncio.sleep(1.0)

        async def until(cond: Callable[[], bool], limit: float = 120.0) -> None:
            end = net.now + limit
            while not cond():
                if net.now > end:
                    raise RuntimeError("churn bench: timed out")
                await asyncio.sleep(0.05)

        def seated(n: RuntimeNode) -> bool:
            return any(n.bridge.engine(sid).is_validator for sid in n.tables.tables)

        task = asyncio.ensure_future(bet())
        ns[0].tables.open("bench")
        for n in ns[1:7]:
            await until(lambda n=n: bool(n.tables.directory.find(net.now, "bench")))
            n.tables.join("bench")
            await until(lambda n=n: seated(n))
        sid = next(iter(ns[0].tables.tables))
        e0 = ns[0].bridge.engine(sid)
        joiner = ns[7]
        key = joiner.identity.signing_public
        counted: dict[int, bool] = {}

        def hook(_sid: bytes, ev: Committed) -> None:
            keys = e0.validators_at(ev.height)
            counted[ev.height] = key in keys and keys.index(key) in ev.certificate.signers

        ns[0].bridge.commit_hooks.append(hook)
        for _ in range(joins):
            await until(lambda: len(e0.validators) == 7)
            await until(lambda: bool(joiner.tables.directory.find(net.now, "bench")))
            while True:  # the announcement it last heard may still say "full"
                try:
                    joiner.tables.join("bench")
                    break
                except TableError:
                    await asyncio.sleep(0.5)
            await until(lambda: any(r.key == key for r in e0.pending_joins) or key in e0.validators)
            arrived = e0.height + 1
            await until(lambda a=arrived: any(v for h, v in counted.items() if h >= a))
            first = min(h for h, v in counted.items() if v and h >= arrived)
            samples.append(first - arrived)
            await asyncio.sleep(2.0)
            joiner.tables.leave("bench")
            await until(lambda: key not in e0.validators and not joiner.tables.tables)
        stop = True
        await task
        await net.stop()

    run_virtual(main(), seed=seed)
    return samples, time.perf_counter() - wall0


@dataclass
class SeedResult:
    seed: int
    light: LoadResult
    saturated: LoadResult
    flood_light: LoadResult | None
    flood_saturated: LoadResult | None
    wall: float


def run_seed(seed: int, duration: float, rate: float, light_rate: float, flood: bool) -> SeedResult:
    """The 8-node parts of one seed: light load (latency, per-stage marks) and saturated."""
    t = time.perf_counter()
    fl = fs = None
    if flood:
        cfg = BridgeConfig(gossip=False)
        fl = run_load(8, duration=duration, rate=light_rate, seed=seed, bridge=cfg)
        fs = run_load(8, duration=duration, rate=rate, seed=seed, bridge=cfg)
    light = run_load(8, duration=duration, rate=light_rate, seed=seed, track=True)
    sat = run_load(8, duration=duration, rate=rate, seed=seed)
    return SeedResult(seed, light, sat, fl, fs, time.perf_counter() - t)


def run_nodes50(profile: str, topology: str, duration: float, seed: int) -> LoadResult:
    return run_load(
        50,
        profile=profile,
        topology=topology,
        duration=duration,
        warmup=3.0,
        rate=0.2,
        seed=seed,
        mesh=nodes50_mesh(profile),
    )


def _q(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else math.nan


BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.4, 0.8)


def print_stages(stages: list[tuple[float, ...]], label: str) -> None:
    """Per-stage percentiles and a histogram (counts per bucket) of ops' submit -> commit."""
    total = sum(sum(s) for s in stages) or 1.0
    edges = " ".join(f"<{b * 1000:.0f}" for b in BUCKETS) + f" >={BUCKETS[-1] * 1000:.0f}"
    print(f"stages of submit -> commit ({label}, {len(stages)} ops), ms: p10 p50 p90 mean share")
    print(f"  {'':22} {'':30}   histogram ms: {edges}")
    for k, name in enumerate(STAGES):
        xs = [s[k] for s in stages]
        if not xs:
            continue
        counts = [0] * (len(BUCKETS) + 1)
        for x in xs:
            counts[next((i for i, b in enumerate(BUCKETS) if x < b), len(BUCKETS))] += 1
        print(
            f"  {name:22} {_q(xs, 0.1) * 1000:6.0f} {_q(xs, 0.5) * 1000:6.0f} "
            f"{_q(xs, 0.9) * 1000:6.0f} {statistics.fmean(xs) * 1000:6.0f} "
            f"{sum(xs) / total:5.0%}   " + " ".join(f"{c:4d}" for c in counts)
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--duration", type=float, default=70.0, help="simulated seconds (8 nodes, load from 15 s)"
    )
    ap.add_argument("--rate", type=float, default=10.0, help="ops/s offered per node (load)")
    ap.add_argument(
        "--light-rate", type=float, default=0.25, help="ops/s per node for the latency run"
    )
    ap.add_argument("--seed", type=int, default=None, help="the 8-node parts for this seed only")
    ap.add_argument("--quick", action="store_true", help="only the 8-node parts (of seed 1)")
    ap.add_argument("--seeds", default=None, help="comma-separated seeds for the 8-node parts")
    ap.add_argument("--jobs", type=int, default=2, help="processes (one seed or part each)")
    ap.add_argument("--nodes50-profile", default="pi-tuned")
    ap.add_argument("--nodes50-topology", default="grid")
    ap.add_argument("--nodes50-duration", type=float, default=45.0)
    ap.add_argument(
        "--nodes50-ideal", action="store_true", help="also the 50-node part on ideal links"
    )
    ap.add_argument("--no-flood", action="store_true", help="skip the flood baseline runs")
    args = ap.parse_args(argv)
    seeds = (args.seed,) if args.seed is not None else (SEEDS[:1] if args.quick else SEEDS)
    if args.seeds:
        seeds = tuple(int(x) for x in args.seeds.split(","))
    once_seed = seeds[0]
    wall0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        # the long single parts first, so both processes stay busy to the end
        big = big_ideal = churn = tables = None
        if not args.quick:
            big = pool.submit(
                run_nodes50,
                args.nodes50_profile,
                args.nodes50_topology,
                args.nodes50_duration,
                once_seed,
            )
            if args.nodes50_ideal:
                big_ideal = pool.submit(
                    run_nodes50, "ideal", args.nodes50_topology, args.nodes50_duration, once_seed
                )
            tables = pool.submit(run_many_tables, ManyTablesConfig(seed=once_seed))
            churn = pool.submit(run_join_heights, once_seed)
        futures = [
            pool.submit(
                run_seed, seed, args.duration, args.rate, args.light_rate, not args.no_flood
            )
            for seed in seeds
        ]
        results = [f.result() for f in futures]
        for r in results:
            light, sat = r.light, r.saturated
            decide = statistics.median(light.decide) if light.decide else math.nan
            busy = sat.busy
            print(
                f"seed {r.seed}: light ({args.light_rate} ops/s a node) p50 "
                f"{light.p50 * 1000:.0f} ms / minimum {light.minimum * 1000:.0f} ms "
                f"(diameter {light.diameter}) = {light.latency_ratio:.2f}, consensus part "
                f"{decide / light.minimum:.2f}; saturated ({args.rate} ops/s a node offered) "
                f"{sat.ops_per_s:.1f} ops/s, {sat.ops / max(1, sat.heights):.1f} ops/block, "
                f"p50 {sat.p50 * 1000:.0f} ms, bytes {sat.bytes_ratio:.2f}; wall {r.wall:.0f} s"
            )
            print(
                "  radios busy, saturated: "
                + " ".join(f"{b:.2f}" for b in busy)
                + f"; light: {statistics.fmean(light.busy):.2f} mean"
            )
        print_stages([s for r in results for s in r.light.stages], "light load, all seeds")
        lat = [r.light.latency_ratio for r in results]
        ops = [r.saturated.ops_per_s for r in results]
        byt = [r.saturated.bytes_ratio for r in results]
        floods = [r for r in results if r.flood_light is not None]
        if floods:
            print(
                "flood latency_ratio="
                f"{statistics.median(r.flood_light.latency_ratio for r in floods if r.flood_light):.2f}"
                " ops_per_s="
                f"{statistics.median(r.flood_saturated.ops_per_s for r in floods if r.flood_saturated):.1f}"
                " bytes_per_op_ratio="
                f"{statistics.median(r.flood_saturated.bytes_ratio for r in floods if r.flood_saturated):.2f}"
            )
        nodes50 = "skip" if big is None else "fail"  # skip: not run (--quick)
        rate50 = math.nan
        for fut in (big_ideal, big):
            if fut is None:
                continue
            b = fut.result()
            rate50 = b.min_height / (args.nodes50_duration - 3.0)
            print(
                f"50 nodes {b.profile} {args.nodes50_topology}"
                f"{' (not the key: ideal links)' if fut is big_ideal else ''}: heights "
                f"(slowest node) {b.min_height} in {args.nodes50_duration:g} s "
                f"({rate50:.2f}/s), {b.ops} ops, radios busy mean "
                f"{statistics.fmean(b.busy) if b.busy else math.nan:.2f}, wall {b.wall:.0f} s"
            )
            if fut is big:
                nodes50 = "ok" if b.min_height >= 10 else "fail"
            else:
                rate50 = math.nan
        tables12 = "skip" if tables is None else "fail"
        if tables is not None:
            m = tables.result()
            k_lat = max(range(m.config.tables), key=m.latency_ratio)
            k_share = min(range(m.config.tables), key=m.share)
            print(
                f"100 nodes {m.config.profile} clustered, {m.config.tables} tables of "
                f"{m.config.seats} + {m.config.relays} relays, all playing: safe {m.safe}; "
                f"throughput together / alone median {statistics.median(map(m.share, range(m.config.tables))):.2f}, "
                f"worst {m.share(k_share):.2f} (table {k_share}: {m.together[k_share].ops_per_s:.1f} "
                f"vs {m.alone[k_share].ops_per_s:.1f} ops/s; goal >= 0.5); latency_ratio median "
                f"{statistics.median(map(m.latency_ratio, range(m.config.tables))):.2f}, worst "
                f"{m.latency_ratio(k_lat):.2f} (table {k_lat}, diameter "
                f"{m.together[k_lat].diameter}; goal <= 2.0); heights together min "
                f"{min(t.heights for t in m.together)}; radios busy mean "
                f"{statistics.fmean(m.busy) if m.busy else math.nan:.2f}; wall {m.wall:.0f} s"
            )
            tables12 = "ok" if m.ok() else "fail"
        join_heights = math.nan
        if churn is not None:
            joined, wall = churn.result()
            join_heights = statistics.median(joined) if joined else math.nan
            print(
                f"churn: an 8th node joined a 7-validator pi-tuned table {len(joined)} times: "
                f"heights from its request to its first counted vote median {join_heights:g}, "
                f"worst {max(joined, default=0)} (goal <= 3), wall {wall:.1f} s"
            )
    worst = max(results, key=lambda r: r.light.latency_ratio)
    print(
        f"worst seed: latency_ratio={max(lat):.2f} (seed {worst.seed}) "
        f"ops_per_s={min(ops):.1f} (seed {results[ops.index(min(ops))].seed}) "
        f"bytes_per_op_ratio={max(byt):.2f} (seed {results[byt.index(max(byt))].seed}); "
        f"{len(results)} seeds, wall {time.perf_counter() - wall0:.0f} s"
    )
    print(
        f"consensus latency_ratio={statistics.median(lat):.2f} "
        f"ops_per_s={statistics.median(ops):.1f} "
        f"bytes_per_op_ratio={statistics.median(byt):.2f} nodes50={nodes50} "
        f"join_heights={join_heights:.1f} tables12={tables12} nodes50_rate={rate50:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
