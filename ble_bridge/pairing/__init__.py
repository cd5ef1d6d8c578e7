"""Owning a node: the pairing window, owners bound by ``!pair CODE`` over a Noise DM, owner
commands; the BlueZ agent for devices that pair at the OS level lives in ``gatt.agent``."""
