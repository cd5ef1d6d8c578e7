"""Link liveness: which links are half-open or dead, and when a link needs a keepalive. Sans-IO.

A BLE link can look up on one side only (a connect race inside bluetoothd, a peer whose
process died while bluetoothd keeps its LE connection, a radio that went quiet). A real
radio ends such a link by supervision timeout only when the radio itself is gone, so the
transport asks this table, with an explicit ``now``, which links to close:

* ``silent``: nothing at all arrived within ``first_frame_s`` of the link coming up (an
  inbound central that never writes; an outbound link whose notify subscription never
  delivers: a mesh node announces within a second of a new link);
* ``unidentified``: frames arrive but no announce of the peer's own bound the link within
  ``identify_s`` (BitChat apps and nodes announce as soon as they connect);
* ``idle``: nothing arrived for ``idle_s`` on a link to a mesh node (a ble-bridge node
  announcing :data:`CAP_LINK_KEEPALIVE`, which promises a frame at least every
  ``idle_s / 3``), or for ``max(idle_s, app_idle_s)`` on a link to a BitChat app, which
  announces only every 15–30 s and sends no keepalive.

A node sends :func:`keepalive_frame` on a link to a mesh node when it sent nothing else there
for ``keepalive_s``: a BitChat v1 frame of type :data:`KEEPALIVE_TYPE`, TTL 0, unsigned and
empty, which the BitChat apps do not know (iOS logs "Unknown message type" and relays
nothing at TTL 0; Android relays unknown types only by TTL) and our transport swallows.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..wire.packet import Packet, encode

KEEPALIVE_TYPE = 0x1D
"""Not used by the BitChat apps (iOS: 0x01–0x04, 0x10–0x11, 0x20–0x2C; Android: 0x01–0x03,
0x10–0x11, 0x20–0x22, 0x29) nor by ble-bridge's other types (consensus is 0x1C)."""
CAP_LINK_KEEPALIVE = 1 << 14
"""Announce capability bit: this ble-bridge node sends keepalives, so a link to it may be
closed after ``idle_s`` of silence. BitChat apps never set it (their bits are 0–10)."""
KEEPALIVE_LEN = 22
"""v1 header (14) + sender (8); on a link whose frame limit is smaller (MTU 23 carries 20
bytes) an empty frame serves instead, which the apps drop as undecodable."""

K = TypeVar("K", bound=Hashable)


class PeerKind(enum.Enum):
    UNKNOWN = "unknown"  # no announce of its own on this link yet
    NODE = "node"  # announced CAP_LINK_KEEPALIVE
    APP = "app"  # announced without it: a BitChat phone (or an old node)


@dataclass(frozen=True, slots=True)
class LivenessConfig:
    idle_s: float = 45.0
    """``[ble] link_idle_timeout_s``: a link to a mesh node silent this long is closed."""
    app_idle_s: float = 120.0
    """Links to BitChat apps are never closed for less silence than this."""
    first_frame_s: float = 20.0
    identify_s: float = 60.0

    @property
    def keepalive_s(self) -> float:
        return self.idle_s / 3


@dataclass(slots=True)
class _State:
    up_at: float
    heard_at: float | None = None
    sent_at: float = float("-inf")
    kind: PeerKind = PeerKind.UNKNOWN
    identified_at: float | None = None


@dataclass(slots=True)
class Verdict(Generic[K]):
    """What :meth:`LinkLiveness.poll` decided: links to close (with why), keepalives due."""

    close: list[tuple[K, str]] = field(default_factory=list)
    keepalive: list[K] = field(default_factory=list)


def kind_of(capabilities: int) -> PeerKind:
    return PeerKind.NODE if capabilities & CAP_LINK_KEEPALIVE else PeerKind.APP


def keepalive_frame(sender: bytes, timestamp_ms: int, limit: int) -> bytes:
    """The keepalive for a link carrying at most ``limit`` bytes a frame."""
    if limit < KEEPALIVE_LEN:
        return b""
    return encode(Packet(KEEPALIVE_TYPE, bytes(sender[:8]), b"", max(0, timestamp_ms), ttl=0))


def is_keepalive(frame: bytes) -> bool:
    """An empty frame (hello or keepalive) or our keepalive frame: liveness only."""
    return not frame or (
        len(frame) == KEEPALIVE_LEN and frame[0] == 1 and frame[1] == KEEPALIVE_TYPE
    )


class LinkLiveness(Generic[K]):
    """Per-link clocks; the caller closes what :meth:`poll` names and sends the keepalives."""

    def __init__(self, config: LivenessConfig | None = None) -> None:
        self.config = config or LivenessConfig()
        self._links: dict[K, _State] = {}
        self.closed: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._links)

    def __contains__(self, key: object) -> bool:
        return key in self._links

    def up(self, key: K, now: float) -> None:
        self._links[key] = _State(now)

    def down(self, key: K) -> None:
        self._links.pop(key, None)

    def heard(self, key: K, now: float) -> None:
        st = self._links.get(key)
        if st is not None:
            st.heard_at = now

    def sent(self, key: K, now: float) -> None:
        st = self._links.get(key)
        if st is not None:
            st.sent_at = now

    def identified(self, key: K, kind: PeerKind, now: float) -> None:
        st = self._links.get(key)
        if st is not None:
            st.kind = kind
            st.identified_at = now

    def kind(self, key: K) -> PeerKind:
        st = self._links.get(key)
        return st.kind if st is not None else PeerKind.UNKNOWN

    def _idle_limit(self, st: _State) -> float:
        cfg = self.config
        if st.kind is PeerKind.NODE:
            return cfg.idle_s
        return max(cfg.idle_s, cfg.app_idle_s)

    def _deadlines(self, st: _State) -> list[tuple[float, str]]:
        cfg = self.config
        out: list[tuple[float, str]] = []
        if st.heard_at is None:
            out.append((st.up_at + cfg.first_frame_s, "silent"))
        else:
            out.append((st.heard_at + self._idle_limit(st), "idle"))
        if st.identified_at is None:
            out.append((st.up_at + cfg.identify_s, "unidentified"))
        return out

    def poll(self, now: float) -> Verdict[K]:
        """Links to close now (forgotten here) and links due a keepalive (marked as sent)."""
        verdict: Verdict[K] = Verdict()
        for key, st in list(self._links.items()):
            due = [(at, why) for at, why in self._deadlines(st) if at <= now]
            if due:
                why = min(due)[1]
                verdict.close.append((key, why))
                self.closed[why] = self.closed.get(why, 0) + 1
                del self._links[key]
                continue
            if st.kind is not PeerKind.APP and now - st.sent_at >= self.config.keepalive_s:
                verdict.keepalive.append(key)
                st.sent_at = now
        return verdict

    def next_deadline(self) -> float | None:
        """When :meth:`poll` may next have something to do."""
        times: list[float] = []
        for st in self._links.values():
            times.extend(at for at, _ in self._deadlines(st))
            if st.kind is not PeerKind.APP:
                times.append(st.sent_at + self.config.keepalive_s)
        return min(times) if times else None
