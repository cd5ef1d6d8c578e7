"""Advertising data as bluetoothd builds it from an ``LEAdvertisement1`` object. Pure.

BlueZ (``src/advertising.c``, ``src/shared/ad.c``) turns the properties of a registered
advertisement into AD structures (1 length byte, 1 type byte, data) and refuses the
advertisement when they do not fit: a legacy advert (what a Bluetooth 4.x controller such as
a Pi 3B+ or Zero 2 W sends, and what BlueZ 5.66 builds unless ``SecondaryChannel`` is set)
holds 31 bytes *including the 3-byte flags*. Over-long data makes ``RegisterAdvertisement``
fail with ``org.bluez.Error.Failed`` ("Failed to register advertisement"; the debug log says
"Advertising data too long or couldn't be generated").

Rules reproduced here (per AD type, sizes in bytes):

* flags (``0x01``, 3): from ``Discoverable=true`` (General Discoverable, plus BR/EDR Not
  Supported on an LE-only adapter or one that is not discoverable itself); when the property
  is absent or false but the adapter is discoverable, the kernel adds them (the advert then
  has 3 bytes less room);
* service UUIDs: one list per UUID size (``0x03``/``0x05``/``0x07``), 2 + size per UUID; a
  UUID given as 4 or 8 hex digits is 16- or 32-bit, a full UUID stays 128-bit (16) even on
  the Bluetooth base;
* solicit UUIDs (``0x14``/``0x1F``/``0x15``) alike;
* manufacturer data (``0xFF``): 2 + 2 (company id, little-endian) + data, per entry;
* service data (``0x16``/``0x20``/``0x21``): 2 + UUID size + data, per entry;
* ``Appearance`` (``0x19``, 4); ``Includes`` ``tx-power`` (3) and ``appearance`` (4) are
  added by the kernel and reduce the room; ``Data`` entries 2 + data;
* ``LocalName`` (and ``Includes: local-name``) goes into the scan response of a legacy
  connectable advert, shortened to fit;
* ``ScanResponse*`` properties exist from BlueZ 5.80, and only with ``bluetoothd
  --experimental``; older daemons ignore them (unknown properties are never an error).

:func:`decode` reads AD structures back into what ``Device1`` shows a scanner (UUIDs,
``ManufacturerData``, ``ServiceData``, name); the fake bluetoothd advertises only what
survives this round trip.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

LEGACY_MAX = 31
"""Bytes of a legacy advertisement or scan response (Bluetooth 4.x controllers)."""

AD_FLAGS = 0x01
AD_UUID16_SOME, AD_UUID16_ALL = 0x02, 0x03
AD_UUID32_SOME, AD_UUID32_ALL = 0x04, 0x05
AD_UUID128_SOME, AD_UUID128_ALL = 0x06, 0x07
AD_NAME_SHORT, AD_NAME_COMPLETE = 0x08, 0x09
AD_TX_POWER = 0x0A
AD_SOLICIT16, AD_SOLICIT128, AD_SOLICIT32 = 0x14, 0x15, 0x1F
AD_SERVICE_DATA16, AD_SERVICE_DATA32, AD_SERVICE_DATA128 = 0x16, 0x20, 0x21
AD_APPEARANCE = 0x19
AD_MANUFACTURER = 0xFF

FLAG_LE_LIMITED = 0x01
FLAG_LE_GENERAL = 0x02
FLAG_NO_BREDR = 0x04

BASE_UUID_TAIL = "-0000-1000-8000-00805f9b34fb"
SCAN_RESPONSE_SINCE = (5, 80)
"""BlueZ version that added the ``ScanResponse*`` advertisement properties (experimental)."""

REGISTER_FAILED = "Failed to register advertisement"
"""bluetoothd's error text (org.bluez.Error.Failed) for data it cannot fit."""

_HEX = re.compile(r"^(0x)?[0-9a-fA-F]+$")


class AdvertError(ValueError):
    """bluetoothd would refuse this advertisement; ``reason`` is what its debug log says."""

    def __init__(self, reason: str, size: int = 0, room: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.size = size
        self.room = room


@dataclass(frozen=True, slots=True)
class BluezRules:
    """What decides the encoding besides the advertisement: daemon, adapter, controller."""

    version: tuple[int, int] = (5, 66)
    experimental: bool = False
    """``bluetoothd --experimental`` (``-E``): needed for the scan-response properties."""
    max_adv_len: int = LEGACY_MAX
    max_scan_rsp_len: int = LEGACY_MAX
    adapter_discoverable: bool = False
    """The adapter itself is discoverable (``Adapter1.Discoverable``)."""
    bredr: bool = False
    """The adapter does BR/EDR too (a Pi does; the fake's adapters are LE only)."""

    @property
    def scan_response_properties(self) -> bool:
        return self.version >= SCAN_RESPONSE_SINCE and self.experimental


@dataclass(frozen=True, slots=True)
class EncodedAdvert:
    """The bytes bluetoothd hands the kernel (flags the kernel adds are not in ``adv_data``)."""

    adv_data: bytes
    scan_rsp: bytes = b""
    kernel_flags: int = 0
    """Flags the kernel prepends (adapter discoverable, advertisement sets none), or 0."""
    room: int = LEGACY_MAX

    @property
    def on_air(self) -> bytes:
        """The advertising PDU's data as a scanner receives it."""
        if not self.kernel_flags:
            return self.adv_data
        return bytes([2, AD_FLAGS, self.kernel_flags]) + self.adv_data

    @property
    def size(self) -> int:
        return len(self.on_air)


def uuid_bytes(text: str) -> bytes:
    """A UUID as BlueZ parses it (``bt_string_to_uuid``), in air order (little-endian)."""
    s = text.strip()
    if _HEX.match(s):
        digits = s[2:] if s.lower().startswith("0x") else s
        if len(digits) == 4:
            return int(digits, 16).to_bytes(2, "little")
        if len(digits) == 8:
            return int(digits, 16).to_bytes(4, "little")
    try:
        return uuidlib.UUID(s).bytes[::-1]
    except ValueError as e:
        raise AdvertError(f"invalid UUID {text!r}") from e


def uuid_text(raw: bytes) -> str:
    """The 128-bit string BlueZ reports in ``Device1`` for an over-the-air UUID."""
    if len(raw) == 2:
        return f"0000{int.from_bytes(raw, 'little'):04x}{BASE_UUID_TAIL}"
    if len(raw) == 4:
        return f"{int.from_bytes(raw, 'little'):08x}{BASE_UUID_TAIL}"
    return str(uuidlib.UUID(bytes=bytes(raw[::-1])))


def _ad(kind: int, data: bytes) -> bytes:
    return bytes([len(data) + 1, kind]) + data


def _uuid_lists(uuids: list[str], types: tuple[int, int, int]) -> bytes:
    by_size: dict[int, list[bytes]] = {2: [], 4: [], 16: []}
    for u in uuids:
        if not str(u):
            continue  # bless exports an empty placeholder in some lists
        raw = uuid_bytes(str(u))
        by_size[len(raw)].append(raw)
    out = b""
    for size, kind in zip((2, 4, 16), types, strict=True):
        if by_size[size]:
            out += _ad(kind, b"".join(by_size[size]))
    return out


def _manufacturer(data: Mapping[Any, Any]) -> bytes:
    out = b""
    for company, value in data.items():
        out += _ad(AD_MANUFACTURER, int(company).to_bytes(2, "little") + bytes(_plain(value)))
    return out


def _service_data(data: Mapping[Any, Any]) -> bytes:
    out = b""
    for u, value in data.items():
        raw = uuid_bytes(str(u))
        kind = {2: AD_SERVICE_DATA16, 4: AD_SERVICE_DATA32, 16: AD_SERVICE_DATA128}[len(raw)]
        out += _ad(kind, raw + bytes(_plain(value)))
    return out


def _plain(value: Any) -> Any:
    """A D-Bus Variant's value, or the value itself."""
    return getattr(value, "value", value)


def _name(name: str, used: int, limit: int) -> bytes:
    raw = name.encode()
    room = limit - used - 2
    if room <= 0:
        return b""
    if len(raw) > room:
        return _ad(AD_NAME_SHORT, raw[:room])
    return _ad(AD_NAME_COMPLETE, raw)


def encode(props: Mapping[str, Any], rules: BluezRules | None = None) -> EncodedAdvert:
    """The legacy advertising data and scan response bluetoothd builds from ``props``.

    ``props``: the advertisement's properties (plain values or D-Bus Variants). Raises
    :class:`AdvertError` where bluetoothd refuses the advertisement.
    """
    rules = rules or BluezRules()
    p = {k: _plain(v) for k, v in props.items()}
    kind = str(p.get("Type", "peripheral"))
    if kind not in ("peripheral", "broadcast"):
        raise AdvertError(f"invalid advertisement type {kind!r}")
    includes = {str(i) for i in p.get("Includes", []) or []}
    data = b""
    data += _uuid_lists(
        list(p.get("ServiceUUIDs", []) or []), (AD_UUID16_ALL, AD_UUID32_ALL, AD_UUID128_ALL)
    )
    data += _uuid_lists(
        list(p.get("SolicitUUIDs", []) or []), (AD_SOLICIT16, AD_SOLICIT32, AD_SOLICIT128)
    )
    data += _manufacturer(p.get("ManufacturerData", {}) or {})
    data += _service_data(p.get("ServiceData", {}) or {})
    if "Appearance" in p:
        data += _ad(AD_APPEARANCE, int(p["Appearance"]).to_bytes(2, "little"))
    for ad_type, value in (p.get("Data", {}) or {}).items():
        data += _ad(int(ad_type), bytes(_plain(value)))
    own_flags = 0
    if bool(p.get("Discoverable", False)):
        if kind == "broadcast":
            raise AdvertError("Broadcast cannot set flags")
        own_flags = FLAG_LE_GENERAL
        if not rules.bredr or not rules.adapter_discoverable:
            own_flags |= FLAG_NO_BREDR
        data += _ad(AD_FLAGS, bytes([own_flags]))
    kernel_flags = 0
    room = rules.max_adv_len
    if kind == "peripheral" and not own_flags and rules.adapter_discoverable:
        kernel_flags = FLAG_LE_GENERAL | (0 if rules.bredr else FLAG_NO_BREDR)
        room -= 3
    if "tx-power" in includes:
        room -= 3
    if "appearance" in includes:
        room -= 4
    if len(data) > room:
        raise AdvertError(
            "Advertising data too long or couldn't be generated",
            len(data) + LEGACY_MAX - room,
            LEGACY_MAX,
        )
    scan = b""
    if rules.scan_response_properties:
        scan += _uuid_lists(
            list(p.get("ScanResponseServiceUUIDs", []) or []),
            (AD_UUID16_ALL, AD_UUID32_ALL, AD_UUID128_ALL),
        )
        scan += _manufacturer(p.get("ScanResponseManufacturerData", {}) or {})
        scan += _service_data(p.get("ScanResponseServiceData", {}) or {})
        for ad_type, value in (p.get("ScanResponseData", {}) or {}).items():
            scan += _ad(int(ad_type), bytes(_plain(value)))
    name = p.get("LocalName")
    if name:
        scan += _name(str(name), len(scan), rules.max_scan_rsp_len)
    if len(scan) > rules.max_scan_rsp_len:
        raise AdvertError("Scan data couldn't be generated", len(scan), rules.max_scan_rsp_len)
    return EncodedAdvert(data, scan, kernel_flags, rules.max_adv_len)


class AdDecodeError(ValueError):
    """Bytes that are not a sequence of AD structures."""


def parse(data: bytes) -> list[tuple[int, bytes]]:
    """AD structures of an advertising PDU or scan response; strict about lengths.

    A length byte of 0 ends the data (the rest is padding), as the Core spec says.
    """
    out: list[tuple[int, bytes]] = []
    i = 0
    if len(data) > 255:
        raise AdDecodeError("advertising data longer than 255 bytes")
    while i < len(data):
        n = data[i]
        if n == 0:
            break
        if i + 1 + n > len(data):
            raise AdDecodeError(f"AD structure at {i} runs past the end")
        out.append((data[i + 1], bytes(data[i + 2 : i + 1 + n])))
        i += 1 + n
    return out


@dataclass(slots=True)
class Heard:
    """What a scanning ``Device1`` shows of an advertiser (BlueZ merges the scan response)."""

    uuids: list[str] = field(default_factory=list)
    manufacturer_data: dict[int, bytes] = field(default_factory=dict)
    service_data: dict[str, bytes] = field(default_factory=dict)
    name: str | None = None
    flags: int | None = None


def decode(*pdus: bytes) -> Heard:
    """Advertising data (and scan response) as a scanner's ``Device1`` reports them."""
    heard = Heard()
    uuid_sizes = {
        AD_UUID16_SOME: 2, AD_UUID16_ALL: 2, AD_UUID32_SOME: 4, AD_UUID32_ALL: 4,
        AD_UUID128_SOME: 16, AD_UUID128_ALL: 16,
    }  # fmt: skip
    sd_sizes = {AD_SERVICE_DATA16: 2, AD_SERVICE_DATA32: 4, AD_SERVICE_DATA128: 16}
    for pdu in pdus:
        for kind, value in parse(pdu):
            if kind in uuid_sizes:
                size = uuid_sizes[kind]
                if len(value) % size:
                    raise AdDecodeError(f"UUID list 0x{kind:02x} of {len(value)} bytes")
                for j in range(0, len(value), size):
                    text = uuid_text(value[j : j + size])
                    if text not in heard.uuids:
                        heard.uuids.append(text)
            elif kind in sd_sizes:
                size = sd_sizes[kind]
                if len(value) < size:
                    raise AdDecodeError("service data shorter than its UUID")
                heard.service_data[uuid_text(value[:size])] = value[size:]
            elif kind == AD_MANUFACTURER:
                if len(value) < 2:
                    raise AdDecodeError("manufacturer data without a company id")
                heard.manufacturer_data[int.from_bytes(value[:2], "little")] = value[2:]
            elif kind in (AD_NAME_SHORT, AD_NAME_COMPLETE):
                heard.name = value.decode("utf-8", "replace")
            elif kind == AD_FLAGS and value:
                heard.flags = value[0]
    return heard
