"""Signatures: survive relays and the 0x10 flag, break on any other change."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st
from wire_strategies import WIRE, packets

from ble_bridge.wire.identity import Identity
from ble_bridge.wire.packet import Packet, WireError, decode, encode, pad

ALICE = Identity.from_seed(b"alice")
BOB = Identity.from_seed(b"bob")

# Flag bits the BitChat clients ignore when they rebuild the preimage: 0x10 (request-sync
# response, excluded by rule) and the undefined 0x20/0x40/0x80.
IGNORED_FLAG_BITS = 0xF0


def signed_frame(p: Packet) -> bytes:
    return encode(replace(p, signature=None).signed(ALICE))


@WIRE
@given(packets())
def test_signature_verifies_after_decode(p: Packet) -> None:
    assert decode(signed_frame(p)).verify(ALICE.signing_public)


@WIRE
@given(packets())
def test_signature_fails_with_another_key(p: Packet) -> None:
    assert not decode(signed_frame(p)).verify(BOB.signing_public)


@WIRE
@given(packets(), st.integers(0, 255))
def test_signature_stays_valid_when_a_relay_changes_the_ttl(p: Packet, ttl: int) -> None:
    frame = bytearray(signed_frame(p))
    frame[2] = ttl
    assert decode(bytes(frame)).verify(ALICE.signing_public)


@WIRE
@given(packets())
def test_signature_stays_valid_through_relayed(p: Packet) -> None:
    received = decode(signed_frame(replace(p, ttl=max(p.ttl, 1))))
    assert decode(encode(received.relayed())).verify(ALICE.signing_public)


@WIRE
@given(packets())
def test_signature_stays_valid_when_the_rsr_flag_toggles(p: Packet) -> None:
    frame = bytearray(signed_frame(p))
    frame[11] ^= 0x10
    p2 = decode(bytes(frame))
    assert p2.rsr != p.rsr
    assert p2.verify(ALICE.signing_public)


@WIRE
@given(packets(), st.data())
def test_signature_breaks_when_any_other_byte_changes(p: Packet, data: st.DataObject) -> None:
    frame = signed_frame(p)
    pos = data.draw(st.integers(0, len(frame) - 1), label="position")
    xor = data.draw(st.integers(1, 255), label="xor")
    if pos == 2:  # ttl: covered above
        return
    if pos == 11:
        xor &= ~IGNORED_FLAG_BITS
        if frame[0] == 1:
            xor &= ~0x08  # the route flag means nothing on v1 frames
        if xor == 0:
            return
    tampered = bytearray(frame)
    tampered[pos] ^= xor
    try:
        got = decode(bytes(tampered))
    except WireError:
        return
    assert not got.verify(ALICE.signing_public)


@WIRE
@given(packets())
def test_preimage_is_padded_with_ttl_zero_no_signature_and_rsr_clear(p: Packet) -> None:
    signed = replace(p, signature=None).signed(ALICE)
    plain = replace(signed, ttl=0, rsr=False, signature=None)
    assert signed.signing_bytes() == pad(encode(plain))


@WIRE
@given(packets())
def test_preimage_from_received_bytes_equals_preimage_from_fields(p: Packet) -> None:
    received = decode(signed_frame(p))
    assert received.signing_bytes() == replace(received).signing_bytes()


def test_packet_without_signature_never_verifies() -> None:
    p = Packet(type=2, sender=ALICE.peer_id, payload=b"x", timestamp=1)
    assert not p.verify(ALICE.signing_public)


def test_garbage_key_or_signature_does_not_raise() -> None:
    p = Packet(type=2, sender=ALICE.peer_id, payload=b"x", timestamp=1).signed(ALICE)
    assert not p.verify(b"\x00" * 31)
    assert not p.verify(b"\xff" * 32)
    assert not replace(p, signature=b"\x00" * 64).verify(ALICE.signing_public)


def test_signing_replaces_an_existing_signature() -> None:
    p = Packet(type=2, sender=ALICE.peer_id, payload=b"x", timestamp=1).signed(BOB)
    again = p.signed(ALICE)
    assert again.verify(ALICE.signing_public) and not again.verify(BOB.signing_public)
    assert decode(encode(again)).verify(ALICE.signing_public)
