"""The link layer both worlds implement: BlueZ (``gatt/``) and the loopback air (``sim``).

A transport owns BLE links. Each link carries *frames*: one BLE write-without-response or
notification each, at most ``LinkInfo.max_frame`` bytes. The mesh above fragments packets to
fit. A transport never blocks its caller: ``send`` queues into a bounded per-link queue and
says plainly when the queue is full. Events go to one :class:`TransportHandler`, called from
the event loop that runs the transport.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

ATT_HEADER = 3
"""Bytes of ATT header in each write/notification."""
MAX_ATT_VALUE = 512
"""Largest attribute value (Core spec Vol 3 Part F 3.2.9): BlueZ cuts a longer notification
or refuses a longer write whatever the MTU, so at MTU 517 a frame holds 512 bytes, not 514."""

MIN_ATT_MTU = 23
MAX_ATT_MTU = 517


def frame_limit(mtu: int) -> int:
    """Largest frame one write-without-response or notification carries at ATT MTU ``mtu``:
    ``min(mtu - 3, 512)``, the same in both directions."""
    return min(max(mtu, MIN_ATT_MTU) - ATT_HEADER, MAX_ATT_VALUE)


class LinkRole(enum.StrEnum):
    """Which side of the BLE connection this node is on."""

    CENTRAL = "central"  # we connected out (bleak); we write, they notify
    PERIPHERAL = "peripheral"  # they connected to us (bless); they write, we notify
    UPLINK = "uplink"  # a remote gateway heard through an MQTT broker (ble_bridge.uplink)


@dataclass(frozen=True, slots=True)
class LinkInfo:
    """One live link. ``link_id`` is unique within a transport and never reused."""

    link_id: int
    peer_address: str
    mtu: int
    role: LinkRole

    @property
    def max_frame(self) -> int:
        """Largest frame that fits one write/notification on this link (:func:`frame_limit`;
        an uplink carries no ATT attribute, so only its ``mtu - 3`` applies)."""
        if self.role is LinkRole.UPLINK:
            return max(self.mtu, MIN_ATT_MTU) - ATT_HEADER
        return frame_limit(self.mtu)


class SendResult(enum.Enum):
    """Outcome of :meth:`Transport.send`; never an exception for ordinary conditions."""

    QUEUED = "queued"
    QUEUE_FULL = "queue_full"
    NO_SUCH_LINK = "no_such_link"
    TOO_LARGE = "too_large"


class TransportHandler(Protocol):
    """Receives a transport's events. Implementations must not block."""

    def link_up(self, info: LinkInfo) -> None: ...

    def link_down(self, link_id: int, reason: str) -> None: ...

    def frame_received(self, link_id: int, data: bytes) -> None: ...


class Transport(abc.ABC):
    """A set of BLE links with bounded send queues."""

    @abc.abstractmethod
    def attach(self, handler: TransportHandler) -> None:
        """Set the one handler that receives link and frame events."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Begin advertising/scanning/connecting (or joining the simulated air)."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Close every link and release resources; idempotent."""

    @abc.abstractmethod
    def send(self, link_id: int, frame: bytes) -> SendResult:
        """Queue one frame (≤ ``max_frame`` bytes) on a link, without blocking."""

    @abc.abstractmethod
    def links(self) -> Sequence[LinkInfo]:
        """The links that are up now."""

    @abc.abstractmethod
    def queue_depth(self, link_id: int) -> int:
        """Frames waiting to go out on a link (0 for an unknown link)."""

    def link_identified(self, link_id: int, peer_id: bytes, capabilities: int) -> None:  # noqa: B027
        """The mesh bound ``link_id`` to ``peer_id``: its own verified announce arrived on it
        (``capabilities``: the announce's bitfield). A transport that decides anything by peer
        id (duplicate links, liveness) learns it here; the default ignores it."""

    def announce_capabilities(self) -> int:
        """Capability bits this transport's behaviour adds to the node's announces."""
        return 0

    def issues(self) -> list[str]:
        """Problems worth an operator's attention now (e.g. the advertisement refused), one
        short line each; empty when all is well."""
        return []
