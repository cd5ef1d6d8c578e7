"""Islands joined through the simulated broker, in virtual time (deterministic by seed)."""

from __future__ import annotations

import re

import pytest

from ble_bridge.air.broker import SimBroker, topic_matches
from ble_bridge.cli import main as cli_main
from ble_bridge.sim.islands import IslandsConfig, IslandsRun, simulate_islands


def run(sizes: tuple[int, ...], *, seed: int = 1, duration: float = 60.0, **kw: object):  # type: ignore[no-untyped-def]
    return simulate_islands(
        IslandsRun(
            islands=IslandsConfig(sizes=sizes, seed=seed, warmup=3.0),
            duration=duration,
            **kw,  # type: ignore[arg-type]
        )
    )


def test_two_islands_commit_one_table_deterministically() -> None:
    a = run((4, 4), duration=30.0)
    b = run((4, 4), duration=30.0)
    assert a.safe
    assert a.heights >= 10
    assert a.uplink_frames > 0
    assert a.last_line() == b.last_line()
    assert a.last_line().endswith(f"islands=2 uplink_frames={a.uplink_frames}")
    assert min(a.final_heights.values()) >= a.heights - 2  # both islands, not one


@pytest.mark.parametrize("seed", [1, 3])
def test_an_island_with_a_quorum_keeps_going_and_the_other_pauses(seed: int) -> None:
    r = run((6, 2), seed=seed, outage=(15.0, 28.0))
    assert r.safe
    assert r.island_gain(0, "outage", "heal") >= 2  # 6 of 8 is a quorum
    assert r.island_gain(1, "outage", "heal") <= 1  # 2 of 8 is not (one in flight at most)
    assert r.island_gain(1, "heal", "end") >= 3  # healed: caught up and committing
    assert min(r.final_heights.values()) >= r.heights - 2


def test_four_and_four_both_pause_and_heal() -> None:
    r = run((4, 4), outage=(15.0, 28.0))
    assert r.safe
    assert r.island_gain(0, "outage", "heal") <= 1
    assert r.island_gain(1, "outage", "heal") <= 1
    assert r.island_gain(0, "heal", "end") >= 3
    assert r.island_gain(1, "heal", "end") >= 3


def test_round_timeouts_adapt_to_the_uplink_latency() -> None:
    """The engines measure vote delays over every link, the uplink included: across an
    intercontinental uplink (80 ms one way) they measure more, and time out later, than
    across a city one (15 ms), and the table commits on both."""
    import statistics

    city = run((4, 4), duration=40.0, internet="city")
    far = run((4, 4), duration=40.0, internet="intercontinental")
    assert city.safe and far.safe and city.heights >= 10 and far.heights >= 10
    d_city = statistics.median(d for d in city.vote_delays.values() if d is not None)
    d_far = statistics.median(d for d in far.vote_delays.values() if d is not None)
    assert d_far > d_city + 0.04  # the extra 65 ms one way shows in the measured delay
    t_city = statistics.median(city.vote_timeouts.values())
    t_far = statistics.median(far.vote_timeouts.values())
    assert t_far > t_city


def test_topic_filters() -> None:
    assert topic_matches("a/+/c", "a/b/c")
    assert topic_matches("a/#", "a/b/c")
    assert not topic_matches("a/+", "a/b/c")
    assert not topic_matches("a/b", "a/b/c")


def test_broker_forgets_retained_when_it_goes_down() -> None:
    import asyncio
    import random

    loop = asyncio.new_event_loop()
    try:
        b = SimBroker(loop, random.Random(0))
        b.retained["x"] = b"y"
        b.go_down()
        assert not b.retained and not b.up
        assert b.connect(None, None) is None  # type: ignore[arg-type]
    finally:
        loop.close()


ISLANDS_LINE = re.compile(
    r"simulate heights=(\d+) ops=(\d+) p50_ms=(\d+\.\d) p95_ms=(\d+\.\d) safety=(ok|violated)"
    r" islands=(\d+) uplink_frames=(\d+)"
)


def test_simulate_islands_cli_last_line(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["simulate", "--islands", "2", "--split", "3:2", "--duration", "20", "--seed", "2"]
    assert cli_main(args) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    m = ISLANDS_LINE.fullmatch(last)
    assert m is not None, last
    assert int(m[1]) >= 3 and m[5] == "ok" and m[6] == "2" and int(m[7]) > 0


@pytest.mark.parametrize(
    "extra",
    [
        ["--split", "4:x"],
        ["--islands", "3", "--split", "4:4"],
        ["--split", "4:4", "--gateways", "5"],
        ["--split", "4:4", "--broker-outage", "9:3"],
        ["--split", "4:4", "--byzantine", "1"],
    ],
)
def test_simulate_islands_bad_options(extra: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["simulate", *extra]) == 2
    assert "ble-bridge simulate:" in capsys.readouterr().err
