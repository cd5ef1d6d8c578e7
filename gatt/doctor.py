"""``ble-bridge doctor``: is this machine's BlueZ fit for the mesh? Each problem with its fix.

Facts are gathered once (D-Bus, ``bluetoothctl --version``, ``/etc/bluetooth/main.conf``) and
judged by :func:`diagnose`, which is pure so it is tested without a Pi.
"""

from __future__ import annotations

import asyncio
import configparser
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.constants import BusType

MIN_VERSION = (5, 55)
MAIN_CONF = Path("/etc/bluetooth/main.conf")


@dataclass(slots=True)
class DoctorFacts:
    """What was observed on this machine."""

    adapter: str = "hci0"
    bus_ok: bool = False
    bus_error: str = ""
    bluez_running: bool = False
    access_denied: bool = False
    version: tuple[int, ...] | None = None
    adapters: dict[str, dict[str, Any]] = field(default_factory=dict)
    """adapter name -> {"Powered": bool, "Roles": [...], "interfaces": [...]}"""
    gatt_channels: int | None = None
    """``[GATT] Channels`` from main.conf (None when unset: BlueZ's default allows EATT)."""


@dataclass(frozen=True, slots=True)
class Finding:
    ok: bool
    check: str
    detail: str
    fix: str = ""


def parse_version(text: str) -> tuple[int, ...] | None:
    m = re.search(r"(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def read_gatt_channels(path: Path = MAIN_CONF) -> int | None:
    parser = configparser.ConfigParser(strict=False, inline_comment_prefixes=("#",))
    try:
        parser.read_string(path.read_text())
    except (OSError, configparser.Error):
        return None
    value = parser.get("GATT", "Channels", fallback=None)
    return int(value) if value is not None and value.strip().isdigit() else None


def diagnose(f: DoctorFacts) -> list[Finding]:
    """Judge the facts: one finding per check, with the fix for each problem."""
    out: list[Finding] = []
    if not f.bus_ok:
        return [
            Finding(
                False,
                "system D-Bus",
                f"cannot connect: {f.bus_error}",
                "start dbus (systemctl start dbus) and check DBUS_SYSTEM_BUS_ADDRESS",
            )
        ]
    out.append(Finding(True, "system D-Bus", "connected"))
    if f.access_denied:
        out.append(
            Finding(
                False,
                "D-Bus access",
                "org.bluez refused our calls (AccessDenied)",
                "run as root or add the user to the 'bluetooth' group "
                "(usermod -aG bluetooth $USER) and log in again",
            )
        )
    if not f.bluez_running:
        out.append(
            Finding(
                False,
                "bluetoothd",
                "org.bluez is not on the bus",
                "apt install bluez && systemctl enable --now bluetooth",
            )
        )
        return out
    out.append(Finding(True, "bluetoothd", "running"))
    if f.version is None:
        out.append(Finding(True, "BlueZ version", "unknown (bluetoothctl not found)"))
    elif f.version < MIN_VERSION:
        out.append(
            Finding(
                False,
                "BlueZ version",
                f"{'.'.join(map(str, f.version))} is older than 5.55 (bleak needs 5.55+)",
                "upgrade bluez (Raspberry Pi OS bookworm ships 5.66+)",
            )
        )
    else:
        out.append(Finding(True, "BlueZ version", ".".join(map(str, f.version))))
    adapter = f.adapters.get(f.adapter)
    if adapter is None:
        have = ", ".join(sorted(f.adapters)) or "none"
        out.append(
            Finding(
                False,
                "adapter",
                f"{f.adapter} not found (have: {have})",
                "check `btmgmt info`; on a Pi enable the UART (dtparam=krnbt=on) and "
                "`rfkill unblock bluetooth`",
            )
        )
    else:
        out.append(Finding(True, "adapter", f"{f.adapter} present"))
        if not adapter.get("Powered"):
            out.append(
                Finding(
                    False,
                    "adapter power",
                    f"{f.adapter} is off",
                    f"bluetoothctl power on (or `btmgmt --index {f.adapter[3:]} power on`); "
                    "set AutoEnable=true in main.conf [Policy]",
                )
            )
        else:
            out.append(Finding(True, "adapter power", "on"))
        roles = set(adapter.get("Roles", []))
        ifaces = set(adapter.get("interfaces", []))
        le_ok = {"central", "peripheral"} <= roles and "org.bluez.LEAdvertisingManager1" in ifaces
        out.append(
            Finding(
                le_ok,
                "LE central+peripheral",
                f"roles {sorted(roles)}",
                "" if le_ok else "this controller cannot do BLE as both central and peripheral",
            )
        )
    if f.version is not None and f.version[:2] == (5, 66) and f.gatt_channels != 1:
        out.append(
            Finding(
                False,
                "EATT (BlueZ 5.66)",
                "EATT channels enabled: links drop with 'unexpected ATT response'",
                "set `[GATT] Channels = 1` in /etc/bluetooth/main.conf, restart bluetooth",
            )
        )
    if f.version is not None and f.version[:2] >= (5, 80):
        out.append(
            Finding(
                True,
                "discoverable advertising (BlueZ 5.8x)",
                "ble-bridge's advertisement sets Discoverable itself (bless's lacks it)",
            )
        )
    return out


async def gather(adapter: str) -> DoctorFacts:
    """Observe D-Bus and BlueZ (read-only)."""
    facts = DoctorFacts(adapter=adapter)
    try:
        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    except Exception as e:
        facts.bus_error = str(e)
        return facts
    facts.bus_ok = True
    try:
        reply = await bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="NameHasOwner",
                signature="s",
                body=["org.bluez"],
            )
        )
        facts.bluez_running = bool(reply and reply.body and reply.body[0])
        if facts.bluez_running:
            reply = await bus.call(
                Message(
                    destination="org.bluez",
                    path="/",
                    interface="org.freedesktop.DBus.ObjectManager",
                    member="GetManagedObjects",
                )
            )
            if reply is not None and reply.message_type == MessageType.ERROR:
                facts.access_denied = "AccessDenied" in (reply.error_name or "")
            elif reply is not None:
                for path, ifaces in reply.body[0].items():
                    if "org.bluez.Adapter1" in ifaces:
                        props = ifaces["org.bluez.Adapter1"]
                        facts.adapters[path.rsplit("/", 1)[-1]] = {
                            "Powered": props["Powered"].value if "Powered" in props else False,
                            "Roles": props["Roles"].value if "Roles" in props else [],
                            "interfaces": list(ifaces),
                        }
    finally:
        bus.disconnect()
    tool = shutil.which("bluetoothctl")
    if tool:
        try:
            out = subprocess.run(
                [tool, "--version"], capture_output=True, text=True, timeout=5
            ).stdout
            facts.version = parse_version(out)
        except (OSError, subprocess.TimeoutExpired):
            pass
    facts.gatt_channels = read_gatt_channels()
    return facts


def run_doctor(adapter: str) -> int:
    """Print one line per check (and the fix for each problem); 1 if any problem."""
    findings = diagnose(asyncio.run(gather(adapter)))
    for f in findings:
        print(f"{'ok ' if f.ok else 'BAD'} {f.check}: {f.detail}")
        if not f.ok and f.fix:
            print(f"    fix: {f.fix}")
    return 0 if all(f.ok for f in findings) else 1
