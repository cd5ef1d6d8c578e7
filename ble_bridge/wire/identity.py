"""Node identity: an X25519 static key (peer id) and an Ed25519 signing key.

The peer id is the first 8 bytes of SHA-256 of the X25519 public key, as BitChat does.
Key files hold both private keys as JSON, are created with mode 0600, and are refused when
group or others can read them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

PEER_ID_LEN = 8
KEY_LEN = 32
SIGNATURE_LEN = 64
KEY_FILE_VERSION = 1


class KeyFileError(Exception):
    """A key file is missing, unreadable, corrupt or too widely readable."""


def peer_id_from_noise_key(noise_public: bytes) -> bytes:
    """BitChat's peer id: SHA-256 of the X25519 public key, first 8 bytes."""
    if len(noise_public) != KEY_LEN:
        raise ValueError(f"X25519 public key must be {KEY_LEN} bytes, got {len(noise_public)}")
    return hashlib.sha256(noise_public).digest()[:PEER_ID_LEN]


@functools.lru_cache(maxsize=4096)
def _public_key(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


def verify_signature(signing_public: bytes, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message``; never raises."""
    if len(signing_public) != KEY_LEN or len(signature) != SIGNATURE_LEN:
        return False
    try:
        _public_key(bytes(signing_public)).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _raw_private(key: Ed25519PrivateKey | X25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


@dataclass(frozen=True)
class Identity:
    """A node's two long-term keys and the ids derived from them."""

    noise_private: X25519PrivateKey
    signing_private: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(X25519PrivateKey.generate(), Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """Deterministic keys from a seed: for simulations and tests, never for real nodes."""
        noise = hashlib.sha256(b"ble-bridge/noise/" + seed).digest()
        signing = hashlib.sha256(b"ble-bridge/signing/" + seed).digest()
        return cls(
            X25519PrivateKey.from_private_bytes(noise),
            Ed25519PrivateKey.from_private_bytes(signing),
        )

    @functools.cached_property
    def noise_public(self) -> bytes:
        return self.noise_private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @functools.cached_property
    def signing_public(self) -> bytes:
        return self.signing_private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @functools.cached_property
    def peer_id(self) -> bytes:
        return peer_id_from_noise_key(self.noise_public)

    def sign(self, message: bytes) -> bytes:
        return self.signing_private.sign(message)

    # -- key files -------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": KEY_FILE_VERSION,
                "noise_private": _raw_private(self.noise_private).hex(),
                "signing_private": _raw_private(self.signing_private).hex(),
            },
            indent=2,
        )

    def save(self, path: Path) -> None:
        """Write the key file with mode 0600; refuses to overwrite an existing file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise KeyFileError(f"{path} already exists; remove it first or choose --out") from exc
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(self.to_json() + "\n")
            f.flush()
            os.fsync(f.fileno())

    @classmethod
    def load(cls, path: Path) -> Identity:
        """Load a key file, refusing one that group/others can read or that is corrupt."""
        try:
            st = path.stat()
        except FileNotFoundError as exc:
            raise KeyFileError(
                f"{path} does not exist; create it with `ble-bridge keygen --out {path}`"
            ) from exc
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"{path} is accessible by group/others (mode {stat.S_IMODE(st.st_mode):o}); "
                f"run `chmod 600 {path}`"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise KeyFileError(f"{path} cannot be read ({exc}); check its owner and mode") from exc
        except UnicodeDecodeError as exc:
            raise KeyFileError(
                f"{path} is not a valid ble-bridge key file (not UTF-8 text); restore it from a "
                f"backup or create a new identity with `ble-bridge keygen --out {path}`"
            ) from exc
        try:
            doc = json.loads(text)
            if doc.get("version") != KEY_FILE_VERSION:
                raise ValueError(f"unsupported key file version {doc.get('version')!r}")
            noise = bytes.fromhex(doc["noise_private"])
            signing = bytes.fromhex(doc["signing_private"])
            if len(noise) != KEY_LEN or len(signing) != KEY_LEN:
                raise ValueError("keys must be 32 bytes each")
            return cls(
                X25519PrivateKey.from_private_bytes(noise),
                Ed25519PrivateKey.from_private_bytes(signing),
            )
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            raise KeyFileError(
                f"{path} is not a valid ble-bridge key file ({exc}); restore it from a backup "
                f"or create a new identity with `ble-bridge keygen --out {path}`"
            ) from exc
