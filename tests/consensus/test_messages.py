"""Consensus message codec: round trips, determinism, caps, and garbage that only raises ours."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ble_bridge.wire import messages as m
from ble_bridge.wire.identity import Identity, verify_signature
from ble_bridge.wire.packet import WireError

SESSION = hashlib.sha256(b"session").digest()[:16]
IDS = [Identity.from_seed(bytes([i])) for i in range(4)]
KEYS = sorted(i.signing_public for i in IDS)
BY_KEY = {i.signing_public: i for i in IDS}


def _op(i: int, nonce: int, body: bytes) -> m.Operation:
    ident = IDS[i]
    return m.Operation.create(ident.sign, ident.signing_public, SESSION, nonce, body)


def _vote(i: int, step: m.Step, h: int, r: int, block: bytes) -> m.Vote:
    ident = IDS[i]
    return m.Vote.create(ident.sign, ident.signing_public, SESSION, step, h, r, block)


def _block(h: int, ops: tuple[m.Operation, ...], ev: tuple[m.Evidence, ...] = ()) -> m.Block:
    header = m.BlockHeader(h, KEYS[0], b"\x01" * 32, b"\x02" * 32, m.body_hash(ops, ev))
    return m.Block(header, ops, ev)


def _cert(h: int, block: bytes) -> m.CommitCertificate:
    signers = (0, 1, 2)
    sigs = tuple(
        BY_KEY[KEYS[i]].sign(m.vote_signing_bytes(SESSION, h, 0, m.Step.PRECOMMIT, block))
        for i in signers
    )
    return m.CommitCertificate(h, 0, block, 4, signers, sigs)


def _samples() -> list[m.Message]:
    ops = tuple(_op(i % 4, i, b"bet %d" % i * 3) for i in range(20))
    block = _block(5, ops)
    ev = m.Evidence.of(
        _vote(1, m.Step.PREVOTE, 3, 1, b"\x05" * 32), _vote(1, m.Step.PREVOTE, 3, 1, m.NIL)
    )
    sig = IDS[0].sign(m.proposal_signing_bytes(SESSION, 5, 2, 1, block.hash))
    return [
        m.Proposal(5, 2, 1, block, sig),
        m.Proposal(5, 0, -1, _block(5, (), (ev,)), sig),
        _vote(2, m.Step.PRECOMMIT, 7, 0, block.hash),
        _vote(3, m.Step.PREVOTE, 7, 4, m.NIL),
        ops[3],
        m.StateAnnounce(9, b"\x07" * 32, b"\x08" * 32),
        m.SnapshotRequest(12),
        m.SnapshotResponse(_cert(5, block.hash), b"snapshot-bytes" * 50),
        m.Commit(block, _cert(5, block.hash)),
        m.CommitRequest(4),
        ev,
        _cert(5, block.hash),
        m.CertificateRequest(5),
        m.CompactProposal.of(m.Proposal(5, 2, 1, block, sig)),
        m.CompactProposal.of(m.Proposal(5, 2, 1, block, sig), lambda op: op.nonce % 2 == 0),
        m.CompactProposal.of(m.Proposal(5, 0, -1, _block(5, (), (ev,)), sig)),
        m.ProposalRequest(5, 3),
    ]


@pytest.mark.parametrize("msg", _samples(), ids=lambda x: type(x).__name__)
def test_every_kind_round_trips_to_identical_bytes(msg: m.Message) -> None:
    payload = m.encode_message(SESSION, msg)
    session, back = m.decode_message(payload)
    assert session == SESSION
    assert back == msg
    assert m.encode_message(SESSION, back) == payload


def test_vote_is_141_bytes_and_envelope_adds_18() -> None:
    vote = _vote(0, m.Step.PREVOTE, 1, 0, hashlib.sha256(b"block").digest())
    assert len(vote.encode()) == m.VOTE_LEN == 141
    assert len(m.encode_message(SESSION, vote)) == 141 + 18


def test_large_compressible_block_is_sent_compressed() -> None:
    ops = tuple(_op(0, i, b"\x00" * 200) for i in range(30))
    block = _block(1, ops)
    prop = m.Proposal(1, 0, -1, block, b"\x00" * 64)
    payload = m.encode_message(SESSION, prop)
    assert payload[17] & m.COMPRESSED_BIT
    assert len(payload) < len(prop.encode())
    assert m.decode_message(payload)[1] == prop


def test_vote_signature_survives_regossip_inside_certificate() -> None:
    block = b"\x0a" * 32
    cert = _cert(3, block)
    assert cert.verify(KEYS, SESSION)
    back = m.CommitCertificate.decode(cert.encode())
    assert back.verify(KEYS, SESSION)
    for vote in back.precommits(KEYS):
        # The same signature is a valid stand-alone precommit.
        assert m.decode_message(m.encode_message(SESSION, vote))[1] == vote


def test_certificate_fails_for_other_session_block_or_too_few_signers() -> None:
    block = b"\x0a" * 32
    cert = _cert(3, block)
    assert not cert.verify(KEYS, b"\x01" * 16)
    assert not cert.verify([*KEYS[:3], b"\x00" * 32], SESSION)
    short = m.CommitCertificate(3, 0, block, 4, cert.signers[:2], cert.signatures[:2])
    assert not short.verify(KEYS, SESSION)
    moved = m.CommitCertificate(4, 0, block, 4, cert.signers, cert.signatures)
    assert not moved.verify(KEYS, SESSION)


def test_oversized_block_is_refused_before_decoding_ops() -> None:
    limits = m.MessageLimits(max_ops_per_block=5)
    block = _block(1, tuple(_op(0, i, b"x") for i in range(6)))
    with pytest.raises(m.MessageTooLarge):
        m.Block.decode(block.encode(), limits)
    with pytest.raises(m.MessageTooLarge):
        m.Block.decode(block.encode(), m.MessageLimits(max_block_bytes=100))


def test_declared_snapshot_length_over_cap_is_refused() -> None:
    resp = m.SnapshotResponse(_cert(1, b"\x01" * 32), b"s" * 2000)
    with pytest.raises(m.MessageTooLarge):
        m.decode_message(m.encode_message(SESSION, resp), m.MessageLimits(max_snapshot_bytes=1000))


def test_unknown_version_and_kind_are_refused() -> None:
    payload = bytearray(m.encode_message(SESSION, m.CommitRequest(1)))
    payload[0] = 2
    with pytest.raises(m.UnknownVersion):
        m.decode_message(bytes(payload))
    payload[0] = 1
    payload[17] = 0x3F
    with pytest.raises(m.UnknownKind):
        m.decode_message(bytes(payload))


def test_evidence_is_canonical_whoever_finds_it() -> None:
    a = _vote(1, m.Step.PRECOMMIT, 3, 0, b"\x05" * 32)
    b = _vote(1, m.Step.PRECOMMIT, 3, 0, b"\x06" * 32)
    assert m.Evidence.of(a, b) == m.Evidence.of(b, a)
    assert m.Evidence.of(a, b).verify(SESSION, KEYS)
    assert not m.Evidence.of(a, a).verify(SESSION, KEYS)


# -- hypothesis ----------------------------------------------------------------------

hashes = st.binary(min_size=32, max_size=32)
votes = st.builds(
    m.Vote,
    st.sampled_from([m.Step.PREVOTE, m.Step.PRECOMMIT]),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**32 - 1),
    hashes,
    hashes,
    st.binary(min_size=64, max_size=64),
)
ops_st = st.builds(
    m.Operation,
    hashes,
    st.integers(0, 2**64 - 1),
    st.binary(max_size=300),
    st.binary(min_size=64, max_size=64),
)


@st.composite
def blocks(draw: st.DrawFn) -> m.Block:
    ops = tuple(draw(st.lists(ops_st, max_size=8)))
    ev = tuple(m.Evidence(a, b) for a, b in draw(st.lists(st.tuples(votes, votes), max_size=2)))
    header = m.BlockHeader(
        draw(st.integers(0, 2**64 - 1)), draw(hashes), draw(hashes), draw(hashes), draw(hashes)
    )
    return m.Block(header, ops, ev)


@st.composite
def certs(draw: st.DrawFn) -> m.CommitCertificate:
    n = draw(st.integers(1, 40))
    signers = tuple(sorted(draw(st.sets(st.integers(0, n - 1)))))
    sigs = tuple(draw(st.binary(min_size=64, max_size=64)) for _ in signers)
    return m.CommitCertificate(
        draw(st.integers(0, 2**64 - 1)),
        draw(st.integers(0, 2**32 - 1)),
        draw(hashes),
        n,
        signers,
        sigs,
    )


@st.composite
def proposals(draw: st.DrawFn) -> m.Proposal:
    rnd = draw(st.integers(0, 2**31 - 1))
    pol = draw(st.integers(-1, rnd - 1))
    return m.Proposal(
        draw(st.integers(0, 2**64 - 1)),
        rnd,
        pol,
        draw(blocks()),
        draw(st.binary(min_size=64, max_size=64)),
    )


messages_st: st.SearchStrategy[m.Message] = st.one_of(
    votes,
    ops_st,
    proposals(),
    st.builds(m.Evidence, votes, votes),
    st.builds(m.StateAnnounce, st.integers(0, 2**64 - 1), hashes, hashes),
    st.builds(m.SnapshotRequest, st.integers(0, 2**64 - 1)),
    st.builds(m.CommitRequest, st.integers(0, 2**64 - 1)),
    st.builds(m.SnapshotResponse, certs(), st.binary(max_size=500)),
    st.builds(m.Commit, blocks(), certs()),
    certs(),
    st.builds(m.CertificateRequest, st.integers(0, 2**64 - 1)),
    st.builds(m.CompactProposal.of, proposals()),
    st.builds(m.ProposalRequest, st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1)),
)


@settings(max_examples=200, deadline=None)
@given(messages_st)
def test_any_message_round_trips_deterministically(msg: m.Message) -> None:
    payload = m.encode_message(SESSION, msg)
    assert m.encode_message(SESSION, msg) == payload
    _, back = m.decode_message(payload)
    assert back == msg
    assert m.encode_message(SESSION, back) == payload


@settings(max_examples=200, deadline=None)
@given(messages_st, st.data())
def test_truncated_message_is_rejected(msg: m.Message, data: st.DataObject) -> None:
    payload = m.encode_message(SESSION, msg)
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(m.MessageError):
        m.decode_message(payload[:cut])


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_message_errors(data: bytes) -> None:
    for blob in (data, bytes([1]) + SESSION + data):
        try:
            m.decode_message(blob)
        except m.MessageError as exc:
            assert isinstance(exc, WireError) and exc.reason


@settings(max_examples=300, deadline=None)
@given(messages_st, st.data())
def test_bit_flips_raise_only_message_errors(msg: m.Message, data: st.DataObject) -> None:
    payload = bytearray(m.encode_message(SESSION, msg))
    i = data.draw(st.integers(0, len(payload) - 1))
    payload[i] ^= data.draw(st.integers(1, 255))
    with contextlib.suppress(m.MessageError):
        m.decode_message(bytes(payload))


def test_compact_proposal_rebuilds_the_signed_block_from_its_ops() -> None:
    ops = tuple(_op(i % 4, i, b"op %d" % i) for i in range(6))
    block = _block(5, ops)
    sig = IDS[0].sign(m.proposal_signing_bytes(SESSION, 5, 0, -1, block.hash))
    full = m.Proposal(5, 0, -1, block, sig)
    compact = m.CompactProposal.of(full)
    assert len(m.encode_message(SESSION, compact)) < len(m.encode_message(SESSION, full)) / 2
    assert compact.signing_bytes(SESSION) == full.signing_bytes(SESSION)
    assert compact.rebuild(ops) == full
    assert not compact.rebuild(ops[::-1]).block.body_matches()


# -- batches and vote sets (neighbour gossip) ------------------------------------------

BATCHABLE = [x for x in _samples() if m.kind_of(x) in m.BATCHABLE_KINDS]


def _item(msg: m.Message) -> bytes:
    return m.encode_message(SESSION, msg)[m.ENVELOPE_PREFIX :]


@given(st.lists(st.sampled_from(BATCHABLE), min_size=1, max_size=12))
def test_batch_splits_into_the_standalone_payloads(msgs: list[m.Message]) -> None:
    payload = m.encode_batch(SESSION, [_item(x) for x in msgs])
    if len(msgs) == 1:
        assert payload == m.encode_message(SESSION, msgs[0])  # one item travels alone
        return
    assert m.payload_kind(payload) is m.Kind.BATCH
    parts = m.split_batch(payload)
    assert parts == [m.encode_message(SESSION, x) for x in msgs]
    assert [m.decode_message(p)[1] for p in parts] == msgs


def test_batch_of_votes_is_compressed_by_what_they_share() -> None:
    block = b"\x07" * 32
    votes = [_vote(i, m.Step.PREVOTE, 9, 0, block) for i in range(4)]
    payload = m.encode_batch(SESSION, [_item(v) for v in votes])
    assert payload[m.ENVELOPE_PREFIX] & m.COMPRESSED_BIT
    assert len(payload) < sum(len(_item(v)) for v in votes)


def test_batch_refuses_unsigned_kinds_nesting_and_garbage() -> None:
    ann = _item(m.StateAnnounce(3, b"\x01" * 32, b"\x02" * 32))
    vote = _item(_vote(0, m.Step.PREVOTE, 1, 0, m.NIL))
    with pytest.raises(m.MessageError, match="may not travel"):
        m.split_batch(m.encode_batch(SESSION, [vote, ann]))
    inner = m.encode_batch(SESSION, [vote, vote])
    with pytest.raises(m.MessageError):
        m.split_batch(m.encode_batch(SESSION, [vote, inner[m.ENVELOPE_PREFIX :]]))
    with pytest.raises(m.MessageError):
        m.decode_message(inner)  # a batch is not one message
    many = m.encode_batch(SESSION, [vote] * 300)
    with pytest.raises(m.MessageTooLarge):
        m.split_batch(many)


def test_vote_set_indices_point_into_the_set_of_the_votes_height() -> None:
    # A late vote of the height before a set change, sent by a neighbour that already
    # decides the next height with a larger set, to one still deciding it: expanded
    # against the receiver's current set, its voters became other keys (bad signatures)
    from collections import Counter

    from ble_bridge.bridge.compact import compact_items
    from ble_bridge.gossip import Item

    old = tuple(sorted(KEYS[:3]))  # the set of height 4
    new = tuple(KEYS)  # from height 5 on (a fourth seat added)
    votes = [_vote(IDS.index(BY_KEY[k]), m.Step.PRECOMMIT, 4, 0, b"\x09" * 32) for k in old]
    items = [Item(v.signature[:16], b"", v.height, v) for v in votes]
    [item] = compact_items(
        items,
        members=new,
        index=new.index,
        proposer=lambda h, r: new[0],
        known=None,
        short_sets=False,
        counters=Counter(),
        set_at=lambda h: old if h <= 4 else new,
    )
    back = m.expand_vote_set(item, lambda h: old if h == 4 else None)
    assert back == votes
    assert all(verify_signature(v.validator, v.signature, v.signing_bytes(SESSION)) for v in back)
    ahead = m.encode_vote_set([_vote(0, m.Step.PREVOTE, 9, 0, b"\x09" * 32)], KEYS.index, 4)
    with pytest.raises(m.UnresolvedBlock):  # a height whose set we do not know yet: held
        m.expand_vote_set(ahead, lambda h: old if h == 4 else None)


def test_vote_set_expands_to_the_signed_votes() -> None:
    block = b"\x09" * 32
    votes = [_vote(i, m.Step.PRECOMMIT, 4, 2, block) for i in (3, 0, 2)]
    item = m.encode_vote_set(votes, KEYS.index, len(KEYS))
    # kind, step, height and round (one varint byte each), hash, count, 3 x (index, sig)
    assert len(item) == 1 + 1 + 1 + 1 + 32 + 1 + 3 * 65
    back = m.expand_vote_set(item, KEYS)
    assert back == votes
    assert all(verify_signature(v.validator, v.signature, v.signing_bytes(SESSION)) for v in back)
    with pytest.raises(m.MessageError):
        m.expand_vote_set(item, KEYS[:2])  # index 3 of 2 validators
    with pytest.raises(ValueError):
        m.encode_vote_set([*votes, _vote(1, m.Step.PREVOTE, 4, 2, block)], KEYS.index, len(KEYS))


def test_short_vote_sets_name_the_block_by_a_prefix_the_receiver_expands() -> None:
    block = b"\x09" * 32
    votes = [_vote(i, m.Step.PREVOTE, 300, 2, block) for i in (1, 3)]
    full = m.encode_vote_set(votes, KEYS.index, len(KEYS))
    item = m.encode_vote_set(votes, KEYS.index, len(KEYS), short=True)
    assert len(item) == len(full) - 28 and item[1] == m.SHORT_BLOCK_FLAG | m.Step.PREVOTE
    asked: list[tuple[int, bytes]] = []

    def known(height: int, prefix: bytes) -> list[bytes]:
        asked.append((height, prefix))
        return [m.NIL, b"\x08" * 32, block]

    assert m.expand_vote_set(item, KEYS, resolve=known) == votes
    assert asked == [(300, block[:4])]
    assert m.expand_vote_set(full, KEYS, resolve=known) == votes  # full: never asks
    assert len(asked) == 1
    with pytest.raises(m.UnresolvedBlock):
        m.expand_vote_set(item, KEYS)  # nobody to ask
    with pytest.raises(m.UnresolvedBlock):
        m.expand_vote_set(item, KEYS, resolve=lambda h, p: [b"\x08" * 32])
    # two known blocks share the prefix (someone ground a hash): votes for each, and only
    # those for the signed block verify
    twin = block[:4] + bytes(28)
    both = m.expand_vote_set(item, KEYS, resolve=lambda h, p: [twin, block])
    good = [v for v in both if verify_signature(v.validator, v.signature, v.signing_bytes(SESSION))]
    assert len(both) == 4 and good == votes
    # a malformed short set is malformed, not unresolved (it is never kept for later)
    for bad in (item[:-1], item + b"\x00", item[:1] + bytes((0x80 | 7,)) + item[2:]):
        with pytest.raises(m.MessageError) as err:
            m.expand_vote_set(bad, KEYS, resolve=lambda h, p: [])
        assert not isinstance(err.value, m.UnresolvedBlock)
    nil = m.encode_vote_set([_vote(0, m.Step.PRECOMMIT, 5, 0, m.NIL)], KEYS.index, 4, short=True)
    assert m.expand_vote_set(nil, KEYS, resolve=lambda h, p: [m.NIL])[0].block_hash == m.NIL


@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from([m.Step.PREVOTE, m.Step.PRECOMMIT])),
        min_size=1,
        max_size=4,
        unique_by=lambda t: t[0],
    ),
    st.integers(0, 2**40),
    st.integers(0, 2**32 - 1),
    st.sampled_from([m.NIL, b"\x01" * 32, hashlib.sha256(b"b").digest()]),
)
def test_short_and_full_vote_sets_expand_to_the_same_votes(
    who: list[tuple[int, m.Step]], height: int, rnd: int, block: bytes
) -> None:
    step = who[0][1]
    votes = [
        m.Vote(step, height, rnd, block, IDS[i].signing_public, bytes([i]) * 64) for i, _ in who
    ]
    known = [m.NIL, b"\x01" * 32, hashlib.sha256(b"b").digest()]
    for short in (False, True):
        item = m.encode_vote_set(votes, KEYS.index, len(KEYS), short=short)
        assert m.expand_vote_set(item, KEYS, resolve=lambda h, p: known) == votes


@given(st.binary(max_size=400))
def test_random_batches_and_vote_sets_raise_only_message_errors(data: bytes) -> None:
    for kind in (m.Kind.BATCH, m.Kind.BATCH | m.COMPRESSED_BIT, m.Kind.VOTE_SET):
        payload = bytes((m.VERSION,)) + SESSION + bytes((kind,)) + data
        with contextlib.suppress(m.MessageError):
            m.split_batch(payload)
        with contextlib.suppress(m.MessageError):
            m.expand_vote_set(payload[m.ENVELOPE_PREFIX :], KEYS)
        with contextlib.suppress(m.MessageError):  # short sets: expanded against a guess
            m.expand_vote_set(
                payload[m.ENVELOPE_PREFIX :], KEYS, resolve=lambda h, p: [p + bytes(28), m.NIL]
            )


@given(st.integers(0, 3), st.integers(1, 2**63), st.binary(max_size=300))
def test_operation_ref_expands_to_the_signed_operation(i: int, nonce: int, body: bytes) -> None:
    op = _op(i, nonce, body)
    item = m.encode_operation_ref(op, KEYS.index, len(KEYS))
    varints = len(m._uvarint(nonce)) + len(m._uvarint(len(body)))
    # key (32) -> index (1), nonce (8) and lp (4) -> varints
    assert len(item) == 1 + len(op.encode()) - 32 + 1 - 12 + varints
    back = m.expand_operation_ref(item, KEYS)
    assert back == op and back.op_id == op.op_id
    assert verify_signature(back.submitter, back.signature, back.signing_bytes(SESSION))
    with pytest.raises(m.MessageError):
        m.expand_operation_ref(item, KEYS[: KEYS.index(op.submitter)])  # index out of range
    with pytest.raises(m.MessageError):
        m.decode_message(bytes((m.VERSION,)) + SESSION + item)  # needs the validator set


@given(st.integers(0, 2**64 - 1))
def test_varints_round_trip_in_their_shortest_form(n: int) -> None:
    data = m._uvarint(n)
    assert len(data) == max(1, -(-n.bit_length() // 7))
    r = m._Reader(data)
    assert r.uvarint("n") == n
    r.end()
    if len(data) < 10:  # the same value padded with a zero group is refused
        padded = data[:-1] + bytes((data[-1] | 0x80, 0))
        with pytest.raises(m.MessageError, match="shortest"):
            m._Reader(padded).uvarint("n")
    with pytest.raises(ValueError):
        m._uvarint(2**64)
    with pytest.raises(m.MessageError):
        m._Reader(b"\xff" * 9 + b"\x02").uvarint("n")  # 2**64 and above
    with pytest.raises(m.MessageError):
        m._Reader(b"\x80\x80").uvarint("n")  # truncated


def test_large_validator_sets_take_two_byte_indexes() -> None:
    many = [bytes([i // 256, i % 256]) * 16 for i in range(300)]
    many.sort()
    block = b"\x05" * 32
    sig = b"\x01" * 64
    votes = [m.Vote(m.Step.PREVOTE, 7, 0, block, many[i], sig) for i in (0, 299)]
    item = m.encode_vote_set(votes, many.index, len(many))
    assert len(item) == 1 + 1 + 1 + 1 + 32 + 1 + 2 * (2 + 64)
    assert m.expand_vote_set(item, many) == votes
    op = m.Operation(many[280], 5, b"+abc", sig)
    assert m.expand_operation_ref(m.encode_operation_ref(op, many.index, len(many)), many) == op
    with pytest.raises(ValueError):
        m.encode_vote_set(votes * 128, many.index, len(many))  # 256 > MAX_VOTE_SET


@given(st.binary(max_size=200))
def test_random_operation_refs_raise_only_message_errors(data: bytes) -> None:
    with contextlib.suppress(m.MessageError):
        m.expand_operation_ref(bytes((m.Kind.OPERATION_REF,)) + data, KEYS)


def test_neighbour_frames_carry_a_session_tag_and_undo_exactly() -> None:
    vote = _vote(0, m.Step.PREVOTE, 3, 0, b"\x04" * 32)
    payload = m.encode_message(SESSION, vote)
    short = m.to_neighbour(payload)
    assert short[0] == m.NEIGHBOUR_VERSION and len(short) == len(payload) - 12
    assert m.neighbour_tag(short) == SESSION[: m.SESSION_TAG_LEN]
    assert m.from_neighbour(short, SESSION) == payload
    other = bytes(16)
    with pytest.raises(m.MessageError, match="tag"):
        m.from_neighbour(short, other)
    with pytest.raises(m.UnknownVersion):
        m.neighbour_tag(payload)  # a version-1 envelope is not a neighbour frame
    with pytest.raises(ValueError):
        m.to_neighbour(short)


@given(st.binary(max_size=40))
def test_random_neighbour_frames_raise_only_message_errors(data: bytes) -> None:
    with contextlib.suppress(m.MessageError):
        m.from_neighbour(bytes((m.NEIGHBOUR_VERSION,)) + data, SESSION)
    with contextlib.suppress(m.MessageError):
        m.neighbour_tag(data)


@settings(max_examples=100, deadline=None)
@given(proposals(), st.booleans())
def test_proposal_ref_expands_to_the_compact_proposal(p: m.Proposal, inline: bool) -> None:
    block = dataclasses.replace(
        p.block, header=dataclasses.replace(p.block.header, height=p.height)
    )
    cp = m.CompactProposal.of(dataclasses.replace(p, block=block), lambda op: inline)
    item = m.encode_proposal_ref(cp)
    # the header's version (1), height (8) and proposer (32) stay home, numbers are varints
    assert len(item) < len(cp.encode()) - 41 + 1
    proposer = cp.header.proposer
    back = m.expand_proposal_ref(item, lambda h, r: proposer)
    assert back == cp and back.header.hash == cp.header.hash
    # a receiver whose rotation names someone else rebuilds another header: the proposer's
    # signature over the real one will not verify
    wrong = b"\x01" * 32 if proposer == bytes(32) else bytes(32)
    other = m.expand_proposal_ref(item, lambda h, r: wrong)
    assert other.header.hash != cp.header.hash
    with pytest.raises(m.MessageError):
        m.decode_message(bytes((m.VERSION,)) + SESSION + item)  # needs the rotation
    with pytest.raises(ValueError):
        m.encode_proposal_ref(dataclasses.replace(cp, height=cp.height ^ 1))


def test_proposal_ref_takes_every_round_a_compact_proposal_can_carry() -> None:
    block = _block(5, ())
    for rnd, pol in ((2**32 - 1, 2**31 - 1), (0, -1)):
        cp = m.CompactProposal.of(m.Proposal(5, rnd, pol, block, bytes(64)))
        assert m.expand_proposal_ref(m.encode_proposal_ref(cp), lambda h, r: KEYS[0]) == cp


@given(st.binary(max_size=300))
def test_random_proposal_refs_raise_only_message_errors(data: bytes) -> None:
    with contextlib.suppress(m.MessageError):
        m.expand_proposal_ref(bytes((m.Kind.PROPOSAL_REF,)) + data, lambda h, r: KEYS[0])
