"""What a Byzantine validator sends instead of an honest consensus message, pure and seeded.

One definition of the six misbehaviours, shared by the in-memory engine harness
(:mod:`ble_bridge.consensus.testing`) and the loopback-air bridge
(:mod:`ble_bridge.sim.byzantine`). :func:`misbehave` maps one honest outgoing message to an
:class:`Outgoing` (send the honest one or not, what to send instead, what to add); how the
payloads reach other nodes (broadcast, split delivery, the mesh) is the harness's business.
"""

from __future__ import annotations

import enum
import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..wire.identity import Identity
from ..wire.messages import (
    NIL,
    Block,
    BlockHeader,
    Commit,
    CommitCertificate,
    Message,
    Operation,
    Proposal,
    Vote,
    body_hash,
    encode_message,
    proposal_signing_bytes,
)


class Behaviour(enum.Enum):
    """How a Byzantine validator lies on the way out."""

    EQUIVOCATE = "equivocate"  # a second, conflicting signed vote for every vote
    FORGE = "forge"  # votes and a commit with forged signatures in others' names
    REPLAY = "replay"  # re-sends old messages it has received
    WITHHOLD = "withhold"  # sends nothing at all
    INVALID = "invalid"  # its proposals carry an operation the application refuses
    GARBAGE = "garbage"  # adds random and bit-flipped payloads


BEHAVIOURS = tuple(b.value for b in Behaviour)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """What a Byzantine node sends for one honest message, in this order."""

    honest: bool
    """The honest message still goes out."""
    instead: bytes | None = None
    """A payload sent in place of the honest one."""
    extra: tuple[bytes, ...] = ()
    """Payloads sent after it (for EQUIVOCATE: exactly the twin vote)."""


PoisonFactory = Callable[[], Operation]
"""Builds the invalid operation an INVALID proposer slips into its block."""


def misbehave(
    behaviour: Behaviour,
    session_id: bytes,
    msg: Message,
    signer: Identity,
    rng: random.Random,
    *,
    validators: Sequence[bytes],
    heard: Sequence[bytes] = (),
    replays: int = 2,
    poison: PoisonFactory | None = None,
) -> Outgoing:
    """The payloads ``signer`` sends for the honest ``msg`` when it behaves as ``behaviour``.

    ``heard`` are payloads it received (REPLAY picks up to ``replays`` of them); ``poison``
    builds the operation an INVALID proposal carries (required for INVALID).
    """
    b = behaviour
    if b is Behaviour.WITHHOLD:
        return Outgoing(honest=False)
    if b is Behaviour.INVALID:
        if not isinstance(msg, Proposal):
            return Outgoing(honest=True)
        if poison is None:
            raise ValueError("INVALID needs a poison operation factory")
        bad = invalid_proposal(msg, signer, session_id, poison())
        return Outgoing(honest=False, instead=encode_message(session_id, bad))
    if b is Behaviour.EQUIVOCATE and isinstance(msg, Vote):
        twin = equivocating_twin(msg, signer, session_id)
        return Outgoing(honest=True, extra=(encode_message(session_id, twin),))
    if b is Behaviour.FORGE and isinstance(msg, Vote):
        fakes: list[Message] = list(forged_votes(msg, validators, rng))
        fakes.append(forged_commit(msg.height, signer.signing_public, len(validators), rng))
        return Outgoing(honest=True, extra=tuple(encode_message(session_id, m) for m in fakes))
    if b is Behaviour.REPLAY:
        return Outgoing(honest=True, extra=replayed(heard, rng, replays))
    if b is Behaviour.GARBAGE:
        return Outgoing(
            honest=True, extra=garbage(session_id, encode_message(session_id, msg), rng)
        )
    return Outgoing(honest=True)


def equivocating_twin(vote: Vote, signer: Identity, session_id: bytes) -> Vote:
    """A validly signed vote for the same height/round/step as ``vote`` but another block."""
    twin_hash = NIL if vote.block_hash != NIL else hashlib.sha256(vote.encode()).digest()
    return Vote.create(
        signer.sign,
        signer.signing_public,
        session_id,
        vote.step,
        vote.height,
        vote.round,
        twin_hash,
    )


def forged_votes(
    vote: Vote, validators: Sequence[bytes], rng: random.Random, count: int = 2
) -> list[Vote]:
    """Votes like ``vote`` in up to ``count`` random validators' names, random bytes signed."""
    out = []
    for victim in rng.sample(list(validators), min(count, len(validators))):
        out.append(
            Vote(vote.step, vote.height, vote.round, rng.randbytes(32), victim, rng.randbytes(64))
        )
    return out


def forged_commit(height: int, proposer: bytes, n: int, rng: random.Random) -> Commit:
    """A commit of an empty random block with a quorum of random 'signatures' out of ``n``."""
    header = BlockHeader(height, proposer, rng.randbytes(32), rng.randbytes(32), body_hash((), ()))
    block = Block(header, ())
    signers = tuple(range(n * 2 // 3 + 1))
    cert = CommitCertificate(
        height, 0, block.hash, n, signers, tuple(rng.randbytes(64) for _ in signers)
    )
    return Commit(block, cert)


def invalid_proposal(
    proposal: Proposal, signer: Identity, session_id: bytes, poison: Operation
) -> Proposal:
    """The same proposal, validly signed, with ``poison`` added to its block."""
    ops = (*proposal.block.ops, poison)
    h = proposal.block.header
    header = BlockHeader(
        h.height, h.proposer, h.prev_hash, h.state_hash, body_hash(ops, proposal.block.evidence)
    )
    block = Block(header, ops, proposal.block.evidence)
    pre = proposal_signing_bytes(
        session_id, proposal.height, proposal.round, proposal.pol_round, block.hash
    )
    return Proposal(proposal.height, proposal.round, proposal.pol_round, block, signer.sign(pre))


def replayed(heard: Sequence[bytes], rng: random.Random, count: int) -> tuple[bytes, ...]:
    """Up to ``count`` payloads picked at random from those heard."""
    return tuple(rng.sample(list(heard), min(count, len(heard))))


def garbage(session_id: bytes, honest: bytes, rng: random.Random) -> tuple[bytes, ...]:
    """The honest payload with one byte flipped, random bytes, and a random 0x1C body."""
    raw = bytearray(honest)
    raw[rng.randrange(len(raw))] ^= 1 + rng.randrange(255)
    return (
        bytes(raw),
        rng.randbytes(rng.randint(0, 300)),
        bytes([1]) + session_id + rng.randbytes(rng.randint(1, 300)),
    )


__all__ = [
    "BEHAVIOURS",
    "Behaviour",
    "Outgoing",
    "PoisonFactory",
    "equivocating_twin",
    "forged_commit",
    "forged_votes",
    "garbage",
    "invalid_proposal",
    "misbehave",
    "replayed",
]
