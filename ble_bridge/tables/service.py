"""TableService: a node's runtime tables, its table directory and the commands on them.

The thin asyncio service over :mod:`.directory`, :mod:`.registry` and :mod:`.play`: one
timer (``tick_interval``) announces the runtime tables we sit at when their schedules say
so, plays our part in each roll, notices when a join or a leave took effect, and keeps
``tables.json`` up to date. Announcements heard from the mesh go to the directory.

Every request method checks what it can before anything is submitted and raises
:class:`~.errors.TableError` (one line, a reason) when the request cannot succeed now;
read methods return JSON-ready dicts. The control server calls these through its
``TableHost`` protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bridge import BridgeError, NetworkConsensusBridge, OperationStatus, SessionHealth
from ..chat.events import EventsConfig, TableChat, short_name
from ..consensus.app import BlockContext, InvalidOperation
from ..consensus.craps import CrapsApp, CrapsState, Phase, PhoneOp, Stage, encode_op
from ..consensus.engine import Committed, ConsensusEngine
from ..consensus.validators import RemoveReason, RemoveValidator, encode_set_op
from ..events import kv
from ..mesh.router import Delivered
from ..mesh.service import MeshNode
from ..wire.identity import Identity, verify_signature
from ..wire.packet import PacketType
from . import registry
from .directory import TABLE_ANNOUNCE_TYPE, AnnounceSchedule, TableAnnounce, TableDirectory
from .errors import TableError
from .genesis import GenesisError, TableGenesis
from .play import KIND_NAMES, RollPlanner, bet_kind, check_bet

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TablesConfig:
    """``[tables]``: runtime tables, their announcements and the directory."""

    default_seats: int = 8
    default_buy_in: int = 1000
    default_min_bet: int = 1
    announce_min_interval: float = 2.0  # seconds, while what we announce changes
    announce_max_interval: float = 60.0  # ...doubling up to this while it does not
    directory_capacity: int = 64  # tables remembered from announcements
    directory_ttl: float = 180.0  # a table unheard for this long leaves the list
    # a validator silent for this many heights is removed by the others (0: never); longer
    # than a restarted handheld needs to catch up and sign again
    silence_heights: int = 40
    withdraw_grace: float = 30.0  # s: after leaving with a join on its way, watch this long
    # a seat added while we watched that signed nothing for this many heights is removed,
    # and no second seat is added while one is so on probation (0: no probation)
    probation_heights: int = 16
    tick_interval: float = 0.5
    roll_retry: float = 8.0  # a commit/reveal not committed after this long is sent again
    # table events as public BitChat lines (runtime and pre-arranged tables alike)
    chat: bool = True
    chat_interval: float = 2.0  # at most one line per table this often


@dataclass(slots=True)
class RuntimeTable:
    genesis: TableGenesis
    role: str  # opened | joined
    join_nonce: int
    schedule: AnnounceSchedule
    leaving: bytes | None = None  # op id of our RemoveValidator while it is pending
    was_seated: bool = False
    # reached by :meth:`TableService.sit` (the table called NAME here): an older table of
    # the same name heard nearby wins and we move there (two people opened it at once, or
    # two groups sat down on the two sides of a partition)
    yields: bool = False
    move_to: bytes | None = None  # the older table we join once our leave here committed
    # left while our join was on its way: we watch until then, and if the join still
    # lands we commit our leave at once rather than leave a seat to be removed for silence
    withdraw_until: float | None = None


@dataclass(slots=True)
class _Sitting:
    """A table (runtime or pre-arranged) whose rolls we take part in."""

    name: str
    planner: RollPlanner
    ops: dict[bytes, float] = field(default_factory=dict)  # op id -> submitted at


class TableService:
    """See the module docstring. ``path``: the tables file (None: keep nothing)."""

    def __init__(
        self,
        identity: Identity,
        mesh: MeshNode,
        bridge: NetworkConsensusBridge,
        config: TablesConfig,
        *,
        nickname: str,
        path: Path | None,
        wall_ms: Callable[[], int] | None = None,
    ) -> None:
        self.identity = identity
        self.mesh = mesh
        self.bridge = bridge
        self.config = config
        self.nickname = nickname
        self.path = path
        # the mesh's wall clock (the simulator's is virtual, so runs repeat by seed)
        self._wall_ms = wall_ms or (lambda: mesh.router.wall_ms(self._now()))
        self.directory = TableDirectory(
            verify_signature, capacity=config.directory_capacity, ttl=config.directory_ttl
        )
        self.tables: dict[bytes, RuntimeTable] = {}
        self.names: dict[bytes, str] = {}  # every craps table we follow: id -> name
        self._sitting: dict[bytes, _Sitting] = {}
        self._autoplayed: set[bytes] = set()
        self.counters: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None
        self._last_nonce = 0
        self.chat = TableChat(
            identity.signing_public,
            EventsConfig(enabled=config.chat, interval=config.chat_interval),
        )
        self._chat_seen: dict[bytes, tuple[int, bool]] = {}  # table -> (height, healthy)
        self._phone_pending: dict[bytes, _PhonePending] = {}  # our phone ops in flight
        self._phone_held: list[_PhonePending] = []  # bets waiting for a betting window
        bridge.commit_hooks.append(self._on_commit)
        mesh.subscribe(TABLE_ANNOUNCE_TYPE, self._on_packet)

    # -- life --------------------------------------------------------------------------

    def adopt(self, session_id: bytes, name: str, *, autoplay: bool = False) -> None:
        """A pre-arranged ``[[session]]`` craps table: the commands work on it too."""
        self.names[session_id] = name
        if autoplay:
            self._autoplayed.add(session_id)

    def restore(self) -> int:
        """Reopen the tables of ``tables.json`` (the engines resume from the store)."""
        if self.path is None:
            return 0
        n = 0
        for rec in registry.load(self.path):
            sid = rec.genesis.session_id
            if sid in self.tables or sid in self.bridge.sessions:
                continue
            try:
                self._open_engine(rec.genesis)
            except BridgeError as exc:
                log.error("cannot reopen table %s: %s", rec.genesis.name, exc)
                continue
            self._add(rec.genesis, rec.role, rec.join_nonce).yields = rec.yields
            self._last_nonce = max(self._last_nonce, rec.join_nonce)
            n += 1
        return n

    async def start(self) -> None:
        for sid, t in self.tables.items():
            engine = self.bridge.engine(sid)
            if t.role == "joined" and not engine.is_validator and t.leaving is None:
                # asked before a restart and not in yet (or removed meanwhile): ask again
                self._request_join(t)
        self._task = asyncio.create_task(self._run(), name="tables")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                self.tick(self._now())
            except Exception:  # a bug here must not end the tables service
                self.counters["tick_error"] += 1
                log.exception("tables tick failed")
            await asyncio.sleep(self.config.tick_interval)

    # -- requests ----------------------------------------------------------------------

    def open(
        self,
        name: str,
        seats: int | None = None,
        buy_in: int | None = None,
        min_bet: int | None = None,
    ) -> dict[str, Any]:
        cfg = self.config
        if any(self.names.get(sid) == name for sid in self.names):
            raise TableError("table_exists", f"you already sit at a table named {name!r}")
        try:
            genesis = TableGenesis(
                name=name,
                opener=self.identity.signing_public,
                opener_nick=self.nickname,
                seats=cfg.default_seats if seats is None else seats,
                buy_in=cfg.default_buy_in if buy_in is None else buy_in,
                min_bet=cfg.default_min_bet if min_bet is None else min_bet,
                created_ms=self._wall_ms(),
                nonce=self.mesh.router.rng.getrandbits(64),
            )
        except GenesisError as exc:
            raise TableError("bad_table", str(exc)) from None
        self._open_engine(genesis)
        self._add(genesis, "opened", 0)
        self._save()
        self.counters["tables_opened"] += 1
        log.info(kv("table_opened", table=name, session=genesis.session_id.hex()))
        return self.show(genesis.session_id.hex())

    def sit(self, name: str) -> dict[str, Any]:
        """Join the table ``name`` heard nearby, or open it when none is heard (while we
        sit alone at it, an older table of that name heard later wins: we move there)."""
        if self._mine(name) is not None:
            return self.join(name)  # refused: already there or on the way
        found = [h for h in self.directory.find(self._now(), name) if h.name == name]
        free = [h for h in found if h.announce.seats_taken < h.announce.genesis.seats]
        if not free:
            if found:
                raise TableError("table_full", f"{name!r} is full")
            shown = self.open(name)
            self.tables[bytes.fromhex(shown["id"])].yields = True
            self._save()
            return shown
        # several of that name (opened at once, the younger ones moving to the oldest)
        oldest = min(free, key=lambda h: (h.announce.genesis.created_ms, h.session_id))
        shown = self.join(oldest.session_id.hex())
        self.tables[oldest.session_id].yields = True
        self._save()
        return shown

    def join(self, name: str) -> dict[str, Any]:
        mine = self._mine(name)
        back = self._withdrawn(name)
        if back is not None:  # left with the join on its way, and back before it landed
            back.withdraw_until = None
            self.names[back.genesis.session_id] = back.genesis.name
            if not self.bridge.engine(back.genesis.session_id).is_validator:
                back.join_nonce = self._next_nonce()
                self._request_join(back)
            self._save()
            return self.show(back.genesis.session_id.hex())
        if mine is not None:
            if self.bridge.engine(mine).is_validator:
                raise TableError("already_seated", f"you already sit at {name!r}")
            raise TableError("join_pending", f"your join request for {name!r} is on its way")
        now = self._now()
        found = self.directory.find(now, name)
        if not found:
            raise TableError(
                "unknown_table",
                f"no table {name!r} heard nearby (ble-bridge table list shows what is around)",
            )
        if len(found) > 1:
            ids = ", ".join(h.session_id.hex()[:8] for h in found)
            raise TableError("ambiguous_table", f"several tables are named {name!r}: {ids}")
        heard = found[0]
        ann = heard.announce
        if ann.seats_taken >= ann.genesis.seats:
            raise TableError("table_full", f"{name!r} is full ({ann.genesis.seats} seats)")
        genesis = ann.genesis
        self._open_engine(genesis)
        t = self._add(genesis, "joined", self._next_nonce())
        self._request_join(t)
        self._save()
        self.counters["joins_requested"] += 1
        return self.show(genesis.session_id.hex())

    def leave(self, name: str) -> dict[str, Any]:
        sid = self._resolve(name)
        t = self.tables.get(sid)
        if t is None:
            raise TableError("not_runtime", f"{name!r} is a pre-arranged table (config.toml)")
        engine = self.bridge.engine(sid)
        if not engine.is_validator:
            # not seated (yet): nothing to commit; watch in case the join still lands
            self._withdraw(t)
            return {"table": t.genesis.name, "id": sid.hex(), "left": True, "op": None}
        if len(engine.validators) <= 1:
            raise TableError("last_validator", "you are the last seat: the table would end")
        if t.leaving is not None:
            raise TableError("leave_pending", "your leave is already on its way")
        pid = self._submit(sid, self._leave_op())
        t.leaving = pid
        return {"table": t.genesis.name, "id": sid.hex(), "left": False, "op": pid.hex()}

    def bet(self, table: str, kind: str, amount: int) -> dict[str, Any]:
        sid = self._resolve(table)
        k = bet_kind(kind)
        state = self._state(sid)
        if not self.bridge.engine(sid).is_validator:
            raise TableError("not_seated", f"you do not sit at {table!r} (yet)")
        body = check_bet(state, self.identity.signing_public, table, k, amount)
        pid = self._submit(sid, body)
        self.counters["bets_submitted"] += 1
        return {"table": self.names[sid], "op": pid.hex(), "kind": kind, "amount": amount}

    # -- reads -------------------------------------------------------------------------

    def listing(self) -> list[dict[str, Any]]:
        now = self._now()
        rows: dict[bytes, dict[str, Any]] = {}
        for h in self.directory.entries(now):
            g = h.announce.genesis
            rows[h.session_id] = {
                "name": g.name,
                "id": h.session_id.hex(),
                "opener": g.opener_nick or g.opener.hex()[:8],
                "seats_taken": h.announce.seats_taken,
                "seats": g.seats,
                "players": h.announce.players,
                "height": h.announce.height,
                "hops": h.hops,
                "last_heard": round(now - h.last_heard, 1),
                "announcer": h.announce.nickname,
                "buy_in": g.buy_in,
                "min_bet": g.min_bet,
                "here": False,
            }
        for sid, name in self.names.items():
            engine = self.bridge.engine(sid)
            state = engine.state
            if not isinstance(state, CrapsState):
                continue
            t = self.tables.get(sid)
            row = rows.setdefault(
                sid,
                {
                    "name": name,
                    "id": sid.hex(),
                    "opener": t.genesis.opener_nick if t is not None else "(config)",
                    "hops": 0,
                    "last_heard": None,
                    "announcer": self.nickname,
                },
            )
            seated = self._seat_counts(state)
            row.update(
                seats_taken=seated[0],
                seats=state.rules.seats or len(state.validators),
                players=seated[1],
                height=max(engine.height, int(row.get("height") or 0)),
                buy_in=state.rules.starting_balance,
                min_bet=state.rules.min_bet,
                here=True,
                seated=engine.is_validator,
            )
        return sorted(rows.values(), key=lambda r: (r["name"], r["id"]))

    def show(self, table: str) -> dict[str, Any]:
        sid = self._resolve(table)
        engine = self.bridge.engine(sid)
        state = self._state(sid)
        me = self.identity.signing_public
        ages = self.bridge.contact_ages(sid)
        nicks = self._nicknames()
        validators = []
        for key in engine.validators:
            age = ages.get(key)
            validators.append(
                {
                    "key": key.hex(),
                    "nickname": self.nickname if key == me else nicks.get(key, ""),
                    "me": key == me,
                    "heard_s_ago": None if age is None else round(age, 1),
                    "in_contact": age is not None and age <= self.bridge.config.contact_timeout,
                    "silent_heights": engine.silent_heights(key),
                    "balance": state.balance_of(key),
                }
            )
        t = self.tables.get(sid)
        seats_taken, players = self._seat_counts(state)
        return {
            "table": self.names[sid],
            "id": sid.hex(),
            "runtime": t is not None,
            "opener": t.genesis.opener_nick if t is not None else None,
            "height": engine.height,
            "health": self.bridge.health(sid).value,
            "seated": engine.is_validator,
            "joining": t is not None and t.role == "joined" and not engine.is_validator,
            "leaving": t is not None and t.leaving is not None,
            "phase": "point" if state.phase == Phase.POINT else "come-out",
            "point": state.point or None,
            "stage": "betting" if state.stage == Stage.BETTING else "revealing",
            "round": state.round,
            "seats": state.rules.seats or len(state.validators),
            "seats_taken": seats_taken,
            "players": players,
            "buy_in": state.rules.starting_balance,
            "min_bet": state.rules.min_bet,
            "bank": state.bank,
            "bets": [
                {
                    "player": b.player.hex(),
                    "nickname": self.nickname if b.player == me else nicks.get(b.player, ""),
                    "kind": KIND_NAMES[b.kind],
                    "amount": b.amount,
                }
                for b in state.bets
            ],
            "balances": {k.hex(): v for k, v in state.balances},
            "balance": state.balance_of(me),
            "validators": validators,
        }

    def balance(self, table: str | None) -> list[dict[str, Any]]:
        sids = [self._resolve(table)] if table is not None else list(self.names)
        me = self.identity.signing_public
        out = []
        for sid in sids:
            state = self.bridge.engine(sid).state
            if not isinstance(state, CrapsState):
                continue
            out.append(
                {
                    "table": self.names[sid],
                    "balance": state.balance_of(me),
                    "on_table": sum(b.amount for b in state.bets if b.player == me),
                    "height": self.bridge.engine(sid).height,
                }
            )
        return out

    def history(self, table: str) -> dict[str, Any]:
        sid = self._resolve(table)
        state = self._state(sid)
        nicks = self._nicknames()
        return {
            "table": self.names[sid],
            "height": self.bridge.engine(sid).height,
            "rolls": [{"dice": [d1, d2], "total": d1 + d2} for d1, d2 in state.history],
            "cashed_out": [
                {"player": k.hex(), "nickname": nicks.get(k, ""), "amount": v}
                for k, v in state.cashed_out
            ],
        }

    def status(self) -> list[dict[str, Any]]:
        """The runtime tables for ``status``: like [[session]] rows."""
        rows = []
        for sid, t in self.tables.items():
            engine = self.bridge.engine(sid)
            rows.append(
                {
                    "name": t.genesis.name,
                    "id": sid.hex(),
                    "app": "craps",
                    "runtime": True,
                    "height": engine.height,
                    "round": engine.round,
                    "state_hash": engine.state_hash.hex(),
                    "health": self.bridge.health(sid).value,
                    "validators": len(engine.validators),
                    "seated": engine.is_validator,
                    "active_participants": self.bridge.active_participants(sid),
                    "pending_operations": len(self.bridge.pending_operations(sid)),
                }
            )
        return rows

    def session_by_name(self, name: str) -> bytes:
        return self._resolve(name)

    def phone_command(self, now: float, text: str, announce: bytes, message: bytes) -> str:
        """A phone's public ``!join TABLE`` / ``!bet TABLE KIND N`` (its own signed frames):
        checked here as every validator will check it, then submitted as a PhoneOp. A bet
        that comes while the dice roll (``wrong_stage``) is held (bounded) and submitted when
        the next betting window opens. The reply is one short line naming the phone; another
        says when the op committed."""
        words = text.split()
        table = words[1] if len(words) > 1 else ""
        # case-insensitive, as the validators compare it (phone_proof.parse_command)
        sid = next((k for k, n in self.names.items() if n.lower() == table.lower()), None)
        if sid is None or sid not in self.bridge.sessions:
            self.counters["phone_unknown_table"] += 1
            return f"no table {table[:20]!r} here; !tables lists them"
        engine = self.bridge.engine(sid)
        name = self.names[sid]
        if not engine.is_validator or not isinstance(engine.state, CrapsState):
            self.counters["phone_not_seated"] += 1
            return f"this node does not sit at {name}; ask near its players"
        if not isinstance(engine.app, CrapsApp):
            return f"{name} takes no phone players"
        op = PhoneOp(announce, message)
        try:
            cmd = engine.app.phone_command(op)  # the proofs (cached: the check repeats it)
        except InvalidOperation as exc:
            self.counters[f"phone_refused_{exc.reason}"] += 1
            return f"{name}: refused ({_PHONE_REFUSALS.get(exc.reason, exc.reason)})"
        who = cmd.nickname[:24]
        what = f"{cmd.verb} {cmd.amount} {cmd.kind}" if cmd.verb == "bet" else "join"
        pending = _PhonePending(sid, encode_op(op), f"{who}: {what}", name, cmd.key, cmd.verb)
        reason = self._submit_phone(engine, pending)
        if reason == "wrong_stage" and cmd.verb == "bet":
            self._hold_phone(pending)
            return f"{who}: {what} held for the next roll at {name}"
        if reason is not None:
            return f"{who}: {what} at {name} refused ({_PHONE_REFUSALS.get(reason, reason)})"
        return f"{who}: {what} sent to {name}; a line follows when it is in"

    def _submit_phone(self, engine: ConsensusEngine[Any], p: _PhonePending) -> str | None:
        """Check ``p`` against the committed state and submit it; None, or why not."""
        state = engine.state
        try:
            ctx = BlockContext(engine.height + 1, self.identity.signing_public, engine.validators)
            engine.app.check(state, self.identity.signing_public, p.body, ctx)
        except (InvalidOperation, ValueError) as exc:
            reason = exc.reason if isinstance(exc, InvalidOperation) else "phone_bad_frame"
            self.counters[f"phone_refused_{reason}"] += 1
            return reason
        try:
            pid = self.bridge.submit_operation(p.session, p.body)
        except BridgeError as exc:
            self.counters[f"phone_submit_{exc.reason}"] += 1
            return "busy"
        self.counters["phone_ops"] += 1
        self._phone_pending[pid] = p
        while len(self._phone_pending) > 64:
            self._phone_pending.pop(next(iter(self._phone_pending)))
            self.counters["phone_pending_evicted"] += 1
        return None

    def _hold_phone(self, p: _PhonePending) -> None:
        """Keep a bet for the next betting window (at most ``MAX_HELD_PHONE_OPS``, each for
        ``PHONE_HOLD_ROUNDS`` windows; the oldest goes first, counted)."""
        p.holds += 1
        if p.holds > PHONE_HOLD_ROUNDS:
            self.counters["phone_hold_gave_up"] += 1
            self._phone_say(f"{p.what} at {p.name} refused (missed {PHONE_HOLD_ROUNDS} rolls)")
            return
        self._phone_held.append(p)
        self.counters["phone_held"] += 1
        while len(self._phone_held) > MAX_HELD_PHONE_OPS:
            self._phone_held.pop(0)
            self.counters["phone_held_evicted"] += 1

    def _release_held(self, session_id: bytes) -> None:
        """The betting window of ``session_id`` is open: submit the bets held for it."""
        if not any(p.session == session_id for p in self._phone_held):
            return
        engine = self.bridge.engine(session_id)
        state = engine.state
        if not isinstance(state, CrapsState) or state.stage != Stage.BETTING:
            return
        held = [p for p in self._phone_held if p.session == session_id]
        self._phone_held = [p for p in self._phone_held if p.session != session_id]
        for p in held:
            reason = self._submit_phone(engine, p)
            if reason is not None:
                why = _PHONE_REFUSALS.get(reason, reason)
                self._phone_say(f"{p.what} at {p.name} refused ({why})")
            else:
                self.counters["phone_held_released"] += 1

    def _phone_say(self, line: str) -> None:
        try:
            self.mesh.send(PacketType.MESSAGE, _short(line).encode("utf-8"))
        except ValueError:
            self.counters["chat_send_refused"] += 1
            return
        self.counters["phone_replies"] += 1

    def _on_commit(self, session_id: bytes, ev: Committed) -> None:
        """Answer a phone as soon as its op commits (not at the next tick); submit the bets
        held for a betting window that this block opened."""
        if self._phone_pending and any(op.op_id in self._phone_pending for op in ev.ops):
            self._phone_replies(committed={op.op_id for op in ev.ops})
        if self._phone_held:
            self._release_held(session_id)

    def _phone_replies(self, committed: set[bytes] | None = None) -> None:
        """One public line per phone op of ours that committed or failed: the committed
        reply (the table's own line may wait behind others, rate-limited). A bet that
        failed because the dice were rolling by the time it reached a block is held for the
        next window instead."""
        for pid, p in list(self._phone_pending.items()):
            op = self.bridge.operation(pid)
            done = committed is not None and pid in committed
            if not done and (op is None or op.status is OperationStatus.PENDING):
                if op is None:
                    del self._phone_pending[pid]
                continue
            del self._phone_pending[pid]
            state = (
                self.bridge.engine(p.session).state if p.session in self.bridge.sessions else None
            )
            if done or (op is not None and op.status is OperationStatus.COMMITTED):
                bal = state.phone_balance(p.key) if isinstance(state, CrapsState) else None
                line = f"{p.what} in at {p.name}" + (f", balance {bal}" if bal is not None else "")
            else:
                why = op.reason if op is not None else ""
                if why == "wrong_stage" and p.verb == "bet":
                    self._hold_phone(p)
                    continue
                reason = _PHONE_REFUSALS.get(why, why or "not committed")
                line = f"{p.what} at {p.name} refused ({reason})"
            self._phone_say(line)

    # -- the tick ----------------------------------------------------------------------

    def tick(self, now: float) -> None:
        for sid, t in list(self.tables.items()):
            engine = self.bridge.engine(sid)
            if t.withdraw_until is not None:
                self._watch_withdrawn(now, t, engine)
                continue
            if engine.is_validator and not t.was_seated:
                t.was_seated = True
                self.counters["seated"] += 1
                log.info(kv("table_seated", table=t.genesis.name, height=engine.height))
            if t.leaving is not None:
                op = self.bridge.operation(t.leaving)
                if not engine.is_validator or (
                    op is not None and op.status is OperationStatus.COMMITTED
                ):
                    self.counters["left"] += 1
                    move = t.move_to
                    self._forget(sid)
                    if move is not None:
                        self._move_to(move)
                    continue
                if op is None or op.status is OperationStatus.FAILED:
                    t.leaving = None  # refused or lost: the person may try again
                    t.move_to = None
            elif t.was_seated and not engine.is_validator:
                # removed by the others (we were silent): stay a follower, ask again
                t.was_seated = False
                self.counters["removed"] += 1
                t.join_nonce = self._next_nonce()
                self._request_join(t)
                self._save()
            if t.yields and t.leaving is None and self._yield(now, t, engine):
                continue
            if engine.is_validator:
                self._maybe_announce(now, t, engine)
        self._play(now)
        self._chat_events(now)
        self._phone_replies()

    def _chat_events(self, now: float) -> None:
        """Feed the tables' committed states to the chat; send the lines that are due."""
        if not self.config.chat:
            return
        nicks: dict[bytes, str] | None = None
        for sid, name in list(self.names.items()):
            if sid not in self.bridge.sessions:
                continue
            engine = self.bridge.engine(sid)
            state = engine.state
            if not isinstance(state, CrapsState):
                continue
            seen = (engine.height, self.bridge.health(sid) is SessionHealth.ACTIVE)
            if self._chat_seen.get(sid) == seen:
                continue
            self._chat_seen[sid] = seen
            if nicks is None:
                nicks = self._nicknames()
                nicks[self.identity.signing_public] = self.nickname or "me"
            self.chat.observe(
                now,
                sid,
                name,
                engine.height,
                state,
                healthy=seen[1],
                nick=_nick_of(nicks),
            )
        if not self.mesh.router.peers.links:
            return  # nobody would hear it: the lines wait (bounded) for the first link
        for line in self.chat.due(now):
            try:
                self.mesh.send(PacketType.MESSAGE, line.encode("utf-8"))
            except ValueError:
                self.counters["chat_send_refused"] += 1
                continue
            self.counters["chat_lines"] += 1

    def _yield(self, now: float, t: RuntimeTable, engine: ConsensusEngine[Any]) -> bool:
        """Move to an older table of the same name heard nearby with a seat free (the
        oldest by genesis creation time, then id: the same choice at every node, and never
        back). Not seated yet, or seated alone: go at once. Seated with others: commit our
        leave first (the others keep their quorum) and join once it committed; a table that
        lost its quorum (a member crashed for good) cannot commit it, so we just go."""
        older = self._older(now, t)
        if older is None:
            return False
        me = self.identity.signing_public
        name = t.genesis.name
        if engine.is_validator and engine.validators != (me,):
            if self.bridge.health(t.genesis.session_id) is SessionHealth.ACTIVE:
                try:
                    t.leaving = self.bridge.submit_operation(t.genesis.session_id, self._leave_op())
                except BridgeError as exc:
                    self.counters[f"move_leave_refused_{exc.reason}"] += 1
                    return False
                t.move_to = older
                self.counters["table_move_leaves"] += 1
                log.info(kv("table_move", table=name, why="an older one is near", leave=True))
                return False
            self.counters["table_move_paused"] += 1
        log.info(kv("table_move", table=name, why="an older one is near"))
        if engine.is_validator:
            self._forget(t.genesis.session_id)
        else:
            self._withdraw(t)
        self._move_to(older)
        return True

    def _withdraw(self, t: RuntimeTable) -> None:
        """Leave a table we are not seated at yet: stop asking; it leaves our names (the
        commands no longer see it) and the tables file; :meth:`_watch_withdrawn` follows."""
        sid = t.genesis.session_id
        self.bridge.engine(sid).cancel_join()
        t.withdraw_until = self._now() + self.config.withdraw_grace
        self.names.pop(sid, None)
        self._sitting.pop(sid, None)
        self.counters["joins_withdrawn"] += 1
        self._save()

    def _watch_withdrawn(self, now: float, t: RuntimeTable, engine: ConsensusEngine[Any]) -> None:
        sid = t.genesis.session_id
        if engine.is_validator:  # the join landed after all: give the seat back
            t.withdraw_until = None
            try:
                t.leaving = self.bridge.submit_operation(sid, self._leave_op())
            except BridgeError as exc:
                self.counters[f"withdraw_leave_refused_{exc.reason}"] += 1
                self._forget(sid)
                return
            t.was_seated = True
            self.counters["withdraw_leaves"] += 1
        elif t.withdraw_until is not None and now >= t.withdraw_until:
            self._forget(sid)

    def _withdrawn(self, name: str) -> RuntimeTable | None:
        for sid, t in self.tables.items():
            if t.withdraw_until is not None and (
                t.genesis.name == name or (len(name) >= 4 and sid.hex().startswith(name.lower()))
            ):
                return t
        return None

    def _older(self, now: float, t: RuntimeTable) -> bytes | None:
        """The oldest table named like ``t``, older than it, heard with a seat free."""
        ours = (t.genesis.created_ms, t.genesis.session_id)
        best: tuple[int, bytes] | None = None
        for h in self.directory.find(now, t.genesis.name):
            g = h.announce.genesis
            if h.name != t.genesis.name or h.announce.seats_taken >= g.seats:
                continue
            key = (g.created_ms, h.session_id)
            if key < ours and (best is None or key < best):
                best = key
        return None if best is None else best[1]

    def _move_to(self, sid: bytes) -> None:
        self.counters["tables_merged"] += 1
        try:
            self.join(sid.hex())
        except TableError as exc:
            self.counters[f"merge_refused_{exc.reason}"] += 1
            return
        self.tables[sid].yields = True
        self._save()

    def _maybe_announce(self, now: float, t: RuntimeTable, engine: ConsensusEngine[Any]) -> None:
        state = engine.state
        if not isinstance(state, CrapsState):
            return
        taken, players = self._seat_counts(state)
        key = (taken, players)
        if not t.schedule.due(now, key, full=taken >= t.genesis.seats):
            return
        ttl = self.mesh.router.config.ttl
        ann = TableAnnounce(
            t.genesis,
            self.identity.signing_public,
            self.nickname,
            taken,
            players,
            engine.height,
            ttl,
        ).signed(self.identity.sign)
        try:
            self.mesh.send(TABLE_ANNOUNCE_TYPE, ann.encode(), ttl=ttl)
        except ValueError:
            self.counters["announce_oversized"] += 1
            return
        t.schedule.sent_now(now, key)
        self.counters["announcements_sent"] += 1

    def _play(self, now: float) -> None:
        me = self.identity.signing_public
        for sid in list(self.names):
            if sid in self._autoplayed or sid not in self.bridge.sessions:
                continue
            engine = self.bridge.engine(sid)
            state = engine.state
            if not engine.is_validator or not isinstance(state, CrapsState):
                continue
            sit = self._sitting.get(sid)
            if sit is None:
                sit = _Sitting(self.names[sid], RollPlanner(me, sid, self.identity.sign))
                self._sitting[sid] = sit
            for body in sit.planner.next_ops(state, now, self.config.roll_retry):
                try:
                    pid = self.bridge.submit_operation(sid, body)
                except BridgeError as exc:
                    self.counters[f"roll_refused_{exc.reason}"] += 1
                    continue
                self.counters["roll_ops"] += 1
                sit.ops[pid] = now
            if len(sit.ops) > 64:
                sit.ops = dict(list(sit.ops.items())[-32:])

    # -- inbound -----------------------------------------------------------------------

    def _on_packet(self, event: Delivered) -> None:
        packet = event.packet
        heard = self.directory.receive(event.received_at, packet.payload, packet.ttl)
        if heard is None:
            return
        t = self.tables.get(heard.session_id)
        if t is not None and heard.announce.announcer != self.identity.signing_public:
            engine = self.bridge.engine(heard.session_id)
            t.schedule.heard_other(event.received_at, heard.announce.height, engine.height)
        if t is None:
            self._rival_heard(event.received_at, heard.announce.genesis)

    def _rival_heard(self, now: float, rival: TableGenesis) -> None:
        """A younger table named like one we sit at: announce ours soon, so its members
        hear the older table and move (they may have missed our last announcement: one
        that restarted, say, and opened its own meanwhile). The validators take turns
        (a per-rival order), and whoever goes first spares the others."""
        for sid, t in self.tables.items():
            g = t.genesis
            if g.name != rival.name or (g.created_ms, sid) >= (rival.created_ms, rival.session_id):
                continue
            if t.withdraw_until is not None or sid not in self.bridge.sessions:
                continue
            engine = self.bridge.engine(sid)
            if not engine.is_validator:
                continue
            me = self.identity.signing_public
            order = sorted(
                engine.validators, key=lambda v: hashlib.sha256(rival.session_id + v).digest()
            )
            turn = order.index(me) if me in order else len(order)
            t.schedule.soon(now, self.config.announce_min_interval * (1 + turn))

    # -- helpers -----------------------------------------------------------------------

    def _open_engine(self, genesis: TableGenesis) -> None:
        engine_cfg = dataclasses.replace(
            self.bridge.config.engine,
            max_validators=genesis.seats,
            silence_heights=self.config.silence_heights,
            probation_heights=self.config.probation_heights,
        )
        try:
            self.bridge.open_session(
                genesis.session_id,
                [genesis.opener],
                CrapsApp(genesis.rules, genesis.name),
                engine_cfg,
            )
        except BridgeError as exc:
            if exc.reason == "too_many_sessions":
                raise TableError("too_many_tables", "this node follows too many tables") from None
            raise TableError(exc.reason, f"cannot open the table: {exc}") from None

    def _add(self, genesis: TableGenesis, role: str, nonce: int) -> RuntimeTable:
        c = self.config
        t = RuntimeTable(
            genesis,
            role,
            nonce,
            AnnounceSchedule(self._now(), c.announce_min_interval, c.announce_max_interval),
        )
        sid = genesis.session_id
        self.tables[sid] = t
        self.names[sid] = genesis.name
        return t

    def _forget(self, sid: bytes) -> None:
        self.tables.pop(sid, None)
        self.names.pop(sid, None)
        self._sitting.pop(sid, None)
        self._chat_seen.pop(sid, None)
        self.chat.forget(sid)
        self.bridge.close_session(sid)
        self._save()

    def _request_join(self, t: RuntimeTable) -> None:
        try:
            self.bridge.request_join(t.genesis.session_id, t.join_nonce, t.genesis.buy_in)
        except BridgeError as exc:
            self.counters[f"join_refused_{exc.reason}"] += 1

    def _leave_op(self) -> bytes:
        """Our RemoveValidator (leave), with a join-nonce floor above every join request
        we ever signed: none still on the air (one we asked again over, say) can seat us
        again after we left."""
        me = self.identity.signing_public
        return encode_set_op(RemoveValidator(me, RemoveReason.LEAVE, self._next_nonce()))

    def _next_nonce(self) -> int:
        self._last_nonce = max(self._last_nonce + 1, self._wall_ms())
        return self._last_nonce

    def _submit(self, sid: bytes, body: bytes) -> Any:
        try:
            return self.bridge.submit_operation(sid, body)
        except BridgeError as exc:
            if exc.reason == "pending_full":
                raise TableError("busy", "too many operations in flight; try again") from None
            if exc.reason == "not_validator":
                raise TableError("not_seated", "you do not sit at this table") from None
            raise TableError(exc.reason, str(exc)) from None

    def _mine(self, name: str) -> bytes | None:
        for sid, n in self.names.items():
            if n == name or (len(name) >= 4 and sid.hex().startswith(name.lower())):
                return sid
        return None

    def _resolve(self, name: str) -> bytes:
        sid = self._mine(name)
        if sid is None or sid not in self.bridge.sessions:
            raise TableError(
                "unknown_table",
                f"you do not sit at a table {name!r} (ble-bridge table list; table join NAME)",
            )
        return sid

    def _state(self, sid: bytes) -> CrapsState:
        state = self.bridge.engine(sid).state
        if not isinstance(state, CrapsState):
            raise TableError("not_craps", f"{self.names[sid]!r} is not a craps table")
        return state

    @staticmethod
    def _seat_counts(state: CrapsState) -> tuple[int, int]:
        seated = set(state.validators)
        return len(seated), sum(1 for k, _ in state.balances if k not in seated)

    def _nicknames(self) -> dict[bytes, str]:
        out = {}
        for rec in self.mesh.router.peers:
            if rec.signing_key is not None and rec.nickname:
                out[rec.signing_key] = rec.nickname
        return out

    def _save(self) -> None:
        if self.path is None:
            return
        records = [
            registry.TableRecord(t.genesis, t.role, t.join_nonce, t.yields)
            for t in self.tables.values()
            if t.withdraw_until is None
        ]
        try:
            registry.save(self.path, records)
        except OSError as exc:
            self.counters["save_failed"] += 1
            log.error("cannot write %s: %s", self.path, exc)

    def _now(self) -> float:
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return 0.0


MAX_HELD_PHONE_OPS = 32
PHONE_HOLD_ROUNDS = 3  # betting windows a held bet may miss before it is refused


@dataclass(slots=True)
class _PhonePending:
    """A phone op this node submits: who and what (``NICK: bet 10 pass``), its table."""

    session: bytes
    body: bytes
    what: str
    name: str
    key: bytes  # the phone's signing key (its account)
    verb: str  # join | bet
    holds: int = 0  # betting windows it has been held for


_PHONE_REFUSALS = {
    "phone_wrong_table": "wrong table name",
    "phone_malformed": "usage: !bet TABLE pass|dont-pass|field N",
    "phone_replayed": "already counted",
    "phone_replayed_old": "already counted",
    "not_joined": "!join the table first",
    "already_joined": "you sit there already",
    "insufficient_balance": "balance too small",
    "below_min_bet": "below the minimum bet",
    "wrong_stage": "dice rolling, try again soon",
    "wrong_phase": "pass/dont-pass on the come-out only",
    "too_many_bets": "enough bets this roll",
    "table_full": "no room for more phone players",
    "bank_exposure": "the bank cannot cover it",
}


def _short(line: str, limit: int = 99) -> str:
    raw = line.encode("utf-8")
    return line if len(raw) <= limit else raw[: limit - 3].decode("utf-8", "ignore") + "..."


def _nick_of(nicks: dict[bytes, str]) -> Callable[[bytes], str]:
    return lambda k: nicks.get(k) or short_name(k)


__all__ = ["RuntimeTable", "TableService", "TablesConfig"]
