"""Neighbour gossip in the bridge: batched direct frames down each author's tree, the flood
fallback, and bad batches, over real MeshNodes on the loopback air."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from dataclasses import replace
from typing import Any

import pytest
from bridge_harness import SESSION, BridgeNet, run

import ble_bridge.bridge.core as bridge_module
from ble_bridge.bridge import BridgeConfig
from ble_bridge.bridge.session import Session
from ble_bridge.consensus.testing import LedgerApp, add_op
from ble_bridge.gossip import Gossip, Item
from ble_bridge.mesh.router import Delivered
from ble_bridge.wire.messages import (
    ENVELOPE_PREFIX,
    NEIGHBOUR_VERSION,
    NIL,
    CompactProposal,
    Evidence,
    Kind,
    Message,
    Operation,
    StateAnnounce,
    Step,
    Vote,
    encode_batch,
    encode_message,
    encode_vote_set,
    to_neighbour,
)
from ble_bridge.wire.packet import Packet, PacketType


async def load(net: BridgeNet, seconds: float, every: float = 0.5) -> None:
    """Each node submits an op every ``every`` seconds (when its pending list has room)."""
    n = len(net.network)
    for k in range(int(seconds / every) * n):
        b = net.bridge(k % n)
        if len(b.pending_operations(SESSION)) < 4:
            b.submit_operation(SESSION, add_op(k + 1))
        await asyncio.sleep(every / n)


async def gossiping(net: BridgeNet) -> tuple[BridgeNet, list[Session]]:
    """Start ``net`` and wait until no node floods its own messages any more."""
    await net.start()
    sessions = [net.bridge(i).sessions[SESSION] for i in range(len(net.network))]
    assert await net.until(lambda: not any(s.flood_own for s in sessions), 10)
    return net, sessions


def air_bytes(net: BridgeNet) -> int:
    return sum(net.node(i).mesh.stats()["bytes_out"] for i in range(len(net.network)))


def measure(gossip: bool, seed: int = 3) -> tuple[int, int, list[bool], int]:
    """(min height, air bytes, flood_own per node, gossip frames) after 40 s of load."""

    async def body() -> tuple[int, int, list[bool], int]:
        net = BridgeNet(6, profile="pi-tuned", seed=seed, config=BridgeConfig(gossip=gossip))
        await net.start()
        await asyncio.sleep(15)  # links form and the neighbour lists get announced
        await load(net, 40)
        await asyncio.sleep(5)
        n = len(net.network)
        heights = min(net.height(i) for i in range(n))
        flood = [net.bridge(i).sessions[SESSION].flood_own for i in range(n)]
        frames = sum(net.bridge(i).counters["gossip_frames"] for i in range(n))
        out = (heights, air_bytes(net), flood, frames)
        await net.stop()
        return out

    return run(body, seed=seed)


def test_gossip_commits_with_direct_frames_and_less_airtime_than_flooding() -> None:
    h_g, bytes_g, flood_g, frames_g = measure(gossip=True)
    h_f, bytes_f, _, frames_f = measure(gossip=False)
    assert h_g >= 10 and h_f >= 10
    assert frames_g > 0 and frames_f == 0
    assert not any(flood_g)  # a settled mesh of validators: nobody floods its own messages
    # the same operations commit (the load is what limits heights here) for less airtime
    assert bytes_g / h_g < 0.9 * bytes_f / h_f


def test_out_of_contact_validator_turns_on_flooding_until_it_is_back() -> None:
    async def body() -> None:
        cfg = BridgeConfig(contact_timeout=3.0, heartbeat_interval=1.0)
        net = BridgeNet(4, config=cfg)
        await net.start()
        sessions = [net.bridge(i).sessions[SESSION] for i in range(4)]
        assert await net.until(lambda: not any(s.flood_own for s in sessions), 10)
        await net.network.stop_node(3, crash=True)
        assert await net.until(lambda: all(s.flood_own for s in sessions[:3]), 10)
        await net.network.start_node(3)
        sessions[3] = net.bridge(3).sessions[SESSION]
        assert await net.until(lambda: not any(s.flood_own for s in sessions), 15)
        net.bridge(3).submit_operation(SESSION, add_op(5))
        assert await net.until(lambda: all(net.height(i) >= 1 for i in range(4)), 10)
        await net.stop()

    run(body)


def _batch_of_two_votes(net: BridgeNet, forge: bool) -> bytes:
    """A batch of two prevotes of validator 1 for height 1; the second one's signature is
    broken when ``forge``."""
    ident = net.network.identities[1]
    key = ident.signing_public
    good = Vote.create(ident.sign, key, SESSION, Step.PREVOTE, 1, 0, b"\x01" * 32)
    bad = Vote.create(ident.sign, key, SESSION, Step.PREVOTE, 1, 1, b"\x02" * 32)
    if forge:
        bad = dataclasses.replace(bad, signature=bytes([bad.signature[0] ^ 1]) + bad.signature[1:])
    items = [encode_message(SESSION, v)[ENVELOPE_PREFIX:] for v in (good, bad)]
    return encode_batch(SESSION, items)


def test_forged_vote_in_a_batch_is_dropped_and_never_passed_on() -> None:
    async def body() -> None:
        net = BridgeNet(4)
        await net.start()
        await asyncio.sleep(3)
        b0 = net.bridge(0)
        s0 = b0.sessions[SESSION]
        assert b0.receive_batch(_batch_of_two_votes(net, forge=True)) == 2
        await asyncio.sleep(0.01)
        assert s0.engine.stats["drop_bad_signature"] == 1
        queued = [it.meta for nb in s0.gossip._neighbours.values() for it in nb.queue.values()]
        assert not any(isinstance(v, Vote) and v.round == 1 for v in queued)
        await asyncio.sleep(1)
        forger = net.network.identities[1].signing_public
        for i in range(1, 4):  # the genuine vote travelled on, the forged one nowhere
            eng = net.bridge(i).engine(SESSION)
            assert eng.stats["drop_bad_signature"] == 0
            round1 = eng._hs.votes.get((1, Step.PREVOTE))
            assert round1 is None or forger not in round1.votes
        await net.stop()

    run(body)


def test_garbage_batches_are_counted_and_dropped() -> None:
    async def body() -> None:
        net = BridgeNet(4)
        await net.start()
        b0 = net.bridge(0)
        prefix = bytes((1,)) + SESSION
        assert b0.receive_batch(prefix + bytes((Kind.BATCH,)) + b"\x00\x05junk") == 0
        assert b0.receive_batch(prefix + bytes((Kind.VOTE_SET,)) + b"\x01" * 20) == 0
        ann = encode_message(SESSION, StateAnnounce(1, b"\x01" * 32, b"\x02" * 32))
        ann = ann[ENVELOPE_PREFIX:]
        assert b0.receive_batch(encode_batch(SESSION, [ann, ann])) == 0
        assert b0.receive_batch(_batch_of_two_votes(net, forge=False)) == 2
        drops = {k: v for k, v in b0.drops.items() if k.startswith(("batch_", "vote_set_"))}
        assert sum(drops.values()) == 3, drops
        assert b0.receive_batch(bytes((1,)) + b"\x09" * 16 + bytes((Kind.BATCH,))) == 0
        assert b0.drops["unknown_session"] >= 1
        await net.stop()

    run(body)


def test_operations_yield_the_radio_while_our_links_are_busy() -> None:
    async def body() -> list[tuple[str, float]]:
        cfg = BridgeConfig(gossip_linger=0.0, gossip_op_busy_frames=2, gossip_op_max_hold=0.4)
        net = BridgeNet(3, config=cfg)
        await net.start()
        b0 = net.bridge(0)
        s0 = b0.sessions[SESSION]
        assert await net.until(lambda: len(s0.gossip.neighbours) == 2, 10)
        await asyncio.sleep(1)
        loop = asyncio.get_running_loop()
        ident = net.network.identities[0]
        me = ident.signing_public
        sent: list[tuple[str, float]] = []
        real = b0.core.compact

        def spy(s: object, items: list[Item], peer: bytes | None = None) -> list[bytes]:
            sent.extend((type(it.meta).__name__, loop.time()) for it in items)
            return real(s, items, peer)  # type: ignore[arg-type]

        def offer(msg: Operation | Vote, priority: int) -> None:
            payload = encode_message(SESSION, msg)
            data = payload[ENVELOPE_PREFIX:]
            s0.gossip.offer(payload, data, None, meta=msg, priority=priority, due=loop.time())
            b0.core.schedule_flush(loop.time())
            b0._pump()

        b0.core.compact = spy  # type: ignore[method-assign]
        net.network.air.extra_delay = 2.0  # what we send now stays queued for two seconds
        net.node(0).mesh.send(PacketType.MESSAGE, b"busy")  # one frame on each link
        t0 = loop.time()
        offer(Operation.create(ident.sign, me, SESSION, 99, add_op(7)), 2)
        await asyncio.sleep(1.0)  # an operation alone waits for the radio, at most 0.4 s
        offer(Operation.create(ident.sign, me, SESSION, 100, add_op(8)), 2)
        await asyncio.sleep(0.1)
        offer(Vote.create(ident.sign, me, SESSION, Step.PREVOTE, 9, 0, bytes(32)), 0)
        await asyncio.sleep(0.5)  # a vote goes at once, and the waiting operation with it
        await net.stop()
        return [(kind, round(t - t0, 1)) for kind, t in sent]

    sent = run(body)
    # two neighbours each: the first op after its max hold; the vote and the second op
    # together 0.1 s after that op was queued
    assert sent == [("Operation", 0.4)] * 2 + [("Vote", 1.1), ("Operation", 1.1)] * 2, sent


@pytest.mark.parametrize("gossip", [True, False])
def test_own_ops_ride_inline_only_in_flooded_compact_proposals(
    monkeypatch: pytest.MonkeyPatch, gossip: bool
) -> None:
    seen: list[CompactProposal] = []
    real = bridge_module.encode_message

    def spy(session_id: bytes, msg: Message) -> bytes:
        if isinstance(msg, CompactProposal):
            seen.append(msg)
        return real(session_id, msg)

    monkeypatch.setattr(bridge_module, "encode_message", spy)

    async def body() -> None:
        net = BridgeNet(4, config=BridgeConfig(gossip=gossip))
        if gossip:
            await gossiping(net)
        else:
            await net.start()
        for k in range(3):
            for i in range(4):
                net.bridge(i).submit_operation(SESSION, add_op(10 * k + i + 1))
            assert await net.until(lambda w=k + 1: min(map(net.height, range(4))) >= w, 20)
        await net.stop()

    run(body)
    assert seen
    inline = [e for cp in seen for e in cp.entries if isinstance(e, Operation)]
    # gossiped: our ops went down the same tree first; flooded: they may race the proposal
    assert bool(inline) is not gossip


def test_committed_operations_leave_the_gossip_state() -> None:
    async def body() -> None:
        net, sessions = await gossiping(BridgeNet(4))
        net.bridge(0).submit_operation(SESSION, add_op(3))

        def ops_kept() -> int:
            return sum(isinstance(it.meta, Operation) for s in sessions for it in s.gossip.recent)

        assert await net.until(lambda: ops_kept() > 0, 5)
        assert await net.until(lambda: all(net.height(i) >= 1 for i in range(4)), 10)
        # a neighbour that appears now would not get the committed op again
        assert ops_kept() == 0
        await net.stop()

    run(body)


def test_a_flooded_message_is_left_to_the_mesh_relays(monkeypatch: pytest.MonkeyPatch) -> None:
    offered: list[bytes] = []
    real = Gossip.offer

    def spy(self: Gossip, key: bytes, *args: Any, **kwargs: Any) -> int:
        offered.append(key)
        return real(self, key, *args, **kwargs)

    monkeypatch.setattr(Gossip, "offer", spy)

    async def body() -> tuple[int, int]:
        net = BridgeNet(6, profile="pi-tuned", seed=3)
        await net.start()
        await asyncio.sleep(15)  # links form, neighbour lists get announced
        ident = net.network.identities[0]
        key = ident.signing_public
        op = Operation.create(ident.sign, key, SESSION, 1, add_op(4))
        payload = encode_message(SESSION, op)
        net.bridge(0).send_payload(payload)  # one mesh flood
        await asyncio.sleep(2)
        engines = [net.bridge(i).engine(SESSION) for i in range(6)]
        have = sum(op.op_id in e.mempool.ops or e.committed_nonce(key) >= 1 for e in engines)
        await net.stop()
        return have, offered.count(hashlib.blake2b(payload, digest_size=16).digest())

    have, gossiped = run(body, seed=3)
    assert have == 6  # the routers carried it everywhere...
    assert gossiped == 0  # ...and nobody offered it to its gossip neighbours as well


def test_a_banned_validator_still_gets_gossip_but_relays_nothing() -> None:
    async def body() -> None:
        net, sessions = await gossiping(BridgeNet(4))
        offender = net.network.identities[3]
        banned = offender.signing_public
        a, b = (
            Vote.create(offender.sign, banned, SESSION, Step.PREVOTE, 1, 5, bytes([x]) * 32)
            for x in (1, 2)
        )
        now = asyncio.get_running_loop().time()
        for s in sessions:  # every node heard the double vote: the next block commits it
            s.engine.receive(now, Evidence.of(a, b))
        net.bridge(0).submit_operation(SESSION, add_op(8))  # the bridges send what is due
        assert await net.until(lambda: all(s.engine.banned == {banned} for s in sessions), 10)
        await asyncio.sleep(1)  # the next ticks rebuild the trees
        peer3 = net.node(3).mesh.peer_id
        for s in sessions[:3]:
            assert peer3 in s.gossip.neighbours  # still a neighbour...
            assert s.gossip._leaves == {peer3}  # ...that relays nothing
            assert not s.flood_own
        before = net.height(3)
        net.bridge(0).submit_operation(SESSION, add_op(9))
        assert await net.until(lambda: net.height(3) > before, 3)  # its announce takes 8 s
        await net.stop()

    run(body)


def test_the_decided_heights_votes_still_go_to_neighbours_deciding_it() -> None:
    async def body() -> None:
        net, sessions = await gossiping(BridgeNet(4))
        net.bridge(0).submit_operation(SESSION, add_op(3))
        assert await net.until(lambda: net.height(0) >= 1, 10)
        await asyncio.sleep(1)  # housekeeping ticks pass; nothing more is submitted
        assert net.height(0) == 1
        # a relay stops counting at a quorum: a neighbour still deciding height 1 may
        # need the rest, so its votes stay queued and kept (older heights go)
        kept = [it.meta for it in sessions[0].gossip.recent if isinstance(it.meta, Vote)]
        assert any(v.height == 1 for v in kept)
        await net.stop()

    run(body)


def test_gossip_frames_name_their_session_by_a_tag_and_unknown_tags_are_dropped() -> None:
    async def body() -> None:
        net, _ = await gossiping(BridgeNet(4))
        b0, b1 = net.bridge(0), net.bridge(1)
        sent: list[bytes] = []
        real = b0.mesh.send

        def spy(ptype: int, payload: bytes, *args: Any, **kwargs: Any) -> Packet:
            sent.append(payload)
            return real(ptype, payload, *args, **kwargs)

        b0.mesh.send = spy  # type: ignore[method-assign]
        b0.submit_operation(SESSION, add_op(5))
        assert await net.until(lambda: all(net.height(i) >= 1 for i in range(4)), 10)
        gossip = [p for p in sent if p[0] == NEIGHBOUR_VERSION]
        assert gossip and all(p[1:5] == SESSION[:4] for p in gossip)
        # a frame for a session we are not in, and one whose tag two of ours share
        ident = net.network.identities[0]
        vote = Vote.create(ident.sign, ident.signing_public, SESSION, Step.PREVOTE, 9, 0, NIL)
        stray = to_neighbour(encode_message(bytes(16), vote))
        packet = Packet(PacketType.CONSENSUS, net.node(0).mesh.peer_id, stray, 1, ttl=1)
        b1._on_packet(Delivered(packet, None, 0.0))
        assert b1.drops["unknown_session"] >= 1
        twin = SESSION[:4] + bytes(12)
        b1.open_session(twin, [ident.signing_public], LedgerApp())
        frame = to_neighbour(encode_message(SESSION, vote))
        b1._on_packet(Delivered(replace(packet, payload=frame), None, 0.0))
        assert b1.drops["ambiguous_session_tag"] == 1
        await net.stop()

    run(body)


def test_compact_proposals_travel_as_proposal_refs() -> None:
    async def body() -> set[int]:
        net, _ = await gossiping(BridgeNet(4))
        kinds: set[int] = set()
        for i in range(4):
            b = net.bridge(i)
            real = b.core.compact

            def spy(s: Any, items: list[Item], peer: Any = None, real: Any = real) -> list[bytes]:
                out: list[bytes] = real(s, items, peer)
                kinds.update(x[0] for x in out)
                return out

            b.core.compact = spy  # type: ignore[method-assign]
        for k in range(3):
            net.bridge(k).submit_operation(SESSION, add_op(k + 1))
            assert await net.until(lambda w=k + 1: min(map(net.height, range(4))) >= w, 10)
        await net.stop()
        return kinds

    kinds = run(body)
    assert Kind.PROPOSAL_REF in kinds and Kind.COMPACT_PROPOSAL not in kinds


def test_operations_linger_only_while_the_radio_is_busy() -> None:
    async def body() -> list[float]:
        cfg = BridgeConfig(gossip_linger=0.3, gossip_op_busy_frames=0)
        net, sessions = await gossiping(BridgeNet(3, config=cfg))
        b0, s0 = net.bridge(0), sessions[0]
        loop = asyncio.get_running_loop()
        ident = net.network.identities[0]
        sent: dict[int, float] = {}  # nonce -> when it first left
        real = b0.core.compact

        def spy(s: Any, items: list[Item], peer: bytes | None = None) -> list[bytes]:
            for it in items:
                if isinstance(it.meta, Operation):
                    sent.setdefault(it.meta.nonce, loop.time())
            return real(s, items, peer)  # type: ignore[no-any-return]

        b0.core.compact = spy  # type: ignore[method-assign]
        starts = []
        for nonce, busy in ((50, False), (51, True)):
            await asyncio.sleep(1)
            if busy:
                net.network.air.extra_delay = 2.0  # what we send now stays queued
                net.node(0).mesh.send(PacketType.MESSAGE, b"busy")
            op = Operation.create(ident.sign, ident.signing_public, SESSION, nonce, add_op(1))
            payload = encode_message(SESSION, op)
            starts.append(loop.time())
            s0.gossip.offer(
                payload,
                payload[ENVELOPE_PREFIX:],
                None,
                meta=op,
                priority=2,
                due=loop.time() + cfg.gossip_linger,
            )
            b0.core.schedule_flush(loop.time())
            b0._pump()
        await asyncio.sleep(1)
        await net.stop()
        return [round(sent[50] - starts[0], 2), round(sent[51] - starts[1], 2)]

    idle, busy = run(body)
    assert idle == 0.0  # nothing queued anywhere: no reason to wait
    assert busy >= 0.3  # frames queued: let more operations join this one


def _short_vote_set(net: BridgeNet, who: int, height: int, block: bytes, short: bool) -> bytes:
    """A one-vote VoteSet envelope: validator ``who``'s prevote for ``block``."""
    ident = net.network.identities[who]
    vote = Vote.create(ident.sign, ident.signing_public, SESSION, Step.PREVOTE, height, 0, block)
    keys = net.bridge(0).engine(SESSION).validators
    return bytes((1,)) + SESSION + encode_vote_set([vote], keys.index, len(keys), short=short)


def test_a_vote_set_names_its_block_short_to_a_neighbour_that_named_it_to_us() -> None:
    async def body() -> None:
        net, sessions = await gossiping(BridgeNet(4))
        b0, s0 = net.bridge(0), sessions[0]
        p1, p2 = s0.gossip.neighbours[:2]
        ids = net.network.identities
        h = s0.engine.height + 1
        block = b"\x0b" * 32

        def vote(who: int, blk: bytes = block) -> Vote:
            ident = ids[who]
            return Vote.create(ident.sign, ident.signing_public, SESSION, Step.PREVOTE, h, 0, blk)

        def sizes(peer: bytes, *votes: Vote) -> list[int]:
            items = [Item(v.signature[:16], b"", v.height, v) for v in votes]
            return [len(x) for x in b0.core.compact(s0, items, peer)]

        assert sizes(p1, vote(1)) == [102]  # p1 never named it: in full, every time
        assert sizes(p1, vote(2)) == [102]
        assert sizes(p1, vote(1, NIL)) == [74]  # NIL: always short
        # p1 passes us a vote for the block in a frame of its own: it knows it from now on
        # (p2 does not)
        assert b0.receive_payload(encode_message(SESSION, vote(3)), via=p1, vouched=True)
        await asyncio.sleep(0.01)
        assert sizes(p1, vote(2)) == [74] and sizes(p2, vote(2)) == [102]
        # a flood p2 merely relayed (someone else signed the frame) proves nothing about
        # p2's engine, even on its last hop
        assert b0.receive_payload(encode_message(SESSION, vote(1)), via=p2)
        await asyncio.sleep(0.01)
        assert sizes(p2, vote(2)) == [102]
        b0.config = dataclasses.replace(b0.config, short_vote_sets=False)
        assert sizes(p1, vote(2), vote(1, NIL)) == [102, 102]
        await net.stop()

    run(body)


def test_a_short_vote_set_waits_for_its_block_then_counts_or_expires() -> None:
    async def body() -> None:
        cfg = BridgeConfig(unresolved_capacity=2, unresolved_ttl=1.0)
        net = BridgeNet(4, config=cfg)
        await net.start()
        b1 = net.bridge(1)
        s1 = b1.sessions[SESSION]
        h = s1.engine.height + 1
        block = b"\x0e" * 32
        assert b1.receive_batch(_short_vote_set(net, 2, h, block, short=True)) == 0
        assert len(s1.unresolved) == 1 and s1.stats["vote_sets_held"] == 1
        # a full vote set of another validator names the block: the held one expands
        assert b1.receive_batch(_short_vote_set(net, 3, h, block, short=False)) == 1
        await asyncio.sleep(0.01)
        assert not s1.unresolved and s1.stats["vote_sets_resolved"] == 1
        voters = s1.engine._hs.votes[(0, Step.PREVOTE)].by_block[block]
        ids = net.network.identities
        assert {ids[2].signing_public, ids[3].signing_public} <= set(voters)
        # blocks nobody names: kept up to the cap, then dropped when too old
        for k in range(3):
            b1.receive_batch(_short_vote_set(net, k, h, bytes([0x20 + k]) * 32, short=True))
        assert len(s1.unresolved) == 2 and b1.drops["vote_set_unresolved_overflow"] == 1
        await asyncio.sleep(1.5)
        assert not s1.unresolved and b1.drops["vote_set_unresolved"] == 2
        await net.stop()

    run(body)


def test_vote_sets_travel_short_and_every_height_commits() -> None:
    async def body() -> None:
        net, _ = await gossiping(BridgeNet(4, profile="pi-tuned", seed=5))
        for k in range(4):
            net.bridge(k).submit_operation(SESSION, add_op(k + 1))
            assert await net.until(lambda w=k + 1: min(map(net.height, range(4))) >= w, 20)
        bridges = [net.bridge(i) for i in range(4)]
        short = sum(b.counters["vote_sets_short"] for b in bridges)
        full = sum(b.counters["vote_sets_full"] for b in bridges)
        assert short > full > 0
        assert not any(
            b.drops[r]
            for b in bridges
            for r in ("vote_set_unresolved", "vote_set_unresolved_overflow")
        )
        await net.stop()

    run(body)
