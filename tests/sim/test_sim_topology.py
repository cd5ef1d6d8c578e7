"""Topologies: who hears whom, connectivity, movement."""

from __future__ import annotations

import random

import pytest

from ble_bridge.air.topology import (
    RandomWaypoint,
    clustered,
    full,
    grid,
    line,
    random_geometric,
    ring,
)


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


def test_clustered_groups_hear_themselves_and_the_layout_is_connected() -> None:
    topo = clustered(12, 8, 4, random.Random(3))
    assert len(topo) == 100 and topo.is_connected()
    foreign = 0
    for k in range(12):
        members = range(8 * k, 8 * k + 8)
        for i in members:
            assert set(members) - {i} <= set(topo.neighbours(i))  # a table hears itself
            foreign += sum(1 for j in topo.neighbours(i) if j not in members)
    assert foreign > 0  # ...and some neighbouring tables: one mesh, not 12 islands
    again = clustered(12, 8, 4, random.Random(3))
    assert again.positions == topo.positions
    with pytest.raises(ValueError):
        clustered(2, 4, 0, random.Random(1), spread=0.6)
