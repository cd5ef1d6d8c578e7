"""Noise sessions with many peers, bounded and sans-IO (explicit ``now``), as BitChat runs them.

One :class:`NoiseSessions` per node, keyed by peer id (8 bytes). It answers handshake
messages (type 0x10 payloads) as responder, starts handshakes as initiator, and encrypts and
decrypts transport messages (type 0x11 payloads). Rules taken from the apps (iOS
``NoiseSessionManager``, ``SecureNoiseSession``, ``NoiseSecurityConstants``, ``NoiseRateLimiter``;
Android ``NoiseSession``):

- A 32-byte message is a fresh initiation (XX message 1). With an established session it
  starts a new responder while the old transport stays receive-only ("quarantined") until the
  new one completes or ``responder_timeout`` passes; a crossed initiation (both sides started)
  is won by the smaller peer id: the larger one yields and answers as responder.
- A finished handshake counts only if the remote static key hashes to the sender's peer id.
- Handshakes are rate-limited per peer (10 a minute) and overall (30 a minute); at most
  ``max_half_open`` unfinished handshakes exist, each expiring after 10 s (initiator) or 20 s
  (responder); at most ``max_sessions`` sessions, the least recently used established one
  giving way to a new one; idle sessions expire; a session older than ``max_age`` (iOS: 24 h)
  or that sent ``rekey_after_messages`` (iOS: 90 % of 10^9) asks for a rekey, which is a
  fresh XX handshake started by us (:meth:`needs_rekey`, :meth:`initiate`).
- Every refusal is counted in :attr:`stats` by reason; nothing here raises on bad bytes
  except :class:`NoiseError` from the public methods, which callers count.
"""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .protocol import (
    XX_MESSAGE_1_LEN,
    Established,
    HandshakeXX,
    NoiseError,
    public_bytes,
)

MAX_HANDSHAKE_MESSAGE = 2048  # NoiseSecurityConstants.maxHandshakeMessageSize


@dataclass(frozen=True, slots=True)
class NoiseConfig:
    max_sessions: int = 64
    max_half_open: int = 16
    initiator_timeout: float = 10.0  # ordinaryHandshakeTimeout
    responder_timeout: float = 20.0  # ordinaryResponderHandshakeTimeout
    idle_timeout: float = 3600.0
    max_age: float = 86_400.0  # sessionTimeout
    rekey_after_messages: int = 900_000_000  # 90 % of maxMessagesPerSession
    handshakes_per_minute_per_peer: int = 10  # maxHandshakesPerMinute
    handshakes_per_minute: int = 30  # maxGlobalHandshakesPerMinute
    rate_peers: int = 256  # peers whose handshake rate is remembered


class _Bucket:
    """A token bucket refilled at ``per_minute`` a minute, holding at most ``per_minute``."""

    __slots__ = ("at", "per_minute", "tokens")

    def __init__(self, per_minute: int, now: float) -> None:
        self.per_minute = per_minute
        self.tokens = float(per_minute)
        self.at = now

    def take(self, now: float) -> bool:
        self.tokens = min(
            float(self.per_minute), self.tokens + (now - self.at) * self.per_minute / 60.0
        )
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


@dataclass(slots=True)
class _Session:
    peer_id: bytes
    created: float
    last_used: float
    handshake: HandshakeXX | None = None  # while handshaking
    handshake_deadline: float = 0.0
    transport: Established | None = None
    established_at: float = 0.0
    sent: int = 0
    received: int = 0
    quarantined: Established | None = None  # the previous transport, receive-only
    quarantine_deadline: float = 0.0

    @property
    def established(self) -> bool:
        return self.transport is not None


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    """What one handshake message did: a reply to send, and whether a session is now up."""

    reply: bytes | None
    established: bool


def peer_id_of(noise_key: bytes) -> bytes:
    return hashlib.sha256(noise_key).digest()[:8]


class NoiseSessions:
    """Every Noise session of one node (see the module docstring)."""

    def __init__(
        self, local_peer_id: bytes, static: X25519PrivateKey, config: NoiseConfig | None = None
    ) -> None:
        self.peer_id = local_peer_id
        self.static = static
        self.static_public = public_bytes(static)
        self.config = config or NoiseConfig()
        self.stats: Counter[str] = Counter()
        self._sessions: OrderedDict[bytes, _Session] = OrderedDict()  # LRU order
        self._rates: OrderedDict[bytes, _Bucket] = OrderedDict()
        self._global: _Bucket | None = None

    # -- queries ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def half_open(self) -> int:
        return sum(1 for s in self._sessions.values() if s.handshake is not None)

    def established(self, peer_id: bytes) -> bool:
        s = self._sessions.get(peer_id)
        return s is not None and s.established

    def remote_static(self, peer_id: bytes) -> bytes | None:
        s = self._sessions.get(peer_id)
        return None if s is None or s.transport is None else s.transport.remote_static

    def peers(self) -> list[bytes]:
        return [p for p, s in self._sessions.items() if s.established]

    def needs_rekey(self, now: float, peer_id: bytes) -> bool:
        s = self._sessions.get(peer_id)
        if s is None or s.transport is None:
            return False
        cfg = self.config
        return now - s.established_at >= cfg.max_age or s.sent >= cfg.rekey_after_messages

    # -- handshakes ------------------------------------------------------------------

    def _rate_check(self, now: float, peer_id: bytes) -> None:
        """Raise ``rate_limited_peer`` / ``rate_limited`` when a handshake is over the rate."""
        cfg = self.config
        if self._global is None:
            self._global = _Bucket(cfg.handshakes_per_minute, now)
        bucket = self._rates.get(peer_id)
        if bucket is None:
            bucket = self._rates[peer_id] = _Bucket(cfg.handshakes_per_minute_per_peer, now)
            while len(self._rates) > cfg.rate_peers:
                self._rates.popitem(last=False)
        else:
            self._rates.move_to_end(peer_id)
        if not bucket.take(now):
            raise NoiseError("rate_limited_peer")
        if not self._global.take(now):
            raise NoiseError("rate_limited")

    def _room_check(self, now: float) -> None:
        limit = self.config.max_half_open
        if len(self._sessions) < limit or self.half_open < limit:  # the first test is O(1)
            return
        self.expire(now)  # only when full: expire() walks every session
        if self.half_open >= self.config.max_half_open:
            raise NoiseError("half_open_full")

    def _make_room(self) -> None:
        """Evict the least recently used established session when at capacity."""
        while len(self._sessions) >= self.config.max_sessions:
            victim = next((p for p, s in self._sessions.items() if s.handshake is None), None)
            if victim is None:
                victim = next(iter(self._sessions))
            del self._sessions[victim]
            self.stats["session_evicted"] += 1

    def initiate(self, now: float, peer_id: bytes) -> bytes:
        """Start (or restart, for a rekey) a handshake as initiator: XX message 1."""
        if peer_id == self.peer_id or len(peer_id) != 8:
            raise NoiseError("bad_peer")
        try:
            self._rate_check(now, peer_id)
            self._room_check(now)
        except NoiseError as exc:
            self.stats[f"handshake_{exc.reason}"] += 1
            raise
        old = self._sessions.pop(peer_id, None)
        self._make_room()
        hs = HandshakeXX(True, self.static, static_public=self.static_public)
        s = _Session(peer_id, now, now, hs, now + self.config.initiator_timeout)
        if old is not None and old.transport is not None:
            s.quarantined, s.quarantine_deadline = old.transport, s.handshake_deadline
        self._sessions[peer_id] = s
        self.stats["handshakes_initiated"] += 1
        return hs.write()

    def on_handshake(self, now: float, peer_id: bytes, message: bytes) -> HandshakeResult:
        """Handle one handshake message from ``peer_id``; raises :class:`NoiseError`."""
        self.stats["handshake_messages"] += 1
        try:
            return self._on_handshake(now, peer_id, message)
        except NoiseError as exc:
            self.stats[f"handshake_{exc.reason}"] += 1
            raise

    def _on_handshake(self, now: float, peer_id: bytes, message: bytes) -> HandshakeResult:
        if len(message) > MAX_HANDSHAKE_MESSAGE:
            raise NoiseError("too_large")
        if peer_id == self.peer_id:
            raise NoiseError("bad_peer")
        s = self._sessions.get(peer_id)
        fresh = len(message) == XX_MESSAGE_1_LEN
        if fresh:
            if s is not None and s.handshake is not None and s.handshake.initiator:
                if self.peer_id < peer_id:  # crossed initiations: the smaller id keeps going
                    raise NoiseError("crossed_kept_initiator")
                self.stats["crossed_yielded"] += 1
            self._rate_check(now, peer_id)
            if s is None or s.handshake is None:
                self._room_check(now)
            s = self._sessions.get(peer_id)  # expire() may have dropped it
            quarantined, q_deadline = None, 0.0
            if s is not None:
                if s.transport is not None:  # keep the old keys receive-only meanwhile
                    quarantined = s.transport
                    q_deadline = now + self.config.responder_timeout
                elif s.quarantined is not None:
                    quarantined, q_deadline = s.quarantined, s.quarantine_deadline
                del self._sessions[peer_id]
            self._make_room()
            hs = HandshakeXX(False, self.static, static_public=self.static_public)
            s = _Session(peer_id, now, now, hs, now + self.config.responder_timeout)
            s.quarantined, s.quarantine_deadline = quarantined, q_deadline
            self._sessions[peer_id] = s
            try:
                hs.read(message)
                answer = hs.write()
            except NoiseError:
                self._abandon(s)
                raise
            self.stats["handshake_replies"] += 1
            return HandshakeResult(answer, False)
        if s is None or s.handshake is None:
            raise NoiseError("unexpected")  # never tears down a working transport
        hs = s.handshake
        reply: bytes | None = None
        try:
            hs.read(message)
            if hs.my_turn:
                reply = hs.write()
        except NoiseError:
            self._abandon(s)
            raise
        if not hs.complete:
            return HandshakeResult(reply, False)
        est = hs.split()
        if peer_id_of(est.remote_static) != peer_id:
            self._abandon(s)
            raise NoiseError("identity_mismatch")
        s.handshake = None
        s.transport = est
        s.established_at = s.last_used = now
        s.sent = s.received = 0
        s.quarantined = None
        self._sessions.move_to_end(peer_id)
        self.stats["sessions_established"] += 1
        return HandshakeResult(reply, True)

    def _abandon(self, s: _Session) -> None:
        """Drop a failed handshake; a quarantined transport becomes active again."""
        if s.quarantined is not None:
            s.handshake = None
            s.transport, s.quarantined = s.quarantined, None
            self.stats["sessions_restored"] += 1
        else:
            self._sessions.pop(s.peer_id, None)

    # -- transport -------------------------------------------------------------------

    def encrypt(self, now: float, peer_id: bytes, plaintext: bytes) -> bytes:
        s = self._sessions.get(peer_id)
        if s is None or s.transport is None:
            raise NoiseError("no_session")
        if now - s.established_at >= self.config.max_age:
            raise NoiseError("session_expired")
        out = s.transport.send.encrypt(plaintext)
        s.sent += 1
        s.last_used = now
        self._sessions.move_to_end(peer_id)
        self.stats["encrypted"] += 1
        return out

    def decrypt(self, now: float, peer_id: bytes, message: bytes) -> bytes:
        """Decrypt one transport message; refusals raise :class:`NoiseError` and are counted
        as ``decrypt_<reason>``."""
        s = self._sessions.get(peer_id)
        try:
            if s is None or (s.transport is None and s.quarantined is None):
                raise NoiseError("no_session")
            out = None
            if s.transport is not None:
                if now - s.established_at >= self.config.max_age:
                    raise NoiseError("session_expired")
                try:
                    out = s.transport.receive.decrypt(message)
                except NoiseError:
                    if s.quarantined is None:
                        raise
            if out is None:
                assert s.quarantined is not None
                out = s.quarantined.receive.decrypt(message)
        except NoiseError as exc:
            self.stats[f"decrypt_{exc.reason}"] += 1
            raise
        s.received += 1
        s.last_used = now
        self._sessions.move_to_end(peer_id)
        self.stats["decrypted"] += 1
        return out

    def remove(self, peer_id: bytes) -> None:
        self._sessions.pop(peer_id, None)

    # -- time ------------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Drop timed-out handshakes (restoring a quarantined transport), idle sessions."""
        cfg = self.config
        for peer_id, s in list(self._sessions.items()):
            if s.handshake is not None:
                if now >= s.handshake_deadline:
                    self.stats["handshake_timeout"] += 1
                    self._abandon(s)
                continue
            if s.quarantined is not None and now >= s.quarantine_deadline:
                s.quarantined = None
            if now - s.last_used >= cfg.idle_timeout or now - s.established_at >= cfg.max_age:
                del self._sessions[peer_id]
                self.stats["session_expired"] += 1

    def next_deadline(self) -> float | None:
        times = [
            s.handshake_deadline
            if s.handshake is not None
            else s.last_used + self.config.idle_timeout
            for s in self._sessions.values()
        ]
        return min(times) if times else None


__all__ = ["HandshakeResult", "NoiseConfig", "NoiseSessions", "peer_id_of"]
