"""The LZ4 compressed envelope: round trip, cap before allocation, checksum."""

from __future__ import annotations

import contextlib
import struct
import tracemalloc
import zlib

import lz4.block
import pytest
from hypothesis import given
from hypothesis import strategies as st
from wire_strategies import WIRE

from ble_bridge.wire.envelope import (
    HEADER_LEN,
    METHOD_LZ4,
    METHOD_STORED,
    CompressedState,
    EnvelopeError,
    compress_game_state,
    decompress_game_state,
    pack,
    unpack,
)


@WIRE
@given(st.binary(max_size=3000) | st.text(max_size=500).map(str.encode))
def test_pack_then_unpack_returns_the_bytes(data: bytes) -> None:
    assert unpack(pack(data)) == data


@WIRE
@given(st.binary(max_size=500))
def test_packing_is_deterministic(data: bytes) -> None:
    assert pack(data) == pack(bytes(data))


def test_compressible_state_uses_lz4_and_records_size_and_crc() -> None:
    data = b"player-1 bet 10 on pass line; " * 40
    state = compress_game_state(data)
    assert state.method == METHOD_LZ4
    assert state.original_size == len(data) and state.crc32 == zlib.crc32(data)
    assert len(state.body) < len(data)
    blob = state.to_bytes()
    assert blob[:HEADER_LEN] == struct.pack(">BII", METHOD_LZ4, len(data), zlib.crc32(data))


def test_incompressible_or_small_state_is_stored() -> None:
    assert compress_game_state(b"tiny").method == METHOD_STORED
    assert compress_game_state(bytes(range(256))).method == METHOD_STORED


def test_declared_lz4_size_above_the_cap_is_refused_before_allocating() -> None:
    body = struct.pack("<I", 0x7FFFFFFF) + b"\x00" * 16
    blob = struct.pack(">BII", METHOD_LZ4, 0x7FFFFFFF, 0) + body
    tracemalloc.start()
    try:
        with pytest.raises(EnvelopeError, match="cap"):
            unpack(blob)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_lz4_size_prefix_that_disagrees_with_the_header_is_refused() -> None:
    data = b"abc" * 100
    state = compress_game_state(data)
    forged = CompressedState(METHOD_LZ4, 100, state.crc32, state.body)
    with pytest.raises(EnvelopeError, match="prefix"):
        decompress_game_state(forged)


def test_lz4_bomb_under_a_small_cap_is_refused() -> None:
    blob = pack(bytes(2_000_000))
    assert len(blob) < 20_000
    with pytest.raises(EnvelopeError):
        unpack(blob, max_size=1 << 20)


def test_crc_mismatch_is_an_error() -> None:
    blob = bytearray(pack(b"state" * 50))
    blob[5] ^= 0x01  # crc32 field
    with pytest.raises(EnvelopeError, match="crc"):
        unpack(bytes(blob))


def test_corrupt_lz4_body_is_an_error() -> None:
    data = b"state " * 100
    body = lz4.block.compress(data, store_size=True)
    bad = body[:4] + b"\xff" * (len(body) - 4)
    with pytest.raises(EnvelopeError):
        decompress_game_state(CompressedState(METHOD_LZ4, len(data), zlib.crc32(data), bad))


def test_truncated_envelope_unknown_method_and_stored_size_mismatch_are_errors() -> None:
    with pytest.raises(EnvelopeError):
        unpack(b"\x01\x00")
    with pytest.raises(EnvelopeError):
        unpack(struct.pack(">BII", 7, 0, 0))
    with pytest.raises(EnvelopeError):
        unpack(struct.pack(">BII", METHOD_STORED, 5, zlib.crc32(b"abcd")) + b"abcd")


@WIRE
@given(st.binary(max_size=200))
def test_random_envelopes_raise_only_envelope_errors(data: bytes) -> None:
    with contextlib.suppress(EnvelopeError):
        unpack(data)
