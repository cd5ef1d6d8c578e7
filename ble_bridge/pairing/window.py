"""The pairing window, sans-IO: a six-digit code valid for a while, for the first phone only.

:meth:`PairingWindow.open` starts a window of ``duration`` seconds with a fresh code (or
one given, e.g. the ``[pairing] button_code`` for a long press); :meth:`attempt` checks a
code sent by a sender. The first right code inside the window wins and closes it; so does
the deadline. Wrong codes are counted: each sender gets ``tries_per_sender`` per window
(then it is ignored until the next window), and ``tries_per_window`` wrong codes in all
close the window (a guesser has at most that many in a million chances). Senders remembered
are bounded by ``tries_per_window`` too: only wrong tries create entries.
"""

from __future__ import annotations

import enum
import hmac
import secrets
from collections import Counter
from dataclasses import dataclass


class Attempt(enum.Enum):
    PAIRED = "paired"
    WRONG = "wrong"
    IGNORED = "ignored"  # this sender has used its tries in this window
    CLOSED = "closed"  # no window open (or it just closed)
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class PairingConfig:
    """``[pairing]``: how phones become owners of this node."""

    window_s: float = 60.0  # default window of `ble-bridge pair` and of a long press
    max_window_s: float = 600.0
    tries_per_sender: int = 3
    tries_per_window: int = 10
    max_owners: int = 8
    button_code: str = ""  # six digits used by a long press; "" = a fresh random code


def valid_code(code: str) -> bool:
    return len(code) == 6 and code.isascii() and code.isdigit()


def new_code() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


class PairingWindow:
    def __init__(self, config: PairingConfig | None = None) -> None:
        self.config = config or PairingConfig()
        self.code: str | None = None
        self.opened_at = 0.0
        self.deadline = 0.0
        self.origin = ""
        self.winner: bytes | None = None
        self.closed_because = ""
        self.stats: Counter[str] = Counter()
        self._wrong: Counter[bytes] = Counter()

    def is_open(self, now: float) -> bool:
        if self.code is not None and now >= self.deadline:
            self._close("timeout")
        return self.code is not None

    def open(self, now: float, duration: float, *, code: str = "", origin: str = "cli") -> str:
        """Open (or reopen: a new code) a window; returns the code."""
        cfg = self.config
        if not 0 < duration <= cfg.max_window_s:
            raise ValueError(f"window must be 1..{cfg.max_window_s:g} s")
        if code and not valid_code(code):
            raise ValueError("a pairing code is six digits")
        self.code = code or new_code()
        self.opened_at, self.deadline, self.origin = now, now + duration, origin
        self.winner = None
        self.closed_because = ""
        self._wrong.clear()
        self.stats["windows_opened"] += 1
        return self.code

    def close(self, reason: str = "closed") -> bool:
        if self.code is None:
            return False
        self._close(reason)
        return True

    def _close(self, reason: str) -> None:
        self.code = None
        self.closed_because = reason
        self._wrong.clear()
        self.stats[f"windows_{reason}"] += 1

    def attempt(self, now: float, sender: bytes, code: str) -> Attempt:
        if not self.is_open(now):
            self.stats["tries_closed"] += 1
            return Attempt.CLOSED
        code = code.strip()
        if self._wrong[sender] >= self.config.tries_per_sender:
            self.stats["tries_ignored"] += 1
            return Attempt.IGNORED
        if not valid_code(code):
            self.stats["tries_malformed"] += 1
            self._wrong_try(sender)
            return Attempt.MALFORMED
        assert self.code is not None
        if hmac.compare_digest(code.encode(), self.code.encode()):
            self.stats["paired"] += 1
            self.winner = sender
            self._close("paired")
            return Attempt.PAIRED
        self.stats["tries_wrong"] += 1
        self._wrong_try(sender)
        return Attempt.WRONG

    def _wrong_try(self, sender: bytes) -> None:
        self._wrong[sender] += 1
        if sum(self._wrong.values()) >= self.config.tries_per_window:
            self._close("too_many_tries")

    def status(self, now: float) -> dict[str, object]:
        is_open = self.is_open(now)
        return {
            "open": is_open,
            "code": self.code,
            "remaining_s": round(max(0.0, self.deadline - now), 1) if is_open else 0.0,
            "origin": self.origin,
            "closed_because": self.closed_because,
            "winner": self.winner.hex() if self.winner else None,
            **dict(self.stats),
        }


__all__ = ["Attempt", "PairingConfig", "PairingWindow", "new_code", "valid_code"]
