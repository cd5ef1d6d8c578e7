"""Where nodes stand and who can hear whom: every topology is points plus a radio range.

Full, line, ring and grid are geometric layouts whose range makes exactly the intended
neighbours audible, so movement works the same for all of them. :class:`RandomWaypoint`
moves nodes (sans-IO: the caller steps it with ``dt``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

Point = tuple[float, float]
TOPOLOGIES = ("full", "line", "ring", "grid", "random")


class Topology:
    """Node positions and a radio range; ``in_range`` is symmetric, cached until a move."""

    def __init__(self, name: str, positions: Sequence[Point], radio_range: float) -> None:
        self.name = name
        self.positions: list[Point] = list(positions)
        self.radio_range = radio_range
        self._neighbours: list[tuple[int, ...]] | None = None

    def __len__(self) -> int:
        return len(self.positions)

    def distance(self, i: int, j: int) -> float:
        (x1, y1), (x2, y2) = self.positions[i], self.positions[j]
        return math.hypot(x1 - x2, y1 - y2)

    def in_range(self, i: int, j: int) -> bool:
        return i != j and self.distance(i, j) <= self.radio_range

    def neighbours(self, i: int) -> tuple[int, ...]:
        """Nodes within radio range of ``i``, ascending."""
        if self._neighbours is None:
            n = len(self.positions)
            self._neighbours = [tuple(j for j in range(n) if self.in_range(i, j)) for i in range(n)]
        return self._neighbours[i]

    def move(self, i: int, position: Point) -> None:
        self.positions[i] = position
        self._neighbours = None

    def is_connected(self, nodes: Sequence[int] | None = None) -> bool:
        """True when the radio graph restricted to ``nodes`` (default all) is connected."""
        members = set(range(len(self)) if nodes is None else nodes)
        if not members:
            return True
        start = min(members)
        seen = {start}
        stack = [start]
        while stack:
            for j in self.neighbours(stack.pop()):
                if j in members and j not in seen:
                    seen.add(j)
                    stack.append(j)
        return seen == members

    def hops_from(self, source: int) -> dict[int, int]:
        """Shortest hop count from ``source`` to every reachable node (BFS)."""
        dist = {source: 0}
        frontier = [source]
        while frontier:
            nxt = []
            for i in frontier:
                for j in self.neighbours(i):
                    if j not in dist:
                        dist[j] = dist[i] + 1
                        nxt.append(j)
            frontier = nxt
        return dist


def full(n: int) -> Topology:
    """Everyone hears everyone (a table of handhelds)."""
    return Topology("full", [(0.0, 0.0)] * n, 1.0)


def line(n: int, spacing: float = 1.0) -> Topology:
    """A chain: each node hears only the next and the previous one."""
    return Topology("line", [(i * spacing, 0.0) for i in range(n)], spacing * 1.01)


def ring(n: int) -> Topology:
    """A cycle: each node hears its two ring neighbours (n ≥ 4 for a true ring)."""
    if n < 3:
        return line(n)
    radius = 1.0
    pts = [
        (radius * math.cos(2 * math.pi * i / n), radius * math.sin(2 * math.pi * i / n))
        for i in range(n)
    ]
    chord = 2 * radius * math.sin(math.pi / n)
    return Topology("ring", pts, chord * 1.01)


def grid(n: int, columns: int | None = None) -> Topology:
    """A grid with 4-neighbour hearing, filled row by row."""
    cols = columns or max(1, math.ceil(math.sqrt(n)))
    return Topology("grid", [(float(i % cols), float(i // cols)) for i in range(n)], 1.01)


def default_radio_range(n: int, mean_degree: float = 8.0) -> float:
    """Range in a unit square giving about ``mean_degree`` neighbours per node."""
    return math.sqrt(mean_degree / (math.pi * max(n - 1, 1)))


def random_geometric(
    n: int,
    rng: random.Random,
    radio_range: float | None = None,
    *,
    connected: bool = True,
    max_tries: int = 200,
) -> Topology:
    """Uniform points in a unit square; with ``connected`` resample (then widen) until connected."""
    r = radio_range if radio_range is not None else default_radio_range(n)
    topo = Topology("random", [], r)
    for attempt in range(max_tries):
        pts = [(rng.random(), rng.random()) for _ in range(n)]
        topo = Topology("random", pts, r * (1.05 ** (attempt // 20)))
        if not connected or topo.is_connected():
            return topo
    raise ValueError(f"no connected layout of {n} nodes with range {r:.3f} in {max_tries} tries")


def clustered(
    groups: int,
    size: int,
    extra: int,
    rng: random.Random,
    *,
    spread: float = 0.3,
    separation: float = 1.0,
    radio_range: float = 1.0,
    max_tries: int = 200,
) -> Topology:
    """Random geometric groups: ``groups`` clusters of ``size`` nodes (people at a table:
    each within ``spread`` of its cluster's centre, so a cluster hears itself), the centres
    uniform in a square of side ``1.1 x sqrt(groups) x separation`` and at least
    ``separation`` apart, plus ``extra`` nodes anywhere in it; resampled until connected.
    Cluster ``k`` is nodes ``k*size .. k*size+size-1``, the extra nodes come last."""
    if 2 * spread > radio_range:
        raise ValueError("a cluster wider than the radio range does not hear itself")
    side = 1.1 * math.sqrt(groups) * separation
    for _ in range(max_tries):
        centres: list[Point] = []
        for _ in range(100 * groups):
            if len(centres) == groups:
                break
            c = (rng.uniform(0, side), rng.uniform(0, side))
            if all(math.dist(c, o) >= separation for o in centres):
                centres.append(c)
        if len(centres) < groups:
            continue
        pts: list[Point] = []
        for cx, cy in centres:
            for _ in range(size):
                angle, d = rng.uniform(0, 2 * math.pi), spread * math.sqrt(rng.random())
                pts.append((cx + d * math.cos(angle), cy + d * math.sin(angle)))
        pts.extend((rng.uniform(0, side), rng.uniform(0, side)) for _ in range(extra))
        topo = Topology("clustered", pts, radio_range)
        if topo.is_connected():
            return topo
    raise ValueError(f"no connected layout of {groups} groups of {size} in {max_tries} tries")


def build(name: str, n: int, rng: random.Random, radio_range: float | None = None) -> Topology:
    """A topology by CLI name: full, line, ring, grid or random (connected)."""
    if name == "full":
        return full(n)
    if name == "line":
        return line(n)
    if name == "ring":
        return ring(n)
    if name == "grid":
        return grid(n)
    if name == "random":
        return random_geometric(n, rng, radio_range)
    raise ValueError(f"unknown topology {name!r}; known: {', '.join(TOPOLOGIES)}")


@dataclass(slots=True)
class _Walker:
    target: Point
    speed: float
    pause_left: float = 0.0


class RandomWaypoint:
    """Random-waypoint movement inside the layout's bounding box (walking speed by default)."""

    def __init__(
        self,
        topology: Topology,
        rng: random.Random,
        *,
        speed: tuple[float, float] = (0.005, 0.02),
        pause: tuple[float, float] = (0.0, 10.0),
        nodes: Sequence[int] | None = None,
    ) -> None:
        self.topology = topology
        self.rng = rng
        self.speed = speed
        self.pause = pause
        xs = [p[0] for p in topology.positions] or [0.0]
        ys = [p[1] for p in topology.positions] or [0.0]
        self.box = (min(xs), min(ys), max(max(xs), min(xs) + 1.0), max(max(ys), min(ys) + 1.0))
        movers = range(len(topology)) if nodes is None else nodes
        self._walkers = {i: _Walker(self._waypoint(), rng.uniform(*speed)) for i in movers}

    def _waypoint(self) -> Point:
        x0, y0, x1, y1 = self.box
        return (self.rng.uniform(x0, x1), self.rng.uniform(y0, y1))

    def step(self, dt: float) -> None:
        """Advance every moving node by ``dt`` seconds."""
        for i in sorted(self._walkers):
            w = self._walkers[i]
            if w.pause_left > 0:
                w.pause_left = max(0.0, w.pause_left - dt)
                continue
            x, y = self.topology.positions[i]
            tx, ty = w.target
            d = math.hypot(tx - x, ty - y)
            step = w.speed * dt
            if d <= step:
                self.topology.move(i, w.target)
                w.target = self._waypoint()
                w.speed = self.rng.uniform(*self.speed)
                w.pause_left = self.rng.uniform(*self.pause)
            else:
                self.topology.move(i, (x + (tx - x) * step / d, y + (ty - y) * step / d))
