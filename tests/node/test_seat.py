"""A Seat: submits what its TablePlayer plans and tells it how each op ended."""

from __future__ import annotations

import hashlib
import random
from types import SimpleNamespace
from typing import Any, cast

import pytest

from ble_bridge.bridge import (
    BridgeError,
    NetworkConsensusBridge,
    OperationStatus,
    PendingOperation,
    ProposalId,
    SessionHealth,
)
from ble_bridge.consensus.app import BlockContext
from ble_bridge.consensus.craps import (
    CrapsApp,
    CrapsState,
    Join,
    PlaceBet,
    TablePlayer,
    decode_op,
    encode_op,
)
from ble_bridge.node import Seat

KEYS = tuple(bytes([i]) * 32 for i in range(1, 5))
SID = b"s" * 16
JOIN = encode_op(Join())


class FakeBridge:
    """Just what a Seat uses: the committed state, health, submit_operation, operation."""

    def __init__(self, state: CrapsState) -> None:
        self.state = state
        self.ops: dict[bytes, PendingOperation] = {}
        self.bodies: list[bytes] = []
        self.refuse: str | None = None
        self.health_now = SessionHealth.ACTIVE

    def health(self, session_id: bytes) -> SessionHealth:
        return self.health_now

    def engine(self, session_id: bytes) -> Any:
        return SimpleNamespace(state=self.state)

    def submit_operation(self, session_id: bytes, op: bytes) -> ProposalId:
        if self.refuse is not None:
            raise BridgeError(self.refuse)
        op_id = ProposalId(hashlib.sha256(b"%d" % len(self.bodies)).digest())
        self.bodies.append(op)
        self.ops[op_id] = PendingOperation(op_id, session_id, 0.0, required_votes=3)
        return op_id

    def operation(self, op_id: bytes) -> PendingOperation | None:
        return self.ops.get(op_id)

    def end(self, op_id: bytes, status: OperationStatus) -> None:
        self.ops[op_id].status = status


def seat_and_bridge() -> tuple[Seat, FakeBridge, NetworkConsensusBridge]:
    fake = FakeBridge(CrapsApp().initial_state(KEYS))
    seat = Seat(TablePlayer(KEYS[0], random.Random(1)), SID)
    return seat, fake, cast(NetworkConsensusBridge, fake)


def test_seat_waits_for_a_pending_op_and_replans_when_it_fails() -> None:
    seat, fake, bridge = seat_and_bridge()
    (op_id,) = seat.play(bridge, 0.0).submitted
    assert fake.bodies == [JOIN]
    assert [seat.play(bridge, 0.0).submitted for _ in range(10)] == [[]] * 10  # still pending
    fake.end(op_id, OperationStatus.FAILED)
    assert len(seat.play(bridge, 0.0).submitted) == 1
    assert fake.bodies == [JOIN, JOIN]


def test_seat_counts_an_op_the_bridge_forgot_as_failed() -> None:
    seat, fake, bridge = seat_and_bridge()
    seat.play(bridge, 0.0)
    fake.ops.clear()  # e.g. the node restarted with a new bridge
    assert len(seat.play(bridge, 0.0).submitted) == 1
    assert fake.bodies == [JOIN, JOIN]


def test_seat_reports_refused_submissions_and_tries_again_next_turn() -> None:
    seat, fake, bridge = seat_and_bridge()
    fake.refuse = "pending_full"
    turn = seat.play(bridge, 0.0)
    assert turn.submitted == [] and turn.refused == ["pending_full"]
    assert seat.player.in_flight == ()
    fake.refuse = None
    assert len(seat.play(bridge, 0.0).submitted) == 1


def test_seat_does_not_replan_a_committed_bet() -> None:
    app = CrapsApp()
    fake = FakeBridge(app.initial_state(KEYS))
    for key in KEYS[:2]:
        fake.state = app.apply(fake.state, key, JOIN, BlockContext(1, KEYS[0], KEYS))
    player = TablePlayer(KEYS[0], random.Random(1), contract_probability=0, field_probability=1)
    seat, bridge = Seat(player, SID), cast(NetworkConsensusBridge, fake)
    bet_id, _ = seat.play(bridge, 0.0).submitted
    assert isinstance(decode_op(fake.bodies[0]), PlaceBet)
    fake.state = app.apply(fake.state, KEYS[0], fake.bodies[0], BlockContext(2, KEYS[0], KEYS))
    fake.end(bet_id, OperationStatus.COMMITTED)
    assert seat.play(bridge, 0.0).submitted == []  # a failed bet would be replaced by a new one
    assert all(not isinstance(op, PlaceBet) for op in player.in_flight)


def test_seat_gives_up_on_an_op_pending_too_long() -> None:
    seat, fake, bridge = seat_and_bridge()
    seat.give_up_after = 8.0
    seat.play(bridge, 0.0)
    assert seat.play(bridge, 7.9).submitted == []
    assert len(seat.play(bridge, 8.0).submitted) == 1  # lost on the way: planned again
    assert fake.bodies == [JOIN, JOIN]


@pytest.mark.parametrize("health", [SessionHealth.PARTITIONED, SessionHealth.CATCHING_UP])
def test_seat_plays_only_while_the_session_is_active(health: SessionHealth) -> None:
    seat, fake, bridge = seat_and_bridge()
    (op_id,) = seat.play(bridge, 0.0).submitted
    fake.health_now = health
    fake.end(op_id, OperationStatus.FAILED)
    assert seat.play(bridge, 1.0).submitted == []
    assert seat.player.in_flight == ()  # the failure was still reported
    fake.health_now = SessionHealth.ACTIVE
    assert len(seat.play(bridge, 2.0).submitted) == 1
