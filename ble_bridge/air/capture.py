"""pcap capture of the loopback air, readable by Wireshark with ``tools/wireshark/ble_bridge.lua``.

Link-layer type 147 (``LINKTYPE_USER0``). Each record is a 12-byte air header followed by
the mesh frame exactly as sent on the link::

    version(1)=1  event(1)  src_node(2)  dst_node(2)  link_id(4)  role(1)  reserved(1)

``event``: 0 delivered, 1 lost when the link dropped, 2 lost to an injected fault,
3 injected from outside the air (test junk). ``role``: 0 the sender is the link's
central (a write), 1 its peripheral (a notification). Timestamps are virtual time on
:data:`~ble_bridge.air.clock.SIM_EPOCH`.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .clock import SIM_EPOCH

LINKTYPE_USER0 = 147
PCAP_MAGIC = 0xA1B2C3D4
_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
AIR_HEADER = struct.Struct(">BBHHIBB")
AIR_HEADER_VERSION = 1
SNAPLEN = 65535


class AirEvent(enum.IntEnum):
    DELIVERED = 0
    LOST_LINK = 1
    LOST_FAULT = 2
    INJECTED = 3


@dataclass(frozen=True, slots=True)
class CaptureRecord:
    """One frame read back from a capture."""

    time: float
    event: AirEvent
    src: int
    dst: int
    link_id: int
    from_central: bool
    frame: bytes


class PcapWriter:
    """Appends air records to a pcap file; stops (and counts) past ``max_bytes``."""

    def __init__(self, path: Path | str, *, max_bytes: int = 256 << 20) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._f: BinaryIO | None = self.path.open("wb")
        self._f.write(_GLOBAL.pack(PCAP_MAGIC, 2, 4, 0, 0, SNAPLEN, LINKTYPE_USER0))
        self.written = _GLOBAL.size
        self.records = 0
        self.records_dropped = 0

    def write(
        self,
        time: float,
        event: AirEvent,
        src: int,
        dst: int,
        link_id: int,
        from_central: bool,
        frame: bytes,
    ) -> None:
        if self._f is None:
            return
        body = (
            AIR_HEADER.pack(
                AIR_HEADER_VERSION,
                int(event),
                src & 0xFFFF,
                dst & 0xFFFF,
                link_id & 0xFFFFFFFF,
                0 if from_central else 1,
                0,
            )
            + frame[: SNAPLEN - AIR_HEADER.size]
        )
        size = _RECORD.size + len(body)
        if self.written + size > self.max_bytes:
            self.records_dropped += 1
            return
        stamp = SIM_EPOCH + time
        sec = int(stamp)
        usec = min(999_999, round((stamp - sec) * 1_000_000))
        self._f.write(_RECORD.pack(sec, usec, len(body), AIR_HEADER.size + len(frame)) + body)
        self.written += size
        self.records += 1

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class CaptureFormatError(ValueError):
    """The file is not a ble-bridge air capture."""


def read_pcap(path: Path | str) -> Iterator[CaptureRecord]:
    """Records of a capture written by :class:`PcapWriter`."""
    with Path(path).open("rb") as f:
        head = f.read(_GLOBAL.size)
        if len(head) < _GLOBAL.size:
            raise CaptureFormatError("file shorter than a pcap header")
        magic, _, _, _, _, _, linktype = _GLOBAL.unpack(head)
        if magic != PCAP_MAGIC or linktype != LINKTYPE_USER0:
            raise CaptureFormatError(f"not a little-endian USER0 pcap (magic {magic:#x})")
        while True:
            rec = f.read(_RECORD.size)
            if not rec:
                return
            if len(rec) < _RECORD.size:
                raise CaptureFormatError("truncated record header")
            sec, usec, incl, _orig = _RECORD.unpack(rec)
            body = f.read(incl)
            if len(body) < incl or incl < AIR_HEADER.size:
                raise CaptureFormatError("truncated record")
            version, event, src, dst, link_id, role, _ = AIR_HEADER.unpack_from(body)
            if version != AIR_HEADER_VERSION:
                raise CaptureFormatError(f"air header version {version}")
            yield CaptureRecord(
                time=sec + usec / 1e6 - SIM_EPOCH,
                event=AirEvent(event),
                src=src,
                dst=dst,
                link_id=link_id,
                from_central=role == 0,
                frame=body[AIR_HEADER.size :],
            )
