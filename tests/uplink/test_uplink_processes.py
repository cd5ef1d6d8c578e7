"""Two `ble-bridge run --transport sim` processes (each a node and 3 simulated neighbours
on its own wall-clock loopback air) whose [uplink] joins them through a real mosquitto:
a table with a validator on each island commits, survives the broker being killed and
restarted, and both processes stop cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ble_bridge.control import request
from ble_bridge.node import session_id_from_name
from ble_bridge.signer import new_key_signer_file
from ble_bridge.store import Store
from ble_bridge.uplink.mosquitto import Mosquitto
from ble_bridge.wire.identity import Identity

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp: Path, i: int, keys: list[str], broker: Mosquitto) -> Path:
    data = tmp / f"island{i}"
    data.mkdir()
    conf = data / "node.toml"
    validators = ", ".join(f'"{k}"' for k in keys)
    conf.write_text(
        f'[node]\ndata_dir = "{data}"\ncontrol_socket = "{data / "ctl.sock"}"\n'
        f'[uplink]\nbroker = "{broker.url}"\nmesh_id = "processes"\n'
        "heartbeat_interval = 1.0\nlink_timeout = 4.0\nreconnect_max = 2.0\nkeepalive = 5\n"
        f'[[session]]\nname = "cross"\nautoplay = true\nvalidators = [{validators}]\n'
    )
    return conf


def _height(sock: Path) -> int:
    try:
        status = asyncio.run(request(sock, {"cmd": "status"}))
    except (OSError, ValueError):
        return -1
    for s in status.get("sessions", []):
        if s["name"] == "cross":
            return int(s["height"])
    return -1


def _wait(pred: object, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


def test_two_processes_join_through_the_broker(tmp_path: Path, mosquitto: Mosquitto) -> None:
    idents = [Identity.generate() for _ in range(2)]
    keys = [i.signing_public.hex() for i in idents]
    socks, procs = [], []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for i, ident in enumerate(idents):
        conf = _config(tmp_path, i, keys, mosquitto)
        ident.save(tmp_path / f"island{i}" / "identity.key")
        new_key_signer_file(tmp_path / f"island{i}" / "identity.key", ident.signing_public)
        socks.append(tmp_path / f"island{i}" / "ctl.sock")
        cmd = [sys.executable, "-m", "ble_bridge.cli", "run", "--transport", "sim"]
        procs.append(
            subprocess.Popen(
                [*cmd, "--sim-peers", "3", "--config", str(conf)],
                env=env,
                stderr=subprocess.PIPE,
            )
        )
    try:
        assert _wait(lambda: min(_height(s) for s in socks) >= 2, 120), [_height(s) for s in socks]
        mosquitto.kill()
        time.sleep(3.0)
        paused = [_height(s) for s in socks]
        time.sleep(3.0)  # 1 of 2 validators per island: no quorum, no commits
        assert max(_height(s) for s in socks) <= max(paused) + 1
        mosquitto.start()
        target = max(paused) + 3
        assert _wait(lambda: min(_height(s) for s in socks) >= target, 120), [
            _height(s) for s in socks
        ]
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            assert p.wait(60) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p in procs:
        assert b"Traceback" not in (p.stderr.read() if p.stderr else b"")
    sid = session_id_from_name("cross")
    chains = []
    for i in range(2):
        store = Store(tmp_path / f"island{i}" / "state.sqlite3")
        try:
            chains.append({h: bh for h, bh, *_ in store.blocks_after(sid, 0)})
        finally:
            store.close()
    common = set(chains[0]) & set(chains[1])
    assert len(common) >= 5
    assert all(chains[0][h] == chains[1][h] for h in common)  # no safety violation
