"""NetworkConsensusBridge: the thin asyncio service around :class:`~.core.BridgeCore`.

It only moves bytes and time, as :class:`~ble_bridge.mesh.service.MeshNode` does for the
router: delivered 0x1C packets go into the core as :class:`~.core.Arrival` values with
``loop.time()`` as ``now``; the core's actions leave through ``MeshNode.send`` (a flood,
or a TTL-1 frame for one neighbour); its events run the commit hooks and log health
changes; one :class:`~ble_bridge.timer.TimerSlot` follows ``core.next_timer()`` for every
session, and each timer call gets a :class:`~.policy.MeshView` built from the mesh's peer
table and the transport's queue depths. Every callback is guarded: an exception stops
signing (:meth:`NetworkConsensusBridge._fail`) instead of dying in the event loop.

Durability: every engine gets the node's :class:`~ble_bridge.store.Store`, which records the
signer state *inside* the engine before a vote reaches its outbox, so the bridge can only
ever broadcast votes that are already on disk.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from ..consensus.app import Application
from ..consensus.engine import Committed, ConsensusEngine, EngineConfig, SignerGuard
from ..errors import StorageFailure
from ..events import kv
from ..mesh.router import Delivered
from ..mesh.service import MeshNode
from ..store import Store
from ..timer import TimerSlot
from ..wire.identity import Identity
from ..wire.messages import SESSION_ID_LEN, Message
from ..wire.packet import PacketType
from .config import BridgeConfig, BridgeError
from .contact import SessionHealth
from .core import Action, Arrival, BlockCommitted, BridgeCore, Flood, HealthChanged, OutputFilter
from .pending import PendingOperation, ProposalId
from .policy import MeshView
from .session import Session
from .stats import BridgeStats, SessionStats, quantile

log = logging.getLogger(__name__)

CommitHook = Callable[[bytes, Committed], None]


class NetworkConsensusBridge:
    """Several consensus sessions over one :class:`MeshNode`; see the module docstring.

    ``output_filter``: the core's declared seam for misbehaving test nodes (see
    :class:`~.core.OutputFilter`)."""

    def __init__(
        self,
        mesh: MeshNode,
        identity: Identity,
        *,
        store: Store | None = None,
        config: BridgeConfig | None = None,
        output_filter: OutputFilter | None = None,
    ) -> None:
        self.mesh = mesh
        self.identity = identity
        self.store = store
        self.core = BridgeCore(
            identity.signing_public,
            mesh.peer_id,
            config or BridgeConfig(),
            output_filter=output_filter,
        )
        self.counters = self.core.counters
        self.drops = self.core.drops
        self.commit_hooks: list[CommitHook] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer = TimerSlot(self._on_timer, self._fail)
        self._pumping = False
        # the double-sign guard every engine gets (the node's signer-state file), and why
        # a session must catch up before it signs (None: it may sign at once)
        self.signer: SignerGuard | None = None
        self.catch_up_reason: Callable[[bytes], str | None] | None = None
        self.on_failure: Callable[[str, BaseException], None] | None = None
        mesh.subscribe(PacketType.CONSENSUS, self._on_packet)

    @property
    def config(self) -> BridgeConfig:
        return self.core.config

    @config.setter
    def config(self, config: BridgeConfig) -> None:
        self.core.config = config

    @property
    def sessions(self) -> dict[bytes, Session]:
        return self.core.sessions

    @property
    def failure(self) -> str | None:
        """Set when a storage error (or a bug) stopped the bridge: it signs nothing more."""
        return self.core.failure

    # -- life -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every open engine and the housekeeping (the mesh is started by its owner)."""
        self._loop = asyncio.get_running_loop()
        self.core.start(self._now())
        self._pump()

    async def stop(self) -> None:
        """Cancel the timer; engines and their stored state stay as they are."""
        self.core.stop()
        self._timer.cancel()

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
        self.core.open_session(self._now(), engine)
        self._pump()
        return engine

    def close_session(self, session_id: bytes) -> None:
        self.core.close_session(self._now(), session_id)
        self._pump()

    def engine(self, session_id: bytes) -> ConsensusEngine[Any]:
        return self.core.session(session_id).engine

    # -- local operations -------------------------------------------------------------

    def submit_operation(self, session_id: bytes, op: bytes) -> ProposalId:
        """Sign ``op``, gossip it for the next block and track it until commit or failure."""
        try:
            pid = self.core.submit(self._now(), session_id, op)
        except StorageFailure as exc:
            self._fail(exc)
            raise BridgeError("failed", self.failure or str(exc)) from exc
        self._pump()
        return pid

    def request_join(self, session_id: bytes, nonce: int, buy_in: int = 0) -> None:
        """Ask a session's validators to seat us (a signed join request, repeated by the
        engine until the set of a coming height holds our key)."""
        self.core.request_join(self._now(), session_id, nonce, buy_in)
        self._pump()

    def contact_ages(self, session_id: bytes) -> dict[bytes, float]:
        """Seconds since we last heard each validator of the session (0 for ourselves)."""
        return self.core.session(session_id).contact.ages(self._now())

    def operation(self, proposal_id: bytes) -> PendingOperation | None:
        """The tracked state of a submitted operation (pending or recently finished)."""
        return self.core.operation(proposal_id)

    def pending_operations(self, session_id: bytes | None = None) -> list[PendingOperation]:
        chosen = self.sessions.values() if session_id is None else [self.core.session(session_id)]
        return [op for s in chosen for op in s.pending]

    # -- health and stats -------------------------------------------------------------

    def health(self, session_id: bytes) -> SessionHealth:
        return self.core.session(session_id).health

    def is_healthy(self) -> bool:
        """Running, every session in contact with a quorum and not stuck behind or saturated."""
        if not self.core.running:
            return False
        return all(
            s.health is SessionHealth.ACTIVE and not s.inbox.full for s in self.sessions.values()
        )

    def active_participants(self, session_id: bytes) -> int:
        return self.core.session(session_id).contact.in_contact(self._now())

    def latencies(self) -> list[float]:
        """Submit -> commit seconds of the last ``latency_samples`` own operations."""
        return self.core.latencies()

    def stats(self) -> BridgeStats:
        now = self._now()
        drops = Counter(self.drops)
        sessions: dict[bytes, SessionStats] = {}
        for s in self.sessions.values():
            sessions[s.id] = SessionStats(
                s.id,
                s.health,
                s.engine.height,
                s.engine.round,
                len(s.validators),
                s.contact.in_contact(now),
                len(s.pending),
                len(s.inbox),
                s.announce_interval,
            )
        for k, v in self.core.engine_stats().items():
            if k.startswith(("drop_", "snapshot_")) and k != "snapshots_installed":
                drops[f"engine_{k}"] += v
        xs = sorted(self.core.latencies())
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

    # -- inputs -----------------------------------------------------------------------

    def _on_packet(self, event: Delivered) -> None:
        try:
            link = None
            if event.link_id is not None:
                link = self.mesh.router.peers.links.get(event.link_id)
            via = link.peer_id if link is not None else None
            packet = event.packet
            arrival = Arrival(
                packet.payload,
                self.mesh.router.peers.signing_key(packet.sender),
                via,
                # a frame our neighbour signed (its gossip or its own message), not a flood
                # it relayed (the mesh passes those on unchecked, even on their last hop)
                vouched=via is not None and packet.sender == via,
                flooded=packet.is_broadcast and packet.ttl > 1,  # the mesh relays it on
            )
            self.core.receive(self._now(), arrival)
            self._pump()
        except Exception as exc:  # never a dead callback in a live process
            self._fail(exc)

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
        """Queue one 0x1C payload for its session (see :meth:`.core.BridgeCore.receive_payload`)."""
        ok = self.core.receive_payload(
            self._now(), payload, sender, via=via, flooded=flooded, vouched=vouched, msg=msg
        )
        self._pump()
        return ok

    def receive_batch(
        self, payload: bytes, via: bytes | None = None, *, vouched: bool = False
    ) -> int:
        """Queue each message of a gossip batch (or vote set); returns how many were queued."""
        n = self.core.receive_batch(self._now(), payload, via, vouched=vouched)
        self._pump()
        return n

    def transmit(self, session_id: bytes, msg: Message) -> None:
        """Send one message as the session's own (through the output filter, if any)."""
        self.core.transmit(self._now(), session_id, msg)
        self._pump()

    def send_payload(self, payload: bytes) -> None:
        """Flood raw 0x1C bytes; remembered so a relayed echo is not processed again."""
        self.core.send_payload(self._now(), payload)
        self._pump()

    def _on_timer(self) -> None:
        if self.core.running:
            self.core.handle_timer(self._now(), self._mesh_view())
        self._pump()

    # -- outputs ----------------------------------------------------------------------

    def _pump(self) -> None:
        """Perform the core's actions, handle its events, re-arm the one timer."""
        if self._pumping:
            return  # a commit hook called back into the bridge: the outer pump goes on
        self._pumping = True
        try:
            core = self.core
            while True:
                actions = core.actions()
                events = core.events()
                if not actions and not events:
                    break
                for action in actions:
                    self._perform(action)
                for ev in events:
                    if isinstance(ev, BlockCommitted):
                        for hook in self.commit_hooks:
                            try:
                                hook(ev.session_id, ev.committed)
                            except Exception:
                                self.counters["hook_error"] += 1
                                log.exception("commit hook failed")
                    elif isinstance(ev, HealthChanged):
                        self._log_health(ev)
        finally:
            self._pumping = False
        if self._loop is not None:
            self._timer.arm(self._loop, self.core.next_timer())

    def _perform(self, action: Action) -> None:
        try:
            if isinstance(action, Flood):
                self.mesh.send(PacketType.CONSENSUS, action.payload)
            else:  # TTL 1, no recipient: for this neighbour alone, 8 bytes shorter
                self.mesh.send(PacketType.CONSENSUS, action.payload, ttl=1, neighbour=action.peer)
        except ValueError:
            self.drops["send_oversized"] += 1
            return
        self.counters["messages_sent" if isinstance(action, Flood) else "gossip_frames"] += 1
        self.counters["bytes_sent"] += len(action.payload)

    def _log_health(self, ev: HealthChanged) -> None:
        log.log(
            logging.WARNING if ev.health is SessionHealth.PARTITIONED else logging.INFO,
            kv(
                "table_health",
                session=ev.session_id.hex()[:8],
                to=ev.health.value,
                was=ev.was.value,
                height=ev.height,
                in_contact=ev.in_contact,
                validators=ev.validators,
            ),
        )

    def _mesh_view(self) -> MeshView:
        """The mesh as the core needs it: peer keys, links, the announced neighbour graph,
        and the frames queued per linked peer (its least busy link) and on all links."""
        peers = self.mesh.router.peers
        transport = self.mesh.transport
        keys: dict[bytes, bytes] = {}
        graph: dict[bytes, frozenset[bytes]] = {}
        for rec in peers:
            if rec.signing_key is not None:
                keys[rec.peer_id] = rec.signing_key
            graph[rec.peer_id] = rec.neighbors
        depths: dict[bytes, int] = {}
        node_depth = 0
        linked: set[bytes] = set()
        for link_id, link in peers.links.items():
            depth = transport.queue_depth(link_id)
            node_depth += depth
            pid = link.peer_id
            if pid is not None:
                linked.add(pid)
                if depth < depths.get(pid, depth + 1):
                    depths[pid] = depth
        return MeshView(
            self.mesh.peer_id,
            keys,
            frozenset(linked),
            graph,
            depths,
            node_depth,
            len(peers.links),
        )

    # -- failure ----------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        """A storage error (disk full, I/O error) or a bug in a callback: stop signing at
        once (timer cancelled, nothing more is processed or sent), keep the reason for
        health and status, tell the owner (the node exits so systemd restarts it)."""
        if self.core.failure is not None:
            return
        if isinstance(exc, StorageFailure):
            reason = f"storage failed: {exc}"
            log.error(kv("signing_stopped", reason=reason))
        else:
            reason = f"bug: {type(exc).__name__}: {exc}"
            log.error(kv("signing_stopped", reason=reason), exc_info=exc)
        self.core.fail(reason)
        self._timer.cancel()
        if self.on_failure is not None:
            self.on_failure(reason, exc)

    def _now(self) -> float:
        loop = self._loop
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return 0.0
        return loop.time()
