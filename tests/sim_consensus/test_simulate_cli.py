"""`ble-bridge simulate` in its default (consensus) mode: the README's first command."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ble_bridge.cli import main as cli_main

LAST_LINE = re.compile(
    r"simulate heights=(\d+) ops=(\d+) p50_ms=(\d+\.\d) p95_ms=(\d+\.\d) safety=(ok|violated)"
)


def test_simulate_ends_with_the_machine_readable_line_and_writes_plot_and_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot, trace = tmp_path / "latency.png", tmp_path / "trace.jsonl"
    args = ["simulate", "--duration", "25", "--seed", "3", "--plot", str(plot)]
    assert cli_main([*args, "--trace", str(trace)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    m = LAST_LINE.fullmatch(last)
    assert m is not None, last
    assert int(m[1]) >= 3 and int(m[2]) >= int(m[1]) and m[5] == "ok"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    assert {"power_on", "link_up", "frame", "commit"} <= {e[1] for e in events}
    commits = [e for e in events if e[1] == "commit"]  # [time, "commit", node, height, ...]
    assert int(m[1]) <= max(e[3] for e in commits) <= int(m[1]) + 1


def test_simulate_json_carries_the_same_last_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["simulate", "--nodes", "4", "--duration", "20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert LAST_LINE.fullmatch(out["last_line"])


CHURN_LINE = re.compile(LAST_LINE.pattern + r" joins=(\d+) leaves=(\d+) removals=(\d+)")


def test_simulate_churn_counts_joins_leaves_and_the_removal_of_a_crashed_seat(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # seed 2: one node crashes for good after it sat down; the others remove it
    args = ["simulate", "--churn", "--seed", "2", "--duration", "120", "--crash", "1"]
    assert cli_main([*args, "--restart-after", "0"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    m = CHURN_LINE.fullmatch(last)
    assert m is not None, last
    assert m[5] == "ok" and int(m[1]) > 50
    # 7 sit down after the opener, one of the 2 who leave sits down again
    assert (int(m[6]), int(m[7]), int(m[8])) == (8, 2, 1)


def test_simulate_churn_is_deterministic_and_refuses_what_it_cannot_do_yet(
    capsys: pytest.CaptureFixture[str],
) -> None:
    runs = []
    for _ in range(2):
        assert cli_main(["simulate", "--churn", "--nodes", "5", "--duration", "60", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        runs.append(out["last_line"])
        assert CHURN_LINE.fullmatch(out["last_line"]) and out["tables"] == 1
    assert runs[0] == runs[1]
    assert cli_main(["simulate", "--churn", "--islands", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "ble-bridge simulate: --churn does not combine with --islands: islands play one "
        "pre-arranged table across gateways"
    ]
    assert cli_main(["simulate", "--churn", "--byzantine", "5", "--nodes", "5"]) == 2
    assert "--byzantine must be within 0..--nodes - 1" in capsys.readouterr().err
    # a set-change attack has no meaning on a pre-arranged table
    assert cli_main(["simulate", "--byzantine", "1", "--behaviour", "sponsor"]) == 2
    assert "--behaviour sponsor attacks set changes: it needs --churn" in capsys.readouterr().err


def test_simulate_churn_with_byzantine_nodes_reports_them_and_stays_safe(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["simulate", "--churn", "--nodes", "5", "--duration", "45", "--json"]
    for behaviour in ("equivocate", "forged-join"):
        assert cli_main([*args, "--byzantine", "1", "--behaviour", behaviour]) == 0
        out = json.loads(capsys.readouterr().out)
        assert CHURN_LINE.fullmatch(out["last_line"]) and " safety=ok " in out["last_line"]
        assert list(out["byzantine"].values()) == [behaviour] and out["violations"] == []
    assert out["attacks"]["forged_join_requests"] > 0
