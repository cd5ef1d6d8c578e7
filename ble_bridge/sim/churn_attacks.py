"""Byzantine behaviours of ``simulate --churn`` that attack the set changes themselves.

The wire-level behaviours (equivocate, forge, replay, withhold, invalid, garbage) are the
:class:`~ble_bridge.sim.byzantine.ByzantineFilter` of a runtime node; these act through a
node's own keys and radio, once a second (:meth:`Attacker.step`):

* ``sponsor``: while seated, it makes keys it controls (sybils, up to ``MAX_SYBILS``) ask to
  join, with valid signatures; its own engine sponsors them and it floods the requests so
  the others do too. They may take free seats (they look like people), never more than the
  table has; they never sign, so the others remove them on probation (``probation_heights``)
  and seat no second one while one is on probation.
* ``forged-join``: floods join requests for fresh keys with signatures that do not verify.
  No such key may ever sit.
* ``join-replay``: records every join request it hears (its own included), leaves the
  table, and replays them all. Nobody may be seated again by a replay (its own key must
  stay out; others only by a new request of their own).
* ``removed-votes``: leaves the table, then keeps signing prevotes and precommits with its
  removed key for the heights the table announces. They must never count.

:meth:`Attacker.violations` names what went wrong at the end (empty: safe).
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from typing import Any

from ..consensus.engine import ConsensusEngine
from ..consensus.validators import AddValidator, RemoveReason, RemoveValidator, SetOp
from ..wire.identity import Identity
from ..wire.messages import (
    JoinRequest,
    MessageError,
    Step,
    Vote,
    decode_message,
    encode_message,
)
from .runtime import RuntimeNode

CHURN_BEHAVIOURS = ("sponsor", "forged-join", "join-replay", "removed-votes")
LEAVING = frozenset({"join-replay", "removed-votes"})
"""Behaviours that leave the table (at about 40 % of the run) and never sit down again."""
MAX_SYBILS = 3
HEARD_JOINS = 32


class Attacker:
    """One Byzantine node's churn behaviour (see the module docstring)."""

    def __init__(self, index: int, behaviour: str, table: str, seed: int) -> None:
        if behaviour not in CHURN_BEHAVIOURS:
            raise ValueError(f"unknown churn behaviour {behaviour!r}")
        self.index = index
        self.behaviour = behaviour
        self.table = table
        self.rng = random.Random(f"churn-attack/{seed}/{index}")
        tag = f"{seed}/{index}".encode()
        self.sybils = [Identity.from_seed(b"sybil/" + tag + bytes((k,))) for k in range(MAX_SYBILS)]
        self.forged: list[bytes] = []  # keys of forged join requests
        self.heard: deque[bytes] = deque(maxlen=HEARD_JOINS)  # join request payloads
        self.key: bytes | None = None
        self.sid: bytes | None = None
        self.asked_leave = False  # the run made it leave (LEAVING behaviours)
        self.was_seated = False
        self.left = False  # seated, then left: it no longer follows the table
        self.sent: Counter[str] = Counter()
        self._hooked: set[int] = set()

    @property
    def sybil_keys(self) -> frozenset[bytes]:
        return frozenset(s.signing_public for s in self.sybils)

    def hook(self, node: RuntimeNode) -> None:
        """Record the join requests this node hears (``join-replay``), every life."""
        if self.behaviour != "join-replay" or id(node) in self._hooked:
            return
        self._hooked.add(id(node))
        bridge = node.bridge

        def recording(payload: bytes, sender: bytes | None) -> bool:
            try:
                _, msg = decode_message(payload, bridge.config.engine.limits)
            except MessageError:
                msg = None
            if isinstance(msg, JoinRequest) and bytes(payload) not in self.heard:
                self.heard.append(bytes(payload))
            return True

        bridge.core.taps.append(recording)  # the core's inbound tap: sees, keeps nothing out

    def step(self, node: RuntimeNode, now: float) -> None:
        self.key = node.identity.signing_public
        self.hook(node)
        sid = self._table_id(node)
        if sid is not None:
            self.sid = sid
        engine = self._engine(node)
        if engine is not None and engine.is_validator and not self.asked_leave:
            self.was_seated = True
        if (
            self.asked_leave
            and self.was_seated
            and self.sid is not None
            and self.sid not in node.tables.tables
        ):
            self.left = True
        if self.behaviour == "sponsor":
            self._sponsor(node, engine)
        elif self.behaviour == "forged-join":
            self._forge(node)
        elif self.behaviour == "join-replay":
            if self.left:
                self._replay(node)
        elif self.behaviour == "removed-votes" and self.left:
            self._removed_votes(node)

    # -- behaviours ----------------------------------------------------------------------

    def _sponsor(self, node: RuntimeNode, engine: ConsensusEngine[Any] | None) -> None:
        if engine is None or not engine.is_validator or self.sid is None:
            return
        for sybil in self.sybils:
            key = sybil.signing_public
            if key in engine.validators or engine.join_nonce(key) > 0:
                continue  # seated, or once seated: a new nonce would be a new request
            req = JoinRequest.create(sybil.sign, key, self.sid, 1, 0)
            payload = encode_message(self.sid, req)
            node.bridge.receive_payload(payload, key)  # its own engine sponsors it
            node.bridge.send_payload(payload)  # and the others hear it too
            self.sent["sybil_join_requests"] += 1
            return  # one per second

    def _forge(self, node: RuntimeNode) -> None:
        sid = self.sid
        if sid is None:
            return
        victim = Identity.from_seed(self.rng.randbytes(16))
        signer = Identity.from_seed(self.rng.randbytes(16))
        key = victim.signing_public
        req = JoinRequest.create(signer.sign, key, sid, 1 + self.rng.randrange(1 << 32), 0)
        self.forged.append(key)
        node.bridge.send_payload(encode_message(sid, req))
        self.sent["forged_join_requests"] += 1

    def _replay(self, node: RuntimeNode) -> None:
        for payload in list(self.heard):
            node.bridge.send_payload(payload)
            self.sent["replayed_join_requests"] += 1

    def _removed_votes(self, node: RuntimeNode) -> None:
        sid = self.sid
        if sid is None:
            return
        heard = node.tables.directory.get(sid)
        if heard is None:
            return
        height = heard.announce.height + 1 + self.rng.randrange(2)
        block = self.rng.randbytes(32)
        for step in (Step.PREVOTE, Step.PRECOMMIT):
            vote = Vote.create(node.identity.sign, node.identity.signing_public, sid, step,
                               height, 0, block)  # fmt: skip
            node.bridge.send_payload(encode_message(sid, vote))
            self.sent["removed_votes"] += 1

    # -- judging -------------------------------------------------------------------------

    def violations(
        self,
        final_sets: list[tuple[bytes, ...]],
        seats: int,
        changes: Mapping[int, Sequence[SetOp]] | None = None,
    ) -> list[str]:
        """What went wrong (empty: nothing): the honest nodes' final validator sets show
        too many seats or a forged key seated; the committed chain's set changes
        (``changes``: height -> changes) show our key added again after its leave. (Not
        the final sets: a node still catching up holds the set of an older height.)"""
        out = []
        for keys in final_sets:
            if len(keys) > seats:
                out.append(f"{len(keys)} seats taken of {seats}")
            if self.behaviour == "forged-join" and set(self.forged) & set(keys):
                out.append("a forged join request was seated")
        if self.behaviour in LEAVING and self.key is not None:
            left = False
            for h in sorted(changes or {}):
                for c in (changes or {})[h]:
                    if isinstance(c, RemoveValidator) and c.key == self.key:
                        left = left or c.reason is RemoveReason.LEAVE
                    elif isinstance(c, AddValidator) and c.request.key == self.key and left:
                        out.append(
                            f"node {self.index} sits again after it left ({self.behaviour}, "
                            f"height {h})"
                        )
        return sorted(set(out))

    # -- helpers -------------------------------------------------------------------------

    def _table_id(self, node: RuntimeNode) -> bytes | None:
        for sid, name in node.tables.names.items():
            if name == self.table:
                return sid
        return None

    def _engine(self, node: RuntimeNode) -> ConsensusEngine[Any] | None:
        if self.sid is None or self.sid not in node.bridge.sessions:
            return None
        return node.bridge.engine(self.sid)


__all__ = ["CHURN_BEHAVIOURS", "LEAVING", "MAX_SYBILS", "Attacker"]
