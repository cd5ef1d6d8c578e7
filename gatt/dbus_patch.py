"""Fix the EAGAIN wedge of the asyncio D-Bus writers in dbus-next (bless) and dbus-fast (bleak).

Both libraries treat ``BlockingIOError`` from ``socket.send`` as a fatal bus error, so a burst
of signals that fills the socket send buffer (easy on a Pi under load) leaves the bus
connected but silent. :func:`install` replaces their writer callback with one that treats
EAGAIN as "0 bytes written" and waits for the socket to become writable again. It is
idempotent and changes nothing else. (Contribution-ready: the same three lines belong
upstream in ``_MessageWriter.write_callback``.)
"""

from __future__ import annotations

import array
import socket
from typing import Any

_installed = False
eagain_retries = 0
"""How many times a writer met a full socket buffer and waited instead of dying."""


def _send_some(writer: Any) -> int:
    """Send what the socket takes now; 0 when it would block."""
    global eagain_retries
    sock = writer.sock
    try:
        if writer.unix_fds and writer.negotiate_unix_fd:
            anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", writer.unix_fds))]
            sent = int(sock.sendmsg([writer.buf[writer.offset :]], anc))
            writer.unix_fds = None
            return sent
        return int(sock.send(writer.buf[writer.offset :]))
    except (BlockingIOError, InterruptedError):
        eagain_retries += 1
        return 0


def _set_result(fut: Any) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


def _set_exception(fut: Any, exc: Exception) -> None:
    if fut is not None and not fut.done():
        fut.set_exception(exc)
        fut.exception()  # the bus reports its own death; no "never retrieved" noise for sends


def _next_message_next(writer: Any) -> bool:
    """dbus-next: load the next queued message; False when the queue is empty."""
    if writer.messages.qsize() == 0:
        return False
    buf, unix_fds, fut = writer.messages.get_nowait()
    writer.unix_fds, writer.buf, writer.offset, writer.fut = unix_fds, memoryview(buf), 0, fut
    return True


def _next_message_fast(writer: Any) -> bool:
    """dbus-fast: load the next queued message; False when the queue is empty."""
    if not writer.messages:
        return False
    buf, unix_fds, fut = writer.messages.popleft()
    writer.unix_fds, writer.buf, writer.offset, writer.fut = unix_fds, memoryview(buf), 0, fut
    return True


def _write_callback_next(self: Any) -> None:
    try:
        while True:
            if self.buf is None and not _next_message_next(self):
                self.loop.remove_writer(self.fd)
                return
            self.offset += _send_some(self)
            if self.offset < len(self.buf):
                return  # stay registered: called again when writable
            self.buf = None
            _set_result(self.fut)
    except Exception as e:
        _set_exception(self.fut, e)
        self.bus._finalize(e)


closed_socket_writes = 0
"""Writes attempted on a bus whose socket was already closed (dropped, not a crash)."""


def _closed(writer: Any) -> bool:
    """The writer's socket is closed: its fd number may belong to another transport by now."""
    sock = writer.sock
    return sock is None or sock.fileno() == -1


def _fail_queued(writer: Any, messages: Any, pop: Any) -> None:
    """Fail every pending send of a writer whose socket is gone, touching no event loop fd
    (uvloop refuses to remove a reader registered by the transport that reuses the fd)."""
    global closed_socket_writes
    closed_socket_writes += 1
    err = OSError("D-Bus socket already closed")
    if writer.fut is not None:
        _set_exception(writer.fut, err)
    writer.buf = None
    while messages:
        _set_exception(pop()[2], err)


def _write_callback_fast(self: Any, remove_writer: bool = True) -> None:
    if _closed(self):  # bleak tearing down a client's bus after a failed connect
        _fail_queued(self, self.messages, self.messages.popleft)
        return
    try:
        while True:
            if self.buf is None and not _next_message_fast(self):
                if remove_writer:
                    self.loop.remove_writer(self.fd)
                return
            self.offset += _send_some(self)
            if self.offset < len(self.buf):
                return
            self.buf = None
            _set_result(self.fut)
    except Exception as e:
        if self.bus._user_disconnect:
            _set_result(self.fut)
        else:
            _set_exception(self.fut, e)
        self.bus._finalize(e)


def install() -> None:
    """Patch both libraries' writers (safe to call many times)."""
    global _installed
    if _installed:
        return
    try:
        from dbus_next.aio import message_bus as next_bus

        setattr(next_bus._MessageWriter, "write_callback", _write_callback_next)  # noqa: B010
    except ImportError:  # bless not installed: nothing to fix
        pass
    from dbus_fast.aio import message_bus as fast_bus

    setattr(fast_bus._MessageWriter, "write_callback", _write_callback_fast)  # noqa: B010
    _installed = True
