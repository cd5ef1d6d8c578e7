"""The mesh's GATT profile: service and characteristic UUIDs, flags, what the node advertises.

Defaults are BitChat's (PROTOCOL.md); a private mesh passes its own service UUID.

The advertisement must fit a legacy advert (31 bytes with flags, :mod:`gatt.advert`): flags
(3) + the 128-bit service UUID list (18, what the BitChat apps' scanners filter on) leave 10
bytes, room for a 6-byte *short id* as manufacturer data (2 + 2 company id + 6) and nothing
else. The full peer id comes from the first announce on a link; the short id only lets a
scanner tell nodes apart before connecting (tie-break, rotation). Where bluetoothd offers
scan-response properties (5.80+, ``--experimental``) the scan response carries the first 8
bytes of the peer id as service data, as the Android app does; older daemons ignore them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

BITCHAT_SERVICE_UUID = "f47b5e2d-4a9e-4c5a-9b3f-8e1d2c3a4b5c"
BITCHAT_CHARACTERISTIC_UUID = "a1b2c3d4-e5f6-4a5b-8c9d-0e1f2a3b4c5d"
CHARACTERISTIC_FLAGS = ("read", "write", "write-without-response", "notify")
"""BlueZ flag names of the one mesh characteristic."""
PEER_ID_ADV_BYTES = 8
"""Scan-response service data: the first 8 bytes of the peer id (Android does the same)."""
SHORT_ID_BYTES = 6
"""Advertised as manufacturer data: the first 6 bytes of the peer id (all a legacy advert
with flags and a 128-bit UUID list has room for)."""
ADV_COMPANY_ID = 0xFFFF
"""Manufacturer-data company id of the short id: 0xFFFF, the Bluetooth SIG's value for
data not tied to an assigned company id."""


class ProfileError(ValueError):
    """A UUID or advertised peer id that does not fit the profile."""


def same_peer(a: bytes | None, b: bytes | None) -> bool:
    """Do two (possibly shortened) peer ids name the same node? Compares the common prefix."""
    if not a or not b:
        return False
    n = min(len(a), len(b), PEER_ID_ADV_BYTES)
    return a[:n] == b[:n]


def id_before(a: bytes, b: bytes) -> bool:
    """``a`` sorts before ``b`` on the bytes both (possibly shortened) ids have."""
    n = min(len(a), len(b), PEER_ID_ADV_BYTES)
    return a[:n] < b[:n]


def _norm(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError as e:
        raise ProfileError(f"not a UUID: {value!r}") from e


@dataclass(frozen=True, slots=True)
class GattProfile:
    """Which service and characteristic carry mesh frames."""

    service_uuid: str = BITCHAT_SERVICE_UUID
    characteristic_uuid: str = BITCHAT_CHARACTERISTIC_UUID

    def __post_init__(self) -> None:
        object.__setattr__(self, "service_uuid", _norm(self.service_uuid))
        object.__setattr__(self, "characteristic_uuid", _norm(self.characteristic_uuid))

    @classmethod
    def private(cls, service_uuid: str, characteristic_uuid: str | None = None) -> GattProfile:
        """A private mesh: own service UUID, BitChat's characteristic unless given."""
        return cls(service_uuid, characteristic_uuid or BITCHAT_CHARACTERISTIC_UUID)

    def service_data(self, peer_id: bytes) -> dict[str, bytes]:
        """Scan-response service data announcing ``peer_id`` (first 8 bytes)."""
        if len(peer_id) < PEER_ID_ADV_BYTES:
            raise ProfileError("peer id shorter than 8 bytes")
        return {self.service_uuid: bytes(peer_id[:PEER_ID_ADV_BYTES])}

    def manufacturer_data(self, peer_id: bytes) -> dict[int, bytes]:
        """Advertised manufacturer data: the short id (first 6 bytes of ``peer_id``)."""
        if len(peer_id) < SHORT_ID_BYTES:
            raise ProfileError("peer id shorter than 6 bytes")
        return {ADV_COMPANY_ID: bytes(peer_id[:SHORT_ID_BYTES])}

    def advertisement(self, peer_id: bytes, *, short_id: bool = True) -> dict[str, Any]:
        """The ``LEAdvertisement1`` properties of a node (plain values; see :mod:`gatt.advert`)."""
        props: dict[str, Any] = {
            "Type": "peripheral",
            "ServiceUUIDs": [self.service_uuid],
            "Discoverable": True,
            "ScanResponseServiceData": self.service_data(peer_id),
        }
        if short_id:
            props["ManufacturerData"] = self.manufacturer_data(peer_id)
        return props

    def peer_id_from(
        self, service_data: dict[str, bytes], manufacturer_data: dict[int, bytes] | None = None
    ) -> bytes | None:
        """What an advertiser tells of its peer id before connecting: 8 bytes of service data
        (a scan response, or the Android app's), else the 6-byte short id, else None."""
        raw = service_data.get(self.service_uuid)
        if raw is not None and len(raw) >= PEER_ID_ADV_BYTES:
            return bytes(raw[:PEER_ID_ADV_BYTES])
        short = (manufacturer_data or {}).get(ADV_COMPANY_ID)
        if short is not None and len(short) == SHORT_ID_BYTES:
            return bytes(short)
        return None
