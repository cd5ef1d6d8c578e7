"""kill -9 of one `ble-bridge run` and a restart on its state dir: it rejoins (real processes)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from gatt_harness import SLACK

from gatt.fakebluez import FakeBluezConfig, FakeBluezProcess, LinkModel
from gatt.fakebluez.bus import dbus_daemon_path
from gatt.fakebluez.harness import _source_root
from gatt.lab import _status, _toml_config

pytestmark = pytest.mark.dbus

REJOIN_BOUND_S = 60.0
"""Python start (several seconds on a loaded 2-core machine), scan, connect, announce."""


def _spawn(conf: Path, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "ble_bridge.cli", "run", "--config", str(conf)],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def _poll(socks: list[Path]) -> list[dict[str, Any] | None]:
    return list(await asyncio.gather(*(_status(s) for s in socks)))


def _height(r: dict[str, Any] | None) -> int:
    return int(r["sessions"][0]["height"]) if r and r.get("sessions") else -1


async def _until(socks: list[Path], cond: Any, timeout: float) -> list[dict[str, Any] | None]:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        rs = await _poll(socks)
        if cond(rs) or loop.time() > end:
            return rs
        await asyncio.sleep(0.5)


def test_a_node_killed_with_sigkill_and_restarted_rejoins() -> None:
    if dbus_daemon_path() is None:
        pytest.skip("dbus-daemon is not installed (Debian package 'dbus')")
    from ble_bridge.signer import new_key_signer_file
    from ble_bridge.wire.identity import Identity

    n = 3
    fake = FakeBluezProcess(FakeBluezConfig(adapters=n, link=LinkModel(mtu=247)))
    root = Path(tempfile.mkdtemp(prefix="ble-bridge-rejoin-"))
    procs: list[subprocess.Popen[bytes]] = []
    ble = {
        "scan_on_s": 1.0,
        "scan_off_s": 0.5,
        "tie_break_grace_s": 2.0,
        "link_idle_timeout_s": 15.0,
        "backoff_max_s": 5.0,
    }
    try:
        address = fake.start()
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": address, "PYTHONPATH": _source_root()}
        idents = [Identity.generate() for _ in range(n)]
        validators = [i.signing_public.hex() for i in idents]  # all 3 needed for a quorum
        confs, socks = [], []
        for i, ident in enumerate(idents):
            (root / f"node{i}").mkdir()
            ident.save(root / f"node{i}" / "identity.key")
            new_key_signer_file(root / f"node{i}" / "identity.key", ident.signing_public)
            conf = root / f"node{i}.toml"
            conf.write_text(_toml_config(i, root, validators, ble))
            confs.append(conf)
            socks.append(root / f"node{i}.sock")
            procs.append(_spawn(conf, root / f"node{i}.log", env))

        async def scenario() -> None:
            rs = await _until(
                socks,
                lambda rs: all(r and len(r["links"]) >= 2 and _height(r) >= 3 for r in rs),
                90 * SLACK,
            )
            assert all(r and len(r["links"]) >= 2 for r in rs), rs
            before = max(_height(r) for r in rs)
            procs[1].send_signal(signal.SIGKILL)  # no cleanup: bluetoothd keeps its connections
            procs[1].wait(10)
            # its peers notice: its GATT app is gone (writes fail), or its link goes idle
            rs = await _until(
                socks, lambda rs: all(r and len(r["links"]) == 1 for r in rs[::2]), 45 * SLACK
            )
            assert all(r and len(r["links"]) == 1 for r in rs[::2]), rs
            procs[1] = _spawn(confs[1], root / "node1.log", env)
            t0 = time.monotonic()
            rs = await _until(
                socks,
                lambda rs: (
                    rs[1] is not None
                    and len(rs[1]["links"]) >= 2
                    and all(_height(r) > before + 2 for r in rs)
                ),
                REJOIN_BOUND_S * SLACK,
            )
            took = time.monotonic() - t0
            assert rs[1] is not None and len(rs[1]["links"]) >= 2, (took, rs[1])
            heights = [_height(r) for r in rs]
            assert all(h > before + 2 for h in heights), (before, heights, took)
            print(f"rejoined in {took:.1f}s; heights {before} -> {heights}")

        asyncio.run(scenario())
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        fake.close()
