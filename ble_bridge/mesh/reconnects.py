"""Peers that reconnect in a loop: each reported in one log line per window. Sans-IO.

A healthy link stays up for minutes; a peer whose links keep coming up (a crashing
process restarted by systemd, a radio at the edge of range, a misbehaving phone) costs
every neighbour a connect, an announce and a gossip catch-up each time, and would fill the
log with ``link_up``/``link_down`` pairs that hide the cause. :class:`ReconnectWatch` counts
the times a peer's link was identified (bound to its peer id by its announce) within
``window_s``; the time the count reaches ``threshold`` it says so once, and again at most
once per ``window_s`` while the loop goes on. Consensus is not involved: a reconnecting
peer's votes are verified like any other's.

Bounded: at most ``max_peers`` peers are tracked (least recently seen forgotten), each with
at most ``threshold`` timestamps.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ReconnectConfig:
    window_s: float = 60.0
    threshold: int = 5  # links identified within window_s that make a loop
    max_peers: int = 64

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.threshold < 2 or self.max_peers < 1:
            raise ValueError("reconnect watch needs window_s > 0, threshold ≥ 2, max_peers ≥ 1")


@dataclass(slots=True)
class _Peer:
    ups: deque[float]
    reported: float | None = None


@dataclass(slots=True)
class ReconnectWatch:
    config: ReconnectConfig = field(default_factory=ReconnectConfig)
    _peers: OrderedDict[bytes, _Peer] = field(default_factory=OrderedDict)
    reports: int = 0

    def __len__(self) -> int:
        return len(self._peers)

    def identified(self, now: float, peer: bytes) -> float | None:
        """A link of ``peer`` was identified at ``now``. When this makes a loop not reported
        in the last window: the seconds its last ``threshold`` links took (else None)."""
        cfg = self.config
        rec = self._peers.get(peer)
        if rec is None:
            rec = self._peers[peer] = _Peer(deque(maxlen=cfg.threshold))
            while len(self._peers) > cfg.max_peers:
                self._peers.popitem(last=False)
        self._peers.move_to_end(peer)
        rec.ups.append(now)
        while rec.ups and now - rec.ups[0] > cfg.window_s:
            rec.ups.popleft()
        if len(rec.ups) < cfg.threshold:
            return None
        if rec.reported is not None and now - rec.reported < cfg.window_s:
            return None
        rec.reported = now
        self.reports += 1
        return now - rec.ups[0]
