"""Runtime tables between real processes: four ``ble-bridge run`` nodes (Node, BleTransport,
bless, bleak), each on its own adapter of the fake BlueZ, no ``[[session]]`` at all. One
opens a table with ``ble-bridge table open``, three others ``table join`` it over their
control sockets, all bet, one leaves; every node commits and all agree on the state."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gatt.fakebluez import FakeBluezConfig, FakeBluezProcess, LinkModel
from gatt.fakebluez.bus import dbus_daemon_path
from gatt.fakebluez.harness import _source_root

pytestmark = [pytest.mark.dbus, pytest.mark.timeout(900)]

SLACK = float(os.environ.get("BLE_BRIDGE_TEST_SLACK", "3"))
NODES = 4


def _config(i: int, root: Path) -> str:
    return f"""[node]
nickname = "lab{i}"
data_dir = "{root / f"node{i}"}"
board = "generic"
control_socket = "{root / f"node{i}.sock"}"
status_interval = 0.5

[ble]
adapter = "hci{i}"
scan_on_s = 1.0
scan_off_s = 0.5
tie_break_grace_s = 2.0

[tables]
announce_min_interval = 1.0
announce_max_interval = 8.0
"""


class Lab:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []

    def sock(self, i: int) -> Path:
        return self.root / f"node{i}.sock"

    def cli(self, i: int, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "ble_bridge.cli", *args, "--socket", str(self.sock(i))]
        return subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, timeout=timeout * SLACK + 30
        )

    def bet(self, i: int, *args: str) -> subprocess.CompletedProcess[str]:
        """``bet`` as a player types it: while the dice roll the command refuses with one
        line (exit 1, nothing submitted) and the player tries again a moment later."""
        end = time.monotonic() + 60 * SLACK
        while True:
            done = self.cli(i, "bet", *args, "--timeout", str(60 * SLACK), timeout=60)
            if "bets are closed" not in done.stderr or time.monotonic() > end:
                return done
            time.sleep(1.0)

    def json(self, i: int, *args: str) -> Any:
        done = self.cli(i, *args, "--json")
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return json.loads(done.stdout)

    def status(self, i: int) -> dict[str, Any]:
        from ble_bridge.control import request

        reply = asyncio.run(request(self.sock(i), {"cmd": "status"}, timeout=10.0))
        assert reply.get("ok", True), reply
        return reply

    def wait(self, what: str, cond: Any, timeout: float) -> Any:
        end = time.monotonic() + timeout * SLACK
        while time.monotonic() < end:
            got = cond()
            if got:
                return got
            for p in self.procs:
                assert p.poll() is None, f"a node exited while waiting for {what}"
            time.sleep(1.0)
        raise AssertionError(f"{what}: not within {timeout * SLACK:.0f} s")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    if dbus_daemon_path() is None:
        pytest.skip("dbus-daemon is not installed (Debian package 'dbus')")
    from ble_bridge.signer import new_key_signer_file
    from ble_bridge.wire.identity import Identity

    fake = FakeBluezProcess(FakeBluezConfig(adapters=NODES, link=LinkModel(mtu=247)))
    address = fake.start()
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": address, "PYTHONPATH": _source_root()}
    lab = Lab(tmp_path, env)
    try:
        for i in range(NODES):
            state = tmp_path / f"node{i}"
            state.mkdir()
            ident = Identity.generate()
            ident.save(state / "identity.key")
            new_key_signer_file(state / "identity.key", ident.signing_public)
            conf = tmp_path / f"node{i}.toml"
            conf.write_text(_config(i, tmp_path))
            log = (tmp_path / f"node{i}.log").open("ab")
            lab.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "ble_bridge.cli", "run", "--config", str(conf)],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
        lab.wait("control sockets", lambda: all(lab.sock(i).exists() for i in range(NODES)), 30)
        yield lab
    finally:
        for p in lab.procs:
            p.terminate()
        for p in lab.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        fake.close()


def _felt(status: dict[str, Any]) -> dict[str, Any] | None:
    for s in status.get("sessions", []):
        if s.get("name") == "felt":
            return s  # type: ignore[no-any-return]
    return None


def test_table_open_three_joins_bets_and_a_leave_between_processes(lab: Lab) -> None:
    opened = lab.json(0, "table", "open", "felt", "--seats", "4")
    table_id = opened["id"]
    joiners = range(1, NODES)
    for i in joiners:  # each hears the announcement over the fake BlueZ mesh
        lab.wait(
            f"node {i} hears felt",
            lambda i=i: any(t["id"] == table_id for t in lab.json(i, "table", "list")),
            90,
        )
    for i in joiners:
        done = lab.cli(i, "table", "join", "felt", "--timeout", str(120 * SLACK), timeout=120)
        assert done.returncode == 0, (i, done.stdout, done.stderr)
    shown = lab.wait(
        "four seats everywhere",
        lambda: all(
            len(lab.json(i, "table", "show", "felt")["validators"]) == NODES for i in range(NODES)
        ),
        60,
    )
    assert shown
    for i in range(NODES):  # everyone bets on the field: committed, outcome printed
        done = lab.bet(i, "felt", "field", "5")
        assert done.returncode == 0, (i, done.stdout, done.stderr)
    # a roll happens (seats commit and reveal): the history grows on every node
    lab.wait(
        "a roll", lambda: all(lab.json(i, "history", "felt")["rolls"] for i in range(NODES)), 90
    )
    done = lab.cli(3, "table", "leave", "felt", "--timeout", str(60 * SLACK), timeout=60)
    assert done.returncode == 0, (done.stdout, done.stderr)
    for i in range(3):  # the others play on: another bet each commits
        done = lab.bet(i, "felt", "field", "5")
        assert done.returncode == 0, (i, done.stdout, done.stderr)

    def agreed() -> tuple[int, str] | None:
        views = [_felt(lab.status(i)) for i in range(3)]
        if any(v is None for v in views):
            return None
        states = {(int(v["height"]), str(v["state_hash"])) for v in views if v is not None}
        return next(iter(states)) if len(states) == 1 else None

    height, _ = lab.wait("one state on the three seats", agreed, 90)
    assert height > 4
    seats = [lab.json(i, "table", "show", "felt")["validators"] for i in range(3)]
    assert all(len(s) == 3 for s in seats), seats
    # the one that left saw the same chain up to where it stopped following
    left = _felt(lab.status(3))
    assert left is None or int(left["height"]) <= height
