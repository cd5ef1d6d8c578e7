"""Announce TLVs, message text and leave payloads."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wire_strategies import WIRE

from ble_bridge.wire.packet import BadPayloadError, TruncatedError, WireError
from ble_bridge.wire.payloads import (
    Announce,
    decode_leave,
    decode_message,
    encode_message,
)

keys = st.none() | st.binary(min_size=32, max_size=32)
announces = st.builds(
    Announce,
    nickname=st.none() | st.text(max_size=40),
    noise_key=keys,
    signing_key=keys,
    neighbors=st.lists(st.binary(min_size=8, max_size=8), max_size=10).map(tuple),
    capabilities=st.none() | st.integers(0, (1 << 64) - 1),
    unknown=st.lists(st.tuples(st.integers(6, 255), st.binary(max_size=40)), max_size=4).map(tuple),
)


@WIRE
@given(announces)
def test_announce_round_trips(a: Announce) -> None:
    assert Announce.decode(a.encode()) == a


@WIRE
@given(st.binary(max_size=300))
def test_random_announce_payloads_raise_only_wire_errors(data: bytes) -> None:
    with contextlib.suppress(WireError):
        Announce.decode(data)


def test_unknown_tlvs_are_kept_in_order() -> None:
    data = b"\x09\x01z" + b"\x01\x02pi" + b"\x08\x00" + b"\x09\x02yy"
    a = Announce.decode(data)
    assert a.nickname == "pi"
    assert a.unknown == ((9, b"z"), (8, b""), (9, b"yy"))


def test_capabilities_are_little_endian_with_trailing_zero_bytes_trimmed() -> None:
    assert Announce(capabilities=0x0100).encode() == b"\x05\x02\x00\x01"
    assert Announce(capabilities=1).encode() == b"\x05\x01\x01"
    assert Announce.decode(b"\x05\x03\x01\x00\x00").capabilities == 1


def test_truncated_tlvs_are_rejected() -> None:
    for data in (b"\x01", b"\x01\x05abc", b"\x02\x20" + bytes(31)):
        with pytest.raises(TruncatedError):
            Announce.decode(data)


def test_wrong_key_length_bad_neighbours_and_bad_utf8_are_rejected() -> None:
    for data in (
        b"\x02\x1f" + bytes(31),
        b"\x03\x21" + bytes(33),
        b"\x04\x07" + bytes(7),
        b"\x04\x58" + bytes(88),  # 11 neighbours
        b"\x01\x02\xff\xfe",
    ):
        with pytest.raises(BadPayloadError):
            Announce.decode(data)


def test_encode_refuses_more_than_10_neighbours() -> None:
    with pytest.raises(BadPayloadError):
        Announce(neighbors=(bytes(8),) * 11).encode()


def test_message_payload_is_raw_utf8() -> None:
    assert encode_message("héllo") == "héllo".encode()
    assert decode_message("héllo".encode()) == "héllo"
    with pytest.raises(BadPayloadError):
        decode_message(b"\xff")


def test_leave_payload_must_be_empty() -> None:
    decode_leave(b"")
    with pytest.raises(BadPayloadError):
        decode_leave(b"x")
