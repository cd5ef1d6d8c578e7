"""Scheduled faults for simulated networks: partitions, link drops, crashes, skew, loss, delay.

A :class:`FaultPlan` is plain data (it knows no network); a running
:class:`~.network.Network` turns it into timers (``Network.apply``). Times are seconds of virtual time from the start of the run.
"""

from __future__ import annotations

from dataclasses import dataclass

from .topology import Topology


@dataclass(frozen=True, slots=True)
class Partition:
    """From ``at`` the groups cannot hear each other (nodes in no group form one more).

    No groups: a wall through the middle, splitting west and east halves by position.
    """

    at: float
    groups: tuple[tuple[int, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class Heal:
    at: float


@dataclass(frozen=True, slots=True)
class LinkDrop:
    """Break the links of ``node`` (or one random link of the air when ``node`` is None)."""

    at: float
    node: int | None = None


@dataclass(frozen=True, slots=True)
class Crash:
    """Power loss at ``at``; with ``restart_after`` a new node object reuses the identity."""

    at: float
    node: int
    restart_after: float | None = None


@dataclass(frozen=True, slots=True)
class ClockSkew:
    """The node's wall clock is off by ``offset`` seconds (applies from its next start)."""

    node: int
    offset: float


@dataclass(frozen=True, slots=True)
class Loss:
    """Frames sent by ``nodes`` (all when None) are lost with ``probability`` in [start, end)."""

    start: float
    end: float
    probability: float
    nodes: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class Delay:
    """Every frame takes ``extra`` more seconds in [start, end)."""

    start: float
    end: float
    extra: float


@dataclass(frozen=True, slots=True)
class Movement:
    """Random-waypoint movement of ``nodes`` (all when None), stepped every ``tick``."""

    start: float = 0.0
    speed: tuple[float, float] = (0.005, 0.02)
    tick: float = 1.0
    nodes: tuple[int, ...] | None = None


Fault = Partition | Heal | LinkDrop | Crash | ClockSkew | Loss | Delay | Movement


@dataclass(frozen=True, slots=True)
class FaultPlan:
    faults: tuple[Fault, ...] = ()

    def __add__(self, other: FaultPlan) -> FaultPlan:
        return FaultPlan(self.faults + other.faults)

    def validate(self, nodes: int) -> None:
        """Raise ``ValueError`` when a fault names a node outside ``0..nodes-1``."""
        for f in self.faults:
            named: list[int] = []
            if isinstance(f, Crash | ClockSkew) or (isinstance(f, LinkDrop) and f.node is not None):
                named.append(f.node)  # type: ignore[arg-type]
            if isinstance(f, Partition):
                named.extend(i for g in f.groups for i in g)
            if isinstance(f, Loss | Movement) and f.nodes is not None:
                named.extend(f.nodes)
            bad = [i for i in named if not 0 <= i < nodes]
            if bad:
                raise ValueError(f"fault {f} names node {bad[0]}, but nodes are 0..{nodes - 1}")

    def skews(self) -> dict[int, float]:
        return {f.node: f.offset for f in self.faults if isinstance(f, ClockSkew)}


def halves(topology: Topology) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Split nodes into a west and an east half by position (a wall through the room)."""
    pos = topology.positions
    order = sorted(range(len(pos)), key=lambda i: (pos[i][0], pos[i][1], i))
    mid = len(order) // 2
    return tuple(sorted(order[:mid])), tuple(sorted(order[mid:]))


class FaultSpecError(ValueError):
    """A ``--faults`` item that does not parse; the message shows the accepted forms."""


FAULT_FORMS = (
    "partition@START:HEAL",
    "crash:NODE@T[+RESTART_AFTER]",
    "drop[:NODE]@T",
    "loss:P@START:END",
    "delay:SECONDS@START:END",
    "skew:NODE=SECONDS",
    "move",
)


def parse_faults(text: str) -> FaultPlan:
    """Parse comma-separated fault items (see :data:`FAULT_FORMS`); partitions cut in halves."""
    faults: list[Fault] = []
    for raw in (t.strip() for t in text.split(",")):
        if not raw:
            continue
        try:
            faults.extend(_parse_one(raw))
        except (ValueError, IndexError) as exc:
            raise FaultSpecError(
                f"bad fault {raw!r} ({exc}); forms: {', '.join(FAULT_FORMS)}"
            ) from None
    return FaultPlan(tuple(faults))


def _window(s: str) -> tuple[float, float]:
    a, b = s.split(":")
    start, end = float(a), float(b)
    if end <= start:
        raise ValueError("the end must come after the start")
    return start, end


def _parse_one(raw: str) -> list[Fault]:
    if raw == "move":
        return [Movement()]
    head, _, when = raw.partition("@")
    name, _, arg = head.partition(":")
    if name == "partition":
        start, heal = _window(when)
        return [Partition(start), Heal(heal)]
    if name == "crash":
        at, _, after = when.partition("+")
        return [Crash(float(at), int(arg), float(after) if after else None)]
    if name == "drop":
        return [LinkDrop(float(when), int(arg) if arg else None)]
    if name == "loss":
        start, end = _window(when)
        p = float(arg)
        if not 0.0 <= p <= 1.0:
            raise ValueError("loss probability must be within 0..1")
        return [Loss(start, end, p)]
    if name == "delay":
        start, end = _window(when)
        return [Delay(start, end, float(arg))]
    if name == "skew":
        node, _, offset = arg.partition("=")
        return [ClockSkew(int(node), float(offset))]
    raise ValueError(f"unknown fault {name!r}")
