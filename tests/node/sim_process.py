"""One ``ble-bridge run --transport sim`` process with its own config, data dir and control
socket under a test's tmp dir: the CLI tests drive it over the real socket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SLACK = float(os.environ.get("BLE_BRIDGE_TEST_SLACK", "3"))


class Running:
    def __init__(self, tmp: Path, sim_peers: int | None = None) -> None:
        self.tmp = tmp
        self.sock = tmp / "ctl.sock"
        self.data = tmp / "data"
        self.conf = tmp / "node.toml"
        self.conf.write_text(f'[node]\ndata_dir = "{self.data}"\ncontrol_socket = "{self.sock}"\n')
        self.sim_peers = sim_peers
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "ble_bridge.cli", "run", "--transport", "sim"]
        cmd += ["--config", str(self.conf)]
        if self.sim_peers is not None:
            cmd += ["--sim-peers", str(self.sim_peers)]
        self.proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
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
