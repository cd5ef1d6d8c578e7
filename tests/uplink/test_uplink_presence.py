"""Presence through a REAL mosquitto: a gateway whose connection dies without a word is
reported gone by the broker's delivery of its last will (long before ``link_timeout``),
and a clean stop clears its presence too; it comes back after reconnecting."""

from __future__ import annotations

import asyncio
import socket

from ble_bridge.transport import LinkInfo
from ble_bridge.uplink.config import UplinkConfig
from ble_bridge.uplink.mosquitto import Mosquitto
from ble_bridge.uplink.service import UplinkTransport
from ble_bridge.wire.identity import Identity

WAIT = 60.0
LINK_TIMEOUT = 120.0  # so only the will (or a goodbye) can take a link down in time


class Handler:
    def __init__(self) -> None:
        self.up: dict[int, LinkInfo] = {}
        self.downs: list[str] = []

    def link_up(self, info: LinkInfo) -> None:
        self.up[info.link_id] = info

    def link_down(self, link_id: int, reason: str) -> None:
        self.up.pop(link_id, None)
        self.downs.append(reason)

    def frame_received(self, link_id: int, data: bytes) -> None:
        pass


async def wait(pred: object, timeout: float = WAIT) -> bool:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():  # type: ignore[operator]
        if loop.time() > end:
            return False
        await asyncio.sleep(0.05)
    return True


def config(broker: Mosquitto) -> UplinkConfig:
    return UplinkConfig(
        broker=broker.url,
        mesh_id="presence",
        heartbeat_interval=1.0,
        link_timeout=LINK_TIMEOUT,
        keepalive=60,
        reconnect_initial=0.2,
        reconnect_max=1.0,
    )


def test_last_will_and_goodbye_take_the_link_down(mosquitto: Mosquitto) -> None:
    a_id, b_id = Identity.from_seed(b"\x21" * 32), Identity.from_seed(b"\x22" * 32)

    async def main() -> None:
        a = UplinkTransport(config(mosquitto), a_id.peer_id)
        b = UplinkTransport(config(mosquitto), b_id.peer_id)
        ha, hb = Handler(), Handler()
        a.attach(ha)
        b.attach(hb)
        await a.start()
        await b.start()
        try:
            assert await wait(lambda: ha.up and hb.up)
            loop = asyncio.get_running_loop()
            # b's TCP connection dies under it (no DISCONNECT): the broker sends b's will
            client = b._client
            assert client is not None
            sock = client._client.socket()
            assert sock is not None
            t0 = loop.time()
            sock.shutdown(socket.SHUT_RDWR)
            assert await wait(lambda: "gateway left" in ha.downs), (ha.downs, a.snapshot())
            assert loop.time() - t0 < LINK_TIMEOUT / 2  # the will, not the silence timeout
            assert a.core.stats["gateways_left"] == 1
            # b reconnects on its own, republishes its presence, and the link is back
            assert await wait(lambda: bool(ha.up) and b.core.stats["connects"] >= 2)
            # a clean stop: the goodbye (an empty presence) takes it down as well
            await b.stop()
            assert await wait(lambda: not ha.up and ha.downs.count("gateway left") == 2)
        finally:
            await a.stop()
            await b.stop()

    asyncio.run(main())
