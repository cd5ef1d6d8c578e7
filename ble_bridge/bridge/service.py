"""NetworkConsensusBridge: consensus engines of several sessions joined to one mesh node.

The bridge is the thin asyncio service between :class:`~ble_bridge.mesh.service.MeshNode`
and :class:`~ble_bridge.consensus.engine.ConsensusEngine`: it turns local operations into
signed proposals (``submit_operation``), 0x1C packets into consensus messages through a
bounded per-session inbox (dedup'd by payload hash, refused with a reason when full), and
engine output back into broadcast packets. It announces state only when it changed, at an
interval that shrinks when busy and grows when idle; expires stale pending operations as
failed; tracks contact with each session's validators (lost contact with a quorum =
"partitioned"); and reports health and statistics. Catch-up (commits by block when a few
heights behind, certified compressed snapshots when far behind) is the engine's protocol;
the bridge carries it, caps its sizes and triggers it on healing.

Durability: every engine gets the node's :class:`~ble_bridge.store.Store`, which records the
signer state *inside* the engine before a vote reaches its outbox, so the bridge can only
ever broadcast votes that are already on disk.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any

from ..consensus.app import Application
from ..consensus.engine import (
    Committed,
    ConsensusEngine,
    EngineConfig,
    EvidenceFound,
    OperationReissued,
    OperationRejected,
    SignerGuard,
    SignerNotice,
    SnapshotInstalled,
    ValidatorsChanged,
)
from ..consensus.quorum import max_faulty, quorum
from ..errors import StorageFailure
from ..events import kv
from ..gossip import Gossip, Item, pack
from ..mesh.router import Delivered
from ..mesh.seen import SeenCache
from ..mesh.service import MeshNode
from ..store import Store
from ..wire.identity import Identity
from ..wire.messages import (
    ENVELOPE_PREFIX,
    NEIGHBOUR_VERSION,
    NIL,
    SESSION_ID_LEN,
    SESSION_TAG_LEN,
    CertificateRequest,
    Commit,
    CommitRequest,
    CompactProposal,
    Evidence,
    JoinRequest,
    Kind,
    Message,
    MessageError,
    Operation,
    Proposal,
    ProposalRequest,
    SnapshotRequest,
    SnapshotResponse,
    StateAnnounce,
    UnresolvedBlock,
    Vote,
    decode_message,
    encode_batch,
    encode_message,
    expand_operation_ref,
    expand_proposal_ref,
    expand_vote_set,
    from_neighbour,
    neighbour_tag,
    peek_session,
    split_batch,
    to_neighbour,
)
from ..wire.packet import PacketType
from .announce import Announcer, Why
from .compact import compact_items
from .config import BridgeConfig, BridgeError
from .contact import Contact, Effect, Seen, SessionHealth, next_health
from .inbox import Inbound, Inbox, RequestLimit, dedup_key
from .pacing import Pacing, hold
from .pending import (
    FinishedOperations,
    OperationStatus,
    PendingOperation,
    PendingOperations,
    ProposalId,
)
from .policy import GOSSIPED, MeshView, floods, plan
from .stats import BridgeStats, SessionStats, quantile

log = logging.getLogger(__name__)

CommitHook = Callable[[bytes, Committed], None]


class _Session:
    """One session's engine and the bridge's parts for it."""

    def __init__(
        self, engine: ConsensusEngine[Any], now: float, config: BridgeConfig, me: bytes
    ) -> None:
        self.id = engine.session_id
        self.engine = engine
        self.validators = frozenset(engine.validators)
        self.inbox = Inbox(config.inbox_capacity)
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at: float | None = None
        self.pending = PendingOperations()
        self.contact = Contact(self.validators, me, now, config.contact_timeout)
        self.announced: dict[bytes, StateAnnounce] = {}  # validator -> its last announcement
        # keys outside the set we know -> their last announcement (see _follow_strangers)
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
        # short VoteSets whose block we did not know yet: (arrival, item, via, vouched)
        self.unresolved: deque[tuple[float, bytes, bytes | None, bool]] = deque()
        self.unresolved_mark = (-1, -1, -1)  # what the engine knew at the last retry

    @property
    def announce_interval(self) -> float:
        return self.announcer.interval


class NetworkConsensusBridge:
    """Several consensus sessions over one :class:`MeshNode`; see the module docstring."""

    def __init__(
        self,
        mesh: MeshNode,
        identity: Identity,
        *,
        store: Store | None = None,
        config: BridgeConfig | None = None,
    ) -> None:
        self.mesh = mesh
        self.identity = identity
        self.store = store
        self.config = config or BridgeConfig()
        self.sessions: dict[bytes, _Session] = {}
        self.counters: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self.commit_hooks: list[CommitHook] = []
        self._seen = SeenCache(self.config.dedup_capacity, self.config.dedup_ttl)
        self._finished = FinishedOperations(
            self.config.finished_capacity, self.config.latency_samples, self.counters
        )
        self._pacing = Pacing(
            self.config.gossip_busy_frames,
            self.config.gossip_poll,
            self.config.gossip_max_hold,
            self.config.gossip_op_busy_frames,
            self.config.gossip_op_max_hold,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_handle: asyncio.Handle | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._running = False
        self._links = 0
        self._retired: Counter[str] = Counter()  # engine stats of closed sessions
        self._flush_handle: asyncio.Handle | None = None
        # the double-sign guard every engine gets (the node's signer-state file), and why
        # a session must catch up before it signs (None: it may sign at once)
        self.signer: SignerGuard | None = None
        self.catch_up_reason: Callable[[bytes], str | None] | None = None
        # set when a storage error (or a bug) stopped the bridge: it signs nothing more
        self.failure: str | None = None
        self.on_failure: Callable[[str, BaseException], None] | None = None
        mesh.subscribe(PacketType.CONSENSUS, self._on_packet)

    # -- life -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every open engine and the housekeeping tick (the mesh is started by its owner)."""
        self._loop = asyncio.get_running_loop()
        self._running = True
        now = self._now()
        for s in self.sessions.values():
            s.engine.start(now)
            self._after(s)
        self._tick_handle = self._loop.call_later(self.config.tick_interval, self._tick)

    async def stop(self) -> None:
        """Cancel timers; engines and their stored state stay as they are."""
        self._running = False
        for s in self.sessions.values():
            if s.timer is not None:
                s.timer.cancel()
                s.timer = None
        for h in (self._drain_handle, self._tick_handle, self._flush_handle):
            if h is not None:
                h.cancel()
        self._drain_handle = self._tick_handle = self._flush_handle = None

    def open_session(
        self,
        session_id: bytes,
        validators: Sequence[bytes],
        app: Application[Any],
        engine_config: EngineConfig | None = None,
    ) -> ConsensusEngine[Any]:
        """Join a session (resuming from the store if it knows it); returns its engine."""
        if len(session_id) != SESSION_ID_LEN:
            raise BridgeError("bad_session_id", f"session id must be {SESSION_ID_LEN} bytes")
        if session_id in self.sessions:
            raise BridgeError("session_exists")
        if len(self.sessions) >= self.config.max_sessions:
            raise BridgeError("too_many_sessions")
        engine: ConsensusEngine[Any] = ConsensusEngine(
            session_id,
            self.identity,
            validators,
            app,
            engine_config or self.config.engine,
            self.store,
            self.signer,
            None if self.catch_up_reason is None else self.catch_up_reason(session_id),
        )
        s = _Session(engine, self._now(), self.config, self.identity.signing_public)
        self.sessions[engine.session_id] = s
        if self._running:
            engine.start(self._now())
            self._after(s)
        return engine

    def close_session(self, session_id: bytes) -> None:
        s = self.sessions.pop(session_id, None)
        if s is None:
            return
        if s.timer is not None:
            s.timer.cancel()
        self._retired.update(s.engine.stats)
        for op in s.pending:
            self._finish(op, OperationStatus.FAILED, self._now(), "session_closed")

    def engine(self, session_id: bytes) -> ConsensusEngine[Any]:
        return self._session(session_id).engine

    # -- local operations -------------------------------------------------------------

    def submit_operation(self, session_id: bytes, op: bytes) -> ProposalId:
        """Sign ``op``, gossip it for the next block and track it until commit or failure."""
        s = self._session(session_id)
        if len(s.pending) >= self.config.pending_capacity:
            self.drops["submit_pending_full"] += 1
            raise BridgeError("pending_full", f"{len(s.pending)} operations pending")
        if not s.engine.is_validator:
            raise BridgeError("not_validator")
        if self.failure is not None:
            raise BridgeError("failed", self.failure)
        now = self._now()
        try:
            op_id = s.engine.submit(now, op)
        except StorageFailure as exc:
            self._fail(exc)
            raise BridgeError("failed", self.failure or str(exc)) from exc
        pending = PendingOperation(
            ProposalId(op_id),
            s.id,
            now,
            required_votes=s.engine.quorum,
            nonce=s.engine.operation_nonce(op_id),
        )
        s.pending.add(pending)
        self.counters["operations_submitted"] += 1
        self._after(s)
        return ProposalId(op_id)

    def request_join(self, session_id: bytes, nonce: int, buy_in: int = 0) -> None:
        """Ask a session's validators to seat us (a signed join request, repeated by the
        engine until the set of a coming height holds our key)."""
        s = self._session(session_id)
        if s.engine.is_validator:
            raise BridgeError("already_validator")
        s.engine.request_join(self._now(), nonce, buy_in)
        self.counters["join_requests"] += 1
        self._after(s)

    def contact_ages(self, session_id: bytes) -> dict[bytes, float]:
        """Seconds since we last heard each validator of the session (0 for ourselves)."""
        return self._session(session_id).contact.ages(self._now())

    def operation(self, proposal_id: bytes) -> PendingOperation | None:
        """The tracked state of a submitted operation (pending or recently finished)."""
        for s in self.sessions.values():
            op = s.pending.by_proposal(proposal_id)
            if op is not None:
                return op
        return self._finished.get(proposal_id)

    def pending_operations(self, session_id: bytes | None = None) -> list[PendingOperation]:
        chosen = self.sessions.values() if session_id is None else [self._session(session_id)]
        return [op for s in chosen for op in s.pending]

    # -- health and stats -------------------------------------------------------------

    def health(self, session_id: bytes) -> SessionHealth:
        return self._session(session_id).health

    def is_healthy(self) -> bool:
        """Running, every session in contact with a quorum and not stuck behind or saturated."""
        if not self._running:
            return False
        for s in self.sessions.values():
            if s.health is not SessionHealth.ACTIVE:
                return False
            if s.inbox.full:
                return False
        return True

    def active_participants(self, session_id: bytes) -> int:
        s = self._session(session_id)
        return self._in_contact(s, self._now())

    def latencies(self) -> list[float]:
        """Submit -> commit seconds of the last ``latency_samples`` own operations."""
        return list(self._finished.latencies)

    def stats(self) -> BridgeStats:
        now = self._now()
        drops = Counter(self.drops)
        engine_stats: Counter[str] = Counter(self._retired)
        sessions: dict[bytes, SessionStats] = {}
        for s in self.sessions.values():
            engine_stats.update(s.engine.stats)
            sessions[s.id] = SessionStats(
                s.id,
                s.health,
                s.engine.height,
                s.engine.round,
                len(s.validators),
                self._in_contact(s, now),
                len(s.pending),
                len(s.inbox),
                s.announce_interval,
            )
        for k, v in engine_stats.items():
            if k.startswith(("drop_", "snapshot_")) and k != "snapshots_installed":
                drops[f"engine_{k}"] += v
        xs = sorted(self._finished.latencies)
        return BridgeStats(
            messages_processed=self.counters["messages_processed"],
            rounds_completed=self.counters["rounds_completed"],
            committed_operations=self.counters["operations_committed"],
            failed_operations=self.counters["operations_failed"],
            pending_operations=sum(len(s.pending) for s in self.sessions.values()),
            active_participants=sum(x.active_participants for x in sessions.values()),
            latency_p50=quantile(xs, 0.50),
            latency_p95=quantile(xs, 0.95),
            latency_p99=quantile(xs, 0.99),
            messages_sent=self.counters["messages_sent"],
            bytes_sent=self.counters["bytes_sent"],
            drops={k: v for k, v in sorted(drops.items()) if v},
            sessions=sessions,
        )

    # -- inbound ----------------------------------------------------------------------

    def _on_packet(self, event: Delivered) -> None:
        try:
            self._on_packet_unguarded(event)
        except Exception as exc:  # never a dead callback in a live process
            self._fail(exc)

    def _on_packet_unguarded(self, event: Delivered) -> None:
        peers = self.mesh.router.peers
        link = peers.links.get(event.link_id) if event.link_id is not None else None
        via = link.peer_id if link is not None else None
        payload = event.packet.payload
        if payload[:1] == bytes((NEIGHBOUR_VERSION,)):
            try:
                tag = neighbour_tag(payload)
            except MessageError as exc:
                self._drop(exc.reason)
                return
            ids = [sid for sid in self.sessions if sid[:SESSION_TAG_LEN] == tag]
            if len(ids) != 1:
                self._drop("unknown_session" if not ids else "ambiguous_session_tag")
                return
            payload = from_neighbour(payload, ids[0])
        packet = event.packet
        # A frame our neighbour signed: its gossip, or its own message. Not a flood it
        # relayed (the mesh passes those on unchecked, even on their last hop).
        vouched = via is not None and packet.sender == via
        if len(payload) > ENVELOPE_PREFIX and payload[ENVELOPE_PREFIX] & 0x7F in _BATCH_KINDS:
            self.receive_batch(payload, via, vouched=vouched)
            return
        flooded = packet.is_broadcast and packet.ttl > 1  # the mesh relays it on
        self.receive_payload(
            payload, peers.signing_key(packet.sender), via=via, flooded=flooded, vouched=vouched
        )

    def receive_batch(
        self, payload: bytes, via: bytes | None = None, *, vouched: bool = False
    ) -> int:
        """Queue each message of a gossip batch (or vote set); returns how many were queued.
        ``vouched``: neighbour ``via`` signed the frame itself (see :meth:`receive_payload`)."""
        if len(payload) > self.config.max_payload:
            self._drop("oversized_payload")
            return 0
        limits = self.config.engine.limits
        try:
            s = self.sessions.get(peek_session(payload))
            if s is None:
                self._drop("unknown_session")
                return 0
            if payload[ENVELOPE_PREFIX] in _REF_KINDS:
                items = [payload]
            else:
                items = split_batch(payload, limits)
                self.counters["batches_received"] += 1
        except MessageError as exc:
            self._drop(f"batch_{exc.reason}")
            return 0
        queued = 0
        validators = s.engine.validators
        for item in items:
            kind = item[ENVELOPE_PREFIX]
            msgs: list[Message]
            try:
                if kind == Kind.VOTE_SET:
                    msgs = list(self._expand_vote_set(s, item))
                elif kind == Kind.OPERATION_REF:
                    msgs = [expand_operation_ref(item[ENVELOPE_PREFIX:], validators, limits)]
                elif kind == Kind.PROPOSAL_REF:
                    proposer = s.engine.proposer
                    msgs = [expand_proposal_ref(item[ENVELOPE_PREFIX:], proposer, limits)]
                else:
                    queued += self.receive_payload(item, None, via=via, vouched=vouched)
                    continue
            except UnresolvedBlock:
                self._hold_unresolved(s, bytes(item), via, vouched)
                continue
            except MessageError as exc:
                self._drop(f"{Kind(kind).name.lower()}_{exc.reason}")
                continue
            for msg in msgs:
                queued += self.receive_payload(
                    encode_message(s.id, msg), None, via=via, vouched=vouched, msg=msg
                )
        return queued

    def _expand_vote_set(self, s: _Session, item: bytes) -> list[Vote]:
        """The votes of a VoteSet envelope, a short block reference expanded against the
        blocks the engine knows (raises :class:`UnresolvedBlock` if it knows none)."""
        return expand_vote_set(
            item[ENVELOPE_PREFIX:],
            s.engine.validators,
            self.config.engine.limits,
            s.engine.known_blocks,
        )

    def _hold_unresolved(self, s: _Session, item: bytes, via: bytes | None, vouched: bool) -> None:
        """Keep a short VoteSet whose block we do not know yet (its proposal is most likely
        a hop behind); the oldest goes when full."""
        s.stats["vote_sets_held"] += 1
        s.unresolved.append((self._now(), item, via, vouched))
        while len(s.unresolved) > self.config.unresolved_capacity:
            s.unresolved.popleft()
            self._drop("vote_set_unresolved_overflow")

    def _retry_unresolved(self, s: _Session, now: float, expire: bool = False) -> None:
        """Expand the held VoteSets again once we know more blocks (a proposal or a vote
        named a new one, or the height moved on); those held too long are dropped."""
        if not s.unresolved:
            return
        mark = s.engine.blocks_mark()
        if mark == s.unresolved_mark and not expire:
            return
        s.unresolved_mark = mark
        held, s.unresolved = s.unresolved, deque()
        for arrived, item, via, vouched in held:
            if now - arrived > self.config.unresolved_ttl:
                self._drop("vote_set_unresolved")
                continue
            try:
                votes = self._expand_vote_set(s, item)
            except MessageError:  # still unknown (it was well formed when it arrived)
                s.unresolved.append((arrived, item, via, vouched))
                continue
            s.stats["vote_sets_resolved"] += 1
            for vote in votes:
                payload = encode_message(s.id, vote)
                self.receive_payload(payload, None, via=via, vouched=vouched, msg=vote)

    def receive_payload(
        self,
        payload: bytes,
        sender: bytes | None = None,
        *,
        via: bytes | None = None,
        flooded: bool = False,
        vouched: bool = False,
        msg: Message | None = None,
    ) -> bool:
        """Queue one 0x1C payload for its session; False (and a counted reason) if refused.

        ``sender``: the signing key of the node that signed the mesh packet (None when it
        came inside a batch); ``via``: the peer id of the neighbour it came from;
        ``flooded``: a mesh flood that the routers relay on (gossip does not pass it on);
        ``vouched``: ``via`` signed the frame itself, so its engine accepted what it
        carries (gossip, or its own message), rather than relaying a flood unchecked;
        ``msg``: ``payload`` decoded already (a batch item), so it is not decoded again."""
        if len(payload) > self.config.max_payload:
            return self._drop("oversized_payload")
        try:
            sid = peek_session(payload)
        except MessageError as exc:
            return self._drop(exc.reason)
        s = self.sessions.get(sid)
        if s is None:
            return self._drop("unknown_session")
        now = self._now()
        key = dedup_key(payload, sender, self._epoch(now))
        s.gossip.heard(via, key)
        # the mesh authenticated the sender, even of a repeat; back in contact: tell it
        # where we are at once
        if sender is not None and sender in s.validators and s.contact.heard(now, sender):
            s.announcer.contact_regained(now)
        if self._seen.seen(now, key):
            return self._drop("duplicate")
        if s.inbox.full:
            s.stats["inbox_full"] += 1
            return self._drop("inbox_full")
        self._seen.add(now, key)
        s.inbox.push(Inbound(bytes(payload), sender, now, via, flooded, vouched, msg))
        self._schedule_drain()
        return True

    def _schedule_drain(self) -> None:
        if self._drain_handle is None and self._running and self._loop is not None:
            self._drain_handle = self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        try:
            self._drain_unguarded()
        except Exception as exc:  # never a dead callback in a live process
            self._fail(exc)

    def _drain_unguarded(self) -> None:
        """Round-robin over sessions, a batch each, so one busy session cannot stall another."""
        self._drain_handle = None
        if not self._running:
            return
        more = False
        for s in list(self.sessions.values()):
            for _ in range(min(self.config.drain_batch, len(s.inbox))):
                self._process(s, s.inbox.pop())
            if s.inbox:
                more = True
        if more:
            self._schedule_drain()

    def _process(self, s: _Session, item: Inbound) -> None:
        msg = item.msg
        if msg is None:
            try:
                sid, msg = decode_message(item.payload, self.config.engine.limits)
            except MessageError as exc:
                self._drop(exc.reason)
                return
            if sid != s.id:  # pragma: no cover - peek_session routed it here
                self._drop("unknown_session")
                return
        reason = self._check_sizes(msg)
        if reason is not None:
            self._drop(reason)
            return
        now = self._now()
        if isinstance(msg, StateAnnounce):
            # Unsigned: one liar announcing a far height would make every node ask for
            # snapshots (which every node a little ahead answers). A validator's near
            # announcement goes straight to the engine (it asks for blocks: cheap, and
            # unanswerable if false); a far one only as the (f+1)-th highest.
            self.counters["messages_processed"] += 1
            if item.sender is None:
                self._drop("announce_not_validator")
                return
            if item.sender not in s.validators:
                # A key outside the set we know: a joiner's only view of a table whose
                # genesis validators left (it learns the later sets from the chain itself).
                self._note_stranger(s, item.sender, msg)
                if self._lost_set(s, now):
                    self._follow_strangers(s, now)
                return
            s.announced[item.sender] = msg
            eng = s.engine
            eng.note_presence(now, item.sender, msg.height)
            if eng.height < msg.height <= eng.height + eng.config.snapshot_gap:
                try:
                    eng.receive(now, msg)
                except StorageFailure:
                    raise
                except Exception:
                    self._drop("engine_error")
                    log.exception("engine failed on a state announcement")
                self._after(s)
            self._follow_announcements(s, now)
            return
        if isinstance(msg, CommitRequest | SnapshotRequest | CertificateRequest | ProposalRequest):
            # a burst of `request_burst` per sender and kind per interval (see RequestLimit)
            bound = 4 * len(s.validators) + 16
            if not s.requests.allow(now, item.sender or b"", type(msg).__name__, bound):
                self._drop("request_rate_limited")
                return
        elif isinstance(msg, Proposal):
            self._note_block(s, msg)
        elif isinstance(msg, Vote) and msg.height != s.engine.height + 1:
            # A vote for another height makes the engine help a "laggard" with a full block
            # (or chase a "leader") before it checks the signature: check it first (the
            # engine's memoised cache, so the engine pays nothing when it looks again).
            ok = msg.validator in s.validators and s.engine.cache.verify(
                msg.validator, msg.signature, msg.signing_bytes(s.id)
            )
            if not ok:
                self._drop("vote_bad_signature")
                return
        elif (
            isinstance(msg, JoinRequest)
            and s.engine.is_validator
            and s.announcer.may_answer_join(now)
        ):
            # A joiner (repeating its request until it counts) follows the chain without
            # being a validator: gossip passes it nothing and a busy validator sends no
            # heartbeat. Tell it where the chain is, at most once per announce interval.
            self.counters["join_announcements"] += 1
            self._announce(s, now)
        if isinstance(msg, Vote | Proposal | CompactProposal) and msg.height > s.engine.height + 2:
            # Beyond the height after the next, the engine drops it (and catches up): its
            # repeats must reach the engine again once we are there (a joiner catching up
            # saw the votes of the height it will vote in long before; the dedup of every
            # rebroadcast would keep them out of its engine for good).
            self._seen.forget(dedup_key(item.payload, item.sender, self._epoch(item.at)))
            self.counters["too_early_forgotten"] += 1
        if item.vouched and item.via is not None and item.via in s.gossip.neighbours:
            _named(s, item.via, msg)
        self.counters["messages_processed"] += 1
        try:
            s.engine.receive(now, msg)
        except StorageFailure:
            raise  # not the message's fault: the node stops signing (see _fail)
        except Exception:  # never let one message kill the bridge
            self._drop("engine_error")
            log.exception("engine failed on a %s", type(msg).__name__)
        self._pass_on(s, now, msg, item.via, item.flooded)
        self._after(s)

    def _check_sizes(self, msg: Message) -> str | None:
        cfg = self.config
        if isinstance(msg, SnapshotResponse) and len(msg.snapshot) > cfg.max_snapshot_bytes:
            return "oversized_snapshot"
        if isinstance(msg, Proposal | Commit) and len(msg.block.encode()) > cfg.max_block_bytes:
            return "oversized_block"
        return None

    def _note_block(self, s: _Session, p: Proposal) -> None:
        if not s.pending:
            return
        for op in p.block.ops:
            pending = s.pending.get(op.op_id)
            if pending is not None:
                pending.block_hash = p.block.hash

    # -- outbound and engine plumbing -------------------------------------------------

    def _after(self, s: _Session) -> None:
        """After touching an engine: handle its events, broadcast its outbox, re-arm its timer."""
        now = self._now()
        self._pass_on(s, now)
        self._retry_unresolved(s, now)
        for ev in s.engine.events():
            self._on_event(s, ev, now)
        out = s.engine.outbox()
        for msg in out:
            if isinstance(msg, Proposal):
                self._note_block(s, msg)
            self.transmit(s.id, msg)
        if out:
            s.announcer.sent(now)
        s.pending.note_votes(s.engine.votes_for)
        self._arm(s)

    def transmit(self, session_id: bytes, msg: Message) -> None:
        """Broadcast one engine message as a 0x1C packet (Byzantine test nodes override this)."""
        s = self.sessions.get(session_id)
        if (
            self.config.compact_proposals
            and s is not None
            and len(s.validators) <= self.config.compact_max_validators
            and isinstance(msg, Proposal)
            and s.engine.proposer(msg.height, msg.round) == self.identity.signing_public
            and not s.engine.full_proposal_requested(msg.height, msg.round)
        ):
            # Its ops were gossiped already: receivers rebuild the block from their
            # mempools (the engine answers a ProposalRequest with the full proposal).
            # A flooded proposal carries our own ops inline: their floods may still be
            # racing it. (Inlining only those younger than 1 s cost 8 % more airtime: some
            # of the older ones had not reached everyone, and the fetched full proposals
            # cost more than the inline ops.) A gossiped one does not: our ops went down
            # the same tree before it, so they arrive first or in the same frame (inlining
            # them anyway cost 13 % of the throughput on the 8-node bench).
            me = self.identity.signing_public
            flooded = self._floods(s, msg)
            msg = CompactProposal.of(msg, inline=lambda op: flooded and op.submitter == me)
        payload = encode_message(session_id, msg)
        if s is not None and isinstance(msg, Vote | Proposal | CompactProposal):
            if msg.height != s.recent_height:
                s.recent_out.clear()
                s.recent_height = msg.height
            s.recent_out.append(payload)
        if s is not None and self.config.gossip and isinstance(msg, GOSSIPED):
            now = self._now()
            key = dedup_key(payload, None, 0)
            self._seen.add(now, key)
            if not self._floods(s, msg):
                again = s.gossip.is_recent(key)
                s.gossip.offer(
                    key,
                    payload[ENVELOPE_PREFIX:],
                    self._height_of(s, msg),
                    origin=self.mesh.peer_id,
                    again=again,
                    meta=msg,
                    priority=_PRIORITY.get(type(msg), 9),
                    due=self._due(msg, now),
                )
                self.counters["messages_sent"] += 1
                self.counters["gossip_own"] += 1
                self._schedule_flush()
                return
            s.gossip.flooded(key, payload[ENVELOPE_PREFIX:], self._height_of(s, msg), msg)
        self.send_payload(payload)

    # -- neighbour gossip -------------------------------------------------------------

    def _floods(self, s: _Session, msg: Message) -> bool:
        """Whether our own ``msg`` leaves as a mesh flood rather than by neighbour gossip
        (see :func:`.policy.floods`)."""
        return floods(self.config.gossip, s.flood_own, msg)

    def _height_of(self, s: _Session, msg: Message) -> int | None:
        if isinstance(msg, Vote | Proposal | CompactProposal):
            return msg.height
        return None  # operations and evidence stay useful until they are committed

    def _signer(self, s: _Session, msg: Message) -> bytes | None:
        if isinstance(msg, Vote):
            return msg.validator
        if isinstance(msg, Operation):
            return msg.submitter
        if isinstance(msg, Proposal | CompactProposal):
            return s.engine.proposer(msg.height, msg.round)
        return None

    def _pass_on(
        self,
        s: _Session,
        now: float,
        received: Message | None = None,
        via: bytes | None = None,
        flooded: bool = False,
    ) -> None:
        """Queue what the engine just accepted for the neighbours that lack it (``via``, the
        neighbour ``received`` came from, has that one; whatever else the engine accepted
        meanwhile, e.g. buffered messages of the height it just entered, came from others).
        A ``flooded`` one is relayed by the mesh routers: gossiping it too sent every
        flooded message (rounds > 0, validators out of contact) about twice."""
        accepted = s.engine.relayable()
        if not accepted:
            return
        for msg in accepted:
            signer = self._signer(s, msg)
            if signer is not None:
                s.contact.heard(now, signer)  # its signature verified: it is alive, somewhere
            if not self.config.gossip:
                continue
            payload = encode_message(s.id, msg)
            key = dedup_key(payload, None, 0)
            if flooded and msg is received:
                s.gossip.flooded(key, payload[ENVELOPE_PREFIX:], self._height_of(s, msg), msg)
                continue
            origin = s.peer_of.get(signer) if signer is not None else None
            n = s.gossip.offer(
                key,
                payload[ENVELOPE_PREFIX:],
                self._height_of(s, msg),
                via if msg is received else None,
                origin=origin,
                meta=msg,
                priority=_PRIORITY.get(type(msg), 9),
                due=self._due(msg, now),
            )
            self.counters["gossip_forwarded"] += n
        if self.config.gossip:
            self._schedule_flush()

    def _due(self, msg: Message, now: float) -> float:
        return now + self.config.gossip_linger if isinstance(msg, Operation) else now

    def _schedule_flush(self) -> None:
        # While a timer for lingering or held items is pending, what is queued meanwhile
        # (votes too) waits for it, at most gossip_linger: flushing votes at once instead
        # cost 12 % more airtime (smaller batches) for 1 % less latency (seeds 1-4).
        if self._flush_handle is None and self._running and self._loop is not None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        try:
            self._flush_unguarded()
        except Exception as exc:  # never a dead callback in a live process
            self._fail(exc)

    def _flush_unguarded(self) -> None:
        """Send each neighbour its queued messages, batched; hold them while its link is
        busy (so they batch up instead of queueing frame after frame behind each other)."""
        self._flush_handle = None
        if not self._running or self._loop is None:
            return
        peers = self.mesh.router.peers
        now = self._now()
        wake = math.inf
        transport = self.mesh.transport
        node_depth = sum(transport.queue_depth(link) for link in peers.links)
        for s in self.sessions.values():
            tag = s.id[:SESSION_TAG_LEN]  # short envelopes unless two sessions share it
            short = sum(sid[:SESSION_TAG_LEN] == tag for sid in self.sessions) == 1
            for peer in s.gossip.waiting():
                rec = peers.get(peer)
                links = sorted(rec.links) if rec is not None else []
                if not links:
                    continue  # gone: the next tick drops it from the neighbours
                again = hold(
                    self._pacing,
                    now,
                    due=s.gossip.due(peer),
                    link_depth=min(transport.queue_depth(link) for link in links),
                    node_depth=node_depth,
                    only_ops=s.gossip.urgency(peer) == _OP_PRIORITY,
                )
                if again is not None:
                    wake = min(wake, again)
                    continue
                items = self._compact_items(s, s.gossip.take(peer), peer)
                for batch in pack(items, self.config.gossip_config.batch_bytes):
                    payload = encode_batch(s.id, batch)
                    if short:  # the session id as a 4-byte tag: 12 bytes a frame
                        payload = to_neighbour(payload)
                    try:
                        # TTL 1, no recipient: for this neighbour alone, 8 bytes shorter
                        self.mesh.send(PacketType.CONSENSUS, payload, ttl=1, neighbour=peer)
                    except ValueError:
                        self._drop("send_oversized")
                        continue
                    self.counters["gossip_frames"] += 1
                    self.counters["bytes_sent"] += len(payload)
                    node_depth += 1
        if wake < math.inf:
            self._flush_handle = self._loop.call_at(wake, self._flush)

    def _compact_items(
        self, s: _Session, items: Sequence[Item], peer: bytes | None = None
    ) -> list[bytes]:
        """Item bytes for neighbour ``peer``, compacted (see :mod:`.compact`)."""
        return compact_items(
            items,
            members=s.validators,
            index=s.engine.validators.index,
            proposer=s.engine.proposer,
            known=s.peer_blocks.get(peer) if peer is not None else None,
            short_sets=self.config.short_vote_sets,
            counters=self.counters,
        )

    def _refresh_gossip(self, s: _Session, now: float, view: MeshView) -> None:
        """Our validator neighbours, and whether our own messages must be flooded too."""
        p = plan(
            view,
            s.validators,
            self.identity.signing_public,
            s.engine.banned,
            self._in_contact(s, now),
            self.config.gossip_config.max_neighbours,
        )
        if s.gossip.set_neighbours(p.neighbours):
            self._schedule_flush()
        s.peer_blocks = {q: b for q, b in s.peer_blocks.items() if q in s.gossip.neighbours}
        s.peer_of = p.peer_of
        s.gossip.set_graph(view.peer_id, p.graph, p.leaves)
        # items of the height just decided still go to neighbours deciding it (they may
        # need the votes we did not: we stopped counting at a quorum); older ones are done
        s.gossip.forget_below(s.engine.height)
        if p.flood_own != s.flood_own:
            self.counters["gossip_flood_on" if p.flood_own else "gossip_flood_off"] += 1
            s.flood_own = p.flood_own

    def _mesh_view(self) -> MeshView:
        peers = self.mesh.router.peers
        keys: dict[bytes, bytes] = {}
        graph: dict[bytes, frozenset[bytes]] = {}
        for rec in peers:
            if rec.signing_key is not None:
                keys[rec.peer_id] = rec.signing_key
            graph[rec.peer_id] = rec.neighbors
        linked = frozenset(
            link.peer_id for link in peers.links.values() if link.peer_id is not None
        )
        return MeshView(self.mesh.peer_id, keys, linked, graph)

    def send_payload(self, payload: bytes) -> None:
        """Broadcast raw 0x1C bytes; remembered so a relayed echo is not processed again."""
        if not self._running:
            return
        now = self._now()
        self._seen.add(now, dedup_key(payload, self.identity.signing_public, self._epoch(now)))
        try:
            self.mesh.send(PacketType.CONSENSUS, payload)
        except ValueError:
            self._drop("send_oversized")
            return
        self.counters["messages_sent"] += 1
        self.counters["bytes_sent"] += len(payload)

    def _on_event(self, s: _Session, ev: object, now: float) -> None:
        if isinstance(ev, Committed):
            self.counters["rounds_completed"] += 1
            self.counters["ops_in_blocks"] += len(ev.ops)
            if ev.ops:
                done = {op.op_id for op in ev.ops}
                s.gossip.forget(lambda it: isinstance(it.meta, Operation) and it.meta.op_id in done)
            signers = len(ev.certificate.signers)
            for op in ev.ops:
                pending = s.pending.get(op.op_id)
                if pending is not None:
                    pending.votes_received = max(pending.votes_received, signers)
                    pending.block_hash, pending.height = ev.block.hash, ev.height
                    self._finish(pending, OperationStatus.COMMITTED, now)
                    continue
                late = self._finished.get(op.op_id)
                if late is not None and late.status is OperationStatus.FAILED:
                    self.counters["committed_after_failure"] += 1
            for hook in self.commit_hooks:
                try:
                    hook(s.id, ev)
                except Exception:
                    self.counters["hook_error"] += 1
                    log.exception("commit hook failed")
        elif isinstance(ev, OperationRejected):
            pending = s.pending.get(ev.op_id)
            if pending is not None:
                self._finish(pending, OperationStatus.FAILED, now, ev.reason)
        elif isinstance(ev, OperationReissued):
            # same body, fresh nonce: the caller keeps its ProposalId
            pending = s.pending.reissued(ev.old_id, ev.new_id)
            if pending is not None:
                self.counters["operations_reissued"] += 1
                pending.nonce = s.engine.operation_nonce(ev.new_id)
        elif isinstance(ev, SnapshotInstalled):
            self.counters["snapshots_installed"] += 1
            mine = s.engine.committed_nonce(self.identity.signing_public)
            for pending in s.pending:
                if pending.nonce is not None and pending.nonce <= mine:
                    pending.height = ev.height
                    self._finish(pending, OperationStatus.COMMITTED, now)
        elif isinstance(ev, EvidenceFound):
            self.counters["evidence_found"] += 1
        elif isinstance(ev, SignerNotice):
            if ev.catching_up:
                log.warning(kv("signer_catch_up", session=s.id.hex()[:8], reason=ev.text))
            else:
                log.info(kv("signer_resumed", session=s.id.hex()[:8], note=ev.text))
        if isinstance(ev, ValidatorsChanged | SnapshotInstalled):
            self._refresh_validators(s, now)

    def _refresh_validators(self, s: _Session, now: float) -> None:
        """The engine's set changed (a committed set change, a snapshot): contact, health
        and gossip follow the set of the height being decided."""
        keys = frozenset(s.engine.validators)
        if keys == s.validators:
            return
        for k in s.contact.set_validators(keys, now):  # newcomers get the start's grace
            s.announced.pop(k, None)
        for k in keys & s.strangers.keys():  # the chain names them now: validators' word
            s.announced[k] = s.strangers.pop(k)
        s.validators = keys
        self.counters["validator_set_changes"] += 1

    def _finish(
        self, op: PendingOperation, status: OperationStatus, now: float, reason: str = ""
    ) -> None:
        s = self.sessions.get(op.session_id)
        if s is not None:
            s.pending.remove(op.proposal_id)
        self._finished.finish(op, status, now, reason)

    def _arm(self, s: _Session) -> None:
        if not self._running or self._loop is None:
            return
        at = s.engine.next_timer()
        if at == s.timer_at and s.timer is not None:
            return
        if s.timer is not None:
            s.timer.cancel()
            s.timer = None
        s.timer_at = at
        if at is not None:
            s.timer = self._loop.call_at(at, self._on_timer, s)

    def _on_timer(self, s: _Session) -> None:
        try:
            self._on_timer_unguarded(s)
        except Exception as exc:  # never a dead callback in a live process
            self._fail(exc)

    def _on_timer_unguarded(self, s: _Session) -> None:
        s.timer = None
        s.timer_at = None
        if not self._running or self.sessions.get(s.id) is not s:
            return
        s.engine.handle_timer(self._now())
        self._after(s)

    # -- housekeeping -----------------------------------------------------------------

    def _tick(self) -> None:
        try:
            self._tick_unguarded()
        except Exception as exc:  # never a dead callback in a live process
            self._fail(exc)

    def _tick_unguarded(self) -> None:
        self._tick_handle = None
        if not self._running or self._loop is None:
            return
        now = self._now()
        links = len(self.mesh.router.peers.links)
        if self.config.gossip and self.sessions:
            view = self._mesh_view()
            for s in self.sessions.values():
                self._refresh_gossip(s, now, view)
        if links > self._links:
            # A new neighbour may join a part of the mesh that missed our messages (the
            # mesh does not store and forward): re-send this height's votes and proposal.
            # A gossiping session needs none of it: a new validator neighbour gets what
            # it lacks from gossip (re-flooding on every link-up swamps a large mesh).
            for s in self.sessions.values():
                if self.config.gossip and not s.flood_own:
                    continue
                for payload in list(s.recent_out):
                    self.counters["resent_on_link_up"] += 1
                    self.send_payload(payload)
        self._links = links
        for s in list(self.sessions.values()):
            self._retry_unresolved(s, now, expire=True)
            self._expire(s, now)
            self._check_contact(s, now)
            self._maybe_announce(s, now)
        self._tick_handle = self._loop.call_later(self.config.tick_interval, self._tick)

    def _expire(self, s: _Session, now: float) -> None:
        """Timeout cleanup: operations pending too long have failed."""
        for op in s.pending.older_than(now, self.config.operation_timeout):
            self._finish(op, OperationStatus.FAILED, now, "timeout")

    def _in_contact(self, s: _Session, now: float) -> int:
        return s.contact.in_contact(now)

    def _check_contact(self, s: _Session, now: float) -> None:
        """Partition detection and healing; catching up while f+1 validators are ahead."""
        n = len(s.validators)
        in_contact = self._in_contact(s, now)
        before = s.health
        following = None
        if self._lost_set(s, now, in_contact):
            following = self._follow_announcements(s, now) or self._follow_strangers(s, now)
        if in_contact < quorum(n):
            seen = Seen.QUORUM_LOST
        else:  # behind: hand the engine what f+1 validators announced
            behind = self._follow_announcements(s, now) if following is None else following
            seen = Seen.BEHIND if behind else Seen.IN_STEP
        s.health, effect = next_health(before, seen)
        if s.health is before:
            return
        self.counters[f"health_{s.health.value}"] += 1
        log.log(
            logging.WARNING if s.health is SessionHealth.PARTITIONED else logging.INFO,
            kv(
                "table_health",
                session=s.id.hex()[:8],
                to=s.health.value,
                was=before.value,
                height=s.engine.height,
                in_contact=in_contact,
                validators=n,
            ),
        )
        if effect is Effect.HEAL:
            # Healing: tell the others where we are now; their answers drive catch-up.
            s.announcer.healed()
            self._announce(s, now)

    def _lost_set(self, s: _Session, now: float, in_contact: int | None = None) -> bool:
        """Whether the set we know cannot lead us: we are not one of it (a joiner), or we
        hear no quorum of it (it may have left while we were away). Only then do keys
        outside it matter; a live validator ignores them (no request on their word)."""
        if not s.engine.is_validator:
            return True
        if in_contact is None:
            in_contact = self._in_contact(s, now)
        return in_contact < quorum(len(s.validators))

    def _note_stranger(self, s: _Session, key: bytes, msg: StateAnnounce) -> None:
        """Keep the last announcement of a key outside our validator set (bounded: the
        oldest heard goes first)."""
        self.counters["announce_stranger"] += 1
        s.strangers[key] = msg
        s.strangers.move_to_end(key)
        while len(s.strangers) > self.config.stranger_capacity:
            s.strangers.popitem(last=False)
            self._drop("announce_stranger_evicted")

    def _follow_strangers(self, s: _Session, now: float) -> bool:
        """Catch up on announcements of keys outside the set we know (True when behind).

        A node that knows only an old set (a joiner knows the genesis set; its validators
        may all have left) cannot place these keys until the chain names them, so none of
        them is trusted: one stranger above us only makes the engine ask for our next block
        (its certificate is checked against the set of its own height, so a liar gains
        nothing and a truthful one moves us a block on, into sets that name more of them).
        Only ``max(2, f+1)`` distinct strangers above us (f of the set we know) make the
        engine take the (f+1)-th highest as the height to catch up to (blocks in batches,
        or a snapshot, which is proven link by link from the genesis set). Sybil keys cost
        a liar nothing, so the most they buy is one request per ``request_interval`` (the
        engine's own rate) for blocks or a snapshot nobody holds."""
        eng = s.engine
        ahead = sorted(
            (a.height for a in s.strangers.values() if a.height > eng.height), reverse=True
        )
        if not ahead:
            return False
        need = max(2, max_faulty(len(s.validators)) + 1)
        target = ahead[need - 1] if len(ahead) >= need else eng.height + 1
        self.counters["stranger_catch_up"] += 1
        try:
            eng.receive(now, StateAnnounce(target, bytes(32), bytes(32)))
        except StorageFailure:
            raise
        except Exception:
            self._drop("engine_error")
            log.exception("engine failed on a state announcement")
        self._after(s)
        return True

    def _follow_announcements(self, s: _Session, now: float) -> bool:
        """If f+1 validators (so at least one honest) announced heights above ours, hand the
        engine the (f+1)-th highest announcement so it catches up; True when behind."""
        f = max_faulty(len(s.validators))
        if len(s.announced) <= f:
            return False
        ahead = sorted(s.announced.values(), key=lambda a: a.height, reverse=True)[f]
        if ahead.height <= s.engine.height:
            return False
        try:
            s.engine.receive(now, ahead)  # the engine rate-limits its own requests
        except StorageFailure:
            raise
        except Exception:
            self._drop("engine_error")
            log.exception("engine failed on a state announcement")
        self._after(s)
        return True

    def _maybe_announce(self, s: _Session, now: float) -> None:
        """Announce when the state changed (interval halves) or as a rare heartbeat."""
        ann = s.engine.state_announcement()
        gossiping = self.config.gossip and not s.flood_own
        why = s.announcer.tick(now, (ann.height, ann.state_hash), gossiping)
        if why is Why.HEARTBEAT:
            self.counters["heartbeats"] += 1  # keeps contact (partition detection) when idle
        if why is not None:
            self._announce(s, now)

    def _announce(self, s: _Session, now: float) -> None:
        ann = s.engine.state_announcement()
        s.announcer.announced(now, (ann.height, ann.state_hash))
        self.counters["announcements"] += 1
        self.transmit(s.id, ann)

    # -- failure ----------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        """A storage error (disk full, I/O error) or a bug in a callback: stop signing at
        once (timers cancelled, nothing more is processed or sent), keep the reason for
        health and status, tell the owner (the node exits so systemd restarts it)."""
        if self.failure is not None:
            return
        if isinstance(exc, StorageFailure):
            self.failure = f"storage failed: {exc}"
            log.error(kv("signing_stopped", reason=self.failure))
        else:
            self.failure = f"bug: {type(exc).__name__}: {exc}"
            log.error(kv("signing_stopped", reason=self.failure), exc_info=exc)
        self._running = False
        for sess in self.sessions.values():
            if sess.timer is not None:
                sess.timer.cancel()
                sess.timer = None
        for h in (self._drain_handle, self._tick_handle, self._flush_handle):
            if h is not None:
                h.cancel()
        self._drain_handle = self._tick_handle = self._flush_handle = None
        if self.on_failure is not None:
            self.on_failure(self.failure, exc)

    # -- helpers ----------------------------------------------------------------------

    def _session(self, session_id: bytes) -> _Session:
        s = self.sessions.get(session_id)
        if s is None:
            raise BridgeError("unknown_session", session_id.hex())
        return s

    def _epoch(self, now: float) -> int:
        return math.floor(now / self.config.unsigned_repeat_interval)

    def _drop(self, reason: str) -> bool:
        self.drops[reason] += 1
        return False

    def _now(self) -> float:
        loop = self._loop
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return 0.0
        return loop.time()


_REF_KINDS = (Kind.VOTE_SET, Kind.OPERATION_REF, Kind.PROPOSAL_REF)  # need the validator set
_BATCH_KINDS = (Kind.BATCH, *_REF_KINDS)
_PRIORITY: dict[type, int] = {Vote: 0, Proposal: 1, CompactProposal: 1, Evidence: 1, Operation: 2}
_OP_PRIORITY = _PRIORITY[Operation]  # a batch of only these yields the radio


def _named(s: _Session, peer: bytes, msg: Message) -> None:
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
    known = s.peer_blocks.setdefault(peer, OrderedDict())
    known[block] = None
    known.move_to_end(block)
    while len(known) > _NAMED_BLOCKS:
        known.popitem(last=False)


_NAMED_BLOCKS = 16  # block hashes remembered per gossip neighbour
