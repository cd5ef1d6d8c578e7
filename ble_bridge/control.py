"""Local control API: newline-delimited JSON over a unix socket (mode 0660).

Requests are one JSON object per line, at most ``MAX_REQUEST`` bytes: ``{"cmd": "status"}``,
``{"cmd": "peers"}``, ``{"cmd": "submit", "session": NAME, "op": HEX}``,
``{"cmd": "operation", "id": HEX}``. Each gets one JSON line back: ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``. A malformed request (not JSON, not UTF-8, nested too
deep, not an object, wrong field types) is answered with an error and the connection
stays open; an oversized one is answered and the connection closed; a request that makes a
handler fail unexpectedly is logged and answered ``internal error``. None disturbs the node.

At start the socket is created 0660 (under a umask, so it is never wider), and the node
refuses to start (exit 2, one line) if the socket would be reachable by other users: a
mode with bits for others, or a directory others may write (without the sticky bit) where
they could replace it; a non-socket file at the path is not removed but refused.

Table requests (typed; a refusal carries ``"reason"`` and ``"refused": true``, the CLI's
exit code 2): ``{"cmd": "table_list"}``, ``{"cmd": "table_open", "name": S, "seats": N,
"buy_in": N, "min_bet": N}`` (numbers optional), ``{"cmd": "table_join", "name": S, "open": BOOL}`` (``open``: open it if none is heard),
``{"cmd": "table_leave", "name": S}``, ``{"cmd": "table_show", "name": S}``,
``{"cmd": "bet", "table": S, "kind": "pass"|"dont-pass"|"field", "amount": N}``,
``{"cmd": "balance", "table": S (optional)}``, ``{"cmd": "history", "table": S}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from .bridge import BridgeError, PendingOperation, ProposalId
from .errors import ExitCode, StartupError
from .tables.errors import TableError

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024
MAX_CLIENTS = 16
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class Operations(Protocol):
    """The part of the bridge the control API calls."""

    def submit_operation(self, session_id: bytes, op: bytes) -> ProposalId: ...

    def operation(self, proposal_id: bytes) -> PendingOperation | None: ...


class TableHost(Protocol):
    """The runtime tables of a node (``ble_bridge.tables.service.TableService`` is one);
    each request raises :class:`TableError` when it cannot succeed now."""

    def listing(self) -> list[dict[str, Any]]: ...

    def open(
        self, name: str, seats: int | None, buy_in: int | None, min_bet: int | None
    ) -> dict[str, Any]: ...

    def join(self, name: str) -> dict[str, Any]: ...

    def sit(self, name: str) -> dict[str, Any]: ...

    def leave(self, name: str) -> dict[str, Any]: ...

    def show(self, table: str) -> dict[str, Any]: ...

    def bet(self, table: str, kind: str, amount: int) -> dict[str, Any]: ...

    def balance(self, table: str | None) -> list[dict[str, Any]]: ...

    def history(self, table: str) -> dict[str, Any]: ...


class ControlApi(Protocol):
    """What the control server calls on a node (``ble_bridge.node.Node`` is one)."""

    @property
    def bridge(self) -> Operations: ...

    def status(self) -> dict[str, Any]: ...

    def peers(self) -> list[dict[str, object]]: ...

    def session_by_name(self, name: str) -> bytes: ...

    @property
    def tables(self) -> TableHost: ...


class ControlServer:
    """Serves a node's control API (:class:`ControlApi`) on a unix socket."""

    def __init__(self, node: ControlApi, path: Path) -> None:
        self.node = node
        self.path = path
        self._server: asyncio.AbstractServer | None = None
        self._clients = 0
        self.errors = 0
        self.handlers: dict[str, Handler] = {}  # more requests by cmd (e.g. pair_*)

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        check_socket_dir(self.path)
        try:
            existing = self.path.lstat()
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(existing.st_mode):
                raise StartupError(
                    ExitCode.USAGE,
                    f"control socket {self.path} exists and is not a socket",
                    "remove it or set [node] control_socket to another path",
                )
            self.path.unlink()
        old = os.umask(0o117)  # the socket is created 0660, never wider, not even briefly
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_REQUEST
            )
        finally:
            os.umask(old)
        os.chmod(self.path, 0o660)
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o007:
            await self.stop()
            raise StartupError(
                ExitCode.USAGE,
                f"control socket {self.path} is mode {mode:04o}: other users could use it",
                "put it on a filesystem that keeps file modes (e.g. /run/ble-bridge)",
            )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= MAX_CLIENTS:
            writer.close()
            return
        self._clients += 1
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await self._reply(writer, {"ok": False, "error": "request too large"})
                    break
                if not line:
                    break
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("request must be a JSON object")
                    reply = await self.handle(request)
                except (ValueError, KeyError, TypeError) as exc:
                    self.errors += 1
                    reply = {"ok": False, "error": str(exc) or type(exc).__name__}
                except RecursionError:
                    self.errors += 1
                    reply = {"ok": False, "error": "bad request: nested too deeply"}
                except Exception as exc:
                    self.errors += 1
                    log.error("control request failed cmd=%r error=%r", _cmd(line), exc)
                    reply = {"ok": False, "error": f"internal error: {type(exc).__name__}"}
                await self._reply(writer, reply)
        except ConnectionError:
            pass
        finally:
            self._clients -= 1
            writer.close()

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, reply: dict[str, Any]) -> None:
        writer.write(json.dumps(reply).encode() + b"\n")
        await writer.drain()

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        cmd = request.get("cmd")
        node = self.node
        extra = self.handlers.get(cmd) if isinstance(cmd, str) else None
        if extra is not None:
            return await extra(request)
        if isinstance(cmd, str) and cmd in _TABLE_CMDS:
            try:
                return {"ok": True, **_table_request(node.tables, cmd, request)}
            except TableError as exc:
                return {"ok": False, "refused": True, "reason": exc.reason, "error": exc.message}
        if cmd == "status":
            return {"ok": True, **node.status()}
        if cmd == "peers":
            return {"ok": True, "peers": node.peers()}
        if cmd == "submit":
            sid = node.session_by_name(str(request["session"]))
            op = bytes.fromhex(str(request["op"]))
            try:
                pid = node.bridge.submit_operation(sid, op)
            except BridgeError as exc:
                return {"ok": False, "error": str(exc), "reason": exc.reason}
            return {"ok": True, "id": pid.hex()}
        if cmd == "operation":
            found = node.bridge.operation(ProposalId(bytes.fromhex(str(request["id"]))))
            if found is None:
                return {"ok": False, "error": "unknown operation"}
            return {
                "ok": True,
                "status": found.status.value,
                "votes_received": found.votes_received,
                "required_votes": found.required_votes,
                "height": found.height,
                "reason": found.reason,
            }
        return {"ok": False, "error": f"unknown cmd {cmd!r}"}


def _cmd(line: bytes) -> str:
    """The request's ``cmd`` for a log line (best effort, bounded)."""
    with contextlib.suppress(Exception):
        value = json.loads(line).get("cmd")
        return str(value)[:40]
    return "?"


def check_socket_dir(path: Path) -> None:
    """Refuse a control socket in a directory that others may write without the sticky
    bit: they could remove ours and listen in its place."""
    st = path.parent.stat()
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        raise StartupError(
            ExitCode.USAGE,
            f"control socket directory {path.parent} is writable by other users",
            f"chmod o-w {path.parent} or set [node] control_socket elsewhere",
        )


_TABLE_CMDS = frozenset(
    {
        "table_list",
        "table_open",
        "table_join",
        "table_leave",
        "table_show",
        "bet",
        "balance",
        "history",
    }
)


def _text(request: dict[str, Any], key: str) -> str:
    value = request.get(key)
    if not isinstance(value, str) or not value:
        raise TableError("bad_request", f"{key!r} must be a non-empty string")
    return value


def _number(request: dict[str, Any], key: str, required: bool = False) -> int | None:
    value = request.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise TableError("bad_request", f"{key!r} must be an integer")
    return value


def _table_request(tables: TableHost, cmd: str, request: dict[str, Any]) -> dict[str, Any]:
    if cmd == "table_list":
        return {"tables": tables.listing()}
    if cmd == "table_open":
        return tables.open(
            _text(request, "name"),
            _number(request, "seats"),
            _number(request, "buy_in"),
            _number(request, "min_bet"),
        )
    if cmd == "table_join":
        if request.get("open") is True:
            return tables.sit(_text(request, "name"))
        return tables.join(_text(request, "name"))
    if cmd == "table_leave":
        return tables.leave(_text(request, "name"))
    if cmd == "table_show":
        return tables.show(_text(request, "name"))
    if cmd == "bet":
        amount = _number(request, "amount", required=True)
        assert amount is not None
        return tables.bet(_text(request, "table"), _text(request, "kind"), amount)
    if cmd == "balance":
        table = request.get("table")
        return {"balances": tables.balance(None if table is None else _text(request, "table"))}
    return tables.history(_text(request, "table"))


async def request(path: Path, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to a node's control socket and return the reply."""
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), timeout)
    try:
        writer.write(json.dumps(message).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()
    if not line:
        raise ConnectionError("node closed the control connection")
    reply: dict[str, Any] = json.loads(line)
    return reply
