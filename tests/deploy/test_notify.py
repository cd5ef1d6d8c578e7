"""systemd's notify protocol against a real unix datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ble_bridge.control import request
from ble_bridge.daemon import Heartbeat, Notifier, heartbeat, status_line

pytestmark = pytest.mark.timeout(240)
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class FakeSystemd:
    """Receives notify datagrams on a real socket, timestamping each in a thread."""

    path: Path
    messages: list[tuple[float, dict[str, str]]] = field(default_factory=list)
    sock: socket.socket = field(init=False)
    _thread: threading.Thread = field(init=False)
    _stop: bool = False

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.05)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append((time.monotonic(), fields))

    def wait_for(self, key: str, timeout: float, after: float = 0.0) -> float:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for t, m in list(self.messages):
                if key in m and t >= after:
                    return t
            time.sleep(0.02)
        raise AssertionError(f"no {key} within {timeout}s; got {self.messages[-5:]}")

    def times(self, key: str) -> list[float]:
        return [t for t, m in list(self.messages) if key in m]

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(tmp_path / "notify.sock")
    yield fake
    fake.close()


def test_notifier_sends_to_a_path_and_is_silent_without_a_socket(systemd: FakeSystemd) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "30000000"})
    assert n.enabled and n.watchdog_interval == 15.0
    assert n.ready("healthy") and n.watchdog() and n.stopping()
    systemd.wait_for("STOPPING", 5)
    kinds = [next(iter(m)) for _, m in systemd.messages]
    assert kinds == ["READY", "WATCHDOG", "STOPPING"]
    assert systemd.messages[0][1]["STATUS"] == "healthy"
    silent = Notifier({})
    assert not silent.enabled and not silent.send("READY=1") and silent.watchdog_interval is None


def test_notifier_reaches_an_abstract_socket() -> None:
    name = f"ble-bridge-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(b"\0" + name.encode())
        s.settimeout(5)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).status("x")
        assert s.recv(100) == b"STATUS=x"


def test_watchdog_only_for_this_pid_and_a_failed_send_is_counted(tmp_path: Path) -> None:
    other = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    assert Notifier(other).watchdog_interval is None
    mine = {**other, "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_interval == 0.5
    assert Notifier({"WATCHDOG_USEC": "nope"}).watchdog_interval is None
    gone = Notifier({"NOTIFY_SOCKET": str(tmp_path / "absent.sock")})
    assert not gone.watchdog() and gone.errors == 1


def test_heartbeat_pings_when_due_and_alive_and_reports_status_changes() -> None:
    beat = Heartbeat(watchdog_interval=1.0, status_interval=5.0)
    text = ["a"]
    assert beat.tick(0.0, True, lambda: text[0]) == (True, "a")
    assert beat.tick(0.5, True, lambda: text[0]) == (False, None)
    assert beat.tick(1.0, True, lambda: text[0]) == (True, None)
    assert beat.tick(2.0, False, lambda: text[0]) == (False, None), "not alive: no ping"
    text[0] = "b"
    assert beat.tick(3.0, True, lambda: text[0]) == (True, None)
    assert beat.tick(5.0, True, lambda: text[0]) == (True, "b")
    assert beat.next_at() == 6.0


def test_status_line_summarises_a_node() -> None:
    status = {
        "health": "healthy",
        "links": [{}, {}],
        "sessions": [{"name": "t1", "height": 7, "health": "active"}],
    }
    assert status_line(status) == "healthy, 2 links, t1 h7 active"


def test_pings_come_from_the_event_loop_and_stop_while_it_stalls(systemd: FakeSystemd) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "200000"})
    stall: list[float] = []

    async def main() -> None:
        task = asyncio.create_task(heartbeat(notifier, lambda: True, lambda: "ok"))
        await asyncio.sleep(1.0)
        stall.append(time.monotonic())
        time.sleep(1.5)  # a callback that blocks the loop
        stall.append(time.monotonic())
        await asyncio.sleep(1.0)
        task.cancel()

    asyncio.run(main())
    pings = systemd.times("WATCHDOG")
    assert len([t for t in pings if t < stall[0]]) >= 3
    assert not [t for t in pings if stall[0] + 0.05 < t < stall[1] - 0.05], "pinged while stalled"
    assert [t for t in pings if t > stall[1]], "pings resume after the stall"


def _config(tmp: Path) -> Path:
    conf = tmp / "node.toml"
    conf.write_text(f'[node]\ndata_dir = "{tmp / "data"}"\ncontrol_socket = "{tmp / "ctl.sock"}"\n')
    return conf


def test_sim_node_is_ready_only_once_it_serves_and_stops_cleanly_on_sigterm(
    tmp_path: Path, systemd: FakeSystemd
) -> None:
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(systemd.path),
        "WATCHDOG_USEC": "1000000",
        "PYTHONPATH": str(ROOT),
    }
    cmd = [sys.executable, "-m", "ble_bridge.cli", "run", "--transport", "sim"]
    proc = subprocess.Popen(
        [*cmd, "--config", str(_config(tmp_path))], env=env, stderr=subprocess.PIPE
    )
    try:
        ready_at = systemd.wait_for("READY", 90)
        # READY means the control socket answers already, with the demo table open
        status = asyncio.run(request(tmp_path / "ctl.sock", {"cmd": "status"}))
        assert status["ok"] and [s["name"] for s in status["sessions"]] == ["demo-table"]
        assert not [t for t in systemd.times("WATCHDOG") if t < ready_at]
        systemd.wait_for("WATCHDOG", 10, after=ready_at)
        # a stalled process (SIGSTOP stops its loop) sends no pings; they resume after
        proc.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        time.sleep(3.0)
        resumed = time.monotonic()
        proc.send_signal(signal.SIGCONT)
        assert not [t for t in systemd.times("WATCHDOG") if stopped + 0.2 < t < resumed]
        systemd.wait_for("WATCHDOG", 10, after=resumed)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert systemd.times("STOPPING"), "STOPPING=1 before the clean stop"
    assert not (tmp_path / "ctl.sock").exists(), "control socket removed"
    wal = tmp_path / "data" / "state.sqlite3-wal"
    assert not wal.exists() or wal.stat().st_size == 0, "SQLite checkpointed at stop"
    assert b"Traceback" not in (proc.stderr.read() if proc.stderr else b"")


def test_watchdog_pings_stop_when_a_write_fails_and_the_node_exits_8(
    tmp_path: Path, systemd: FakeSystemd
) -> None:
    """A real ``ble-bridge run`` under a fake systemd with WatchdogSec, its data dir on a
    3 MiB tmpfs that the test fills while the node plays: once a write fails the node is
    health error, sends no more WATCHDOG=1 (systemd would restart it if it hung there),
    tells systemd ``STATUS=error…``, and exits 8 after ``[node] failure_exit_s``."""
    import uuid

    from ble_bridge.errors import ExitCode
    from ble_bridge.signer import new_key_signer_file
    from ble_bridge.wire.identity import Identity

    data = tmp_path / "data"
    data.mkdir()
    m = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", f"ble-bridge-wd-{uuid.uuid4().hex[:6]}",
         str(data)],
        capture_output=True, text=True,
    )  # fmt: skip
    if m.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {m.stderr.strip()}")
    proc: subprocess.Popen[bytes] | None = None
    try:
        ident = Identity.generate()
        ident.save(data / "identity.key")
        new_key_signer_file(data / "identity.key", ident.signing_public)
        sock = tmp_path / "ctl.sock"
        conf = tmp_path / "node.toml"
        conf.write_text(
            f'[node]\ndata_dir = "{data}"\ncontrol_socket = "{sock}"\nfailure_exit_s = 7.0\n'
        )
        env = {
            **os.environ,
            "NOTIFY_SOCKET": str(systemd.path),
            "WATCHDOG_USEC": "400000",  # a ping every 0.2 s
            "PYTHONPATH": str(ROOT),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "ble_bridge.cli", "run", "--transport", "sim",
             "--config", str(conf)],
            env=env, stderr=subprocess.PIPE,
        )  # fmt: skip
        ready = systemd.wait_for("READY", 90)

        def status() -> dict[str, object]:
            try:
                return dict(asyncio.run(request(sock, {"cmd": "status"})))
            except (OSError, ConnectionError, TimeoutError, ValueError):
                return {}

        def wait(cond: object, what: str) -> dict[str, object]:
            end = time.monotonic() + 120
            while time.monotonic() < end:
                st = status()
                if st and cond(st):  # type: ignore[operator]
                    return st
                assert proc is not None and proc.poll() is None, f"exited before {what}"
                time.sleep(0.1)
            raise AssertionError(f"no {what}")

        wait(lambda st: st["sessions"][0]["height"] >= 2, "height 2")
        filled = time.monotonic()
        assert len([t for t in systemd.times("WATCHDOG") if ready < t < filled]) >= 3
        with contextlib.suppress(OSError), (data / "filler").open("wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        st = wait(lambda st: st["health"] == "error", "health error")
        seen = time.monotonic()
        assert "storage failed" in str(st["error"]), st
        code = proc.wait(120)
        ended = time.monotonic()
        err = proc.stderr.read().decode() if proc.stderr else ""
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run(["umount", "-l", str(data)], check=False)
    assert code == ExitCode.STORAGE, err[-2000:]
    assert err.splitlines()[-1].startswith("ble-bridge run: error: storage failed: "), err[-500:]
    assert ended - seen > 3.0, "health error shown for a while before the exit"
    pings = systemd.times("WATCHDOG")
    assert [t for t in pings if filled - 1.0 < t < seen], "pinged until the failure"
    late = [t for t in pings if t > seen + 0.1]
    assert not late, f"{len(late)} watchdog pings after the health error"
    errors = [m["STATUS"] for _, m in systemd.messages if m.get("STATUS", "").startswith("error")]
    assert errors, [m for _, m in systemd.messages if "STATUS" in m][-5:]
    assert "Exception in callback" not in err and "never retrieved" not in err
