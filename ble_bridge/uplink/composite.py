"""One :class:`Transport` made of several: a node's radio plus its uplink.

The mesh router sees one set of links; each child's link ids are mapped to ids of the
composite (never reused), so the router applies the same verification, dedup, TTL, rate
limits and circuit breaker to a remote gateway as to a radio neighbour, and the bridge's
neighbour gossip flows on it unchanged.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace

from ..transport import LinkInfo, SendResult, Transport, TransportHandler


class _Child:
    """The handler one child transport reports to."""

    def __init__(self, owner: CompositeTransport, index: int) -> None:
        self.owner = owner
        self.index = index

    def link_up(self, info: LinkInfo) -> None:
        self.owner._child_link_up(self.index, info)

    def link_down(self, link_id: int, reason: str) -> None:
        self.owner._child_link_down(self.index, link_id, reason)

    def frame_received(self, link_id: int, data: bytes) -> None:
        self.owner._child_frame(self.index, link_id, data)


class CompositeTransport(Transport):
    """Links of every child transport under one id space."""

    def __init__(self, children: Sequence[Transport]) -> None:
        if not children:
            raise ValueError("a composite transport needs a child")
        self.children = list(children)
        self._handler: TransportHandler | None = None
        self._ids = itertools.count(1)
        self._to_child: dict[int, tuple[int, int]] = {}
        self._from_child: dict[tuple[int, int], int] = {}
        self._infos: dict[int, LinkInfo] = {}
        for i, child in enumerate(self.children):
            child.attach(_Child(self, i))

    def attach(self, handler: TransportHandler) -> None:
        self._handler = handler

    async def start(self) -> None:
        for child in self.children:
            await child.start()

    async def stop(self) -> None:
        for child in reversed(self.children):
            await child.stop()

    def send(self, link_id: int, frame: bytes) -> SendResult:
        where = self._to_child.get(link_id)
        if where is None:
            return SendResult.NO_SUCH_LINK
        return self.children[where[0]].send(where[1], frame)

    def links(self) -> Sequence[LinkInfo]:
        return [self._infos[lid] for lid in sorted(self._infos)]

    def queue_depth(self, link_id: int) -> int:
        where = self._to_child.get(link_id)
        return 0 if where is None else self.children[where[0]].queue_depth(where[1])

    def child_of(self, link_id: int) -> int | None:
        """Index of the child transport a link belongs to."""
        where = self._to_child.get(link_id)
        return None if where is None else where[0]

    def child_link(self, link_id: int) -> int | None:
        """The child's own id of a link."""
        where = self._to_child.get(link_id)
        return None if where is None else where[1]

    # -- from the children ----------------------------------------------------------------

    def _child_link_up(self, index: int, info: LinkInfo) -> None:
        key = (index, info.link_id)
        old = self._from_child.pop(key, None)
        if old is not None:  # a child reusing an id it did not close: close ours first
            self._forget(old, "replaced")
        lid = next(self._ids)
        self._from_child[key] = lid
        self._to_child[lid] = key
        self._infos[lid] = replace(info, link_id=lid)
        if self._handler is not None:
            self._handler.link_up(self._infos[lid])

    def _child_link_down(self, index: int, link_id: int, reason: str) -> None:
        lid = self._from_child.pop((index, link_id), None)
        if lid is not None:
            self._forget(lid, reason)

    def _forget(self, lid: int, reason: str) -> None:
        self._to_child.pop(lid, None)
        self._infos.pop(lid, None)
        if self._handler is not None:
            self._handler.link_down(lid, reason)

    def _child_frame(self, index: int, link_id: int, data: bytes) -> None:
        lid = self._from_child.get((index, link_id))
        if lid is not None and self._handler is not None:
            self._handler.frame_received(lid, data)

    # -- to the children (added by the ble helper: the Transport API's optional calls) -----

    def link_identified(self, link_id: int, peer_id: bytes, capabilities: int) -> None:
        where = self._to_child.get(link_id)
        if where is not None:
            self.children[where[0]].link_identified(where[1], peer_id, capabilities)

    def issues(self) -> list[str]:
        return [issue for child in self.children for issue in child.issues()]

    def announce_capabilities(self) -> int:
        caps = 0
        for child in self.children:
            caps |= child.announce_capabilities()
        return caps
