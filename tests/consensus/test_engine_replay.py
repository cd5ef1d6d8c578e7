"""A hostile broker (issue 19) may replay consensus messages long after every seen cache
forgot them: an engine drops messages of heights it already settled, counted as
``drop_stale_height``, and its chain and state do not move."""

from __future__ import annotations

from ble_bridge.consensus.testing import add_op, exchange, unit_engines
from ble_bridge.wire.messages import Message


def test_messages_of_settled_heights_are_dropped_when_replayed() -> None:
    group = unit_engines(4)
    for e in group:
        e.start(0.0)
    recorded: list[tuple[int, Message]] = []

    def record(sender: object, msg: Message) -> Message:
        recorded.append((group[0].height, msg))
        return msg

    now = 0.0
    for k in range(3):
        group[k % 4].submit(now, add_op(k + 1))
        now = exchange(group, now, transform=record) + 1.0
    settled = group[0].height
    assert settled >= 3 and len(recorded) > 12
    for k in range(3, 6):  # more heights after the recording
        group[k % 4].submit(now, add_op(k + 1))
        now = exchange(group, now) + 1.0
    heights = [e.height for e in group]
    state = {e.state_hash for e in group}
    before = [e.stats["drop_stale_height"] for e in group]
    for e in group:
        for _, msg in recorded:
            e.receive(now, msg)
    now = exchange(group, now)
    assert [e.height for e in group] == heights
    assert {e.state_hash for e in group} == state and len(state) == 1
    for e, b in zip(group, before, strict=True):
        assert e.stats["drop_stale_height"] - b >= len(recorded) // 2
    assert group[0].state.grand_total == sum(range(1, 7))
