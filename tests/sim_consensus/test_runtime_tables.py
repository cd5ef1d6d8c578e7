"""Tables formed at runtime over the loopback air (virtual clock, deterministic by seed):
8 nodes each sitting down at a random time end at one table with one history; a crashed
validator is removed by the others; a table that lost its quorum pauses and resumes."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ble_bridge.air.clock import run_virtual
from ble_bridge.air.faults import FaultPlan, Heal, Partition
from ble_bridge.air.network import Network
from ble_bridge.air.profiles import PI_TUNED
from ble_bridge.air.topology import full
from ble_bridge.bridge import SessionHealth
from ble_bridge.sim.runtime import SIM_TABLES, Bettor, ChurnLog, RuntimeNode, runtime_node_factory
from ble_bridge.tables.errors import TableError
from ble_bridge.wire.messages import (
    CompactProposal,
    JoinRequest,
    MessageError,
    Proposal,
    decode_message,
    encode_message,
)

pytestmark = pytest.mark.timeout(600)


def nodes(net: Network) -> list[RuntimeNode]:
    return [n for n in net.nodes if isinstance(n, RuntimeNode)]


async def bet_loop(net: Network, bettor: Bettor, until: float) -> None:
    while net.now < until:
        for n in nodes(net):
            bettor.play(n)
        await asyncio.sleep(2.0)


@pytest.mark.parametrize("seed", [1, 2])
def test_eight_nodes_sitting_down_at_random_times_end_at_one_table(seed: int) -> None:
    log = ChurnLog()

    async def main() -> tuple[list[RuntimeNode], Bettor]:
        net = Network(full(8), PI_TUNED, runtime_node_factory(log), seed=seed, trace=False)
        await net.start()
        rng = random.Random(seed)
        t0 = net.now

        def sit(i: int) -> None:
            node = net.nodes[i]
            assert isinstance(node, RuntimeNode)
            try:
                node.tables.sit("party")
            except TableError as exc:  # e.g. the table it heard is full for a moment
                net.loop.call_later(3.0, sit, i)
                assert exc.reason in ("table_full", "join_pending"), exc

        for i in range(8):
            net.loop.call_at(t0 + rng.uniform(0.5, 25.0), sit, i)
        bettor = Bettor()
        await asyncio.sleep(30.0)
        await bet_loop(net, bettor, t0 + 120.0)
        out = nodes(net)
        await net.stop()
        return out, bettor

    ns, bettor = run_virtual(main(), seed=seed)
    ids = {sid for n in ns for sid in n.tables.tables}
    assert len(ids) == 1, f"{len(ids)} tables at the end"
    [sid] = ids
    seated = [n for n in ns if n.bridge.engine(sid).is_validator]
    assert len(seated) == 8
    sets = {n.bridge.engine(sid).validators for n in ns}
    assert len(sets) == 1 and len(next(iter(sets))) == 8
    assert log.agreement(sid)
    heights = [n.bridge.engine(sid).height for n in ns]
    assert max(heights) - min(heights) <= 1 and min(heights) > 8
    assert bettor.placed > 10
    # one history: every node's rolls are the same prefix of the longest
    rolls = sorted((n.bridge.engine(sid).state.history for n in ns), key=len)
    assert all(r == rolls[-1][: len(r)] for r in rolls) and rolls[0]


async def seat(net: Network, node: RuntimeNode, name: str) -> None:
    """Join ``name`` as soon as it is heard; wait until seated."""
    end = net.now + 60.0
    while not node.tables.directory.find(net.now, name):
        assert net.now < end, "table never heard"
        await asyncio.sleep(0.5)
    node.tables.join(name)
    while not any(node.bridge.engine(sid).is_validator for sid in node.tables.tables):
        assert net.now < end, "never seated"
        await asyncio.sleep(0.5)


def table_of(ns: list[RuntimeNode]) -> bytes:
    [sid] = {sid for n in ns for sid in n.tables.tables}
    return sid


def test_a_crashed_validator_is_removed_and_the_table_goes_on() -> None:
    log = ChurnLog()
    tables = dataclasses.replace(SIM_TABLES, silence_heights=12)

    async def main() -> dict[str, object]:
        net = Network(
            full(5), PI_TUNED, runtime_node_factory(log, tables=tables), seed=3, trace=False
        )
        await net.start()
        ns = nodes(net)
        ns[0].tables.open("felt")
        for n in ns[1:]:
            await seat(net, n, "felt")
        bettor = Bettor()
        await bet_loop(net, bettor, net.now + 20.0)
        sid = table_of(ns)
        before = ns[0].bridge.engine(sid).validators
        crashed = ns[4].identity.signing_public
        await net.stop_node(4, crash=True)
        at = ns[0].bridge.engine(sid).height
        await bet_loop(net, bettor, net.now + 120.0)
        alive = ns[:4]
        out = {
            "before": before,
            "after": {n.bridge.engine(sid).validators for n in alive},
            "crashed": crashed,
            "heights": (at, [n.bridge.engine(sid).height for n in alive]),
            "agree": log.agreement(sid),
        }
        await net.stop()
        return out

    r = run_virtual(main(), seed=3)
    assert len(r["before"]) == 5  # type: ignore[arg-type]
    after = r["after"]
    assert isinstance(after, set) and len(after) == 1
    [keys] = after
    assert len(keys) == 4 and r["crashed"] not in keys
    at, heights = r["heights"]  # type: ignore[misc]
    assert min(heights) > at + 12  # removed, and the table kept committing after
    assert r["agree"]


def test_quorum_loss_pauses_the_table_and_healing_resumes_it(tmp_path: Path) -> None:
    log = ChurnLog()

    async def main() -> dict[str, object]:
        net = Network(
            full(4), PI_TUNED, runtime_node_factory(log, store_dir=tmp_path), seed=5, trace=False
        )
        await net.start()
        ns = nodes(net)
        ns[0].tables.open("felt")
        for n in ns[1:]:
            await seat(net, n, "felt")
        bettor = Bettor()
        await bet_loop(net, bettor, net.now + 10.0)
        sid = table_of(ns)
        net.air.partition([(0, 1), (2, 3)])  # 2 of 4: no side holds a quorum of 3
        await asyncio.sleep(20.0)
        paused_at = ns[0].bridge.engine(sid).height
        await bet_loop(net, bettor, net.now + 20.0)
        paused = {
            "heights": [n.bridge.engine(sid).height for n in ns],
            "health": {n.bridge.health(sid) for n in ns},
            "status": {s["health"] for n in ns for s in n.status()["sessions"]},
            "led": {n.health().value for n in ns},
        }
        net.air.heal()
        await bet_loop(net, bettor, net.now + 40.0)
        out = {
            "paused_at": paused_at,
            "paused": paused,
            "resumed": [n.bridge.engine(sid).height for n in ns],
            "health": {n.bridge.health(sid) for n in ns},
            "agree": log.agreement(sid),
            "validators": len(ns[0].bridge.engine(sid).validators),
        }
        await net.stop()
        return out

    r = run_virtual(main(), seed=5)
    paused = r["paused"]
    assert isinstance(paused, dict)
    assert r["validators"] == 4
    assert max(paused["heights"]) <= r["paused_at"] + 1  # type: ignore[operator]
    assert paused["health"] == {SessionHealth.PARTITIONED}
    assert paused["status"] == {"partitioned"} and paused["led"] == {"partitioned"}
    resumed = r["resumed"]
    assert isinstance(resumed, list) and min(resumed) > max(paused["heights"]) + 3
    assert r["health"] == {SessionHealth.ACTIVE}
    assert r["agree"]


def test_a_full_table_refuses_a_join_and_a_replayed_join_request_changes_nothing() -> None:
    log = ChurnLog()

    async def main() -> dict[str, object]:
        net = Network(full(4), PI_TUNED, runtime_node_factory(log), seed=7, trace=False)
        await net.start()
        ns = nodes(net)
        ns[0].tables.open("duo", seats=2)
        await seat(net, ns[1], "duo")
        sid = table_of(ns[:2])
        end = net.now + 30.0
        while ns[2].tables.directory.get(sid) is None or (
            ns[2].tables.directory.get(sid).announce.seats_taken < 2  # type: ignore[union-attr]
        ):
            assert net.now < end
            await asyncio.sleep(0.5)
        try:
            ns[2].tables.join("duo")
            full_reason = ""
        except TableError as exc:
            full_reason = exc.reason
        # node 1 leaves; its old join request, replayed by anyone, must not seat it again
        e0 = ns[0].bridge.engine(sid)
        ns[1].tables.leave("duo")
        while ns[1].identity.signing_public in e0.validators:
            await asyncio.sleep(0.5)
        replay = ns[1].bridge.engine(sid).join_nonce(ns[1].identity.signing_public)
        req = JoinRequest.create(
            ns[1].identity.sign, ns[1].identity.signing_public, sid, replay, 1000
        )
        await asyncio.sleep(35.0)  # past the bridge's dedup: the engine itself must refuse it
        for _ in range(3):
            ns[0].bridge.receive_payload(encode_message(sid, req), ns[1].identity.signing_public)
            await asyncio.sleep(3.0)
        out = {
            "full": full_reason,
            "validators": e0.validators,
            "replayed": e0.stats["drop_join_replayed"],
        }
        await net.stop()
        return out

    r = run_virtual(main(), seed=7)
    assert r["full"] == "table_full"
    assert isinstance(r["validators"], tuple) and len(r["validators"]) == 1
    assert isinstance(r["replayed"], int) and r["replayed"] >= 1


def lose_far_proposals(node: RuntimeNode) -> Counter[str]:
    """The node's radio loses every proposal of a height beyond the one after its next.
    Such a proposal's only use to a node that far behind is the height it names (it cannot
    check its signature yet), so losing them leaves the node with what its bridge vouches
    for: announcements and answers to its requests."""
    bridge = node.bridge

    def lossy(payload: bytes, sender: bytes | None) -> bool:
        try:
            sid, msg = decode_message(payload, bridge.config.engine.limits)
        except MessageError:
            return True
        far = isinstance(msg, Proposal | CompactProposal) and sid in bridge.sessions
        if far and msg.height > bridge.engine(sid).height + 2:  # type: ignore[union-attr]
            lost["proposals"] += 1
            return False
        return True

    lost: Counter[str] = Counter()
    bridge.core.taps.append(lossy)  # the core's inbound tap
    return lost


def test_a_joiner_catches_up_from_genesis_after_the_opener_left() -> None:
    """The opener (the only genesis validator) leaves. Then a node's join request reaches
    the table (relayed) while the node itself is out of range, and is committed; when it
    comes back the table is idle. It knows only the genesis set, so every announcement it
    hears is from a key it cannot place yet: it must still follow the chain from genesis
    (each certificate against its own height's set) and take its seat."""
    log = ChurnLog()

    async def main() -> dict[str, object]:
        net = Network(full(5), PI_TUNED, runtime_node_factory(log), seed=11, trace=False)
        await net.start()
        ns = nodes(net)
        ns[0].tables.open("felt")
        for n in ns[1:4]:
            await seat(net, n, "felt")
        bettor = Bettor()
        await bet_loop(net, bettor, net.now + 15.0)
        sid = table_of(ns[:4])
        opener, joiner = ns[0].identity.signing_public, ns[4].identity.signing_public
        ns[0].tables.leave("felt")
        e1 = ns[1].bridge.engine(sid)
        end = net.now + 60.0
        while opener in e1.validators:
            assert net.now < end, "the opener never left"
            await asyncio.sleep(0.5)
        await net.stop_node(0, crash=False)
        await bet_loop(net, bettor, net.now + 20.0)
        while ns[4].tables.directory.get(sid) is None:
            assert net.now < end + 60.0, "node 4 never heard the table"
            await asyncio.sleep(0.5)
        lost = lose_far_proposals(ns[4])
        net.air.partition([(1, 2, 3), (4,)])
        await asyncio.sleep(5.0)
        ns[4].tables.join("felt")  # its own request is lost: it is out of range
        nonce = ns[4].tables.tables[sid].join_nonce
        req = JoinRequest.create(ns[4].identity.sign, joiner, sid, nonce, 0)
        ns[1].bridge.receive_payload(encode_message(sid, req), ns[4].identity.signing_public)
        end = net.now + 60.0
        while joiner not in e1.validators:
            assert net.now < end, "the relayed join was never committed"
            await asyncio.sleep(0.5)
        await asyncio.sleep(10.0)
        added_at = e1.height
        net.air.heal()
        e4 = ns[4].bridge.engine(sid)
        end = net.now + 90.0
        while net.now < end and (not e4.is_validator or e4.height < e1.height):
            await asyncio.sleep(1.0)
        caught_up = (e4.is_validator, e4.height, e1.height)
        await bet_loop(net, bettor, net.now + 20.0)  # and it plays on with the others
        out = {
            "added_at": added_at,
            "caught_up": caught_up,
            "sets": {n.bridge.engine(sid).validators for n in ns[1:]},
            "heights": [n.bridge.engine(sid).height for n in ns[1:]],
            "agree": log.agreement(sid),
            "strangers": ns[4].bridge.counters["announce_stranger"],
            "lost": lost["proposals"],
        }
        await net.stop()
        return out

    r = run_virtual(main(), seed=11)
    caught_up = r["caught_up"]
    assert isinstance(caught_up, tuple)
    assert caught_up[0] and caught_up[1] >= caught_up[2], caught_up
    sets = r["sets"]
    assert isinstance(sets, set) and len(sets) == 1
    [keys] = sets
    assert len(keys) == 4
    heights = r["heights"]
    assert isinstance(heights, list) and max(heights) - min(heights) <= 1
    assert min(heights) > r["added_at"]  # type: ignore[operator]
    assert r["agree"]
    assert isinstance(r["strangers"], int) and r["strangers"] > 0
    assert isinstance(r["lost"], int) and r["lost"] > 0  # the fault was there


def test_two_tables_of_one_name_formed_across_a_partition_merge_into_the_older() -> None:
    """Each side of a partition sits down at "party" (none heard: each opens one, and two
    more sit at each). After the heal both are heard: the younger table's people commit
    their leaves one by one and join the older one; everyone ends at one table."""
    log = ChurnLog()
    plan = FaultPlan((Partition(0.1, ((0, 1, 2), (3, 4, 5))), Heal(25.0)))

    async def main() -> tuple[list[RuntimeNode], dict[int, Counter[str]]]:
        net = Network(
            full(6), PI_TUNED, runtime_node_factory(log), seed=5, faults=plan, trace=False
        )
        await net.start()
        t0 = net.now

        def sit(i: int) -> None:
            node = net.nodes[i]
            assert isinstance(node, RuntimeNode)
            node.tables.sit("party")

        for i, at in enumerate((1.0, 5.0, 7.0, 2.0, 6.0, 8.0)):
            net.loop.call_at(t0 + at, sit, i)
        bettor = Bettor()
        await bet_loop(net, bettor, t0 + 24.0)
        ns = nodes(net)
        split = {
            sid
            for n in ns
            for sid in n.tables.tables
            if n.bridge.engine(sid).is_validator and len(n.bridge.engine(sid).validators) == 3
        }
        assert len(split) == 2, "each side should have formed its own table of three"
        await bet_loop(net, bettor, t0 + 120.0)
        out = nodes(net)
        counters = {n.index: n.tables.counters for n in out}
        await net.stop()
        return out, counters

    ns, counters = run_virtual(main(), seed=5)
    ids = {sid for n in ns for sid in n.tables.tables}
    assert len(ids) == 1, f"{len(ids)} tables at the end"
    [sid] = ids
    assert all(n.bridge.engine(sid).is_validator for n in ns)
    assert len({n.bridge.engine(sid).validators for n in ns}) == 1
    assert log.agreement(sid)
    assert sum(c["table_move_leaves"] for c in counters.values()) >= 2  # committed leaves


def test_leaving_while_the_join_is_on_its_way_leaves_no_seat_behind() -> None:
    """`table leave` right after `table join`: nothing to commit yet, so the person is told
    they left, and the node stops asking; when the request it already sent still seats it,
    it commits its leave at once. No silence or probation removal here (both off), so a
    seat left behind would stay: before the fix it did."""
    log = ChurnLog()
    tables = dataclasses.replace(SIM_TABLES, silence_heights=0, probation_heights=0)

    async def main() -> dict[str, Any]:
        net = Network(
            full(3), PI_TUNED, runtime_node_factory(log, tables=tables), seed=11, trace=False
        )
        await net.start()
        ns = nodes(net)
        ns[0].tables.open("felt")
        await seat(net, ns[1], "felt")
        sid = table_of(ns[:2])
        bettor = Bettor()
        end = net.now + 30.0
        while not ns[2].tables.directory.find(net.now, "felt"):
            assert net.now < end
            await asyncio.sleep(0.5)
        ns[2].tables.join("felt")
        await asyncio.sleep(0.2)  # the request is out; not seated yet
        assert not ns[2].bridge.engine(sid).is_validator
        reply = ns[2].tables.leave("felt")
        listed = [r for r in ns[2].tables.listing() if r.get("here")]
        await bet_loop(net, bettor, net.now + 60.0)
        e0 = ns[0].bridge.engine(sid)
        out = {
            "reply": reply,
            "listed": listed,
            "validators": e0.validators,
            "me": ns[2].identity.signing_public,
            "follows": sid in ns[2].bridge.sessions,
            "counters": ns[2].tables.counters,
            "heights": e0.height,
        }
        await net.stop()
        return out

    r = run_virtual(main(), seed=11)
    assert r["reply"]["left"] is True and r["listed"] == []
    assert r["me"] not in r["validators"] and len(r["validators"]) == 2
    assert not r["follows"]  # the grace is over: the table is forgotten
    assert r["counters"]["joins_withdrawn"] == 1
    assert r["counters"]["withdraw_leaves"] == 1  # the join landed, the seat was given back
    assert r["heights"] > 20
