"""Give freed heap back to the kernel: a full ``gc.collect()`` then glibc's ``malloc_trim(0)``.

A node's Python heap levels off once its caches are bounded, but its RSS keeps what the
allocator holds: after a busy minute (a catch-up, a burst of frames) the freed blocks stay
in glibc's arenas and RSS never comes down, so every load spike leaves a step. Every
``[node] memory_trim_s`` the node's housekeeping collects cycles (objects freed now instead
of at some later generation-2 pass) and asks glibc to return free pages at the top of each
arena and whole free pages inside them (``malloc_trim(0)``). Only on glibc: on musl or
elsewhere the trim is skipped and only the collection runs.

Sans-IO: :class:`Trimmer` decides when, from an explicit ``now``; :func:`trim` does it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import platform
from collections.abc import Callable
from dataclasses import dataclass

_Trim = Callable[[int], int]


def _load_malloc_trim() -> _Trim | None:
    """glibc's ``malloc_trim``, or None when this is not glibc (musl has none)."""
    if platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_MALLOC_TRIM = _load_malloc_trim()


def can_trim() -> bool:
    """Is glibc's ``malloc_trim`` available in this process?"""
    return _MALLOC_TRIM is not None


def trim(collect: Callable[[], int] = gc.collect) -> tuple[int, bool]:
    """Collect garbage, then give free heap back: (objects collected, whether glibc
    released any memory)."""
    found = collect()
    released = _MALLOC_TRIM(0) == 1 if _MALLOC_TRIM is not None else False
    return found, released


@dataclass(slots=True)
class Trimmer:
    """When the next trim is due: every ``every`` seconds of ``now`` (0 or less: never)."""

    every: float
    _next: float | None = None
    runs: int = 0
    released: int = 0  # runs in which glibc returned memory

    def due(self, now: float) -> bool:
        if self.every <= 0:
            return False
        if self._next is None:  # the first one a full interval after start
            self._next = now + self.every
            return False
        if now < self._next:
            return False
        self._next = now + self.every
        return True

    def run(self, now: float, do: Callable[[], tuple[int, bool]] = trim) -> bool:
        """Trim if due; True when it ran."""
        if not self.due(now):
            return False
        _, released = do()
        self.runs += 1
        self.released += int(released)
        return True
