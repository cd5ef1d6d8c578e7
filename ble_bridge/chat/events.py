"""Table events as short public chat lines, sans-IO.

A node that follows a craps table feeds :meth:`TableChat.observe` with the table's
committed state after each height it sees (and whether the session is healthy); the
differences become human lines: the table opened, who sat down or left, bets, the roll and
its outcome, payouts, pauses. :meth:`TableChat.due` gives the lines to send now as signed
BitChat public messages (type 0x02).

- **One speaker.** Every validator computes the same events from the same committed
  states, but only one of them speaks: the validator at index ``(height // epoch) % n``
  of the sorted validator set, for the height the event committed at. A node that is not
  the speaker drops the event (counted). The speaker changes every ``epoch`` heights; a
  new speaker waits ``interval`` after taking over before its first line, and the old one
  drops what it still held (counted), so two speakers do not both talk at a handover
  (nodes see a height at slightly different times, so the gap there can be a little
  under ``interval``).
- **Rate limit, coalesced.** At most one line per ``interval`` (2 s) per table from a
  speaker; events that wait are joined into one line, `` · `` between them, up to
  ``max_line`` bytes; what does not fit waits for the next line. The queue per table is
  bounded (``max_pending``): the oldest events are dropped first, counted.
- **Short.** A line is at most 99 bytes, under BitChat's 100-byte compression threshold
  (iOS re-compresses a signed message when it checks the signature: docs/protocol.md).

Observation works on the states a node sees; a node that skips heights (it ticks slower
than blocks commit) reports the difference over the span, at the last height.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..consensus.craps import BetKind, CrapsState, Phase

MAX_LINE = 99

_KIND = {BetKind.PASS_LINE: "pass", BetKind.DONT_PASS: "dont-pass", BetKind.FIELD: "field"}


@dataclass(frozen=True, slots=True)
class EventsConfig:
    """``[tables] chat*``: table events in the public chat."""

    enabled: bool = True
    interval: float = 2.0  # at most one line per table this often
    epoch: int = 64  # heights one speaker keeps the table's voice
    max_pending: int = 32  # events waiting per table
    max_line: int = MAX_LINE


@dataclass(slots=True)
class _Table:
    name: str
    state: CrapsState | None = None
    healthy: bool = True
    pending: deque[str] = field(default_factory=deque)
    last_line: float = float("-inf")
    speaker_since: float | None = None  # when we became the speaker (None: we are not)


Nickname = Callable[[bytes], str]


def short_name(key: bytes) -> str:
    """A player without a known nickname: the first 4 bytes of its key in hex."""
    return key[:4].hex()


class TableChat:
    """Events of the tables one node follows (see the module docstring)."""

    def __init__(self, my_key: bytes, config: EventsConfig | None = None) -> None:
        self.my_key = my_key
        self.config = config or EventsConfig()
        self.stats: Counter[str] = Counter()
        self._tables: dict[bytes, _Table] = {}

    def speaker(self, state: CrapsState, height: int) -> bytes:
        vals = state.validators
        return vals[(height // self.config.epoch) % len(vals)]

    def forget(self, table: bytes) -> None:
        self._tables.pop(table, None)

    def observe(
        self,
        now: float,
        table: bytes,
        name: str,
        height: int,
        state: CrapsState,
        *,
        healthy: bool = True,
        nick: Nickname = short_name,
    ) -> None:
        """The committed ``state`` of ``table`` at ``height`` (call after each height)."""
        t = self._tables.get(table)
        if t is None:
            t = self._tables[table] = _Table(name)
        prev, t.state = t.state, state
        was_healthy, t.healthy = t.healthy, healthy
        events: list[str] = []
        if prev is None:
            if height <= 1:
                seats = f"{state.rules.seats} seats, " if state.rules.seats else ""
                events.append(
                    f"table {name} opened ({seats}buy-in {state.rules.starting_balance},"
                    f" min bet {state.rules.min_bet}): !join {name}"
                )
        else:
            events += _diff(prev, state, nick)
        if was_healthy and not healthy:
            events.append("paused: waiting for the validators")
        elif healthy and not was_healthy:
            events.append("resumed")
        if not events:
            return
        if not self.config.enabled or self.speaker(state, height) != self.my_key:
            t.speaker_since = None
            if t.pending:  # no longer ours: the new speaker's window starts now
                self.stats["events_dropped_handover"] += len(t.pending)
                t.pending.clear()
            self.stats["events_left_to_speaker"] += len(events)
            return
        if t.speaker_since is None:
            t.speaker_since = now
            if prev is not None:  # taking over: the previous speaker's window first
                t.last_line = max(t.last_line, now)
        for e in events:
            if len(t.pending) >= self.config.max_pending:
                t.pending.popleft()
                self.stats["events_dropped"] += 1
            t.pending.append(e)
        self.stats["events"] += len(events)

    def due(self, now: float) -> list[str]:
        """Lines to send now (at most one per table)."""
        cfg = self.config
        out = []
        for t in self._tables.values():
            if not t.pending or now - t.last_line < cfg.interval:
                continue
            line = self._line(t)
            t.last_line = now
            self.stats["lines"] += 1
            out.append(line)
        return out

    def _line(self, t: _Table) -> str:
        limit = self.config.max_line
        prefix = f"[{t.name}] "
        line = prefix + _cut(t.pending.popleft(), limit - len(prefix.encode()))
        while t.pending:
            nxt = line + " · " + t.pending[0]
            if len(nxt.encode("utf-8")) > limit:
                break
            line = nxt
            t.pending.popleft()
            self.stats["events_coalesced"] += 1
        return line


def _cut(text: str, limit: int) -> str:
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode("utf-8", errors="ignore") + "..."


def _outcome(prev: CrapsState, total: int) -> str:
    if prev.phase == Phase.COME_OUT:
        if total in (7, 11):
            return "natural, pass wins"
        if total in (2, 3, 12):
            return "craps, don't pass wins" if total != 12 else "craps, pass loses"
        return f"point is {total}"
    if total == prev.point:
        return "point made, pass wins"
    if total == 7:
        return "seven out, don't pass wins"
    return f"point stays {prev.point}"


def _diff(prev: CrapsState, state: CrapsState, nick: Nickname) -> list[str]:
    events = []
    before, after = set(prev.validators), set(state.validators)
    for k in sorted(after - before):
        events.append(f"{nick(k)} sat down")
    cashed = dict(state.cashed_out)
    for k in sorted(before - after):
        took = cashed.get(k)
        events.append(f"{nick(k)} left" + (f" with {took}" if took is not None else ""))
    old_phones = {k for k, _ in prev.phones}
    for k, _ in state.phones:
        if k not in old_phones:
            events.append(f"{nick(k)} joined from a phone")
    old_bets = {(b.player, b.kind): b.amount for b in prev.bets}
    rolled = state.round != prev.round
    if not rolled:
        for b in state.bets:
            added = b.amount - old_bets.get((b.player, b.kind), 0)
            if added > 0:
                events.append(f"{nick(b.player)} bets {added} {_KIND[b.kind]}")
    if rolled and state.history != prev.history and state.history:
        d1, d2 = state.history[-1]
        events.append(f"rolled {d1}+{d2}={d1 + d2}: {_outcome(prev, d1 + d2)}")
        old = dict(prev.balances) | dict(prev.phones)
        now_ = (*state.balances, *state.phones)
        won = [f"{nick(k)} +{v - old[k]}" for k, v in now_ if k in old and v > old[k]]
        if won:
            events.append("paid " + ", ".join(won))
    elif rolled:
        events.append("no roll: nobody revealed")
    return events


__all__ = ["MAX_LINE", "EventsConfig", "TableChat", "short_name"]
