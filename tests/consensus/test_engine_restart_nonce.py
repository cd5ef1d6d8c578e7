"""A restarted node must not lose the operation it submits before it has caught up.

Before the crash the node's op took nonce n and was committed by the others while it was
down; after the restart its nonce counter only knows its own stored chain.
"""

from __future__ import annotations

from pathlib import Path

from ble_bridge.consensus.engine import (
    Committed,
    EngineConfig,
    OperationReissued,
    OperationRejected,
)
from ble_bridge.consensus.testing import LinkModel, SimNetwork, add_op, exchange
from ble_bridge.consensus.testing import unit_engines as engines
from ble_bridge.store import Store


def test_op_submitted_right_after_a_restart_commits(tmp_path: Path) -> None:
    # statemachine example: submit(0), crash(0, lose=False), run(1.0), restart, submit
    net = SimNetwork(4, seed=7, link=LinkModel(drop=0.02), store_dir=tmp_path)
    net.start()
    net.submit(0, add_op(0))
    net.crash(0, lose_outbox=False)
    net.run(net.now + 1.0)
    assert net.height_of(1) == 1  # the others committed node 0's op without it
    net.restart(0)
    net.submit(0, add_op(1))
    assert net.run_until_height(2, max_time=net.now + 60)
    assert net.agreement()
    ops = net.nodes[1].committed_ops
    assert [op.body for op in ops] == [add_op(0), add_op(1)]
    assert [op.nonce for op in ops] == [1, 2]


def test_op_of_a_node_restarted_without_store_is_reissued_and_commits() -> None:
    # Nothing durable remembers the nonce: the new op reuses it, and is re-issued under a
    # fresh one when the catch-up shows the block where the earlier op took it.
    net = SimNetwork(4, seed=7)
    net.start()
    eng = net.nodes[0].engine
    assert eng is not None
    # a node that signs nothing but its op before the crash (a proposer would sign its
    # proposal, and without a store sign another after the restart: Byzantine)
    me = next(i for i in range(4) if net.nodes[i].key != eng.proposer(1, 0))
    net.submit(me, add_op(0))
    net.crash(me, lose_outbox=False)
    net.run(net.now + 1.0)
    assert net.height_of((me + 1) % 4) == 1
    net.restart(me)
    net.submit(me, add_op(1))
    assert net.run_until_height(2, max_time=net.now + 60)
    assert net.agreement()
    restarted = net.nodes[me].engine
    assert restarted is not None and restarted.stats["ops_reissued"] == 1
    ops = net.nodes[(me + 1) % 4].committed_ops
    assert [(op.body, op.nonce) for op in ops] == [(add_op(0), 1), (add_op(1), 2)]


def test_op_submitted_right_after_a_restart_commits_after_a_snapshot(tmp_path: Path) -> None:
    # The node is so far behind, and the old blocks so far pruned, that it catches up by
    # snapshot: it never sees the block that took its nonce, only the nonce count. Only a
    # durable nonce keeps the new op off the used one.
    config = EngineConfig(snapshot_interval=4, keep_blocks=2, recent_blocks=2)
    net = SimNetwork(4, seed=7, store_dir=tmp_path, config=config)
    net.start()
    net.submit(0, add_op(0))
    net.crash(0, lose_outbox=False)
    for k in range(12):
        net.submit(1 + k % 3, add_op(2))
        net.run(net.now + 0.5)
    assert net.height_of(1) >= 12
    net.restart(0)
    net.submit(0, add_op(1))
    assert net.run_until_height(net.height_of(1) + 1, max_time=net.now + 60)
    assert net.nodes[0].snapshot_installs == 1
    assert net.nodes[0].engine is not None
    assert net.nodes[0].engine.stats["ops_reissued"] == 0
    mine = [op for op in net.nodes[1].committed_ops if op.submitter == net.nodes[0].key]
    assert [(op.body, op.nonce) for op in mine] == [(add_op(0), 1), (add_op(1), 2)]


def test_reissue_event_names_the_lost_op_and_its_successor() -> None:
    group = engines(4)
    for e in group:
        e.start(0.0)
    me = next(e for e in group if e.key != e.proposer(1, 0))
    others = [e for e in group if e is not me]
    me.submit(0.0, add_op(5))
    for msg in me.outbox():  # the op leaves, then the node crashes
        for e in others:
            e.receive(0.0, msg)
    now = exchange(others, 0.0)
    assert all(e.height == 1 for e in others)
    fresh = engines(4)[group.index(me)]  # same identity, nothing remembered
    fresh.start(now)
    old_id = fresh.submit(now, add_op(6))
    exchange([fresh, *others], now)
    events = fresh.events()
    reissued = [ev for ev in events if isinstance(ev, OperationReissued)]
    assert [ev.old_id for ev in reissued] == [old_id]
    new_id = reissued[0].new_id
    assert not any(isinstance(ev, OperationRejected) for ev in events)
    committed = [op for ev in events if isinstance(ev, Committed) for op in ev.ops]
    assert [(op.op_id, op.body, op.nonce) for op in committed][-1] == (new_id, add_op(6), 2)
    assert all(e.height == 2 for e in group if e is not me) and fresh.height == 2


def test_restarted_engine_signs_above_every_nonce_it_used(tmp_path: Path) -> None:
    path = tmp_path / "n.sqlite"
    first = engines(4, stores=[Store(path), None, None, None])[0]
    first.start(0.0)
    a = first.submit(0.0, add_op(1))
    b = first.submit(0.0, add_op(2))
    assert (first.operation_nonce(a), first.operation_nonce(b)) == (1, 2)
    assert first.height == 0  # nothing committed: only the store remembers 1 and 2
    again = engines(4, stores=[Store(path), None, None, None])[0]
    again.start(1.0)
    c = again.submit(1.0, add_op(3))
    assert again.operation_nonce(c) == 3
