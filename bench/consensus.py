"""Consensus over the loopback air: commit latency, throughput and airtime cost per op.

8 validators on the default topology and the ``pi-tuned`` BLE profile, every node
submitting ledger operations (Poisson) through its NetworkConsensusBridge for 55 simulated
seconds, starting at 15 s, once the mesh has formed (links need 10-15 s on this profile;
with the load starting at 5 s, a fifth of the run measures mesh formation instead:
gossip then gave latency 4.4, 20.2 ops/s, bytes 2.9 over seeds 1-4). Bytes on air count
the whole run, formation included. The numbers are ratios against bounds computed in the
same run:

- latency_ratio: p50 commit latency (submit -> commit at the submitter), at a light load,
  / the protocol minimum, three message delays of (one-hop delay of the link model x
  network diameter); one-hop delay = a connection interval + the airtime of a vote frame
  on one link. Also printed: the consensus part alone (proposal -> commit at every node),
  the path the three message delays describe; submit -> commit adds the op's way to the
  proposer and the wait for the height in progress.
- ops_per_s: committed operations per simulated second under a saturating load.
- bytes_per_op_ratio: bytes on air per committed op / its lower bound: per committed
  block, the proposal and 2n votes at their encoded frame sizes received once by each of
  the other n-1 nodes, divided by the ops in the block.
- nodes50: a 50-validator session commits 10 heights (default: ``ideal`` links on a grid,
  with a per-link inbound guard sized for them, see ``nodes50_mesh``; 45 simulated
  seconds, about two minutes of CPU; on ``pi-tuned`` 50 validators commit
  nothing in 90 s. On a grid the mesh is ~13 hops across, beyond the TTL of 7, so no node
  learns the whole validator graph from announces, gossip trees cannot be built and
  everyone floods: state announcements, votes and ops fill the 20 kB/s radios. Laid out
  at random, views converge by ~40 s, but height 1 waits for 34 prevotes before any timer
  runs, while the formation's floods still fill the air).

The same two 8-node runs are repeated with neighbour gossip off (``BridgeConfig(gossip=
False)``: every consensus message one mesh flood) and printed as the baseline line
``flood latency_ratio=... ops_per_s=... bytes_per_op_ratio=...`` (skip with ``--no-flood``).

- join_heights (run once, not per seed): on a 7-validator ``pi-tuned`` table formed at
  runtime (``ble_bridge.sim.runtime``, the seated nodes betting so heights go on), an 8th
  node joins 20 times, leaving in between; the median number of heights from the height in
  progress when the first validator hears its join request to the first height whose
  certificate counts its vote (goal <= 3).

Last line, exactly:
``consensus latency_ratio=<float> ops_per_s=<float> bytes_per_op_ratio=<float> nodes50=<ok|fail> join_heights=<float>``
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import random
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ble_bridge.air.clock import run_virtual
from ble_bridge.air.network import Network, SimNode
from ble_bridge.air.profiles import get_profile
from ble_bridge.bridge import BridgeConfig, BridgeError
from ble_bridge.consensus.engine import Committed
from ble_bridge.consensus.testing import LedgerApp, add_op
from ble_bridge.mesh.config import MeshConfig
from ble_bridge.sim.scenario import ScenarioConfig, run_scenario
from ble_bridge.sim.table import TableNode, table_node_factory
from ble_bridge.wire.identity import Identity
from ble_bridge.wire.messages import (
    Block,
    Message,
    Proposal,
    Step,
    Vote,
    encode_message,
)
from ble_bridge.wire.packet import Packet, PacketType, encode

SESSION = hashlib.sha256(b"bench/consensus").digest()[:16]


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
    _sent: int = 0
    network: Network | None = None

    def attach(self, network: Network) -> None:
        self.network = network
        network.on_node_start.append(self._started)
        network.on_node_stop.append(self._stopped)

    def _started(self, index: int, node: SimNode) -> None:
        assert isinstance(node, TableNode)

        def hook(sid: bytes, ev: Committed) -> None:
            now = self.network.now if self.network is not None else 0.0
            if index == 0:
                self.blocks.append(ev.block)
            if ev.block.hash in self.proposed:
                self.decide.append(now - self.proposed[ev.block.hash])
            for op in ev.ops:
                sub = self.submitted.get(op.op_id)
                if sub is not None and sub[0] == index:
                    del self.submitted[op.op_id]
                    self.delivered += 1
                    self.latencies.append(now - sub[1])

        node.bridge.commit_hooks.append(hook)
        transmit = node.bridge.transmit

        def spy(session_id: bytes, msg: Message) -> None:
            if isinstance(msg, Proposal) and self.network is not None:
                self.proposed.setdefault(msg.block.hash, self.network.now)
            transmit(session_id, msg)

        node.bridge.transmit = spy  # type: ignore[method-assign]

    def _stopped(self, index: int, node: SimNode) -> None:
        assert isinstance(node, TableNode)
        self.heights[index] = node.engine.height

    async def run(self, network: Network, start: float, stop: float) -> None:
        rng = network.seeds.rng("bench-load")
        loop = network.loop
        total = self.rate * len(network)
        t = max(loop.time(), start)
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
        self.links = network.air.link_pairs()

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

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) if self.latencies else math.nan

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.play


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
) -> LoadResult:
    wl = LoadWorkload(rate)
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


def one_hop_delay(profile_name: str) -> float:
    """A connection interval plus the airtime of a vote frame on one link."""
    p = get_profile(profile_name)
    ident = Identity.from_seed(b"bench-one-hop".ljust(32, b"."))
    vote = Vote.create(ident.sign, ident.signing_public, SESSION, Step.PREVOTE, 1, 0, bytes(32))
    frame = frame_size(ident, encode_message(SESSION, vote))
    return sum(p.conn_interval) / 2 + p.frame_seconds(frame, p.link_rate)


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--duration", type=float, default=70.0, help="simulated seconds (8 nodes, load from 15 s)"
    )
    ap.add_argument("--rate", type=float, default=10.0, help="ops/s offered per node (load)")
    ap.add_argument(
        "--light-rate", type=float, default=0.25, help="ops/s per node for the latency run"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--nodes50-profile", default="ideal")
    ap.add_argument("--nodes50-topology", default="grid")
    ap.add_argument("--nodes50-duration", type=float, default=45.0)
    ap.add_argument("--no-flood", action="store_true", help="skip the flood baseline runs")
    args = ap.parse_args(argv)
    random.seed(args.seed)
    if not args.no_flood:
        flood = BridgeConfig(gossip=False)
        fl = run_load(8, duration=args.duration, rate=args.light_rate, seed=args.seed, bridge=flood)
        fs = run_load(8, duration=args.duration, rate=args.rate, seed=args.seed, bridge=flood)
        fmin = 3 * one_hop_delay(fl.profile) * max(1, fl.diameter)
        print(
            f"flood latency_ratio={fl.p50 / fmin:.2f} ops_per_s={fs.ops_per_s:.1f} "
            f"bytes_per_op_ratio={fs.bytes_on_air / max(1, fs.lower_bound_bytes):.2f}"
        )

    light = run_load(8, duration=args.duration, rate=args.light_rate, seed=args.seed)
    hop = one_hop_delay(light.profile)
    minimum = 3 * hop * max(1, light.diameter)
    latency_ratio = light.p50 / minimum
    print(
        f"8 nodes pi-tuned, light load ({args.light_rate} ops/s a node): {light.heights} "
        f"heights, p50 {light.p50 * 1000:.0f} ms vs minimum {minimum * 1000:.0f} ms "
        f"(hop {hop * 1000:.1f} ms x diameter {light.diameter} x 3), wall {light.wall:.1f} s"
    )
    decide = statistics.median(light.decide) if light.decide else math.nan
    print(
        f"  of which consensus (proposal -> commit, every node): p50 {decide * 1000:.0f} ms "
        f"= {decide / minimum:.2f} x minimum; the rest is the op's way to a proposer and the "
        "height in progress"
    )
    r = run_load(8, duration=args.duration, rate=args.rate, seed=args.seed)
    bytes_ratio = r.bytes_on_air / r.lower_bound_bytes if r.lower_bound_bytes else math.inf
    print(
        f"8 nodes pi-tuned, saturated ({args.rate} ops/s a node offered): {r.heights} heights, "
        f"{r.ops} ops in {r.play:.0f} s ({r.ops_per_s:.1f} ops/s, "
        f"{r.ops / max(1, r.heights):.1f} ops/block), p50 {r.p50 * 1000:.0f} ms, "
        f"air {r.bytes_on_air:,} B vs lower bound {r.lower_bound_bytes:,} B, "
        f"wall {r.wall:.1f} s"
    )
    big = run_load(
        50,
        profile=args.nodes50_profile,
        topology=args.nodes50_topology,
        duration=args.nodes50_duration,
        warmup=3.0,
        rate=0.2,
        seed=args.seed,
        mesh=nodes50_mesh(args.nodes50_profile),
    )
    nodes50 = big.min_height >= 10
    print(
        f"50 nodes {big.profile}: heights (slowest node) {big.min_height}, "
        f"{big.ops} ops, wall {big.wall:.1f} s"
    )
    joined, wall = run_join_heights(args.seed)
    join_heights = statistics.median(joined) if joined else math.nan
    print(
        f"churn: an 8th node joined a 7-validator pi-tuned table {len(joined)} times: heights "
        f"from its request to its first counted vote median {join_heights:g}, worst "
        f"{max(joined, default=0)} (goal <= 3), wall {wall:.1f} s"
    )
    print(
        f"consensus latency_ratio={latency_ratio:.2f} ops_per_s={r.ops_per_s:.1f} "
        f"bytes_per_op_ratio={bytes_ratio:.2f} nodes50={'ok' if nodes50 else 'fail'} "
        f"join_heights={join_heights:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
