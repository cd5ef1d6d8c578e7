"""Link rotation on the air: a stranded node gets a link even when every neighbour is full."""

from __future__ import annotations

import asyncio

from sim_net import Recorder

from ble_bridge.air.air import Air, SimTransport
from ble_bridge.air.clock import Seeds, run_virtual
from ble_bridge.air.profiles import PI_TUNED
from ble_bridge.air.topology import full

BUDGET = PI_TUNED.max_links


async def _start(air: Air, node: int) -> SimTransport:
    t = SimTransport(air, node)
    t.attach(Recorder(asyncio.get_running_loop()))
    await t.start()
    return t


async def _until(cond: object, limit: float) -> float | None:
    """Seconds until ``cond()`` holds (checked every 0.5 s), None if not within ``limit``."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while loop.time() - t0 < limit:
        await asyncio.sleep(0.5)
        if cond():  # type: ignore[operator]
            return loop.time() - t0
    return None


def test_healed_minority_relinks_although_every_majority_node_is_full() -> None:
    async def main() -> None:
        n = 8
        air = Air(asyncio.get_running_loop(), full(n), PI_TUNED, Seeds(1))
        for i in range(n):
            await _start(air, i)
        await asyncio.sleep(10.0)
        majority = range(2, n)
        air.partition([(0, 1), tuple(majority)])
        await asyncio.sleep(30.0)
        assert all(air.degree(j) == BUDGET for j in majority)  # no free slot on that side
        air.heal()
        took = await _until(lambda: len(air.reachable(0)) == n, 30.0)
        assert took is not None and took < 15.0
        assert air.stats["link_rotations"] >= 1
        assert all(air.degree(j) <= BUDGET for j in range(n))

    run_virtual(main(), seed=1)


def test_restarted_node_relinks_although_every_other_node_is_full() -> None:
    async def main() -> None:
        n = 9
        air = Air(asyncio.get_running_loop(), full(n), PI_TUNED, Seeds(2))
        ts = [await _start(air, i) for i in range(n)]
        await asyncio.sleep(10.0)
        ts[8].crash()
        await asyncio.sleep(30.0)
        assert all(air.degree(j) == BUDGET for j in range(8))
        await _start(air, 8)
        took = await _until(lambda: len(air.reachable(8)) == n, 30.0)
        assert took is not None and took < 15.0
        assert air.stats["link_rotations"] >= 1

    run_virtual(main(), seed=2)


def test_connected_full_mesh_does_not_rotate() -> None:
    async def main() -> None:
        n = 8
        air = Air(asyncio.get_running_loop(), full(n), PI_TUNED, Seeds(3))
        for i in range(n):
            await _start(air, i)
        await asyncio.sleep(120.0)
        assert len(air.reachable(0)) == n
        assert air.stats["link_rotations"] == 0

    run_virtual(main(), seed=3)


def test_rotation_is_reproducible_by_seed() -> None:
    async def main() -> list[tuple[object, ...]]:
        air = Air(asyncio.get_running_loop(), full(8), PI_TUNED, Seeds(1))
        for i in range(8):
            await _start(air, i)
        await asyncio.sleep(10.0)
        air.partition([(0, 1), tuple(range(2, 8))])
        await asyncio.sleep(30.0)
        air.heal()
        await asyncio.sleep(20.0)
        return [e for e in air.trace if e[1] in ("rotate", "link_up", "link_down")]

    first = run_virtual(main(), seed=1)
    assert any(e[1] == "rotate" for e in first)
    assert run_virtual(main(), seed=1) == first
