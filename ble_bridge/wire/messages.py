"""Consensus messages <-> bytes: versioned, deterministic, size-capped before allocating.

Every integer is big-endian; ``lp(n)`` is a length prefix of ``n`` bytes followed by that
many bytes. A message decodes only from its canonical encoding (trailing bytes are refused),
so the same message always has the same bytes.

Envelope (the payload of a 0x1C mesh packet)::

    version(1)=1  session_id(16)  kind(1)  body
    kind bit 0x80 set: body is ``envelope.pack`` output (LZ4 size-prepended + crc32 +
    original size), used only when it is shorter than the raw body.

    version(1)=2  session_tag(4)  kind(1)  body
    a neighbour-gossip frame (TTL 1, between linked validators of the session): the
    session id cut to its first 4 bytes, 12 bytes a frame; the receiver restores the
    version-1 envelope from the one session of its own with that tag (none or several:
    dropped and counted). Everything inside is signed by its author over the full id.

Kinds and bodies::

    0x01 Proposal        height(8) round(4) pol_round(4, signed, -1 = none)
                         block: lp(4) signature(64)
    0x02 Vote            step(1: 1 prevote, 2 precommit) height(8) round(4)
                         block_hash(32, zeros = nil) validator(32) signature(64)   = 141
    0x03 Operation       submitter(32) nonce(8) body: lp(4) signature(64)
    0x04 StateAnnounce   height(8) state_hash(32) block_hash(32)
    0x05 SnapshotRequest height(8)              (the requester's committed height)
    0x06 SnapshotResp.   certificate: lp(4)  snapshot: lp(4) (consensus.snapshot blob)
    0x07 Commit          block: lp(4) certificate: lp(4)
    0x08 CommitRequest   height(8)              (the height whose block is wanted)
    0x09 Evidence        vote(141) vote(141)
    0x0A Certificate     certificate            (a commit certificate alone: answers a
                         validator still voting on a height that is decided, when it
                         likely holds the block already; far smaller than a Commit)
    0x0B CertificateReq. height(8)              (the asker holds a candidate block for
                         ``height`` and wants only its certificate)
    0x0C CompactProposal height(8) round(4) pol_round(4, signed) header(137)
                         op_count(4) (0x00 short_id(8) | 0x01 Operation)*
                         evidence_count(2) (vote vote)* signature(64)
                         (a Proposal whose ops travel as the first 8 bytes of their op ids,
                         except those the proposer sends inline, e.g. its own fresh ones;
                         receivers rebuild the block from their mempools; the signature and
                         block hash are the full block's)
    0x0D ProposalRequest height(8) round(4)     (a receiver could not rebuild a compact
                         proposal: anyone holding the full one answers with a Proposal)
    0x0E Batch           count(2) (lp(2) item)*  (neighbour gossip: several signed
                         messages in one frame; an item is a whole envelope minus its
                         version and session id, i.e. kind byte + body as it would travel
                         alone, so each item keeps its own dedup key; only signed kinds,
                         no nested batches; LZ4 over the whole batch finds the fields
                         votes share)
    0x0F VoteSet         step(1) height(v) round(v) block_hash(32) count(1)
                         (validator_index(i) signature(64))*
                         (votes of several validators for one block, 65 bytes a vote
                         instead of 141; the index is into the session's sorted validator
                         set, so only a member of the session can expand it into Votes;
                         travels in batches or alone. With 0x80 set in the step byte the
                         block is named by the first 4 bytes of its hash (block_ref(4)
                         instead of block_hash(32)): the receiver expands it against the
                         blocks it knows at that height and NIL, and keeps it a while if
                         it knows none yet; the signatures are over the full hash, so a
                         wrong expansion cannot verify)
    0x10 OperationRef    submitter_index(i) nonce(v) body_len(v) body signature(64)
                         (an Operation whose submitter is the session validator at that
                         index: ~43 bytes shorter; expanded like a VoteSet)
    0x11 ProposalRef     height(v) round(v) pol_round+1(v) prev_hash(32) state_hash(32)
                         body_hash(32) entries: count(v) (as in CompactProposal)
                         evidence: count(v) Evidence* signature(64)
                         (a CompactProposal without the header's version, height and
                         proposer, which the rotation names: ~57 bytes shorter; expanded
                         like a VoteSet)

    0x12 JoinRequest     key(32) nonce(8) buy_in(8) signature(64)
                         (a key asks to become a validator of the session; signed by
                         that key over "ble-bridge/join/v1" session_id key nonce buy_in;
                         a validator sponsors it as an AddValidator operation, see
                         consensus.validators)

    (v): unsigned LEB128 varint below 2**64, shortest form only (7 bits a byte, low
    first, high bit set while more follow); (i): an index into the sorted validator set,
    1 byte for sets of up to 256 validators, else 2 (big-endian).

    Block        header(137) op_count(4) Operation* evidence_count(2) (vote vote)*
    BlockHeader  version(1)=1 height(8) proposer(32) prev_hash(32) state_hash(32)
                 body_hash(32)     body_hash = SHA-256 of the encoded ops and evidence
    Certificate  height(8) round(4) block_hash(32) n(2) bitmap(ceil(n/8), bit i of byte
                 i//8 is 0x80 >> i%8 for validator i of the sorted set) signature(64)*

Signed preimages (domain-separated so a vote stays verifiable inside a certificate)::

    vote      b"ble-bridge/vote/v1"     session_id height(8) round(4) step(1) block_hash(32)
    proposal  b"ble-bridge/proposal/v1" session_id height(8) round(4) pol_round(4) hash(32)
    operation b"ble-bridge/op/v1"       session_id submitter(32) nonce(8) lp(4) body
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import envelope
from .identity import KEY_LEN, SIGNATURE_LEN, verify_signature
from .packet import WireError

VERSION = 1
SESSION_ID_LEN = 16
HASH_LEN = 32
NIL = b"\x00" * HASH_LEN
COMPRESSED_BIT = 0x80
COMPRESS_MIN = 64

VOTE_DOMAIN = b"ble-bridge/vote/v1"
PROPOSAL_DOMAIN = b"ble-bridge/proposal/v1"
OPERATION_DOMAIN = b"ble-bridge/op/v1"
BLOCK_DOMAIN = b"ble-bridge/block/v1"
BODY_DOMAIN = b"ble-bridge/body/v1"

_VOTE = struct.Struct(">BQI32s32s64s")
VOTE_LEN = _VOTE.size
_VOTE_SIGN = struct.Struct(">QIB")
_HEADER = struct.Struct(">BQ32s32s32s32s")
HEADER_LEN = _HEADER.size
_PROPOSAL_HEAD = struct.Struct(">QIi")
_OP_HEAD = struct.Struct(">32sQI")
_ANNOUNCE = struct.Struct(">Q32s32s")
_CERT_HEAD = struct.Struct(">QI32sH")
_U64 = struct.Struct(">Q")


class MessageError(WireError):
    """A consensus message or envelope is malformed."""

    reason = "bad_message"


class MessageTooLarge(MessageError):
    """A declared size exceeds a :class:`MessageLimits` cap."""

    reason = "oversized"


class UnknownVersion(MessageError):
    reason = "bad_version"


class UnknownKind(MessageError):
    reason = "unknown_kind"


class UnresolvedBlock(MessageError):
    """A well-formed VoteSet names its block by a hash prefix its receiver cannot expand
    (yet): no block it knows at that height starts with it."""

    reason = "unresolved_block"


@dataclass(frozen=True, slots=True)
class MessageLimits:
    """Caps a decoder enforces before allocating."""

    max_message_bytes: int = 2 << 20
    max_block_bytes: int = 512 * 1024
    max_ops_per_block: int = 4096
    max_op_bytes: int = 4096
    max_evidence_per_block: int = 32
    max_snapshot_bytes: int = 1 << 20
    max_validators: int = 1024
    max_batch_items: int = 256


DEFAULT_LIMITS = MessageLimits()


class Kind(enum.IntEnum):
    PROPOSAL = 0x01
    VOTE = 0x02
    OPERATION = 0x03
    STATE_ANNOUNCE = 0x04
    SNAPSHOT_REQUEST = 0x05
    SNAPSHOT_RESPONSE = 0x06
    COMMIT = 0x07
    COMMIT_REQUEST = 0x08
    EVIDENCE = 0x09
    CERTIFICATE = 0x0A
    CERTIFICATE_REQUEST = 0x0B
    COMPACT_PROPOSAL = 0x0C
    PROPOSAL_REQUEST = 0x0D
    BATCH = 0x0E
    VOTE_SET = 0x0F
    OPERATION_REF = 0x10
    PROPOSAL_REF = 0x11
    JOIN_REQUEST = 0x12


class Step(enum.IntEnum):
    """What a signature is for; also the signer-state step order within a round."""

    PROPOSAL = 0
    PREVOTE = 1
    PRECOMMIT = 2


# -- reading --------------------------------------------------------------------------


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise MessageError(f"truncated: need {n} bytes at {self.pos} of {len(self.data)}")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def unpack(self, s: struct.Struct) -> tuple[Any, ...]:
        if self.pos + s.size > len(self.data):
            raise MessageError(f"truncated: need {s.size} bytes at {self.pos}")
        out = s.unpack_from(self.data, self.pos)
        self.pos += s.size
        return out

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "big")

    def uvarint(self, what: str) -> int:
        """An unsigned LEB128 integer below 2**64, in its shortest form only."""
        value = shift = 0
        for i in range(10):
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if byte == 0 and i:
                    raise MessageError(f"{what}: varint not in its shortest form")
                if value >= 1 << 64:
                    break
                return value
            shift += 7
        raise MessageError(f"{what}: varint above 2**64")

    def index(self, n: int, what: str) -> int:
        """An index into a set of ``n``: 1 byte for sets up to 256, else 2."""
        i = self.take(1)[0] if n <= 256 else self.u16()
        if i >= n:
            raise MessageError(f"{what} index {i} of {n}")
        return i

    def lp(self, cap: int, what: str) -> bytes:
        n = self.u32()
        if n > cap:
            raise MessageTooLarge(f"{what} of {n} bytes exceeds cap {cap}")
        return self.take(n)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise MessageError(f"{len(self.data) - self.pos} trailing bytes")


def _uvarint(n: int) -> bytes:
    """Unsigned LEB128 (7 bits a byte, low first, high bit: more follow)."""
    if not 0 <= n < 1 << 64:
        raise ValueError(f"varint {n} outside 0..2**64-1")
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _index(i: int, n: int) -> bytes:
    if not 0 <= i < n:
        raise ValueError(f"index {i} of {n}")
    return bytes((i,)) if n <= 256 else i.to_bytes(2, "big")


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _check_len(value: bytes, n: int, what: str) -> None:
    if len(value) != n:
        raise MessageError(f"{what} must be {n} bytes, got {len(value)}")


# -- votes ----------------------------------------------------------------------------


def vote_signing_bytes(
    session_id: bytes, height: int, round: int, step: int, block: bytes
) -> bytes:
    """The preimage a validator signs for a prevote/precommit."""
    return VOTE_DOMAIN + session_id + _VOTE_SIGN.pack(height, round, step) + block


@dataclass(frozen=True, slots=True)
class Vote:
    """A signed prevote or precommit; ``block_hash`` is :data:`NIL` for a nil vote."""

    step: Step
    height: int
    round: int
    block_hash: bytes
    validator: bytes
    signature: bytes

    @property
    def is_nil(self) -> bool:
        return self.block_hash == NIL

    def signing_bytes(self, session_id: bytes) -> bytes:
        return vote_signing_bytes(session_id, self.height, self.round, self.step, self.block_hash)

    @classmethod
    def create(
        cls,
        sign: Callable[[bytes], bytes],
        validator: bytes,
        session_id: bytes,
        step: Step,
        height: int,
        round: int,
        block_hash: bytes,
    ) -> Vote:
        pre = vote_signing_bytes(session_id, height, round, step, block_hash)
        return cls(step, height, round, block_hash, validator, sign(pre))

    def encode(self) -> bytes:
        return _VOTE.pack(
            self.step, self.height, self.round, self.block_hash, self.validator, self.signature
        )

    @classmethod
    def decode(cls, data: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> Vote:
        r = _Reader(data)
        v = cls._read(r)
        r.end()
        return v

    @classmethod
    def _read(cls, r: _Reader) -> Vote:
        step, height, rnd, block, validator, sig = r.unpack(_VOTE)
        if step not in (Step.PREVOTE, Step.PRECOMMIT):
            raise MessageError(f"vote step {step} is not prevote or precommit")
        return cls(Step(step), height, rnd, block, validator, sig)


# -- operations -----------------------------------------------------------------------


def operation_signing_bytes(session_id: bytes, submitter: bytes, nonce: int, body: bytes) -> bytes:
    return OPERATION_DOMAIN + session_id + submitter + _U64.pack(nonce) + _lp(body)


@dataclass(frozen=True, slots=True)
class Operation:
    """An application operation signed by its submitter; ``nonce`` orders a submitter's ops."""

    submitter: bytes
    nonce: int
    body: bytes
    signature: bytes
    _enc: list[bytes] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def create(
        cls,
        sign: Callable[[bytes], bytes],
        submitter: bytes,
        session_id: bytes,
        nonce: int,
        body: bytes,
    ) -> Operation:
        return cls(
            submitter,
            nonce,
            body,
            sign(operation_signing_bytes(session_id, submitter, nonce, body)),
        )

    def signing_bytes(self, session_id: bytes) -> bytes:
        return operation_signing_bytes(session_id, self.submitter, self.nonce, self.body)

    @property
    def op_id(self) -> bytes:
        """32-byte id: SHA-256 of the encoded operation."""
        return hashlib.sha256(self.encode()).digest()

    def encode(self) -> bytes:
        if not self._enc:
            self._enc.append(
                _OP_HEAD.pack(self.submitter, self.nonce, len(self.body))
                + self.body
                + self.signature
            )
        return self._enc[0]

    @classmethod
    def decode(cls, data: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> Operation:
        r = _Reader(data)
        op = cls._read(r, limits)
        r.end()
        return op

    @classmethod
    def _read(cls, r: _Reader, limits: MessageLimits) -> Operation:
        start = r.pos
        submitter, nonce, n = r.unpack(_OP_HEAD)
        if n > limits.max_op_bytes:
            raise MessageTooLarge(f"operation body of {n} bytes exceeds cap {limits.max_op_bytes}")
        body = r.take(n)
        sig = r.take(SIGNATURE_LEN)
        op = cls(submitter, nonce, body, sig)
        op._enc.append(r.data[start : r.pos])
        return op


# -- evidence -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Evidence:
    """Two different signed votes of one validator for one height/round/step."""

    vote_a: Vote
    vote_b: Vote

    @property
    def offender(self) -> bytes:
        return self.vote_a.validator

    @classmethod
    def of(cls, a: Vote, b: Vote) -> Evidence:
        """Canonical order (smaller encoding first) so both finders produce the same bytes."""
        ea, eb = a.encode(), b.encode()
        return cls(a, b) if ea <= eb else cls(b, a)

    @property
    def key(self) -> tuple[bytes, int, int, int]:
        return (self.offender, self.vote_a.height, self.vote_a.round, self.vote_a.step)

    def is_consistent(self) -> bool:
        """Same validator/height/round/step, different blocks, canonical order."""
        a, b = self.vote_a, self.vote_b
        return (
            a.validator == b.validator
            and a.height == b.height
            and a.round == b.round
            and a.step == b.step
            and a.block_hash != b.block_hash
            and a.encode() < b.encode()
        )

    def verify(self, session_id: bytes, validators: Sequence[bytes]) -> bool:
        """True when both votes are validly signed by a validator and conflict."""
        return (
            self.is_consistent()
            and self.offender in validators
            and verify_signature(
                self.offender, self.vote_a.signature, self.vote_a.signing_bytes(session_id)
            )
            and verify_signature(
                self.offender, self.vote_b.signature, self.vote_b.signing_bytes(session_id)
            )
        )

    def encode(self) -> bytes:
        return self.vote_a.encode() + self.vote_b.encode()

    @classmethod
    def decode(cls, data: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> Evidence:
        r = _Reader(data)
        ev = cls._read(r)
        r.end()
        return ev

    @classmethod
    def _read(cls, r: _Reader) -> Evidence:
        return cls(Vote._read(r), Vote._read(r))


# -- blocks ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """What a block hash commits to, including the state hash *after* the block."""

    height: int
    proposer: bytes
    prev_hash: bytes
    state_hash: bytes
    body_hash: bytes

    def encode(self) -> bytes:
        return _HEADER.pack(
            VERSION, self.height, self.proposer, self.prev_hash, self.state_hash, self.body_hash
        )

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(BLOCK_DOMAIN + self.encode()).digest()

    @classmethod
    def decode(cls, data: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> BlockHeader:
        r = _Reader(data)
        h = cls._read(r)
        r.end()
        return h

    @classmethod
    def _read(cls, r: _Reader) -> BlockHeader:
        version, height, proposer, prev, state, body = r.unpack(_HEADER)
        if version != VERSION:
            raise UnknownVersion(f"block header version {version}")
        return cls(height, proposer, prev, state, body)


def encode_body(ops: Sequence[Operation], evidence: Sequence[Evidence]) -> bytes:
    parts = [len(ops).to_bytes(4, "big")]
    parts.extend(op.encode() for op in ops)
    parts.append(len(evidence).to_bytes(2, "big"))
    parts.extend(ev.encode() for ev in evidence)
    return b"".join(parts)


def body_hash(ops: Sequence[Operation], evidence: Sequence[Evidence]) -> bytes:
    return hashlib.sha256(BODY_DOMAIN + encode_body(ops, evidence)).digest()


@dataclass(frozen=True, slots=True)
class Block:
    """A header plus the operations and evidence its ``body_hash`` commits to."""

    header: BlockHeader
    ops: tuple[Operation, ...]
    evidence: tuple[Evidence, ...] = ()
    _hash: list[bytes] = field(default_factory=list, compare=False, repr=False)

    @property
    def height(self) -> int:
        return self.header.height

    @property
    def hash(self) -> bytes:
        if not self._hash:
            self._hash.append(self.header.hash)
        return self._hash[0]

    def body_matches(self) -> bool:
        return body_hash(self.ops, self.evidence) == self.header.body_hash

    def encode(self) -> bytes:
        return self.header.encode() + encode_body(self.ops, self.evidence)

    @classmethod
    def decode(cls, data: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> Block:
        if len(data) > limits.max_block_bytes:
            raise MessageTooLarge(
                f"block of {len(data)} bytes exceeds cap {limits.max_block_bytes}"
            )
        r = _Reader(data)
        header = BlockHeader._read(r)
        n_ops = r.u32()
        if n_ops > limits.max_ops_per_block:
            raise MessageTooLarge(f"{n_ops} ops exceed cap {limits.max_ops_per_block}")
        ops = tuple(Operation._read(r, limits) for _ in range(n_ops))
        n_ev = r.u16()
        if n_ev > limits.max_evidence_per_block:
            raise MessageTooLarge(f"{n_ev} evidence exceed cap {limits.max_evidence_per_block}")
        evidence = tuple(Evidence._read(r) for _ in range(n_ev))
        r.end()
        return cls(header, ops, evidence)


# -- proposals ------------------------------------------------------------------------


def proposal_signing_bytes(
    session_id: bytes, height: int, round: int, pol_round: int, block_hash: bytes
) -> bytes:
    return PROPOSAL_DOMAIN + session_id + _PROPOSAL_HEAD.pack(height, round, pol_round) + block_hash


@dataclass(frozen=True, slots=True)
class Proposal:
    """A proposer's signed block for (height, round); ``pol_round`` is -1 or its POL round."""

    height: int
    round: int
    pol_round: int
    block: Block
    signature: bytes

    def signing_bytes(self, session_id: bytes) -> bytes:
        return proposal_signing_bytes(
            session_id, self.height, self.round, self.pol_round, self.block.hash
        )

    def encode(self) -> bytes:
        return (
            _PROPOSAL_HEAD.pack(self.height, self.round, self.pol_round)
            + _lp(self.block.encode())
            + self.signature
        )

    @classmethod
    def decode(cls, data: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> Proposal:
        r = _Reader(data)
        height, rnd, pol = r.unpack(_PROPOSAL_HEAD)
        if pol < -1 or (pol != -1 and pol >= rnd):
            raise MessageError(f"pol_round {pol} not in [-1, round {rnd})")
        block = Block.decode(r.lp(limits.max_block_bytes, "block"), limits)
        sig = r.take(SIGNATURE_LEN)
        r.end()
        return cls(height, rnd, pol, block, sig)


SHORT_ID_LEN = 8
_ROUND_REQUEST = struct.Struct(">QI")


@dataclass(frozen=True, slots=True)
class CompactProposal:
    """A :class:`Proposal` with its ops replaced by short ids (``op_id[:8]``), except the
    ones kept inline (``entries`` holds a short id or an :class:`Operation` per op)."""

    height: int
    round: int
    pol_round: int
    header: BlockHeader
    entries: tuple[bytes | Operation, ...]
    evidence: tuple[Evidence, ...]
    signature: bytes

    @classmethod
    def of(
        cls, p: Proposal, inline: Callable[[Operation], bool] = lambda op: False
    ) -> CompactProposal:
        entries = tuple(op if inline(op) else op.op_id[:SHORT_ID_LEN] for op in p.block.ops)
        return cls(
            p.height, p.round, p.pol_round, p.block.header, entries, p.block.evidence, p.signature
        )

    @property
    def short_ids(self) -> tuple[bytes, ...]:
        return tuple(e for e in self.entries if isinstance(e, bytes))

    def signing_bytes(self, session_id: bytes) -> bytes:
        return proposal_signing_bytes(
            session_id, self.height, self.round, self.pol_round, self.header.hash
        )

    def rebuild(self, ops: Sequence[Operation]) -> Proposal:
        """The full proposal with ``ops`` (check ``block.body_matches()`` before trusting)."""
        block = Block(self.header, tuple(ops), self.evidence)
        return Proposal(self.height, self.round, self.pol_round, block, self.signature)

    def encode(self) -> bytes:
        parts = [
            _PROPOSAL_HEAD.pack(self.height, self.round, self.pol_round),
            self.header.encode(),
            len(self.entries).to_bytes(4, "big"),
            *self._entries(),
            len(self.evidence).to_bytes(2, "big"),
            *(ev.encode() for ev in self.evidence),
            self.signature,
        ]
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> CompactProposal:
        r = _Reader(data)
        height, rnd, pol = r.unpack(_PROPOSAL_HEAD)
        if pol < -1 or (pol != -1 and pol >= rnd):
            raise MessageError(f"pol_round {pol} not in [-1, round {rnd})")
        header = BlockHeader._read(r)
        entries = _read_entries(r, r.u32(), limits)
        evidence = _read_evidence(r, r.u16(), limits)
        sig = r.take(SIGNATURE_LEN)
        r.end()
        return cls(height, rnd, pol, header, entries, evidence, sig)

    def _entries(self) -> list[bytes]:
        return [b"\x00" + e if isinstance(e, bytes) else b"\x01" + e.encode() for e in self.entries]


def _read_entries(r: _Reader, n: int, limits: MessageLimits) -> tuple[bytes | Operation, ...]:
    if n > limits.max_ops_per_block:
        raise MessageTooLarge(f"{n} ops exceed cap {limits.max_ops_per_block}")
    entries: list[bytes | Operation] = []
    for _ in range(n):
        tag = r.take(1)[0]
        if tag == 0:
            entries.append(r.take(SHORT_ID_LEN))
        elif tag == 1:
            entries.append(Operation._read(r, limits))
        else:
            raise MessageError(f"compact entry tag {tag}")
    return tuple(entries)


def _read_evidence(r: _Reader, n: int, limits: MessageLimits) -> tuple[Evidence, ...]:
    if n > limits.max_evidence_per_block:
        raise MessageTooLarge(f"{n} evidence exceed cap {limits.max_evidence_per_block}")
    return tuple(Evidence._read(r) for _ in range(n))


@dataclass(frozen=True, slots=True)
class ProposalRequest:
    """Ask for the full proposal of (``height``, ``round``)."""

    height: int
    round: int

    def encode(self) -> bytes:
        return _ROUND_REQUEST.pack(self.height, self.round)

    @classmethod
    def decode(cls, data: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> ProposalRequest:
        _check_len(data, _ROUND_REQUEST.size, "proposal request")
        height, rnd = _ROUND_REQUEST.unpack(data)
        return cls(height, rnd)


# -- certificates ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommitCertificate:
    """``q`` precommit signatures for one block at one height and round.

    ``signers`` are indexes into the sorted validator set, ascending; ``signatures`` match.
    """

    height: int
    round: int
    block_hash: bytes
    n_validators: int
    signers: tuple[int, ...]
    signatures: tuple[bytes, ...]

    def precommits(self, validators: Sequence[bytes]) -> list[Vote]:
        """The precommits this certificate carries, as votes of ``validators`` (sorted)."""
        ordered = sorted(validators)
        return [
            Vote(Step.PRECOMMIT, self.height, self.round, self.block_hash, ordered[i], sig)
            for i, sig in zip(self.signers, self.signatures, strict=True)
            if i < len(ordered)
        ]

    def verify(
        self,
        validators: Sequence[bytes],
        session_id: bytes,
        verify: Callable[[bytes, bytes, bytes], bool] = verify_signature,
    ) -> bool:
        """True when a quorum of distinct validators validly precommitted ``block_hash``."""
        n = len(validators)
        if self.n_validators != n or self.block_hash == NIL:
            return False
        if len(self.signers) != len(self.signatures) or len(set(self.signers)) != len(self.signers):
            return False
        if len(self.signers) < n * 2 // 3 + 1 or any(i >= n for i in self.signers):
            return False
        return all(
            verify(v.validator, v.signature, v.signing_bytes(session_id))
            for v in self.precommits(validators)
        )

    def encode(self) -> bytes:
        bitmap = bytearray((self.n_validators + 7) // 8)
        for i in self.signers:
            bitmap[i // 8] |= 0x80 >> (i % 8)
        return (
            _CERT_HEAD.pack(self.height, self.round, self.block_hash, self.n_validators)
            + bytes(bitmap)
            + b"".join(self.signatures)
        )

    @classmethod
    def decode(cls, data: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> CommitCertificate:
        r = _Reader(data)
        height, rnd, block, n = r.unpack(_CERT_HEAD)
        if n > limits.max_validators:
            raise MessageTooLarge(f"{n} validators exceed cap {limits.max_validators}")
        bitmap = r.take((n + 7) // 8)
        signers = tuple(i for i in range(n) if bitmap[i // 8] & (0x80 >> (i % 8)))
        if n % 8 and bitmap[-1] & (0xFF >> (n % 8)):
            raise MessageError("certificate bitmap has bits past the validator count")
        sigs = tuple(r.take(SIGNATURE_LEN) for _ in signers)
        r.end()
        return cls(height, rnd, block, n, signers, sigs)


# -- the small messages ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StateAnnounce:
    """A node's committed height and hashes: a hint for catch-up, never trusted as state."""

    height: int
    state_hash: bytes
    block_hash: bytes

    def encode(self) -> bytes:
        return _ANNOUNCE.pack(self.height, self.state_hash, self.block_hash)

    @classmethod
    def decode(cls, data: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> StateAnnounce:
        r = _Reader(data)
        height, state, block = r.unpack(_ANNOUNCE)
        r.end()
        return cls(height, state, block)


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """Ask for a snapshot newer than ``height`` (the requester's committed height)."""

    height: int

    def encode(self) -> bytes:
        return _U64.pack(self.height)

    @classmethod
    def decode(cls, data: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> SnapshotRequest:
        _check_len(data, 8, "snapshot request")
        return cls(int.from_bytes(data, "big"))


@dataclass(frozen=True, slots=True)
class CommitRequest:
    """Ask for the committed block and certificate of ``height``."""

    height: int

    def encode(self) -> bytes:
        return _U64.pack(self.height)

    @classmethod
    def decode(cls, data: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> CommitRequest:
        _check_len(data, 8, "commit request")
        return cls(int.from_bytes(data, "big"))


@dataclass(frozen=True, slots=True)
class CertificateRequest:
    """Ask for the commit certificate of ``height`` (the asker already holds its block)."""

    height: int

    def encode(self) -> bytes:
        return _U64.pack(self.height)

    @classmethod
    def decode(cls, data: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> CertificateRequest:
        _check_len(data, 8, "certificate request")
        return cls(int.from_bytes(data, "big"))


@dataclass(frozen=True, slots=True)
class SnapshotResponse:
    """A compressed snapshot blob (``consensus.snapshot``) and the certificate proving it."""

    certificate: CommitCertificate
    snapshot: bytes

    def encode(self) -> bytes:
        return _lp(self.certificate.encode()) + _lp(self.snapshot)

    @classmethod
    def decode(cls, data: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> SnapshotResponse:
        r = _Reader(data)
        cert_cap = _CERT_HEAD.size + (limits.max_validators + 7) // 8
        cert_cap += limits.max_validators * SIGNATURE_LEN
        cert = CommitCertificate.decode(r.lp(cert_cap, "certificate"), limits)
        snap = r.lp(limits.max_snapshot_bytes, "snapshot")
        r.end()
        return cls(cert, snap)


@dataclass(frozen=True, slots=True)
class Commit:
    """A committed block with its certificate: catch-up by blocks."""

    block: Block
    certificate: CommitCertificate

    def encode(self) -> bytes:
        return _lp(self.block.encode()) + _lp(self.certificate.encode())

    @classmethod
    def decode(cls, data: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> Commit:
        r = _Reader(data)
        block = Block.decode(r.lp(limits.max_block_bytes, "block"), limits)
        cert_cap = _CERT_HEAD.size + (limits.max_validators + 7) // 8
        cert_cap += limits.max_validators * SIGNATURE_LEN
        cert = CommitCertificate.decode(r.lp(cert_cap, "certificate"), limits)
        r.end()
        return cls(block, cert)


JOIN_DOMAIN = b"ble-bridge/join/v1"
JOIN_REQUEST_LEN = 32 + 8 + 8 + SIGNATURE_LEN


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """A key's signed wish to become a validator of one session (kind 0x12): a validator
    that hears it sponsors it as an AddValidator operation (``consensus.validators``)."""

    key: bytes
    nonce: int
    buy_in: int
    signature: bytes

    @staticmethod
    def signing_bytes_for(session_id: bytes, key: bytes, nonce: int, buy_in: int) -> bytes:
        return JOIN_DOMAIN + session_id + key + nonce.to_bytes(8, "big") + buy_in.to_bytes(8, "big")

    def signing_bytes(self, session_id: bytes) -> bytes:
        return self.signing_bytes_for(session_id, self.key, self.nonce, self.buy_in)

    @classmethod
    def create(
        cls,
        sign: Callable[[bytes], bytes],
        key: bytes,
        session_id: bytes,
        nonce: int,
        buy_in: int = 0,
    ) -> JoinRequest:
        if not (0 <= nonce < 1 << 64 and 0 <= buy_in < 1 << 64) or len(key) != KEY_LEN:
            raise ValueError("join request fields out of range")
        return cls(key, nonce, buy_in, sign(cls.signing_bytes_for(session_id, key, nonce, buy_in)))

    def verify(self, session_id: bytes, verify: Callable[[bytes, bytes, bytes], bool]) -> bool:
        return verify(self.key, self.signature, self.signing_bytes(session_id))

    def encode(self) -> bytes:
        return (
            self.key
            + self.nonce.to_bytes(8, "big")
            + self.buy_in.to_bytes(8, "big")
            + self.signature
        )

    @classmethod
    def decode(cls, data: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> JoinRequest:
        if len(data) != JOIN_REQUEST_LEN:
            raise MessageError("bad join request length")
        return cls(
            bytes(data[:32]),
            int.from_bytes(data[32:40], "big"),
            int.from_bytes(data[40:48], "big"),
            bytes(data[48:]),
        )


Message = (
    Proposal
    | Vote
    | Operation
    | StateAnnounce
    | SnapshotRequest
    | SnapshotResponse
    | Commit
    | CommitRequest
    | Evidence
    | CommitCertificate
    | CertificateRequest
    | CompactProposal
    | ProposalRequest
    | JoinRequest
)

_KIND_OF: dict[type, Kind] = {
    Proposal: Kind.PROPOSAL,
    Vote: Kind.VOTE,
    Operation: Kind.OPERATION,
    StateAnnounce: Kind.STATE_ANNOUNCE,
    SnapshotRequest: Kind.SNAPSHOT_REQUEST,
    SnapshotResponse: Kind.SNAPSHOT_RESPONSE,
    Commit: Kind.COMMIT,
    CommitRequest: Kind.COMMIT_REQUEST,
    Evidence: Kind.EVIDENCE,
    CommitCertificate: Kind.CERTIFICATE,
    CertificateRequest: Kind.CERTIFICATE_REQUEST,
    CompactProposal: Kind.COMPACT_PROPOSAL,
    ProposalRequest: Kind.PROPOSAL_REQUEST,
    JoinRequest: Kind.JOIN_REQUEST,
}

_DECODERS: dict[Kind, Callable[[bytes, MessageLimits], Message]] = {
    Kind.PROPOSAL: Proposal.decode,
    Kind.VOTE: Vote.decode,
    Kind.OPERATION: Operation.decode,
    Kind.STATE_ANNOUNCE: StateAnnounce.decode,
    Kind.SNAPSHOT_REQUEST: SnapshotRequest.decode,
    Kind.SNAPSHOT_RESPONSE: SnapshotResponse.decode,
    Kind.COMMIT: Commit.decode,
    Kind.COMMIT_REQUEST: CommitRequest.decode,
    Kind.EVIDENCE: Evidence.decode,
    Kind.CERTIFICATE: CommitCertificate.decode,
    Kind.CERTIFICATE_REQUEST: CertificateRequest.decode,
    Kind.COMPACT_PROPOSAL: CompactProposal.decode,
    Kind.PROPOSAL_REQUEST: ProposalRequest.decode,
    Kind.JOIN_REQUEST: JoinRequest.decode,
}


def kind_of(msg: Message) -> Kind:
    return _KIND_OF[type(msg)]


def encode_message(session_id: bytes, msg: Message) -> bytes:
    """The 0x1C packet payload for ``msg`` in session ``session_id``."""
    _check_len(session_id, SESSION_ID_LEN, "session id")
    body = msg.encode()
    kind = int(kind_of(msg))
    if len(body) >= COMPRESS_MIN:
        packed = envelope.pack(body, min_size=COMPRESS_MIN)
        if len(packed) < len(body) and packed[0] == envelope.METHOD_LZ4:
            return bytes((VERSION,)) + session_id + bytes((kind | COMPRESSED_BIT,)) + packed
    return bytes((VERSION,)) + session_id + bytes((kind,)) + body


NEIGHBOUR_VERSION = 2
"""Envelope version of a neighbour-gossip frame: the session id shortened to a tag."""
SESSION_TAG_LEN = 4


def to_neighbour(payload: bytes) -> bytes:
    """A version-1 envelope as a neighbour frame: version 2 and the first 4 bytes of the
    session id instead of all 16 (12 bytes a frame; only for a linked validator of the
    session, which knows the id; :func:`from_neighbour` undoes it)."""
    if len(payload) <= ENVELOPE_PREFIX or payload[0] != VERSION:
        raise ValueError("not a version-1 envelope")
    return (
        bytes((NEIGHBOUR_VERSION,)) + payload[1 : 1 + SESSION_TAG_LEN] + payload[ENVELOPE_PREFIX:]
    )


def neighbour_tag(payload: bytes) -> bytes:
    """The session tag of a neighbour frame; raises only :class:`MessageError`."""
    if len(payload) <= 1 + SESSION_TAG_LEN:
        raise MessageError("envelope truncated")
    if payload[0] != NEIGHBOUR_VERSION:
        raise UnknownVersion(f"envelope version {payload[0]}")
    return bytes(payload[1 : 1 + SESSION_TAG_LEN])


def from_neighbour(payload: bytes, session_id: bytes) -> bytes:
    """The version-1 envelope of a neighbour frame whose tag is ``session_id``'s."""
    if neighbour_tag(payload) != session_id[:SESSION_TAG_LEN]:
        raise MessageError("session tag does not match")
    return bytes((VERSION,)) + session_id + payload[1 + SESSION_TAG_LEN :]


def peek_session(payload: bytes) -> bytes:
    """The session id of an envelope without decoding the body (for routing to an engine)."""
    if len(payload) < 2 + SESSION_ID_LEN:
        raise MessageError("envelope truncated")
    if payload[0] != VERSION:
        raise UnknownVersion(f"envelope version {payload[0]}")
    return bytes(payload[1 : 1 + SESSION_ID_LEN])


ENVELOPE_PREFIX = 1 + SESSION_ID_LEN
"""Bytes in front of the kind byte: version and session id."""

BATCHABLE_KINDS = frozenset(
    {
        Kind.PROPOSAL,
        Kind.VOTE,
        Kind.OPERATION,
        Kind.EVIDENCE,
        Kind.COMPACT_PROPOSAL,
        Kind.VOTE_SET,
        Kind.OPERATION_REF,
        Kind.PROPOSAL_REF,
    }
)
"""Kinds a batch may carry: signed by their author, so whoever forwards them is irrelevant."""


def payload_kind(payload: bytes) -> Kind:
    """The kind of an envelope (compressed bit cleared) without decoding its body."""
    peek_session(payload)
    kind_byte = payload[ENVELOPE_PREFIX]
    try:
        return Kind(kind_byte & ~COMPRESSED_BIT)
    except ValueError:
        raise UnknownKind(f"message kind {kind_byte:#x}") from None


def encode_batch(session_id: bytes, items: Sequence[bytes]) -> bytes:
    """One envelope carrying ``items`` (each a standalone payload minus its 17-byte prefix).

    A single item travels as itself (no batch header)."""
    _check_len(session_id, SESSION_ID_LEN, "session id")
    if len(items) == 1:
        return bytes((VERSION,)) + session_id + items[0]
    if not 2 <= len(items) <= 0xFFFF:
        raise ValueError(f"a batch holds 2..65535 items, not {len(items)}")
    parts = [len(items).to_bytes(2, "big")]
    for item in items:
        if not 1 <= len(item) <= 0xFFFF:
            raise ValueError(f"batch item of {len(item)} bytes")
        parts.append(len(item).to_bytes(2, "big"))
        parts.append(item)
    body = b"".join(parts)
    kind = int(Kind.BATCH)
    packed = envelope.pack(body, min_size=COMPRESS_MIN)
    if len(packed) < len(body) and packed[0] == envelope.METHOD_LZ4:
        return bytes((VERSION,)) + session_id + bytes((kind | COMPRESSED_BIT,)) + packed
    return bytes((VERSION,)) + session_id + bytes((kind,)) + body


MAX_VOTE_SET = 255  # votes in one VoteSet item (its count is one byte)
SHORT_BLOCK_FLAG = 0x80  # in a VoteSet's step byte: the block is named by a hash prefix
BLOCK_REF_LEN = 4  # bytes of the block hash a short VoteSet carries
MAX_BLOCK_CANDIDATES = 4  # known blocks one prefix may expand to


def encode_vote_set(
    votes: Sequence[Vote], index_of: Callable[[bytes], int], n: int, *, short: bool = False
) -> bytes:
    """A VoteSet item (kind byte + body) for ``votes``, which share step, height, round and
    block hash; ``index_of`` maps a validator key to its index in the sorted set of ``n``.
    ``short``: name the block by :data:`BLOCK_REF_LEN` bytes of its hash (28 bytes less),
    for a receiver that knows the block (or soon will)."""
    if not 1 <= len(votes) <= MAX_VOTE_SET:
        raise ValueError(f"a vote set holds 1..{MAX_VOTE_SET} votes, not {len(votes)}")
    v0 = votes[0]
    parts = [
        bytes((Kind.VOTE_SET, v0.step | (SHORT_BLOCK_FLAG if short else 0))),
        _uvarint(v0.height),
        _uvarint(v0.round),
        v0.block_hash[:BLOCK_REF_LEN] if short else v0.block_hash,
        bytes((len(votes),)),
    ]
    for v in votes:
        if (v.step, v.height, v.round, v.block_hash) != (
            v0.step,
            v0.height,
            v0.round,
            v0.block_hash,
        ):
            raise ValueError("votes of a vote set must agree on step, height, round and block")
        parts.append(_index(index_of(v.validator), n))
        parts.append(v.signature)
    return b"".join(parts)


def expand_vote_set(
    item: bytes,
    validators: Sequence[bytes] | Callable[[int], Sequence[bytes] | None],
    limits: MessageLimits = DEFAULT_LIMITS,
    resolve: Callable[[int, bytes], Sequence[bytes]] | None = None,
) -> list[Vote]:
    """The votes of a VoteSet item (kind byte + body); raises only :class:`MessageError`.

    ``validators``: the sorted set the indices point into, or a function giving the set of
    the vote set's height (None: not known yet, :class:`UnresolvedBlock`): across a set
    change the sender and a receiver a height behind hold different current sets.

    A block named by a hash prefix is expanded by ``resolve(height, prefix)``, the full
    hashes the receiver knows there: votes for each (at most :data:`MAX_BLOCK_CANDIDATES`;
    more than one only if someone ground a colliding hash, and the signature check keeps
    the right one). None known: :class:`UnresolvedBlock`, raised only for an item that is
    otherwise well formed."""
    if not item or item[0] != Kind.VOTE_SET:
        raise MessageError("not a vote set")
    r = _Reader(item[1:])
    step_byte = r.take(1)[0]
    step = step_byte & ~SHORT_BLOCK_FLAG
    if step not in (Step.PREVOTE, Step.PRECOMMIT):
        raise MessageError(f"vote step {step}")
    height = r.uvarint("height")
    rnd = r.uvarint("round")
    if rnd > 0xFFFFFFFF:
        raise MessageError(f"round {rnd}")
    short = bool(step_byte & SHORT_BLOCK_FLAG)
    block_ref = r.take(BLOCK_REF_LEN if short else 32)
    count = r.take(1)[0]
    if callable(validators):
        known_set = validators(height)
        if known_set is None:
            raise UnresolvedBlock(f"the validator set of height {height} is not known yet")
        validators = known_set
    n = len(validators)
    if not 1 <= count <= min(n, limits.max_validators):
        raise MessageError(f"vote set of {count} votes for {n} validators")
    entries = [(validators[r.index(n, "validator")], r.take(64)) for _ in range(count)]
    r.end()
    if not short:
        hashes: Sequence[bytes] = (block_ref,)
    else:
        known = () if resolve is None else resolve(height, block_ref)
        hashes = [h for h in known if len(h) == 32 and h[:BLOCK_REF_LEN] == block_ref]
        hashes = hashes[:MAX_BLOCK_CANDIDATES]
        if not hashes:
            raise UnresolvedBlock(f"no known block at height {height} starts {block_ref.hex()}")
    return [
        Vote(Step(step), height, rnd, block_hash, validator, signature)
        for block_hash in hashes
        for validator, signature in entries
    ]


def encode_operation_ref(op: Operation, index_of: Callable[[bytes], int], n: int) -> bytes:
    """An OperationRef item (kind byte + body) for ``op``; its submitter is at
    ``index_of(op.submitter)`` in the sorted validator set of ``n``."""
    return b"".join(
        (
            bytes((Kind.OPERATION_REF,)),
            _index(index_of(op.submitter), n),
            _uvarint(op.nonce),
            _uvarint(len(op.body)),
            op.body,
            op.signature,
        )
    )


def expand_operation_ref(
    item: bytes, validators: Sequence[bytes], limits: MessageLimits = DEFAULT_LIMITS
) -> Operation:
    """The Operation of an OperationRef item; raises only :class:`MessageError`."""
    if not item or item[0] != Kind.OPERATION_REF:
        raise MessageError("not an operation ref")
    r = _Reader(item[1:])
    index = r.index(len(validators), "submitter")
    nonce = r.uvarint("nonce")
    n = r.uvarint("body length")
    if n > limits.max_op_bytes:
        raise MessageTooLarge(f"operation body of {n} bytes exceeds cap {limits.max_op_bytes}")
    body = r.take(n)
    sig = r.take(SIGNATURE_LEN)
    r.end()
    return Operation(validators[index], nonce, body, sig)


def encode_proposal_ref(cp: CompactProposal) -> bytes:
    """A ProposalRef item (kind byte + body): ``cp`` without what its receivers know (the
    header's version, its height, which is the proposal's, and its proposer, who is the one
    the rotation names for that height and round); the caller checks the last two."""
    if cp.header.height != cp.height:
        raise ValueError("the header's height is not the proposal's")
    return b"".join(
        (
            bytes((Kind.PROPOSAL_REF,)),
            _uvarint(cp.height),
            _uvarint(cp.round),
            _uvarint(cp.pol_round + 1),
            cp.header.prev_hash,
            cp.header.state_hash,
            cp.header.body_hash,
            _uvarint(len(cp.entries)),
            *cp._entries(),
            _uvarint(len(cp.evidence)),
            *(ev.encode() for ev in cp.evidence),
            cp.signature,
        )
    )


def expand_proposal_ref(
    item: bytes,
    proposer_of: Callable[[int, int], bytes],
    limits: MessageLimits = DEFAULT_LIMITS,
) -> CompactProposal:
    """The CompactProposal of a ProposalRef item, its proposer ``proposer_of(height,
    round)``; raises only :class:`MessageError` (a wrong guess fails the signature)."""
    if not item or item[0] != Kind.PROPOSAL_REF:
        raise MessageError("not a proposal ref")
    r = _Reader(item[1:])
    height = r.uvarint("height")
    rnd = r.uvarint("round")
    pol = r.uvarint("pol_round") - 1
    if rnd > 0xFFFFFFFF or not -1 <= pol < min(rnd, 1 << 31):  # as in a CompactProposal
        raise MessageError(f"round {rnd} / pol_round {pol}")
    prev_hash, state_hash, body_hash = r.take(32), r.take(32), r.take(32)
    header = BlockHeader(height, proposer_of(height, rnd), prev_hash, state_hash, body_hash)
    entries = _read_entries(r, r.uvarint("entries"), limits)
    evidence = _read_evidence(r, r.uvarint("evidence"), limits)
    sig = r.take(SIGNATURE_LEN)
    r.end()
    return CompactProposal(height, rnd, pol, header, entries, evidence, sig)


def _envelope_body(payload: bytes, kind_byte: int, limits: MessageLimits) -> bytes:
    body = bytes(payload[2 + SESSION_ID_LEN :])
    if kind_byte & COMPRESSED_BIT:
        try:
            return envelope.unpack(body, max_size=limits.max_message_bytes)
        except envelope.EnvelopeError as exc:
            raise MessageError(f"bad compressed body: {exc}") from None
    if len(body) > limits.max_message_bytes:
        raise MessageTooLarge(f"body of {len(body)} bytes exceeds cap {limits.max_message_bytes}")
    return body


def split_batch(payload: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> list[bytes]:
    """The standalone payloads inside a batch envelope; raises only :class:`MessageError`.

    Items must be of :data:`BATCHABLE_KINDS` (so never a nested batch); their bodies are
    decoded later, one by one, like any payload."""
    if payload_kind(payload) is not Kind.BATCH:
        raise MessageError("not a batch")
    prefix = bytes(payload[:ENVELOPE_PREFIX])
    r = _Reader(_envelope_body(payload, payload[ENVELOPE_PREFIX], limits))
    count = r.u16()
    if not 2 <= count <= limits.max_batch_items:
        raise MessageTooLarge(f"batch of {count} items (2..{limits.max_batch_items})")
    out: list[bytes] = []
    for _ in range(count):
        item = r.take(r.u16())
        if not item:
            raise MessageError("empty batch item")
        try:
            kind = Kind(item[0] & ~COMPRESSED_BIT)
        except ValueError:
            raise UnknownKind(f"batch item kind {item[0]:#x}") from None
        if kind not in BATCHABLE_KINDS:
            raise MessageError(f"{kind.name.lower()} may not travel in a batch")
        out.append(prefix + item)
    r.end()
    return out


def decode_message(payload: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> tuple[bytes, Message]:
    """Inverse of :func:`encode_message`; raises only :class:`MessageError`."""
    session_id = peek_session(payload)
    kind = payload_kind(payload)
    if kind in (Kind.BATCH, Kind.VOTE_SET, Kind.OPERATION_REF, Kind.PROPOSAL_REF):
        raise MessageError(f"a {kind.name.lower()} needs the validator set (or splitting)")
    body = _envelope_body(payload, payload[ENVELOPE_PREFIX], limits)
    try:
        msg = _DECODERS[kind](body, limits)
    except MessageError:
        raise
    except (ValueError, IndexError, struct.error) as exc:  # defensive: never leak others
        raise MessageError(f"malformed {kind.name.lower()}: {exc}") from None
    return session_id, msg


__all__ = [
    "BLOCK_REF_LEN",
    "HASH_LEN",
    "KEY_LEN",
    "MAX_VOTE_SET",
    "NEIGHBOUR_VERSION",
    "NIL",
    "SESSION_ID_LEN",
    "SESSION_TAG_LEN",
    "SHORT_BLOCK_FLAG",
    "Block",
    "BlockHeader",
    "CertificateRequest",
    "Commit",
    "CommitCertificate",
    "CommitRequest",
    "CompactProposal",
    "Evidence",
    "JoinRequest",
    "Kind",
    "Message",
    "MessageError",
    "MessageLimits",
    "MessageTooLarge",
    "Operation",
    "Proposal",
    "ProposalRequest",
    "SnapshotRequest",
    "SnapshotResponse",
    "StateAnnounce",
    "Step",
    "UnresolvedBlock",
    "Vote",
    "decode_message",
    "encode_batch",
    "encode_message",
    "encode_operation_ref",
    "encode_proposal_ref",
    "encode_vote_set",
    "expand_operation_ref",
    "expand_proposal_ref",
    "expand_vote_set",
    "from_neighbour",
    "neighbour_tag",
    "payload_kind",
    "peek_session",
    "split_batch",
    "to_neighbour",
]
