"""Tables formed at runtime on the loopback air: nodes with no ``[[session]]`` at all.

Each :class:`RuntimeNode` is the real :class:`~ble_bridge.node.Node` (mesh, bridge, table
service; optionally a SQLite file and a ``tables.json`` that survive crashes) whose tables
come from ``sit``/``join``/``leave`` at runtime. :class:`ChurnLog` records every commit of
every node index over all its lives, so a scenario can check that all nodes ended at one
table with one history. :class:`Bettor` makes seated nodes bet now and then, so the table
rolls (and heights advance, which is what silence is counted in).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..air.network import NodeFactory, NodeSpec, SimNode
from ..bridge import BridgeConfig, NetworkConsensusBridge
from ..consensus.craps import CrapsState, Stage
from ..consensus.engine import Committed
from ..mesh.config import MeshConfig
from ..node import BridgeFactory, Node, NodeConfig, NodeSection
from ..tables.errors import TableError
from ..tables.service import TablesConfig

# a bench-like table: joins commit in a few heights of an otherwise idle table
SIM_TABLES = TablesConfig(announce_min_interval=1.0, announce_max_interval=16.0)


@dataclass(slots=True)
class ChurnLog:
    """What every node index committed (session -> height -> block hash), all lives."""

    chains: dict[int, dict[bytes, dict[int, bytes]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(dict))
    )
    conflicts: int = 0  # one index saw two blocks at one height (across a restart)

    def hook(self, index: int) -> Any:
        def on_commit(session_id: bytes, ev: Committed) -> None:
            chain = self.chains[index][session_id]
            old = chain.get(ev.height)
            if old is not None and old != ev.block.hash:
                self.conflicts += 1
            chain[ev.height] = ev.block.hash

        return on_commit

    def agreement(self, session_id: bytes, among: Collection[int] | None = None) -> bool:
        """No two nodes (of ``among``, default all) committed different blocks at one
        height of ``session_id``."""
        seen: dict[int, bytes] = {}
        for index, sessions in self.chains.items():
            if among is not None and index not in among:
                continue
            for h, block in sessions.get(session_id, {}).items():
                if seen.setdefault(h, block) != block:
                    return False
        return self.conflicts == 0


class RuntimeNode(Node):
    """A handheld with no pre-arranged table (see the module docstring)."""

    def __init__(
        self,
        spec: NodeSpec,
        log: ChurnLog,
        *,
        tables: TablesConfig = SIM_TABLES,
        bridge_config: BridgeConfig | None = None,
        mesh_config: MeshConfig | None = None,
        store_dir: Path | None = None,
        bridge_factory: BridgeFactory | None = None,
    ) -> None:
        identities = spec.network.identities
        config = NodeConfig(
            node=NodeSection(board="generic", control_socket=Path()),
            mesh=dataclasses.replace(mesh_config or MeshConfig(), nickname=f"node-{spec.index}"),
            bridge=bridge_config or BridgeConfig(),
            tables=tables,
        )
        store = store_dir / f"node{spec.index}.sqlite" if store_dir is not None else None
        super().__init__(
            config,
            identity=spec.identity,
            transport=spec.transport,
            rng=spec.rng,
            wall_offset=spec.wall_offset,
            store_path=store,
            tables_path=store.with_suffix(".tables.json") if store is not None else None,
            peer_keys={i.peer_id: i.signing_public for i in identities},
            bridge_factory=bridge_factory or NetworkConsensusBridge,
        )
        self.index = spec.index
        self.bridge.commit_hooks.append(log.hook(spec.index))


def runtime_node_factory(log: ChurnLog, **kw: Any) -> NodeFactory:
    def make(spec: NodeSpec) -> SimNode:
        return RuntimeNode(spec, log, **kw)

    return make


class Bettor:
    """Bets ``amount`` on the field at every table a node sits at, when betting is open
    and it has no bet there yet (refusals are counted, never raised)."""

    def __init__(self, amount: int = 1) -> None:
        self.amount = amount
        self.placed = 0
        self.refused: dict[str, int] = defaultdict(int)

    def play(self, node: Node) -> None:
        me = node.identity.signing_public
        for sid, name in list(node.tables.names.items()):
            engine = node.bridge.engine(sid)
            state = engine.state
            if not engine.is_validator or not isinstance(state, CrapsState):
                continue
            if state.stage != Stage.BETTING or any(b.player == me for b in state.bets):
                continue
            if node.bridge.pending_operations(sid):
                continue
            try:
                node.tables.bet(name, "field", self.amount)
                self.placed += 1
            except TableError as exc:
                self.refused[exc.reason] += 1


__all__ = ["SIM_TABLES", "Bettor", "ChurnLog", "RuntimeNode", "runtime_node_factory"]
