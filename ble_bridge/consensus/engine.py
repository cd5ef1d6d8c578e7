"""Sans-IO Tendermint-style BFT engine: heights, rounds, proposer rotation, votes, timeouts.

The engine never touches a socket or a clock. Feed it messages and time, read back what to
broadcast and what happened::

    engine = ConsensusEngine(session_id, identity, validator_keys, app, config, store)
    engine.start(now)
    engine.receive(now, msg)            # or receive_payload(now, bytes_of_a_0x1C_packet)
    engine.submit(now, op_body) -> op_id
    engine.handle_timer(now)            # call when now >= engine.next_timer()
    engine.outbox() -> list[Message]    # broadcast each: encode_message(session_id, m)
    engine.events() -> list[Event]      # Committed, OperationRejected, OperationReissued, ...
    engine.state_announcement()         # StateAnnounce to gossip when the height changed

Read-only views: ``height`` (last committed), ``round``, ``phase``, ``state``,
``state_hash``, ``last_block_hash``, ``last_certificate``, ``banned``, ``vote_delay``,
``commit_latency``, ``stats`` (a Counter of every drop by reason), ``quorum``,
``validators`` (sorted), ``is_validator``, ``mempool`` (see ``consensus.mempool``: each
submitter's ops in nonce order, gaps held). Snapshots: ``make_snapshot()`` and
``install_snapshot(now, blob, certificate)``. Whoever sends our proposals compact
(``CompactProposal.of``) asks ``full_proposal_requested(height, round)`` first: True when
the proposal leaves as an answer to a ``ProposalRequest`` and must go in full.

Catch-up answers are lean: a validator still voting on a decided height gets the
certificate alone; a node holding a candidate block asks ``CertificateRequest``; full blocks
(``Commit``) only answer ``CommitRequest``; an answer heard from anyone silences ours once
its certificate verifies (a forged one must not silence the honest answers), and a height
answered recently is not answered again.

Algorithm: Buchman, Kwon, Milosevic, "The latest gossip on BFT consensus" (2018), with
blocks executed before they are voted on (the header commits to the state hash *after* the
block, so a certificate proves a snapshot), idle heights that wait for work instead of
proposing empty blocks, and periodic re-broadcast of the node's own votes so lossy links
cannot stall a round. With a ``store`` every signature is durable before it is emitted
(and the nonce of every own op), every committed block before it is reported, and a
restarted engine resumes the round it last signed in.
"""

from __future__ import annotations

import enum
import hashlib
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from ..signer import UNKNOWN, SignedAt
from ..store import Store
from ..wire.messages import (
    DEFAULT_LIMITS,
    NIL,
    SESSION_ID_LEN,
    SHORT_ID_LEN,
    VOTE_LEN,
    Block,
    BlockHeader,
    CertificateRequest,
    Commit,
    CommitCertificate,
    CommitRequest,
    CompactProposal,
    Evidence,
    JoinRequest,
    Message,
    MessageError,
    MessageLimits,
    Operation,
    Proposal,
    ProposalRequest,
    SnapshotRequest,
    SnapshotResponse,
    StateAnnounce,
    Step,
    Vote,
    body_hash,
    decode_message,
    proposal_signing_bytes,
)
from .app import Application, BlockContext, InvalidOperation
from .journal import Journal
from .journal import SignerGuard as SignerGuard  # re-exported: the bridge imports it here
from .mempool import Mempool
from .quorum import AddResult, SignatureCache, VoteSet, max_faulty, quorum
from .snapshot import Snapshot, rest_digest
from .validators import (
    AddValidator,
    RemoveReason,
    RemoveValidator,
    SetHistory,
    SetLink,
    SetOpError,
    SetState,
    apply_set_op,
    decode_set_op,
    encode_set_op,
    is_set_op,
    state_hash_of,
    verify_links,
)

S = TypeVar("S")

GENESIS_DOMAIN = b"ble-bridge/genesis/v1"


def genesis_hash(session_id: bytes, validators: Sequence[bytes]) -> bytes:
    """The ``prev_hash`` of block 1: binds a chain to its session and validator set."""
    return hashlib.sha256(GENESIS_DOMAIN + session_id + b"".join(sorted(validators))).digest()


class Signer(Protocol):
    """What the engine needs of an identity (``wire.identity.Identity`` fits)."""

    @property
    def signing_public(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Every tunable of the engine, with its default."""

    timeout_propose: float = 1.0  # before any latency is measured
    timeout_vote: float = 0.5  # prevote/precommit wait after q votes of any kind
    timeout_min: float = 0.05
    timeout_max: float = 30.0
    timeout_growth: float = 1.5  # each round multiplies the timeouts by this
    latency_alpha: float = 0.25  # EWMA weight of a commit latency sample (reported only)
    latency_factor: float = 2.0  # timeouts = factor x the expected time of the step
    latency_window: int = 32  # vote-delay samples kept; their median drives the timeouts
    rebroadcast_factor: float = 1.5  # re-send own round messages after this x propose timeout
    rebroadcast_backoff: int = 3  # at most this many x timeout_growth while nobody answers
    max_block_ops: int = 1024
    max_block_bytes: int = 256 * 1024
    max_block_evidence: int = 8
    mempool_max_ops: int = 8192
    mempool_max_bytes: int = 4 << 20
    mempool_per_submitter: int = 1024
    mempool_ttl_heights: int = 64  # an op not committed within this many heights expires
    max_op_failures: int = 3  # block builds an op may fail before it is rejected
    # an op above its submitter's next nonce waits this long for the missing one (seconds;
    # at least gap_wait_rounds x the propose timeout) before a block may jump the gap
    gap_wait: float = 0.5
    gap_wait_rounds: float = 2.0
    max_pending_evidence: int = 64
    evidence_heights: int = 8  # committed heights whose votes still yield evidence
    max_round_skip: int = 16  # ignore messages for rounds further ahead than this
    # Catch-up-first after a lost signer state: observe this long (seconds) once caught
    # up and votes of q-1 others at the current height are in; this long when the others
    # are present (announcing) but nobody votes; then skip this many rounds above the
    # highest round seen at that height (rounds we may have signed in before the loss).
    signer_catch_up_wait: float = 3.0
    signer_catch_up_idle: float = 60.0
    signer_catch_up_rounds: int = 1
    keep_rounds: int = 8  # vote sets kept behind the current round (plus lock/valid rounds)
    max_future_messages: int = 2048  # buffered messages for the next height
    max_future_commits: int = 32  # certified blocks kept for heights beyond the next
    recent_blocks: int = 64  # committed blocks kept in memory to answer catch-up
    snapshot_interval: int = 16  # heights between stored snapshots (0 = never)
    keep_blocks: int = 1024  # stored blocks kept behind the newest snapshot
    snapshot_gap: int = 8  # behind by more than this many heights: ask for a snapshot
    request_interval: float = 0.5  # minimum time between two catch-up requests
    catch_up_batch: int = 4  # heights requested at once when behind by a few
    response_delay: float = 0.1  # min spread of the jitter before answering a request
    block_response_spread: float = 3.0  # blocks/snapshots take longer to silence others
    max_pending_responses: int = 8
    # a decided height is answered (by us or anyone we heard) at most once per this long
    # (at least the rebroadcast timeout, the pace at which a laggard repeats its votes)
    answer_interval: float = 1.0
    max_answered: int = 64
    create_empty_blocks: bool = False  # propose with an empty mempool (keep-alive chains)
    # while the application has a deadline counted in heights, an idle chain still makes
    # an (empty) block this often, so the deadline passes (None: never)
    idle_block_interval: float | None = 1.0
    signature_cache: int = 16384
    # a verified signature unused this long is forgotten (its height is decided; the same
    # vote's relayed copies and certificate come within seconds). None: only the LRU bound.
    signature_cache_ttl: float | None = 60.0
    # validator-set changes (consensus.validators): a change committed at H counts from H+1
    max_validators: int = 256  # an AddValidator above this many is refused
    # a validator none of whose votes we verified for this many heights is removed by an
    # operation the others commit (0: never); keep it longer than a restarted node needs
    # to catch up and vote again, or a rebooting handheld is thrown out
    silence_heights: int = 0
    # probation (0: none): a validator added by a block we committed counts as on probation
    # until we verify a vote of it; silent that long it is removed (as silent), and while
    # one is on probation we neither build nor vote for a block adding another, so keys
    # that never sign (a seat sponsoring its own) fill one free seat at a time, not all
    probation_heights: int = 0
    max_pending_joins: int = 32  # join requests heard and not yet committed (bounded)
    join_stagger_heights: int = 2  # the k-th sponsor of a join (or removal) waits k x this
    join_interval: float = 2.0  # a joiner repeats its request this often until it validates
    join_min_interval: float = 0.5  # per key: a new request is considered at most this often
    limits: MessageLimits = DEFAULT_LIMITS


class Phase(enum.IntEnum):
    """Where the engine is within the current height."""

    IDLE = 0  # new height, no work yet: no proposal, no timers
    PROPOSE = 1
    PREVOTE = 2
    PRECOMMIT = 3


# -- events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Committed:
    """A block was committed (already stored when this event is emitted)."""

    height: int
    round: int
    block: Block
    certificate: CommitCertificate
    ops: tuple[Operation, ...]


@dataclass(frozen=True, slots=True)
class OperationRejected:
    """An operation left the mempool without being committed."""

    op_id: bytes
    submitter: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class OperationReissued:
    """An own operation can never commit: an op we signed before a restart (that the
    restarted engine did not know of) took its nonce. Its body went out again, signed under
    a fresh nonce, as ``new_id``."""

    old_id: bytes
    new_id: bytes


@dataclass(frozen=True, slots=True)
class EvidenceFound:
    evidence: Evidence


@dataclass(frozen=True, slots=True)
class SnapshotInstalled:
    height: int
    state_hash: bytes


@dataclass(frozen=True, slots=True)
class ValidatorsChanged:
    """The block committed at ``height`` changed the set: ``validators`` count from
    ``height + 1`` on."""

    height: int
    validators: tuple[bytes, ...]
    added: tuple[bytes, ...]
    removed: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class SignerNotice:
    """The double-sign guard changed mode: ``catching_up`` True when the engine stopped
    signing to catch up first (``text`` says why), False when it signs again (above
    ``floor``)."""

    catching_up: bool
    text: str
    floor: tuple[int, int, int] | None = None


Event = (
    Committed
    | OperationRejected
    | OperationReissued
    | EvidenceFound
    | SnapshotInstalled
    | ValidatorsChanged
    | SignerNotice
)


@dataclass(slots=True)
class _Executed:
    """The replicated state after executing a block on top of the committed state."""

    app_state: Any
    nonces: dict[bytes, int]
    banned: frozenset[bytes]
    state_hash: bytes
    set_state: SetState
    rest: bytes  # digest of everything but the validator set (for set-change proofs)


@dataclass(slots=True)
class _Height:
    """Per-height round state (reset at every commit)."""

    round: int = 0
    phase: Phase = Phase.IDLE
    locked_round: int = -1
    locked_hash: bytes = NIL
    valid_round: int = -1
    valid_block: Block | None = None
    proposals: dict[int, Proposal] = field(default_factory=dict)
    votes: dict[tuple[int, Step], VoteSet] = field(default_factory=dict)
    blocks: dict[bytes, Block] = field(default_factory=dict)
    executed: dict[bytes, _Executed | None] = field(default_factory=dict)
    prevote_timer_set: set[int] = field(default_factory=set)
    precommit_timer_set: set[int] = field(default_factory=set)
    locked_on_quorum: set[int] = field(default_factory=set)
    own: list[Message] = field(default_factory=list)  # what we sent this and the last round
    round_started: dict[int, float] = field(default_factory=dict)
    vote_sent: dict[tuple[int, Step], float] = field(default_factory=dict)
    rebroadcasts: int = 0
    need_block: bool = False  # a quorum precommitted a block we do not hold
    compacts: dict[int, CompactProposal] = field(default_factory=dict)  # ops still missing
    fetched: set[int] = field(default_factory=set)  # rounds whose full proposal we asked for
    full_wanted: set[int] = field(default_factory=set)  # own proposals answered in full
    delay_samples: dict[int, list[float]] = field(default_factory=dict)


class ConsensusEngine(Generic[S]):
    """One validator's view of one session. Sans-IO: explicit ``now`` everywhere."""

    def __init__(
        self,
        session_id: bytes,
        signer: Signer,
        validators: Sequence[bytes],
        app: Application[S],
        config: EngineConfig | None = None,
        store: Store | None = None,
        guard: SignerGuard | None = None,
        catch_up: str | None = None,
    ) -> None:
        """``guard``: the signer-state file (without one, the store's signer record is
        the floor). ``catch_up``: why the signer state cannot be trusted (the file was
        missing, the database lost): catch up first and sign only above any round this
        key may have signed in."""
        if len(session_id) != SESSION_ID_LEN:
            raise ValueError(f"session id must be {SESSION_ID_LEN} bytes")
        if len(set(validators)) != len(validators) or not validators:
            raise ValueError("validators must be distinct and non-empty")
        self.session_id = bytes(session_id)
        self.signer = signer
        self.key = signer.signing_public
        self.genesis_validators: tuple[bytes, ...] = tuple(sorted(validators))
        self.validators: tuple[bytes, ...] = ()
        self._vindex: dict[bytes, int] = {}
        self.is_validator = False
        self.quorum = 0
        self.f = 0
        # validator of the last height we heard a verified vote from it at (silence)
        self._heard: dict[bytes, int] = {}
        self._probation: dict[bytes, int] = {}  # added key -> its first height, until it votes
        self._set_validators(self.genesis_validators)
        self._history = SetHistory(self.genesis_validators)
        self._set_state = SetState(self.genesis_validators)
        # join requests heard: key -> (request, height first heard); and sponsoring state
        self._joins: OrderedDict[bytes, tuple[JoinRequest, int]] = OrderedDict()
        self._join_heard: OrderedDict[bytes, float] = OrderedDict()
        # key -> height we submitted its AddValidator / RemoveValidator(silent) at
        self._sponsored_joins: dict[bytes, int] = {}
        self._sponsored_removals: dict[bytes, int] = {}
        self._join: JoinRequest | None = None  # our own request while we join
        self._join_signed = 0  # the highest join nonce we signed (this engine's life)
        self._join_due: float | None = None
        self.app = app
        self.config = config or EngineConfig()
        # the one persistence edge: every durable write, and what a restart reads back
        self._journal = Journal(self.session_id, store, guard)
        self.cache = SignatureCache(self.config.signature_cache, self.config.signature_cache_ttl)
        self.stats: Counter[str] = Counter()
        self._outbox: list[Message] = []
        self._events: list[Event] = []
        # others' messages accepted as valid and new (bounded: nobody may be draining it)
        self._relay: deque[Message] = deque(maxlen=1024)
        self._rebuilding = False
        self.mempool = Mempool(
            self.config.mempool_max_ops,
            self.config.mempool_max_bytes,
            self.config.mempool_per_submitter,
        )
        # committed state
        self._committed = 0
        self._app_state: S = app.initial_state(self.validators)
        self._nonces: dict[bytes, int] = {}
        self._banned: frozenset[bytes] = frozenset()
        _, self._state_hash = self._digests(
            self._app_state, self._nonces, self._banned, self._set_state
        )
        self._last_hash = genesis_hash(self.session_id, self.validators)
        self._last_header: BlockHeader | None = None
        self._last_cert: CommitCertificate | None = None
        self._recent: OrderedDict[int, tuple[Block, CommitCertificate]] = OrderedDict()
        self._commit_times: dict[int, float] = {}
        # round state
        self._hs = _Height()
        # vote sets of recent committed heights, where late conflicting votes still surface
        self._past_votes: OrderedDict[int, dict[tuple[int, Step], VoteSet]] = OrderedDict()
        self._future: deque[Message] = deque()
        self._future_commits: dict[int, Commit] = {}  # certified blocks beyond the next
        self._timers: dict[str, tuple[float, int, int]] = {}
        self._pending_evidence: OrderedDict[tuple[bytes, int, int, int], Evidence] = OrderedDict()
        self._committed_evidence: set[tuple[bytes, int, int, int]] = set()
        # signer state: never sign below (or differently at) this (height, round, step)
        self._signed_floor: tuple[int, int, int] | None = None
        self._signed_digest: bytes = UNKNOWN  # SHA-256 of what was signed there
        at = self._journal.floor()
        if at is not None:
            self._signed_floor, self._signed_digest = at.key, at.digest
        # catch-up-first mode (see signer_catch_up_*): why, since when, what was seen
        self._catch_up: str | None = None
        self._cu_started: float | None = None
        self._cu_due: float | None = None
        self._cu_quiet_since: float | None = None
        self._cu_voters: set[bytes] = set()  # validators whose votes at h were verified
        self._cu_round = -1  # highest round of a signed message seen at h
        self._present: dict[bytes, int] = {}  # validator -> height it announced
        self._now = 0.0  # the latest ``now`` the engine was given
        # latency adaptation and catch-up
        self.commit_latency: float | None = None  # EWMA, round start -> commit
        self._vote_delays: deque[float] = deque(maxlen=self.config.latency_window)
        self._ahead: dict[bytes, int] = {}  # validator -> highest height seen from it
        self._hint_height = 0
        self._last_request = -1e18
        self._responses: dict[tuple[str, int], float] = {}
        self._answered: OrderedDict[tuple[str, int], float] = OrderedDict()
        self._next_nonce = 1
        self._started = False
        self._handlers = self._handler_table()
        if catch_up is not None and guard is not None:
            self._enter_catch_up(catch_up)
        if self._journal.durable:
            self._recover()

    # -- public properties -------------------------------------------------------------

    @property
    def height(self) -> int:
        """Last committed height (0 = genesis)."""
        return self._committed

    @property
    def round(self) -> int:
        """Round of the height being decided."""
        return self._hs.round

    @property
    def phase(self) -> Phase:
        return self._hs.phase

    @property
    def state(self) -> S:
        """The application state after the last committed block."""
        return self._app_state

    @property
    def state_hash(self) -> bytes:
        """The chain state hash after the last committed block (what headers commit to)."""
        return self._state_hash

    @property
    def last_block_hash(self) -> bytes:
        return self._last_hash

    @property
    def last_certificate(self) -> CommitCertificate | None:
        return self._last_cert

    @property
    def vote_delay(self) -> float | None:
        """Median time from our vote to q votes of its step (in rounds that decided): about
        one message delay. None until enough samples."""
        if len(self._vote_delays) < 8:
            return None
        ordered = sorted(self._vote_delays)
        return ordered[len(ordered) // 2]

    @property
    def banned(self) -> frozenset[bytes]:
        return self._banned

    # -- validator sets ----------------------------------------------------------------

    @property
    def validator_history(self) -> SetHistory:
        """The set of every height and the links proving each change since genesis."""
        return self._history

    def validators_at(self, height: int) -> tuple[bytes, ...]:
        """The validators of ``height`` (the newest set for heights beyond the next)."""
        return self._history.set_at(height)

    def join_nonce(self, key: bytes) -> int:
        """The highest join nonce the chain committed for ``key`` (-1: never joined)."""
        return self._set_state.nonce_of(key)

    @property
    def pending_joins(self) -> list[JoinRequest]:
        """Join requests heard and not yet committed (bounded by ``max_pending_joins``)."""
        return [req for req, _ in self._joins.values()]

    def silent_heights(self, key: bytes) -> int:
        """Heights since we last verified a vote of validator ``key`` (or since it joined,
        or since this engine started)."""
        return self._committed + 1 - self._heard.get(key, self._committed + 1)

    def request_join(self, now: float, nonce: int, buy_in: int = 0) -> JoinRequest:
        """Ask the session's validators to add us; repeated every ``join_interval`` until
        the set of the next height holds our key. ``nonce`` must be above every join nonce
        of ours the chain ever committed (a clock in milliseconds does)."""
        req = JoinRequest.create(self.signer.sign, self.key, self.session_id, nonce, buy_in)
        self._join = req
        self._join_signed = max(self._join_signed, nonce)
        self._outbox.append(req)
        self.stats["join_requests_sent"] += 1
        self._join_due = now + self.config.join_interval
        return req

    def leave(self, now: float, floor: int | None = None) -> bytes:
        """Submit our own RemoveValidator; the set without us counts from the height after
        the one that commits it. Returns the op id. ``floor``: the highest join nonce we
        ever signed for this session (default: the highest this engine signed), so that
        none of our join requests still on the air can seat us again once we left."""
        floor = self._join_signed if floor is None else floor
        if floor <= self._set_state.nonce_of(self.key):
            floor = 0  # nothing above what the chain holds: no floor needed
        change = RemoveValidator(self.key, RemoveReason.LEAVE, floor)
        return self.submit(now, encode_set_op(change))

    def cancel_join(self) -> None:
        """Stop repeating our join request (one already heard may still be committed)."""
        self._join, self._join_due = None, None

    def _set_validators(self, keys: Sequence[bytes], height: int = 0) -> tuple[bytes, ...]:
        """Make ``keys`` the set of the height being decided; the keys added."""
        new = tuple(sorted(keys))
        added = tuple(k for k in new if k not in self._vindex)
        self.validators = new
        self._vindex = {v: i for i, v in enumerate(new)}
        self.is_validator = self.key in self._vindex
        self.quorum = quorum(len(new))
        self.f = max_faulty(len(new))
        for k in added:  # a new validator is not silent before it had its chance
            self._heard[k] = max(self._heard.get(k, 0), height)
        for k in [k for k in self._heard if k not in self._vindex]:
            del self._heard[k]
        for k in [k for k in self._probation if k not in self._vindex]:
            del self._probation[k]
        return added

    def proposer(self, height: int, round: int) -> bytes:
        """Deterministic rotation over the sorted validator set."""
        return self.validators[(height + round) % len(self.validators)]

    def committed_nonce(self, submitter: bytes) -> int:
        return self._nonces.get(submitter, 0)

    def votes_for(self, block_hash: bytes, step: Step = Step.PRECOMMIT) -> int:
        """Verified ``step`` votes for ``block_hash`` at the height being decided (best round)."""
        return max(
            (vs.count(block_hash) for (_, s), vs in self._hs.votes.items() if s == step),
            default=0,
        )

    def known_blocks(self, height: int, prefix: bytes = b"") -> list[bytes]:
        """Hashes of the blocks votes at ``height`` may name that we know of, starting with
        ``prefix`` (NIL included): proposed blocks (or their compact headers) and blocks
        that verified votes named at the height being decided, our last committed block,
        what the proposals and votes buffered for the next height name. Expands the short
        block references of VoteSets."""
        h = self._committed + 1
        hs = self._hs
        found: set[bytes] = {NIL}
        if height == h:
            found.update(hs.blocks)
            found.update(cp.header.hash for cp in hs.compacts.values())
            for vs in hs.votes.values():  # named by a verified vote: its hash is known
                found.update(vs.by_block)
        elif height == self._committed:
            found.add(self._last_hash)
        elif height == h + 1:
            for m in self._future:
                if isinstance(m, Proposal) and m.height == height:
                    found.add(m.block.hash)
                elif isinstance(m, CompactProposal) and m.height == height:
                    found.add(m.header.hash)
                elif isinstance(m, Vote) and m.height == height:
                    found.add(m.block_hash)
        return sorted(b for b in found if b.startswith(prefix))

    def blocks_mark(self) -> tuple[int, int, int]:
        """Changes whenever :meth:`known_blocks` may know more (cheap, no scan): the
        height, the blocks named at the height being decided, messages buffered for the
        next one."""
        hs = self._hs
        named = (
            len(hs.blocks) + len(hs.compacts) + sum(len(vs.by_block) for vs in hs.votes.values())
        )
        return self._committed, named, len(self._future)

    def operation_nonce(self, op_id: bytes) -> int | None:
        """Nonce of a mempool operation (None once it left the mempool)."""
        op = self.mempool.ops.get(op_id)
        return None if op is None else op.nonce

    # -- sans-IO interface -------------------------------------------------------------

    def start(self, now: float) -> None:
        """Begin work at the next height (idle until there is something to decide)."""
        if self._started:
            return
        self._started = True
        self._now = now
        if self._catch_up is not None:
            self._cu_started = now
        self._enter_height(now)

    def outbox(self) -> list[Message]:
        """Messages to broadcast to every validator of the session (drained)."""
        out, self._outbox = self._outbox, []
        return out

    def events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    def relayable(self) -> list[Message]:
        """Received messages this engine accepted (signature checked, new, of the current
        height) since the last call: what neighbour gossip may pass on (drained)."""
        out = list(self._relay)
        self._relay.clear()
        return out

    def next_timer(self) -> float | None:
        """Earliest time :meth:`handle_timer` has something to do, or None."""
        times = [t for t, _, _ in self._timers.values()]
        times.extend(self._responses.values())
        if self._cu_due is not None:
            times.append(self._cu_due)
        if self._join_due is not None:
            times.append(self._join_due)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``."""
        self._now = now
        self.cache.expire(now)
        for name, (due, h, r) in list(self._timers.items()):
            if due > now or self._timers.get(name) != (due, h, r):
                continue
            del self._timers[name]
            if h != self._committed + 1:
                continue
            self._on_timeout(now, name, r)
        for key, due in list(self._responses.items()):
            if due <= now:
                del self._responses[key]
                self._respond(now, key)
        if self._join_due is not None and self._join_due <= now:
            self._join_due = None
            if self._join is not None and self.key not in self._vindex:
                self._outbox.append(self._join)  # not in yet: ask again
                self.stats["join_requests_sent"] += 1
                self._join_due = now + self.config.join_interval
        self._progress(now)

    def state_announcement(self) -> StateAnnounce:
        """What the bridge broadcasts (when it changed) so lagging nodes notice."""
        return StateAnnounce(self._committed, self._state_hash, self._last_hash)

    def submit(self, now: float, body: bytes) -> bytes:
        """Sign ``body`` as an operation of this node, gossip it, and return its op id."""
        if not self.is_validator:
            raise ValueError("only a validator of the session may submit operations")
        op_id, reason = self._sign_own(now, body)
        if reason is not None:
            self._events.append(OperationRejected(op_id, self.key, reason))
            return op_id
        self._wake_for_work(now)
        self._progress(now)
        return op_id

    def _sign_own(self, now: float, body: bytes) -> tuple[bytes, str | None]:
        """Sign ``body`` under our next nonce, admit it and gossip it; the op id, and the
        reason it was refused (then nothing was gossiped)."""
        nonce = max(self._next_nonce, self.committed_nonce(self.key) + 1)
        self._next_nonce = nonce + 1
        op = Operation.create(self.signer.sign, self.key, self.session_id, nonce, body)
        op_id = op.op_id
        self._remember(op.submitter, op.signature, op.signing_bytes(self.session_id))
        reason = self._admit_op(op, op_id, now)
        if reason is not None:
            # never gossiped: reuse the nonce, or every later op of ours would wait on a gap
            if self._next_nonce == nonce + 1:
                self._next_nonce = nonce
            return op_id, reason
        self._journal.nonce(nonce)  # durable before it leaves: a restart never reuses it
        self._outbox.append(op)
        return op_id, None

    def receive_payload(self, now: float, payload: bytes) -> None:
        """Decode a 0x1C packet payload and :meth:`receive` it; bad bytes are counted."""
        try:
            session, msg = decode_message(payload, self.config.limits)
        except MessageError as exc:
            self.stats[f"drop_{exc.reason}"] += 1
            return
        if session != self.session_id:
            self.stats["drop_unknown_session"] += 1
            return
        self.receive(now, msg)

    def receive(self, now: float, msg: Message) -> None:
        """Process one decoded message; never raises on bad input (drops are counted)."""
        self._now = now
        self.cache.expire(now)
        self._dispatch(now, msg)
        self._progress(now)

    def _dispatch(self, now: float, msg: Message) -> None:
        self.stats["received"] += 1
        handler = self._handlers.get(type(msg))
        if handler is None:  # not a wire message (the table holds every one): never raise
            self.stats["drop_not_a_message"] += 1
            return
        handler(now, msg)

    def _handler_table(self) -> dict[type, Callable[[float, Any], None]]:
        """Message type -> bound handler: one entry per member of ``Message``."""
        return {
            Vote: self._on_vote,
            Proposal: self._on_proposal,
            CompactProposal: self._on_compact,
            ProposalRequest: self._on_proposal_request,
            Operation: self._on_operation,
            Evidence: self._on_evidence,
            Commit: self._on_commit_message,
            CommitCertificate: self._on_certificate,
            CommitRequest: self._on_commit_request,
            CertificateRequest: self._on_certificate_request,
            StateAnnounce: self._on_state_announce,
            SnapshotRequest: self._on_snapshot_request,
            JoinRequest: self._on_join_request,
            SnapshotResponse: self._on_snapshot_response,
        }

    def _on_certificate_request(self, now: float, req: CertificateRequest) -> None:
        if 1 <= req.height <= self._committed:
            self._schedule_response(now, ("cert", req.height))
        else:
            self.stats["drop_request_unavailable"] += 1

    def _on_state_announce(self, now: float, ann: StateAnnounce) -> None:
        self._note_height(now, ann.height + 1, None)

    def note_announcement(self, now: float, validator: bytes, ann: StateAnnounce) -> None:
        """Validator ``validator`` (the transport vouches for the sender) announced ``ann``:
        its claim of being ahead, counted like a proposal ahead (f+1 validators must be
        ahead before we ask for blocks). Unsigned, so one liar's announcement alone used
        to make us ask for blocks every ``request_interval``."""
        self._now = now
        self.stats["received"] += 1
        self._note_height(now, ann.height + 1, validator)

    def _on_snapshot_response(self, now: float, resp: SnapshotResponse) -> None:
        self._responses.pop(("snapshot", resp.certificate.height), None)
        if resp.certificate.height > self._committed:
            self.install_snapshot(now, resp.snapshot, resp.certificate)
        else:
            self.stats["drop_snapshot_stale"] += 1

    # -- validator-set changes ---------------------------------------------------------

    def _on_join_request(self, now: float, req: JoinRequest) -> None:
        """A key asks to validate: keep it (bounded, rate-limited per key) and sponsor it."""
        cfg = self.config
        key = req.key
        pending = self._joins.get(key)
        last = self._join_heard.get(key)
        reason = None
        if not self.is_validator:
            reason = "join_not_validator"  # only validators sponsor
        elif key in self._vindex:
            reason = "join_already_validator"
        elif req.nonce <= self._set_state.nonce_of(key):
            reason = "join_replayed"
        elif pending is not None and pending[0].nonce >= req.nonce:
            reason = "join_duplicate"
        elif last is not None and now - last < cfg.join_min_interval:
            reason = "join_rate_limited"
        elif pending is None and len(self._joins) >= cfg.max_pending_joins:
            reason = "join_pending_full"
        elif len(self.validators) >= cfg.max_validators:
            reason = "join_table_full"
        elif not req.verify(self.session_id, self.cache.verify):
            reason = "join_bad_signature"
        else:
            add = getattr(self.app, "add_validator", None)
            if add is not None:  # would the application seat it (e.g. a free seat)?
                try:
                    add(self._app_state, key, req.buy_in, self._ctx(self.key))
                except InvalidOperation as exc:
                    reason = f"join_{exc.reason}"
                except Exception:
                    reason = "join_app_error"
        if reason is not None:
            self.stats[f"drop_{reason}"] += 1
            return
        self._join_heard[key] = now
        self._join_heard.move_to_end(key)
        while len(self._join_heard) > 4 * cfg.max_pending_joins:
            self._join_heard.popitem(last=False)
        self._joins[key] = (req, self._committed + 1)
        self._sponsored_joins.pop(key, None)  # a newer request: sponsor it afresh
        self.stats["joins_heard"] += 1
        self._relay.append(req)
        self._sponsor(now)
        self._wake_for_work(now)

    def _rank(self, tag: bytes) -> int:
        """Our place in a per-``tag`` order of the validators: who sponsors first."""
        order = sorted(self.validators, key=lambda v: hashlib.sha256(tag + v).digest())
        return order.index(self.key) if self.key in order else len(order)

    def _sponsor(self, now: float) -> None:
        """Submit the AddValidator of join requests and the removal of silent validators
        whose turn came for us (the k-th sponsor in the per-key order waits k x
        ``join_stagger_heights`` heights, so usually one validator submits each)."""
        h = self._committed + 1
        cfg = self.config
        for key, (req, _) in list(self._joins.items()):
            if key in self._vindex or req.nonce <= self._set_state.nonce_of(key):
                del self._joins[key]
                self._sponsored_joins.pop(key, None)
        for d in (self._sponsored_joins, self._sponsored_removals):
            for key in [k for k, at in d.items() if h - at > cfg.mempool_ttl_heights]:
                del d[key]  # expired from the mempools: try again
        for key in [k for k in self._sponsored_removals if k not in self._vindex]:
            del self._sponsored_removals[key]
        if not self.is_validator or not self._started:
            return
        stagger = cfg.join_stagger_heights
        for key, (req, first) in list(self._joins.items()):
            if key in self._sponsored_joins:
                continue
            if h - first < self._rank(key + req.signature) * stagger:
                continue
            self._sponsored_joins[key] = h
            self._submit_set_op(now, AddValidator(req))
        for v in self.validators:
            if v == self.key or v in self._sponsored_removals:
                continue
            limit = self._silence_limit(v)
            if limit <= 0:
                continue
            silent = self.silent_heights(v)
            if silent <= limit or silent - limit < self._rank(v) * stagger:
                continue
            if len(self.validators) - len(self._sponsored_removals) <= 1:
                break
            self._sponsored_removals[v] = h
            self._submit_set_op(now, RemoveValidator(v, RemoveReason.SILENT))

    def _submit_set_op(self, now: float, change: AddValidator | RemoveValidator) -> None:
        _, reason = self._sign_own(now, encode_set_op(change))
        if reason is None:
            self.stats["set_ops_submitted"] += 1
        else:
            self.stats[f"set_op_refused_{reason}"] += 1

    # -- snapshots ---------------------------------------------------------------------

    def make_snapshot(self) -> tuple[bytes, CommitCertificate] | None:
        """Compressed snapshot of the committed state and the certificate proving it."""
        if self._last_header is None or self._last_cert is None:
            return None
        snap = Snapshot(
            self._last_header,
            tuple(sorted(self._nonces.items())),
            self._banned,
            self.app.snapshot(self._app_state),
            self._set_state.keys,
            self._set_state.join_nonces,
            tuple(self._history.links_before(self._committed)),
        )
        return snap.compress(), self._last_cert

    def install_snapshot(self, now: float, blob: bytes, certificate: CommitCertificate) -> bool:
        """Adopt a snapshot newer than our state if the certificate proves its state hash."""
        try:
            snap = Snapshot.decompress(blob, self.config.limits.max_snapshot_bytes)
        except MessageError as exc:
            self.stats[f"snapshot_{exc.reason}"] += 1
            return False
        if snap.height <= self._committed:
            self.stats["snapshot_stale"] += 1
            return False
        if certificate.height != snap.height or certificate.block_hash != snap.header.hash:
            self.stats["snapshot_certificate_mismatch"] += 1
            return False
        # the set that signed it, proven link by link from the genesis set
        signers = verify_links(
            self.genesis_validators, snap.links, self.session_id, self.cache.verify, snap.height
        )
        if signers is None:
            self.stats["snapshot_bad_set_links"] += 1
            return False
        if not certificate.verify(signers, self.session_id, self.cache):
            self.stats["snapshot_bad_certificate"] += 1
            return False
        if not snap.keys:
            self.stats["snapshot_bad_state"] += 1
            return False
        try:
            app_state = self.app.restore(snap.app_state)
            nonces = dict(snap.nonces)
            sset = SetState(snap.keys, snap.join_nonces)
            rest, state_hash = self._digests(app_state, nonces, snap.banned, sset)
        except Exception:  # app code parsing bytes from the air must not crash us
            self.stats["snapshot_bad_state"] += 1
            return False
        if state_hash != snap.header.state_hash:
            self.stats["snapshot_hash_mismatch"] += 1
            return False
        self._journal.snapshot(snap.height, blob, certificate.encode())
        self._install_history(snap, certificate, rest, signers)
        self._adopt(snap.header, certificate, app_state, nonces, snap.banned, state_hash, sset)
        self._heard = {v: snap.height for v in self.validators}  # a fresh view of silence
        self._recent.clear()
        self.stats["snapshots_installed"] += 1
        self._events.append(SnapshotInstalled(snap.height, state_hash))
        self._after_commit(now)
        return True

    # -- inputs ------------------------------------------------------------------------

    def _on_vote(self, now: float, vote: Vote) -> None:
        h = self._committed + 1
        if vote.validator == self.key and self._verify_vote(vote):
            self._saw_own(vote.height, vote.round, int(vote.step), _digest(vote.encode()))
        if (
            self._catch_up is not None
            and vote.height == h
            and vote.validator in self._vindex
            and self._verify_vote(vote)  # memoised
        ):
            self._cu_round = max(self._cu_round, vote.round)
            self._cu_voters.add(vote.validator)
        if vote.height == h + 1 and vote.validator not in self._vindex:
            # maybe a validator the block we are deciding adds: keep it for the next height
            # (it is checked there), but it says nothing about who is ahead
            self._other_height(now, vote, vote.height, None)
            return
        if vote.validator not in self._vindex:
            self.stats["drop_not_validator"] += 1
            return
        if vote.height != h:
            self._other_height(now, vote, vote.height, vote.validator)
            return
        if vote.round > self._hs.round + self.config.max_round_skip:
            self.stats["drop_round_too_far"] += 1
            return
        vs = self._vote_set(vote.round, vote.step)
        result, ev = vs.add(vote)
        if result is AddResult.ADDED:
            self.stats["votes_counted"] += 1
            self._heard[vote.validator] = h
            self._probation.pop(vote.validator, None)
            self._relay.append(vote)
            sent = self._hs.vote_sent.get((vote.round, vote.step))
            if sent is not None and vs.total == vs.threshold:
                self._hs.delay_samples.setdefault(vote.round, []).append(now - sent)
            self._wake(now)
        else:
            self.stats[f"drop_{result.value}"] += 1
        if ev is not None:
            self._found_evidence(ev)

    def _on_proposal(self, now: float, p: Proposal) -> None:
        h = self._committed + 1
        if p.height != h:
            self._other_height(now, p, p.height, self._far_proposer(p.height, p.block.header))
            return
        if p.round > self._hs.round + self.config.max_round_skip:
            self.stats["drop_round_too_far"] += 1
            return
        if p.block.height != p.height:
            self.stats["drop_bad_proposal"] += 1
            return
        existing = self._hs.proposals.get(p.round)
        if existing is not None:
            same = existing.block.hash == p.block.hash and existing.signature == p.signature
            self.stats["drop_duplicate" if same else "drop_conflicting_proposal"] += 1
            return
        proposer = self.proposer(p.height, p.round)
        if not self.cache.verify(proposer, p.signature, p.signing_bytes(self.session_id)):
            self.stats["drop_bad_signature"] += 1
            return
        if proposer == self.key:
            self._saw_own(p.height, p.round, int(Step.PROPOSAL), _digest(p.encode()))
        if self._catch_up is not None:
            self._cu_round = max(self._cu_round, p.round)
        self._hs.proposals[p.round] = p
        self._hs.blocks[p.block.hash] = p.block
        self._hs.compacts.pop(p.round, None)
        key = ("proposal", _round_key(p.height, p.round))
        self._responses.pop(key, None)  # someone sent the full proposal: no need to answer
        self._mark_answered(now, key)
        self.stats["proposals_accepted"] += 1
        if not self._rebuilding:  # a rebuilt one was passed on in its compact form
            self._relay.append(p)
        self._wake(now)

    def _on_compact(self, now: float, cp: CompactProposal) -> None:
        """Rebuild a compact proposal's block from the mempool (or ask for the full one)."""
        h = self._committed + 1
        if cp.height != h:
            self._other_height(now, cp, cp.height, self._far_proposer(cp.height, cp.header))
            return
        hs = self._hs
        if cp.round > hs.round + self.config.max_round_skip:
            self.stats["drop_round_too_far"] += 1
            return
        if cp.round in hs.proposals or cp.round in hs.compacts:
            self.stats["drop_duplicate"] += 1
            return
        proposer = self.proposer(cp.height, cp.round)
        if not self.cache.verify(proposer, cp.signature, cp.signing_bytes(self.session_id)):
            self.stats["drop_bad_signature"] += 1
            return
        if proposer == self.key:  # what the full proposal was is unknown here
            self._saw_own(cp.height, cp.round, int(Step.PROPOSAL), UNKNOWN)
        if self._catch_up is not None:
            self._cu_round = max(self._cu_round, cp.round)
        hs.compacts[cp.round] = cp
        self._relay.append(cp)
        self._rebuild(now, cp.round)

    def _rebuild(self, now: float, round: int) -> None:
        hs = self._hs
        cp = hs.compacts.get(round)
        if cp is None:
            return
        by_short = {op_id[:SHORT_ID_LEN]: op for op_id, op in self.mempool.ops.items()}
        ops = [by_short.get(e) if isinstance(e, bytes) else e for e in cp.entries]
        found = [op for op in ops if op is not None]
        if len(found) == len(ops):
            proposal = cp.rebuild(found)
            if proposal.block.body_matches():
                del hs.compacts[round]
                self.stats["compact_rebuilt"] += 1
                self._rebuilding = True
                try:
                    self._on_proposal(now, proposal)
                finally:
                    self._rebuilding = False
                return
            self.stats["compact_body_mismatch"] += 1
        if "fetch" not in self._timers:  # the missing ops may still be on their way
            self._set_timer(now, "fetch", self._timeout("prevote", 0) / 2, hs.round)

    def _fetch_proposals(self) -> None:
        """Ask for the full proposals of compact ones whose ops did not arrive in time."""
        hs = self._hs
        for rnd, cp in hs.compacts.items():
            if rnd not in hs.fetched:
                hs.fetched.add(rnd)
                self._outbox.append(ProposalRequest(cp.height, rnd))
                self.stats["sent_proposal_request"] += 1

    def full_proposal_requested(self, height: int, round: int) -> bool:
        """True (once) when our proposal of (height, round) is leaving as an answer to a
        ProposalRequest, so whoever compacts proposals must send this one in full."""
        if height != self._committed + 1 or round not in self._hs.full_wanted:
            return False
        self._hs.full_wanted.discard(round)
        return True

    def _on_proposal_request(self, now: float, req: ProposalRequest) -> None:
        h = self._committed + 1
        if req.height != h or req.round not in self._hs.proposals:
            self.stats["drop_request_unavailable"] += 1
            return
        self._schedule_response(now, ("proposal", _round_key(req.height, req.round)))

    def _on_operation(self, now: float, op: Operation) -> None:
        op_id = op.op_id
        if op_id in self.mempool:
            self.stats["drop_duplicate"] += 1
            return
        if op.submitter not in self._vindex:
            self.stats["drop_not_validator"] += 1
            return
        if op.nonce <= self.committed_nonce(op.submitter):
            self.stats["drop_stale_nonce"] += 1
            return
        if len(op.body) > self.config.limits.max_op_bytes:
            self.stats["drop_oversized"] += 1
            return
        if not self.cache.verify(op.submitter, op.signature, op.signing_bytes(self.session_id)):
            self.stats["drop_bad_signature"] += 1
            return
        reason = self._admit_op(op, op_id, now)
        if reason is not None:
            self.stats[f"drop_{reason}"] += 1
            return
        self.stats["ops_accepted"] += 1
        self._relay.append(op)
        if op.nonce > self.committed_nonce(op.submitter) + 1:
            self.stats["ops_out_of_order"] += 1
        for rnd in list(self._hs.compacts):  # the op a compact proposal was waiting for?
            self._rebuild(now, rnd)
        self._wake_for_work(now)

    def _admit_op(self, op: Operation, op_id: bytes, now: float) -> str | None:
        if op.nonce <= self.committed_nonce(op.submitter):
            return "stale_nonce"
        return self.mempool.add(op, op_id, self._committed, now)

    def _gap_wait(self) -> float:
        """How long an op waits for a missing earlier nonce of its submitter."""
        cfg = self.config
        return max(cfg.gap_wait, cfg.gap_wait_rounds * self._timeout("propose", 0))

    def _ready_ops(self, now: float) -> list[tuple[bytes, Operation]]:
        return self.mempool.ready(self.committed_nonce, now, self._gap_wait())

    def _has_work(self, now: float) -> bool:
        """Something to decide: evidence, or an op a block may carry now."""
        if self._pending_evidence or self.config.create_empty_blocks:
            return True
        return bool(self.mempool) and bool(self._ready_ops(now))

    def _wake_for_work(self, now: float) -> None:
        """Leave IDLE if a block could carry something; else wake when a held op may."""
        if not self._started or self._hs.phase is not Phase.IDLE:
            return
        if self._has_work(now):
            self._start_round(now, 0)
            return
        wait = self._gap_wait()
        due = self.mempool.next_release(self.committed_nonce, wait)
        if due is not None:
            if due <= now:  # the mempool says released yet nothing is ready: never spin at now
                self.stats["held_release_not_ready"] += 1
                due = now + wait
            current = self._timers.get("held")
            if current is None or current[0] > due:
                self._set_timer(now, "held", due - now, 0)

    def _on_evidence(self, now: float, ev: Evidence) -> None:
        key = ev.key
        if key in self._pending_evidence or key in self._committed_evidence:
            self.stats["drop_duplicate"] += 1
            return
        if ev.offender in self._banned:
            self.stats["drop_already_banned"] += 1
            return
        if not (
            ev.is_consistent()
            and ev.offender in self.validators_at(ev.vote_a.height)
            and self._verify_vote(ev.vote_a)
            and self._verify_vote(ev.vote_b)
        ):
            self.stats["drop_bad_evidence"] += 1
            return
        self._found_evidence(ev, gossip=False)
        if key in self._pending_evidence:
            self._relay.append(ev)
        self._wake(now)

    def _found_evidence(self, ev: Evidence, gossip: bool = True) -> None:
        key = ev.key
        if key in self._pending_evidence or key in self._committed_evidence:
            return
        if ev.offender in self._banned:
            return
        if len(self._pending_evidence) >= self.config.max_pending_evidence:
            self.stats["drop_evidence_pool_full"] += 1
            return
        self._pending_evidence[key] = ev
        self.stats["evidence_found"] += 1
        self._journal.evidence(ev.encode(), ev.vote_a.height)
        self._events.append(EvidenceFound(ev))
        if gossip:
            self._outbox.append(ev)

    def _on_certificate(self, now: float, cert: CommitCertificate) -> None:
        """A decided height's certificate: its precommits count as votes, so a node that
        holds the block commits; one that does not asks for it (``_try_commit``)."""
        h = self._committed + 1
        if cert.height - h > self.config.max_future_commits:
            self.stats["drop_certificate_too_far"] += 1
            return
        if not cert.verify(self.validators_at(cert.height), self.session_id, self.cache):
            self.stats["drop_bad_certificate"] += 1
            return
        self._heard_answer(now, "cert", cert.height)
        if cert.height < h:
            self.stats["drop_certificate_stale"] += 1
            return
        if cert.height > h:  # proves the chain is ahead: fetch the blocks
            self.stats["certificate_ahead"] += 1
            self._note_height(now, cert.height + 1, None)
            return
        self.stats["certificates_accepted"] += 1
        for vote in cert.precommits(self.validators):
            self._heard[vote.validator] = h
            self._probation.pop(vote.validator, None)
            _, ev = self._vote_set(vote.round, Step.PRECOMMIT).add(vote)
            if ev is not None:
                self._found_evidence(ev)
        self._wake(now)

    def _heard_answer(self, now: float, kind: str, height: int) -> None:
        """Someone answered ``height``: cancel ours, and do not answer it again soon."""
        kinds = ("cert", "commit") if kind == "commit" else ("cert",)
        for k in kinds:
            self._responses.pop((k, height), None)
            self._mark_answered(now, (k, height))

    def _mark_answered(self, now: float, key: tuple[str, int]) -> None:
        self._answered[key] = now
        self._answered.move_to_end(key)
        while len(self._answered) > self.config.max_answered:
            self._answered.popitem(last=False)

    def _on_commit_message(self, now: float, c: Commit) -> None:
        h = self._committed + 1
        height = c.block.height
        if c.certificate.height != height or c.certificate.block_hash != c.block.hash:
            self.stats["drop_commit_mismatch"] += 1
            return
        # the set of a height beyond the next is a guess (a block between may change it):
        # such a commit is kept only if it verifies now, and verified again when it is next.
        # One that does not verify is nobody's word (anyone can send one), so it starts no
        # catch-up: a forged far commit made us ask for snapshots every request_interval.
        # A laggard behind a set change learns from the validators' votes and
        # announcements instead (f+1 of them ahead).
        if height - h > self.config.max_future_commits or height in self._future_commits:
            self.stats["drop_commit_wrong_height"] += 1
            if height > h and c.certificate.verify(
                self.validators_at(height), self.session_id, self.cache
            ):
                self._note_height(now, height, None)
            else:
                self.stats["hint_unverified"] += 1
            return
        if not c.certificate.verify(self.validators_at(height), self.session_id, self.cache):
            self.stats["drop_bad_certificate" if height <= h else "drop_commit_unverified"] += 1
            return
        self._heard_answer(now, "commit", height)
        if height < h:
            self.stats["drop_commit_stale"] += 1
            return
        if height > h:  # certified but not next: keep it for when we get there
            self._future_commits[height] = c
            self.stats["commit_buffered"] += 1
            self._note_height(now, height, None)
            return
        executed = self._execute(c.block)
        if executed is None:
            # q validators signed a block we cannot reproduce: our state diverged, or
            # more than f are faulty. Never apply it.
            self.stats["drop_commit_invalid_block"] += 1
            return
        self.stats["caught_up_blocks"] += 1
        self._commit(now, c.block, c.certificate, executed)

    def _on_commit_request(self, now: float, req: CommitRequest) -> None:
        if req.height > self._committed or req.height < 1:
            self.stats["drop_request_unavailable"] += 1
            return
        self._schedule_response(now, ("commit", req.height))

    def _on_snapshot_request(self, now: float, req: SnapshotRequest) -> None:
        if req.height >= self._committed or self._last_cert is None:
            self.stats["drop_request_unavailable"] += 1
            return
        self._schedule_response(now, ("snapshot", self._committed))

    def _schedule_response(self, now: float, key: tuple[str, int]) -> None:
        """Answer after a per-node jitter; cancelled when someone else answers first."""
        if key in self._responses:
            return
        answered = self._answered.get(key)
        interval = max(self.config.answer_interval, self._timeout("rebroadcast", 0))
        if answered is not None and now - answered < interval:
            self.stats["drop_answered_recently"] += 1
            return
        if len(self._responses) >= self.config.max_pending_responses:
            self.stats["drop_responses_full"] += 1
            return
        digest = hashlib.sha256(self.key + key[0].encode() + key[1].to_bytes(8, "big")).digest()
        # The spread must exceed a message delay, or the first answer cannot silence others.
        spread = max(self.config.response_delay, 4 * (self.vote_delay or 0.0))
        if key[0] in ("commit", "snapshot"):
            spread *= self.config.block_response_spread
        jitter = int.from_bytes(digest[:4], "big") / 2**32 * spread
        self._responses[key] = now + jitter

    def _respond(self, now: float, key: tuple[str, int]) -> None:
        kind, height = key
        self._mark_answered(now, key)
        if kind == "cert":
            found = self._block_at(height)
            cert = found[1] if found is not None else None
            if cert is None and self._last_cert is not None and self._last_cert.height == height:
                cert = self._last_cert
            if cert is not None:
                self._outbox.append(cert)
                self.stats["sent_certificate"] += 1
        elif kind == "proposal":
            p = self._hs.proposals.get(height & _ROUND_MASK)
            if p is not None and _round_key(p.height, p.round) == height:
                self._hs.full_wanted.add(p.round)
                self._outbox.append(p)
                self.stats["sent_proposal"] += 1
        elif kind == "commit":
            found = self._block_at(height)
            if found is not None:
                self._outbox.append(Commit(*found))
                self.stats["sent_commit"] += 1
        elif kind == "snapshot":
            snap = self.make_snapshot()
            if snap is not None:
                self._outbox.append(SnapshotResponse(snap[1], snap[0]))
                self.stats["sent_snapshot"] += 1

    def _block_at(self, height: int) -> tuple[Block, CommitCertificate] | None:
        if height in self._recent:
            return self._recent[height]
        row = self._journal.stored_block(height)
        if row is None:
            return None
        try:
            return Block.decode(row[0], self.config.limits), CommitCertificate.decode(row[1])
        except MessageError:
            return None

    def _other_height(self, now: float, msg: Message, height: int, validator: bytes | None) -> None:
        h = self._committed + 1
        if height < h:
            self.stats["drop_stale_height"] += 1
            if isinstance(msg, Vote):
                self._late_conflict(msg)
                if height == self._committed and self._verify_vote(msg):
                    self._heard[msg.validator] = max(self._heard.get(msg.validator, 0), height)
                    self._probation.pop(msg.validator, None)
                    # a late vote of the height we just decided: a neighbour that is still
                    # deciding it may need exactly this one from us (gossip passes it on)
                    self._relay.append(msg)
            # A validator still voting on a height we committed is behind: help it with the
            # certificate (it voted there, so it most likely holds the block; if not, it asks
            # for the block). Late votes right after our commit are normal; later ones mean
            # a laggard.
            committed_at = self._commit_times.get(height)
            grace = 2 * self._timeout("prevote", 0)
            if validator is not None and committed_at is not None and now - committed_at > grace:
                self._schedule_response(now, ("cert", height))
            return
        if height == h + 1:
            if len(self._future) >= self.config.max_future_messages:
                self.stats["drop_future_overflow"] += 1
            else:
                self._future.append(msg)
        else:
            self.stats["drop_future_height"] += 1
        self._note_height(now, height, validator)

    def _far_proposer(self, height: int, header: BlockHeader) -> bytes | None:
        """Whom a proposal beyond the next height counts as a sign of being ahead for: its
        (unverified) proposer, so f+1 validators must agree before we ask for anything (one
        forged far proposal set the catch-up target alone and kept requests going). The
        next height's proposal stays a plain hint (a proposer the coming block adds)."""
        if height <= self._committed + 2:
            return None
        return header.proposer if header.proposer in self._vindex else b""

    def _late_conflict(self, vote: Vote) -> None:
        """A late vote for a recently committed height still reveals an equivocation."""
        vs = self._past_votes.get(vote.height, {}).get((vote.round, vote.step))
        prior = None if vs is None else vs.votes.get(vote.validator)
        if vs is not None and prior is not None and prior.block_hash != vote.block_hash:
            _, ev = vs.add(vote)
            if ev is not None:
                self._found_evidence(ev)

    def _note_height(self, now: float, height: int, validator: bytes | None) -> None:
        """Someone works on ``height``; if f+1 validators are ahead of us, catch up."""
        h = self._committed + 1
        if height <= h:
            return
        if validator is not None:
            if validator not in self._vindex:
                self.stats["hint_not_validator"] += 1
                return
            if height > self._ahead.get(validator, 0):
                self._ahead[validator] = height
            ahead = sorted((x for x in self._ahead.values() if x > h), reverse=True)
            if len(ahead) < self.f + 1:
                return
            height = ahead[self.f]
        self._hint_height = max(self._hint_height, height)
        if height == h + 1 and self._hs.blocks and not self._hs.need_block:
            # Others just moved on (f+1 voted on the next height, or one announced the
            # decision) and we hold a candidate block: our missing precommits are most
            # likely a message delay behind. Ask for the certificate only if they do not
            # come (asking at once cost ~40 requests and flooded certificates a minute).
            if "catch_up" not in self._timers:
                self._set_timer(now, "catch_up", self._timeout("prevote", 0) / 2, self._hs.round)
            return
        self._request_catch_up(now)

    def _request_catch_up(self, now: float) -> None:
        h = self._committed + 1
        if self._hint_height <= h or now - self._last_request < self.config.request_interval:
            return
        self._last_request = now
        if self._hint_height - h > self.config.snapshot_gap:
            self._outbox.append(SnapshotRequest(self._committed))
            self.stats["sent_snapshot_request"] += 1
        else:  # ask for every missing height at once (answers beyond the next are kept)
            for height in range(h, min(self._hint_height, h + self.config.catch_up_batch)):
                if height == h and self._hs.blocks and not self._hs.need_block:
                    # we hold a candidate block: its certificate is likely all we miss
                    self._outbox.append(CertificateRequest(height))
                    self.stats["sent_certificate_request"] += 1
                else:
                    self._outbox.append(CommitRequest(height))
                    self.stats["sent_commit_request"] += 1

    # -- the state machine -------------------------------------------------------------

    def _vote_set(self, round: int, step: Step) -> VoteSet:
        key = (round, step)
        vs = self._hs.votes.get(key)
        if vs is None:
            vs = VoteSet(
                self.session_id, self.validators, self._committed + 1, round, step, self.cache
            )
            self._hs.votes[key] = vs
        return vs

    def _wake(self, now: float) -> None:
        """Leave IDLE when there is something to decide."""
        if self._started and self._hs.phase is Phase.IDLE:
            self._start_round(now, 0)

    def _enter_height(self, now: float) -> None:
        if self._hs.votes:
            self._past_votes[self._committed] = self._hs.votes
            while len(self._past_votes) > self.config.evidence_heights:
                self._past_votes.popitem(last=False)
        self._hs = _Height()
        self._timers.clear()
        self._cu_voters.clear()
        self._cu_round = -1
        self._cu_quiet_since = None
        if self._signed_floor is not None and self._signed_floor[0] == self._committed + 1:
            self._resume(now)
        elif self._has_work(now):
            self._start_round(now, 0)
        elif self.mempool:  # only ops waiting for a missing nonce: wake when one may go
            self._wake_for_work(now)
        elif self.config.idle_block_interval is not None and self._app_awaits_heights():
            # Deadlines counted in heights must pass even when nobody submits anything.
            self._set_timer(now, "idle", self.config.idle_block_interval, 0)
        future, self._future = self._future, deque()
        for msg in future:
            self._dispatch(now, msg)

    def _start_round(self, now: float, round: int) -> None:
        hs = self._hs
        floor = self._signed_floor
        if (
            floor is not None
            and self._signed_digest == UNKNOWN
            and floor[0] == self._committed + 1
            and round <= floor[1]
        ):
            # this key may have signed in these rounds before it lost its state: skip them
            # (f+1 validators there pull the others along)
            self.stats["rounds_skipped_signer_floor"] += floor[1] + 1 - round
            round = floor[1] + 1
        hs.round = round
        hs.phase = Phase.PROPOSE
        # Keep the previous round's messages: a node still in it may have lost them.
        hs.own = [m for m in hs.own if _round_of(m) >= round - 1]
        if round > 0:
            # Leaving a failed round: repeat what we signed in it at once, so nodes that
            # lost those votes follow us into the new round instead of timing out alone.
            self._outbox.extend(m for m in hs.own if _round_of(m) == round - 1)
        hs.rebroadcasts = 0
        hs.round_started.setdefault(round, now)
        self._forget_old_rounds(round)
        h = self._committed + 1
        self._timers.pop("prevote", None)
        self._timers.pop("precommit", None)
        if self.proposer(h, round) == self.key and self.is_validator:
            self._propose_round(now, round)
        self._set_timer(now, "propose", self._timeout("propose", round), round)
        self._set_timer(now, "rebroadcast", self._timeout("rebroadcast", round), round)

    def _propose_round(self, now: float, round: int) -> None:
        hs = self._hs
        if hs.valid_block is not None:
            block, pol = hs.valid_block, hs.valid_round
        else:
            block, pol = self._build_block(now), -1
        self._propose(block, round, pol)
        if pol >= 0:  # re-gossip the proof of lock so every node can accept the block
            pol_votes = self._vote_set(pol, Step.PREVOTE).votes_for(block.hash)
            self._outbox.extend(pol_votes)
            hs.own.extend(pol_votes)

    def _app_awaits_heights(self) -> bool:
        """Would an empty block at some later height change the state (a pending deadline)?

        Probes heights h, h+1, h+3, ... h+2^16-1 with ``end_block`` on the committed state."""
        state = self._app_state
        try:
            ref = self.app.state_hash(state)
            for k in range(17):
                ctx = BlockContext(self._committed + (1 << k), self.key, self.validators)
                if self.app.state_hash(self.app.end_block(state, ctx)) != ref:
                    return True
        except Exception:  # a probe of app code must never stop the engine
            return False
        return False

    def _forget_old_rounds(self, round: int) -> None:
        """Bound per-height memory in long partitions: drop rounds no rule can still use."""
        hs = self._hs
        keep = {hs.valid_round, hs.locked_round}
        horizon = round - self.config.keep_rounds
        for key in [k for k in hs.votes if k[0] < horizon and k[0] not in keep]:
            del hs.votes[key]
        for r in [r for r in hs.proposals if r < horizon and r not in keep]:
            del hs.proposals[r]
        live = {p.block.hash for p in hs.proposals.values()}
        if hs.valid_block is not None:
            live.add(hs.valid_block.hash)
        for bh in [bh for bh in hs.blocks if bh not in live]:
            del hs.blocks[bh]
        for r in [r for r in hs.round_started if r < horizon]:
            del hs.round_started[r]
        for r in [r for r in hs.compacts if r < horizon]:
            del hs.compacts[r]
        hs.fetched = {r for r in hs.fetched if r >= horizon}

    def _timeout(self, kind: str, round: int) -> float:
        """Round timeouts: adapted to the measured commit latency, growing per round."""
        cfg = self.config
        delay = self.vote_delay
        if delay is None:
            propose, vote = cfg.timeout_propose, cfg.timeout_vote
        else:  # a round is three message delays: proposal, prevotes, precommits
            propose = min(cfg.timeout_propose * 4, cfg.latency_factor * 3 * delay)
            vote = min(cfg.timeout_vote * 4, cfg.latency_factor * delay)
        base = {"propose": propose, "rebroadcast": cfg.rebroadcast_factor * propose}.get(kind, vote)
        t = max(cfg.timeout_min, base) * cfg.timeout_growth**round
        return float(min(cfg.timeout_max, t))

    def _set_timer(self, now: float, name: str, delay: float, round: int) -> None:
        self._timers[name] = (now + delay, self._committed + 1, round)

    def _on_timeout(self, now: float, name: str, round: int) -> None:
        hs = self._hs
        if round != hs.round:
            return
        self.stats[f"timeout_{name}"] += 1
        if name == "propose" and hs.phase is Phase.PROPOSE:
            self._prevote(now, NIL)
        elif name == "prevote" and hs.phase is Phase.PREVOTE:
            self._precommit(now, NIL)
        elif name == "precommit":
            self._start_round(now, round + 1)
        elif name == "idle" and hs.phase is Phase.IDLE:
            self.stats["idle_blocks"] += 1
            self._start_round(now, 0)
        elif name == "held" and hs.phase is Phase.IDLE:
            self._wake_for_work(now)
        elif name == "fetch":
            self._fetch_proposals()
        elif name == "catch_up":
            self._request_catch_up(now)
        elif name == "rebroadcast":
            self._outbox.extend(hs.own)
            if hs.valid_block is not None and hs.valid_round >= 0:
                pol = self._vote_set(hs.valid_round, Step.PREVOTE)
                self._outbox.extend(
                    v for v in pol.votes_for(hs.valid_block.hash) if v not in hs.own
                )
            self.stats["rebroadcasts"] += 1
            if self._hint_height > self._committed + 1:
                self._request_catch_up(now)
            stuck = hs.rebroadcasts >= self.config.rebroadcast_backoff
            hs.rebroadcasts = min(hs.rebroadcasts + 1, self.config.rebroadcast_backoff)
            delay = self._timeout("rebroadcast", round + hs.rebroadcasts)  # backs off, capped
            self._set_timer(now, "rebroadcast", delay, round)
            if stuck and self._follow_when_stuck(now):
                return

    def _follow_when_stuck(self, now: float) -> bool:
        """Stuck in a round (re-broadcasts backed off to the cap) without a quorum of
        precommits of any kind in it, while a validator votes in a later round: follow it there. The f+1
        rule cannot fire when fewer than f+1 are up there — e.g. a node that lost its signer
        state skips the rounds it may have signed in while another validator is down —
        and without a precommit quorum no timeout moves this round on. Entering a later round is
        always safe (locks and quorums decide); a liar can only move a stalled node."""
        hs = self._hs
        rnd = hs.round
        if self._vote_set(rnd, Step.PRECOMMIT).has_quorum_any():
            return False  # the precommit timeout moves this round on
        later = [r for (r, _), vs in hs.votes.items() if r > rnd and vs.votes]
        if not later:
            return False
        self.stats["round_followed_when_stuck"] += 1
        self._start_round(now, max(later))
        return True

    def _progress(self, now: float) -> None:
        """Apply the algorithm's upon-rules until nothing changes."""
        if not self._started:
            return
        if self._catch_up is not None:
            self._check_catch_up(now)
        for _ in range(64):
            if not self._step_rules(now):
                return

    def _step_rules(self, now: float) -> bool:
        hs = self._hs
        if self._try_commit(now):
            return True
        if hs.phase is Phase.IDLE:
            return False
        # f+1 validators in a later round: skip ahead (liveness).
        for r in sorted({r for (r, _) in hs.votes if r > hs.round}, reverse=True):
            voters = set(self._vote_set(r, Step.PREVOTE).votes)
            voters |= set(self._vote_set(r, Step.PRECOMMIT).votes)
            if len(voters) >= self.f + 1:
                self._start_round(now, r)
                return True
        rnd = hs.round
        prop = hs.proposals.get(rnd)
        prevotes = self._vote_set(rnd, Step.PREVOTE)
        precommits = self._vote_set(rnd, Step.PRECOMMIT)
        if hs.phase is Phase.PROPOSE and prop is not None:
            block = prop.block
            if prop.pol_round == -1:
                ok = self._valid(block) and (hs.locked_round == -1 or hs.locked_hash == block.hash)
                self._prevote(now, block.hash if ok else NIL)
                return True
            if prop.pol_round < rnd:
                pol_votes = self._vote_set(prop.pol_round, Step.PREVOTE)
                if pol_votes.count(block.hash) >= self.quorum:
                    ok = self._valid(block) and (
                        hs.locked_round <= prop.pol_round or hs.locked_hash == block.hash
                    )
                    self._prevote(now, block.hash if ok else NIL)
                    return True
        if (
            hs.phase is Phase.PREVOTE
            and prevotes.has_quorum_any()
            and rnd not in hs.prevote_timer_set
        ):
            hs.prevote_timer_set.add(rnd)
            self._set_timer(now, "prevote", self._timeout("prevote", rnd), rnd)
        if (
            hs.phase >= Phase.PREVOTE
            and prop is not None
            and rnd not in hs.locked_on_quorum
            and prevotes.count(prop.block.hash) >= self.quorum
            and self._valid(prop.block)
        ):
            hs.locked_on_quorum.add(rnd)
            hs.valid_block, hs.valid_round = prop.block, rnd
            if hs.phase is Phase.PREVOTE:
                hs.locked_hash, hs.locked_round = prop.block.hash, rnd
                # The proposal and its proof of lock go to disk with the precommit, so a
                # restarted node can still re-propose and justify what it is locked on.
                proof = _encode_lock_proof(prop, prevotes.votes_for(prop.block.hash))
                self._precommit(now, prop.block.hash, proof)
            return True
        if hs.phase is Phase.PREVOTE and prevotes.has_quorum_nil():
            self._precommit(now, NIL)
            return True
        if precommits.has_quorum_nil():  # nothing can be decided in this round: move on
            self._start_round(now, rnd + 1)
            return True
        if precommits.has_quorum_any() and rnd not in hs.precommit_timer_set:
            hs.precommit_timer_set.add(rnd)
            self._set_timer(now, "precommit", self._timeout("precommit", rnd), rnd)
        return False

    def _try_commit(self, now: float) -> bool:
        hs = self._hs
        for (rnd, step), vs in list(hs.votes.items()):
            if step is not Step.PRECOMMIT:
                continue
            block_hash = vs.quorum_block()
            if block_hash is None:
                continue
            block = hs.blocks.get(block_hash)
            if block is None:
                # Decided without us seeing the proposal: fetch the block.
                hs.need_block = True
                self._hint_height = max(self._hint_height, self._committed + 2)
                self._request_catch_up(now)
                continue
            executed = self._execute(block)
            if executed is None:
                self.stats["quorum_for_invalid_block"] += 1
                continue
            cert = vs.certificate(block_hash)
            if cert is None:  # pragma: no cover - quorum_block implies a certificate
                continue
            self._commit(now, block, cert, executed, rnd)
            return True
        return False

    def _valid(self, block: Block) -> bool:
        """Would we vote for ``block``: it executes, and every removal of a silent
        validator in it is one we see as silent too (a subjective check, for our votes
        only: a committed block is executed without it)."""
        if self._execute(block) is None:
            return False
        adds = 0
        for op in block.ops:
            if not is_set_op(op.body):
                continue
            if not self._acceptable_set_op(op.body, adds):
                self.stats["vote_refused_not_silent"] += 1
                return False
            adds += _is_add(op.body)
        return True

    def _acceptable_set_op(self, body: bytes, adds: int = 0) -> bool:
        """False for the removal of a silent validator that we heard recently (half the
        silence threshold: views differ by a few message delays), and for an addition
        while a validator is on probation or ``adds`` additions came before it in the
        block (see ``probation_heights``)."""
        try:
            change = decode_set_op(body)
        except SetOpError:
            return True  # invalid anyway: execution refuses it
        if isinstance(change, AddValidator):
            if self.config.probation_heights > 0 and (self._probation or adds):
                self.stats["set_op_deferred_probation"] += 1
                return False
            return True
        if change.reason is not RemoveReason.SILENT:
            return True
        limit = self._silence_limit(change.key)
        return limit > 0 and self.silent_heights(change.key) >= max(1, limit // 2)

    def _silence_limit(self, key: bytes) -> int:
        """Heights of silence after which ``key`` is removed (0: never)."""
        cfg = self.config
        if key in self._probation and cfg.probation_heights > 0:
            return cfg.probation_heights
        return cfg.silence_heights

    # -- signing -----------------------------------------------------------------------

    def _may_sign(
        self, round: int, step: Step, encoded: bytes, lock_proof: bytes | None = None
    ) -> bool:
        """The double-sign guard: strictly after the last signature, or identical to it;
        nothing while catching up first. Durable (signer file, then the store's copy of
        the message and lock) before it returns True."""
        if not self.is_validator:
            return False
        if self._catch_up is not None:
            self.stats["sign_refused_catching_up"] += 1
            return False
        key = (self._committed + 1, round, int(step))
        digest = _digest(encoded)
        if self._signed_floor is not None and (
            key < self._signed_floor
            or (key == self._signed_floor and digest != self._signed_digest)
        ):
            self.stats["sign_refused"] += 1
            return False
        if key != self._signed_floor:
            hs = self._hs
            self._journal.signed(
                SignedAt(*key, digest), encoded, hs.locked_round, hs.locked_hash, lock_proof
            )
        self._signed_floor, self._signed_digest = key, digest
        return True

    # -- the signer state after a loss ---------------------------------------------------

    def _raise_floor(self, key: tuple[int, int, int], digest: bytes) -> None:
        if self._signed_floor is not None and key <= self._signed_floor:
            return
        self._journal.floor_raised(SignedAt(*key, digest))
        self._signed_floor, self._signed_digest = key, digest

    def _saw_own(self, height: int, round: int, step: int, digest: bytes) -> None:
        """A verified signature of this key: above our floor it is one we forgot (a lost
        or restored signer state, or the key running elsewhere): never sign below it, and
        catch up first if we trusted the floor."""
        key = (height, round, step)
        if self._signed_floor is not None and key <= self._signed_floor:
            return
        self.stats["own_signature_above_floor"] += 1
        if self._catch_up is None and self._journal.has_guard:
            self._enter_catch_up(
                f"a signature of this key at height {height} round {round} step {step} is"
                f" above its signer state {self._signed_floor}"
            )
        self._raise_floor(key, digest)

    def _enter_catch_up(self, reason: str) -> None:
        if self._catch_up is not None:
            return
        self._catch_up = reason
        self._cu_started = self._now if self._started else None
        self._cu_quiet_since = None
        self._cu_voters.clear()
        self._cu_round = -1
        self.stats["signer_catch_up"] += 1
        self._events.append(SignerNotice(True, reason, self._signed_floor))

    @property
    def catching_up_signer(self) -> str | None:
        """Why this engine does not sign yet (None: it signs)."""
        return self._catch_up

    def note_presence(self, now: float, validator: bytes, height: int) -> None:
        """An authenticated validator announced ``height`` (the transport vouches for the
        sender): while catching up, it tells who is there even when nobody votes."""
        if validator in self._vindex and validator != self.key:
            self._present[validator] = height
            if self._catch_up is not None:
                self._now = now
                self._progress(now)

    def _check_catch_up(self, now: float) -> None:
        """Leave catch-up-first mode once this node is at the others' height and has
        watched it long enough; the new floor is above every round seen there."""
        if self._cu_started is None:
            self._cu_started = now
        h = self._committed + 1
        self._cu_due = None
        if self._hint_height > h or self._hs.need_block:
            return  # behind: the catch-up answers come first
        cfg = self.config
        need = self.quorum - 1
        voters = {v for v in self._cu_voters if v != self.key}
        if len(voters) >= need:
            due = self._cu_started + cfg.signer_catch_up_wait
        else:
            present = voters | {
                v for v, x in self._present.items() if x >= h - 1 and v in self._vindex
            }
            if len(present) < need:
                return
            if self._cu_quiet_since is None:
                self._cu_quiet_since = now
            due = max(
                self._cu_started + cfg.signer_catch_up_wait,
                self._cu_quiet_since + cfg.signer_catch_up_idle,
            )
        if now < due:
            self._cu_due = due
            return
        floor = (h, self._cu_round + cfg.signer_catch_up_rounds, int(Step.PRECOMMIT))
        self._raise_floor(floor, UNKNOWN)
        self._catch_up = None
        self.stats["signer_caught_up"] += 1
        top = self._signed_floor
        self._events.append(
            SignerNotice(
                False, f"signs again above {top} (highest round seen {self._cu_round})", top
            )
        )
        hs = self._hs
        if hs.phase is not Phase.IDLE and top is not None and top[0] == h and hs.round <= top[1]:
            self._start_round(now, top[1] + 1)

    def _propose(self, block: Block, round: int, pol_round: int) -> None:
        h = self._committed + 1
        pre = proposal_signing_bytes(self.session_id, h, round, pol_round, block.hash)
        proposal = Proposal(h, round, pol_round, block, self.signer.sign(pre))
        if not self._may_sign(round, Step.PROPOSAL, proposal.encode()):
            return
        self._remember(self.key, proposal.signature, pre)
        self._hs.proposals.setdefault(round, proposal)
        self._hs.blocks[block.hash] = block
        self._hs.own.append(proposal)
        self._outbox.append(proposal)
        self.stats["proposed"] += 1

    def _vote(
        self, now: float, step: Step, block_hash: bytes, lock_proof: bytes | None = None
    ) -> None:
        hs = self._hs
        vote = Vote.create(
            self.signer.sign,
            self.key,
            self.session_id,
            step,
            self._committed + 1,
            hs.round,
            block_hash,
        )
        if not self._may_sign(hs.round, step, vote.encode(), lock_proof):
            return
        self._remember(self.key, vote.signature, vote.signing_bytes(self.session_id))
        vs = self._vote_set(hs.round, step)
        vs.add(vote)
        if vs.total < vs.threshold:
            hs.vote_sent.setdefault((hs.round, step), now)
        hs.own.append(vote)
        self._outbox.append(vote)

    def _prevote(self, now: float, block_hash: bytes) -> None:
        self._hs.phase = Phase.PREVOTE
        self._vote(now, Step.PREVOTE, block_hash)

    def _precommit(self, now: float, block_hash: bytes, lock_proof: bytes | None = None) -> None:
        self._hs.phase = Phase.PRECOMMIT
        self._vote(now, Step.PRECOMMIT, block_hash, lock_proof)

    def _remember(self, key: bytes, signature: bytes, message: bytes) -> None:
        """Seed the verification cache with a signature we made ourselves."""
        self.cache.remember(key, signature, message)

    def _verify_vote(self, vote: Vote) -> bool:
        return self.cache.verify(
            vote.validator, vote.signature, vote.signing_bytes(self.session_id)
        )

    def _resume(self, now: float) -> None:
        """After a restart mid-height: back to the round, step and lock we last signed in,
        and send this height's signed messages again (they may never have left)."""
        rec = self._journal.last_signature()
        if rec is None or rec.height != self._committed + 1:
            return
        hs = self._hs
        if rec.lock_round >= 0:
            hs.locked_round, hs.locked_hash = rec.lock_round, rec.lock_hash
            try:
                proposal, pol = _decode_lock_proof(rec.lock_proof, self.config.limits)
            except MessageError:
                self.stats["resume_no_lock_proof"] += 1
            else:
                if proposal.block.hash == rec.lock_hash and proposal.round == rec.lock_round:
                    hs.proposals[proposal.round] = proposal
                    hs.blocks[proposal.block.hash] = proposal.block
                    hs.valid_block, hs.valid_round = proposal.block, proposal.round
                    for vote in pol:
                        self._vote_set(proposal.round, Step.PREVOTE).add(vote)
        self._start_round(now, rec.round)
        for rnd, step, raw in self._journal.signed_messages(rec.height):
            msg: Message
            try:
                if step == Step.PROPOSAL:
                    msg = Proposal.decode(raw, self.config.limits)
                    hs.proposals.setdefault(rnd, msg)
                    hs.blocks[msg.block.hash] = msg.block
                else:
                    msg = Vote.decode(raw)
                    self._vote_set(rnd, msg.step).add(msg)
            except MessageError:
                self.stats["resume_bad_record"] += 1
                continue
            if rnd >= rec.round - 1 and msg not in hs.own:
                hs.own.append(msg)
                self._outbox.append(msg)
        if rec.step == Step.PREVOTE:
            hs.phase = Phase.PREVOTE
        elif rec.step == Step.PRECOMMIT:
            hs.phase = Phase.PRECOMMIT
        self.stats["resumed"] += 1

    # -- execution ---------------------------------------------------------------------

    def _digests(
        self, app_state: S, nonces: dict[bytes, int], banned: frozenset[bytes], sset: SetState
    ) -> tuple[bytes, bytes]:
        """(rest digest, chain state hash) of a replicated state."""
        app_hash = self.app.state_hash(app_state)
        rest = rest_digest(nonces, banned, app_hash, sset.join_nonces)
        return rest, state_hash_of(sset.keys, rest)

    def _ctx(self, proposer: bytes) -> BlockContext:
        return BlockContext(self._committed + 1, proposer, self.validators)

    def _execute(self, block: Block) -> _Executed | None:
        """Validate and execute ``block`` on the committed state (cached per block hash)."""
        hs = self._hs
        bh = block.hash
        if bh in hs.executed:
            return hs.executed[bh]
        result, reason = self._run_block(block)
        if result is None:
            self.stats[f"invalid_block_{reason}"] += 1
        if len(hs.executed) < 64:
            hs.executed[bh] = result
        return result

    def _run_block(self, block: Block) -> tuple[_Executed | None, str]:
        hdr = block.header
        cfg = self.config
        if hdr.height != self._committed + 1:
            return None, "height"
        if hdr.prev_hash != self._last_hash:
            return None, "prev_hash"
        if hdr.proposer not in self._vindex:
            return None, "proposer"
        if len(block.ops) > cfg.max_block_ops or len(block.evidence) > cfg.max_block_evidence:
            return None, "too_large"
        if sum(len(op.encode()) for op in block.ops) > cfg.max_block_bytes:
            return None, "too_large"
        if not block.body_matches():
            return None, "body_hash"
        ctx = self._ctx(hdr.proposer)
        state = self._app_state
        nonces = dict(self._nonces)
        banned = set(self._banned)
        sset = self._set_state
        try:
            for ev in block.evidence:
                if ev.offender in banned or ev.key in self._committed_evidence:
                    return None, "evidence_duplicate"
                if not (
                    ev.is_consistent()
                    and ev.offender in self.validators_at(ev.vote_a.height)
                    and self._verify_vote(ev.vote_a)
                    and self._verify_vote(ev.vote_b)
                ):
                    return None, "evidence_invalid"
                state = self.app.ban(state, ev.offender, ctx)
                banned.add(ev.offender)
            for op in block.ops:
                if op.submitter not in self._vindex:
                    return None, "op_not_validator"
                if op.nonce <= nonces.get(op.submitter, 0):
                    return None, "op_stale_nonce"
                if not self.cache.verify(
                    op.submitter, op.signature, op.signing_bytes(self.session_id)
                ):
                    return None, "op_bad_signature"
                if is_set_op(op.body):
                    state, sset = self._apply_set_op(state, sset, op, ctx)
                else:
                    self.app.check(state, op.submitter, op.body, ctx)
                    state = self.app.apply(state, op.submitter, op.body, ctx)
                nonces[op.submitter] = op.nonce
            state = self.app.end_block(state, ctx)
        except InvalidOperation:
            return None, "op_rejected"
        except Exception:  # app code fed bytes from the air must not crash us
            return None, "app_error"
        frozen = frozenset(banned)
        rest, state_hash = self._digests(state, nonces, frozen, sset)
        if state_hash != hdr.state_hash:
            return None, "state_hash"
        return _Executed(state, nonces, frozen, state_hash, sset, rest), ""

    def _apply_set_op(
        self, state: S, sset: SetState, op: Operation, ctx: BlockContext
    ) -> tuple[S, SetState]:
        """A set change on (app state, set state); raises InvalidOperation when refused.

        The application hears of it through its optional ``add_validator(state, key,
        buy_in, ctx)`` / ``remove_validator(state, key, ctx)`` (a table seats and unseats
        players; it may refuse with InvalidOperation, e.g. a full table)."""
        try:
            change = decode_set_op(op.body)
        except SetOpError as exc:
            raise InvalidOperation("malformed_set_op", str(exc)) from None
        new = apply_set_op(
            sset,
            op.submitter,
            change,
            self.session_id,
            self.cache.verify,
            self.config.max_validators,
        )
        if isinstance(change, AddValidator):
            add = getattr(self.app, "add_validator", None)
            if add is not None:
                state = add(state, change.request.key, change.request.buy_in, ctx)
        else:
            remove = getattr(self.app, "remove_validator", None)
            if remove is not None:
                state = remove(state, change.key, ctx)
        return state, new

    def _build_block(self, now: float) -> Block:
        """Batch valid mempool operations (and pending evidence) into a new block; each
        submitter's ops in nonce order, never past a gap that is still held."""
        cfg = self.config
        proposer = self.key
        ctx = self._ctx(proposer)
        state = self._app_state
        nonces = dict(self._nonces)
        banned = set(self._banned)
        sset = self._set_state
        evidence: list[Evidence] = []
        for ev in list(self._pending_evidence.values()):
            if len(evidence) >= cfg.max_block_evidence:
                break
            if ev.offender in banned:
                continue
            try:
                state = self.app.ban(state, ev.offender, ctx)
            except (InvalidOperation, ValueError):
                continue
            banned.add(ev.offender)
            evidence.append(ev)
        ops: list[Operation] = []
        size = 0
        adds = 0
        for op_id, op in self._ready_ops(now):
            n = len(op.encode())
            if len(ops) >= cfg.max_block_ops or size + n > cfg.max_block_bytes:
                break
            if op.nonce <= nonces.get(op.submitter, 0) or op.submitter not in self._vindex:
                continue
            new_set = sset
            try:
                if is_set_op(op.body):
                    if not self._acceptable_set_op(op.body, adds):
                        self.stats["op_build_deferred_not_silent"] += 1
                        continue
                    new_state, new_set = self._apply_set_op(state, sset, op, ctx)
                    adds += _is_add(op.body)
                else:
                    self.app.check(state, op.submitter, op.body, ctx)
                    new_state = self.app.apply(state, op.submitter, op.body, ctx)
            except (InvalidOperation, ValueError, TypeError, KeyError, IndexError) as exc:
                self.mempool.failures[op_id] += 1
                reason = exc.reason if isinstance(exc, InvalidOperation) else "app_error"
                self.stats[f"op_build_failed_{reason}"] += 1
                self.mempool.fail_reason[op_id] = reason
                if self.mempool.failures[op_id] >= cfg.max_op_failures:
                    self.mempool.remove(op_id)
                    self.mempool.skip(op.submitter, op.nonce)
                    self._events.append(OperationRejected(op_id, op.submitter, reason))
                continue
            state, sset = new_state, new_set
            ops.append(op)
            size += n
            nonces[op.submitter] = op.nonce
        state = self.app.end_block(state, ctx)
        frozen = frozenset(banned)
        rest, state_hash = self._digests(state, nonces, frozen, sset)
        header = BlockHeader(
            self._committed + 1, proposer, self._last_hash, state_hash, body_hash(ops, evidence)
        )
        block = Block(header, tuple(ops), tuple(evidence))
        self._hs.executed[block.hash] = _Executed(state, nonces, frozen, state_hash, sset, rest)
        return block

    # -- commit ------------------------------------------------------------------------

    def _commit(
        self,
        now: float,
        block: Block,
        cert: CommitCertificate,
        executed: _Executed,
        round: int | None = None,
    ) -> None:
        h = block.height
        self._journal.block(h, block.encode(), cert.encode())  # durable before anyone acts on it
        # Only the deciding round's delays adapt the timeouts: a failed round's are inflated
        # by the timeouts themselves and would feed back into ever longer rounds.
        if round is not None:
            self._vote_delays.extend(self._hs.delay_samples.get(round, ()))
        started = None if round is None else self._hs.round_started.get(round)
        if started is not None:
            sample = max(0.0, now - started)
            a = self.config.latency_alpha
            prev = self.commit_latency
            self.commit_latency = sample if prev is None else (1 - a) * prev + a * sample
        self._note_set_change(block.header, cert, executed)
        self._adopt(
            block.header,
            cert,
            executed.app_state,
            executed.nonces,
            executed.banned,
            executed.state_hash,
            executed.set_state,
        )
        self._recent[h] = (block, cert)
        self._commit_times[h] = now
        while len(self._recent) > self.config.recent_blocks:
            old, _ = self._recent.popitem(last=False)
            self._commit_times.pop(old, None)
        for ev in block.evidence:
            self._committed_evidence.add(ev.key)
        self.stats["committed"] += 1
        self.stats["committed_ops"] += len(block.ops)
        self._events.append(
            Committed(h, cert.round if round is None else round, block, cert, block.ops)
        )
        for op in block.ops:
            self.mempool.remove(op.op_id)
        self._maybe_snapshot()
        self._after_commit(now, block.ops)

    def _note_set_change(
        self, header: BlockHeader, cert: CommitCertificate, executed: _Executed
    ) -> None:
        """Record the proof of a set change the block ``header`` commits (before adopting)."""
        keys = executed.set_state.keys
        if keys == self.validators:
            return
        self._history.record(SetLink(header, cert, keys, executed.rest))
        added = tuple(k for k in keys if k not in self._vindex)
        removed = tuple(k for k in self.validators if k not in keys)
        if self.config.probation_heights > 0:
            for k in added:
                if k != self.key:  # our own signing we know
                    self._probation[k] = header.height + 1
        self.stats["validator_set_changes"] += 1
        self.stats["validators_added"] += len(added)
        self.stats["validators_removed"] += len(removed)
        self._events.append(ValidatorsChanged(header.height, keys, added, removed))

    def _adopt(
        self,
        header: BlockHeader,
        cert: CommitCertificate,
        app_state: S,
        nonces: dict[bytes, int],
        banned: frozenset[bytes],
        state_hash: bytes,
        set_state: SetState,
    ) -> None:
        me = self._vindex.get(self.key)
        if me is not None and me in cert.signers:
            for vote in cert.precommits(self.validators):
                if vote.validator == self.key:
                    self._saw_own(
                        vote.height, vote.round, int(Step.PRECOMMIT), _digest(vote.encode())
                    )
        self._set_state = set_state
        if set_state.keys != self.validators:
            self._set_validators(set_state.keys, header.height + 1)
            self._ahead = {v: x for v, x in self._ahead.items() if v in self._vindex}
        self._committed = header.height
        self._app_state = app_state
        self._nonces = nonces
        self._banned = banned
        self._state_hash = state_hash
        self._last_hash = header.hash
        self._last_header = header
        self._last_cert = cert
        for key in [k for k in self._pending_evidence if k[0] in banned]:
            del self._pending_evidence[key]

    def _after_commit(self, now: float, ops: Sequence[Operation] = ()) -> None:
        """Purge what the new state (after a block of ``ops``) made stale, re-issue our own
        ops whose nonce an op of ours in the block took, then start the next height."""
        h = self._committed
        taken = {op.nonce for op in ops if op.submitter == self.key}
        reissue: list[tuple[bytes, Operation]] = []
        for op_id, op in list(self.mempool.ops.items()):
            if op.submitter == self.key and op.nonce in taken:
                # Signed again after a restart under a nonce an op we signed before it had
                # (the committed chain we restarted from did not show it yet). This op can
                # never commit now, so sending its body again cannot apply it twice.
                self.mempool.remove(op_id)
                reissue.append((op_id, op))
            elif op.submitter not in self._vindex:
                self.mempool.remove(op_id)  # removed from the set: its ops cannot commit
                self._events.append(OperationRejected(op_id, op.submitter, "not_validator"))
            elif op.nonce <= self._nonces.get(op.submitter, 0):
                # an op a build found invalid and a later nonce overtook: report why it was
                # left out, not the nonce it lost
                reason = self.mempool.fail_reason.get(op_id, "stale_nonce")
                self.mempool.remove(op_id)
                self._events.append(OperationRejected(op_id, op.submitter, reason))
            elif h - self.mempool.added_at.get(op_id, h) > self.config.mempool_ttl_heights:
                self.mempool.remove(op_id)
                self.mempool.skip(op.submitter, op.nonce)
                self._events.append(OperationRejected(op_id, op.submitter, "expired"))
        for old_id, op in sorted(reissue, key=lambda it: it[1].nonce):
            new_id, refused = self._sign_own(now, op.body)
            if refused is None:
                self.stats["ops_reissued"] += 1
                self._events.append(OperationReissued(old_id, new_id))
            else:
                self._events.append(OperationRejected(old_id, self.key, refused))
        self.mempool.forget_skipped(self.committed_nonce)
        if self._join is not None and self.key in self._vindex:
            self._join, self._join_due = None, None  # we are in
            self.stats["joined"] += 1
        self._sponsor(now)
        self._ahead = {v: x for v, x in self._ahead.items() if x > h + 1}
        self._future = deque(m for m in self._future if _height_of(m) > h)
        for old in [x for x in self._future_commits if x <= h]:
            del self._future_commits[old]
        if self._started:
            self._enter_height(now)
        following = self._future_commits.pop(h + 1, None)
        if following is not None:  # catching up through a run of buffered commits
            self._on_commit_message(now, following)

    def _install_history(
        self, snap: Snapshot, cert: CommitCertificate, rest: bytes, signers: Sequence[bytes]
    ) -> None:
        """Take the snapshot's set history, plus the change its own block made, if any."""
        self._history.replace(snap.links)
        if tuple(sorted(signers)) != snap.keys:
            self._history.record(SetLink(snap.header, cert, snap.keys, rest))

    def _maybe_snapshot(self) -> None:
        every = self.config.snapshot_interval
        if not self._journal.durable or every <= 0 or self._committed % every:
            return
        snap = self.make_snapshot()
        if snap is not None:
            # blocks far behind a snapshot are only kept to help laggards catch up
            below = self._committed - self.config.keep_blocks
            self._journal.snapshot(self._committed, snap[0], snap[1].encode(), below)

    # -- recovery ----------------------------------------------------------------------

    def _recover(self) -> None:
        """Resume from the newest stored snapshot plus the blocks stored after it."""
        journal = self._journal
        row = journal.latest_snapshot()
        if row is not None:
            height, blob, cert_bytes = row
            try:
                snap = Snapshot.decompress(blob, self.config.limits.max_snapshot_bytes)
                cert = CommitCertificate.decode(cert_bytes)
                app_state = self.app.restore(snap.app_state)
            except (MessageError, ValueError):
                self.stats["recover_bad_snapshot"] += 1
            else:
                nonces = dict(snap.nonces)
                sset = SetState(snap.keys, snap.join_nonces)
                rest, sh = self._digests(app_state, nonces, snap.banned, sset)
                signers = verify_links(
                    self.genesis_validators,
                    snap.links,
                    self.session_id,
                    self.cache.verify,
                    snap.height,
                )
                if (
                    sh == snap.header.state_hash
                    and cert.block_hash == snap.header.hash
                    and snap.keys
                    and signers is not None
                ):
                    self._install_history(snap, cert, rest, signers)
                    self._adopt(snap.header, cert, app_state, nonces, snap.banned, sh, sset)
                else:
                    self.stats["recover_bad_snapshot"] += 1
        for height, block_bytes, cert_bytes in journal.blocks_after(self._committed):
            if height != self._committed + 1:
                break
            try:
                block = Block.decode(block_bytes, self.config.limits)
                cert = CommitCertificate.decode(cert_bytes)
            except MessageError:
                self.stats["recover_bad_block"] += 1
                break
            self._hs = _Height()
            executed = self._execute(block)
            if executed is None or cert.block_hash != block.hash:
                self.stats["recover_bad_block"] += 1
                break
            self._note_set_change(block.header, cert, executed)
            self._adopt(
                block.header,
                cert,
                executed.app_state,
                executed.nonces,
                executed.banned,
                executed.state_hash,
                executed.set_state,
            )
            self._recent[height] = (block, cert)
            for ev in block.evidence:
                self._committed_evidence.add(ev.key)
            self.stats["recovered_blocks"] += 1
        while len(self._recent) > self.config.recent_blocks:
            self._recent.popitem(last=False)
        self._events = [e for e in self._events if not isinstance(e, ValidatorsChanged)]
        self._heard = {v: self._committed for v in self.validators}  # grace after a restart
        self._probation.clear()  # nobody we recovered is on probation: the full grace
        self._hs = _Height()
        rec = journal.last_signature()
        if rec is not None:
            key = (rec.height, rec.round, rec.step)
            if not journal.has_guard:  # no signer file: the store's record is the floor
                self._signed_floor, self._signed_digest = key, _digest(rec.message)
            elif self._signed_floor is None or key > self._signed_floor:
                self._saw_own(*key, _digest(rec.message))  # the file is older than the DB
        # above every op we signed, committed or not: the chain we restart from may not show
        # the last ones yet, and an op reusing a nonce is dropped as stale where it is known
        self._next_nonce = max(self.committed_nonce(self.key), journal.last_nonce()) + 1


def _encode_lock_proof(proposal: Proposal, prevotes: Sequence[Vote]) -> bytes:
    """A proposal and the prevotes that locked it: lp(4) proposal, count(2), votes."""
    enc = proposal.encode()
    parts = [len(enc).to_bytes(4, "big"), enc, len(prevotes).to_bytes(2, "big")]
    parts.extend(v.encode() for v in prevotes)
    return b"".join(parts)


def _decode_lock_proof(data: bytes, limits: MessageLimits) -> tuple[Proposal, list[Vote]]:
    if len(data) < 6:
        raise MessageError("no lock proof")
    n = int.from_bytes(data[:4], "big")
    proposal = Proposal.decode(data[4 : 4 + n], limits)
    pos = 4 + n
    count = int.from_bytes(data[pos : pos + 2], "big")
    pos += 2
    votes = [Vote.decode(data[pos + i * VOTE_LEN : pos + (i + 1) * VOTE_LEN]) for i in range(count)]
    if pos + count * VOTE_LEN != len(data):
        raise MessageError("lock proof length")
    return proposal, votes


def _is_add(body: bytes) -> int:
    """1 when ``body`` is a well-formed AddValidator, else 0."""
    try:
        return int(isinstance(decode_set_op(body), AddValidator))
    except SetOpError:
        return 0


def _digest(encoded: bytes) -> bytes:
    return hashlib.sha256(encoded).digest()


def _round_of(msg: Message) -> int:
    if isinstance(msg, Vote | Proposal | CompactProposal):
        return msg.round
    return -1


def _height_of(msg: Message) -> int:
    if isinstance(msg, Vote | Proposal | CompactProposal):
        return msg.height
    return 0


_ROUND_MASK = (1 << 24) - 1


def _round_key(height: int, round: int) -> int:
    """(height, round) as one response key (rounds above 2^24 share keys: harmless)."""
    return (height << 24) | (round & _ROUND_MASK)
