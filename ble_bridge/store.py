"""SQLite store: committed blocks with certificates, snapshots, evidence, signer state and
the highest nonce this node signed an operation under.

WAL journal with ``synchronous=FULL``: a write returns only after it is on disk, so the
signer's last signed height/round/step is durable *before* the vote leaves the node, and a
committed block before it is acted on. Rows hold encoded bytes; the store knows nothing of
consensus types. Every table is keyed by session id, so one file serves several sessions.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import errno
import hashlib
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import StorageFailure
from .signer import Opened, SignedAt, SignerFile, move_aside

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blocks (
    session BLOB NOT NULL, height INTEGER NOT NULL, block BLOB NOT NULL,
    certificate BLOB NOT NULL, PRIMARY KEY (session, height));
CREATE TABLE IF NOT EXISTS snapshots (
    session BLOB NOT NULL, height INTEGER NOT NULL, snapshot BLOB NOT NULL,
    certificate BLOB NOT NULL, PRIMARY KEY (session, height));
CREATE TABLE IF NOT EXISTS evidence (
    session BLOB NOT NULL, evidence BLOB NOT NULL, height INTEGER NOT NULL,
    PRIMARY KEY (session, evidence));
CREATE TABLE IF NOT EXISTS signer (
    session BLOB PRIMARY KEY, height INTEGER NOT NULL, round INTEGER NOT NULL,
    step INTEGER NOT NULL, message BLOB NOT NULL,
    lock_round INTEGER NOT NULL, lock_hash BLOB NOT NULL, lock_proof BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS signed (
    session BLOB NOT NULL, height INTEGER NOT NULL, round INTEGER NOT NULL,
    step INTEGER NOT NULL, message BLOB NOT NULL,
    PRIMARY KEY (session, height, round, step));
CREATE TABLE IF NOT EXISTS nonces (
    session BLOB PRIMARY KEY, nonce INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS owners (
    key BLOB PRIMARY KEY, noise_key BLOB NOT NULL, nickname TEXT NOT NULL,
    added_at REAL NOT NULL, via TEXT NOT NULL);
"""
_TABLES = {"blocks", "snapshots", "evidence", "signer", "signed", "nonces", "meta", "owners"}


class StoreError(Exception):
    """The store refused a write that would break its invariants."""


@dataclass(frozen=True, slots=True)
class OwnerRecord:
    """A phone bound to this node: its Ed25519 key (the id), Noise key, nickname then."""

    key: bytes
    noise_key: bytes
    nickname: str
    added_at: float  # wall-clock seconds
    via: str  # how it was bound, e.g. "dm"


@dataclass(frozen=True, slots=True)
class SignerRecord:
    """The last thing this node signed in a session, and its lock at that moment."""

    height: int
    round: int
    step: int
    message: bytes
    lock_round: int = -1
    lock_hash: bytes = b""
    lock_proof: bytes = b""  # opaque to the store: what the engine needs to keep its lock


CACHE_KIB = 512
"""SQLite's page cache per connection. Its default (2000 KiB) fills as the database grows
(blocks are kept ``keep_blocks`` heights), which showed as ~2 MB of RSS growth over the
first 10-20 minutes of play, invisible to tracemalloc; the pages read again (recent
blocks, the signer record) fit in far less, and the rest stays in the kernel's page cache."""


def sqlite_memory_used() -> int | None:
    """Bytes SQLite has allocated in this process (``sqlite3_memory_used``), None when the
    library does not expose it."""
    try:
        import _sqlite3

        fn = ctypes.CDLL(_sqlite3.__file__).sqlite3_memory_used
    except (ImportError, OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int64
    return int(fn())


class Store:
    """One SQLite file per node; safe to reopen after a crash (WAL recovery)."""

    def __init__(
        self, path: Path | str, *, durable: bool = True, cache_kib: int = CACHE_KIB
    ) -> None:
        """Open (or create) the file. ``durable=False`` skips fsync: only for simulations,
        where a "crash" kills the process but never the machine's page cache.
        ``cache_kib``: SQLite's page cache for this connection (see :data:`CACHE_KIB`)."""
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute(f"PRAGMA cache_size=-{int(cache_kib)}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=OFF")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """One transaction; a failing write (disk full, I/O error) is a StorageFailure."""
        try:
            with self._db:
                yield
        except sqlite3.Error as exc:
            raise StorageFailure(f"{self.path}: {exc}") from exc

    # -- ownership ---------------------------------------------------------------------

    def meta(self, name: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return None if row is None else bytes(row[0])

    def set_meta(self, name: str, value: bytes) -> None:
        with self._write():
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))

    # -- signer ------------------------------------------------------------------------

    def record_signature(
        self,
        session: bytes,
        height: int,
        round: int,
        step: int,
        message: bytes,
        lock_round: int = -1,
        lock_hash: bytes = b"",
        lock_proof: bytes | None = None,
    ) -> None:
        """Durably record a signature about to be sent; refuses to go backwards.

        ``lock_proof`` None keeps the stored proof when the lock is unchanged."""
        with self._write():
            row = self._db.execute(
                "SELECT height, round, step, message, lock_round, lock_hash, lock_proof"
                " FROM signer WHERE session=?",
                (session,),
            ).fetchone()
            if row is not None:
                prev = (row[0], row[1], row[2])
                if (height, round, step) < prev or (
                    (height, round, step) == prev and bytes(row[3]) != message
                ):
                    raise StoreError(f"signer would go back from {prev} to {(height, round, step)}")
            if lock_proof is None:
                same_lock = row is not None and (row[0], row[4], bytes(row[5])) == (
                    height,
                    lock_round,
                    lock_hash,
                )
                lock_proof = bytes(row[6]) if same_lock and row is not None else b""
            self._db.execute(
                "INSERT OR REPLACE INTO signer VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (session, height, round, step, message, lock_round, lock_hash, lock_proof),
            )
            self._db.execute(
                "INSERT OR REPLACE INTO signed VALUES (?, ?, ?, ?, ?)",
                (session, height, round, step, message),
            )
            self._db.execute("DELETE FROM signed WHERE session=? AND height<?", (session, height))

    def last_signature(self, session: bytes) -> SignerRecord | None:
        row = self._db.execute(
            "SELECT height, round, step, message, lock_round, lock_hash, lock_proof"
            " FROM signer WHERE session=?",
            (session,),
        ).fetchone()
        if row is None:
            return None
        return SignerRecord(
            row[0], row[1], row[2], bytes(row[3]), row[4], bytes(row[5]), bytes(row[6])
        )

    def signer_sessions(self) -> list[bytes]:
        return [bytes(r[0]) for r in self._db.execute("SELECT session FROM signer")]

    def signed_messages(self, session: bytes, height: int) -> list[tuple[int, int, bytes]]:
        """(round, step, message) of everything signed at ``height``, in signing order."""
        rows = self._db.execute(
            "SELECT round, step, message FROM signed WHERE session=? AND height=?"
            " ORDER BY round, step",
            (session, height),
        ).fetchall()
        return [(r[0], r[1], bytes(r[2])) for r in rows]

    # -- own operations ----------------------------------------------------------------

    def record_nonce(self, session: bytes, nonce: int) -> None:
        """Durably record that an operation of ours left under ``nonce`` (never lowers it),
        so a restart signs its next one above it even before catching up."""
        with self._write():
            self._db.execute(
                "INSERT INTO nonces VALUES (?, ?) ON CONFLICT(session)"
                " DO UPDATE SET nonce=MAX(nonce, excluded.nonce)",
                (session, nonce),
            )

    def last_nonce(self, session: bytes) -> int:
        """The highest nonce recorded for ``session`` (0 when none)."""
        row = self._db.execute("SELECT nonce FROM nonces WHERE session=?", (session,)).fetchone()
        return 0 if row is None else int(row[0])

    # -- blocks ------------------------------------------------------------------------

    def save_block(self, session: bytes, height: int, block: bytes, certificate: bytes) -> None:
        with self._write():
            self._db.execute(
                "INSERT OR REPLACE INTO blocks VALUES (?, ?, ?, ?)",
                (session, height, block, certificate),
            )

    def block(self, session: bytes, height: int) -> tuple[bytes, bytes] | None:
        row = self._db.execute(
            "SELECT block, certificate FROM blocks WHERE session=? AND height=?", (session, height)
        ).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    def blocks_after(self, session: bytes, height: int) -> list[tuple[int, bytes, bytes]]:
        """Blocks with height > ``height``, ascending."""
        rows = self._db.execute(
            "SELECT height, block, certificate FROM blocks WHERE session=? AND height>?"
            " ORDER BY height",
            (session, height),
        ).fetchall()
        return [(r[0], bytes(r[1]), bytes(r[2])) for r in rows]

    def latest_height(self, session: bytes) -> int:
        row = self._db.execute(
            "SELECT MAX(height) FROM blocks WHERE session=?", (session,)
        ).fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    def prune_blocks(self, session: bytes, below: int) -> None:
        with self._write():
            self._db.execute("DELETE FROM blocks WHERE session=? AND height<?", (session, below))

    # -- snapshots ---------------------------------------------------------------------

    def save_snapshot(
        self, session: bytes, height: int, snapshot: bytes, certificate: bytes, keep: int = 3
    ) -> None:
        """Store a snapshot and keep only the newest ``keep`` of the session."""
        with self._write():
            self._db.execute(
                "INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?)",
                (session, height, snapshot, certificate),
            )
            self._db.execute(
                "DELETE FROM snapshots WHERE session=? AND height NOT IN"
                " (SELECT height FROM snapshots WHERE session=? ORDER BY height DESC LIMIT ?)",
                (session, session, keep),
            )

    def latest_snapshot(self, session: bytes) -> tuple[int, bytes, bytes] | None:
        row = self._db.execute(
            "SELECT height, snapshot, certificate FROM snapshots WHERE session=?"
            " ORDER BY height DESC LIMIT 1",
            (session,),
        ).fetchone()
        return None if row is None else (row[0], bytes(row[1]), bytes(row[2]))

    # -- evidence ----------------------------------------------------------------------

    def save_evidence(self, session: bytes, evidence: bytes, height: int) -> None:
        with self._write():
            self._db.execute(
                "INSERT OR IGNORE INTO evidence VALUES (?, ?, ?)", (session, evidence, height)
            )

    def evidence(self, session: bytes) -> list[bytes]:
        rows = self._db.execute(
            "SELECT evidence FROM evidence WHERE session=? ORDER BY height, evidence", (session,)
        ).fetchall()
        return [bytes(r[0]) for r in rows]

    # -- owners (phones bound by !pair) -------------------------------------------------------------

    def add_owner(self, owner: OwnerRecord, limit: int) -> bool:
        """Record an owner (replacing one with the same key); False when ``limit`` owners
        other than this key exist already."""
        with self._write():
            n = self._db.execute("SELECT COUNT(*) FROM owners WHERE key<>?", (owner.key,))
            if int(n.fetchone()[0]) >= limit:
                return False
            self._db.execute(
                "INSERT OR REPLACE INTO owners VALUES (?, ?, ?, ?, ?)",
                (owner.key, owner.noise_key, owner.nickname, owner.added_at, owner.via),
            )
        return True

    def owners(self) -> list[OwnerRecord]:
        rows = self._db.execute(
            "SELECT key, noise_key, nickname, added_at, via FROM owners ORDER BY added_at"
        ).fetchall()
        return [OwnerRecord(bytes(r[0]), bytes(r[1]), r[2], r[3], r[4]) for r in rows]

    def owner(self, key: bytes) -> OwnerRecord | None:
        r = self._db.execute(
            "SELECT key, noise_key, nickname, added_at, via FROM owners WHERE key=?", (key,)
        ).fetchone()
        return None if r is None else OwnerRecord(bytes(r[0]), bytes(r[1]), r[2], r[3], r[4])

    def remove_owner(self, key: bytes) -> bool:
        with self._write():
            cur = self._db.execute("DELETE FROM owners WHERE key=?", (key,))
        return cur.rowcount > 0


# -- opening a node's store: broken or foreign files are moved aside -------------------

OWNER = "owner"  # meta: the signing key of the node the database belongs to


class StoreState(enum.Enum):
    OK = "ok"
    NEW = "new"  # there was no database
    MOVED_ASIDE = "moved_aside"  # broken or foreign: renamed, a new one started
    LEGACY = "legacy"  # written before signer-state files existed (no owner recorded)


@dataclass(slots=True)
class OpenedStore:
    store: Store
    state: StoreState
    note: str = ""  # the one log line about what was found ("" when all is well)
    aside: Path | None = None


class Unavailable(enum.Enum):
    """Why a database could not be looked at, when that says nothing about its content."""

    LOCKED = "locked"  # another program holds a lock on it (an sqlite3 shell, a backup)
    ACCESS = "access"  # no permission (EACCES/EPERM, SQLite's CANTOPEN/PERM/READONLY)
    IO = "io"  # the device failed a read (EIO), or anything else not known to be corruption


class DatabaseUnavailable(Exception):
    """The database cannot be checked now, and that is not corruption: it is left where it
    is (never moved aside), and the node does not start on it."""

    def __init__(self, path: Path, kind: Unavailable, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.kind = kind
        self.detail = detail


# SQLite primary result codes (sqlite3.h)
_CORRUPT_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_LOCKED_CODES = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED
_ACCESS_CODES = {3, 8, 14, 23}  # SQLITE_PERM, SQLITE_READONLY, SQLITE_CANTOPEN, SQLITE_AUTH


def classify_sqlite_error(exc: sqlite3.Error) -> Unavailable | None:
    """None when ``exc`` says the file's content is broken (CORRUPT, NOTADB), else why it
    could not be read. An error without a code is not taken as corruption."""
    code = getattr(exc, "sqlite_errorcode", None)
    if not isinstance(code, int):
        return Unavailable.IO
    primary = code & 0xFF
    if primary in _CORRUPT_CODES:
        return None
    if primary in _LOCKED_CODES:
        return Unavailable.LOCKED
    if primary in _ACCESS_CODES:
        return Unavailable.ACCESS
    return Unavailable.IO


def _os_unavailable(path: Path, exc: OSError) -> DatabaseUnavailable:
    kind = Unavailable.ACCESS if exc.errno in (errno.EACCES, errno.EPERM) else Unavailable.IO
    return DatabaseUnavailable(path, kind, exc.strerror or str(exc))


def _read_through(path: Path, chunk: int = 1 << 20) -> None:
    """Read every byte of ``path`` (raising OSError): a device's read error or a missing
    permission shows here with its errno, where SQLite would report it as a broken page
    (``PRAGMA quick_check`` says "failed to get page N" for an EIO)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        while os.read(fd, chunk):
            pass
    finally:
        os.close(fd)


def check_database(path: Path, owner: bytes, *, timeout: float = 5.0) -> str | None:
    """Why the database at ``path`` cannot be used by ``owner`` (None: it can), when the
    reason is its content: empty, corrupt, not ours, another key's. Raises
    :class:`DatabaseUnavailable` when it could not be read for a reason that is not its
    content (locked by another program for ``timeout`` s, EACCES, EIO): such a file must
    not be moved aside."""
    try:
        st = path.stat()
    except FileNotFoundError:  # a dangling symlink: there is no database behind it
        return "unreadable (a dangling symlink)"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "unreadable (a symlink loop)"
        raise _os_unavailable(path, exc) from None
    if not path.is_file():
        return "not a regular file"
    if st.st_size == 0:
        return "empty (0 bytes)"
    for part in (path, path.with_name(path.name + "-wal")):
        try:
            _read_through(part)
        except FileNotFoundError:
            continue  # no -wal: nothing to read
        except OSError as exc:
            raise _os_unavailable(part, exc) from None
    db: sqlite3.Connection | None = None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
        rows = db.execute("PRAGMA quick_check").fetchall()
        if [tuple(r) for r in rows] != [("ok",)]:
            return f"corrupt ({str(rows[0][0]).splitlines()[-1][:200]})"
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables <= _TABLES or "blocks" not in tables:
            return "not a ble-bridge database"
        if "meta" in tables:
            row = db.execute("SELECT value FROM meta WHERE name=?", (OWNER,)).fetchone()
            if row is not None and bytes(row[0]) != owner:
                return f"foreign (belongs to key {bytes(row[0]).hex()[:16]})"
    except sqlite3.Error as exc:
        kind = classify_sqlite_error(exc)
        if kind is None:
            return f"corrupt ({exc})"
        raise DatabaseUnavailable(path, kind, str(exc)) from None
    finally:
        if db is not None:
            db.close()
    return None


def open_store(path: Path, owner: bytes, *, durable: bool = True) -> OpenedStore:
    """Open a node's database, moving a broken or foreign one aside
    (``state.sqlite3.broken-<UTC time>``, with its -wal/-shm files).

    An empty (0-byte), truncated, random, unreadable or another key's file is never used:
    the node starts a new one and syncs from its peers (the signer-state file keeps it
    from signing twice). A file that is locked by another program, unreadable for
    permission or failing reads is left alone: :class:`DatabaseUnavailable`. Raises
    OSError when the file cannot be moved aside and sqlite3.Error when a new one cannot
    be created."""
    state, note, aside = StoreState.NEW, "", None
    if path.exists() or path.is_symlink():
        reason = check_database(path, owner)
        if reason is None:
            state = StoreState.OK
        else:
            aside = move_aside(path, ("-wal", "-shm", "-journal"))
            state = StoreState.MOVED_ASIDE
            note = f"database {path} {reason}: moved to {aside.name}, syncing from peers"
    store = Store(path, durable=durable)
    if state is StoreState.OK and store.meta(OWNER) is None:
        state = StoreState.LEGACY
    if store.meta(OWNER) is None:
        store.set_meta(OWNER, owner)
    return OpenedStore(store, state, note, aside)


def signer_catch_up(signer: SignerFile, opened: OpenedStore, session: bytes) -> str | None:
    """Why the engine of ``session`` must catch up before it signs (None: the floor in
    the signer file is trustworthy). The file is the floor; it cannot be trusted when it
    was missing or corrupt (unless the database predates signer files: then the database's
    record is the floor, see :func:`migrate_legacy`), and a node whose database is gone
    catches up first in every session it signed in."""
    if signer.opened is Opened.CORRUPT:
        return f"signer state {signer.path.name} was corrupt"
    if signer.opened is Opened.MISSING and opened.state is not StoreState.LEGACY:
        return f"signer state {signer.path.name} was missing"
    if opened.state in (StoreState.NEW, StoreState.MOVED_ASIDE) and signer.floor(session):
        return f"database {opened.store.path.name} was lost"
    return None


def migrate_legacy(signer: SignerFile, opened: OpenedStore) -> int:
    """A database from before signer files, and no file yet: its signer records become
    the file's floors (once). Returns how many sessions were copied."""
    if opened.state is not StoreState.LEGACY or signer.opened is not Opened.MISSING:
        return 0
    n = 0
    for session in opened.store.signer_sessions():
        rec = opened.store.last_signature(session)
        if rec is None:
            continue
        at = SignedAt(rec.height, rec.round, rec.step, hashlib.sha256(rec.message).digest())
        floor = signer.floor(session)
        if floor is None or at.key > floor.key:
            signer.record(session, at)
            n += 1
    return n
