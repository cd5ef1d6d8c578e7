"""A simulated network: one :class:`~.air.Air`, N identities, and nodes built by a factory.

The factory decides what a node is (a mesh-only ``MeshNode`` today, a full consensus node
later); the network owns their lives: start, crash, restart with the same identity (as a
new object), stop. Must be created inside a running loop (virtual or real).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..wire.identity import Identity
from .air import Air, AirLimits, SimTransport
from .capture import PcapWriter
from .clock import SIM_EPOCH, Seeds
from .faults import (
    Crash,
    Delay,
    FaultPlan,
    Heal,
    LinkDrop,
    Loss,
    Movement,
    Partition,
    halves,
)
from .profiles import LinkProfile
from .topology import RandomWaypoint, Topology

log = logging.getLogger(__name__)


class SimNode(Protocol):
    """What the network needs from a node: an async life."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """Everything a factory gets to build node ``index`` for one life (``generation``)."""

    index: int
    generation: int
    identity: Identity
    transport: SimTransport
    rng: random.Random
    wall_offset: float
    network: Network


NodeFactory = Callable[[NodeSpec], SimNode]
NodeHook = Callable[[int, SimNode], None]


class Network:
    """N simulated nodes on one air; deterministic for a seed on a virtual loop."""

    def __init__(
        self,
        topology: Topology,
        profile: LinkProfile,
        factory: NodeFactory,
        *,
        seed: int = 0,
        faults: FaultPlan | None = None,
        capture: PcapWriter | None = None,
        trace: bool = True,
        air_limits: AirLimits | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.seeds = Seeds(seed)
        self.profile = profile
        self.factory = factory
        self.faults = faults or FaultPlan()
        self.air = Air(
            self.loop,
            topology,
            profile,
            self.seeds,
            capture=capture,
            trace=trace,
            limits=air_limits,
        )
        n = len(topology)
        self.identities = [
            Identity.from_seed(self.seeds.bytes(32, "identity", i)) for i in range(n)
        ]
        self.nodes: list[SimNode | None] = [None] * n
        self.transports: list[SimTransport | None] = [None] * n
        self.generations = [0] * n
        self.on_node_start: list[NodeHook] = []
        self.on_node_stop: list[NodeHook] = []
        self.stopped = False
        self._skews = self.faults.skews()
        self._tasks: set[asyncio.Task[None]] = set()
        self.task_errors = 0

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def now(self) -> float:
        return self.loop.time()

    def index_of(self, peer_id: bytes) -> int | None:
        for i, ident in enumerate(self.identities):
            if ident.peer_id == peer_id:
                return i
        return None

    def up(self) -> list[int]:
        """Indices of running nodes."""
        return [i for i, n in enumerate(self.nodes) if n is not None]

    def wall_offset(self, index: int) -> float:
        """Seconds added to loop time to get this node's (possibly skewed) wall clock."""
        return SIM_EPOCH + self._skews.get(index, 0.0)

    async def start(self) -> None:
        """Start every node, then arm the fault plan."""
        for i in range(len(self.nodes)):
            await self.start_node(i)
        self.apply(self.faults, self.seeds.rng("faults"))

    def apply(self, plan: FaultPlan, rng: random.Random) -> None:
        """Set timers for every fault of ``plan`` relative to the loop's time now."""
        loop = self.loop
        t0 = loop.time()
        air = self.air
        for f in plan.faults:
            if isinstance(f, Partition):
                loop.call_at(t0 + f.at, air.partition, f.groups or halves(air.topology))
            elif isinstance(f, Heal):
                loop.call_at(t0 + f.at, air.heal)
            elif isinstance(f, LinkDrop):
                loop.call_at(t0 + f.at, self._drop_links, f.node, rng)
            elif isinstance(f, Crash):
                loop.call_at(t0 + f.at, self.spawn_crash, f.node, f.restart_after)
            elif isinstance(f, Loss):
                loop.call_at(t0 + f.start, self._set_loss, f.probability, f.nodes)
                loop.call_at(t0 + f.end, self._set_loss, 0.0, None)
            elif isinstance(f, Delay):
                loop.call_at(t0 + f.start, self._set_delay, f.extra)
                loop.call_at(t0 + f.end, self._set_delay, 0.0)
            elif isinstance(f, Movement):
                walker = RandomWaypoint(air.topology, rng, speed=f.speed, nodes=f.nodes)
                loop.call_at(t0 + f.start, self._move, walker, f.tick)
            # ClockSkew is applied as each node is built (wall_offset)

    def _drop_links(self, node: int | None, rng: random.Random) -> None:
        air = self.air
        if node is None:
            pairs = air.link_ids()
            if pairs:
                air.break_link(rng.choice(pairs), "supervision_timeout")
            return
        for link_id in air.link_ids(node):
            air.break_link(link_id, "supervision_timeout")

    def _set_loss(self, p: float, nodes: Sequence[int] | None) -> None:
        self.air.loss = p
        self.air.loss_nodes = frozenset(nodes) if nodes is not None else None
        self.air.record("loss", p)

    def _set_delay(self, extra: float) -> None:
        self.air.extra_delay = extra
        self.air.record("delay", extra)

    def _move(self, walker: RandomWaypoint, tick: float) -> None:
        if self.stopped:
            return
        walker.step(tick)
        self.air.check_range()
        self.loop.call_later(tick, self._move, walker, tick)

    async def start_node(self, index: int) -> SimNode:
        if self.nodes[index] is not None:
            raise RuntimeError(f"node {index} is already running")
        gen = self.generations[index]
        self.generations[index] += 1
        transport = SimTransport(self.air, index)
        spec = NodeSpec(
            index=index,
            generation=gen,
            identity=self.identities[index],
            transport=transport,
            rng=self.seeds.rng("node", index, gen),
            wall_offset=self.wall_offset(index),
            network=self,
        )
        node = self.factory(spec)
        self.nodes[index] = node
        self.transports[index] = transport
        for hook in self.on_node_start:
            hook(index, node)
        await node.start()
        return node

    async def stop_node(self, index: int, *, crash: bool = False) -> None:
        """Stop node ``index``; a crash cuts its radio first so it can say nothing more."""
        node, transport = self.nodes[index], self.transports[index]
        if node is None:
            return
        self.nodes[index] = None
        self.transports[index] = None
        if crash and transport is not None:
            transport.crash()
        for hook in self.on_node_stop:
            hook(index, node)
        await node.stop()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a coroutine as a task the network keeps and whose errors it counts."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.task_errors += 1
            log.error("network task failed", exc_info=task.exception())

    def spawn_crash(self, index: int, restart_after: float | None) -> None:
        """Crash node ``index`` now and, optionally, start it again later."""
        if self.stopped or self.nodes[index] is None:
            return
        self.spawn(self.stop_node(index, crash=True))
        if restart_after is not None:
            self.loop.call_later(restart_after, self._restart, index)

    def _restart(self, index: int) -> None:
        if not self.stopped and self.nodes[index] is None:
            self.spawn(self._start_quietly(index))

    async def _start_quietly(self, index: int) -> None:
        await self.start_node(index)

    async def stop(self) -> None:
        """Stop every node cleanly and wait for pending network tasks."""
        self.stopped = True
        for i in range(len(self.nodes)):
            await self.stop_node(i)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
