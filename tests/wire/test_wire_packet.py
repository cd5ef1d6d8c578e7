"""Frame codec behaviour: round trips, hostile bytes, truncation, padding, limits."""

from __future__ import annotations

import contextlib
import hashlib
import struct
import tracemalloc
import zlib
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wire_strategies import WIRE, packets

from ble_bridge.wire.packet import (
    MAX_DEFLATE_RATIO,
    BadCompressionError,
    BadLengthError,
    BadPayloadError,
    BadVersionError,
    DecodeLimits,
    OversizeError,
    Packet,
    PacketType,
    TruncatedError,
    WireError,
    decode,
    deflate_raw,
    encode,
    inflate_raw,
    pad,
    should_compress,
    unpad,
)

SENDER = b"\x01" * 8


def frame(
    flags: int, ids: bytes, payload: bytes, plen: int | None = None, version: int = 1
) -> bytes:
    """A hand-built frame: header, then ``ids`` (sender, recipient, route), then payload."""
    n = len(payload) if plen is None else plen
    length = n.to_bytes(2 if version == 1 else 4, "big")
    return bytes([version, 2, 7]) + (1).to_bytes(8, "big") + bytes([flags]) + length + ids + payload


@WIRE
@given(packets())
def test_encode_then_decode_returns_the_same_packet(p: Packet) -> None:
    assert decode(encode(p)) == p


@WIRE
@given(packets())
def test_decoded_packet_reencodes_to_the_same_bytes_from_its_fields(p: Packet) -> None:
    data = encode(p)
    assert encode(replace(decode(data))) == data


@WIRE
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_wire_errors(data: bytes) -> None:
    try:
        decode(data)
    except WireError as exc:
        assert exc.reason


@WIRE
@given(st.sampled_from([1, 2]), st.integers(0, 255), st.binary(max_size=300))
def test_random_bodies_behind_a_valid_header_raise_only_wire_errors(
    version: int, flags: int, body: bytes
) -> None:
    data = bytes([version, 1, 7]) + bytes(8) + bytes([flags]) + body
    with contextlib.suppress(WireError):
        decode(data)


@WIRE
@given(packets())
def test_every_truncation_of_a_valid_frame_is_rejected(p: Packet) -> None:
    data = encode(p)
    for cut in range(len(data)):
        with pytest.raises(WireError):
            decode(data[:cut])


@WIRE
@given(packets(), st.binary(max_size=40))
def test_trailing_bytes_after_a_frame_are_tolerated(p: Packet, extra: bytes) -> None:
    assert decode(encode(p) + extra) == p


@WIRE
@given(st.binary(max_size=2100))
def test_pad_then_unpad_is_identity(data: bytes) -> None:
    assert unpad(pad(data)) == data


@WIRE
@given(st.binary(max_size=2100))
def test_pad_reaches_the_smallest_bucket_or_leaves_the_frame_alone(data: bytes) -> None:
    padded = pad(data)
    target = next((b for b in (256, 512, 1024, 2048) if b >= len(data) + 16), None)
    if target is None or target - len(data) > 255:
        assert padded == data
    else:
        n = target - len(data)
        assert len(padded) == target and padded[len(data) :] == bytes([n]) * n


def test_unpad_leaves_data_without_valid_padding_unchanged() -> None:
    assert unpad(b"abc\x02\x03") == b"abc\x02\x03"
    assert unpad(b"") == b""
    assert unpad(b"abc\x00") == b"abc\x00"
    assert unpad(b"\x05\x05") == b"\x05\x05"


@WIRE
@given(packets())
def test_padded_frames_decode(p: Packet) -> None:
    assert decode(pad(encode(p))) == p


def test_version_other_than_1_or_2_is_rejected() -> None:
    for v in (0, 3, 255):
        with pytest.raises(BadVersionError):
            decode(bytes([v]) + bytes(30))


def test_route_flag_on_a_v1_frame_is_ignored_like_the_clients() -> None:
    data = frame(0x08, SENDER, b"hi")
    p = decode(data)
    assert p.route == () and p.payload == b"hi"
    assert encode(p)[11] == 0  # re-encoded canonically, as the apps do


def test_unknown_flag_bits_are_ignored_and_dropped_on_reencode() -> None:
    p = decode(frame(0xE0, SENDER, b"hi"))
    assert p.payload == b"hi" and encode(p)[11] == 0


def test_v2_route_with_zero_hops_decodes_to_no_route() -> None:
    p = decode(frame(0x08, SENDER + b"\x00", b"hi", version=2))
    assert p.route == () and p.payload == b"hi"


def test_route_longer_than_the_limit_is_rejected() -> None:
    data = frame(0x08, SENDER + b"\x03" + b"\x02" * 24, b"x", version=2)
    assert decode(data).route == (b"\x02" * 8,) * 3
    with pytest.raises(OversizeError):
        decode(data, DecodeLimits(max_route=2))


def test_frame_over_the_limit_is_rejected_before_parsing() -> None:
    with pytest.raises(OversizeError):
        decode(bytes(200), DecodeLimits(max_frame=100))


def test_huge_declared_v2_length_is_rejected_without_allocating() -> None:
    data = frame(0, SENDER, b"", plen=0xFFFFFFFF, version=2)
    tracemalloc.start()
    try:
        with pytest.raises(OversizeError):
            decode(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_uncompressed_payload_over_the_payload_limit_is_rejected() -> None:
    data = frame(0, SENDER, bytes(50))
    with pytest.raises(OversizeError):
        decode(data, DecodeLimits(max_payload=49))


def test_compressed_payload_shorter_than_its_size_prefix_is_rejected() -> None:
    with pytest.raises(BadLengthError):
        decode(frame(0x04, SENDER, b"\x00"))


def test_should_compress_follows_bitchats_rule() -> None:
    assert not should_compress(b"a" * 99)
    assert should_compress(b"a" * 100)
    assert not should_compress(bytes(range(256)))  # 256 distinct of 256: high entropy
    assert should_compress(bytes(range(200)) * 2)  # 200 distinct of 256 < 0.9


def test_compress_applies_only_when_the_rule_holds_and_it_shrinks() -> None:
    base = Packet(type=PacketType.MESSAGE, sender=SENDER, payload=b"x" * 99, timestamp=1)
    assert not base.compress().compressed
    big = replace(base, payload=b"x" * 300).compress()
    assert big.compressed and zlib.decompress(big.wire_payload or b"", -15) == b"x" * 300
    noise = b"".join(hashlib.sha256(bytes([i])).digest() for i in range(4))[:120]
    assert should_compress(noise)  # passes the entropy rule, yet DEFLATE cannot shrink it
    assert not replace(base, payload=noise).compress().compressed


def test_declared_deflate_ratio_above_50000_is_refused_before_inflating() -> None:
    z = deflate_raw(bytes(10_000))
    with pytest.raises(BadCompressionError, match="50000"):
        inflate_raw(z, len(z) * MAX_DEFLATE_RATIO + 1, 1 << 30)


def test_deflate_bomb_that_under_declares_its_size_is_capped_and_refused() -> None:
    bomb = deflate_raw(bytes(5_000_000))  # ~5 KB expanding to 5 MB
    tracemalloc.start()
    try:
        with pytest.raises(BadCompressionError):
            inflate_raw(bomb, 1000, 1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024


def test_declared_original_size_mismatch_is_refused() -> None:
    z = deflate_raw(b"hello world " * 20)
    with pytest.raises(BadCompressionError):
        inflate_raw(z, 241, 1 << 20)
    with pytest.raises(BadCompressionError):
        inflate_raw(z, 239, 1 << 20)
    assert inflate_raw(z, 240, 1 << 20) == b"hello world " * 20


def test_declared_original_size_over_the_payload_limit_is_refused() -> None:
    z = deflate_raw(bytes(1000))
    with pytest.raises(OversizeError):
        inflate_raw(z, 1000, 999)


def test_empty_or_unfinished_deflate_streams_are_refused() -> None:
    z = deflate_raw(b"abc" * 50)
    with pytest.raises(BadCompressionError):
        inflate_raw(b"", 0, 100)
    with pytest.raises(BadCompressionError):
        inflate_raw(z[:-2], 150, 1000)
    with pytest.raises(BadCompressionError):
        inflate_raw(b"\xff\xff\xff", 10, 1000)


def test_compressed_frame_with_bad_deflate_is_rejected() -> None:
    body = b"\x00\x10" + b"\xff" * 8
    with pytest.raises(BadCompressionError):
        decode(frame(0x04, SENDER, body))


def test_encode_refuses_fields_that_do_not_fit() -> None:
    ok = Packet(type=2, sender=SENDER, payload=b"", timestamp=1)
    for bad in (
        replace(ok, sender=b"short"),
        replace(ok, recipient=b"\x01" * 7),
        replace(ok, ttl=256),
        replace(ok, type=-1),
        replace(ok, timestamp=1 << 64),
        replace(ok, signature=b"\x00" * 63),
        replace(ok, version=2, route=(b"\x01" * 3,)),
    ):
        with pytest.raises(WireError):
            encode(bad)
    with pytest.raises(BadVersionError):
        encode(replace(ok, version=3))
    with pytest.raises(OversizeError):
        encode(replace(ok, payload=bytes(0x10000)))


def test_v1_payload_too_large_for_the_size_field_is_not_compressed() -> None:
    p = Packet(type=2, sender=SENDER, payload=bytes(70_000), timestamp=1)
    assert not p.compress().compressed
    assert replace(p, version=2).compress().compressed


def test_replace_does_not_reuse_cached_bytes() -> None:
    p = decode(encode(Packet(type=2, sender=SENDER, payload=b"one", timestamp=1)))
    _ = p.packet_id, p.signing_bytes()
    q = replace(p, payload=b"two")
    assert encode(q).endswith(b"two")
    assert q.packet_id != p.packet_id and q.signing_bytes() != p.signing_bytes()


@WIRE
@given(packets())
def test_packet_id_ignores_ttl_and_the_rsr_flag(p: Packet) -> None:
    assert replace(p, ttl=(p.ttl + 1) % 256, rsr=not p.rsr).packet_id == p.packet_id
    assert decode(encode(p)).packet_id == p.packet_id


@WIRE
@given(packets(), st.integers(0, 300))
def test_packet_id_changes_with_the_timestamp_or_payload(p: Packet, delta: int) -> None:
    moved = replace(p, timestamp=(p.timestamp + 1) % (1 << 64))
    assert moved.packet_id != p.packet_id
    other = replace(p, payload=p.payload + bytes([delta % 256]), wire_payload=None)
    assert other.packet_id != replace(p, wire_payload=None).packet_id


def test_relayed_decrements_ttl_and_keeps_every_other_byte() -> None:
    p = decode(frame(0x04, SENDER, b"\x00\x05" + deflate_raw(b"hello")))
    sent = encode(p)
    out = encode(p.relayed())
    assert out[2] == sent[2] - 1 and out[:2] + out[3:] == sent[:2] + sent[3:]


def test_decode_accepts_bytearray_and_memoryview() -> None:
    data = encode(Packet(type=2, sender=SENDER, payload=b"x", timestamp=1))
    assert decode(bytearray(data)) == decode(data)
    assert decode(memoryview(data)) == decode(data)


def test_errors_carry_a_reason_name() -> None:
    reasons = {
        TruncatedError: "truncated",
        BadVersionError: "bad_version",
        BadLengthError: "bad_length",
        OversizeError: "too_large",
        BadCompressionError: "bad_compression",
        BadPayloadError: "bad_payload",
    }
    for cls, reason in reasons.items():
        assert issubclass(cls, WireError) and cls.reason == reason
    assert struct.calcsize(">BBBQB") == 12
