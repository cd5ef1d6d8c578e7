"""Table events in the public chat: one speaker per event at a table of 8, short lines,
at most one line per 2 s per table under a flood, coalescing, pauses."""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from dataclasses import replace

from ble_bridge.chat.events import MAX_LINE, EventsConfig, TableChat
from ble_bridge.consensus.app import BlockContext
from ble_bridge.consensus.craps import (
    BetKind,
    CommitRandomness,
    CrapsApp,
    CrapsState,
    PlaceBet,
    RevealRandomness,
    TableRules,
    commitment,
    encode_op,
)

KEYS = tuple(hashlib.sha256(bytes([i])).digest() for i in range(8))
TABLE = b"t" * 16


def _nick(k: bytes) -> str:
    return f"p{KEYS.index(k)}" if k in KEYS else k[:2].hex()


class Replica:
    """The committed states of one table, height by height."""

    def __init__(self) -> None:
        self.app = CrapsApp(TableRules(seats=8))
        self.state: CrapsState = self.app.initial_state(KEYS)
        self.height = 0

    def block(self, ops: list[tuple[bytes, bytes]]) -> CrapsState:
        self.height += 1
        ctx = BlockContext(self.height, KEYS[0], KEYS)
        s = self.state
        for key, op in ops:
            s = self.app.apply(s, key, op, ctx)
        self.state = self.app.end_block(s, ctx)
        return self.state

    def roll_ops(self) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
        rnd = self.state.round
        sec = {k: hashlib.sha256(k + bytes([rnd % 256])).digest() for k in KEYS}
        commits = [(k, encode_op(CommitRandomness(rnd, commitment(k, rnd, sec[k])))) for k in KEYS]
        reveals = [(k, encode_op(RevealRandomness(rnd, sec[k]))) for k in KEYS]
        return commits, reveals


def _nodes(config: EventsConfig | None = None) -> list[TableChat]:
    return [TableChat(k, config) for k in KEYS]


def _observe(nodes: list[TableChat], now: float, r: Replica, healthy: bool = True) -> None:
    for n in nodes:
        n.observe(now, TABLE, "dice", r.height, r.state, healthy=healthy, nick=_nick)


def _due(nodes: list[TableChat], now: float) -> list[tuple[int, str]]:
    return [(i, line) for i, n in enumerate(nodes) for line in n.due(now)]


def test_one_line_per_event_for_a_table_of_eight() -> None:
    nodes = _nodes()
    r = Replica()
    heard: list[tuple[float, int, str]] = []
    now = 0.0
    _observe(nodes, now, r)  # height 0: the table opened
    heard += [(now, i, line) for i, line in _due(nodes, now)]
    script: list[list[tuple[bytes, bytes]]] = [
        [(KEYS[1], encode_op(PlaceBet(0, BetKind.PASS_LINE, 10)))],
        [(KEYS[2], encode_op(PlaceBet(0, BetKind.FIELD, 5)))],
    ]
    commits, reveals = r.roll_ops()
    script += [commits, reveals]
    for ops in script:
        now += 3.0  # blocks slower than the rate limit: each event its own line
        r.block(ops)
        _observe(nodes, now, r)
        heard += [(now, i, line) for i, line in _due(nodes, now)]
    now += 3.0
    heard += [(now, i, line) for i, line in _due(nodes, now)]
    texts = [line for _, _, line in heard]
    assert texts[0].startswith("[dice] table dice opened (8 seats")
    assert "[dice] p1 bets 10 pass" in texts
    assert "[dice] p2 bets 5 field" in texts
    rolls = [t for t in texts if "rolled" in t]
    assert len(rolls) == 1
    # every line was said by exactly one node: the speaker of its height
    assert len(texts) == len(set(texts))
    speakers = {i for _, i, _ in heard}
    # heights 0..4 are in the first epoch of 64: the first validator in key order
    assert speakers == {KEYS.index(min(KEYS))}
    assert all(len(t.encode()) <= MAX_LINE for t in texts)
    # the nodes that did not speak dropped each event, they did not queue it
    quiet = [n for i, n in enumerate(nodes) if i not in speakers]
    assert len(quiet) == 7
    assert all(n.stats["events_left_to_speaker"] > 0 for n in quiet)
    assert all(n.due(now + 100) == [] for n in nodes)


def test_the_speaker_follows_the_height() -> None:
    nodes = _nodes(EventsConfig(epoch=2))
    r = Replica()
    _observe(nodes, 0.0, r)
    assert len(_due(nodes, 0.0)) == 1  # the opening
    now = 0.0
    speakers = set()
    for i in range(6):
        now += 5.0
        r.block([(KEYS[i % 8], encode_op(PlaceBet(0, BetKind.FIELD, 1)))])
        _observe(nodes, now, r)
        # a speaker that just took over waits one interval first
        got = _due(nodes, now) + _due(nodes, now + 2.0)
        assert [line for _, line in got] == [f"[dice] p{i % 8} bets 1 field"]
        assert KEYS[got[0][0]] == nodes[0].speaker(r.state, r.height)
        speakers.add(got[0][0])
    assert len(speakers) == 4  # heights 1..6 span epochs 0..3 of 2 heights


def test_rate_limit_holds_under_a_flood() -> None:
    nodes = _nodes()
    r = Replica()
    _observe(nodes, 0.0, r)
    sent: list[tuple[float, str]] = []
    now = 0.0
    bets = 0
    for step in range(200):  # a block every 50 ms, each with a bet from someone
        now = 0.05 * (step + 1)
        key = KEYS[step % 8]
        kind = (BetKind.FIELD, BetKind.PASS_LINE, BetKind.DONT_PASS)[step % 3]
        r.block([(key, encode_op(PlaceBet(0, kind, 1)))])
        bets += 1
        _observe(nodes, now, r)
        sent += [(now, line) for _, line in _due(nodes, now)]
    times = [t for t, _ in sent]
    assert all(b - a >= 2.0 - 1e-9 for a, b in itertools.pairwise(times))
    assert len(sent) <= 10 / 2.0 + 1
    assert all(len(line.encode()) <= MAX_LINE for _, line in sent)
    total: Counter[str] = sum((n.stats for n in nodes), Counter())
    # coalesced into few lines; what did not fit waited in a bounded queue, oldest dropped
    assert total["events_coalesced"] > 0
    assert total["events"] == bets + 1  # each event queued by exactly one node
    assert total["events_dropped"] + total["events_dropped_handover"] > 0
    assert all(len(t.pending) <= n.config.max_pending for n in nodes for t in n._tables.values())


def test_pause_and_resume_are_said_once() -> None:
    nodes = _nodes()
    r = Replica()
    _observe(nodes, 0.0, r)
    _due(nodes, 0.0)
    _observe(nodes, 1.0, r, healthy=False)
    _observe(nodes, 1.5, r, healthy=False)
    got = _due(nodes, 5.0)
    assert [line for _, line in got] == ["[dice] paused: waiting for the validators"]
    _observe(nodes, 6.0, r, healthy=True)
    assert [line for _, line in _due(nodes, 9.0)] == ["[dice] resumed"]


def test_a_node_joining_late_does_not_announce_the_opening() -> None:
    n = TableChat(KEYS[0])
    r = Replica()
    for _ in range(3):
        r.block([])
    n.observe(0.0, TABLE, "dice", r.height, r.state, nick=_nick)
    assert n.due(10.0) == []
    r2 = replace(r.state)
    assert r2 == r.state


def test_disabled_says_nothing() -> None:
    nodes = _nodes(EventsConfig(enabled=False))
    r = Replica()
    _observe(nodes, 0.0, r)
    assert _due(nodes, 10.0) == []
