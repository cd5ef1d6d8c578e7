"""Subclasses of bless 0.3's BlueZ D-Bus classes that keep what bless drops.

bless's ``BlueZGattCharacteristic.WriteValue`` throws BlueZ's options away, so the app never
learns which central wrote (``device``) or that link's ``mtu``. :class:`MeshCharacteristic`
overrides only the D-Bus methods and hands the options to its owner. :class:`MeshAdvertisement`
drops the local name (BitChat advertises none) and sets ``Discoverable`` (BlueZ 5.8x scanners
ignore bless's advertisement without the General Discoverable flag). No annotations import:
dbus-next reads the D-Bus signatures from these string annotations.
"""

from typing import Any, Protocol

from bless.backends.bluezdbus.dbus.advertisement import BlueZLEAdvertisement
from bless.backends.bluezdbus.dbus.characteristic import BlueZGattCharacteristic
from dbus_next.constants import PropertyAccess
from dbus_next.service import dbus_property, method


class WriteSink(Protocol):
    """Receives a central's write with BlueZ's options unpacked."""

    def central_wrote(self, device: str, mtu: int, kind: str, data: bytes) -> None: ...

    def subscription_changed(self, subscribed: bool) -> None: ...


def option(options: dict[str, Any], name: str, default: Any) -> Any:
    """The plain value of a BlueZ option (a dbus-next Variant), or ``default``."""
    v = options.get(name)
    return default if v is None else getattr(v, "value", v)


class MeshCharacteristic(BlueZGattCharacteristic):
    """The mesh characteristic: writes go to ``sink`` with device and MTU."""

    sink: WriteSink

    @method()  # type: ignore[untyped-decorator]
    def WriteValue(self, value: "ay", options: "a{sv}"):  # type: ignore[no-untyped-def,name-defined,valid-type] # noqa: F821, F722
        self.sink.central_wrote(
            str(option(options, "device", "")),
            int(option(options, "mtu", 23)),
            str(option(options, "type", "request")),
            bytes(value),
        )

    @method()  # type: ignore[untyped-decorator]
    def ReadValue(self, options: "a{sv}") -> "ay":  # type: ignore[name-defined,valid-type] # noqa: F821, F722
        return b""

    @method()
    def StartNotify(self):  # type: ignore[no-untyped-def]
        self.sink.subscription_changed(True)

    @method()
    def StopNotify(self):  # type: ignore[no-untyped-def]
        self.sink.subscription_changed(False)


class MeshAdvertisement(BlueZLEAdvertisement):
    """bless's advertisement without a local name, with the Discoverable flag and with a
    scan response (8 bytes of peer id as service data) for the bluetoothd versions that read
    ``ScanResponseServiceData`` (5.80+ with ``--experimental``; others ignore it)."""

    scan_response_service_data: dict[str, Any]

    @dbus_property(access=PropertyAccess.READ, disabled=True)  # type: ignore[untyped-decorator]
    def LocalName(self) -> "s":  # type: ignore[name-defined] # noqa: F821
        return ""

    @dbus_property(access=PropertyAccess.READ)  # type: ignore[untyped-decorator]
    def Discoverable(self) -> "b":  # type: ignore[name-defined] # noqa: F821
        return True

    @dbus_property(access=PropertyAccess.READ)  # type: ignore[untyped-decorator]
    def ScanResponseServiceData(self) -> "a{sv}":  # type: ignore[valid-type] # noqa: F722
        return getattr(self, "scan_response_service_data", {})
