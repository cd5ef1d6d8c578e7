"""BleTransport nodes (bless + bleak, production code paths) linked through the fake."""

from __future__ import annotations

import asyncio

import pytest
from gatt_harness import Node, address, run, until

from ble_bridge.transport import LinkRole, SendResult
from gatt.fakebluez import FakeBluezConfig, FakeBluezProcess, FakeControl, LinkModel

pytestmark = pytest.mark.dbus


@pytest.fixture
def fake_bluez_config(request: pytest.FixtureRequest) -> FakeBluezConfig:
    return getattr(request, "param", FakeBluezConfig(adapters=2, link=LinkModel(mtu=247)))


async def linked_pair(a: Node, b: Node) -> None:
    await a.start()
    await b.start()
    assert await until(lambda: bool(a.links()) and bool(b.links()), timeout=15)


def test_two_nodes_link_once_and_exchange_frames_both_ways(fake_bluez: FakeBluezProcess) -> None:
    async def scenario() -> None:
        a, b = Node(0), Node(1)
        await linked_pair(a, b)
        # the smaller peer id (node 0) is the central; node 1 sees a peripheral link
        assert await until(lambda: len(a.links()) == 1 and len(b.links()) == 1)
        (la,) = a.links()
        (lb,) = b.links()
        assert la.role is LinkRole.CENTRAL and la.peer_address == address(1)
        assert lb.role is LinkRole.PERIPHERAL and lb.peer_address == address(0)
        assert la.mtu == lb.mtu == 247 and la.max_frame == 244
        assert a.transport.send(la.link_id, b"a->b") is SendResult.QUEUED
        assert await until(lambda: b"a->b" in b.frames_on(lb.link_id))
        assert b.transport.send(lb.link_id, b"b->a") is SendResult.QUEUED
        assert await until(lambda: b"b->a" in a.frames_on(la.link_id))
        assert a.transport.send(la.link_id, bytes(245)) is SendResult.TOO_LARGE
        assert a.transport.send(999, b"x") is SendResult.NO_SUCH_LINK
        await a.stop()
        assert await until(lambda: bool(b.rec.downs))
        await b.stop()
        # clean exit: no connection, advertisement or application left behind in bluetoothd
        ctl = FakeControl(fake_bluez.address)
        s = await ctl.stats()
        ctl.close()
        assert s["links"] == []
        assert s["advertising"] == {"0": 0, "1": 0}
        assert s["registered"] == {str(i): {"apps": 0, "adverts": 0} for i in (0, 1)}

    run(scenario())


def test_send_queue_is_bounded(fake_bluez: FakeBluezProcess) -> None:
    async def scenario() -> None:
        a, b = Node(0, send_queue_limit=4), Node(1, notify_queue_limit=4)
        await linked_pair(a, b)
        (la,) = a.links()
        results = [a.transport.send(la.link_id, b"%d" % i) for i in range(10)]
        assert results.count(SendResult.QUEUE_FULL) >= 5
        assert a.transport.queue_depth(la.link_id) <= 4
        assert await until(lambda: len(b.rec.frames) == results.count(SendResult.QUEUED))
        await a.stop()
        await b.stop()

    run(scenario())


@pytest.mark.parametrize(
    "fake_bluez_config", [FakeBluezConfig(adapters=4, link=LinkModel(mtu=185))], indirect=True
)
def test_link_budget_is_respected(fake_bluez: FakeBluezProcess) -> None:
    async def scenario() -> None:
        nodes = [Node(0, link_budget=2)] + [Node(i, link_budget=5) for i in range(1, 4)]
        for n in nodes:
            await n.start()
        # everyone else wants node 0, which stops at 2 links and stops advertising
        counts = lambda: [len(n.links()) for n in nodes]  # noqa: E731
        assert await until(lambda: len(nodes[0].links()) == 2, timeout=20), counts()
        assert await until(lambda: all(c >= 1 for c in counts()[1:]), timeout=15), counts()
        for _ in range(20):
            assert len(nodes[0].links()) <= 2, counts()
            await asyncio.sleep(0.1)
        assert not nodes[0].transport.peripheral.advertising
        for n in nodes:
            await n.stop()

    run(scenario())


@pytest.mark.parametrize(
    "fake_bluez_config",
    [FakeBluezConfig(adapters=2, connect_fails_while_advertising=True)],
    indirect=True,
)
def test_connect_while_advertising_fails_backs_off_then_pausing_advertising_works(
    fake_bluez: FakeBluezProcess,
) -> None:
    async def scenario() -> None:
        ctl = FakeControl(fake_bluez.address)
        a = Node(0, pause_advertising_on_connect=False)
        b = Node(1, pause_advertising_on_connect=False, tie_break_grace_s=1000)
        await a.start()
        await b.start()
        pol = a.transport.policy
        assert await until(
            lambda: address(1) in pol.candidates and pol.candidates[address(1)].failures >= 3,
            timeout=15,
        )
        assert a.transport.central.stats["connect_failed_advertising_conflict"] >= 3
        assert not a.links()
        # attempts are spaced by a growing backoff, never a tight loop
        attempts = pol.counters["connect_attempts"]
        assert attempts <= 1 + pol.candidates[address(1)].failures
        s = await ctl.stats()
        assert s["stats"]["connect_fail_advertising"] >= 3
        await a.stop()
        # the same controller rule, but the node pauses advertising around its connects
        a2 = Node(0, pause_advertising_on_connect=True)
        await a2.start()
        assert await until(lambda: bool(a2.links()), timeout=15)
        ctl.close()
        await a2.stop()
        await b.stop()

    run(scenario())


@pytest.mark.parametrize(
    "fake_bluez_config",
    [FakeBluezConfig(adapters=2, inprogress_rate=0.5, abort_rate=0.5, seed=7)],
    indirect=True,
)
def test_inprogress_and_abort_by_local_are_retried(fake_bluez: FakeBluezProcess) -> None:
    async def scenario() -> None:
        ctl = FakeControl(fake_bluez.address)
        a, b = Node(0), Node(1, tie_break_grace_s=1000)
        await linked_pair(a, b)
        s = await ctl.stats()
        assert s["stats"].get("connect_inprogress", 0) + s["stats"].get("connect_abort", 0) >= 1
        ctl.close()
        await a.stop()
        await b.stop()

    run(scenario())


def test_reconnect_after_forced_disconnect(fake_bluez: FakeBluezProcess) -> None:
    async def scenario() -> None:
        ctl = FakeControl(fake_bluez.address)
        a, b = Node(0), Node(1)
        await linked_pair(a, b)
        (first,) = a.links()
        await ctl.drop_link(0, 1, "supervision_timeout")
        assert await until(lambda: any(lid == first.link_id for lid, _ in a.rec.downs))
        assert await until(lambda: bool(b.rec.downs))
        assert await until(lambda: bool(a.links()) and bool(b.links()), timeout=15)
        (second,) = a.links()
        assert second.link_id != first.link_id
        assert a.transport.send(second.link_id, b"again") is SendResult.QUEUED
        assert await until(lambda: any(d == b"again" for _, d in b.rec.frames))
        ctl.close()
        await a.stop()
        await b.stop()

    run(scenario())


@pytest.mark.parametrize("crash", [False, True], ids=["clean", "crash"])
def test_reconnect_after_bluetoothd_restart(fake_bluez: FakeBluezProcess, crash: bool) -> None:
    async def scenario() -> None:
        a, b = Node(0), Node(1)
        await linked_pair(a, b)
        await asyncio.get_running_loop().run_in_executor(None, fake_bluez.restart, crash)
        assert await until(lambda: bool(a.rec.downs) and bool(b.rec.downs))
        assert await until(lambda: bool(a.links()) and bool(b.links()), timeout=20)
        (la,) = a.links()
        assert a.transport.send(la.link_id, b"after-restart") is SendResult.QUEUED
        assert await until(lambda: any(d == b"after-restart" for _, d in b.rec.frames))
        await a.stop()
        await b.stop()

    run(scenario())


def test_bleak_reset_during_a_scan_does_not_wedge_the_central(
    fake_bluez: FakeBluezProcess,
) -> None:
    """bluetoothd's restart resets bleak's cache (:func:`gatt.central.reset_bleak`) whenever it
    comes, often mid-scan. Closing bleak's bus under the scan used to leave the scan's
    StopDiscovery waiting forever (dbus-fast: a call on a closed bus whose fd number was
    reused never returns) while it held bleak's manager lock: no scan or connect of the
    process ever ran again."""
    from gatt.central import reset_bleak

    async def scenario() -> None:
        ctl = FakeControl(fake_bluez.address)
        a, b = Node(0, scan_on_s=1.0), Node(1, scan_on_s=1.0)
        await linked_pair(a, b)
        assert await until(lambda: a.transport.central.scanning)
        await reset_bleak()
        await ctl.stats()  # a new bus connection takes the closed bus's fd number
        await ctl.drop_link(0, 1, "supervision_timeout")
        assert await until(lambda: not a.links() or a.rec.downs)
        assert await until(lambda: bool(a.links()) and bool(b.links()), timeout=15)
        ctl.close()
        await a.stop()
        await b.stop()

    run(scenario())


def test_duplicate_links_are_resolved_by_peer_id(fake_bluez: FakeBluezProcess) -> None:
    async def scenario() -> None:
        # both sides initiate at once: each ends with one link, node 0 (smaller id) central
        a, b = Node(0, tie_break_grace_s=0.0), Node(1, tie_break_grace_s=0.0)
        await linked_pair(a, b)
        assert await until(
            lambda: (
                [i.role for i in a.links()] == [LinkRole.CENTRAL]
                and [i.role for i in b.links()] == [LinkRole.PERIPHERAL]
            ),
            timeout=10,
        )
        (la,) = a.links()
        (lb,) = b.links()
        assert a.transport.send(la.link_id, b"one-way") is SendResult.QUEUED
        assert b.transport.send(lb.link_id, b"other-way") is SendResult.QUEUED
        assert await until(lambda: b.frames_on(lb.link_id) == [b"one-way"])
        assert await until(lambda: a.frames_on(la.link_id) == [b"other-way"])
        # force the duplicate: node 1 opens a client session over the existing connection
        await b.transport.central._attempt(address(0))
        assert b.transport.stats["duplicate_kept_peripheral"] >= 1
        assert [i.link_id for i in b.links()] == [lb.link_id]
        assert b.transport.send(lb.link_id, b"still-one-link") is SendResult.QUEUED
        assert await until(lambda: a.frames_on(la.link_id)[-1] == b"still-one-link")
        assert len(a.frames_on(la.link_id)) == 2  # the abandoned session did not subscribe twice
        await a.stop()
        await b.stop()

    run(scenario())


def test_adapter_power_loss_drops_links_and_they_come_back(fake_bluez: FakeBluezProcess) -> None:
    async def scenario() -> None:
        ctl = FakeControl(fake_bluez.address)
        a, b = Node(0), Node(1)
        await linked_pair(a, b)
        await ctl.set_powered(1, False)
        assert await until(lambda: not a.links() and not b.links())
        assert a.rec.downs and b.rec.downs
        await ctl.set_powered(1, True)
        assert await until(lambda: bool(a.links()) and bool(b.links()), timeout=15)
        ctl.close()
        await a.stop()
        await b.stop()

    run(scenario())


def test_central_that_never_subscribes_or_writes_does_not_wedge_the_node(
    fake_bluez: FakeBluezProcess,
) -> None:
    from bleak import BleakClient, BleakScanner

    async def scenario() -> None:
        b = Node(1)
        await b.start()
        dev = await BleakScanner.find_device_by_address(
            address(1), timeout=5, bluez={"adapter": "hci0"}
        )
        assert dev is not None
        async with BleakClient(dev, bluez={"adapter": "hci0"}) as silent:
            char = silent.services.get_characteristic(
                b.transport.config.profile.characteristic_uuid
            )
            assert char is not None
            assert not b.links()  # connected, never wrote: no mesh link
            await silent.write_gatt_char(char, b"garbage\xff\x00", response=False)
            assert await until(lambda: len(b.links()) == 1)
            assert b.rec.frames[-1][1] == b"garbage\xff\x00"  # the mesh decoder judges it
        assert await until(lambda: not b.links())
        await b.stop()

    run(scenario())


@pytest.mark.parametrize(
    "fake_bluez_config", [FakeBluezConfig(adapters=3, link=LinkModel(mtu=185))], indirect=True
)
def test_peripheral_vanishing_mid_write_does_not_wedge_the_central(
    fake_bluez: FakeBluezProcess,
) -> None:
    async def scenario() -> None:
        ctl = FakeControl(fake_bluez.address)
        a, b = Node(0), Node(1)
        await linked_pair(a, b)
        (la,) = a.links()
        results = []
        for i in range(300):
            results.append(a.transport.send(la.link_id, b"%05d" % i))
            if i == 100:  # b's process dies: its bus connection goes, then the link times out
                b.transport.peripheral.bus.disconnect()
            await asyncio.sleep(0)
        assert SendResult.QUEUED in results
        # its GATT app vanished with it: writes fail, and a ends the link itself (the fake,
        # like bluetoothd, keeps the LE connection of a dead process)
        assert await until(lambda: not a.links(), 20)
        assert a.transport.central.stats["closed_write_failed"] == 1
        assert await until(lambda: a.transport.central.sessions == {})
        # still a working node: it links to a newcomer and moves frames
        c = Node(2)
        await c.start()
        assert await until(lambda: any(i.peer_address == address(2) for i in a.links()), 15)
        lc = next(i for i in a.links() if i.peer_address == address(2))
        assert a.transport.send(lc.link_id, b"alive") is SendResult.QUEUED
        assert await until(lambda: any(d == b"alive" for _, d in c.rec.frames))
        ctl.close()
        for n in (a, c):
            await n.stop()
        await b.transport.central.stop()

    run(scenario())


def test_link_latency_and_loss_from_the_link_model(fake_bluez: FakeBluezProcess) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        ctl = FakeControl(fake_bluez.address)
        a, b = Node(0), Node(1)
        await linked_pair(a, b)
        (la,) = a.links()
        (lb,) = b.links()
        await ctl.set_link(0, 1, latency_s=0.05)
        t0 = loop.time()
        a.transport.send(la.link_id, b"ping")
        assert await until(lambda: b"ping" in b.frames_on(lb.link_id))
        b.transport.send(lb.link_id, b"pong")
        assert await until(lambda: b"pong" in a.frames_on(la.link_id))
        assert loop.time() - t0 >= 0.1  # two one-way delays of 50 ms
        await ctl.set_link(0, 1, latency_s=0.0, loss=0.5)
        for i in range(200):
            while b.transport.send(lb.link_id, b"n%03d" % i) is SendResult.QUEUE_FULL:
                await asyncio.sleep(0.005)
        await asyncio.sleep(1.0)
        got = [d for d in a.frames_on(la.link_id) if d.startswith(b"n")]
        stats = (await ctl.stats())["stats"]
        assert 40 < len(got) < 160, len(got)
        assert stats["notifies_lost"] == 200 - len(got)
        assert got == sorted(got)  # what survives stays in order
        ctl.close()
        await a.stop()
        await b.stop()

    run(scenario())
