"""Hypothesis interleaves joins and leaves with loss, crashes, partitions, garbage and an
equivocating validator: no height may ever have two committed blocks (two quorums), every
node derives the same set for every height, and once the faults stop the table commits."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ble_bridge.consensus.byzantine import Behaviour
from ble_bridge.consensus.engine import EngineConfig
from ble_bridge.consensus.testing import LinkModel, SimNetwork, add_op

N = 7
GENESIS = (0, 1, 2, 3)
BYZANTINE = 0


class MembershipMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="sets-sm-"))
        self.net = SimNetwork(
            N,
            seed=11,
            link=LinkModel(drop=0.03),
            store_dir=self.dir,
            genesis=GENESIS,
            byzantine={BYZANTINE: Behaviour.EQUIVOCATE},
            config=EngineConfig(silence_heights=40),
        )
        self.net.start()
        self.down: set[int] = set()
        self.leaving: set[int] = set()

    def _set_size(self) -> int:
        """The smallest the set can get once the leaves in flight commit."""
        now = set().union(*(set(self.net.validators_of(i)) for i in range(N)))
        self.leaving = {i for i in self.leaving if self.net.nodes[i].key in now}
        return min(
            len(self.net.validators_of(i)) for i in range(N) if self.net.validators_of(i)
        ) - len(self.leaving)

    @rule(node=st.integers(1, N - 1), amount=st.integers(0, 2000))
    def submit(self, node: int, amount: int) -> None:
        eng = self.net.nodes[node].engine
        if eng is not None and eng.is_validator:
            self.net.submit(node, add_op(amount))

    @rule(dt=st.floats(0.01, 2.0))
    def run(self, dt: float) -> None:
        self.net.run(self.net.now + dt)

    @rule(node=st.integers(4, N - 1))
    def join(self, node: int) -> None:
        self.net.join(node)

    # the Byzantine validator stays a minority: the set never shrinks below 4 by leaves
    @precondition(lambda self: self._set_size() > 4)
    @rule(node=st.integers(1, N - 1))
    def leave(self, node: int) -> None:
        if self.net.leave(node) is not None:
            self.leaving.add(node)

    @precondition(lambda self: not self.down)
    @rule(node=st.integers(1, N - 1), lose=st.booleans())
    def crash(self, node: int, lose: bool) -> None:
        self.net.crash(node, lose_outbox=lose)
        self.down.add(node)

    @precondition(lambda self: bool(self.down))
    @rule()
    def restart(self) -> None:
        for node in self.down:
            self.net.restart(node)
        self.down.clear()

    @rule(cut=st.sets(st.integers(0, N - 1), min_size=1, max_size=N - 1))
    def split(self, cut: set[int]) -> None:
        self.net.split([cut, set(range(N)) - cut])

    @rule()
    def heal(self) -> None:
        self.net.heal()

    @rule(node=st.integers(0, N - 1), blob=st.binary(max_size=160))
    def garbage(self, node: int, blob: bytes) -> None:
        eng = self.net.nodes[node].engine
        if eng is not None:
            eng.receive_payload(self.net.now, bytes([1]) + self.net.session_id + blob)

    @invariant()
    def safe(self) -> None:
        assert self.net.agreement()
        assert self.net.sets_agree()
        assert self.net.valid()
        assert self.net.double_signs == 0

    def teardown(self) -> None:
        try:
            self.net.heal()
            for node in list(self.down):
                self.net.restart(node)
            live = [i for i in self.net.honest() if self.net.nodes[i].engine is not None]
            voter = next(i for i in live if self.net.nodes[i].engine.is_validator)  # type: ignore[union-attr]
            self.net.submit(voter, add_op(1))
            target = max(self.net.height_of(i) for i in live) + 1
            assert self.net.run_until_height(target, max_time=self.net.now + 90, nodes=live)
            assert self.net.agreement() and self.net.sets_agree()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


MembershipMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=40, deadline=None
)
TestMembership = MembershipMachine.TestCase
