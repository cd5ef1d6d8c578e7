"""Golden vectors: literal bytes written out by hand from shared/PROTOCOL.md."""

from __future__ import annotations

from ble_bridge.wire.fragment import FragmentPayload, split
from ble_bridge.wire.identity import Identity
from ble_bridge.wire.packet import Packet, PacketType, decode, encode, pad
from ble_bridge.wire.payloads import Announce

TS = 1_700_000_000_000  # 0x0000018BCFE56800 ms
TS_HEX = "0000018bcfe56800"
SENDER = bytes.fromhex("0102030405060708")


def h(*parts: str) -> bytes:
    return bytes.fromhex("".join(parts))


# v1, message, ttl 7, no flags, 2-byte length 5, sender, "hello".
V1_MESSAGE = h("01", "02", "07", TS_HEX, "00", "0005", "0102030405060708", "68656c6c6f")

# v2, consensus (0x1C), ttl 5, flags recipient|signature|route = 0x0B, 4-byte length 3,
# sender, recipient, route of 2 hops, payload "abc", then the 64-byte signature.
V2_FIELDS = dict(
    type=0x1C,
    sender=bytes.fromhex("1111111111111111"),
    payload=b"abc",
    timestamp=TS,
    ttl=5,
    version=2,
    recipient=bytes.fromhex("2222222222222222"),
    route=(bytes.fromhex("3333333333333333"), bytes.fromhex("4444444444444444")),
)
V2_SIGNATURE = h(
    "298fffd13ce2dac383142d0d59ffbcd07489e3d93caac0ed43bec0d784f50435",
    "e5db1128b5e15b0b6a00fc7caf6f4d33752cd764e0c34286689926aaf5dc0b00",
)
V2_BODY = (
    "0000018bcfe56800",
    "00000003",
    "1111111111111111",
    "2222222222222222",
    "02",
    "3333333333333333",
    "4444444444444444",
    "616263",
)
V2_SIGNED = h("02", "1c", "05", V2_BODY[0], "0b", *V2_BODY[1:]) + V2_SIGNATURE
# Preimage: ttl 0, flags without 0x02 (= 0x09), no signature; 52 bytes, so padded to the
# 256 bucket (52 + 16 <= 256) with 204 bytes of 0xCC.
V2_PREIMAGE = h("02", "1c", "00", V2_BODY[0], "09", *V2_BODY[1:]) + bytes([204]) * 204

# Announce TLVs: nickname "pi-1", X25519 key, Ed25519 key, two neighbours, capabilities
# 0x0103 little-endian (03 01), then an unknown TLV 0x7E kept as is.
ANNOUNCE_PAYLOAD = h(
    "01",
    "04",
    "70692d31",
    "02",
    "20",
    "aa" * 32,
    "03",
    "20",
    "bb" * 32,
    "04",
    "10",
    "c1" * 8 + "c2" * 8,
    "05",
    "02",
    "0301",
    "7e",
    "03",
    "78797a",
)

# Fragment payload: id, index 1, total 3, original type 0x1C, chunk "xyz".
FRAGMENT_PAYLOAD = h("0102030405060708", "0001", "0003", "1c", "78797a")

# Compressed v1 frame: flag 0x04, length 2 + 10, original size 5, then a raw DEFLATE
# stored block: BFINAL=1/BTYPE=00 (01), LEN 5 (05 00), NLEN (fa ff), "hello".
DEFLATE_HELLO = h("01", "0500", "faff", "68656c6c6f")
V1_COMPRESSED = (
    h("01", "02", "07", TS_HEX, "04", "000c", "0102030405060708", "0005") + DEFLATE_HELLO
)


def test_v1_unsigned_message_encodes_to_the_literal_bytes() -> None:
    p = Packet(type=PacketType.MESSAGE, sender=SENDER, payload=b"hello", timestamp=TS)
    assert encode(p) == V1_MESSAGE


def test_v1_unsigned_message_decodes_from_the_literal_bytes() -> None:
    p = decode(V1_MESSAGE)
    assert (p.version, p.type, p.ttl, p.timestamp) == (1, 2, 7, TS)
    assert (p.sender, p.recipient, p.route, p.signature) == (SENDER, None, (), None)
    assert p.payload == b"hello" and not p.compressed


def test_v2_signing_preimage_is_padded_with_ttl_zero_and_no_signature_flag() -> None:
    assert Packet(**V2_FIELDS).signing_bytes() == V2_PREIMAGE  # type: ignore[arg-type]


def test_v2_signed_frame_with_recipient_and_route_matches_the_literal_bytes() -> None:
    ident = Identity.from_seed(b"golden")
    signed = Packet(**V2_FIELDS).signed(ident)  # type: ignore[arg-type]
    assert signed.signature == V2_SIGNATURE
    assert encode(signed) == V2_SIGNED


def test_v2_literal_frame_decodes_and_verifies() -> None:
    ident = Identity.from_seed(b"golden")
    p = decode(V2_SIGNED)
    assert p.recipient == bytes.fromhex("2222222222222222")
    assert p.route == V2_FIELDS["route"]
    assert p.signing_bytes() == V2_PREIMAGE
    assert p.verify(ident.signing_public)


def test_announce_payload_encodes_to_the_literal_tlvs() -> None:
    a = Announce(
        nickname="pi-1",
        noise_key=b"\xaa" * 32,
        signing_key=b"\xbb" * 32,
        neighbors=(b"\xc1" * 8, b"\xc2" * 8),
        capabilities=0x0103,
        unknown=((0x7E, b"xyz"),),
    )
    assert a.encode() == ANNOUNCE_PAYLOAD
    assert Announce.decode(ANNOUNCE_PAYLOAD) == a


def test_fragment_payload_matches_the_literal_13_byte_header() -> None:
    f = FragmentPayload(bytes.fromhex("0102030405060708"), 1, 3, 0x1C, b"xyz")
    assert f.encode() == FRAGMENT_PAYLOAD
    assert FragmentPayload.decode(FRAGMENT_PAYLOAD) == f


def test_split_produces_the_literal_fragment_frames() -> None:
    # A 62-byte v1 message (payload "0123456789" x 4, length 0x0028).
    frame = h("01", "02", "07", TS_HEX, "00", "0028", "0102030405060708") + b"0123456789" * 4
    fid = bytes.fromhex("a1a2a3a4a5a6a7a8")
    # 14 header + 8 sender + 13 fragment header = 35; a 45-byte link leaves 10-byte chunks:
    # 7 fragments, payloads of 13 + 10 = 23 (0x17) bytes, the last 13 + 2 = 15 (0x0f).
    frames = split(frame, decode(frame), 45, fid)
    assert len(frames) == 7
    assert (
        frames[0]
        == h("01", "20", "07", TS_HEX, "00", "0017", "0102030405060708", "a1a2a3a4a5a6a7a8")
        + h("0000", "0007", "02")
        + frame[:10]
    )
    assert (
        frames[6]
        == h("01", "20", "07", TS_HEX, "00", "000f", "0102030405060708", "a1a2a3a4a5a6a7a8")
        + h("0006", "0007", "02")
        + frame[60:]
    )
    assert all(len(f) <= 45 for f in frames)


def test_stored_deflate_literal_frame_decodes_and_relays_byte_for_byte() -> None:
    p = decode(V1_COMPRESSED)
    assert p.compressed and p.payload == b"hello" and p.wire_payload == DEFLATE_HELLO
    relayed = encode(p.relayed())
    assert relayed == V1_COMPRESSED[:2] + b"\x06" + V1_COMPRESSED[3:]


def test_padding_of_a_literal_frame_follows_the_bucket_rule() -> None:
    # 27 bytes: smallest bucket >= 43 is 256, so 229 bytes of 0xE5.
    assert pad(V1_MESSAGE) == V1_MESSAGE + bytes([229]) * 229
    assert decode(pad(V1_MESSAGE)) == decode(V1_MESSAGE)
