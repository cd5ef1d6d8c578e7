"""The slice of BlueZ's D-Bus API that the fake serves: interfaces, methods, properties.

One table drives introspection XML, property signatures and which properties a client may
set, so the fake answers ``Introspect`` the way bluetoothd does for the parts it implements.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dbus_fast.signature import SignatureTree

ADAPTER = "org.bluez.Adapter1"
DEVICE = "org.bluez.Device1"
GATT_MANAGER = "org.bluez.GattManager1"
ADV_MANAGER = "org.bluez.LEAdvertisingManager1"
GATT_SERVICE = "org.bluez.GattService1"
GATT_CHAR = "org.bluez.GattCharacteristic1"
GATT_DESC = "org.bluez.GattDescriptor1"
ADVERTISEMENT = "org.bluez.LEAdvertisement1"
AGENT_MANAGER = "org.bluez.AgentManager1"
AGENT = "org.bluez.Agent1"
CONTROL = "org.bluez.testing.FakeControl1"
"""Not BlueZ: the fake's own knobs (link model, forced disconnects, statistics)."""

PROPERTIES = "org.freedesktop.DBus.Properties"
INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"


@dataclass(frozen=True, slots=True)
class Method:
    name: str
    in_sig: str = ""
    out_sig: str = ""


@dataclass(frozen=True, slots=True)
class Interface:
    name: str
    methods: tuple[Method, ...]
    properties: dict[str, str] = field(default_factory=dict)
    writable: frozenset[str] = frozenset()


INTERFACES: dict[str, Interface] = {
    i.name: i
    for i in (
        Interface(
            ADAPTER,
            (
                Method("StartDiscovery"),
                Method("StopDiscovery"),
                Method("SetDiscoveryFilter", "a{sv}"),
                Method("RemoveDevice", "o"),
                Method("GetDiscoveryFilters", "", "as"),
            ),
            {
                "Address": "s",
                "AddressType": "s",
                "Name": "s",
                "Alias": "s",
                "Class": "u",
                "Powered": "b",
                "Connectable": "b",
                "Discoverable": "b",
                "DiscoverableTimeout": "u",
                "Pairable": "b",
                "PairableTimeout": "u",
                "Discovering": "b",
                "UUIDs": "as",
                "Modalias": "s",
                "Roles": "as",
            },
            frozenset({"Alias", "Powered", "Discoverable", "Pairable", "Connectable"}),
        ),
        Interface(
            AGENT_MANAGER,
            (
                Method("RegisterAgent", "os"),
                Method("UnregisterAgent", "o"),
                Method("RequestDefaultAgent", "o"),
            ),
        ),
        Interface(
            GATT_MANAGER,
            (Method("RegisterApplication", "oa{sv}"), Method("UnregisterApplication", "o")),
        ),
        Interface(
            ADV_MANAGER,
            (Method("RegisterAdvertisement", "oa{sv}"), Method("UnregisterAdvertisement", "o")),
            {"ActiveInstances": "y", "SupportedInstances": "y", "SupportedIncludes": "as"},
        ),
        Interface(
            DEVICE,
            (
                Method("Connect"),
                Method("Disconnect"),
                Method("Pair"),
                Method("CancelPairing"),
            ),
            {
                "Address": "s",
                "AddressType": "s",
                "Name": "s",
                "Alias": "s",
                "Adapter": "o",
                "UUIDs": "as",
                "ServiceData": "a{sv}",
                "ManufacturerData": "a{qv}",
                "RSSI": "n",
                "TxPower": "n",
                "Connected": "b",
                "ServicesResolved": "b",
                "Paired": "b",
                "Bonded": "b",
                "Trusted": "b",
                "Blocked": "b",
                "LegacyPairing": "b",
            },
            frozenset({"Alias", "Trusted", "Blocked"}),
        ),
        Interface(
            GATT_SERVICE,
            (),
            {"UUID": "s", "Primary": "b", "Device": "o", "Handle": "q", "Includes": "ao"},
        ),
        Interface(
            GATT_CHAR,
            (
                Method("ReadValue", "a{sv}", "ay"),
                Method("WriteValue", "aya{sv}"),
                Method("AcquireWrite", "a{sv}", "hq"),
                Method("AcquireNotify", "a{sv}", "hq"),
                Method("StartNotify"),
                Method("StopNotify"),
            ),
            {
                "UUID": "s",
                "Service": "o",
                "Value": "ay",
                "Notifying": "b",
                "Flags": "as",
                "MTU": "q",
                "Handle": "q",
                "WriteAcquired": "b",
                "NotifyAcquired": "b",
            },
        ),
        Interface(
            GATT_DESC,
            (Method("ReadValue", "a{sv}", "ay"), Method("WriteValue", "aya{sv}")),
            {"UUID": "s", "Characteristic": "o", "Value": "ay", "Flags": "as", "Handle": "q"},
        ),
        Interface(
            CONTROL,
            (
                Method("Configure", "s"),
                Method("SetLink", "uus"),
                Method("DropLink", "uus"),
                Method("SetPowered", "ub"),
                Method("Stats", "", "s"),
            ),
        ),
    )
}

_STANDARD_XML = """  <interface name="org.freedesktop.DBus.Introspectable">
    <method name="Introspect"><arg name="xml" type="s" direction="out"/></method>
  </interface>
  <interface name="org.freedesktop.DBus.Properties">
    <method name="Get"><arg type="s" direction="in"/><arg type="s" direction="in"/>
      <arg type="v" direction="out"/></method>
    <method name="Set"><arg type="s" direction="in"/><arg type="s" direction="in"/>
      <arg type="v" direction="in"/></method>
    <method name="GetAll"><arg type="s" direction="in"/>
      <arg type="a{sv}" direction="out"/></method>
    <signal name="PropertiesChanged"><arg type="s"/><arg type="a{sv}"/><arg type="as"/></signal>
  </interface>
"""

_OBJECT_MANAGER_XML = """  <interface name="org.freedesktop.DBus.ObjectManager">
    <method name="GetManagedObjects"><arg type="a{oa{sa{sv}}}" direction="out"/></method>
    <signal name="InterfacesAdded"><arg type="o"/><arg type="a{sa{sv}}"/></signal>
    <signal name="InterfacesRemoved"><arg type="o"/><arg type="as"/></signal>
  </interface>
"""


def _args(sig: str, direction: str) -> str:
    return "".join(
        f'<arg type="{t.signature}" direction="{direction}"/>' for t in SignatureTree(sig).types
    )


def interface_xml(iface: Interface) -> str:
    """Introspection XML of one interface."""
    parts = [f'  <interface name="{iface.name}">\n']
    for m in iface.methods:
        parts.append(f'    <method name="{m.name}">{_args(m.in_sig, "in")}')
        parts.append(f"{_args(m.out_sig, 'out')}</method>\n")
    for name, sig in iface.properties.items():
        access = "readwrite" if name in iface.writable else "read"
        parts.append(f'    <property name="{name}" type="{sig}" access="{access}"/>\n')
    parts.append("  </interface>\n")
    return "".join(parts)


def introspect_xml(interfaces: list[str], children: list[str], root: bool) -> str:
    """Introspection document for one object path."""
    body = [_STANDARD_XML]
    if root:
        body.append(_OBJECT_MANAGER_XML)
    body.extend(interface_xml(INTERFACES[name]) for name in interfaces)
    body.extend(f'  <node name="{c}"/>\n' for c in children)
    return (
        '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
        ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n'
        "<node>\n" + "".join(body) + "</node>\n"
    )
