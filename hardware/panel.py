"""The handheld's panel, sans-IO: one push button and one LED, with explicit ``now``.

:class:`Button` turns level samples (or edge events) of the button line into presses: a
level counts only after it held for ``debounce_s``; a press released before ``long_press_s``
is :attr:`Press.SHORT`, one held for ``long_press_s`` is :attr:`Press.LONG`, reported as soon
as :meth:`Button.step` sees it held that long (while still down, so the LED can answer at
once) and never again for the same press.

:class:`Panel` decides what the LED shows. The node's facts (:class:`Facts`) give a
:class:`Status` by priority (error > pairing > partitioned > committing > at a table >
linked > searching); each status has a blink pattern (:data:`PATTERNS`). A short press
blinks the status: the LED goes dark for a beat, blinks once per link (up to 9; none: one
long blink), goes dark again and then shows the pattern for ``show_s``. With
``idle = "off"`` (battery saving) the LED is dark outside such a readout except for
pairing and error, which always show. A long press asks the node to open the pairing
window (:meth:`Panel.step` returns :attr:`Action.OPEN_PAIRING`).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Literal


class Press(enum.Enum):
    SHORT = "short"
    LONG = "long"


class Status(enum.Enum):
    SEARCHING = "searching"
    LINKED = "linked"
    AT_TABLE = "at_table"
    COMMITTING = "committing"
    PARTITIONED = "partitioned"
    PAIRING = "pairing"
    ERROR = "error"


PRIORITY = (
    Status.ERROR,
    Status.PAIRING,
    Status.PARTITIONED,
    Status.COMMITTING,
    Status.AT_TABLE,
    Status.LINKED,
    Status.SEARCHING,
)

PATTERNS: dict[Status, tuple[float, ...]] = {
    # alternating on/off durations in seconds, starting with on, repeated; () = solid on
    Status.SEARCHING: (0.1, 1.9),  # a short blink every 2 s
    Status.LINKED: (0.1, 0.2, 0.1, 2.6),  # a double blink every 3 s
    Status.AT_TABLE: (),  # solid
    Status.COMMITTING: (0.05, 0.1),  # flicker
    Status.PARTITIONED: (1.0, 1.0),  # slow blink
    Status.PAIRING: (0.25, 0.25),  # fast blink
    Status.ERROR: (0.1, 0.1, 0.1, 0.1, 0.1, 1.5),  # triple blink
}
ALWAYS_SHOWN = frozenset({Status.PAIRING, Status.ERROR})

COUNT_ON = 0.2
COUNT_OFF = 0.3
COUNT_ZERO_ON = 1.0
COUNT_MAX = 9
BEAT = 0.6  # dark before and after the link count
EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Facts:
    """What the node knows, for the LED."""

    links: int = 0
    at_table: bool = False
    committing: bool = False
    partitioned: bool = False
    pairing: bool = False
    error: bool = False


def status_of(f: Facts) -> Status:
    if f.error:
        return Status.ERROR
    if f.pairing:
        return Status.PAIRING
    if f.partitioned:
        return Status.PARTITIONED
    if f.committing:
        return Status.COMMITTING
    if f.at_table:
        return Status.AT_TABLE
    if f.links:
        return Status.LINKED
    return Status.SEARCHING


def pattern_level(pattern: tuple[float, ...], t: float) -> tuple[bool, float]:
    """(LED on?, seconds until that changes) ``t`` seconds into ``pattern``."""
    if not pattern:
        return True, math.inf
    period = sum(pattern)
    t = t % period
    for i, d in enumerate(pattern):
        if t < d - EPSILON:  # within a nanosecond of a boundary counts as past it
            return i % 2 == 0, d - t
        t -= d
    return True, pattern[0] - t  # at the very end of a period: the next one begins


class Button:
    """Debounced press detection (see the module docstring)."""

    def __init__(
        self, *, debounce_s: float = 0.03, long_press_s: float = 3.0, now: float = 0.0
    ) -> None:
        if not 0 <= debounce_s < long_press_s:
            raise ValueError("need 0 <= debounce_s < long_press_s")
        self.debounce_s = debounce_s
        self.long_press_s = long_press_s
        self._raw = False
        self._raw_at = now
        self._down = False
        self._down_at = now  # when the accepted press began (its first edge)
        self._long_sent = False
        self._now = now
        self.glitches = 0  # level changes shorter than debounce_s
        self.backwards = 0  # samples with a time before the previous one (clamped)

    @property
    def down(self) -> bool:
        return self._down

    def step(self, now: float, pressed: bool | None = None) -> list[Press]:
        """Feed the line's level at ``now`` (None: no new sample) and get the presses."""
        if now < self._now:
            self.backwards += 1
            now = self._now
        self._now = now
        out: list[Press] = []
        self._settle(now, out)
        if pressed is not None and pressed != self._raw:
            if self._raw != self._down:
                self.glitches += 1  # the previous change did not last
            self._raw, self._raw_at = pressed, now
            self._settle(now, out)
        return out

    def _settle(self, now: float, out: list[Press]) -> None:
        if self._raw != self._down and now >= self._raw_at + self.debounce_s:
            self._down = self._raw
            if self._down:
                self._down_at, self._long_sent = self._raw_at, False
            elif not self._long_sent:
                long = self._raw_at >= self._down_at + self.long_press_s
                out.append(Press.LONG if long else Press.SHORT)
        if self._down and not self._long_sent:
            # held until now, or until a release edge that is still settling
            held_until = now if self._raw else self._raw_at
            if held_until >= self._down_at + self.long_press_s:
                self._long_sent = True
                out.append(Press.LONG)

    def deadline(self) -> float:
        """When :meth:`step` next has something to decide without a new sample."""
        t = math.inf
        if self._raw != self._down:
            t = self._raw_at + self.debounce_s
        if self._down and self._raw and not self._long_sent:
            t = min(t, self._down_at + self.long_press_s)
        return t


class Action(enum.Enum):
    OPEN_PAIRING = "open_pairing"
    READOUT = "readout"


@dataclass(frozen=True, slots=True)
class PanelConfig:
    debounce_s: float = 0.03
    long_press_s: float = 3.0
    show_s: float = 6.0
    idle: Literal["pattern", "off"] = "pattern"


class Panel:
    """Button in, LED level and actions out (see the module docstring)."""

    def __init__(self, config: PanelConfig | None = None, *, now: float = 0.0) -> None:
        self.config = config or PanelConfig()
        c = self.config
        if c.idle not in ("pattern", "off"):
            raise ValueError(f"idle must be 'pattern' or 'off', not {c.idle!r}")
        self.button = Button(debounce_s=c.debounce_s, long_press_s=c.long_press_s, now=now)
        self.facts = Facts()
        self.status = Status.SEARCHING
        self._status_at = now  # patterns start at the status change
        self._readout: tuple[float, tuple[float, ...]] | None = None  # start, segments
        self.presses = {Press.SHORT: 0, Press.LONG: 0}

    def update(self, now: float, facts: Facts) -> None:
        self.facts = facts
        status = status_of(facts)
        if status is not self.status:
            self.status, self._status_at = status, now

    def step(self, now: float, pressed: bool | None = None) -> list[Action]:
        actions = []
        for press in self.button.step(now, pressed):
            self.presses[press] += 1
            if press is Press.LONG:
                actions.append(Action.OPEN_PAIRING)
            else:
                self._readout = (now, self._count_segments(self.facts.links))
                actions.append(Action.READOUT)
        return actions

    @staticmethod
    def _count_segments(links: int) -> tuple[float, ...]:
        """Off/on durations of the link count, starting and ending dark."""
        n = min(max(links, 0), COUNT_MAX)
        blinks: list[float] = [BEAT]
        if n == 0:
            blinks += [COUNT_ZERO_ON, BEAT]
        else:
            for _ in range(n - 1):
                blinks += [COUNT_ON, COUNT_OFF]
            blinks += [COUNT_ON, BEAT]
        return tuple(blinks)

    def readout_end(self) -> float | None:
        if self._readout is None:
            return None
        start, segs = self._readout
        return start + sum(segs) + self.config.show_s

    def led(self, now: float) -> tuple[bool, float]:
        """(LED on?, when to look again) at ``now``."""
        look = self.button.deadline()
        if self._readout is not None:
            start, segs = self._readout
            edge = start
            for i, d in enumerate(segs):  # odd segments are on: dark, on, dark, ...
                edge += d
                if now < edge - EPSILON:
                    return i % 2 == 1, min(look, edge)
            end = edge + self.config.show_s
            if now < end - EPSILON:
                on, change = pattern_level(PATTERNS[self.status], now - edge)
                return on, min(look, now + change, end)
            self._readout = None
        if self.config.idle == "off" and self.status not in ALWAYS_SHOWN:
            return False, look
        on, change = pattern_level(PATTERNS[self.status], now - self._status_at)
        return on, min(look, now + change)


__all__ = [
    "ALWAYS_SHOWN",
    "PATTERNS",
    "PRIORITY",
    "Action",
    "Button",
    "Facts",
    "Panel",
    "PanelConfig",
    "Press",
    "Status",
    "pattern_level",
    "status_of",
]
