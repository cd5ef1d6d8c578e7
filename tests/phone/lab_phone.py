"""A scripted BitChat phone for the lab: a real bleak central on a fake BlueZ adapter.

It does what the apps do on the air, with frames built by :mod:`upstream_rules` (written from
the apps' sources, not from ``ble_bridge.wire``): scan for the mesh service UUID, connect,
subscribe to the characteristic, write a signed announce (nickname, Noise key, signing key),
signed public messages, and Noise XX as initiator for private messages (the handshake and
the transport framing come from ``ble_bridge.noise``, which the community vectors and the
apps' ``NoiseCipherState`` rules test). Frames larger than the link's write limit are cut
into type-0x20 fragments as PROTOCOL.md says; fragments from the node are reassembled.
Everything it hears is kept in bounded lists for the test to look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from upstream_rules import (
    UpstreamAnnounce,
    UpstreamFrame,
    ios_accepts,
    ios_encode_announce,
    parse_private_message_tlv,
    parse_v1,
    peer_id_of,
    pkcs7_pad,
    private_message_tlv,
    sign_v1,
    verify,
)

from ble_bridge.noise.protocol import NoiseError, public_bytes
from ble_bridge.noise.session import NoiseSessions
from gatt import advert as ad
from gatt.profile import BITCHAT_CHARACTERISTIC_UUID, BITCHAT_SERVICE_UUID

SLACK = float(os.environ.get("BLE_BRIDGE_TEST_SLACK", "3"))
T_ANNOUNCE, T_MESSAGE, T_NOISE_HS, T_NOISE_ENC, T_FRAGMENT = 0x01, 0x02, 0x10, 0x11, 0x20
PM_PRIVATE_MESSAGE, PM_DELIVERED = 0x01, 0x03
KEEP = 2000  # frames, lines and DMs remembered


def raw_v1(ptype: int, sender: bytes, payload: bytes, ts: int, recipient: bytes | None) -> bytes:
    """BinaryProtocol.encode of an unsigned, uncompressed v1 packet (Noise payloads are
    high-entropy: the apps never compress them)."""
    flags = 0x01 if recipient is not None else 0
    head = struct.pack(">BBBQBH", 1, ptype, 7, ts, flags, len(payload))
    return head + sender + (recipient or b"") + payload


def fragments(frame: bytes, sender: bytes, ts: int, limit: int, fid: bytes) -> list[bytes]:
    """PROTOCOL.md's fragmentation: type 0x20 packets keeping sender, timestamp and ttl,
    payload = fragment id (8) · index (2) · total (2) · original type (1) · chunk; unsigned.
    (Broadcast-free here: the phone fragments only what it addresses to one node.)"""
    if len(frame) <= limit:
        return [frame]
    recipient = frame[22:30] if frame[11] & 0x01 else None
    chunk = limit - (14 + 8 + (8 if recipient else 0) + 13)
    parts = [frame[i : i + chunk] for i in range(0, len(frame), chunk)]
    return [
        raw_v1(T_FRAGMENT, sender, struct.pack(">8sHHB", fid, i, len(parts), frame[1]) + c, ts,
               recipient)
        for i, c in enumerate(parts)
    ]  # fmt: skip


@dataclass
class Heard:
    """What the phone heard from the mesh."""

    frames: deque[UpstreamFrame] = field(default_factory=lambda: deque(maxlen=KEEP))
    announces: dict[bytes, UpstreamAnnounce] = field(default_factory=dict)
    public: deque[tuple[bytes, str]] = field(default_factory=lambda: deque(maxlen=KEEP))
    dms: deque[tuple[bytes, str]] = field(default_factory=lambda: deque(maxlen=KEEP))
    delivered: deque[str] = field(default_factory=lambda: deque(maxlen=KEEP))
    unparsed: int = 0
    own: list[tuple[int, int]] = field(default_factory=list)  # (type, ttl) of our own frames


class LabPhone:
    """One phone: its own keys, one central link to a node (see the module docstring)."""

    def __init__(self, adapter: str, nickname: str) -> None:
        self.adapter = adapter
        self.nickname = nickname
        self.noise_key = X25519PrivateKey.generate()
        self.signing = Ed25519PrivateKey.generate()
        self.peer_id = peer_id_of(public_bytes(self.noise_key))
        self.noise = NoiseSessions(self.peer_id, self.noise_key)
        self.heard = Heard()
        self.client: BleakClient | None = None
        self.limit = 20
        self._frags: dict[bytes, dict[int, bytes]] = {}
        self._changed = asyncio.Event()
        self._seen: set[tuple[bytes, int, int]] = set()

    # -- the link ----------------------------------------------------------------------

    async def scan(self, timeout: float) -> list[tuple[BLEDevice, AdvertisementData]]:
        """Scan for the mesh service until at least one device is heard (or ``timeout``)."""
        found: dict[str, tuple[BLEDevice, AdvertisementData]] = {}

        def heard(device: BLEDevice, adv: AdvertisementData) -> None:
            found[device.address] = (device, adv)

        scanner = BleakScanner(
            detection_callback=heard,
            service_uuids=[BITCHAT_SERVICE_UUID],
            bluez={"adapter": self.adapter},
        )
        await scanner.start()
        try:
            deadline = time.monotonic() + timeout * SLACK
            while not found and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.5)  # the others too, when there are several
        finally:
            with contextlib.suppress(Exception):
                await scanner.stop()
        return list(found.values())

    async def connect(self, device: BLEDevice) -> None:
        client = BleakClient(device, timeout=10.0 * SLACK, bluez={"adapter": self.adapter})
        await client.connect()
        char = client.services.get_characteristic(BITCHAT_CHARACTERISTIC_UUID)
        assert char is not None, "the node serves the BitChat characteristic"
        self.limit = char.max_write_without_response_size
        await client.start_notify(char, lambda _c, data: self._on_notify(bytes(data)))
        self.client = client

    async def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.disconnect()
            self.client = None

    async def write(self, frame: bytes, ts: int) -> None:
        assert self.client is not None
        for f in fragments(frame, self.peer_id, ts, self.limit, os.urandom(8)):
            await self.client.write_gatt_char(BITCHAT_CHARACTERISTIC_UUID, f, response=False)

    # -- sending -----------------------------------------------------------------------

    @staticmethod
    def _now_ms() -> int:
        return int(time.time() * 1000)

    async def announce(self) -> bytes:
        """A signed announce as iOS builds it (capabilities: none, written as iOS writes the
        empty set); returns the frame."""
        payload = ios_encode_announce(
            self.nickname,
            public_bytes(self.noise_key),
            self.signing.public_key().public_bytes_raw(),
            capabilities=0,
        )
        ts = self._now_ms()
        frame = sign_v1(self.signing, T_ANNOUNCE, self.peer_id, payload, ts)
        assert ios_accepts(frame) is not None  # what the apps would take from us
        await self.write(frame, ts)
        return frame

    async def say(self, text: str) -> None:
        """A signed public message."""
        ts = self._now_ms()
        await self.write(sign_v1(self.signing, T_MESSAGE, self.peer_id, text.encode(), ts), ts)

    async def handshake(self, peer: bytes, timeout: float) -> None:
        """Noise XX as initiator with ``peer``; returns once the session is established."""
        msg1 = self.noise.initiate(time.monotonic(), peer)
        ts = self._now_ms()
        await self.write(pkcs7_pad(raw_v1(T_NOISE_HS, self.peer_id, msg1, ts, peer)), ts)
        await self.until(lambda: self.noise.established(peer), timeout)

    async def dm(self, peer: bytes, text: str, message_id: str) -> None:
        """A private message (typed payload 0x01, the TLVs of PrivateMessagePacket)."""
        plain = bytes([PM_PRIVATE_MESSAGE]) + private_message_tlv(message_id, text)
        wire = self.noise.encrypt(time.monotonic(), peer, plain)
        ts = self._now_ms()
        await self.write(pkcs7_pad(raw_v1(T_NOISE_ENC, self.peer_id, wire, ts, peer)), ts)

    # -- receiving ---------------------------------------------------------------------

    async def until(self, cond: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``cond`` holds, re-checking on every frame; False after ``timeout`` s
        (times the test slack)."""
        deadline = time.monotonic() + timeout * SLACK
        while not cond():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))
        return True

    def _on_notify(self, data: bytes) -> None:
        f = parse_v1(data)
        if f is None:
            f = parse_v1(_unpad(data))
        if f is None:
            self.heard.unparsed += 1  # v2 or compressed (consensus traffic): the apps drop it
            return
        if f.type == T_FRAGMENT:
            self._fragment(f)
            return
        self._frame(f)
        self._changed.set()

    def _fragment(self, f: UpstreamFrame) -> None:
        if len(f.payload) < 13:
            return
        fid, index, total, _otype = struct.unpack_from(">8sHHB", f.payload)
        key = f.sender + fid
        parts = self._frags.setdefault(key, {})
        parts[index] = f.payload[13:]
        while len(self._frags) > 32:
            self._frags.pop(next(iter(self._frags)))
        if len(parts) == total:
            del self._frags[key]
            self._on_notify(b"".join(parts[i] for i in range(total)))

    def _frame(self, f: UpstreamFrame) -> None:
        if f.sender == self.peer_id:  # the apps drop their own packets coming back
            self.heard.own.append((f.type, f.ttl))
            return
        if (f.sender, f.type, f.timestamp) in self._seen:
            return
        self._seen.add((f.sender, f.type, f.timestamp))
        self.heard.frames.append(f)
        if f.type == T_ANNOUNCE:
            ann = ios_accepts(_reencode(f))
            if ann is not None:
                self.heard.announces[f.sender] = ann
        elif f.type == T_MESSAGE and f.signature is not None:
            ann = self.heard.announces.get(f.sender)
            if ann is not None and ios_accepts_message(f, ann):
                with contextlib.suppress(UnicodeDecodeError):
                    self.heard.public.append((f.sender, f.payload.decode("utf-8")))
        elif f.recipient == self.peer_id and f.type == T_NOISE_HS:
            try:
                result = self.noise.on_handshake(time.monotonic(), f.sender, f.payload)
            except NoiseError:
                return
            if result.reply is not None:
                ts = self._now_ms()
                frame = pkcs7_pad(raw_v1(T_NOISE_HS, self.peer_id, result.reply, ts, f.sender))
                asyncio.get_running_loop().create_task(self.write(frame, ts))
        elif f.recipient == self.peer_id and f.type == T_NOISE_ENC:
            try:
                plain = self.noise.decrypt(time.monotonic(), f.sender, f.payload)
            except NoiseError:
                return
            if plain[:1] == bytes([PM_PRIVATE_MESSAGE]):
                pm = parse_private_message_tlv(plain[1:])
                if pm is not None:
                    self.heard.dms.append((f.sender, pm[1]))
            elif plain[:1] == bytes([PM_DELIVERED]):
                self.heard.delivered.append(plain[1:].decode("utf-8", "replace"))

    def public_lines(self, sender: bytes | None = None) -> list[str]:
        return [t for s, t in self.heard.public if sender is None or s == sender]


def _unpad(data: bytes) -> bytes:
    n = data[-1] if data else 0
    if 0 < n <= len(data) and data[-n:] == bytes([n]) * n:
        return data[:-n]
    return data


def _reencode(f: UpstreamFrame) -> bytes:
    head = struct.pack(">BBBQBH", 1, f.type, f.ttl, f.timestamp, f.flags, len(f.payload))
    return head + f.sender + (f.recipient or b"") + f.payload + (f.signature or b"")


def ios_accepts_message(f: UpstreamFrame, ann: UpstreamAnnounce) -> bool:
    """A public message shows when its signature verifies with the sender's announced key."""
    return verify(f, ann.signing_key)


__all__ = ["LabPhone", "legacy_advert_size"]


def legacy_advert_size(adv: AdvertisementData) -> int:
    """Bytes of the legacy advert the phone heard, as BlueZ encodes it (flags included)."""
    props = {
        "Type": "peripheral",
        "ServiceUUIDs": list(adv.service_uuids),
        "ManufacturerData": {int(k): bytes(v) for k, v in adv.manufacturer_data.items()},
        "ServiceData": {k: bytes(v) for k, v in adv.service_data.items()},
        "Discoverable": True,
    }
    try:
        return ad.encode(props).size
    except ad.AdvertError as exc:  # longer than BlueZ takes
        return exc.size
