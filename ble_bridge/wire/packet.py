"""BitChat-compatible mesh frames (v1 and v2), exactly as ``shared/PROTOCOL.md`` fixes them.

Layout (big-endian)::

    version(1) type(1) ttl(1) timestamp(8) flags(1) payload_len(2 v1 | 4 v2)
    sender(8) [recipient(8) if 0x01] [route: count(1) + 8*count, v2 and 0x08 only]
    [original_size(2 v1 | 4 v2) if 0x04] payload [signature(64) if 0x02] [trailing bytes]

``payload_len`` counts the payload plus the original-size prefix when compressed. The
signature covers the frame encoded with ttl 0, no signature, the 0x10 flag clear, padded by
:func:`pad`. A relay keeps the received (compressed) payload bytes, so the signature stays
valid; :class:`Packet` therefore carries the wire bytes of a compressed payload.
"""

from __future__ import annotations

import enum
import hashlib
import struct
import zlib
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .identity import PEER_ID_LEN, SIGNATURE_LEN, verify_signature

if TYPE_CHECKING:
    from .identity import Identity

DEFAULT_TTL = 7
BROADCAST = b"\xff" * PEER_ID_LEN
_FIXED = struct.Struct(">BBBQB")  # version, type, ttl, timestamp, flags
FIXED_LEN = _FIXED.size  # 12
_HEAD_V1 = struct.Struct(">BBBQBH")  # fixed part + 2-byte payload length
_HEAD_V2 = struct.Struct(">BBBQBI")  # fixed part + 4-byte payload length
_KNOWN_FLAGS = 0x1F
_PREIMAGE_FLAGS_MASK = 0xFF & ~0x12  # clears has-signature and request-sync response
_ID_FLAGS_MASK = 0xFF & ~0x10  # clears request-sync response
PAD_BUCKETS = (256, 512, 1024, 2048)
COMPRESS_MIN = 100
MAX_DEFLATE_RATIO = 50_000


class PacketType(enum.IntEnum):
    ANNOUNCE = 0x01
    MESSAGE = 0x02
    LEAVE = 0x03
    NOISE_HANDSHAKE = 0x10
    NOISE_ENCRYPTED = 0x11
    CONSENSUS = 0x1C
    FRAGMENT = 0x20
    REQUEST_SYNC = 0x21
    FILE_TRANSFER = 0x22


class Flag(enum.IntFlag):
    HAS_RECIPIENT = 0x01
    HAS_SIGNATURE = 0x02
    COMPRESSED = 0x04
    HAS_ROUTE = 0x08
    IS_RSR = 0x10


# Plain ints for the hot paths (IntFlag arithmetic is slow).
_HAS_RECIPIENT = 0x01
_HAS_SIGNATURE = 0x02
_COMPRESSED = 0x04
_HAS_ROUTE = 0x08
_IS_RSR = 0x10

# -- errors ---------------------------------------------------------------------------


class WireError(ValueError):
    """Base class of every decoding error; ``reason`` is a short counter name."""

    reason = "malformed"


class TruncatedError(WireError):
    reason = "truncated"


class BadVersionError(WireError):
    reason = "bad_version"


class BadLengthError(WireError):
    reason = "bad_length"


class OversizeError(WireError):
    reason = "too_large"


class BadCompressionError(WireError):
    reason = "bad_compression"


class BadSignatureError(WireError):
    reason = "bad_signature"


class BadPayloadError(WireError):
    reason = "bad_payload"


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """Upper bounds a decoder enforces before allocating."""

    max_frame: int = (1 << 20) + 4096
    max_payload: int = 1 << 20
    max_route: int = 255


DEFAULT_LIMITS = DecodeLimits()


# -- padding and compression ----------------------------------------------------------


def pad(frame: bytes) -> bytes:
    """PKCS#7-style padding to the smallest bucket ≥ len+16; unpadded if the pad exceeds 255."""
    need = len(frame) + 16
    if need <= 256:
        target = 256
    elif need <= 512:
        target = 512
    elif need <= 1024:
        target = 1024
    elif need <= 2048:
        target = 2048
    else:
        return frame
    n = target - len(frame)
    if n > 255:
        return frame
    return frame + bytes((n,)) * n


def unpad(data: bytes) -> bytes:
    """Remove PKCS#7-style padding; returns the input unchanged when it is not padded."""
    if not data:
        return data
    n = data[-1]
    if n == 0 or n > len(data) or data[-n:] != bytes([n]) * n:
        return data
    return data[:-n]


def should_compress(payload: bytes) -> bool:
    """BitChat's rule: ≥ 100 bytes and not high-entropy (distinct bytes / min(len,256) < 0.9)."""
    if len(payload) < COMPRESS_MIN:
        return False
    return len(set(payload)) / min(len(payload), 256) < 0.9


def deflate_raw(data: bytes) -> bytes:
    """Raw DEFLATE (no zlib header), zlib's default level, as the Android client emits."""
    return zlib.compress(data, zlib.Z_DEFAULT_COMPRESSION, -15)


def inflate_raw(data: bytes, original_size: int, max_size: int) -> bytes:
    """Inflate raw DEFLATE, refusing ratio > 50,000:1, sizes over ``max_size`` or a mismatch.

    The declared size is checked before anything is allocated; output is capped at one byte
    more than declared, and the stream must end (as the Android client requires).
    """
    if original_size > max_size:
        raise OversizeError(f"declared original size {original_size} > limit {max_size}")
    if not data or original_size == 0:
        raise BadCompressionError("empty compressed payload or zero original size")
    if original_size > len(data) * MAX_DEFLATE_RATIO:
        raise BadCompressionError(f"declared expansion above {MAX_DEFLATE_RATIO}:1")
    d = zlib.decompressobj(-15)
    try:
        out = d.decompress(data, original_size + 1)
    except zlib.error as exc:
        raise BadCompressionError(f"bad DEFLATE data: {exc}") from exc
    if len(out) != original_size:
        raise BadCompressionError(f"inflated to {len(out)}+ bytes, declared {original_size}")
    if not d.eof:
        raise BadCompressionError("DEFLATE stream does not end")
    return out


# -- the packet -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Packet:
    """One mesh packet. ``payload`` is the application payload (decompressed).

    ``wire_payload`` holds the compressed bytes exactly as on the air when the packet is
    compressed (flag 0x04), and is ``None`` otherwise; relays re-encode from it unchanged.
    ``_memo`` caches the canonical encoding, preimage and id; ``dataclasses.replace``
    starts a fresh cache, so a changed copy never reuses stale bytes.
    """

    type: int
    sender: bytes
    payload: bytes
    timestamp: int
    ttl: int = DEFAULT_TTL
    version: int = 1
    recipient: bytes | None = None
    route: tuple[bytes, ...] = ()
    signature: bytes | None = None
    wire_payload: bytes | None = None
    rsr: bool = False
    _memo: dict[str, bytes] = field(default_factory=dict, init=False, compare=False, repr=False)

    @property
    def compressed(self) -> bool:
        return self.wire_payload is not None

    @property
    def flags(self) -> int:
        f = 0
        if self.recipient is not None:
            f |= _HAS_RECIPIENT
        if self.signature is not None:
            f |= _HAS_SIGNATURE
        if self.wire_payload is not None:
            f |= _COMPRESSED
        if self.route and self.version >= 2:
            f |= _HAS_ROUTE
        if self.rsr:
            f |= _IS_RSR
        return f

    @property
    def is_broadcast(self) -> bool:
        return self.recipient is None or self.recipient == BROADCAST

    def compress(self) -> Packet:
        """Apply BitChat's raw-DEFLATE rule to the payload (a no-op when it does not pay)."""
        if self.wire_payload is not None or not should_compress(self.payload):
            return self
        if self.version == 1 and len(self.payload) > 0xFFFF:
            return self  # the 2-byte original-size field cannot describe it
        z = deflate_raw(self.payload)
        if len(z) >= len(self.payload):
            return self
        return replace(self, wire_payload=z, signature=None)

    def relayed(self) -> Packet:
        """The copy a relay forwards: ttl − 1, every other byte unchanged."""
        out = replace(self, ttl=self.ttl - 1)
        memo = self._memo
        for key in ("pre", "id"):
            if key in memo:
                out._memo[key] = memo[key]
        frame = memo.get("frame")
        if frame is not None and out.ttl >= 0:
            out._memo["frame"] = frame[:2] + bytes((out.ttl,)) + frame[3:]
        return out

    @property
    def packet_id(self) -> bytes:
        """16-byte id of the signed content (ttl and the 0x10 flag excluded): the dedup key."""
        pid = self._memo.get("id")
        if pid is None:
            f = encode(self)
            body = f[:2] + b"\x00" + f[3:11] + bytes((f[11] & _ID_FLAGS_MASK,)) + f[12:]
            pid = self._memo["id"] = hashlib.sha256(body).digest()[:16]
        return pid

    def signing_bytes(self) -> bytes:
        """The signature preimage: padded encoding with ttl 0, no signature, 0x10 clear."""
        pre = self._memo.get("pre")
        if pre is None:
            f = encode(self)
            end = len(f) - (SIGNATURE_LEN if self.signature is not None else 0)
            body = f[:2] + b"\x00" + f[3:11] + bytes((f[11] & _PREIMAGE_FLAGS_MASK,)) + f[12:end]
            pre = self._memo["pre"] = pad(body)
        return pre

    def signed(self, identity: Identity) -> Packet:
        """A copy carrying ``identity``'s Ed25519 signature over :meth:`signing_bytes`."""
        if not 0 <= self.ttl <= 0xFF:
            raise BadPayloadError(f"ttl {self.ttl} out of range")
        flags = (self.flags | _HAS_SIGNATURE) & ~_IS_RSR
        # Encode the preimage (ttl 0, no signature, 0x10 clear) and the frame directly, and
        # keep both on the copy: this runs for every packet a node signs.
        body = _encode(self, 0, flags & ~_HAS_SIGNATURE)
        pre = pad(body)
        sig = identity.sign(pre)
        out = Packet(
            self.type,
            self.sender,
            self.payload,
            self.timestamp,
            self.ttl,
            self.version,
            self.recipient,
            self.route,
            sig,
            self.wire_payload,
            self.rsr,
        )
        memo = out._memo
        memo["pre"] = pre
        memo["frame"] = _encode(out, self.ttl, flags | _IS_RSR if self.rsr else flags)
        return out

    def verify(self, signing_public: bytes) -> bool:
        if self.signature is None:
            return False
        return verify_signature(signing_public, self.signature, self.signing_bytes())


def encode(
    p: Packet,
    *,
    ttl: int | None = None,
    rsr: bool | None = None,
    with_signature: bool = True,
) -> bytes:
    """Encode a packet (unpadded). Keyword overrides serve the signature preimage.

    Raises :class:`WireError` subclasses for fields that do not fit the frame.
    """
    if ttl is None and rsr is None and with_signature:
        frame = p._memo.get("frame")
        if frame is None:
            frame = p._memo["frame"] = _encode(p, p.ttl, p.flags)
        return frame
    flags = p.flags
    if not with_signature:
        flags &= ~_HAS_SIGNATURE
    if rsr is not None:
        flags = (flags | _IS_RSR) if rsr else (flags & ~_IS_RSR)
    return _encode(p, p.ttl if ttl is None else ttl, flags)


def _encode(p: Packet, ttl: int, flags: int) -> bytes:
    version = p.version
    if version == 1:
        head, size_len, max_len = _HEAD_V1, 2, 0xFFFF
    elif version == 2:
        head, size_len, max_len = _HEAD_V2, 4, 0xFFFFFFFF
    else:
        raise BadVersionError(f"version {version} is not 1 or 2")
    sender = p.sender
    if len(sender) != PEER_ID_LEN:
        raise BadPayloadError("sender id must be 8 bytes")
    wire = p.wire_payload
    if wire is None:
        body = p.payload
        plen = len(body)
    else:
        body = wire
        plen = len(body) + size_len
        if len(p.payload) > max_len:
            raise OversizeError(f"original size {len(p.payload)} does not fit a v{version} frame")
    if plen > max_len:
        raise OversizeError(f"payload of {plen} bytes does not fit a v{version} frame")
    try:
        header = head.pack(version, p.type, ttl, p.timestamp, flags, plen)
    except struct.error as exc:
        raise BadPayloadError(f"header field out of range: {exc}") from exc
    signature = p.signature if flags & _HAS_SIGNATURE else None
    if signature is not None and len(signature) != SIGNATURE_LEN:
        raise BadPayloadError("signature must be 64 bytes")
    if not flags & (_HAS_RECIPIENT | _COMPRESSED | _HAS_ROUTE):  # the common case
        if signature is None:
            return b"".join((header, sender, body))
        return b"".join((header, sender, body, signature))
    parts = [header, sender]
    if p.recipient is not None:
        if len(p.recipient) != PEER_ID_LEN:
            raise BadPayloadError("recipient id must be 8 bytes")
        parts.append(p.recipient)
    if flags & _HAS_ROUTE:
        if len(p.route) > 255 or any(len(h) != PEER_ID_LEN for h in p.route):
            raise BadPayloadError("route must be at most 255 ids of 8 bytes")
        parts.append(bytes((len(p.route),)))
        parts.extend(p.route)
    if wire is not None:
        parts.append(len(p.payload).to_bytes(size_len, "big"))
    parts.append(body)
    if signature is not None:
        parts.append(signature)
    return b"".join(parts)


def decode(data: bytes | bytearray | memoryview, limits: DecodeLimits = DEFAULT_LIMITS) -> Packet:
    """Decode a frame; tries the raw bytes first, then unpadded. Raises only :class:`WireError`."""
    raw = bytes(data)
    try:
        return _decode(raw, limits)
    except WireError as first:
        stripped = unpad(raw)
        if len(stripped) == len(raw):
            raise
        try:
            return _decode(stripped, limits)
        except WireError:
            raise first from None


def _decode(data: bytes, limits: DecodeLimits) -> Packet:
    n = len(data)
    if n > limits.max_frame:
        raise OversizeError(f"frame of {n} bytes > limit {limits.max_frame}")
    if n < FIXED_LEN + 2:
        raise TruncatedError(f"frame of {n} bytes is shorter than a header")
    version = data[0]
    if version == 1:
        _, ptype, ttl, timestamp, flags, plen = _HEAD_V1.unpack_from(data)
        off = 14
        size_len = 2
    elif version == 2:
        if n < FIXED_LEN + 4:
            raise TruncatedError("v2 header truncated")
        _, ptype, ttl, timestamp, flags, plen = _HEAD_V2.unpack_from(data)
        off = 16
        size_len = 4
    else:
        raise BadVersionError(f"version {version} is not 1 or 2")
    if plen > limits.max_frame:
        raise OversizeError(f"payload length {plen} > limit {limits.max_frame}")
    if off + PEER_ID_LEN > n:
        raise TruncatedError("sender id truncated")
    sender = data[off : off + PEER_ID_LEN]
    off += PEER_ID_LEN
    recipient = None
    if flags & _HAS_RECIPIENT:
        if off + PEER_ID_LEN > n:
            raise TruncatedError("recipient id truncated")
        recipient = data[off : off + PEER_ID_LEN]
        off += PEER_ID_LEN
    route: tuple[bytes, ...] = ()
    canonical = not flags & ~_KNOWN_FLAGS
    # Like both BitChat clients: the route flag means nothing on a v1 frame.
    if flags & _HAS_ROUTE:
        if version < 2:
            canonical = False
        else:
            if off >= n:
                raise TruncatedError("route count truncated")
            count = data[off]
            off += 1
            if count > limits.max_route:
                raise OversizeError(f"route of {count} hops > limit {limits.max_route}")
            end = off + PEER_ID_LEN * count
            if end > n:
                raise TruncatedError("route truncated")
            route = tuple(data[i : i + PEER_ID_LEN] for i in range(off, end, PEER_ID_LEN))
            off = end
            canonical = canonical and count > 0
    end = off + plen
    if end > n:
        raise TruncatedError(f"payload truncated: need {plen} bytes, have {n - off}")
    signature = None
    frame_end = end
    if flags & _HAS_SIGNATURE:
        frame_end = end + SIGNATURE_LEN
        if frame_end > n:
            raise TruncatedError("signature truncated")
        signature = data[end:frame_end]
    wire_payload = None
    if flags & _COMPRESSED:
        if plen < size_len:
            raise BadLengthError("compressed payload shorter than its size prefix")
        original = int.from_bytes(data[off : off + size_len], "big")
        wire_payload = data[off + size_len : end]
        payload = inflate_raw(wire_payload, original, limits.max_payload)
    else:
        if plen > limits.max_payload:
            raise OversizeError(f"payload of {plen} bytes > limit {limits.max_payload}")
        payload = data[off:end]
    packet = Packet(
        ptype,
        sender,
        payload,
        timestamp,
        ttl,
        version,
        recipient,
        route,
        signature,
        wire_payload,
        bool(flags & _IS_RSR),
    )
    if canonical:
        # The received bytes are exactly what encode() would produce: keep them, so the
        # preimage, id and relay copy are slices rather than a re-encode.
        packet._memo["frame"] = data if frame_end == n else data[:frame_end]
    return packet
