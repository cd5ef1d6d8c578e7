"""``ble-bridge lab --chaos``: real node processes killed with SIGKILL and restarted rejoin.

Every restart must have links again and commit a height above the one it had when it was
killed (within 30 s, times BLE_BRIDGE_TEST_SLACK for a loaded machine), the table's heights
advance, and no two nodes ever report different state hashes for one height.
"""

from __future__ import annotations

import pytest
from gatt_harness import SLACK

from gatt.fakebluez import FakeBluezConfig, LinkModel
from gatt.fakebluez.bus import dbus_daemon_path
from gatt.lab import run_lab

pytestmark = pytest.mark.dbus

REJOIN_S = 30.0


def _lab(nodes: int, kills: int, every: float, seed: int) -> None:
    if dbus_daemon_path() is None:
        pytest.skip("dbus-daemon is not installed")
    bound = 60.0 + kills * (every + REJOIN_S) * SLACK  # the watch ends once all rejoined
    result = run_lab(
        nodes,
        bound,
        FakeBluezConfig(adapters=nodes, link=LinkModel(mtu=247)),
        progress=False,
        chaos=every,
        max_kills=kills,
        seed=seed,
    )
    line = result.last_line()
    assert result.safe, line
    assert len(result.kills) == kills, line
    assert result.rejoined == kills, [(k.node, k.height_before, k.rejoin_s) for k in result.kills]
    assert result.worst_rejoin_s <= REJOIN_S * SLACK, line
    # the table goes on: the node killed next may lag the last one by a height or two (seen
    # under load: [9, 14, 13, ...]), never more, and the table ends above every kill
    heights = [k.height_before for k in result.kills]
    assert all(h >= max(heights[:k]) - 2 for k, h in enumerate(heights) if k), heights
    assert len(result.final) == nodes and result.heights > max(heights), line
    assert line.endswith(
        f" kills={kills} rejoined={kills} worst_rejoin_s={result.worst_rejoin_s:.1f}"
    )


def test_four_nodes_survive_four_kills() -> None:
    _lab(4, kills=4, every=6.0, seed=2)


@pytest.mark.slow
def test_four_nodes_survive_ten_kills() -> None:
    """The issue's 10-kill run (about 90 s on a quiet machine): in the slow tier."""
    _lab(4, kills=10, every=6.0, seed=2)


def test_three_validators_all_needed_survive_a_kill_and_restart() -> None:
    _lab(3, kills=2, every=6.0, seed=1)
