"""The loopback air: simulated BLE radios and links on virtual time, deterministic by seed.

A Transport world (like bumble's ``link.py``): clock, link profiles, topologies, the link
model (:mod:`.air`), pcap capture, fault plans (plain data), the :class:`~.network.Network`
that gives nodes lives on it, and a simulated MQTT broker. It knows nodes only as
:class:`~.network.SimNode` (start, stop); the scenarios that run nodes on it live in
:mod:`ble_bridge.sim`. See ``docs/sim.md``.
"""
