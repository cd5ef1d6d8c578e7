"""When a neighbour's gossip batch leaves: a pure function of queue depths and ``now``
(like aioquic's pacing, inside the sans-IO core).

A batch is held while the neighbour's link is busy, so messages batch up instead of
queueing frame after frame behind each other, but never longer than ``max_hold`` past its
due time. On a busy radio, operations linger until their due time for others to share
their frame, and a batch of operations only yields to votes and proposals while our links
together queue ``op_busy_frames`` frames, at most ``op_max_hold`` past its due time.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Pacing:
    busy_frames: int  # hold a neighbour's batch while its link queues this many frames
    poll: float  # look again at a held batch this often
    max_hold: float  # ...but never hold it longer than this past its due time
    op_busy_frames: (
        int  # an operations-only batch yields while all links queue this many (0: never)
    )
    op_max_hold: float  # ...at most this long past its due time


def hold(
    pacing: Pacing,
    now: float,
    *,
    due: float | None,
    link_depth: int,
    node_depth: int,
    only_ops: bool,
) -> float | None:
    """None: send the neighbour's batch now; else when to look at it again.

    ``due``: its most pressing item's due time; ``link_depth``: frames queued on its least
    busy link; ``node_depth``: frames queued on all our links; ``only_ops``: the batch
    holds operations alone."""
    if due is not None and due > now and node_depth > 0:
        return due  # only lingering ops on a busy radio: let more join
    overdue = due is not None and now >= due + pacing.max_hold
    if link_depth >= pacing.busy_frames and not overdue:
        return now + pacing.poll
    if (
        pacing.op_busy_frames
        and node_depth >= pacing.op_busy_frames
        and only_ops
        and due is not None
        and now < due + pacing.op_max_hold
    ):
        return now + pacing.poll
    return None
