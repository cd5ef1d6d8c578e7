"""Token bucket, circuit breaker (hypothesis state machine) and the bounded peer table."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ble_bridge.mesh.clock import MeshClock
from ble_bridge.mesh.peers import BreakerState, CircuitBreaker, PeerTable, TokenBucket


def state_of(breaker: CircuitBreaker) -> BreakerState:
    """The breaker's state, read through a call so type narrowing does not stick."""
    return breaker.state


def test_token_bucket_allows_burst_then_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=5.0, now=0.0)
    assert sum(bucket.allow(0.0) for _ in range(20)) == 5
    assert sum(bucket.allow(1.0) for _ in range(20)) == 5  # refilled to the burst, not 10
    assert sum(bucket.allow(1.25) for _ in range(20)) == 2  # 0.25 s at 10/s


def test_token_bucket_long_run_rate_is_bounded() -> None:
    bucket = TokenBucket(rate=50.0, burst=20.0, now=0.0)
    allowed = sum(bucket.allow(i * 0.001) for i in range(10_000))  # 1000 frames/s offered
    assert allowed <= 20 + 50 * 10
    assert allowed >= 50 * 10


def test_breaker_opens_after_consecutive_failures_only() -> None:
    b = CircuitBreaker(3, open_time=1.0, max_open_time=8.0)
    b.record_failure(0.0)
    b.record_failure(0.0)
    b.record_success()
    b.record_failure(0.0)
    b.record_failure(0.0)
    assert state_of(b) is BreakerState.CLOSED
    b.record_failure(0.0)
    assert state_of(b) is BreakerState.OPEN
    assert not b.allow(0.5)
    assert b.allow(1.0)  # the half-open probe
    assert state_of(b) is BreakerState.HALF_OPEN
    assert not b.allow(1.0)  # only one probe in flight
    b.record_failure(1.0)
    assert state_of(b) is BreakerState.OPEN and b.open_time == 2.0  # backoff doubles
    assert not b.allow(2.5)
    assert b.allow(3.0)
    b.record_success()
    assert state_of(b) is BreakerState.CLOSED and b.open_time == 1.0


class BreakerMachine(RuleBasedStateMachine):
    """Drives a breaker with random time, sends and results; checks it against a model."""

    def __init__(self) -> None:
        super().__init__()
        self.breaker = CircuitBreaker(3, open_time=1.0, max_open_time=4.0)
        self.now = 0.0
        self.model_state = "closed"
        self.failures = 0
        self.open_until = 0.0
        self.open_time = 1.0
        self.probe_out = False

    @rule(dt=st.floats(0.0, 3.0))
    def wait(self, dt: float) -> None:
        self.now += dt

    @rule()
    def try_send(self) -> None:
        allowed = self.breaker.allow(self.now)
        if self.model_state == "closed":
            assert allowed
        elif self.model_state == "open" and self.now < self.open_until:
            assert not allowed
        else:  # open and due, or half-open
            expect = not self.probe_out
            assert allowed == expect
            self.model_state = "half_open"
            self.probe_out = True

    @rule()
    def success(self) -> None:
        self.breaker.record_success()
        self.model_state, self.failures, self.open_time, self.probe_out = "closed", 0, 1.0, False

    @precondition(lambda self: self.model_state != "open")
    @rule()
    def failure(self) -> None:
        self.breaker.record_failure(self.now)
        if self.model_state == "half_open":
            self.open_time = min(self.open_time * 2, 4.0)
            self._open()
        else:
            self.failures += 1
            if self.failures >= 3:
                self._open()

    def _open(self) -> None:
        self.model_state = "open"
        self.open_until = self.now + self.open_time
        self.probe_out = False

    @invariant()
    def matches_model(self) -> None:
        assert self.breaker.state.value == self.model_state
        assert 1.0 <= self.breaker.open_time <= 4.0
        assert self.breaker.open_time == self.open_time


TestBreakerMachine = BreakerMachine.TestCase


def test_peer_table_is_bounded_but_keeps_pinned_and_linked_peers() -> None:
    table = PeerTable(max_peers=4)
    pinned = table.touch(b"pinned!!")
    pinned.pinned = True
    for i in range(20):
        table.touch(bytes([i]) * 8)
    assert len(table) == 4
    assert b"pinned!!" in table
    assert table.evicted == 17


def test_mesh_clock_follows_the_median_peer_not_an_outlier() -> None:
    clock = MeshClock(max_samples=8, sample_ttl=600.0)
    assert clock.offset_ms(0.0) == 0  # alone: own clock
    for i, offset in enumerate([5_000, 5_100, 4_900, 86_400_000]):
        clock.observe(1.0, bytes([i]) * 8, 1_000_000 + offset, 1_000_000)
    assert 4_900 <= clock.offset_ms(1.0) <= 5_100  # one wild peer of four moves nothing
    clock.observe(1.0, b"\x09" * 8, 1_005_000, 1_000_000)
    assert 4_900 <= clock.offset_ms(1.0) <= 5_100


def test_mesh_clock_keeps_the_least_delayed_sample_and_forgets_old_ones() -> None:
    clock = MeshClock(max_samples=8, sample_ttl=100.0)
    clock.observe(0.0, b"a" * 8, 10_000, 0)
    clock.observe(1.0, b"a" * 8, 9_000, 0)  # a slower copy: transit delay, not a clock jump
    assert clock.offset_ms(1.0) == 10_000
    assert clock.offset_ms(200.0) == 0 and len(clock) == 0
