"""What gateways say on the broker: topic layout, presence and frame messages. Pure.

Topics, under ``<prefix>/<mesh_id>/``:

* ``presence/<gateway>``: retained, QoS 1. A JSON object while the gateway is online; an
  empty payload (its last will, or its goodbye) clears it.
* ``all``: frames for every remote gateway (a mesh flood, an announce, a heartbeat).
* ``to/<gateway>``: frames for that gateway alone (neighbour gossip), and the gateway's
  own probe, whose echo tells it the broker still delivers and what the round trip is.

``<gateway>`` is the gateway's 8-byte peer id in hex. A message (``all`` or ``to/``) is::

    magic "BBU" | version 1 | kind u8 | mesh tag 8 | source peer id 8 | seq u32 | sent u64 ms
    then for kind FRAMES: count u16, then count × (length u16, frame)

The mesh tag (8 bytes of SHA-256 of the mesh id) lets a gateway drop messages of another
mesh that reached its topics. Nothing here is trusted: the frames inside are signed by
their authors and verified by the mesh router like frames from a radio.
"""

from __future__ import annotations

import enum
import hashlib
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass

MAGIC = b"BBU"
VERSION = 1
HEADER = struct.Struct(">3sBB8s8sIQ")
HEADER_LEN = HEADER.size  # 33
COUNT = struct.Struct(">H")
LENGTH = struct.Struct(">H")
MAX_FRAMES_PER_MESSAGE = 256
MAX_PRESENCE_BYTES = 512
PEER_ID_LEN = 8


class Kind(enum.IntEnum):
    FRAMES = 0
    HEARTBEAT = 1
    PROBE = 2


class UplinkWireError(ValueError):
    """A message or topic that does not parse; ``reason`` is the counter name."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def mesh_tag(mesh_id: str) -> bytes:
    return hashlib.sha256(b"ble-bridge/uplink/mesh/" + mesh_id.encode("utf-8")).digest()[:8]


@dataclass(frozen=True, slots=True)
class Message:
    kind: Kind
    mesh: bytes
    source: bytes
    seq: int
    sent_ms: int
    frames: tuple[bytes, ...] = ()


def encode_message(
    kind: Kind, mesh: bytes, source: bytes, seq: int, sent_ms: int, frames: Sequence[bytes] = ()
) -> bytes:
    if kind is not Kind.FRAMES and frames:
        raise ValueError("only a FRAMES message carries frames")
    if len(frames) > MAX_FRAMES_PER_MESSAGE:
        raise ValueError(f"{len(frames)} frames > {MAX_FRAMES_PER_MESSAGE}")
    head = HEADER.pack(
        MAGIC, VERSION, int(kind), mesh, source, seq & 0xFFFFFFFF, max(0, sent_ms) & (2**64 - 1)
    )
    if kind is not Kind.FRAMES:
        return head
    parts = [head, COUNT.pack(len(frames))]
    for f in frames:
        if not 0 < len(f) <= 0xFFFF:
            raise ValueError(f"frame of {len(f)} bytes")
        parts.append(LENGTH.pack(len(f)))
        parts.append(f)
    return b"".join(parts)


def message_size(frames: Sequence[bytes]) -> int:
    """Bytes :func:`encode_message` makes of these frames."""
    return HEADER_LEN + COUNT.size + sum(LENGTH.size + len(f) for f in frames)


def decode_message(data: bytes, max_frame: int) -> Message:
    """Parse one message; raises :class:`UplinkWireError` (never anything else)."""
    if len(data) < HEADER_LEN:
        raise UplinkWireError("malformed", "short header")
    magic, version, kind, mesh, source, seq, sent = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise UplinkWireError("malformed", "bad magic")
    if version != VERSION:
        raise UplinkWireError("bad_version", str(version))
    try:
        k = Kind(kind)
    except ValueError:
        raise UplinkWireError("malformed", f"kind {kind}") from None
    if k is not Kind.FRAMES:
        if len(data) != HEADER_LEN:
            raise UplinkWireError("malformed", "trailing bytes")
        return Message(k, mesh, source, seq, sent)
    pos = HEADER_LEN
    if len(data) < pos + COUNT.size:
        raise UplinkWireError("malformed", "no frame count")
    (count,) = COUNT.unpack_from(data, pos)
    pos += COUNT.size
    if count == 0 or count > MAX_FRAMES_PER_MESSAGE:
        raise UplinkWireError("malformed", f"{count} frames")
    frames = []
    for _ in range(count):
        if len(data) < pos + LENGTH.size:
            raise UplinkWireError("malformed", "truncated length")
        (n,) = LENGTH.unpack_from(data, pos)
        pos += LENGTH.size
        if n == 0 or n > max_frame:
            raise UplinkWireError("frame_too_large" if n else "malformed", f"frame of {n}")
        if len(data) < pos + n:
            raise UplinkWireError("malformed", "truncated frame")
        frames.append(data[pos : pos + n])
        pos += n
    if pos != len(data):
        raise UplinkWireError("malformed", "trailing bytes")
    return Message(k, mesh, source, seq, sent, tuple(frames))


@dataclass(frozen=True, slots=True)
class Presence:
    peer_id: bytes
    priority: int
    mesh: bytes


def encode_presence(p: Presence) -> bytes:
    doc = {"v": VERSION, "peer": p.peer_id.hex(), "priority": p.priority, "mesh": p.mesh.hex()}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def decode_presence(data: bytes) -> Presence:
    """Parse a presence payload (not the empty "gone" one); raises :class:`UplinkWireError`."""
    if len(data) > MAX_PRESENCE_BYTES:
        raise UplinkWireError("oversized", f"presence of {len(data)} bytes")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise UplinkWireError("malformed", "presence is not JSON") from None
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        raise UplinkWireError("malformed", "presence version")
    peer, prio, mesh = doc.get("peer"), doc.get("priority"), doc.get("mesh")
    if not (isinstance(peer, str) and isinstance(mesh, str)):
        raise UplinkWireError("malformed", "presence fields")
    if not isinstance(prio, int) or isinstance(prio, bool) or not 0 <= prio <= 255:
        raise UplinkWireError("malformed", "presence priority")
    try:
        pid, tag = bytes.fromhex(peer), bytes.fromhex(mesh)
    except ValueError:
        raise UplinkWireError("malformed", "presence hex") from None
    if len(pid) != PEER_ID_LEN or len(tag) != 8:
        raise UplinkWireError("malformed", "presence lengths")
    return Presence(pid, prio, tag)


class TopicKind(enum.Enum):
    PRESENCE = "presence"
    ALL = "all"
    INBOX = "inbox"


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic layout under ``<prefix>/<mesh_id>``."""

    prefix: str
    mesh_id: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.mesh_id}"

    def presence(self, gateway: bytes) -> str:
        return f"{self.base}/presence/{gateway.hex()}"

    @property
    def presence_filter(self) -> str:
        return f"{self.base}/presence/+"

    @property
    def all(self) -> str:
        return f"{self.base}/all"

    def inbox(self, gateway: bytes) -> str:
        return f"{self.base}/to/{gateway.hex()}"

    def subscriptions(self, me: bytes) -> list[str]:
        return [self.presence_filter, self.all, self.inbox(me)]

    def parse(self, topic: str) -> tuple[TopicKind, bytes | None]:
        """What a topic is; raises :class:`UplinkWireError` ``unknown_topic``/``unknown_mesh``."""
        base = self.base + "/"
        if not topic.startswith(base):
            raise UplinkWireError(
                "unknown_mesh" if topic.startswith(self.prefix + "/") else "unknown_topic", topic
            )
        rest = topic[len(base) :].split("/")
        if rest == ["all"]:
            return TopicKind.ALL, None
        if len(rest) == 2 and rest[0] in ("presence", "to"):
            try:
                gw = bytes.fromhex(rest[1])
            except ValueError:
                raise UplinkWireError("unknown_topic", topic) from None
            if len(gw) != PEER_ID_LEN:
                raise UplinkWireError("unknown_topic", topic)
            return (TopicKind.PRESENCE if rest[0] == "presence" else TopicKind.INBOX), gw
        raise UplinkWireError("unknown_topic", topic)
