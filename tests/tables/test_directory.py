"""Table genesis and announcement codecs (hypothesis), the directory and the schedule."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ble_bridge.tables.directory import (
    AnnounceError,
    AnnounceSchedule,
    TableAnnounce,
    TableDirectory,
)
from ble_bridge.tables.genesis import GenesisError, TableGenesis
from ble_bridge.wire.identity import Identity, verify_signature

OPENER = Identity.from_seed(b"\x01" * 32)
OTHER = Identity.from_seed(b"\x02" * 32)

names = st.text(
    st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Zs", "Zl", "Zp", "Co", "Cn")),
    min_size=1,
    max_size=8,
)


@st.composite
def geneses(draw: st.DrawFn) -> TableGenesis:
    seats = draw(st.integers(1, 16))
    buy_in = draw(st.integers(1, 1 << 40))
    return TableGenesis(
        name=draw(names),
        opener=draw(st.binary(min_size=32, max_size=32)),
        opener_nick=draw(st.text(max_size=8)),
        seats=seats,
        buy_in=buy_in,
        min_bet=draw(st.integers(1, min(buy_in, 1 << 32))),
        created_ms=draw(st.integers(0, (1 << 64) - 1)),
        nonce=draw(st.integers(0, (1 << 64) - 1)),
    )


def genesis(name: str = "t1", seats: int = 4, nonce: int = 7) -> TableGenesis:
    return TableGenesis(name, OPENER.signing_public, "opener", seats, 1000, 5, 1, nonce)


def announce(g: TableGenesis, who: Identity = OPENER, taken: int = 1, height: int = 0) -> bytes:
    ann = TableAnnounce(g, who.signing_public, "nick", taken, 0, height, 7)
    return ann.signed(who.sign).encode()


@given(geneses())
def test_genesis_round_trips_and_fixes_the_id(g: TableGenesis) -> None:
    assert TableGenesis.decode(g.encode()) == g
    assert TableGenesis.decode(g.encode()).session_id == g.session_id
    other = TableGenesis(
        g.name, g.opener, g.opener_nick, g.seats, g.buy_in, g.min_bet, g.created_ms, g.nonce ^ 1
    )
    assert other.session_id != g.session_id


@given(st.binary(max_size=200))
def test_genesis_decoder_refuses_junk_with_its_own_error(data: bytes) -> None:
    try:
        g = TableGenesis.decode(data)
    except GenesisError:
        return
    assert g.encode() == data


@given(geneses(), st.integers(0, 16), st.integers(0, 65535), st.integers(0, (1 << 64) - 1))
def test_announce_round_trips_signed(g: TableGenesis, taken: int, players: int, h: int) -> None:
    taken = min(taken, g.seats)
    ann = TableAnnounce(g, OPENER.signing_public, "ñick", taken, players, h, 7)
    data = ann.signed(OPENER.sign).encode()
    back = TableAnnounce.decode(data)
    assert back.verify(verify_signature)
    assert back.genesis == g and (back.seats_taken, back.players, back.height) == (
        taken,
        players,
        h,
    )


@given(st.binary(max_size=400))
def test_announce_decoder_never_raises_anything_else(data: bytes) -> None:
    try:
        TableAnnounce.decode(data)
    except AnnounceError as exc:
        assert exc.reason.startswith("table_ann_")


@given(st.data())
def test_a_flipped_byte_is_refused_or_fails_the_signature(data: st.DataObject) -> None:
    raw = bytearray(announce(genesis()))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    d = TableDirectory(verify_signature)
    assert d.receive(0.0, bytes(raw), 7) is None
    assert sum(d.drops.values()) == 1


def test_nickname_is_cut_between_characters() -> None:
    ann = TableAnnounce(genesis(), OPENER.signing_public, "é" * 40, 1, 0, 0, 7)
    back = TableAnnounce.decode(ann.signed(OPENER.sign).encode())
    assert back.nickname == "é" * 16


def test_announce_claiming_more_seats_taken_than_the_table_has_is_refused() -> None:
    with pytest.raises(AnnounceError, match="table_ann_seats"):
        TableAnnounce.decode(announce(genesis(seats=2), taken=3))


def test_directory_keeps_the_freshest_counts_hops_and_expires() -> None:
    d = TableDirectory(verify_signature, capacity=8, ttl=10.0)
    g = genesis()
    h = d.receive(1.0, announce(g, height=5), ttl=5)
    assert h is not None and h.hops == 3 and h.announce.height == 5
    d.receive(2.0, announce(g, OTHER, height=3), ttl=7)  # older height: only a sign of life
    entry = d.get(g.session_id)
    assert entry is not None and entry.announce.height == 5 and entry.last_heard == 2.0
    assert [e.name for e in d.find(3.0, "t1")] == ["t1"]
    assert d.find(3.0, g.session_id.hex()[:6])[0].session_id == g.session_id
    assert d.entries(12.5) == []  # unheard for more than ttl


def test_directory_is_bounded_evicting_the_longest_unheard() -> None:
    d = TableDirectory(verify_signature, capacity=3, ttl=100.0)
    gs = [genesis(f"t{i}", nonce=i) for i in range(5)]
    for i, g in enumerate(gs):
        d.receive(float(i), announce(g), 7)
    assert len(d) == 3
    assert {e.name for e in d.entries(5.0)} == {"t2", "t3", "t4"}
    assert d.drops["table_directory_evicted"] == 2


def test_forged_signature_is_counted() -> None:
    ann = TableAnnounce(genesis(), OPENER.signing_public, "n", 1, 0, 0, 7)
    forged = TableAnnounce.decode(ann.signed(OTHER.sign).encode())  # OTHER signs as OPENER
    d = TableDirectory(verify_signature)
    assert d.heard(0.0, forged, 1) is not None  # heard() trusts its caller...
    d2 = TableDirectory(verify_signature)
    assert d2.receive(0.0, ann.signed(OTHER.sign).encode(), 7) is None  # ...receive checks
    assert d2.drops["table_ann_bad_signature"] == 1


def test_schedule_backs_off_resets_on_change_and_stops_when_full() -> None:
    s = AnnounceSchedule(0.0, 2.0, 16.0)
    sent = []
    state = (1, 0)
    t = 0.0
    while t < 60.0:
        if s.due(t, state, full=False):
            s.sent_now(t, state)
            sent.append(t)
        t += 0.5
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert gaps[:4] == [2.0, 4.0, 8.0, 16.0] and max(gaps) == 16.0
    assert s.due(60.0, (2, 0), full=False)  # what we would say changed: at once
    s.sent_now(60.0, (2, 0))
    assert s.interval == 4.0
    assert not any(s.due(60.0 + k, (2, 0), full=True) for k in range(100))  # full, unchanged


def test_schedule_is_suppressed_by_another_validators_announcement() -> None:
    s = AnnounceSchedule(0.0, 2.0, 16.0)
    assert s.due(0.0, (1, 0), full=False)
    s.sent_now(0.0, (1, 0))
    s.heard_other(1.5, height=9, our_height=9)
    assert not s.due(2.0, (1, 0), full=False)
    assert s.suppressed == 1
    s.heard_other(3.0, height=2, our_height=9)  # behind us: does not count
    assert s.due(6.0, (1, 0), full=False)


def test_a_younger_namesake_heard_brings_our_announcement_forward() -> None:
    # churn seed 470: a node that restarted missed the table's announcements (16 s apart by
    # then), opened its own, and still sat alone at it when the run ended
    s = AnnounceSchedule(0.0, 2.0, 16.0)
    t = 0.0
    while t < 40.0:
        if s.due(t, (3, 0), full=False):
            s.sent_now(t, (3, 0))
        t += 0.5
    assert s.interval == 16.0 and s.next_at > 41.0
    s.soon(40.0, 2.0)
    assert not s.due(41.5, (3, 0), full=False)
    assert s.due(42.0, (3, 0), full=False)
    s.sent_now(42.0, (3, 0))
    assert s.next_at == 44.0  # back to the short interval
    # another validator said it first: ours is spared
    s.soon(50.0, 4.0)
    s.heard_other(51.0, height=9, our_height=9)
    assert not s.due(54.0, (3, 0), full=False) and s.suppressed == 1
