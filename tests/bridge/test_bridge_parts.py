"""The bridge's sans-IO parts alone: hand-made inputs, an explicit ``now`` in milliseconds,
no air and no event loop (announce interval, heartbeat, contact and health, inbox bound,
request rate limit, pacing, pending operations, compaction)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from ble_bridge.bridge.announce import Announcer, Why
from ble_bridge.bridge.compact import compact_items
from ble_bridge.bridge.contact import (
    TRANSITIONS,
    Contact,
    Effect,
    Seen,
    SessionHealth,
    next_health,
)
from ble_bridge.bridge.inbox import Inbound, Inbox, RequestLimit
from ble_bridge.bridge.pacing import Pacing, hold
from ble_bridge.bridge.pending import (
    FinishedOperations,
    OperationStatus,
    PendingOperation,
    PendingOperations,
    ProposalId,
)
from ble_bridge.gossip import Item
from ble_bridge.wire.identity import Identity
from ble_bridge.wire.messages import NIL, Step, Vote, expand_vote_set

MS = 0.001
SESSION = b"S" * 16


def announcer(now: float = 0.0, heartbeat: float = 0.0) -> Announcer:
    return Announcer(
        now, min_interval=2.0, max_interval=16.0, gossip_min_interval=8.0, heartbeat=heartbeat
    )


# -- announcements ------------------------------------------------------------------------


def test_announce_interval_doubles_while_idle_up_to_the_max() -> None:
    a = announcer()
    state = (1, b"h")
    assert a.tick(2000 * MS, state, gossiping=False) is Why.CHANGED  # first: never announced
    intervals = []
    now = 2000 * MS
    for _ in range(5):
        now = a.next_at
        assert a.tick(now, state, gossiping=False) is None
        intervals.append(a.interval)
    assert intervals == [4.0, 8.0, 16.0, 16.0, 16.0]


def test_announce_interval_halves_while_the_state_changes_down_to_the_floor() -> None:
    a = announcer()
    a.interval = 16.0
    a.next_at = 0.0
    now = 0.0
    for h in range(1, 5):
        assert a.tick(now, (h, b"x"), gossiping=False) is Why.CHANGED
        now = a.next_at
    assert a.interval == 2.0
    a.tick(now, (9, b"x"), gossiping=True)  # gossiping: announcements matter less
    assert a.interval == 8.0


def test_nothing_is_announced_before_the_interval_is_up() -> None:
    a = announcer()
    assert a.tick(1999 * MS, (1, b"h"), gossiping=False) is None
    assert a.tick(2000 * MS, (1, b"h"), gossiping=False) is Why.CHANGED


def test_heartbeat_announces_when_nothing_was_sent_for_its_interval() -> None:
    a = announcer(heartbeat=4.0)
    a.announced(0.0, (1, b"h"))
    a.next_at = 100.0  # the interval itself is far off
    assert a.tick(3999 * MS, (1, b"h"), gossiping=False) is None
    a.sent(3000 * MS)  # any message resets it
    assert a.tick(6999 * MS, (1, b"h"), gossiping=False) is None
    assert a.tick(7000 * MS, (1, b"h"), gossiping=False) is Why.HEARTBEAT
    assert a.last_sent == 7000 * MS


def test_a_validator_back_in_contact_gets_our_state_at_the_next_tick() -> None:
    a = announcer()
    a.announced(0.0, (1, b"h"))
    a.next_at = 50.0
    a.contact_regained(10.0)
    assert a.tick(10.0, (1, b"h"), gossiping=False) is Why.CHANGED  # same state, told again


def test_a_joiner_is_answered_at_most_once_per_min_interval() -> None:
    a = announcer()
    assert a.may_answer_join(0.0)
    assert not a.may_answer_join(1999 * MS)
    assert a.may_answer_join(2000 * MS)


# -- contact and health -------------------------------------------------------------------

ME, V1, V2, V3 = b"me", b"v1", b"v2", b"v3"


def test_contact_counts_validators_heard_within_the_timeout_and_always_us() -> None:
    c = Contact([ME, V1, V2, V3], ME, now=0.0, timeout=10.0)
    assert c.in_contact(10_000 * MS) == 4
    assert not c.heard(5000 * MS, V1)
    assert c.in_contact(10_001 * MS) == 2  # us and V1
    assert c.ages(12_000 * MS) == {ME: 0.0, V1: 7.0, V2: 12.0, V3: 12.0}


def test_contact_says_when_a_validator_comes_back() -> None:
    c = Contact([ME, V1], ME, now=0.0, timeout=10.0)
    assert not c.heard(10_000 * MS, V1)
    assert c.heard(20_001 * MS, V1)  # silent for more than the timeout
    assert not c.heard(20_002 * MS, b"stranger")  # not a validator: ignored
    assert b"stranger" not in c


def test_contact_follows_a_validator_set_change() -> None:
    c = Contact([ME, V1, V2], ME, now=0.0, timeout=10.0)
    assert c.set_validators([ME, V1, V3], 9000 * MS) == [V2]
    assert sorted(c) == sorted([ME, V1, V3])
    assert c.in_contact(18_000 * MS) == 2  # V3 got its grace from the change: ME, V3


def test_health_table_is_total_and_only_leaving_a_partition_heals() -> None:
    for health in SessionHealth:
        for seen in Seen:
            nxt, effect = next_health(health, seen)
            assert (effect is Effect.HEAL) == (
                health is SessionHealth.PARTITIONED and nxt is not SessionHealth.PARTITIONED
            )
    assert len(TRANSITIONS) == len(SessionHealth) * len(Seen)
    assert next_health(SessionHealth.ACTIVE, Seen.QUORUM_LOST)[0] is SessionHealth.PARTITIONED
    assert next_health(SessionHealth.ACTIVE, Seen.BEHIND)[0] is SessionHealth.CATCHING_UP
    assert next_health(SessionHealth.CATCHING_UP, Seen.IN_STEP)[0] is SessionHealth.ACTIVE


def test_partition_then_heal_from_contact_alone() -> None:
    """Four validators: losing two of them (quorum 3) partitions; hearing one heals."""
    c = Contact([ME, V1, V2, V3], ME, now=0.0, timeout=10.0)
    health = SessionHealth.ACTIVE
    effects = []
    for t_ms, heard in [(5000, [V1, V2, V3]), (12_000, [V1]), (16_000, []), (17_000, [V2])]:
        for v in heard:
            c.heard(t_ms * MS, v)
        seen = Seen.QUORUM_LOST if c.in_contact(t_ms * MS) < 3 else Seen.IN_STEP
        health, effect = next_health(health, seen)
        effects.append((health, effect))
    assert effects == [
        (SessionHealth.ACTIVE, Effect.NONE),
        (SessionHealth.ACTIVE, Effect.NONE),  # V2, V3 heard 7 s ago: still in contact
        (SessionHealth.PARTITIONED, Effect.NONE),  # 11 s: only ME and V1
        (SessionHealth.ACTIVE, Effect.HEAL),
    ]


# -- inbox and request limit --------------------------------------------------------------


def test_inbox_refuses_at_capacity_and_takes_again_once_drained() -> None:
    box = Inbox(2)
    item = Inbound(b"p", None, 0.0)
    assert box.push(item) and box.push(item)
    assert box.full and not box.push(item)
    assert box.pop() is item
    assert box.push(item) and len(box) == 2


def test_request_limit_passes_a_burst_per_sender_and_kind_per_interval() -> None:
    lim = RequestLimit(interval=0.25, burst=4)
    passed = [lim.allow(t * MS, b"a", "CommitRequest", 64) for t in range(6)]
    assert passed == [True] * 4 + [False] * 2
    assert lim.allow(5 * MS, b"a", "SnapshotRequest", 64)  # another kind
    assert lim.allow(5 * MS, b"b", "CommitRequest", 64)  # another sender
    assert lim.allow(250 * MS, b"a", "CommitRequest", 64)  # a new interval


@given(st.lists(st.binary(min_size=1, max_size=2), max_size=200))
@settings(max_examples=50, deadline=None)
def test_request_limit_stays_bounded(senders: list[bytes]) -> None:
    lim = RequestLimit(interval=0.25, burst=1)
    for i, sender in enumerate(senders):
        lim.allow(i * MS, sender, "CommitRequest", 8)
        assert len(lim) <= 8


# -- pacing -------------------------------------------------------------------------------

PACE = Pacing(busy_frames=1, poll=0.005, max_hold=0.05, op_busy_frames=2, op_max_hold=0.25)


def test_an_idle_link_sends_at_once() -> None:
    assert hold(PACE, 1.0, due=1.0, link_depth=0, node_depth=0, only_ops=False) is None


def test_lingering_ops_wait_for_their_due_time_only_on_a_busy_radio() -> None:
    now = 1000 * MS
    assert hold(PACE, now, due=now + 10 * MS, link_depth=0, node_depth=1, only_ops=True) == (
        now + 10 * MS
    )
    assert hold(PACE, now, due=now + 10 * MS, link_depth=0, node_depth=0, only_ops=True) is None


def test_a_busy_link_holds_its_batch_until_the_max_hold() -> None:
    now = 1.0

    def busy(t: float) -> float | None:
        return hold(PACE, t, due=now, link_depth=1, node_depth=1, only_ops=False)

    assert busy(now) == now + PACE.poll
    assert busy(now + 0.049) == now + 0.049 + PACE.poll
    assert busy(now + PACE.max_hold) is None


def test_ops_yield_the_radio_while_our_links_queue_enough() -> None:
    now = 1000 * MS
    assert hold(PACE, now, due=now, link_depth=0, node_depth=2, only_ops=True) == now + 5 * MS
    assert hold(PACE, now, due=now, link_depth=0, node_depth=2, only_ops=False) is None
    assert hold(PACE, now, due=now, link_depth=0, node_depth=1, only_ops=True) is None
    late = now + 250 * MS
    assert hold(PACE, late, due=now, link_depth=0, node_depth=2, only_ops=True) is None


# -- pending operations -------------------------------------------------------------------


def _op(pid: bytes, at: float) -> PendingOperation:
    return PendingOperation(ProposalId(pid), SESSION, at, required_votes=3)


def test_a_reissued_operation_is_found_by_its_new_id_and_keeps_the_callers_id() -> None:
    ops = PendingOperations()
    ops.add(_op(b"first", 0.0))
    op = ops.reissued(b"first", b"second")
    assert op is not None and op.proposal_id == b"first"
    assert ops.get(b"second") is op and ops.get(b"first") is op
    assert ops.reissued(b"second", b"third") is op
    ops.remove(b"first")
    assert ops.get(b"third") is None and ops.reissued(b"third", b"fourth") is None


def test_operations_older_than_the_timeout_are_the_expired_ones() -> None:
    ops = PendingOperations()
    ops.add(_op(b"a", 0.0))
    ops.add(_op(b"b", 20.0))
    assert [o.proposal_id for o in ops.older_than(30_001 * MS, 30.0)] == [b"a"]


def test_finished_operations_are_bounded_and_count_latency_and_reasons() -> None:
    counters: Counter[str] = Counter()
    done = FinishedOperations(capacity=2, latency_samples=8, counters=counters)
    for i, status in enumerate([OperationStatus.COMMITTED] * 2 + [OperationStatus.FAILED]):
        done.finish(_op(bytes([i]), 0.0), status, (i + 1) * 100 * MS, "timeout")
    assert len(done) == 2 and done.get(b"\x00") is None
    assert list(done.latencies) == [0.1, 0.2]
    assert counters == Counter(operations_committed=2, operations_failed=1, failed_timeout=1)


# -- compaction ---------------------------------------------------------------------------


def test_votes_of_one_block_become_one_vote_set_short_only_where_known() -> None:
    ids = [Identity.generate() for _ in range(4)]
    keys = sorted(i.signing_public for i in ids)
    by_key = {i.signing_public: i for i in ids}
    block = b"\x07" * 32
    votes = [Vote.create(by_key[k].sign, k, SESSION, Step.PREVOTE, 3, 0, block) for k in keys[:3]]
    nil = Vote.create(by_key[keys[3]].sign, keys[3], SESSION, Step.PREVOTE, 3, 0, NIL)
    items = [Item(bytes([i]), b"raw", 3, meta=v) for i, v in enumerate([*votes, nil])]
    counters: Counter[str] = Counter()

    def compact(known: set[bytes] | None) -> list[bytes]:
        return compact_items(
            items,
            members=frozenset(keys),
            index=keys.index,
            proposer=lambda h, r: keys[0],
            known=known,
            short_sets=True,
            counters=counters,
        )

    full = compact(None)
    assert len(full) == 2  # the three block votes, and the nil vote
    assert expand_vote_set(full[0], keys) == votes
    assert counters == Counter(vote_sets_full=1, vote_sets_short=1)  # nil is always short
    short = compact({block})
    assert len(short[0]) < len(full[0])
    assert expand_vote_set(short[0], keys, resolve=lambda h, prefix: [block]) == votes
