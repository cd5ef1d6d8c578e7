"""``ble-bridge lab``: four real node processes commit craps operations over the gatt transport."""

from __future__ import annotations

import pytest

from gatt.fakebluez import FakeBluezConfig, LinkModel
from gatt.fakebluez.bus import dbus_daemon_path
from gatt.lab import run_lab

pytestmark = pytest.mark.dbus


def test_four_node_processes_commit_operations_safely() -> None:
    if dbus_daemon_path() is None:
        pytest.skip("dbus-daemon is not installed")
    result = run_lab(4, 15.0, FakeBluezConfig(adapters=4, link=LinkModel(mtu=247)), progress=False)
    assert result.safe
    assert len(result.final) == 4, "every node answered on its control socket"
    assert all(len(r["links"]) >= 1 for r in result.final)
    assert result.heights >= 3, result.last_line()
    assert result.ops >= 1, result.last_line()
    assert result.last_line().startswith(f"simulate heights={result.heights} ops={result.ops} ")
