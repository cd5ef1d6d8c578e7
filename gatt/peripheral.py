"""The mesh GATT server: bless's BlueZ classes plus what a mesh needs from BlueZ.

bless 0.3 keeps the D-Bus side (application, service, characteristic, advertisement objects
on dbus-next); this module adds, through :mod:`gatt._bless_ext`:

* the writing central's object path and its link MTU on every write;
* centrals coming and going (``Device1.Connected`` on our adapter);
* advertising the peer id as service data, pausing/resuming it, and advertising again after
  BlueZ stopped the advertisement because a central connected;
* re-registering everything when bluetoothd restarts;
* the EAGAIN fix of the D-Bus writer (:mod:`gatt.dbus_patch`).

Notifications: BlueZ's GATT server API has no per-device notify (``PropertiesChanged(Value)``
and the ``AcquireNotify`` fd both reach every subscribed central), so :meth:`notify` goes to all
subscribers. The transport coalesces identical frames queued for several peripheral links.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from bless.backends.bluezdbus.dbus.advertisement import Type as AdvType
from bless.backends.bluezdbus.dbus.application import BlueZGattApplication
from bless.backends.bluezdbus.dbus.characteristic import Flags
from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import BusType, MessageType
from dbus_next.message import Message
from dbus_next.signature import Variant

from ble_bridge.events import kv
from gatt import dbus_patch
from gatt._bless_ext import MeshAdvertisement, MeshCharacteristic
from gatt.profile import CHARACTERISTIC_FLAGS, GattProfile

log = logging.getLogger(__name__)

DEVICE_IFACE = "org.bluez.Device1"
ADV_MANAGER_IFACE = "org.bluez.LEAdvertisingManager1"

WriteHandler = Callable[[str, int, bytes], None]
"""(device object path, link MTU, frame)"""
DeviceHandler = Callable[[str, bool], None]
"""(device object path, connected)"""
BluezHandler = Callable[[bool], None]
"""bluetoothd appeared (True) or vanished (False)"""


class AdapterNotFound(RuntimeError):
    """The configured adapter is not (or no longer) offered by bluetoothd."""


def address_of(device_path: str) -> str:
    """``/org/bluez/hci0/dev_AA_BB_..`` -> ``AA:BB:..``."""
    tail = device_path.rsplit("/", 1)[-1]
    return tail[4:].replace("_", ":") if tail.startswith("dev_") else tail


class MeshPeripheral:
    """Serves the mesh characteristic on one adapter and advertises the node."""

    def __init__(
        self,
        adapter: str,
        profile: GattProfile,
        peer_id: bytes,
        on_write: WriteHandler,
        on_device: DeviceHandler,
        on_bluez: BluezHandler | None = None,
        flags: tuple[str, ...] = CHARACTERISTIC_FLAGS,
        adv_retry_base_s: float = 1.0,
        adv_retry_max_s: float = 60.0,
    ) -> None:
        self.adapter = adapter
        self.adapter_path = f"/org/bluez/{adapter}"
        self.profile = profile
        self.adv_props = profile.advertisement(peer_id)
        self.adv_retry_base_s = adv_retry_base_s
        self.adv_retry_max_s = adv_retry_max_s
        self.adv_error: str | None = None
        """Why bluetoothd refused our advertisement (None while it is accepted)."""
        self.adv_failures = 0
        """Consecutive refusals; the next try waits base * 2**(n-1), capped."""
        self.disconnect_stale = False
        """At the first registration, disconnect connections an earlier process left behind."""
        self.stale_disconnected = 0
        self._fresh = True
        self._adv_retry: asyncio.TimerHandle | None = None
        self._adv_retry_at = 0.0
        self.on_write = on_write
        self.on_device = on_device
        self.on_bluez = on_bluez
        self.flags = flags
        self.bus: Any = None
        self.app: Any = None
        self.char: Any = None
        self._adapter_obj: Any = None
        self._adv: Any = None
        self._adv_index = 0
        self._connected: set[str] = set()
        self._registered = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._adv_lock = asyncio.Lock()
        self.want_advertising: Callable[[], bool] = lambda: True
        self.paused = False
        """Advertising withdrawn around an outgoing connect."""
        self.subscribers = 0
        self.writes = 0
        self.notifies = 0

    # ------------------------------------------------------------ WriteSink

    def central_wrote(self, device: str, mtu: int, kind: str, data: bytes) -> None:
        self.writes += 1
        self.on_write(device, mtu, data)

    def subscription_changed(self, subscribed: bool) -> None:
        self.subscribers = max(0, self.subscribers + (1 if subscribed else -1))

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect to the system bus, export the app, register it and advertise."""
        dbus_patch.install()
        self.bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        self.bus.add_message_handler(self._on_message)
        for rule in (
            "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',"
            "arg0='org.bluez'",
            "type='signal',interface='org.freedesktop.DBus.Properties',"
            f"member='PropertiesChanged',path_namespace='{self.adapter_path}',"
            "arg0='org.bluez.Device1'",  # not the GATT notifications under our adapter
        ):
            await self._call_bus("AddMatch", "s", [rule])
        name = f"mesh{self.adapter}"
        self.app = BlueZGattApplication(name, "org.bluez", self.bus)
        # bless puts its objects under /org/bluez/<name>, where every bleak client's match
        # rules (InterfacesAdded arg0path=/org/bluez/, PropertiesChanged path_namespace=
        # /org/bluez) see them: each notification would wake every bleak process.
        self.app.base_path = f"/ble_bridge/{name}"
        service = await self.app.add_service(self.profile.service_uuid)
        flags = [Flags(f) for f in self.flags]
        char = MeshCharacteristic(self.profile.characteristic_uuid, flags, 1, service)
        char.sink = self
        service.characteristics.append(char)
        self.bus.export(char.path, char)
        self.bus.export(self.app.path, self.app)
        self.char = char
        await self._register()

    async def _register(self) -> None:
        # not bless's get_adapter(): it matches by substring ("hci1" also finds "hci10")
        node = await self.bus.introspect("org.bluez", self.adapter_path)
        if not any(i.name == "org.bluez.GattManager1" for i in node.interfaces):
            raise AdapterNotFound(f"no BlueZ adapter at {self.adapter_path}")
        self._adapter_obj = self.bus.get_proxy_object("org.bluez", self.adapter_path, node)
        await self.app.register(self._adapter_obj)
        self._registered = True
        self._adv = None
        await self.sync_advertising()
        await self._scan_existing_devices()

    async def stop(self) -> None:
        """Withdraw the advertisement and the application; leave the bus."""
        if self._adv_retry is not None:
            self._adv_retry.cancel()
            self._adv_retry = None
        for t in list(self._tasks):
            t.cancel()
        if self.bus is None:
            return
        if self._registered:
            try:
                await asyncio.wait_for(self.stop_advertising(), 2.0)
                await asyncio.wait_for(self.app.unregister(self._adapter_obj), 2.0)
            except Exception as e:  # bluetoothd may be gone already
                log.debug("unregister failed: %s", e)
        self._registered = False
        self.bus.disconnect()
        self.bus = None

    # ------------------------------------------------------------ advertising

    async def advertise(self) -> None:
        """Register a connectable advertisement (service UUID + peer id service data)."""
        async with self._adv_lock:
            await self._advertise()

    async def _advertise(self) -> None:
        if self._adv is not None or self._adapter_obj is None:
            return
        loop = asyncio.get_running_loop()
        if self.adv_failures and loop.time() < self._adv_retry_at:
            return  # refused lately: the retry timer tries again
        self._adv_index += 1
        adv = MeshAdvertisement(AdvType.PERIPHERAL, self._adv_index, self.app)
        props = self.adv_props
        adv._service_uuids = list(props["ServiceUUIDs"])
        adv._service_data = {k: Variant("ay", v) for k, v in props.get("ServiceData", {}).items()}
        adv._manufacturer_data = {
            k: Variant("ay", v) for k, v in props.get("ManufacturerData", {}).items()
        }
        adv.scan_response_service_data = {
            k: Variant("ay", v) for k, v in props.get("ScanResponseServiceData", {}).items()
        }
        self.bus.export(adv.path, adv)
        iface = self._adapter_obj.get_interface(ADV_MANAGER_IFACE)
        try:
            await iface.call_register_advertisement(adv.path, {})
        except Exception as e:
            self.bus.unexport(adv.path)
            self._refused(loop, e)
            return
        if self.adv_failures:
            log.warning(kv("advertising_again", adapter=self.adapter, refusals=self.adv_failures))
        self.adv_failures = 0
        self.adv_error = None
        self._adv = adv

    def _refused(self, loop: asyncio.AbstractEventLoop, e: Exception) -> None:
        """bluetoothd refused the advertisement: report it, keep running as a central, retry."""
        self.adv_failures += 1
        text = f"{getattr(e, 'type', None) or type(e).__name__}: {e}"  # D-Bus error name
        delay = min(self.adv_retry_max_s, self.adv_retry_base_s * 2 ** (self.adv_failures - 1))
        self._adv_retry_at = loop.time() + delay
        if self.adv_error != text or self.adv_failures in (1, 10, 100):
            log.warning(
                kv(
                    "advertising_refused",
                    adapter=self.adapter,
                    error=text,
                    refusals=self.adv_failures,
                    retry_s=round(delay),
                    still="connecting out as a central",
                )
            )
        self.adv_error = text
        if self._adv_retry is not None:
            self._adv_retry.cancel()
        self._adv_retry = loop.call_later(delay, self._retry_advertising)

    def _retry_advertising(self) -> None:
        self._adv_retry = None
        if self.bus is not None:
            self._spawn(self.sync_advertising())

    async def stop_advertising(self) -> None:
        """Withdraw our advertisement (around outgoing connects, at exit)."""
        async with self._adv_lock:
            await self._stop_advertising()

    async def _stop_advertising(self) -> None:
        adv, self._adv = self._adv, None
        if adv is None:
            return
        try:
            iface = self._adapter_obj.get_interface(ADV_MANAGER_IFACE)
            await iface.call_unregister_advertisement(adv.path)
        finally:
            self.bus.unexport(adv.path)

    async def sync_advertising(self) -> None:
        """Advertise iff wanted (not paused, budget left); re-register if BlueZ stopped it."""
        async with self._adv_lock:
            if not self._registered:
                return
            if self.paused or not self.want_advertising():
                await self._stop_advertising()
                return
            if self._adv is not None:
                props = self._adapter_obj.get_interface("org.freedesktop.DBus.Properties")
                active = await props.call_get(ADV_MANAGER_IFACE, "ActiveInstances")
                if active.value > 0:
                    return
                await self._stop_advertising()  # a central connected: BlueZ stopped it
            await self._advertise()

    @property
    def connected_devices(self) -> frozenset[str]:
        """Object paths of devices with a live connection on our adapter."""
        return frozenset(self._connected)

    @property
    def advertising(self) -> bool:
        return self._adv is not None

    async def disconnect(self, device: str) -> None:
        """End the connection of a central (used when it would exceed the link budget)."""
        await self.bus.call(
            Message(
                destination="org.bluez", path=device, interface=DEVICE_IFACE, member="Disconnect"
            )
        )

    # ------------------------------------------------------------ notifications

    def notify(self, frame: bytes) -> None:
        """Send ``frame`` to every subscribed central (bless's update path)."""
        self.notifies += 1
        self.char.Value = frame

    def backlog(self) -> int:
        """Messages waiting in our D-Bus writer (the transport paces on this)."""
        writer = getattr(self.bus, "_writer", None)
        return int(writer.messages.qsize()) if writer is not None else 0

    # ------------------------------------------------------------ bus events

    async def _call_bus(self, member: str, sig: str, body: list[Any]) -> Any:
        return await self.bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member=member,
                signature=sig,
                body=body,
            )
        )

    async def _scan_existing_devices(self) -> None:
        reply = await self.bus.call(
            Message(
                destination="org.bluez",
                path="/",
                interface="org.freedesktop.DBus.ObjectManager",
                member="GetManagedObjects",
            )
        )
        if reply.message_type != MessageType.METHOD_RETURN:
            return
        prefix = self.adapter_path + "/"
        stale = []
        for path, ifaces in reply.body[0].items():
            dev = ifaces.get(DEVICE_IFACE)
            if path.startswith(prefix) and dev and dev["Connected"].value:
                stale.append(path)
        fresh, self._fresh = self._fresh, False
        if fresh and self.disconnect_stale and stale:
            # bluetoothd keeps LE connections when the process that made or served them dies:
            # a restarted node holds no session on them and its peers would wait for a timeout.
            log.warning(
                kv(
                    "stale_link_disconnect",
                    adapter=self.adapter,
                    count=len(stale),
                    addresses=",".join(address_of(p) for p in stale),
                    why="left_by_earlier_process",
                )
            )
            for path in stale:
                try:
                    await self.disconnect(path)
                    self.stale_disconnected += 1
                except Exception as e:
                    log.warning(kv("disconnect_failed", address=address_of(path), error=str(e)))
                    self._device_state(path, True)
            return
        for path in stale:
            self._device_state(path, True)

    def _device_state(self, path: str, connected: bool) -> None:
        if connected == (path in self._connected):
            return
        if connected:
            self._connected.add(path)
            self._spawn(self.sync_advertising())
        else:
            self._connected.discard(path)
        self.on_device(path, connected)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._guard(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guard(self, coro: Any) -> None:
        try:
            await coro
        except Exception as e:
            log.info(kv("peripheral_task_failed", adapter=self.adapter, error=str(e)))

    def _on_message(self, msg: Any) -> bool:
        if msg.message_type != MessageType.SIGNAL:
            return False
        if msg.member == "PropertiesChanged" and msg.body and msg.body[0] == DEVICE_IFACE:
            connected = msg.body[1].get("Connected")
            if connected is not None:
                self._device_state(msg.path, bool(connected.value))
        elif msg.member == "NameOwnerChanged" and msg.body[0] == "org.bluez":
            if not msg.body[2]:
                self._bluez_gone()
            else:
                self._spawn(self._bluez_back())
        return False

    def _bluez_gone(self) -> None:
        log.warning(kv("bluetoothd_gone", adapter=self.adapter, links="gone"))
        self._registered = False
        self._adapter_obj = None
        if self._adv is not None:
            self.bus.unexport(self._adv.path)
            self._adv = None
        for path in list(self._connected):
            self._device_state(path, False)
        if self.on_bluez is not None:
            self.on_bluez(False)

    async def _bluez_back(self) -> None:
        log.warning(kv("bluetoothd_back", adapter=self.adapter, action="registering again"))
        delay, attempt = 0.1, 0
        while self.bus is not None:  # until it works or we stop: 5 s was too short under load
            try:
                await self._register()
                break
            except Exception as e:  # adapters may appear a moment later
                attempt += 1
                (log.warning if attempt % 20 == 0 else log.debug)(
                    "re-register attempt %d failed: %s", attempt, e
                )
                if self._registered and self._adapter_obj is not None:
                    with contextlib.suppress(Exception):  # a half-done register blocks the next
                        await self.app.unregister(self._adapter_obj)
                    self._registered = False
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, 2.0)
        if self.on_bluez is not None:
            self.on_bluez(True)
