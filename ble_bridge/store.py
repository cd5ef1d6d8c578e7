"""SQLite store: committed blocks with certificates, snapshots, evidence, signer state and
the highest nonce this node signed an operation under.

WAL journal with ``synchronous=FULL``: a write returns only after it is on disk, so the
signer's last signed height/round/step is durable *before* the vote leaves the node, and a
committed block before it is acted on. Rows hold encoded bytes; the store knows nothing of
consensus types. Every table is keyed by session id, so one file serves several sessions.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

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
"""


class StoreError(Exception):
    """The store refused a write that would break its invariants."""


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


class Store:
    """One SQLite file per node; safe to reopen after a crash (WAL recovery)."""

    def __init__(self, path: Path | str, *, durable: bool = True) -> None:
        """Open (or create) the file. ``durable=False`` skips fsync: only for simulations,
        where a "crash" kills the process but never the machine's page cache."""
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=OFF")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

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
        with self._db:
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
        with self._db:
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
        with self._db:
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
        with self._db:
            self._db.execute("DELETE FROM blocks WHERE session=? AND height<?", (session, below))

    # -- snapshots ---------------------------------------------------------------------

    def save_snapshot(
        self, session: bytes, height: int, snapshot: bytes, certificate: bytes, keep: int = 3
    ) -> None:
        """Store a snapshot and keep only the newest ``keep`` of the session."""
        with self._db:
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
        with self._db:
            self._db.execute(
                "INSERT OR IGNORE INTO evidence VALUES (?, ?, ?)", (session, evidence, height)
            )

    def evidence(self, session: bytes) -> list[bytes]:
        rows = self._db.execute(
            "SELECT evidence FROM evidence WHERE session=? ORDER BY height, evidence", (session,)
        ).fetchall()
        return [bytes(r[0]) for r in rows]
