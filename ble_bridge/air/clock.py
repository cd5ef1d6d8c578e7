"""Virtual time for asyncio: the real node code runs, the clock jumps instead of sleeping.

:class:`VirtualClockLoop` is a ``SelectorEventLoop`` whose ``time()`` is a simulated clock.
When no callback is ready, the selector is polled without blocking and the clock jumps to
the next timer, so ten simulated minutes take as long as the work done in them. Random
numbers come from :class:`Seeds`, which derives one independent ``random.Random`` per named
component from one seed, whatever order components ask in.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import selectors
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

T = TypeVar("T")

SIM_EPOCH = 1_790_000_000.0
"""Wall-clock seconds (Unix time) that virtual time 0 stands for: a fixed date, never now."""


class IdleForeverError(RuntimeError):
    """The virtual loop has nothing ready, no timer and no real I/O: it would wait forever."""


class Seeds:
    """One seed, split deterministically into independent generators by name."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def derive(self, *names: object) -> int:
        """A 64-bit seed for a component; depends only on the root seed and the names."""
        text = "/".join([str(self.seed), *(str(n) for n in names)])
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")

    def rng(self, *names: object) -> random.Random:
        return random.Random(self.derive(*names))

    def bytes(self, n: int, *names: object) -> bytes:
        """``n`` deterministic bytes for a component (e.g. an identity seed)."""
        out = b""
        counter = 0
        while len(out) < n:
            text = "/".join([str(self.seed), *(str(x) for x in names), str(counter)])
            out += hashlib.sha256(text.encode()).digest()
            counter += 1
        return out[:n]


class _VirtualSelector(selectors.BaseSelector):
    """Wraps a real selector; a wait becomes a non-blocking poll plus a clock jump."""

    def __init__(self) -> None:
        self._real = selectors.DefaultSelector()
        self.loop: VirtualClockLoop | None = None

    def register(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or self.loop is None or timeout == 0:
            return ready
        if self.loop.executor_jobs > 0:
            # a worker thread will wake us through the self-pipe: executor work takes
            # no virtual time, so the run stays deterministic
            return self._real.select(None)
        if timeout is None:
            raise IdleForeverError("virtual loop is idle with no timer scheduled")
        if timeout > 0:
            self.loop.advance(timeout)
        return ready

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Mapping[FileDescriptorLike, selectors.SelectorKey]:
        return self._real.get_map()


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on simulated time; ``seeds`` gives each component its generator."""

    def __init__(self, *, seed: int = 0, start: float = 0.0) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self._now = start
        self.seeds = Seeds(seed)
        self.executor_jobs = 0

    def run_in_executor(  # type: ignore[override]
        self, executor: Any, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        """As usual, but virtual time stands still until the job is done."""
        fut = super().run_in_executor(executor, func, *args)
        self.executor_jobs += 1
        fut.add_done_callback(self._job_done)
        return fut

    def _job_done(self, _: asyncio.Future[Any]) -> None:
        self.executor_jobs -= 1

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward (only the selector and tests call this)."""
        if seconds < 0:
            raise ValueError("virtual time never runs backwards")
        self._now += seconds


def run_virtual(coro: Coroutine[Any, Any, T], *, seed: int = 0, start: float = 0.0) -> T:
    """Run ``coro`` to completion on a fresh :class:`VirtualClockLoop` and close the loop."""
    loop = VirtualClockLoop(seed=seed, start=start)
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    finally:
        try:
            _cancel_leftovers(loop)
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _cancel_leftovers(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())


def current_seeds() -> Seeds:
    """The running virtual loop's :class:`Seeds` (a loop of another kind gets seed 0)."""
    loop = asyncio.get_running_loop()
    seeds = getattr(loop, "seeds", None)
    return seeds if isinstance(seeds, Seeds) else Seeds(0)
