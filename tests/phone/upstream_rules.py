"""The BitChat apps' rules, written out independently of ``ble_bridge.wire`` for tests.

Everything here was written from reading the apps' sources (iOS permissionlesstech/bitchat
at 9b84b36: ``BitFoundation/BinaryProtocol.swift``, ``BitchatPacket.swift``,
``PeerCapabilities.swift``, ``Protocols/Packets.swift``, ``Services/BLE/BLEService.swift``;
Android permissionlesstech/bitchat-android at 09b481f: ``model/IdentityAnnouncement.kt``,
``model/PeerCapabilities.kt``, ``mesh/AnnouncementIdentityValidator.kt``), not from our
encoder, so a test that checks our frames against it checks them against the apps. Only
the parts the tests need: v1 frames without compression (payloads under 100 bytes), the
announce TLVs, the private-message TLVs.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FLAG_RECIPIENT = 0x01
FLAG_SIGNATURE = 0x02
FLAG_COMPRESSED = 0x04


@dataclass
class UpstreamFrame:
    version: int
    type: int
    ttl: int
    timestamp: int
    flags: int
    sender: bytes
    recipient: bytes | None
    payload: bytes
    signature: bytes | None


def pkcs7_pad(data: bytes) -> bytes:
    """MessagePadding: the smallest of 256/512/1024/2048 >= len+16; none if the pad > 255."""
    for bucket in (256, 512, 1024, 2048):
        if len(data) + 16 <= bucket:
            n = bucket - len(data)
            return data + bytes([n]) * n if n <= 255 else data
    return data


def build_v1(
    ptype: int,
    sender: bytes,
    payload: bytes,
    timestamp: int,
    *,
    ttl: int = 7,
    recipient: bytes | None = None,
    signature: bytes | None = None,
) -> bytes:
    """BinaryProtocol.encode(padding: false) of an uncompressed v1 packet."""
    assert len(payload) < 100  # the apps would consider compressing longer payloads
    return _encode_v1(ptype, sender, payload, timestamp, ttl, recipient, signature)


def _encode_v1(
    ptype: int,
    sender: bytes,
    payload: bytes,
    timestamp: int,
    ttl: int,
    recipient: bytes | None,
    signature: bytes | None,
) -> bytes:
    """The v1 encoding of an uncompressed packet (any payload length)."""
    flags = (FLAG_RECIPIENT if recipient is not None else 0) | (
        FLAG_SIGNATURE if signature is not None else 0
    )
    out = struct.pack(">BBBQBH", 1, ptype, ttl, timestamp, flags, len(payload)) + sender
    if recipient is not None:
        out += recipient
    out += payload
    if signature is not None:
        out += signature
    return out


def sign_v1(
    key: Ed25519PrivateKey,
    ptype: int,
    sender: bytes,
    payload: bytes,
    timestamp: int,
    *,
    ttl: int = 7,
    recipient: bytes | None = None,
) -> bytes:
    """A signed frame as the apps' signPacket builds it: Ed25519 over the padded encoding
    with ttl 0 and no signature (toBinaryDataForSigning)."""
    pre = pkcs7_pad(build_v1(ptype, sender, payload, timestamp, ttl=0, recipient=recipient))
    sig = key.sign(pre)
    return build_v1(ptype, sender, payload, timestamp, ttl=ttl, recipient=recipient, signature=sig)


def parse_v1(data: bytes) -> UpstreamFrame | None:
    """BinaryProtocol.decode for what the tests send (v1, no route, no compression)."""
    if len(data) < 14 or data[0] != 1:
        return None
    _, ptype, ttl, ts, flags, plen = struct.unpack_from(">BBBQBH", data)
    off = 14
    sender = data[off : off + 8]
    off += 8
    recipient = None
    if flags & FLAG_RECIPIENT:
        recipient = data[off : off + 8]
        off += 8
    if flags & FLAG_COMPRESSED:
        return None
    payload = data[off : off + plen]
    if len(payload) != plen:
        return None
    off += plen
    signature = None
    if flags & FLAG_SIGNATURE:
        signature = data[off : off + 64]
        if len(signature) != 64:
            return None
    return UpstreamFrame(1, ptype, ttl, ts, flags, sender, recipient, payload, signature)


def preimage(f: UpstreamFrame) -> bytes:
    """toBinaryDataForSigning of a received uncompressed frame (its payload may be longer
    than 100 bytes: the sender found it would not shrink)."""
    return pkcs7_pad(_encode_v1(f.type, f.sender, f.payload, f.timestamp, 0, f.recipient, None))


def verify(f: UpstreamFrame, signing_key: bytes) -> bool:
    if f.signature is None:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(signing_key).verify(f.signature, preimage(f))
    except InvalidSignature:
        return False
    return True


def peer_id_of(noise_key: bytes) -> bytes:
    """PeerID(publicKey:): the first 8 bytes of SHA-256 of the Noise static key."""
    return hashlib.sha256(noise_key).digest()[:8]


@dataclass
class UpstreamAnnounce:
    nickname: str
    noise_key: bytes
    signing_key: bytes
    capabilities: int | None
    capabilities_bytes: bytes | None


def ios_decode_announce(data: bytes) -> UpstreamAnnounce | None:
    """AnnouncementPacket.decode: TLVs while 2 header bytes remain; a value running past the
    end fails; nickname must be UTF-8 (String(data:encoding:) is nil otherwise); nickname,
    noise key and signing key are all required; capabilities keep the low 64 bits."""
    off = 0
    nickname = noise = signing = caps_raw = None
    while off + 2 <= len(data):
        t, ln = data[off], data[off + 1]
        off += 2
        if off + ln > len(data):
            return None
        v = data[off : off + ln]
        off += ln
        if t == 0x01:
            try:
                nickname = v.decode("utf-8")
            except UnicodeDecodeError:
                nickname = None
        elif t == 0x02:
            noise = v
        elif t == 0x03:
            signing = v
        elif t == 0x05:
            caps_raw = v
    if nickname is None or noise is None or signing is None:
        return None
    caps = None if caps_raw is None else int.from_bytes(caps_raw[:8], "little")
    return UpstreamAnnounce(nickname, noise, signing, caps, caps_raw)


def android_decode_announce(data: bytes) -> UpstreamAnnounce | None:
    """IdentityAnnouncement.decode: the same TLV walk (Kotlin's String(bytes, UTF_8) never
    fails, it substitutes U+FFFD); then AnnouncementIdentityValidator wants a 32-byte signing
    key (checked by the caller with :func:`android_accepts`)."""
    off = 0
    nickname = noise = signing = caps_raw = None
    while off + 2 <= len(data):
        t, ln = data[off], data[off + 1]
        off += 2
        if off + ln > len(data):
            return None
        v = data[off : off + ln]
        off += ln
        if t == 0x01:
            nickname = v.decode("utf-8", errors="replace")
        elif t == 0x02:
            noise = v
        elif t == 0x03:
            signing = v
        elif t == 0x05:
            caps_raw = v
    if nickname is None or noise is None or signing is None:
        return None
    caps = None if caps_raw is None else int.from_bytes(caps_raw[:8], "little")
    return UpstreamAnnounce(nickname, noise, signing, caps, caps_raw)


def android_accepts(frame: bytes, now_ms: int) -> UpstreamAnnounce | None:
    """AnnouncementIdentityValidator.verify: type 0x01, clock skew <= 10 min, decodes, 32-byte
    signing key, sender = peer id of the Noise key, signature valid."""
    f = parse_v1(frame)
    if f is None or f.type != 0x01 or abs(f.timestamp - now_ms) > 600_000:
        return None
    ann = android_decode_announce(f.payload)
    if ann is None or len(ann.signing_key) != 32:
        return None
    if peer_id_of(ann.noise_key) != f.sender or not verify(f, ann.signing_key):
        return None
    return ann


def ios_accepts(frame: bytes) -> UpstreamAnnounce | None:
    """What iOS needs to list a peer from an announce: it decodes, the sender id is the peer
    id of the Noise key, and the signature verifies with the announced signing key."""
    f = parse_v1(frame)
    if f is None or f.type != 0x01:
        return None
    ann = ios_decode_announce(f.payload)
    if ann is None or len(ann.noise_key) != 32 or len(ann.signing_key) != 32:
        return None
    if peer_id_of(ann.noise_key) != f.sender or not verify(f, ann.signing_key):
        return None
    return ann


def ios_encode_capabilities(value: int) -> bytes:
    """PeerCapabilities.encoded(): minimal little-endian, at least one byte."""
    out = bytearray()
    while True:
        out.append(value & 0xFF)
        value >>= 8
        if value == 0:
            return bytes(out)


def ios_encode_announce(
    nickname: str, noise_key: bytes, signing_key: bytes, capabilities: int | None = None
) -> bytes:
    """AnnouncementPacket.encode: nickname, noise key, signing key, [neighbours], [caps]."""
    nick = nickname.encode("utf-8")
    out = bytes([0x01, len(nick)]) + nick
    out += bytes([0x02, len(noise_key)]) + noise_key + bytes([0x03, len(signing_key)]) + signing_key
    if capabilities is not None:
        raw = ios_encode_capabilities(capabilities)
        out += bytes([0x05, len(raw)]) + raw
    return out


def private_message_tlv(message_id: str, content: str) -> bytes:
    """PrivateMessagePacket.encode: TLV 0x00 message id, 0x01 content (UTF-8, <= 255 each)."""
    mid, body = message_id.encode(), content.encode()
    return bytes([0x00, len(mid)]) + mid + bytes([0x01, len(body)]) + body


def parse_private_message_tlv(data: bytes) -> tuple[str, str] | None:
    """PrivateMessagePacket.decode: only TLVs 0x00/0x01 (any other type fails)."""
    off = 0
    mid = content = None
    while off + 2 <= len(data):
        t, ln = data[off], data[off + 1]
        off += 2
        if t not in (0x00, 0x01) or off + ln > len(data):
            return None
        try:  # String(data:encoding:) is nil for bad UTF-8; a later TLV may set it again
            v: str | None = data[off : off + ln].decode("utf-8")
        except UnicodeDecodeError:
            v = None
        off += ln
        if t == 0x00:
            mid = v
        else:
            content = v
    if mid is None or content is None:
        return None
    return mid, content
