"""``mqtts://`` against a REAL mosquitto with a TLS listener (certificates made by
``uplink_pki.py``): CA, client certificate and username/password each matter, and a wrong one
is a counted connect failure that is retried, never a crash."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from uplink_pki import Pki, make_pki

from ble_bridge.transport import LinkInfo, LinkRole, SendResult
from ble_bridge.uplink.config import UplinkConfig
from ble_bridge.uplink.mosquitto import BrokerTls, Mosquitto, mosquitto_binary
from ble_bridge.uplink.service import UplinkTransport
from ble_bridge.wire.identity import Identity
from ble_bridge.wire.packet import Packet, PacketType, encode

WAIT = 60.0
USER, PASSWORD = "gateway", "s3cret pass"


class Handler:
    def __init__(self) -> None:
        self.up: dict[int, LinkInfo] = {}
        self.frames: list[bytes] = []
        self.changed = asyncio.Event()

    def link_up(self, info: LinkInfo) -> None:
        self.up[info.link_id] = info
        self.changed.set()

    def link_down(self, link_id: int, reason: str) -> None:
        self.up.pop(link_id, None)
        self.changed.set()

    def frame_received(self, link_id: int, data: bytes) -> None:
        self.frames.append(data)
        self.changed.set()


async def wait(pred: object, timeout: float = WAIT) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():  # type: ignore[operator]
        if loop.time() > end:
            return False
        await asyncio.sleep(0.05)
    return True


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def tls_broker(pki: Pki) -> Iterator[Mosquitto]:
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed: scripts/setup.sh installs it")
    tls = BrokerTls(pki.ca_cert, pki.server_cert, pki.server_key, require_certificate=True)
    broker = Mosquitto(tls=tls, users={USER: PASSWORD})
    broker.start()
    try:
        yield broker
    finally:
        broker.close()


def config(broker: Mosquitto, pki: Pki, **kw: object) -> UplinkConfig:
    base: dict[str, object] = {
        "broker": broker.url,
        "mesh_id": "tls-mesh",
        "ca_file": pki.ca_cert,
        "cert_file": pki.client_cert,
        "key_file": pki.client_key,
        "username": USER,
        "password": PASSWORD,
        "heartbeat_interval": 0.5,
        "link_timeout": 3.0,
        "reconnect_initial": 0.2,
        "reconnect_max": 1.0,
        "connect_timeout": 5.0,
    }
    base.update(kw)
    return UplinkConfig(**base)  # type: ignore[arg-type]


def consensus_frame(ident: Identity, payload: bytes) -> bytes:
    packet = Packet(
        type=PacketType.CONSENSUS,
        sender=ident.peer_id,
        payload=payload,
        ttl=3,
        timestamp=int(time.time() * 1000),
    )
    return encode(packet.signed(ident))


def test_mqtts_with_ca_client_certificate_and_password(tls_broker: Mosquitto, pki: Pki) -> None:
    assert tls_broker.url.startswith("mqtts://")
    a_id, b_id = Identity.from_seed(b"\x11" * 32), Identity.from_seed(b"\x12" * 32)

    async def main() -> None:
        a = UplinkTransport(config(tls_broker, pki), a_id.peer_id)
        b = UplinkTransport(config(tls_broker, pki, priority=9), b_id.peer_id)
        ha, hb = Handler(), Handler()
        a.attach(ha)
        b.attach(hb)
        await a.start()
        await b.start()
        try:
            assert await wait(lambda: ha.up and hb.up), (a.snapshot(), b.snapshot())
            (info,) = ha.up.values()
            assert info.role is LinkRole.UPLINK
            assert info.peer_address == "mqtt:" + b_id.peer_id.hex()
            frame = consensus_frame(a_id, b"over tls")
            assert a.send(info.link_id, frame) is SendResult.QUEUED
            assert await wait(lambda: frame in hb.frames), b.snapshot()
            snap = a.snapshot()
            assert snap["connected"] is True
            assert snap["rtt_ms"] is not None  # the probe went round through the broker
            rows = snap["gateways"]
            assert isinstance(rows, list) and rows[0]["priority"] == 9
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(main())


@pytest.mark.parametrize(
    "bad",
    [
        {"password": "wrong"},
        {"username": "nobody"},
        {"cert_file": None, "key_file": None},  # the broker wants a client certificate
        {"ca_file": "other"},  # the server's certificate is not signed by the CA we trust
    ],
    ids=["password", "username", "no-client-cert", "untrusted-ca"],
)
def test_a_refused_tls_connection_is_counted_and_retried(
    tls_broker: Mosquitto, pki: Pki, bad: dict[str, object]
) -> None:
    if bad.get("ca_file") == "other":
        bad = {"ca_file": pki.other_ca_cert}
    ident = Identity.from_seed(b"\x13" * 32)

    async def main() -> None:
        u = UplinkTransport(config(tls_broker, pki, **bad), ident.peer_id)
        u.attach(Handler())
        await u.start()
        try:
            assert await wait(lambda: u.core.stats["connect_failures"] >= 2), u.snapshot()
            assert u.core.stats["connects"] == 0
            assert u._task is not None and not u._task.done()  # still trying, not dead
        finally:
            await u.stop()

    asyncio.run(main())
