"""The sans-IO gateway: links from presence, batching, budgets, bad input, stalls."""

from __future__ import annotations

import contextlib
import random

from hypothesis import given
from hypothesis import strategies as st

from ble_bridge.transport import LinkRole, SendResult
from ble_bridge.uplink.config import UplinkConfig
from ble_bridge.uplink.core import (
    UPLINK_DROPS,
    Backoff,
    FrameIn,
    GatewayCore,
    LinkDown,
    LinkUp,
    SeenWindow,
    TokenBucket,
)
from ble_bridge.uplink.wire import (
    Kind,
    Presence,
    Topics,
    UplinkWireError,
    decode_message,
    decode_presence,
    encode_message,
    encode_presence,
    mesh_tag,
)
from ble_bridge.wire.identity import Identity
from ble_bridge.wire.packet import Packet, PacketType, encode

ME = bytes(range(8))
GW1 = b"\x11" * 8
GW2 = b"\x22" * 8


def config(**kw: object) -> UplinkConfig:
    base: dict[str, object] = {"broker": "mqtt://127.0.0.1:1", "mesh_id": "m"}
    base.update(kw)
    return UplinkConfig(**base)  # type: ignore[arg-type]


def frame(ptype: int = PacketType.CONSENSUS, payload: bytes = b"hello") -> bytes:
    ident = Identity.from_seed(b"\x05" * 32)
    p = Packet(type=ptype, sender=ident.peer_id, payload=payload, timestamp=1, ttl=3)
    return encode(p.signed(ident))


def core(**kw: object) -> GatewayCore:
    c = GatewayCore(config(**kw), ME, rng=random.Random(1))
    c.on_connected(0.0)
    return c


def present(c: GatewayCore, gw: bytes, now: float = 0.0, priority: int = 0) -> None:
    p = Presence(gw, priority, c.mesh)
    c.receive(now, c.topics.presence(gw), encode_presence(p))


def frames_msg(c: GatewayCore, source: bytes, frames: list[bytes], seq: int = 1) -> bytes:
    return encode_message(Kind.FRAMES, c.mesh, source, seq, 0, frames)


def test_presence_brings_a_link_up_and_the_will_takes_it_down() -> None:
    c = core()
    present(c, GW1)
    (ev,) = c.events()
    assert isinstance(ev, LinkUp) and ev.info.role is LinkRole.UPLINK
    assert ev.info.peer_address == "mqtt:" + GW1.hex()
    assert ev.info.max_frame == c.config.max_frame
    c.receive(1.0, c.topics.presence(GW1), b"")  # last will: empty retained presence
    (down,) = c.events()
    assert isinstance(down, LinkDown) and down.link_id == ev.info.link_id
    assert c.links() == []


def test_silent_gateway_goes_down_and_comes_back_with_a_new_link_id() -> None:
    c = core()
    present(c, GW1)
    (up,) = c.events()
    c.handle_timer(c.config.link_timeout + 0.5)
    assert [type(e) for e in c.events()] == [LinkDown]
    hb = encode_message(Kind.HEARTBEAT, c.mesh, GW1, 5, 0)
    c.receive(20.0, c.topics.all, hb)
    (again,) = c.events()
    assert isinstance(again, LinkUp) and again.info.link_id != up.info.link_id


def test_frames_come_down_once_and_only_allowed_types() -> None:
    c = core()
    present(c, GW1)
    (up,) = c.events()
    good, chat = frame(), frame(PacketType.MESSAGE)
    c.receive(0.1, c.topics.all, frames_msg(c, GW1, [good, chat, good]))
    evs = c.events()
    assert evs == [FrameIn(up.info.link_id, good)]
    assert c.stats["type_filtered"] == 1 and c.stats["seen"] == 1


def test_batching_all_versus_inbox() -> None:
    c = core()
    present(c, GW1)
    present(c, GW2)
    l1, l2 = (e.info.link_id for e in c.events() if isinstance(e, LinkUp))
    flood, gossip = frame(payload=b"flood"), frame(payload=b"gossip")
    assert c.send(0.0, l1, flood) is SendResult.QUEUED
    assert c.send(0.0, l2, flood) is SendResult.QUEUED
    assert c.send(0.0, l2, gossip) is SendResult.QUEUED
    assert c.queue_depth(l2) == 2
    c.poll(0.0)  # heartbeat and probe only: frames linger
    out = c.poll(0.1)
    by_topic = {p.topic: decode_message(p.payload, 4096) for p in out}
    assert by_topic[c.topics.all].frames == (flood,)
    assert by_topic[c.topics.inbox(GW2)].frames == (gossip,)
    assert c.queue_depth(l1) == c.queue_depth(l2) == 0


def test_chat_is_not_sent_up_by_default() -> None:
    c = core()
    present(c, GW1)
    (up,) = c.events()
    assert c.send(0.0, up.info.link_id, frame(PacketType.MESSAGE)) is SendResult.QUEUED
    assert c.queue_depth(up.info.link_id) == 0 and c.stats["type_filtered_out"] == 1


def test_outbound_budget_paces_and_the_queue_is_bounded() -> None:
    c = core(frames_per_s=10.0, burst_s=1.0, queue_frames=30)
    present(c, GW1)
    (up,) = c.events()
    lid = up.info.link_id
    c.poll(0.0)
    results = [c.send(0.0, lid, frame(payload=b"%d" % i)) for i in range(40)]
    assert results.count(SendResult.QUEUED) == 30
    assert results.count(SendResult.QUEUE_FULL) == 10
    sent = sum(
        len(decode_message(p.payload, 4096).frames)
        for p in c.poll(0.01)
        if p.topic == c.topics.all and decode_message(p.payload, 4096).kind is Kind.FRAMES
    )
    assert sent == 10  # the burst
    t = c.next_timer(0.01)
    assert t is not None and 0.01 < t <= 0.2
    later = sum(
        len(decode_message(p.payload, 4096).frames)
        for p in c.poll(1.01)
        if decode_message(p.payload, 4096).kind is Kind.FRAMES
    )
    assert later == 10  # one more second of budget


def test_inbound_budget_under_a_flood() -> None:
    c = core(frames_per_s=20.0, burst_s=1.0)
    present(c, GW1)
    c.events()
    for i in range(200):
        c.receive(0.5, c.topics.all, frames_msg(c, GW1, [frame(payload=b"f%d" % i)], seq=i))
    got = [e for e in c.events() if isinstance(e, FrameIn)]
    assert len(got) == 20  # the bucket's burst, nothing more
    assert c.stats["budget_frames"] == 180


def test_copies_do_not_spend_the_inbound_budget() -> None:
    """A broker duplicating or replaying a gateway's frames cannot starve its new ones;
    and a frame refused for the budget is not recorded, so a later copy still passes."""
    c = core(frames_per_s=20.0, burst_s=1.0)
    present(c, GW1)
    c.events()
    first = frame(payload=b"first")
    for i in range(200):  # 200 copies of one frame: one delivery, one token spent
        c.receive(0.5, c.topics.all, frames_msg(c, GW1, [first], seq=i + 1))
    assert c.stats["seen"] == 199 and c.stats["budget_frames"] == 0
    new = [frame(payload=b"new %d" % i) for i in range(25)]
    c.receive(0.5, c.topics.all, frames_msg(c, GW1, new, seq=500))
    got = [e.frame for e in c.events() if isinstance(e, FrameIn)]
    assert got == [first, *new[:19]]  # 20 tokens: the first frame and 19 new ones
    assert c.stats["budget_frames"] == 6
    c.receive(2.0, c.topics.all, frames_msg(c, GW1, new[19:], seq=501))  # refilled
    assert [e.frame for e in c.events() if isinstance(e, FrameIn)] == new[19:]


def test_bad_input_is_counted_never_raised() -> None:
    c = core()
    present(c, GW1)
    c.events()
    t = c.topics
    c.receive(0.1, t.all, b"garbage")
    c.receive(0.1, t.all, b"\x00" * 100_000)
    c.receive(0.1, "ble-bridge/other-mesh/all", frames_msg(c, GW1, [frame()]))
    c.receive(0.1, t.all, encode_message(Kind.FRAMES, mesh_tag("other"), GW1, 1, 0, [frame()]))
    c.receive(0.1, t.all, frames_msg(c, b"\x99" * 8, [frame()]))
    c.receive(0.1, t.presence(GW2), b"{not json")
    c.receive(0.1, t.presence(GW2), encode_presence(Presence(GW1, 0, c.mesh)))
    c.receive(0.1, "elsewhere", b"x")
    assert c.stats["malformed"] == 2
    assert c.stats["oversized"] == 1
    assert c.stats["unknown_mesh"] == 2
    assert c.stats["unknown_gateway"] == 1
    assert c.stats["presence_mismatch"] == 1
    assert c.stats["unknown_topic"] == 1
    assert not [e for e in c.events() if isinstance(e, FrameIn)]
    assert set(k for k, v in c.stats.items() if v and k in UPLINK_DROPS) <= UPLINK_DROPS


def test_too_many_gateways_are_bounded_and_priority_decides_links() -> None:
    c = core(max_gateways=2, max_known_gateways=3)
    for i in range(5):
        present(c, bytes([0x30 + i]) * 8, priority=i)
    assert c.stats["gateways_full"] == 2 and len(c.gateways) == 3
    linked = {gw.peer_id for gw in c.gateways.values() if gw.link_id is not None}
    assert linked == {bytes([0x31]) * 8, bytes([0x32]) * 8}  # the two highest of the three


def test_probe_rtt_and_stall() -> None:
    c = GatewayCore(config(), ME, rng=random.Random(1))
    c.on_connected(0.0)
    out = c.poll(0.0)
    probe = next(p for p in out if p.topic == c.topics.inbox(ME))
    c.receive(0.05, probe.topic, probe.payload)
    assert c.rtt is not None and 0.04 <= c.rtt <= 0.06
    c.handle_timer(5.0)
    assert not c.stalled
    c.handle_timer(0.05 + c.config.link_timeout + 0.1)
    assert c.stalled and c.stats["broker_stalled"] == 1


def test_disconnect_takes_every_link_down_and_backs_off() -> None:
    c = core(reconnect_initial=1.0, reconnect_max=8.0)
    present(c, GW1)
    present(c, GW2)
    c.events()
    d1 = c.on_disconnected(1.0, "gone")
    assert len([e for e in c.events() if isinstance(e, LinkDown)]) == 2
    delays = [d1] + [c.connect_failed(2.0, "refused") for _ in range(6)]
    caps = [1, 2, 4, 8, 8, 8, 8]
    assert all(cap / 2 <= d <= cap for d, cap in zip(delays, caps, strict=True))


def test_backoff_resets_after_a_long_connection() -> None:
    b = Backoff(1.0, 30.0, random.Random(2))
    for _ in range(5):
        b.next_delay()
    b.reset()
    assert b.next_delay() <= 1.0


def test_token_bucket_and_seen_window() -> None:
    tb = TokenBucket(rate=2.0, burst=4.0)
    assert [tb.take(0.0, 1) for _ in range(5)] == [True] * 4 + [False]
    assert tb.ready_at(0.0, 1) == 0.5
    assert TokenBucket(0.0, 1.0).take(0.0, 1e9)  # rate 0: no limit
    sw = SeenWindow(capacity=3, ttl=10.0)
    assert sw.check_and_add(0.0, b"a", 100) is None
    assert sw.check_and_add(5.0, b"a", 100) == "seen"
    assert sw.check_and_add(11.0, b"a", 100) == "beyond_window"  # forgotten: a replay
    assert sw.horizon == 100
    for i, k in enumerate((b"b", b"c", b"d", b"e")):
        assert sw.check_and_add(12.0, k, 200 + i) is None
    assert len(sw) == 3 and sw.evicted == 1 and sw.horizon == 200
    assert sw.check_and_add(12.0, b"b", 200) == "beyond_window"  # pushed out, still refused
    assert sw.check_and_add(12.0, b"f", 300) is None


def test_a_flood_cannot_push_a_frame_out_of_the_window_and_replay_it() -> None:
    c = core(seen_capacity=16, frames_per_s=0.0, bytes_per_s=0.0)
    present(c, GW1)
    c.events()
    ident = Identity.from_seed(b"\x06" * 32)

    def at(ts: int, tag: bytes) -> bytes:
        p = Packet(
            type=PacketType.CONSENSUS, sender=ident.peer_id, payload=tag, timestamp=ts, ttl=1
        )
        return encode(p.signed(ident))

    victim = at(1000, b"victim")
    c.receive(0.1, c.topics.all, frames_msg(c, GW1, [victim]))
    flood = [at(1001 + i, b"flood %d" % i) for i in range(40)]
    c.receive(0.2, c.topics.all, frames_msg(c, GW1, flood, seq=2))
    c.events()
    c.receive(0.3, c.topics.all, frames_msg(c, GW1, [victim], seq=3))
    assert not [e for e in c.events() if isinstance(e, FrameIn)]
    assert c.stats["beyond_window"] == 1


def test_topics_parse() -> None:
    t = Topics("p/q", "m")
    assert t.parse(t.all)[0].value == "all"
    assert t.parse(t.inbox(GW1))[1] == GW1
    for bad in ("p/q/m/to/zz", "p/q/m/x", "p/q/m/presence/11"):
        try:
            t.parse(bad)
        except UplinkWireError as exc:
            assert exc.reason == "unknown_topic"
        else:
            raise AssertionError(bad)


@given(st.binary(max_size=600))
def test_decoders_raise_only_their_error(data: bytes) -> None:
    for decoder in (lambda d: decode_message(d, 4096), decode_presence):
        with contextlib.suppress(UplinkWireError):
            decoder(data)


@given(
    st.sampled_from(list(Kind)),
    st.integers(0, 2**32 - 1),
    st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=20),
)
def test_message_roundtrip(kind: Kind, seq: int, frames: list[bytes]) -> None:
    fs = frames if kind is Kind.FRAMES else []
    msg = decode_message(encode_message(kind, b"m" * 8, GW1, seq, 123, fs), 4096)
    assert (msg.kind, msg.seq, msg.sent_ms, list(msg.frames)) == (kind, seq, 123, fs)


@given(st.binary(max_size=400), st.integers(0, 40))
def test_core_receive_never_raises(data: bytes, cut: int) -> None:
    c = core()
    present(c, GW1)
    good = frames_msg(c, GW1, [frame()])
    for payload in (data, good[:cut] + data, good + data):
        for topic in (c.topics.all, c.topics.inbox(ME), c.topics.presence(GW2)):
            c.receive(0.2, topic, payload)
    c.events()
