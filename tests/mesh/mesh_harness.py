"""A tiny in-memory network of Routers with an explicit clock (no asyncio) for mesh tests."""

from __future__ import annotations

import heapq
import itertools
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from ble_bridge.mesh.config import MeshConfig
from ble_bridge.mesh.router import Delivered, Router
from ble_bridge.transport import LinkInfo, LinkRole, SendResult
from ble_bridge.wire.fragment import FragmentPayload
from ble_bridge.wire.identity import Identity
from ble_bridge.wire.packet import PacketType, decode

WALL = 1_790_000_000.0


@dataclass
class Net:
    """Nodes 0..n-1 joined by point-to-point links with a fixed latency."""

    n: int
    config: MeshConfig = field(default_factory=MeshConfig)
    latency: float = 0.005
    seed: int = 1
    now: float = 0.0
    wall_offsets: list[float] | None = None

    def __post_init__(self) -> None:
        self.identities = [Identity.from_seed(b"mesh-node-%d" % i) for i in range(self.n)]
        offsets = self.wall_offsets or [WALL] * self.n
        self.routers = [
            Router(ident, self.config, random.Random(self.seed * 7919 + i), offsets[i])
            for i, ident in enumerate(self.identities)
        ]
        self._ids = itertools.count(1)
        self._seq = itertools.count()
        self.peer_link: dict[int, tuple[int, int]] = {}  # link id -> (peer node, peer's link id)
        self.owner: dict[int, int] = {}  # link id -> node
        self.max_frame: dict[int, int] = {}
        self.queue: list[tuple[float, int, int, int, bytes]] = []  # (t, seq, node, link, frame)
        self.tx: Counter[int] = Counter()  # frames on the air by original packet type
        self.tx_bytes = 0
        self.delivered: list[list[Delivered]] = [[] for _ in range(self.n)]
        self.cut: set[int] = set()  # link ids whose frames are lost in transit
        for r in self.routers:
            r.handle_timer(self.now)

    @property
    def ids(self) -> list[bytes]:
        return [i.peer_id for i in self.identities]

    def connect(self, a: int, b: int, mtu: int = 247, mtu_b: int | None = None) -> None:
        la, lb = next(self._ids), next(self._ids)
        self.peer_link[la] = (b, lb)
        self.peer_link[lb] = (a, la)
        self.owner[la], self.owner[lb] = a, b
        self.max_frame[la], self.max_frame[lb] = mtu - 3, (mtu_b or mtu) - 3
        self.routers[a].link_up(self.now, LinkInfo(la, f"node{b}", mtu, LinkRole.CENTRAL))
        self.routers[b].link_up(
            self.now, LinkInfo(lb, f"node{a}", mtu_b or mtu, LinkRole.PERIPHERAL)
        )
        self.flush(a)
        self.flush(b)

    def link_between(self, a: int, b: int) -> int:
        return next(
            lid for lid, (peer, _) in self.peer_link.items() if self.owner[lid] == a and peer == b
        )

    def disconnect(self, a: int, b: int) -> None:
        la = self.link_between(a, b)
        _, lb = self.peer_link.pop(la)
        del self.peer_link[lb]
        self.routers[a].link_down(self.now, la, "test")
        self.routers[b].link_down(self.now, lb, "test")

    def connect_edges(self, edges: Iterable[tuple[int, int]], mtu: int = 247) -> None:
        for a, b in edges:
            self.connect(a, b, mtu)

    def flush(self, node: int) -> None:
        r = self.routers[node]
        for link_id, frame in r.frames_to_send():
            peer = self.peer_link.get(link_id)
            if peer is None:
                r.send_result(self.now, link_id, SendResult.NO_SUCH_LINK)
                continue
            if len(frame) > self.max_frame[link_id]:
                raise AssertionError(f"frame of {len(frame)} bytes on link {link_id}")
            r.send_result(self.now, link_id, SendResult.QUEUED)
            self.tx[_original_type(frame)] += 1
            self.tx_bytes += len(frame)
            if link_id in self.cut:
                continue
            heapq.heappush(
                self.queue, (self.now + self.latency, next(self._seq), peer[0], peer[1], frame)
            )
        self.delivered[node].extend(r.events())

    def inject(self, node: int, link_id: int, frame: bytes) -> None:
        self.routers[node].receive(self.now, link_id, frame)
        self.flush(node)

    def run(self, duration: float) -> None:
        """Advance the clock by ``duration``, delivering frames and firing timers in order."""
        end = self.now + duration
        while True:
            t_frame = self.queue[0][0] if self.queue else float("inf")
            timers = [(r.next_timer() or float("inf"), i) for i, r in enumerate(self.routers)]
            t_timer, node = min(timers)
            t = min(t_frame, t_timer)
            if t > end:
                break
            self.now = max(self.now, t)
            if t_frame <= t_timer:
                _, _, dst, link_id, frame = heapq.heappop(self.queue)
                if link_id in self.peer_link:  # link still up
                    self.routers[dst].receive(self.now, link_id, frame)
                self.flush(dst)
            else:
                self.routers[node].handle_timer(self.now)
                self.flush(node)
        self.now = end

    def broadcast(self, node: int, text: bytes, ptype: int = PacketType.MESSAGE) -> bytes:
        packet = self.routers[node].send(self.now, ptype, text)
        self.flush(node)
        return packet.packet_id

    def receivers(self, packet_id: bytes) -> list[int]:
        """Nodes that delivered ``packet_id`` (with multiplicity, to catch double delivery)."""
        return [
            i
            for i, evs in enumerate(self.delivered)
            for e in evs
            if e.packet.packet_id == packet_id
        ]


def _original_type(frame: bytes) -> int:
    p = decode(frame)
    if p.type == PacketType.FRAGMENT:
        return FragmentPayload.decode(p.payload).original_type
    return p.type


def full_edges(n: int) -> list[tuple[int, int]]:
    return [(a, b) for a in range(n) for b in range(a + 1, n)]


def line_edges(n: int) -> list[tuple[int, int]]:
    return [(i, i + 1) for i in range(n - 1)]


def grid_edges(w: int, h: int) -> list[tuple[int, int]]:
    edges = []
    for y in range(h):
        for x in range(w):
            i = y * w + x
            if x + 1 < w:
                edges.append((i, i + 1))
            if y + 1 < h:
                edges.append((i, i + w))
    return edges


def geometric_edges(
    n: int, radius: float, seed: int, max_degree: int | None = None
) -> list[tuple[int, int]]:
    """Random geometric graph in the unit square (closest pairs first when degree-capped)."""
    rng = random.Random(seed)
    pos = [(rng.random(), rng.random()) for _ in range(n)]
    pairs = sorted(
        ((pos[a][0] - pos[b][0]) ** 2 + (pos[a][1] - pos[b][1]) ** 2, a, b)
        for a in range(n)
        for b in range(a + 1, n)
    )
    degree = [0] * n
    edges = []
    for d2, a, b in pairs:
        if d2 > radius * radius:
            break
        if max_degree is not None and (degree[a] >= max_degree or degree[b] >= max_degree):
            continue
        degree[a] += 1
        degree[b] += 1
        edges.append((a, b))
    return edges


def connected(n: int, edges: list[tuple[int, int]]) -> bool:
    adj: dict[int, set[int]] = {i: set() for i in range(n)}
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    seen, todo = {0}, [0]
    while todo:
        for nb in adj[todo.pop()] - seen:
            seen.add(nb)
            todo.append(nb)
    return len(seen) == n


def hops_from(n: int, edges: list[tuple[int, int]], source: int) -> dict[int, int]:
    """Hop distance from ``source`` to every reachable node."""
    adj: dict[int, set[int]] = {i: set() for i in range(n)}
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    dist, order = {source: 0}, [source]
    for x in order:
        for y in sorted(adj[x]):
            if y not in dist:
                dist[y] = dist[x] + 1
                order.append(y)
    return dist


def measure(
    n: int, edges: list[tuple[int, int]], broadcasts: int = 20, config: MeshConfig | None = None
) -> tuple[float, float, float]:
    """(transmissions per delivered broadcast, delivery ratio, ratio within ttl hops)."""
    cfg = config or MeshConfig()
    net = Net(n, config=cfg)
    net.connect_edges(edges)
    net.run(40.0)  # keys and neighbour lists settle
    net.tx.clear()
    deliveries = reachable = reached = 0
    for k in range(broadcasts):
        source = k * 7919 % n
        pid = net.broadcast(source, b"broadcast %d" % k)
        net.run(1.0)
        got = net.receivers(pid)
        deliveries += len(got)
        want = {i for i, h in hops_from(n, edges, source).items() if 0 < h <= cfg.ttl}
        reachable += len(want)
        reached += len(want & set(got))
    tx = net.tx[PacketType.MESSAGE] / max(deliveries, 1)
    return tx, deliveries / (broadcasts * (n - 1)), reached / max(reachable, 1)


def main() -> None:
    cases = [
        ("full-8", 8, full_edges(8)),
        ("line-8", 8, line_edges(8)),
        ("grid-4x4", 16, grid_edges(4, 4)),
        ("grid-7x7", 49, grid_edges(7, 7)),
        ("geometric-50", 50, geometric_edges(50, 0.25, seed=5)),
        ("geometric-50-deg4", 50, geometric_edges(50, 0.3, seed=5, max_degree=4)),
    ]
    for name, n, edges in cases:
        tx, ratio, within = measure(n, edges)
        flood = (2 * len(edges) - (n - 1)) / (n - 1)
        print(
            f"{name:18s} links={len(edges):3d} tx_per_delivery={tx:.3f} "
            f"naive_flood={flood:.2f} delivered={ratio:.3f} within_ttl={within:.3f}"
        )


if __name__ == "__main__":
    main()
