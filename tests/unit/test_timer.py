"""TimerSlot: one handle following a moving deadline, its callback guarded (virtual clock)."""

from __future__ import annotations

import asyncio

from ble_bridge.air.clock import run_virtual
from ble_bridge.timer import TimerSlot


def test_one_handle_follows_the_deadline_and_fires_once() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        fired: list[float] = []
        slot = TimerSlot(lambda: fired.append(loop.time()), lambda exc: None)
        slot.arm(loop, 5.0)
        slot.arm(loop, 5.0)  # unchanged: the same handle
        assert slot.at == 5.0
        slot.arm(loop, 2.0)  # moved earlier: the old one is cancelled
        await asyncio.sleep(10.0)
        assert slot.at is None
        slot.arm(loop, 20.0)
        slot.arm(loop, None)  # nothing to wait for
        await asyncio.sleep(20.0)
        return fired

    assert run_virtual(main()) == [2.0]


def test_a_failing_callback_goes_to_on_error_and_the_slot_can_be_armed_again() -> None:
    async def main() -> tuple[list[str], list[float]]:
        loop = asyncio.get_running_loop()
        errors: list[str] = []
        fired: list[float] = []

        def callback() -> None:
            fired.append(loop.time())
            if len(fired) == 1:
                raise RuntimeError("boom")

        slot = TimerSlot(callback, lambda exc: errors.append(str(exc)))
        slot.arm(loop, 1.0)
        await asyncio.sleep(2.0)
        slot.arm(loop, 3.0)
        await asyncio.sleep(2.0)
        slot.arm(loop, 9.0)
        slot.cancel()
        await asyncio.sleep(10.0)
        return errors, fired

    assert run_virtual(main()) == (["boom"], [1.0, 3.0])
