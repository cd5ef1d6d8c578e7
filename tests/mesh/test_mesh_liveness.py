"""Link liveness rules (sans-IO): half-open, unidentified and idle links, keepalives."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ble_bridge.mesh.liveness import (
    CAP_LINK_KEEPALIVE,
    KEEPALIVE_LEN,
    KEEPALIVE_TYPE,
    LinkLiveness,
    LivenessConfig,
    PeerKind,
    is_keepalive,
    keepalive_frame,
    kind_of,
)
from ble_bridge.wire.packet import decode

CFG = LivenessConfig(idle_s=45.0, app_idle_s=120.0, first_frame_s=20.0, identify_s=60.0)


def test_a_link_that_delivers_nothing_is_closed_as_silent() -> None:
    lv: LinkLiveness[int] = LinkLiveness(CFG)
    lv.up(1, 0.0)
    assert lv.poll(19.9).close == []
    assert lv.poll(20.0).close == [(1, "silent")]
    assert 1 not in lv and lv.closed == {"silent": 1}


def test_a_node_link_idle_for_the_timeout_is_closed_an_app_link_only_after_120s() -> None:
    lv: LinkLiveness[str] = LinkLiveness(CFG)
    for key in ("node", "app"):
        lv.up(key, 0.0)
        lv.heard(key, 1.0)
    lv.identified("node", kind_of(CAP_LINK_KEEPALIVE), 1.0)
    lv.identified("app", kind_of(0), 1.0)
    assert lv.kind("node") is PeerKind.NODE and lv.kind("app") is PeerKind.APP
    assert lv.poll(45.9).close == []
    assert lv.poll(46.0).close == [("node", "idle")]
    assert lv.poll(120.9).close == []
    assert lv.poll(121.0).close == [("app", "idle")]


def test_traffic_keeps_a_link_open_and_unidentified_links_are_closed() -> None:
    lv: LinkLiveness[int] = LinkLiveness(CFG)
    lv.up(1, 0.0)
    lv.up(2, 0.0)
    lv.identified(1, PeerKind.NODE, 0.5)
    for t in range(1, 200):
        lv.heard(1, float(t))
        lv.heard(2, float(t))
        verdict = lv.poll(float(t))
        if t < 60:
            assert verdict.close == []
        if t == 60:
            assert verdict.close == [(2, "unidentified")]
    assert 1 in lv


def test_keepalives_only_where_nothing_was_sent_and_never_to_apps() -> None:
    lv: LinkLiveness[int] = LinkLiveness(CFG)
    lv.up(1, 0.0)
    lv.up(2, 0.0)
    lv.identified(2, PeerKind.APP, 0.0)
    for k in (1, 2):
        lv.heard(k, 0.0)
    assert lv.poll(0.0).keepalive == [1]  # nothing sent yet
    lv.sent(1, 5.0)
    assert lv.poll(19.9).keepalive == []
    assert lv.poll(20.0).keepalive == [1]  # 15 s after the last frame sent
    assert lv.poll(20.1).keepalive == []  # marked as sent
    nxt = lv.next_deadline()
    assert nxt is not None and nxt <= 35.0


def test_keepalive_frame_is_a_tiny_ttl0_frame_of_a_type_the_apps_do_not_know() -> None:
    frame = keepalive_frame(bytes(range(8)), 1_700_000_000_000, 244)
    assert len(frame) == KEEPALIVE_LEN and is_keepalive(frame)
    p = decode(frame)
    assert (p.type, p.ttl, p.payload, p.signature) == (KEEPALIVE_TYPE, 0, b"", None)
    assert p.sender == bytes(range(8))
    assert keepalive_frame(bytes(8), 0, 20) == b""  # MTU 23: an empty frame instead
    assert is_keepalive(b"") and not is_keepalive(b"\x01\x02" + bytes(20))


@given(
    st.lists(st.tuples(st.integers(0, 3), st.sampled_from("uhsid"), st.floats(0, 5)), max_size=60)
)
def test_poll_never_closes_a_link_before_its_deadline(ops: list[tuple[int, str, float]]) -> None:
    lv: LinkLiveness[int] = LinkLiveness(CFG)
    now = 0.0
    up_at: dict[int, float] = {}
    for key, op, dt in ops:
        now += dt
        if op == "u":
            lv.up(key, now)
            up_at[key] = now
        elif op == "h":
            lv.heard(key, now)
        elif op == "s":
            lv.sent(key, now)
        elif op == "i":
            lv.identified(key, PeerKind.NODE, now)
        else:
            lv.down(key)
        for closed, _why in lv.poll(now).close:
            assert now - up_at[closed] >= min(CFG.first_frame_s, CFG.idle_s)
