"""A deterministic ledger application and an in-memory multi-engine network for tests and sims.

:class:`SimNetwork` runs ``n`` engines on virtual time. Every message is encoded to its real
0x1C payload bytes, delivered to every other live node after a seeded random delay (so
messages reorder), dropped with a probability, or cut by a partition. Byzantine nodes wrap
an honest engine and misbehave on the way out (:func:`.byzantine.misbehave`, the same
behaviours as the loopback air's). Nodes may crash and restart from their SQLite file, or
join late and catch up by snapshot.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import random
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..signer import SignerFile
from ..store import Store, open_store, signer_catch_up
from ..wire.identity import Identity
from ..wire.messages import (
    CommitCertificate,
    Kind,
    Message,
    MessageError,
    Operation,
    Proposal,
    StateAnnounce,
    Step,
    Vote,
    decode_message,
    encode_message,
)
from .app import Application, BlockContext, InvalidOperation
from .byzantine import Behaviour, misbehave
from .engine import Committed, ConsensusEngine, EngineConfig, SignerNotice, SnapshotInstalled

# -- a tiny deterministic application -------------------------------------------------


@dataclass(frozen=True, slots=True)
class LedgerState:
    """Per-submitter totals and banned keys (``blocks`` is kept for the snapshot layout)."""

    totals: tuple[tuple[bytes, int], ...] = ()
    banned: tuple[bytes, ...] = ()
    blocks: int = 0

    def total_of(self, key: bytes) -> int:
        return dict(self.totals).get(key, 0)

    @property
    def grand_total(self) -> int:
        return sum(v for _, v in self.totals)


POISON = b"!"


def add_op(amount: int) -> bytes:
    """Body of an operation adding ``amount`` (<= 1000) to the submitter's total."""
    return b"+" + struct.pack(">I", amount)


class LedgerApp:
    """Ops: ``b"+" amount(4)`` adds to the submitter's total; ``b"!"`` is always invalid."""

    name = "ledger"

    def initial_state(self, validators: Sequence[bytes]) -> LedgerState:
        return LedgerState()

    def check(self, state: LedgerState, submitter: bytes, op: bytes, ctx: BlockContext) -> None:
        if submitter in state.banned:
            raise InvalidOperation("banned")
        if len(op) != 5 or op[:1] != b"+":
            raise InvalidOperation("malformed")
        if struct.unpack(">I", op[1:])[0] > 1000:
            raise InvalidOperation("too_much")

    def apply(
        self, state: LedgerState, submitter: bytes, op: bytes, ctx: BlockContext
    ) -> LedgerState:
        totals = dict(state.totals)
        totals[submitter] = totals.get(submitter, 0) + struct.unpack(">I", op[1:])[0]
        return replace(state, totals=tuple(sorted(totals.items())))

    def end_block(self, state: LedgerState, ctx: BlockContext) -> LedgerState:
        return state  # no deadlines: an idle ledger needs no empty blocks

    def ban(self, state: LedgerState, offender: bytes, ctx: BlockContext) -> LedgerState:
        return replace(state, banned=tuple(sorted({*state.banned, offender})))

    def state_hash(self, state: LedgerState) -> bytes:
        return hashlib.sha256(self.snapshot(state)).digest()

    def snapshot(self, state: LedgerState) -> bytes:
        parts = [struct.pack(">QHH", state.blocks, len(state.totals), len(state.banned))]
        parts.extend(k + struct.pack(">Q", v) for k, v in state.totals)
        parts.extend(state.banned)
        return b"".join(parts)

    def restore(self, data: bytes) -> LedgerState:
        try:
            blocks, nt, nb = struct.unpack_from(">QHH", data)
            pos = 12
            totals = []
            for _ in range(nt):
                totals.append((data[pos : pos + 32], struct.unpack_from(">Q", data, pos + 32)[0]))
                pos += 40
            banned = tuple(data[pos + 32 * i : pos + 32 * (i + 1)] for i in range(nb))
        except struct.error as exc:
            raise ValueError(f"bad ledger snapshot: {exc}") from None
        if pos + 32 * nb != len(data):
            raise ValueError("bad ledger snapshot length")
        return LedgerState(tuple(totals), banned, blocks)


# -- the simulated network ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkModel:
    """One-way delay = ``delay`` + uniform(0, ``jitter``); each delivery lost with ``drop``."""

    delay: float = 0.02
    jitter: float = 0.02
    drop: float = 0.0


@dataclass
class SimNode:
    index: int
    identity: Identity
    behaviour: Behaviour | None  # None: honest
    engine: ConsensusEngine[LedgerState] | None = None
    store_path: Path | None = None
    signer_path: Path | None = None  # its signer-state file (with ``signer_files``)
    notes: list[str] = field(default_factory=list)  # moved-aside files, signer notices
    chain: dict[int, bytes] = field(default_factory=dict)
    committed_ops: list[Operation] = field(default_factory=list)
    commit_times: list[tuple[float, int]] = field(default_factory=list)
    snapshot_installs: int = 0
    seen: list[bytes] = field(default_factory=list)
    crashes: int = 0
    certs: dict[int, CommitCertificate] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.engine is not None

    @property
    def key(self) -> bytes:
        return self.identity.signing_public


class SimNetwork:
    """``n`` engines of one session on virtual time; see the module docstring."""

    def __init__(
        self,
        n: int,
        *,
        seed: int = 0,
        link: LinkModel | None = None,
        byzantine: dict[int, Behaviour] | None = None,
        config: EngineConfig | None = None,
        store_dir: Path | None = None,
        announce_interval: float = 1.0,
        genesis: Sequence[int] | None = None,
        signer_files: bool = False,
        app_factory: Callable[[], Application[Any]] | None = None,
    ) -> None:
        """``signer_files``: each node (needs ``store_dir``) keeps a signer-state file
        beside its database, created with its key, and opens both the way a real node
        does (a broken database is moved aside; a lost state means catch-up first)."""
        self.rng = random.Random(seed)
        self.app_factory: Callable[[], Application[Any]] = app_factory or LedgerApp
        self.link = link or LinkModel()
        self.config = config or EngineConfig()
        self.session_id = hashlib.sha256(b"sim-session-%d" % seed).digest()[:16]
        self.announce_interval = announce_interval
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self._timer_at: dict[int, float] = {}
        self.partition: list[set[int]] | None = None
        self.stats: Counter[str] = Counter()
        self.signed: dict[tuple[int, int, int, int], bytes] = {}
        self.double_signs = 0
        self.nodes = [
            SimNode(
                i,
                Identity.from_seed(b"sim-%d-%d" % (seed, i)),
                (byzantine or {}).get(i),
            )
            for i in range(n)
        ]
        self.validators = [node.key for node in self.nodes]  # every key that may validate
        # the genesis set (the rest join at runtime with :meth:`join`)
        self.genesis = [self.nodes[i].key for i in (range(n) if genesis is None else genesis)]
        self._join_nonce = 0
        if store_dir is not None:
            for node in self.nodes:
                node.store_path = store_dir / f"node{node.index}.sqlite"
                if signer_files:
                    node.signer_path = store_dir / f"node{node.index}.signer"
                    SignerFile.create(node.signer_path, node.key, durable=False).close()
        self._signers: dict[int, SignerFile] = {}

    # -- control -----------------------------------------------------------------------

    def start(self, indices: Sequence[int] | None = None) -> None:
        """Start the given nodes (all by default) at the current time."""
        for i in range(len(self.nodes)) if indices is None else indices:
            self._boot(i)
        self._schedule(self.now + self.announce_interval, self._announce)

    def _boot(self, i: int) -> None:
        node = self.nodes[i]
        # No fsync: a simulated crash kills the process, never the OS page cache.
        store = None
        guard, reason = None, None
        if node.store_path is not None:
            opened = open_store(node.store_path, node.key, durable=False)
            store = opened.store
            if opened.note:
                node.notes.append(opened.note)
            if node.signer_path is not None:
                old = self._signers.pop(i, None)
                if old is not None:
                    old.close()
                guard = SignerFile.open(node.signer_path, node.key, durable=False)
                self._signers[i] = guard
                if guard.note:
                    node.notes.append(guard.note)
                reason = signer_catch_up(guard, opened, self.session_id)
        node.engine = ConsensusEngine(
            self.session_id,
            node.identity,
            self.genesis,
            self.app_factory(),
            self.config,
            store,
            guard,
            reason,
        )
        node.engine.start(self.now)
        self._after(i)

    def crash(self, i: int, lose_outbox: bool = True) -> None:
        """Kill node ``i`` without any cleanup; what it had not yet sent is lost."""
        node = self.nodes[i]
        if node.engine is None:
            return
        if not lose_outbox:
            self._flush(i)
        else:  # lost on the way out, but signed: the double-sign check still counts them
            for msg in node.engine.outbox():
                self._record_signature(i, msg)
        node.engine = None  # the SQLite connection is abandoned, as in a power cut
        node.crashes += 1
        self._timer_at.pop(i, None)

    def restart(self, i: int) -> None:
        if self.nodes[i].engine is None:
            self._boot(i)

    def at(self, t: float, action: Callable[[], None]) -> None:
        """Run ``action`` at virtual time ``t``."""
        self._schedule(t, action)

    def split(self, groups: Sequence[set[int]]) -> None:
        self.partition = [set(g) for g in groups]

    def heal(self) -> None:
        self.partition = None

    def submit(self, i: int, body: bytes) -> bytes | None:
        eng = self.nodes[i].engine
        if eng is None:
            return None
        op_id = eng.submit(self.now, body)
        self._after(i)
        return op_id

    def join(self, i: int, buy_in: int = 0) -> bool:
        """Node ``i`` asks to become a validator (repeats until it is one)."""
        eng = self.nodes[i].engine
        if eng is None or eng.is_validator:
            return False
        self._join_nonce += 1
        eng.request_join(
            self.now, nonce=int(self.now * 1000) * 1000 + self._join_nonce, buy_in=buy_in
        )
        self._after(i)
        return True

    def leave(self, i: int) -> bytes | None:
        """Validator ``i`` submits its own RemoveValidator."""
        eng = self.nodes[i].engine
        if eng is None or not eng.is_validator:
            return None
        try:
            op_id = eng.leave(self.now)
        except ValueError:
            return None
        self._after(i)
        return op_id

    def validators_of(self, i: int) -> tuple[bytes, ...]:
        """The set node ``i`` decides its next height with (empty when it is down)."""
        eng = self.nodes[i].engine
        return () if eng is None else eng.validators

    def load(self, rate: float, until: float, nodes: Sequence[int] | None = None) -> None:
        """Each chosen honest node submits ``add_op`` at ``rate`` ops/s (Poisson) until ``until``."""
        for i in nodes if nodes is not None else range(len(self.nodes)):
            if self.nodes[i].behaviour is None:
                self._schedule(
                    self.now + self.rng.expovariate(rate), self._load_tick(i, rate, until)
                )

    def _load_tick(self, i: int, rate: float, until: float) -> Callable[[], None]:
        def tick() -> None:
            if self.now > until:
                return
            eng = self.nodes[i].engine
            if eng is not None and eng.is_validator:
                self.submit(i, add_op(self.rng.randint(1, 100)))
            self._schedule(self.now + self.rng.expovariate(rate), tick)

        return tick

    # -- running -----------------------------------------------------------------------

    def run(self, until: float) -> None:
        """Process everything due up to virtual time ``until``."""
        while self._queue and self._queue[0][0] <= until:
            t, _, action = heapq.heappop(self._queue)
            self.now = max(self.now, t)
            action()
        self.now = max(self.now, until)

    def run_until_height(
        self, height: int, max_time: float, nodes: Sequence[int] | None = None
    ) -> bool:
        """Run until every chosen live node committed ``height``; False on ``max_time``."""
        chosen = self.honest() if nodes is None else list(nodes)
        step = 0.05
        while self.now < max_time:
            if all(self.height_of(i) >= height for i in chosen):
                return True
            self.run(min(max_time, self.now + step))
        return all(self.height_of(i) >= height for i in chosen)

    def height_of(self, i: int) -> int:
        eng = self.nodes[i].engine
        return eng.height if eng is not None else -1

    def honest(self) -> list[int]:
        return [n.index for n in self.nodes if n.behaviour is None]

    def _schedule(self, t: float, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (t, self._seq, action))

    def _after(self, i: int) -> None:
        """After touching engine ``i``: collect events, send its outbox, arm its timer."""
        node = self.nodes[i]
        eng = node.engine
        if eng is None:
            return
        for ev in eng.events():
            if isinstance(ev, Committed):
                node.chain[ev.height] = ev.block.hash
                node.certs[ev.height] = ev.certificate
                node.committed_ops.extend(ev.ops)
                node.commit_times.append((self.now, ev.height))
            elif isinstance(ev, SnapshotInstalled):
                node.snapshot_installs += 1
            elif isinstance(ev, SignerNotice):
                node.notes.append(ev.text)
        self._flush(i)
        t = eng.next_timer()
        if t is not None and self._timer_at.get(i) != t:
            self._timer_at[i] = t
            self._schedule(t, self._timer(i, t))

    def _timer(self, i: int, t: float) -> Callable[[], None]:
        def fire() -> None:
            eng = self.nodes[i].engine
            if eng is None or self._timer_at.get(i) != t:
                return
            del self._timer_at[i]
            eng.handle_timer(self.now)
            self._after(i)

        return fire

    def _announce(self) -> None:
        for node in self.nodes:
            if node.engine is not None and node.behaviour is None:
                self._send(
                    node.index, encode_message(self.session_id, node.engine.state_announcement())
                )
        self._schedule(self.now + self.announce_interval, self._announce)

    def _flush(self, i: int) -> None:
        node = self.nodes[i]
        if node.engine is None:
            return
        for msg in node.engine.outbox():
            self._record_signature(i, msg)
            for dst, payload in self._misbehave(node, msg):
                self._send(i, payload, dst)

    def _record_signature(self, i: int, msg: Message) -> None:
        """Every (signer, height, round, step) of an honest node must map to one message."""
        if isinstance(msg, Vote):
            signer = self.validators.index(msg.validator)
            key = (signer, msg.height, msg.round, int(msg.step))
            enc = msg.encode()
        elif isinstance(msg, Proposal):
            signer = i
            key = (i, msg.height, msg.round, int(Step.PROPOSAL))
            enc = msg.signing_bytes(self.session_id)
        else:
            return
        if self.nodes[signer].behaviour is not None:
            return
        prev = self.signed.setdefault(key, enc)
        if prev != enc:
            self.double_signs += 1

    def _send(self, src: int, payload: bytes, dst: int | None = None) -> None:
        self.stats["messages"] += 1
        targets = range(len(self.nodes)) if dst is None else [dst]
        for j in targets:
            if j == src:
                continue
            if self.partition is not None and not any(src in g and j in g for g in self.partition):
                self.stats["cut_by_partition"] += 1
                continue
            if self.rng.random() < self.link.drop:
                self.stats["dropped"] += 1
                continue
            self.stats["bytes_delivered"] += len(payload)
            delay = self.link.delay + self.rng.random() * self.link.jitter
            self._schedule(self.now + delay, self._deliver(j, payload, src))

    def _deliver(self, j: int, payload: bytes, src: int) -> Callable[[], None]:
        def deliver() -> None:
            node = self.nodes[j]
            if node.engine is None:
                return
            if node.behaviour is Behaviour.REPLAY and len(node.seen) < 500:
                node.seen.append(payload)
            if len(payload) > 17 and payload[17] & 0x7F == Kind.STATE_ANNOUNCE:
                # the mesh authenticates who announced: the bridge tells the engine
                try:
                    _, ann = decode_message(payload, self.config.limits)
                except MessageError:
                    ann = None
                if isinstance(ann, StateAnnounce):
                    node.engine.note_presence(self.now, self.nodes[src].key, ann.height)
                    self._after(j)
            node.engine.receive_payload(self.now, payload)
            self._after(j)

        return deliver

    # -- byzantine behaviours ----------------------------------------------------------

    def _misbehave(self, node: SimNode, msg: Message) -> list[tuple[int | None, bytes]]:
        """The (destination or None for all, payload) pairs node sends for ``msg``."""
        sid = self.session_id
        b = node.behaviour
        if b is None:
            return [(None, encode_message(sid, msg))]
        out = misbehave(
            b,
            sid,
            msg,
            node.identity,
            self.rng,
            validators=self.validators,
            heard=node.seen,
            replays=3,
            poison=functools.partial(self._poison, node),
        )
        honest = encode_message(sid, msg)
        if b is Behaviour.EQUIVOCATE and out.extra:
            # The vote goes to half the nodes and its twin to the rest; a flooding mesh
            # relays both everywhere eventually, so the twin follows to all: evidence surfaces.
            (twin,) = out.extra
            others = [j for j in range(len(self.nodes)) if j != node.index]
            half = len(others) // 2
            split: list[tuple[int | None, bytes]] = [(j, honest) for j in others[:half]]
            split += [(j, twin) for j in others[half:]]
            src = node.index
            self._schedule(self.now + 0.3, lambda: self._send(src, twin))
            return split
        sends: list[tuple[int | None, bytes]] = [(None, honest)] if out.honest else []
        if out.instead is not None:
            sends.append((None, out.instead))
        sends += [(None, payload) for payload in out.extra]
        return sends

    def _poison(self, node: SimNode) -> Operation:
        """The operation an INVALID proposer adds: the always-invalid body, next nonce."""
        eng = node.engine
        nonce = (eng.committed_nonce(node.key) if eng is not None else 0) + 1
        return Operation.create(node.identity.sign, node.key, self.session_id, nonce, POISON)

    # -- checks ------------------------------------------------------------------------

    def agreement(self, nodes: Sequence[int] | None = None) -> bool:
        """No two chosen nodes committed different blocks at one height."""
        chosen = self.honest() if nodes is None else list(nodes)
        by_height: dict[int, bytes] = {}
        for i in chosen:
            for h, block in self.nodes[i].chain.items():
                if by_height.setdefault(h, block) != block:
                    return False
        return True

    def sets_agree(self, nodes: Sequence[int] | None = None) -> bool:
        """Every chosen live node derived the same validator set for every height it
        committed (and the next), and every certificate it committed is one of that set."""
        chosen = self.honest() if nodes is None else list(nodes)
        by_height: dict[int, tuple[bytes, ...]] = {}
        for i in chosen:
            node = self.nodes[i]
            eng = node.engine
            if eng is None:
                continue
            for h in range(1, eng.height + 2):
                keys = eng.validators_at(h)
                if by_height.setdefault(h, keys) != keys:
                    return False
            for h, cert in node.certs.items():
                if not cert.verify(eng.validators_at(h), self.session_id, eng.cache):
                    return False
        return True

    def valid(self, nodes: Sequence[int] | None = None) -> bool:
        """No chosen node committed an invalid (poison or unsigned) operation."""
        chosen = self.honest() if nodes is None else list(nodes)
        for i in chosen:
            for op in self.nodes[i].committed_ops:
                if op.body == POISON or op.submitter not in self.validators:
                    return False
        return True


# -- random fault schedules (for seed sweeps) -----------------------------------------


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """Outcome of :func:`run_random_scenario`: safety must hold always, liveness after heal."""

    seed: int
    n: int
    byzantine: dict[int, Behaviour]
    heights: tuple[int, ...]
    agreement: bool
    valid: bool
    double_signs: int
    live: bool

    @property
    def ok(self) -> bool:
        return self.agreement and self.valid and self.double_signs == 0 and self.live


def run_random_scenario(seed: int, store_dir: Path | None = None) -> ScenarioResult:
    """A seeded random session: 4-8 validators, up to f Byzantine, loss, a partition, crashes.

    Faults stop at t=8 s; every honest node must then reach the best height + 2 by t=60 s.
    Crashes need ``store_dir`` (a fresh directory per call).
    """
    rng = random.Random(seed)
    n = rng.randint(4, 8)
    f = (n - 1) // 3
    kinds = list(Behaviour)
    byz: dict[int, Behaviour] = {
        i: rng.choice(kinds) for i in rng.sample(range(n), rng.randint(0, f))
    }
    net = SimNetwork(
        n,
        seed=seed,
        link=LinkModel(delay=0.01, jitter=rng.uniform(0.0, 0.05), drop=rng.uniform(0.0, 0.08)),
        byzantine=byz,
        store_dir=store_dir,
    )
    net.start()
    net.load(rate=rng.uniform(1.0, 10.0), until=1e9)
    honest = net.honest()
    if rng.random() < 0.5:
        cut = set(rng.sample(range(n), rng.randint(1, n // 2)))
        start = rng.uniform(1.0, 4.0)
        net.at(start, lambda: net.split([cut, set(range(n)) - cut]))
        net.at(start + rng.uniform(0.5, 4.0), net.heal)
    if store_dir is not None:
        for _ in range(rng.randint(0, 4)):
            victim = rng.choice(honest)
            down = rng.uniform(0.5, 6.0)
            lose = rng.random() < 0.5
            net.at(down, functools.partial(net.crash, victim, lose_outbox=lose))
            net.at(down + rng.uniform(0.05, 2.0), functools.partial(net.restart, victim))
    net.run(8.0)
    for i in honest:  # anything still down comes back
        net.restart(i)
    target = max(net.height_of(i) for i in honest) + 2
    live = net.run_until_height(target, max_time=60.0)
    return ScenarioResult(
        seed,
        n,
        byz,
        tuple(net.height_of(i) for i in range(n)),
        net.agreement(),
        net.valid(),
        net.double_signs,
        live,
    )


# -- a lossless lock-step group, for unit tests ----------------------------------------

UNIT_SESSION = b"\x5e" * 16


def unit_identities(n: int) -> list[Identity]:
    return [Identity.from_seed(b"unit-%d" % i) for i in range(n)]


def unit_engines(
    n: int, config: EngineConfig | None = None, stores: Sequence[Store | None] | None = None
) -> list[ConsensusEngine[LedgerState]]:
    """``n`` engines of :data:`UNIT_SESSION` over :class:`LedgerApp` (not yet started)."""
    ids = unit_identities(n)
    keys = [i.signing_public for i in ids]
    return [
        ConsensusEngine(
            UNIT_SESSION, ident, keys, LedgerApp(), config, None if stores is None else stores[k]
        )
        for k, ident in enumerate(ids)
    ]


def exchange(
    group: Sequence[ConsensusEngine[LedgerState]],
    now: float,
    steps: int = 200,
    transform: Callable[[ConsensusEngine[LedgerState], Message], Message | None] | None = None,
) -> float:
    """Deliver every outbox to every other engine and fire timers until quiet.

    ``transform(sender, msg)`` may replace a message before delivery, or drop it (None).
    """
    for _ in range(steps):
        moved = False
        for eng in group:
            for msg in eng.outbox():
                moved = True
                out = msg if transform is None else transform(eng, msg)
                if out is None:
                    continue
                for other in group:
                    if other is not eng:
                        other.receive(now, out)
        if not moved:
            timers = [t for t in (e.next_timer() for e in group) if t is not None]
            if not timers:
                return now
            now = max(now, min(timers))
            for eng in group:
                eng.handle_timer(now)
        now += 0.001
    return now


def sweep(first: int, count: int, *, stores: bool = True) -> list[ScenarioResult]:
    """Run :func:`run_random_scenario` for seeds ``first .. first+count-1``."""
    import tempfile

    results = []
    for seed in range(first, first + count):
        if stores:
            with tempfile.TemporaryDirectory(prefix="ble-bridge-sweep-") as d:
                results.append(run_random_scenario(seed, Path(d)))
        else:
            results.append(run_random_scenario(seed))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ble_bridge.consensus.testing --seeds 10000``: the fault sweep as a soak."""
    import argparse
    import time

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--first", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    failed = 0
    for seed in range(args.first, args.first + args.seeds):
        (result,) = sweep(seed, 1)
        if not result.ok:
            failed += 1
            print(f"FAIL {result}", flush=True)
    elapsed = time.perf_counter() - started
    print(f"consensus-sweep seeds={args.seeds} failed={failed} seconds={elapsed:.1f}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
