"""The node's part in each roll at a table it sits at, and the checks a bet passes first.

A roll needs commit-reveal randomness from the seated players; a person types bets, the
node does the rest. :class:`RollPlanner` commits to a secret once there are bets on the
table (an empty table does not roll), and reveals it once the commits are in. Secrets come
from the node's Ed25519 signature over the table and the round: deterministic (a restarted
node reveals the secret it committed to before the crash) and unpredictable to anyone
without the node's key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from ..consensus.app import InvalidOperation
from ..consensus.craps import (
    ROUND_MOD,
    BetKind,
    CommitRandomness,
    CrapsState,
    PlaceBet,
    RevealRandomness,
    Stage,
    check_op,
    commitment,
    encode_op,
)
from .errors import TableError

SECRET_DOMAIN = b"ble-bridge/roll-secret/v1"

BET_KINDS: dict[str, BetKind] = {
    "pass": BetKind.PASS_LINE,
    "dont-pass": BetKind.DONT_PASS,
    "field": BetKind.FIELD,
}
KIND_NAMES = {v: k for k, v in BET_KINDS.items()}

# why the table refuses a bet, in words (reasons from craps.check_op)
_BET_REFUSALS = {
    "wrong_stage": "bets are closed while the dice are being rolled; try again in a moment",
    "wrong_phase": "pass and don't-pass bets are taken on the come-out roll only (point is {point})",
    "insufficient_balance": "balance too small: {amount} > {balance}",
    "below_min_bet": "below the table's minimum bet of {min_bet}",
    "bad_amount": "the amount must be a positive number of tokens",
    "bank_exposure": "the bank could not cover this bet; bet less",
    "not_validator": "you do not sit at this table (ble-bridge table join {table})",
    "not_joined": "you do not sit at this table (ble-bridge table join {table})",
    "banned": "you were banned from this table",
}


def bet_kind(name: str) -> BetKind:
    try:
        return BET_KINDS[name]
    except KeyError:
        raise TableError(
            "unknown_bet_kind", f"unknown bet kind {name!r}; kinds: {', '.join(BET_KINDS)}"
        ) from None


def check_bet(state: CrapsState, key: bytes, table: str, kind: BetKind, amount: int) -> bytes:
    """The encoded PlaceBet of ``amount`` on ``kind`` for the current roll, or the
    :class:`TableError` saying in one line why the table would refuse it now."""
    if not 0 < amount < 1 << 32:
        raise TableError("bad_amount", _BET_REFUSALS["bad_amount"])
    op = PlaceBet(state.round % ROUND_MOD, kind, amount)
    try:
        check_op(state, key, op)
    except InvalidOperation as exc:
        text = _BET_REFUSALS.get(exc.reason, str(exc))
        balance = state.balance_of(key) or 0
        raise TableError(
            exc.reason,
            text.format(
                amount=amount,
                balance=balance,
                min_bet=state.rules.min_bet,
                point=state.point,
                table=table,
            ),
        ) from None
    return encode_op(op)


class RollPlanner:
    """Commit and reveal for one key at one table (see the module docstring)."""

    def __init__(self, key: bytes, session_id: bytes, sign: Callable[[bytes], bytes]) -> None:
        self.key = key
        self.session_id = session_id
        self._sign = sign
        self._sent: dict[tuple[int, int], float] = {}  # (round, op tag) -> when we sent it

    def secret_for(self, round_: int) -> bytes:
        msg = SECRET_DOMAIN + self.session_id + (round_ % ROUND_MOD).to_bytes(4, "big")
        return hashlib.sha256(self._sign(msg)).digest()

    def next_ops(self, state: CrapsState, now: float, retry_after: float = 8.0) -> list[bytes]:
        """Encoded ops to submit now; one sent less than ``retry_after`` s ago is not sent
        again (it may still commit)."""
        key, rnd = self.key, state.round
        if key not in state.validators or key in state.banned or not state.is_joined(key):
            return []
        self._sent = {k: t for k, t in self._sent.items() if k[0] == rnd}
        op: CommitRandomness | RevealRandomness | None = None
        if state.stage == Stage.BETTING:
            if state.bets and state.commitment_of(key) is None:
                op = CommitRandomness(rnd, commitment(key, rnd, self.secret_for(rnd)))
        elif state.commitment_of(key) is not None and not state.has_revealed(key):
            op = RevealRandomness(rnd, self.secret_for(rnd))
        if op is None:
            return []
        tag = 3 if isinstance(op, CommitRandomness) else 4
        sent = self._sent.get((rnd, tag))
        if sent is not None and now - sent < retry_after:
            return []
        self._sent[(rnd, tag)] = now
        return [encode_op(op)]


__all__ = ["BET_KINDS", "KIND_NAMES", "RollPlanner", "bet_kind", "check_bet"]
