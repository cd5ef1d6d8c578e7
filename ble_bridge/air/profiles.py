"""BLE link profiles for the loopback air: the numbers that make it behave like Pi radios.

Each :class:`LinkProfile` is one set of measured or documented figures; ``docs/sim.md``
gives the source of every number. Change a profile only with evidence from real hardware.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..transport import MAX_ATT_MTU, MIN_ATT_MTU

L2CAP_ATT_HEADER = 7
"""L2CAP (4) + ATT (3) bytes in front of every write/notification payload."""
LL_PDU_OVERHEAD = 14
"""Per link-layer PDU: preamble, access address, header, CRC, and the empty reply's share."""


@dataclass(frozen=True, slots=True)
class LinkProfile:
    """Radio and host behaviour of one kind of node; times in seconds, rates in bytes/s."""

    name: str
    att_mtu: int
    """ATT MTU negotiated on every link (BlueZ offers 517)."""
    frame_size: int
    """Frame size the mesh should use; goodput figures are for frames of this size."""
    ll_payload: int
    """Link-layer PDU payload: 251 with Data Length Extension, 27 without."""
    conn_interval: tuple[float, float]
    link_rate: float
    """Goodput of one link, one direction, with ``frame_size`` frames."""
    radio_rate: float
    """Goodput of a node's radio summed over its links (sender and receiver both pay)."""
    scan_airtime: float
    """Fraction of the radio's airtime spent scanning while the node has a free link slot."""
    supervision_timeout: tuple[float, float]
    first_connect_failure: float
    reconnect_failure: float
    connect_setup: tuple[float, float]
    """LE connect + MTU exchange + GATT discovery + subscribe, through D-Bus."""
    discovery_delay: tuple[float, float]
    """From starting a scan to seeing an advertising neighbour (advertising interval)."""
    scan_period: float
    """How often a node with a free slot looks for a neighbour to connect to."""
    max_links: int
    """Links per node, inbound and outbound together."""
    readvertise_delay: float | None
    """Delay before re-advertising after a central connected; ``None``: not until it drops."""
    mean_link_lifetime: float | None
    """Mean time between spontaneous link drops (interference); ``None``: never."""
    mtu_choices: tuple[int, ...] = ()
    """If set, each node's ATT MTU is drawn from these at power-on (phones: 185, 517, 23);
    a link gets the smaller of its two ends'. Empty: every link uses ``att_mtu``."""
    queue_limit: int = 64
    """Frames a link may hold waiting to go out, per direction."""
    connect_backoff: tuple[float, float] = (1.0, 30.0)

    def __post_init__(self) -> None:
        for mtu in (self.att_mtu, *self.mtu_choices):
            if not MIN_ATT_MTU <= mtu <= MAX_ATT_MTU:
                raise ValueError(f"ATT MTU {mtu} outside {MIN_ATT_MTU}..{MAX_ATT_MTU}")

    def airtime_bytes(self, frame_len: int) -> float:
        """Bytes of airtime a frame costs: headers plus per-PDU overhead."""
        sdu = frame_len + L2CAP_ATT_HEADER
        return sdu + LL_PDU_OVERHEAD * math.ceil(sdu / self.ll_payload)

    def frame_seconds(self, frame_len: int, rate: float) -> float:
        """Time a frame occupies a channel whose goodput is ``rate`` for ``frame_size`` frames."""
        ref = self.airtime_bytes(self.frame_size) / self.frame_size
        return self.airtime_bytes(frame_len) / (rate * ref)


PI_TUNED = LinkProfile(
    name="pi-tuned",
    att_mtu=517,
    frame_size=244,
    ll_payload=251,
    conn_interval=(0.015, 0.015),
    link_rate=15_000.0,
    radio_rate=20_000.0,
    scan_airtime=0.10,
    supervision_timeout=(0.42, 0.72),
    first_connect_failure=0.15,
    reconnect_failure=0.05,
    connect_setup=(0.3, 1.0),
    discovery_delay=(0.1, 0.6),
    scan_period=2.0,
    max_links=4,
    readvertise_delay=0.2,
    mean_link_lifetime=1800.0,
)

PI_UNTUNED = LinkProfile(
    name="pi-untuned",
    att_mtu=517,
    frame_size=244,
    ll_payload=251,
    conn_interval=(0.030, 0.050),
    link_rate=4_000.0,
    radio_rate=8_000.0,
    scan_airtime=0.25,
    supervision_timeout=(0.42, 0.42),
    first_connect_failure=0.30,
    reconnect_failure=0.10,
    connect_setup=(1.0, 3.0),
    discovery_delay=(0.3, 2.0),
    scan_period=5.0,
    max_links=4,
    readvertise_delay=None,
    mean_link_lifetime=900.0,
)

ZERO2W = LinkProfile(
    name="zero2w",
    att_mtu=517,
    frame_size=244,
    ll_payload=27,
    conn_interval=(0.030, 0.050),
    link_rate=2_000.0,
    radio_rate=2_700.0,
    scan_airtime=0.25,
    supervision_timeout=(0.42, 0.42),
    first_connect_failure=0.30,
    reconnect_failure=0.10,
    connect_setup=(1.0, 3.0),
    discovery_delay=(0.3, 2.0),
    scan_period=5.0,
    max_links=4,
    readvertise_delay=None,
    mean_link_lifetime=900.0,
)

IDEAL = LinkProfile(
    name="ideal",
    att_mtu=517,
    frame_size=244,
    ll_payload=251,
    conn_interval=(0.001, 0.001),
    link_rate=10_000_000.0,
    radio_rate=100_000_000.0,
    scan_airtime=0.0,
    supervision_timeout=(0.1, 0.1),
    first_connect_failure=0.0,
    reconnect_failure=0.0,
    connect_setup=(0.01, 0.01),
    discovery_delay=(0.01, 0.05),
    scan_period=0.2,
    max_links=64,
    readvertise_delay=0.0,
    mean_link_lifetime=None,
    queue_limit=1024,
    connect_backoff=(0.1, 1.0),
)

PROFILES: dict[str, LinkProfile] = {p.name: p for p in (PI_TUNED, PI_UNTUNED, ZERO2W, IDEAL)}
DEFAULT_PROFILE = PI_TUNED.name


def get_profile(name: str) -> LinkProfile:
    """The profile called ``name``; raises ``KeyError`` listing the known names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown link profile {name!r}; known: {', '.join(PROFILES)}") from None
