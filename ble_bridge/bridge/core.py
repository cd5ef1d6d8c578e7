"""BridgeCore: consensus engines of several sessions joined to one mesh node, sans-IO.

The core is the bridge without a radio or an event loop (the shape of mesh/'s ``Router``
and aioquic's ``QuicConnection``). Inputs, each with an explicit ``now`` (seconds):

- :meth:`receive` an :class:`Arrival` (a 0x1C payload the mesh delivered, with the
  signing key of its sender and the neighbour it came over), :meth:`receive_payload` one
  payload (a catch-up test, an attack harness);
- :meth:`submit` a local operation, :meth:`request_join`, :meth:`open_session`;
- :meth:`handle_timer` when :meth:`next_timer` says, with a :class:`~.policy.MeshView` of
  the mesh (links, peer keys, neighbour graph, queue depths) built by the caller.

Outputs, drained by the caller: :meth:`actions` (:class:`Flood`: a mesh broadcast;
:class:`ToNeighbour`: a TTL-1 frame for one linked peer) and :meth:`events`
(:class:`OperationFinished`, :class:`HealthChanged`, :class:`BlockCommitted`).

Work the core defers (draining the inboxes round-robin, sending held gossip batches, the
housekeeping tick, every engine's timers) is folded into the one :meth:`next_timer`. A
call of :meth:`handle_timer` runs what was due when it began; a gossip flush due after
other output waits for the next call, so it sees the queue depths that output made.

Two declared seams, for test nodes: :attr:`BridgeCore.taps` see every inbound payload
before it is queued (False drops it), and an :class:`OutputFilter` decides for each
outgoing consensus message whether it leaves, what leaves instead and what is added (drop,
alter, inject; :mod:`ble_bridge.sim.byzantine` builds one on
:func:`ble_bridge.consensus.byzantine.misbehave`), and which accepted messages gossip
passes on.

The parts: :mod:`.receive` (batches, dedup, inboxes, checks before the engine),
:mod:`.catchup` (contact, health, following announcements, our own announcements),
and here the outbound side (own messages flooded or gossiped, neighbour batches paced and
compacted), the engines' events and the timers. Each session's state is a
:class:`~.session.Session`.

Durability: every engine records its signer state before a vote reaches its outbox, so
every :class:`Flood` or :class:`ToNeighbour` carrying a vote carries one already on disk.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from ..consensus.engine import (
    Committed,
    ConsensusEngine,
    EvidenceFound,
    OperationReissued,
    OperationRejected,
    SignerNotice,
    SnapshotInstalled,
    ValidatorsChanged,
)
from ..errors import StorageFailure
from ..events import kv
from ..gossip import Item, pack
from ..mesh.seen import SeenCache
from ..wire.messages import (
    ENVELOPE_PREFIX,
    SESSION_TAG_LEN,
    CompactProposal,
    Evidence,
    Message,
    Operation,
    Proposal,
    Vote,
    encode_batch,
    encode_message,
    to_neighbour,
)
from . import catchup, receive
from .actions import (
    Action,
    Arrival,
    BlockCommitted,
    Event,
    Flood,
    HealthChanged,
    InboundTap,
    OperationFinished,
    OutputFilter,
    ToNeighbour,
)
from .compact import compact_items
from .config import BridgeConfig, BridgeError
from .inbox import dedup_key
from .pacing import Pacing, hold
from .pending import (
    FinishedOperations,
    OperationStatus,
    PendingOperation,
    ProposalId,
)
from .policy import GOSSIPED, MeshView, floods, plan
from .session import Session

log = logging.getLogger(__name__)

_PRIORITY: dict[type, int] = {Vote: 0, Proposal: 1, CompactProposal: 1, Evidence: 1, Operation: 2}
_OP_PRIORITY = _PRIORITY[Operation]  # a batch of only these yields the radio


class BridgeCore:
    """Several consensus sessions over one mesh node; see the module docstring."""

    def __init__(
        self,
        me: bytes,
        peer_id: bytes,
        config: BridgeConfig,
        *,
        output_filter: OutputFilter | None = None,
    ) -> None:
        self.me = me  # our signing key
        self.peer_id = peer_id  # our mesh peer id
        self.config = config
        self.output_filter = output_filter
        self.taps: list[InboundTap] = []
        self.sessions: dict[bytes, Session] = {}
        self.counters: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()
        self.running = False
        self.failure: str | None = None
        self.view = MeshView(peer_id, {}, frozenset(), {})
        self.seen = SeenCache(config.dedup_capacity, config.dedup_ttl)
        self._finished = FinishedOperations(
            config.finished_capacity, config.latency_samples, self.counters
        )
        self._pacing = Pacing(
            config.gossip_busy_frames,
            config.gossip_poll,
            config.gossip_max_hold,
            config.gossip_op_busy_frames,
            config.gossip_op_max_hold,
        )
        self._actions: list[Action] = []
        self._events: list[Event] = []
        self._tick_at: float | None = None
        self._drain_at: float | None = None
        self._flush_at: float | None = None
        self._links = 0
        self._retired: Counter[str] = Counter()  # engine stats of closed sessions

    # -- life -------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Start every open engine and the housekeeping tick."""
        self.running = True
        for s in self.sessions.values():
            s.engine.start(now)
            self.after(s, now)
        self._tick_at = now + self.config.tick_interval

    def stop(self) -> None:
        """Stop: no timers, nothing more processed or sent; engines keep their state."""
        self.running = False
        self._tick_at = self._drain_at = self._flush_at = None

    def fail(self, reason: str) -> None:
        """Stop signing for good (a storage error or a bug): see the service's ``_fail``."""
        if self.failure is None:
            self.failure = reason
        self.stop()

    def open_session(self, now: float, engine: ConsensusEngine[Any]) -> Session:
        if engine.session_id in self.sessions:
            raise BridgeError("session_exists")
        if len(self.sessions) >= self.config.max_sessions:
            raise BridgeError("too_many_sessions")
        s = Session(engine, now, self.config, self.me)
        self.sessions[engine.session_id] = s
        if self.running:
            engine.start(now)
            self.after(s, now)
        return s

    def close_session(self, now: float, session_id: bytes) -> None:
        s = self.sessions.pop(session_id, None)
        if s is None:
            return
        self._retired.update(s.engine.stats)
        for op in s.pending:
            self._finish(op, OperationStatus.FAILED, now, "session_closed")

    def session(self, session_id: bytes) -> Session:
        s = self.sessions.get(session_id)
        if s is None:
            raise BridgeError("unknown_session", session_id.hex())
        return s

    # -- outputs ----------------------------------------------------------------------

    def actions(self) -> list[Action]:
        out, self._actions = self._actions, []
        return out

    def events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` must run next (None: nothing to wait for)."""
        if not self.running:
            return None
        at = math.inf
        for t in (self._drain_at, self._flush_at, self._tick_at):
            if t is not None and t < at:
                at = t
        for s in self.sessions.values():
            t = s.engine.next_timer()
            if t is not None and t < at:
                at = t
        return None if at == math.inf else at

    def handle_timer(self, now: float, view: MeshView | None = None) -> None:
        """Run what is due at ``now``: engine timers, the tick, the inbox drain, the gossip
        flush (``view``: the mesh as it is now; the last one when None)."""
        if view is not None:
            self.view = view
        if not self.running:
            return
        tick = self._tick_at is not None and self._tick_at <= now
        drain = self._drain_at is not None and self._drain_at <= now
        flush = self._flush_at is not None and self._flush_at <= now
        for s in list(self.sessions.values()):
            t = s.engine.next_timer()
            if t is not None and t <= now and self.sessions.get(s.id) is s and self.running:
                s.engine.handle_timer(now)
                self.after(s, now)
        if tick and self.running:
            self._tick_at = None
            self._tick(now)
            if self.running:
                self._tick_at = now + self.config.tick_interval
        if drain and self.running:
            self._drain_at = None
            receive.drain(self, now)
        if flush and self.running and self._flush_at is not None and self._flush_at <= now:
            if self._actions:
                return  # after the output made meanwhile: at the next call, fresh depths
            self._flush_at = None
            self._flush(now)

    # -- local operations -------------------------------------------------------------

    def submit(self, now: float, session_id: bytes, op: bytes) -> ProposalId:
        """Sign ``op``, gossip it for the next block and track it until commit or failure."""
        s = self.session(session_id)
        if len(s.pending) >= self.config.pending_capacity:
            self.drops["submit_pending_full"] += 1
            raise BridgeError("pending_full", f"{len(s.pending)} operations pending")
        if not s.engine.is_validator:
            raise BridgeError("not_validator")
        if self.failure is not None:
            raise BridgeError("failed", self.failure)
        op_id = s.engine.submit(now, op)  # a StorageFailure goes to the caller
        pending = PendingOperation(
            ProposalId(op_id),
            s.id,
            now,
            required_votes=s.engine.quorum,
            nonce=s.engine.operation_nonce(op_id),
        )
        s.pending.add(pending)
        self.counters["operations_submitted"] += 1
        self.after(s, now)
        return ProposalId(op_id)

    def request_join(self, now: float, session_id: bytes, nonce: int, buy_in: int = 0) -> None:
        s = self.session(session_id)
        if s.engine.is_validator:
            raise BridgeError("already_validator")
        s.engine.request_join(now, nonce, buy_in)
        self.counters["join_requests"] += 1
        self.after(s, now)

    def operation(self, proposal_id: bytes) -> PendingOperation | None:
        for s in self.sessions.values():
            op = s.pending.by_proposal(proposal_id)
            if op is not None:
                return op
        return self._finished.get(proposal_id)

    def latencies(self) -> list[float]:
        return list(self._finished.latencies)

    def engine_stats(self) -> Counter[str]:
        """The engines' counters, closed sessions' included."""
        out: Counter[str] = Counter(self._retired)
        for s in self.sessions.values():
            out.update(s.engine.stats)
        return out

    # -- inbound (see :mod:`.receive`) ------------------------------------------------

    def receive(self, now: float, arrival: Arrival) -> None:
        """One payload the mesh delivered: a gossip batch or vote set, or one message."""
        receive.arrive(self, now, arrival)

    def receive_batch(
        self, now: float, payload: bytes, via: bytes | None = None, *, vouched: bool = False
    ) -> int:
        """Queue each message of a gossip batch (or vote set); returns how many were queued."""
        return receive.receive_batch(self, now, payload, via, vouched=vouched)

    def receive_payload(
        self,
        now: float,
        payload: bytes,
        sender: bytes | None = None,
        *,
        via: bytes | None = None,
        flooded: bool = False,
        vouched: bool = False,
        msg: Message | None = None,
    ) -> bool:
        """Queue one 0x1C payload for its session; False (and a counted reason) if refused.

        ``sender``: the signing key of the node that signed the mesh packet (None inside a
        batch); ``via``: the neighbour it came from; ``flooded``: a flood the routers relay
        on; ``vouched``: ``via`` signed the frame itself; ``msg``: ``payload`` decoded."""
        return receive.receive_payload(
            self, now, payload, sender, via=via, flooded=flooded, vouched=vouched, msg=msg
        )

    def drain_soon(self, now: float) -> None:
        """Drain the inboxes at the next timer (``now``)."""
        if self._drain_at is None and self.running:
            self._drain_at = now

    def engine_receive(self, s: Session, now: float, msg: Message) -> None:
        try:
            s.engine.receive(now, msg)
        except StorageFailure:
            raise  # not the message's fault: the node stops signing (see the service)
        except Exception:  # never let one message kill the bridge
            self.drop("engine_error")
            log.exception("engine failed on a %s", type(msg).__name__)

    # -- outbound and engine plumbing -------------------------------------------------

    def after(self, s: Session, now: float) -> None:
        """After touching an engine: handle its events and send its outbox."""
        self.pass_on(s, now)
        receive.retry_unresolved(self, s, now)
        for ev in s.engine.events():
            self._on_event(s, ev, now)
        out = s.engine.outbox()
        for msg in out:
            if isinstance(msg, Proposal):
                receive.note_block(self, s, msg)
            self.transmit(now, s.id, msg)
        if out:
            s.announcer.sent(now)
        s.pending.note_votes(s.engine.votes_for)

    def transmit(self, now: float, session_id: bytes, msg: Message) -> None:
        """Send one message of ours, through the output filter when there is one."""
        f = self.output_filter
        if f is None:
            self._transmit(now, session_id, msg)
            return
        out = f.outgoing(self, session_id, msg)
        if out.honest:
            self._transmit(now, session_id, msg)
        if out.instead is not None:
            self.send_payload(now, out.instead)
        for payload in out.extra:
            self.send_payload(now, payload)

    def _transmit(self, now: float, session_id: bytes, msg: Message) -> None:
        s = self.sessions.get(session_id)
        if (
            self.config.compact_proposals
            and s is not None
            and len(s.validators) <= self.config.compact_max_validators
            and isinstance(msg, Proposal)
            and s.engine.proposer(msg.height, msg.round) == self.me
            and not s.engine.full_proposal_requested(msg.height, msg.round)
        ):
            # Its ops were gossiped already: receivers rebuild the block from their
            # mempools (the engine answers a ProposalRequest with the full proposal). A
            # flooded proposal carries our own ops inline: their floods may still be
            # racing it. A gossiped one does not: our ops went down the same tree first.
            me = self.me
            flooded = self._floods(s, msg)
            msg = CompactProposal.of(msg, inline=lambda op: flooded and op.submitter == me)
        payload = encode_message(session_id, msg)
        if s is not None and isinstance(msg, Vote | Proposal | CompactProposal):
            if msg.height != s.recent_height:
                s.recent_out.clear()
                s.recent_height = msg.height
            s.recent_out.append(payload)
        if s is not None and self.config.gossip and isinstance(msg, GOSSIPED):
            key = dedup_key(payload, None, 0)
            self.seen.add(now, key)
            if not self._floods(s, msg):
                again = s.gossip.is_recent(key)
                s.gossip.offer(
                    key,
                    payload[ENVELOPE_PREFIX:],
                    _height_of(msg),
                    origin=self.peer_id,
                    again=again,
                    meta=msg,
                    priority=_PRIORITY.get(type(msg), 9),
                    due=self._due(msg, now),
                )
                self.counters["messages_sent"] += 1
                self.counters["gossip_own"] += 1
                self.schedule_flush(now)
                return
            s.gossip.flooded(key, payload[ENVELOPE_PREFIX:], _height_of(msg), msg)
        self.send_payload(now, payload)

    def send_payload(self, now: float, payload: bytes) -> None:
        """Flood raw 0x1C bytes; remembered so a relayed echo is not processed again."""
        if not self.running:
            return
        self.seen.add(now, dedup_key(payload, self.me, self.epoch(now)))
        self._actions.append(Flood(bytes(payload)))

    # -- neighbour gossip -------------------------------------------------------------

    def _floods(self, s: Session, msg: Message) -> bool:
        return floods(self.config.gossip, s.flood_own, msg)

    def _signer(self, s: Session, msg: Message) -> bytes | None:
        if isinstance(msg, Vote):
            return msg.validator
        if isinstance(msg, Operation):
            return msg.submitter
        if isinstance(msg, Proposal | CompactProposal):
            return s.engine.proposer(msg.height, msg.round)
        return None

    def pass_on(
        self,
        s: Session,
        now: float,
        received: Message | None = None,
        via: bytes | None = None,
        flooded: bool = False,
    ) -> None:
        """Queue what the engine just accepted for the neighbours that lack it (``via``, the
        neighbour ``received`` came from, has that one). A ``flooded`` one is relayed by
        the mesh routers: gossiping it too sent every flooded message about twice."""
        accepted = s.engine.relayable()
        if not accepted:
            return
        f = self.output_filter
        if f is not None and not f.relays(self, s.id, accepted):
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
                s.gossip.flooded(key, payload[ENVELOPE_PREFIX:], _height_of(msg), msg)
                continue
            origin = s.peer_of.get(signer) if signer is not None else None
            n = s.gossip.offer(
                key,
                payload[ENVELOPE_PREFIX:],
                _height_of(msg),
                via if msg is received else None,
                origin=origin,
                meta=msg,
                priority=_PRIORITY.get(type(msg), 9),
                due=self._due(msg, now),
            )
            self.counters["gossip_forwarded"] += n
        if self.config.gossip:
            self.schedule_flush(now)

    def _due(self, msg: Message, now: float) -> float:
        return now + self.config.gossip_linger if isinstance(msg, Operation) else now

    def schedule_flush(self, now: float) -> None:
        # While a flush for lingering or held items is pending, what is queued meanwhile
        # (votes too) waits for it, at most gossip_linger: flushing votes at once instead
        # cost 12 % more airtime (smaller batches) for 1 % less latency (seeds 1-4).
        if self._flush_at is None and self.running:
            self._flush_at = now

    def _flush(self, now: float) -> None:
        """Send each neighbour its queued messages, batched; hold them while its link is
        busy (see :func:`.pacing.hold`), with the queue depths of :attr:`view`."""
        view = self.view
        wake = math.inf
        node_depth = view.node_depth
        depths = dict(view.link_depths)
        for s in self.sessions.values():
            tag = s.id[:SESSION_TAG_LEN]  # short envelopes unless two sessions share it
            short = sum(sid[:SESSION_TAG_LEN] == tag for sid in self.sessions) == 1
            for peer in s.gossip.waiting():
                depth = depths.get(peer)
                if depth is None:
                    continue  # gone: the next tick drops it from the neighbours
                again = hold(
                    self._pacing,
                    now,
                    due=s.gossip.due(peer),
                    link_depth=depth,
                    node_depth=node_depth,
                    only_ops=s.gossip.urgency(peer) == _OP_PRIORITY,
                )
                if again is not None:
                    wake = min(wake, again)
                    continue
                items = self.compact(s, s.gossip.take(peer), peer)
                for batch in pack(items, self.config.gossip_config.batch_bytes):
                    payload = encode_batch(s.id, batch)
                    if short:  # the session id as a 4-byte tag: 12 bytes a frame
                        payload = to_neighbour(payload)
                    self._actions.append(ToNeighbour(peer, payload))
                    node_depth += 1
                    depths[peer] = depth = depth + 1
        if wake < math.inf:
            self._flush_at = wake

    def compact(self, s: Session, items: Sequence[Item], peer: bytes | None = None) -> list[bytes]:
        """Item bytes for neighbour ``peer``, compacted (see :mod:`.compact`)."""
        return compact_items(
            items,
            members=s.validators,
            index=s.engine.validators.index,
            proposer=s.engine.proposer,
            known=s.peer_blocks.get(peer) if peer is not None else None,
            short_sets=self.config.short_vote_sets,
            counters=self.counters,
            set_at=s.engine.validators_at,
        )

    def _refresh_gossip(self, s: Session, now: float, view: MeshView) -> None:
        """Our validator neighbours, and whether our own messages must be flooded too."""
        p = plan(
            view,
            s.validators,
            self.me,
            s.engine.banned,
            s.contact.in_contact(now),
            self.config.gossip_config.max_neighbours,
        )
        if s.gossip.set_neighbours(p.neighbours):
            self.schedule_flush(now)
        s.peer_blocks = {q: b for q, b in s.peer_blocks.items() if q in s.gossip.neighbours}
        s.peer_of = p.peer_of
        s.gossip.set_graph(view.peer_id, p.graph, p.leaves)
        # items of the height just decided still go to neighbours deciding it (they may
        # need the votes we did not: we stopped counting at a quorum); older ones are done
        s.gossip.forget_below(s.engine.height)
        if p.flood_own != s.flood_own:
            self.counters["gossip_flood_on" if p.flood_own else "gossip_flood_off"] += 1
            s.flood_own = p.flood_own

    # -- engine events ----------------------------------------------------------------

    def _on_event(self, s: Session, ev: object, now: float) -> None:
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
            self._events.append(BlockCommitted(s.id, ev))
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
            mine = s.engine.committed_nonce(self.me)
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

    def _refresh_validators(self, s: Session, now: float) -> None:
        """The engine's set changed: contact, health and gossip follow the set of the
        height being decided."""
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
        self._events.append(OperationFinished(op))

    # -- housekeeping -----------------------------------------------------------------

    def _tick(self, now: float) -> None:
        view = self.view
        links = view.links
        if self.config.gossip and self.sessions:
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
                    self.send_payload(now, payload)
        self._links = links
        for s in list(self.sessions.values()):
            receive.retry_unresolved(self, s, now, expire=True)
            for op in s.pending.older_than(now, self.config.operation_timeout):
                self._finish(op, OperationStatus.FAILED, now, "timeout")
            catchup.check_contact(self, s, now)
            catchup.maybe_announce(self, s, now)

    # -- helpers ----------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        self._events.append(event)

    def epoch(self, now: float) -> int:
        return math.floor(now / self.config.unsigned_repeat_interval)

    def drop(self, reason: str) -> bool:
        self.drops[reason] += 1
        return False


def _height_of(msg: Message) -> int | None:
    if isinstance(msg, Vote | Proposal | CompactProposal):
        return msg.height
    return None  # operations and evidence stay useful until they are committed


__all__ = [
    "Action",
    "Arrival",
    "BlockCommitted",
    "BridgeCore",
    "Event",
    "Flood",
    "HealthChanged",
    "InboundTap",
    "OperationFinished",
    "OutputFilter",
    "ToNeighbour",
]
