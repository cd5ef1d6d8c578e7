"""NetworkConsensusBridge: pending operations, backpressure, dedup, announcements, cleanup,
partition health, stats, several sessions, and bad input, over real MeshNodes on the air."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable

from bridge_harness import SESSION, BridgeNet, run, session_id
from hypothesis import given, settings
from hypothesis import strategies as st

from ble_bridge.bridge import (
    BridgeConfig,
    BridgeError,
    OperationStatus,
    SessionHealth,
)
from ble_bridge.consensus.testing import add_op
from ble_bridge.wire.identity import Identity
from ble_bridge.wire.messages import (
    Block,
    BlockHeader,
    CommitRequest,
    Operation,
    Proposal,
    SnapshotResponse,
    StateAnnounce,
    Step,
    Vote,
    body_hash,
    encode_message,
    proposal_signing_bytes,
)


def test_submitted_operation_commits_with_a_quorum_of_votes() -> None:
    async def body() -> None:
        net = BridgeNet(4)
        await net.start()
        b = net.bridge(0)
        pid = b.submit_operation(SESSION, add_op(7))
        op = b.operation(pid)
        assert op is not None and op.status is OperationStatus.PENDING
        assert op.required_votes == 3 and op.votes_received == 0
        assert [p.proposal_id for p in b.pending_operations()] == [pid]
        assert await net.until(lambda: op.status is OperationStatus.COMMITTED, 10)
        assert op.votes_received >= op.required_votes
        assert op.latency is not None and op.latency > 0
        stats = b.stats()
        assert stats.committed_operations == 1
        assert stats.pending_operations == 0
        assert stats.rounds_completed >= 1
        assert stats.messages_processed > 0
        assert math.isfinite(stats.latency_p50) and stats.latency_p95 >= stats.latency_p50
        assert await net.until(lambda: all(net.height(i) >= 1 for i in range(4)), 5)
        await net.stop()

    run(body)


def test_unknown_session_submit_is_refused() -> None:
    async def body() -> None:
        net = BridgeNet(4)
        await net.start()
        try:
            net.bridge(0).submit_operation(session_id("nope"), add_op(1))
        except BridgeError as exc:
            assert exc.reason == "unknown_session"
        else:
            raise AssertionError("submit to an unknown session must be refused")
        await net.stop()

    run(body)


def _announce(sid: bytes, height: int) -> bytes:
    return encode_message(sid, StateAnnounce(height, bytes([height % 256]) * 32, bytes(32)))


def test_full_inbox_refuses_with_a_reason_and_never_grows() -> None:
    async def body() -> None:
        net = BridgeNet(4, config=BridgeConfig(inbox_capacity=4))
        await net.start()
        b = net.bridge(0)
        accepted = [b.receive_payload(_announce(SESSION, h)) for h in range(1, 11)]
        assert accepted.count(True) == 4
        assert b.drops["inbox_full"] == 6
        assert b.stats().sessions[SESSION].inbox_depth == 4
        await asyncio.sleep(0.01)  # the drain runs
        assert b.stats().sessions[SESSION].inbox_depth == 0
        assert b.receive_payload(_announce(SESSION, 5))  # refused ones may come again
        await net.stop()

    run(body)


def test_duplicates_are_dropped_until_their_ttl_expires() -> None:
    async def body() -> None:
        cfg = BridgeConfig(dedup_ttl=5.0, dedup_capacity=16, unsigned_repeat_interval=1.0)
        net = BridgeNet(4, config=cfg)
        await net.start()
        b = net.bridge(0)
        other = net.network.identities[1]
        # a vote the engine drops unread (not a validator's: nothing relays it back)
        outsider = Identity.from_seed(b"\x77" * 32)
        vote = encode_message(SESSION, _vote(outsider, 1))
        assert b.receive_payload(vote)
        await asyncio.sleep(2.0)
        assert not b.receive_payload(vote)  # signed: the same message for the whole TTL
        assert not b.receive_payload(vote, other.signing_public)  # whoever relays it
        assert b.drops["duplicate"] == 2
        await asyncio.sleep(5.5)
        assert b.receive_payload(vote)
        # a vote for a height beyond the next (the engine drops it and catches
        # up) is new again once processed: a laggard takes its repeats when it gets there
        early = encode_message(SESSION, _vote(other, b.engine(SESSION).height + 5))
        assert b.receive_payload(early)
        await asyncio.sleep(0.01)  # the drain runs
        assert b.receive_payload(early)
        announce = _announce(SESSION, 3)
        assert b.receive_payload(announce, other.signing_public)
        assert not b.receive_payload(announce, other.signing_public)
        # the same unsigned state from another validator is another announcement
        assert b.receive_payload(announce, net.network.identities[2].signing_public)
        await asyncio.sleep(1.0)  # a repeat after the repeat interval is news again
        assert b.receive_payload(announce, other.signing_public)
        for h in range(100, 200):
            b.receive_payload(_announce(SESSION, h))
        assert len(b.core.seen) <= 16  # bounded LRU
        await net.stop()

    run(body)


def test_state_is_announced_only_when_it_changed_and_idle_slows_the_interval() -> None:
    async def body() -> None:
        cfg = BridgeConfig(heartbeat_interval=0.0, announce_min_interval=1.0)
        net = BridgeNet(4, config=cfg)
        await net.start()
        b = net.bridge(0)
        await asyncio.sleep(60)
        idle_announces = b.counters["announcements"]
        assert idle_announces == 1  # genesis state once, then nothing while unchanged
        assert b.stats().sessions[SESSION].announce_interval == cfg.announce_max_interval
        b.submit_operation(SESSION, add_op(1))
        assert await net.until(lambda: net.height(0) >= 1, 10)
        await asyncio.sleep(cfg.announce_max_interval + 1)
        assert b.counters["announcements"] == idle_announces + 1
        for k in range(2, 6):  # busy: state changes every second
            b.submit_operation(SESSION, add_op(k))
            await asyncio.sleep(1.0)
        assert b.stats().sessions[SESSION].announce_interval < cfg.announce_max_interval
        await net.stop()

    run(body)


def test_heartbeat_announces_when_nothing_else_was_sent() -> None:
    async def body() -> None:
        net = BridgeNet(4, config=BridgeConfig(heartbeat_interval=4.0))
        await net.start()
        await asyncio.sleep(30)
        assert net.bridge(0).counters["heartbeats"] >= 3
        assert net.bridge(0).health(SESSION) is SessionHealth.ACTIVE
        await net.stop()

    run(body)


def test_stale_pending_operations_expire_as_failed() -> None:
    async def body() -> None:
        net = BridgeNet(4, config=BridgeConfig(operation_timeout=5.0))
        await net.start([0])  # alone: no quorum, nothing can commit
        b = net.bridge(0)
        pid = b.submit_operation(SESSION, add_op(3))
        await asyncio.sleep(4.0)
        assert b.stats().failed_operations == 0
        await asyncio.sleep(2.0)
        op = b.operation(pid)
        assert op is not None and op.status is OperationStatus.FAILED
        assert op.reason == "timeout"
        stats = b.stats()
        assert stats.failed_operations == 1 and stats.pending_operations == 0
        await net.stop()

    run(body)


def test_pending_capacity_refuses_submissions() -> None:
    async def body() -> None:
        net = BridgeNet(4, config=BridgeConfig(pending_capacity=3))
        await net.start([0])
        b = net.bridge(0)
        for k in range(3):
            b.submit_operation(SESSION, add_op(k + 1))
        try:
            b.submit_operation(SESSION, add_op(9))
        except BridgeError as exc:
            assert exc.reason == "pending_full"
        else:
            raise AssertionError("a fourth pending operation must be refused")
        assert b.drops["submit_pending_full"] == 1
        await net.stop()

    run(body)


def test_lost_quorum_is_partitioned_and_healing_catches_up() -> None:
    async def body() -> None:
        cfg = BridgeConfig(contact_timeout=5.0, heartbeat_interval=1.0)
        net = BridgeNet(4, config=cfg)
        await net.start()
        await asyncio.sleep(2)
        b0 = net.bridge(0)
        assert b0.is_healthy() and b0.active_participants(SESSION) == 4
        net.network.air.partition([[0], [1, 2, 3]])
        for k in range(5):
            net.bridge(1).submit_operation(SESSION, add_op(k + 1))
            await asyncio.sleep(1.0)
        assert await net.until(lambda: b0.health(SESSION) is SessionHealth.PARTITIONED, 10)
        assert not b0.is_healthy()
        assert b0.stats().sessions[SESSION].active_participants == 1
        assert net.height(1) >= 1 and net.height(0) == 0
        assert net.bridge(1).health(SESSION) is SessionHealth.ACTIVE  # majority keeps quorum
        net.network.air.heal()
        assert await net.until(lambda: b0.health(SESSION) is SessionHealth.ACTIVE, 20)
        assert await net.until(lambda: net.height(0) >= net.height(1), 20)
        assert b0.counters["health_partitioned"] == 1
        await net.stop()

    run(body)


def test_a_flooded_session_does_not_stall_another() -> None:
    busy, quiet = session_id("busy"), session_id("quiet")

    async def body() -> None:
        net = BridgeNet(4, sessions=(busy, quiet), config=BridgeConfig(inbox_capacity=64))
        await net.start()
        b = net.bridge(0)
        rng = random.Random(1)
        junk = [
            encode_message(busy, StateAnnounce(h, rng.randbytes(32), bytes(32)))
            for h in range(5000)
        ]

        async def flood() -> None:
            for k in range(0, len(junk), 100):
                for payload in junk[k : k + 100]:
                    b.receive_payload(payload)
                await asyncio.sleep(0.01)

        task = asyncio.get_running_loop().create_task(flood())
        pid = b.submit_operation(quiet, add_op(5))
        op = b.operation(pid)
        assert op is not None
        assert await net.until(lambda: op.status is OperationStatus.COMMITTED, 5)
        await task
        assert b.drops["inbox_full"] > 0
        assert b.stats().sessions[busy].inbox_depth <= 64
        await net.stop()

    run(body)


# -- bad input ---------------------------------------------------------------------------


def _vote(ident: Identity, height: int, *, forge: bool = False) -> Vote:
    v = Vote.create(
        ident.sign, ident.signing_public, SESSION, Step.PREVOTE, height, 0, b"\x11" * 32
    )
    if forge:
        return Vote(v.step, v.height, v.round, v.block_hash, v.validator, bytes(64))
    return v


def test_bad_input_is_counted_dropped_and_never_applied() -> None:
    async def body() -> None:
        cfg = BridgeConfig(max_block_bytes=2048, max_snapshot_bytes=4096, max_payload=64 * 1024)
        net = BridgeNet(4, config=cfg)
        await net.start()
        b = net.bridge(0)
        engine = b.engine(SESSION)
        other = net.network.identities[1]
        assert not b.receive_payload(encode_message(session_id("elsewhere"), _vote(other, 1)))
        assert b.drops["unknown_session"] == 1
        assert not b.receive_payload(b"\x07garbage")
        assert not b.receive_payload(bytes(200_000))
        assert b.drops["oversized_payload"] == 1
        b.receive_payload(encode_message(SESSION, _vote(other, 1, forge=True)))
        b.receive_payload(encode_message(SESSION, _vote(other, 99)))  # wrong height
        ops = tuple(
            Operation.create(other.sign, other.signing_public, SESSION, k + 1, add_op(1))
            for k in range(40)
        )
        header = BlockHeader(1, other.signing_public, bytes(32), bytes(32), body_hash(ops, ()))
        block = Block(header, ops)
        sig = other.sign(proposal_signing_bytes(SESSION, 1, 0, -1, block.hash))
        b.receive_payload(encode_message(SESSION, Proposal(1, 0, -1, block, sig)))
        await asyncio.sleep(0.1)
        drops = b.stats().drops
        assert drops["oversized_block"] == 1
        assert drops["engine_drop_bad_signature"] >= 1
        assert (
            drops.get("engine_drop_future_height", 0) + drops.get("engine_drop_round_too_far", 0)
            >= 1
        )
        assert engine.height == 0 and b.is_healthy()
        await net.stop()

    run(body)


def _reached(net: BridgeNet, i: int, height: int) -> Callable[[], bool]:
    return lambda: net.height(i) >= height


def test_snapshot_not_matching_its_certificate_is_never_installed() -> None:
    async def body() -> None:
        cfg = BridgeConfig(max_snapshot_bytes=64 * 1024)
        net = BridgeNet(4, config=cfg)
        await net.start([0, 1, 2])
        for k in range(3):
            net.bridge(1).submit_operation(SESSION, add_op(k + 1))
            assert await net.until(_reached(net, 1, k + 1), 10)
        src = net.bridge(1).engine(SESSION)
        first = src.make_snapshot()
        assert first is not None
        blob, cert = first
        net.bridge(1).submit_operation(SESSION, add_op(9))
        assert await net.until(lambda: net.height(1) >= 4, 10)
        later = src.make_snapshot()
        assert later is not None
        await net.start([3])
        b3 = net.bridge(3)
        e3 = b3.engine(SESSION)
        # a snapshot with the certificate of another height, and a tampered snapshot
        b3.receive_payload(encode_message(SESSION, SnapshotResponse(later[1], blob)))
        tampered = bytearray(later[0])
        tampered[-5] ^= 0xFF
        b3.receive_payload(encode_message(SESSION, SnapshotResponse(later[1], bytes(tampered))))
        b3.receive_payload(encode_message(SESSION, SnapshotResponse(cert, bytes(70_000))))
        await asyncio.sleep(0.01)
        stats = e3.stats
        assert stats["snapshots_installed"] == 0
        assert stats["snapshot_certificate_mismatch"] + stats["snapshot_bad_snapshot"] >= 2
        assert b3.stats().drops["oversized_snapshot"] == 1
        await net.stop()

    run(body)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=400), max_size=20))
def test_random_bytes_never_crash_the_bridge(payloads: list[bytes]) -> None:
    async def body() -> None:
        net = BridgeNet(4)
        await net.start([0])
        b = net.bridge(0)
        for p in payloads:
            b.receive_payload(p)
            b.receive_payload(bytes([1]) + SESSION + p)
        await asyncio.sleep(0.1)
        assert b.engine(SESSION).height == 0
        assert sum(b.stats().drops.values()) + b.stats().messages_processed >= len(payloads)
        await net.stop()

    run(body)


def test_one_validator_announcing_a_far_height_cannot_start_a_catch_up() -> None:
    async def body() -> None:
        net = BridgeNet(4)
        await net.start([0])
        b = net.bridge(0)
        liar, honest = net.network.identities[1], net.network.identities[2]
        far = encode_message(SESSION, StateAnnounce(1000, bytes(32), bytes(32)))
        b.receive_payload(far, liar.signing_public)
        b.receive_payload(far, None)  # unauthenticated: not even counted
        await asyncio.sleep(1.0)
        engine = b.engine(SESSION)
        assert engine.stats["sent_snapshot_request"] == 0
        assert b.health(SESSION) is SessionHealth.ACTIVE
        assert b.drops["announce_not_validator"] == 1
        b.receive_payload(far, honest.signing_public)  # f+1 = 2 validators agree
        await asyncio.sleep(1.0)
        assert engine.stats["sent_snapshot_request"] >= 1
        assert b.health(SESSION) is SessionHealth.CATCHING_UP
        await net.stop()

    run(body)


def test_catch_up_requests_are_rate_limited_per_sender() -> None:
    async def body() -> None:
        net = BridgeNet(4, config=BridgeConfig(request_interval=1.0))
        await net.start([0])
        b = net.bridge(0)
        asker = net.network.identities[1].signing_public
        for h in (1, 2, 3, 4, 5, 6):  # a burst of 4 (a laggard asks for 4 heights at once)
            b.receive_payload(encode_message(SESSION, CommitRequest(h)), asker)
        b.receive_payload(
            encode_message(SESSION, CommitRequest(7)), net.network.identities[2].signing_public
        )
        await asyncio.sleep(0.01)
        assert b.drops["request_rate_limited"] == 2
        await asyncio.sleep(1.1)
        b.receive_payload(encode_message(SESSION, CommitRequest(8)), asker)
        await asyncio.sleep(0.01)
        assert b.drops["request_rate_limited"] == 2
        await net.stop()

    run(body)


def test_forged_vote_for_another_height_is_dropped_before_the_engine() -> None:
    async def body() -> None:
        net = BridgeNet(4)
        await net.start([0])
        b = net.bridge(0)
        other = net.network.identities[1]
        b.receive_payload(encode_message(SESSION, _vote(other, 7, forge=True)))
        b.receive_payload(encode_message(SESSION, _vote(other, 8)))  # genuine: reaches it
        await asyncio.sleep(0.01)
        assert b.drops["vote_bad_signature"] == 1
        assert b.engine(SESSION).stats["drop_future_height"] == 1
        await net.stop()

    run(body)


def test_vote_ahead_by_a_key_outside_our_set_gets_another_hearing() -> None:
    # A seat added at a height we have not reached: its votes cannot be judged yet. Kept in
    # the dedup, every rebroadcast of one was dropped as a duplicate and a laggard never
    # counted it (churn seed 443: a 3-seat table stalled for good at height 5).
    async def body() -> None:
        net = BridgeNet(4)
        await net.start([0])
        b = net.bridge(0)
        newcomer = Identity.from_seed(b"seat added later")
        payload = encode_message(SESSION, _vote(newcomer, 5))
        b.receive_payload(payload)
        await asyncio.sleep(0.01)
        b.receive_payload(payload)  # its rebroadcast
        await asyncio.sleep(0.01)
        assert b.drops["vote_ahead_not_validator"] == 2
        assert b.drops["duplicate"] == 0
        assert b.drops["vote_bad_signature"] == 0
        await net.stop()

    run(body)


def test_operation_reissued_after_a_restart_resolves_under_its_proposal_id() -> None:
    async def body() -> None:
        net = BridgeNet(4)
        await net.start([1, 2, 3])
        me = net.network.identities[0]
        # an op node 0 signed in an earlier life, committed while it was down
        earlier = Operation.create(me.sign, me.signing_public, SESSION, 1, add_op(4))
        for i in (1, 2, 3):
            net.bridge(i).receive_payload(encode_message(SESSION, earlier))
        assert await net.until(lambda: all(net.height(i) >= 1 for i in (1, 2, 3)), 20)
        await net.start([0])  # knows nothing of nonce 1: its next op reuses it
        b = net.bridge(0)
        pid = b.submit_operation(SESSION, add_op(5))
        op = b.operation(pid)
        assert op is not None and op.nonce == 1
        assert await net.until(lambda: op.status is not OperationStatus.PENDING, 20)
        assert op.status is OperationStatus.COMMITTED, op.reason
        assert op.nonce == 2 and op.height == 2 and b.operation(pid) is op
        assert b.counters["operations_reissued"] == 1
        assert b.pending_operations() == []
        await net.stop()

    run(body)


def test_a_bug_in_a_timer_stops_signing_and_never_escapes_into_the_loop() -> None:
    """The one timer runs the housekeeping tick: a bug there (the engine's announcement
    breaks) is the service's ``_fail`` (signing stops, the owner is told), not an exception
    left to the event loop."""

    async def body() -> tuple[str | None, list[str], list[object], float | None, int]:
        net = BridgeNet(4)
        await net.start()
        assert await net.until(lambda: min(map(net.height, range(4))) >= 0, 5)
        loop = asyncio.get_running_loop()
        escaped: list[object] = []
        loop.set_exception_handler(lambda _loop, ctx: escaped.append(ctx.get("exception")))
        b = net.bridge(0)
        told: list[str] = []
        b.on_failure = lambda reason, exc: told.append(reason)
        engine = b.engine(SESSION)

        def broken() -> None:
            raise RuntimeError("timer bug")

        engine.state_announcement = broken  # type: ignore[assignment,method-assign]
        await asyncio.sleep(5.0)
        sent = b.counters["messages_sent"]
        await asyncio.sleep(2.0)
        after = b.counters["messages_sent"] - sent
        out = (b.failure, told, escaped, b.core.next_timer(), after)
        await net.stop()
        return out

    failure, told, escaped, next_timer, sent_after = run(body)
    assert failure == "bug: RuntimeError: timer bug"
    assert told == [failure]
    assert escaped == []
    assert next_timer is None and sent_after == 0
