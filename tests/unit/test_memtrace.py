"""memtrace: the growth report names the line that allocated, and the env switch parses."""

from __future__ import annotations

import sqlite3
import tracemalloc
from pathlib import Path

import pytest

from ble_bridge import memtrace
from ble_bridge.store import sqlite_memory_used


def test_growth_lines_name_the_line_that_grew() -> None:
    tracemalloc.start(1)
    try:
        before = tracemalloc.take_snapshot()
        kept = [bytes(1000) + bytes([i % 256]) for i in range(2000)]  # ~2 MB on this line
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    lines = memtrace.growth_lines(before, after, top=3)
    assert len(kept) == 2000 and 1 <= len(lines) <= 3
    first = lines[0].split()
    assert first[0] == "tracemalloc" and first[1] == "rank=1"
    line = next(
        i for i, ln in enumerate(Path(__file__).read_text().splitlines(), 1) if "~2 MB" in ln
    )
    assert first[-1] == f"where={__file__}:{line}"
    assert float(first[2].removeprefix("grew_kib=")) > 1900


@pytest.mark.parametrize(("value", "want"), [("60", 60.0), ("", None), ("x", None), ("0", None)])
def test_interval_from_env(monkeypatch: pytest.MonkeyPatch, value: str, want: float | None) -> None:
    monkeypatch.setenv(memtrace.ENV, value)
    assert memtrace.interval_from_env() == want


def test_sqlite_memory_counts_what_a_connection_holds() -> None:
    before = sqlite_memory_used()
    if before is None:
        pytest.skip("this SQLite does not expose sqlite3_memory_used")
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE t (x BLOB)")
    con.executemany("INSERT INTO t VALUES (?)", [(bytes(1000),)] * 500)
    during = sqlite_memory_used()
    con.close()
    assert during is not None and during - before > 400_000
