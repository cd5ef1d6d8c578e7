"""Subcommands of the ``ble-bridge`` CLI, one module each, each with ``register(sub)``."""
