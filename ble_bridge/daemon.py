"""The service life of ``ble-bridge run``: systemd's notify protocol, the watchdog, signals.

systemd's ``Type=notify`` protocol needs no library: one datagram per message to the unix
socket named by ``NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace), each a
few ``KEY=value`` lines. The service sends ``READY=1`` once the node serves (transport up,
sessions open, control socket listening), ``STATUS=`` lines as its health changes,
``WATCHDOG=1`` from the event loop every half ``WatchdogSec`` (so a stalled loop stops the
pings and systemd restarts the node), and ``STOPPING=1`` when SIGTERM arrives, before the
clean stop: advertisements withdrawn (transport stop), SQLite closed (closing the last
connection checkpoints the WAL into the main file and removes it).
Without ``NOTIFY_SOCKET`` every message is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

STATUS_INTERVAL = 5.0
"""Seconds between looks at the node's health for a new ``STATUS=`` line."""


class Notifier:
    """Sends sd_notify messages; every send is a no-op without ``NOTIFY_SOCKET``."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if address.startswith("@"):
            self.address = b"\0" + address[1:].encode()
        elif address.startswith("/"):
            self.address = address
        self.errors = 0
        self.sent = 0
        self.watchdog_interval = _watchdog_interval(env)
        """Half of ``WatchdogSec`` when systemd asked this process to ping, else None."""

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields in one datagram; False when it could not be sent."""
        if self.address is None:
            return False
        data = "\n".join(fields).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(data, self.address)
        except OSError as exc:
            self.errors += 1
            log.warning("notify failed error=%s", exc)
            return False
        self.sent += 1
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.send("STOPPING=1", "STATUS=stopping")


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2e6


def status_line(status: Mapping[str, Any]) -> str:
    """A one-line summary of a node's ``status()`` for ``systemctl status``."""
    parts = [str(status.get("health", "?")), f"{len(status.get('links', []))} links"]
    for s in status.get("sessions", []):
        parts.append(f"{s['name']} h{s['height']} {s['health']}")
    return ", ".join(parts)


@dataclass(slots=True)
class Heartbeat:
    """Sans-IO: what the service's one timer does at ``now``.

    ``tick`` returns whether to ping the watchdog (due, and the node alive) and the status
    line to send if it changed. The asyncio side only sleeps until :meth:`next_at`.
    """

    watchdog_interval: float | None
    status_interval: float = STATUS_INTERVAL
    _next_ping: float = 0.0
    _next_status: float = 0.0
    _last_status: str = ""

    def tick(self, now: float, alive: bool, status: Callable[[], str]) -> tuple[bool, str | None]:
        ping = False
        if self.watchdog_interval is not None and now >= self._next_ping:
            self._next_ping = now + self.watchdog_interval
            ping = alive
        line = None
        if now >= self._next_status:
            self._next_status = now + self.status_interval
            text = status()
            if text != self._last_status:
                self._last_status = text
                line = text
        return ping, line

    def next_at(self) -> float:
        if self.watchdog_interval is None:
            return self._next_status
        return min(self._next_ping, self._next_status)


async def heartbeat(
    notifier: Notifier, alive: Callable[[], bool], status: Callable[[], str]
) -> None:
    """Forever: watchdog pings and status lines, from the event loop (a stall stops them)."""
    loop = asyncio.get_running_loop()
    beat = Heartbeat(notifier.watchdog_interval)
    while True:
        ping, line = beat.tick(loop.time(), _safe(alive, False), lambda: _safe(status, "error"))
        if ping:
            notifier.watchdog()
        if line is not None:
            notifier.status(line)
            log.debug("status %s", line)
        await asyncio.sleep(max(0.0, beat.next_at() - loop.time()))


def _safe(fn: Callable[[], Any], fallback: Any) -> Any:
    """``fn()``, or ``fallback`` (logged) if it raises: the heartbeat task must not die."""
    try:
        return fn()
    except Exception as exc:
        log.error("heartbeat probe failed error=%r", exc)
        return fallback


async def serve_until_signalled(
    start: Callable[[], Awaitable[Any]],
    stop: Callable[[], Awaitable[None]],
    *,
    alive: Callable[[], bool],
    status: Callable[[], str],
    notifier: Notifier | None = None,
    stop_event: asyncio.Event | None = None,
) -> int:
    """Start, tell systemd READY, beat until SIGTERM/SIGINT, then STOPPING and stop."""
    notifier = notifier or Notifier()
    loop = asyncio.get_running_loop()
    stop_event = stop_event or asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_event.set)
    beat: asyncio.Task[None] | None = None
    try:
        await start()
        notifier.ready(status())
        log.info(
            "ready notify=%s watchdog_s=%s",
            "yes" if notifier.enabled else "no",
            notifier.watchdog_interval,
        )
        beat = asyncio.create_task(heartbeat(notifier, alive, status), name="heartbeat")
        await stop_event.wait()
        notifier.stopping()
        log.info("stopping signal=received")
    finally:
        if beat is not None:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        await stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    log.info("stopped")
    return 0
