"""Half-open, dead and bad links end quickly (fake bluetoothd, real bless + bleak + mesh)."""

from __future__ import annotations

import asyncio

import pytest
from bleak import BleakClient, BleakScanner
from gatt_harness import SLACK, Node, address, fast_config, run, until

from ble_bridge.mesh.service import MeshNode
from ble_bridge.wire.identity import Identity
from gatt.fakebluez import FakeBluezConfig, FakeBluezProcess, FakeControl, LinkModel
from gatt.peripheral import MeshPeripheral
from gatt.profile import GattProfile
from gatt.transport import BleTransport

pytestmark = pytest.mark.dbus

QUICK = dict(first_frame_timeout_s=2.0, identify_timeout_s=4.0, link_idle_timeout_s=3.0)
"""Liveness bounds short enough for a test, long enough for a loaded 2-core machine."""


@pytest.fixture
def fake_bluez_config(request: pytest.FixtureRequest) -> FakeBluezConfig:
    return getattr(request, "param", FakeBluezConfig(adapters=2, link=LinkModel(mtu=247)))


def _links(n: Node) -> int:
    return len(n.transport.links())


@pytest.mark.parametrize(
    "fake_bluez_config",
    [
        FakeBluezConfig(adapters=2, connect_race=1.0, connect_race_side="peripheral"),
        FakeBluezConfig(adapters=2, connect_race=1.0, connect_race_side="central"),
    ],
    indirect=True,
)
def test_a_half_open_link_is_closed_and_retried(fake_bluez: FakeBluezProcess) -> None:
    """peripheral: the connected side holds a device that never writes; central: the
    connecting side holds a link whose notifications never arrive. The side that believes in
    the link closes it, then a retry links."""

    async def scenario() -> None:
        ctl = FakeControl(fake_bluez.address)
        a, b = Node(0, **QUICK), Node(1, **QUICK)
        await a.start()
        await b.start()
        s = await ctl.wait_for(lambda s: bool(s["half_open"]), timeout=20 * SLACK)
        assert s["half_open"], s["stats"]
        await ctl.configure(connect_race=0.0)
        assert await until(
            lambda: a.transport.stats["closed_silent"] + b.transport.stats["closed_silent"] >= 1,
            30,
        ), (sorted(a.transport.stats.items()), sorted(b.transport.stats.items()), await ctl.stats())
        assert await until(lambda: _links(a) == 1 and _links(b) == 1, 40), (_links(a), _links(b))
        s = await ctl.stats()
        assert not s["half_open"]
        ctl.close()
        for n in (a, b):
            await n.stop()

    run(scenario(), timeout=120)


def test_keepalives_keep_a_quiet_link_to_a_node_open(fake_bluez: FakeBluezProcess) -> None:
    async def scenario() -> None:
        ids = [Identity.generate() for _ in range(2)]
        meshes = [
            MeshNode(ident, BleTransport(fast_config(i, **QUICK), ident.peer_id))
            for i, ident in enumerate(ids)
        ]
        for m in meshes:
            await m.start()
        ts = [m.transport for m in meshes]
        assert await until(lambda: all(len(t.links()) == 1 for t in ts), 30)
        assert await until(lambda: all(t.stats["links_identified"] >= 1 for t in ts), 15)
        (first,) = [li.link_id for li in ts[0].links()]
        await asyncio.sleep(3 * QUICK["link_idle_timeout_s"])  # only announces and keepalives
        assert [li.link_id for li in ts[0].links()] == [first], [
            sorted(t.stats.items()) for t in ts
        ]
        assert all(t.stats["keepalives_out"] >= 1 for t in ts)
        assert ts[1].stats["keepalives_in"] + ts[0].stats["keepalives_in"] >= 1
        assert all(t.stats["closed_idle"] == 0 for t in ts)
        for m in meshes:
            assert m.stats().get("unsigned", 0) == 0  # keepalives never reach the router
            await m.stop()

    run(scenario(), timeout=90)


def test_a_node_survives_a_refused_advert_and_links_as_a_central(
    fake_bluez: FakeBluezProcess,
) -> None:
    async def scenario() -> None:
        a, b = Node(0), Node(1)
        svc = a.transport.config.profile.service_uuid
        a.transport.peripheral.adv_props = {
            "ServiceUUIDs": [svc],
            "ServiceData": {svc: bytes(8)},  # the old 47-byte advert
            "Discoverable": True,
        }
        await a.start()
        await b.start()
        assert await until(lambda: _links(a) == 1 and _links(b) == 1, 30)
        assert not a.transport.peripheral.advertising
        (issue,) = a.transport.issues()
        assert "advertising refused" in issue and "Failed to register advertisement" in issue
        assert b.transport.issues() == []
        for n in (a, b):
            await n.stop()

    run(scenario(), timeout=90)


async def _find(index: int) -> object:
    dev = await BleakScanner.find_device_by_address(
        address(index), timeout=10, bluez={"adapter": "hci1"}
    )
    assert dev is not None
    return dev


def test_bad_input_is_bounded_counted_and_closed(fake_bluez: FakeBluezProcess) -> None:
    """A foreign device with our UUID writing garbage, one that connects and writes nothing,
    one that subscribes and never writes: each is counted and disconnected by the node."""

    async def scenario() -> None:
        ident = Identity.generate()
        t = BleTransport(fast_config(0, **QUICK), ident.peer_id)
        mesh = MeshNode(ident, t)
        await mesh.start()
        char_uuid = t.config.profile.characteristic_uuid
        loop = asyncio.get_running_loop()

        # 1. garbage: frames that decode as nothing, and no announce: "unidentified"
        gone = asyncio.Event()
        client = BleakClient(
            await _find(0), bluez={"adapter": "hci1"}, disconnected_callback=lambda _c: gone.set()
        )
        await client.connect()
        char = client.services.get_characteristic(char_uuid)
        assert char is not None
        for i in range(60):
            await client.write_gatt_char(char, b"\x01\xff" + bytes([i]) * 40, response=False)
        assert await until(lambda: mesh.stats()["frames_in"] == 60, 15), mesh.stats()
        st = mesh.stats()
        assert st.get("accepted", 0) == 0 and st.get("delivered", 0) == 0, st  # all refused
        t0 = loop.time()
        await asyncio.wait_for(gone.wait(), 20 * SLACK)
        assert t.stats["closed_unidentified"] == 1 and loop.time() - t0 < 15 * SLACK
        await client.disconnect()

        # 2. connects and writes nothing; 3. subscribes and never writes: both "silent"
        for subscribe in (False, True):
            gone = asyncio.Event()
            client = BleakClient(
                await _find(0),
                bluez={"adapter": "hci1"},
                disconnected_callback=lambda _c, ev=gone: ev.set(),  # type: ignore[misc]
            )
            await client.connect()
            if subscribe:
                char = client.services.get_characteristic(char_uuid)
                assert char is not None
                await client.start_notify(char, lambda _c, _d: None)
            await asyncio.wait_for(gone.wait(), 20 * SLACK)
            await client.disconnect()
        assert t.stats["closed_silent"] == 2
        assert await until(lambda: not t.links() and not t.peripheral.connected_devices, 5)
        assert len(t.liveness) == 0  # nothing left behind
        await mesh.stop()

    run(scenario(), timeout=120)


@pytest.mark.parametrize("fake_bluez_config", [FakeBluezConfig(adapters=3)], indirect=True)
def test_a_foreign_advertiser_with_our_uuid_and_garbage_data_is_counted_and_left(
    fake_bluez: FakeBluezProcess,
) -> None:
    """hci1 advertises the mesh service UUID with a garbage short id (wrong length) and serves
    no mesh characteristic: the node connects, finds no mesh characteristic, counts it, ends
    that connection and backs off; it links with the real node on hci2 all the same."""

    async def scenario() -> None:
        svc = GattProfile().service_uuid
        foreign = MeshPeripheral(
            "hci1",
            GattProfile(svc, "0000beef-0000-1000-8000-00805f9b34fb"),
            bytes(8),
            on_write=lambda *_: None,
            on_device=lambda *_: None,
        )
        foreign.adv_props = {
            "ServiceUUIDs": [svc],
            "ManufacturerData": {0xFFFF: b"\xde\xad"},  # not a 6-byte short id
            "Discoverable": True,
        }
        await foreign.start()
        a, b = Node(0, **QUICK), Node(2, **QUICK)
        await a.start()
        await b.start()
        stats = a.transport.central.stats
        assert await until(lambda: stats["connect_failed_no_mesh_char"] >= 1, 30), stats
        assert await until(lambda: _links(a) == 1 and _links(b) == 1, 40), (stats, _links(b))
        assert [li.peer_address for li in a.transport.links()] == [address(2)]
        assert await until(lambda: not foreign.connected_devices, 15)  # the node let go
        c = a.transport.policy.candidates[address(1)]
        assert c.peer_id is None and c.failures >= 1
        for n in (a, b):
            await n.stop()
        await foreign.stop()

    run(scenario(), timeout=120)
