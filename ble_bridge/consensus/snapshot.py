"""Compressed state snapshots (the seed's ``CompressedGameState``) and the chain state hash.

A snapshot is the replicated state after one committed block: that block's header (whose
``state_hash`` a commit certificate signs), the engine's ledger metadata (each submitter's
last nonce, banned validators) and the application's canonical snapshot. On the air it is
``envelope.pack``-ed: LZ4 size-prepended + crc32 + original size, decompression capped.

Raw layout (big-endian)::

    version(1)=1 header(137) n_nonces(2) (submitter(32) nonce(8))* n_banned(2) key(32)*
    app_state: len(4) bytes
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from ..wire import envelope
from ..wire.messages import HEADER_LEN, BlockHeader, MessageError

VERSION = 1
STATE_DOMAIN = b"ble-bridge/state/v1"
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


def chain_state_hash(
    nonces: Mapping[bytes, int], banned: frozenset[bytes], app_hash: bytes
) -> bytes:
    """The hash a block header commits to: metadata plus the application's state hash."""
    return hashlib.sha256(STATE_DOMAIN + encode_meta(nonces, banned) + app_hash).digest()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Replicated state after the block ``header``."""

    header: BlockHeader
    nonces: tuple[tuple[bytes, int], ...]
    banned: frozenset[bytes]
    app_state: bytes

    @property
    def height(self) -> int:
        return self.header.height

    def encode(self) -> bytes:
        return (
            bytes((VERSION,))
            + self.header.encode()
            + encode_meta(dict(self.nonces), self.banned)
            + len(self.app_state).to_bytes(4, "big")
            + self.app_state
        )

    def compress(self) -> bytes:
        """The on-air form: ``envelope.pack`` of :meth:`encode`."""
        return envelope.pack(self.encode())

    @classmethod
    def decode(cls, raw: bytes) -> Snapshot:
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
        app = take(int.from_bytes(take(4), "big"))
        if pos != len(raw):
            raise SnapshotError("trailing bytes after snapshot")
        keys = [k for k, _ in nonces]
        if keys != sorted(set(keys)) or len(banned) != n_banned:
            raise SnapshotError("snapshot metadata not canonical")
        return cls(header, tuple(nonces), banned, app)

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
