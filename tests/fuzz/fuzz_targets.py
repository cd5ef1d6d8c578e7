"""Fuzz targets for every wire decoder: one function per decoder, each taking raw bytes.

A target returns normally for input the decoder accepts or refuses with its own error
type; anything else (another exception, a broken invariant) escapes and is a finding.
Used by ``run_all.py`` under atheris and by ``test_fuzz_targets.py`` without it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import replace

from ble_bridge.wire.envelope import EnvelopeError, pack, unpack
from ble_bridge.wire.fragment import FragmentPayload, Reassembler, ReassemblyLimits
from ble_bridge.wire.identity import Identity
from ble_bridge.wire.packet import (
    DecodeLimits,
    Packet,
    PacketType,
    WireError,
    decode,
    encode,
    pad,
)
from ble_bridge.wire.payloads import Announce

_LIMITS = DecodeLimits(max_frame=1 << 16, max_payload=1 << 16)
_REASSEMBLY = ReassemblyLimits(max_sets=8, max_sets_per_sender=2, max_total_bytes=1 << 16)
_reassembler = Reassembler(_REASSEMBLY)
_clock = [0.0]


def frame_decode(data: bytes) -> None:
    """Frame decoder: refuse with WireError, or decode to a packet that re-encodes stably."""
    try:
        p = decode(data, _LIMITS)
    except WireError:
        return
    fresh = replace(p)  # no cached bytes: encode from the fields
    again = decode(encode(fresh), _LIMITS)
    assert again == p, (p, again)
    assert encode(p)[0] in (1, 2)
    assert fresh.signing_bytes() == p.signing_bytes()
    assert fresh.packet_id == p.packet_id
    if p.ttl > 0:
        relayed = p.relayed()
        assert relayed.signing_bytes() == p.signing_bytes()
        assert encode(relayed) == encode(replace(relayed))
    if p.signature is not None:
        p.verify(bytes(32))  # must not raise


def announce(data: bytes) -> None:
    """Announce TLV decoder: refuse with WireError, or round-trip through encode."""
    try:
        a = Announce.decode(data)
    except WireError:
        return
    assert Announce.decode(a.encode()) == a


def fragment(data: bytes) -> None:
    """Fragment payload decoder plus a long-lived reassembler that must stay within limits."""
    with contextlib.suppress(WireError):
        FragmentPayload.decode(data)
    if not data:
        return
    _clock[0] += (data[0] & 0x0F) * 0.5
    packet = Packet(
        type=PacketType.FRAGMENT,
        sender=bytes([data[0] >> 4]) * 8,
        payload=data[1:],
        timestamp=0,
    )
    frame = _reassembler.feed(_clock[0], packet)
    r = _reassembler
    assert len(r) <= _REASSEMBLY.max_sets
    assert 0 <= r.buffered_bytes <= _REASSEMBLY.max_total_bytes
    if frame is not None:
        assert len(frame) <= _REASSEMBLY.max_set_bytes
        with contextlib.suppress(WireError):
            decode(frame, _LIMITS)


def envelope(data: bytes) -> None:
    """Compressed envelope: refuse with EnvelopeError, or unpack to bytes that re-pack."""
    try:
        out = unpack(data, max_size=1 << 16)
    except EnvelopeError:
        return
    assert len(out) <= 1 << 16
    assert unpack(pack(out)) == out


TARGETS: dict[str, Callable[[bytes], None]] = {
    "frame_decode": frame_decode,
    "announce": announce,
    "fragment": fragment,
    "envelope": envelope,
}


def seeds(name: str) -> list[bytes]:
    """A few valid inputs per target, so fuzzing starts from deep inside the format."""
    ident = Identity.from_seed(b"fuzz-seed")
    ann = Announce(
        nickname="pi-1",
        noise_key=ident.noise_public,
        signing_key=ident.signing_public,
        neighbors=(b"\x01" * 8, b"\x02" * 8),
        capabilities=0x0103,
        unknown=((0x7E, b"xyz"),),
    ).encode()
    base = Packet(type=PacketType.ANNOUNCE, sender=ident.peer_id, payload=ann, timestamp=1)
    v2 = Packet(
        type=PacketType.CONSENSUS,
        sender=ident.peer_id,
        payload=b"consensus " * 20,
        timestamp=1_700_000_000_000,
        version=2,
        recipient=b"\x09" * 8,
        route=(b"\x03" * 8, b"\x04" * 8),
    ).compress()
    frames = [encode(base.signed(ident)), encode(v2.signed(ident)), pad(encode(base))]
    if name == "frame_decode":
        return frames
    if name == "announce":
        return [ann, b"", b"\x01\x00"]
    if name == "fragment":
        frag = FragmentPayload(os.urandom(8), 0, 2, 1, b"chunk").encode()
        return [b"\x10" + frag, frag]
    return [pack(b"state " * 40), pack(b"tiny"), pack(os.urandom(64))]
