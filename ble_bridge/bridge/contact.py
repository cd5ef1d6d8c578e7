"""Contact with a session's validators and the session's health. Sans-IO, explicit ``now``.

:class:`Contact` keeps when each validator was last heard (an authenticated mesh packet
or a signature the engine verified). Health is a table-driven state machine in the
style of h11's ``_state.py``: :data:`TRANSITIONS` maps (health, what the tick saw) to
the next health and what to do about it; a session out of contact with a quorum is
PARTITIONED, one that sees f+1 validators announce heights ahead of its own is
CATCHING_UP, otherwise ACTIVE. Leaving PARTITIONED is healing: announce at once.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator


class SessionHealth(enum.Enum):
    ACTIVE = "active"
    CATCHING_UP = "catching_up"  # f+1 validators announced heights ahead of ours
    PARTITIONED = "partitioned"  # out of contact with a quorum of validators


class Seen(enum.Enum):
    """What one health check saw."""

    QUORUM_LOST = "quorum_lost"  # fewer than a quorum of validators in contact
    BEHIND = "behind"  # a quorum in contact, f+1 of them announced heights above ours
    IN_STEP = "in_step"  # a quorum in contact and not behind


class Effect(enum.Enum):
    NONE = "none"
    HEAL = "heal"  # back from a partition: announce our state now, at the shortest interval


_H = SessionHealth
TRANSITIONS: dict[tuple[SessionHealth, Seen], tuple[SessionHealth, Effect]] = {
    (_H.ACTIVE, Seen.QUORUM_LOST): (_H.PARTITIONED, Effect.NONE),
    (_H.ACTIVE, Seen.BEHIND): (_H.CATCHING_UP, Effect.NONE),
    (_H.ACTIVE, Seen.IN_STEP): (_H.ACTIVE, Effect.NONE),
    (_H.CATCHING_UP, Seen.QUORUM_LOST): (_H.PARTITIONED, Effect.NONE),
    (_H.CATCHING_UP, Seen.BEHIND): (_H.CATCHING_UP, Effect.NONE),
    (_H.CATCHING_UP, Seen.IN_STEP): (_H.ACTIVE, Effect.NONE),
    (_H.PARTITIONED, Seen.QUORUM_LOST): (_H.PARTITIONED, Effect.NONE),
    (_H.PARTITIONED, Seen.BEHIND): (_H.CATCHING_UP, Effect.HEAL),
    (_H.PARTITIONED, Seen.IN_STEP): (_H.ACTIVE, Effect.HEAL),
}


class Contact:
    """When each validator of a session was last heard; ``me`` is always in contact.

    Bounded by the validator set: keys outside it are ignored, and a set change drops the
    keys that left (a newcomer gets the same grace as every validator at the start)."""

    def __init__(self, validators: Iterable[bytes], me: bytes, now: float, timeout: float) -> None:
        self.me = me
        self.timeout = timeout
        self._last: dict[bytes, float] = {v: now for v in validators}

    def __contains__(self, key: object) -> bool:
        return key in self._last

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._last)

    def __len__(self) -> int:
        return len(self._last)

    def heard(self, now: float, key: bytes) -> bool:
        """Validator ``key`` was heard; True when it had been out of contact until now."""
        last = self._last.get(key)
        if last is None:
            return False
        self._last[key] = now
        return now - last > self.timeout

    def in_contact(self, now: float) -> int:
        """How many validators (us included) were heard within the timeout."""
        t = self.timeout
        return sum(1 for v, at in self._last.items() if v == self.me or now - at <= t)

    def ages(self, now: float) -> dict[bytes, float]:
        """Seconds since each validator was last heard (0 for ourselves)."""
        return {v: 0.0 if v == self.me else max(0.0, now - at) for v, at in self._last.items()}

    def set_validators(self, keys: Iterable[bytes], now: float) -> list[bytes]:
        """Follow a new validator set; returns the keys that left."""
        keys = frozenset(keys)
        for k in keys - self._last.keys():
            self._last[k] = now
        gone = [k for k in self._last if k not in keys]
        for k in gone:
            del self._last[k]
        return gone


def next_health(health: SessionHealth, seen: Seen) -> tuple[SessionHealth, Effect]:
    """One step of the health machine (see :data:`TRANSITIONS`)."""
    return TRANSITIONS[(health, seen)]
