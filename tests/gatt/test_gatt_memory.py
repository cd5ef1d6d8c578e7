"""Slow tier: an hour of play, and no node's RSS ends more than 2 MiB above minute 10.

``BLE_BRIDGE_SLOW=1 .venv/bin/pytest -q tests/gatt/test_gatt_memory.py`` (65 minutes).
``BLE_BRIDGE_MEMORY_MINUTES`` shortens the run for a try (the check stays: the end against
the first ten minutes' end, or against the first sixth of a shorter run).
A 4-node ``ble-bridge lab`` on the fake BlueZ; RSS read from /proc every second, each
point the median of 30 s of samples.
"""

from __future__ import annotations

import os

import pytest

from gatt.fakebluez import FakeBluezConfig, LinkModel
from gatt.fakebluez.bus import dbus_daemon_path
from gatt.lab import ProcRecorder, run_lab

pytestmark = [pytest.mark.dbus, pytest.mark.slow, pytest.mark.timeout(5400)]

BOUND_MIB = 2.0


def test_an_hour_of_play_keeps_rss_within_2_mib_of_minute_ten() -> None:
    if dbus_daemon_path() is None:
        pytest.skip("dbus-daemon is not installed")
    minutes = float(os.environ.get("BLE_BRIDGE_MEMORY_MINUTES", "60"))
    rec = ProcRecorder()
    result = run_lab(
        4, minutes * 60.0, FakeBluezConfig(adapters=4, link=LinkModel(mtu=247)),
        progress=False, on_poll=rec,
    )  # fmt: skip
    assert result.safe and result.heights > 0, result.last_line()
    ref_t = min(600.0, rec.end / 6)
    report = {}
    for pid in rec.rss:
        early, late = rec.rss_around(pid, ref_t), rec.rss_end(pid)
        report[pid] = (round(early, 2), round(late, 2))
    print(f"rss MiB at {ref_t:.0f}s and at the end: {report}")
    assert all(late - early <= BOUND_MIB for early, late in report.values()), report
