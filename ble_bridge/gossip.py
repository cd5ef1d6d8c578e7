"""Neighbour gossip of one session's signed consensus messages (sans-IO).

Flooding every vote through the mesh costs each node a signed frame per vote per link and
a relay jitter per hop. Votes, proposals, operations and evidence are signed by their
authors, so any node may pass them on inside a frame of its own: a node sends each of its
session neighbours (linked peers that are validators of the session) the messages that
neighbour is not known to have, several in one :data:`~ble_bridge.wire.messages.Kind.BATCH`
envelope, without jitter, and only messages its engine accepted as valid (verify before
relay). This is the per-peer gossip of Tendermint's consensus reactor, over BLE links.

Each message travels down the shortest-path tree of its author over the validator graph
(built by every node alike from its links and the neighbour lists peers announce, the
relaying spread over the nodes, see :func:`gossip_trees`): a node passes a message on only
to its children in the author's tree, so in a settled mesh every validator receives each
message once, along a shortest path.
Messages of an unknown author, and our own re-sends, go to every neighbour lacking them.

What a neighbour knows is what it sent us (certain) and what we sent it (likely: a BLE
link is reliable while it is up, but a frame can still die in a full queue or with the
link). When the engine re-sends its own message (nobody answered), the neighbours that only
*likely* have it get it again. A neighbour that appears gets the recent messages it lacks.

Everything is bounded: known keys per neighbour (LRU), queued items per neighbour (oldest
dropped, counted), recent items kept for new neighbours, and the number of neighbours.
"""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class GossipConfig:
    # Worst case per session ~ max_neighbours x max_known keys (10 x 2048 x ~120 bytes,
    # 2.5 MB); a BLE radio holds 4-7 links and an announce lists at most 10 neighbours.
    max_neighbours: int = 10
    max_known: int = 2048  # keys remembered per neighbour (~30 heights at saturation)
    max_queue: int = 512  # items waiting per neighbour; the oldest go first
    max_recent: int = 512  # items kept to bring a new neighbour up to date
    batch_bytes: int = 1000  # items per frame (the mesh fragments larger frames)


@dataclass(slots=True)
class Item:
    """One queued message: its dedup key, its bytes (envelope minus prefix), its height,
    what the sender may use to merge it with others (``meta``) and its send order."""

    key: bytes
    data: bytes
    height: int | None  # None: useful until it leaves by the LRU bounds (operations)
    meta: Any = None
    priority: int = 0
    due: float = 0.0  # when it should leave at the latest (an op lingers to share a frame)
    origin: bytes | None = None  # its author's peer id: whose tree it follows


def _below(item: Item, height: int) -> bool:
    return item.height is not None and item.height < height


def pack(items: Iterable[bytes], limit: int) -> list[list[bytes]]:
    """Cut ``items`` into batches of at most ``limit`` bytes (an item larger alone)."""
    batches: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for data in items:
        n = len(data) + 2
        if current and size + n > limit:
            batches.append(current)
            current, size = [], 0
        current.append(data)
        size += n
    if current:
        batches.append(current)
    return batches


@dataclass(slots=True)
class _Neighbour:
    # key -> True when the neighbour sent it to us, False when we sent it
    known: OrderedDict[bytes, bool] = field(default_factory=OrderedDict)
    queue: OrderedDict[bytes, Item] = field(default_factory=OrderedDict)


def _tie(*parts: bytes) -> bytes:
    return hashlib.blake2b(b"".join(parts), digest_size=8).digest()


def gossip_trees(
    graph: Mapping[bytes, Iterable[bytes]], leaves: Collection[bytes] = ()
) -> dict[bytes, dict[bytes, bytes]]:
    """Every author's breadth-first tree over ``graph``: author -> {node: its parent}.
    ``leaves`` (e.g. banned validators) get messages but pass on only their own.

    A node's parent is one of its neighbours one step closer to the author; among several,
    the one that relays least so far, over the trees built before (authors in byte order),
    then by a hash of (author, parent, node). Relaying is so spread over the nodes instead
    of falling on the lowest peer ids (one relay at 100 % airtime while others idled at 50 %
    on the 8-node bench). Deterministic: every node with the same graph builds the same trees.
    """
    load: dict[bytes, int] = {}
    trees: dict[bytes, dict[bytes, bytes]] = {}
    for origin in sorted(graph):
        parent = {origin: origin}
        level = [origin]
        while level:
            closer: dict[bytes, list[bytes]] = {}
            for u in level:
                if u in leaves and u != origin:
                    continue
                for v in graph.get(u, ()):
                    if v not in parent:
                        closer.setdefault(v, []).append(u)
            level = sorted(closer, key=lambda v: _tie(origin, v))
            for v in level:
                u = min(closer[v], key=lambda u: (load.get(u, 0), _tie(origin, u, v)))
                parent[v] = u
                load[u] = load.get(u, 0) + 1
        trees[origin] = parent
    return trees


def tree_children(
    graph: Mapping[bytes, Iterable[bytes]],
    origin: bytes,
    me: bytes,
    leaves: Collection[bytes] = (),
) -> set[bytes]:
    """My children in ``origin``'s tree (see :func:`gossip_trees`)."""
    return _children_in(gossip_trees(graph, leaves).get(origin, {}), origin, me)


def _children_in(parent: Mapping[bytes, bytes], origin: bytes, me: bytes) -> set[bytes]:
    """The nodes whose parent is ``me`` in ``origin``'s tree (``parent``: node -> parent)."""
    return {v for v, p in parent.items() if p == me and v != origin}


class Gossip:
    """Who of our neighbours lacks which message; :meth:`take` gives the batches to send."""

    def __init__(self, config: GossipConfig | None = None) -> None:
        self.config = config or GossipConfig()
        self._neighbours: dict[bytes, _Neighbour] = {}
        self._recent: OrderedDict[bytes, Item] = OrderedDict()
        self._me = b""
        self._graph: dict[bytes, frozenset[bytes]] = {}
        self._leaves: frozenset[bytes] = frozenset()
        self._children: dict[bytes, set[bytes]] = {}
        self.stats: Counter[str] = Counter()

    # -- neighbours -------------------------------------------------------------------

    @property
    def neighbours(self) -> list[bytes]:
        return list(self._neighbours)

    def set_neighbours(self, peers: Iterable[bytes]) -> list[bytes]:
        """Make ``peers`` the neighbour set; new ones get the recent items. Returns the new."""
        wanted = list(dict.fromkeys(peers))[: self.config.max_neighbours]
        for gone in [p for p in self._neighbours if p not in wanted]:
            del self._neighbours[gone]
            self.stats["neighbour_gone"] += 1
        added = [p for p in wanted if p not in self._neighbours]
        for peer in added:
            nb = self._neighbours[peer] = _Neighbour()
            for item in self._recent.values():
                self._enqueue(nb, item)
            self.stats["neighbour_new"] += 1
        return added

    def set_graph(
        self,
        me: bytes,
        graph: Mapping[bytes, Iterable[bytes]],
        leaves: Collection[bytes] = (),
    ) -> None:
        """The validator graph (peer id -> its neighbours' peer ids), symmetrised here;
        ``leaves`` receive but relay nothing (see :func:`gossip_trees`)."""
        sym: dict[bytes, set[bytes]] = {}
        for u, vs in graph.items():
            for v in vs:
                if v != u:
                    sym.setdefault(u, set()).add(v)
                    sym.setdefault(v, set()).add(u)
        frozen = {u: frozenset(vs) for u, vs in sym.items()}
        fixed = frozenset(leaves)
        if me != self._me or frozen != self._graph or fixed != self._leaves:
            self._me, self._graph, self._leaves = me, frozen, fixed
            self._children.clear()
            self.stats["graph_changes"] += 1
            self._reoffer()

    def _reoffer(self) -> None:
        """After a change of the graph: recent items to our new children in their authors'
        trees that are not known to have them. While views of the graph differ (an announce
        on its way), a node's old parent may already think it is someone else's child; this
        closes that gap at the price of some duplicates. (Operations have no re-send: one
        that missed a node made the proposal that carries it cost a full-proposal flood.)"""
        for item in self._recent.values():
            if item.origin is None:
                continue
            for peer in self.children(item.origin) or ():
                nb = self._neighbours.get(peer)
                if nb is not None and item.key not in nb.known:
                    self.stats["reoffered"] += self._enqueue(nb, item)

    def children(self, origin: bytes) -> set[bytes] | None:
        """Neighbours that get ``origin``'s messages from us; None: not in the graph (all)."""
        if origin not in self._graph or self._me not in self._graph:
            return None
        if not self._children:
            for author, parent in gossip_trees(self._graph, self._leaves).items():
                self._children[author] = _children_in(parent, author, self._me)
        return self._children.get(origin, set())

    # -- knowledge ----------------------------------------------------------------------

    @property
    def recent(self) -> list[Item]:
        """The items kept for neighbours that appear later, oldest first."""
        return list(self._recent.values())

    def is_recent(self, key: bytes) -> bool:
        return key in self._recent

    def heard(self, peer: bytes | None, key: bytes) -> None:
        """``peer`` sent us the message ``key``: it has it, never send it back."""
        nb = self._neighbours.get(peer) if peer is not None else None
        if nb is None:
            return
        self._know(nb, key, True)
        if nb.queue.pop(key, None) is not None:
            self.stats["dequeued_heard"] += 1

    def offer(
        self,
        key: bytes,
        data: bytes,
        height: int | None,
        source: bytes | None = None,
        *,
        origin: bytes | None = None,
        again: bool = False,
        meta: Any = None,
        priority: int = 0,
        due: float = 0.0,
    ) -> int:
        """A message to pass on (``source``: the neighbour it came from, None: our own;
        ``origin``: the peer id of its author, whose tree it follows).

        ``again``: our own message re-sent because nobody answered; every neighbour that
        only probably has it gets it again. Returns how many neighbours it was queued for."""
        item = Item(key, data, height, meta, priority, due, origin)
        self._remember(item)
        self.heard(source, key)
        targets = None if origin is None or again else self.children(origin)
        queued = 0
        for peer, nb in self._neighbours.items():
            if targets is not None and peer not in targets:
                continue
            known = nb.known.get(key)
            if known is True or (known is False and not again):
                continue
            if known is False:
                del nb.known[key]
            queued += self._enqueue(nb, item)
        return queued

    def flooded(self, key: bytes, data: bytes, height: int | None, meta: Any = None) -> None:
        """Our own message went out as a mesh flood: every current neighbour probably has
        it; keep it for neighbours that appear later (a flood sent before any link existed
        reached nobody)."""
        self._remember(Item(key, data, height, meta))
        for nb in self._neighbours.values():
            nb.queue.pop(key, None)
            self._know(nb, key, False)

    def forget_below(self, height: int) -> None:
        """Drop recent and queued items of heights below ``height`` (decided: no use)."""
        self.forget(lambda item: _below(item, height))

    def forget(self, done: Callable[[Item], bool]) -> None:
        """Drop the recent and queued items for which ``done`` is true (e.g. committed
        operations: a neighbour that appears later must not get them all again)."""
        for key in [k for k, it in self._recent.items() if done(it)]:
            del self._recent[key]
        for nb in self._neighbours.values():
            for key in [k for k, it in nb.queue.items() if done(it)]:
                del nb.queue[key]
                self.stats["dequeued_old"] += 1

    # -- sending --------------------------------------------------------------------------

    def due(self, peer: bytes) -> float | None:
        """When ``peer``'s queue should be sent: its most pressing item's due time."""
        nb = self._neighbours.get(peer)
        if nb is None or not nb.queue:
            return None
        return min(item.due for item in nb.queue.values())

    def urgency(self, peer: bytes) -> int | None:
        """The lowest ``priority`` queued for ``peer`` (None: nothing queued)."""
        nb = self._neighbours.get(peer)
        if nb is None or not nb.queue:
            return None
        return min(item.priority for item in nb.queue.values())

    def waiting(self) -> list[bytes]:
        """Neighbours with something queued."""
        return [p for p, nb in self._neighbours.items() if nb.queue]

    def take(self, peer: bytes) -> list[Item]:
        """Everything queued for ``peer``, lowest ``priority`` first (else in queue order);
        the items count as known by ``peer`` from now on."""
        nb = self._neighbours.get(peer)
        if nb is None or not nb.queue:
            return []
        items = sorted(nb.queue.values(), key=lambda it: it.priority)
        for item in items:
            self._know(nb, item.key, False)
        nb.queue.clear()
        self.stats["items_sent"] += len(items)
        return items

    # -- internals ------------------------------------------------------------------------

    def _remember(self, item: Item) -> None:
        """Keep ``item`` (newest last) for neighbours that appear later; bounded."""
        self._recent[item.key] = item
        self._recent.move_to_end(item.key)
        while len(self._recent) > self.config.max_recent:
            self._recent.popitem(last=False)

    def _enqueue(self, nb: _Neighbour, item: Item) -> int:
        if item.key in nb.known or item.key in nb.queue:
            return 0
        nb.queue[item.key] = item
        if len(nb.queue) > self.config.max_queue:
            nb.queue.popitem(last=False)
            self.stats["queue_overflow"] += 1
        return 1

    def _know(self, nb: _Neighbour, key: bytes, certain: bool) -> None:
        if nb.known.get(key) is not True:
            nb.known[key] = certain
        nb.known.move_to_end(key)
        while len(nb.known) > self.config.max_known:
            nb.known.popitem(last=False)
