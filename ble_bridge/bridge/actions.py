"""What goes into and comes out of the bridge core, and the narrow view its parts have of it.

Inputs: :class:`Arrival`. Actions: :class:`Flood`, :class:`ToNeighbour`. Events:
:class:`OperationFinished`, :class:`HealthChanged`, :class:`BlockCommitted`. The declared
seams for test nodes: :data:`InboundTap` and :class:`OutputFilter`. :class:`Core` is what
the core's parts (:mod:`.receive`, :mod:`.catchup`) and an output filter use of
:class:`~.core.BridgeCore`, so none of them imports it. Sans-IO.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..consensus.byzantine import Outgoing
from ..consensus.engine import Committed
from ..mesh.seen import SeenCache
from ..wire.messages import Message
from .config import BridgeConfig
from .contact import SessionHealth
from .pending import PendingOperation
from .session import Session

# -- inputs and outputs ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Arrival:
    """A 0x1C payload the mesh delivered."""

    payload: bytes
    sender: bytes | None  # signing key of the node that signed the mesh packet, if known
    via: bytes | None  # peer id of the neighbour whose link it came over
    vouched: bool = False  # ``via`` signed the frame itself: its engine accepted it
    flooded: bool = False  # a broadcast the mesh routers relay on (no gossip needed)


@dataclass(frozen=True, slots=True)
class Flood:
    """Broadcast ``payload`` to the whole mesh (a 0x1C packet)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class ToNeighbour:
    """Send ``payload`` (a gossip batch) to linked peer ``peer`` alone, TTL 1."""

    peer: bytes
    payload: bytes


Action = Flood | ToNeighbour


@dataclass(frozen=True, slots=True)
class OperationFinished:
    op: PendingOperation  # committed or failed (``op.status``, ``op.reason``)


@dataclass(frozen=True, slots=True)
class HealthChanged:
    session_id: bytes
    health: SessionHealth
    was: SessionHealth
    height: int
    in_contact: int
    validators: int


@dataclass(frozen=True, slots=True)
class BlockCommitted:
    session_id: bytes
    committed: Committed


Event = OperationFinished | HealthChanged | BlockCommitted

InboundTap = Callable[[bytes, bytes | None], bool]
"""Sees each inbound payload (and its sender's key) before it is queued; False drops it."""


class OutputFilter(Protocol):
    """What leaves the node: one seam for misbehaving test nodes (the honest core has none)."""

    def outgoing(self, core: Core, session_id: bytes, msg: Message) -> Outgoing:
        """For one message the core sends (engine output, announcements): whether it
        still leaves, a payload flooded instead, payloads flooded after it."""
        ...

    def relays(self, core: Core, session_id: bytes, accepted: Sequence[Message]) -> bool:
        """Whether gossip passes on what the engine just ``accepted`` (from others, or
        its own messages it relays)."""
        ...


class Core(Protocol):
    """What the core's parts call on the core (:class:`~.core.BridgeCore` is one)."""

    config: BridgeConfig
    counters: Counter[str]
    seen: SeenCache
    taps: list[InboundTap]

    @property
    def sessions(self) -> Mapping[bytes, Session]: ...

    @property
    def running(self) -> bool: ...

    def session(self, session_id: bytes) -> Session: ...

    def drop(self, reason: str) -> bool: ...

    def epoch(self, now: float) -> int: ...

    def emit(self, event: Event) -> None: ...

    def drain_soon(self, now: float) -> None: ...

    def engine_receive(self, s: Session, now: float, msg: Message) -> None: ...

    def after(self, s: Session, now: float) -> None: ...

    def pass_on(
        self,
        s: Session,
        now: float,
        received: Message | None = None,
        via: bytes | None = None,
        flooded: bool = False,
    ) -> None: ...

    def transmit(self, now: float, session_id: bytes, msg: Message) -> None: ...
