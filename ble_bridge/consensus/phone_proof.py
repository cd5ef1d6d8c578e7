"""Proof that a phone asked for an operation: its own signed BitChat packets, checked by
every validator, and a bounded window of the packets already applied.

A phone player (a BitChat user without a handheld) has a ledger account keyed by its
Ed25519 signing key. A validator that hears the phone's public ``!join TABLE`` or ``!bet
TABLE KIND AMOUNT`` line cannot sign for the phone; it forwards the phone's **own** signed
message frame and the phone's signed announce frame (validators far away may never have
heard the announce). :func:`verify_phone_command` is what every validator runs before it
applies such an operation:

- the announce frame decodes, is type 0x01, is signed, carries nickname, X25519 key and
  Ed25519 key (as the apps require), its sender id is SHA-256(X25519 key)[:8] and its
  signature verifies with the announced Ed25519 key;
- the message frame decodes, is type 0x02, broadcast, has the same sender id and its
  signature verifies with the same Ed25519 key;
- the text is a command naming this table.

So no validator, not even a Byzantine one, can move a phone's tokens without a packet the
phone signed. Replays (the same packet applied twice, here or after the window) are refused
by :class:`ReplayWindow`: the ids of packets applied in the last ``window`` heights (at most
``capacity`` of them; when it is full, new phone operations wait), and per player a floor: the
highest timestamp of its packets that left the window; a packet at or below the floor is
refused. Heights, not wall-clock time: Pis have no RTC; the timestamps compared are the
phone's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..wire.identity import peer_id_from_noise_key
from ..wire.packet import BROADCAST, DecodeLimits, PacketType, WireError, decode
from ..wire.payloads import Announce
from .app import InvalidOperation

MAX_PROOF_FRAME = 512  # a public command line and an announce fit in far less
_LIMITS = DecodeLimits(max_frame=MAX_PROOF_FRAME, max_payload=MAX_PROOF_FRAME, max_route=0)
BET_KINDS = ("pass", "dont-pass", "field")


@dataclass(frozen=True, slots=True)
class PhoneCommand:
    """A verified command from a phone player."""

    key: bytes  # the phone's Ed25519 signing key: its account
    nickname: str
    packet_id: bytes  # 16 bytes, the replay key
    timestamp: int  # the phone's ms timestamp of the message
    verb: str  # "join" | "bet"
    kind: str = ""  # bet kind (pass, dont-pass, field)
    amount: int = 0


def parse_command(text: str, table: str) -> tuple[str, str, int]:
    """(verb, kind, amount) of ``!join TABLE`` / ``!bet TABLE KIND AMOUNT`` for ``table``;
    InvalidOperation otherwise. The table name is compared case-insensitively."""
    words = text.strip().split()
    if not words or words[0].lower() not in ("!join", "!bet"):
        raise InvalidOperation("phone_not_a_command")
    verb = words[0][1:].lower()
    if len(words) < 2 or words[1].lower() != table.lower():
        raise InvalidOperation("phone_wrong_table")
    if verb == "join":
        if len(words) != 2:
            raise InvalidOperation("phone_malformed")
        return verb, "", 0
    if len(words) != 4 or words[2].lower() not in BET_KINDS or not words[3].isdigit():
        raise InvalidOperation("phone_malformed")
    amount = int(words[3])
    if not 0 < amount < 1 << 32:
        raise InvalidOperation("phone_malformed")
    return verb, words[2].lower(), amount


def verify_phone_command(announce_frame: bytes, message_frame: bytes, table: str) -> PhoneCommand:
    """The command the phone signed, or InvalidOperation with the reason it is refused."""
    try:
        ann_packet = decode(announce_frame, _LIMITS)
        msg = decode(message_frame, _LIMITS)
        ann = Announce.decode(ann_packet.payload)
    except WireError:
        raise InvalidOperation("phone_bad_frame") from None
    if ann_packet.type != PacketType.ANNOUNCE or msg.type != PacketType.MESSAGE:
        raise InvalidOperation("phone_bad_frame")
    if ann.nickname is None or ann.noise_key is None or ann.signing_key is None:
        raise InvalidOperation("phone_bad_announce")
    if peer_id_from_noise_key(ann.noise_key) != ann_packet.sender:
        raise InvalidOperation("phone_bad_announce")
    if not ann_packet.verify(ann.signing_key):
        raise InvalidOperation("phone_bad_signature")
    if msg.sender != ann_packet.sender or not (msg.recipient is None or msg.recipient == BROADCAST):
        raise InvalidOperation("phone_wrong_sender")
    if not msg.verify(ann.signing_key):
        raise InvalidOperation("phone_bad_signature")
    try:
        text = bytes(msg.payload).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidOperation("phone_malformed") from None
    verb, kind, amount = parse_command(text, table)
    return PhoneCommand(
        ann.signing_key, ann.nickname, msg.packet_id, msg.timestamp, verb, kind, amount
    )


@dataclass(frozen=True, slots=True)
class ReplayWindow:
    """Committed replay protection (immutable, canonical: part of the replicated state).

    ``applied``: (packet id, player, timestamp, height) of the phone packets applied in the
    last ``window`` heights, sorted by packet id; ``floors``: (player, timestamp), sorted.
    """

    window: int = 256
    capacity: int = 512
    applied: tuple[tuple[bytes, bytes, int, int], ...] = ()
    floors: tuple[tuple[bytes, int], ...] = field(default=())

    def check(self, cmd: PhoneCommand) -> None:
        if any(pid == cmd.packet_id for pid, _, _, _ in self.applied):
            raise InvalidOperation("phone_replayed")
        floor = dict(self.floors).get(cmd.key)
        if floor is not None and cmd.timestamp <= floor:
            raise InvalidOperation("phone_replayed_old")
        if len(self.applied) >= self.capacity:
            raise InvalidOperation("phone_window_full")

    def add(self, cmd: PhoneCommand, height: int) -> ReplayWindow:
        self.check(cmd)
        entry = (cmd.packet_id, cmd.key, cmd.timestamp, height)
        applied = tuple(sorted((*self.applied, entry)))
        return ReplayWindow(self.window, self.capacity, applied, self.floors)

    def advance(self, height: int) -> ReplayWindow:
        """Drop entries older than ``window`` heights at ``height``; raise the floors."""
        keep = [e for e in self.applied if e[3] > height - self.window]
        if len(keep) == len(self.applied):
            return self
        floors = dict(self.floors)
        for _, player, ts, h in self.applied:
            if h <= height - self.window:
                floors[player] = max(floors.get(player, ts), ts)
        return ReplayWindow(self.window, self.capacity, tuple(keep), tuple(sorted(floors.items())))


__all__ = [
    "BET_KINDS",
    "MAX_PROOF_FRAME",
    "PhoneCommand",
    "ReplayWindow",
    "parse_command",
    "verify_phone_command",
]
