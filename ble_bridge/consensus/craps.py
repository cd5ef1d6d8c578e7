"""The default application: a BitCraps table with commit-reveal dice and a token ledger.

One state per session (epoch). Validators join as players with a starting balance drawn
from an unclaimed pool; the house bank is funded at genesis, so every token is always in
exactly one of: the bank, the unclaimed pool, a player's balance, or a bet on the table.

A roll is a commit-reveal round. While the table is ``BETTING``, joined players place
bets and commit to 32-byte secrets; the table closes (at the end of a block) once every
active player has committed or ``commit_window`` heights after the first commit. While
``REVEALING``, committers reveal; once all have revealed or ``reveal_window`` heights have
passed, non-revealers forfeit their bets to the bank and the dice come from a hash of the
reveals that arrived, in canonical (player key) order. Every stage change happens in
:meth:`CrapsApp.end_block`, so the order of operations inside a block never matters for it.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import TypeVar

from ble_bridge.consensus.app import BlockContext, InvalidOperation
from ble_bridge.consensus.phone_proof import (
    MAX_PROOF_FRAME,
    PhoneCommand,
    ReplayWindow,
    verify_phone_command,
)

KEY_LEN = 32
SECRET_LEN = 32
MAX_VALIDATORS = 1024
MAX_SNAPSHOT_BYTES = 1 << 20
MAX_TOKENS = 1 << 62
ROUND_MOD = 1 << 32

_COMMIT_DOMAIN = b"bitcraps/commit/v1"
_DICE_DOMAIN = b"bitcraps/dice/v1"
_TABLE_DOMAIN = b"bitcraps/table/v1"
_SNAPSHOT_MAGIC = b"BCRP"
_SNAPSHOT_VERSION = 2
MAX_SEATS = 16
MAX_PHONE_PLAYERS = 32  # phone players (accounts without a seat) per table
MAX_PHONE_BETS_PER_ROUND = 4  # bets a phone player may place in one roll
_SNAPSHOT_VERSION_PHONES = 3  # written only when the state has phone players
_NO_REPLAY = ReplayWindow()

_V = TypeVar("_V")


class BetKind(IntEnum):
    """The bets the table offers."""

    PASS_LINE = 1
    DONT_PASS = 2
    FIELD = 3


class Phase(IntEnum):
    """Craps phase: the come-out roll, or rolling for an established point."""

    COME_OUT = 0
    POINT = 1


class Stage(IntEnum):
    """Commit-reveal stage of the current roll."""

    BETTING = 0
    REVEALING = 1


POINT_NUMBERS = frozenset({4, 5, 6, 8, 9, 10})
_CONTRACT_BETS = frozenset({BetKind.PASS_LINE, BetKind.DONT_PASS})


@dataclass(frozen=True, slots=True)
class TableRules:
    """Parameters of a table; part of the state so replicas with different rules diverge loudly."""

    starting_balance: int = 1000  # also the buy-in of a player seated at runtime
    bank_fund_per_validator: int = 10_000
    commit_window: int = 6
    reveal_window: int = 6
    history_limit: int = 64
    seats: int = 0  # seats of a table formed at runtime (1..16); 0: a pre-arranged session
    min_bet: int = 1

    def __post_init__(self) -> None:
        if not (self.seats == 0 or 1 <= self.seats <= MAX_SEATS):
            raise ValueError(f"seats must be 1..{MAX_SEATS}")
        if not 1 <= self.min_bet <= 1 << 32:
            raise ValueError("min_bet out of range")
        if not 1 <= self.starting_balance <= 1 << 40:
            raise ValueError("starting_balance out of range")
        if not 0 <= self.bank_fund_per_validator <= 1 << 40:
            raise ValueError("bank_fund_per_validator out of range")
        if not 1 <= self.commit_window <= 100_000 or not 1 <= self.reveal_window <= 100_000:
            raise ValueError("commit/reveal window out of range")
        if not 0 <= self.history_limit <= 4096:
            raise ValueError("history_limit out of range")


@dataclass(frozen=True, slots=True)
class Bet:
    """Tokens a player has on the table for one kind of bet (escrowed out of the balance)."""

    player: bytes
    kind: BetKind
    amount: int


@dataclass(frozen=True, slots=True)
class CrapsState:
    """The whole table; immutable, every tuple kept in canonical (sorted) order.

    ``round`` counts commit-reveal rounds (one roll each); ``deadline`` is the height at
    whose end the current stage closes (0 while betting and nobody has committed yet).

    Seats: ``validators`` are the seated players (each a validator of the session); at a
    table formed at runtime they sit down with the buy-in when their AddValidator commits
    and cash out when their RemoveValidator does (``minted`` counts the tokens that came in
    and went out that way, so the ledger still balances). ``balances`` is keyed by player
    key: players who are not validators (e.g. phones) can be added later without changing
    how seats work.
    """

    rules: TableRules
    validators: tuple[bytes, ...]
    balances: tuple[tuple[bytes, int], ...]
    banned: tuple[bytes, ...]
    bank: int
    unclaimed: int
    phase: Phase = Phase.COME_OUT
    point: int = 0
    stage: Stage = Stage.BETTING
    round: int = 0
    deadline: int = 0
    bets: tuple[Bet, ...] = ()
    commits: tuple[tuple[bytes, bytes], ...] = ()
    reveals: tuple[tuple[bytes, bytes], ...] = ()
    history: tuple[tuple[int, int], ...] = ()
    # tokens brought in by players seated at runtime minus those cashed out (may be < 0)
    minted: int = 0
    # players who left, with what they took (the last few; for ``history``)
    cashed_out: tuple[tuple[bytes, int], ...] = ()
    # phone players (BitChat users without a seat), by Ed25519 key: balances, bets placed
    # this roll, and the committed window of their packets already applied
    phones: tuple[tuple[bytes, int], ...] = ()
    phone_bets: tuple[tuple[bytes, int], ...] = ()
    replay: ReplayWindow = _NO_REPLAY

    @property
    def supply(self) -> int:
        """Tokens that exist in this session: the genesis funds of the bank and of every
        seat, plus what seats that opened or closed at runtime brought or took."""
        n = len(self.validators)
        return n * (self.rules.bank_fund_per_validator + self.rules.starting_balance) + self.minted

    @property
    def seats_free(self) -> int | None:
        """Seats still free at a table formed at runtime (None: a pre-arranged session)."""
        if not self.rules.seats:
            return None
        return max(0, self.rules.seats - len(self.validators))

    @property
    def escrow(self) -> int:
        """Tokens currently bet (held on the table)."""
        return sum(b.amount for b in self.bets)

    @property
    def total_tokens(self) -> int:
        """Bank + unclaimed + balances + escrow; always equals :attr:`supply`."""
        phones = sum(v for _, v in self.phones)
        return self.bank + self.unclaimed + sum(v for _, v in self.balances) + phones + self.escrow

    @property
    def exposure(self) -> int:
        """The most the bank could pay out on the bets now on the table."""
        return sum(_max_win(b.kind, b.amount) for b in self.bets)

    def balance_of(self, player: bytes) -> int | None:
        """A joined player's balance, or None when ``player`` has not joined."""
        return _lookup(self.balances, player)

    def phone_balance(self, player: bytes) -> int | None:
        """A phone player's balance, or None when ``player`` has no phone account here."""
        return _lookup(self.phones, player)

    def is_joined(self, player: bytes) -> bool:
        return _lookup(self.balances, player) is not None

    def is_banned(self, player: bytes) -> bool:
        return player in self.banned

    def active_players(self) -> tuple[bytes, ...]:
        """Joined players that are not banned."""
        return tuple(p for p, _ in self.balances if p not in self.banned)

    def commitment_of(self, player: bytes) -> bytes | None:
        return _lookup(self.commits, player)

    def has_revealed(self, player: bytes) -> bool:
        return _lookup(self.reveals, player) is not None

    def bet_of(self, player: bytes, kind: BetKind) -> int:
        """Tokens ``player`` has on ``kind`` (0 when none)."""
        for b in self.bets:
            if b.player == player and b.kind == kind:
                return b.amount
        return 0


# --- operations -------------------------------------------------------------------------


class OpDecodeError(ValueError):
    """Operation bytes that are not a well-formed craps operation."""


class OpTag(IntEnum):
    JOIN = 0x01
    PLACE_BET = 0x02
    COMMIT = 0x03
    REVEAL = 0x04
    PHONE = 0x05


@dataclass(frozen=True, slots=True)
class Join:
    """Take a seat: the submitter's starting balance moves from the unclaimed pool."""


@dataclass(frozen=True, slots=True)
class PlaceBet:
    """Escrow ``amount`` tokens on ``kind`` for the roll numbered ``round``."""

    round: int
    kind: BetKind
    amount: int


@dataclass(frozen=True, slots=True)
class CommitRandomness:
    """Commit to a secret: ``commitment`` = :func:`commitment` (player, round, secret)."""

    round: int
    commitment: bytes


@dataclass(frozen=True, slots=True)
class RevealRandomness:
    """Reveal the secret committed to for ``round``."""

    round: int
    secret: bytes


@dataclass(frozen=True, slots=True)
class PhoneOp:
    """A phone player's command, submitted by a validator: the phone's own signed announce
    frame and signed public message frame (``!join TABLE`` / ``!bet TABLE KIND AMOUNT``),
    verified by every validator (:mod:`.phone_proof`)."""

    announce: bytes
    message: bytes


Op = Join | PlaceBet | CommitRandomness | RevealRandomness | PhoneOp

_U32 = struct.Struct(">I")
_BET = struct.Struct(">BIBI")


def encode_op(op: Op) -> bytes:
    """Compact, canonical bytes of an operation (tag byte, then big-endian fields)."""
    if isinstance(op, Join):
        return bytes([OpTag.JOIN])
    if isinstance(op, PlaceBet):
        if not 0 <= op.amount < 1 << 32:
            raise ValueError("bet amount does not fit in 32 bits")
        return _BET.pack(OpTag.PLACE_BET, op.round % ROUND_MOD, op.kind, op.amount)
    if isinstance(op, PhoneOp):
        if max(len(op.announce), len(op.message)) > MAX_PROOF_FRAME:
            raise ValueError("phone frame too long")
        return (
            bytes([OpTag.PHONE])
            + _U16.pack(len(op.announce))
            + op.announce
            + _U16.pack(len(op.message))
            + op.message
        )
    if isinstance(op, CommitRandomness):
        if len(op.commitment) != KEY_LEN:
            raise ValueError("commitment must be 32 bytes")
        return bytes([OpTag.COMMIT]) + _U32.pack(op.round % ROUND_MOD) + op.commitment
    if len(op.secret) != SECRET_LEN:
        raise ValueError("secret must be 32 bytes")
    return bytes([OpTag.REVEAL]) + _U32.pack(op.round % ROUND_MOD) + op.secret


def decode_op(data: bytes) -> Op:
    """Inverse of :func:`encode_op`; raises :class:`OpDecodeError` on anything else."""
    if not data:
        raise OpDecodeError("empty operation")
    tag = data[0]
    if tag == OpTag.JOIN:
        if len(data) != 1:
            raise OpDecodeError("join takes no payload")
        return Join()
    if tag == OpTag.PLACE_BET:
        if len(data) != _BET.size:
            raise OpDecodeError("bad place-bet length")
        _, rnd, kind, amount = _BET.unpack(data)
        if kind not in BetKind._value2member_map_:
            raise OpDecodeError(f"unknown bet kind {kind}")
        return PlaceBet(rnd, BetKind(kind), amount)
    if tag == OpTag.PHONE:
        data = bytes(data)
        if len(data) < 5:
            raise OpDecodeError("bad phone op length")
        (na,) = _U16.unpack_from(data, 1)
        if na > MAX_PROOF_FRAME or len(data) < 3 + na + 2:
            raise OpDecodeError("bad phone op length")
        (nm,) = _U16.unpack_from(data, 3 + na)
        if nm > MAX_PROOF_FRAME or len(data) != 3 + na + 2 + nm:
            raise OpDecodeError("bad phone op length")
        return PhoneOp(data[3 : 3 + na], data[5 + na :])
    if tag in (OpTag.COMMIT, OpTag.REVEAL):
        if len(data) != 1 + 4 + 32:
            raise OpDecodeError("bad commit/reveal length")
        (rnd,) = _U32.unpack_from(data, 1)
        blob = bytes(data[5:])
        return CommitRandomness(rnd, blob) if tag == OpTag.COMMIT else RevealRandomness(rnd, blob)
    raise OpDecodeError(f"unknown operation tag {tag:#x}")


def commitment(player: bytes, round_: int, secret: bytes) -> bytes:
    """The commitment a player publishes for ``secret`` in roll ``round_``."""
    return hashlib.sha256(
        _COMMIT_DOMAIN + player + (round_ % ROUND_MOD).to_bytes(4, "big") + secret
    ).digest()


def table_id(validators: Sequence[bytes]) -> bytes:
    """A digest naming the table (its sorted validator set); separates sessions' dice."""
    return hashlib.sha256(_TABLE_DOMAIN + b"".join(sorted(validators))).digest()


def roll_dice(table: bytes, round_: int, reveals: Iterable[tuple[bytes, bytes]]) -> tuple[int, int]:
    """Two unbiased dice (1..6) from the hash of all reveals in canonical order."""
    h = hashlib.sha256(_DICE_DOMAIN + table + round_.to_bytes(8, "big"))
    for player, secret in sorted(reveals):
        h.update(player + secret)
    return dice_from_seed(h.digest())


def dice_from_seed(seed: bytes) -> tuple[int, int]:
    """Two dice by rejection sampling: bytes >= 252 (= 42 * 6) are skipped, so no bias."""
    dice: list[int] = []
    while True:
        for byte in seed:
            if byte < 252:
                dice.append(byte % 6 + 1)
                if len(dice) == 2:
                    return dice[0], dice[1]
        seed = hashlib.sha256(seed).digest()


# --- rules ------------------------------------------------------------------------------


def _max_win(kind: BetKind, amount: int) -> int:
    return 2 * amount if kind == BetKind.FIELD else amount


def settle(kind: BetKind, phase: Phase, point: int, total: int) -> int | None:
    """Outcome of one bet on a roll: None stays, -1 loses, 0 pushes, k >= 1 wins k:1."""
    if kind == BetKind.FIELD:
        if total in (2, 12):
            return 2
        return 1 if total in (3, 4, 9, 10, 11) else -1
    if phase == Phase.COME_OUT:
        if kind == BetKind.PASS_LINE:
            return 1 if total in (7, 11) else -1 if total in (2, 3, 12) else None
        if total == 12:
            return 0
        return 1 if total in (2, 3) else -1 if total in (7, 11) else None
    if total == point:
        return 1 if kind == BetKind.PASS_LINE else -1
    if total == 7:
        return -1 if kind == BetKind.PASS_LINE else 1
    return None


def resolve_roll(state: CrapsState, d1: int, d2: int) -> CrapsState:
    """Settle every bet on dice ``d1``, ``d2``, move the phase/point and record the roll."""
    if not (1 <= d1 <= 6 and 1 <= d2 <= 6):
        raise ValueError("dice must be 1..6")
    total = d1 + d2
    credits: dict[bytes, int] = {}
    bank = state.bank
    kept: list[Bet] = []
    for bet in state.bets:
        outcome = settle(bet.kind, state.phase, state.point, total)
        if outcome is None:
            kept.append(bet)
        elif outcome < 0:
            bank += bet.amount
        else:
            bank -= outcome * bet.amount
            credits[bet.player] = credits.get(bet.player, 0) + bet.amount * (1 + outcome)
    balances = tuple((p, v + credits.get(p, 0)) for p, v in state.balances)
    phones = tuple((p, v + credits.get(p, 0)) for p, v in state.phones)
    if state.phase == Phase.COME_OUT:
        phase, point = (Phase.POINT, total) if total in POINT_NUMBERS else (Phase.COME_OUT, 0)
    elif total in (7, state.point):
        phase, point = Phase.COME_OUT, 0
    else:
        phase, point = Phase.POINT, state.point
    limit = state.rules.history_limit
    history = (*state.history, (d1, d2))[-limit:] if limit else ()
    return replace(
        state,
        balances=balances,
        phones=phones,
        bank=bank,
        bets=tuple(kept),
        phase=phase,
        point=point,
        history=history,
    )


# --- the application --------------------------------------------------------------------


class CrapsApp:
    """The craps table as an :class:`~ble_bridge.consensus.app.Application`."""

    name: str = "bitcraps"

    def __init__(self, rules: TableRules | None = None, table_name: str | None = None) -> None:
        self.rules = rules or TableRules()
        # the table's name, as phones write it in ``!join NAME`` (None: no phone players)
        self.table_name = table_name
        self._verified: dict[bytes, PhoneCommand] = {}  # op bytes -> verified (bounded)

    def __repr__(self) -> str:
        return f"CrapsApp({self.rules!r})"

    def initial_state(self, validators: Sequence[bytes]) -> CrapsState:
        keys = tuple(sorted(set(bytes(v) for v in validators)))
        if not keys or len(keys) > MAX_VALIDATORS:
            raise ValueError(f"a table needs 1..{MAX_VALIDATORS} validators")
        if any(len(k) != KEY_LEN for k in keys):
            raise ValueError("validator keys must be 32 bytes")
        n = len(keys)
        if self.rules.seats:
            if n > self.rules.seats:
                raise ValueError("more genesis validators than seats")
            # a table formed at runtime: its opener (like every later player) is seated
            # with the buy-in at once, no Join needed
            return CrapsState(
                rules=self.rules,
                validators=keys,
                balances=tuple((k, self.rules.starting_balance) for k in keys),
                banned=(),
                bank=n * self.rules.bank_fund_per_validator,
                unclaimed=0,
            )
        return CrapsState(
            rules=self.rules,
            validators=keys,
            balances=(),
            banned=(),
            bank=n * self.rules.bank_fund_per_validator,
            unclaimed=n * self.rules.starting_balance,
        )

    def check(self, state: CrapsState, submitter: bytes, op: bytes, ctx: BlockContext) -> None:
        try:
            decoded = decode_op(op)
        except OpDecodeError as exc:
            raise InvalidOperation("malformed_op", str(exc)) from None
        if isinstance(decoded, PhoneOp):
            check_phone(state, submitter, self.phone_command(decoded))
            return
        check_op(state, submitter, decoded)

    def phone_command(self, op: PhoneOp) -> PhoneCommand:
        """The verified command inside ``op`` (InvalidOperation when the phone did not sign
        it or it is not for this table); verification results are cached by op bytes."""
        if self.table_name is None:
            raise InvalidOperation("phone_not_here", "this table takes no phone players")
        key = op.announce + b"\x00" + op.message
        cmd = self._verified.get(key)
        if cmd is None:
            cmd = verify_phone_command(op.announce, op.message, self.table_name)
            if len(self._verified) >= 256:
                self._verified.clear()
            self._verified[key] = cmd
        return cmd

    def apply(
        self, state: CrapsState, submitter: bytes, op: bytes, ctx: BlockContext
    ) -> CrapsState:
        try:
            decoded = decode_op(op)
        except OpDecodeError as exc:
            raise InvalidOperation("malformed_op", str(exc)) from None
        if isinstance(decoded, PhoneOp):
            return apply_phone(state, submitter, self.phone_command(decoded), ctx.height)
        return apply_op(state, submitter, decoded, ctx.height)

    def end_block(self, state: CrapsState, ctx: BlockContext) -> CrapsState:
        height = ctx.height
        if state.replay.applied:
            state = replace(state, replay=state.replay.advance(height))
        if state.stage == Stage.BETTING:
            if not state.commits:
                return state
            active = state.active_players()
            if height >= state.deadline or all(_lookup(state.commits, p) for p in active):
                return replace(
                    state, stage=Stage.REVEALING, deadline=height + state.rules.reveal_window
                )
            return state
        if height < state.deadline and len(state.reveals) < len(state.commits):
            return state
        return _finish_round(state)

    def ban(self, state: CrapsState, offender: bytes, ctx: BlockContext) -> CrapsState:
        if offender not in state.validators or offender in state.banned:
            return state
        forfeited = sum(b.amount for b in state.bets if b.player == offender)
        commits = _without(state.commits, offender)
        return replace(
            state,
            banned=tuple(sorted((*state.banned, offender))),
            bank=state.bank + forfeited,
            bets=tuple(b for b in state.bets if b.player != offender),
            commits=commits,
            reveals=_without(state.reveals, offender),
            deadline=state.deadline if commits or state.stage == Stage.REVEALING else 0,
        )

    def add_validator(
        self, state: CrapsState, key: bytes, buy_in: int, ctx: BlockContext
    ) -> CrapsState:
        """Seat a player whose AddValidator committed (see ``consensus.validators``)."""
        return seat_player(state, key, buy_in)

    def remove_validator(self, state: CrapsState, key: bytes, ctx: BlockContext) -> CrapsState:
        """Unseat a player whose RemoveValidator committed: its bets are forfeited to the
        bank (the roll may be under way), its balance is cashed out."""
        return unseat_player(state, key)

    def state_hash(self, state: CrapsState) -> bytes:
        return hashlib.sha256(self.snapshot(state)).digest()

    def snapshot(self, state: CrapsState) -> bytes:
        return encode_state(state)

    def restore(self, data: bytes) -> CrapsState:
        return decode_state(data)


CASHED_OUT_KEPT = 16


def seat_player(state: CrapsState, key: bytes, buy_in: int) -> CrapsState:
    """``key`` sits down with the table's buy-in (``buy_in`` 0 means the table's)."""
    rules = state.rules
    if len(key) != KEY_LEN:
        raise InvalidOperation("bad_key")
    if key in state.validators:
        raise InvalidOperation("already_seated")
    if key in state.banned:
        raise InvalidOperation("banned")
    if rules.seats and len(state.validators) >= rules.seats:
        raise InvalidOperation("table_full", f"{rules.seats} seats taken")
    if len(state.validators) >= MAX_VALIDATORS:
        raise InvalidOperation("table_full")
    if buy_in not in (0, rules.starting_balance):
        raise InvalidOperation("bad_buy_in", f"the table's buy-in is {rules.starting_balance}")
    stake = rules.starting_balance
    # the seat's genesis share of the supply comes with it (bank fund + stake); the stake
    # goes straight to the player, so nothing enters the unclaimed pool
    return replace(
        state,
        validators=tuple(sorted((*state.validators, key))),
        balances=_upsert(state.balances, key, stake),
        bank=state.bank + rules.bank_fund_per_validator,
    )


def unseat_player(state: CrapsState, key: bytes) -> CrapsState:
    """``key`` leaves: bets forfeited to the bank, balance (or unclaimed stake) cashed out."""
    if key not in state.validators:
        raise InvalidOperation("not_seated")
    rules = state.rules
    forfeited = sum(b.amount for b in state.bets if b.player == key)
    balance = state.balance_of(key)
    unclaimed = state.unclaimed
    if balance is None:  # never joined: its stake leaves the unclaimed pool
        unclaimed -= rules.starting_balance
        out = rules.starting_balance
    else:
        out = balance
    commits = _without(state.commits, key)
    # the supply formula loses the seat's genesis share (bank fund + stake) while only
    # ``out`` leaves the table (the bank keeps its fund): ``minted`` makes up the difference
    minted = state.minted + rules.bank_fund_per_validator + rules.starting_balance - out
    return replace(
        state,
        validators=tuple(v for v in state.validators if v != key),
        balances=_without(state.balances, key),
        banned=tuple(b for b in state.banned if b != key),
        bank=state.bank + forfeited,
        unclaimed=unclaimed,
        bets=tuple(b for b in state.bets if b.player != key),
        commits=commits,
        reveals=_without(state.reveals, key),
        deadline=state.deadline if commits or state.stage == Stage.REVEALING else 0,
        minted=minted,
        cashed_out=(*state.cashed_out, (key, out))[-CASHED_OUT_KEPT:],
    )


def check_phone(state: CrapsState, submitter: bytes, cmd: PhoneCommand) -> None:
    """Raise :class:`InvalidOperation` when the phone's verified command cannot apply now."""
    if submitter not in state.validators or submitter in state.banned:
        raise InvalidOperation("not_validator")
    state.replay.check(cmd)
    balance = state.phone_balance(cmd.key)
    if cmd.verb == "join":
        if balance is not None or cmd.key in state.validators:
            raise InvalidOperation("already_joined")
        if len(state.phones) >= MAX_PHONE_PLAYERS:
            raise InvalidOperation("table_full", f"{MAX_PHONE_PLAYERS} phone players")
        return
    if balance is None:
        raise InvalidOperation("not_joined")
    if (_lookup(state.phone_bets, cmd.key) or 0) >= MAX_PHONE_BETS_PER_ROUND:
        raise InvalidOperation("too_many_bets", f"{MAX_PHONE_BETS_PER_ROUND} a roll")
    kind = _PHONE_KINDS[cmd.kind]
    if state.stage != Stage.BETTING:
        raise InvalidOperation("wrong_stage", "bets close when the commits are in")
    if kind in _CONTRACT_BETS and state.phase != Phase.COME_OUT:
        raise InvalidOperation("wrong_phase", "pass/don't pass only on the come-out")
    if cmd.amount < state.rules.min_bet:
        raise InvalidOperation("below_min_bet", f"{cmd.amount} < {state.rules.min_bet}")
    if cmd.amount > balance:
        raise InvalidOperation("insufficient_balance", f"{cmd.amount} > {balance}")
    if state.exposure + _max_win(kind, cmd.amount) > state.bank:
        raise InvalidOperation("bank_exposure", "the bank could not cover this bet")


_PHONE_KINDS = {"pass": BetKind.PASS_LINE, "dont-pass": BetKind.DONT_PASS, "field": BetKind.FIELD}


def apply_phone(state: CrapsState, submitter: bytes, cmd: PhoneCommand, height: int) -> CrapsState:
    """Check the phone's command and return the state after it. A phone player joins with
    the table's buy-in, minted (``minted`` keeps the ledger balanced); its bets escrow out
    of its own balance like anyone's."""
    check_phone(state, submitter, cmd)
    replay = state.replay.add(cmd, height)
    stake = state.rules.starting_balance
    if cmd.verb == "join":
        return replace(
            state,
            phones=_upsert(state.phones, cmd.key, stake),
            minted=state.minted + stake,
            replay=replay,
        )
    kind = _PHONE_KINDS[cmd.kind]
    balance = state.phone_balance(cmd.key)
    assert balance is not None
    previous = state.bet_of(cmd.key, kind)
    others = (b for b in state.bets if (b.player, b.kind) != (cmd.key, kind))
    bets = sorted((*others, Bet(cmd.key, kind, previous + cmd.amount)), key=_bet_key)
    count = (_lookup(state.phone_bets, cmd.key) or 0) + 1
    return replace(
        state,
        phones=_upsert(state.phones, cmd.key, balance - cmd.amount),
        phone_bets=_upsert(state.phone_bets, cmd.key, count),
        bets=tuple(bets),
        replay=replay,
    )


def check_op(state: CrapsState, submitter: bytes, op: Op) -> None:
    """Raise :class:`InvalidOperation` with a short reason when ``op`` is not allowed now."""
    if isinstance(op, PhoneOp):
        raise InvalidOperation("phone_op_needs_the_app", "CrapsApp verifies phone ops")
    if submitter not in state.validators:
        raise InvalidOperation("not_validator")
    if submitter in state.banned:
        raise InvalidOperation("banned")
    balance = state.balance_of(submitter)
    if isinstance(op, Join):
        if balance is not None:
            raise InvalidOperation("already_joined")
        return
    if balance is None:
        raise InvalidOperation("not_joined")
    if op.round != state.round % ROUND_MOD:
        raise InvalidOperation("stale_round", f"op round {op.round}, table {state.round}")
    if isinstance(op, PlaceBet):
        if state.stage != Stage.BETTING:
            raise InvalidOperation("wrong_stage", "bets close when the commits are in")
        if op.kind in _CONTRACT_BETS and state.phase != Phase.COME_OUT:
            raise InvalidOperation("wrong_phase", "pass/don't pass only on the come-out")
        if op.amount <= 0:
            raise InvalidOperation("bad_amount")
        if op.amount < state.rules.min_bet:
            raise InvalidOperation("below_min_bet", f"{op.amount} < {state.rules.min_bet}")
        if op.amount > balance:
            raise InvalidOperation("insufficient_balance", f"{op.amount} > {balance}")
        if state.exposure + _max_win(op.kind, op.amount) > state.bank:
            raise InvalidOperation("bank_exposure", "the bank could not cover this bet")
        return
    if isinstance(op, CommitRandomness):
        if state.stage != Stage.BETTING:
            raise InvalidOperation("wrong_stage", "commits are closed")
        if state.commitment_of(submitter) is not None:
            raise InvalidOperation("duplicate_commit")
        return
    if state.stage != Stage.REVEALING:
        raise InvalidOperation("wrong_stage", "reveals open when the commits are in")
    committed = state.commitment_of(submitter)
    if committed is None:
        raise InvalidOperation("no_commit")
    if state.has_revealed(submitter):
        raise InvalidOperation("duplicate_reveal")
    if commitment(submitter, state.round, op.secret) != committed:
        raise InvalidOperation("reveal_mismatch")


def apply_op(state: CrapsState, submitter: bytes, op: Op, height: int) -> CrapsState:
    """Check ``op`` and return the state after it."""
    check_op(state, submitter, op)
    if isinstance(op, Join):
        return replace(
            state,
            balances=_upsert(state.balances, submitter, state.rules.starting_balance),
            unclaimed=state.unclaimed - state.rules.starting_balance,
        )
    if isinstance(op, PlaceBet):
        balance = state.balance_of(submitter)
        assert balance is not None
        previous = state.bet_of(submitter, op.kind)
        others = (b for b in state.bets if (b.player, b.kind) != (submitter, op.kind))
        bets = sorted((*others, Bet(submitter, op.kind, previous + op.amount)), key=_bet_key)
        return replace(
            state,
            balances=_upsert(state.balances, submitter, balance - op.amount),
            bets=tuple(bets),
        )
    if isinstance(op, CommitRandomness):
        deadline = state.deadline if state.commits else height + state.rules.commit_window
        return replace(
            state, commits=_upsert(state.commits, submitter, op.commitment), deadline=deadline
        )
    assert isinstance(op, RevealRandomness)
    return replace(state, reveals=_upsert(state.reveals, submitter, op.secret))


def _finish_round(state: CrapsState) -> CrapsState:
    """Forfeit non-revealers' bets, roll with the reveals that came, open the next round."""
    revealed = {p for p, _ in state.reveals}
    missing = {p for p, _ in state.commits} - revealed
    forfeited = sum(b.amount for b in state.bets if b.player in missing)
    state = replace(
        state,
        bank=state.bank + forfeited,
        bets=tuple(b for b in state.bets if b.player not in missing),
    )
    if state.reveals:
        d1, d2 = roll_dice(table_id(state.validators), state.round, state.reveals)
        state = resolve_roll(state, d1, d2)
    return replace(
        state,
        stage=Stage.BETTING,
        round=state.round + 1,
        deadline=0,
        commits=(),
        reveals=(),
        phone_bets=(),
    )


def _bet_key(bet: Bet) -> tuple[bytes, int]:
    return bet.player, int(bet.kind)


def _lookup(pairs: tuple[tuple[bytes, _V], ...], key: bytes) -> _V | None:
    for k, v in pairs:
        if k == key:
            return v
    return None


def _upsert(
    pairs: tuple[tuple[bytes, _V], ...], key: bytes, value: _V
) -> tuple[tuple[bytes, _V], ...]:
    return tuple(sorted((*((k, v) for k, v in pairs if k != key), (key, value)), key=_first))


def _without(pairs: tuple[tuple[bytes, _V], ...], key: bytes) -> tuple[tuple[bytes, _V], ...]:
    return tuple((k, v) for k, v in pairs if k != key)


def _first(pair: tuple[bytes, object]) -> bytes:
    return pair[0]


# --- snapshot ---------------------------------------------------------------------------

_RULES = struct.Struct(">QQIIHHI")
_SCALARS = struct.Struct(">QQBBBQQ")
_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")


def encode_state(state: CrapsState) -> bytes:
    """Canonical bytes of a state: fixed field order, big-endian, sorted collections."""
    r = state.rules
    out = bytearray(_SNAPSHOT_MAGIC)
    out.append(_SNAPSHOT_VERSION)
    out += _RULES.pack(
        r.starting_balance,
        r.bank_fund_per_validator,
        r.commit_window,
        r.reveal_window,
        r.history_limit,
        r.seats,
        r.min_bet,
    )
    out += _U16.pack(len(state.validators)) + b"".join(state.validators)
    out += _SCALARS.pack(
        state.bank,
        state.unclaimed,
        state.phase,
        state.point,
        state.stage,
        state.round,
        state.deadline,
    )
    out += _U16.pack(len(state.balances))
    for player, balance in state.balances:
        out += player + _U64.pack(balance)
    out += _U16.pack(len(state.banned)) + b"".join(state.banned)
    out += _U16.pack(len(state.bets))
    for bet in state.bets:
        out += bet.player + bytes([bet.kind]) + _U64.pack(bet.amount)
    for pairs in (state.commits, state.reveals):
        out += _U16.pack(len(pairs))
        for player, blob in pairs:
            out += player + blob
    out += _U16.pack(len(state.history)) + bytes((d1 << 4) | d2 for d1, d2 in state.history)
    out += _I64.pack(state.minted)
    out += _U16.pack(len(state.cashed_out))
    for player, amount in state.cashed_out:
        out += player + _U64.pack(amount)
    rp = state.replay
    if not (state.phones or state.phone_bets or rp.applied or rp.floors):
        return bytes(out)  # no phone players: the version 2 bytes, unchanged
    out[len(_SNAPSHOT_MAGIC)] = _SNAPSHOT_VERSION_PHONES
    for counts in (state.phones, state.phone_bets, rp.floors):
        out += _U16.pack(len(counts))
        for player, value in counts:
            out += player + _U64.pack(value)
    out += _U64.pack(rp.window) + _U16.pack(rp.capacity) + _U16.pack(len(rp.applied))
    for pid, player, ts, h in rp.applied:
        out += pid + player + _U64.pack(ts) + _U64.pack(h)
    return bytes(out)


class _Reader:
    """Bounds-checked cursor over snapshot bytes; every failure is a ValueError."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, n: int) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise ValueError("snapshot truncated")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def unpack(self, fmt: struct.Struct) -> tuple[int, ...]:
        return tuple(int(x) for x in fmt.unpack(self.take(fmt.size)))

    def count(self, limit: int) -> int:
        (n,) = self.unpack(_U16)
        if n > limit:
            raise ValueError(f"snapshot count {n} above limit {limit}")
        return n

    def done(self) -> None:
        if self._pos != len(self._data):
            raise ValueError("trailing bytes after snapshot")


def _strictly_sorted(keys: Sequence[bytes]) -> bool:
    return all(a < b for a, b in itertools.pairwise(keys))


def decode_state(data: bytes) -> CrapsState:
    """Inverse of :func:`encode_state`; raises ValueError (only) on anything malformed."""
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise ValueError("snapshot too large")
    rd = _Reader(bytes(data))
    magic, version = rd.take(4), rd.take(1)[0]
    if magic != _SNAPSHOT_MAGIC or version not in (_SNAPSHOT_VERSION, _SNAPSHOT_VERSION_PHONES):
        raise ValueError("not a craps snapshot (magic/version)")
    rules = TableRules(*rd.unpack(_RULES))
    validators = tuple(rd.take(KEY_LEN) for _ in range(rd.count(MAX_VALIDATORS)))
    if not validators or not _strictly_sorted(validators):
        raise ValueError("validators empty or not canonical")
    known = set(validators)
    bank, unclaimed, phase_raw, point, stage_raw, round_, deadline = rd.unpack(_SCALARS)
    phase, stage = Phase(phase_raw), Stage(stage_raw)
    if (phase == Phase.COME_OUT) != (point == 0) or (point and point not in POINT_NUMBERS):
        raise ValueError("phase and point disagree")
    balances = tuple(
        (rd.take(KEY_LEN), rd.unpack(_U64)[0]) for _ in range(rd.count(len(validators)))
    )
    banned = tuple(rd.take(KEY_LEN) for _ in range(rd.count(len(validators))))
    bets = tuple(
        Bet(rd.take(KEY_LEN), BetKind(rd.take(1)[0]), rd.unpack(_U64)[0])
        for _ in range(rd.count(len(validators) * len(BetKind)))
    )
    commits = tuple((rd.take(KEY_LEN), rd.take(32)) for _ in range(rd.count(len(validators))))
    reveals = tuple(
        (rd.take(KEY_LEN), rd.take(SECRET_LEN)) for _ in range(rd.count(len(validators)))
    )
    history_raw = rd.take(rd.count(rules.history_limit))
    (minted,) = rd.unpack(_I64)
    cashed_out = tuple(
        (rd.take(KEY_LEN), rd.unpack(_U64)[0]) for _ in range(rd.count(CASHED_OUT_KEPT))
    )
    phones: tuple[tuple[bytes, int], ...] = ()
    phone_bets: tuple[tuple[bytes, int], ...] = ()
    replay = ReplayWindow()
    if version == _SNAPSHOT_VERSION_PHONES:
        phones, phone_bets, floors = (
            tuple(
                (rd.take(KEY_LEN), rd.unpack(_U64)[0])
                for _ in range(rd.count(MAX_PHONE_PLAYERS * 4))
            )
            for _ in range(3)
        )
        (window,) = rd.unpack(_U64)
        (capacity,) = rd.unpack(_U16)
        applied = tuple(
            (rd.take(16), rd.take(KEY_LEN), rd.unpack(_U64)[0], rd.unpack(_U64)[0])
            for _ in range(rd.count(capacity))
        )
        replay = ReplayWindow(window, capacity, applied, floors)
        if not (
            _strictly_sorted([p for p, _ in phones]) and _strictly_sorted([e[0] for e in applied])
        ):
            raise ValueError("phone players not canonical")
        if len(phones) > MAX_PHONE_PLAYERS or not _strictly_sorted([p for p, _ in floors]):
            raise ValueError("phone players not canonical")
        if not {p for p, _ in phone_bets} <= {p for p, _ in phones}:
            raise ValueError("phone bets without a phone player")
    rd.done()
    history = tuple((b >> 4, b & 0x0F) for b in history_raw)
    state = CrapsState(
        rules=rules,
        validators=validators,
        balances=balances,
        banned=banned,
        bank=bank,
        unclaimed=unclaimed,
        phase=phase,
        point=point,
        stage=stage,
        round=round_,
        deadline=deadline,
        bets=bets,
        commits=commits,
        reveals=reveals,
        history=history,
        minted=minted,
        cashed_out=cashed_out,
        phones=phones,
        phone_bets=phone_bets,
        replay=replay,
    )
    _validate(state, known)
    return state


def check_invariants(state: CrapsState) -> None:
    """Raise ValueError when ``state`` breaks a ledger/table invariant (for safety checks)."""
    if not state.validators or not _strictly_sorted(state.validators):
        raise ValueError("validators empty or not canonical")
    if state.bank < 0 or state.unclaimed < 0 or any(v < 0 for _, v in state.balances):
        raise ValueError("negative balance")
    _validate(state, set(state.validators))


def _validate(s: CrapsState, known: set[bytes]) -> None:
    """Cross-field invariants a restored state must satisfy (ValueError otherwise)."""
    players = [p for p, _ in s.balances]
    if not _strictly_sorted(players) or not known.issuperset(players):
        raise ValueError("balances not canonical or not validators")
    if not _strictly_sorted(s.banned) or not known.issuperset(s.banned):
        raise ValueError("banned list not canonical or not validators")
    if any(v > MAX_TOKENS for _, v in s.balances) or max(s.bank, s.unclaimed) > MAX_TOKENS:
        raise ValueError("token amount out of range")
    active = set(s.active_players())
    bettors = active | {p for p, _ in s.phones}
    if any(v > MAX_TOKENS for _, v in s.phones) or set(players) & {p for p, _ in s.phones}:
        raise ValueError("phone balance out of range or a phone key with a seat")
    if not _strictly_sorted([b.player + bytes([b.kind]) for b in s.bets]):
        raise ValueError("bets not canonical")
    if any(b.player not in bettors or not 0 < b.amount <= MAX_TOKENS for b in s.bets):
        raise ValueError("bet by an inactive player or with a bad amount")
    committers = [p for p, _ in s.commits]
    if not _strictly_sorted(committers) or not active.issuperset(committers):
        raise ValueError("commits not canonical or by inactive players")
    revealers = [p for p, _ in s.reveals]
    if not _strictly_sorted(revealers) or not set(committers).issuperset(revealers):
        raise ValueError("reveals not canonical or without a commit")
    if s.stage == Stage.BETTING and s.reveals:
        raise ValueError("reveals while betting")
    if s.stage == Stage.BETTING and not s.commits and s.deadline:
        raise ValueError("deadline without commits")
    for player, secret in s.reveals:
        if commitment(player, s.round, secret) != _lookup(s.commits, player):
            raise ValueError("reveal does not match its commit")
    if any(not (1 <= d1 <= 6 and 1 <= d2 <= 6) for d1, d2 in s.history):
        raise ValueError("dice out of range")
    if s.unclaimed != s.rules.starting_balance * (len(s.validators) - len(s.balances)):
        raise ValueError("unclaimed pool does not match the players who have not joined")
    if s.exposure > s.bank:
        raise ValueError("bank cannot cover the bets on the table")
    if s.rules.seats and len(s.validators) > s.rules.seats:
        raise ValueError("more players seated than the table has seats")
    if abs(s.minted) > MAX_TOKENS or any(not 0 <= v <= MAX_TOKENS for _, v in s.cashed_out):
        raise ValueError("minted or cashed-out amount out of range")
    if s.total_tokens != s.supply:
        raise ValueError("tokens not conserved")


# --- simulated players ------------------------------------------------------------------

_PLAYER_SECRET_DOMAIN = b"bitcraps/player-secret/v1"


class TablePlayer:
    """A deterministic simulated player that plans from the committed table and its own
    operations in flight.

    It joins, bets in the betting window, commits, and reveals once the commits are in. Each
    op :meth:`next_ops` returns counts as in flight until the driver reports how it ended
    (:meth:`settled`) or the committed state shows it can no longer matter (its effect is
    there, or its round or betting window is over). While an op is in flight the player never
    sends one that would conflict with it: no second join, no second commit or reveal for a
    roll, no more bets until the pending ones are decided. When an op fails (rejected, timed
    out, refused) it plans again from the committed state, so a lost commit is sent again but
    a bet whose window closed is not. ``reveal_probability`` < 1 makes a player that
    sometimes withholds its reveal (decided once per roll).
    """

    def __init__(
        self,
        key: bytes,
        rng: random.Random,
        *,
        contract_probability: float = 0.8,
        field_probability: float = 0.3,
        max_stake_fraction: float = 0.1,
        reveal_probability: float = 1.0,
    ) -> None:
        self.key = bytes(key)
        self._rng = rng
        self._seed = rng.randbytes(32)
        self._contract_probability = contract_probability
        self._field_probability = field_probability
        self._max_stake_fraction = max_stake_fraction
        self._reveal_probability = reveal_probability
        self._in_flight: dict[bytes, Op] = {}  # encoded op -> op; a handful at most
        self._bets_chosen = -1  # the round whose bets were chosen (and not all failed)
        self._reveal_choice: tuple[int, bool] = (-1, False)  # (round, reveal it?)

    def secret_for(self, round_: int) -> bytes:
        """This player's secret for roll ``round_`` (derived from its private seed)."""
        return hashlib.sha256(
            _PLAYER_SECRET_DOMAIN + self._seed + round_.to_bytes(8, "big")
        ).digest()

    @property
    def in_flight(self) -> tuple[Op, ...]:
        """The ops sent and not yet known to have committed or failed, oldest first."""
        return tuple(self._in_flight.values())

    def next_ops(self, state: CrapsState) -> list[bytes]:
        """Encoded operations to submit now (possibly none); each is in flight from now on."""
        key = self.key
        if key not in state.validators or key in state.banned:
            return []
        self._forget_settled(state)
        ops = self._plan(state)
        out = []
        for op in ops:
            body = encode_op(op)
            self._in_flight[body] = op
            out.append(body)
        return out

    def settled(self, body: bytes, committed: bool) -> None:
        """The driver's report on an op from :meth:`next_ops`: committed, or failed for good
        (rejected, timed out, refused at submission). A failed op is planned again from the
        committed state on the next call; reports on ops no longer tracked are ignored."""
        op = self._in_flight.pop(bytes(body), None)
        if committed or op is None:
            return
        if isinstance(op, PlaceBet) and op.round == self._bets_chosen:
            self._bets_chosen = -1  # the table may still take bets: choose again

    def _plan(self, state: CrapsState) -> list[Op]:
        key, rnd = self.key, state.round
        flying = self._in_flight.values()
        if not state.is_joined(key):
            return [] if any(isinstance(op, Join) for op in flying) else [Join()]
        ops: list[Op] = []
        if state.stage == Stage.BETTING:
            if self._bets_chosen != rnd and not any(isinstance(op, PlaceBet) for op in flying):
                self._bets_chosen = rnd
                ops.extend(self._choose_bets(state))
            if state.commitment_of(key) is None and not any(
                isinstance(op, CommitRandomness) for op in flying
            ):
                ops.append(CommitRandomness(rnd, commitment(key, rnd, self.secret_for(rnd))))
        elif (
            state.commitment_of(key) is not None
            and not state.has_revealed(key)
            and not any(isinstance(op, RevealRandomness) for op in flying)
            and self._will_reveal(rnd)
        ):
            ops.append(RevealRandomness(rnd, self.secret_for(rnd)))
        return ops

    def _forget_settled(self, state: CrapsState) -> None:
        """Stop tracking ops the committed state shows are done either way: their effect is
        in it, or the round or betting window they belong to is over."""
        key = self.key
        joined = state.is_joined(key)
        for body, op in list(self._in_flight.items()):
            if isinstance(op, Join):
                done = joined
            elif isinstance(op, PhoneOp) or op.round % ROUND_MOD != state.round % ROUND_MOD:
                done = True
            elif isinstance(op, PlaceBet):
                done = state.stage != Stage.BETTING
            elif isinstance(op, CommitRandomness):
                done = state.stage != Stage.BETTING or state.commitment_of(key) is not None
            else:
                done = state.has_revealed(key)
            if done:
                del self._in_flight[body]

    def _will_reveal(self, round_: int) -> bool:
        if self._reveal_choice[0] != round_:
            self._reveal_choice = (round_, self._rng.random() < self._reveal_probability)
        return self._reveal_choice[1]

    def _choose_bets(self, state: CrapsState) -> list[Op]:
        rng = self._rng
        wanted: list[Op] = []
        has_contract = any(state.bet_of(self.key, k) for k in _CONTRACT_BETS)
        if state.phase == Phase.COME_OUT and not has_contract:
            draw = rng.random()
            if draw < self._contract_probability:
                kind = (
                    BetKind.PASS_LINE
                    if draw < 0.75 * self._contract_probability
                    else (BetKind.DONT_PASS)
                )
                wanted.append(PlaceBet(state.round, kind, self._stake(state)))
        if rng.random() < self._field_probability:
            wanted.append(PlaceBet(state.round, BetKind.FIELD, self._stake(state)))
        accepted: list[Op] = []
        projected = state
        for op in wanted:
            try:
                projected = apply_op(projected, self.key, op, 0)
            except InvalidOperation:
                continue
            accepted.append(op)
        return accepted

    def _stake(self, state: CrapsState) -> int:
        balance = state.balance_of(self.key) or 0
        top = max(1, int(balance * self._max_stake_fraction))
        return self._rng.randint(1, top)
