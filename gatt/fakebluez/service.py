"""A fake bluetoothd: N adapters on one D-Bus, linked to each other like radios.

It owns the well-known name ``org.bluez`` and serves the objects bleak and bless use:
adapters (Adapter1, GattManager1, LEAdvertisingManager1), discovered devices (Device1), and
per-connection GATT mirrors (GattService1/GattCharacteristic1/GattDescriptor1 at BlueZ's
``<device>/serviceXXXX/charYYYY/descZZZZ`` paths). Writes on a mirror are forwarded to the
serving application with BlueZ's options; the serving application's ``PropertiesChanged(Value)``
reaches subscribed centrals, truncated to MTU-3. Every method call is handled by one message
handler (it needs the caller's unique name, which dbus-fast's service methods never see).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.constants import BusType, MessageFlag

from ble_bridge.transport import MAX_ATT_VALUE, frame_limit
from gatt import advert as ad
from gatt import dbus_patch
from gatt.fakebluez import interfaces as I
from gatt.fakebluez.config import FakeBluezConfig, LinkModel

log = logging.getLogger(__name__)

BUS_NAME = "org.bluez"
ERR = "org.bluez.Error."
ENCRYPT_FLAGS = frozenset(
    {"encrypt-write", "encrypt-authenticated-write", "secure-write", "encrypt-read",
     "encrypt-authenticated-read", "secure-read"}
)  # fmt: skip
MAX_VALUE_LEN = MAX_ATT_VALUE
"""Largest attribute value (BT_ATT_MAX_VALUE_LEN): BlueZ cuts longer notifications to it."""
AGENT_MANAGER_PATH = "/org/bluez"
AGENT_CAPABILITIES = frozenset(
    {"", "DisplayOnly", "DisplayYesNo", "KeyboardOnly", "NoInputNoOutput", "KeyboardDisplay"}
)
DEFERRED_REPLY_DEPTH = 256
"""Queued frames on a link direction beyond which a write-command's reply waits (backpressure)."""


class BluezError(Exception):
    """A refused operation, answered with BlueZ's error name."""

    def __init__(self, name: str, text: str) -> None:
        super().__init__(text)
        self.name = ERR + name
        self.text = text


def value_limit(mtu: int) -> int:
    """Bytes one write-command or notification carries: ``min(mtu - 3, 512)``."""
    return frame_limit(mtu)


def adapter_address(index: int) -> str:
    return f"02:B1:0E:00:00:{index + 1:02X}"


def device_path(viewer: int, remote: int) -> str:
    return f"/org/bluez/hci{viewer}/dev_{adapter_address(remote).replace(':', '_')}"


@dataclass(slots=True)
class AppChar:
    path: str
    uuid: str
    flags: list[str]
    descs: list[tuple[str, str, list[str]]]


@dataclass(slots=True)
class App:
    """A GATT application registered by a client on one adapter."""

    sender: str
    path: str
    services: list[tuple[str, str, bool, list[AppChar]]]


@dataclass(slots=True)
class Advert:
    sender: str
    path: str
    props: dict[str, Any]
    encoded: ad.EncodedAdvert
    active: bool = True


@dataclass(slots=True)
class Adapter:
    index: int
    path: str
    address: str
    powered: bool = True
    apps: dict[tuple[str, str], App] = field(default_factory=dict)
    adverts: dict[tuple[str, str], Advert] = field(default_factory=dict)
    discovery: set[str] = field(default_factory=set)
    filters: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_seen: dict[int, float] = field(default_factory=dict)

    def advertising(self) -> bool:
        return self.powered and any(a.active for a in self.adverts.values())


@dataclass(slots=True)
class Item:
    """One frame in flight on a link direction."""

    due: float
    kind: str  # "write" | "notify"
    target: Any  # MirrorChar for notify; the forwarded Message for write
    app_sender: str = ""
    reply_to: Message | None = None  # central's request to answer after the app answers
    deferred: Message | None = None  # write-command reply held back for backpressure


class Direction:
    """Frames travelling one way on a link, delivered in order after the link latency."""

    def __init__(self, fake: FakeBluez, link: Link) -> None:
        self.fake = fake
        self.link = link
        self.queue: deque[Item] = deque()
        self.wake = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self.run())

    def put(self, item: Item) -> bool:
        if len(self.queue) >= self.fake.config.link_buffer:
            self.fake.stats["link_buffer_overflow"] += 1
            return False
        self.queue.append(item)
        self.wake.set()
        return True

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.queue:
                self.wake.clear()
                await self.wake.wait()
                continue
            wait = self.queue[0].due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            item = self.queue.popleft()
            if item.deferred is not None:
                self.fake.send(Message.new_method_return(item.deferred))
            if not self.link.alive:
                continue
            if item.kind == "notify":
                self.fake.deliver_notify(item.target, item.target.pending.popleft())
            else:
                await self.fake.forward(item)


@dataclass(slots=True)
class MirrorChar:
    """A remote characteristic as a central sees it: one per link, viewer and app char."""

    path: str
    link: Link
    viewer: int
    server: int
    app_sender: str
    app_path: str
    uuid: str
    flags: list[str]
    notifying: bool = False
    notify_sock: socket.socket | None = None
    write_sock: socket.socket | None = None
    pending: deque[bytes] = field(default_factory=deque)


@dataclass(eq=False)
class Link:
    """One LE connection between two adapters; both sides may act as GATT client."""

    central: int
    peripheral: int
    model: LinkModel
    alive: bool = True
    paired: bool = False
    half_open: bool = False
    """Connect race: only the central sees this link; writes vanish, nothing is notified."""
    mirrors: list[str] = field(default_factory=list)
    dirs: dict[int, Direction] = field(default_factory=dict)  # keyed by receiving adapter

    def other(self, index: int) -> int:
        return self.peripheral if index == self.central else self.central


class FakeBluez:
    """The fake bluetoothd. ``await start(address)``, ``await stop()``."""

    def __init__(self, config: FakeBluezConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.stats: Counter[str] = Counter()
        self.bus: MessageBus | None = None
        self.adapters = [
            Adapter(i, f"/org/bluez/hci{i}", adapter_address(i)) for i in range(config.adapters)
        ]
        self.tree: dict[str, dict[str, dict[str, Variant]]] = {}
        self.links: dict[frozenset[int], Link] = {}
        self.half_open: dict[frozenset[int], tuple[int, int]] = {}
        """Connect race, other way round: (central, peripheral) pairs where only the
        peripheral sees a connection (a connected device that never writes)."""
        self.blocked_connects: dict[str, asyncio.Event] = {}
        """Device paths of Connect calls waiting while their adapter is a peripheral
        (``connect_blocked_while_peripheral``); set the event to cancel one."""
        self.mirror_chars: dict[str, MirrorChar] = {}
        self.mirror_descs: dict[str, tuple[Link, int, str, str]] = {}
        self.fanout: dict[tuple[str, str], list[MirrorChar]] = {}
        self.windows: dict[str, asyncio.Semaphore] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self.agents: dict[str, tuple[str, str]] = {}  # client -> (agent path, capability)
        self.default_agent: str | None = None  # the client whose agent is the default
        self._handlers: dict[tuple[str, str], Callable[[Message], None]] = {
            (I.AGENT_MANAGER, "RegisterAgent"): self._register_agent,
            (I.AGENT_MANAGER, "UnregisterAgent"): self._unregister_agent,
            (I.AGENT_MANAGER, "RequestDefaultAgent"): self._request_default_agent,
            (I.ADAPTER, "StartDiscovery"): self._start_discovery,
            (I.ADAPTER, "StopDiscovery"): self._stop_discovery,
            (I.ADAPTER, "SetDiscoveryFilter"): self._set_filter,
            (I.ADAPTER, "RemoveDevice"): self._remove_device,
            (I.ADAPTER, "GetDiscoveryFilters"): lambda m: self.reply(
                m, "as", [["UUIDs", "RSSI", "Transport", "DuplicateData"]]
            ),
            (I.GATT_MANAGER, "RegisterApplication"): self._register_app,
            (I.GATT_MANAGER, "UnregisterApplication"): self._unregister_app,
            (I.ADV_MANAGER, "RegisterAdvertisement"): self._register_adv,
            (I.ADV_MANAGER, "UnregisterAdvertisement"): self._unregister_adv,
            (I.DEVICE, "Connect"): self._connect,
            (I.DEVICE, "Disconnect"): self._disconnect,
            (I.DEVICE, "Pair"): self._pair,
            (I.DEVICE, "CancelPairing"): lambda m: self.reply(m),
            (I.GATT_CHAR, "WriteValue"): self._write_value,
            (I.GATT_CHAR, "ReadValue"): self._read_value,
            (I.GATT_CHAR, "StartNotify"): self._start_notify,
            (I.GATT_CHAR, "StopNotify"): self._stop_notify,
            (I.GATT_CHAR, "AcquireWrite"): self._acquire_write,
            (I.GATT_CHAR, "AcquireNotify"): self._acquire_notify,
            (I.GATT_DESC, "ReadValue"): self._desc_read,
            (I.GATT_DESC, "WriteValue"): self._desc_write,
            (I.CONTROL, "Configure"): self._ctl_configure,
            (I.CONTROL, "SetLink"): self._ctl_set_link,
            (I.CONTROL, "DropLink"): self._ctl_drop_link,
            (I.CONTROL, "SetPowered"): self._ctl_set_powered,
            (I.CONTROL, "Stats"): lambda m: self.reply(m, "s", [self.stats_json()]),
        }

    # ---------------------------------------------------------------- lifecycle

    async def start(self, address: str | None = None) -> None:
        """Connect to the bus, take ``org.bluez`` and publish the adapters."""
        dbus_patch.install()
        if address:
            bus = MessageBus(bus_address=address, negotiate_unix_fd=True)
        else:
            bus = MessageBus(bus_type=BusType.SYSTEM, negotiate_unix_fd=True)
        self.bus = await bus.connect()
        self.bus.add_message_handler(self._on_message)
        await self._add_match(
            "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged'"
        )
        self.add_object(AGENT_MANAGER_PATH, I.AGENT_MANAGER, {})
        for a in self.adapters:
            self._publish_adapter(a)
        await self.bus.request_name(BUS_NAME)
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        """Remove every object (as bluetoothd does on a clean exit) and leave the bus."""
        if self._ticker is not None:
            self._ticker.cancel()
        for link in list(self.links.values()):
            self.drop_link(link, "shutdown")
        for path in sorted(self.tree, key=len, reverse=True):
            self.remove_object(path)
        if self.bus is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.bus.release_name(BUS_NAME), 1.0)
            self.bus.disconnect()
            self.bus = None
        for t in list(self._tasks):
            t.cancel()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _add_match(self, rule: str) -> None:
        assert self.bus is not None
        await self.bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="AddMatch",
                signature="s",
                body=[rule],
            )
        )

    # ---------------------------------------------------------------- object tree

    def send(self, msg: Message) -> None:
        if self.bus is not None and self.bus.connected:
            self.bus.send(msg)

    def reply(self, msg: Message, sig: str = "", body: list[Any] | None = None) -> None:
        self.send(Message.new_method_return(msg, sig, body or []))

    def error(self, msg: Message, name: str, text: str) -> None:
        self.send(Message.new_error(msg, name, text))

    def add_object(self, path: str, iface: str, props: dict[str, Any]) -> None:
        sigs = I.INTERFACES[iface].properties
        packed = {k: Variant(sigs[k], v) for k, v in props.items()}
        self.tree.setdefault(path, {})[iface] = packed
        self.send(
            Message.new_signal(
                path="/",
                interface=I.OBJECT_MANAGER,
                member="InterfacesAdded",
                signature="oa{sa{sv}}",
                body=[path, {iface: packed}],
            )
        )

    def remove_object(self, path: str) -> None:
        ifaces = self.tree.pop(path, None)
        if ifaces:
            self.send(
                Message.new_signal(
                    path="/",
                    interface=I.OBJECT_MANAGER,
                    member="InterfacesRemoved",
                    signature="oas",
                    body=[path, list(ifaces)],
                )
            )

    def set_props(self, path: str, iface: str, changes: dict[str, Any]) -> None:
        obj = self.tree.get(path, {}).get(iface)
        if obj is None:
            return
        sigs = I.INTERFACES[iface].properties
        changed = {}
        for k, v in changes.items():
            var = Variant(sigs[k], v)
            if k not in obj or obj[k] != var:
                obj[k] = var
                changed[k] = var
        if changed:
            self.send(
                Message.new_signal(
                    path=path,
                    interface=I.PROPERTIES,
                    member="PropertiesChanged",
                    signature="sa{sv}as",
                    body=[iface, changed, []],
                )
            )

    def prop(self, path: str, iface: str, name: str) -> Any:
        return self.tree[path][iface][name].value

    def _publish_adapter(self, a: Adapter) -> None:
        self.add_object(
            a.path,
            I.ADAPTER,
            {
                "Address": a.address,
                "AddressType": "public",
                "Name": f"fake-hci{a.index}",
                "Alias": f"fake-hci{a.index}",
                "Class": 0,
                "Powered": a.powered,
                "Connectable": True,
                "Discoverable": False,
                "DiscoverableTimeout": 180,
                "Pairable": True,
                "PairableTimeout": 0,
                "Discovering": False,
                "UUIDs": [],
                "Modalias": "usb:v1D6Bp0246d0552",
                "Roles": ["central", "peripheral"],
            },
        )
        self.add_object(a.path, I.GATT_MANAGER, {})
        self.add_object(
            a.path,
            I.ADV_MANAGER,
            {"ActiveInstances": 0, "SupportedInstances": 5, "SupportedIncludes": ["tx-power"]},
        )

    # ---------------------------------------------------------------- dispatch

    def _on_message(self, msg: Message) -> bool:
        if msg.message_type == MessageType.SIGNAL:
            self._on_signal(msg)
            return False
        if msg.message_type != MessageType.METHOD_CALL:
            return False
        try:
            self._dispatch(msg)
        except BluezError as e:
            self.error(msg, e.name, e.text)
        except Exception as e:  # a bug in the fake must not kill it
            log.exception("fake bluez failed on %s.%s", msg.interface, msg.member)
            self.error(msg, ERR + "Failed", f"fake bluez internal error: {e}")
        return True

    def _dispatch(self, msg: Message) -> None:
        path, iface, member = msg.path or "/", msg.interface, msg.member
        if iface == I.INTROSPECTABLE:
            self.reply(msg, "s", [self._introspect(path)])
            return
        if iface == I.OBJECT_MANAGER and member == "GetManagedObjects":
            self.reply(msg, "a{oa{sa{sv}}}", [self.tree])
            return
        if iface == I.PROPERTIES:
            self._properties(msg)
            return
        if path == "/" and (iface in (None, I.CONTROL)):
            iface = I.CONTROL
        elif iface is None:
            iface = next(
                (
                    n
                    for n in self.tree.get(path, {})
                    if any(m.name == member for m in I.INTERFACES[n].methods)
                ),
                None,
            )
        elif iface not in self.tree.get(path, {}):
            iface = None
        handler = self._handlers.get((iface or "", member or ""))
        if handler is None:
            if path not in self.tree and path != "/":
                raise_unknown = "org.freedesktop.DBus.Error.UnknownObject"
                self.error(msg, raise_unknown, f"no object {path}")
            else:
                self.error(msg, "org.freedesktop.DBus.Error.UnknownMethod", f"no {member}")
            return
        handler(msg)

    def _introspect(self, path: str) -> str:
        prefix = path.rstrip("/") + "/"
        children = sorted(
            {p[len(prefix) :].split("/")[0] for p in self.tree if p.startswith(prefix)}
        )
        ifaces = list(self.tree.get(path, {}))
        if path == "/":
            ifaces.append(I.CONTROL)
        return I.introspect_xml(ifaces, children, root=path == "/")

    def _properties(self, msg: Message) -> None:
        path = msg.path or "/"
        body = msg.body
        obj = self.tree.get(path, {}).get(body[0]) if body else None
        if obj is None:
            raise BluezError("DoesNotExist", "No such interface")
        if msg.member == "GetAll":
            self.reply(msg, "a{sv}", [obj])
        elif msg.member == "Get":
            if body[1] not in obj:
                raise BluezError("DoesNotExist", f"No such property {body[1]}")
            self.reply(msg, "v", [obj[body[1]]])
        elif msg.member == "Set":
            iface, name, value = body
            if name not in I.INTERFACES[iface].writable:
                raise BluezError("NotPermitted", f"{name} is read-only")
            if path.count("/") == 3 and name == "Powered":
                self._set_powered(int(path[len("/org/bluez/hci") :]), bool(value.value))
            else:
                self.set_props(path, iface, {name: value.value})
            self.reply(msg)

    def _on_signal(self, msg: Message) -> None:
        if msg.member == "NameOwnerChanged" and msg.sender == "org.freedesktop.DBus":
            name, _old, new = msg.body
            if not new and name.startswith(":"):
                self._client_gone(name)
            return
        if msg.member == "PropertiesChanged" and msg.body and msg.body[0] == I.GATT_CHAR:
            value = msg.body[1].get("Value")
            mirrors = self.fanout.get((msg.sender or "", msg.path or ""))
            if value is not None and mirrors:
                self._notify(mirrors, bytes(value.value))

    def _client_gone(self, sender: str) -> None:
        for a in self.adapters:
            for key in [k for k in a.apps if k[0] == sender]:
                self._drop_app(a, key)
            for key in [k for k in a.adverts if k[0] == sender]:
                del a.adverts[key]
                self._update_adv_count(a)
            if sender in a.discovery:
                a.discovery.discard(sender)
                a.filters.pop(sender, None)
                self.set_props(a.path, I.ADAPTER, {"Discovering": bool(a.discovery)})
        self.windows.pop(sender, None)
        if self.agents.pop(sender, None) is not None and self.default_agent == sender:
            self.default_agent = None  # bluetoothd: the agent is gone with its client

    # ---------------------------------------------------------------- helpers

    def adapter_of(self, path: str) -> Adapter:
        parts = path.split("/")
        if len(parts) < 4 or not parts[3].startswith("hci"):
            raise BluezError("DoesNotExist", f"no adapter in {path}")
        return self.adapters[int(parts[3][3:])]

    def remote_of(self, dev_path: str) -> int:
        addr = dev_path.split("/")[4][4:].replace("_", ":")
        for a in self.adapters:
            if a.address == addr:
                return a.index
        raise BluezError("DoesNotExist", "unknown device")

    def link_between(self, a: int, b: int) -> Link | None:
        link = self.links.get(frozenset((a, b)))
        return link if link is not None and link.alive else None

    def stats_json(self) -> str:
        links = [
            {
                "central": lk.central,
                "peripheral": lk.peripheral,
                "mtu": lk.model.mtu,
                "queued": {str(k): len(d.queue) for k, d in lk.dirs.items()},
            }
            for lk in self.links.values()
        ]
        adverts = {a.index: sum(1 for x in a.adverts.values() if x.active) for a in self.adapters}
        registered = {
            a.index: {"apps": len(a.apps), "adverts": len(a.adverts)} for a in self.adapters
        }
        return json.dumps(
            {
                "stats": dict(self.stats),
                "links": links,
                "advertising": adverts,
                "registered": registered,
                "half_open": [list(pair) for pair in self.half_open.values()]
                + [[lk.central, lk.peripheral] for lk in self.links.values() if lk.half_open],
            }
        )

    # ---------------------------------------------------------------- discovery

    def _start_discovery(self, msg: Message) -> None:
        a = self.adapter_of(msg.path or "")
        if not a.powered:
            raise BluezError("NotReady", "Resource Not Ready")
        a.discovery.add(msg.sender or "")
        self.set_props(a.path, I.ADAPTER, {"Discovering": True})
        self.reply(msg)
        self._scan(a, asyncio.get_running_loop().time())

    def _stop_discovery(self, msg: Message) -> None:
        a = self.adapter_of(msg.path or "")
        if (msg.sender or "") not in a.discovery:
            raise BluezError("Failed", "No discovery started")
        a.discovery.discard(msg.sender or "")
        a.filters.pop(msg.sender or "", None)
        self.set_props(a.path, I.ADAPTER, {"Discovering": bool(a.discovery)})
        self.reply(msg)

    def _set_filter(self, msg: Message) -> None:
        a = self.adapter_of(msg.path or "")
        a.filters[msg.sender or ""] = {k: v.value for k, v in msg.body[0].items()}
        self.reply(msg)

    def _remove_device(self, msg: Message) -> None:
        a = self.adapter_of(msg.path or "")
        dev = msg.body[0]
        remote = self.remote_of(dev)
        link = self.link_between(a.index, remote)
        if link is not None:
            self.drop_link(link, "removed")
        self.remove_object(dev)
        a.last_seen.pop(remote, None)
        self.reply(msg)

    def _wanted(self, a: Adapter, uuids: list[str]) -> bool:
        wanted: set[str] = set()
        for f in a.filters.values():
            if not f.get("UUIDs"):
                return True
            wanted.update(u.lower() for u in f["UUIDs"])
        return not a.filters or bool(wanted & {u.lower() for u in uuids})

    def _scan(self, a: Adapter, now: float) -> None:
        """What scanning adapter ``a`` hears in one advertising interval."""
        for b in self.adapters:
            if b is a or not b.advertising() or not self.config.in_range(a.index, b.index):
                continue
            adv = next(x for x in b.adverts.values() if x.active)
            # a scanner sees what survives the encoding, as with a radio in between
            heard = ad.decode(adv.encoded.on_air, adv.encoded.scan_rsp)
            uuids = heard.uuids
            if not self._wanted(a, uuids):
                continue
            a.last_seen[b.index] = now
            path = device_path(a.index, b.index)
            rssi = -45 - self.rng.randint(0, 20)
            sdata = {k: Variant("ay", v) for k, v in heard.service_data.items()}
            mdata = {k: Variant("ay", v) for k, v in heard.manufacturer_data.items()}
            if path not in self.tree:
                self._add_device(a, b, uuids, sdata, mdata, rssi, heard.name)
            else:
                self.set_props(
                    path,
                    I.DEVICE,
                    {"UUIDs": uuids, "ServiceData": sdata, "ManufacturerData": mdata, "RSSI": rssi},
                )

    def _add_device(
        self,
        a: Adapter,
        b: Adapter,
        uuids: list[str],
        sdata: dict[str, Variant],
        mdata: dict[int, Variant],
        rssi: int,
        name: str | None,
    ) -> None:
        props: dict[str, Any] = {
            "Address": b.address,
            "AddressType": "public",
            "Alias": name or b.address.replace(":", "-"),
            "Adapter": a.path,
            "UUIDs": uuids,
            "ServiceData": sdata,
            "ManufacturerData": mdata,
            "RSSI": rssi,
            "TxPower": 0,
            "Connected": False,
            "ServicesResolved": False,
            "Paired": False,
            "Bonded": False,
            "Trusted": False,
            "Blocked": False,
            "LegacyPairing": False,
        }
        if name:
            props["Name"] = name
        self.add_object(device_path(a.index, b.index), I.DEVICE, props)

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.adv_interval_s)
            now = loop.time()
            for a in self.adapters:
                if a.discovery and a.powered:
                    self._scan(a, now)
                for remote, seen in list(a.last_seen.items()):
                    if now - seen > self.config.device_timeout_s and not self.link_between(
                        a.index, remote
                    ):
                        self.remove_object(device_path(a.index, remote))
                        del a.last_seen[remote]

    # ---------------------------------------------------------------- registration

    def _register_app(self, msg: Message) -> None:
        a = self.adapter_of(msg.path or "")
        key = (msg.sender or "", msg.body[0])
        if key in a.apps:
            raise BluezError("AlreadyExists", "Already Exists")
        self._spawn(self._load_app(a, key, msg))

    async def _load_app(self, a: Adapter, key: tuple[str, str], msg: Message) -> None:
        assert self.bus is not None
        sender, app_path = key
        reply = await self.bus.call(
            Message(
                destination=sender,
                path=app_path,
                interface=I.OBJECT_MANAGER,
                member="GetManagedObjects",
            )
        )
        if reply is None or reply.message_type == MessageType.ERROR:
            self.error(msg, ERR + "Failed", "No object received")
            return
        objs: dict[str, dict[str, dict[str, Variant]]] = reply.body[0]
        prefix = "" if app_path == "/" else app_path
        services: list[tuple[str, str, bool, list[AppChar]]] = []
        for spath in sorted(objs):
            svc = objs[spath].get(I.GATT_SERVICE)
            if svc is None or not spath.startswith(prefix):
                continue
            chars: list[AppChar] = []
            for cpath in sorted(objs):
                ch = objs[cpath].get(I.GATT_CHAR)
                if ch is None or ch["Service"].value != spath:
                    continue
                descs = [
                    (dp, objs[dp][I.GATT_DESC]["UUID"].value, objs[dp][I.GATT_DESC]["Flags"].value)
                    for dp in sorted(objs)
                    if I.GATT_DESC in objs[dp]
                    and objs[dp][I.GATT_DESC]["Characteristic"].value == cpath
                ]
                chars.append(AppChar(cpath, ch["UUID"].value, list(ch["Flags"].value), descs))
            primary = svc.get("Primary")
            services.append((spath, svc["UUID"].value, bool(primary and primary.value), chars))
        a.apps[key] = App(sender, app_path, services)
        await self._add_match(
            f"type='signal',sender='{sender}',interface='{I.PROPERTIES}',member='PropertiesChanged'"
        )
        self.reply(msg)
        self.stats["apps_registered"] += 1

    def _unregister_app(self, msg: Message) -> None:
        a = self.adapter_of(msg.path or "")
        key = (msg.sender or "", msg.body[0])
        if key not in a.apps:
            raise BluezError("DoesNotExist", "Does Not Exist")
        self._drop_app(a, key)
        self.reply(msg)

    def _drop_app(self, a: Adapter, key: tuple[str, str]) -> None:
        a.apps.pop(key, None)
        for fan_key in [k for k in self.fanout if k[0] == key[0]]:
            for mc in self.fanout.pop(fan_key):
                self._release_socks(mc)
                self.mirror_chars.pop(mc.path, None)
                self.remove_object(mc.path)

    def _register_adv(self, msg: Message) -> None:
        a = self.adapter_of(msg.path or "")
        key = (msg.sender or "", msg.body[0])
        if key in a.adverts:
            raise BluezError("AlreadyExists", "Already Exists")
        if len(a.adverts) >= 5:
            raise BluezError("NotPermitted", "Maximum advertisements reached")
        self._spawn(self._load_adv(a, key, msg))

    async def _load_adv(self, a: Adapter, key: tuple[str, str], msg: Message) -> None:
        assert self.bus is not None
        reply = await self.bus.call(
            Message(
                destination=key[0],
                path=key[1],
                interface=I.PROPERTIES,
                member="GetAll",
                signature="s",
                body=[I.ADVERTISEMENT],
            )
        )
        if reply is None or reply.message_type == MessageType.ERROR:
            self.error(msg, ERR + "Failed", "Failed to parse advertisement")
            return
        props = {k: v.value for k, v in reply.body[0].items()}
        try:
            encoded = ad.encode(props, self.adv_rules(a))
        except ad.AdvertError as e:
            # bluetoothd -d: "Advertising data too long or couldn't be generated."
            self.stats["adv_refused"] += 1
            log.info("advertisement %s refused: %s (%d bytes)", key[1], e.reason, e.size)
            self.error(msg, ERR + "Failed", ad.REGISTER_FAILED)
            return
        a.adverts[key] = Advert(key[0], key[1], props, encoded)
        self._update_adv_count(a)
        self.reply(msg)

    def _unregister_adv(self, msg: Message) -> None:
        a = self.adapter_of(msg.path or "")
        key = (msg.sender or "", msg.body[0])
        if a.adverts.pop(key, None) is None:
            raise BluezError("DoesNotExist", "Does Not Exist")
        self._update_adv_count(a)
        self.reply(msg)

    def adv_rules(self, a: Adapter) -> ad.BluezRules:
        """How this fake bluetoothd encodes adverts on adapter ``a``."""
        prop = self.tree.get(a.path, {}).get(I.ADAPTER, {}).get("Discoverable")
        return ad.BluezRules(
            version=self.config.version(),
            experimental=self.config.experimental,
            max_adv_len=self.config.max_adv_len,
            adapter_discoverable=prop is not None and bool(prop.value),
        )

    def _update_adv_count(self, a: Adapter) -> None:
        active = sum(1 for ad in a.adverts.values() if ad.active)
        self.set_props(a.path, I.ADV_MANAGER, {"ActiveInstances": active})

    # ---------------------------------------------------------------- connections

    def _connect(self, msg: Message) -> None:
        dev = msg.path or ""
        a = self.adapter_of(dev)
        b = self.adapters[self.remote_of(dev)]
        link = self.link_between(a.index, b.index)
        if link is not None and link.half_open and link.peripheral == a.index:
            self.stats["connect_fail_half_open"] += 1
            raise BluezError("Failed", "le-connection-abort-by-local")
        if link is not None:
            raise BluezError("AlreadyConnected", "Already Connected")
        if frozenset((a.index, b.index)) in self.half_open:
            # bluetoothd: "Device ... is already connected"; the attempt fails
            self.stats["connect_fail_half_open"] += 1
            raise BluezError("Failed", "le-connection-abort-by-local")
        if not a.powered:
            raise BluezError("NotReady", "Resource Not Ready")
        cfg = self.config
        if self.rng.random() < cfg.inprogress_rate:
            self.stats["connect_inprogress"] += 1
            raise BluezError("InProgress", "In Progress")
        self._spawn(self._connect_later(msg, a, b))

    def is_peripheral(self, index: int) -> bool:
        """The adapter holds a link (or a half-open connection it sees) as the peripheral."""
        return any(lk.peripheral == index for lk in self.links.values() if not lk.half_open) or any(
            pair[1] == index for pair in self.half_open.values()
        )

    async def _blocked_while_peripheral(self, msg: Message, a: Adapter) -> bool:
        """Wait as the kernel does while ``a`` is a peripheral; True: the Connect ended."""
        dev = msg.path or ""
        cfg = self.config
        if dev in self.blocked_connects:
            self.error(msg, ERR + "InProgress", "In Progress")
            return True
        self.stats["connect_blocked_peripheral"] += 1
        cancel = self.blocked_connects[dev] = asyncio.Event()
        loop = asyncio.get_running_loop()
        end = loop.time() + cfg.blocked_connect_s
        try:
            while self.is_peripheral(a.index):
                if cancel.is_set():
                    self.stats["connect_blocked_cancelled"] += 1
                    self.error(msg, ERR + "Failed", "Operation was cancelled")
                    return True
                if loop.time() >= end:
                    self.stats["connect_blocked_timeout"] += 1
                    self.error(msg, ERR + "Failed", "le-connection-abort-by-local")
                    return True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(cancel.wait(), cfg.adv_interval_s)
        finally:
            self.blocked_connects.pop(dev, None)
        self.stats["connect_unblocked"] += 1  # no longer a peripheral: the next advert connects
        return False

    async def _connect_later(self, msg: Message, a: Adapter, b: Adapter) -> None:
        cfg = self.config
        await asyncio.sleep(cfg.connect_delay_s)
        blocked = cfg.connect_blocked_while_peripheral and self.is_peripheral(a.index)
        if blocked and await self._blocked_while_peripheral(msg, a):
            return
        if cfg.connect_fails_while_advertising and a.advertising():
            self.stats["connect_fail_advertising"] += 1
            self.error(msg, ERR + "Failed", "Advertising Timeout (0x3c)")
            return
        reachable = cfg.in_range(a.index, b.index)
        if not b.advertising() or not b.powered or not reachable:
            await asyncio.sleep(cfg.connect_timeout_s)
            self.stats["connect_fail_timeout"] += 1
            self.error(msg, ERR + "Failed", "Page Timeout")
            return
        if self.link_between(a.index, b.index):
            self.error(msg, ERR + "AlreadyConnected", "Already Connected")
            return
        n_a = sum(1 for k in self.links if a.index in k)
        n_b = sum(1 for k in self.links if b.index in k)
        if max(n_a, n_b) >= cfg.link_limit:
            self.stats["connect_fail_limit"] += 1
            self.error(msg, ERR + "Failed", "Connection Rejected due to Limited Resources (0x0d)")
            return
        dev = msg.path or ""
        if self.rng.random() < cfg.abort_rate:
            self.stats["connect_abort"] += 1
            self.set_props(dev, I.DEVICE, {"Connected": True})
            self.set_props(dev, I.DEVICE, {"Connected": False})
            self.error(msg, ERR + "Failed", "le-connection-abort-by-local")
            return
        if cfg.connect_race and self.rng.random() < cfg.connect_race:
            side = cfg.connect_race_side
            if side == "peripheral" or (side == "either" and self.rng.random() < 0.5):
                self._race_peripheral_only(msg, a, b)
                return
            self.stats["connect_race_central_only"] += 1
            m = cfg.link_model()
            link = Link(a.index, b.index, LinkModel(m.latency_s, m.loss, m.mtu), half_open=True)
            self.links[frozenset((a.index, b.index))] = link
            link.dirs = {a.index: Direction(self, link), b.index: Direction(self, link)}
            self._mirror(link, a.index, b.index)
            self.set_props(dev, I.DEVICE, {"Connected": True})
            self.set_props(dev, I.DEVICE, {"ServicesResolved": True})
            self.reply(msg)
            return
        m = cfg.link_model()
        link = Link(a.index, b.index, LinkModel(m.latency_s, m.loss, m.mtu))
        self.links[frozenset((a.index, b.index))] = link
        link.dirs = {a.index: Direction(self, link), b.index: Direction(self, link)}
        # the peripheral sees the central as a device too
        back = device_path(b.index, a.index)
        if back not in self.tree:
            self._add_device(b, a, [], {}, {}, -50, None)
        self._mirror(link, a.index, b.index)
        self._mirror(link, b.index, a.index)
        for viewer, path in ((a.index, dev), (b.index, back)):
            self.set_props(path, I.DEVICE, {"Connected": True})
            self.set_props(path, I.DEVICE, {"ServicesResolved": True})
            del viewer
        if cfg.adv_stops_on_connect:
            for ad in b.adverts.values():
                ad.active = False
            self._update_adv_count(b)
        self.stats["connects"] += 1
        self.reply(msg)

    def _race_peripheral_only(self, msg: Message, a: Adapter, b: Adapter) -> None:
        """The ATT socket came up before mgmt's Device Connected: the central's attempt fails
        while the peripheral keeps a connected device that will never write."""
        self.stats["connect_race_peripheral_only"] += 1
        self.half_open[frozenset((a.index, b.index))] = (a.index, b.index)
        back = device_path(b.index, a.index)
        if back not in self.tree:
            self._add_device(b, a, [], {}, {}, -50, None)
        self.set_props(back, I.DEVICE, {"Connected": True})
        if self.config.adv_stops_on_connect:
            for x in b.adverts.values():
                x.active = False
            self._update_adv_count(b)
        dev = msg.path or ""
        self.set_props(dev, I.DEVICE, {"Connected": True})
        self.set_props(dev, I.DEVICE, {"Connected": False})
        self.error(msg, ERR + "Failed", "Software caused connection abort")

    def _end_half_open(self, a: int, b: int, reason: str) -> bool:
        pair = self.half_open.pop(frozenset((a, b)), None)
        if pair is None:
            return False
        central, peripheral = pair
        self.set_props(device_path(peripheral, central), I.DEVICE, {"Connected": False})
        p = self.adapters[peripheral]
        if p.powered:
            for x in p.adverts.values():
                x.active = True
            self._update_adv_count(p)
        self.stats[f"half_open_ended_{reason}"] += 1
        return True

    def _mirror(self, link: Link, viewer: int, server: int) -> None:
        """Publish the server's GATT applications under the viewer's device object."""
        base = device_path(viewer, server)
        handle = 1
        for app in self.adapters[server].apps.values():
            for spath, suuid, primary, chars in app.services:
                sp = f"{base}/service{handle:04x}"
                self.add_object(
                    sp,
                    I.GATT_SERVICE,
                    {"UUID": suuid, "Primary": primary, "Device": base, "Handle": handle,
                     "Includes": []},
                )  # fmt: skip
                link.mirrors.append(sp)
                handle += 1
                del spath
                for ch in chars:
                    cp = f"{sp}/char{handle:04x}"
                    mc = MirrorChar(
                        cp, link, viewer, server, app.sender, ch.path, ch.uuid, ch.flags
                    )
                    self.mirror_chars[cp] = mc
                    self.fanout.setdefault((app.sender, ch.path), []).append(mc)
                    self.add_object(
                        cp,
                        I.GATT_CHAR,
                        {
                            "UUID": ch.uuid,
                            "Service": sp,
                            "Value": b"",
                            "Notifying": False,
                            "Flags": ch.flags,
                            "MTU": link.model.mtu,
                            "Handle": handle + 1,
                            "WriteAcquired": False,
                            "NotifyAcquired": False,
                        },
                    )
                    link.mirrors.append(cp)
                    handle += 2
                    for dpath, duuid, dflags in ch.descs:
                        dp = f"{cp}/desc{handle:04x}"
                        self.mirror_descs[dp] = (link, server, app.sender, dpath)
                        self.add_object(
                            dp,
                            I.GATT_DESC,
                            {"UUID": duuid, "Characteristic": cp, "Value": b"", "Flags": dflags,
                             "Handle": handle},
                        )  # fmt: skip
                        link.mirrors.append(dp)
                        handle += 1

    def drop_link(self, link: Link, reason: str) -> None:
        """Tear a connection down: mirrors vanish, both sides see Connected=False."""
        if not link.alive:
            return
        link.alive = False
        self.links.pop(frozenset((link.central, link.peripheral)), None)
        for d in link.dirs.values():
            d.task.cancel()
            for item in d.queue:
                if item.deferred is not None:
                    self.send(Message.new_method_return(item.deferred))
                if item.reply_to is not None:
                    self.error(item.reply_to, ERR + "Failed", "Not connected")
        for path in reversed(link.mirrors):
            mc = self.mirror_chars.pop(path, None)
            if mc is not None:
                self._release_socks(mc)
                lst = self.fanout.get((mc.app_sender, mc.app_path), [])
                if mc in lst:
                    lst.remove(mc)
            self.mirror_descs.pop(path, None)
            self.remove_object(path)
        for viewer, remote in ((link.central, link.peripheral), (link.peripheral, link.central)):
            path = device_path(viewer, remote)
            self.set_props(path, I.DEVICE, {"ServicesResolved": False})
            self.set_props(path, I.DEVICE, {"Connected": False})
        p = self.adapters[link.peripheral]
        if p.powered:
            for ad in p.adverts.values():
                ad.active = True  # BlueZ resumes the advertisement on disconnect
            self._update_adv_count(p)
        self.stats[f"disconnect_{reason}"] += 1

    def _disconnect(self, msg: Message) -> None:
        dev = msg.path or ""
        blocked = self.blocked_connects.get(dev)
        if blocked is not None:
            blocked.set()  # bluetoothd: a Disconnect cancels the pending connect
        a = self.adapter_of(dev)
        remote = self.remote_of(dev)
        link = self.link_between(a.index, remote)
        if link is not None and (not link.half_open or link.central == a.index):
            self.drop_link(link, "local")  # a half-open link exists for its central only
        pair = self.half_open.get(frozenset((a.index, remote)))
        if pair is not None and pair[1] == a.index:  # only the side that sees a connection
            self._end_half_open(a.index, remote, "local")
        self.reply(msg)

    # ---------------------------------------------------------------- agents and pairing

    def _register_agent(self, msg: Message) -> None:
        path, capability = msg.body
        if capability not in AGENT_CAPABILITIES:
            raise BluezError("InvalidArguments", "Invalid Arguments in method call")
        sender = msg.sender or ""
        if sender in self.agents:  # one agent per application (AgentManager API)
            raise BluezError("AlreadyExists", "Already Exists")
        self.agents[sender] = (path, capability or "KeyboardDisplay")
        self.reply(msg)

    def _unregister_agent(self, msg: Message) -> None:
        sender = msg.sender or ""
        agent = self.agents.get(sender)
        if agent is None or agent[0] != msg.body[0]:
            raise BluezError("DoesNotExist", "No such Agent")
        del self.agents[sender]
        if self.default_agent == sender:
            self.default_agent = None
        self.reply(msg)

    def _request_default_agent(self, msg: Message) -> None:
        sender = msg.sender or ""
        agent = self.agents.get(sender)
        if agent is None or agent[0] != msg.body[0]:
            raise BluezError("DoesNotExist", "Does Not Exist")
        self.default_agent = sender
        self.reply(msg)

    def _agent_for_incoming(self) -> tuple[str, str, str] | None:
        """(client, path, capability) of the agent bluetoothd asks about an incoming
        pairing: the default agent, else any registered one (src/agent.c agent_get)."""
        sender = self.default_agent
        if sender is None and self.agents:
            sender = next(iter(self.agents))
        if sender is None:
            return None
        path, capability = self.agents[sender]
        return sender, path, capability

    def _pair(self, msg: Message) -> None:
        dev = msg.path or ""
        a = self.adapter_of(dev)
        remote = self.remote_of(dev)
        link = self.link_between(a.index, remote)
        if link is None:
            raise BluezError("Failed", "Not connected")
        if link.paired:
            raise BluezError("AlreadyExists", "Already Exists")
        responder = self.adapters[remote]
        pairable = self.tree.get(responder.path, {}).get(I.ADAPTER, {}).get("Pairable")
        if pairable is None or not pairable.value:
            # not bondable: the kernel answers SMP "Pairing Not Supported"
            self.stats["pair_refused_not_pairable"] += 1
            raise BluezError("AuthenticationFailed", "Authentication Failed")
        agent = self._agent_for_incoming()
        if agent is None:
            # device_confirm_passkey: "No agent available for request type" -> negative reply
            self.stats["pair_refused_no_agent"] += 1
            raise BluezError("AuthenticationRejected", "Authentication Rejected")
        sender, path, _capability = agent
        # just works (the initiator without an agent is NoInputNoOutput): the responder's
        # agent is asked RequestAuthorization for the initiator's device object
        assert self.bus is not None
        ask = Message(
            destination=sender,
            path=path,
            interface=I.AGENT,
            member="RequestAuthorization",
            signature="o",
            body=[device_path(remote, a.index)],
        )

        def done(reply: Message | None, err: Exception | None) -> None:
            if err is not None or reply is None or reply.message_type == MessageType.ERROR:
                # measured on bluetoothd 5.66 (scripts/test-deploy-vm.sh): the initiator sees
                # the responder's refusal as an SMP failure, "AuthenticationFailed"
                self.stats["pair_rejected_by_agent"] += 1
                self.error(msg, ERR + "AuthenticationFailed", "Authentication Failed")
                return
            if not link.alive:
                self.error(msg, ERR + "AuthenticationCanceled", "Authentication Canceled")
                return
            link.paired = True
            self.stats["paired"] += 1
            for v, r in ((a.index, remote), (remote, a.index)):
                self.set_props(device_path(v, r), I.DEVICE, {"Paired": True, "Bonded": True})
            self.reply(msg)

        self.bus._call(ask, done)

    def _set_powered(self, index: int, on: bool) -> None:
        a = self.adapters[index]
        a.powered = on
        if not on:
            for link in [lk for k, lk in list(self.links.items()) if index in k]:
                self.drop_link(link, "power")
            for pair in [k for k in self.half_open if index in k]:
                x, y = tuple(pair)
                self._end_half_open(x, y, "power")
            a.discovery.clear()
            a.filters.clear()
            self.set_props(a.path, I.ADAPTER, {"Discovering": False})
        self.set_props(a.path, I.ADAPTER, {"Powered": on})
        self._update_adv_count(a)

    # ---------------------------------------------------------------- GATT traffic

    def _mirror_of(self, msg: Message) -> MirrorChar:
        mc = self.mirror_chars.get(msg.path or "")
        if mc is None or not mc.link.alive:
            raise BluezError("Failed", "Not connected")
        return mc

    def _options(self, mc: MirrorChar, kind: str, offset: int = 0) -> dict[str, Variant]:
        return {
            "device": Variant("o", device_path(mc.server, mc.viewer)),
            "mtu": Variant("q", mc.link.model.mtu),
            "link": Variant("s", "LE"),
            "type": Variant("s", kind),
            "offset": Variant("q", offset),
        }

    def _check_write(self, mc: MirrorChar, kind: str, value: bytes) -> None:
        wanted = "write-without-response" if kind == "command" else "write"
        if wanted not in mc.flags:
            raise BluezError("NotPermitted", "Write not permitted")
        if ENCRYPT_FLAGS & set(mc.flags) and not mc.link.paired:
            self.stats["refused_unpaired"] += 1
            raise BluezError("NotPermitted", "Not paired")  # BlueZ's create_gatt_dbus_error
        if kind == "command" and len(value) > value_limit(mc.link.model.mtu):
            # bt_att_send refuses a PDU longer than the ATT MTU (src/gatt-client.c)
            self.stats["refused_oversize"] += 1
            raise BluezError("Failed", "Failed to initiate write")
        if len(value) > MAX_VALUE_LEN:
            self.stats["refused_oversize"] += 1
            raise BluezError("InvalidValueLength", "Invalid Length")

    def _write_value(self, msg: Message) -> None:
        mc = self._mirror_of(msg)
        value, options = bytes(msg.body[0]), msg.body[1]
        kind = options["type"].value if "type" in options else "request"
        offset = options["offset"].value if "offset" in options else 0
        self._check_write(mc, kind, value)
        if mc.link.half_open:
            self.stats["writes_lost_half_open"] += 1
            if kind == "command":
                self.reply(msg)
            return  # a write request never gets its answer: bleak times out
        self._enqueue_write(mc, value, kind, offset, msg)

    def _enqueue_write(
        self, mc: MirrorChar, value: bytes, kind: str, offset: int, msg: Message | None
    ) -> None:
        link = mc.link
        direction = link.dirs[mc.server]
        if kind == "command" and self.rng.random() < link.model.loss:
            self.stats["writes_lost"] += 1
            if msg is not None:
                self.reply(msg)
            return
        fwd = Message(
            destination=mc.app_sender,
            path=mc.app_path,
            interface=I.GATT_CHAR,
            member="WriteValue",
            signature="aya{sv}",
            body=[value, self._options(mc, kind, offset)],
        )
        item = Item(
            asyncio.get_running_loop().time() + link.model.latency_s,
            "write",
            fwd,
            mc.app_sender,
            reply_to=msg if kind == "request" else None,
        )
        if kind == "command" and msg is not None:
            if len(direction.queue) >= DEFERRED_REPLY_DEPTH:
                item.deferred = msg
            else:
                self.reply(msg)
        if not direction.put(item) and item.deferred is not None:
            self.reply(item.deferred)

    async def forward(self, item: Item) -> None:
        """Call the serving app, keeping at most ``forward_window`` calls in flight to it."""
        assert self.bus is not None
        window = self.windows.get(item.app_sender)
        if window is None:
            window = self.windows[item.app_sender] = asyncio.Semaphore(self.config.forward_window)
        await window.acquire()
        self.stats["writes_forwarded"] += 1
        reply_to = item.reply_to

        def done(reply: Message | None, err: Exception | None) -> None:
            window.release()
            if reply_to is None:
                if err is not None or (reply and reply.message_type == MessageType.ERROR):
                    self.stats["writes_refused_by_app"] += 1
                return
            if err is not None or reply is None:
                self.error(reply_to, ERR + "Failed", "Application did not answer")
            elif reply.message_type == MessageType.ERROR:
                self.error(reply_to, reply.error_name or ERR + "Failed", str(reply.body))
            else:
                self.reply(reply_to, reply.signature, list(reply.body))

        self.bus._call(item.target, done)

    def _read_value(self, msg: Message) -> None:
        mc = self._mirror_of(msg)
        if "read" not in mc.flags:
            raise BluezError("NotPermitted", "Read not permitted")
        if {"encrypt-read", "encrypt-authenticated-read"} & set(mc.flags) and not mc.link.paired:
            raise BluezError("NotPermitted", "Not paired")
        options = self._options(mc, "request")
        del options["type"]
        fwd = Message(
            destination=mc.app_sender,
            path=mc.app_path,
            interface=I.GATT_CHAR,
            member="ReadValue",
            signature="a{sv}",
            body=[options],
        )
        self._relay(msg, fwd, "ay")

    def _relay(self, msg: Message, fwd: Message, sig: str) -> None:
        assert self.bus is not None

        def done(reply: Message | None, err: Exception | None) -> None:
            if err is not None or reply is None:
                self.error(msg, ERR + "Failed", "Application did not answer")
            elif reply.message_type == MessageType.ERROR:
                self.error(msg, reply.error_name or ERR + "Failed", str(reply.body))
            else:
                self.reply(msg, sig, list(reply.body))

        self.bus._call(fwd, done)

    def _app_notify_call(self, mc: MirrorChar, member: str) -> None:
        """Tell the serving app its characteristic gained its first / lost its last subscriber."""
        subscribed = [m for m in self.fanout.get((mc.app_sender, mc.app_path), []) if m.notifying]
        if mc.link.half_open:
            return  # the server never learns of this link
        if (member == "StartNotify" and len(subscribed) == 1) or (
            member == "StopNotify" and not subscribed
        ):
            call = Message(
                destination=mc.app_sender,
                path=mc.app_path,
                interface=I.GATT_CHAR,
                member=member,
                flags=MessageFlag.NO_REPLY_EXPECTED,
            )
            self.send(call)

    def _start_notify(self, msg: Message) -> None:
        mc = self._mirror_of(msg)
        if not {"notify", "indicate"} & set(mc.flags):
            raise BluezError("NotSupported", "Operation is not supported")
        if not mc.notifying:
            mc.notifying = True
            self.set_props(mc.path, I.GATT_CHAR, {"Notifying": True})
            self._app_notify_call(mc, "StartNotify")
        self.reply(msg)

    def _stop_notify(self, msg: Message) -> None:
        mc = self._mirror_of(msg)
        if mc.notify_sock is not None:
            raise BluezError("NotPermitted", "Notify acquired")
        if mc.notifying:
            mc.notifying = False
            self.set_props(mc.path, I.GATT_CHAR, {"Notifying": False})
            self._app_notify_call(mc, "StopNotify")
        self.reply(msg)

    def _notify(self, mirrors: list[MirrorChar], value: bytes) -> None:
        self.stats["notifies_in"] += 1
        now = asyncio.get_running_loop().time()
        for mc in mirrors:
            if not mc.notifying or not mc.link.alive or mc.link.half_open:
                continue
            model = mc.link.model
            if model.loss and self.rng.random() < model.loss:
                self.stats["notifies_lost"] += 1
                continue
            limit = value_limit(model.mtu)
            if len(value) > limit:
                self.stats["notifies_truncated"] += 1
            mc.pending.append(value[:limit])
            if not mc.link.dirs[mc.viewer].put(Item(now + model.latency_s, "notify", mc)):
                mc.pending.pop()

    def deliver_notify(self, mc: MirrorChar, value: bytes) -> None:
        self.stats["notifies_out"] += 1
        if mc.notify_sock is not None:
            try:
                mc.notify_sock.send(value)
            except (BlockingIOError, OSError):
                self.stats["notifies_fd_dropped"] += 1
            return
        self.send(
            Message.new_signal(
                path=mc.path,
                interface=I.PROPERTIES,
                member="PropertiesChanged",
                signature="sa{sv}as",
                body=[I.GATT_CHAR, {"Value": Variant("ay", value)}, []],
            )
        )

    def _acquire(self, msg: Message, mc: MirrorChar) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        fd = theirs.detach()
        assert self.bus is not None
        fut = self.bus.send(
            Message.new_method_return(msg, "hq", [0, mc.link.model.mtu], unix_fds=[fd])
        )
        fut.add_done_callback(lambda _f: os.close(fd))
        return ours

    def _acquire_write(self, msg: Message) -> None:
        mc = self._mirror_of(msg)
        if "write-without-response" not in mc.flags:
            raise BluezError("NotSupported", "Operation is not supported")
        if mc.write_sock is not None:
            raise BluezError("NotPermitted", "Write acquired")
        sock = mc.write_sock = self._acquire(msg, mc)
        loop = asyncio.get_running_loop()

        def readable() -> None:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._release_write(mc)
                return
            if len(data) <= value_limit(mc.link.model.mtu) and mc.link.alive:
                self._enqueue_write(mc, data, "command", 0, None)
            else:
                self.stats["refused_oversize"] += 1

        loop.add_reader(sock.fileno(), readable)
        self.set_props(mc.path, I.GATT_CHAR, {"WriteAcquired": True})

    def _release_write(self, mc: MirrorChar) -> None:
        if mc.write_sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(mc.write_sock.fileno())
            mc.write_sock.close()
            mc.write_sock = None
            self.set_props(mc.path, I.GATT_CHAR, {"WriteAcquired": False})

    def _acquire_notify(self, msg: Message) -> None:
        mc = self._mirror_of(msg)
        if not {"notify", "indicate"} & set(mc.flags):
            raise BluezError("NotSupported", "Operation is not supported")
        if mc.notify_sock is not None or mc.notifying:
            raise BluezError("InProgress", "Notify already started")
        sock = mc.notify_sock = self._acquire(msg, mc)
        mc.notifying = True
        loop = asyncio.get_running_loop()

        def hangup() -> None:
            try:
                data = sock.recv(1)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._release_notify(mc)

        loop.add_reader(sock.fileno(), hangup)
        self.set_props(mc.path, I.GATT_CHAR, {"NotifyAcquired": True, "Notifying": True})
        self._app_notify_call(mc, "StartNotify")

    def _release_notify(self, mc: MirrorChar) -> None:
        if mc.notify_sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(mc.notify_sock.fileno())
            mc.notify_sock.close()
            mc.notify_sock = None
            mc.notifying = False
            self.set_props(mc.path, I.GATT_CHAR, {"NotifyAcquired": False, "Notifying": False})
            self._app_notify_call(mc, "StopNotify")

    def _release_socks(self, mc: MirrorChar) -> None:
        self._release_write(mc)
        if mc.notify_sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(mc.notify_sock.fileno())
            mc.notify_sock.close()
            mc.notify_sock = None

    def _desc_call(self, msg: Message, member: str, sig: str, body: list[Any]) -> None:
        entry = self.mirror_descs.get(msg.path or "")
        if entry is None or not entry[0].alive:
            raise BluezError("Failed", "Not connected")
        _link, _server, sender, dpath = entry
        fwd = Message(
            destination=sender,
            path=dpath,
            interface=I.GATT_DESC,
            member=member,
            signature=sig,
            body=body,
        )
        self._relay(msg, fwd, "ay" if member == "ReadValue" else "")

    def _desc_read(self, msg: Message) -> None:
        self._desc_call(msg, "ReadValue", "a{sv}", [{}])

    def _desc_write(self, msg: Message) -> None:
        self._desc_call(msg, "WriteValue", "aya{sv}", [bytes(msg.body[0]), {}])

    # ---------------------------------------------------------------- control

    def _ctl_configure(self, msg: Message) -> None:
        raw = json.loads(msg.body[0])
        merged = json.loads(self.config.to_json())
        merged.update({k: v for k, v in raw.items() if k != "link"})
        if isinstance(raw.get("link"), dict):
            merged["link"] = {**(merged.get("link") or {}), **raw["link"]}
        new = FakeBluezConfig.from_dict(merged)
        new.adapters = self.config.adapters
        self.config = new
        self.reply(msg)

    def _ctl_set_link(self, msg: Message) -> None:
        a, b, text = msg.body
        link = self.link_between(a, b)
        if link is None:
            raise BluezError("DoesNotExist", "no such link")
        for k, v in json.loads(text).items():
            setattr(link.model, k, v)
        for path in link.mirrors:
            if path in self.mirror_chars:
                self.set_props(path, I.GATT_CHAR, {"MTU": link.model.mtu})
        self.reply(msg)

    def _ctl_drop_link(self, msg: Message) -> None:
        a, b, reason = msg.body
        link = self.link_between(a, b)
        if link is None:
            raise BluezError("DoesNotExist", "no such link")
        self.drop_link(link, reason or "forced")
        self.reply(msg)

    def _ctl_set_powered(self, msg: Message) -> None:
        index, on = msg.body
        self._set_powered(int(index), bool(on))
        self.reply(msg)
