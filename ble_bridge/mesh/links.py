"""Making room for a stranded node when every link slot is taken: pure, explicit ``now``.

Links form greedily, so after a partition heals or a crashed node restarts, every node
around the newcomer may already hold its full budget with links among themselves. A full
node neither advertises nor connects, and the newcomer, which does advertise (it has free
slots), would stay alone forever. The rule (:class:`StrandedWatch`), followed by the
loopback air and by gatt's :class:`~gatt.policy.LinkPolicy` alike:

* a full node keeps listening to advertisements now and then;
* an advertiser we have no path to (no link, and nothing heard from it over the mesh) that
  is heard without a gap for ``stranded_after_s`` is *stranded*: nobody with a free slot
  has taken it;
* then the full node *rotates* one link: it drops the link to its most redundant
  neighbour (the one with the most links of its own, never one with a single link, never a
  link younger than ``min_link_age_s``) and connects to the stranded node. The dropped
  neighbour has a free slot again, so it links to the newcomer or to another free node.

Advertisers we can reach are never stranded, so a healthy mesh does not churn: in a full
8-node mesh at 4 links a node, rotating towards every advertiser with a free slot dropped
a link every few seconds and halved the heights the craps table committed. Churn is
bounded anyway: one rotation per node per ``rotate_interval_s``, one per target per
``target_cooldown_s``. Ties break by the peer key (node index in the sim, address in
gatt), so a simulation stays reproducible by seed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", int, str, bytes)
"""A peer key: ordered, so tie-breaks are deterministic."""


@dataclass(frozen=True, slots=True)
class RotationConfig:
    """Limits of the rotation rule."""

    stranded_after_s: float = 5.0
    """An unlinked advertiser heard this long without a gap is stranded."""
    heard_gap_s: float = 7.0
    """Not heard for longer than this: the continuous-hearing clock starts again."""
    rotate_interval_s: float = 30.0
    """At most one rotation per node per interval."""
    target_cooldown_s: float = 60.0
    """At most one rotation towards the same stranded node per cooldown."""
    min_link_age_s: float = 10.0
    """Links younger than this are never dropped (no ping-pong with the newcomer)."""
    max_tracked: int = 64
    """Advertisers tracked at once; more are ignored (counted as ``tracked_overflow``)."""


@dataclass(frozen=True, slots=True)
class NeighbourLink(Generic[K]):
    """One of our links as the rule sees it."""

    peer: K
    peer_links: int
    """Links the peer holds (exact in the sim; an estimate in gatt, 1 when unknown)."""
    age: float


@dataclass(frozen=True, slots=True)
class Rotation(Generic[K]):
    """Drop the link to ``drop``, then connect to ``join``."""

    drop: K
    join: K


@dataclass(slots=True)
class _Heard:
    since: float
    last: float


@dataclass(slots=True)
class StrandedWatch(Generic[K]):
    """One node's view of unlinked advertisers, deciding when to rotate a link."""

    budget: int
    config: RotationConfig = field(default_factory=RotationConfig)
    counters: Counter[str] = field(default_factory=Counter)
    _heard: dict[K, _Heard] = field(default_factory=dict)
    _cooldown: dict[K, float] = field(default_factory=dict)
    _last_rotation: float = float("-inf")

    def heard(self, peer: K, now: float, *, reachable: bool = False) -> None:
        """``peer``, which we have no link to, was heard advertising (it has a free slot).

        ``reachable``: we have a path to it through the mesh, so it is not stranded.
        """
        if reachable:
            self._heard.pop(peer, None)
            return
        h = self._heard.get(peer)
        if h is not None and now - h.last <= self.config.heard_gap_s:
            h.last = max(h.last, now)
            return
        if h is None and len(self._heard) >= self.config.max_tracked:
            self._expire(now)
            if len(self._heard) >= self.config.max_tracked:
                self.counters["tracked_overflow"] += 1
                return
        self._heard[peer] = _Heard(now, now)

    def linked(self, peer: K) -> None:
        """A link to ``peer`` came up: it is no longer a stranger."""
        self._heard.pop(peer, None)

    def stranded(self, now: float, linked: Sequence[K] = ()) -> list[K]:
        """Advertisers heard without a gap for ``stranded_after_s``, longest first."""
        cfg = self.config
        out = [
            (h.since, p)
            for p, h in self._heard.items()
            if p not in linked
            and now - h.last <= cfg.heard_gap_s
            and now - h.since >= cfg.stranded_after_s
            and self._cooldown.get(p, float("-inf")) <= now
        ]
        return [p for _, p in sorted(out)]

    def decide(self, now: float, links: Sequence[NeighbourLink[K]]) -> Rotation[K] | None:
        """At full budget with a stranded node in earshot: which link to give up for it."""
        cfg = self.config
        if len(links) < self.budget or now - self._last_rotation < cfg.rotate_interval_s:
            return None
        strangers = self.stranded(now, [lk.peer for lk in links])
        if not strangers:
            return None
        droppable = [lk for lk in links if lk.peer_links >= 2 and lk.age >= cfg.min_link_age_s]
        if not droppable:
            self.counters["rotation_nothing_to_drop"] += 1
            return None
        drop = max(droppable, key=lambda lk: (lk.peer_links, lk.peer))
        join = strangers[0]
        self._last_rotation = now
        self._cooldown[join] = now + cfg.target_cooldown_s
        self._heard.pop(join, None)
        self._expire(now)
        self.counters["rotations"] += 1
        return Rotation(drop.peer, join)

    def _expire(self, now: float) -> None:
        gap = self.config.heard_gap_s
        for p in [p for p, h in self._heard.items() if now - h.last > gap]:
            del self._heard[p]
        for p in [p for p, t in self._cooldown.items() if t <= now]:
            del self._cooldown[p]
