"""A peer that reconnects in a loop is reported in one line per window (explicit now), and
over a real asyncio loop a node whose neighbour keeps reconnecting logs it once."""

from __future__ import annotations

import asyncio
import logging
import os
import time

import pytest
from test_mesh_service import connect, make_nodes

from ble_bridge.mesh.reconnects import ReconnectConfig, ReconnectWatch

A, B = b"\xaa" * 8, b"\xbb" * 8
SLACK = float(os.environ.get("BLE_BRIDGE_TEST_SLACK", "3"))


def test_five_links_within_the_window_report_once_per_window() -> None:
    w = ReconnectWatch(ReconnectConfig(window_s=60.0, threshold=5))
    assert [w.identified(t, A) for t in (0.0, 10.0, 20.0, 30.0)] == [None] * 4
    assert w.identified(40.0, A) == 40.0  # the fifth within 60 s: reported, with its span
    assert w.identified(45.0, A) is None  # the loop goes on: not again within the window
    assert [w.identified(t, A) for t in (50.0, 60.0, 70.0, 80.0, 90.0)] == [None] * 5
    assert w.identified(100.0, A) == 40.0  # 60 s after the report, still looping: once more
    assert w.reports == 2


def test_links_spread_wider_than_the_window_are_no_loop() -> None:
    w = ReconnectWatch(ReconnectConfig(window_s=60.0, threshold=5))
    assert all(w.identified(20.0 * i, A) is None for i in range(50))  # one every 20 s
    assert all(w.identified(float(i), B) is None for i in range(4))  # others count alone
    assert w.reports == 0


def test_tracked_peers_are_bounded() -> None:
    w = ReconnectWatch(ReconnectConfig(max_peers=3, threshold=2))
    for i in range(10):
        w.identified(float(i), bytes([i]) * 8)
    assert len(w) == 3
    assert w.identified(10.0, bytes([0]) * 8) is None  # forgotten: counts from one again
    assert w.identified(10.5, bytes([9]) * 8) == 1.5  # still tracked: its second link


def test_bad_config_is_refused() -> None:
    for bad in ({"window_s": 0.0}, {"threshold": 1}, {"max_peers": 0}):
        with pytest.raises(ValueError):
            ReconnectConfig(**bad)


async def _loop_of_reconnects(caplog: pytest.LogCaptureFixture) -> None:
    nodes, transports = make_nodes(2)
    for node in nodes:  # a window no loaded machine outlasts
        node.reconnects = ReconnectWatch(ReconnectConfig(window_s=3600.0, threshold=5))
    for node in nodes:
        await node.start()
    peer = nodes[1].peer_id
    for _ in range(7):
        connect(transports[0], transports[1])
        link = max(transports[0].peers)
        deadline = time.monotonic() + 10.0 * SLACK
        while nodes[0]._identified.get(link) != peer:  # its announce bound the link
            assert time.monotonic() < deadline, "link never identified"
            await asyncio.sleep(0.01)
        transports[0].drop(link, "peer went away")
    for node in nodes:
        await node.stop()
    lines = [r for r in caplog.records if r.getMessage().startswith("peer_reconnecting ")]
    # each side saw the other loop: one line each, however many more times it reconnected
    about = {r.getMessage().split()[1]: r for r in lines}
    assert len(lines) == 2 and set(about) == {
        f"peer={peer.hex()}",
        f"peer={nodes[0].peer_id.hex()}",
    }
    assert all(r.levelno == logging.WARNING for r in lines)
    assert (
        f"peer={peer.hex()} nickname=n1 links=5 within_s="
        in about[f"peer={peer.hex()}"].getMessage()
    )
    assert nodes[0].stats()["peer_reconnecting"] == nodes[1].stats()["peer_reconnecting"] == 1


def test_a_neighbour_reconnecting_in_a_loop_is_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="ble_bridge.mesh.service")
    asyncio.run(_loop_of_reconnects(caplog))
