"""Multi-router behaviour over the in-memory harness (explicit clock, no asyncio)."""

from __future__ import annotations

from mesh_harness import Net, full_edges, grid_edges, line_edges


def test_three_node_line_delivers_broadcast_once_everywhere() -> None:
    net = Net(3)
    net.connect_edges(line_edges(3))
    net.run(2.0)
    pid = net.broadcast(0, b"hello")
    net.run(1.0)
    assert sorted(net.receivers(pid)) == [1, 2]


def test_full_mesh_costs_one_transmission_per_delivery() -> None:
    net = Net(8)
    net.connect_edges(full_edges(8))
    net.run(5.0)
    net.tx.clear()
    pids = [net.broadcast(k, b"m%d" % k) for k in range(8)]
    net.run(2.0)
    for k, pid in enumerate(pids):
        assert sorted(net.receivers(pid)) == [i for i in range(8) if i != k]
    assert net.tx[2] == 8 * 7


def test_grid_broadcast_reaches_all_with_fewer_transmissions_than_flooding() -> None:
    net = Net(16)
    edges = grid_edges(4, 4)
    net.connect_edges(edges)
    net.run(5.0)
    net.tx.clear()
    pid = net.broadcast(5, b"grid")
    net.run(2.0)
    assert sorted(net.receivers(pid)) == [i for i in range(16) if i != 5]
    naive = 2 * len(edges) - 15  # every node sends on every link but its ingress
    assert net.tx[2] < naive
