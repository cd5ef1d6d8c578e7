"""SeenCache: LRU + TTL, bounded, checked against a reference model."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ble_bridge.mesh.seen import SeenCache


def test_remembers_until_ttl_then_forgets() -> None:
    cache = SeenCache(capacity=10, ttl=300.0)
    cache.add(0.0, b"a")
    assert cache.seen(299.0, b"a")
    assert not cache.seen(299.0 + 300.0, b"a")
    assert len(cache) == 0


def test_seen_refreshes_the_entry() -> None:
    cache = SeenCache(capacity=10, ttl=10.0)
    cache.add(0.0, b"a")
    assert cache.seen(8.0, b"a")
    assert cache.seen(16.0, b"a")  # 8 s after the refresh, not 16 s after the add


def test_capacity_evicts_least_recently_seen() -> None:
    cache = SeenCache(capacity=3, ttl=100.0)
    for i, key in enumerate([b"a", b"b", b"c"]):
        cache.add(float(i), key)
    assert cache.seen(3.0, b"a")  # a becomes most recent
    cache.add(4.0, b"d")  # evicts b
    assert b"b" not in cache
    assert all(k in cache for k in (b"a", b"c", b"d"))
    assert cache.evicted == 1


ops = st.lists(
    st.tuples(
        st.sampled_from(["add", "seen"]),
        st.integers(0, 12).map(lambda i: bytes([i])),
        st.floats(0.0, 4.0),
    ),
    max_size=200,
)


@given(ops, st.integers(1, 6), st.floats(0.5, 10.0))
def test_matches_reference_model_and_stays_bounded(
    steps: list[tuple[str, bytes, float]], capacity: int, ttl: float
) -> None:
    cache = SeenCache(capacity, ttl)
    model: dict[bytes, float] = {}  # key -> last seen; insertion order = recency
    now = 0.0
    for op, key, dt in steps:
        now += dt
        model = {k: t for k, t in model.items() if now - t < ttl}
        if op == "add":
            model.pop(key, None)
            if len(model) >= capacity:
                del model[next(iter(model))]
            model[key] = now
            cache.add(now, key)
        else:
            expected = key in model
            if expected:
                del model[key]
                model[key] = now
            assert cache.seen(now, key) == expected
        assert len(cache) <= capacity
        assert set(model) == {k for k in model if k in cache}
        assert len(cache) == len(model)
