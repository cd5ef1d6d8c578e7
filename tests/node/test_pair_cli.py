"""``ble-bridge pair`` against a real ``ble-bridge run --transport sim`` process over its
control socket: --window prints a code, --status/--close, --wait on a timeout, --list and
--remove of an owner kept in the node's SQLite file across a restart, and clear refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ble_bridge.cli import main
from ble_bridge.store import OwnerRecord, Store

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[2]
SLACK = float(os.environ.get("BLE_BRIDGE_TEST_SLACK", "3"))


class Running:
    def __init__(self, tmp: Path) -> None:
        self.sock = tmp / "ctl.sock"
        self.data = tmp / "data"
        self.conf = tmp / "node.toml"
        self.conf.write_text(f'[node]\ndata_dir = "{self.data}"\ncontrol_socket = "{self.sock}"\n')
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "ble_bridge.cli", "run", "--transport", "sim"]
        self.proc = subprocess.Popen(
            [*cmd, "--config", str(self.conf), "--sim-peers", "1"],
            env=env,
            stderr=subprocess.PIPE,
        )
        end = time.monotonic() + 30 * SLACK
        while time.monotonic() < end:
            if self.sock.exists():
                return
            assert self.proc.poll() is None, "node exited"
            time.sleep(0.1)
        raise AssertionError("control socket never appeared")

    def stop(self) -> bytes:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(60) == 0
        err = self.proc.stderr.read() if self.proc.stderr else b""
        self.proc = None
        return err

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def run(capsys: pytest.CaptureFixture[str], node: Running, *argv: str) -> tuple[int, str, str]:
    code = main(["pair", *argv, "--socket", str(node.sock)])
    out, err = capsys.readouterr()
    return code, out, err


def test_pair_window_status_close_list_remove(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = Running(tmp_path)
    node.start()
    try:
        code, out, _ = run(capsys, node, "--window", "60")
        assert code == 0, out
        digits = out.split()[2]
        assert out.startswith("pairing code ") and len(digits) == 6 and digits.isdigit()
        assert f"!pair {digits}" in out
        code, out, _ = run(capsys, node, "--status", "--json")
        s = json.loads(out)
        assert code == 0 and s["open"] and s["code"] == digits and 0 < s["remaining_s"] <= 60
        code, out, err = run(capsys, node, "--window", "0")
        assert code == 2 and err.startswith("ble-bridge pair: window must be") and out == ""
        code, out, _ = run(capsys, node, "--close")
        assert (code, out) == (0, "window closed\n")
        code, out, _ = run(capsys, node, "--status")
        assert code == 0 and out.startswith("no window open (last: closed)")
        code, out, _ = run(capsys, node, "--window", "1", "--wait")
        assert code == 1 and "window closed: timeout" in out
        code, out, _ = run(capsys, node, "--list")
        assert (code, out) == (0, "no owners, no bonded devices\n")
        code, _, err = run(capsys, node, "--remove", "abc")
        assert code == 2 and "8 or more hex digits" in err
        code, _, err = run(capsys, node, "--remove", "00112233")
        assert code == 2 and "no owner 00112233" in err
        code, _, err = run(capsys, node, "--remove", "02:B1:0E:00:00:09")
        assert code == 2 and "no bonded device" in err  # the sim transport has no BlueZ
        node.stop()
        # an owner in the node's SQLite file (as !pair leaves it) is there after a restart
        key = bytes(range(32))
        store = Store(node.data / "state.sqlite3")
        assert store.add_owner(OwnerRecord(key, bytes(32), "alice", 1.8e9, "dm"), 8)
        store.close()
        node.start()
        code, out, _ = run(capsys, node, "--list")
        assert code == 0 and out.startswith(f"owner  {key.hex()[:16]}  alice")
        code, out, _ = run(capsys, node, "--list", "--json")
        assert [o["id"] for o in json.loads(out)["owners"]] == [key.hex()]
        code, out, _ = run(capsys, node, "--remove", key.hex()[:8])
        assert (code, out) == (0, f"removed {key.hex()}\n")
        code, out, _ = run(capsys, node, "--list")
        assert out == "no owners, no bonded devices\n"
        err_text = node.stop().decode()
        assert "Traceback" not in err_text
    finally:
        node.kill()


def test_unreachable_node_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["pair", "--list", "--socket", str(tmp_path / "none.sock")])
    assert code == 1
    assert "cannot reach the node" in capsys.readouterr().err
