"""Scheduled faults for simulated networks: partitions, link drops, crashes, skew, loss, delay.

A :class:`FaultPlan` is plain data; :func:`schedule` turns it into timers on a running
:class:`~.network.Network`. Times are seconds of virtual time from the start of the run.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .topology import RandomWaypoint

if TYPE_CHECKING:
    from .network import Network


@dataclass(frozen=True, slots=True)
class Partition:
    """From ``at`` the groups cannot hear each other (nodes in no group form one more)."""

    at: float
    groups: tuple[tuple[int, ...], ...]


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

    def skews(self) -> dict[int, float]:
        return {f.node: f.offset for f in self.faults if isinstance(f, ClockSkew)}


def halves(network: Network) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Split nodes into a west and an east half by position (a wall through the room)."""
    pos = network.air.topology.positions
    order = sorted(range(len(pos)), key=lambda i: (pos[i][0], pos[i][1], i))
    mid = len(order) // 2
    return tuple(sorted(order[:mid])), tuple(sorted(order[mid:]))


def schedule(network: Network, plan: FaultPlan, rng: random.Random) -> None:
    """Set timers for every fault of ``plan`` relative to the loop's time now."""
    loop = network.loop
    t0 = loop.time()
    air = network.air
    for f in plan.faults:
        if isinstance(f, Partition):
            loop.call_at(t0 + f.at, air.partition, f.groups)
        elif isinstance(f, Heal):
            loop.call_at(t0 + f.at, air.heal)
        elif isinstance(f, LinkDrop):
            loop.call_at(t0 + f.at, _drop_links, network, f.node, rng)
        elif isinstance(f, Crash):
            loop.call_at(t0 + f.at, network.spawn_crash, f.node, f.restart_after)
        elif isinstance(f, Loss):
            loop.call_at(t0 + f.start, _set_loss, network, f.probability, f.nodes)
            loop.call_at(t0 + f.end, _set_loss, network, 0.0, None)
        elif isinstance(f, Delay):
            loop.call_at(t0 + f.start, _set_delay, network, f.extra)
            loop.call_at(t0 + f.end, _set_delay, network, 0.0)
        elif isinstance(f, Movement):
            walker = RandomWaypoint(air.topology, rng, speed=f.speed, nodes=f.nodes)
            loop.call_at(t0 + f.start, _move, network, walker, f.tick)
        # ClockSkew is applied by the network when it builds each node


def _drop_links(network: Network, node: int | None, rng: random.Random) -> None:
    air = network.air
    if node is None:
        pairs = air.link_ids()
        if pairs:
            air.break_link(rng.choice(pairs), "supervision_timeout")
        return
    for link_id in air.link_ids(node):
        air.break_link(link_id, "supervision_timeout")


def _set_loss(network: Network, p: float, nodes: Sequence[int] | None) -> None:
    network.air.loss = p
    network.air.loss_nodes = frozenset(nodes) if nodes is not None else None
    network.air.record("loss", p)


def _set_delay(network: Network, extra: float) -> None:
    network.air.extra_delay = extra
    network.air.record("delay", extra)


def _move(network: Network, walker: RandomWaypoint, tick: float) -> None:
    if network.stopped:
        return
    walker.step(tick)
    network.air.check_range()
    loop: asyncio.AbstractEventLoop = network.loop
    loop.call_later(tick, _move, network, walker, tick)
