"""BridgeCore alone and several cores joined by CoreNet (actions moved into inputs): no
event loop, no air, an explicit ``now`` (ms steps where it matters)."""

from __future__ import annotations

import random

import pytest

from ble_bridge.bridge import BridgeConfig, BridgeCore, OperationStatus, SessionHealth
from ble_bridge.bridge.core import BlockCommitted, Flood, HealthChanged, OperationFinished
from ble_bridge.bridge.policy import MeshView
from ble_bridge.bridge.testing import CoreNet
from ble_bridge.consensus.testing import UNIT_SESSION, add_op, unit_engines, unit_identities
from ble_bridge.sim.byzantine import Behaviour, ByzantineFilter
from ble_bridge.wire.messages import StateAnnounce, encode_message

MS = 0.001


def lone_core(n: int = 4) -> BridgeCore:
    """Core 0 of an ``n``-validator session, nobody else running."""
    ident = unit_identities(n)[0]
    core = BridgeCore(ident.signing_public, ident.peer_id, BridgeConfig())
    core.open_session(0.0, unit_engines(n)[0])
    return core


def run_until(core: BridgeCore, until: float) -> int:
    """Fire the core's timer whenever it asks, up to ``until``; how many times."""
    fired = 0
    while (at := core.next_timer()) is not None and at <= until:
        core.handle_timer(at)
        fired += 1
    return fired


def announce_from(k: int, height: int) -> tuple[bytes, bytes]:
    key = unit_identities(4)[k].signing_public
    return encode_message(UNIT_SESSION, StateAnnounce(height, bytes(32), bytes(32))), key


def test_next_timer_follows_every_input_and_handle_timer_runs_what_is_due() -> None:
    core = lone_core()
    assert core.next_timer() is None  # not started: nothing to wait for
    core.start(0.0)
    cfg = core.config
    first = core.next_timer()
    assert first is not None and first <= cfg.tick_interval
    assert run_until(core, 999 * MS) >= 3  # ticks at 250, 500, 750 ms
    # an inbound message: the drain is due at once
    payload, key = announce_from(1, 1)
    assert core.receive_payload(1000 * MS, payload, key)
    assert core.next_timer() == 1000 * MS
    assert len(core.sessions[UNIT_SESSION].inbox) == 1
    core.handle_timer(1000 * MS, MeshView(core.peer_id, {}, frozenset(), {}))
    assert len(core.sessions[UNIT_SESSION].inbox) == 0
    assert core.counters["messages_processed"] == 1
    after = core.next_timer()
    assert after is not None and after > 1000 * MS
    # a duplicate (same sender, same second) is refused and counted: no drain is due
    assert not core.receive_payload(1001 * MS, payload, key)
    assert core.drops["duplicate"] == 1
    assert core.next_timer() == after
    # the tick runs every tick_interval: 4 s of timers make about 16 ticks
    now = 1000 * MS
    ticks = 0
    while now < 5.0:
        at = core.next_timer()
        assert at is not None and at >= now
        now = at
        before = core.counters["announcements"] + core.counters["heartbeats"]
        core.handle_timer(now)
        ticks += 1
        assert core.counters["announcements"] + core.counters["heartbeats"] >= before
    assert core.counters["announcements"] >= 1  # our own state, at least once
    assert any(isinstance(a, Flood) for a in core.actions())
    assert ticks >= 16
    core.stop()
    assert core.next_timer() is None


def test_a_timer_called_early_does_nothing_that_is_not_due() -> None:
    core = lone_core()
    core.start(0.0)
    payload, key = announce_from(2, 1)
    core.receive_payload(0.0, payload, key)
    core.handle_timer(0.0)
    processed = core.counters["messages_processed"]
    at = core.next_timer()
    assert at is not None and at > 0.0
    core.handle_timer(at - 1 * MS)  # too early: the tick and the engine wait
    assert core.counters["messages_processed"] == processed
    assert core.next_timer() == at


def test_four_cores_commit_an_operation_each_and_agree() -> None:
    net = CoreNet(4)
    net.start()
    ids = [net.cores[k].submit(net.now, UNIT_SESSION, add_op(k + 1)) for k in range(4)]
    net.run(10.0)
    heights = [net.height(i) for i in range(4)]
    assert min(heights) >= 1
    for k, pid in enumerate(ids):
        op = net.cores[k].operation(pid)
        assert op is not None and op.status is OperationStatus.COMMITTED
        finished = [e for e in net.events[k] if isinstance(e, OperationFinished)]
        assert [e.op.proposal_id for e in finished] == [pid]
    committed = [[e for e in ev if isinstance(e, BlockCommitted)] for ev in net.events]
    assert all(committed)
    h = min(heights)
    hashes = {next(e.committed.block.hash for e in c if e.committed.height == h) for c in committed}
    assert len(hashes) == 1  # one block at that height, everywhere
    assert sum(net.engines[0].state.total_of(i.signing_public) for i in net.identities) == 10
    assert net.sent["neighbour_frames"] > 0  # gossip, not floods alone


def test_a_partition_changes_health_and_healing_restores_it() -> None:
    net = CoreNet(4)
    net.start()
    net.run(5.0)
    assert all(c.sessions[UNIT_SESSION].health is SessionHealth.ACTIVE for c in net.cores)
    net.cut({0})
    timeout = net.cores[0].config.contact_timeout
    net.run(5.0 + timeout + 2.0)
    alone = net.cores[0].sessions[UNIT_SESSION]
    assert alone.health is SessionHealth.PARTITIONED
    changes = [e for e in net.events[0] if isinstance(e, HealthChanged)]
    assert changes[-1].health is SessionHealth.PARTITIONED and changes[-1].in_contact == 1
    # three of four are a quorum: they stay active and go on committing
    assert all(
        net.cores[i].sessions[UNIT_SESSION].health is SessionHealth.ACTIVE for i in (1, 2, 3)
    )
    net.cores[1].submit(net.now, UNIT_SESSION, add_op(5))
    stuck = net.height(0)
    net.run(net.now + 5.0)
    assert min(net.height(i) for i in (1, 2, 3)) > stuck == net.height(0)
    net.heal()
    net.run(net.now + 10.0)
    assert alone.health is SessionHealth.ACTIVE
    healed = [e for e in net.events[0] if isinstance(e, HealthChanged)][-1]
    assert healed.health is SessionHealth.ACTIVE
    assert net.height(0) >= min(net.height(i) for i in (1, 2, 3)) - 1  # caught up


@pytest.mark.parametrize(
    "behaviour", [Behaviour.EQUIVOCATE, Behaviour.FORGE, Behaviour.GARBAGE, Behaviour.WITHHOLD]
)
def test_a_byzantine_output_filter_is_tolerated(behaviour: Behaviour) -> None:
    liar = ByzantineFilter(unit_identities(4)[3], behaviour, random.Random(3))
    net = CoreNet(4, filters={3: liar})
    net.start()
    ids = [net.cores[k].submit(net.now, UNIT_SESSION, add_op(k + 1)) for k in range(3)]
    net.run(15.0)
    assert liar.lies > 0
    honest = range(3)
    h = min(net.height(i) for i in honest)
    assert h >= 1
    blocks = {
        i: {
            e.committed.height: e.committed.block.hash
            for e in net.events[i]
            if isinstance(e, BlockCommitted)
        }
        for i in honest
    }
    for height in range(1, h + 1):
        assert len({blocks[i][height] for i in honest}) == 1  # agreement
    for k, pid in enumerate(ids):  # validity and liveness: every honest op committed
        op = net.cores[k].operation(pid)
        assert op is not None and op.status is OperationStatus.COMMITTED


def test_only_the_service_imports_asyncio() -> None:
    import ast
    from pathlib import Path

    import ble_bridge.bridge

    root = Path(ble_bridge.bridge.__file__).parent
    users = set()
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n.split(".")[0] == "asyncio" for n in names):
                users.add(path.name)
    assert users == {"service.py"}
