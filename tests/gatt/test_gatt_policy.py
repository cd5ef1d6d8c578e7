"""LinkPolicy (sans-IO): budget, RSSI gate, rate limit, backoff with jitter, tie-break."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from gatt.config import BleConfig
from gatt.policy import STABLE_LINK_S, LinkPolicy

ME = bytes([5]) * 8
LOW, HIGH = bytes([1]) * 8, bytes([9]) * 8


def policy(**kw: object) -> LinkPolicy:
    cfg = BleConfig(connect_interval_s=1.0, tie_break_grace_s=3.0, **kw)  # type: ignore[arg-type]
    return LinkPolicy(cfg, ME, random.Random(1))


def test_smaller_peer_id_connects_at_once_larger_waits_for_grace() -> None:
    p = policy()
    p.heard("hi", HIGH, -50, now=0.0)
    p.heard("lo", LOW, -50, now=0.0)
    assert p.next_candidates(0.0, links=0, linked=set(), limit=5) == ["hi"]
    p.last_attempt = float("-inf")
    assert set(p.next_candidates(3.5, links=0, linked=set(), limit=5)) == {"hi", "lo"}


def test_budget_rate_limit_rssi_gate_and_linked_addresses() -> None:
    p = policy(link_budget=2, rssi_min=-80)
    p.heard("a", HIGH, -50, 0.0)
    p.heard("weak", HIGH, -95, 0.0)
    p.heard("b", HIGH, -60, 0.0)
    assert p.next_candidates(0.0, links=2, linked=set()) == []
    assert p.next_candidates(0.0, links=1, linked={"a"}) == ["b"]
    p.attempt("b", 0.0)
    assert p.next_candidates(0.5, links=1, linked=set()) == []  # one attempt per second
    assert p.next_candidates(1.0, links=0, linked=set(), limit=5) == ["a", "b"]
    assert p.counters["skipped_rssi"] >= 1


def test_own_advertisement_is_never_a_candidate() -> None:
    p = policy()
    p.heard("me", ME, -40, 0.0)
    assert p.next_candidates(10.0, links=0, linked=set()) == []


@given(st.integers(min_value=1, max_value=40), st.integers(min_value=0, max_value=2**32))
def test_backoff_grows_exponentially_within_jitter_and_cap(failures: int, seed: int) -> None:
    cfg = BleConfig(backoff_base_s=0.5, backoff_max_s=30.0, backoff_jitter=0.25)
    p = LinkPolicy(cfg, ME, random.Random(seed))
    nominal = min(30.0, 0.5 * 2 ** (failures - 1))
    d = p.backoff(failures)
    assert nominal * 0.75 <= d <= nominal * 1.25


def test_failures_push_retry_later_and_a_stable_link_resets_them() -> None:
    p = policy(backoff_base_s=1.0, backoff_jitter=0.0)
    p.heard("x", HIGH, -50, 0.0)
    delays = [p.failed("x", 0.0) for _ in range(4)]
    assert delays == [1.0, 2.0, 4.0, 8.0]
    p.heard("x", HIGH, -50, 7.5)
    assert p.next_candidates(7.9, links=0, linked=set()) == []
    assert p.next_candidates(8.0, links=0, linked=set()) == ["x"]
    p.connected("x", 10.0)
    assert p.disconnected("x", 10.0 + STABLE_LINK_S) == 1.0


@given(st.binary(min_size=8, max_size=8), st.binary(min_size=8, max_size=8))
def test_tie_break_keeps_exactly_one_direction(ours: bytes, theirs: bytes) -> None:
    if ours == theirs:
        return
    mine = LinkPolicy(BleConfig(), ours)
    other = LinkPolicy(BleConfig(), theirs)
    assert mine.keep_central(theirs) != other.keep_central(ours)


def test_nodes_not_heard_lately_are_not_tried() -> None:
    p = policy(candidate_fresh_s=2.0)
    p.heard("x", HIGH, -50, 0.0)
    assert p.next_candidates(2.5, links=0, linked=set()) == []
    p.heard("x", HIGH, -50, 2.6)
    assert p.next_candidates(2.7, links=0, linked=set()) == ["x"]


# -- rotation: room for a stranded node at full budget (ble_bridge.mesh.links) -------------

PEERS = {f"n{i}": bytes([20 + i]) * 8 for i in range(6)}


def full_policy() -> tuple[LinkPolicy, list[tuple[str, float]]]:
    """Budget 3, linked to n0..n2 for a minute, none of them advertising (all full)."""
    p = policy(link_budget=3)
    return p, [("n0", 60.0), ("n1", 60.0), ("n2", 60.0)]


def hear(p: LinkPolicy, address: str, start: float, end: float, step: float = 1.0) -> None:
    t = start
    while t <= end:
        p.heard(address, PEERS[address], -60, t)
        t += step


def test_full_node_rotates_for_an_advertiser_stranded_long_enough() -> None:
    p, links = full_policy()
    after = p.rotation_config.stranded_after_s
    hear(p, "n5", 0.0, after - 1.0)
    assert p.rotation(after - 1.0, links) is None  # not heard long enough yet
    hear(p, "n5", after, after)
    rot = p.rotation(after, links)
    assert rot is not None and rot.join == "n5"
    assert rot.drop == "n2"  # all equally full: the largest address, deterministically
    assert p.counters["rotations"] == 1


def test_below_budget_or_reachable_through_the_mesh_never_rotates() -> None:
    p, links = full_policy()
    hear(p, "n5", 0.0, 10.0)
    assert p.rotation(10.0, links[:2]) is None  # a free slot: the normal connect path
    assert p.rotation(10.0, links, reachable=lambda peer: peer == PEERS["n5"]) is None
    hear(p, "n5", 11.0, 20.0)  # the path is gone: the stranded clock starts again
    assert p.rotation(14.0, links, reachable=lambda peer: False) is None
    rot = p.rotation(20.0, links, reachable=lambda peer: False)
    assert rot is not None and rot.join == "n5"


def test_advertising_neighbours_and_young_links_are_never_dropped() -> None:
    p, _ = full_policy()
    young = p.rotation_config.min_link_age_s / 2
    links = [("n0", 60.0), ("n1", 60.0), ("n2", young)]
    hear(p, "n5", 0.0, 10.0)
    hear(p, "n1", 0.0, 10.0)  # n1 advertises: it has a free slot, maybe only our link
    rot = p.rotation(10.0, links)
    assert rot is not None and rot.drop == "n0"
    p2, _ = full_policy()
    hear(p2, "n5", 0.0, 10.0)
    hear(p2, "n0", 0.0, 10.0)
    hear(p2, "n1", 0.0, 10.0)
    assert p2.rotation(10.0, links) is None
    assert p2.watch.counters["rotation_nothing_to_drop"] == 1


def test_one_rotation_per_interval_and_per_target_cooldown() -> None:
    p, links = full_policy()
    cfg = p.rotation_config
    hear(p, "n4", 0.0, 10.0)
    hear(p, "n5", 0.0, 10.0)
    first = p.rotation(10.0, links)
    assert first is not None and first.join == "n4"  # heard as long: smaller address first
    assert p.rotation(11.0, links) is None  # one rotation per interval
    t = 10.0 + cfg.rotate_interval_s
    hear(p, "n4", 11.0, t)
    hear(p, "n5", 11.0, t)
    second = p.rotation(t, links)
    assert second is not None and second.join == "n5"  # n4 is cooling down


@given(
    st.lists(
        st.tuples(st.integers(0, 9), st.integers(0, 5), st.floats(0.0, 40.0)),
        min_size=1,
        max_size=6,
        unique_by=lambda x: x[0],
    ),
    st.lists(st.tuples(st.integers(0, 15), st.floats(0.0, 30.0)), max_size=30),
)
def test_stranded_watch_never_drops_a_lone_or_young_link_nor_joins_a_neighbour(
    links: list[tuple[int, int, float]], heard: list[tuple[int, float]]
) -> None:
    from ble_bridge.mesh.links import NeighbourLink, StrandedWatch

    watch: StrandedWatch[int] = StrandedWatch(budget=len(links))
    for peer, t in sorted(heard, key=lambda h: h[1]):
        if peer not in {lk[0] for lk in links}:
            watch.heard(peer, t)
    mine = [NeighbourLink(p, deg, age) for p, deg, age in links]
    rot = watch.decide(30.0, mine)
    if rot is not None:
        dropped = next(lk for lk in mine if lk.peer == rot.drop)
        assert dropped.peer_links >= 2 and dropped.age >= watch.config.min_link_age_s
        assert rot.join not in {lk.peer for lk in mine}
        assert all(
            (lk.peer_links, lk.peer) <= (dropped.peer_links, dropped.peer)
            for lk in mine
            if lk.peer_links >= 2 and lk.age >= watch.config.min_link_age_s
        )


@given(st.lists(st.binary(min_size=0, max_size=12), min_size=1, max_size=400))
def test_a_flood_of_foreign_adverts_is_bounded_and_never_evicts_a_linked_node(
    garbage: list[bytes],
) -> None:
    """Foreign devices advertise our UUID with garbage (any length, any bytes) from random
    addresses: the table stays within max_candidates, and the one we are linked to stays."""
    p = policy(max_candidates=16)
    p.heard("peer", HIGH, -50, 0.0)
    p.connected("peer", 0.0)
    for i, junk in enumerate(garbage):
        peer_id = p.config.profile.peer_id_from({}, {0xFFFF: junk})  # None unless 6 bytes
        p.heard(f"foreign-{i}", peer_id, -40, float(i + 1))
        assert len(p.candidates) <= 16
    assert "peer" in p.candidates
    newest = f"foreign-{len(garbage) - 1}"
    assert newest in p.candidates  # the oldest heard go first
    assert p.counters.get("candidates_evicted", 0) == max(0, len(garbage) + 1 - 16)


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 3), st.booleans())))
def test_the_central_role_is_freed_after_k_timeouts_as_peripheral_once_per_node(
    events: list[tuple[str, int, bool]],
) -> None:
    """Events: (node, inbound links at the timeout, the node linked right after). Freed only
    at the k-th timeout in a row with inbound links up; a timeout without inbound links resets
    the count; not again for a node until a link to it forms."""
    k = 2
    p = policy(peripheral_connect_timeouts=k)
    for addr in ("a", "b"):
        p.heard(addr, LOW, -50, 0.0)
    count = {"a": 0, "b": 0}
    freed = {"a": False, "b": False}
    frees = 0
    for addr, inbound, linked in events:
        got = p.free_central_role(addr, inbound)
        count[addr] = count[addr] + 1 if inbound else 0
        want = inbound > 0 and count[addr] >= k and not freed[addr]
        assert got == want
        if got:
            freed[addr], count[addr] = True, 0
            frees += 1
        if linked:
            p.connected(addr, 1.0)
            freed[addr], count[addr] = False, 0
    assert p.counters.get("free_central_role", 0) == frees


def test_the_central_role_is_never_freed_when_the_rule_is_off_or_the_node_unknown() -> None:
    p = policy(peripheral_connect_timeouts=0)
    p.heard("a", LOW, -50, 0.0)
    assert not any(p.free_central_role("a", 1) for _ in range(10))
    q = policy()
    assert not any(q.free_central_role("never-heard", 2) for _ in range(10))
    q.heard("a", LOW, -50, 0.0)
    assert [q.free_central_role("a", 1) for _ in range(4)] == [False, True, False, False]
