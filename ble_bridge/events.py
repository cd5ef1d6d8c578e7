"""The service's log: one line per event, ``LEVEL event key=value …`` (sans-IO).

Every module of the service logs in this format: an event name, then ``key=value`` pairs;
a value with a space, a quote or an ``=`` in it is JSON-quoted. :func:`kv` formats a line.
:class:`NodeEvents` is what ``Node`` feeds every ``status_interval`` with what it sees (its
health, its links, its tables' heights, its drop counters) and an explicit ``now``; it
returns the lines to log: health changes, the first time a table is joined (the session is
active and has committed a height since start), every ``commit_every``-th height, and the drops of the
last ``drops_every_s`` seconds summed by reason (nothing when there were none).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

Value = str | int | float | bool | None


def _fmt(v: Value) -> str:
    if isinstance(v, float):
        text = f"{v:.3f}".rstrip("0").rstrip(".") if v == v else "nan"
    elif isinstance(v, bool):
        text = "yes" if v else "no"
    else:
        text = "-" if v is None else str(v)
    if not text or any(c in text for c in ' "=\n\t'):
        return json.dumps(text)
    return text


def kv(event: str, **fields: Value) -> str:
    """``event k=v …`` with each value quoted if it needs it."""
    return " ".join([event, *(f"{k}={_fmt(v)}" for k, v in fields.items())])


@dataclass(frozen=True, slots=True)
class LogSection:
    """``[log]``: what the service logs at INFO besides single events."""

    commit_every: int = 100
    """Log every N-th committed height of each table (0: never)."""
    drops_every_s: float = 60.0
    """Sum the dropped frames and messages by reason over this many seconds (0: never)."""


@dataclass(frozen=True, slots=True)
class TableSeen:
    """What one tick sees of one session."""

    name: str
    height: int
    round: int
    state_hash: str
    health: str
    in_contact: int
    validators: int
    committed_ops: int = 0


@dataclass(slots=True)
class NodeEvents:
    config: LogSection = field(default_factory=LogSection)
    _health: str | None = None
    _joined: set[str] = field(default_factory=set)
    _heights: dict[str, int] = field(default_factory=dict)
    _first_height: dict[str, int] = field(default_factory=dict)
    _started_at: float | None = None
    _drops_base: Counter[str] | None = None
    _drops_at: float = 0.0

    def tick(
        self,
        now: float,
        health: str,
        links: int,
        tables: Sequence[TableSeen],
        drops: Callable[[], Mapping[str, int]],
    ) -> list[tuple[int, str]]:
        """The lines to log now (level, text); ``drops`` is read only when a summary is due."""
        out: list[tuple[int, str]] = []
        if health != self._health:
            level = logging.INFO if health == "healthy" or self._health is None else logging.WARNING
            out.append((level, kv("health", to=health, was=self._health, links=links)))
            self._health = health
        if self._started_at is None:
            self._started_at = now
        for t in tables:
            first = self._first_height.setdefault(t.name, t.height)
            if t.name not in self._joined and t.health == "active" and t.height > first:
                # active with a quorum in contact at start is only the contact grace period:
                # a table is joined once it commits a height with us
                self._joined.add(t.name)
                out.append(
                    (
                        logging.INFO,
                        kv(
                            "table_joined",
                            table=t.name,
                            height=t.height,
                            in_contact=t.in_contact,
                            validators=t.validators,
                            after_s=round(now - self._started_at, 1),
                        ),
                    )
                )
            every = self.config.commit_every
            last = self._heights.get(t.name)
            self._heights[t.name] = t.height
            if every > 0 and last is not None and t.height // every > last // every:
                out.append(
                    (
                        logging.INFO,
                        kv(
                            "commit",
                            table=t.name,
                            height=t.height,
                            round=t.round,
                            state=t.state_hash[:16],
                            ops=t.committed_ops,
                        ),
                    )
                )
        out.extend(self._drops(now, drops))
        return out

    def _drops(self, now: float, read: Callable[[], Mapping[str, int]]) -> list[tuple[int, str]]:
        if self.config.drops_every_s <= 0:
            return []
        if self._drops_base is None:
            self._drops_base, self._drops_at = Counter(read()), now
            return []
        if now - self._drops_at < self.config.drops_every_s:
            return []
        drops = read()
        delta = {k: v - self._drops_base.get(k, 0) for k, v in drops.items()}
        delta = {k: v for k, v in sorted(delta.items()) if v > 0}
        window = now - self._drops_at
        self._drops_base, self._drops_at = Counter(drops), now
        if not delta:
            return []
        total = sum(delta.values())
        return [(logging.INFO, kv("drops", window_s=round(window, 1), total=total, **delta))]
