"""The service's event lines (ble_bridge/events.py): format and what a tick reports."""

from __future__ import annotations

import logging

from ble_bridge.events import LogSection, NodeEvents, TableSeen, kv


def _table(height: int, health: str = "active") -> TableSeen:
    return TableSeen("lab-table", height, 0, "ab" * 32, health, 4, 4, committed_ops=height * 2)


def test_kv_quotes_only_what_needs_it() -> None:
    assert kv("link_up", link=3, role="central", mtu=247) == "link_up link=3 role=central mtu=247"
    assert kv("x", error="Timeout: no reply", peer=None, ok=True, s=1.50) == (
        'x error="Timeout: no reply" peer=- ok=yes s=1.5'
    )
    assert kv("x", a="k=v", b="") == 'x a="k=v" b=""'


def test_health_changes_are_logged_once_each_and_worse_states_warn() -> None:
    ev = NodeEvents(LogSection(commit_every=0, drops_every_s=0))
    out = ev.tick(0.0, "isolated", 0, [], dict)
    assert out == [(logging.INFO, "health to=isolated was=- links=0")]
    assert ev.tick(1.0, "isolated", 0, [], dict) == []
    assert ev.tick(2.0, "healthy", 2, [], dict) == [
        (logging.INFO, "health to=healthy was=isolated links=2")
    ]
    assert ev.tick(3.0, "partitioned", 1, [], dict) == [
        (logging.WARNING, "health to=partitioned was=healthy links=1")
    ]


def test_a_table_is_joined_at_its_first_commit_and_every_nth_height_is_logged() -> None:
    ev = NodeEvents(LogSection(commit_every=10, drops_every_s=0))
    ev.tick(0.0, "healthy", 1, [_table(5)], dict)  # active at start: only the grace period
    out = ev.tick(2.0, "healthy", 1, [_table(6)], dict)
    assert out == [
        (logging.INFO, "table_joined table=lab-table height=6 in_contact=4 validators=4 after_s=2")
    ]
    assert ev.tick(4.0, "healthy", 1, [_table(9)], dict) == []
    out = ev.tick(6.0, "healthy", 1, [_table(12)], dict)  # crossed 10
    assert out == [
        (logging.INFO, f"commit table=lab-table height=12 round=0 state={'ab' * 8} ops=24")
    ]
    assert ev.tick(8.0, "healthy", 1, [_table(19)], dict) == []
    assert len(ev.tick(9.0, "healthy", 1, [_table(31)], dict)) == 1  # one line, not two
    ev.tick(10.0, "healthy", 1, [_table(31, "partitioned")], dict)
    assert ev.tick(11.0, "healthy", 1, [_table(32)], dict) == []  # joined once


def test_drops_are_summed_by_reason_per_window_and_read_only_when_due() -> None:
    ev = NodeEvents(LogSection(commit_every=0, drops_every_s=60.0))
    counts = {"mesh_malformed": 5, "bridge_inbox_full": 1}
    reads = []

    def read() -> dict[str, int]:
        reads.append(1)
        return dict(counts)

    ev.tick(0.0, "healthy", 1, [], read)  # the baseline
    counts["mesh_malformed"] = 9
    counts["mesh_stale"] = 2
    assert ev.tick(30.0, "healthy", 1, [], read) == []
    assert len(reads) == 1
    out = ev.tick(61.0, "healthy", 1, [], read)
    assert out == [(logging.INFO, "drops window_s=61 total=6 mesh_malformed=4 mesh_stale=2")]
    assert ev.tick(125.0, "healthy", 1, [], read) == []  # nothing new: no line
    assert len(reads) == 3
