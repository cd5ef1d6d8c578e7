"""The virtual-time event loop and the seed splitter."""

from __future__ import annotations

import asyncio
import time

import pytest

from ble_bridge.air.clock import IdleForeverError, Seeds, VirtualClockLoop, run_virtual


def test_sleeping_ten_minutes_takes_no_wall_time() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.sleep(600.0)
        return loop.time() - t0

    wall = time.perf_counter()
    assert run_virtual(main()) == pytest.approx(600.0)
    assert time.perf_counter() - wall < 1.0


def test_timers_fire_in_time_order_at_their_virtual_time() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        fired: list[tuple[str, float]] = []

        def fire(name: str) -> None:
            fired.append((name, loop.time()))

        for name, delay in (("c", 3.0), ("a", 1.0), ("b", 2.0)):
            loop.call_later(delay, fire, name)
        await asyncio.sleep(5.0)
        return fired

    assert run_virtual(main(), start=100.0) == [("a", 101.0), ("b", 102.0), ("c", 103.0)]


def test_timeouts_use_virtual_time() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(30.0):
                await asyncio.Event().wait()
        return loop.time() - t0

    assert run_virtual(main()) == pytest.approx(30.0)


def test_waiting_on_nothing_is_an_error_not_a_hang() -> None:
    async def main() -> None:
        await asyncio.get_running_loop().create_future()

    with pytest.raises(IdleForeverError):
        run_virtual(main())


def test_clock_never_runs_backwards() -> None:
    loop = VirtualClockLoop()
    try:
        with pytest.raises(ValueError):
            loop.advance(-1.0)
    finally:
        loop.close()


def test_seeds_split_by_name_independent_of_request_order() -> None:
    s = Seeds(42)
    first = s.rng("air").random()
    s.rng("node", 3).random()
    assert Seeds(42).rng("air").random() == first
    assert Seeds(43).rng("air").random() != first
    assert s.rng("node", 1).random() != s.rng("node", 2).random()
    assert s.bytes(32, "identity", 0) == Seeds(42).bytes(32, "identity", 0)
    assert len(s.bytes(100, "x")) == 100


def test_executor_work_takes_no_virtual_time_and_keeps_order() -> None:
    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        events: list[tuple[str, float]] = []
        loop.call_later(0.001, lambda: events.append(("timer", loop.time())))
        await asyncio.to_thread(time.sleep, 0.05)
        events.append(("thread", loop.time()))
        await asyncio.sleep(1.0)
        return events

    assert run_virtual(main()) == [("thread", 0.0), ("timer", 0.001)]
