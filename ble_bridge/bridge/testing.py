"""CoreNet: bridge cores joined by moving one core's actions into the others' inputs.

The whole network of aioquic's ``transfer(sender, receiver)`` test helper, for
:class:`~.core.BridgeCore`: no event loop, no air, a hand-stepped ``now``. ``n`` cores of
one session (:data:`~ble_bridge.consensus.testing.UNIT_SESSION`, the ledger app) sit on a
full mesh of links that a test may cut and heal. A :class:`~.core.Flood` reaches every
core connected to its sender, a :class:`~.core.ToNeighbour` the linked peer alone, each
after ``delay`` seconds, as an :class:`~.core.Arrival` like the mesh would deliver it
(first hop: vouched by the sender; further hops: relayed). Each core gets a
:class:`~.policy.MeshView` of the links as they are now, with empty queues.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, deque
from collections.abc import Iterable, Mapping

from ..consensus.testing import unit_engines, unit_identities
from .config import BridgeConfig
from .core import Arrival, BridgeCore, Event, Flood, OutputFilter
from .policy import MeshView

EVENTS_KEPT = 4096
"""Events remembered per core (the oldest go first)."""


class CoreNet:
    """``n`` cores of one session on a full mesh; see the module docstring."""

    def __init__(
        self,
        n: int,
        *,
        config: BridgeConfig | None = None,
        delay: float = 0.02,
        filters: Mapping[int, OutputFilter] | None = None,
        now: float = 0.0,
    ) -> None:
        cfg = config or BridgeConfig()
        self.identities = unit_identities(n)
        self.engines = unit_engines(n, cfg.engine)
        self.cores = [
            BridgeCore(
                ident.signing_public,
                ident.peer_id,
                cfg,
                output_filter=(filters or {}).get(i),
            )
            for i, ident in enumerate(self.identities)
        ]
        for core, engine in zip(self.cores, self.engines, strict=True):
            core.open_session(now, engine)
        self.now = now
        self.delay = delay
        self.links: set[frozenset[int]] = {
            frozenset(p) for p in itertools.combinations(range(n), 2)
        }
        self.events: list[deque[Event]] = [deque(maxlen=EVENTS_KEPT) for _ in range(n)]
        self.sent: Counter[str] = Counter()
        self._queue: list[tuple[float, int, int, Arrival]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self.cores)

    # -- topology ---------------------------------------------------------------------

    def linked(self, i: int) -> list[int]:
        return sorted(j for j in range(len(self)) if frozenset((i, j)) in self.links)

    def reachable(self, i: int) -> set[int]:
        seen, todo = {i}, [i]
        while todo:
            for j in self.linked(todo.pop()):
                if j not in seen:
                    seen.add(j)
                    todo.append(j)
        return seen

    def cut(self, group: Iterable[int]) -> None:
        """Cut every link between ``group`` and the other cores."""
        inside = set(group)
        self.links = {p for p in self.links if len(p & inside) != 1}

    def heal(self) -> None:
        """A full mesh again."""
        n = len(self)
        self.links = {frozenset(p) for p in itertools.combinations(range(n), 2)}

    def view(self, i: int) -> MeshView:
        ids = [ident.peer_id for ident in self.identities]
        keys = {ids[j]: ident.signing_public for j, ident in enumerate(self.identities)}
        graph = {ids[j]: frozenset(ids[k] for k in self.linked(j)) for j in range(len(self))}
        linked = frozenset(ids[j] for j in self.linked(i))
        return MeshView(ids[i], keys, linked, graph, dict.fromkeys(linked, 0), 0, len(linked))

    # -- time -------------------------------------------------------------------------

    def start(self) -> None:
        for i, core in enumerate(self.cores):
            core.start(self.now)
            self.transfer(i)

    def transfer(self, i: int) -> int:
        """Move core ``i``'s actions into the others' inputs (after ``delay``); how many."""
        core = self.cores[i]
        self.events[i].extend(core.events())
        me = self.identities[i]
        at = self.now + self.delay
        moved = 0
        for action in core.actions():
            moved += 1
            if isinstance(action, Flood):
                self.sent["floods"] += 1
                near = set(self.linked(i))
                for j in sorted(self.reachable(i) - {i}):
                    if j in near:
                        arrival = Arrival(action.payload, me.signing_public, me.peer_id, True, True)
                    else:  # relayed by some neighbour of j: not vouched by it
                        relay = self.identities[self.linked(j)[0]].peer_id
                        arrival = Arrival(action.payload, me.signing_public, relay, False, True)
                    self._push(at, j, arrival)
            else:
                self.sent["neighbour_frames"] += 1
                ids = [ident.peer_id for ident in self.identities]
                j = ids.index(action.peer)
                if frozenset((i, j)) in self.links:
                    self._push(at, j, Arrival(action.payload, me.signing_public, me.peer_id, True))
        return moved

    def _push(self, at: float, j: int, arrival: Arrival) -> None:
        heapq.heappush(self._queue, (at, next(self._seq), j, arrival))

    def run(self, until: float, max_steps: int = 1_000_000) -> None:
        """Deliver and fire timers in time order until ``until`` (virtual seconds)."""
        for _ in range(max_steps):
            for i in range(len(self)):
                self.transfer(i)
            due = [t for t in (c.next_timer() for c in self.cores) if t is not None]
            if self._queue:
                due.append(self._queue[0][0])
            nxt = min(due, default=until)
            if nxt > until:
                self.now = until
                return
            self.now = max(self.now, nxt)
            while self._queue and self._queue[0][0] <= self.now:
                _, _, j, arrival = heapq.heappop(self._queue)
                self.cores[j].receive(self.now, arrival)
            for i, core in enumerate(self.cores):
                t = core.next_timer()
                if t is not None and t <= self.now:
                    core.handle_timer(self.now, self.view(i))
        raise RuntimeError(f"CoreNet: no quiet point in {max_steps} steps")

    def height(self, i: int) -> int:
        return self.engines[i].height


__all__ = ["EVENTS_KEPT", "CoreNet"]
