"""A real mosquitto per test, started on a free localhost port with its own config."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ble_bridge.uplink.mosquitto import Mosquitto, mosquitto_binary


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed: scripts/setup.sh installs it")
    broker = Mosquitto()
    broker.start()
    try:
        yield broker
    finally:
        broker.close()
