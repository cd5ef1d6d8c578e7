"""Hypothesis drives a simulated session through loads, crashes, partitions and garbage.

Safety (agreement, validity, no double sign) must hold after every step; once the faults
stop, every node must commit again (liveness).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ble_bridge.consensus.testing import LinkModel, SimNetwork, add_op

N = 4


class SessionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="engine-sm-"))
        self.net = SimNetwork(N, seed=7, link=LinkModel(drop=0.02), store_dir=self.dir)
        self.net.start()
        self.down: set[int] = set()

    @rule(node=st.integers(0, N - 1), amount=st.integers(0, 2000))
    def submit(self, node: int, amount: int) -> None:
        self.net.submit(node, add_op(amount))  # amounts over 1000 are invalid ops

    @rule(dt=st.floats(0.01, 2.0))
    def run(self, dt: float) -> None:
        self.net.run(self.net.now + dt)

    @precondition(lambda self: not self.down)
    @rule(node=st.integers(0, N - 1), lose=st.booleans())
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

    @rule(node=st.integers(0, N - 1), blob=st.binary(max_size=120))
    def garbage(self, node: int, blob: bytes) -> None:
        eng = self.net.nodes[node].engine
        if eng is not None:
            eng.receive_payload(self.net.now, bytes([1]) + self.net.session_id + blob)

    @invariant()
    def safe(self) -> None:
        assert self.net.agreement()
        assert self.net.valid()
        assert self.net.double_signs == 0
        for node in self.net.nodes:
            for op in node.committed_ops:
                assert int.from_bytes(op.body[1:], "big") <= 1000

    def teardown(self) -> None:
        try:
            self.net.heal()
            for node in list(self.down):
                self.net.restart(node)
            self.net.submit(0, add_op(1))
            target = max(self.net.height_of(i) for i in range(N)) + 1
            assert self.net.run_until_height(target, max_time=self.net.now + 60)
            assert self.net.agreement()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


SessionMachine.TestCase.settings = settings(max_examples=15, stateful_step_count=25, deadline=None)
TestSession = SessionMachine.TestCase
