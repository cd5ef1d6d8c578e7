"""Byzantine consensus nodes for the loopback air: a real bridge whose outputs lie.

A Byzantine node runs the honest engine, core and service; it misbehaves only through the
core's declared seams. :class:`ByzantineFilter` is the core's
:class:`~ble_bridge.bridge.core.OutputFilter`: for every message the node sends it asks
:func:`ble_bridge.consensus.byzantine.misbehave` what to do (drop the honest message,
flood something instead, flood more after it): equivocate, forge, replay what it heard,
withhold, propose invalid blocks, or send garbage in 0x1C packets. A withholding node
also passes on nothing it should gossip to its neighbours (a relay that swallows
messages; its mesh router still relays floods). A replaying node records what it hears
through the core's inbound tap. Honest nodes must keep agreement, validity and liveness
despite it.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence

from ..bridge import BridgeConfig, BridgeCore, NetworkConsensusBridge
from ..bridge.actions import Core
from ..consensus.byzantine import BEHAVIOURS, Behaviour, Outgoing, misbehave
from ..mesh.service import MeshNode
from ..node import BridgeFactory
from ..store import Store
from ..wire.identity import Identity
from ..wire.messages import Message, Operation

INVALID_OP = b"\xff\xffnot-a-craps-op"
"""An operation body the craps application always refuses (it does not decode)."""

POISON_NONCE_GAP = 1000
"""The poison operation's nonce is this far past the liar's committed one."""


class ByzantineFilter:
    """An output filter (and, for REPLAY, an inbound tap) that lies as ``behaviour``."""

    replay_memory = 256
    replays = 2

    def __init__(self, identity: Identity, behaviour: Behaviour, rng: random.Random) -> None:
        self.identity = identity
        self.behaviour = behaviour
        self.rng = rng
        self.heard: deque[bytes] = deque(maxlen=self.replay_memory)
        self.lies = 0  # messages withheld or replaced, payloads added

    def attach(self, core: BridgeCore) -> None:
        """Install on ``core``: its output filter, and its inbound tap when replaying."""
        core.output_filter = self
        if self.behaviour is Behaviour.REPLAY:
            core.taps.append(self.hear)

    def hear(self, payload: bytes, sender: bytes | None) -> bool:
        self.heard.append(bytes(payload))
        return True

    def outgoing(self, core: Core, session_id: bytes, msg: Message) -> Outgoing:
        out = misbehave(
            self.behaviour,
            session_id,
            msg,
            self.identity,
            self.rng,
            validators=core.session(session_id).engine.validators,
            heard=self.heard,
            replays=self.replays,
            poison=lambda: self._poison(core, session_id),
        )
        self.lies += (not out.honest) + len(out.extra)
        return out

    def relays(self, core: Core, session_id: bytes, accepted: Sequence[Message]) -> bool:
        if self.behaviour is Behaviour.WITHHOLD:  # sends nothing: passes nothing on either
            self.lies += len(accepted)
            return False
        return True

    def _poison(self, core: Core, session_id: bytes) -> Operation:
        """A signed operation the application refuses, with a nonce far ahead."""
        key = self.identity.signing_public
        nonce = core.session(session_id).engine.committed_nonce(key) + POISON_NONCE_GAP
        return Operation.create(self.identity.sign, key, session_id, nonce, INVALID_OP)


def byzantine_bridge(behaviour: Behaviour, rng: random.Random) -> BridgeFactory:
    """A :class:`~ble_bridge.node.Node` bridge factory: an honest
    :class:`NetworkConsensusBridge` with a :class:`ByzantineFilter` on its core."""

    def make(
        mesh: MeshNode, identity: Identity, *, store: Store | None, config: BridgeConfig
    ) -> NetworkConsensusBridge:
        bridge = NetworkConsensusBridge(mesh, identity, store=store, config=config)
        ByzantineFilter(identity, behaviour, rng).attach(bridge.core)
        return bridge

    return make


def lies(bridge: NetworkConsensusBridge) -> int | None:
    """How often ``bridge`` lied (None: it is honest, it has no Byzantine filter)."""
    f = bridge.core.output_filter
    return f.lies if isinstance(f, ByzantineFilter) else None


__all__ = ["BEHAVIOURS", "INVALID_OP", "Behaviour", "ByzantineFilter", "byzantine_bridge", "lies"]
