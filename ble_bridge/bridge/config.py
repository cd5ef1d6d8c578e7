"""Every bound and interval of the bridge, and the error it refuses local requests with."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..consensus.engine import EngineConfig
from ..gossip import GossipConfig


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    """Every bound and interval of the bridge (the engine's own are in ``engine``)."""

    # BLE: a message delay is hundreds of ms, and a proposal of more than a few kB takes
    # seconds of airtime to flood (fragments overflow link queues): small blocks, long
    # rounds, and catch-up answers jittered over a multi-hop delay so one answer suppresses
    # the others (0.1 s let most nodes answer the same late vote with a full block)
    engine: EngineConfig = field(
        default_factory=lambda: EngineConfig(
            timeout_propose=2.0,
            timeout_vote=1.0,
            max_block_bytes=6 * 1024,
            response_delay=1.0,
        )
    )
    max_sessions: int = 16
    inbox_capacity: int = 512  # queued inbound messages per session; more are refused
    drain_batch: int = 32  # messages of one session handled before the next session's turn
    max_payload: int = 256 * 1024  # a 0x1C payload above this is dropped unread
    max_snapshot_bytes: int = 1 << 20  # compressed snapshot blob cap
    max_block_bytes: int = 256 * 1024  # encoded block cap in proposals and commits
    dedup_capacity: int = 8192
    dedup_ttl: float = 30.0
    unsigned_repeat_interval: float = 1.0  # an unsigned message repeated later is new
    pending_capacity: int = 16  # local operations in flight per session (admission control:
    # more would only flood the air with op gossip that cannot commit any faster)
    finished_capacity: int = 4096  # committed/failed operations remembered for lookups
    operation_timeout: float = 30.0  # a pending operation older than this has failed
    tick_interval: float = 0.25  # housekeeping: announce, cleanup, contact checks
    announce_min_interval: float = 2.0  # when the state keeps changing
    gossip_announce_min_interval: float = 8.0  # the same while the session gossips
    announce_max_interval: float = 16.0  # when idle
    heartbeat_interval: float = 4.0  # announce anyway if we sent nothing for this long (0: off)
    contact_timeout: float = 10.0  # a validator unheard for this long is out of contact
    stranger_capacity: int = 16  # announcements kept of keys outside the set we know
    latency_samples: int = 4096
    resend_window: int = 8  # own votes/proposals of the current height re-sent on a new link
    request_interval: float = 0.25  # catch-up requests passed on per sender and kind...
    request_burst: int = 4  # ...at most this many per interval (the engine's catch_up_batch)
    compact_proposals: bool = True  # own proposals carry op short ids, not the ops again
    # ...in sessions this small only: in a 50-validator grid most nodes lack some op (gossip
    # does not reach every node) and fetching full proposals cost 12 -> 8 heights in 45 s
    compact_max_validators: int = 16
    # Neighbour gossip (gossip.py): signed messages go to the session's validators among
    # our neighbours, batched, instead of a mesh flood each; own messages are flooded too
    # while some validator is not reachable through validator links or out of contact.
    gossip: bool = True
    gossip_config: GossipConfig = field(default_factory=GossipConfig)
    gossip_busy_frames: int = 1  # hold a neighbour's batch while its link queues this many
    gossip_poll: float = 0.005  # re-check held batches this often (10 ms: light p50 +3 %)
    gossip_max_hold: float = 0.05  # ...but never hold a message longer than this
    # While our radio is busy, an operation waits this long for others to share its frame
    # (at every hop; on an idle radio it leaves at once: light-load p50 -1 % over seeds
    # 1-10). 50 ms made the light-load p50 8 % longer for no more throughput; 0 to 20 ms
    # are alike within the seed-to-seed spread, 10 ms the best of them on seeds 1-4.
    gossip_linger: float = 0.01
    # Operations yield the radio to votes and proposals: a neighbour's batch of operations
    # only waits while our links together queue this many frames (0: never), at most
    # gossip_op_max_hold past its linger (ops/s +10 % on the bench, seeds 1-4).
    gossip_op_busy_frames: int = 2
    gossip_op_max_hold: float = 0.25
    # A VoteSet names its block by 4 bytes of its hash instead of 32 (~1/7 of a one-vote
    # frame) to a neighbour that showed it knows the block (it sent us a vote or proposal
    # naming it): light-load p50 -11 % over seeds 1-4 (bench seed 1: -6 %), saturated
    # ops/s +1 % (seed 3 -4 %, the others +2 to +4 %). Every set short was
    # -9 %: ~10 % reach nodes that cannot expand them yet and wait there instead of
    # travelling on. Counting a block we named in full on the link as known was as fast,
    # but a lost frame then left a neighbour with sets it could never expand (a 5-node
    # sweep run with frame loss stalled). A set whose block its receiver does not know
    # waits there, at most unresolved_capacity of them for unresolved_ttl seconds, until a
    # proposal, a vote or a new height names it.
    short_vote_sets: bool = True
    unresolved_capacity: int = 64
    unresolved_ttl: float = 2.0


class BridgeError(Exception):
    """A local request the bridge refuses; ``reason`` is a counter name."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
