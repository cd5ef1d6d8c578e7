"""When a session announces its state. Sans-IO, explicit ``now``.

A node announces (height, state hash) when it changed since its last announcement, at an
interval that halves while the state keeps changing (never below ``min_interval``, or
``gossip_min_interval`` while the session gossips) and doubles while idle (up to
``max_interval``); and, as a heartbeat, whenever it sent nothing for ``heartbeat``
seconds, so that the others keep it in contact. A validator heard again after losing
contact, a healed partition and a joiner get an announcement at once.
"""

from __future__ import annotations

import enum
import math

State = tuple[int, bytes]
"""(height, state hash) as announced."""


class Why(enum.Enum):
    """Why :meth:`Announcer.tick` says to announce."""

    HEARTBEAT = "heartbeat"  # nothing sent for the heartbeat interval
    CHANGED = "changed"  # the state changed since the last announcement


class Announcer:
    """One session's announcement schedule; the caller sends what :meth:`tick` asks for
    and reports every other announcement and message sent (:meth:`announced`, :meth:`sent`)."""

    def __init__(
        self,
        now: float,
        *,
        min_interval: float,
        max_interval: float,
        gossip_min_interval: float,
        heartbeat: float,
    ) -> None:
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.gossip_min_interval = gossip_min_interval
        self.heartbeat = heartbeat  # 0: off
        self.interval = min_interval
        self.next_at = now + min_interval
        self.last: State | None = None  # what we last announced
        self.last_sent = now  # when we last sent anything
        self.join_answered = -math.inf  # when we last answered a joiner

    def sent(self, now: float) -> None:
        """We sent some message of the session."""
        self.last_sent = now

    def announced(self, now: float, state: State) -> None:
        """We announced ``state`` (for whatever reason)."""
        self.last = state
        self.last_sent = now

    def contact_regained(self, now: float) -> None:
        """A validator is back in contact: tell it where we are at the next tick."""
        self.next_at = now
        self.last = None

    def healed(self) -> None:
        """Back from a partition: the caller announces now; the interval starts short."""
        self.interval = self.min_interval

    def may_answer_join(self, now: float) -> bool:
        """A joiner asked: answer it with an announcement at most once per ``min_interval``."""
        if now - self.join_answered < self.min_interval:
            return False
        self.join_answered = now
        return True

    def tick(self, now: float, state: State, gossiping: bool) -> Why | None:
        """Whether to announce ``state`` now (then the caller calls :meth:`announced`).

        At most one announcement a tick: a heartbeat announces the current state, which
        then counts as unchanged for the interval's own decision."""
        why: Why | None = None
        if self.heartbeat > 0 and now - self.last_sent >= self.heartbeat:
            why = Why.HEARTBEAT
            self.announced(now, state)
        if now < self.next_at:
            return why
        if state != self.last:
            # Gossiping, every validator hears our votes within a message delay, and one
            # that lags notices from votes for heights ahead of its own: announcements,
            # flooded O(n^2), matter less and cost a tenth of the airtime at 2 s.
            floor = (
                max(self.min_interval, self.gossip_min_interval) if gossiping else self.min_interval
            )
            self.interval = max(floor, self.interval / 2)
            why = Why.CHANGED
            self.announced(now, state)
        else:
            self.interval = min(self.max_interval, self.interval * 2)
        self.next_at = now + self.interval
        return why
