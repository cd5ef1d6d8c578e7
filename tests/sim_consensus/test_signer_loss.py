"""A node that loses its database, its signer-state file or both never signs twice.

Real SQLite files and signer files on a virtual clock (``SimNetwork(signer_files=True)``):
the network records every signature any honest node emits — also those lost in a crash on
the way out — per (validator, height, round, step) and counts two different ones as a
double sign. The restarted node must come back: catch up, sign again, commit.
"""

from __future__ import annotations

import os
import random
import sqlite3
from pathlib import Path

import pytest

from ble_bridge.consensus.testing import SimNetwork, add_op
from ble_bridge.signer import SignerFile


def _checkpoint(path: Path) -> None:
    """What the crashed process left, as it would be on disk after a checkpoint."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def damage(path: Path, how: str, seed: int) -> None:
    if how == "lost":
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        return
    _checkpoint(path)
    data = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2 + 100])
    elif how == "random":
        path.write_bytes(random.Random(seed).randbytes(len(data)))
    else:  # pragma: no cover
        raise ValueError(how)


def signed_here(net: SimNetwork, i: int) -> bool:
    eng = net.nodes[i].engine
    floor = None if eng is None else eng._signed_floor
    return eng is not None and floor is not None and floor[0] == eng.height + 1


def crash_after_signing(net: SimNetwork, i: int, lose_outbox: bool) -> int:
    """Submit work, run until node ``i`` signed at the height in progress, crash it there;
    returns that height."""
    net.submit(0, add_op(7))
    deadline = net.now + 30
    while net.now < deadline and not signed_here(net, i):
        net.run(net.now + 0.005)
    assert signed_here(net, i)
    eng = net.nodes[i].engine
    assert eng is not None
    h = eng.height + 1
    net.crash(i, lose_outbox=lose_outbox)
    return h


CASES = [
    # (validators, what happens to the database, signer file kept)
    (3, "lost", False),  # a 3-of-3 table whose node lost everything
    (3, "empty", False),
    (3, "truncated", True),
    (3, "random", True),
    (3, "empty", True),
    (4, "truncated", False),
    (4, "random", False),
    (4, "lost", True),
]


@pytest.mark.parametrize(("n", "how", "keep_signer"), CASES)
@pytest.mark.parametrize("lose_outbox", [True, False])
def test_restart_after_losing_state_never_double_signs(
    tmp_path: Path, n: int, how: str, keep_signer: bool, lose_outbox: bool
) -> None:
    seed = 11 + n
    net = SimNetwork(n, seed=seed, store_dir=tmp_path, signer_files=True)
    net.start()
    for k in range(3):
        net.submit(k % n, add_op(1 + k))
        assert net.run_until_height(k + 1, max_time=net.now + 30)
    victim = n - 1
    stuck = crash_after_signing(net, victim, lose_outbox)
    node = net.nodes[victim]
    assert node.store_path is not None and node.signer_path is not None
    damage(node.store_path, how, seed)
    if not keep_signer:
        node.signer_path.unlink()
    net.run(net.now + 2.0)  # the others go on (n=4) or wait for it (n=3)
    net.restart(victim)
    eng = node.engine
    assert eng is not None and eng.catching_up_signer is not None
    if how != "lost":
        assert any("moved to" in note for note in node.notes), node.notes
        assert list(tmp_path.glob(f"node{victim}.sqlite.broken-*"))
    # the height it may have signed at finishes, and the node comes back and signs again
    target = max(stuck, net.height_of(0)) + 2
    for k in range(2):
        net.submit(k % (n - 1), add_op(20 + k))
    assert net.run_until_height(stuck, max_time=net.now + 120), [net.height_of(j) for j in range(n)]
    net.load(2.0, until=net.now + 20)  # play on: the others' votes are what it watches
    deadline = net.now + 20
    while net.now < deadline and (eng := node.engine) is not None and eng.catching_up_signer:
        net.run(net.now + 0.1)
    net.run(net.now + 5)
    assert net.run_until_height(target, max_time=net.now + 120)
    assert net.double_signs == 0
    assert net.agreement()
    eng = node.engine
    assert eng is not None and eng.catching_up_signer is None
    assert eng.stats["signer_caught_up"] == 1
    assert eng.stats["sign_refused_catching_up"] >= 0
    assert any(key[0] == victim and key[1] > stuck for key in net.signed), "never signed again"


def test_without_signer_state_the_old_behaviour_would_double_sign(tmp_path: Path) -> None:
    """The control: the same loss without the guard (no signer file, no catch-up) makes a
    different vote at a round the node had already signed in — the test can fail."""
    seed = 14
    net = SimNetwork(3, seed=seed, store_dir=tmp_path, signer_files=False)
    net.start()
    for k in range(3):
        net.submit(k % 3, add_op(1 + k))
        assert net.run_until_height(k + 1, max_time=net.now + 30)
    crash_after_signing(net, 2, lose_outbox=True)
    node = net.nodes[2]
    assert node.store_path is not None
    damage(node.store_path, "lost", seed)
    net.restart(2)
    net.submit(2, add_op(99))  # a different block of its own to propose or vote for
    net.run(net.now + 60)
    assert net.double_signs > 0


def test_signer_file_of_another_key_is_refused(tmp_path: Path) -> None:
    net = SimNetwork(3, seed=3, store_dir=tmp_path, signer_files=True)
    other = tmp_path / "node0.signer"
    mine = tmp_path / "node1.signer"
    os.replace(other, mine)  # node 1 finds node 0's file
    from ble_bridge.signer import ForeignSignerFile

    with pytest.raises(ForeignSignerFile):
        net.start([1])
    assert SignerFile.open(mine, net.nodes[0].key, durable=False).floor(net.session_id) is None


@pytest.mark.parametrize("n", [3, 4])
def test_signer_file_restored_from_an_old_backup_is_caught_by_the_database(
    tmp_path: Path, n: int
) -> None:
    """The file is valid and ours but older than what the database says this key signed
    (a restored backup): the node does not trust it, catches up first, never signs twice."""
    net = SimNetwork(n, seed=5, store_dir=tmp_path, signer_files=True)
    net.start()
    net.submit(0, add_op(1))
    assert net.run_until_height(1, max_time=net.now + 30)
    victim = n - 1
    node = net.nodes[victim]
    assert node.signer_path is not None
    backup = node.signer_path.read_bytes()
    for k in range(3):
        net.submit(k % n, add_op(2 + k))
        assert net.run_until_height(2 + k, max_time=net.now + 30)
    stuck = crash_after_signing(net, victim, lose_outbox=True)
    node.signer_path.write_bytes(backup)
    net.restart(victim)
    eng = node.engine
    assert eng is not None and eng.catching_up_signer is not None
    assert "above its signer state" in eng.catching_up_signer
    net.load(2.0, until=net.now + 20)
    assert net.run_until_height(stuck + 2, max_time=net.now + 120)
    assert net.double_signs == 0 and net.agreement()


def test_own_vote_on_the_air_above_the_floor_means_catch_up_first(tmp_path: Path) -> None:
    """The key signing elsewhere (or a forgotten vote surfacing): a verified vote of our own
    key above what the signer file holds stops signing and raises the floor durably."""
    from ble_bridge.wire.messages import Step, Vote

    net = SimNetwork(4, seed=8, store_dir=tmp_path, signer_files=True)
    net.start()
    net.submit(0, add_op(1))
    assert net.run_until_height(1, max_time=net.now + 30)
    node = net.nodes[3]
    eng = node.engine
    assert eng is not None and eng.catching_up_signer is None
    h = eng.height + 1
    twin = Vote.create(
        node.identity.sign, node.key, net.session_id, Step.PREVOTE, h, 5, b"\x07" * 32
    )
    eng.receive(net.now, twin)
    assert eng.catching_up_signer is not None and "height" in eng.catching_up_signer
    assert eng._signed_floor is not None and eng._signed_floor >= (h, 5, int(Step.PREVOTE))
    assert node.signer_path is not None
    floor = SignerFile.open(node.signer_path, node.key, durable=False).floor(net.session_id)
    assert floor is not None and floor.key >= (h, 5, int(Step.PREVOTE))
    net.signed[(3, h, 5, int(Step.PREVOTE))] = twin.encode()  # count it as ours
    net.load(2.0, until=net.now + 20)
    assert net.run_until_height(h + 2, max_time=net.now + 120)
    assert net.double_signs == 0 and net.agreement()


def test_a_table_whose_every_node_lost_its_signer_file_starts_after_the_idle_wait(
    tmp_path: Path,
) -> None:
    """Nobody votes while everyone catches up: present (announcing) validators and the idle
    wait let them start, above round 0, and the table commits."""
    net = SimNetwork(3, seed=9, store_dir=tmp_path, signer_files=True)
    for node in net.nodes:
        assert node.signer_path is not None
        node.signer_path.unlink()
    net.start()
    assert all(n.engine is not None and n.engine.catching_up_signer for n in net.nodes)
    net.submit(0, add_op(1))
    idle = net.config.signer_catch_up_idle
    assert not net.run_until_height(1, max_time=net.now + idle / 2)
    assert net.run_until_height(1, max_time=net.now + idle + 60)
    assert net.double_signs == 0 and net.agreement()
    assert all(k[2] >= 1 for k in net.signed), "signed in round 0 after a lost state"


@pytest.mark.parametrize("lose_outbox", [True, False])
def test_four_validators_one_down_one_lost_its_state_finish_the_height(
    tmp_path: Path, lose_outbox: bool
) -> None:
    """The two others precommitted and wait without a precommit quorum (no timeout fires);
    the node that lost its state votes only two rounds up, one vote, not f+1 = 2. Once their
    re-broadcasts back off to the cap they follow it there, and the height finishes."""
    net = SimNetwork(4, seed=21, store_dir=tmp_path, signer_files=True)
    net.start()
    for k in range(3):
        net.submit(k % 4, add_op(1 + k))
        assert net.run_until_height(k + 1, max_time=net.now + 30)
    net.crash(3)  # down for good
    stuck = crash_after_signing(net, 2, lose_outbox)
    node = net.nodes[2]
    assert node.store_path is not None and node.signer_path is not None
    damage(node.store_path, "lost", 1)
    node.signer_path.unlink()
    net.restart(2)
    net.load(2.0, until=net.now + 100, nodes=[0, 1, 2])
    assert net.run_until_height(stuck + 1, max_time=net.now + 300, nodes=[0, 1, 2])
    assert net.double_signs == 0 and net.agreement([0, 1, 2])
    followed = sum(
        e.stats["round_followed_when_stuck"] for n in net.nodes[:2] if (e := n.engine) is not None
    )
    assert followed >= 1
