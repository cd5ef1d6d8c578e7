"""Where memory grows: tracemalloc snapshots of a running node, the top growth logged.

Off unless ``BLE_BRIDGE_TRACEMALLOC=<seconds>`` is set in the node's environment (tracing
costs CPU and memory of its own). Then the first snapshot is taken after one interval (the
node has started and formed its links), and every interval after that the ``top`` source
lines whose allocations grew most since that first snapshot are logged, one line each:
``INFO tracemalloc rank=1 grew_kib=… count=… total_kib=… where=file.py:123``. Lines that
keep growing over a long run are what to bound. The ``tracemalloc_total`` line also gives
SQLite's own allocations (``sqlite_kib``, its page cache), which tracemalloc cannot see.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tracemalloc

from .events import kv
from .store import sqlite_memory_used

log = logging.getLogger(__name__)

ENV = "BLE_BRIDGE_TRACEMALLOC"


def interval_from_env() -> float | None:
    try:
        value = float(os.environ.get(ENV, ""))
    except ValueError:
        return None
    return value if value > 0 else None


def growth_lines(
    before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, top: int = 10
) -> list[str]:
    """The ``top`` source lines by growth from ``before`` to ``after``, as event lines."""
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    diff = after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "lineno")
    out = []
    for rank, stat in enumerate((d for d in diff if d.size_diff > 0), start=1):
        if rank > top:
            break
        frame = stat.traceback[0]
        out.append(
            kv(
                "tracemalloc",
                rank=rank,
                grew_kib=round(stat.size_diff / 1024, 1),
                count=stat.count_diff,
                total_kib=round(stat.size / 1024, 1),
                where=f"{frame.filename}:{frame.lineno}",
            )
        )
    return out


async def trace_forever(interval: float, top: int = 10) -> None:
    """Snapshot every ``interval`` s; log the top growth since the first snapshot."""
    if not tracemalloc.is_tracing():
        tracemalloc.start(1)
    await asyncio.sleep(interval)
    first = tracemalloc.take_snapshot()
    while True:
        await asyncio.sleep(interval)
        now = tracemalloc.take_snapshot()
        current, peak = tracemalloc.get_traced_memory()
        sqlite = sqlite_memory_used()  # C allocations tracemalloc does not see
        log.info(
            kv(
                "tracemalloc_total",
                traced_kib=current // 1024,
                peak_kib=peak // 1024,
                sqlite_kib=None if sqlite is None else sqlite // 1024,
            )
        )
        for line in growth_lines(first, now, top):
            log.info(line)
