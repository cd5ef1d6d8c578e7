"""``fake-bluez`` and ``doctor`` subcommands."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from gatt_harness import run

from gatt import cli
from gatt.doctor import (
    DoctorFacts,
    bluetoothd_experimental,
    diagnose,
    gather,
    parse_version,
    read_exchange_mtu,
    read_gatt_channels,
)
from gatt.fakebluez import FakeBluezProcess
from gatt.fakebluez.bus import dbus_daemon_path

GOOD_ADAPTER = {
    "Powered": True,
    "Roles": ["central", "peripheral"],
    "interfaces": ["org.bluez.Adapter1", "org.bluez.LEAdvertisingManager1"],
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    cli.register(p.add_subparsers(dest="command"))
    return p


def test_doctor_flags_eatt_on_5_66_and_a_powered_off_adapter() -> None:
    facts = DoctorFacts(
        bus_ok=True,
        bluez_running=True,
        version=(5, 66),
        adapters={"hci0": {**GOOD_ADAPTER, "Powered": False}},
        gatt_channels=None,
    )
    bad = {f.check: f for f in diagnose(facts) if not f.ok}
    assert set(bad) == {"adapter power", "EATT (BlueZ 5.66)"}
    assert "Channels = 1" in bad["EATT (BlueZ 5.66)"].fix
    facts.gatt_channels = 1
    facts.adapters["hci0"]["Powered"] = True
    assert all(f.ok for f in diagnose(facts))


def test_doctor_encodes_the_advert_and_reports_the_frame_limit(tmp_path: Path) -> None:
    facts = DoctorFacts(
        bus_ok=True, bluez_running=True, version=(5, 66), adapters={"hci0": GOOD_ADAPTER},
        gatt_channels=1,
    )  # fmt: skip
    found = {f.check: f for f in diagnose(facts)}
    assert found["advertisement"].ok and found["advertisement"].detail.startswith("31 of 31 bytes")
    assert "no scan response" in found["advertisement"].detail
    assert found["frame limit"].ok and "at most 512 bytes" in found["frame limit"].detail
    assert found["EATT"].ok
    facts.exchange_mtu = 185
    assert "at most 182 bytes" in {f.check: f for f in diagnose(facts)}["frame limit"].detail
    facts.exchange_mtu = 1000
    assert not {f.check: f for f in diagnose(facts)}["frame limit"].ok
    facts.version, facts.experimental, facts.exchange_mtu = (5, 82), True, None
    found = {f.check: f for f in diagnose(facts)}
    assert "scan response 26 bytes" in found["advertisement"].detail
    assert found["discoverable advertising (BlueZ 5.8x)"].ok
    conf = tmp_path / "main.conf"
    conf.write_text("[GATT]\nExchangeMTU = 247\n")
    assert read_exchange_mtu(conf) == 247
    proc = tmp_path / "proc"
    (proc / "42").mkdir(parents=True)
    (proc / "42" / "cmdline").write_bytes(b"/usr/libexec/bluetooth/bluetoothd\0-n\0-E\0")
    assert bluetoothd_experimental(proc) is True
    (proc / "42" / "cmdline").write_bytes(b"/usr/libexec/bluetooth/bluetoothd\0")
    assert bluetoothd_experimental(proc) is False
    assert bluetoothd_experimental(tmp_path / "none") is None


def test_doctor_flags_missing_bluetoothd_old_bluez_and_missing_adapter() -> None:
    assert not diagnose(DoctorFacts(bus_ok=True))[-1].ok
    bad = [
        f.check
        for f in diagnose(DoctorFacts(bus_ok=True, bluez_running=True, version=(5, 50)))
        if not f.ok
    ]
    assert bad == ["BlueZ version", "adapter"]


def test_version_and_main_conf_parsing(tmp_path: Path) -> None:
    assert parse_version("bluetoothctl: 5.66\n") == (5, 66)
    assert parse_version("nothing") is None
    conf = tmp_path / "main.conf"
    conf.write_text("[General]\nName = x\n[GATT]\n#Channels = 3\nChannels = 1 # one\n")
    assert read_gatt_channels(conf) == 1
    conf.write_text("[GATT]\n#Channels = 3\n")
    assert read_gatt_channels(conf) is None


@pytest.mark.dbus
def test_doctor_sees_the_fake_adapters(fake_bluez: FakeBluezProcess) -> None:
    facts = run(gather("hci1"))
    assert facts.bluez_running and set(facts.adapters) == {"hci0", "hci1"}
    checks = {f.check: f.ok for f in diagnose(facts)}
    assert checks["adapter"] and checks["adapter power"] and checks["LE central+peripheral"]


@pytest.mark.dbus
def test_fake_bluez_command_prints_the_bus_address_and_stops_on_ctrl_c() -> None:
    if dbus_daemon_path() is None:
        pytest.skip("dbus-daemon is not installed")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, gatt.cli as c; sys.exit(c.main(sys.argv[1:]))",
            "fake-bluez",
            "--adapters",
            "3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert proc.stdout is not None
    address = proc.stdout.readline().decode().strip()
    assert address.startswith("unix:path=")
    facts = run(_gather_on(address))
    assert set(facts.adapters) == {"hci0", "hci1", "hci2"}
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0


async def _gather_on(address: str) -> DoctorFacts:
    old = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
    os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = address
    try:
        return await gather("hci0")
    finally:
        if old is None:
            del os.environ["DBUS_SYSTEM_BUS_ADDRESS"]
        else:
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = old


def test_fake_bluez_options_build_the_config() -> None:
    args = parser().parse_args(
        ["fake-bluez", "--adapters", "5", "--latency-ms", "20", "--loss", "0.1", "--pi-controller"]
    )
    cfg = cli.config_from_args(args)
    assert cfg.adapters == 5 and cfg.connect_fails_while_advertising
    assert cfg.link is not None and cfg.link.latency_s == 0.02 and cfg.link.loss == 0.1


@pytest.mark.dbus
def test_doctor_json_is_one_document_of_the_findings(fake_bluez: FakeBluezProcess) -> None:
    import json

    from gatt.doctor import findings_json

    findings = diagnose(run(gather("hci1")))
    doc = json.loads(findings_json(findings))
    assert doc["ok"] is all(f.ok for f in findings)
    assert [(d["check"], d["ok"]) for d in doc["findings"]] == [(f.check, f.ok) for f in findings]
    assert {"adapter", "adapter power"} <= {d["check"] for d in doc["findings"]}
    assert all(set(d) == {"ok", "check", "detail", "fix"} for d in doc["findings"])
