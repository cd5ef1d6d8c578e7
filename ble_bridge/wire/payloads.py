"""Payload codecs of the BitChat packet types ble-bridge speaks: announce, message, leave.

Announce is a TLV list (1-byte type, 1-byte length). Known TLVs: 0x01 nickname (UTF-8),
0x02 X25519 public key, 0x03 Ed25519 public key, 0x04 up to 10 neighbour ids (8 bytes each),
0x05 capabilities (little-endian bitfield, trailing zero bytes trimmed but at least one byte,
as iOS ``PeerCapabilities.encoded()`` writes it: an empty set is ``05 01 00``). Unknown TLVs
are kept in order so a node can re-encode what it received.
"""

from __future__ import annotations

from dataclasses import dataclass

from .identity import KEY_LEN, PEER_ID_LEN
from .packet import BadPayloadError, TruncatedError

TLV_NICKNAME = 0x01
TLV_NOISE_KEY = 0x02
TLV_SIGNING_KEY = 0x03
TLV_NEIGHBORS = 0x04
TLV_CAPABILITIES = 0x05
MAX_NEIGHBORS = 10


@dataclass(frozen=True, slots=True)
class Announce:
    """Decoded announce payload."""

    nickname: str | None = None
    noise_key: bytes | None = None
    signing_key: bytes | None = None
    neighbors: tuple[bytes, ...] = ()
    capabilities: int | None = None
    unknown: tuple[tuple[int, bytes], ...] = ()

    def encode(self) -> bytes:
        out = bytearray()

        def tlv(t: int, value: bytes) -> None:
            if len(value) > 255:
                raise BadPayloadError(f"TLV 0x{t:02x} value of {len(value)} bytes > 255")
            out.append(t)
            out.append(len(value))
            out.extend(value)

        if self.nickname is not None:
            tlv(TLV_NICKNAME, self.nickname.encode("utf-8"))
        if self.noise_key is not None:
            tlv(TLV_NOISE_KEY, self.noise_key)
        if self.signing_key is not None:
            tlv(TLV_SIGNING_KEY, self.signing_key)
        if self.neighbors:
            if len(self.neighbors) > MAX_NEIGHBORS:
                raise BadPayloadError(f"at most {MAX_NEIGHBORS} neighbours")
            tlv(TLV_NEIGHBORS, b"".join(self.neighbors))
        if self.capabilities is not None:
            if self.capabilities < 0:
                raise BadPayloadError("capabilities must be non-negative")
            # minimal little-endian, never empty (an empty set is one zero byte)
            raw = self.capabilities.to_bytes(
                max(1, (self.capabilities.bit_length() + 7) // 8), "little"
            )
            tlv(TLV_CAPABILITIES, raw)
        for t, v in self.unknown:
            tlv(t, v)
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes) -> Announce:
        nickname = noise = signing = None
        neighbors: tuple[bytes, ...] = ()
        caps: int | None = None
        unknown: list[tuple[int, bytes]] = []
        off = 0
        while off < len(data):
            if off + 2 > len(data):
                raise TruncatedError("announce TLV header truncated")
            t, ln = data[off], data[off + 1]
            off += 2
            if off + ln > len(data):
                raise TruncatedError(f"announce TLV 0x{t:02x} truncated")
            v = bytes(data[off : off + ln])
            off += ln
            if t == TLV_NICKNAME:
                try:
                    nickname = v.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise BadPayloadError("nickname is not UTF-8") from exc
            elif t == TLV_NOISE_KEY:
                if ln != KEY_LEN:
                    raise BadPayloadError("noise key must be 32 bytes")
                noise = v
            elif t == TLV_SIGNING_KEY:
                if ln != KEY_LEN:
                    raise BadPayloadError("signing key must be 32 bytes")
                signing = v
            elif t == TLV_NEIGHBORS:
                if ln % PEER_ID_LEN or ln // PEER_ID_LEN > MAX_NEIGHBORS:
                    raise BadPayloadError("neighbour list must be up to 10 ids of 8 bytes")
                neighbors = tuple(v[i : i + PEER_ID_LEN] for i in range(0, ln, PEER_ID_LEN))
            elif t == TLV_CAPABILITIES:
                caps = int.from_bytes(v, "little")
            else:
                unknown.append((t, v))
        return cls(nickname, noise, signing, neighbors, caps, tuple(unknown))


def encode_message(text: str) -> bytes:
    return text.encode("utf-8")


def decode_message(data: bytes) -> str:
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadPayloadError("message payload is not UTF-8") from exc


def decode_leave(data: bytes) -> None:
    if data:
        raise BadPayloadError("leave payload must be empty")
