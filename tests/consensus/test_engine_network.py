"""Simulated sessions: commits, Byzantine minorities, partitions, crashes, late joiners."""

from __future__ import annotations

import random
import zlib
from pathlib import Path

import pytest

from ble_bridge.consensus.byzantine import Behaviour
from ble_bridge.consensus.engine import EngineConfig
from ble_bridge.consensus.quorum import max_faulty
from ble_bridge.consensus.testing import (
    LedgerState,
    LinkModel,
    SimNetwork,
    run_random_scenario,
)
from ble_bridge.store import Store
from ble_bridge.wire.messages import Block


def _ledger_consistent(net: SimNetwork, nodes: list[int]) -> None:
    """Every node's ledger equals the sum of the ops it committed; equal heights, equal state."""
    for i in nodes:
        eng = net.nodes[i].engine
        assert eng is not None
        state: LedgerState = eng.state
        if net.nodes[i].snapshot_installs == 0 and net.nodes[i].crashes == 0:
            committed = sum(int.from_bytes(op.body[1:], "big") for op in net.nodes[i].committed_ops)
            assert state.grand_total == committed
    by_height: dict[int, bytes] = {}
    for i in nodes:
        eng = net.nodes[i].engine
        assert eng is not None
        assert by_height.setdefault(eng.height, eng.state_hash) == eng.state_hash


@pytest.mark.parametrize("n", [4, 7, 8])
def test_validators_commit_batched_blocks(n: int) -> None:
    net = SimNetwork(n, seed=n, link=LinkModel(drop=0.02))
    net.start()
    net.load(rate=20.0, until=1e9)
    assert net.run_until_height(6, max_time=60)
    assert net.agreement() and net.valid() and net.double_signs == 0
    ops = len(net.nodes[0].committed_ops)
    heights = net.height_of(0)
    assert ops > heights  # blocks batch several operations
    net.load(rate=0.001, until=0)  # stop adding; let everyone reach one height
    _ledger_consistent(net, list(range(n)))


def test_fifty_validators_commit_ten_heights() -> None:
    net = SimNetwork(50, seed=50)
    net.start()
    net.load(rate=0.1, until=1e9)
    assert net.run_until_height(10, max_time=120)
    assert net.agreement() and net.double_signs == 0


@pytest.mark.parametrize("behaviour", list(Behaviour))
@pytest.mark.parametrize("n", [4, 7])
def test_f_byzantine_keep_agreement_validity_and_liveness(n: int, behaviour: Behaviour) -> None:
    f = max_faulty(n)
    net = SimNetwork(
        n,
        seed=zlib.crc32(f"{n}-{behaviour.value}".encode()) % 1000,
        link=LinkModel(drop=0.03),
        byzantine={i: behaviour for i in range(f)},
    )
    net.start()
    net.load(rate=5.0, until=1e9)
    assert net.run_until_height(8, max_time=200), [net.height_of(i) for i in range(n)]
    assert net.agreement()
    assert net.valid()
    assert net.double_signs == 0
    if behaviour is Behaviour.EQUIVOCATE:
        # evidence was gossiped, committed, and the application banned the offenders
        honest = net.nodes[net.honest()[0]].engine
        assert honest is not None
        assert net.run_until_height(net.height_of(net.honest()[0]) + 4, max_time=400)
        assert set(honest.banned) == {net.nodes[i].key for i in range(f)}
        assert set(honest.state.banned) == set(honest.banned)
    if behaviour is Behaviour.INVALID:
        stats = sum((net.nodes[i].engine.stats for i in net.honest()), start=type(net.stats)())  # type: ignore[union-attr]
        assert stats["invalid_block_op_rejected"] > 0


def test_minority_partition_cannot_commit_and_converges_after_heal() -> None:
    net = SimNetwork(7, seed=11, link=LinkModel(drop=0.01))
    net.start()
    net.load(rate=10.0, until=1e9)
    assert net.run_until_height(3, max_time=30)
    minority, majority = {0, 1}, {2, 3, 4, 5, 6}
    net.split([minority, majority])
    net.run(net.now + 1.0)  # let in-flight messages land
    frozen = {i: net.height_of(i) for i in minority}
    start_majority = net.height_of(2)
    net.run(net.now + 15.0)
    assert {i: net.height_of(i) for i in minority} == frozen  # no quorum, no commit
    assert net.height_of(2) >= start_majority + 3  # the majority keeps going
    net.heal()
    target = max(net.height_of(i) for i in majority)
    assert net.run_until_height(target + 1, max_time=net.now + 60)
    assert net.agreement()
    _ledger_consistent(net, list(range(7)))


def test_crash_restart_from_sqlite_never_double_signs_or_loses_blocks(tmp_path: Path) -> None:
    rng = random.Random(5)
    net = SimNetwork(4, seed=5, link=LinkModel(drop=0.02), store_dir=tmp_path)
    net.start()
    net.load(rate=8.0, until=1e9)
    lost_blocks = []
    for _ in range(12):
        victim = rng.randrange(4)
        net.run(net.now + rng.uniform(0.1, 2.0))
        before = net.height_of(victim)
        net.crash(victim, lose_outbox=rng.random() < 0.5)
        net.run(net.now + rng.uniform(0.05, 1.0))
        net.restart(victim)
        if net.height_of(victim) < before:
            lost_blocks.append((victim, before, net.height_of(victim)))
    assert lost_blocks == []
    assert net.run_until_height(max(net.height_of(i) for i in range(4)) + 2, max_time=net.now + 60)
    assert net.double_signs == 0
    assert net.agreement()
    # the file alone holds every committed block with a verifying certificate
    store = Store(tmp_path / "node0.sqlite")
    eng = net.nodes[0].engine
    assert eng is not None
    for h in range(1, eng.height + 1):
        row = store.block(net.session_id, h)
        assert row is not None, h
        assert Block.decode(row[0]).hash == net.nodes[1].chain.get(h, Block.decode(row[0]).hash)
    store.close()


def test_late_joiner_catches_up_by_snapshot() -> None:
    net = SimNetwork(4, seed=21, link=LinkModel(drop=0.01))
    net.start([0, 1, 2])
    net.load(rate=10.0, until=1e9, nodes=[0, 1, 2])
    assert net.run_until_height(20, max_time=60, nodes=[0, 1, 2])
    net.start([3])
    assert net.run_until_height(net.height_of(0), max_time=net.now + 30, nodes=[3])
    assert net.nodes[3].snapshot_installs >= 1
    joiner = net.nodes[3].engine
    assert joiner is not None and joiner.stats["snapshots_installed"] >= 1
    net.run_until_height(net.height_of(0) + 2, max_time=net.now + 30)
    assert net.agreement()
    _ledger_consistent(net, [0, 1, 2, 3])


@pytest.mark.parametrize("seed", [3, 43, 70, 86, 101, 144])
def test_random_fault_schedule_keeps_safety_and_recovers(seed: int, tmp_path: Path) -> None:
    """A few seeds of the sweep harness (the full ≥200-seed sweep runs from the CLI)."""
    result = run_random_scenario(seed, tmp_path)
    assert result.agreement and result.valid and result.double_signs == 0, result
    assert result.live, result


def test_store_keeps_bounded_blocks_and_restart_resumes_from_snapshot(tmp_path: Path) -> None:
    config = EngineConfig(snapshot_interval=4, keep_blocks=3)
    net = SimNetwork(4, seed=9, store_dir=tmp_path, config=config)
    net.start()
    net.load(rate=10.0, until=1e9)
    assert net.run_until_height(14, max_time=60)
    store = Store(tmp_path / "node2.sqlite")
    snap = store.latest_snapshot(net.session_id)
    assert snap is not None and snap[0] >= 12
    assert store.block(net.session_id, 1) is None  # pruned
    assert store.block(net.session_id, snap[0] - 3) is not None
    store.close()
    before = net.nodes[2].engine
    assert before is not None
    height, state_hash = before.height, before.state_hash
    net.crash(2)
    net.restart(2)
    after = net.nodes[2].engine
    assert after is not None and after.height == height and after.state_hash == state_hash
    assert after.stats["recovered_blocks"] == height - snap[0]
