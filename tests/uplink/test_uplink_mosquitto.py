"""Islands of wall-clock nodes joined through a REAL mosquitto (started per test).

Each island is a loopback air on the wall clock with four real ``Node``s; its gateways
run the real MQTT uplink (aiomqtt) to a private mosquitto on 127.0.0.1. Waits are bounded
generously for a loaded 2-core machine; nothing here times performance.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import Awaitable, Callable

import aiomqtt
import pytest

from ble_bridge.node import Node
from ble_bridge.sim.islands import Islands, IslandsConfig
from ble_bridge.uplink.config import UplinkConfig
from ble_bridge.uplink.core import UPLINK_DROPS
from ble_bridge.uplink.mosquitto import Mosquitto
from ble_bridge.uplink.service import UplinkTransport
from ble_bridge.uplink.wire import Kind, Presence, decode_message, encode_message, encode_presence
from ble_bridge.wire.identity import Identity
from ble_bridge.wire.packet import Packet, PacketType, encode

MESH = "test-mesh"
WAIT = 90.0  # generous: a loaded 2-core machine


def uplink_config(broker: Mosquitto, **kw: object) -> UplinkConfig:
    base: dict[str, object] = {
        "broker": broker.url,
        "mesh_id": MESH,
        "reconnect_initial": 0.2,
        "reconnect_max": 2.0,
        "heartbeat_interval": 1.0,
        "link_timeout": 4.0,
        "keepalive": 5,
        "connect_timeout": 3.0,
    }
    base.update(kw)
    return UplinkConfig(**base)  # type: ignore[arg-type]


def run(
    broker: Mosquitto,
    body: Callable[[Islands], Awaitable[None]],
    *,
    gateways: int = 2,
    sizes: tuple[int, ...] = (4, 4),
    **uplink: object,
) -> Islands:
    cfg = uplink_config(broker, **uplink)

    async def main() -> Islands:
        islands = Islands(
            IslandsConfig(sizes=sizes, gateways=gateways),
            lambda _k, _i, ident: UplinkTransport(cfg, ident.peer_id),
        )
        await islands.start()
        try:
            await body(islands)
        finally:
            await islands.stop()
        return islands

    return asyncio.run(main())


def uplink_of(islands: Islands, key: tuple[int, int]) -> UplinkTransport:
    u = islands.uplinks[key]
    assert isinstance(u, UplinkTransport)
    return u


async def commit_some(islands: Islands, more: int, timeout: float = WAIT) -> None:
    target = islands.min_height() + more
    ok = await islands.wait_for(lambda: islands.min_height() >= target, timeout)
    assert ok, f"no {more} more heights in {timeout} s: {islands.heights()}"


def test_two_islands_commit_one_table_and_survive_a_broker_restart(mosquitto: Mosquitto) -> None:
    seen: dict[str, object] = {}

    async def body(islands: Islands) -> None:
        await commit_some(islands, 5)
        node = islands.nodes()[(0, 0)]
        status = node.status()
        uplink = status["uplink"]
        assert isinstance(uplink, dict) and uplink["connected"]
        assert any(li["role"] == "uplink" for li in status["links"])  # type: ignore[union-attr]
        assert any("uplink" in p["via"] for p in node.peers())  # type: ignore[operator]
        mosquitto.kill()
        await asyncio.sleep(3.0)
        before = islands.heights()
        seen["during"] = before
        # no island holds a quorum of 8 alone (4 + 4): both pause while the broker is gone
        await asyncio.sleep(4.0)
        paused = islands.heights()
        assert max(paused.values()) <= max(before.values()) + 1
        mosquitto.start()
        await commit_some(islands, 5)
        seen["reconnects"] = sum(
            uplink_of(islands, k).core.stats["connects"] for k in islands.uplinks
        )

    islands = run(mosquitto, body)
    assert islands.safe(), islands.records
    assert seen["reconnects"] >= 8  # every one of the 4 gateways connected again


def test_six_and_two_the_quorum_island_keeps_going_during_an_outage(
    mosquitto: Mosquitto,
) -> None:
    """8 validators split 6 + 2: with the broker gone the island of 6 (a quorum) keeps
    committing, the island of 2 pauses; after the broker returns both commit again."""
    gains: dict[str, int] = {}

    async def body(islands: Islands) -> None:
        await commit_some(islands, 3)
        mosquitto.kill()
        ok = await islands.wait_for(
            lambda: all(not uplink_of(islands, k).core.connected for k in islands.uplinks), WAIT
        )
        assert ok
        big0, small0 = (
            islands.min_height(0),
            max(h for (k, _), h in islands.heights().items() if k == 1),
        )
        await commit_some_island(islands, 0, 3)
        gains["small"] = max(h for (k, _), h in islands.heights().items() if k == 1) - small0
        gains["big"] = islands.min_height(0) - big0
        await local_chat_works(islands, 1)  # the paused island's own mesh still works
        mosquitto.start()
        await commit_some(islands, 3)

    islands = run(mosquitto, body, gateways=1, sizes=(6, 2))
    assert islands.safe(), islands.records
    assert gains["big"] >= 3
    assert gains["small"] <= 1  # one height in flight at most: 2 of 8 is no quorum


async def commit_some_island(islands: Islands, island: int, more: int) -> None:
    target = islands.min_height(island) + more
    ok = await islands.wait_for(lambda: islands.min_height(island) >= target, WAIT)
    assert ok, f"island {island}: no {more} more heights in {WAIT} s: {islands.heights()}"


async def local_chat_works(islands: Islands, island: int) -> None:
    """A public chat message (which never crosses the uplink) from the island's last node
    reaches every other node of the island over the radio."""
    got: set[int] = set()
    nodes = {i: n for (k, i), n in islands.nodes().items() if k == island}
    last = max(nodes)
    tag = b"local %d %d" % (island, len(islands.latencies))
    for i, node in nodes.items():
        if i != last:
            node.mesh.subscribe(
                PacketType.MESSAGE,
                lambda ev, i=i: got.add(i) if tag in ev.packet.payload else None,  # type: ignore[misc]
            )
    nodes[last].mesh.send(PacketType.MESSAGE, tag)
    ok = await islands.wait_for(lambda: len(got) == len(nodes) - 1, WAIT)
    assert ok, f"island {island}: local chat reached only {sorted(got)}"


def tamper(frame: bytes) -> bytes:
    out = bytearray(frame)
    i = 26 if len(frame) > 100 else len(frame) // 2
    out[i] ^= 0x40
    return bytes(out)


async def tamperer(broker: Mosquitto, stop: asyncio.Event, counts: Counter[str]) -> None:
    """Republishes every frames message of the mesh with one byte of each frame flipped,
    in the name of the gateway that sent it (a broker altering what it carries)."""
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="tamperer") as client:
        await client.subscribe(f"ble-bridge/{MESH}/all")
        await client.subscribe(f"ble-bridge/{MESH}/to/+")

        async def read() -> None:
            async for m in client.messages:
                assert isinstance(m.payload, bytes)
                try:
                    msg = decode_message(m.payload, 65535)
                except ValueError:
                    continue
                if msg.kind is not Kind.FRAMES or msg.seq == 0xFFFFFFFF:
                    continue
                frames = [tamper(f) for f in msg.frames]
                bad = encode_message(Kind.FRAMES, msg.mesh, msg.source, 0xFFFFFFFF, 0, frames)
                await client.publish(str(m.topic), bad)
                counts["tampered"] += len(frames)

        task = asyncio.create_task(read())
        await stop.wait()
        task.cancel()


def test_tampered_copies_are_dropped_and_counted(mosquitto: Mosquitto) -> None:
    counts: Counter[str] = Counter()

    async def body(islands: Islands) -> None:
        await commit_some(islands, 3)
        stop = asyncio.Event()
        t = asyncio.create_task(tamperer(mosquitto, stop, counts))
        await asyncio.sleep(1.0)
        await commit_some(islands, 5)
        stop.set()
        await t

    islands = run(mosquitto, body, gateways=1)
    assert islands.safe()
    assert counts["tampered"] > 20
    router = Counter[str]()
    for key in islands.uplinks:
        router.update(islands.records[key].mesh_stats)
    # every tampered copy that reached a router ended in a drop, never a delivery
    dropped = sum(router[r] for r in ("bad_signature", "malformed", "unknown_sender", "stale"))
    assert router["bad_signature"] > 0
    assert dropped > 0


def test_duplicates_through_two_gateways_are_delivered_once(mosquitto: Mosquitto) -> None:
    got: Counter[tuple[int, int]] = Counter()

    async def body(islands: Islands) -> None:
        await commit_some(islands, 2)
        for key, node in islands.nodes().items():
            if key[0] == 1:
                node.mesh.subscribe(
                    PacketType.MESSAGE,
                    # only ours: nodes post table events in public chat too
                    lambda ev, k=key: (  # type: ignore[misc]
                        got.update([k]) if b"hello across" in ev.packet.payload else None
                    ),
                )
        sender = islands.nodes()[(0, 3)]  # not a gateway: its flood reaches both of island 0's
        for i in range(5):
            sender.mesh.send(PacketType.MESSAGE, b"hello across %d" % i)
            await asyncio.sleep(0.3)
        ok = await islands.wait_for(lambda: len(got) == 4 and min(got.values()) >= 5, WAIT)
        assert ok, got
        await asyncio.sleep(2.0)  # let every later copy arrive

    islands = run(mosquitto, body, gateways=2, frame_types=["announce", "consensus", "chat"])
    assert dict(got) == {(1, i): 5 for i in range(4)}  # exactly once each
    copies = 0
    for key in ((1, 0), (1, 1)):
        stats = islands.records[key].mesh_stats
        copies += uplink_of(islands, key).core.stats["seen"] + stats["duplicate"]
    assert copies > 0  # second copies did arrive, and were dropped


FAKE = Identity.from_seed(b"\x07" * 32)


async def replayer(broker: Mosquitto, stop: asyncio.Event, counts: Counter[str]) -> None:
    """Records every frames message of the mesh for a while, then republishes all of it,
    unchanged, again and again (a broker replaying what it carried earlier)."""
    recorded: list[tuple[str, bytes]] = []
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="replayer") as client:
        await client.subscribe(f"ble-bridge/{MESH}/all")
        await client.subscribe(f"ble-bridge/{MESH}/to/+")

        async def record() -> None:
            async for m in client.messages:
                assert isinstance(m.payload, bytes)
                if len(recorded) < 100 and m.payload[3:5] == bytes([1, Kind.FRAMES]):
                    recorded.append((str(m.topic), m.payload))

        task = asyncio.create_task(record())
        await asyncio.sleep(4.0)
        task.cancel()
        counts["recorded"] = len(recorded)
        while not stop.is_set():
            for topic, payload in recorded:
                await client.publish(topic, payload)
                counts["replayed"] += 1
            await asyncio.sleep(1.0)


def test_replayed_frames_are_refused_and_old_heights_ignored(mosquitto: Mosquitto) -> None:
    counts: Counter[str] = Counter()

    async def body(islands: Islands) -> None:
        await commit_some(islands, 2)
        stop = asyncio.Event()
        t = asyncio.create_task(replayer(mosquitto, stop, counts))
        await asyncio.sleep(5.0)  # recorded: heights that are settled by the time they return
        await commit_some(islands, 4)
        stop.set()
        await t

    islands = run(mosquitto, body, gateways=1)
    assert islands.safe()
    assert counts["recorded"] > 10 and counts["replayed"] > counts["recorded"]
    refused: Counter[str] = Counter()
    for key in islands.uplinks:
        refused.update(uplink_of(islands, key).core.stats)
    # every replayed frame is in the uplink's long seen window (or older than what it
    # forgot): none reaches the router a second time
    assert refused["seen"] + refused["beyond_window"] >= 0.9 * counts["replayed"]


async def flooder(
    broker: Mosquitto, n: int, counts: Counter[str], leave: asyncio.Event | None = None
) -> None:
    """A fake gateway that announces itself and floods well-formed frames messages; it
    leaves (empty presence) once ``leave`` is set."""
    fake = FAKE
    topic_base = f"ble-bridge/{MESH}"
    from ble_bridge.uplink.wire import mesh_tag

    tag = mesh_tag(MESH)
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="flooder") as client:
        presence = encode_presence(Presence(fake.peer_id, 255, tag))
        await client.publish(f"{topic_base}/presence/{fake.peer_id.hex()}", presence, 1, True)
        await asyncio.sleep(0.5)
        for i in range(n):
            frames = [
                encode(
                    Packet(
                        type=PacketType.CONSENSUS,
                        sender=fake.peer_id,
                        payload=b"flood %d %d" % (i, j),
                        timestamp=i,
                        ttl=7,
                    ).signed(fake)
                )
                for j in range(10)
            ]
            msg = encode_message(Kind.FRAMES, tag, fake.peer_id, i + 1, 0, frames)
            await client.publish(f"{topic_base}/all", msg)
            counts["frames"] += len(frames)
            if i % 50 == 0:
                await asyncio.sleep(0)
        if leave is not None:
            await leave.wait()
        await client.publish(f"{topic_base}/presence/{fake.peer_id.hex()}", b"", 1, True)


def test_budget_holds_under_a_flood_and_the_table_keeps_going(mosquitto: Mosquitto) -> None:
    counts: Counter[str] = Counter()
    rate, burst_s = 50.0, 1.0
    window: dict[str, float] = {}
    fake_rows: list[tuple[int, int]] = []

    async def body(islands: Islands) -> None:
        loop = asyncio.get_running_loop()
        window["t0"] = loop.time()  # before any gateway was linked
        await commit_some(islands, 3)
        window["start"] = loop.time()
        h0 = islands.min_height()
        leave = asyncio.Event()
        flood = asyncio.create_task(flooder(mosquitto, 1500, counts, leave))
        await local_chat_works(islands, 0)  # the radio mesh works while the uplink floods
        ok = await islands.wait_for(lambda: counts["frames"] >= 15000, WAIT)
        assert ok
        await asyncio.sleep(2.0)  # what the broker still holds arrives
        window["flood"] = loop.time() - window["start"]
        for key in islands.uplinks:
            gw = uplink_of(islands, key).core.gateways.get(FAKE.peer_id)
            assert gw is not None, "the fake gateway was linked"
            fake_rows.append((gw.frames_in, gw.drops["budget_frames"] + gw.drops["budget_bytes"]))
        leave.set()
        await flood
        await commit_some(islands, 3)
        window["end"] = loop.time()
        window["gain"] = islands.min_height() - h0

    islands = run(mosquitto, body, gateways=1, frames_per_s=rate, burst_s=burst_s)
    assert islands.safe()
    assert len(fake_rows) == len(islands.uplinks) == 2
    for frames_in, refused in fake_rows:
        # a token bucket: at most its burst plus its rate over the time the flood lasted
        assert frames_in <= rate * burst_s + rate * window["flood"] + 1
        assert refused > 0 and frames_in + refused <= counts["frames"]
    for key in islands.uplinks:
        core = uplink_of(islands, key).core
        for gw in core.gateways.values():  # the honest gateway: bounded the same way
            assert gw.frames_in <= rate * burst_s + rate * (window["end"] - window["t0"]) + 1
    assert window["gain"] >= 3


async def bad_publisher(broker: Mosquitto) -> None:
    from ble_bridge.uplink.wire import mesh_tag

    base = f"ble-bridge/{MESH}"
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="junk") as client:
        for payload in (b"", b"junk", b"BBU" + b"\x01" * 40, os.urandom(300)):
            await client.publish(f"{base}/all", payload)
        other = encode_message(Kind.HEARTBEAT, mesh_tag("other-mesh"), b"\x01" * 8, 1, 0)
        await client.publish(f"{base}/all", other)
        await client.publish(f"{base}/all", b"\x00" * 200_000)  # oversized
        await client.publish(f"{base}/presence/zz", b"{}")
        await client.publish(f"{base}/presence/{'ab' * 8}", b"not json")


async def junk_flood(broker: Mosquitto, n: int) -> None:
    """As fast as the broker takes them: ``n`` garbage messages on the mesh's ``all``."""
    base = f"ble-bridge/{MESH}"
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="junk-flood") as client:
        for i in range(n):
            await client.publish(f"{base}/all", b"BBU junk %d " % i + os.urandom(64))
            if i % 200 == 0:
                await asyncio.sleep(0)


def test_malformed_unknown_mesh_and_oversized_are_counted(mosquitto: Mosquitto) -> None:
    async def body(islands: Islands) -> None:
        await commit_some(islands, 2)
        await bad_publisher(mosquitto)
        flood = asyncio.create_task(junk_flood(mosquitto, 20000))
        await local_chat_works(islands, 0)
        await flood
        await asyncio.sleep(1.0)
        await commit_some(islands, 3)
        for k in islands.uplinks:  # bounded whatever came in
            u = uplink_of(islands, k)
            assert u.core.connected and len(u._backlog) <= 1024

    islands = run(mosquitto, body, gateways=1)
    assert islands.safe()
    total: Counter[str] = Counter()
    for key in islands.uplinks:
        total.update(uplink_of(islands, key).core.stats)
    assert total["malformed"] >= 2 * 4  # both gateways saw the junk
    # the junk flood (right magic, wrong version): each message read was dropped and
    # counted, or aiomqtt's bounded queue discarded it (counted as inbound_queue_full)
    dropped = sum(total[r] for r in UPLINK_DROPS) + total["inbound_queue_full"]
    assert total["bad_version"] > 0
    assert dropped >= 2 * 20000
    assert total["unknown_mesh"] >= 2
    assert total["oversized"] >= 2
    assert total["unknown_topic"] >= 2


def test_a_broker_that_accepts_and_never_delivers(mosquitto: Mosquitto) -> None:
    """SIGSTOP: the broker's socket stays open, nothing comes back. The gateways notice
    (their probes do not return), drop the links, reconnect once it delivers again."""

    async def body(islands: Islands) -> None:
        await commit_some(islands, 3)
        pid = mosquitto.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            ok = await islands.wait_for(
                lambda: all(
                    uplink_of(islands, k).core.stats["broker_stalled"] for k in islands.uplinks
                ),
                WAIT,
            )
            assert ok
            for k in islands.uplinks:
                node: Node = islands.nodes()[k]
                assert node.uplink is not None and not node.uplink.links()
            await local_chat_works(islands, 0)  # the island's own mesh is untouched
        finally:
            os.kill(pid, signal.SIGCONT)
        await commit_some(islands, 3)

    islands = run(mosquitto, body, gateways=1)
    assert islands.safe()


@pytest.mark.parametrize("qos", [1])
def test_qos1_works_too(mosquitto: Mosquitto, qos: int) -> None:
    async def body(islands: Islands) -> None:
        await commit_some(islands, 4)

    assert run(mosquitto, body, gateways=1, qos=qos).safe()
