"""The thin asyncio part of the panel: button edges in, LED out, one timer.

One task waits for the earlier of: the button's fd turning readable (edge events), the
panel's next LED change or press deadline, and the next look at the node's facts. Edges
carry the kernel's CLOCK_MONOTONIC timestamps, the clock of ``time.monotonic``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from .gpio import PanelIo
from .panel import Action, Facts, Panel

log = logging.getLogger(__name__)


class PanelService:
    def __init__(
        self,
        io: PanelIo,
        panel: Panel,
        facts: Callable[[], Facts],
        on_action: Callable[[Action], None],
        *,
        facts_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.io = io
        self.panel = panel
        self.facts = facts
        self.on_action = on_action
        self.facts_interval = facts_interval
        self.clock = clock
        self.errors = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._fd: int | None = None

    async def start(self) -> None:
        fd = self.io.fileno()
        if fd is not None:
            asyncio.get_running_loop().add_reader(fd, self._wake.set)
            self._fd = fd
        self._task = asyncio.create_task(self._run(), name="panel")

    async def stop(self) -> None:
        if self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            self._fd = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            self.io.set_led(False)
        self.io.close()

    async def _run(self) -> None:
        next_facts = self.clock()
        while True:
            try:
                now = self.clock()
                if now >= next_facts:
                    self.panel.update(now, self.facts())
                    next_facts = now + self.facts_interval
                actions = []
                for at, pressed in self.io.read_edges():
                    actions += self.panel.step(min(at, now), pressed)
                actions += self.panel.step(now)
                for action in actions:
                    self.on_action(action)
                on, look = self.panel.led(now)
                self.io.set_led(on)
                timeout = max(0.0, min(look, next_facts) - self.clock())
            except Exception:  # a bug or a GPIO error must not end the panel
                self.errors += 1
                log.exception("panel_step_failed")
                timeout = 1.0
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
