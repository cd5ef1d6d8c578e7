"""Deploy VM (scripts/test-deploy-vm.sh): one pairing attempt of the "phone" adapter with the
node's adapter through the guest's real bluetoothd (Device1.Pair on the phone's side, which
registers no agent: NoInputNoOutput, just works). A bond left from an earlier attempt is
removed first. With --advertise the node's adapter is made to advertise for the attempt (an
LEAdvertisement1 of ours registered on it), for when no node runs: bluetoothd's Discoverable
alone does not make an LE-only controller advertise (the stopped node's case; the phone never
saw it). Prints one JSON line: {"paired": bool, "error": name or null, "message": str}.
Run with the installed venv's Python (dbus-fast)."""

import argparse
import asyncio
import contextlib
import json
import sys
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_property, method

BLUEZ = "org.bluez"
PROPS = "org.freedesktop.DBus.Properties"


class BluezError(Exception):
    def __init__(self, name: str, text: str) -> None:
        super().__init__(f"{name}: {text}")
        self.name = name
        self.text = text


async def call(
    bus: MessageBus, path: str, iface: str, member: str, sig: str = "", body: Any = ()
) -> Any:
    reply = await bus.call(
        Message(
            destination=BLUEZ,
            path=path,
            interface=iface,
            member=member,
            signature=sig,
            body=list(body),
        )
    )
    assert reply is not None
    if reply.message_type == MessageType.ERROR:
        raise BluezError(reply.error_name or "?", str(reply.body[0]) if reply.body else "")
    return reply.body


ADV_PATH = "/org/bleBridge/deployVm/adv0"


class Advertisement(ServiceInterface):
    """A connectable, discoverable advertisement with a name, as bluetoothctl's would be."""

    def __init__(self) -> None:
        super().__init__("org.bluez.LEAdvertisement1")

    @method()
    def Release(self) -> None:
        pass

    @dbus_property(access=PropertyAccess.READ)
    def Type(self) -> "s":  # noqa: F821
        return "peripheral"

    @dbus_property(access=PropertyAccess.READ)
    def LocalName(self) -> "s":  # noqa: F821
        return "deploy-vm-node"

    @dbus_property(access=PropertyAccess.READ)
    def Discoverable(self) -> "b":  # noqa: F821
        return True


async def objects(bus: MessageBus) -> dict[str, Any]:
    (objs,) = await call(bus, "/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
    return dict(objs)


async def attempt(node: str, phone: str, advertise: bool) -> dict[str, Any]:
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    node_path, phone_path = f"/org/bluez/{node}", f"/org/bluez/{phone}"
    if advertise:
        bus.export(ADV_PATH, Advertisement())
        await call(
            bus, node_path, "org.bluez.LEAdvertisingManager1", "RegisterAdvertisement",
            "oa{sv}", [ADV_PATH, {}],
        )  # fmt: skip
    (addr,) = await call(bus, node_path, PROPS, "Get", "ss", ["org.bluez.Adapter1", "Address"])
    dev = f"{phone_path}/dev_{addr.value.replace(':', '_')}"
    await call(
        bus, phone_path, PROPS, "Set", "ssv", ["org.bluez.Adapter1", "Pairable", Variant("b", True)]
    )
    if dev in await objects(bus):
        await call(bus, phone_path, "org.bluez.Adapter1", "RemoveDevice", "o", [dev])
    await call(
        bus,
        phone_path,
        "org.bluez.Adapter1",
        "SetDiscoveryFilter",
        "a{sv}",
        [{"Transport": Variant("s", "le")}],
    )
    await call(bus, phone_path, "org.bluez.Adapter1", "StartDiscovery")
    try:
        for _ in range(120):
            if dev in await objects(bus):
                break
            await asyncio.sleep(0.5)
        else:
            return {
                "paired": False,
                "error": "not-found",
                "message": f"{addr.value} never seen from {phone}",
            }
    finally:
        with contextlib.suppress(BluezError):
            await call(bus, phone_path, "org.bluez.Adapter1", "StopDiscovery")
    result: dict[str, Any] = {"paired": False, "error": None, "message": ""}
    try:
        await asyncio.wait_for(call(bus, dev, "org.bluez.Device1", "Pair"), 90)
    except BluezError as exc:
        result.update(error=exc.name, message=exc.text)
    except TimeoutError:
        result.update(error="timeout", message="no answer to Pair in 90 s")
    (paired,) = await call(bus, dev, PROPS, "Get", "ss", ["org.bluez.Device1", "Paired"])
    result["paired"] = bool(paired.value)
    with contextlib.suppress(BluezError):
        await call(bus, dev, "org.bluez.Device1", "Disconnect")
    if advertise:
        with contextlib.suppress(BluezError):
            await call(
                bus, node_path, "org.bluez.LEAdvertisingManager1", "UnregisterAdvertisement",
                "o", [ADV_PATH],
            )  # fmt: skip
    bus.disconnect()
    return result


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--node", default="hci0")
    ap.add_argument("--phone", default="hci1")
    ap.add_argument("--advertise", action="store_true", help="advertise the node's adapter")
    args = ap.parse_args()
    print(json.dumps(asyncio.run(attempt(args.node, args.phone, args.advertise))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
