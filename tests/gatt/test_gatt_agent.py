"""The node's BlueZ agent against the fake bluetoothd on a real dbus-daemon: another
adapter's Device1.Pair is refused outside the pairing window (Pairable false) and accepted
inside it (Pairable true, the agent's RequestAuthorization says yes); the fake's
AgentManager1 is as strict as bluetoothd's."""

from __future__ import annotations

import asyncio

import pytest
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from gatt_harness import SLACK, peer, run

from gatt.agent import AGENT_PATH, PairingAgent
from gatt.fakebluez import FakeBluezProcess
from gatt.fakebluez.service import ENCRYPT_FLAGS, device_path
from gatt.peripheral import MeshPeripheral
from gatt.profile import GattProfile

pytestmark = pytest.mark.dbus


async def call(bus: MessageBus, path: str, iface: str, member: str, sig: str = "",
               body: list[object] | None = None) -> Message:  # fmt: skip
    reply = await bus.call(
        Message(destination="org.bluez", path=path, interface=iface, member=member,
                signature=sig, body=body or [])
    )  # fmt: skip
    assert reply is not None
    return reply


async def prop(bus: MessageBus, path: str, iface: str, name: str) -> object:
    r = await call(bus, path, "org.freedesktop.DBus.Properties", "Get", "ss", [iface, name])
    assert r.message_type == MessageType.METHOD_RETURN, r.body
    return r.body[0].value


def test_agent_refuses_outside_the_window_and_accepts_inside(
    fake_bluez: FakeBluezProcess,
) -> None:
    async def scenario() -> None:
        bonded: list[str] = []
        agent = PairingAgent("hci0", bus_address=fake_bluez.address, on_bonded=bonded.append)
        await agent.start()
        srv = MeshPeripheral(  # advertises: hci1 can connect
            "hci0", GattProfile(), peer(0), on_write=lambda *_: None, on_device=lambda *_: None
        )
        await srv.start()
        other = await MessageBus(bus_address=fake_bluez.address).connect()
        try:
            assert await prop(other, "/org/bluez/hci0", "org.bluez.Adapter1", "Pairable") is False
            dev = device_path(1, 0)  # hci0 as hci1 sees it
            r = await call(other, "/org/bluez/hci1", "org.bluez.Adapter1", "StartDiscovery")
            assert r.message_type == MessageType.METHOD_RETURN, r.body
            for _ in range(int(50 * SLACK)):
                objs = (await call(other, "/", "org.freedesktop.DBus.ObjectManager",
                                   "GetManagedObjects")).body[0]  # fmt: skip
                if dev in objs:
                    break
                await asyncio.sleep(0.1)
            r = await call(other, dev, "org.bluez.Device1", "Connect")
            assert r.message_type == MessageType.METHOD_RETURN, r.body
            # no mesh characteristic asks for an encrypted link (BitChat phones never bond)
            objs = (await call(other, "/", "org.freedesktop.DBus.ObjectManager",
                               "GetManagedObjects")).body[0]  # fmt: skip
            chars = [i["org.bluez.GattCharacteristic1"] for p, i in objs.items()
                     if p.startswith(dev + "/") and "org.bluez.GattCharacteristic1" in i]  # fmt: skip
            assert chars and all(not set(c["Flags"].value) & ENCRYPT_FLAGS for c in chars)
            # outside the window: not pairable, the kernel refuses to bond
            r = await call(other, dev, "org.bluez.Device1", "Pair")
            assert r.error_name == "org.bluez.Error.AuthenticationFailed", r.body
            assert await prop(other, dev, "org.bluez.Device1", "Paired") is False
            # pairable but the window closed (e.g. set by hand): the agent rejects
            r = await call(other, "/org/bluez/hci0", "org.freedesktop.DBus.Properties", "Set",
                           "ssv", ["org.bluez.Adapter1", "Pairable", _true()])  # fmt: skip
            r = await call(other, dev, "org.bluez.Device1", "Pair")
            # as real bluetoothd answers it (scripts/test-deploy-vm.sh: pair_refused=)
            assert r.error_name == "org.bluez.Error.AuthenticationFailed", r.body
            assert agent.stats["refused_authorization_outside_window"] == 1
            agent.set_window(False)
            # inside the window: Pairable true, the agent says yes, both sides bonded
            agent.set_window(True)
            for _ in range(int(20 * SLACK)):
                if await prop(other, "/org/bluez/hci0", "org.bluez.Adapter1", "Pairable"):
                    break
                await asyncio.sleep(0.05)
            r = await call(other, dev, "org.bluez.Device1", "Pair")
            assert r.message_type == MessageType.METHOD_RETURN, r.body
            assert await prop(other, dev, "org.bluez.Device1", "Paired") is True
            assert bonded == [device_path(0, 1)]
            listed = await agent.bonded()
            assert [d["address"] for d in listed] == ["02:B1:0E:00:00:02"]
            agent.set_window(False)
            for _ in range(int(20 * SLACK)):
                if not await prop(other, "/org/bluez/hci0", "org.bluez.Adapter1", "Pairable"):
                    break
                await asyncio.sleep(0.05)
            assert await prop(other, "/org/bluez/hci0", "org.bluez.Adapter1", "Pairable") is False
            assert await agent.remove("02:b1:0e:00:00:02")
            assert await agent.bonded() == []
        finally:
            other.disconnect()
            await srv.stop()
            await agent.stop()

    run(scenario())


def _true() -> object:
    from dbus_fast import Variant

    return Variant("b", True)


def test_agent_manager_is_strict_like_bluetoothd(fake_bluez: FakeBluezProcess) -> None:
    async def scenario() -> None:
        bus = await MessageBus(bus_address=fake_bluez.address).connect()
        am = "org.bluez.AgentManager1"
        try:
            r = await call(bus, "/org/bluez", am, "RegisterAgent", "os", ["/a", "Telepathy"])
            assert r.error_name == "org.bluez.Error.InvalidArguments"
            r = await call(bus, "/org/bluez", am, "RequestDefaultAgent", "o", ["/a"])
            assert r.error_name == "org.bluez.Error.DoesNotExist"
            r = await call(bus, "/org/bluez", am, "RegisterAgent", "os", ["/a", ""])
            assert r.message_type == MessageType.METHOD_RETURN
            r = await call(bus, "/org/bluez", am, "RegisterAgent", "os", ["/b", "DisplayOnly"])
            assert r.error_name == "org.bluez.Error.AlreadyExists"  # one per application
            r = await call(bus, "/org/bluez", am, "UnregisterAgent", "o", ["/b"])
            assert r.error_name == "org.bluez.Error.DoesNotExist"
            r = await call(bus, "/org/bluez", am, "UnregisterAgent", "o", ["/a"])
            assert r.message_type == MessageType.METHOD_RETURN
            assert AGENT_PATH.startswith("/org/bluez/")
        finally:
            bus.disconnect()

    run(scenario())


def test_stop_withdraws_the_advertisement(fake_bluez: FakeBluezProcess) -> None:
    """The node's clean stop (SIGTERM: daemon.serve -> transport stop -> MeshPeripheral.stop)
    leaves no advertisement behind. stop() unregisters it while still on the bus (checked
    through stop_advertising, which it calls) and then leaves the bus, on which bluetoothd (and
    the fake) drops whatever that client still had registered."""

    async def scenario() -> None:
        srv = MeshPeripheral(
            "hci0", GattProfile(), peer(0), on_write=lambda *_: None, on_device=lambda *_: None
        )
        other = await MessageBus(bus_address=fake_bluez.address).connect()
        adv = "org.bluez.LEAdvertisingManager1"
        try:
            assert await prop(other, "/org/bluez/hci0", adv, "ActiveInstances") == 0
            await srv.start()
            for _ in range(int(50 * SLACK)):
                if await prop(other, "/org/bluez/hci0", adv, "ActiveInstances") == 1:
                    break
                await asyncio.sleep(0.1)
            assert await prop(other, "/org/bluez/hci0", adv, "ActiveInstances") == 1
            await srv.stop_advertising()  # still on the bus: withdrawn by UnregisterAdvertisement
            assert await prop(other, "/org/bluez/hci0", adv, "ActiveInstances") == 0
            await srv.sync_advertising()
            assert await prop(other, "/org/bluez/hci0", adv, "ActiveInstances") == 1
            await srv.stop()
            assert await prop(other, "/org/bluez/hci0", adv, "ActiveInstances") == 0
        finally:
            other.disconnect()
            await srv.stop()

    run(scenario())
