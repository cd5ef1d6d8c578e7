"""The signer-state file: what this key last signed in each session, beside the key.

It survives the loss of the database (a bad SD card, an interrupted copy): the engine
consults it before every proposal and vote, and records the new signature in it, durably,
*before* the message leaves the node ("durable before it leaves"). It is the one source of
truth for the double-sign guard; the database keeps the signed messages and the lock only
so a restarted node can re-send them and keep its lock.

Format: two fixed slots of :data:`SLOT` bytes. An update writes the whole table (one
record per session) into the slot not holding the newest copy, then ``fdatasync``; a write
torn by a power cut leaves the other slot, so a reader always finds the previous or the
new table (one flush per signature instead of the two a write-rename-fsync-dir costs). A
slot::

    magic "BBSG" | version 1 | seq u64 | signing key 32 | count u16
    | count x (session 16 | height u64 | round u32 | step u8 | digest 32)
    | sha256(everything before)[:16] | zero padding to SLOT

``digest`` is the SHA-256 of the signed message as sent; all zeros (:data:`UNKNOWN`)
means "something may have been signed here, content unknown" (a floor set by catch-up).
The newest valid slot (highest ``seq``) wins. A file whose slots both fail to decode is
corrupt; one whose key differs is another node's and is never used.
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import StorageFailure

MAGIC = b"BBSG"
VERSION = 1
SLOT = 4096
UNKNOWN = bytes(32)
_HEAD = struct.Struct(">4sBQ32sH")
_REC = struct.Struct(">16sQIB32s")
_SUM = 16
MAX_RECORDS = (SLOT - _HEAD.size - _SUM) // _REC.size  # 66


class SignerFileError(ValueError):
    """The bytes are not a signer-state slot (the reason says why)."""


class ForeignSignerFile(Exception):
    """The signer-state file belongs to another signing key."""

    def __init__(self, path: Path, found: bytes, ours: bytes) -> None:
        super().__init__(f"{path} is the signer state of key {found.hex()[:16]}…")
        self.path = path
        self.found = found
        self.ours = ours


@dataclass(frozen=True, slots=True, order=True)
class SignedAt:
    """The last (height, round, step) signed in a session and the digest of what."""

    height: int
    round: int
    step: int
    digest: bytes = UNKNOWN

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.height, self.round, self.step)


@dataclass(frozen=True, slots=True)
class SignerTable:
    seq: int
    key: bytes
    records: dict[bytes, SignedAt]


def encode_slot(table: SignerTable) -> bytes:
    if len(table.records) > MAX_RECORDS:
        raise SignerFileError(f"more than {MAX_RECORDS} sessions")
    if len(table.key) != 32:
        raise SignerFileError("signing key must be 32 bytes")
    parts = [_HEAD.pack(MAGIC, VERSION, table.seq, table.key, len(table.records))]
    for session, rec in sorted(table.records.items()):
        if len(session) != 16 or len(rec.digest) != 32:
            raise SignerFileError("session is 16 bytes, digest 32")
        parts.append(_REC.pack(session, rec.height, rec.round, rec.step, rec.digest))
    body = b"".join(parts)
    body += hashlib.sha256(body).digest()[:_SUM]
    return body + bytes(SLOT - len(body))


def decode_slot(data: bytes) -> SignerTable:
    """One slot; raises :class:`SignerFileError` on anything but a valid slot."""
    if len(data) != SLOT:
        raise SignerFileError(f"slot is {len(data)} bytes, not {SLOT}")
    magic, version, seq, key, count = _HEAD.unpack_from(data)
    if magic != MAGIC:
        raise SignerFileError("bad magic")
    if version != VERSION:
        raise SignerFileError(f"version {version}")
    if count > MAX_RECORDS:
        raise SignerFileError(f"{count} records")
    end = _HEAD.size + count * _REC.size
    if hashlib.sha256(data[:end]).digest()[:_SUM] != data[end : end + _SUM]:
        raise SignerFileError("checksum")
    if any(data[end + _SUM :]):
        raise SignerFileError("padding")
    records: dict[bytes, SignedAt] = {}
    for i in range(count):
        session, height, rnd, step, digest = _REC.unpack_from(data, _HEAD.size + i * _REC.size)
        if step > 2:
            raise SignerFileError(f"step {step}")
        if session in records:
            raise SignerFileError("session twice")
        records[session] = SignedAt(height, rnd, step, digest)
    return SignerTable(seq, key, records)


def decode_file(data: bytes) -> tuple[SignerTable, int]:
    """The newest valid slot of a whole file and its index; raises SignerFileError."""
    if len(data) != 2 * SLOT:
        raise SignerFileError(f"file is {len(data)} bytes, not {2 * SLOT}")
    best: tuple[SignerTable, int] | None = None
    reasons = []
    for i in range(2):
        try:
            table = decode_slot(data[i * SLOT : (i + 1) * SLOT])
        except SignerFileError as exc:
            reasons.append(str(exc))
            continue
        if best is None or table.seq > best[0].seq:
            best = (table, i)
    if best is None:
        raise SignerFileError("no valid slot (" + ", ".join(reasons) + ")")
    return best


class Opened(enum.Enum):
    OK = "ok"
    CREATED = "created"  # with a new key: it never signed anything
    MISSING = "missing"  # the key had a history we no longer know: catch up first
    CORRUPT = "corrupt"  # moved aside; catch up first


def signer_path_for(key_path: Path) -> Path:
    """Where a key's signer state lives by default: ``<key file>.signer``."""
    return key_path.with_name(key_path.name + ".signer")


def new_key_signer_file(key_path: Path, signing_public: bytes) -> Path:
    """Beside a key just created: its empty signer state (it has signed nothing)."""
    path = signer_path_for(key_path)
    SignerFile.create(path, signing_public).close()
    return path


class SignerFile:
    """The open signer-state file of one key (every session of the node)."""

    def __init__(self, path: Path, table: SignerTable, slot: int, durable: bool) -> None:
        self.path = path
        self.durable = durable
        self._table = table
        self._slot = slot
        self.opened = Opened.OK
        self.note = ""  # one line about what was found, for the log
        self.writes = 0
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CLOEXEC)

    @property
    def key(self) -> bytes:
        return self._table.key

    @classmethod
    def create(cls, path: Path, key: bytes, *, durable: bool = True) -> SignerFile:
        """A new, empty table for a new key (atomically: temp file, fsync, rename)."""
        table = SignerTable(0, key, {})
        slot = encode_slot(table)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, slot + bytes(SLOT))
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            if durable:
                _fsync_dir(path.parent)
        except OSError as exc:
            raise StorageFailure(f"cannot create signer state {path}: {exc}") from exc
        return cls(path, table, 0, durable)

    @classmethod
    def open(cls, path: Path, key: bytes, *, durable: bool = True) -> SignerFile:
        """Open (or, when missing or corrupt, start anew) the signer state of ``key``.

        ``opened`` says which; a corrupt file is renamed ``<name>.broken-<UTC time>``.
        Raises :class:`ForeignSignerFile` for another key's file (never used, never moved),
        :class:`StorageFailure` when it can be neither read nor created."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            f = cls.create(path, key, durable=durable)
            f.opened = Opened.MISSING
            f.note = f"signer state {path} missing"
            return f
        except OSError as exc:
            data, error = b"", f"unreadable ({exc.strerror or exc})"
        else:
            error = ""
        if not error:
            try:
                table, slot = decode_file(data)
            except SignerFileError as exc:
                error = f"corrupt ({exc})"
            else:
                if table.key != key:
                    raise ForeignSignerFile(path, table.key, key)
                return cls(path, table, slot, durable)
        aside = move_aside(path)
        f = cls.create(path, key, durable=durable)
        f.opened = Opened.CORRUPT
        f.note = f"signer state {path} {error}, moved to {aside.name}"
        return f

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def floor(self, session: bytes) -> SignedAt | None:
        return self._table.records.get(session)

    def sessions(self) -> dict[bytes, SignedAt]:
        return dict(self._table.records)

    def record(self, session: bytes, at: SignedAt) -> None:
        """Durably record a signature about to leave; never goes back.

        Raises ValueError when ``at`` is below the recorded floor (or equal to it with a
        different digest), :class:`StorageFailure` when the write or flush fails."""
        prev = self._table.records.get(session)
        if prev is not None and (at.key < prev.key or (at.key == prev.key and at != prev)):
            raise ValueError(f"signer would go back from {prev.key} to {at.key}")
        if prev == at:
            return
        records = dict(self._table.records)
        records[session] = at
        table = SignerTable(self._table.seq + 1, self._table.key, records)
        data = encode_slot(table)
        slot = 1 - self._slot
        fd = self._fd
        if fd is None:
            raise StorageFailure(f"signer state {self.path} is closed")
        try:
            if os.pwrite(fd, data, slot * SLOT) != SLOT:
                raise OSError("short write")
            if self.durable:
                os.fdatasync(fd)
        except OSError as exc:
            raise StorageFailure(f"cannot write signer state {self.path}: {exc}") from exc
        self._table, self._slot = table, slot
        self.writes += 1


def move_aside(path: Path, suffixes: tuple[str, ...] = ()) -> Path:
    """Rename ``path`` (and ``path + s`` for each suffix that exists) to
    ``<name>.broken-<UTC time>``; returns the new path. Raises OSError if it cannot."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{path.name}.broken-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.broken-{stamp}-{n}")
    os.replace(path, target)
    for s in suffixes:
        side = path.with_name(path.name + s)
        if side.exists():
            os.replace(side, target.with_name(target.name + s))
    with contextlib.suppress(OSError):
        _fsync_dir(path.parent)
    return target


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
