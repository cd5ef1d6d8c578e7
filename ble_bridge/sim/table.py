"""The craps-table consensus scenario: handhelds play rounds over the loopback air.

Each simulated node is a :class:`TableNode`: the real :class:`~ble_bridge.node.Node` (mesh
node, bridge, store) running one craps session (optionally on a SQLite file that survives
crashes, optionally with a Byzantine bridge). :class:`TableWorkload` makes every node a
:class:`~ble_bridge.consensus.craps.TablePlayer` (join, bet, commit, reveal) and records
every commit. :func:`simulate_table` runs it through :func:`~.scenario.run_scenario`, the
same network, faults and metrics as the mesh scenario, and checks safety at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..air.clock import Seeds, run_virtual
from ..air.faults import FaultPlan, Heal, Partition
from ..air.network import Network, NodeFactory, NodeSpec, SimNode
from ..bridge import BridgeConfig, NetworkConsensusBridge
from ..consensus.app import Application
from ..consensus.craps import CrapsApp, PhoneOp, TablePlayer, check_invariants, decode_op
from ..consensus.engine import Committed, ConsensusEngine
from ..mesh.config import MeshConfig
from ..mesh.router import Delivered
from ..node import BridgeFactory, Node, NodeConfig, NodeSection, Seat, SessionSection
from ..wire.identity import Identity, verify_signature
from ..wire.messages import MessageError, Vote, decode_message
from ..wire.packet import PacketType, WireError, decode
from .byzantine import Behaviour, byzantine_bridge
from .scenario import ProgressCallback, ScenarioConfig, ScenarioResult, run_scenario


def table_session_id(seed: int) -> bytes:
    return hashlib.sha256(b"ble-bridge/sim/craps-table/%d" % seed).digest()[:16]


TABLE_SESSION_NAME = "craps-table"


def table_node_config(
    validators: list[Identity],
    session_id: bytes,
    *,
    mesh_config: MeshConfig | None = None,
    bridge_config: BridgeConfig | None = None,
) -> NodeConfig:
    """The configuration of a simulated handheld: one session, no control socket, no LED."""
    return NodeConfig(
        node=NodeSection(board="generic", control_socket=Path()),
        mesh=mesh_config or MeshConfig(),
        bridge=bridge_config or BridgeConfig(),
        sessions=(
            SessionSection(
                name=TABLE_SESSION_NAME,
                validators=tuple(v.signing_public.hex() for v in validators),
                id=session_id.hex(),
            ),
        ),
    )


class TableNode(Node):
    """A handheld at the table: a :class:`~ble_bridge.node.Node` with one session on the air.

    Assembled by ``Node`` like ``ble-bridge run``'s; only the transport (the loopback air),
    the clock, the seeded rng and the optional Byzantine bridge differ. Without
    ``store_path`` its consensus state lives in memory.
    """

    def __init__(
        self,
        spec: NodeSpec,
        session_id: bytes,
        *,
        mesh_config: MeshConfig | None = None,
        bridge_config: BridgeConfig | None = None,
        store_path: Path | None = None,
        behaviour: Behaviour | None = None,
        app: Callable[[], Application[Any]] = CrapsApp,
        validators: int | None = None,
        seats: Sequence[int] | None = None,
    ) -> None:
        # the first ``validators`` identities of the network sit at the table (all: None);
        # the others are e.g. simulated phones; or those of the nodes ``seats`` (one of
        # several tables on the mesh)
        identities = spec.network.identities[:validators]
        if seats is not None:
            identities = [spec.network.identities[i] for i in seats]
        bridge: BridgeFactory = NetworkConsensusBridge
        if behaviour is not None:
            rng = spec.network.seeds.rng("byzantine", spec.index, spec.generation)
            bridge = byzantine_bridge(behaviour, rng)
        super().__init__(
            table_node_config(
                identities, session_id, mesh_config=mesh_config, bridge_config=bridge_config
            ),
            identity=spec.identity,
            transport=spec.transport,
            rng=spec.rng,
            wall_offset=spec.wall_offset,
            store_path=store_path,
            tables_path=store_path.with_suffix(".tables.json") if store_path else None,
            peer_keys={i.peer_id: i.signing_public for i in identities},
            bridge_factory=bridge,
            app_factory=lambda _name: app(),
        )
        self.index = spec.index
        self.session_id = session_id
        self.behaviour = behaviour
        self.engine: ConsensusEngine[Any] = self.bridge.engine(session_id)

    @property
    def honest(self) -> bool:
        return self.behaviour is None


def table_node_factory(
    session_id: bytes,
    *,
    mesh_config: MeshConfig | None = None,
    bridge_config: BridgeConfig | None = None,
    store_dir: Path | None = None,
    byzantine: dict[int, Behaviour] | None = None,
    app: Callable[[], Application[Any]] = CrapsApp,
    validators: int | None = None,
    phones: Callable[[NodeSpec], SimNode] | None = None,
) -> NodeFactory:
    """Factory of :class:`TableNode`; with ``store_dir`` node i keeps ``node{i}.sqlite``.
    With ``validators``, nodes from that index on are built by ``phones``."""

    def make(spec: NodeSpec) -> SimNode:
        if validators is not None and spec.index >= validators and phones is not None:
            return phones(spec)
        path = store_dir / f"node{spec.index}.sqlite" if store_dir is not None else None
        return TableNode(
            spec,
            session_id,
            mesh_config=mesh_config,
            bridge_config=bridge_config,
            store_path=path,
            behaviour=(byzantine or {}).get(spec.index),
            app=app,
            validators=validators,
        )

    return make


@dataclass(slots=True)
class NodeRecord:
    """What one node index committed over all its lives."""

    chain: dict[int, bytes] = field(default_factory=dict)
    ops_at: dict[int, int] = field(default_factory=dict)
    bad_ops: int = 0
    invariant_errors: list[str] = field(default_factory=list)
    final_height: int = 0
    snapshots: int = 0
    last_commit_at: float = -1.0
    lost_blocks: int = 0  # a restart came back below the height committed before the crash


class TableWorkload:
    """Every node plays craps with a :class:`TablePlayer` every ``interval`` seconds.

    Node i's player (and its :class:`~ble_bridge.node.Seat`) outlives the node's restarts.
    """

    def __init__(
        self, session_id: bytes, interval: float = 0.25, *, watch_votes: bool = False
    ) -> None:
        self.session_id = session_id
        self.interval = interval
        self.watch_votes = watch_votes
        self.signed: dict[tuple[bytes, int, int, int], Vote] = {}
        self.double_signs: list[tuple[bytes, int, int, int]] = []
        self._watched: set[bytes] = set()
        self.marks: dict[str, dict[int, int]] = {}
        self.network: Network | None = None
        self.seats: dict[int, Seat] = {}
        self.records: dict[int, NodeRecord] = {}
        self.submitted: dict[bytes, tuple[int, float]] = {}
        self.phone_bets_at: dict[int, int] = {}  # height -> phone bets committed in it
        self.commit_samples: list[tuple[float, float]] = []  # (commit time, latency)
        self.refused: Counter[str] = Counter()
        self.bridge_drops: Counter[str] = Counter()
        self.bridge_counters: Counter[str] = Counter()
        self.delivered = 0
        self.duplicates = 0
        self.latencies: list[float] = []
        self._sent = 0

    # -- Workload protocol --------------------------------------------------------------

    def attach(self, network: Network) -> None:
        self.network = network
        network.on_node_start.append(self._node_started)
        network.on_node_stop.append(self._node_stopped)

    async def run(self, network: Network, start: float, stop: float) -> None:
        loop = network.loop
        await asyncio.sleep(max(0.0, start - loop.time()))
        while loop.time() < stop:
            for i in network.up():
                self._play(network, i)
            await asyncio.sleep(self.interval)

    @property
    def sent(self) -> int:
        return self._sent

    @property
    def expected(self) -> int:
        return self._sent

    # -- hooks --------------------------------------------------------------------------

    def _node_started(self, index: int, node: SimNode) -> None:
        if not isinstance(node, TableNode):
            return
        rec = self.records.setdefault(index, NodeRecord())
        if node.engine.height < rec.final_height:
            rec.lost_blocks += rec.final_height - node.engine.height
        if self.watch_votes:
            node.mesh.subscribe(PacketType.CONSENSUS, self._watch)
        if index not in self.seats:
            seeds = self.network.seeds if self.network is not None else Seeds(0)
            player = TablePlayer(node.mesh.identity.signing_public, seeds.rng("player", index))
            self.seats[index] = Seat(player, node.session_id)
        node.bridge.commit_hooks.append(self._commit_hook(index, rec))

    def _commit_hook(self, index: int, rec: NodeRecord) -> Callable[[bytes, Committed], None]:
        def hook(session_id: bytes, ev: Committed) -> None:
            now = self.network.now if self.network is not None else 0.0
            rec.chain[ev.height] = ev.block.hash
            rec.ops_at[ev.height] = len(ev.ops)
            rec.last_commit_at = now
            if self.network is not None:  # in the event trace (--trace) when tracing
                self.network.air.record(
                    "commit", index, ev.height, len(ev.ops), ev.block.hash.hex()
                )
            phone_bets = 0
            for op in ev.ops:
                try:
                    decoded = decode_op(op.body)
                except ValueError:
                    rec.bad_ops += 1
                else:
                    if isinstance(decoded, PhoneOp):
                        with contextlib.suppress(WireError):
                            phone_bets += decode(decoded.message).payload.startswith(b"!bet ")
                sub = self.submitted.get(op.op_id)
                if sub is not None and sub[0] == index:
                    del self.submitted[op.op_id]
                    self.delivered += 1
                    self.latencies.append(now - sub[1])
                    self.commit_samples.append((now, now - sub[1]))
            if phone_bets:
                self.phone_bets_at[ev.height] = phone_bets

        return hook

    def _node_stopped(self, index: int, node: SimNode) -> None:
        if not isinstance(node, TableNode):
            return
        rec = self.records.setdefault(index, NodeRecord())
        rec.final_height = node.engine.height
        rec.snapshots += node.engine.stats["snapshots_installed"]
        if node.honest:
            try:
                check_invariants(node.engine.state)
            except Exception as exc:  # any failure is a safety violation
                rec.invariant_errors.append(f"{type(exc).__name__}: {exc}")
        st = node.bridge.stats()
        self.bridge_drops.update(st.drops)
        self.bridge_counters.update(node.bridge.counters)

    def mark(self, label: str) -> None:
        """Record every running node's committed height under ``label``."""
        net = self.network
        if net is None:
            return
        self.marks[label] = {
            i: n.engine.height for i, n in enumerate(net.nodes) if isinstance(n, TableNode)
        }

    def _watch(self, event: Delivered) -> None:
        """Every distinct vote on the air: two different ones for one (signer, h, r, step)
        from the same signer are a double sign."""
        payload = event.packet.payload
        digest = hashlib.blake2b(payload, digest_size=16).digest()
        if digest in self._watched:
            return
        if len(self._watched) < 1_000_000:
            self._watched.add(digest)
        try:
            _, msg = decode_message(payload)
        except MessageError:
            return
        if not isinstance(msg, Vote):
            return
        key = (msg.validator, msg.height, msg.round, int(msg.step))
        prev = self.signed.setdefault(key, msg)
        if prev.block_hash == msg.block_hash or key in self.double_signs:
            return
        sid = self.session_id
        ok_prev = verify_signature(prev.validator, prev.signature, prev.signing_bytes(sid))
        ok_new = verify_signature(msg.validator, msg.signature, msg.signing_bytes(sid))
        if ok_prev and ok_new:
            self.double_signs.append(key)
        elif ok_new:  # the first one was a forgery in this validator's name
            self.signed[key] = msg

    def _play(self, network: Network, index: int) -> None:
        node = network.nodes[index]
        if not isinstance(node, TableNode):
            return
        seat = self.seats.get(index)
        if seat is None:
            return
        turn = seat.play(node.bridge, network.now)
        self.refused.update(turn.refused)
        for op_id in turn.submitted:
            self._sent += 1
            if len(self.submitted) < 100_000:
                self.submitted[op_id] = (index, network.now)


@dataclass(frozen=True, slots=True)
class TableConfig:
    """The table on top of a :class:`ScenarioConfig`."""

    scenario: ScenarioConfig = field(
        default_factory=lambda: ScenarioConfig(duration=60.0, warmup=3.0, drain=5.0, trace=False)
    )
    byzantine: int = 0
    behaviour: Behaviour = Behaviour.EQUIVOCATE
    partition: tuple[float, float] | None = None
    """(start, heal): a minority of f validators is cut off from the majority."""
    store: bool = False
    """Keep each node's SQLite file (always on when the fault plan crashes nodes)."""
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    play_interval: float = 0.25
    watch_votes: bool = False
    """Decode every distinct vote on the air to catch double signs (costs some speed)."""
    phones: int = 0
    """Simulated BitChat phones on the air besides the nodes (``sim/phone.py``)."""
    phone_flood: float = 0.0
    """``PhonePlan.flood``: public ``!`` commands a second from each phone besides its plan."""


@dataclass(slots=True)
class TableResult:
    """Consensus metrics of one run and its safety verdict."""

    config: TableConfig
    scenario: ScenarioResult
    byzantine: dict[int, Behaviour]
    heights: int
    ops: int
    latencies: list[float]
    commit_samples: list[tuple[float, float]]
    agreement: bool
    valid: bool
    invariants: bool
    final_heights: dict[int, int]
    bridge_drops: Counter[str]
    bridge_counters: Counter[str]
    refused: Counter[str]
    partition_groups: tuple[tuple[int, ...], ...] = ()
    double_signs: int = 0
    lost_blocks: int = 0
    marks: dict[str, dict[int, int]] = field(default_factory=dict)
    last_commit_at: dict[int, float] = field(default_factory=dict)
    snapshots: dict[int, int] = field(default_factory=dict)
    phone_totals: Counter[str] = field(default_factory=Counter)
    phone_latencies: list[float] = field(default_factory=list)
    """Seconds from a phone's !bet to the table's public line naming that bet."""

    @property
    def safe(self) -> bool:
        return (
            self.agreement
            and self.valid
            and self.invariants
            and self.double_signs == 0
            and self.lost_blocks == 0
        )

    @property
    def honest(self) -> list[int]:
        return [i for i in self.final_heights if i not in self.byzantine]

    @property
    def bytes_on_air(self) -> int:
        return self.scenario.air_stats["bytes_sent"]

    @property
    def play_time(self) -> float:
        c = self.config.scenario
        return max(1e-9, c.duration - c.warmup)

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.play_time

    def latency(self, q: float) -> float:
        if not self.latencies:
            return math.nan
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]

    def last_line(self) -> str:
        p50, p95 = self.latency(0.5) * 1000, self.latency(0.95) * 1000
        line = (
            f"simulate heights={self.heights} ops={self.ops} p50_ms={p50:.1f} "
            f"p95_ms={p95:.1f} safety={'ok' if self.safe else 'violated'}"
        )
        if self.config.phones:
            pt = self.phone_totals
            line += f" phone_bets={pt['phone_bets']} phone_dms={pt['phone_dms']}"
        return line

    def summary_rows(self) -> list[tuple[str, str]]:
        r = self.scenario
        byz = ", ".join(f"{i}:{b.value}" for i, b in sorted(self.byzantine.items())) or "none"
        rows = [
            ("heights committed", str(self.heights)),
            ("operations committed", str(self.ops)),
            ("ops/s (simulated)", f"{self.ops_per_s:.1f}"),
            (
                "commit latency p50 / p95",
                f"{self.latency(0.5) * 1000:.1f} / {self.latency(0.95) * 1000:.1f} ms",
            ),
            ("operations submitted", str(r.sent)),
            ("bytes on air", f"{self.bytes_on_air:,}"),
            ("frames on air", f"{r.frames_total:,}"),
            ("byzantine", byz),
            ("final heights", " ".join(str(h) for _, h in sorted(self.final_heights.items()))),
            (
                "agreement / validity / invariants",
                f"{self.agreement} / {self.valid} / {self.invariants}",
            ),
            ("double signs / lost blocks", f"{self.double_signs} / {self.lost_blocks}"),
            ("snapshots installed", str(self.bridge_counters["snapshots_installed"])),
            ("evidence found", str(self.bridge_counters["evidence_found"])),
            ("failed operations", str(self.bridge_counters["operations_failed"])),
            (
                "sim speed",
                f"{r.sim_speed:.1f}x ({r.sim_time:.0f} s in {r.wall_time:.2f} s)",
            ),
        ]
        drops = Counter(r.drops)
        drops.update({f"bridge_{k}": v for k, v in self.bridge_drops.items()})
        drops.update({f"submit_{k}": v for k, v in self.refused.items()})
        rows += [(f"drop: {k}", str(v)) for k, v in sorted(drops.items()) if v]
        rows += [
            (f"failed: {k.removeprefix('failed_')}", str(v))
            for k, v in sorted(self.bridge_counters.items())
            if k.startswith("failed_") and v
        ]
        return rows


def _choose_byzantine(config: TableConfig) -> dict[int, Behaviour]:
    n = config.scenario.nodes
    k = max(0, min(config.byzantine, n))
    rng = Seeds(config.scenario.seed).rng("byzantine-choice")
    return {i: config.behaviour for i in sorted(rng.sample(range(n), k))}


def minority_groups(n: int, seed: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """A minority of max(1, f) nodes and the majority (which keeps a quorum)."""
    rng = Seeds(seed).rng("partition-minority")
    k = max(1, (n - 1) // 3)
    minority = tuple(sorted(rng.sample(range(n), k)))
    return minority, tuple(i for i in range(n) if i not in minority)


async def run_table(
    config: TableConfig,
    *,
    store_dir: Path | None = None,
    progress: ProgressCallback | None = None,
) -> TableResult:
    """Run the table on the running (virtual) loop."""
    sc = config.scenario
    session_id = table_session_id(sc.seed)
    byz = _choose_byzantine(config)
    plan = sc.faults
    groups: tuple[tuple[int, ...], ...] = ()
    if config.partition is not None:
        start, heal = config.partition
        groups = minority_groups(sc.nodes, sc.seed)
        plan = plan + FaultPlan((Partition(start, groups), Heal(heal)))
    from ..air.faults import Crash

    crashes = any(isinstance(f, Crash) for f in plan.faults)
    phone_totals: Counter[str] = Counter()
    phone_latencies: list[float] = []
    phone_factory = None
    if config.phones:
        from .phone import PhonePlan, SimPhone

        plan_ = PhonePlan(TABLE_SESSION_NAME, flood=config.phone_flood)

        def phone_factory(spec: NodeSpec) -> SimNode:
            return SimPhone(spec, plan_, phone_totals, phone_latencies)

    scenario = ScenarioConfig(
        nodes=sc.nodes + config.phones,
        topology=sc.topology,
        radio_range=sc.radio_range,
        profile=sc.profile,
        duration=sc.duration,
        warmup=sc.warmup,
        drain=sc.drain,
        seed=sc.seed,
        faults=plan,
        mesh=sc.mesh,
        capture=sc.capture,
        trace=sc.trace,
        progress_interval=sc.progress_interval,
    )
    factory = table_node_factory(
        session_id,
        mesh_config=sc.mesh,
        bridge_config=config.bridge,
        store_dir=store_dir if (crashes or config.store) else None,
        byzantine=byz,
        validators=sc.nodes if config.phones else None,
        phones=phone_factory,
    )
    wl = TableWorkload(session_id, config.play_interval, watch_votes=config.watch_votes)
    if config.partition is not None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        loop.call_at(t0 + config.partition[0], wl.mark, "split")
        loop.call_at(t0 + config.partition[1], wl.mark, "heal")
    result = await run_scenario(scenario, factory=factory, workload=wl, progress=progress)
    verdict = _verdict(config, result, wl, byz, groups)
    phone_totals["phone_bets_confirmed_in_chat"] = phone_totals.pop("phone_bets", 0)
    phone_totals["phone_bets"] = sum(wl.phone_bets_at.values())  # committed PhoneOp bets
    verdict.phone_totals = phone_totals
    verdict.phone_latencies = phone_latencies
    return verdict


def _verdict(
    config: TableConfig,
    result: ScenarioResult,
    wl: TableWorkload,
    byz: dict[int, Behaviour],
    groups: tuple[tuple[int, ...], ...],
) -> TableResult:
    honest = [i for i in wl.records if i not in byz]
    by_height: dict[int, bytes] = {}
    agreement = True
    for i in honest:
        for h, bh in wl.records[i].chain.items():
            if by_height.setdefault(h, bh) != bh:
                agreement = False
    ops_at: dict[int, int] = {}
    for i in honest:
        ops_at.update(wl.records[i].ops_at)
    honest_keys = {wl.seats[i].player.key for i in honest if i in wl.seats}
    double = sum(1 for key in wl.double_signs if key[0] in honest_keys)
    heights = max((wl.records[i].final_height for i in honest), default=0)
    heights = max(heights, max(by_height, default=0))
    return TableResult(
        config=config,
        scenario=result,
        byzantine=byz,
        heights=heights,
        ops=sum(ops_at.values()),
        latencies=wl.latencies,
        commit_samples=wl.commit_samples,
        agreement=agreement,
        valid=all(wl.records[i].bad_ops == 0 for i in honest),
        invariants=all(not wl.records[i].invariant_errors for i in honest),
        final_heights={i: r.final_height for i, r in sorted(wl.records.items())},
        bridge_drops=wl.bridge_drops,
        bridge_counters=wl.bridge_counters,
        refused=wl.refused,
        partition_groups=groups,
        double_signs=double,
        lost_blocks=sum(wl.records[i].lost_blocks for i in honest),
        marks=wl.marks,
        last_commit_at={i: r.last_commit_at for i, r in sorted(wl.records.items())},
        snapshots={i: r.snapshots for i, r in sorted(wl.records.items())},
    )


def simulate_table(
    config: TableConfig,
    *,
    store_dir: Path | None = None,
    progress: ProgressCallback | None = None,
) -> TableResult:
    """Run the table on a fresh virtual loop; a temporary directory holds SQLite files."""
    if store_dir is not None:
        return run_virtual(
            run_table(config, store_dir=store_dir, progress=progress), seed=config.scenario.seed
        )
    with tempfile.TemporaryDirectory(prefix="ble-bridge-table-") as tmp:
        return run_virtual(
            run_table(config, store_dir=Path(tmp), progress=progress), seed=config.scenario.seed
        )


def plot_latency(result: TableResult, path: Path) -> None:
    """PNG of commit latency over simulated time (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    if result.commit_samples:
        xs = [t for t, _ in result.commit_samples]
        ys = [lat * 1000 for _, lat in result.commit_samples]
        ax.scatter(xs, ys, s=6, alpha=0.5, label="op commit latency")
    p = result.config.partition
    if p is not None:
        ax.axvspan(p[0], p[1], color="orange", alpha=0.15, label="partition")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("commit latency (ms)")
    c = result.config.scenario
    ax.set_title(
        f"{c.nodes} nodes, {c.topology}, {c.profile}, seed {c.seed}: "
        f"p50 {result.latency(0.5) * 1000:.0f} ms, p95 {result.latency(0.95) * 1000:.0f} ms"
    )
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
