"""Unmodified bleak (central) against the fake bluetoothd, serving our bless-based peripheral."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest
from bleak import BleakClient, BleakScanner
from bleak.exc import BleakDBusError, BleakGATTProtocolError
from gatt_harness import SLACK, address, peer, run, until

from gatt import dbus_patch
from gatt.fakebluez import FakeBluezConfig, FakeBluezProcess, FakeControl, LinkModel
from gatt.peripheral import MeshPeripheral, address_of
from gatt.profile import GattProfile

pytestmark = pytest.mark.dbus
PROFILE = GattProfile()
SVC, CHR = PROFILE.service_uuid, PROFILE.characteristic_uuid


class Server:
    """A MeshPeripheral on hci0 that records writes and devices."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, int, bytes]] = []
        self.devices: list[tuple[str, bool]] = []
        self.p = MeshPeripheral(
            "hci0",
            PROFILE,
            peer(0),
            on_write=lambda d, m, b: self.writes.append((d, m, b)),
            on_device=lambda d, c: self.devices.append((d, c)),
        )


async def discover() -> tuple[object, dict[str, bytes], int]:
    found = asyncio.get_running_loop().create_future()

    def seen(dev: object, adv: object) -> None:
        if not found.done():
            found.set_result((dev, adv))

    async with BleakScanner(seen, service_uuids=[SVC], bluez={"adapter": "hci1"}):
        dev, adv = await asyncio.wait_for(found, 5 * SLACK)
    return dev, dict(adv.manufacturer_data), adv.rssi  # type: ignore[attr-defined]


@pytest.fixture
def fake_bluez_config() -> FakeBluezConfig:
    return FakeBluezConfig(adapters=2, link=LinkModel(mtu=185))


def test_discover_connect_mtu_write_and_notify_both_ways(fake_bluez: FakeBluezProcess) -> None:
    async def scenario() -> None:
        srv = Server()
        await srv.p.start()
        dev, mdata, rssi = await discover()
        assert mdata == {0xFFFF: peer(0)[:6]}  # the short id: all a legacy advert has room for
        assert -100 < rssi < 0
        notes: list[bytes] = []
        async with BleakClient(dev, bluez={"adapter": "hci1"}) as client:  # type: ignore[arg-type]
            char = client.services.get_characteristic(CHR)
            assert char is not None
            assert char.max_write_without_response_size == 185 - 3
            await client.start_notify(char, lambda _c, d: notes.append(bytes(d)))
            await client.write_gatt_char(char, b"frame-1", response=False)
            await client.write_gatt_char(char, b"frame-2", response=True)
            assert await until(lambda: len(srv.writes) == 2)
            device, mtu, data = srv.writes[0]
            assert address_of(device) == address(1)
            assert device.startswith("/org/bluez/hci0/dev_")
            assert (mtu, data) == (185, b"frame-1")
            assert srv.writes[1][2] == b"frame-2"
            srv.p.notify(b"to-central")
            srv.p.notify(bytes(range(256)))  # longer than MTU-3: truncated like BlueZ does
            assert await until(lambda: len(notes) == 2)
            assert notes[0] == b"to-central"
            assert notes[1] == bytes(range(182))
            # a write command longer than the ATT MTU: bt_att_send refuses it (gatt-client.c)
            with pytest.raises(BleakDBusError, match="Failed to initiate write"):
                await client.write_gatt_char(char, bytes(200), response=False)
        await srv.p.stop()

    run(scenario())


def test_centrals_coming_and_leaving_are_noticed(fake_bluez: FakeBluezProcess) -> None:
    async def scenario() -> None:
        srv = Server()
        await srv.p.start()
        dev, _, _ = await discover()
        async with BleakClient(dev, bluez={"adapter": "hci1"}):  # type: ignore[arg-type]
            assert await until(
                lambda: (f"/org/bluez/hci0/dev_{address(1).replace(':', '_')}", True) in srv.devices
            )
            assert srv.p.connected_devices
        assert await until(lambda: srv.devices[-1][1] is False)
        assert not srv.p.connected_devices
        await srv.p.stop()

    run(scenario())


def test_advertising_stops_when_central_connects_and_peripheral_readvertises(
    fake_bluez: FakeBluezProcess,
) -> None:
    async def scenario() -> None:
        ctl = FakeControl(fake_bluez.address)
        srv = Server()
        await srv.p.start()
        dev, _, _ = await discover()
        async with BleakClient(dev, bluez={"adapter": "hci1"}):  # type: ignore[arg-type]
            s = await ctl.wait_for(lambda s: s["stats"].get("connects") == 1, timeout=10 * SLACK)
            # BlueZ stopped the advertisement; the peripheral registered a new one
            s = await ctl.wait_for(lambda s: s["advertising"]["0"] == 1, timeout=10 * SLACK)
            assert s["advertising"]["0"] == 1
        ctl.close()
        await srv.p.stop()

    run(scenario())


def test_notification_burst_arrives_complete_and_server_stays_responsive(
    fake_bluez: FakeBluezProcess,
) -> None:
    count = 20_000

    async def scenario() -> None:
        srv = Server()
        await srv.p.start()
        dev, _, _ = await discover()
        got: list[bytes] = []
        async with BleakClient(dev, bluez={"adapter": "hci1"}) as client:  # type: ignore[arg-type]
            char = client.services.get_characteristic(CHR)
            assert char is not None
            await client.start_notify(char, lambda _c, d: got.append(bytes(d)))
            t0 = time.perf_counter()
            for i in range(count):
                srv.p.notify(i.to_bytes(4, "big"))
                if i % 100 == 0:
                    await asyncio.sleep(0)
            assert await until(lambda: len(got) >= count, timeout=60, step=0.05)
            elapsed = time.perf_counter() - t0
            assert [int.from_bytes(b, "big") for b in got] == list(range(count))
            # the socket buffer did fill: unpatched, dbus-next would have wedged right here
            assert dbus_patch.eagain_retries > 0
            # still responsive: request writes answered and notifications still flowing
            rtts = []
            for i in range(50):
                t = time.perf_counter()
                await client.write_gatt_char(char, b"ping%d" % i, response=True)
                rtts.append(time.perf_counter() - t)
            assert await until(lambda: len(srv.writes) == 50)
            srv.p.notify(b"after")
            assert await until(lambda: got[-1] == b"after")
            print(
                f"burst {count} notifications in {elapsed:.2f}s; write-request rtt p50 "
                f"{statistics.median(rtts) * 1000:.2f} ms; EAGAIN waits {dbus_patch.eagain_retries}"
            )
        await srv.p.stop()

    run(scenario(), timeout=120)


def test_acquire_write_and_acquire_notify(fake_bluez: FakeBluezProcess) -> None:
    async def scenario() -> None:
        srv = Server()
        await srv.p.start()
        dev, _, _ = await discover()
        notes: list[bytes] = []
        async with BleakClient(dev, bluez={"adapter": "hci1"}) as client:  # type: ignore[arg-type]
            await client._backend._acquire_mtu()  # type: ignore[attr-defined]
            assert client.mtu_size == 185
            char = client.services.get_characteristic(CHR)
            assert char is not None
            await client.start_notify(
                char, lambda _c, d: notes.append(bytes(d)), bluez={"use_start_notify": False}
            )
            await asyncio.sleep(0.05)
            srv.p.notify(b"via-fd")
            assert await until(lambda: notes == [b"via-fd"])
        await srv.p.stop()

    run(scenario())


def test_encrypted_characteristic_is_refused_until_the_link_is_paired(
    fake_bluez: FakeBluezProcess,
) -> None:
    async def scenario() -> None:
        writes: list[bytes] = []
        p = MeshPeripheral(
            "hci0",
            PROFILE,
            peer(0),
            on_write=lambda _d, _m, b: writes.append(b),
            on_device=lambda _d, _c: None,
            flags=("read", "write", "encrypt-write", "notify"),
        )
        await p.start()
        dev, _, _ = await discover()
        async with BleakClient(dev, bluez={"adapter": "hci1"}) as client:  # type: ignore[arg-type]
            char = client.services.get_characteristic(CHR)
            assert char is not None
            with pytest.raises(BleakDBusError, match="Not paired"):
                await client.write_gatt_char(char, b"secret", response=True)
            with pytest.raises(BleakGATTProtocolError, match="Write Not Permitted"):
                await client.write_gatt_char(char, b"no-wwr", response=False)
            assert writes == []
            # like bluetoothd, the fake bonds only with an agent that says yes on the
            # responder's side (and a pairable adapter): the node's agent, window open
            from gatt.agent import PairingAgent

            agent = PairingAgent("hci0", bus_address=fake_bluez.address)
            agent.set_window(True)
            await agent.start()
            await client.pair()
            await agent.stop()
            await client.write_gatt_char(char, b"secret", response=True)
            assert writes == [b"secret"]
        await p.stop()

    run(scenario())


def test_missing_adapter_is_a_clear_error(fake_bluez: FakeBluezProcess) -> None:
    from gatt.peripheral import AdapterNotFound

    async def scenario() -> None:
        p = MeshPeripheral("hci7", PROFILE, peer(0), lambda *_: None, lambda *_: None)
        with pytest.raises(AdapterNotFound, match="hci7"):
            await p.start()
        await p.stop()

    run(scenario())


def test_a_47_byte_advert_is_refused_as_bluetoothd_refuses_it(fake_bluez: FakeBluezProcess) -> None:
    """The advert every node sent before: flags + UUID list + 8 bytes of 128-bit service data."""

    async def scenario() -> None:
        ctl = FakeControl(fake_bluez.address)
        srv = Server()
        srv.p.adv_props = {"ServiceUUIDs": [SVC], "ServiceData": {SVC: peer(0)}}
        await srv.p.start()  # does not raise: the refusal is reported and retried
        assert srv.p.adv_error is not None
        assert (
            "org.bluez.Error.Failed" in srv.p.adv_error or "Failed to register" in srv.p.adv_error
        )
        assert "Failed to register advertisement" in srv.p.adv_error
        assert not srv.p.advertising
        s = await ctl.wait_for(lambda s: s["stats"].get("adv_refused", 0) >= 2, timeout=15 * SLACK)
        assert s["stats"]["adv_refused"] >= 2  # retried with backoff
        assert s["advertising"]["0"] == 0
        ctl.close()
        await srv.p.stop()

    run(scenario())


@pytest.mark.parametrize(
    "fake_bluez_config", [FakeBluezConfig(adapters=2, link=LinkModel(mtu=517))]
)
def test_a_514_byte_notification_arrives_as_512(fake_bluez: FakeBluezProcess) -> None:
    async def scenario() -> None:
        srv = Server()
        await srv.p.start()
        dev, _, _ = await discover()
        notes: list[bytes] = []
        async with BleakClient(dev, bluez={"adapter": "hci1"}) as client:  # type: ignore[arg-type]
            char = client.services.get_characteristic(CHR)
            assert char is not None
            assert char.max_write_without_response_size == 514  # what bleak derives from MTU
            await client.start_notify(char, lambda _c, d: notes.append(bytes(d)))
            srv.p.notify(bytes(range(256)) * 2 + b"\xaa\xbb")
            assert await until(lambda: len(notes) == 1)
            assert notes[0] == (bytes(range(256)) * 2)
            with pytest.raises(BleakDBusError, match="Failed to initiate write"):
                await client.write_gatt_char(char, bytes(514), response=False)
            await client.write_gatt_char(char, bytes(512), response=False)
            assert await until(lambda: any(len(w[2]) == 512 for w in srv.writes))
        await srv.p.stop()

    run(scenario())


@pytest.mark.parametrize(
    "fake_bluez_config",
    [FakeBluezConfig(adapters=2, bluez_version="5.82", experimental=True)],
)
def test_bluez_with_scan_response_properties_carries_8_bytes_of_peer_id(
    fake_bluez: FakeBluezProcess,
) -> None:
    async def scenario() -> None:
        srv = Server()
        await srv.p.start()
        found = asyncio.get_running_loop().create_future()

        def seen(dev: object, adv: object) -> None:
            if not found.done():
                found.set_result(adv)

        async with BleakScanner(seen, service_uuids=[SVC], bluez={"adapter": "hci1"}):
            adv = await asyncio.wait_for(found, 5 * SLACK)
        assert dict(adv.service_data) == {SVC: peer(0)}
        assert dict(adv.manufacturer_data) == {0xFFFF: peer(0)[:6]}
        assert PROFILE.peer_id_from(dict(adv.service_data), dict(adv.manufacturer_data)) == peer(0)
        await srv.p.stop()

    run(scenario())
