"""The housekeeping trim (ble_bridge/memory.py): when it is due, and that it gives memory
back on glibc (a real heap, real RSS from /proc)."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from ble_bridge.memory import Trimmer, can_trim, trim


def test_trimmer_runs_every_interval_from_explicit_now() -> None:
    calls: list[int] = []

    def do() -> tuple[int, bool]:
        calls.append(1)
        return 0, len(calls) % 2 == 1

    t = Trimmer(60.0)
    assert not t.run(100.0, do)  # the first one a full interval after start
    assert not t.run(159.9, do)
    assert t.run(160.0, do)
    assert not t.run(219.0, do)
    assert t.run(220.5, do)
    assert (t.runs, t.released, len(calls)) == (2, 1, 2)
    off = Trimmer(0.0)
    assert not any(off.run(float(now), do) for now in range(0, 10_000, 50))
    assert len(calls) == 2


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_trim_gives_freed_small_blocks_back_on_glibc() -> None:
    """Many small blocks (below the mmap threshold, so they live in the arena) freed in an
    order that leaves a live one at the top: plain free() keeps the RSS, malloc_trim(0)
    returns the free pages inside the arena."""
    assert can_trim()
    trim()
    base = _rss_kib()
    blocks = [bytearray(1000) for _ in range(60_000)]  # ~60 MB of 1 kB blocks
    keep = blocks[-1]
    grown = _rss_kib()
    assert grown - base > 40_000
    del blocks[:-1]
    held = _rss_kib()
    found, released = trim(lambda: 0)
    after = _rss_kib()
    assert found == 0 and released
    assert held - after > 30_000, (base, grown, held, after)
    assert keep[0] == 0
