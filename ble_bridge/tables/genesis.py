"""A table's genesis: name, opener, rules, creation time and nonce; its hash is the id.

Encoding (big-endian)::

    version(1)=1 name_len(1) name opener(32) nick_len(1) nick seats(1) buy_in(8)
    min_bet(8) created_ms(8) nonce(8)

The session id is ``sha256("ble-bridge/table/v1" encoding)[:16]``: every node that holds
the genesis derives the same id, the same genesis validator set (the opener alone) and the
same rules, and a joiner verifies the chain from there.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from ..consensus.craps import MAX_SEATS, TableRules
from ..wire.messages import SESSION_ID_LEN

GENESIS_VERSION = 1
TABLE_DOMAIN = b"ble-bridge/table/v1"
MAX_NAME = 32
MAX_NICK = 32
KEY_LEN = 32
MAX_BUY_IN = 1 << 40
MAX_MIN_BET = 1 << 32
_TAIL = struct.Struct(">BQQQQ")


class GenesisError(ValueError):
    """Bytes that are not a well-formed table genesis, or fields out of range."""


def check_name(name: str, what: str = "table name") -> bytes:
    """``name`` as UTF-8, refused when empty, too long or holding control characters."""
    raw = name.encode("utf-8")
    if not 1 <= len(raw) <= MAX_NAME:
        raise GenesisError(f"{what} must be 1..{MAX_NAME} bytes of UTF-8")
    if any(not ch.isprintable() or ch.isspace() for ch in name):
        raise GenesisError(f"{what} may not hold spaces or control characters")
    return raw


@dataclass(frozen=True, slots=True)
class TableGenesis:
    name: str
    opener: bytes
    opener_nick: str
    seats: int
    buy_in: int
    min_bet: int
    created_ms: int
    nonce: int

    def __post_init__(self) -> None:
        check_name(self.name)
        if len(self.opener) != KEY_LEN:
            raise GenesisError("opener key must be 32 bytes")
        if len(self.opener_nick.encode("utf-8")) > MAX_NICK:
            raise GenesisError(f"opener nickname longer than {MAX_NICK} bytes")
        if not 1 <= self.seats <= MAX_SEATS:
            raise GenesisError(f"seats must be 1..{MAX_SEATS}")
        if not 1 <= self.buy_in <= MAX_BUY_IN:
            raise GenesisError(f"buy-in must be 1..{MAX_BUY_IN}")
        if not 1 <= self.min_bet <= MAX_MIN_BET:
            raise GenesisError(f"minimum bet must be 1..{MAX_MIN_BET}")
        if self.min_bet > self.buy_in:
            raise GenesisError("minimum bet above the buy-in")
        if not 0 <= self.created_ms < 1 << 64 or not 0 <= self.nonce < 1 << 64:
            raise GenesisError("creation time and nonce are 64-bit")

    def encode(self) -> bytes:
        name = self.name.encode("utf-8")
        nick = self.opener_nick.encode("utf-8")
        return (
            bytes((GENESIS_VERSION, len(name)))
            + name
            + self.opener
            + bytes((len(nick),))
            + nick
            + _TAIL.pack(self.seats, self.buy_in, self.min_bet, self.created_ms, self.nonce)
        )

    @classmethod
    def decode(cls, data: bytes) -> TableGenesis:
        """Inverse of :meth:`encode` (raises :class:`GenesisError`)."""
        try:
            if len(data) < 2 or data[0] != GENESIS_VERSION:
                raise GenesisError("unknown genesis version")
            pos = 2
            name_end = pos + data[1]
            name = bytes(data[pos:name_end]).decode("utf-8")
            opener = bytes(data[name_end : name_end + KEY_LEN])
            pos = name_end + KEY_LEN
            if pos >= len(data):
                raise GenesisError("genesis truncated")
            nick_end = pos + 1 + data[pos]
            nick = bytes(data[pos + 1 : nick_end]).decode("utf-8")
            if len(data) != nick_end + _TAIL.size:
                raise GenesisError("genesis length")
            seats, buy_in, min_bet, created, nonce = _TAIL.unpack_from(data, nick_end)
            genesis = cls(name, opener, nick, seats, buy_in, min_bet, created, nonce)
        except UnicodeDecodeError:
            raise GenesisError("genesis text is not UTF-8") from None
        if genesis.encode() != bytes(data):  # only the canonical encoding names a table
            raise GenesisError("genesis not canonical")
        return genesis

    @property
    def session_id(self) -> bytes:
        return hashlib.sha256(TABLE_DOMAIN + self.encode()).digest()[:SESSION_ID_LEN]

    @property
    def rules(self) -> TableRules:
        return TableRules(starting_balance=self.buy_in, seats=self.seats, min_bet=self.min_bet)


__all__ = ["GenesisError", "TableGenesis", "check_name"]
