"""Scenario metrics, faults through the scenario runner, and the ``simulate`` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ble_bridge.air.capture import read_pcap
from ble_bridge.air.faults import (
    ClockSkew,
    Crash,
    Delay,
    FaultPlan,
    FaultSpecError,
    Heal,
    LinkDrop,
    Loss,
    Movement,
    Partition,
    parse_faults,
)
from ble_bridge.cli import main as cli_main
from ble_bridge.mesh.router import DROP_REASONS
from ble_bridge.sim.scenario import ScenarioConfig, simulate


def test_full_mesh_delivers_everything_once_with_flood_control() -> None:
    r = simulate(ScenarioConfig(nodes=8, topology="full", duration=60.0, seed=2, rate=0.5))
    assert r.sent > 100
    assert r.delivered == r.expected == r.sent * 7
    assert r.duplicates_delivered == 0
    assert r.duplicates_suppressed > 0
    assert 1.0 <= r.tx_per_delivery < r.naive_flood_tx < 7
    assert 0.0 < r.latency(0.5) <= r.latency(0.95) < 1.0
    assert r.handler_errors == 0 and r.task_errors == 0
    frames_in = r.router_stats["frames_in"]
    outcomes = sum(r.router_stats[k] for k in DROP_REASONS)
    assert outcomes + r.router_stats["fragment_buffered"] + r.router_stats["accepted"] == frames_in
    assert frames_in == r.air_stats["frames_delivered"]


def test_crashes_lose_deliveries_but_keep_the_counters_of_crashed_nodes() -> None:
    plan = FaultPlan((Crash(15.0, 1, restart_after=10.0), Crash(20.0, 2)))
    r = simulate(
        ScenarioConfig(nodes=6, topology="full", duration=50.0, seed=3, rate=0.5, faults=plan)
    )
    kinds = [e[1] for e in r.trace]
    assert kinds.count("crash") == 2 and kinds.count("power_on") == 7
    assert r.delivered <= r.expected  # expected counts the nodes up at each send
    assert r.router_stats["frames_in"] == r.air_stats["frames_delivered"]
    assert r.duplicates_delivered == 0


def test_partition_and_loss_show_up_in_the_metrics() -> None:
    base = ScenarioConfig(
        nodes=10, topology="grid", profile="ideal", duration=40.0, seed=4, rate=0.5
    )
    clean = simulate(base)
    faulty = simulate(
        ScenarioConfig(
            nodes=10,
            topology="grid",
            profile="ideal",
            duration=40.0,
            seed=4,
            rate=0.5,
            faults=FaultPlan(
                (Partition(15.0), Heal(25.0), Loss(10.0, 30.0, 0.1), Delay(10.0, 30.0, 0.05))
            ),
        )
    )
    assert clean.delivery_ratio == 1.0
    assert faulty.delivery_ratio < 0.95
    assert faulty.drops["air_fault_loss"] > 0
    assert faulty.latency(0.5) > clean.latency(0.5)


def test_moving_nodes_break_and_form_links() -> None:
    r = simulate(
        ScenarioConfig(
            nodes=12,
            topology="random",
            profile="pi-tuned",
            duration=120.0,
            seed=5,
            rate=0.1,
            faults=FaultPlan((Movement(speed=(0.02, 0.05)),)),
        )
    )
    assert r.air_stats["link_break_supervision_timeout"] > 0
    assert r.links_up > 12
    assert r.delivered > 0


def test_small_clock_skew_is_tolerated() -> None:
    r = simulate(
        ScenarioConfig(
            nodes=5,
            topology="full",
            profile="ideal",
            duration=30.0,
            seed=6,
            rate=0.5,
            faults=FaultPlan((ClockSkew(1, 30.0), ClockSkew(3, -20.0))),
        )
    )
    assert r.delivered == r.expected and r.drops["stale"] == 0


def test_fault_specs_parse_and_bad_ones_are_explained() -> None:
    plan = parse_faults(
        "partition@10:20, crash:3@5+7, drop@9, drop:2@11, loss:0.1@1:2, delay:0.2@3:4, skew:1=-5, move"
    )
    assert plan.faults == (
        Partition(10.0),
        Heal(20.0),
        Crash(5.0, 3, 7.0),
        LinkDrop(9.0),
        LinkDrop(11.0, 2),
        Loss(1.0, 2.0, 0.1),
        Delay(3.0, 4.0, 0.2),
        ClockSkew(1, -5.0),
        Movement(),
    )
    for bad in ("partition@20:10", "loss:2@1:2", "crash@5", "quake@1"):
        with pytest.raises(FaultSpecError):
            parse_faults(bad)
    with pytest.raises(ValueError):
        plan.validate(3)


def test_simulate_command_prints_json_and_writes_a_capture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pcap = tmp_path / "air.pcap"
    args = (
        "simulate --mode mesh --nodes 5 --topology ring --duration 25 --seed 7 --rate 0.5 --crash 1"
    )
    args += " --partition 12:18 --json"
    code = cli_main([*args.split(), "--capture", str(pcap), "--trace", str(tmp_path / "t.jsonl")])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sent"] > 0 and out["delivered"] > 0 and out["duplicates_delivered"] == 0
    assert {f["at"] for f in out["config"]["faults"] if "groups" in f} == {12.0}
    assert len(list(read_pcap(pcap))) == out["frames"]
    events = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    kinds = {e[1] for e in events}
    assert {"frame", "crash", "partition", "heal", "deliver"} <= kinds


def test_simulate_command_table_and_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        cli_main(
            ["simulate", "--mode", "mesh", "--nodes", "4", "--duration", "20", "--profile", "ideal"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "tx per delivered broadcast" in out and "latency p50 / p95" in out
    assert cli_main(["simulate", "--faults", "crash:9@5"]) == 2
    assert "nodes are 0..7" in capsys.readouterr().err
