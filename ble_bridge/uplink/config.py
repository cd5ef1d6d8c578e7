"""``[uplink]``: a gateway that joins this BLE island to others through an MQTT broker.

Every key has a default except ``broker`` and ``mesh_id``. The section maps onto the frozen
:class:`UplinkConfig`; ``apply_table`` checks keys and types, ``__post_init__`` checks values
and names the key that is wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..wire.packet import PacketType

FRAME_TYPES: dict[str, frozenset[int]] = {
    "announce": frozenset({PacketType.ANNOUNCE}),
    "consensus": frozenset({PacketType.CONSENSUS}),
    "chat": frozenset({PacketType.MESSAGE}),
    "leave": frozenset({PacketType.LEAVE}),
    "noise": frozenset({PacketType.NOISE_HANDSHAKE, PacketType.NOISE_ENCRYPTED}),
    "sync": frozenset({PacketType.REQUEST_SYNC}),
    "file": frozenset({PacketType.FILE_TRANSFER}),
}
"""Names of the frame types ``frame_types`` may list, and the packet types each stands for.
``consensus`` carries votes, proposals and operations as neighbour gossip and the tables'
state announcements; ``announce`` (BitChat announces: keys and neighbour lists) must go up,
because a remote gateway's announce is what binds its uplink link to its peer id."""

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """The parsed ``broker`` URL."""

    tls: bool
    host: str
    port: int
    username: str | None
    password: str | None


def parse_broker_url(url: str) -> BrokerAddress:
    """``mqtt://[user[:pass]@]host[:port]`` or ``mqtts://...``; raises ``ValueError``."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(f"broker = {url!r}: the scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError(f"broker = {url!r} names no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"broker = {url!r}: no path, query or fragment after the host")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError as exc:
        raise ValueError(f"broker = {url!r}: {exc}") from None
    return BrokerAddress(
        tls=parts.scheme == "mqtts",
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def _topic_level(value: str, key: str) -> None:
    if not value:
        raise ValueError(f"{key} must not be empty")
    if any(c in value for c in "#+\x00") or value.startswith("$"):
        raise ValueError(f"{key} = {value!r}: no '#', '+' or NUL, and no leading '$'")


@dataclass(frozen=True, slots=True)
class UplinkConfig:
    """One gateway's uplink to an MQTT broker (see the README's ``[uplink]``)."""

    broker: str = ""
    """``mqtt://host[:1883]`` or ``mqtts://host[:8883]``; user and password may be in it."""
    ca_file: Path | None = None
    """CA bundle for ``mqtts://`` (default: the system's trust store)."""
    cert_file: Path | None = None
    """Client certificate for brokers that want one (with ``key_file``)."""
    key_file: Path | None = None
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None
    """Read the password from this file (first line), so it need not sit in the config."""
    topic_prefix: str = "ble-bridge"
    mesh_id: str = ""
    """Names the network of islands this gateway joins; gateways of other meshes sharing the
    broker are ignored (their messages are dropped as ``unknown_mesh``)."""
    qos: int = 0
    """0 or 1 (QoS 1 may duplicate: dedup absorbs that). Presence is always QoS 1."""
    bytes_per_s: float = 32768.0
    """Upstream budget, bytes of MQTT payload a second; 0: no limit. Each remote gateway
    gets the same inbound."""
    frames_per_s: float = 200.0
    """Upstream budget, mesh frames a second; 0: no limit. Each remote gateway gets the
    same inbound."""
    burst_s: float = 2.0
    """Each budget's token bucket holds this many seconds of it."""
    frame_types: tuple[str, ...] = ("announce", "consensus")
    """Frame types carried both ways (names in ``FRAME_TYPES``; ``chat`` is off by default)."""
    priority: int = 0
    """This gateway's priority (0-255): remote gateways beyond ``max_gateways`` are left
    unlinked lowest priority first."""
    max_gateways: int = 8
    """Remote gateways linked at once (each is one link of the mesh)."""
    max_known_gateways: int = 64
    """Remote gateways tracked (presence) at once; more are ignored and counted."""
    max_message_bytes: int = 32768
    """Largest MQTT payload sent or accepted; a larger one is dropped as ``oversized``."""
    max_frame: int = 4096
    """Largest mesh frame on an uplink link (the mesh fragments bigger packets)."""
    batch_linger: float = 0.005
    """Frames queued within this many seconds leave in one MQTT message."""
    queue_frames: int = 512
    """Frames waiting for the budget per link; more are refused (``queue_full``)."""
    inbound_queue: int = 1024
    """MQTT messages the client buffers before the node reads them; more are discarded."""
    heartbeat_interval: float = 2.0
    link_timeout: float = 8.0
    """A remote gateway not heard for this long is down; our own probe not echoed for this
    long means the broker stalled (accepts, never delivers): reconnect."""
    seen_capacity: int = 65536
    seen_ttl: float = 900.0
    """The uplink's own, longer seen window (frames by digest): replays of frames the mesh's
    seen cache has forgotten are dropped as ``seen``."""
    mqtt_version: int = 5
    """5 (MQTT 5: our own messages on ``all`` are not echoed back) or 4 (3.1.1)."""
    keepalive: int = 15
    connect_timeout: float = 10.0
    reconnect_initial: float = 0.5
    reconnect_max: float = 30.0
    client_id: str = ""
    """Default: ``ble-bridge-<peer id>``."""

    def __post_init__(self) -> None:
        if not self.broker:
            raise ValueError("broker is required (mqtt://host:port or mqtts://host:port)")
        address = parse_broker_url(self.broker)
        if not self.mesh_id:
            raise ValueError("mesh_id is required: gateways of one mesh must agree on it")
        _topic_level(self.mesh_id, "mesh_id")
        for i, level in enumerate(self.topic_prefix.split("/")):
            _topic_level(level, f"topic_prefix (level {i + 1})")
        if self.mqtt_version not in (4, 5):
            raise ValueError(f"mqtt_version = {self.mqtt_version}: 4 (3.1.1) or 5")
        if self.qos not in (0, 1):
            raise ValueError(f"qos = {self.qos}: 0 or 1")
        for key in ("bytes_per_s", "frames_per_s"):
            v = getattr(self, key)
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"{key} = {v}: a finite number ≥ 0 (0: no limit)")
        positive = (
            "burst_s",
            "heartbeat_interval",
            "link_timeout",
            "seen_ttl",
            "connect_timeout",
            "reconnect_initial",
            "reconnect_max",
        )
        for key in positive:
            v = getattr(self, key)
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{key} = {v}: a finite number > 0")
        if not 0 <= self.batch_linger <= 1:
            raise ValueError(f"batch_linger = {self.batch_linger}: 0 to 1 s")
        if self.link_timeout < 2 * self.heartbeat_interval:
            raise ValueError("link_timeout must be at least 2 × heartbeat_interval")
        if self.reconnect_max < self.reconnect_initial:
            raise ValueError("reconnect_max must be ≥ reconnect_initial")
        if not self.frame_types:
            raise ValueError("frame_types is empty")
        for name in self.frame_types:
            if name not in FRAME_TYPES:
                raise ValueError(f"frame_types: unknown {name!r}; known: {sorted(FRAME_TYPES)}")
        if "announce" not in self.frame_types:
            raise ValueError("frame_types must include 'announce' (links bind by announces)")
        if not 0 <= self.priority <= 255:
            raise ValueError(f"priority = {self.priority}: 0 to 255")
        bounds = {
            "max_gateways": (1, 1024),
            "max_known_gateways": (1, 65536),
            "max_message_bytes": (1024, 1 << 24),
            "max_frame": (64, 65535),
            "queue_frames": (1, 1 << 20),
            "inbound_queue": (1, 1 << 20),
            "seen_capacity": (16, 1 << 24),
            "keepalive": (2, 3600),
        }
        for key, (lo, hi) in bounds.items():
            v = getattr(self, key)
            if not lo <= v <= hi:
                raise ValueError(f"{key} = {v}: {lo} to {hi}")
        if self.max_known_gateways < self.max_gateways:
            raise ValueError("max_known_gateways must be ≥ max_gateways")
        if self.max_frame + 64 > self.max_message_bytes:
            raise ValueError("max_message_bytes must exceed max_frame by 64 (message header)")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        tls_only = ("ca_file", "cert_file")
        if not address.tls and any(getattr(self, k) is not None for k in tls_only):
            raise ValueError("ca_file / cert_file need an mqtts:// broker")
        if self.password is not None and self.password_file is not None:
            raise ValueError("password and password_file: give one")
        if len(self.client_id) > 64:
            raise ValueError("client_id: at most 64 characters")

    @property
    def address(self) -> BrokerAddress:
        return parse_broker_url(self.broker)

    @property
    def packet_types(self) -> frozenset[int]:
        """The packet types that cross the uplink (fragments of them too)."""
        out: set[int] = set()
        for name in self.frame_types:
            out |= FRAME_TYPES[name]
        return frozenset(out)

    def credentials(self) -> tuple[str | None, str | None]:
        """(username, password): the keys win over the URL; the file is read now."""
        address = self.address
        user = self.username if self.username is not None else address.username
        password = self.password if self.password is not None else address.password
        if self.password_file is not None:
            try:
                password = self.password_file.read_text().splitlines()[0]
            except (OSError, IndexError) as exc:
                raise ValueError(f"password_file {self.password_file}: {exc}") from exc
        return user, password
