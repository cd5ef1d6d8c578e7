"""Owners of a node: bound by ``!pair CODE`` over a Noise DM, then allowed owner commands.

:class:`Pairing` holds the :class:`~ble_bridge.pairing.window.PairingWindow`, the owners
(rows of the node's SQLite store) and the owner commands. It is sans-IO except for its
one timer (:meth:`run`: closes the window at its deadline so listeners, e.g. the BlueZ
agent keeping ``Pairable``, hear of it on time). :meth:`on_private` is the hook
:class:`~ble_bridge.chat.phone.PhoneChat` calls with each private line before its own
commands: it answers ``!pair CODE`` from anyone and, from an owner, ``!status``,
``!nick NAME``, ``!open NAME [SEATS]``, ``!close NAME`` and ``!help``; everything else
(and owner words from a non-owner) is left to the public commands, which rate-limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from ..chat.commands import HELP, PRIVATE_REPLY_MAX
from ..events import kv
from ..mesh.peers import PeerRecord
from ..store import OwnerRecord, Store
from ..tables.errors import TableError
from .window import Attempt, PairingConfig, PairingWindow

log = logging.getLogger(__name__)

OWNER_HELP = HELP + "; owner: !status, !nick NAME, !open NAME [SEATS], !close NAME"
NICK_MAX = 32


class OwnerHost(Protocol):
    """What owner commands may do to the node (``ble_bridge.node.Node`` is one)."""

    def status_line(self) -> str: ...

    def set_nickname(self, now: float, nickname: str) -> None: ...

    def open_table(self, name: str, seats: int | None) -> str: ...

    def close_table(self, name: str) -> str: ...


Listener = Callable[[bool], None]


def valid_nickname(name: str) -> bool:
    return 0 < len(name.encode("utf-8")) <= NICK_MAX and name.isprintable() and name == name.strip()


class Pairing:
    def __init__(
        self,
        store: Store,
        host: OwnerHost,
        config: PairingConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.host = host
        self.config = config or PairingConfig()
        self.window = PairingWindow(self.config)
        self.clock = clock
        self.wall = wall
        self.stats: Counter[str] = Counter()
        self.listeners: list[Listener] = []  # called with True on open, False on close
        self._wake = asyncio.Event()
        self._was_open = False

    # -- the window --------------------------------------------------------------------

    def open(self, duration: float | None = None, *, origin: str = "cli") -> dict[str, Any]:
        """Open a window (``duration`` default ``window_s``); the code is in the reply."""
        now = self.clock()
        code = self.config.button_code if origin == "button" else ""
        self.window.open(now, self.config.window_s if duration is None else duration, code=code,
                         origin=origin)  # fmt: skip
        seconds = round(self.window.deadline - now, 1)
        log.info("%s", kv("pairing_open", origin=origin, seconds=seconds, code=self.window.code))
        self._changed(now)
        return self.window.status(now)

    def close(self, reason: str = "closed") -> bool:
        closed = self.window.close(reason)
        self._changed(self.clock())
        return closed

    def is_open(self) -> bool:
        return self.window.is_open(self.clock())

    def status(self) -> dict[str, Any]:
        out = self.window.status(self.clock())
        out["owners"] = len(self.store.owners())
        out.update({f"dm_{k}": v for k, v in self.stats.items()})
        return out

    def _changed(self, now: float) -> None:
        is_open = self.window.is_open(now)
        self._wake.set()
        if is_open == self._was_open and not is_open:
            return
        self._was_open = is_open
        for listener in list(self.listeners):
            try:
                listener(is_open)
            except Exception:  # a listener's bug must not break pairing
                self.stats["listener_error"] += 1
                log.exception("%s", kv("pairing_listener_failed"))

    async def run(self) -> None:
        """The one timer: close the window at its deadline."""
        while True:
            now = self.clock()
            if self._was_open and not self.window.is_open(now):
                self._changed(now)
            timeout = self.window.deadline - now if self.window.is_open(now) else None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    # -- owners ------------------------------------------------------------------------

    def owners(self) -> list[dict[str, Any]]:
        return [
            {
                "id": o.key.hex(),
                "kind": "owner",
                "nickname": o.nickname,
                "noise_key": o.noise_key.hex(),
                "added_at": o.added_at,
                "via": o.via,
            }
            for o in self.store.owners()
        ]

    def is_owner(self, key: bytes) -> bool:
        return self.store.owner(key) is not None

    def remove(self, ident: str) -> list[str]:
        """Remove the owner whose key (hex) starts with ``ident`` (8+ hex digits, unique)."""
        ident = ident.lower()
        if len(ident) < 8:
            raise ValueError("an owner id is 8 or more hex digits of its key")
        found = [o for o in self.store.owners() if o.key.hex().startswith(ident)]
        if len(found) > 1:
            raise ValueError(f"{ident} matches {len(found)} owners; give more digits")
        for o in found:
            self.store.remove_owner(o.key)
            log.info("%s", kv("owner_removed", id=o.key.hex()[:16], nickname=o.nickname))
        return [o.key.hex() for o in found]

    # -- the DM hook -------------------------------------------------------------------

    def on_private(self, now: float, sender: PeerRecord, text: str) -> str | None:
        """A private line from an announced peer; the reply ("": handled, no reply), or
        None to let the public commands answer it. ``now`` is the mesh clock (the window runs on ``clock``)."""
        key = sender.signing_key
        if key is None or sender.noise_key is None:
            return None
        word, _, rest = text.strip().lstrip("!").partition(" ")
        word, rest = word.lower(), rest.strip()
        if word == "pair":
            return self._pair(sender, key, sender.noise_key, rest)
        if not self.is_owner(key):
            return None
        handler = _OWNER_WORDS.get(word)
        if handler is None:
            return None
        self.stats[f"owner_{word}"] += 1
        return _limit(handler(self, now, rest))

    def _pair(self, rec: PeerRecord, key: bytes, noise_key: bytes, code: str) -> str:
        result = self.window.attempt(self.clock(), key, code)
        self.stats[f"pair_{result.value}"] += 1
        if result is Attempt.PAIRED:
            self._changed(self.clock())
            owner = OwnerRecord(key, noise_key, rec.nickname or "", self.wall(), "dm")
            if not self.store.add_owner(owner, self.config.max_owners):
                self.stats["pair_owners_full"] += 1
                return f"this node has its maximum of {self.config.max_owners} owners"
            log.info("%s", kv("owner_bound", id=key.hex()[:16], nickname=rec.nickname or ""))
            return "paired: you own this node (!help lists owner commands)"
        if result is Attempt.WRONG:
            self._changed(self.clock())  # too many tries may have closed it
            return "wrong pairing code"
        if result is Attempt.MALFORMED:
            self._changed(self.clock())
            return "usage: !pair 123456 (the six digits ble-bridge pair printed)"
        if result is Attempt.CLOSED:
            return "no pairing window is open"
        return ""  # IGNORED: this sender used its tries; handled, no reply

    def _help(self, _now: float, _rest: str) -> str:
        return OWNER_HELP

    def _status(self, _now: float, _rest: str) -> str:
        return self.host.status_line()

    def _nick(self, now: float, rest: str) -> str:
        if not valid_nickname(rest):
            return f"usage: !nick NAME (1..{NICK_MAX} bytes, printable)"
        self.host.set_nickname(now, rest)
        return f"nickname is now {rest}"

    def _open(self, _now: float, rest: str) -> str:
        name, _, seats_text = rest.partition(" ")
        seats: int | None = None
        if seats_text.strip():
            try:
                seats = int(seats_text)
            except ValueError:
                return "usage: !open NAME [SEATS]"
        if not name:
            return "usage: !open NAME [SEATS]"
        try:
            return self.host.open_table(name, seats)
        except TableError as exc:
            return f"refused: {exc.message}"

    def _close_table(self, _now: float, rest: str) -> str:
        if not rest:
            return "usage: !close NAME"
        try:
            return self.host.close_table(rest)
        except TableError as exc:
            return f"refused: {exc.message}"


_OWNER_WORDS: dict[str, Callable[[Pairing, float, str], str]] = {
    "help": Pairing._help,
    "status": Pairing._status,
    "nick": Pairing._nick,
    "open": Pairing._open,
    "close": Pairing._close_table,
}


def _limit(reply: str) -> str:
    raw = reply.encode("utf-8")
    if len(raw) <= PRIVATE_REPLY_MAX:
        return reply
    return raw[: PRIVATE_REPLY_MAX - 3].decode("utf-8", errors="ignore") + "..."


__all__ = ["OWNER_HELP", "OwnerHost", "Pairing", "valid_nickname"]
