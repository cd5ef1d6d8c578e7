"""Noise_XX_25519_ChaChaPoly_SHA256 as the BitChat apps run it, sans-IO.

The handshake is plain Noise (revision 34): XX (``-> e``, ``<- e, ee, s, es``,
``-> s, se``), empty prologue and empty payloads in BitChat, handshake ciphers with the
implicit counter nonce. It is checked against the cacophony test vectors.

Transport messages are not plain Noise. After ``Split()`` BitChat (iOS ``NoiseCipherState``
with ``useExtractedNonce``, Android ``NoiseSession``) sends each message as
``nonce (4 bytes, big-endian) || ChaCha20-Poly1305 ciphertext || tag`` with an empty AD,
the 12-byte AEAD nonce being 4 zero bytes and the counter as 8 little-endian bytes; the
sender counts 0, 1, 2, … and stops at 2^32 − 2; the receiver takes the nonce from the
message and accepts it once inside a sliding window of 1024 (:class:`ReplayWindow`), so
reordered messages are fine and replays or nonces 1024 or more behind the highest are not.

Primitives: X25519 and ChaCha20-Poly1305 from ``cryptography``; SHA-256 and HMAC-SHA256
(Noise's HKDF) from the standard library's OpenSSL-backed ``hashlib``/``hmac``, which
compute the same functions with less per-call overhead than ``cryptography``'s HKDF object.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_SHA256"
DH_LEN = 32
TAG_LEN = 16
HASH_LEN = 32
NONCE_PREFIX_LEN = 4
REPLAY_WINDOW = 1024
MAX_TRANSPORT_NONCE = (1 << 32) - 2  # iOS/Android refuse to send beyond UInt32.max - 1
MAX_MESSAGE = 65535  # Noise's message limit (NoiseSecurityConstants.maxMessageSize)

# XX message lengths with BitChat's empty payloads
XX_MESSAGE_1_LEN = DH_LEN
XX_MESSAGE_2_LEN = DH_LEN + DH_LEN + TAG_LEN + TAG_LEN
XX_MESSAGE_3_LEN = DH_LEN + TAG_LEN + TAG_LEN

_XX = (("e",), ("e", "ee", "s", "es"), ("s", "se"))
_H_EMPTY_PROLOGUE = hashlib.sha256(PROTOCOL_NAME.ljust(HASH_LEN, b"\x00")).digest()


class NoiseError(ValueError):
    """A handshake or transport message was refused; ``reason`` is a counter name."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def public_key(public: bytes) -> X25519PublicKey:
    try:
        return X25519PublicKey.from_public_bytes(public)
    except ValueError as exc:
        raise NoiseError("bad_key", str(exc)) from None


def dh(private: X25519PrivateKey, public: X25519PublicKey) -> bytes:
    """X25519; a low-order peer key (all-zero shared secret) is refused."""
    try:
        return private.exchange(public)
    except ValueError as exc:
        raise NoiseError("bad_key", str(exc)) from None


def _aead_nonce(n: int) -> bytes:
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


_HANDSHAKE_NONCES = (_aead_nonce(0), _aead_nonce(1))  # a handshake key encrypts at most twice


def hkdf(chaining_key: bytes, ikm: bytes, outputs: int) -> list[bytes]:
    """Noise's HKDF (HMAC-SHA256): 2 or 3 outputs of 32 bytes."""
    temp = hmac.digest(chaining_key, ikm, "sha256")
    out: list[bytes] = []
    prev = b""
    for i in range(1, outputs + 1):
        prev = hmac.digest(temp, prev + bytes((i,)), "sha256")
        out.append(prev)
    return out


_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))
_ZEROS = bytes(32)
_sha256 = hashlib.sha256


def hkdf2(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    """:func:`hkdf` with two outputs (every use in XX), the same function.

    HMAC-SHA256 (RFC 2104) written out over ``hashlib.sha256``: the keys here are always 32
    bytes, so a key block is the key and 32 zero bytes, XORed with 0x36 / 0x5c by
    ``bytes.translate``. The second key's pads serve both outputs. Six SHA-256 calls cost
    less than three OpenSSL HMAC calls, which set up a MAC context each (checked against
    :func:`hkdf` in tests/noise and by the test vectors)."""
    if len(chaining_key) != HASH_LEN:
        return tuple(hkdf(chaining_key, ikm, 2))  # type: ignore[return-value]
    block = chaining_key + _ZEROS
    temp = _sha256(block.translate(_OPAD) + _sha256(block.translate(_IPAD) + ikm).digest()).digest()
    block = temp + _ZEROS
    inner, outer = block.translate(_IPAD), block.translate(_OPAD)
    out1 = _sha256(outer + _sha256(inner + b"\x01").digest()).digest()
    out2 = _sha256(outer + _sha256(inner + out1 + b"\x02").digest()).digest()
    return out1, out2


class CipherState:
    """Noise CipherState with the implicit counter nonce (handshake phase)."""

    __slots__ = ("_aead", "n")

    def __init__(self, key: bytes | None = None) -> None:
        self._aead = None if key is None else ChaCha20Poly1305(key)
        self.n = 0

    @property
    def has_key(self) -> bool:
        return self._aead is not None

    def encrypt(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._aead is None:
            return plaintext
        n = self.n
        nonce = _HANDSHAKE_NONCES[n] if n < 2 else _aead_nonce(n)
        out = self._aead.encrypt(nonce, plaintext, ad)
        self.n += 1
        return out

    def decrypt(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self._aead is None:
            return ciphertext
        try:
            n = self.n
            nonce = _HANDSHAKE_NONCES[n] if n < 2 else _aead_nonce(n)
            out = self._aead.decrypt(nonce, ciphertext, ad)
        except InvalidTag:
            raise NoiseError("bad_tag") from None
        self.n += 1
        return out


class SymmetricState:
    __slots__ = ("cipher", "ck", "h")

    def __init__(self) -> None:
        # the protocol name is exactly 32 bytes: h = name, no hashing
        self.h = PROTOCOL_NAME.ljust(HASH_LEN, b"\x00")
        self.ck = self.h
        self.cipher = CipherState()

    def mix_hash(self, data: bytes) -> None:
        self.h = _sha256(self.h + data).digest()

    def mix_key(self, ikm: bytes) -> None:
        self.ck, key = hkdf2(self.ck, ikm)
        self.cipher = CipherState(key)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        out = self.cipher.encrypt(self.h, plaintext)
        self.mix_hash(out)
        return out

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        out = self.cipher.decrypt(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return out

    def split(self) -> tuple[bytes, bytes]:
        return hkdf2(self.ck, b"")


class ReplayWindow:
    """The receive side of BitChat's extracted nonces: each nonce once, within 1024 of the
    highest seen.

    Acceptance is iOS's ``isValidNonce``: refuse ``n <= highest - 1024`` (once highest ≥
    1024), accept anything above the highest, else accept if not yet seen. The record is a
    1024-bit integer, bit k standing for nonce ``highest - k``. (Both apps shift their byte
    array the wrong way for shifts that are not a multiple of 8, which forgets or invents
    marks; this keeps the marks the window is meant to keep; docs/protocol.md.)
    """

    __slots__ = ("highest", "mask", "size")

    def __init__(self, size: int = REPLAY_WINDOW) -> None:
        self.size = size
        self.highest = 0
        self.mask = 0

    def fresh(self, n: int) -> bool:
        if self.highest >= self.size and n <= self.highest - self.size:
            return False
        if n > self.highest:
            return True
        return not (self.mask >> (self.highest - n)) & 1

    def mark(self, n: int) -> None:
        if n > self.highest:
            shift = n - self.highest
            self.mask = (self.mask << shift) & ((1 << self.size) - 1) if shift < self.size else 0
            self.highest = n
            self.mask |= 1
        else:
            self.mask |= 1 << (self.highest - n)


class TransportCipher:
    """One direction of an established session, with BitChat's explicit 4-byte nonce."""

    __slots__ = ("_aead", "n", "window")

    def __init__(self, key: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)
        self.n = 0
        self.window = ReplayWindow()

    def encrypt(self, plaintext: bytes) -> bytes:
        n = self.n
        if n > MAX_TRANSPORT_NONCE:
            raise NoiseError("nonce_exhausted")
        self.n = n + 1
        return n.to_bytes(NONCE_PREFIX_LEN, "big") + self._aead.encrypt(
            _aead_nonce(n), plaintext, b""
        )

    def decrypt(self, message: bytes) -> bytes:
        if len(message) < NONCE_PREFIX_LEN + TAG_LEN:
            raise NoiseError("too_short")
        if len(message) > MAX_MESSAGE + NONCE_PREFIX_LEN:
            raise NoiseError("too_large")
        n = int.from_bytes(message[:NONCE_PREFIX_LEN], "big")
        if not self.window.fresh(n):
            raise NoiseError("replayed")
        try:
            out = self._aead.decrypt(_aead_nonce(n), message[NONCE_PREFIX_LEN:], b"")
        except InvalidTag:
            raise NoiseError("bad_tag") from None
        self.window.mark(n)  # only an authentic message moves the window
        return out


@dataclass(frozen=True, slots=True)
class Established:
    """What a finished handshake yields."""

    send: TransportCipher
    receive: TransportCipher
    remote_static: bytes
    handshake_hash: bytes


class HandshakeXX:
    """One side of an XX handshake. ``ephemeral`` fixes the ephemeral key (test vectors);
    ``static_public`` is the static key's public half when the caller has it (a node answers
    every handshake with one static key: no need to derive it each time)."""

    __slots__ = ("_re_key", "_rs_key", "e", "initiator", "re", "rs", "s", "s_pub", "step", "sym")

    def __init__(
        self,
        initiator: bool,
        static: X25519PrivateKey,
        *,
        prologue: bytes = b"",
        ephemeral: X25519PrivateKey | None = None,
        static_public: bytes | None = None,
    ) -> None:
        self.initiator = initiator
        self.s = static
        self.s_pub = public_bytes(static) if static_public is None else static_public
        self.e = ephemeral
        self.re: bytes | None = None
        self.rs: bytes | None = None
        self._re_key: X25519PublicKey | None = None  # parsed once, used by two DHs
        self._rs_key: X25519PublicKey | None = None
        self.sym = SymmetricState()
        if prologue:  # MixHash(prologue), the empty prologue included
            self.sym.mix_hash(prologue)
        else:
            self.sym.h = _H_EMPTY_PROLOGUE
        self.step = 0  # index into _XX of the next message

    @property
    def complete(self) -> bool:
        return self.step >= len(_XX)

    @property
    def my_turn(self) -> bool:
        """Whether the next message is ours to write."""
        return not self.complete and (self.step % 2 == 0) == self.initiator

    def _dh_token(self, token: str) -> None:
        # ee, es, se: the first letter is the initiator's key, the second the responder's
        assert self.e is not None and self.re is not None
        re_key = self._re_key
        if re_key is None:
            re_key = self._re_key = public_key(self.re)
        if token == "ee":
            self.sym.mix_key(dh(self.e, re_key))
            return
        # es: initiator's e with responder's s; se: initiator's s with responder's e
        use_remote_static = (token == "es") == self.initiator
        if use_remote_static:
            if self.rs is None:
                raise NoiseError("out_of_order", "no remote static key yet")
            rs_key = self._rs_key
            if rs_key is None:
                rs_key = self._rs_key = public_key(self.rs)
            self.sym.mix_key(dh(self.e, rs_key))
        else:
            self.sym.mix_key(dh(self.s, re_key))

    def write(self, payload: bytes = b"") -> bytes:
        if not self.my_turn:
            raise NoiseError("out_of_order", "not our message to write")
        out = bytearray()
        for token in _XX[self.step]:
            if token == "e":
                if self.e is None:
                    self.e = X25519PrivateKey.generate()
                e_pub = public_bytes(self.e)
                out += e_pub
                self.sym.mix_hash(e_pub)
            elif token == "s":
                out += self.sym.encrypt_and_hash(self.s_pub)
            else:
                self._dh_token(token)
        out += self.sym.encrypt_and_hash(payload)
        self.step += 1
        return bytes(out)

    def read(self, message: bytes) -> bytes:
        if self.complete or self.my_turn:
            raise NoiseError("out_of_order", "not a message we expect")
        off = 0
        for token in _XX[self.step]:
            if token == "e":
                if len(message) < off + DH_LEN:
                    raise NoiseError("too_short")
                self.re = bytes(message[off : off + DH_LEN])
                off += DH_LEN
                self.sym.mix_hash(self.re)
            elif token == "s":
                n = DH_LEN + (TAG_LEN if self.sym.cipher.has_key else 0)
                if len(message) < off + n:
                    raise NoiseError("too_short")
                self.rs = self.sym.decrypt_and_hash(bytes(message[off : off + n]))
                off += n
            else:
                self._dh_token(token)
        payload = self.sym.decrypt_and_hash(bytes(message[off:]))
        self.step += 1
        return payload

    def split(self) -> Established:
        if not self.complete or self.rs is None:
            raise NoiseError("not_complete")
        k1, k2 = self.sym.split()
        send, receive = (k1, k2) if self.initiator else (k2, k1)
        return Established(TransportCipher(send), TransportCipher(receive), self.rs, self.sym.h)


__all__ = [
    "MAX_MESSAGE",
    "PROTOCOL_NAME",
    "REPLAY_WINDOW",
    "XX_MESSAGE_1_LEN",
    "XX_MESSAGE_2_LEN",
    "XX_MESSAGE_3_LEN",
    "CipherState",
    "Established",
    "HandshakeXX",
    "NoiseError",
    "ReplayWindow",
    "TransportCipher",
    "public_bytes",
]
