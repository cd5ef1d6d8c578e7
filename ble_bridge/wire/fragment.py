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
    encode,
)

FRAGMENT_HEADER = struct.Struct(">8sHHB")
FRAGMENT_HEADER_LEN = FRAGMENT_HEADER.size  # 13
MAX_FRAGMENTS = 256
_FRAGMENT_TYPE = int(PacketType.FRAGMENT)


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
    # Encoded directly (same bytes as encode(Packet(type=FRAGMENT, ...))): this is a hot path.
    probe = Packet(
        type=PacketType.FRAGMENT,
        sender=original.sender,
        payload=b"",
        timestamp=original.timestamp,
        ttl=original.ttl,
        version=original.version,
        recipient=original.recipient,
    )
    empty = encode(probe)  # validates the header fields once
    length_at = 12
    length_len = 4 if original.version == 2 else 2
    prefix = empty[:length_at]
    ids = empty[length_at + length_len :]
    out = []
    for index in range(total):
        piece = frame[index * chunk : (index + 1) * chunk]
        header = FRAGMENT_HEADER.pack(fragment_id, index, total, original.type)
        plen = (FRAGMENT_HEADER_LEN + len(piece)).to_bytes(length_len, "big")
        out.append(b"".join((prefix, plen, ids, header, piece)))
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
        try:
            frag = FragmentPayload.decode(packet.payload)
        except TruncatedError:
            self.drops["fragment_malformed"] += 1
            return None
        lim = self.limits
        if frag.total == 0 or frag.total > lim.max_fragments:
            self.drops["fragment_too_many"] += 1
            return None
        if frag.index >= frag.total:
            self.drops["fragment_bad_index"] += 1
            return None
        key = (bytes(packet.sender), frag.fragment_id)
        asm = self._sets.get(key)
        if asm is None:
            if key in self._completed:
                self.drops["fragment_duplicate"] += 1
                return None
            if self._per_sender[key[0]] >= lim.max_sets_per_sender:
                self._evict_oldest(sender=key[0])
            while len(self._sets) >= lim.max_sets:
                self._evict_oldest()
            asm = _Assembly(frag.total, frag.original_type, now)
            self._sets[key] = asm
            self._per_sender[key[0]] += 1
        elif asm.total != frag.total or asm.original_type != frag.original_type:
            self.drops["fragment_inconsistent"] += 1
            return None
        if frag.index in asm.chunks:
            self.drops["fragment_duplicate"] += 1
            return None
        if asm.size + len(frag.chunk) > lim.max_set_bytes:
            self.drops["fragment_set_too_large"] += 1
            self._remove(key)
            return None
        while self.buffered_bytes + len(frag.chunk) > lim.max_total_bytes and self._sets:
            oldest = next(iter(self._sets))
            if oldest == key:
                self.drops["fragment_buffer_full"] += 1
                self._remove(key)
                return None
            self._evict_oldest()
        asm.chunks[frag.index] = frag.chunk
        asm.size += len(frag.chunk)
        self.buffered_bytes += len(frag.chunk)
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
