"""Validator sets that change by committed operations (CometBFT's validator updates).

A set change is an ordinary operation of the session whose body starts with the reserved
tag ``0xFE`` (applications never see such bodies). It is checked and applied by the engine
in block order, and the set it produces is the one of the *next* height: a change committed
at height H takes effect at H+1, the same at every node, because every node derives the set
of H+1 from the committed chain up to H alone.

Operations (big-endian)::

    0xFE 0x01 JoinRequest            AddValidator: a validator sponsors a signed request
    0xFE 0x02 key(32) reason(1) [floor(8)]
                                     RemoveValidator: 0 = the key leaves (submitted by the
                                     key itself), 1 = the key fell silent (submitted by
                                     another validator; see ``silent``). ``floor``, only on
                                     a leave and only when above 0: every join request of
                                     the key up to that nonce is void from then on

    JoinRequest  key(32) nonce(8) buy_in(8) signature(64)
                 signature by ``key`` over "ble-bridge/join/v1" session_id key nonce buy_in;
                 ``nonce`` must be above every nonce the session committed for ``key``, so a
                 replayed request (even after the key left) is refused. A key may have
                 signed requests that never committed (one asked again under a new nonce
                 while the first was on its way, and the first landed): its leave carries
                 the highest nonce it ever signed as ``floor``, so none of them can seat it
                 again after it left, at every node alike (the floor is chain state).

The chain state hash a block header commits to binds the set of the next height::

    sha256("ble-bridge/state/v2" sha256(keys) sha256(meta app_hash))

so a certificate of height h proves the set of h+1. A :class:`SetLink` is the proof of one
change: the header of the block that committed it, that block's certificate (by the set of
its own height), the new set and the digest of the rest of the state. A chain of links from
the genesis set proves the set of any later height, which is how a snapshot is trusted.
"""

from __future__ import annotations

import bisect
import enum
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..wire.messages import (
    HEADER_LEN,
    JOIN_REQUEST_LEN,
    BlockHeader,
    CommitCertificate,
    JoinRequest,
    MessageError,
    MessageLimits,
)

SET_OP_TAG = 0xFE
STATE_DOMAIN_V2 = b"ble-bridge/state/v2"
KEY_LEN = 32
SIG_LEN = 64
MAX_LINKS = 1024

Verify = Callable[[bytes, bytes, bytes], bool]


class SetOpError(ValueError):
    """Bytes tagged as a set change that are not a well-formed one."""


class RemoveReason(enum.IntEnum):
    LEAVE = 0
    SILENT = 1


@dataclass(frozen=True, slots=True)
class AddValidator:
    request: JoinRequest


@dataclass(frozen=True, slots=True)
class RemoveValidator:
    key: bytes
    reason: RemoveReason
    floor: int = 0  # a leave's join-nonce floor (0: none)

    def __post_init__(self) -> None:
        if not 0 <= self.floor < 1 << 64:
            raise ValueError("the join-nonce floor is a u64")
        if self.floor and self.reason is not RemoveReason.LEAVE:
            raise ValueError("only a leave carries a join-nonce floor")


SetOp = AddValidator | RemoveValidator


def is_set_op(body: bytes) -> bool:
    return len(body) > 0 and body[0] == SET_OP_TAG


def encode_set_op(op: SetOp) -> bytes:
    if isinstance(op, AddValidator):
        return bytes((SET_OP_TAG, 0x01)) + op.request.encode()
    if len(op.key) != KEY_LEN:
        raise ValueError("validator keys are 32 bytes")
    floor = op.floor.to_bytes(8, "big") if op.floor else b""
    return bytes((SET_OP_TAG, 0x02)) + op.key + bytes((int(op.reason),)) + floor


def decode_set_op(body: bytes) -> SetOp:
    """Inverse of :func:`encode_set_op` (raises :class:`SetOpError`)."""
    if len(body) < 2 or body[0] != SET_OP_TAG:
        raise SetOpError("not a set change")
    if body[1] == 0x01:
        if len(body) != 2 + JOIN_REQUEST_LEN:
            raise SetOpError("bad join request length")
        return AddValidator(JoinRequest.decode(body[2:]))
    if body[1] == 0x02:
        if len(body) not in (2 + KEY_LEN + 1, 2 + KEY_LEN + 1 + 8):
            raise SetOpError("bad remove length")
        reason = body[2 + KEY_LEN]
        if reason not in RemoveReason._value2member_map_:
            raise SetOpError("unknown remove reason")
        floor = int.from_bytes(body[3 + KEY_LEN :], "big")
        if len(body) > 3 + KEY_LEN and (floor == 0 or reason != RemoveReason.LEAVE):
            raise SetOpError("a join-nonce floor only on a leave, and above 0")
        return RemoveValidator(bytes(body[2:34]), RemoveReason(reason), floor)
    raise SetOpError(f"unknown set change {body[1]:#x}")


# -- hashing ----------------------------------------------------------------------------


def encode_keys(keys: Sequence[bytes]) -> bytes:
    return len(keys).to_bytes(2, "big") + b"".join(sorted(keys))


def keys_digest(keys: Sequence[bytes]) -> bytes:
    return hashlib.sha256(encode_keys(keys)).digest()


def state_hash_of(keys: Sequence[bytes], rest_digest: bytes) -> bytes:
    """The header's state hash from the next height's set and the rest of the state."""
    return hashlib.sha256(STATE_DOMAIN_V2 + keys_digest(keys) + rest_digest).digest()


# -- applying changes -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetState:
    """The replicated validator-set state: the set of the next height, and the highest join
    nonce committed for every key that ever joined (replay protection)."""

    keys: tuple[bytes, ...]
    join_nonces: tuple[tuple[bytes, int], ...] = ()

    def nonce_of(self, key: bytes) -> int:
        for k, n in self.join_nonces:
            if k == key:
                return n
        return -1


def apply_set_op(
    state: SetState,
    submitter: bytes,
    op: SetOp,
    session_id: bytes,
    verify: Verify,
    max_validators: int,
) -> SetState:
    """The set state after ``op``; raises ``InvalidOperation`` with a reason when refused."""
    from .app import InvalidOperation

    keys = set(state.keys)
    if submitter not in keys:
        raise InvalidOperation("not_validator")
    if isinstance(op, AddValidator):
        req = op.request
        if req.key in keys:
            raise InvalidOperation("already_validator")
        if req.nonce <= state.nonce_of(req.key):
            raise InvalidOperation("join_replayed")
        if len(keys) >= max_validators:
            raise InvalidOperation("table_full")
        if not req.verify(session_id, verify):
            raise InvalidOperation("join_bad_signature")
        keys.add(req.key)
        nonces = dict(state.join_nonces)
        nonces[req.key] = req.nonce
        return SetState(tuple(sorted(keys)), tuple(sorted(nonces.items())))
    if op.key not in keys:
        raise InvalidOperation("not_validator_removed")
    if len(keys) <= 1:
        raise InvalidOperation("last_validator")
    if op.reason is RemoveReason.LEAVE and submitter != op.key:
        raise InvalidOperation("leave_not_own")
    if op.reason is RemoveReason.SILENT and submitter == op.key:
        raise InvalidOperation("silent_own")
    keys.discard(op.key)
    if op.floor > state.nonce_of(op.key):  # its older join requests are void from now on
        nonces = dict(state.join_nonces)
        nonces[op.key] = op.floor
        return SetState(tuple(sorted(keys)), tuple(sorted(nonces.items())))
    return SetState(tuple(sorted(keys)), state.join_nonces)


def encode_join_nonces(pairs: Iterable[tuple[bytes, int]]) -> bytes:
    items = sorted(pairs)
    return len(items).to_bytes(2, "big") + b"".join(k + n.to_bytes(8, "big") for k, n in items)


# -- proofs of the set of a later height ------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetLink:
    """Proof of one set change: ``certificate`` (by the set of ``header.height``) certifies
    ``header``, whose state hash commits to ``keys`` (the set from the next height on)."""

    header: BlockHeader
    certificate: CommitCertificate
    keys: tuple[bytes, ...]
    rest_digest: bytes

    @property
    def height(self) -> int:
        return self.header.height

    def encode(self) -> bytes:
        cert = self.certificate.encode()
        return (
            self.header.encode()
            + len(cert).to_bytes(4, "big")
            + cert
            + encode_keys(self.keys)
            + self.rest_digest
        )

    @classmethod
    def decode(cls, data: bytes, limits: MessageLimits) -> SetLink:
        if len(data) < HEADER_LEN + 4:
            raise MessageError("set link truncated")
        header = BlockHeader.decode(data[:HEADER_LEN])
        pos = HEADER_LEN
        n = int.from_bytes(data[pos : pos + 4], "big")
        pos += 4
        if n > len(data) - pos:
            raise MessageError("set link truncated")
        cert = CommitCertificate.decode(data[pos : pos + n], limits)
        pos += n
        count = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if count > limits.max_validators or pos + count * KEY_LEN + 32 != len(data):
            raise MessageError("set link length")
        keys = tuple(data[pos + i * KEY_LEN : pos + (i + 1) * KEY_LEN] for i in range(count))
        if list(keys) != sorted(set(keys)) or not keys:
            raise MessageError("set link keys not canonical")
        return cls(header, cert, keys, bytes(data[-32:]))


def verify_links(
    genesis: Sequence[bytes],
    links: Sequence[SetLink],
    session_id: bytes,
    verify: Verify,
    up_to: int,
) -> tuple[bytes, ...] | None:
    """The set of height ``up_to`` proven from ``genesis`` by ``links`` (None: not proven).

    Links must be in ascending height below ``up_to``; each certificate must verify
    against the set the links before it proved, and its header must commit to the link's
    new set."""
    keys = tuple(sorted(genesis))
    last = 0
    for link in links:
        h = link.height
        if h <= last or h >= up_to:
            return None
        cert = link.certificate
        if cert.height != h or cert.block_hash != link.header.hash:
            return None
        if not cert.verify(keys, session_id, verify):
            return None
        if state_hash_of(link.keys, link.rest_digest) != link.header.state_hash:
            return None
        keys, last = link.keys, h
    return keys


class SetHistory:
    """The validator set of every height, from the genesis set and the links of changes."""

    def __init__(self, genesis: Sequence[bytes]) -> None:
        self.genesis = tuple(sorted(genesis))
        self.links: list[SetLink] = []
        self._starts: list[int] = [1]  # heights where a set begins
        self._sets: list[tuple[bytes, ...]] = [self.genesis]

    def set_at(self, height: int) -> tuple[bytes, ...]:
        """The validators of ``height`` (for heights we know of: later ones get the newest)."""
        i = bisect.bisect_right(self._starts, height) - 1
        return self._sets[max(0, i)]

    def record(self, link: SetLink) -> None:
        """A change committed at ``link.height``: its set starts at the next height."""
        start = link.height + 1
        if start <= self._starts[-1]:
            # re-recording (recovery) or a snapshot replacing what we had: keep order
            while self._starts and self._starts[-1] >= start:
                self._starts.pop()
                self._sets.pop()
            self.links = [x for x in self.links if x.height < link.height]
            if not self._starts:
                self._starts, self._sets = [1], [self.genesis]
        self.links.append(link)
        self._starts.append(start)
        self._sets.append(link.keys)
        if len(self.links) > MAX_LINKS:
            raise ValueError("too many validator-set changes for one session")

    def replace(self, links: Sequence[SetLink]) -> None:
        self.links = []
        self._starts, self._sets = [1], [self.genesis]
        for link in links:
            self.record(link)

    def links_before(self, height: int) -> list[SetLink]:
        return [x for x in self.links if x.height < height]


def joined_at(history: SetHistory, key: bytes, height: int) -> int:
    """The first height of the run of heights up to ``height`` in which ``key`` validates."""
    first = height
    for start, keys in zip(reversed(history._starts), reversed(history._sets), strict=True):
        if start > height:
            continue
        if key not in keys:
            break
        first = start
    return first


__all__ = [
    "AddValidator",
    "JoinRequest",
    "RemoveReason",
    "RemoveValidator",
    "SetHistory",
    "SetLink",
    "SetOp",
    "SetOpError",
    "SetState",
    "apply_set_op",
    "decode_set_op",
    "encode_join_nonces",
    "encode_set_op",
    "is_set_op",
    "keys_digest",
    "state_hash_of",
    "verify_links",
]
