"""The systemd unit: `systemd-analyze verify` and `security` on the real file, and its
RestartPreventExitStatus= against ble_bridge.errors.NO_RESTART."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ble_bridge.errors import NO_RESTART, ExitCode

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "ble-bridge.service"
NETWORK = ROOT / "deploy" / "ble-bridge.service.d" / "network.conf"
EXEC = "/opt/ble-bridge/.venv/bin/ble-bridge"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze missing (setup.sh)")


def settings(text: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit file, in order (comments and sections dropped)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;[" or "=" not in line:
            continue
        key, value = line.split("=", 1)
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def staged(tmp_path: Path, network: bool) -> Path:
    """The unit (and drop-in) in a temporary unit dir, ExecStart pointing at an executable
    that exists here: verify checks that the command exists; everything else is the file."""
    exe = tmp_path / "ble-bridge"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    text = UNIT.read_text()
    assert EXEC in text
    unit = tmp_path / "ble-bridge.service"
    unit.write_text(text.replace(EXEC, str(exe)))
    if network:
        (tmp_path / "ble-bridge.service.d").mkdir()
        shutil.copy(NETWORK, tmp_path / "ble-bridge.service.d" / "network.conf")
    return unit


def exposure(unit: Path) -> float:
    assert ANALYZE is not None
    proc = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    return float(found.group(1))


@needs_analyze
def test_verify_is_clean(tmp_path: Path) -> None:
    assert ANALYZE is not None
    for network in (False, True):
        d = tmp_path / ("net" if network else "plain")
        d.mkdir()
        unit = staged(d, network)
        proc = subprocess.run(
            [ANALYZE, "verify", "--no-pager", str(unit)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr


@needs_analyze
def test_security_exposure_within_bounds(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "net").mkdir()
    plain = exposure(staged(tmp_path / "plain", network=False))
    net = exposure(staged(tmp_path / "net", network=True))
    assert plain <= 2.0, plain
    assert net <= 2.5, net
    # the drop-in really widens the unit (it was read), and only by IP sockets
    assert net > plain


def test_restart_prevent_is_no_restart() -> None:
    s = settings(UNIT.read_text())
    listed = {int(v) for v in " ".join(s["RestartPreventExitStatus"]).split()}
    assert listed == {int(c) for c in NO_RESTART}
    # a restart may fix these, so systemd must retry them
    assert ExitCode.STORAGE not in listed and ExitCode.NO_SYSTEM_BUS not in listed
    assert s["Restart"] == ["on-failure"]


def test_unit_shape() -> None:
    s = settings(UNIT.read_text())
    assert s["Type"] == ["notify"]
    assert s["RestrictAddressFamilies"] == ["AF_UNIX"]
    assert s["CapabilityBoundingSet"] == [""]
    assert "@system-service" in s["SystemCallFilter"]
    assert {"bluetooth", "gpio"} <= set(" ".join(s["SupplementaryGroups"]).split())
    watchdog = s["WatchdogSec"][0]
    assert watchdog.endswith("s") and int(watchdog[:-1]) >= 10
    # MemoryHigh is the 64 MB goal; MemoryMax above it leaves room to reclaim first
    assert s["MemoryHigh"] == ["64M"]
    assert int(s["MemoryMax"][0].rstrip("M")) > 64
    assert "StartLimitBurst" in s and "StartLimitIntervalSec" in s
    net = settings(NETWORK.read_text())
    assert set(net["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
