"""Byzantine consensus nodes for the loopback air: a real bridge whose outputs lie.

:class:`ByzantineBridge` runs the honest engine and bridge, and misbehaves only where a
message leaves the node (``transmit``): it equivocates (a second, conflicting signed vote),
forges (votes and commits with bad signatures in other validators' names), replays old
messages it received, withholds everything, proposes invalid blocks, or sends garbage in
0x1C packets. Honest nodes must keep agreement, validity and liveness despite it.
"""

from __future__ import annotations

import enum
import hashlib
import random
from collections import deque
from typing import Any

from ..bridge import BridgeConfig, NetworkConsensusBridge
from ..mesh.service import MeshNode
from ..store import Store
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

INVALID_OP = b"\xff\xffnot-a-craps-op"
"""An operation body the craps application always refuses (it does not decode)."""


class Behaviour(enum.Enum):
    EQUIVOCATE = "equivocate"
    FORGE = "forge"
    REPLAY = "replay"
    WITHHOLD = "withhold"
    INVALID = "invalid"
    GARBAGE = "garbage"


BEHAVIOURS = tuple(b.value for b in Behaviour)


class ByzantineBridge(NetworkConsensusBridge):
    """A :class:`NetworkConsensusBridge` that misbehaves on the way out (see module doc)."""

    replay_memory = 256

    def __init__(
        self,
        mesh: MeshNode,
        identity: Identity,
        behaviour: Behaviour,
        rng: random.Random,
        *,
        store: Store | None = None,
        config: BridgeConfig | None = None,
    ) -> None:
        super().__init__(mesh, identity, store=store, config=config)
        self.behaviour = behaviour
        self.rng = rng
        self.heard: deque[bytes] = deque(maxlen=self.replay_memory)
        self.lies = 0

    def receive_payload(self, payload: bytes, sender: bytes | None = None) -> bool:
        if self.behaviour is Behaviour.REPLAY:
            self.heard.append(bytes(payload))
        return super().receive_payload(payload, sender)

    def transmit(self, session_id: bytes, msg: Message) -> None:
        b = self.behaviour
        if b is Behaviour.WITHHOLD:
            self.lies += 1
            return
        if b is Behaviour.INVALID and isinstance(msg, Proposal):
            self.lies += 1
            self.send_payload(encode_message(session_id, self._invalid_proposal(session_id, msg)))
            return
        super().transmit(session_id, msg)
        for payload in self._extra(session_id, msg):
            self.lies += 1
            self.send_payload(payload)

    def _extra(self, sid: bytes, msg: Message) -> list[bytes]:
        b = self.behaviour
        rng = self.rng
        key = self.identity.signing_public
        if b is Behaviour.EQUIVOCATE and isinstance(msg, Vote):
            twin_hash = NIL if msg.block_hash != NIL else hashlib.sha256(msg.encode()).digest()
            twin = Vote.create(
                self.identity.sign, key, sid, msg.step, msg.height, msg.round, twin_hash
            )
            return [encode_message(sid, twin)]
        if b is Behaviour.FORGE and isinstance(msg, Vote):
            validators = list(self.engine(sid).validators)
            out = []
            for victim in rng.sample(validators, min(2, len(validators))):
                fake = Vote(
                    msg.step, msg.height, msg.round, rng.randbytes(32), victim, rng.randbytes(64)
                )
                out.append(encode_message(sid, fake))
            out.append(encode_message(sid, self._forged_commit(msg.height, len(validators))))
            return out
        if b is Behaviour.REPLAY and self.heard:
            picks = rng.sample(list(self.heard), min(2, len(self.heard)))
            return picks
        if b is Behaviour.GARBAGE:
            raw = bytearray(encode_message(sid, msg))
            raw[rng.randrange(len(raw))] ^= 1 + rng.randrange(255)
            return [
                bytes(raw),
                rng.randbytes(rng.randint(0, 300)),
                bytes([1]) + sid + rng.randbytes(rng.randint(1, 300)),
            ]
        return []

    def _forged_commit(self, height: int, n: int) -> Commit:
        rng = self.rng
        header = BlockHeader(
            height,
            self.identity.signing_public,
            rng.randbytes(32),
            rng.randbytes(32),
            body_hash((), ()),
        )
        block = Block(header, ())
        signers = tuple(range(n * 2 // 3 + 1))
        cert = CommitCertificate(
            height, 0, block.hash, n, signers, tuple(rng.randbytes(64) for _ in signers)
        )
        return Commit(block, cert)

    def _invalid_proposal(self, sid: bytes, p: Proposal) -> Proposal:
        """The same proposal with an operation the application refuses added to its block."""
        key = self.identity.signing_public
        eng: Any = self.engine(sid)
        nonce = eng.committed_nonce(key) + 1000
        poison = Operation.create(self.identity.sign, key, sid, nonce, INVALID_OP)
        ops = (*p.block.ops, poison)
        h = p.block.header
        header = BlockHeader(
            h.height, h.proposer, h.prev_hash, h.state_hash, body_hash(ops, p.block.evidence)
        )
        block = Block(header, ops, p.block.evidence)
        pre = proposal_signing_bytes(sid, p.height, p.round, p.pol_round, block.hash)
        return Proposal(p.height, p.round, p.pol_round, block, self.identity.sign(pre))
