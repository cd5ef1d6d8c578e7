"""Helpers for the gatt tests: event-recording handlers and polling with a deadline."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ble_bridge.transport import LinkInfo, LinkRole
from gatt.config import BleConfig
from gatt.transport import BleTransport

T = TypeVar("T")


SLACK = float(os.environ.get("BLE_BRIDGE_TEST_SLACK", "3"))
"""Every wall-clock bound of these tests is multiplied by this: a bound is what an idle
machine needs, times the slowdown of a loaded 2-core one (measured: a test that settles in
9 s alone took over 20 s beside the rest of the suite). Conditions are polled, so a longer
bound costs nothing when things go well."""


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run one test scenario in a fresh event loop (bleak keeps one manager per loop)."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout * SLACK)

    return asyncio.run(bounded())


async def until(cond: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> bool:
    """Poll ``cond`` until it holds or ``timeout`` (times :data:`SLACK`) passes; returns the
    last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout * SLACK
    while not cond():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(step)
    return True


@dataclass
class Recorder:
    """A TransportHandler that remembers everything."""

    ups: list[LinkInfo] = field(default_factory=list)
    downs: list[tuple[int, str]] = field(default_factory=list)
    frames: list[tuple[int, bytes]] = field(default_factory=list)

    def link_up(self, info: LinkInfo) -> None:
        self.ups.append(info)

    def link_down(self, link_id: int, reason: str) -> None:
        self.downs.append((link_id, reason))

    def frame_received(self, link_id: int, data: bytes) -> None:
        self.frames.append((link_id, data))


def fast_config(adapter: int, **overrides: Any) -> BleConfig:
    """Short duty cycles and backoffs so a test settles in seconds."""
    base: dict[str, Any] = dict(
        adapter=f"hci{adapter}",
        scan_on_s=0.3,
        scan_off_s=0.1,
        connect_interval_s=0.05,
        connect_timeout_s=3.0,
        backoff_base_s=0.1,
        backoff_max_s=1.0,
        tie_break_grace_s=0.5,
        candidate_fresh_s=1.0,
        seed=adapter,
    )
    base.update(overrides)
    return BleConfig(**base)


def peer(i: int) -> bytes:
    """Peer ids ordered like the adapter index (node 0 has the smallest)."""
    return bytes([i + 1]) * 8


class Node:
    """One BleTransport on one fake adapter with its recorder."""

    def __init__(self, index: int, **overrides: Any) -> None:
        self.index = index
        self.rec = Recorder()
        self.transport = BleTransport(fast_config(index, **overrides), peer(index))
        self.transport.attach(self.rec)

    async def start(self) -> None:
        await self.transport.start()

    async def stop(self) -> None:
        await self.transport.stop()

    def links(self, role: LinkRole | None = None) -> list[LinkInfo]:
        return [i for i in self.transport.links() if role is None or i.role is role]

    def frames_on(self, link_id: int) -> list[bytes]:
        return [d for lid, d in self.rec.frames if lid == link_id]


def address(index: int) -> str:
    return f"02:B1:0E:00:00:{index + 1:02X}"
