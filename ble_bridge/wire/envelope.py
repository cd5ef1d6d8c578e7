"""Compressed envelope: LZ4 (size-prepended) + crc32 + original size, decompression capped.

This is the seed's ``compress_game_state`` / ``decompress_game_state``. The declared size is
checked against the cap *before* anything is allocated, and a crc mismatch is an error.

Byte layout of :meth:`CompressedState.to_bytes` (big-endian)::

    0  1  method: 0 = stored (raw), 1 = LZ4 block with 4-byte little-endian size prefix
    1  4  original (uncompressed) size
    5  4  crc32 of the uncompressed bytes
    9  …  body
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import lz4.block

DEFAULT_MAX_SIZE = 1 << 20
METHOD_STORED = 0
METHOD_LZ4 = 1
_HEADER = struct.Struct(">BII")
HEADER_LEN = _HEADER.size


class EnvelopeError(ValueError):
    """A compressed envelope is malformed, too large, or fails its checksum."""


@dataclass(frozen=True, slots=True)
class CompressedState:
    """Compressed bytes with the original size and crc32 of the uncompressed bytes."""

    method: int
    original_size: int
    crc32: int
    body: bytes

    def to_bytes(self) -> bytes:
        return _HEADER.pack(self.method, self.original_size, self.crc32) + self.body

    @classmethod
    def from_bytes(cls, data: bytes) -> CompressedState:
        if len(data) < HEADER_LEN:
            raise EnvelopeError(f"envelope truncated: {len(data)} < {HEADER_LEN} bytes")
        method, size, crc = _HEADER.unpack_from(data)
        if method not in (METHOD_STORED, METHOD_LZ4):
            raise EnvelopeError(f"unknown compression method {method}")
        return cls(method, size, crc, bytes(data[HEADER_LEN:]))


def compress_game_state(data: bytes, *, min_size: int = 32) -> CompressedState:
    """Compress with LZ4 when that shrinks the data, else store it raw."""
    crc = zlib.crc32(data)
    if len(data) >= min_size:
        body = lz4.block.compress(data, store_size=True)
        if len(body) < len(data):
            return CompressedState(METHOD_LZ4, len(data), crc, body)
    return CompressedState(METHOD_STORED, len(data), crc, bytes(data))


def decompress_game_state(state: CompressedState, *, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """Inverse of :func:`compress_game_state`; refuses sizes over ``max_size`` before allocating."""
    return _decompress(state.method, state.original_size, state.crc32, state.body, max_size)


def _decompress(method: int, original_size: int, crc: int, body: bytes, max_size: int) -> bytes:
    if original_size > max_size:
        raise EnvelopeError(f"declared size {original_size} exceeds cap {max_size}")
    if method == METHOD_STORED:
        out = body
    elif method == METHOD_LZ4:
        if len(body) < 4:
            raise EnvelopeError("LZ4 body truncated")
        (prefix,) = struct.unpack_from("<I", body)
        if prefix != original_size:
            raise EnvelopeError(f"LZ4 size prefix {prefix} != declared size {original_size}")
        try:
            out = lz4.block.decompress(body)
        except (lz4.block.LZ4BlockError, ValueError) as exc:
            raise EnvelopeError(f"LZ4 data corrupt: {exc}") from exc
    else:
        raise EnvelopeError(f"unknown compression method {method}")
    if len(out) != original_size:
        raise EnvelopeError(f"decompressed {len(out)} bytes, declared {original_size}")
    if zlib.crc32(out) != crc:
        raise EnvelopeError("crc32 mismatch")
    return out


def pack(data: bytes, *, min_size: int = 32) -> bytes:
    """Compress and serialise in one step (same bytes as ``compress_game_state().to_bytes()``)."""
    crc = zlib.crc32(data)
    if len(data) >= min_size:
        body: bytes = lz4.block.compress(data, store_size=True)
        if len(body) < len(data):
            return _HEADER.pack(METHOD_LZ4, len(data), crc) + body
    return _HEADER.pack(METHOD_STORED, len(data), crc) + data


def unpack(blob: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """Parse and decompress in one step, with the size cap."""
    if len(blob) < HEADER_LEN:
        raise EnvelopeError(f"envelope truncated: {len(blob)} < {HEADER_LEN} bytes")
    method, size, crc = _HEADER.unpack_from(blob)
    if method not in (METHOD_STORED, METHOD_LZ4):
        raise EnvelopeError(f"unknown compression method {method}")
    return _decompress(method, size, crc, bytes(blob[HEADER_LEN:]), max_size)
