"""Real MeshNodes + NetworkConsensusBridges on the loopback air, for the bridge tests.

Each node runs the ledger test application (``consensus.testing.LedgerApp``) in one or more
sessions; everything runs on a virtual-clock loop, so tests are fast and deterministic.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from ble_bridge.air.clock import Seeds, run_virtual
from ble_bridge.air.network import Network, NodeSpec, SimNode
from ble_bridge.air.profiles import get_profile
from ble_bridge.air.topology import build
from ble_bridge.bridge import BridgeConfig, NetworkConsensusBridge
from ble_bridge.consensus.testing import LedgerApp
from ble_bridge.mesh.service import MeshNode
from ble_bridge.store import Store

T = TypeVar("T")


def session_id(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()[:16]


SESSION = session_id("bridge-test")


class LedgerNode:
    """A mesh node with a bridge joined to ``sessions`` (every network identity validates)."""

    def __init__(
        self,
        spec: NodeSpec,
        sessions: Sequence[bytes],
        config: BridgeConfig | None,
        store_dir: Path | None,
    ) -> None:
        self.mesh = MeshNode(
            spec.identity, spec.transport, rng=spec.rng, wall_offset=spec.wall_offset
        )
        for other in spec.network.identities:
            if other.peer_id != spec.identity.peer_id:
                self.mesh.add_peer_key(other.peer_id, other.signing_public)
        self.store = (
            Store(store_dir / f"node{spec.index}.sqlite") if store_dir is not None else None
        )
        self.bridge = NetworkConsensusBridge(
            self.mesh, spec.identity, store=self.store, config=config
        )
        validators = [i.signing_public for i in spec.network.identities]
        for sid in sessions:
            self.bridge.open_session(sid, validators, LedgerApp())

    async def start(self) -> None:
        await self.mesh.start()
        await self.bridge.start()

    async def stop(self) -> None:
        await self.bridge.stop()
        await self.mesh.stop()
        if self.store is not None:
            self.store.close()


class BridgeNet:
    """``n`` LedgerNodes on a full topology of the given link profile."""

    def __init__(
        self,
        n: int,
        *,
        seed: int = 0,
        profile: str = "ideal",
        sessions: Sequence[bytes] = (SESSION,),
        config: BridgeConfig | None = None,
        store_dir: Path | None = None,
    ) -> None:
        self.sessions = tuple(sessions)
        self.config = config
        self.store_dir = store_dir
        topo = build("full", n, Seeds(seed).rng("topology"), None)
        self.network = Network(topo, get_profile(profile), self._make, seed=seed, trace=False)

    def _make(self, spec: NodeSpec) -> SimNode:
        return LedgerNode(spec, self.sessions, self.config, self.store_dir)

    def node(self, i: int) -> LedgerNode:
        node = self.network.nodes[i]
        assert isinstance(node, LedgerNode)
        return node

    def bridge(self, i: int) -> NetworkConsensusBridge:
        return self.node(i).bridge

    def height(self, i: int, sid: bytes = SESSION) -> int:
        return self.bridge(i).engine(sid).height

    async def start(self, indices: Sequence[int] | None = None) -> None:
        for i in range(len(self.network)) if indices is None else indices:
            await self.network.start_node(i)

    async def until(self, cond: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
        """Sleep in virtual time until ``cond()`` or ``timeout`` seconds passed."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end:
            if cond():
                return True
            await asyncio.sleep(step)
        return cond()

    async def stop(self) -> None:
        await self.network.stop()


def run(body: Callable[[], Awaitable[T]], seed: int = 0) -> T:
    """Run an async test body on a fresh virtual-clock loop."""

    async def main() -> T:
        return await body()

    return run_virtual(main(), seed=seed)
