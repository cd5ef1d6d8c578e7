"""MeshNode over a minimal in-process Transport on a real asyncio loop."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

from ble_bridge.mesh.config import MeshConfig
from ble_bridge.mesh.router import Delivered
from ble_bridge.mesh.service import MeshNode
from ble_bridge.transport import LinkInfo, LinkRole, SendResult, Transport, TransportHandler
from ble_bridge.wire.identity import Identity
from ble_bridge.wire.packet import PacketType


class PipeTransport(Transport):
    """Links to other PipeTransports; frames arrive a few ms later via the loop."""

    def __init__(self, name: str, max_queue: int = 64) -> None:
        self.name = name
        self.max_queue = max_queue
        self.handler: TransportHandler | None = None
        self.peers: dict[int, tuple[PipeTransport, int]] = {}
        self.infos: dict[int, LinkInfo] = {}
        self.sent = 0

    def attach(self, handler: TransportHandler) -> None:
        self.handler = handler

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        for link_id in list(self.peers):
            self.drop(link_id, "stopped")

    def send(self, link_id: int, frame: bytes) -> SendResult:
        peer = self.peers.get(link_id)
        if peer is None:
            return SendResult.NO_SUCH_LINK
        if len(frame) > self.infos[link_id].max_frame:
            return SendResult.TOO_LARGE
        other, other_link = peer
        self.sent += 1
        asyncio.get_running_loop().call_later(0.002, other.deliver, other_link, frame)
        return SendResult.QUEUED

    def deliver(self, link_id: int, frame: bytes) -> None:
        if link_id in self.peers and self.handler is not None:
            self.handler.frame_received(link_id, frame)

    def links(self) -> Sequence[LinkInfo]:
        return list(self.infos.values())

    def queue_depth(self, link_id: int) -> int:
        return 0

    def drop(self, link_id: int, reason: str) -> None:
        peer = self.peers.pop(link_id, None)
        self.infos.pop(link_id, None)
        if self.handler is not None:
            self.handler.link_down(link_id, reason)
        if peer is not None:
            peer[0].drop(peer[1], reason)


_ids = iter(range(1, 10_000))


def connect(a: PipeTransport, b: PipeTransport, mtu: int = 185) -> None:
    la, lb = next(_ids), next(_ids)
    a.peers[la], b.peers[lb] = (b, lb), (a, la)
    a.infos[la] = LinkInfo(la, b.name, mtu, LinkRole.CENTRAL)
    b.infos[lb] = LinkInfo(lb, a.name, mtu, LinkRole.PERIPHERAL)
    assert a.handler is not None and b.handler is not None
    a.handler.link_up(a.infos[la])
    b.handler.link_up(b.infos[lb])


def make_nodes(n: int) -> tuple[list[MeshNode], list[PipeTransport]]:
    transports = [PipeTransport(f"node{i}") for i in range(n)]
    nodes = [
        MeshNode(
            Identity.from_seed(b"svc-%d" % i),
            t,
            MeshConfig(nickname=f"n{i}"),
            rng=random.Random(i),
        )
        for i, t in enumerate(transports)
    ]
    return nodes, transports


async def _three_nodes() -> None:
    nodes, transports = make_nodes(3)
    for node in nodes:
        await node.start()
    connect(transports[0], transports[1])
    connect(transports[1], transports[2])
    got: list[list[Delivered]] = [[] for _ in nodes]
    for i, node in enumerate(nodes):
        node.subscribe(PacketType.MESSAGE, got[i].append)
    await asyncio.sleep(0.6)  # announces: keys and neighbours learned
    # a long payload forces fragmentation on the 182-byte links
    packet = nodes[0].send(PacketType.MESSAGE, bytes(random.Random(5).randbytes(700)))
    await asyncio.sleep(0.3)
    assert [len(g) for g in got] == [0, 1, 1]
    assert got[2][0].packet.payload == packet.payload
    assert nodes[2].stats()["fragments_reassembled"] >= 1
    for node in nodes:
        await node.stop()


async def _subscriber_exception() -> None:
    nodes, transports = make_nodes(2)
    for node in nodes:
        await node.start()
    connect(transports[0], transports[1])
    seen: list[bytes] = []

    def broken(_: Delivered) -> None:
        raise RuntimeError("subscriber bug")

    nodes[1].subscribe(PacketType.MESSAGE, broken)
    nodes[1].subscribe(None, lambda e: seen.append(e.packet.payload))
    await asyncio.sleep(0.5)
    nodes[0].send(PacketType.MESSAGE, b"one")
    nodes[0].send(PacketType.MESSAGE, b"two")
    await asyncio.sleep(0.2)
    assert nodes[1].stats()["subscriber_error"] == 2
    assert b"one" in seen and b"two" in seen
    for node in nodes:
        await node.stop()


def test_three_nodes_exchange_broadcasts_over_a_transport() -> None:
    asyncio.run(_three_nodes())


def test_subscriber_exception_is_counted_and_node_keeps_running() -> None:
    asyncio.run(_subscriber_exception())


async def _restart() -> None:
    nodes, transports = make_nodes(2)
    for node in nodes:
        await node.start()
    connect(transports[0], transports[1])
    await asyncio.sleep(0.4)
    await nodes[1].stop()
    assert nodes[1].stats()["links"] == 0
    await nodes[1].start()
    connect(transports[0], transports[1])
    got: list[bytes] = []
    nodes[1].subscribe(PacketType.MESSAGE, lambda e: got.append(e.packet.payload))
    await asyncio.sleep(0.2)
    nodes[0].send(PacketType.MESSAGE, b"after restart")
    await asyncio.sleep(0.1)
    assert got == [b"after restart"]
    for node in nodes:
        await node.stop()


def test_node_restarts_cleanly_on_the_same_transport() -> None:
    asyncio.run(_restart())
