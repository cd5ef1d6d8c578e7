"""tables.json (atomic, survives a broken file), bet checks and the roll planner."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from ble_bridge.consensus.craps import (
    Bet,
    BetKind,
    CrapsApp,
    Phase,
    Stage,
    TableRules,
    commitment,
    decode_op,
)
from ble_bridge.tables import registry
from ble_bridge.tables.errors import TableError
from ble_bridge.tables.genesis import TableGenesis
from ble_bridge.tables.play import RollPlanner, bet_kind, check_bet
from ble_bridge.wire.identity import Identity

ME = Identity.from_seed(b"\x03" * 32)
G = TableGenesis("felt", ME.signing_public, "me", 4, 500, 10, 123, 9)


def test_registry_round_trips_and_writes_atomically(tmp_path: Path) -> None:
    path = tmp_path / "tables.json"
    assert registry.load(path) == []
    recs = [registry.TableRecord(G, "opened"), registry.TableRecord(G, "joined", 77, yields=True)]
    registry.save(path, recs)
    assert registry.load(path) == recs
    assert not (tmp_path / "tables.json.tmp").exists()
    doc = json.loads(path.read_text())
    assert doc["tables"][0]["name"] == "felt" and doc["tables"][0]["id"] == G.session_id.hex()


@pytest.mark.parametrize(
    "text", ["{", '{"version": 2, "tables": []}', '{"version": 1, "tables": [{"genesis": "00"}]}']
)
def test_a_broken_tables_file_is_set_aside(tmp_path: Path, text: str) -> None:
    path = tmp_path / "tables.json"
    path.write_text(text)
    assert registry.load(path) == []
    assert not path.exists() and (tmp_path / "tables.json.bad").read_text() == text


def table(**kw: object) -> object:
    app = CrapsApp(TableRules(starting_balance=500, seats=4, min_bet=10))
    return replace(app.initial_state([ME.signing_public]), **kw)  # type: ignore[arg-type]


def test_check_bet_explains_each_refusal_in_one_line() -> None:
    s = table()
    me = ME.signing_public
    assert decode_op(check_bet(s, me, "felt", BetKind.PASS_LINE, 10)).amount == 10  # type: ignore[union-attr]
    cases = [
        (table(), BetKind.FIELD, 501, "insufficient_balance", "balance too small: 501 > 500"),
        (table(), BetKind.FIELD, 5, "below_min_bet", "minimum bet of 10"),
        (table(), BetKind.FIELD, 0, "bad_amount", "positive"),
        (table(phase=Phase.POINT, point=6), BetKind.PASS_LINE, 10, "wrong_phase", "point is 6"),
        (table(stage=Stage.REVEALING), BetKind.FIELD, 10, "wrong_stage", "bets are closed"),
    ]
    for state, kind, amount, reason, text in cases:
        with pytest.raises(TableError, match=text) as exc:
            check_bet(state, me, "felt", kind, amount)  # type: ignore[arg-type]
        assert exc.value.reason == reason and "\n" not in exc.value.message
    with pytest.raises(TableError, match="table join felt"):
        check_bet(s, b"\x09" * 32, "felt", BetKind.FIELD, 10)  # type: ignore[arg-type]
    with pytest.raises(TableError, match="kinds: pass, dont-pass, field"):
        bet_kind("hardways")


def test_roll_planner_commits_only_with_bets_reveals_once_and_retries_late() -> None:
    me = ME.signing_public
    p = RollPlanner(me, G.session_id, ME.sign)
    empty = table()
    assert p.next_ops(empty, 0.0) == []  # nobody bet: no roll
    betting = table(bets=(Bet(me, BetKind.FIELD, 10),))
    [body] = p.next_ops(betting, 0.0)
    op = decode_op(body)
    secret = p.secret_for(0)
    assert op.commitment == commitment(me, 0, secret)  # type: ignore[union-attr]
    assert p.next_ops(betting, 1.0) == []  # in flight
    assert len(p.next_ops(betting, 9.0)) == 1  # not committed after 8 s: again
    revealing = table(
        bets=(Bet(me, BetKind.FIELD, 10),),
        stage=Stage.REVEALING,
        commits=((me, op.commitment),),  # type: ignore[union-attr]
    )
    [reveal] = p.next_ops(revealing, 10.0)
    assert decode_op(reveal).secret == secret  # type: ignore[union-attr]
    # a restarted node (new planner, same key) reveals the same secret
    assert RollPlanner(me, G.session_id, ME.sign).secret_for(0) == secret
    assert RollPlanner(me, b"\x00" * 16, ME.sign).secret_for(0) != secret
