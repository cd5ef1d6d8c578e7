"""Fake BlueZ for the gatt tests: a private dbus-daemon plus the fake bluetoothd process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gatt.fakebluez import FakeBluezConfig, FakeBluezProcess
from gatt.fakebluez.bus import dbus_daemon_path


@pytest.fixture
def fake_bluez_config() -> FakeBluezConfig:
    """Override in a test module (or parametrize) to change the fake's behaviour."""
    return FakeBluezConfig(adapters=2)


@pytest.fixture
def fake_bluez(
    fake_bluez_config: FakeBluezConfig, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeBluezProcess]:
    """A running fake bluetoothd; ``DBUS_SYSTEM_BUS_ADDRESS`` points bleak and bless at it."""
    if dbus_daemon_path() is None:
        pytest.skip("dbus-daemon is not installed (Debian package 'dbus')")
    fake = FakeBluezProcess(fake_bluez_config)
    address = fake.start()
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
    try:
        yield fake
    finally:
        fake.close()
