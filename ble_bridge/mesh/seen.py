"""Bounded LRU + TTL set of packet ids already handled: the mesh's duplicate filter."""

from __future__ import annotations

from collections import OrderedDict


class SeenCache:
    """At most ``capacity`` ids, each forgotten ``ttl`` seconds after it was last seen."""

    def __init__(self, capacity: int, ttl: float) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.ttl = ttl
        self._entries: OrderedDict[bytes, float] = OrderedDict()  # id -> last seen, oldest first
        self.evicted = 0
        self.expired = 0
        self._horizon = float("inf")  # no id expires before this (the oldest one's time + ttl)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def seen(self, now: float, key: bytes) -> bool:
        """True when ``key`` is remembered (and refreshes it); expired ids count as unseen."""
        self.expire(now)
        if key not in self._entries:
            return False
        self._entries[key] = now
        self._entries.move_to_end(key)
        return True

    def add(self, now: float, key: bytes) -> None:
        """Remember ``key``, evicting the least recently seen id when full."""
        self.expire(now)
        if key in self._entries:
            self._entries.move_to_end(key)
        elif len(self._entries) >= self.capacity:
            self._entries.popitem(last=False)
            self.evicted += 1
        if not self._entries:
            self._horizon = now + self.ttl
        self._entries[key] = now

    def forget(self, key: bytes) -> None:
        """Drop ``key``: the next copy is new again."""
        self._entries.pop(key, None)

    def expire(self, now: float) -> None:
        """Forget ids not seen for ``ttl`` seconds."""
        if now < self._horizon:  # called for every packet: nothing is due yet, O(1)
            return
        entries = self._entries
        self._horizon = float("inf")
        while entries:
            key, t = next(iter(entries.items()))
            if now - t < self.ttl:
                self._horizon = t + self.ttl
                break
            del entries[key]
            self.expired += 1
