"""``ble-bridge simulate --churn``: tables that form at runtime, with people coming and going.

Every node is a :class:`~.runtime.RuntimeNode` (no pre-arranged session; SQLite files in a
temporary directory, so a crashed node that restarts takes its seat up again). After the
warm-up node 0 opens the table; the others sit down one by one at random times in the
first third of the run; two of them leave in the middle and one of those sits down again
later. Crashes (``--crash``, ``--faults crash:...``), partitions and loss come from the
shared fault options; a crashed node that does not come back is removed by the others once
it was silent for ``silence_heights``. Seated nodes bet (``Bettor``), so the table rolls.

Byzantine nodes (``byzantine``: node index -> behaviour) are never node 0, sit down like
the others, and lie: the wire-level behaviours of ``simulate --byzantine`` through a
:class:`~.byzantine.ByzantineFilter`, or the set-change attacks of :mod:`.churn_attacks`
(``sponsor``, ``forged-join``, ``join-replay``, ``removed-votes``; the last two leave the
table at 40 % of the run and never sit down again).

Counted from the committed chain (so restarts do not lose them): ``joins`` (AddValidator
committed), ``leaves`` (RemoveValidator, reason leave), ``removals`` (RemoveValidator,
reason silent). Safety: no two honest nodes committed different blocks at one height, every
honest node that sits at a table sits at the same one, and no attack shows in the honest
nodes' final sets (more seats than the table has, a forged or replayed join seated).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..air.clock import Seeds, run_virtual
from ..air.network import Network, NodeSpec, SimNode
from ..air.profiles import get_profile
from ..air.topology import build
from ..consensus.engine import Committed
from ..consensus.validators import (
    AddValidator,
    RemoveReason,
    RemoveValidator,
    SetOp,
    SetOpError,
    decode_set_op,
    is_set_op,
)
from ..tables.errors import TableError
from .byzantine import BEHAVIOURS, Behaviour, byzantine_bridge
from .churn_attacks import CHURN_BEHAVIOURS, LEAVING, Attacker
from .runtime import SIM_TABLES, Bettor, ChurnLog, RuntimeNode
from .scenario import Progress, ScenarioConfig

TABLE = "churn"
CHURN_TABLES = dataclasses.replace(SIM_TABLES, silence_heights=16, probation_heights=8)
CHURN_SEATS = CHURN_TABLES.default_seats


@dataclass(slots=True)
class ChurnResult:
    config: ScenarioConfig
    heights: int = 0
    ops: int = 0
    latencies: list[float] = field(default_factory=list)
    joins: int = 0
    leaves: int = 0
    removals: int = 0
    tables: int = 0  # distinct tables nodes sit at, at the end
    agreement: bool = True
    seated: int = 0
    wall_time: float = 0.0
    events: list[str] = field(default_factory=list)
    byzantine: dict[int, str] = field(default_factory=dict)
    attacks: dict[str, int] = field(default_factory=dict)  # what the attackers sent
    violations: list[str] = field(default_factory=list)
    # what the honest nodes refused (engine drop_* stats and bridge drops, summed)
    refused: dict[str, int] = field(default_factory=dict)
    # the honest nodes' final validator sets of the table
    final_sets: list[tuple[bytes, ...]] = field(default_factory=list)

    @property
    def safe(self) -> bool:
        return not self.reasons()

    def reasons(self) -> list[str]:
        """Why the run is unsafe, one line each (empty: safe); never unsafe unnamed."""
        out = list(self.violations)
        if not self.agreement:
            out.append("two honest nodes committed different blocks at one height")
        if self.tables > 1:
            out.append(f"honest nodes sit at {self.tables} tables")
        return out

    def latency(self, q: float) -> float:
        xs = sorted(self.latencies)
        if not xs:
            return math.nan
        return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]

    def last_line(self) -> str:
        p50, p95 = self.latency(0.5) * 1000, self.latency(0.95) * 1000
        return (
            f"simulate heights={self.heights} ops={self.ops} p50_ms={p50:.1f} "
            f"p95_ms={p95:.1f} safety={'ok' if self.safe else 'violated'} "
            f"joins={self.joins} leaves={self.leaves} removals={self.removals}"
        )

    def summary_rows(self) -> list[tuple[str, str]]:
        return [
            ("heights committed", str(self.heights)),
            ("operations committed", str(self.ops)),
            (
                "commit latency p50 / p95",
                f"{self.latency(0.5) * 1000:.1f} / {self.latency(0.95) * 1000:.1f} ms",
            ),
            ("joins / leaves / removals", f"{self.joins} / {self.leaves} / {self.removals}"),
            ("seated at the end", str(self.seated)),
            (
                "byzantine",
                ", ".join(f"{i}:{b}" for i, b in sorted(self.byzantine.items())) or "none",
            ),
            ("attacks sent", ", ".join(f"{k}={v}" for k, v in sorted(self.attacks.items())) or "-"),
            ("tables at the end", str(self.tables)),
            ("safety", "ok" if self.safe else "violated"),
            ("wall time", f"{self.wall_time:.1f} s"),
        ]


class _ChainCount:
    """Set changes and ops per height of the table, from any node's commits."""

    def __init__(self) -> None:
        self.heights: dict[int, tuple[int, int, int, int]] = {}
        self.changes: dict[int, list[SetOp]] = {}  # the set changes each height committed

    def hook(self, _sid: bytes, ev: Committed) -> None:
        if ev.height in self.heights:
            return
        joins = leaves = removals = 0
        changes = self.changes.setdefault(ev.height, [])
        for op in ev.ops:
            if not is_set_op(op.body):
                continue
            try:
                change = decode_set_op(op.body)
            except SetOpError:
                continue
            changes.append(change)
            if isinstance(change, AddValidator):
                joins += 1
            elif isinstance(change, RemoveValidator):
                if change.reason is RemoveReason.SILENT:
                    removals += 1
                else:
                    leaves += 1
        self.heights[ev.height] = (len(ev.ops), joins, leaves, removals)


def choose_byzantine(nodes: int, count: int, behaviour: str, seed: int) -> dict[int, str]:
    """``count`` Byzantine node indices (never node 0, the opener) for ``behaviour``."""
    if behaviour not in BEHAVIOURS + CHURN_BEHAVIOURS:
        raise ValueError(f"unknown behaviour {behaviour!r}")
    if not 0 <= count <= nodes - 1:
        raise ValueError("--byzantine must be within 0..--nodes - 1 with --churn")
    picked = Seeds(seed).rng("churn-byzantine").sample(range(1, nodes), count)
    return {i: behaviour for i in sorted(picked)}


def _seated(node: RuntimeNode) -> bool:
    return any(
        name == TABLE and node.bridge.engine(sid).is_validator
        for sid, name in node.tables.names.items()
    )


async def run_churn(
    config: ScenarioConfig,
    store_dir: Path,
    progress: Callable[[Progress], None] | None = None,
    byzantine: dict[int, str] | None = None,
) -> ChurnResult:
    wall0 = time.perf_counter()
    log = ChurnLog()
    count = _ChainCount()
    byz = dict(byzantine or {})
    topo = build(
        config.topology, config.nodes, Seeds(config.seed).rng("topology"), config.radio_range
    )

    def factory(spec: NodeSpec) -> SimNode:
        behaviour = byz.get(spec.index)
        bridge = None
        if behaviour in BEHAVIOURS:
            rng = spec.network.seeds.rng("byzantine", spec.index, spec.generation)
            bridge = byzantine_bridge(Behaviour(behaviour), rng)
        return RuntimeNode(
            spec,
            log,
            tables=CHURN_TABLES,
            mesh_config=config.mesh,
            store_dir=store_dir,
            bridge_factory=bridge,
        )

    attackers = {
        i: Attacker(i, b, TABLE, config.seed) for i, b in byz.items() if b in CHURN_BEHAVIOURS
    }
    net = Network(
        topo,
        get_profile(config.profile),
        factory,
        seed=config.seed,
        faults=config.faults,
        trace=False,
    )

    def hooked(index: int, node: object) -> None:
        if isinstance(node, RuntimeNode):
            node.bridge.commit_hooks.append(count.hook)

    net.on_node_start.append(hooked)
    result = ChurnResult(config, byzantine=byz)
    await net.start()
    loop = net.loop
    t0 = net.now
    rng = random.Random(f"churn/{config.seed}")
    d = config.duration
    warm = config.warmup

    def act(i: int, what: str) -> None:
        node = net.nodes[i]
        if not isinstance(node, RuntimeNode):
            return  # crashed meanwhile
        try:
            if what == "leave":
                if i in attackers and not _seated(node):
                    loop.call_later(2.0, act, i, what)  # an attacker leaves a seat it holds
                    return
                node.tables.leave(TABLE)
                if i in attackers:
                    attackers[i].asked_leave = True
            else:
                node.tables.sit(TABLE)
        except TableError as exc:
            if exc.reason in ("table_full", "unknown_table", "leave_pending", "busy"):
                loop.call_later(2.0, act, i, what)  # not heard yet, or a moment too early
            result.events.append(f"{net.now - t0:.1f} node {i} {what}: {exc.reason}")
            return
        result.events.append(f"{net.now - t0:.1f} node {i} {what}")

    loop.call_at(t0 + warm, act, 0, "sit")
    others = list(range(1, config.nodes))
    for i in others:
        loop.call_at(t0 + rng.uniform(warm + 1.0, warm + max(2.0, d / 3)), act, i, "sit")
    leaving = [i for i, a in attackers.items() if a.behaviour in LEAVING]
    for i in leaving:
        loop.call_at(t0 + d * 0.4, act, i, "leave")
    others = [i for i in others if i not in leaving]
    leavers = rng.sample(others, min(2, len(others) - 1)) if len(others) >= 3 else []
    for k, i in enumerate(leavers):
        loop.call_at(t0 + rng.uniform(d * 0.45, d * 0.6), act, i, "leave")
        if k == 0:
            loop.call_at(t0 + d * 0.75, act, i, "sit")
    bettor = Bettor()
    latencies: list[float] = []
    while net.now - t0 < d:
        for n in list(net.nodes):
            if isinstance(n, RuntimeNode):
                bettor.play(n)
                if n.index in attackers:
                    attackers[n.index].step(n, net.now)
        if progress is not None:
            up = [n for n in net.nodes if n is not None]
            progress(
                Progress(
                    net.now - t0,
                    d,
                    len(up),
                    len(net.air.link_ids()),
                    bettor.placed,
                    sum(len(c) for c in count.heights.values()),
                    0,
                )
            )
        await asyncio.sleep(1.0)
    nodes = [n for n in net.nodes if isinstance(n, RuntimeNode) and n.index not in byz]
    honest = [i for i in range(config.nodes) if i not in byz]
    ids = {
        sid
        for n in nodes
        for sid, t in n.tables.tables.items()
        if n.bridge.engine(sid).is_validator
    }
    result.tables = len(ids)
    for n in nodes:
        latencies.extend(n.bridge.latencies())
        result.seated += sum(1 for sid in n.tables.tables if n.bridge.engine(sid).is_validator)
    result.latencies = latencies
    result.agreement = all(log.agreement(sid, honest) for sid in ids) and log.conflicts == 0
    final_sets = [
        n.bridge.engine(sid).validators for n in nodes for sid in n.tables.tables if sid in ids
    ]
    seats = CHURN_SEATS
    for n in nodes:
        for sid in ids & n.tables.tables.keys():
            seats = n.tables.tables[sid].genesis.seats
    sent: Counter[str] = Counter()
    for a in attackers.values():
        result.violations += a.violations(final_sets, seats, count.changes)
        sent.update(a.sent)
    result.attacks = dict(sent)
    result.final_sets = final_sets
    refused: Counter[str] = Counter()
    for n in nodes:
        refused.update({k: v for k, v in n.bridge.drops.items() if v})
        for sid in n.tables.tables:
            stats = n.bridge.engine(sid).stats
            refused.update({k: v for k, v in stats.items() if k.startswith("drop_") and v})
    result.refused = dict(refused)
    heights = count.heights
    result.heights = max(heights, default=0)
    result.ops = sum(v[0] for v in heights.values())
    result.joins = sum(v[1] for v in heights.values())
    result.leaves = sum(v[2] for v in heights.values())
    result.removals = sum(v[3] for v in heights.values())
    await net.stop()
    result.wall_time = time.perf_counter() - wall0
    return result


def simulate_churn(
    config: ScenarioConfig,
    store_dir: Path | None = None,
    progress: Callable[[Progress], None] | None = None,
    byzantine: dict[int, str] | None = None,
) -> ChurnResult:
    if store_dir is not None:
        return run_virtual(run_churn(config, store_dir, progress, byzantine), seed=config.seed)
    with tempfile.TemporaryDirectory(prefix="ble-bridge-churn-") as tmp:
        return run_virtual(run_churn(config, Path(tmp), progress, byzantine), seed=config.seed)


__all__ = ["CHURN_BEHAVIOURS", "ChurnResult", "choose_byzantine", "run_churn", "simulate_churn"]
