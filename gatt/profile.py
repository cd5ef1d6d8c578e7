"""The mesh's GATT profile: service and characteristic UUIDs, flags, advertised peer id.

Defaults are BitChat's (PROTOCOL.md); a private mesh passes its own service UUID.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

BITCHAT_SERVICE_UUID = "f47b5e2d-4a9e-4c5a-9b3f-8e1d2c3a4b5c"
BITCHAT_CHARACTERISTIC_UUID = "a1b2c3d4-e5f6-4a5b-8c9d-0e1f2a3b4c5d"
CHARACTERISTIC_FLAGS = ("read", "write", "write-without-response", "notify")
"""BlueZ flag names of the one mesh characteristic."""
PEER_ID_ADV_BYTES = 8
"""Advertised as service data: the first 8 bytes of the peer id (Android does the same)."""


class ProfileError(ValueError):
    """A UUID or advertised peer id that does not fit the profile."""


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
        """Advertised service data announcing ``peer_id`` (first 8 bytes)."""
        if len(peer_id) < PEER_ID_ADV_BYTES:
            raise ProfileError("peer id shorter than 8 bytes")
        return {self.service_uuid: bytes(peer_id[:PEER_ID_ADV_BYTES])}

    def peer_id_from(self, service_data: dict[str, bytes]) -> bytes | None:
        """The advertised peer id prefix, or None if absent or malformed."""
        raw = service_data.get(self.service_uuid)
        if raw is None or len(raw) < PEER_ID_ADV_BYTES:
            return None
        return bytes(raw[:PEER_ID_ADV_BYTES])
