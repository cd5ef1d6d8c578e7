"""Real MeshNodes on the loopback air: reach, TTL, forgeries, partitions, floods, restarts."""

from __future__ import annotations

import asyncio
import dataclasses
import random

from sim_net import MeshNet

from ble_bridge.air.clock import SIM_EPOCH, Seeds, run_virtual
from ble_bridge.air.faults import Crash, FaultPlan
from ble_bridge.air.profiles import IDEAL, PI_TUNED
from ble_bridge.air.topology import grid, line, random_geometric
from ble_bridge.mesh.config import MeshConfig
from ble_bridge.mesh.router import DROP_REASONS
from ble_bridge.wire.fragment import FragmentPayload
from ble_bridge.wire.identity import Identity
from ble_bridge.wire.packet import Packet, PacketType, encode


def test_broadcast_reaches_every_node_of_a_connected_random_geometric_network() -> None:
    topo = random_geometric(50, Seeds(7).rng("topology"))
    assert topo.is_connected()
    diameter = max(max(topo.hops_from(i).values()) for i in range(50))
    config = MeshConfig(ttl=diameter + 1)

    async def main() -> None:
        net = MeshNet(topo, IDEAL, config=config, seed=7)
        await net.start(settle=6.0)
        assert sorted(net.network.air.link_pairs()) and all(
            net.network.air.degree(i) == len(topo.neighbours(i)) for i in range(50)
        )
        ids = [net.node(i).send(PacketType.MESSAGE, b"hello %d" % i).packet_id for i in (0, 17, 42)]
        await asyncio.sleep(5.0)
        for origin, pid in zip((0, 17, 42), ids, strict=True):
            assert net.reached(pid) == set(range(50)) - {origin}
            assert all(net.delivery_count(pid, i) <= 1 for i in range(50))
        await net.stop()

    run_virtual(main(), seed=7)


def test_no_delivery_beyond_ttl_on_a_line() -> None:
    ttl = 3

    async def main() -> None:
        net = MeshNet(line(9), IDEAL, config=MeshConfig(ttl=ttl), seed=3)
        await net.start(settle=4.0)
        assert len(net.network.air.link_pairs()) == 8
        left = net.node(0).send(PacketType.MESSAGE, b"from the left end").packet_id
        mid = net.node(4).send(PacketType.MESSAGE, b"from the middle").packet_id
        await asyncio.sleep(3.0)
        assert net.reached(left) == {1, 2, 3}
        assert net.reached(mid) == {1, 2, 3, 5, 6, 7}
        await net.stop()

    run_virtual(main(), seed=3)


def test_forged_or_corrupted_packets_are_never_delivered_nor_relayed() -> None:
    async def main() -> None:
        net = MeshNet(line(4), IDEAL, seed=5)
        await net.start(settle=4.0)
        air = net.network.air
        victim = net.network.identities[3]
        mallory = Identity.from_seed(b"mallory")
        now_ms = int((SIM_EPOCH + asyncio.get_running_loop().time()) * 1000)
        base = Packet(
            type=PacketType.MESSAGE, sender=victim.peer_id, payload=b"pay me", timestamp=now_ms
        )
        forged = base.signed(mallory)  # claims to be node 3, signed with another key
        genuine = encode(base.signed(victim))
        corrupted = bytearray(genuine)
        corrupted[-70] ^= 0x01  # one payload bit flipped under a valid-looking signature
        unsigned = encode(base)
        frames_before = air.type_frames[PacketType.MESSAGE]
        for frame in (encode(forged), bytes(corrupted), unsigned):
            assert air.inject(1, frame)
        await asyncio.sleep(2.0)
        assert all(not evs for evs in net.deliveries)
        assert air.type_frames[PacketType.MESSAGE] == frames_before  # nothing relayed
        stats = net.node(1).router.stats
        assert stats["bad_signature"] == 2 and stats["unsigned"] == 1
        # the genuine packet still goes through afterwards
        assert air.inject(1, genuine)
        await asyncio.sleep(2.0)
        assert len(net.deliveries[1]) == 1 and not net.deliveries[3]
        await net.stop()

    run_virtual(main(), seed=5)


def test_partition_blocks_delivery_across_the_cut_and_heal_restores_it() -> None:
    async def main() -> None:
        net = MeshNet(grid(12, columns=4), IDEAL, seed=9)
        await net.start(settle=4.0)
        air = net.network.air
        west = tuple(i for i in range(12) if i % 4 < 2)
        east = tuple(i for i in range(12) if i % 4 >= 2)
        air.partition([west, east])
        await asyncio.sleep(1.0)
        cut = net.node(0).send(PacketType.MESSAGE, b"during the partition").packet_id
        cut_east = net.node(3).send(PacketType.MESSAGE, b"east side").packet_id
        await asyncio.sleep(3.0)
        assert net.reached(cut) == set(west) - {0}
        assert net.reached(cut_east) == set(east) - {3}
        air.heal()
        await asyncio.sleep(5.0)
        healed = net.node(0).send(PacketType.MESSAGE, b"after heal").packet_id
        await asyncio.sleep(3.0)
        assert net.reached(healed) == set(range(1, 12))
        assert not (net.reached(cut) & set(east))  # old packets are not resurrected
        await net.stop()

    run_virtual(main(), seed=9)


def _junk(rng: random.Random, sender: bytes, now_ms: int) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 514))
    if kind == 1:  # a fragment of a set that never completes
        frag = FragmentPayload(
            rng.randbytes(8), rng.randrange(1, 50), 50, PacketType.MESSAGE, rng.randbytes(200)
        )
        return encode(
            Packet(
                type=PacketType.FRAGMENT,
                sender=rng.randbytes(8),
                payload=frag.encode(),
                timestamp=now_ms,
            )
        )
    if kind == 2:  # signed-looking garbage from a known sender
        p = Packet(
            type=PacketType.MESSAGE,
            sender=sender,
            payload=rng.randbytes(100),
            timestamp=now_ms,
            signature=rng.randbytes(64),
        )
        return encode(p)
    if kind == 3:  # declared length far beyond the frame
        return bytes([1, 2, 7]) + now_ms.to_bytes(8, "big") + b"\x00\xff\xff" + rng.randbytes(40)
    if kind == 4:  # unknown sender, unsigned
        return encode(
            Packet(
                type=rng.randrange(256),
                sender=rng.randbytes(8),
                payload=rng.randbytes(30),
                timestamp=now_ms,
            )
        )
    return bytes([rng.randrange(256)]) * rng.randrange(1, 30)


def test_junk_flood_leaves_memory_bounded_and_every_drop_counted() -> None:
    config = MeshConfig()

    async def main() -> None:
        net = MeshNet(line(3), dataclasses.replace(IDEAL, queue_limit=64), config=config, seed=11)
        await net.start(settle=3.0)
        air = net.network.air
        target = net.node(1)
        rng = random.Random(11)
        loop = asyncio.get_running_loop()
        in_before = target.router.stats["frames_in"]
        injected = 0
        sender = net.network.identities[0].peer_id
        for burst in range(50):  # 400 frames/s, twice what the inbound bucket admits
            now_ms = int((SIM_EPOCH + loop.time()) * 1000)
            for _ in range(200):
                assert air.inject(1, _junk(rng, sender, now_ms), link_id=air.link_ids(1)[burst % 2])
                injected += 1
            await asyncio.sleep(0.5)
            s = target.stats()
            assert s["seen_entries"] <= config.seen_capacity
            assert s["pending_relays"] <= config.max_pending_relays
            assert s["outbound_frames"] <= config.max_outbound_frames
            assert s["peers_known"] <= config.max_peers
            for link in target.router.peers.links.values():
                assert len(link.reassembler) <= config.reassembly.max_sets
                assert link.reassembler.buffered_bytes <= config.reassembly.max_total_bytes
            for lid in air.link_ids(1):
                assert target.transport.queue_depth(lid) <= IDEAL.queue_limit
        await asyncio.sleep(2.0)
        stats = target.router.stats
        frames = stats["frames_in"] - in_before
        assert injected == 10_000
        assert frames >= injected
        outcomes = (
            sum(stats[r] for r in DROP_REASONS) + stats["fragment_buffered"] + stats["accepted"]
        )
        assert outcomes == stats["frames_in"]
        assert stats["internal_error"] == 0
        assert (
            stats["malformed"] > 0 and stats["rate_limited"] > 0 and stats["fragment_buffered"] > 0
        )
        assert all(not evs for evs in net.deliveries)
        await net.stop()

    run_virtual(main(), seed=11)


def test_crashed_node_restarts_as_a_new_object_with_its_identity() -> None:
    faults = FaultPlan((Crash(at=5.0, node=2, restart_after=10.0),))

    async def main() -> None:
        net = MeshNet(line(4), IDEAL, seed=13, faults=faults)
        await net.start(settle=4.0)
        first = net.node(2)
        await asyncio.sleep(2.0)
        assert net.network.nodes[2] is None
        during = net.node(0).send(PacketType.MESSAGE, b"while 2 is down").packet_id
        await asyncio.sleep(12.0)
        second = net.node(2)
        assert second is not first and second.peer_id == first.peer_id
        after = net.node(0).send(PacketType.MESSAGE, b"after restart").packet_id
        await asyncio.sleep(3.0)
        assert net.reached(during) == {1}
        assert net.reached(after) == {1, 2, 3}
        await net.stop()

    run_virtual(main(), seed=13)


def test_pi_tuned_network_delivers_with_realistic_latency() -> None:
    async def main() -> None:
        net = MeshNet(line(5), PI_TUNED, seed=17)
        await net.start(settle=20.0)
        assert len(net.network.air.link_pairs()) == 4
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        pid = net.node(0).send(PacketType.MESSAGE, b"x" * 100).packet_id
        await asyncio.sleep(5.0)
        assert net.reached(pid) == {1, 2, 3, 4}
        last = next(e for e in net.deliveries[4] if e.packet.packet_id == pid).received_at - t0
        # four hops: each at least a relay jitter plus a connection-interval wait, well under 1 s
        assert 4 * 0.010 < last < 1.0
        await net.stop()

    run_virtual(main(), seed=17)
