"""What travels inside BitChat's Noise transport messages (packet type 0x11).

The plaintext is ``type (1 byte) || data`` (iOS ``NoisePayload``, ``BLENoisePayloadFactory``):
0x01 private message (TLVs 0x00 message id, 0x01 content, UTF-8, at most 255 bytes each; any
other TLV type makes iOS refuse the whole message), 0x02 read receipt and 0x03 delivered
(data = the message id, UTF-8). Other types (groups, voice, files, verification, 0x21
authenticated peer state) are recognised and ignored by ble-bridge.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..wire.packet import BadPayloadError

MAX_TLV = 255


class NoisePayloadType(enum.IntEnum):
    PRIVATE_MESSAGE = 0x01
    READ_RECEIPT = 0x02
    DELIVERED = 0x03
    GROUP_INVITE = 0x06
    GROUP_KEY_UPDATE = 0x07
    VOICE_FRAME = 0x08
    PRERELEASE_PRIVATE_FILE = 0x09
    VERIFY_CHALLENGE = 0x10
    VERIFY_RESPONSE = 0x11
    VOUCH = 0x12
    PRIVATE_FILE = 0x20
    AUTHENTICATED_PEER_STATE = 0x21


KNOWN_TYPES = frozenset(int(t) for t in NoisePayloadType)


@dataclass(frozen=True, slots=True)
class PrivateMessage:
    message_id: str
    content: str

    def encode(self) -> bytes:
        mid = self.message_id.encode("utf-8")
        body = self.content.encode("utf-8")
        if len(mid) > MAX_TLV or len(body) > MAX_TLV:
            raise BadPayloadError("private message id and content are at most 255 bytes")
        return bytes((0x00, len(mid))) + mid + bytes((0x01, len(body))) + body

    @classmethod
    def decode(cls, data: bytes) -> PrivateMessage:
        """iOS ``PrivateMessagePacket.decode``: unknown TLV types, truncation, or a field
        missing (or not UTF-8) at the end refuse the message."""
        mid: str | None = None
        content: str | None = None
        off = 0
        while off + 2 <= len(data):
            t, ln = data[off], data[off + 1]
            off += 2
            if t not in (0x00, 0x01):
                raise BadPayloadError(f"unknown private message TLV 0x{t:02x}")
            if off + ln > len(data):
                raise BadPayloadError("private message TLV truncated")
            value: str | None
            try:  # like iOS: bad UTF-8 unsets the field, a later TLV may set it again
                value = bytes(data[off : off + ln]).decode("utf-8")
            except UnicodeDecodeError:
                value = None
            off += ln
            if t == 0x00:
                mid = value
            else:
                content = value
        if mid is None or content is None:
            raise BadPayloadError("private message without id or content (or not UTF-8)")
        return cls(mid, content)


def typed(ptype: NoisePayloadType, data: bytes) -> bytes:
    return bytes((ptype,)) + data


def split_typed(plaintext: bytes) -> tuple[int, bytes]:
    """``(type, data)``; an empty plaintext or an unknown type raises BadPayloadError."""
    if not plaintext:
        raise BadPayloadError("empty Noise payload")
    if plaintext[0] not in KNOWN_TYPES:
        raise BadPayloadError(f"unknown Noise payload type 0x{plaintext[0]:02x}")
    return plaintext[0], bytes(plaintext[1:])


__all__ = ["NoisePayloadType", "PrivateMessage", "split_typed", "typed"]
