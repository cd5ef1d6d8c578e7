"""Table announcements and the bounded directory of tables a node heard (sans-IO).

A seated validator of a table formed at runtime announces it as a signed mesh broadcast
(packet type :data:`TABLE_ANNOUNCE_TYPE`), so nodes that are not at the table can list it
and join. Payload (big-endian)::

    version(1)=1 genesis_len(2) genesis announcer(32) nick_len(1) nick seats_taken(1)
    players(2) height(8) sent_ttl(1) signature(64)

``signature`` is the announcer's Ed25519 signature over ``"ble-bridge/table-ann/v1"`` and
every byte before it; ``players`` counts players with a balance who hold no seat (none
yet: phones will be such players); ``sent_ttl`` is the TTL the packet left with, so a
receiver knows how many hops it came (``sent_ttl - ttl + 1``). An announcement proves that
its announcer said it, not that it is true: the genesis fixes the id, the rules and the
genesis set, and a joiner verifies everything else from the chain.

:class:`AnnounceSchedule` decides when a node announces a table: at an interval that
starts at ``min_interval`` when what it would say changed and doubles up to
``max_interval`` while it stays the same; never while the table is full and unchanged;
and not when another validator of the table announced the same or newer in the current
interval (one announcer per interval is enough, whoever it is). A younger table of the
same name heard brings the next announcement forward (``soon``), so its members hear the
older table and move there without waiting out a long interval.

:class:`TableDirectory` keeps the freshest announcement of at most ``capacity`` tables,
each for ``ttl`` seconds after it was last heard; bad bytes are counted by reason.
"""

from __future__ import annotations

import struct
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .genesis import MAX_NICK, GenesisError, TableGenesis

TABLE_ANNOUNCE_TYPE = 0x1E  # mesh packet type (0x1C consensus, 0x1D link keepalive)
ANNOUNCE_VERSION = 1
ANNOUNCE_DOMAIN = b"ble-bridge/table-ann/v1"
SIG_LEN = 64
KEY_LEN = 32
MAX_GENESIS = 256
_STATE = struct.Struct(">BHQB")

Sign = Callable[[bytes], bytes]
Verify = Callable[[bytes, bytes, bytes], bool]


class AnnounceError(ValueError):
    """Bytes that are not a well-formed table announcement; ``reason`` is a counter name."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class TableAnnounce:
    genesis: TableGenesis
    announcer: bytes
    nickname: str
    seats_taken: int
    players: int
    height: int
    sent_ttl: int
    signature: bytes = b""

    @property
    def session_id(self) -> bytes:
        return self.genesis.session_id

    def body(self) -> bytes:
        genesis = self.genesis.encode()
        nick = _clip(self.nickname)
        if len(self.announcer) != KEY_LEN:
            raise ValueError("announcer key must be 32 bytes")
        return (
            bytes((ANNOUNCE_VERSION,))
            + len(genesis).to_bytes(2, "big")
            + genesis
            + self.announcer
            + bytes((len(nick),))
            + nick
            + _STATE.pack(self.seats_taken, self.players, self.height, self.sent_ttl)
        )

    def signed(self, sign: Sign) -> TableAnnounce:
        sig = sign(ANNOUNCE_DOMAIN + self.body())
        return TableAnnounce(
            self.genesis,
            self.announcer,
            self.nickname,
            self.seats_taken,
            self.players,
            self.height,
            self.sent_ttl,
            sig,
        )

    def encode(self) -> bytes:
        if len(self.signature) != SIG_LEN:
            raise ValueError("sign the announcement first")
        return self.body() + self.signature

    def verify(self, verify: Verify) -> bool:
        return verify(self.announcer, self.signature, ANNOUNCE_DOMAIN + self.body())

    @classmethod
    def decode(cls, data: bytes) -> TableAnnounce:
        """Inverse of :meth:`encode`, signature not checked (raises :class:`AnnounceError`)."""
        if len(data) < 3 or data[0] != ANNOUNCE_VERSION:
            raise AnnounceError("table_ann_version")
        glen = int.from_bytes(data[1:3], "big")
        if glen > MAX_GENESIS or 3 + glen + KEY_LEN + 1 > len(data):
            raise AnnounceError("table_ann_truncated")
        try:
            genesis = TableGenesis.decode(data[3 : 3 + glen])
        except GenesisError:
            raise AnnounceError("table_ann_genesis") from None
        pos = 3 + glen
        announcer = bytes(data[pos : pos + KEY_LEN])
        pos += KEY_LEN
        nick_end = pos + 1 + data[pos]
        if data[pos] > MAX_NICK or nick_end + _STATE.size + SIG_LEN != len(data):
            raise AnnounceError("table_ann_length")
        try:
            nick = bytes(data[pos + 1 : nick_end]).decode("utf-8")
        except UnicodeDecodeError:
            raise AnnounceError("table_ann_nickname") from None
        taken, players, height, sent_ttl = _STATE.unpack_from(data, nick_end)
        if taken > genesis.seats:
            raise AnnounceError("table_ann_seats")
        sig = bytes(data[-SIG_LEN:])
        ann = cls(genesis, announcer, nick, taken, players, height, sent_ttl, sig)
        if ann.encode() != bytes(data):
            raise AnnounceError("table_ann_not_canonical")
        return ann


def _clip(nick: str) -> bytes:
    """A nickname as at most ``MAX_NICK`` bytes of UTF-8 (cut between characters)."""
    raw = nick.encode("utf-8")
    while len(raw) > MAX_NICK:
        nick = nick[:-1]
        raw = nick.encode("utf-8")
    return raw


@dataclass(slots=True)
class Heard:
    """A table in the directory: its freshest announcement and when and how it came."""

    announce: TableAnnounce
    hops: int
    first_heard: float
    last_heard: float

    @property
    def session_id(self) -> bytes:
        return self.announce.session_id

    @property
    def name(self) -> str:
        return self.announce.genesis.name


class TableDirectory:
    """The tables a node heard of, freshest announcement each; bounded and expiring."""

    def __init__(self, verify: Verify, *, capacity: int = 64, ttl: float = 180.0) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.verify = verify
        self.capacity = capacity
        self.ttl = ttl
        self._tables: OrderedDict[bytes, Heard] = OrderedDict()  # oldest heard first
        self.drops: Counter[str] = Counter()
        self.accepted = 0

    def __len__(self) -> int:
        return len(self._tables)

    def receive(self, now: float, payload: bytes, ttl: int) -> Heard | None:
        """Take one announcement heard with packet TTL ``ttl``; None (counted) if refused."""
        try:
            ann = TableAnnounce.decode(payload)
        except AnnounceError as exc:
            self.drops[exc.reason] += 1
            return None
        if not ann.verify(self.verify):
            self.drops["table_ann_bad_signature"] += 1
            return None
        hops = max(1, ann.sent_ttl - ttl + 1)
        return self.heard(now, ann, hops)

    def heard(self, now: float, ann: TableAnnounce, hops: int) -> Heard | None:
        """Record a verified announcement (an older height than the one we hold is only
        a fresher sign of life)."""
        self.expire(now)
        sid = ann.session_id
        entry = self._tables.get(sid)
        if entry is None:
            while len(self._tables) >= self.capacity:
                self._tables.popitem(last=False)
                self.drops["table_directory_evicted"] += 1
            entry = Heard(ann, hops, now, now)
            self._tables[sid] = entry
        else:
            if ann.height >= entry.announce.height:
                entry.announce = ann
                entry.hops = hops
            else:
                entry.hops = min(entry.hops, hops) if now - entry.last_heard < 1.0 else hops
            entry.last_heard = now
            self._tables.move_to_end(sid)
        self.accepted += 1
        return entry

    def expire(self, now: float) -> None:
        while self._tables:
            sid, oldest = next(iter(self._tables.items()))
            if now - oldest.last_heard <= self.ttl:
                break
            del self._tables[sid]

    def get(self, session_id: bytes) -> Heard | None:
        return self._tables.get(session_id)

    def entries(self, now: float) -> list[Heard]:
        self.expire(now)
        return sorted(self._tables.values(), key=lambda h: (h.name, h.session_id))

    def find(self, now: float, name: str) -> list[Heard]:
        """Entries named ``name``, or whose id (hex) starts with it."""
        low = name.lower()
        return [
            h
            for h in self.entries(now)
            if h.name == name or (len(low) >= 4 and h.session_id.hex().startswith(low))
        ]


class AnnounceSchedule:
    """When to announce one table (see the module docstring)."""

    def __init__(self, now: float, min_interval: float, max_interval: float) -> None:
        if not 0 < min_interval <= max_interval:
            raise ValueError("need 0 < min_interval <= max_interval")
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.interval = min_interval
        self.next_at = now  # the first announcement goes at once
        self.last_state: tuple[int, ...] | None = None
        self.heard_at = -1e18  # last time another validator announced what we would say
        self.window_start = -1e18  # start of the current interval
        self.suppressed = 0
        self.sent = 0

    def heard_other(self, now: float, height: int, our_height: int) -> None:
        if height >= our_height:
            self.heard_at = now

    def soon(self, now: float, delay: float) -> None:
        """A younger table of our name was heard: say ours within ``delay`` (its members
        move to the oldest they hear), unless another validator says it first."""
        self.interval = self.min_interval
        self.window_start = now  # only an announcement heard from now on suppresses ours
        self.next_at = min(self.next_at, now + delay)

    def due(self, now: float, state: tuple[int, ...], full: bool) -> bool:
        """Whether to announce now, for what we would say (``state``: seats and players);
        call :meth:`sent_now` when it went out."""
        if state != self.last_state:
            if self.last_state is not None:
                self.interval = self.min_interval
                self.next_at = min(self.next_at, now)
        elif full:
            return False
        if now < self.next_at:
            return False
        if self.heard_at >= self.window_start and state == self.last_state:
            self.suppressed += 1
            self._advance(now)
            return False
        return True

    def sent_now(self, now: float, state: tuple[int, ...]) -> None:
        self.sent += 1
        self.last_state = state
        self._advance(now)

    def _advance(self, now: float) -> None:
        self.window_start = now
        self.next_at = now + self.interval
        self.interval = min(self.max_interval, self.interval * 2)


__all__ = [
    "TABLE_ANNOUNCE_TYPE",
    "AnnounceError",
    "AnnounceSchedule",
    "Heard",
    "TableAnnounce",
    "TableDirectory",
]
