"""Random link churn and broadcasts (hypothesis state machine over the in-memory harness).

Properties: nobody delivers a packet twice, nothing forged is delivered, and once neighbour
lists have settled after a change, a broadcast reaches every node within ttl hops, so the
pruning and deferral rules never strand a node.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from mesh_harness import Net, hops_from

from ble_bridge.wire.packet import Packet, encode

N = 7


class ChurningMesh(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.net = Net(N)
        self.edges: set[tuple[int, int]] = set()
        self.forged: set[bytes] = set()

    @rule(a=st.integers(0, N - 1), b=st.integers(0, N - 1))
    def toggle_link(self, a: int, b: int) -> None:
        if a == b:
            return
        edge = (min(a, b), max(a, b))
        if edge in self.edges:
            self.edges.discard(edge)
            self.net.disconnect(*edge)
        else:
            self.edges.add(edge)
            self.net.connect(*edge)
        self.net.run(3.0)  # re-announces carry the new neighbour lists

    @rule(source=st.integers(0, N - 1))
    def broadcast_reaches_everyone_within_ttl(self, source: int) -> None:
        pid = self.net.broadcast(source, b"churn")
        self.net.run(1.5)
        edges = sorted(self.edges)
        want = {i for i, h in hops_from(N, edges, source).items() if 0 < h <= 7}
        assert set(self.net.receivers(pid)) == want

    @rule(source=st.integers(0, N - 1), victim=st.integers(0, N - 1))
    def forged_packet(self, source: int, victim: int) -> None:
        links = [lid for lid, owner in self.net.owner.items() if owner == victim]
        links = [lid for lid in links if lid in self.net.peer_link]
        if not links or source == victim:
            return
        genuine = self.net.routers[source].send(self.net.now, 2, b"genuine")
        self.net.routers[source].frames_to_send()  # never leaves: only the forgery travels
        forged = Packet(
            genuine.type,
            genuine.sender,
            b"forged!",
            genuine.timestamp,
            genuine.ttl,
            signature=genuine.signature,
        )
        self.forged.add(forged.packet_id)
        self.net.inject(victim, links[0], encode(forged))
        self.net.run(1.0)

    @invariant()
    def no_double_delivery_and_nothing_forged(self) -> None:
        for events in self.net.delivered:
            ids = [e.packet.packet_id for e in events]
            assert len(ids) == len(set(ids))
            assert not self.forged & set(ids)


ChurningMesh.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestChurningMesh = ChurningMesh.TestCase
