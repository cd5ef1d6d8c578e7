"""TimerSlot: the one ``call_at`` handle a thin asyncio service keeps for its sans-IO core.

A service asks its core for ``next_timer()`` after every input and hands the answer to
:meth:`TimerSlot.arm`; the slot keeps a single handle, re-armed only when the deadline
moves (aioquic's ``QuicConnectionProtocol.transmit`` timer block). The callback is
guarded: an exception goes to ``on_error`` instead of dying inside the event loop, so no
callback of a live process ends with an unhandled exception. Used by
:class:`~ble_bridge.mesh.service.MeshNode` and
:class:`~ble_bridge.bridge.service.NetworkConsensusBridge`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class TimerSlot:
    """At most one pending ``loop.call_at(at, callback)``, following a moving deadline."""

    __slots__ = ("_at", "_callback", "_handle", "_on_error")

    def __init__(
        self, callback: Callable[[], None], on_error: Callable[[BaseException], None]
    ) -> None:
        self._callback = callback
        self._on_error = on_error
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None

    @property
    def at(self) -> float | None:
        """When the armed callback runs (None: nothing armed)."""
        return self._at if self._handle is not None else None

    def arm(self, loop: asyncio.AbstractEventLoop, at: float | None) -> None:
        """Run the callback at loop time ``at`` (None: not at all); a no-op when unchanged."""
        if at == self._at and self._handle is not None:
            return
        self.cancel()
        self._at = at
        if at is not None:
            self._handle = loop.call_at(at, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._at = None

    def _fire(self) -> None:
        self._handle = None
        self._at = None
        try:
            self._callback()
        except Exception as exc:  # never a dead callback in a live process
            self._on_error(exc)
