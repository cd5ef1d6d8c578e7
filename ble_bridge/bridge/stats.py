"""What the bridge reports: per-session and whole-bridge statistics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .contact import SessionHealth


@dataclass(frozen=True, slots=True)
class SessionStats:
    session_id: bytes
    health: SessionHealth
    height: int
    round: int
    validators: int
    active_participants: int
    pending_operations: int
    inbox_depth: int
    announce_interval: float


@dataclass(frozen=True, slots=True)
class BridgeStats:
    """What :meth:`NetworkConsensusBridge.stats` reports; latencies in seconds (NaN: none)."""

    messages_processed: int
    rounds_completed: int
    committed_operations: int
    failed_operations: int
    pending_operations: int
    active_participants: int
    latency_p50: float
    latency_p95: float
    latency_p99: float
    messages_sent: int
    bytes_sent: int
    drops: dict[str, int]
    sessions: dict[bytes, SessionStats]


def quantile(xs: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of sorted ``xs``; NaN when empty."""
    if not xs:
        return math.nan
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]
