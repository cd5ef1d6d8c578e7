"""Bad input on the control socket: malformed requests get a JSON error and the node keeps
serving; a socket other users could reach is refused at start (exit 2)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import stat
from pathlib import Path
from typing import Any

import pytest

from ble_bridge.bridge import PendingOperation, ProposalId
from ble_bridge.control import MAX_REQUEST, ControlServer, TableHost
from ble_bridge.errors import ExitCode, StartupError

pytestmark = pytest.mark.timeout(120)


class Ops:
    def submit_operation(self, session_id: bytes, op: bytes) -> ProposalId:
        return ProposalId(bytes(16))

    def operation(self, proposal_id: bytes) -> PendingOperation | None:
        return None


class Node:
    """A ControlApi whose status() can be made to fail like a bug would."""

    def __init__(self) -> None:
        self.ops = Ops()
        self.fail_status = False

    @property
    def bridge(self) -> Ops:
        return self.ops

    def status(self) -> dict[str, Any]:
        if self.fail_status:
            raise RuntimeError("boom")
        return {"health": "healthy"}

    def peers(self) -> list[dict[str, object]]:
        return [{"peer": "ab"}]

    def session_by_name(self, name: str) -> bytes:
        raise KeyError(f"no session {name}")

    @property
    def tables(self) -> TableHost:
        raise AttributeError("no tables here")


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes) -> Any:
    writer.write(line)
    await writer.drain()
    reply = await asyncio.wait_for(reader.readline(), 30)
    return json.loads(reply)


def test_malformed_requests_get_json_errors_and_the_server_keeps_serving(tmp_path: Path) -> None:
    node = Node()

    async def main() -> None:
        server = ControlServer(node, tmp_path / "c.sock")
        await server.start()
        try:
            reader, writer = await asyncio.open_unix_connection(
                str(server.path), limit=MAX_REQUEST * 2
            )
            bad = [
                b"not json\n",
                b"\xff\xfe\x00\n",
                b"[" * 30000 + b"\n",  # nested too deep for the parser
                b"[1, 2]\n",
                b'"cmd"\n',
                b'{"cmd": "submit"}\n',
                b'{"cmd": "submit", "session": "x", "op": "00"}\n',
                b'{"cmd": "operation", "id": "zz"}\n',
                b'{"cmd": 5}\n',
                b'{"cmd": "table_list"}\n',
                b'{"cmd": "status"}\n',  # status() raises: internal error
            ]
            rng = random.Random(17)
            bad += [
                bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))).replace(b"\n", b"")
                + b"\n"
                for _ in range(200)
            ]
            node.fail_status = True
            for line in bad:
                if line == b'{"cmd": "status"}\n':
                    reply = await ask(reader, writer, line)
                    assert reply == {"ok": False, "error": "internal error: RuntimeError"}
                    continue
                reply = await ask(reader, writer, line)
                assert reply["ok"] is False and isinstance(reply["error"], str), (line, reply)
                # the same connection still serves a good request
                assert await ask(reader, writer, b'{"cmd": "peers"}\n') == {
                    "ok": True,
                    "peers": [{"peer": "ab"}],
                }
            assert server.errors == len(bad) - 1  # an unknown cmd is an answer, not an error
            node.fail_status = False
            assert (await ask(reader, writer, b'{"cmd": "status"}\n'))["ok"] is True
            # oversized: answered, then that connection is closed; a new one works
            writer.write(b"x" * (MAX_REQUEST + 10) + b"\n")
            await writer.drain()
            reply = json.loads(await asyncio.wait_for(reader.readline(), 30))
            assert reply == {"ok": False, "error": "request too large"}
            writer.close()
            reader, writer = await asyncio.open_unix_connection(str(server.path))
            assert (await ask(reader, writer, b'{"cmd": "status"}\n'))["ok"] is True
            writer.close()
        finally:
            await server.stop()

    asyncio.run(main())


def test_socket_is_0660_even_with_an_open_umask(tmp_path: Path) -> None:
    async def main() -> None:
        server = ControlServer(Node(), tmp_path / "c.sock")
        old = os.umask(0)
        try:
            await server.start()
        finally:
            os.umask(old)
        try:
            assert stat.S_IMODE(server.path.stat().st_mode) == 0o660
        finally:
            await server.stop()

    asyncio.run(main())


def test_a_directory_others_may_write_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "open"
    d.mkdir()
    d.chmod(0o777)

    async def start() -> None:
        await ControlServer(Node(), d / "c.sock").start()

    with pytest.raises(StartupError) as err:
        asyncio.run(start())
    assert err.value.code == ExitCode.USAGE
    assert "writable by other users" in err.value.line
    assert not (d / "c.sock").exists()
    # with the sticky bit (like /tmp) others cannot remove our socket: allowed
    d.chmod(0o1777)

    async def start_stop() -> None:
        server = ControlServer(Node(), d / "c.sock")
        await server.start()
        await server.stop()

    asyncio.run(start_stop())


def test_a_file_that_is_not_a_socket_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    path.write_text("important")

    async def start() -> None:
        await ControlServer(Node(), path).start()

    with pytest.raises(StartupError) as err:
        asyncio.run(start())
    assert err.value.code == ExitCode.USAGE and "not a socket" in err.value.line
    assert path.read_text() == "important"
