"""Tunables of the fake bluetoothd: the link model and the Pi controller behaviours."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(slots=True)
class LinkModel:
    """How one simulated BLE connection behaves (same knobs as the loopback air)."""

    latency_s: float = 0.0
    """One-way delay added to every forwarded write and notification."""
    loss: float = 0.0
    """Probability that a write-without-response or notification is lost."""
    mtu: int = 247
    """ATT MTU negotiated on connect (BlueZ offers 517; Pis commonly settle at 247)."""


@dataclass(slots=True)
class FakeBluezConfig:
    """Everything the fake can be told; JSON-serialisable for the control interface."""

    adapters: int = 2
    link: LinkModel | None = None
    link_limit: int = 7
    """Connections per adapter before Connect fails with Limited Resources (Pi 3B+: ~7)."""
    adv_stops_on_connect: bool = True
    """BlueZ stops a connectable advertisement once a central connects."""
    connect_fails_while_advertising: bool = False
    """BCM4345C0 rule: an outgoing connect while advertising fails (HCI 0x3c)."""
    inprogress_rate: float = 0.0
    """Probability that Connect answers org.bluez.Error.InProgress."""
    abort_rate: float = 0.0
    """Probability that Connect fails with le-connection-abort-by-local (after a blip)."""
    connect_delay_s: float = 0.01
    connect_timeout_s: float = 1.0
    """How long a Connect to a device that no longer advertises takes to fail."""
    adv_interval_s: float = 0.1
    """How often scanning adapters see each advertisement (RSSI refresh)."""
    device_timeout_s: float = 30.0
    """Unconnected devices not seen for this long are removed (BlueZ TemporaryTimeout)."""
    forward_window: int = 32
    """Forwarded calls in flight per serving app (dbus-daemon allows 128 pending replies)."""
    link_buffer: int = 65536
    """Frames queued per link direction before further ones are dropped and counted."""
    connect_race: float = 0.0
    """Probability that a Connect ends half-open, as with one bluetoothd driving several
    controllers (the ATT socket connects before mgmt's "Device Connected"): the connecting
    side fails ("failed to discover services, device disconnected") while the other side
    keeps a connected device that never writes; or (half the time) the connecting side
    gets a link whose notifications never arrive and whose writes go nowhere, and the other
    side sees nothing. Only a Disconnect (or a power cycle) ends it."""
    connect_race_side: str = "either"
    """Which half stays up in a race: "peripheral", "central" or "either" (at random)."""
    connect_blocked_while_peripheral: bool = False
    """The LE-states limit seen on real bluetoothd in the VM (Debian 12's 6.1 kernel, an H4
    controller on hci_uart): the kernel never sends LE Create Connection while the adapter
    holds a link in the peripheral role (``check_pending_le_conn`` refuses unless the driver
    sets HCI_QUIRK_VALID_LE_STATES; vhci does, hci_uart does not). bluetoothd logs
    "Connection attempt to" and the Connect call just waits: it completes if the adapter's
    last peripheral-role link ends meanwhile, is cancelled by a Disconnect of that device
    (what bleak does at its own timeout), or fails after ``blocked_connect_s``."""
    blocked_connect_s: float = 40.0
    """How long such a blocked Connect waits before failing (the kernel's L2CAP connect
    timeout, 40 s; bleak gives up sooner)."""
    bluez_version: str = "5.66"
    """The bluetoothd being imitated: 5.80+ reads the scan-response properties (with
    ``experimental``); 5.66 is Debian bookworm's / Raspberry Pi OS's."""
    experimental: bool = False
    """``bluetoothd --experimental``."""
    max_adv_len: int = 31
    """Advertising data the controller takes (31: a Bluetooth 4.x legacy advert)."""
    seed: int = 1
    reach: dict[str, list[int]] | None = None
    """Radio range: adapter index (as a string) -> adapters it can hear and connect to
    (symmetric by convention). None: everyone hears everyone."""

    def in_range(self, a: int, b: int) -> bool:
        if self.reach is None:
            return True
        return b in self.reach.get(str(a), []) or a in self.reach.get(str(b), [])

    @classmethod
    def line(cls, adapters: int, **kw: Any) -> FakeBluezConfig:
        """Adapters in a row: each hears only its neighbours (forces multi-hop)."""
        reach = {str(i): [j for j in (i - 1, i + 1) if 0 <= j < adapters] for i in range(adapters)}
        return cls(adapters=adapters, reach=reach, **kw)

    def version(self) -> tuple[int, int]:
        major, _, minor = self.bluez_version.partition(".")
        return int(major), int(minor or 0)

    def link_model(self) -> LinkModel:
        return self.link if self.link is not None else LinkModel()

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> FakeBluezConfig:
        raw: dict[str, Any] = json.loads(text) if text else {}
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FakeBluezConfig:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in raw.items() if k in known and k != "link"}
        cfg = cls(**kwargs)
        if isinstance(raw.get("link"), dict):
            lk = {f.name for f in fields(LinkModel)}
            cfg.link = LinkModel(**{k: v for k, v in raw["link"].items() if k in lk})
        return cfg
