"""One session of the bridge core: its engine and the parts that serve it. Sans-IO.

A :class:`Session` holds what used to be loose fields of the service: the inbox, the
pending operations, contact and health, the announcement schedule, the catch-up request
limit, the neighbour-gossip queues and what gossip knows of its neighbours, and the short
VoteSets waiting for their block. Every collection is bounded (see the comments).
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from typing import Any

from ..consensus.engine import ConsensusEngine
from ..gossip import Gossip
from ..wire.messages import NIL, CompactProposal, Message, Proposal, StateAnnounce, Vote
from .announce import Announcer
from .config import BridgeConfig
from .contact import Contact, SessionHealth
from .inbox import Inbox, RequestLimit
from .pending import PendingOperations

NAMED_BLOCKS = 16
"""Block hashes remembered per gossip neighbour."""


class Session:
    """One session's engine and the core's parts for it."""

    def __init__(
        self, engine: ConsensusEngine[Any], now: float, config: BridgeConfig, me: bytes
    ) -> None:
        self.id = engine.session_id
        self.engine = engine
        self.validators = frozenset(engine.validators)
        self.inbox = Inbox(config.inbox_capacity)
        self.pending = PendingOperations()  # bounded by the caller (pending_capacity)
        self.contact = Contact(self.validators, me, now, config.contact_timeout)
        self.announced: dict[bytes, StateAnnounce] = {}  # validator -> its last announcement
        # keys outside the set we know -> their last announcement (stranger_capacity)
        self.strangers: OrderedDict[bytes, StateAnnounce] = OrderedDict()
        self.health = SessionHealth.ACTIVE
        self.announcer = Announcer(
            now,
            min_interval=config.announce_min_interval,
            max_interval=config.announce_max_interval,
            gossip_min_interval=config.gossip_announce_min_interval,
            heartbeat=config.heartbeat_interval,
        )
        self.stats: Counter[str] = Counter()
        self.recent_out: deque[bytes] = deque(maxlen=config.resend_window)
        self.requests = RequestLimit(config.request_interval, config.request_burst)
        self.recent_height = 0
        self.gossip = Gossip(config.gossip_config)
        self.flood_own = True  # until validator neighbours are known
        self.peer_of: dict[bytes, bytes] = {}  # validator signing key -> its mesh peer id
        # gossip neighbour peer id -> hashes of the blocks it named to us (in a vote or a
        # proposal it accepted): it knows them, a VoteSet to it may name them short
        self.peer_blocks: dict[bytes, OrderedDict[bytes, None]] = {}
        # short VoteSets whose block we did not know yet: (arrival, item, via, vouched),
        # unresolved_capacity at most
        self.unresolved: deque[tuple[float, bytes, bytes | None, bool]] = deque()
        self.unresolved_mark = (-1, -1, -1)  # what the engine knew at the last retry

    @property
    def announce_interval(self) -> float:
        return self.announcer.interval

    def named(self, peer: bytes, msg: Message) -> None:
        """Gossip neighbour ``peer`` sent us ``msg``: it knows the block ``msg`` names (it
        passes on only what its engine accepted). A few per neighbour: the heights in
        progress."""
        if isinstance(msg, Vote):
            block = msg.block_hash
        elif isinstance(msg, Proposal):
            block = msg.block.hash
        elif isinstance(msg, CompactProposal):
            block = msg.header.hash
        else:
            return
        if block == NIL:
            return
        known = self.peer_blocks.setdefault(peer, OrderedDict())
        known[block] = None
        known.move_to_end(block)
        while len(known) > NAMED_BLOCKS:
            known.popitem(last=False)
