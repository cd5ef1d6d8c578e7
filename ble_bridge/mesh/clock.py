"""Mesh-time estimate from peers' signed timestamps, for freshness checks only.

Pis boot without a real-time clock, so a node's wall clock may be hours off. Each verified
packet gives a sample ``timestamp - our_wall`` for its sender; per sender we keep the largest
recent one (transit delay only lowers a sample). Mesh time is our wall clock plus the median
of those per-sender offsets, or our own clock while no peer was heard. Safety never depends
on it: it only filters replays older than the seen cache and wildly wrong stamps.
"""

from __future__ import annotations

from collections import OrderedDict


class MeshClock:
    """Bounded per-sender offset samples → median offset in milliseconds."""

    def __init__(self, max_samples: int, sample_ttl: float) -> None:
        self.max_samples = max_samples
        self.sample_ttl = sample_ttl
        self._samples: OrderedDict[bytes, tuple[float, int]] = OrderedDict()  # sender -> (at, ms)
        self._offset: int | None = 0
        self._swept = float("-inf")

    def __len__(self) -> int:
        return len(self._samples)

    def observe(self, now: float, sender: bytes, timestamp_ms: int, wall_ms: int) -> None:
        """Add a sample from a verified packet of ``sender``."""
        offset = timestamp_ms - wall_ms
        old = self._samples.pop(sender, None)
        if old is not None and now - old[0] < self.sample_ttl / 4 and old[1] > offset:
            self._samples[sender] = old  # a later, slower copy: keep the better sample
        else:
            self._samples[sender] = (now, offset)
        while len(self._samples) > self.max_samples:
            self._samples.popitem(last=False)
        self._offset = None

    def offset_ms(self, now: float) -> int:
        """Median offset of fresh samples (0 when there are none)."""
        if now - self._swept >= 1.0:
            self._swept = now
            stale = [s for s, (at, _) in self._samples.items() if now - at >= self.sample_ttl]
            for s in stale:
                del self._samples[s]
            if stale:
                self._offset = None
        if self._offset is None:
            values = sorted(v for _, v in self._samples.values())
            self._offset = values[len(values) // 2] if values else 0
        return self._offset
