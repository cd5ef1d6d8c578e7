"""Every startup failure of ``ble-bridge run`` is one stderr line and its own exit code.

Real processes throughout: ``ble-bridge run`` as systemd starts it, against a bogus bus
address (no system bus), a private dbus-daemon without org.bluez (bluetoothd absent), the
fake BlueZ with another adapter name (adapter missing), and data dirs that cannot be used.
Root ignores file modes, so "read-only" is a read-only tmpfs mount (skipped where mounting is
not allowed) and, everywhere, a file standing where the directory should be; "full" is a
small tmpfs filled to the last block.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ble_bridge.errors import ExitCode
from ble_bridge.signer import new_key_signer_file
from ble_bridge.wire.identity import Identity
from gatt.fakebluez import FakeBluezConfig, FakeBluezProcess
from gatt.fakebluez.bus import PrivateBus, dbus_daemon_path
from gatt.fakebluez.harness import _source_root

RUN_TIMEOUT_S = 120.0
"""A failing start takes a second or two; generous for a loaded machine."""


def _config(tmp: Path, data_dir: Path, adapter: str = "hci0", key: Path | None = None) -> Path:
    conf = tmp / "node.toml"
    key_line = f'key_file = "{key}"\n' if key else ""
    conf.write_text(
        f'[node]\ndata_dir = "{data_dir}"\n{key_line}control_socket = "{tmp / "c.sock"}"\n'
        f'[ble]\nadapter = "{adapter}"\n'
    )
    return conf


def _run(conf: Path, bus: str) -> tuple[int, list[str]]:
    env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": bus, "PYTHONPATH": _source_root()}
    env.pop("NOTIFY_SOCKET", None)
    proc = subprocess.run(
        [sys.executable, "-m", "ble_bridge.cli", "run", "--config", str(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    return proc.returncode, proc.stderr.splitlines()


def _node_dir(tmp: Path) -> Path:
    d = tmp / "data"
    d.mkdir()
    ident = Identity.generate()
    ident.save(d / "identity.key")
    new_key_signer_file(d / "identity.key", ident.signing_public)  # as keygen does
    return d


def _needs_dbus() -> None:
    if dbus_daemon_path() is None:
        pytest.skip("dbus-daemon is not installed (Debian package 'dbus')")


def test_no_system_bus(tmp_path: Path) -> None:
    conf = _config(tmp_path, _node_dir(tmp_path))
    bogus = f"unix:path={tmp_path / 'no-such-bus'}"
    code, lines = _run(conf, bogus)
    assert code == ExitCode.NO_SYSTEM_BUS == 4
    assert lines == [
        f"ble-bridge run: error: system D-Bus: cannot connect: {bogus}: [Errno 2] No such file "
        "or directory; start dbus (systemctl start dbus) and check DBUS_SYSTEM_BUS_ADDRESS"
    ]


@pytest.mark.dbus
def test_bluetoothd_absent(tmp_path: Path) -> None:
    _needs_dbus()
    conf = _config(tmp_path, _node_dir(tmp_path))
    bus = PrivateBus()  # a system bus where nobody owns org.bluez
    try:
        code, lines = _run(conf, bus.start())
    finally:
        bus.stop()
    assert code == ExitCode.BLUETOOTHD_ABSENT == 5
    assert lines == [
        "ble-bridge run: error: bluetoothd: org.bluez is not on the bus; "
        "apt install bluez && systemctl enable --now bluetooth"
    ]


@pytest.mark.dbus
def test_adapter_missing(tmp_path: Path) -> None:
    _needs_dbus()
    conf = _config(tmp_path, _node_dir(tmp_path), adapter="hci7")
    fake = FakeBluezProcess(FakeBluezConfig(adapters=2))
    try:
        code, lines = _run(conf, fake.start())
    finally:
        fake.close()
    assert code == ExitCode.ADAPTER_MISSING == 3
    assert lines == [
        "ble-bridge run: error: adapter: hci7 not found (have: hci0, hci1); check `btmgmt info`; "
        "on a Pi enable the UART (dtparam=krnbt=on) and `rfkill unblock bluetooth`"
    ]


def test_data_dir_is_a_file(tmp_path: Path) -> None:
    where = tmp_path / "data"
    where.write_text("not a directory")
    key = tmp_path / "identity.key"
    Identity.generate().save(key)
    code, lines = _run(_config(tmp_path, where, key=key), "unix:path=/nonexistent")
    assert code == ExitCode.DATA_DIR == 6
    assert lines == [
        f"ble-bridge run: error: data dir {where} is not a directory; "
        f"make {where} a writable directory of the ble-bridge user ([node] data_dir)"
    ]
    below = where / "state"  # a file where a parent directory should be
    code, lines = _run(_config(tmp_path, below, key=key), "unix:path=/nonexistent")
    assert code == ExitCode.DATA_DIR
    assert lines == [
        f"ble-bridge run: error: data dir {below}: a parent is not a directory; "
        f"make {below} a writable directory of the ble-bridge user ([node] data_dir)"
    ]


@contextlib.contextmanager
def _tmpfs(where: Path, options: str) -> Iterator[Path]:
    where.mkdir()
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


def test_data_dir_read_only(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "ro", "size=1m") as ro:
        Identity.generate().save(ro / "identity.key")  # the key is readable, the dir is not
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        code, lines = _run(_config(tmp_path, ro), "unix:path=/nonexistent")
    assert code == ExitCode.DATA_DIR
    assert lines == [
        f"ble-bridge run: error: data dir {ro} is on a read-only filesystem; remount it "
        "read-write (an SD card remounted read-only after errors needs fsck) or point "
        "[node] data_dir at a writable place"
    ]


def test_data_dir_full(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "full", "size=512k") as full:
        Identity.generate().save(full / "identity.key")
        with contextlib.suppress(OSError), (full / "filler").open("wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        conf = _config(tmp_path, full)
        conf.write_text(conf.read_text().replace("[ble]", "full_wait_s = 0.0\n[ble]"))
        code, lines = _run(conf, "unix:path=/nonexistent")
    # not the operator's (NO_RESTART) but storage: systemd's restart succeeds once space is freed
    assert code == ExitCode.STORAGE == 8
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"ble-bridge run: error: data dir {full} is full ("), lines
    assert lines[0].endswith(
        "; free space on that filesystem (journalctl --vacuum-size, old logs); the node starts"
        " again by itself (systemd restarts it)"
    )


def test_key_problem_stays_a_config_error(tmp_path: Path) -> None:
    d = tmp_path / "data"
    d.mkdir()
    (d / "identity.key").write_bytes(b"garbage")
    code, lines = _run(_config(tmp_path, d), "unix:path=/nonexistent")
    assert code == ExitCode.USAGE == 2
    assert len(lines) == 1 and lines[0].startswith(f"ble-bridge run: {d / 'identity.key'}"), lines
