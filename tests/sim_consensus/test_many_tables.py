"""Several tables sharing one mesh (ble_bridge.sim.many_tables): every table commits and
safety holds at every table, together and alone. Small sizes here; the full 100-node
scenario (12 tables of 8, 4 relays) in the slow tier. Throughput and latency shares are
measured by bench/consensus.py (tables12), not asserted here."""

from __future__ import annotations

import random

import pytest

from ble_bridge.sim.many_tables import (
    ManyTablesConfig,
    ManyTablesResult,
    TableStats,
    hops_between,
    run_many_tables,
)


def _check(r: ManyTablesResult) -> None:
    cfg = r.config
    assert r.safe
    for k in range(cfg.tables):
        seats = set(range(k * cfg.seats, (k + 1) * cfg.seats))
        for run in (r.together[k], r.alone[k]):
            assert run.heights > 0
            assert run.committers == seats  # every node of the table, no relay, no other table
            assert set(run.blocks) == set(range(1, run.heights + 1))
        assert r.together[k].latencies  # light-load ops committed at their submitters
        assert r.alone[k].ops > 0 and r.together[k].ops > 0
        assert 1 <= r.together[k].diameter <= cfg.tables * cfg.seats + cfg.relays


def test_three_small_tables_and_a_relay_all_commit_safely() -> None:
    cfg = ManyTablesConfig(
        tables=3, seats=4, relays=1, seed=2, warmup=15.0, light=8.0, saturated=8.0, slot=6.0
    )
    _check(run_many_tables(cfg))


@pytest.mark.slow
def test_twelve_tables_of_eight_on_a_hundred_nodes_all_commit_safely() -> None:
    _check(run_many_tables(ManyTablesConfig(seed=1)))


def test_safety_sees_two_blocks_at_one_height_and_foreign_ops() -> None:
    stats = TableStats(blocks={1: {b"a"}, 2: {b"b"}})
    assert stats.safe
    stats.blocks[2].add(b"c")
    assert not stats.safe
    assert not TableStats(blocks={1: {b"a"}}, foreign=1).safe


def test_hops_between_members_may_pass_through_others() -> None:
    pairs = [(0, 5), (5, 1), (1, 2)]
    assert hops_between(pairs, [0, 1, 2]) == 3
    assert hops_between(pairs, [1, 2]) == 1
    assert hops_between([(0, 1)], [0, 2]) > 2  # unreachable: larger than any path
    rng = random.Random(1)
    ring = [(i, (i + 1) % 6) for i in range(6)]
    rng.shuffle(ring)
    assert hops_between(ring, range(6)) == 3
