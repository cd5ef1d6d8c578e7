"""Who to connect to, when, and which of two duplicate links to keep: pure, explicit ``now``.

The central's asyncio loop feeds advertisements, connect outcomes and link events in, and asks
:meth:`LinkPolicy.next_candidates` which addresses to try. Rules:

* link budget: never more links (in + out) than the budget;
* RSSI gate: ignore devices heard weaker than ``rssi_min``; freshness: only devices heard
  within ``candidate_fresh_s`` (a node that stopped advertising would only time out);
* connect rate limit: at most one attempt per ``connect_interval_s``;
* backoff: after ``n`` consecutive failures wait ``min(max, base * 2**(n-1))`` times a jitter
  factor in ``[1-j, 1+j]``; a link that lived ``stable_s`` resets the count;
* tie-break: between two nodes, the one with the smaller advertised peer id connects; the
  other waits ``tie_break_grace_s`` before connecting anyway (the smaller one may be at its
  budget). If both links exist, both sides keep the smaller id's central link.
* LE states: after ``peripheral_connect_timeouts`` connect timeouts in a row to one node
  while we held inbound links, :meth:`LinkPolicy.free_central_role` says to end them and
  connect at once (a controller whose kernel refuses to initiate while it is a peripheral
  only ever times out); once per node until it links.
* rotation (:mod:`ble_bridge.mesh.links`, the rule the loopback air follows too): at full
  budget, an advertiser we have no link and no mesh path to (``reachable``: nothing heard
  from its peer id over the mesh lately), heard for ``stranded_after_s``, gets a link: we
  drop our most redundant one (a neighbour not advertising, i.e. itself full) for it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ble_bridge.mesh.links import NeighbourLink, Rotation, RotationConfig, StrandedWatch
from gatt.config import BleConfig
from gatt.profile import id_before, same_peer

STABLE_LINK_S = 10.0
FORGET_AFTER_S = 60.0


@dataclass(slots=True)
class Candidate:
    """A node heard advertising the mesh service."""

    address: str
    peer_id: bytes | None
    rssi: int
    first_seen: float
    last_seen: float
    failures: int = 0
    retry_at: float = 0.0
    connected_at: float | None = None
    timeouts_as_peripheral: int = 0
    """Connect timeouts in a row while we held inbound links."""
    freed_role: bool = False
    """We ended our inbound links once to connect to it (not again until it links)."""


@dataclass(slots=True)
class LinkPolicy:
    """The decisions of the link manager, without I/O."""

    config: BleConfig
    our_peer_id: bytes
    rng: random.Random = field(default_factory=random.Random)
    candidates: dict[str, Candidate] = field(default_factory=dict)
    last_attempt: float = float("-inf")
    counters: dict[str, int] = field(default_factory=dict)
    rotation_config: RotationConfig = field(default_factory=RotationConfig)
    watch: StrandedWatch[str] = field(init=False)

    def __post_init__(self) -> None:
        self.watch = StrandedWatch(self.config.link_budget, self.rotation_config)

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def heard(self, address: str, peer_id: bytes | None, rssi: int, now: float) -> None:
        """An advertisement of the mesh service was received."""
        c = self.candidates.get(address)
        if c is None:
            if len(self.candidates) >= self.config.max_candidates and not self._evict_one():
                self._count("candidates_full")
                return
            c = self.candidates[address] = Candidate(address, peer_id, rssi, now, now)
        else:
            c.rssi, c.last_seen = rssi, now
            if peer_id is not None:
                c.peer_id = peer_id
        foreign = c.peer_id is not None and not same_peer(c.peer_id, self.our_peer_id)
        if foreign and rssi >= self.config.rssi_min:
            self.watch.heard(address, now)  # rotation: how long it has advertised unlinked

    def _evict_one(self) -> bool:
        """Forget the candidate heard longest ago that has no link; False if all are linked."""
        idle = [c for c in self.candidates.values() if c.connected_at is None]
        if not idle:
            return False
        del self.candidates[min(idle, key=lambda c: c.last_seen).address]
        self._count("candidates_evicted")
        return True

    def backoff(self, failures: int) -> float:
        """Delay before the next attempt after ``failures`` consecutive failures."""
        cfg = self.config
        base = min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** max(0, failures - 1))
        return float(base * self.rng.uniform(1 - cfg.backoff_jitter, 1 + cfg.backoff_jitter))

    def we_initiate(self, peer_id: bytes | None) -> bool:
        """True when we are the side that should connect (smaller peer id; ids as long as
        known: a 6-byte short id from the advert, the full id once announced)."""
        return peer_id is None or id_before(self.our_peer_id, peer_id)

    def next_candidates(
        self, now: float, links: int, linked: set[str], limit: int = 1
    ) -> list[str]:
        """Addresses to try now (best RSSI first), at most ``limit``."""
        cfg = self.config
        if links >= cfg.link_budget:
            return []
        if now - self.last_attempt < cfg.connect_interval_s:
            return []
        for addr in [a for a, c in self.candidates.items() if now - c.last_seen > FORGET_AFTER_S]:
            if addr not in linked:
                del self.candidates[addr]
        ready = []
        for c in self.candidates.values():
            if c.address in linked or c.connected_at is not None or now < c.retry_at:
                continue
            if now - c.last_seen > cfg.candidate_fresh_s:
                continue  # not heard lately: not advertising, the connect would time out
            if c.rssi < cfg.rssi_min:
                self._count("skipped_rssi")
                continue
            if same_peer(c.peer_id, self.our_peer_id):
                continue
            if not self.we_initiate(c.peer_id) and now - c.first_seen < cfg.tie_break_grace_s:
                continue
            ready.append(c)
        ready.sort(key=lambda c: -c.rssi)
        room = cfg.link_budget - links
        return [c.address for c in ready[: min(limit, room)]]

    def attempt(self, address: str, now: float) -> None:
        self.last_attempt = now
        self._count("connect_attempts")

    def failed(self, address: str, now: float) -> float:
        """A connect attempt failed; returns the backoff delay chosen."""
        self._count("connect_failures")
        c = self.candidates.get(address)
        if c is None:
            return 0.0
        c.failures += 1
        delay = self.backoff(c.failures)
        c.retry_at = now + delay
        return delay

    def connected(self, address: str, now: float) -> None:
        self.watch.linked(address)
        c = self.candidates.get(address)
        if c is not None:
            c.connected_at = now
            c.timeouts_as_peripheral = 0
            c.freed_role = False

    def free_central_role(self, address: str, inbound: int) -> bool:
        """A connect to ``address`` timed out while we held ``inbound`` inbound links: end
        them all and connect again at once? (See ``peripheral_connect_timeouts``.)"""
        c = self.candidates.get(address)
        k = self.config.peripheral_connect_timeouts
        if c is None:
            return False
        if inbound == 0:
            c.timeouts_as_peripheral = 0  # a timeout as a pure central says nothing of roles
            return False
        c.timeouts_as_peripheral += 1
        if k <= 0 or c.freed_role or c.timeouts_as_peripheral < k:
            return False
        c.freed_role = True
        c.timeouts_as_peripheral = 0
        self._count("free_central_role")
        return True

    def disconnected(self, address: str, now: float) -> float:
        """A link we initiated went down; returns the delay before reconnecting."""
        c = self.candidates.get(address)
        if c is None:
            return 0.0
        lived = now - c.connected_at if c.connected_at is not None else 0.0
        c.connected_at = None
        if lived >= STABLE_LINK_S:
            c.failures = 0
        c.failures += 1
        delay = self.backoff(c.failures)
        c.retry_at = now + delay
        return delay

    def rotation(
        self,
        now: float,
        links: Sequence[tuple[str, float]],
        reachable: Callable[[bytes], bool] | None = None,
    ) -> Rotation[str] | None:
        """At full budget: the link to give up, and the stranded node to connect to instead.

        ``links``: (address, link age) of every link; ``reachable(peer_id)``: the mesh has a
        path to that peer (None: no mesh knowledge, every unlinked advertiser may be stranded).
        A linked neighbour heard advertising has a free slot, so it may hang on our link
        alone: only neighbours not heard lately (full ones) are dropped.
        """
        cfg = self.config
        for c in self.candidates.values():
            if c.peer_id is not None and reachable is not None and reachable(c.peer_id):
                self.watch.heard(c.address, now, reachable=True)
        neighbours = []
        for address, age in links:
            heard = self.candidates.get(address)
            advertising = heard is not None and now - heard.last_seen <= cfg.candidate_fresh_s
            neighbours.append(NeighbourLink(address, 1 if advertising else cfg.link_budget, age))
        rot = self.watch.decide(now, neighbours)
        if rot is not None:
            self._count("rotations")
        return rot

    def keep_central(self, peer_id: bytes | None) -> bool | None:
        """Both a central and a peripheral link to one node: keep our central one? None while
        the node's id is unknown (no short id advertised, no announce yet): keep both."""
        return None if peer_id is None else self.we_initiate(peer_id)
