"""Five MeshNodes over BleTransport on fake adapters in a row: broadcasts go multi-hop."""

from __future__ import annotations

import random

import pytest
from gatt_harness import fast_config, run, until

from ble_bridge.mesh.config import MeshConfig
from ble_bridge.mesh.router import Delivered
from ble_bridge.mesh.service import MeshNode
from ble_bridge.wire.identity import Identity
from ble_bridge.wire.packet import PacketType
from gatt.fakebluez import FakeBluezConfig, FakeBluezProcess, LinkModel
from gatt.transport import BleTransport

pytestmark = pytest.mark.dbus
N = 5


@pytest.fixture
def fake_bluez_config() -> FakeBluezConfig:
    return FakeBluezConfig.line(N, link=LinkModel(mtu=185, latency_s=0.002))


def test_five_node_line_delivers_broadcasts_to_every_node(fake_bluez: FakeBluezProcess) -> None:
    async def scenario() -> None:
        nodes = []
        got: list[list[bytes]] = [[] for _ in range(N)]
        for i in range(N):
            ident = Identity.from_seed(b"gatt-mesh-%d" % i)
            transport = BleTransport(fast_config(i), ident.peer_id)
            node = MeshNode(ident, transport, MeshConfig(nickname=f"n{i}"), rng=random.Random(i))

            def on_message(d: Delivered, i: int = i) -> None:
                got[i].append(d.packet.payload)

            node.subscribe(PacketType.MESSAGE, on_message)
            nodes.append(node)
        for node in nodes:
            await node.start()
        # a line: the ends have one link, the middle nodes two
        assert await until(
            lambda: [len(n.transport.links()) for n in nodes] == [1, 2, 2, 2, 1], timeout=30
        ), [len(n.transport.links()) for n in nodes]
        # announces flood first: a node verifies only senders whose keys it has learned
        assert await until(
            lambda: all(n.stats()["peers_known"] == N - 1 for n in nodes), timeout=30
        ), [n.stats()["peers_known"] for n in nodes]
        nodes[0].send(PacketType.MESSAGE, b"hello from the west end")
        nodes[4].send(PacketType.MESSAGE, b"x" * 600)  # fragmented to the 182-byte frames
        assert await until(
            lambda: (
                all(b"hello from the west end" in g for g in got[1:])
                and all(b"x" * 600 in g for g in got[:4])
            ),
            timeout=20,
        ), [len(g) for g in got]
        for node in nodes:
            await node.stop()

    run(scenario(), timeout=90)
