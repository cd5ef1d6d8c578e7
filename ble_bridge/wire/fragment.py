"""Fragmentation to the link limit and bounded, sans-IO reassembly.

A frame longer than a link's write/notify limit is cut into type-0x20 packets that keep the
original's sender, recipient, timestamp and ttl and are not signed. Fragment payload::

    fragment_id(8, random) · index(2) · total(2) · original_type(1) · chunk

The :class:`Reassembler` keys sets by (sender, fragment id) and enforces PROTOCOL.md's
limits: ≤ 256 fragments, ≤ 1 MiB per set, a bounded number of concurrent sets (also per
sender), and expiry after 30 s. Every refusal is counted by reason in ``drops``.
"""

from __future__ import annotations

import struct
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from .packet import (
    BadPayloadError,
    OversizeError,
    Packet,
    PacketType,
    TruncatedError,
)

FRAGMENT_HEADER = struct.Struct(">8sHHB")
FRAGMENT_HEADER_LEN = FRAGMENT_HEADER.size  # 13
MAX_FRAGMENTS = 256
_FRAGMENT_TYPE = int(PacketType.FRAGMENT)
_FIXED_HEADER = struct.Struct(">BBBQB")  # version, type, ttl, timestamp, flags


@dataclass(frozen=True, slots=True)
class FragmentPayload:
    fragment_id: bytes
    index: int
    total: int
    original_type: int
    chunk: bytes

    def encode(self) -> bytes:
        return (
            FRAGMENT_HEADER.pack(self.fragment_id, self.index, self.total, self.original_type)
            + self.chunk
        )

    @classmethod
    def decode(cls, data: bytes) -> FragmentPayload:
        if len(data) < FRAGMENT_HEADER_LEN:
            raise TruncatedError(f"fragment payload of {len(data)} bytes < 13")
        fid, index, total, otype = FRAGMENT_HEADER.unpack_from(data)
        return cls(fid, index, total, otype, bytes(data[FRAGMENT_HEADER_LEN:]))


def fragment_overhead(original: Packet) -> int:
    """Bytes of a fragment frame that are not chunk (header, ids, fragment header)."""
    fixed = 16 if original.version == 2 else 14
    return fixed + 8 + (8 if original.recipient is not None else 0) + FRAGMENT_HEADER_LEN


def split(frame: bytes, original: Packet, max_frame: int, fragment_id: bytes) -> list[bytes]:
    """Frames to send for ``frame`` on a link carrying at most ``max_frame`` bytes each.

    Fragments keep the original's version, sender, recipient, timestamp and ttl; no route,
    no signature, no compression.
    """
    if len(frame) <= max_frame:
        return [frame]
    if len(fragment_id) != 8:
        raise BadPayloadError("fragment id must be 8 bytes")
    chunk = max_frame - fragment_overhead(original)
    if chunk <= 0:
        raise OversizeError(f"link limit {max_frame} leaves no room for a fragment chunk")
    total = -(-len(frame) // chunk)
    if total > MAX_FRAGMENTS:
        raise OversizeError(
            f"frame of {len(frame)} bytes needs {total} > {MAX_FRAGMENTS} fragments"
        )
    # Encoded directly, byte for byte what encode(Packet(type=FRAGMENT, ...)) gives, because
    # this runs for every frame a node sends.
    v2 = original.version == 2
    if original.version not in (1, 2):
        raise BadPayloadError(f"version {original.version} is not 1 or 2")
    recipient = original.recipient
    if len(original.sender) != 8 or (recipient is not None and len(recipient) != 8):
        raise BadPayloadError("sender and recipient ids must be 8 bytes")
    flags = 0 if recipient is None else 0x01
    try:
        prefix = _FIXED_HEADER.pack(
            original.version, _FRAGMENT_TYPE, original.ttl, original.timestamp, flags
        )
    except struct.error as exc:
        raise BadPayloadError(f"header field out of range: {exc}") from exc
    ids = original.sender if recipient is None else original.sender + recipient
    length_len = 4 if v2 else 2
    pack_header = FRAGMENT_HEADER.pack
    otype = original.type
    full = prefix + (FRAGMENT_HEADER_LEN + chunk).to_bytes(length_len, "big") + ids
    out = [
        full + pack_header(fragment_id, i, total, otype) + frame[i * chunk : (i + 1) * chunk]
        for i in range(total - 1)
    ]
    last = frame[(total - 1) * chunk :]
    plen = (FRAGMENT_HEADER_LEN + len(last)).to_bytes(length_len, "big")
    out.append(
        b"".join((prefix, plen, ids, pack_header(fragment_id, total - 1, total, otype), last))
    )
    return out


@dataclass(frozen=True, slots=True)
class ReassemblyLimits:
    max_fragments: int = MAX_FRAGMENTS
    max_set_bytes: int = 1 << 20
    max_sets: int = 32
    max_sets_per_sender: int = 4
    max_total_bytes: int = 2 << 20
    timeout: float = 30.0
    # Recently completed (sender, fragment id) keys remembered so late duplicates do not
    # open a new set that can never complete.
    max_completed: int = 256


@dataclass(slots=True)
class _Assembly:
    total: int
    original_type: int
    started: float
    chunks: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class Reassembler:
    """Collects fragments into frames; bounded in sets, bytes and time. Sans-IO."""

    def __init__(self, limits: ReassemblyLimits | None = None) -> None:
        self.limits = limits or ReassemblyLimits()
        self._sets: OrderedDict[tuple[bytes, bytes], _Assembly] = OrderedDict()
        self._per_sender: Counter[bytes] = Counter()
        self._completed: OrderedDict[tuple[bytes, bytes], float] = OrderedDict()
        self.buffered_bytes = 0
        self.drops: Counter[str] = Counter()
        self.completed = 0

    def __len__(self) -> int:
        return len(self._sets)

    def feed(self, now: float, packet: Packet) -> bytes | None:
        """Add one fragment packet; returns the reassembled frame when the set completes."""
        self.expire(now)
        if packet.type != _FRAGMENT_TYPE:
            self.drops["fragment_wrong_type"] += 1
            return None
        payload = packet.payload
        if len(payload) < FRAGMENT_HEADER_LEN:
            self.drops["fragment_malformed"] += 1
            return None
        # Same fields as FragmentPayload.decode, without building the object (hot path).
        fragment_id, index, total, original_type = FRAGMENT_HEADER.unpack_from(payload)
        chunk = payload[FRAGMENT_HEADER_LEN:]
        lim = self.limits
        if total == 0 or total > lim.max_fragments:
            self.drops["fragment_too_many"] += 1
            return None
        if index >= total:
            self.drops["fragment_bad_index"] += 1
            return None
        key = (bytes(packet.sender), fragment_id)
        asm = self._sets.get(key)
        if asm is None:
            if key in self._completed:
                self.drops["fragment_duplicate"] += 1
                return None
            if self._per_sender[key[0]] >= lim.max_sets_per_sender:
                self._evict_oldest(sender=key[0])
            while len(self._sets) >= lim.max_sets:
                self._evict_oldest()
            asm = _Assembly(total, original_type, now)
            self._sets[key] = asm
            self._per_sender[key[0]] += 1
        elif asm.total != total or asm.original_type != original_type:
            self.drops["fragment_inconsistent"] += 1
            return None
        if index in asm.chunks:
            self.drops["fragment_duplicate"] += 1
            return None
        if asm.size + len(chunk) > lim.max_set_bytes:
            self.drops["fragment_set_too_large"] += 1
            self._remove(key)
            return None
        while self.buffered_bytes + len(chunk) > lim.max_total_bytes and self._sets:
            oldest = next(iter(self._sets))
            if oldest == key:
                self.drops["fragment_buffer_full"] += 1
                self._remove(key)
                return None
            self._evict_oldest()
        asm.chunks[index] = chunk
        asm.size += len(chunk)
        self.buffered_bytes += len(chunk)
        if len(asm.chunks) < asm.total:
            return None
        self._remove(key)
        self.completed += 1
        self._completed[key] = now
        if len(self._completed) > lim.max_completed:
            self._completed.popitem(last=False)
        return b"".join(asm.chunks[i] for i in range(asm.total))

    def expire(self, now: float) -> int:
        """Drop sets older than the timeout; returns how many were dropped."""
        done = self._completed
        while done and now - next(iter(done.values())) >= self.limits.timeout:
            done.popitem(last=False)
        n = 0
        while self._sets:
            key, asm = next(iter(self._sets.items()))
            if now - asm.started < self.limits.timeout:
                break
            self._remove(key)
            self.drops["fragment_timeout"] += 1
            n += 1
        return n

    def _evict_oldest(self, sender: bytes | None = None) -> None:
        for key in self._sets:
            if sender is None or key[0] == sender:
                self._remove(key)
                self.drops["fragment_evicted"] += 1
                return

    def _remove(self, key: tuple[bytes, bytes]) -> None:
        asm = self._sets.pop(key)
        self.buffered_bytes -= asm.size
        self._per_sender[key[0]] -= 1
        if self._per_sender[key[0]] <= 0:
            del self._per_sender[key[0]]


__all__ = [
    "FRAGMENT_HEADER_LEN",
    "MAX_FRAGMENTS",
    "BadPayloadError",
    "FragmentPayload",
    "Reassembler",
    "ReassemblyLimits",
    "split",
]
