"""Tunables of the BLE transport (one dataclass, every limit with its default)."""

from __future__ import annotations

from dataclasses import dataclass, field

from gatt.profile import GattProfile


@dataclass(slots=True)
class BleConfig:
    """Everything :class:`gatt.transport.BleTransport` needs to know."""

    adapter: str = "hci0"
    """Always explicit: with several adapters bleak would pick one at random."""
    profile: GattProfile = field(default_factory=GattProfile)
    link_budget: int = 5
    """Links (in + out) this node keeps; from the board profile."""
    send_queue_limit: int = 256
    """Frames queued per link (central links) before send() answers QUEUE_FULL."""
    notify_queue_limit: int = 1024
    """Frames queued for notification (shared by all peripheral links)."""
    writes_in_flight: int = 8
    """Write-without-response calls pipelined per central link."""
    scan_on_s: float = 2.0
    scan_off_s: float = 1.0
    """Scan duty cycle."""
    max_candidates: int = 256
    """Advertisers of the mesh service remembered at once; when full, the one heard longest
    ago (and not linked) is forgotten, so a flood of foreign adverts with our UUID (random
    addresses, garbage data) cannot grow the table."""
    rssi_min: int = -90
    """Devices heard weaker than this are not connected to."""
    candidate_fresh_s: float = 5.0
    """Only connect to nodes heard advertising this recently (others fail with a timeout)."""
    connects_per_round: int = 2
    """Connect attempts between two scan windows."""
    connect_interval_s: float = 0.5
    """At most one outgoing connect attempt per interval (connect rate limit)."""
    connect_timeout_s: float = 10.0
    peripheral_connect_timeouts: int = 2
    """Connects in a row to one node that bluetoothd never answered (bleak's timeout) while
    we held inbound links (we are their peripheral), after which we end every inbound link and
    connect at once: a Linux kernel before 6.4 whose controller driver lacks
    HCI_QUIRK_VALID_LE_STATES (hci_uart H4 on Debian 12's 6.1) never initiates while its
    controller is a peripheral, so two such nodes, each a peripheral of a third, never link
    otherwise. An out-of-range node times out the same way, so this is done once per node
    until a link to it forms (then the normal backoff); 0: never."""
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    backoff_jitter: float = 0.25
    """Backoff delay is multiplied by a uniform factor in [1 - jitter, 1 + jitter]."""
    tie_break_grace_s: float = 3.0
    """A node with the higher peer id waits this long for the lower one to connect first."""
    pause_advertising_on_connect: bool = True
    """Pi 4/5 controllers cannot advertise and initiate at once."""
    max_central_mtu: int = 517
    hello_write: bool = True
    """After subscribing, write one empty frame so the peripheral learns our device and MTU
    at once (BlueZ tells a GATT server both only with a write); receivers ignore it."""
    link_idle_timeout_s: float = 45.0
    """A link to a mesh node with nothing received this long is closed and retried (nodes send
    a keepalive after a third of it without other traffic; :mod:`ble_bridge.mesh.liveness`)."""
    app_idle_timeout_s: float = 120.0
    """Links to BitChat apps (which announce only every 15-30 s) are never closed sooner."""
    first_frame_timeout_s: float = 20.0
    """A link (or an inbound connection) that delivered nothing at all this long is half-open:
    closed and retried."""
    identify_timeout_s: float = 60.0
    """A link whose peer never announced itself on it this long is closed."""
    write_failures_to_close: int = 3
    """Consecutive failed writes on a central link (its peer's GATT app vanished) that end it."""
    adv_retry_base_s: float = 1.0
    adv_retry_max_s: float = 60.0
    """Backoff between attempts to register a refused advertisement."""
    disconnect_stale_at_start: bool = True
    """At start, disconnect LE connections bluetoothd still holds on our adapter (an earlier
    process died with them): their peers see the link end at once and reconnect."""
    seed: int | None = None
    """Seed for backoff jitter (tests); None uses system randomness."""
