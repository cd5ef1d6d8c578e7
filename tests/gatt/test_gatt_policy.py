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
