"""ble-bridge: a BitChat-compatible BLE mesh for Raspberry Pi nodes with BFT consensus."""

__version__ = "0.1.0"
