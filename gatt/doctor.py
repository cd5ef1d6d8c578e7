"""``ble-bridge doctor``: is this machine's BlueZ fit for the mesh? Each problem with its fix.

Facts are gathered once (D-Bus, ``bluetoothctl --version``, ``/etc/bluetooth/main.conf``) and
judged by :func:`diagnose`, which is pure so it is tested without a Pi.
"""

from __future__ import annotations

import asyncio
import configparser
import dataclasses
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.constants import BusType

from ble_bridge.errors import ExitCode, StartupError

MIN_VERSION = (5, 55)
MAIN_CONF = Path("/etc/bluetooth/main.conf")
SYSTEM_BUS_DEFAULT = "unix:path=/var/run/dbus/system_bus_socket"


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
    exchange_mtu: int | None = None
    """``[GATT] ExchangeMTU`` from main.conf (None when unset: BlueZ offers 517)."""
    experimental: bool | None = None
    """bluetoothd runs with ``--experimental`` (None: not known)."""


@dataclass(frozen=True, slots=True)
class Finding:
    ok: bool
    check: str
    detail: str
    fix: str = ""


def parse_version(text: str) -> tuple[int, ...] | None:
    m = re.search(r"(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _gatt_int(key: str, path: Path) -> int | None:
    parser = configparser.ConfigParser(strict=False, inline_comment_prefixes=("#",))
    try:
        parser.read_string(path.read_text())
    except (OSError, configparser.Error):
        return None
    value = parser.get("GATT", key, fallback=None)
    return int(value) if value is not None and value.strip().isdigit() else None


def read_gatt_channels(path: Path = MAIN_CONF) -> int | None:
    return _gatt_int("Channels", path)


def read_exchange_mtu(path: Path = MAIN_CONF) -> int | None:
    return _gatt_int("ExchangeMTU", path)


def bluetoothd_experimental(proc: Path = Path("/proc")) -> bool | None:
    """Is a running bluetoothd started with -E/--experimental? None when none is found."""
    try:
        entries = list(proc.iterdir())
    except OSError:
        return None
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"bluetoothd"):
            return any(a in (b"-E", b"--experimental") for a in argv[1:])
    return None


def advert_finding(f: DoctorFacts) -> Finding:
    """Encode the node's advertisement as this bluetoothd would; does it fit?"""
    from gatt.advert import AdvertError, BluezRules, encode
    from gatt.profile import GattProfile

    adapter = f.adapters.get(f.adapter, {})
    rules = BluezRules(
        version=(f.version[0], f.version[1]) if f.version and len(f.version) >= 2 else (5, 66),
        experimental=bool(f.experimental),
        adapter_discoverable=bool(adapter.get("Discoverable")),
        bredr=True,
    )
    try:
        enc = encode(GattProfile().advertisement(bytes(8)), rules)
    except AdvertError as e:
        return Finding(
            False,
            "advertisement",
            f"{e.size} bytes do not fit a {e.room}-byte legacy advert ({e.reason})",
            "upgrade ble-bridge (its advert is 31 bytes: flags, the 128-bit UUID list, a 6-byte id)",
        )
    scan = (
        f", scan response {len(enc.scan_rsp)} bytes (8-byte peer id)"
        if enc.scan_rsp
        else " (no scan response: needs BlueZ 5.80+ with --experimental)"
    )
    return Finding(True, "advertisement", f"{enc.size} of 31 bytes{scan}")


def frame_finding(f: DoctorFacts) -> Finding:
    from ble_bridge.transport import MAX_ATT_MTU, MIN_ATT_MTU, frame_limit

    mtu = f.exchange_mtu if f.exchange_mtu is not None else MAX_ATT_MTU
    if not MIN_ATT_MTU <= mtu <= MAX_ATT_MTU:
        return Finding(
            False,
            "frame limit",
            f"[GATT] ExchangeMTU = {mtu} is outside {MIN_ATT_MTU}..{MAX_ATT_MTU}",
            "set `[GATT] ExchangeMTU = 517` in /etc/bluetooth/main.conf (deploy/bluetooth does)",
        )
    return Finding(
        True,
        "frame limit",
        f"ATT MTU up to {mtu}: frames of at most {frame_limit(mtu)} bytes (min(MTU-3, 512))",
    )


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
    out.append(advert_finding(f))
    out.append(frame_finding(f))
    if f.version is not None and f.version[:2] == (5, 66) and f.gatt_channels != 1:
        out.append(
            Finding(
                False,
                "EATT (BlueZ 5.66)",
                "EATT channels enabled: links drop with 'unexpected ATT response'",
                "set `[GATT] Channels = 1` in /etc/bluetooth/main.conf, restart bluetooth",
            )
        )
    elif f.gatt_channels == 1:
        out.append(Finding(True, "EATT", "off ([GATT] Channels = 1)"))
    else:
        out.append(
            Finding(True, "EATT", f"[GATT] Channels = {f.gatt_channels or 'default'} (fine here)")
        )
    if f.version is not None and f.version[:2] >= (5, 80):
        out.append(
            Finding(
                True,
                "discoverable advertising (BlueZ 5.8x)",
                "the advertisement sets Discoverable itself (bless's lacks the flag, and "
                "5.82's discovery ignores adverts without it)",
            )
        )
    return out


async def gather(adapter: str) -> DoctorFacts:
    """Observe D-Bus and BlueZ (read-only)."""
    facts = await gather_bus(adapter)
    if not facts.bus_ok:
        return facts
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
    facts.exchange_mtu = read_exchange_mtu()
    facts.experimental = bluetoothd_experimental()
    return facts


async def gather_bus(adapter: str) -> DoctorFacts:
    """What the system bus tells: is it there, is org.bluez on it, which adapters it has."""
    facts = DoctorFacts(adapter=adapter)
    try:
        bus = await asyncio.wait_for(MessageBus(bus_type=BusType.SYSTEM).connect(), 10.0)
    except Exception as e:
        where = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or SYSTEM_BUS_DEFAULT
        facts.bus_error = f"{where}: {e or type(e).__name__}"
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
                            "Discoverable": bool(props["Discoverable"].value)
                            if "Discoverable" in props
                            else False,
                            "interfaces": list(ifaces),
                        }
    finally:
        bus.disconnect()
    return facts


# the doctor's checks that stop `ble-bridge run` at start, with the exit code of each
_STARTUP_CODES = {
    "system D-Bus": ExitCode.NO_SYSTEM_BUS,
    "D-Bus access": ExitCode.BLUETOOTHD_ABSENT,
    "bluetoothd": ExitCode.BLUETOOTHD_ABSENT,
    "adapter": ExitCode.ADAPTER_MISSING,
}


def startup_problem(f: DoctorFacts) -> StartupError | None:
    """The first of the doctor's findings that a node cannot start with, as a StartupError.

    Only what the bus tells counts (:func:`gather_bus`): no system bus, org.bluez absent or
    refusing us, the adapter missing. The other findings (power, EATT, version) are logged
    warnings at most; a node may still work, and bluetoothd may power the adapter later.
    """
    for finding in diagnose(f):
        code = _STARTUP_CODES.get(finding.check)
        if code is not None and not finding.ok:
            return StartupError(code, f"{finding.check}: {finding.detail}", finding.fix)
    return None


async def preflight(adapter: str) -> None:
    """Raise the StartupError of the first problem the doctor finds on the bus, if any."""
    problem = startup_problem(await gather_bus(adapter))
    if problem is not None:
        raise problem


def findings_json(findings: list[Finding]) -> str:
    """``doctor --json``: {"ok": all fine, "findings": [{ok, check, detail, fix}, ...]}."""
    return json.dumps(
        {"ok": all(f.ok for f in findings), "findings": [dataclasses.asdict(f) for f in findings]}
    )


def run_doctor(adapter: str, as_json: bool = False) -> int:
    """Print one line per check (and the fix for each problem), or one JSON document; 1 if
    any problem."""
    findings = diagnose(asyncio.run(gather(adapter)))
    if as_json:
        print(findings_json(findings))
        return 0 if all(f.ok for f in findings) else 1
    for f in findings:
        print(f"{'ok ' if f.ok else 'BAD'} {f.check}: {f.detail}")
        if not f.ok and f.fix:
            print(f"    fix: {f.fix}")
    return 0 if all(f.ok for f in findings) else 1
