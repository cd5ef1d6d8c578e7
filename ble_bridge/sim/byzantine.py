"""Byzantine consensus nodes for the loopback air: a real bridge whose outputs lie.

:class:`ByzantineBridge` runs the honest engine and bridge, and misbehaves only where a
message leaves the node (``transmit``), as :func:`ble_bridge.consensus.byzantine.misbehave`
says: equivocate, forge, replay what it heard, withhold, propose invalid blocks, or send
garbage in 0x1C packets. A withholding node also passes on nothing it should gossip to
its neighbours (a relay that swallows messages; its mesh router still relays floods).
Honest nodes must keep agreement, validity and liveness despite it.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from ..bridge import BridgeConfig, NetworkConsensusBridge
from ..bridge.service import _Session
from ..consensus.byzantine import BEHAVIOURS, Behaviour, misbehave
from ..mesh.service import MeshNode
from ..node import BridgeFactory
from ..store import Store
from ..wire.identity import Identity
from ..wire.messages import Message, Operation

INVALID_OP = b"\xff\xffnot-a-craps-op"
"""An operation body the craps application always refuses (it does not decode)."""

POISON_NONCE_GAP = 1000
"""The poison operation's nonce is this far past the liar's committed one."""


class ByzantineBridge(NetworkConsensusBridge):
    """A :class:`NetworkConsensusBridge` that misbehaves on the way out (see module doc)."""

    replay_memory = 256
    replays = 2

    def __init__(
        self,
        mesh: MeshNode,
        identity: Identity,
        *,
        behaviour: Behaviour,
        rng: random.Random,
        store: Store | None = None,
        config: BridgeConfig | None = None,
    ) -> None:
        super().__init__(mesh, identity, store=store, config=config)
        self.behaviour = behaviour
        self.rng = rng
        self.heard: deque[bytes] = deque(maxlen=self.replay_memory)
        self.lies = 0

    def receive_payload(self, payload: bytes, *args: Any, **kwargs: Any) -> bool:
        if self.behaviour is Behaviour.REPLAY:
            self.heard.append(bytes(payload))
        return super().receive_payload(payload, *args, **kwargs)

    def _pass_on(self, s: _Session, now: float, *args: Any, **kwargs: Any) -> None:
        if self.behaviour is Behaviour.WITHHOLD:  # sends nothing: passes nothing on either
            self.lies += len(s.engine.relayable())
            return
        super()._pass_on(s, now, *args, **kwargs)

    def transmit(self, session_id: bytes, msg: Message) -> None:
        out = misbehave(
            self.behaviour,
            session_id,
            msg,
            self.identity,
            self.rng,
            validators=self.engine(session_id).validators,
            heard=self.heard,
            replays=self.replays,
            poison=lambda: self._poison(session_id),
        )
        if out.honest:
            super().transmit(session_id, msg)
        else:
            self.lies += 1  # withheld or replaced
        if out.instead is not None:
            self.send_payload(out.instead)
        for payload in out.extra:
            self.lies += 1
            self.send_payload(payload)

    def _poison(self, session_id: bytes) -> Operation:
        """A signed operation the application refuses, with a nonce far ahead."""
        key = self.identity.signing_public
        nonce = self.engine(session_id).committed_nonce(key) + POISON_NONCE_GAP
        return Operation.create(self.identity.sign, key, session_id, nonce, INVALID_OP)


def byzantine_bridge(behaviour: Behaviour, rng: random.Random) -> BridgeFactory:
    """A :class:`~ble_bridge.node.Node` bridge factory making a :class:`ByzantineBridge`."""

    def make(
        mesh: MeshNode, identity: Identity, *, store: Store | None, config: BridgeConfig
    ) -> NetworkConsensusBridge:
        return ByzantineBridge(
            mesh, identity, behaviour=behaviour, rng=rng, store=store, config=config
        )

    return make


__all__ = ["BEHAVIOURS", "INVALID_OP", "Behaviour", "ByzantineBridge", "byzantine_bridge"]
