"""Helpers for the loopback-air tests: recording handlers and a network of real MeshNodes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ble_bridge.air.air import SimTransport
from ble_bridge.air.faults import FaultPlan
from ble_bridge.air.network import Network
from ble_bridge.air.profiles import LinkProfile
from ble_bridge.air.topology import Topology
from ble_bridge.mesh.config import MeshConfig
from ble_bridge.mesh.router import Delivered
from ble_bridge.mesh.service import MeshNode
from ble_bridge.sim.scenario import mesh_node_factory
from ble_bridge.transport import LinkInfo
from ble_bridge.wire.packet import PacketType


@dataclass
class Recorder:
    """A TransportHandler that records every event with the loop time."""

    loop: asyncio.AbstractEventLoop
    ups: list[tuple[float, LinkInfo]] = field(default_factory=list)
    downs: list[tuple[float, int, str]] = field(default_factory=list)
    frames: list[tuple[float, int, bytes]] = field(default_factory=list)

    def link_up(self, info: LinkInfo) -> None:
        self.ups.append((self.loop.time(), info))

    def link_down(self, link_id: int, reason: str) -> None:
        self.downs.append((self.loop.time(), link_id, reason))

    def frame_received(self, link_id: int, data: bytes) -> None:
        self.frames.append((self.loop.time(), link_id, data))


class MeshNet:
    """A :class:`Network` of MeshNodes that records every MESSAGE delivery per node."""

    def __init__(
        self,
        topology: Topology,
        profile: LinkProfile,
        *,
        config: MeshConfig | None = None,
        seed: int = 1,
        faults: FaultPlan | None = None,
    ) -> None:
        self.network = Network(
            topology, profile, mesh_node_factory(config), seed=seed, faults=faults
        )
        self.deliveries: list[list[Delivered]] = [[] for _ in range(len(topology))]
        self.network.on_node_start.append(self._hook)

    def _hook(self, index: int, node: object) -> None:
        assert isinstance(node, MeshNode)
        node.subscribe(PacketType.MESSAGE, self.deliveries[index].append)

    def node(self, i: int) -> MeshNode:
        n = self.network.nodes[i]
        assert isinstance(n, MeshNode)
        return n

    def transport(self, i: int) -> SimTransport:
        t = self.network.transports[i]
        assert t is not None
        return t

    def reached(self, packet_id: bytes) -> set[int]:
        return {
            i
            for i, evs in enumerate(self.deliveries)
            if any(e.packet.packet_id == packet_id for e in evs)
        }

    def delivery_count(self, packet_id: bytes, node: int) -> int:
        return sum(1 for e in self.deliveries[node] if e.packet.packet_id == packet_id)

    async def start(self, settle: float) -> None:
        await self.network.start()
        await asyncio.sleep(settle)

    async def stop(self) -> None:
        await self.network.stop()
