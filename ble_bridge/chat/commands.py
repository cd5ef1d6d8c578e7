"""Chat commands from BitChat phones, sans-IO: ``!help``, ``!tables``, ``!balance``.

The apps send a line that starts with ``!`` unchanged (they act only on ``/`` themselves:
iOS ``ChatOutgoingCoordinator.sendMessage``, Android ``ChatViewModel``), as a signed public
message (type 0x02, raw UTF-8) or inside a Noise private message. :class:`Commands` turns
one such line into at most one short reply. Bounds: a command line is at most
``max_command_bytes``; each sender gets at most ``replies_burst`` replies and then one every
``reply_interval`` seconds, and an unknown or malformed command (or an oversized line) at most
one help reply per ``help_interval``; every sender remembered is in a bounded LRU. Every line
ends in one counter of :attr:`Commands.stats`. ``!join`` and ``!bet`` need the phone's signed
packet, so :class:`~.phone.PhoneChat` handles them (spending the same reply tokens through
:meth:`Commands.allow`); here they are unknown and get the help reply.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PUBLIC_REPLY_MAX = 99  # under BitChat's 100-byte compression threshold (see docs/protocol.md)
PRIVATE_REPLY_MAX = 255  # PrivateMessagePacket content limit

HELP = "commands: !tables, !join TABLE, !bet TABLE pass|dont-pass|field N, !balance, !help"


@dataclass(frozen=True, slots=True)
class ChatConfig:
    max_command_bytes: int = 200
    replies_burst: int = 3
    reply_interval: float = 5.0
    help_interval: float = 30.0
    max_senders: int = 512


@dataclass(frozen=True, slots=True)
class TableView:
    """One table as the node sees it, for ``!tables`` and ``!balance``."""

    name: str
    height: int
    health: str
    validators: int
    players: int
    balance_of: Callable[[bytes], int | None]


TablesSource = Callable[[], Sequence[TableView]]


@dataclass(slots=True)
class _Sender:
    tokens: float
    at: float
    last_help: float = float("-inf")


class Commands:
    """Parse command lines and build replies; rate limits per sender."""

    def __init__(self, tables: TablesSource, config: ChatConfig | None = None) -> None:
        self.tables = tables
        self.config = config or ChatConfig()
        self.stats: Counter[str] = Counter()
        self._senders: OrderedDict[bytes, _Sender] = OrderedDict()

    def _sender(self, now: float, key: bytes) -> _Sender:
        cfg = self.config
        s = self._senders.get(key)
        if s is None:
            s = self._senders[key] = _Sender(float(cfg.replies_burst), now)
            while len(self._senders) > cfg.max_senders:
                self._senders.popitem(last=False)
        else:
            self._senders.move_to_end(key)
            s.tokens = min(float(cfg.replies_burst), s.tokens + (now - s.at) / cfg.reply_interval)
            s.at = now
        return s

    def allow(self, now: float, sender_key: bytes, word: str) -> bool:
        """Spend one of the sender's reply tokens on a command handled elsewhere (``!join``,
        ``!bet``); False (counted) when it has none left."""
        sender = self._sender(now, sender_key)
        if sender.tokens < 1.0:
            self.stats["rate_limited"] += 1
            return False
        sender.tokens -= 1.0
        self.stats[f"cmd_{word}"] += 1
        return True

    def handle(self, now: float, sender_key: bytes, text: str, *, private: bool) -> str | None:
        """The reply to one line from the sender with Ed25519 key ``sender_key``, or None.

        A line that is not a command (no ``!``) is counted and gets no reply.
        """
        cfg = self.config
        line = text.strip()
        if not line.startswith("!"):
            self.stats["not_a_command"] += 1
            return None
        sender = self._sender(now, sender_key)
        oversized = len(text.encode("utf-8")) > cfg.max_command_bytes
        word, _, rest = line[1:].partition(" ")
        word = word.lower()
        known = not oversized and (word in ("help", "tables", "balance") and not rest.strip())
        if not known:
            self.stats["oversized" if oversized else "unknown_command"] += 1
            if now - sender.last_help < cfg.help_interval:
                self.stats["help_suppressed"] += 1
                return None
            sender.last_help = now
            return self._limit("unknown command; " + HELP, private)
        if sender.tokens < 1.0:
            self.stats["rate_limited"] += 1
            return None
        sender.tokens -= 1.0
        self.stats[f"cmd_{word}"] += 1
        if word == "help":
            sender.last_help = now
            reply = HELP
        elif word == "tables":
            reply = self._tables()
        else:
            reply = self._balance(sender_key)
        return self._limit(reply, private)

    def _tables(self) -> str:
        tables = list(self.tables())
        if not tables:
            return "no tables here"
        parts = [f"{t.name} h{t.height} {t.health} {t.players}p/{t.validators}v" for t in tables]
        return "tables: " + "; ".join(parts)

    def _balance(self, key: bytes) -> str:
        seats = []
        for t in self.tables():
            bal = t.balance_of(key)
            if bal is not None:
                seats.append(f"{t.name} {bal}")
        if not seats:
            return "no seat at any table"
        return "balance: " + "; ".join(seats)

    @staticmethod
    def _limit(reply: str, private: bool) -> str:
        limit = PRIVATE_REPLY_MAX if private else PUBLIC_REPLY_MAX
        raw = reply.encode("utf-8")
        if len(raw) <= limit:
            return reply
        return raw[: limit - 3].decode("utf-8", errors="ignore") + "..."


__all__ = ["HELP", "ChatConfig", "Commands", "TableView", "TablesSource"]
