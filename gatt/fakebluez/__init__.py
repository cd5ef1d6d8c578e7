"""A fake bluetoothd on a private D-Bus: N adapters linked like radios, for CI without a radio."""

from gatt.fakebluez.config import FakeBluezConfig, LinkModel
from gatt.fakebluez.harness import FakeBluezProcess, FakeControl

__all__ = ["FakeBluezConfig", "FakeBluezProcess", "FakeControl", "LinkModel"]
