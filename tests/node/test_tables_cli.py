"""The table commands a person types, against a real ``ble-bridge run --transport sim``
process over its control socket: every command, its ``--json``, each clear error (exit 2),
and the runtime tables kept across a restart in ``tables.json``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sim_process import SLACK, Running

from ble_bridge.cli import main

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Running]:
    r = Running(tmp_path)
    r.start()
    yield r
    r.kill()


def run(capsys: pytest.CaptureFixture[str], node: Running, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--socket", str(node.sock)])
    out, err = capsys.readouterr()
    return code, out, err


def until(check: object, timeout: float) -> None:
    end = time.monotonic() + timeout * SLACK
    while time.monotonic() < end:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def refused(capsys: pytest.CaptureFixture[str], node: Running, *argv: str) -> str:
    code, out, err = run(capsys, node, *argv)
    assert code == 2, (argv, code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ble-bridge: "), err
    return lines[0]


def test_every_table_command_its_json_and_its_clear_errors(
    node: Running, capsys: pytest.CaptureFixture[str]
) -> None:
    def listed() -> list[dict[str, object]]:
        code, out, _ = run(capsys, node, "table", "list", "--json")
        assert code == 0
        rows: list[dict[str, object]] = json.loads(out)
        return rows

    # the simulated neighbour's runtime table is announced and heard
    until(lambda: any(r["name"] == "sim-open" for r in listed()), 20)
    row = next(r for r in listed() if r["name"] == "sim-open")
    assert row["seats_taken"] == 1 and row["seats"] == 8 and row["players"] == 0
    assert row["hops"] == 1 and row["opener"] == "sim-peer-1" and row["here"] is False
    code, out, _ = run(capsys, node, "table", "list")
    assert code == 0 and "sim-open" in out and "1/8" in out and "sim-peer-1" in out
    assert out.splitlines()[0].split()[:7] == [
        "NAME",
        "OPENER",
        "SEATS",
        "PLAYERS",
        "HEIGHT",
        "HOPS",
        "HEARD",
    ]

    # open: a table of our own, and the errors of opening
    code, out, _ = run(capsys, node, "table", "open", "felt", "--seats", "3", "--min-bet", "10")
    assert code == 0 and out.startswith("opened table felt") and "3 seats" in out
    code, out, _ = run(capsys, node, "table", "open", "felt2", "--json")
    assert code == 0 and json.loads(out)["seats"] == 8 and json.loads(out)["seated"] is True
    assert "already sit at a table named 'felt'" in refused(capsys, node, "table", "open", "felt")
    assert "seats must be 1..16" in refused(capsys, node, "table", "open", "x", "--seats", "17")
    assert "spaces" in refused(capsys, node, "table", "open", "a b")

    # join: unknown, then the neighbour's table, then again
    assert "no table 'nowhere' heard" in refused(capsys, node, "table", "join", "nowhere")
    code, out, err = run(capsys, node, "table", "join", "sim-open", "--timeout", str(30 * SLACK))
    assert code == 0, err
    assert out.startswith("seated at sim-open at height") and "balance 1000" in out
    assert "already sit at 'sim-open'" in refused(capsys, node, "table", "join", "sim-open")
    code, out, _ = run(capsys, node, "table", "join", "corner", "--open", "--json")
    assert code == 0 and json.loads(out)["seated"] and json.loads(out)["seats_taken"] == 1
    code, out, _ = run(capsys, node, "table", "show", "sim-open", "--json")
    shown = json.loads(out)
    assert shown["seated"] and shown["seats_taken"] == 2 and len(shown["validators"]) == 2
    assert {v["nickname"] for v in shown["validators"]} >= {"sim-peer-1"}
    assert shown["phase"] == "come-out" and shown["health"] in ("active", "catching_up")
    code, out, _ = run(capsys, node, "table", "show", "sim-open")
    assert code == 0 and "you are seated" in out and "seat sim-peer-1" in out

    # bet: committed, and every clear error before submitting. While the dice roll the CLI
    # refuses a bet with "bets are closed" (right), so the test tries again, as a player would.
    def bet_when_open(*args: str) -> tuple[int, str, str]:
        got: list[tuple[int, str, str]] = []

        def placed() -> bool:
            got.append(run(capsys, node, "bet", "felt", *args))
            return got[-1][0] == 0 or "bets are closed" not in got[-1][2]

        until(placed, 30)
        return got[-1]

    code, out, err = bet_when_open("field", "10", "--json")
    assert code == 0, err
    placed = json.loads(out)
    assert placed["status"] == "committed" and placed["height"] >= 1
    assert "unknown bet kind 'hard8'" in refused(capsys, node, "bet", "felt", "hard8", "10")
    assert "do not sit at a table 'nope'" in refused(capsys, node, "bet", "nope", "pass", "1")
    line = refused(capsys, node, "bet", "felt", "field", "5000")
    assert "balance too small" in line or "bets are closed" in line
    until(lambda: "balance too small" in refused(capsys, node, "bet", "felt", "field", "5000"), 30)
    until(lambda: "minimum bet of 10" in refused(capsys, node, "bet", "felt", "field", "5"), 30)

    # roll until a point is set: pass bets are then not allowed in this phase
    def point_set() -> bool:
        _code, out, _ = run(capsys, node, "table", "show", "felt", "--json")
        t = json.loads(out)
        if t["phase"] == "point":
            return True
        if t["stage"] == "betting" and not t["bets"]:
            run(capsys, node, "bet", "felt", "pass", "10", "--timeout", "0")
        return False

    until(point_set, 60)
    line = refused(capsys, node, "bet", "felt", "pass", "10")
    assert "come-out roll only" in line or "bets are closed" in line

    # balance and history, plain and JSON
    code, out, _ = run(capsys, node, "balance")
    assert code == 0 and "felt:" in out and "sim-open: 1000" in out
    code, out, _ = run(capsys, node, "balance", "felt", "--json")
    [bal] = json.loads(out)
    assert bal["table"] == "felt" and bal["balance"] + bal["on_table"] <= 1000 + 10 * 60
    until(lambda: json.loads(run(capsys, node, "history", "felt", "--json")[1])["rolls"], 30)
    code, out, _ = run(capsys, node, "history", "felt")
    assert code == 0 and "rolls" in out and "=" in out
    assert "do not sit" in refused(capsys, node, "history", "nope")
    assert "do not sit" in refused(capsys, node, "table", "show", "nope")
    assert "do not sit" in refused(capsys, node, "balance", "nope")

    # leave: the neighbour's table (committed), and our own solo table (refused)
    code, out, err = run(capsys, node, "table", "leave", "sim-open", "--timeout", str(30 * SLACK))
    assert code == 0 and out.startswith("left sim-open at height"), err
    assert "last seat" in refused(capsys, node, "table", "leave", "felt")
    until(lambda: not any(r["name"] == "sim-open" and r["here"] for r in listed()), 10)

    # status lists the runtime tables too; an unreachable socket is exit 1
    code, out, _ = run(capsys, node, "status")
    assert code == 0 and "session felt" in out
    assert main(["table", "list", "--socket", str(node.tmp / "none.sock")]) == 1
    capsys.readouterr()

    # a restart keeps the tables we opened (tables.json + SQLite)
    code, out, _ = run(capsys, node, "table", "show", "felt", "--json")
    height = json.loads(out)["height"]
    doc = json.loads((node.tmp / "data" / "tables.json").read_text())
    assert sorted(t["name"] for t in doc["tables"]) == ["corner", "felt", "felt2"]
    assert b"Traceback" not in node.stop()
    node.start()
    code, out, _ = run(capsys, node, "table", "show", "felt", "--json")
    assert code == 0 and json.loads(out)["height"] >= height and json.loads(out)["seated"]
