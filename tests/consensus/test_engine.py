"""ConsensusEngine unit behaviour: rotation, idling, admission, catch-up, signer guard."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import get_args

from hypothesis import given, settings
from hypothesis import strategies as st

from ble_bridge.consensus.app import BlockContext
from ble_bridge.consensus.engine import (
    Committed,
    ConsensusEngine,
    EngineConfig,
    OperationRejected,
    Phase,
)
from ble_bridge.consensus.snapshot import chain_state_hash
from ble_bridge.consensus.testing import (
    POISON,
    LedgerApp,
    LedgerState,
    add_op,
    exchange,
)
from ble_bridge.consensus.testing import (
    UNIT_SESSION as SESSION,
)
from ble_bridge.consensus.testing import (
    unit_engines as engines,
)
from ble_bridge.consensus.testing import (
    unit_identities as identities,
)
from ble_bridge.store import Store
from ble_bridge.wire.identity import Identity
from ble_bridge.wire.messages import (
    NIL,
    Block,
    BlockHeader,
    Commit,
    CommitCertificate,
    CommitRequest,
    Evidence,
    Message,
    Operation,
    Proposal,
    SnapshotRequest,
    SnapshotResponse,
    StateAnnounce,
    Step,
    Vote,
    body_hash,
    encode_message,
    proposal_signing_bytes,
)


def _by_key(group: list[ConsensusEngine[LedgerState]]) -> dict[bytes, ConsensusEngine[LedgerState]]:
    return {e.key: e for e in group}


def test_proposer_rotates_deterministically_over_sorted_keys() -> None:
    group = engines(4)
    keys = sorted(e.key for e in group)
    for e in group:
        assert [e.proposer(h, r) for h, r in [(1, 0), (1, 1), (2, 0), (4, 3)]] == [
            keys[1],
            keys[2],
            keys[2],
            keys[3],
        ]


def test_every_wire_message_type_has_a_handler_and_anything_else_is_counted() -> None:
    (eng,) = engines(1)
    eng.start(0.0)
    assert set(eng._handlers) == set(get_args(Message))  # dispatch is by exact type
    eng.receive(0.0, "not a message")  # type: ignore[arg-type]
    assert eng.stats["drop_not_a_message"] == 1
    assert eng.stats["received"] == 1


def test_single_validator_commits_alone() -> None:
    (solo,) = engines(1)
    solo.start(0.0)
    op_id = solo.submit(0.0, add_op(7))
    committed = [e for e in solo.events() if isinstance(e, Committed)]
    assert [c.height for c in committed] == [1]
    assert committed[0].ops[0].op_id == op_id
    assert solo.state.total_of(solo.key) == 7
    assert committed[0].certificate.verify([solo.key], SESSION)


def test_idle_height_has_no_timer_until_work_arrives() -> None:
    group = engines(4)
    for e in group:
        e.start(0.0)
    assert all(e.next_timer() is None and e.phase is Phase.IDLE for e in group)
    group[0].submit(0.0, add_op(1))
    assert group[0].next_timer() is not None
    exchange(group, 0.0)
    assert all(e.height == 1 for e in group)
    assert all(e.next_timer() is None for e in group)  # idle again


def test_four_engines_agree_on_batched_blocks() -> None:
    group = engines(4)
    for e in group:
        e.start(0.0)
    for k in range(12):
        group[k % 4].submit(0.0, add_op(k + 1))
    exchange(group, 0.0)
    assert {e.state_hash for e in group} == {group[0].state_hash}
    assert group[0].state.grand_total == sum(range(1, 13))
    assert group[0].height < 12  # several ops per block


def test_foreign_and_forged_operations_are_dropped_and_counted() -> None:
    group = engines(4)
    eng = group[0]
    eng.start(0.0)
    stranger = Identity.from_seed(b"stranger")
    foreign = Operation.create(stranger.sign, stranger.signing_public, SESSION, 1, add_op(1))
    eng.receive(0.0, foreign)
    ident = identities(4)[1]
    forged = Operation(ident.signing_public, 1, add_op(5), stranger.sign(b"x"))
    eng.receive(0.0, forged)
    other_session = Operation.create(ident.sign, ident.signing_public, b"\x00" * 16, 1, add_op(1))
    eng.receive(0.0, other_session)
    assert eng.stats["drop_not_validator"] == 1
    assert eng.stats["drop_bad_signature"] == 2
    assert len(eng.mempool) == 0


def test_unknown_session_and_garbage_payloads_are_counted() -> None:
    (eng,) = engines(1)
    eng.start(0.0)
    eng.receive_payload(
        0.0, encode_message(b"\x00" * 16, Vote(Step.PREVOTE, 1, 0, NIL, eng.key, b"\x00" * 64))
    )
    eng.receive_payload(0.0, b"\x01")
    assert eng.stats["drop_unknown_session"] == 1
    assert eng.stats["drop_bad_message"] == 1


def test_mempool_is_bounded() -> None:
    sender = engines(4)[1]
    eng = engines(4, EngineConfig(mempool_max_ops=5))[0]
    for e in (sender, eng):
        e.start(0.0)
    for k in range(10):
        sender.submit(0.0, add_op(k))
    for msg in sender.outbox():
        if isinstance(msg, Operation):
            eng.receive(0.0, msg)
    assert len(eng.mempool) == 5
    assert eng.stats["drop_mempool_full"] == 5


def test_rejected_operation_is_reported_after_failing_builds() -> None:
    (solo,) = engines(1, EngineConfig(max_op_failures=1))
    solo.start(0.0)
    op_id = solo.submit(0.0, POISON)
    events = solo.events()
    assert OperationRejected(op_id, solo.key, "malformed") in events
    assert solo.state.grand_total == 0


def test_invalid_operation_in_proposed_block_gets_a_nil_prevote() -> None:
    group = engines(4)
    by_key = _by_key(group)
    keys = sorted(by_key)
    proposer_key = keys[1]  # proposer of height 1, round 0
    proposer = identities(4)[[i.signing_public for i in identities(4)].index(proposer_key)]
    voter = by_key[keys[0]]
    voter.start(0.0)
    poison = Operation.create(proposer.sign, proposer_key, SESSION, 1, POISON)
    header = BlockHeader(
        1, proposer_key, voter.last_block_hash, voter.state_hash, body_hash([poison], [])
    )
    block = Block(header, (poison,))
    sig = proposer.sign(proposal_signing_bytes(SESSION, 1, 0, -1, block.hash))
    voter.receive(0.0, Proposal(1, 0, -1, block, sig))
    votes = [m for m in voter.outbox() if isinstance(m, Vote)]
    assert [(v.step, v.block_hash) for v in votes] == [(Step.PREVOTE, NIL)]
    assert voter.stats["invalid_block_op_rejected"] == 1


def test_commit_message_catches_up_only_with_a_verifying_certificate() -> None:
    group = engines(4)
    for e in group:
        e.start(0.0)
    for k in range(3):
        group[0].submit(0.0, add_op(k + 1))
        exchange(group, 0.0)
    source = group[1]
    assert source.height >= 2
    block1, cert1 = source._recent[1]
    late = engines(4)[2]
    late.start(0.0)
    bad_sigs = dataclasses.replace(cert1, signatures=tuple(b"\x00" * 64 for _ in cert1.signatures))
    late.receive(0.0, Commit(block1, bad_sigs))
    assert late.height == 0 and late.stats["drop_bad_certificate"] == 1
    other = dataclasses.replace(cert1, block_hash=b"\x01" * 32)
    late.receive(0.0, Commit(block1, other))
    assert late.height == 0 and late.stats["drop_commit_mismatch"] == 1
    block2, cert2 = source._recent[2]
    late.receive(0.0, Commit(block2, cert2))  # certified, but not the next height: kept
    assert late.height == 0 and late.stats["commit_buffered"] == 1
    late.receive(0.0, Commit(block1, cert1))  # applies 1, then the kept 2
    assert late.height == 2 and late.state_hash == source._recent[2][0].header.state_hash


def test_lagging_validator_asks_for_missing_commit() -> None:
    group = engines(4)
    for e in group:
        e.start(0.0)
    behind = group[3]
    live = group[:3]
    group[0].submit(0.0, add_op(1))
    exchange(live, 0.0)
    group[0].submit(1.0, add_op(2))
    now = exchange(live, 1.0)
    assert all(e.height == 2 for e in live) and behind.height == 0
    for e in live:
        behind.receive(now, e.state_announcement())
    requests = behind.outbox()
    assert any(type(m).__name__ in ("CommitRequest", "SnapshotRequest") for m in requests)


def test_timeouts_grow_per_round() -> None:
    group = engines(4)
    non_proposer = group[0] if group[0].proposer(1, 0) != group[0].key else group[1]
    non_proposer.start(0.0)
    non_proposer.submit(0.0, add_op(1))
    first = non_proposer._timers["propose"][0]
    non_proposer.handle_timer(first)  # propose timeout: prevote nil
    # drive it to round 1 with nil prevote/precommit quorums from the others
    ids = identities(4)
    for ident in ids:
        if ident.signing_public == non_proposer.key:
            continue
        for step in (Step.PREVOTE, Step.PRECOMMIT):
            non_proposer.receive(
                first, Vote.create(ident.sign, ident.signing_public, SESSION, step, 1, 0, NIL)
            )
    assert non_proposer.round == 1
    second = non_proposer._timers["propose"][0] - first
    assert second > first


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=20), st.data())
def test_garbage_never_raises_out_of_the_engine(blobs: list[bytes], data: st.DataObject) -> None:
    group = engines(4)
    eng = group[0]
    eng.start(0.0)
    group[1].start(0.0)
    group[1].submit(0.0, add_op(3))
    valid = [encode_message(SESSION, m) for m in group[1].outbox()]
    for blob in blobs:
        eng.receive_payload(0.0, blob)
        eng.receive_payload(0.0, bytes([1]) + SESSION + blob)
    for payload in valid:
        mutated = bytearray(payload)
        i = data.draw(st.integers(0, len(mutated) - 1))
        mutated[i] ^= data.draw(st.integers(1, 255))
        eng.receive_payload(0.0, bytes(mutated))
    eng.handle_timer(100.0)
    assert eng.height == 0


def test_restart_reemits_the_stored_vote_and_never_signs_another(tmp_path: Path) -> None:
    path = tmp_path / "v.sqlite"
    ids = identities(4)
    keys = [i.signing_public for i in ids]
    me = ids[0]
    block_hash = b"\x42" * 32
    stored = Vote.create(me.sign, me.signing_public, SESSION, Step.PREVOTE, 1, 0, block_hash)
    Store(path).record_signature(SESSION, 1, 0, Step.PREVOTE, stored.encode())
    eng = ConsensusEngine(SESSION, me, keys, LedgerApp(), None, Store(path))
    eng.start(0.0)
    assert eng.outbox() == [stored]  # it may never have left before the crash
    # a valid proposal for (1, 0) arrives: prevoting it would be a second prevote
    proposer_key = eng.proposer(1, 0)
    proposer = ids[keys.index(proposer_key)]
    ops = (Operation.create(proposer.sign, proposer_key, SESSION, 1, add_op(1)),)
    app = LedgerApp()
    ctx = BlockContext(1, proposer_key, tuple(sorted(keys)))
    st1 = app.end_block(app.apply(app.initial_state(keys), proposer_key, add_op(1), ctx), ctx)
    state_hash = chain_state_hash(
        {proposer_key: 1}, frozenset(), app.state_hash(st1), tuple(sorted(keys))
    )
    header = BlockHeader(1, proposer_key, eng.last_block_hash, state_hash, body_hash(ops, ()))
    block = Block(header, ops)
    sig = proposer.sign(proposal_signing_bytes(SESSION, 1, 0, -1, block.hash))
    eng.receive(0.1, Proposal(1, 0, -1, block, sig))
    prevotes = [m for m in eng.outbox() if isinstance(m, Vote) and m.step is Step.PREVOTE]
    assert prevotes == []  # it resumed in the prevote step of round 0
    # the guard itself: a different message for the same (height, round, step) is refused
    assert not eng._may_sign(0, Step.PREVOTE, b"another vote")
    assert eng._may_sign(0, Step.PREVOTE, stored.encode())
    assert eng.stats["sign_refused"] == 1
    rec = Store(path).last_signature(SESSION)
    assert rec is not None and rec.message == stored.encode()


def test_certificate_of_commit_verifies_alone() -> None:
    group = engines(4)
    for e in group:
        e.start(0.0)
    group[2].submit(0.0, add_op(9))
    exchange(group, 0.0)
    cert = group[0].last_certificate
    assert isinstance(cert, CommitCertificate)
    assert cert.verify([e.key for e in group], SESSION)
    assert cert.block_hash == group[3].last_block_hash


def test_a_partitioned_node_waits_in_its_round_and_old_rounds_are_forgotten() -> None:
    config = EngineConfig(keep_rounds=3)
    eng = engines(4, config)[0]
    eng.start(0.0)
    eng.submit(0.0, add_op(1))
    now = 0.0
    for _ in range(5):  # alone: no quorum, so no round change however long it waits
        now = eng.next_timer() or now
        eng.handle_timer(now)
    assert eng.round == 0
    others = [i for i in identities(4) if i.signing_public != eng.key]
    for r in range(30):  # the others vote nil round after round
        for ident in others:
            for step in (Step.PREVOTE, Step.PRECOMMIT):
                eng.receive(
                    now, Vote.create(ident.sign, ident.signing_public, SESSION, step, 1, r, NIL)
                )
        now = eng.next_timer() or now
        eng.handle_timer(now)
    assert eng.round >= 29
    assert (
        max(r for r, _ in eng._hs.votes) - min(r for r, _ in eng._hs.votes)
        <= config.keep_rounds + 1
    )


_KEYS = [i.signing_public for i in identities(4)]
_hashes = st.binary(min_size=32, max_size=32)
_keys = st.sampled_from(_KEYS) | _hashes
_sigs = st.binary(min_size=64, max_size=64)
_small = st.integers(0, 5) | st.integers(0, 2**32 - 1)
_votes = st.builds(
    Vote,
    st.sampled_from([Step.PREVOTE, Step.PRECOMMIT]),
    _small,
    _small,
    _hashes | st.just(NIL),
    _keys,
    _sigs,
)
_ops = st.builds(Operation, _keys, _small, st.binary(max_size=8), _sigs)


@st.composite
def _blocks(draw: st.DrawFn) -> Block:
    ops = tuple(draw(st.lists(_ops, max_size=3)))
    header = BlockHeader(
        draw(_small), draw(_keys), draw(_hashes), draw(_hashes), body_hash(ops, ())
    )
    return Block(header, ops)


@st.composite
def _certs(draw: st.DrawFn) -> CommitCertificate:
    n = draw(st.integers(0, 6))
    signers = tuple(sorted(draw(st.sets(st.integers(0, max(0, n - 1)), max_size=n))))
    return CommitCertificate(
        draw(_small), draw(_small), draw(_hashes), n, signers, tuple(draw(_sigs) for _ in signers)
    )


_structured = st.one_of(
    _votes,
    _ops,
    st.builds(lambda h, r, b, s: Proposal(h, r, -1, b, s), _small, _small, _blocks(), _sigs),
    st.builds(lambda a, b: Evidence(a, b), _votes, _votes),
    st.builds(Commit, _blocks(), _certs()),
    st.builds(
        lambda c, b: SnapshotResponse(c, b),
        _certs(),
        st.binary(max_size=64),
    ),
    st.builds(lambda h: CommitRequest(h), _small),
    st.builds(lambda h: SnapshotRequest(h), _small),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_structured, max_size=25), st.floats(0, 100))
def test_well_formed_hostile_messages_never_raise_or_commit(msgs: list[object], dt: float) -> None:
    group = engines(4)
    eng = group[0]
    eng.start(0.0)
    eng.submit(0.0, add_op(2))
    for msg in msgs:
        eng.receive(0.0, msg)  # type: ignore[arg-type]
    eng.handle_timer(dt)
    eng.handle_timer(dt * 2 + 10)
    assert eng.height == 0  # nothing signed by a quorum was ever shown to it


class DeadlineLedger(LedgerApp):
    """The ledger, plus a deadline: the first op opens a window that closes 4 heights later."""

    def apply(
        self, state: LedgerState, submitter: bytes, op: bytes, ctx: BlockContext
    ) -> LedgerState:
        state = super().apply(state, submitter, op, ctx)
        return (
            state
            if state.banned
            else dataclasses.replace(state, banned=(b"deadline" + ctx.height.to_bytes(24, "big"),))
        )

    def end_block(self, state: LedgerState, ctx: BlockContext) -> LedgerState:
        state = super().end_block(state, ctx)
        if state.banned and ctx.height >= int.from_bytes(state.banned[0][8:], "big") + 4:
            return dataclasses.replace(state, banned=())
        return state


def test_idle_chain_makes_empty_blocks_only_while_a_deadline_is_pending() -> None:
    ids = identities(4)
    keys = [i.signing_public for i in ids]
    group = [
        ConsensusEngine(SESSION, i, keys, DeadlineLedger(), EngineConfig(idle_block_interval=0.5))
        for i in ids
    ]
    for e in group:
        e.start(0.0)
    group[0].submit(0.0, add_op(1))
    now = exchange(group, 0.0)
    assert all(e.height >= 5 for e in group)  # empty blocks carried the deadline through
    assert group[0].state.banned == ()  # ... and it expired
    assert all(e.next_timer() is None for e in group)  # then the chain rests
    assert sum(e.stats["idle_blocks"] for e in group) > 0
    assert now > 1.0


def test_known_blocks_are_what_short_vote_sets_may_name() -> None:
    group = engines(4)
    for e in group:
        e.start(0.0)
    by_key = _by_key(group)
    proposer = by_key[group[0].proposer(1, 0)]
    proposer.submit(0.0, add_op(5))
    out = proposer.outbox()
    prop = next(x for x in out if isinstance(x, Proposal))
    prevote = next(x for x in out if isinstance(x, Vote))
    block = prop.block.hash
    a, b = [e for e in group if e is not proposer][:2]
    assert a.known_blocks(1) == [NIL]
    a.receive(0.0, prop)  # the proposal names it
    assert set(a.known_blocks(1)) == {NIL, block}
    assert a.known_blocks(1, block[:4]) == [block]
    assert a.known_blocks(1, b"\xff" * 4) == []
    assert a.known_blocks(2) == [NIL]
    b.receive(0.0, prevote)  # a verified vote names it, the proposal still on its way
    assert block in b.known_blocks(1)
    forged = dataclasses.replace(prevote, block_hash=b"\x05" * 32)  # signature no longer fits
    b.receive(0.0, forged)
    assert b"\x05" * 32 not in b.known_blocks(1)
    exchange(group, 0.0)
    h = a.height
    assert h >= 1 and a.known_blocks(h) == sorted({NIL, a.last_block_hash})  # late votes
    assert a.known_blocks(h + 1, block[:4]) == []


def test_a_forged_far_proposal_alone_starts_no_catch_up() -> None:
    """A proposal far beyond the next height cannot be verified (the set of that height is
    a guess), so one is only a claim of its proposer: f+1 validators must be ahead before
    a node asks for anything. Before, one forged proposal set the target and the node kept
    asking for snapshots or blocks nobody had."""
    group = engines(4)
    for e in group:
        e.start(0.0)
    node = group[3]
    node.outbox()

    def far(proposer: bytes, height: int) -> Proposal:
        header = BlockHeader(height, proposer, b"\x00" * 32, b"\x00" * 32, body_hash((), ()))
        return Proposal(height, 0, -1, Block(header, ()), b"\x01" * 64)

    asks = (CommitRequest, SnapshotRequest)
    node.receive(0.0, far(group[1].key, 50))  # one validator's (forged) claim
    node.receive(1.0, far(b"\x07" * 32, 60))  # a stranger's
    assert not [m for m in node.outbox() if isinstance(m, asks)]
    node.receive(2.0, far(group[2].key, 50))  # f+1 = 2 validators ahead: catch up
    assert [m for m in node.outbox() if isinstance(m, asks)]


def test_a_forged_far_commit_starts_no_catch_up() -> None:
    """A commit whose certificate does not verify is nobody's word: anyone can send one.
    Before, one far forged commit set the catch-up target, and the node asked for a
    snapshot every request_interval. A state announcement is its sender's claim of being
    ahead: f+1 validators must claim it."""
    group = engines(4)
    for e in group:
        e.start(0.0)
    node = group[3]
    node.outbox()
    asks = (CommitRequest, SnapshotRequest)
    for height, t in ((200, 0.0), (5, 1.0)):  # beyond max_future_commits, and near
        header = BlockHeader(height, group[0].key, b"\x00" * 32, b"\x00" * 32, body_hash((), ()))
        block = Block(header, ())
        cert = CommitCertificate(height, 0, block.hash, 4, (0, 1, 2), (b"\x01" * 64,) * 3)
        node.receive(t, Commit(block, cert))
    assert not [m for m in node.outbox() if isinstance(m, asks)]
    assert node.stats["hint_unverified"] == 1 and node.stats["drop_commit_unverified"] == 1
    ann = StateAnnounce(6, b"\x00" * 32, b"\x00" * 32)
    node.note_announcement(5.0, group[1].key, ann)  # one validator's claim: not enough
    assert not [m for m in node.outbox() if isinstance(m, asks)]
    node.note_announcement(6.0, group[2].key, ann)  # f+1 = 2 validators ahead: catch up
    assert [m for m in node.outbox() if isinstance(m, asks)]
