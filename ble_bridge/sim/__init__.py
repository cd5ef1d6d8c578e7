"""The loopback air: a whole BLE mesh in one process, on virtual time, deterministic by seed.

Start at :func:`ble_bridge.sim.scenario.simulate` (or ``ble-bridge simulate``); see
``docs/sim.md`` for the link model, the profiles and their sources.
"""
