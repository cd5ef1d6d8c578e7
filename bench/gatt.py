"""Benchmark: mesh frames/s through BleTransport vs raw bless/bleak, over the fake BlueZ.

Measured in one run on one private bus (fake bluetoothd in its own process):
  raw notify  - bless ``update_value`` -> bleak notification callback
  raw write   - bleak ``write_gatt_char(response=False)`` -> bless write callback
  mesh notify - BleTransport.send on a peripheral link -> frame_received on the central node
  mesh write  - BleTransport.send on a central link -> frame_received on the peripheral node
Raw and mesh rounds alternate; each ratio is the median over rounds of mesh/raw measured
back to back (the machine is shared, so absolute rates swing). Notes: raw bless runs with the
EAGAIN fix installed (without it, it wedges after ~170 notifications); raw bless keeps its
objects under /org/bluez, so every bleak process also receives its PropertiesChanged (the mesh
peripheral moves them away); the mesh central pipelines 8 writes where raw bleak awaits each.
Last line: ``gatt notify_ratio=<mesh/raw> write_ratio=<mesh/raw>`` (goal >= 0.80 each).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ble_bridge.transport import LinkInfo, LinkRole, SendResult
from gatt import dbus_patch
from gatt.config import BleConfig
from gatt.fakebluez import FakeBluezConfig, FakeBluezProcess, LinkModel
from gatt.profile import GattProfile

PROFILE = GattProfile()
MESH_PROFILE = GattProfile.private("5d3f0a1e-0000-4000-8000-00000000b1e5")
FRAME = 244


class RawPair:
    """Plain bless server on hci0, plain bleak client on hci1."""

    async def setup(self) -> None:
        from bleak import BleakClient, BleakScanner
        from bless import BlessServer, GATTAttributePermissions, GATTCharacteristicProperties

        svc, chr_ = PROFILE.service_uuid, PROFILE.characteristic_uuid
        self.server = server = BlessServer(name="rawbench", adapter="hci0")
        self.writes = 0
        self.notes = 0

        def on_write(_c: object, _v: bytearray, **_kw: object) -> None:
            self.writes += 1

        server.write_request_func = on_write
        await server.add_new_service(svc)
        props = (
            GATTCharacteristicProperties.read
            | GATTCharacteristicProperties.write
            | GATTCharacteristicProperties.write_without_response
            | GATTCharacteristicProperties.notify
        )
        perms = GATTAttributePermissions.readable | GATTAttributePermissions.writeable
        await server.add_new_characteristic(svc, chr_, props, None, perms)
        await server.start()
        dev = await BleakScanner.find_device_by_filter(
            lambda _d, ad: svc in ad.service_uuids, timeout=10, bluez={"adapter": "hci1"}
        )
        assert dev is not None, "raw server not found"

        def on_note(_c: object, _d: bytearray) -> None:
            self.notes += 1

        self.client = BleakClient(dev, bluez={"adapter": "hci1"})
        await self.client.connect()
        self.char = self.client.services.get_characteristic(chr_)
        assert self.char is not None
        await self.client.start_notify(self.char, on_note)
        self.bless_char = server.get_characteristic(chr_)

    async def notify_rate(self, count: int) -> float:
        svc, chr_ = PROFILE.service_uuid, PROFILE.characteristic_uuid
        base = self.notes
        t0 = time.perf_counter()
        for i in range(count):
            self.bless_char.value = bytearray(i.to_bytes(4, "big") + bytes(FRAME - 4))
            self.server.update_value(svc, chr_)
            if i % 32 == 0:
                await asyncio.sleep(0)
        while self.notes - base < count:
            await asyncio.sleep(0.002)
        return count / (time.perf_counter() - t0)

    async def write_rate(self, count: int) -> float:
        base = self.writes
        t0 = time.perf_counter()
        for i in range(count):
            frame = i.to_bytes(4, "big") + bytes(FRAME - 4)
            await self.client.write_gatt_char(self.char, frame, response=False)
        while self.writes - base < count:
            await asyncio.sleep(0.002)
        return count / (time.perf_counter() - t0)

    async def close(self) -> None:
        await self.client.disconnect()
        await self.server.stop()


class Sink:
    def __init__(self) -> None:
        self.ups: list[LinkInfo] = []
        self.frames = 0

    def link_up(self, info: LinkInfo) -> None:
        self.ups.append(info)

    def link_down(self, link_id: int, reason: str) -> None:
        pass

    def frame_received(self, link_id: int, data: bytes) -> None:
        self.frames += 1


async def pump(transport: object, link_id: int, count: int) -> None:
    sent = 0
    while sent < count:
        frame = sent.to_bytes(4, "big") + bytes(FRAME - 4)
        r = transport.send(link_id, frame)  # type: ignore[attr-defined]
        if r is SendResult.QUEUED:
            sent += 1
        elif r is SendResult.QUEUE_FULL:
            await asyncio.sleep(0.001)
        else:
            raise RuntimeError(f"send failed: {r}")


class MeshPair:
    """Two BleTransport nodes on hci2 (central, smaller id) and hci3 (peripheral)."""

    async def setup(self) -> None:
        from gatt.transport import BleTransport

        self.sinks = [Sink(), Sink()]
        self.nodes = []
        for i, sink in enumerate(self.sinks):
            cfg = BleConfig(
                adapter=f"hci{i + 2}",
                profile=MESH_PROFILE,  # not the raw pair's service: no cross-links
                link_budget=1,  # linked: stop scanning and advertising, as a busy Pi would
                scan_on_s=0.3,
                scan_off_s=0.1,
                seed=i,
            )
            t = BleTransport(cfg, bytes([i + 1]) * 8)
            t.attach(sink)
            self.nodes.append(t)
        for t in self.nodes:
            await t.start()
        while not (self.nodes[0].links() and self.nodes[1].links()):
            await asyncio.sleep(0.02)
        (self.central,) = self.nodes[0].links()
        (self.periph,) = self.nodes[1].links()
        assert self.central.role is LinkRole.CENTRAL
        assert self.periph.role is LinkRole.PERIPHERAL

    async def notify_rate(self, count: int) -> float:
        base = self.sinks[0].frames
        t0 = time.perf_counter()
        await pump(self.nodes[1], self.periph.link_id, count)
        while self.sinks[0].frames - base < count:
            await asyncio.sleep(0.002)
        return count / (time.perf_counter() - t0)

    async def write_rate(self, count: int) -> float:
        base = self.sinks[1].frames
        t0 = time.perf_counter()
        await pump(self.nodes[0], self.central.link_id, count)
        while self.sinks[1].frames - base < count:
            await asyncio.sleep(0.002)
        return count / (time.perf_counter() - t0)

    async def round_trip_ms(self, count: int) -> float:
        """Median ping-pong time: central write -> peripheral frame -> notify back."""
        times = []
        for _ in range(count):
            base0, base1 = self.sinks[0].frames, self.sinks[1].frames
            t0 = time.perf_counter()
            self.nodes[0].send(self.central.link_id, b"ping")
            while self.sinks[1].frames == base1:
                await asyncio.sleep(0)
            self.nodes[1].send(self.periph.link_id, b"pong")
            while self.sinks[0].frames == base0:
                await asyncio.sleep(0)
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1000

    async def close(self) -> None:
        for t in self.nodes:
            await t.stop()


async def measure(frames: int, rounds: int) -> dict[str, list[float]]:
    """Alternate raw and mesh measurements so each pair sees the same machine load."""
    raw, mesh = RawPair(), MeshPair()
    await raw.setup()
    await mesh.setup()
    rates: dict[str, list[float]] = {}
    for r in range(rounds):
        for name, fn in (
            ("raw_notify", raw.notify_rate),
            ("mesh_notify", mesh.notify_rate),
            ("raw_write", raw.write_rate),
            ("mesh_write", mesh.write_rate),
        ):
            rate = await fn(frames)
            rates.setdefault(name, []).append(rate)
            print(f"round {r} {name} {rate:.0f}/s", file=sys.stderr, flush=True)
    rates["rtt_ms"] = [await mesh.round_trip_ms(200)]
    await mesh.close()
    await raw.close()
    return rates


def paired_ratio(mesh: list[float], raw: list[float]) -> float:
    """Median over rounds of mesh/raw measured back to back (robust to other load)."""
    return statistics.median(m / r for m, r in zip(mesh, raw, strict=True))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=3000, help="frames per measurement")
    ap.add_argument("--rounds", type=int, default=5, help="alternating raw/mesh rounds")
    args = ap.parse_args()
    dbus_patch.install()  # raw bless wedges after ~170 notifications without it
    fake = FakeBluezProcess(FakeBluezConfig(adapters=4, link=LinkModel(mtu=247)))
    os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = fake.start()
    try:
        rates = asyncio.run(measure(args.frames, args.rounds))
    finally:
        fake.close()
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(
        f"raw    notify {med['raw_notify']:8.0f} frames/s   write {med['raw_write']:8.0f} frames/s"
    )
    print(
        f"mesh   notify {med['mesh_notify']:8.0f} frames/s   write {med['mesh_write']:8.0f} frames/s"
    )
    print(f"mesh   round trip (write -> notify back) p50 {med['rtt_ms']:.2f} ms")
    notify = paired_ratio(rates["mesh_notify"], rates["raw_notify"])
    write = paired_ratio(rates["mesh_write"], rates["raw_write"])
    print(f"gatt notify_ratio={notify:.3f} write_ratio={write:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
