"""Scenarios on the loopback air (:mod:`ble_bridge.air`): mesh, table, islands, sweeps.

Start at :func:`ble_bridge.sim.scenario.simulate` (or ``ble-bridge simulate``); see
``docs/sim.md`` for the link model, the profiles and their sources.
"""
