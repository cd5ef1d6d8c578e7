"""Real ``ble-bridge run`` processes (``--transport sim``: the node on a real SQLite file
and signer-state file, its three simulated neighbours in the same process) that find a
broken database, another node's database or signer file, a database that cannot be moved
aside, or a disk that fills up while they play. Wall clock: every wait is on a condition
with a generous bound (scaled by BLE_BRIDGE_TEST_SLACK), never a timed assertion.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ble_bridge.control import request
from ble_bridge.errors import NO_RESTART, ExitCode
from ble_bridge.signer import SignerFile, new_key_signer_file, signer_path_for
from ble_bridge.store import OWNER, Store
from ble_bridge.wire.identity import Identity
from gatt.fakebluez.harness import _source_root

SLACK = float(os.environ.get("BLE_BRIDGE_TEST_SLACK", "3"))
BOUND_S = 60.0 * SLACK


def _node_dir(tmp: Path, data: Path | None = None, signer: bool = True) -> tuple[Path, Path]:
    data = data or tmp / "data"
    data.mkdir(exist_ok=True)
    key = data / "identity.key"
    ident = Identity.generate()
    ident.save(key)
    if signer:
        new_key_signer_file(key, ident.signing_public)
    sock = tmp / f"c-{uuid.uuid4().hex[:6]}.sock"
    conf = tmp / "node.toml"
    conf.write_text(
        f'[node]\ndata_dir = "{data}"\ncontrol_socket = "{sock}"\nsim_peers = 3\n'
        f"failure_exit_s = 2.0\n"
    )
    return conf, sock


class Run:
    def __init__(self, conf: Path, sock: Path, tmp: Path) -> None:
        self.sock = sock
        self.err_path = tmp / f"stderr-{uuid.uuid4().hex[:6]}"
        env = {**os.environ, "PYTHONPATH": _source_root()}
        env.pop("NOTIFY_SOCKET", None)
        self.err = self.err_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ble_bridge.cli", "run", "--transport", "sim",
             "--config", str(conf)],
            env=env, stdout=subprocess.DEVNULL, stderr=self.err,
        )  # fmt: skip

    def status(self) -> dict[str, Any] | None:
        try:
            return asyncio.run(request(self.sock, {"cmd": "status"}))
        except (OSError, ConnectionError, TimeoutError, ValueError):
            return None

    def wait_for(self, cond: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        deadline = time.monotonic() + BOUND_S
        while time.monotonic() < deadline:
            st = self.status()
            if st is not None and cond(st):
                return st
            assert self.proc.poll() is None, f"exited {self.proc.returncode}: {self.lines()}"
            time.sleep(0.3)
        raise AssertionError(f"no {what} within {BOUND_S} s: {self.lines()[-20:]}")

    def height(self, st: dict[str, Any]) -> int:
        return int(st["sessions"][0]["height"])

    def lines(self) -> list[str]:
        self.err.flush()
        return self.err_path.read_text().splitlines()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=BOUND_S)

    def wait(self) -> int:
        return self.proc.wait(timeout=BOUND_S)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=BOUND_S)
        self.err.close()


@contextlib.contextmanager
def running(conf: Path, sock: Path, tmp: Path) -> Iterator[Run]:
    r = Run(conf, sock, tmp)
    try:
        yield r
    finally:
        r.close()


def _run_to_exit(conf: Path, tmp: Path) -> tuple[int, list[str]]:
    env = {**os.environ, "PYTHONPATH": _source_root()}
    proc = subprocess.run(
        [sys.executable, "-m", "ble_bridge.cli", "run", "--transport", "sim", "--config",
         str(conf)],
        env=env, capture_output=True, text=True, timeout=BOUND_S,
    )  # fmt: skip
    return proc.returncode, proc.stderr.splitlines()


@contextlib.contextmanager
def _tmpfs(where: Path, options: str) -> Iterator[Path]:
    where.mkdir(exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, f"ble-bridge-test-{uuid.uuid4().hex[:6]}",
         str(where)],
        capture_output=True,
    )  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.parametrize("how", ["empty", "truncated", "random"])
def test_killed_node_with_a_broken_database_moves_it_aside_and_plays_on(
    tmp_path: Path, how: str
) -> None:
    conf, sock = _node_dir(tmp_path)
    db = tmp_path / "data" / "state.sqlite3"
    with running(conf, sock, tmp_path) as r:
        r.wait_for(lambda st: r.height(st) >= 3 and st["signer"]["writes"] > 0, "height 3")
        r.kill()
    # as on disk after an interrupted copy of the file alone: the WAL checkpointed first
    con = sqlite3.connect(db)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    size = db.stat().st_size
    if how == "empty":
        db.write_bytes(b"")
    elif how == "truncated":
        db.write_bytes(db.read_bytes()[: max(100, size // 2)])
    else:
        db.write_bytes(os.urandom(max(4096, size)))
    with running(conf, sock, tmp_path) as r:
        st = r.wait_for(lambda st: r.height(st) >= 3, "height 3 after the restart")
        noted = [ln for ln in r.lines() if "moved to state.sqlite3.broken-" in ln]
        assert len(noted) == 1, r.lines()
        assert f"database {db} " in noted[0]
        assert st["health"] != "error"
    aside = [p.name for p in db.parent.glob("state.sqlite3.broken-*")]
    assert len([n for n in aside if not n.endswith(("-wal", "-shm"))]) == 1, aside


def test_signer_file_of_another_key_refuses_to_start(tmp_path: Path) -> None:
    conf, _ = _node_dir(tmp_path)
    key = tmp_path / "data" / "identity.key"
    ours = Identity.load(key).signing_public
    other = Identity.generate().signing_public
    path = signer_path_for(key)
    path.unlink()
    SignerFile.create(path, other).close()
    code, lines = _run_to_exit(conf, tmp_path)
    assert code == ExitCode.USAGE
    assert lines == [
        f"ble-bridge run: error: signer state {path} belongs to key {other.hex()[:16]}, not "
        f"this node's {ours.hex()[:16]}; put this node's own identity key back, or, if the "
        "key was replaced on purpose, move the signer file away (the node then catches up "
        "before it signs)"
    ]
    assert SignerFile.open(path, other).key == other  # never used, never moved


def test_database_of_another_key_is_moved_aside(tmp_path: Path) -> None:
    conf, sock = _node_dir(tmp_path)
    db = tmp_path / "data" / "state.sqlite3"
    foreign = Store(db)
    foreign.set_meta(OWNER, b"\x42" * 32)
    foreign.record_signature(b"\x01" * 16, 9, 0, 1, b"not ours")
    foreign.close()
    with running(conf, sock, tmp_path) as r:
        r.wait_for(lambda st: r.height(st) >= 2, "height 2")
        noted = [ln for ln in r.lines() if "moved to state.sqlite3.broken-" in ln]
        assert len(noted) == 1 and "foreign (belongs to key 4242424242424242)" in noted[0]


def test_database_that_cannot_be_moved_aside_is_exit_7(tmp_path: Path) -> None:
    conf, _ = _node_dir(tmp_path)
    db = tmp_path / "data" / "state.sqlite3"
    with _tmpfs(db, "size=64k"):  # a mount point: not a file, and rename fails (EBUSY)
        code, lines = _run_to_exit(conf, tmp_path)
    assert code == ExitCode.DB_CORRUPT
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"ble-bridge run: error: database {db} is unusable and cannot be moved aside ("
    )
    assert lines[0].endswith(
        f"; move {db} (and its -wal/-shm files) away by hand; the node then syncs from its peers"
    )


def test_disk_full_while_playing_is_health_error_then_exit_8(tmp_path: Path) -> None:
    """Exit 8, then the restarts systemd makes: exit 8 (never a NO_RESTART code) while the
    disk stays full, and the node plays on from its state once space is freed."""
    with _tmpfs(tmp_path / "small", "size=3m") as small:
        conf, sock = _node_dir(tmp_path, data=small)
        with running(conf, sock, tmp_path) as r:
            r.wait_for(lambda st: r.height(st) >= 2, "height 2")
            with contextlib.suppress(OSError), (small / "filler").open("wb") as f:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
            st = r.wait_for(lambda st: st["health"] == "error", "health error")
            assert "storage failed" in st["error"], st["error"]
            height = r.height(st)
            code = r.wait()
            lines = r.lines()
        assert code == ExitCode.STORAGE and int(code) not in NO_RESTART, lines
        assert lines[-1].startswith("ble-bridge run: error: storage failed: "), lines[-3:]
        text = "\n".join(lines)
        assert "Exception in callback" not in text and "never retrieved" not in text
        assert any("signing_stopped reason=" in ln for ln in lines)

        plain = conf.read_text()
        conf.write_text(plain + "full_wait_s = 0.0\n")  # no re-checking: exits at once
        again, again_lines = _run_to_exit(conf, tmp_path)
        assert again == ExitCode.STORAGE, again_lines
        assert len(again_lines) == 1, again_lines
        assert again_lines[0].startswith(f"ble-bridge run: error: data dir {small} is full ")
        assert again_lines[0].endswith(
            "; free space on that filesystem (journalctl --vacuum-size, old logs); the node"
            " starts again by itself (systemd restarts it)"
        )

        conf.write_text(plain + f"full_wait_s = {BOUND_S}\n")
        with running(conf, sock, tmp_path) as waiting:
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:  # alive, no control socket yet: re-checking
                assert waiting.proc.poll() is None, waiting.lines()
                assert waiting.status() is None
                time.sleep(0.2)
            (small / "filler").unlink()
            waiting.wait_for(lambda st: waiting.height(st) > height, "height after space freed")
            assert not any(ln.startswith("ble-bridge run: error") for ln in waiting.lines())


class _FullDisk:
    """The node's SQLite connection once the disk is full: every write raises what
    sqlite3 raises then; reads still work."""

    def __init__(self, db: Any) -> None:
        self._db = db

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.lstrip().upper().startswith(("INSERT", "DELETE", "UPDATE")):
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.execute(sql, *args)

    def __enter__(self) -> Any:
        return self._db.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self._db.__exit__(*exc)

    def close(self) -> None:
        self._db.close()


def test_storage_error_in_the_bridge_timer_stops_signing_with_health_error(
    tmp_path: Path,
) -> None:
    """In process: the write the engine makes before a vote fails inside a loop callback
    (the timer, a packet): no exception escapes to the loop, the bridge stops signing, the
    node's health is error with the reason, and the node asks to exit with code 8."""
    from ble_bridge.node import load_node_config
    from ble_bridge.sim.local import LoopbackAir
    from hardware import NodeHealth

    conf, _ = _node_dir(tmp_path)
    config = load_node_config(conf)

    async def main() -> tuple[list[tuple[str, ExitCode]], list[dict[str, Any]], int, int]:
        loop = asyncio.get_running_loop()
        escaped: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, ctx: escaped.append(ctx))
        air = LoopbackAir(config, 3)
        node = await air.start()
        failures: list[tuple[str, ExitCode]] = []
        node.on_failure = lambda reason, code: failures.append((reason, code))
        try:
            deadline = loop.time() + BOUND_S
            while node.bridge.engine(next(iter(node.sessions))).height < 2:
                assert loop.time() < deadline
                await asyncio.sleep(0.05)
            assert node.store is not None
            node.store._db = _FullDisk(node.store._db)  # type: ignore[assignment]
            writes = node.signer.writes if node.signer is not None else 0
            while node.health() is not NodeHealth.ERROR:
                assert loop.time() < deadline, "no health error"
                await asyncio.sleep(0.05)
            height = node.bridge.engine(next(iter(node.sessions))).height
            signed = node.signer.writes if node.signer is not None else 0
            await asyncio.sleep(1.0)  # nothing more is signed or committed after the failure
            assert node.bridge.engine(next(iter(node.sessions))).height == height
            assert node.signer is not None and node.signer.writes == signed
            assert node.status()["error"].startswith("storage failed: ")
            return failures, escaped, writes, signed
        finally:
            await air.stop()

    failures, escaped, before, after = asyncio.run(main())
    assert escaped == []
    assert len(failures) == 1
    reason, code = failures[0]
    assert code is ExitCode.STORAGE and "database or disk is full" in reason
    assert after >= before


def test_a_full_data_dir_at_start_is_rechecked_for_full_wait_s_and_nothing_else_is() -> None:
    from ble_bridge.errors import StartupError
    from ble_bridge.node import wait_for_data_dir

    t = [0.0]
    calls: list[float] = []

    def sleep(s: float) -> None:
        t[0] += s

    def checker(problems: list[ExitCode | None]) -> Callable[[Path], None]:
        def check(path: Path) -> None:
            calls.append(t[0])
            code = problems.pop(0) if problems else None
            if code is not None:
                raise StartupError(code, f"data dir {path} is full", "free space")

        return check

    # full for 3 checks, then room: starts after 3 s
    wait_for_data_dir(Path("/d"), 10.0, check=checker([ExitCode.STORAGE] * 3), sleep=sleep,
                      clock=lambda: t[0])  # fmt: skip
    assert calls == [0.0, 1.0, 2.0, 3.0]
    # full all along: the last check at the deadline, then the error
    calls.clear()
    t[0] = 100.0
    with pytest.raises(StartupError) as full:
        wait_for_data_dir(Path("/d"), 5.0, check=checker([ExitCode.STORAGE] * 99), sleep=sleep,
                          clock=lambda: t[0])  # fmt: skip
    assert full.value.code is ExitCode.STORAGE and calls == [100.0 + i for i in range(6)]
    # read-only (the operator must act) is not waited for; neither is anything at wait 0
    calls.clear()
    with pytest.raises(StartupError) as ro:
        wait_for_data_dir(Path("/d"), 5.0, check=checker([ExitCode.DATA_DIR]), sleep=sleep,
                          clock=lambda: t[0])  # fmt: skip
    assert ro.value.code is ExitCode.DATA_DIR and len(calls) == 1
    calls.clear()
    with pytest.raises(StartupError):
        wait_for_data_dir(Path("/d"), 0.0, check=checker([ExitCode.STORAGE]), sleep=sleep,
                          clock=lambda: t[0])  # fmt: skip
    assert len(calls) == 1


def test_disk_full_is_told_apart_from_a_broken_database(tmp_path: Path) -> None:
    """A full disk while opening the state is exit 8 (restart helps), not 6/7 (operator)."""
    from ble_bridge.errors import StorageFailure
    from ble_bridge.node import _disk_full

    con = sqlite3.connect(tmp_path / "tiny.sqlite3")
    con.execute("PRAGMA max_page_count = 2")  # SQLite's own "database or disk is full"
    with pytest.raises(sqlite3.Error) as full:
        con.execute("CREATE TABLE t (x BLOB)")
        con.execute("INSERT INTO t VALUES (?)", (b"\0" * 100_000,))
    con.close()
    assert _disk_full(full.value)
    try:
        raise StorageFailure("store: database or disk is full") from full.value
    except StorageFailure as wrapped:
        assert _disk_full(wrapped)
    nospace = OSError(28, "No space left on device")
    try:
        raise StorageFailure("cannot create signer state") from nospace
    except StorageFailure as wrapped:
        assert _disk_full(wrapped)
    assert not _disk_full(sqlite3.DatabaseError("file is not a database"))
    assert not _disk_full(OSError(30, "Read-only file system"))
    assert not _disk_full(StorageFailure("cannot create signer state"))


def test_a_second_run_on_one_data_dir_exits_9_at_once_and_kill_9_frees_the_lock(
    tmp_path: Path,
) -> None:
    """Two real processes on one data dir: the second exits 9 with one line naming the
    first's pid and leaves the live database alone; after kill -9 of the first (no clean
    stop) a restart takes the lock the kernel dropped and plays on."""
    conf, sock = _node_dir(tmp_path)
    db = tmp_path / "data" / "state.sqlite3"
    with running(conf, sock, tmp_path) as first:
        st = first.wait_for(lambda st: first.height(st) >= 1, "height 1")
        inode = db.stat().st_ino
        code, lines = _run_to_exit(conf, tmp_path)
        assert code == ExitCode.DATA_DIR_IN_USE and int(code) in NO_RESTART, lines
        assert lines == [
            f"ble-bridge run: error: data dir {tmp_path / 'data'} is in use by another"
            f" ble-bridge run (pid {first.proc.pid}); stop that one first (systemctl stop"
            " ble-bridge), or give this one its own [node] data_dir"
        ]
        assert db.stat().st_ino == inode and not list(db.parent.glob("*.broken-*"))
        st = first.wait_for(lambda s: first.height(s) > first.height(st), "first plays on")
        height = first.height(st)
        first.kill()
    with running(conf, sock, tmp_path) as again:
        again.wait_for(lambda s: again.height(s) > height, "height after kill -9 and restart")
        assert not any(ln.startswith("ble-bridge run: error") for ln in again.lines())
        assert not list(db.parent.glob("*.broken-*"))


def test_a_database_locked_by_another_program_is_exit_9_and_left_alone(tmp_path: Path) -> None:
    """An sqlite3 shell (say) holds an exclusive lock on the node's database: the node
    waits SQLite's busy timeout, then exits 9 with one line; the file is not moved aside."""
    conf, sock = _node_dir(tmp_path)
    db = tmp_path / "data" / "state.sqlite3"
    with running(conf, sock, tmp_path) as first:
        first.wait_for(lambda st: first.height(st) >= 1, "height 1")
        assert first.proc.send_signal(signal.SIGTERM) is None and first.wait() == 0
    other = sqlite3.connect(db)
    other.execute("PRAGMA locking_mode=EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")
    other.execute("INSERT INTO meta VALUES ('x', x'00')")
    try:
        code, lines = _run_to_exit(conf, tmp_path)
    finally:
        other.rollback()
        other.close()
    assert code == ExitCode.DATA_DIR_IN_USE, lines
    assert lines == [
        f"ble-bridge run: error: database {db} is locked by another program (database is"
        " locked); close the program holding it (an sqlite3 shell, a backup), then start the"
        " node again; the file was left as it is"
    ]
    assert not list(db.parent.glob("*.broken-*"))
