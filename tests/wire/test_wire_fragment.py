"""Fragmentation and the bounded Reassembler."""

from __future__ import annotations

import os
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wire_strategies import WIRE, packets

from ble_bridge.wire.fragment import (
    MAX_FRAGMENTS,
    FragmentPayload,
    Reassembler,
    ReassemblyLimits,
    fragment_overhead,
    split,
)
from ble_bridge.wire.packet import (
    BadPayloadError,
    OversizeError,
    Packet,
    PacketType,
    TruncatedError,
    decode,
    encode,
)

SENDER = b"\x05" * 8


def fragment_packet(
    fid: bytes, index: int, total: int, chunk: bytes, sender: bytes = SENDER
) -> Packet:
    payload = FragmentPayload(fid, index, total, PacketType.MESSAGE, chunk).encode()
    return Packet(type=PacketType.FRAGMENT, sender=sender, payload=payload, timestamp=1)


@WIRE
@given(packets(), st.integers(60, 300), st.data())
def test_split_then_reassemble_in_any_order_with_duplicates(
    p: Packet, link: int, data: st.DataObject
) -> None:
    frame = encode(p)
    if -(-len(frame) // (link - fragment_overhead(p))) > MAX_FRAGMENTS:
        return
    frames = split(frame, p, link, b"\x42" * 8)
    assert all(len(f) <= link for f in frames) or frames == [frame]
    if frames == [frame]:
        assert len(frame) <= link
        return
    dups = data.draw(st.lists(st.sampled_from(frames), max_size=5), label="duplicates")
    order = data.draw(st.permutations(frames + dups), label="order")
    r = Reassembler()
    out = [got for f in order if (got := r.feed(0.0, decode(f))) is not None]
    assert out == [frame]
    assert decode(out[0]) == p
    assert len(r) == 0 and r.buffered_bytes == 0
    assert r.drops["fragment_duplicate"] == len(dups)  # early or late, each one counted


def test_fragments_keep_sender_recipient_timestamp_ttl_and_are_unsigned() -> None:
    p = Packet(
        type=PacketType.CONSENSUS,
        sender=SENDER,
        payload=os.urandom(500),
        timestamp=99,
        ttl=4,
        version=2,
        recipient=b"\x07" * 8,
        signature=b"\x01" * 64,
    )
    frames = split(encode(p), p, 185, os.urandom(8))
    for f in frames:
        q = decode(f)
        assert (q.type, q.sender, q.recipient, q.timestamp, q.ttl, q.version) == (
            PacketType.FRAGMENT,
            SENDER,
            b"\x07" * 8,
            99,
            4,
            2,
        )
        assert q.signature is None and not q.compressed


def test_a_frame_that_fits_is_not_split() -> None:
    p = Packet(type=2, sender=SENDER, payload=b"x" * 10, timestamp=1)
    assert split(encode(p), p, 100, b"\x00" * 8) == [encode(p)]


def test_split_refuses_more_than_256_fragments() -> None:
    p = Packet(type=2, sender=SENDER, payload=bytes(257 * 10), timestamp=1, version=2)
    link = fragment_overhead(p) + 10
    with pytest.raises(OversizeError):
        split(encode(p), p, link, b"\x00" * 8)


def test_split_refuses_a_link_too_small_for_any_chunk_and_a_bad_fragment_id() -> None:
    p = Packet(type=2, sender=SENDER, payload=bytes(100), timestamp=1)
    with pytest.raises(OversizeError):
        split(encode(p), p, fragment_overhead(p), b"\x00" * 8)
    with pytest.raises(BadPayloadError):
        split(encode(p), p, 60, b"\x00" * 7)


def test_fragment_payload_shorter_than_13_bytes_is_truncated() -> None:
    with pytest.raises(TruncatedError):
        FragmentPayload.decode(b"\x00" * 12)


def test_reassembler_refuses_257_fragments() -> None:
    r = Reassembler()
    assert r.feed(0, fragment_packet(b"\x01" * 8, 0, 257, b"x")) is None
    assert r.drops["fragment_too_many"] == 1 and len(r) == 0


def test_reassembler_refuses_total_zero_and_index_out_of_range() -> None:
    r = Reassembler()
    r.feed(0, fragment_packet(b"\x01" * 8, 0, 0, b"x"))
    r.feed(0, fragment_packet(b"\x01" * 8, 3, 3, b"x"))
    assert r.drops["fragment_too_many"] == 1 and r.drops["fragment_bad_index"] == 1


def test_reassembler_refuses_a_set_over_1_mib() -> None:
    r = Reassembler()
    chunk = bytes(5000)
    fid = b"\x02" * 8
    for i in range(210):  # 210 * 5000 = 1.05 MB > 1 MiB
        r.feed(0, fragment_packet(fid, i, 256, chunk))
        assert r.buffered_bytes <= r.limits.max_set_bytes
    assert r.drops["fragment_set_too_large"] == 1
    assert r.completed == 0


def test_reassembler_drops_incomplete_sets_after_30_seconds() -> None:
    r = Reassembler()
    r.feed(0.0, fragment_packet(b"\x03" * 8, 0, 2, b"a"))
    r.feed(29.9, fragment_packet(b"\x04" * 8, 0, 2, b"a"))
    assert len(r) == 2
    assert r.expire(30.0) == 1
    assert r.feed(30.0, fragment_packet(b"\x03" * 8, 1, 2, b"b")) is None
    assert r.drops["fragment_timeout"] == 1


def test_thousands_of_never_completed_sets_stay_within_limits() -> None:
    limits = ReassemblyLimits()
    r = Reassembler(limits)
    tracemalloc.start()
    try:
        for i in range(5000):
            sender = (i % 97).to_bytes(8, "big")
            r.feed(i * 0.001, fragment_packet(i.to_bytes(8, "big"), 0, 3, bytes(400), sender))
            assert len(r) <= limits.max_sets
            assert r.buffered_bytes <= limits.max_total_bytes
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.drops["fragment_evicted"] == 5000 - len(r)
    assert peak < 2 * 1024 * 1024


def test_one_sender_cannot_hold_more_than_its_share_of_sets() -> None:
    r = Reassembler(ReassemblyLimits(max_sets_per_sender=2))
    for i in range(10):
        r.feed(0, fragment_packet(bytes([i]) * 8, 0, 2, b"x"))
    assert len(r) == 2
    r.feed(0, fragment_packet(b"\xee" * 8, 0, 2, b"x", sender=b"\x09" * 8))
    assert len(r) == 3


def test_total_buffered_bytes_are_capped_by_evicting_the_oldest_set() -> None:
    r = Reassembler(ReassemblyLimits(max_total_bytes=3000, max_sets_per_sender=8))
    for i in range(5):
        r.feed(0, fragment_packet(bytes([i]) * 8, 0, 2, bytes(1000)))
    assert r.buffered_bytes <= 3000 and len(r) == 3
    assert r.drops["fragment_evicted"] == 2


def test_inconsistent_total_or_type_for_a_set_is_dropped() -> None:
    r = Reassembler()
    fid = b"\x06" * 8
    r.feed(0, fragment_packet(fid, 0, 3, b"a"))
    r.feed(0, fragment_packet(fid, 1, 4, b"b"))
    other = FragmentPayload(fid, 1, 3, PacketType.ANNOUNCE, b"b").encode()
    r.feed(0, Packet(type=PacketType.FRAGMENT, sender=SENDER, payload=other, timestamp=1))
    assert r.drops["fragment_inconsistent"] == 2


def test_same_fragment_id_from_two_senders_are_separate_sets() -> None:
    r = Reassembler()
    fid = b"\x07" * 8
    assert r.feed(0, fragment_packet(fid, 0, 2, b"a", sender=b"\x01" * 8)) is None
    assert r.feed(0, fragment_packet(fid, 1, 2, b"B", sender=b"\x02" * 8)) is None
    assert r.feed(0, fragment_packet(fid, 1, 2, b"b", sender=b"\x01" * 8)) == b"ab"


def test_non_fragment_packets_and_malformed_payloads_are_counted() -> None:
    r = Reassembler()
    r.feed(0, Packet(type=PacketType.MESSAGE, sender=SENDER, payload=bytes(20), timestamp=1))
    r.feed(0, Packet(type=PacketType.FRAGMENT, sender=SENDER, payload=bytes(5), timestamp=1))
    assert r.drops["fragment_wrong_type"] == 1 and r.drops["fragment_malformed"] == 1


def test_a_late_duplicate_of_a_completed_set_does_not_open_a_new_set() -> None:
    r = Reassembler()
    fid = b"\x08" * 8
    r.feed(0, fragment_packet(fid, 0, 2, b"a"))
    assert r.feed(0, fragment_packet(fid, 1, 2, b"b")) == b"ab"
    assert r.feed(1, fragment_packet(fid, 0, 2, b"a")) is None
    assert len(r) == 0 and r.drops["fragment_duplicate"] == 1
    # After the timeout the key is forgotten, so the id may be reused.
    r.feed(31, fragment_packet(fid, 0, 2, b"c"))
    assert r.feed(31, fragment_packet(fid, 1, 2, b"d")) == b"cd"
