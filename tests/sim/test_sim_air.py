"""The air model and SimTransport on their own, with recording handlers (no mesh)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from sim_net import Recorder

from ble_bridge.air.air import Air, SimTransport
from ble_bridge.air.clock import Seeds, run_virtual
from ble_bridge.air.profiles import IDEAL, PI_TUNED, PI_UNTUNED, ZERO2W, LinkProfile
from ble_bridge.air.topology import Topology, full, line
from ble_bridge.transport import LinkRole, SendResult


async def _air(
    topo: Topology, profile: LinkProfile, seed: int = 1
) -> tuple[Air, list[SimTransport], list[Recorder]]:
    loop = asyncio.get_running_loop()
    air = Air(loop, topo, profile, Seeds(seed))
    transports = [SimTransport(air, i) for i in range(len(topo))]
    recorders = [Recorder(loop) for _ in transports]
    for t, r in zip(transports, recorders, strict=True):
        t.attach(r)
        await t.start()
    return air, transports, recorders


def test_links_form_within_budget_and_ids_are_unique() -> None:
    async def main() -> None:
        _, ts, recs = await _air(full(10), PI_TUNED)
        worst = 0
        for _ in range(60):
            await asyncio.sleep(1.0)
            worst = max(worst, *(len(t.links()) for t in ts))
        assert worst <= PI_TUNED.max_links
        assert sum(len(t.links()) for t in ts) >= 2 * 15  # nearly every slot is used
        ids = [info.link_id for r in recs for _, info in r.ups]
        for t, r in zip(ts, recs, strict=True):
            mine = [info.link_id for _, info in r.ups]
            assert len(mine) == len(set(mine))
            assert all(info.mtu == 517 and info.max_frame == 512 for _, info in r.ups)
            roles = {info.role for _, info in r.ups}
            assert roles <= {LinkRole.CENTRAL, LinkRole.PERIPHERAL}
            assert {i.link_id for i in t.links()} <= set(mine)
        assert len(set(ids)) * 2 == len(ids)  # both ends of a link share its id

    run_virtual(main(), seed=1)


def test_link_ids_never_reused_after_drops() -> None:
    async def main() -> None:
        air, _ts, recs = await _air(full(3), IDEAL)
        await asyncio.sleep(2.0)
        for _ in range(5):
            for lid in air.link_ids():
                air.break_link(lid, "supervision_timeout")
            await asyncio.sleep(3.0)
        ids = [info.link_id for _, info in recs[0].ups]
        assert len(ids) >= 6 and len(ids) == len(set(ids))
        assert all(reason == "supervision_timeout" for _, _, reason in recs[0].downs)

    run_virtual(main(), seed=2)


def test_first_link_waits_for_discovery_and_setup() -> None:
    async def main() -> None:
        _, _, recs = await _air(full(2), PI_TUNED, seed=3)
        await asyncio.sleep(30.0)
        first = recs[0].ups[0][0]
        assert first >= PI_TUNED.discovery_delay[0] + PI_TUNED.connect_setup[0]

    run_virtual(main(), seed=3)


@pytest.mark.parametrize("profile", [PI_TUNED, PI_UNTUNED, ZERO2W])
def test_one_link_carries_the_profile_goodput(profile: LinkProfile) -> None:
    n_frames = profile.queue_limit

    async def main() -> float:
        _, ts, recs = await _air(full(2), profile)
        while not ts[0].links():
            await asyncio.sleep(0.1)
        lid = ts[0].links()[0].link_id
        t0 = asyncio.get_running_loop().time()
        for i in range(n_frames):
            assert ts[0].send(lid, bytes([i]) * profile.frame_size) is SendResult.QUEUED
        await asyncio.sleep(60.0)
        got = recs[1].frames
        assert [f for _, _, f in got] == [bytes([i]) * profile.frame_size for i in range(n_frames)]
        return n_frames * profile.frame_size / (got[-1][0] - t0)

    rate = run_virtual(main(), seed=4)
    # one connection interval of slack at the end; scanning does not bind below the link rate
    assert profile.link_rate * 0.9 <= rate <= profile.link_rate * 1.1


@pytest.mark.parametrize("max_links", [2, 3])
def test_links_of_one_node_share_its_radio_and_scanning_costs_airtime(max_links: int) -> None:
    profile = dataclasses.replace(PI_TUNED, first_connect_failure=0.0, max_links=max_links)

    async def main() -> float:
        _, ts, recs = await _air(line(3), profile)
        while len(ts[1].links()) < 2:
            await asyncio.sleep(0.1)
        t0 = asyncio.get_running_loop().time()
        for i in range(profile.queue_limit):
            for info in ts[1].links():
                assert ts[1].send(info.link_id, bytes([i]) * 244) is SendResult.QUEUED
        await asyncio.sleep(60.0)
        end = max(recs[0].frames[-1][0], recs[2].frames[-1][0])
        return 2 * profile.queue_limit * 244 / (end - t0)

    total = run_virtual(main(), seed=5)
    # with a free slot the middle node keeps scanning and loses that share of airtime
    scanning = max_links > 2
    expected = profile.radio_rate * (1 - profile.scan_airtime if scanning else 1.0)
    assert expected * 0.9 <= total <= expected * 1.05


def test_busy_seconds_count_each_frame_at_both_ends_only() -> None:
    profile = dataclasses.replace(PI_TUNED, first_connect_failure=0.0, max_links=1)

    async def main() -> list[float]:
        air, ts, _ = await _air(line(3), profile)
        while not ts[0].links():
            await asyncio.sleep(0.1)
        before = [air.busy_seconds(i) for i in range(3)]
        lid = ts[0].links()[0].link_id
        for i in range(5):
            assert ts[0].send(lid, bytes([i]) * 200) is SendResult.QUEUED
        await asyncio.sleep(5.0)
        return [air.busy_seconds(i) - before[i] for i in range(3)]

    # node 0 hears only node 1 (a line), which with one link slot cannot link node 2
    sender, receiver, idle = run_virtual(main(), seed=6)
    # one link each (max_links 1): nobody scans, every frame at the full radio rate
    expected = 5 * profile.frame_seconds(200, profile.radio_rate)
    assert sender == pytest.approx(expected)
    assert receiver == pytest.approx(expected)
    assert idle == 0.0


def test_latency_follows_the_connection_interval() -> None:
    async def main() -> list[float]:
        _, ts, recs = await _air(full(2), PI_UNTUNED)
        while not ts[0].links():
            await asyncio.sleep(0.1)
        lid = ts[0].links()[0].link_id
        loop = asyncio.get_running_loop()
        lat = []
        for i in range(50):
            t0 = loop.time()
            ts[0].send(lid, bytes([i]) * 20)
            await asyncio.sleep(1.0)
            lat.append(recs[1].frames[-1][0] - t0)
        return lat

    lat = run_virtual(main(), seed=6)
    lo, hi = PI_UNTUNED.conn_interval
    assert all(0 < x <= hi + 0.02 for x in lat)
    assert max(lat) - min(lat) > lo / 4  # waiting for the next event varies


def test_full_queue_is_refused_and_counted() -> None:
    async def main() -> None:
        air, ts, _ = await _air(full(2), PI_TUNED)
        while not ts[0].links():
            await asyncio.sleep(0.1)
        lid = ts[0].links()[0].link_id
        results = [ts[0].send(lid, b"x" * 244) for _ in range(PI_TUNED.queue_limit + 5)]
        assert results.count(SendResult.QUEUE_FULL) == 5
        assert ts[0].queue_depth(lid) == PI_TUNED.queue_limit
        assert air.stats["drop_queue_full"] == 5
        assert ts[0].send(lid, b"x" * 515) is SendResult.TOO_LARGE
        assert ts[0].send(lid + 1000, b"x") is SendResult.NO_SUCH_LINK
        await asyncio.sleep(10.0)
        assert ts[0].queue_depth(lid) == 0

    run_virtual(main(), seed=7)


def test_crash_is_noticed_after_the_supervision_timeout() -> None:
    async def main() -> None:
        _, ts, recs = await _air(full(2), PI_TUNED)
        while not ts[0].links():
            await asyncio.sleep(0.1)
        loop = asyncio.get_running_loop()
        t_crash = loop.time()
        ts[1].crash()
        await asyncio.sleep(2.0)
        (t_down, _, reason) = recs[0].downs[-1]
        lo, hi = PI_TUNED.supervision_timeout
        assert reason == "supervision_timeout"
        assert lo <= t_down - t_crash <= hi
        assert recs[1].downs == []  # a crashed node hears nothing more

    run_virtual(main(), seed=8)


def test_clean_stop_tells_the_peer_at_once() -> None:
    async def main() -> None:
        _, ts, recs = await _air(full(2), PI_TUNED)
        while not ts[0].links():
            await asyncio.sleep(0.1)
        t = asyncio.get_running_loop().time()
        await ts[1].stop()
        assert recs[0].downs == [(t, recs[0].ups[0][1].link_id, "remote_close")]

    run_virtual(main(), seed=9)


def test_without_readvertising_a_node_accepts_one_central() -> None:
    profile = dataclasses.replace(PI_UNTUNED, first_connect_failure=0.0, reconnect_failure=0.0)

    async def main() -> None:
        _, ts, _recs = await _air(full(6), profile)
        for _ in range(120):
            await asyncio.sleep(1.0)
            for t in ts:
                inbound = [i for i in t.links() if i.role is LinkRole.PERIPHERAL]
                assert len(inbound) <= 1

    run_virtual(main(), seed=10)


def test_partition_breaks_cross_links_until_heal() -> None:
    async def main() -> None:
        air, _ts, _ = await _air(full(6), IDEAL)
        await asyncio.sleep(3.0)
        assert len(air.link_ids()) == 15
        west, east = (0, 1, 2), (3, 4, 5)
        air.partition([west, east])
        await asyncio.sleep(5.0)
        for c, p in air.link_pairs():
            assert (c in west) == (p in west)
        air.heal()
        await asyncio.sleep(5.0)
        assert len(air.link_ids()) == 15

    run_virtual(main(), seed=11)


def test_first_connects_fail_at_about_the_profile_rate() -> None:
    async def main() -> tuple[int, int]:
        air, _, _ = await _air(full(40), dataclasses.replace(PI_TUNED, mean_link_lifetime=None))
        await asyncio.sleep(120.0)
        return air.stats["connect_failed"], air.stats["links_up"]

    failed, ok = run_virtual(main(), seed=12)
    assert 0.05 < failed / (failed + ok) < 0.3


def test_link_mtu_is_the_smaller_of_its_two_ends() -> None:
    profile = dataclasses.replace(IDEAL, mtu_choices=(23, 185, 517))

    async def main() -> None:
        air, ts, recs = await _air(full(12), profile, seed=13)
        await asyncio.sleep(3.0)
        mtus = {i: air.node_mtu(i) for i in range(12)}
        seen = set()
        for r in recs:
            for _, info in r.ups:
                ends = air.link_ends(info.link_id)
                assert ends is not None
                assert info.mtu == min(mtus[ends[0]], mtus[ends[1]])
                seen.add(info.mtu)
        assert len(seen) >= 2 and seen <= {23, 185, 517}
        small = next(i for _, i in recs[0].ups if i.mtu == 23) if mtus[0] == 23 else None
        if small is not None:
            assert ts[0].send(small.link_id, b"x" * 21) is SendResult.TOO_LARGE
            assert ts[0].send(small.link_id, b"x" * 20) is SendResult.QUEUED

    run_virtual(main(), seed=13)
    with pytest.raises(ValueError):
        dataclasses.replace(IDEAL, mtu_choices=(22,))


def test_a_raising_handler_is_counted_and_the_air_goes_on() -> None:
    class Faulty(Recorder):
        def frame_received(self, link_id: int, data: bytes) -> None:
            super().frame_received(link_id, data)
            raise RuntimeError("node bug")

    async def main() -> None:
        air, ts, _ = await _air(full(2), IDEAL)
        bad = Faulty(asyncio.get_running_loop())
        ts[1].attach(bad)
        while not ts[0].links():
            await asyncio.sleep(0.1)
        lid = ts[0].links()[0].link_id
        for _ in range(3):
            ts[0].send(lid, b"frame")
        await asyncio.sleep(1.0)
        assert len(bad.frames) == 3
        assert air.stats["handler_error"] == 3 and ts[1].handler_errors == 3

    run_virtual(main(), seed=14)
