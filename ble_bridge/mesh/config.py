"""Every tunable and bound of the mesh router in one frozen dataclass (aioquic style)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..wire.fragment import ReassemblyLimits
from ..wire.packet import DEFAULT_LIMITS, DEFAULT_TTL, DecodeLimits, PacketType

CAP_RELAY_DEFERRAL = 1 << 15
"""Announce capability bit: this node follows ble-bridge's ranked relay deferral, so others
may leave a peer to it. BitChat apps do not set it and are never relied on that way."""

# (highest degree of the band, min jitter s, max jitter s); PROTOCOL.md's 10–40 ms for
# 0–2 links up to 100–220 ms for 10+, with two bands in between.
DEFAULT_RELAY_JITTER: tuple[tuple[int, float, float], ...] = (
    (2, 0.010, 0.040),
    (5, 0.030, 0.090),
    (9, 0.060, 0.150),
    (1 << 30, 0.100, 0.220),
)


@dataclass(frozen=True, slots=True)
class MeshConfig:
    """Routing policy and the limit of every cache, queue and allowance of one node."""

    # packets
    ttl: int = DEFAULT_TTL
    nickname: str | None = None
    capabilities: int | None = None
    decode_limits: DecodeLimits = DEFAULT_LIMITS
    reassembly: ReassemblyLimits = field(default_factory=ReassemblyLimits)
    # unsigned non-fragment packets of these types are relayed as opaque frames (BitChat's
    # Noise and file-transfer traffic) but never delivered; any other unsigned type is dropped
    unsigned_relay_types: frozenset[int] = frozenset(
        {PacketType.NOISE_HANDSHAKE, PacketType.NOISE_ENCRYPTED, PacketType.FILE_TRANSFER}
    )
    # unsigned packets of these types addressed to this node are delivered (BitChat's Noise
    # handshake and transport frames, authenticated by the Noise session, not a signature)
    deliver_unsigned_types: frozenset[int] = frozenset(
        {PacketType.NOISE_HANDSHAKE, PacketType.NOISE_ENCRYPTED}
    )
    # dedup
    seen_capacity: int = 4096
    seen_ttl: float = 300.0
    # freshness against the mesh-time estimate
    freshness_window: float = 120.0
    clock_samples: int = 64
    clock_sample_ttl: float = 600.0
    # relaying
    relay_jitter: tuple[tuple[int, float, float], ...] = DEFAULT_RELAY_JITTER
    suppression_threshold: int = 4
    neighbor_pruning: bool = True  # skip links whose peer is known to hold the packet
    direct_to_neighbor: bool = True  # a unicast to a direct neighbour goes on its link only
    relay_deferral: bool = True  # leave a peer to its better-ranked neighbour that holds it
    neighbor_info_ttl: float = 90.0
    max_pending_relays: int = 1024
    max_outbound_frames: int = 4096
    max_events: int = 4096
    # per-link inbound token bucket (frames)
    inbound_rate: float = 100.0
    inbound_burst: float = 200.0
    # per-link circuit breaker
    breaker_failures: int = 5
    breaker_open_time: float = 2.0
    breaker_max_open_time: float = 30.0
    # neighbour / key table
    max_peers: int = 512
    # announces
    announce_interval_alone: float = 4.0
    announce_interval_linked: tuple[float, float] = (15.0, 30.0)
    announce_on_link_up: tuple[float, float] = (0.05, 0.25)
    min_announce_spacing: float = 1.0
    sync_announces: int = 32  # recent announces of other peers replayed to a new neighbour
    # housekeeping (reassembly expiry, idle timers)
    housekeeping_interval: float = 5.0

    def jitter_range(self, degree: int) -> tuple[float, float]:
        """Relay jitter bounds for a node with ``degree`` links."""
        for top, lo, hi in self.relay_jitter:
            if degree <= top:
                return lo, hi
        _, lo, hi = self.relay_jitter[-1]
        return lo, hi
