"""Compressed state snapshots (the seed's ``CompressedGameState``) and the chain state hash.

A snapshot is the replicated state after one committed block: that block's header (whose
``state_hash`` a commit certificate signs), the engine's ledger metadata (each submitter's
last nonce, banned validators) and the application's canonical snapshot. On the air it is
``envelope.pack``-ed: LZ4 size-prepended + crc32 + original size, decompression capped.

Since validator sets change by committed operations (``consensus.validators``), a
snapshot also carries the set of the next height, every key's last join nonce, and the
links proving each set change since genesis, so a node that installs it verifies the
chain of sets from the genesis set to the set that signed the snapshot's certificate.

Raw layout (big-endian)::

    version(1)=2 header(137) n_nonces(2) (submitter(32) nonce(8))* n_banned(2) key(32)*
    n_join(2) (key(32) nonce(8))* n_keys(2) key(32)* n_links(2) (lp(4) SetLink)*
    app_state: len(4) bytes
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..wire import envelope
from ..wire.messages import DEFAULT_LIMITS, HEADER_LEN, BlockHeader, MessageError, MessageLimits
from .validators import MAX_LINKS, SetLink, encode_join_nonces, state_hash_of

VERSION = 2
DEFAULT_MAX_SNAPSHOT = 1 << 20


class SnapshotError(MessageError):
    """A snapshot is malformed, oversized or fails its checksum."""

    reason = "bad_snapshot"


class SnapshotTooLarge(SnapshotError):
    reason = "oversized_snapshot"


def encode_meta(nonces: Mapping[bytes, int], banned: frozenset[bytes]) -> bytes:
    """Canonical bytes of the engine's replicated metadata (sorted, so order-independent)."""
    parts = [len(nonces).to_bytes(2, "big")]
    for key in sorted(nonces):
        parts.append(key + nonces[key].to_bytes(8, "big"))
    parts.append(len(banned).to_bytes(2, "big"))
    parts.extend(sorted(banned))
    return b"".join(parts)


def rest_digest(
    nonces: Mapping[bytes, int],
    banned: frozenset[bytes],
    app_hash: bytes,
    join_nonces: Sequence[tuple[bytes, int]] = (),
) -> bytes:
    """Digest of everything but the validator set: metadata plus the application's hash."""
    return hashlib.sha256(
        encode_meta(nonces, banned) + encode_join_nonces(join_nonces) + app_hash
    ).digest()


def chain_state_hash(
    nonces: Mapping[bytes, int],
    banned: frozenset[bytes],
    app_hash: bytes,
    keys: Sequence[bytes],
    join_nonces: Sequence[tuple[bytes, int]] = (),
) -> bytes:
    """The hash a block header commits to: the validator set of the next height
    (``keys``), the metadata and the application's state hash."""
    return state_hash_of(keys, rest_digest(nonces, banned, app_hash, join_nonces))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Replicated state after the block ``header``."""

    header: BlockHeader
    nonces: tuple[tuple[bytes, int], ...]
    banned: frozenset[bytes]
    app_state: bytes
    keys: tuple[bytes, ...] = ()  # the validator set of the next height
    join_nonces: tuple[tuple[bytes, int], ...] = ()
    links: tuple[SetLink, ...] = ()  # every set change before this height

    @property
    def height(self) -> int:
        return self.header.height

    def encode(self) -> bytes:
        return (
            bytes((VERSION,))
            + self.header.encode()
            + encode_meta(dict(self.nonces), self.banned)
            + encode_join_nonces(self.join_nonces)
            + len(self.keys).to_bytes(2, "big")
            + b"".join(self.keys)
            + len(self.links).to_bytes(2, "big")
            + b"".join(_lp(link.encode()) for link in self.links)
            + len(self.app_state).to_bytes(4, "big")
            + self.app_state
        )

    def compress(self) -> bytes:
        """The on-air form: ``envelope.pack`` of :meth:`encode`."""
        return envelope.pack(self.encode())

    @classmethod
    def decode(cls, raw: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> Snapshot:
        if len(raw) < 1 or raw[0] != VERSION:
            raise SnapshotError("unknown snapshot version")
        pos = 1
        try:
            header = BlockHeader.decode(raw[pos : pos + HEADER_LEN])
        except MessageError as exc:
            raise SnapshotError(f"bad header: {exc}") from None
        pos += HEADER_LEN

        def take(n: int) -> bytes:
            nonlocal pos
            if pos + n > len(raw):
                raise SnapshotError("snapshot truncated")
            out = raw[pos : pos + n]
            pos += n
            return out

        n_nonces = int.from_bytes(take(2), "big")
        nonces = []
        for _ in range(n_nonces):
            chunk = take(40)
            nonces.append((chunk[:32], int.from_bytes(chunk[32:], "big")))
        n_banned = int.from_bytes(take(2), "big")
        banned = frozenset(take(32) for _ in range(n_banned))
        join = []
        for _ in range(int.from_bytes(take(2), "big")):
            chunk = take(40)
            join.append((chunk[:32], int.from_bytes(chunk[32:], "big")))
        n_keys = int.from_bytes(take(2), "big")
        if n_keys > limits.max_validators:
            raise SnapshotError("too many validators")
        vkeys = tuple(take(32) for _ in range(n_keys))
        n_links = int.from_bytes(take(2), "big")
        if n_links > MAX_LINKS:
            raise SnapshotError("too many set links")
        links = []
        for _ in range(n_links):
            try:
                links.append(SetLink.decode(take(int.from_bytes(take(4), "big")), limits))
            except MessageError as exc:
                raise SnapshotError(f"bad set link: {exc}") from None
        app = take(int.from_bytes(take(4), "big"))
        if pos != len(raw):
            raise SnapshotError("trailing bytes after snapshot")
        keys = [k for k, _ in nonces]
        jkeys = [k for k, _ in join]
        if (
            keys != sorted(set(keys))
            or len(banned) != n_banned
            or jkeys != sorted(set(jkeys))
            or list(vkeys) != sorted(set(vkeys))
        ):
            raise SnapshotError("snapshot metadata not canonical")
        return cls(header, tuple(nonces), banned, app, vkeys, tuple(join), tuple(links))

    @classmethod
    def decompress(cls, blob: bytes, max_size: int = DEFAULT_MAX_SNAPSHOT) -> Snapshot:
        """Inverse of :meth:`compress`; the declared size is checked before decompressing."""
        try:
            raw = envelope.unpack(blob, max_size=max_size)
        except envelope.EnvelopeError as exc:
            if "exceeds cap" in str(exc):
                raise SnapshotTooLarge(str(exc)) from None
            raise SnapshotError(str(exc)) from None
        return cls.decode(raw)


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data
