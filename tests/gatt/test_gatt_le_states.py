"""The LE-states limit seen on real bluetoothd (fake BlueZ, real bless + bleak).

In the VM tier (Debian 12, kernel 6.1, controller on hci_uart) a controller holding a link in
the peripheral role never initiated another: the kernel's ``check_pending_le_conn`` refuses
unless the driver sets HCI_QUIRK_VALID_LE_STATES, so bleak's connects only time out, and two
nodes that are each a peripheral of a third never link. The fake reproduces it
(``connect_blocked_while_peripheral``); the node frees its central role
(``peripheral_connect_timeouts``).
"""

from __future__ import annotations

import asyncio

import pytest
from bleak import BleakClient, BleakScanner
from gatt_harness import SLACK, Node, peer, run, until

from ble_bridge.transport import LinkRole
from gatt.fakebluez import FakeBluezConfig, FakeBluezProcess, FakeControl
from gatt.peripheral import MeshPeripheral
from gatt.profile import GattProfile

pytestmark = pytest.mark.dbus
PROFILE = GattProfile()

# No liveness closes in these tests: plain transports carry no mesh traffic.
NO_LIVENESS = dict(first_frame_timeout_s=600.0, identify_timeout_s=600.0, link_idle_timeout_s=600.0)


@pytest.fixture
def fake_bluez_config(request: pytest.FixtureRequest) -> FakeBluezConfig:
    return getattr(request, "param", FakeBluezConfig(adapters=3))


async def find(scanner_adapter: int, index: int) -> object:
    """The BLEDevice of the node on adapter ``index`` as ``scanner_adapter`` hears it."""
    found = asyncio.get_running_loop().create_future()

    def seen(dev: object, adv: object) -> None:
        short = dict(adv.manufacturer_data).get(0xFFFF)  # type: ignore[attr-defined]
        if short == peer(index)[:6] and not found.done():
            found.set_result(dev)

    async with BleakScanner(
        seen, service_uuids=[PROFILE.service_uuid], bluez={"adapter": f"hci{scanner_adapter}"}
    ):
        return await asyncio.wait_for(found, 10 * SLACK)


@pytest.mark.parametrize(
    "fake_bluez_config",
    [FakeBluezConfig(adapters=3, connect_blocked_while_peripheral=True)],
    indirect=True,
)
def test_a_peripheral_adapter_cannot_initiate_until_its_peripheral_link_ends(
    fake_bluez: FakeBluezProcess,
) -> None:
    """As on the VM's 6.1 kernel: hci1, a peripheral of hci0, connects to hci2 only once that
    link ended; bleak's timeout (its Disconnect) cancels a waiting connect."""

    async def scenario() -> None:
        ctl = FakeControl(fake_bluez.address)
        servers = [
            MeshPeripheral(f"hci{i}", PROFILE, peer(i), lambda *_: None, lambda *_: None)
            for i in (1, 2)
        ]
        for s in servers:
            await s.start()
        to1 = BleakClient(await find(0, 1), bluez={"adapter": "hci0"})  # type: ignore[arg-type]
        await to1.connect()
        dev2 = await find(1, 2)
        with pytest.raises(asyncio.TimeoutError):
            await BleakClient(dev2, timeout=1.0, bluez={"adapter": "hci1"}).connect()  # type: ignore[arg-type]
        s = await ctl.wait_for(lambda s: s["stats"].get("connect_blocked_cancelled"), 5 * SLACK)
        assert s["stats"].get("connect_blocked_peripheral") == 1, s["stats"]
        assert s["stats"].get("connect_blocked_cancelled") == 1, s["stats"]
        assert {(lk["central"], lk["peripheral"]) for lk in s["links"]} == {(0, 1)}
        # while it waits, hci0's link to hci1 ends: the waiting connect goes through
        to2 = BleakClient(dev2, timeout=20 * SLACK, bluez={"adapter": "hci1"})  # type: ignore[arg-type]
        pending = asyncio.ensure_future(to2.connect())
        await ctl.wait_for(lambda s: s["stats"].get("connect_blocked_peripheral") == 2, 5 * SLACK)
        assert not pending.done()
        await to1.disconnect()
        await asyncio.wait_for(pending, 10 * SLACK)
        s = await ctl.stats()
        assert s["stats"].get("connect_unblocked") == 1, s["stats"]
        assert {(lk["central"], lk["peripheral"]) for lk in s["links"]} == {(1, 2)}
        await to2.disconnect()
        for srv in servers:
            await srv.stop()
        ctl.close()

    run(scenario(), timeout=90)


@pytest.mark.parametrize(
    "fake_bluez_config",
    # at first node 0 alone hears nodes 1 and 2: it connects to both (smallest id)
    [FakeBluezConfig(adapters=3, connect_blocked_while_peripheral=True, reach={"0": [1, 2]})],
    indirect=True,
)
def test_two_peripherals_of_one_node_link_by_freeing_the_central_role(
    fake_bluez: FakeBluezProcess,
) -> None:
    """Nodes 1 and 2 are node 0's peripherals, then come into range of each other. Node 1
    (smaller id) must connect to node 2, but its controller refuses while it is a
    peripheral; node 2 leaves that link to node 1 (its tie-break grace is long here). After
    ``peripheral_connect_timeouts`` timeouts node 1 ends its inbound link, connects to node 2,
    and node 0 reconnects to it: all three pairs linked. Without the rule node 1 only ever
    times out."""

    async def scenario() -> None:
        ctl = FakeControl(fake_bluez.address)
        nodes = [
            Node(0, **NO_LIVENESS),
            Node(1, tie_break_grace_s=600.0, **NO_LIVENESS),
            Node(2, tie_break_grace_s=600.0, **NO_LIVENESS),
        ]
        for n in nodes:
            await n.start()

        def peripherals_of_0() -> bool:
            return len(nodes[0].links(LinkRole.CENTRAL)) == 2 and all(
                len(n.links(LinkRole.PERIPHERAL)) == 1 for n in nodes[1:]
            )

        assert await until(peripherals_of_0, 30), [n.links() for n in nodes]
        await ctl.configure(reach=None)  # 1 and 2 now hear each other
        assert await until(lambda: all(len(n.links()) == 2 for n in nodes), 60), (
            [n.links() for n in nodes],
            sorted(nodes[1].transport.central.stats.items()),
            (await ctl.stats())["stats"],
        )
        s = await ctl.stats()
        assert s["stats"].get("connect_blocked_peripheral", 0) >= 1, s["stats"]
        assert nodes[1].transport.central.stats["freed_central_role"] == 1
        assert {(lk["central"], lk["peripheral"]) for lk in s["links"]} == {(0, 1), (0, 2), (1, 2)}
        for n in nodes:
            await n.stop()
        ctl.close()

    run(scenario(), timeout=150)
