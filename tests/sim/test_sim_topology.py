"""Topologies: who hears whom, connectivity, movement."""

from __future__ import annotations

import random

from ble_bridge.air.topology import RandomWaypoint, full, grid, line, random_geometric, ring


def test_layouts_hear_exactly_their_intended_neighbours() -> None:
    assert all(len(full(6).neighbours(i)) == 5 for i in range(6))
    ln = line(5)
    assert [ln.neighbours(i) for i in range(5)] == [(1,), (0, 2), (1, 3), (2, 4), (3,)]
    rg = ring(12)
    assert all(set(rg.neighbours(i)) == {(i - 1) % 12, (i + 1) % 12} for i in range(12))
    g = grid(9)
    assert sorted(len(g.neighbours(i)) for i in range(9)) == [2, 2, 2, 2, 3, 3, 3, 3, 4]
    assert max(ln.hops_from(0).values()) == 4


def test_random_geometric_is_connected_and_reproducible() -> None:
    a = random_geometric(50, random.Random(3))
    b = random_geometric(50, random.Random(3))
    assert a.is_connected() and a.positions == b.positions
    assert a.positions != random_geometric(50, random.Random(4)).positions


def test_random_waypoint_moves_nodes_inside_the_box_and_changes_neighbours() -> None:
    topo = random_geometric(20, random.Random(5))
    before = [topo.neighbours(i) for i in range(20)]
    walker = RandomWaypoint(topo, random.Random(6), speed=(0.05, 0.1))
    for _ in range(200):
        walker.step(1.0)
    x0, y0, x1, y1 = walker.box
    assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in topo.positions)
    assert [topo.neighbours(i) for i in range(20)] != before
