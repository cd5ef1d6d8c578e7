"""What comes in, for the bridge core: batches split and expanded, payloads deduplicated
and queued, the inboxes drained round-robin, each message checked before its engine sees
it. Sans-IO: functions over the :class:`~.actions.Core` they serve, explicit ``now``.

A neighbour's gossip batch is split into its items; a VoteSet, OperationRef or ProposalRef
is expanded against the session's validator set and known blocks, and goes in decoded
(never decoded again; a VoteSet's voters are indices into the set of its height); a short
VoteSet whose block is not known yet, or one of a height whose set we do not know yet, is
held (``unresolved_capacity``, ``unresolved_ttl``) and expanded when the engine learns more.
Every refusal is counted by reason (``core.drop``).
"""

from __future__ import annotations

from collections import deque

from ..wire.messages import (
    ENVELOPE_PREFIX,
    NEIGHBOUR_VERSION,
    SESSION_TAG_LEN,
    CertificateRequest,
    Commit,
    CommitRequest,
    CompactProposal,
    JoinRequest,
    Kind,
    Message,
    MessageError,
    Proposal,
    ProposalRequest,
    SnapshotRequest,
    SnapshotResponse,
    StateAnnounce,
    UnresolvedBlock,
    Vote,
    decode_message,
    encode_message,
    expand_operation_ref,
    expand_proposal_ref,
    expand_vote_set,
    from_neighbour,
    neighbour_tag,
    peek_session,
    split_batch,
)
from . import catchup
from .actions import Arrival, Core
from .inbox import Inbound, dedup_key
from .session import Session

_REF_KINDS = (Kind.VOTE_SET, Kind.OPERATION_REF, Kind.PROPOSAL_REF)  # need the validator set
_BATCH_KINDS = (Kind.BATCH, *_REF_KINDS)
_REQUESTS = CommitRequest | SnapshotRequest | CertificateRequest | ProposalRequest


def arrive(core: Core, now: float, arrival: Arrival) -> None:
    """One payload the mesh delivered: a gossip batch or vote set, or one message."""
    payload, via, vouched = arrival.payload, arrival.via, arrival.vouched
    if payload[:1] == bytes((NEIGHBOUR_VERSION,)):
        try:
            tag = neighbour_tag(payload)
        except MessageError as exc:
            core.drop(exc.reason)
            return
        ids = [sid for sid in core.sessions if sid[:SESSION_TAG_LEN] == tag]
        if len(ids) != 1:
            core.drop("unknown_session" if not ids else "ambiguous_session_tag")
            return
        payload = from_neighbour(payload, ids[0])
    if len(payload) > ENVELOPE_PREFIX and payload[ENVELOPE_PREFIX] & 0x7F in _BATCH_KINDS:
        receive_batch(core, now, payload, via, vouched=vouched)
        return
    receive_payload(
        core, now, payload, arrival.sender, via=via, flooded=arrival.flooded, vouched=vouched
    )


def receive_batch(
    core: Core, now: float, payload: bytes, via: bytes | None = None, *, vouched: bool = False
) -> int:
    """Queue each message of a gossip batch (or vote set); returns how many were queued."""
    if len(payload) > core.config.max_payload:
        core.drop("oversized_payload")
        return 0
    limits = core.config.engine.limits
    try:
        s = core.sessions.get(peek_session(payload))
        if s is None:
            core.drop("unknown_session")
            return 0
        if payload[ENVELOPE_PREFIX] in _REF_KINDS:
            items = [payload]
        else:
            items = split_batch(payload, limits)
            core.counters["batches_received"] += 1
    except MessageError as exc:
        core.drop(f"batch_{exc.reason}")
        return 0
    queued = 0
    validators = s.engine.validators
    for item in items:
        kind = item[ENVELOPE_PREFIX]
        msgs: list[Message]
        try:
            if kind == Kind.VOTE_SET:
                msgs = list(_expand_vote_set(core, s, item))
            elif kind == Kind.OPERATION_REF:
                msgs = [expand_operation_ref(item[ENVELOPE_PREFIX:], validators, limits)]
            elif kind == Kind.PROPOSAL_REF:
                proposer = s.engine.proposer
                msgs = [expand_proposal_ref(item[ENVELOPE_PREFIX:], proposer, limits)]
            else:
                queued += receive_payload(core, now, item, None, via=via, vouched=vouched)
                continue
        except UnresolvedBlock:
            _hold_unresolved(core, s, now, bytes(item), via, vouched)
            continue
        except MessageError as exc:
            core.drop(f"{Kind(kind).name.lower()}_{exc.reason}")
            continue
        for msg in msgs:
            queued += receive_payload(
                core, now, encode_message(s.id, msg), None, via=via, vouched=vouched, msg=msg
            )
    return queued


def receive_payload(
    core: Core,
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
    for tap in core.taps:
        if not tap(payload, sender):
            return False
    if len(payload) > core.config.max_payload:
        return core.drop("oversized_payload")
    try:
        sid = peek_session(payload)
    except MessageError as exc:
        return core.drop(exc.reason)
    s = core.sessions.get(sid)
    if s is None:
        return core.drop("unknown_session")
    key = dedup_key(payload, sender, core.epoch(now))
    s.gossip.heard(via, key)
    # the mesh authenticated the sender, even of a repeat; back in contact: tell it
    # where we are at once
    if sender is not None and sender in s.validators and s.contact.heard(now, sender):
        s.announcer.contact_regained(now)
    if core.seen.seen(now, key):
        return core.drop("duplicate")
    if s.inbox.full:
        s.stats["inbox_full"] += 1
        return core.drop("inbox_full")
    core.seen.add(now, key)
    s.inbox.push(Inbound(bytes(payload), sender, now, via, flooded, vouched, msg))
    core.drain_soon(now)
    return True


def _expand_vote_set(core: Core, s: Session, item: bytes) -> list[Vote]:
    """The votes of a VoteSet envelope, a short block reference expanded against the
    blocks the engine knows (raises :class:`UnresolvedBlock` if it knows none)."""
    engine = s.engine

    def set_at(height: int) -> tuple[bytes, ...] | None:
        # the set of a height beyond the one we decide is not known yet: held, like an
        # unknown block (expanded against our current set, a set change ahead made its
        # votes someone else's, dropped as bad signatures)
        return engine.validators_at(height) if height <= engine.height + 1 else None

    return expand_vote_set(
        item[ENVELOPE_PREFIX:], set_at, core.config.engine.limits, engine.known_blocks
    )


def _hold_unresolved(
    core: Core, s: Session, now: float, item: bytes, via: bytes | None, vouched: bool
) -> None:
    """Keep a short VoteSet whose block we do not know yet (its proposal is most likely
    a hop behind); the oldest goes when full."""
    s.stats["vote_sets_held"] += 1
    s.unresolved.append((now, item, via, vouched))
    while len(s.unresolved) > core.config.unresolved_capacity:
        s.unresolved.popleft()
        core.drop("vote_set_unresolved_overflow")


def retry_unresolved(core: Core, s: Session, now: float, expire: bool = False) -> None:
    """Expand the held VoteSets again once we know more blocks; those held too long
    are dropped."""
    if not s.unresolved:
        return
    mark = s.engine.blocks_mark()
    if mark == s.unresolved_mark and not expire:
        return
    s.unresolved_mark = mark
    held, s.unresolved = s.unresolved, deque()
    for arrived, item, via, vouched in held:
        if now - arrived > core.config.unresolved_ttl:
            core.drop("vote_set_unresolved")
            continue
        try:
            votes = _expand_vote_set(core, s, item)
        except MessageError:  # still unknown (it was well formed when it arrived)
            s.unresolved.append((arrived, item, via, vouched))
            continue
        s.stats["vote_sets_resolved"] += 1
        for vote in votes:
            payload = encode_message(s.id, vote)
            receive_payload(core, now, payload, None, via=via, vouched=vouched, msg=vote)


def drain(core: Core, now: float) -> None:
    """Round-robin over sessions, a batch each, so one busy session cannot stall another."""
    more = False
    for s in list(core.sessions.values()):
        for _ in range(min(core.config.drain_batch, len(s.inbox))):
            if not core.running:
                return
            _process(core, s, s.inbox.pop(), now)
        if s.inbox:
            more = True
    if more:
        core.drain_soon(now)


def _process(core: Core, s: Session, item: Inbound, now: float) -> None:
    msg = item.msg
    if msg is None:
        try:
            sid, msg = decode_message(item.payload, core.config.engine.limits)
        except MessageError as exc:
            core.drop(exc.reason)
            return
        if sid != s.id:  # pragma: no cover - peek_session routed it here
            core.drop("unknown_session")
            return
    reason = _check_sizes(core, msg)
    if reason is not None:
        core.drop(reason)
        return
    if isinstance(msg, StateAnnounce):
        _on_announce(core, s, now, item.sender, msg)
        return
    if isinstance(msg, _REQUESTS):
        # a burst of `request_burst` per sender and kind per interval (see RequestLimit)
        bound = 4 * len(s.validators) + 16
        if not s.requests.allow(now, item.sender or b"", type(msg).__name__, bound):
            core.drop("request_rate_limited")
            return
    elif isinstance(msg, Proposal):
        note_block(core, s, msg)
    elif isinstance(msg, Vote) and msg.height != s.engine.height + 1:
        # A vote for another height makes the engine help a "laggard" with a full block
        # (or chase a "leader") before it checks the signature: check it first (the
        # engine's memoised cache, so the engine pays nothing when it looks again),
        # against the set of the vote's height.
        if msg.height > s.engine.height + 1 and msg.validator not in s.validators:
            # Ahead of us, by a key outside our set: a seat added at a height we have not
            # reached yet, most likely. We cannot judge it before we know that set, so
            # its repeats must get another hearing (kept in the dedup, every rebroadcast
            # of it was dropped as a duplicate: a laggard never counted that vote and
            # the height stalled, 3 seats of 3 needed).
            core.seen.forget(dedup_key(item.payload, item.sender, core.epoch(item.at)))
            core.drop("vote_ahead_not_validator")
            return
        voters = (
            s.validators if msg.height > s.engine.height else s.engine.validators_at(msg.height)
        )
        ok = msg.validator in voters and s.engine.cache.verify(
            msg.validator, msg.signature, msg.signing_bytes(s.id)
        )
        if not ok:
            core.drop("vote_bad_signature")
            return
    elif (
        isinstance(msg, JoinRequest) and s.engine.is_validator and s.announcer.may_answer_join(now)
    ):
        # A joiner follows the chain without being a validator: gossip passes it
        # nothing and a busy validator sends no heartbeat. Tell it where the chain is,
        # at most once per announce interval.
        core.counters["join_announcements"] += 1
        catchup.announce(core, s, now)
    if isinstance(msg, Vote | Proposal | CompactProposal) and msg.height > s.engine.height + 2:
        # Beyond the height after the next, the engine drops it (and catches up): its
        # repeats must reach the engine again once we are there (the dedup of every
        # rebroadcast would keep them out of a joiner's engine for good).
        core.seen.forget(dedup_key(item.payload, item.sender, core.epoch(item.at)))
        core.counters["too_early_forgotten"] += 1
    if item.vouched and item.via is not None and item.via in s.gossip.neighbours:
        s.named(item.via, msg)
    core.counters["messages_processed"] += 1
    core.engine_receive(s, now, msg)
    core.pass_on(s, now, msg, item.via, item.flooded)
    core.after(s, now)


def _on_announce(
    core: Core, s: Session, now: float, sender: bytes | None, msg: StateAnnounce
) -> None:
    """Unsigned: one liar announcing a far height would make every node ask for
    snapshots. A validator's near announcement goes to the engine as that validator's
    claim (blocks are asked for once f+1 claim to be ahead); a far one only as the
    (f+1)-th."""
    core.counters["messages_processed"] += 1
    if sender is None:
        core.drop("announce_not_validator")
        return
    if sender not in s.validators:
        # A key outside the set we know: a joiner's only view of a table whose genesis
        # validators left (it learns the later sets from the chain itself).
        catchup.note_stranger(core, s, sender, msg)
        if catchup.lost_set(core, s, now):
            catchup.follow_strangers(core, s, now)
        return
    s.announced[sender] = msg
    eng = s.engine
    eng.note_presence(now, sender, msg.height)
    if eng.height < msg.height <= eng.height + eng.config.snapshot_gap:
        # its claim of being ahead: f+1 such validators before the engine asks for blocks
        try:
            eng.note_announcement(now, sender, msg)
        except Exception:  # never let one message kill the bridge
            core.drop("engine_error")
        core.after(s, now)
    catchup.follow_announcements(core, s, now)


def _check_sizes(core: Core, msg: Message) -> str | None:
    cfg = core.config
    if isinstance(msg, SnapshotResponse) and len(msg.snapshot) > cfg.max_snapshot_bytes:
        return "oversized_snapshot"
    if isinstance(msg, Proposal | Commit) and len(msg.block.encode()) > cfg.max_block_bytes:
        return "oversized_block"
    return None


def note_block(core: Core, s: Session, p: Proposal) -> None:
    if not s.pending:
        return
    for op in p.block.ops:
        pending = s.pending.get(op.op_id)
        if pending is not None:
            pending.block_hash = p.block.hash
