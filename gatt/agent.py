"""The node's BlueZ pairing agent: OS-level pairing only inside the pairing window.

BitChat phones never pair (they use Noise, and no mesh characteristic needs an encrypted
link); computers and phones that do ask the OS to pair meet this agent. It exports
``org.bluez.Agent1`` on its own system-bus connection, registers with
``org.bluez.AgentManager1`` as ``NoInputNoOutput`` (a handheld has no display or keys:
just works) and asks to be the default agent, so bluetoothd asks it about incoming
pairings. It keeps the adapter's ``Pairable`` false outside the window (the kernel then
refuses to bond) and true inside it; inside, ``RequestAuthorization``/``RequestConfirmation``
are accepted and the first bond closes the window; everything else, and everything
outside the window, is ``org.bluez.Error.Rejected``.
"""

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from dbus_fast import BusType, DBusError, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface, method

log = logging.getLogger(__name__)

BLUEZ = "org.bluez"
AGENT_PATH = "/org/bluez/ble_bridge/agent"
CAPABILITY = "NoInputNoOutput"
REJECTED = "org.bluez.Error.Rejected"


class _Agent1(ServiceInterface):
    def __init__(self, owner: "PairingAgent") -> None:
        super().__init__("org.bluez.Agent1")
        self.owner = owner

    @method()
    def Release(self) -> None:
        self.owner.stats["released"] += 1
        self.owner.registered = False

    @method()
    def RequestPinCode(self, device: "o") -> "s":  # type: ignore[name-defined]  # noqa: F821
        self.owner.refuse("pin_code", device)
        return ""

    @method()
    def DisplayPinCode(self, device: "o", pincode: "s") -> None:  # type: ignore[name-defined]  # noqa: F821
        self.owner.refuse("display_pin_code", device)

    @method()
    def RequestPasskey(self, device: "o") -> "u":  # type: ignore[name-defined]  # noqa: F821
        self.owner.refuse("passkey", device)
        return 0

    @method()
    def DisplayPasskey(self, device: "o", passkey: "u", entered: "q") -> None:  # type: ignore[name-defined]  # noqa: F821
        self.owner.stats["display_passkey"] += 1

    @method()
    def RequestConfirmation(self, device: "o", passkey: "u") -> None:  # type: ignore[name-defined]  # noqa: F821
        self.owner.authorize("confirmation", device)

    @method()
    def RequestAuthorization(self, device: "o") -> None:  # type: ignore[name-defined]  # noqa: F821
        self.owner.authorize("authorization", device)

    @method()
    def AuthorizeService(self, device: "o", uuid: "s") -> None:  # type: ignore[name-defined]  # noqa: F821
        self.owner.authorize("service", device)

    @method()
    def Cancel(self) -> None:
        self.owner.stats["cancelled"] += 1


class PairingAgent:
    """Agent + Pairable switch for one adapter (``hci0``); see the module docstring."""

    def __init__(
        self,
        adapter: str = "hci0",
        *,
        bus_address: str | None = None,
        on_bonded: Callable[[str], None] | None = None,
    ) -> None:
        self.adapter_path = f"/org/bluez/{adapter}"
        self.bus_address = bus_address
        self.on_bonded = on_bonded
        self.window_open = False
        self.registered = False
        self.stats: Counter[str] = Counter()
        self.bus: MessageBus | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self.bus_address:
            bus = MessageBus(bus_address=self.bus_address)
        else:
            bus = MessageBus(bus_type=BusType.SYSTEM)
        self.bus = await bus.connect()
        self.bus.export(AGENT_PATH, _Agent1(self))
        await self._call(
            BLUEZ, "/org/bluez", "org.bluez.AgentManager1", "RegisterAgent", "os",
            [AGENT_PATH, CAPABILITY],
        )  # fmt: skip
        await self._call(
            BLUEZ, "/org/bluez", "org.bluez.AgentManager1", "RequestDefaultAgent", "o",
            [AGENT_PATH],
        )  # fmt: skip
        self.registered = True
        await self._set_pairable(self.window_open)

    async def stop(self) -> None:
        for t in list(self._pending):
            with contextlib.suppress(Exception):
                await t
        if self.bus is None:
            return
        with contextlib.suppress(Exception):
            await self._set_pairable(False)
        if self.registered:
            with contextlib.suppress(Exception):
                await self._call(
                    BLUEZ, "/org/bluez", "org.bluez.AgentManager1", "UnregisterAgent", "o",
                    [AGENT_PATH],
                )  # fmt: skip
            self.registered = False
        self.bus.disconnect()
        self.bus = None

    # -- the window (called by the node's pairing) -------------------------------------

    def set_window(self, is_open: bool) -> None:
        self.window_open = is_open
        if self.bus is None:
            return
        task = asyncio.get_running_loop().create_task(self._set_pairable_logged(is_open))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _set_pairable_logged(self, on: bool) -> None:
        try:
            await self._set_pairable(on)
        except (DBusError, OSError, RuntimeError) as exc:
            self.stats["pairable_errors"] += 1
            log.warning("pairable_failed on=%s error=%s", on, exc)

    async def _set_pairable(self, on: bool) -> None:
        await self._call(
            BLUEZ, self.adapter_path, "org.freedesktop.DBus.Properties", "Set", "ssv",
            ["org.bluez.Adapter1", "Pairable", Variant("b", on)],
        )  # fmt: skip
        self.stats["pairable_on" if on else "pairable_off"] += 1

    # -- Agent1 decisions --------------------------------------------------------------

    def refuse(self, what: str, device: str) -> None:
        self.stats[f"refused_{what}"] += 1
        raise DBusError(REJECTED, "ble-bridge pairs without a PIN or passkey")

    def authorize(self, what: str, device: str) -> None:
        if not self.window_open:
            self.stats[f"refused_{what}_outside_window"] += 1
            log.info("pairing_refused device=%s reason=window_closed", device)
            raise DBusError(REJECTED, "no pairing window is open (ble-bridge pair)")
        self.stats[f"accepted_{what}"] += 1
        log.info("pairing_accepted device=%s", device)
        if what != "service" and self.on_bonded is not None:
            self.on_bonded(device)

    # -- bonded devices ----------------------------------------------------------------

    async def bonded(self) -> list[dict[str, Any]]:
        reply = await self._call(
            BLUEZ, "/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", "", []
        )
        out = []
        prefix = self.adapter_path + "/"
        for path, ifaces in reply.body[0].items():
            dev = ifaces.get("org.bluez.Device1")
            if dev is None or not path.startswith(prefix) or path.count("/") != 4:
                continue
            paired = dev.get("Paired")
            bonded = dev.get("Bonded")
            if (paired and paired.value) or (bonded and bonded.value):
                name = dev.get("Alias") or dev.get("Name")
                out.append(
                    {
                        "address": dev["Address"].value,
                        "name": name.value if name else "",
                        "adapter": self.adapter_path.rsplit("/", 1)[1],
                        "path": path,
                    }
                )
        return sorted(out, key=lambda d: str(d["address"]))

    async def remove(self, address: str) -> bool:
        for d in await self.bonded():
            if d["address"].upper() == address.upper():
                await self._call(
                    BLUEZ, self.adapter_path, "org.bluez.Adapter1", "RemoveDevice", "o",
                    [d["path"]],
                )  # fmt: skip
                return True
        return False

    async def _call(
        self, dest: str, path: str, iface: str, member: str, sig: str, body: list[Any]
    ) -> Message:
        assert self.bus is not None
        reply = await self.bus.call(
            Message(
                destination=dest,
                path=path,
                interface=iface,
                member=member,
                signature=sig,
                body=body,
            )
        )
        assert reply is not None
        if reply.message_type == MessageType.ERROR:
            raise DBusError(
                reply.error_name or "org.freedesktop.DBus.Error.Failed", str(reply.body)
            )
        return reply


__all__ = ["AGENT_PATH", "CAPABILITY", "PairingAgent"]
