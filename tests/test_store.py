"""SQLite store: durability across reopen, signer monotonicity, blocks, snapshots, evidence."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ble_bridge.store import Store, StoreError

S1 = b"\x01" * 16
S2 = b"\x02" * 16


def test_file_is_wal_with_full_sync(tmp_path: Path) -> None:
    store = Store(tmp_path / "node.sqlite")
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def test_signature_survives_crash_without_close(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    first = Store(path)
    first.record_signature(S1, 5, 2, 1, b"vote-bytes", lock_round=1, lock_hash=b"h" * 32)
    # no close(): a second process opens the same file as after a power cut
    second = Store(path)
    rec = second.last_signature(S1)
    assert rec is not None
    assert (rec.height, rec.round, rec.step, rec.message) == (5, 2, 1, b"vote-bytes")
    assert (rec.lock_round, rec.lock_hash) == (1, b"h" * 32)
    assert second.signed_messages(S1, 5) == [(2, 1, b"vote-bytes")]
    second.close()


def test_signer_refuses_to_go_back_or_sign_differently(tmp_path: Path) -> None:
    store = Store(tmp_path / "node.sqlite")
    store.record_signature(S1, 5, 2, 1, b"a")
    store.record_signature(S1, 5, 2, 1, b"a")  # the identical vote again is fine
    with pytest.raises(StoreError):
        store.record_signature(S1, 5, 2, 1, b"b")
    with pytest.raises(StoreError):
        store.record_signature(S1, 5, 1, 2, b"c")
    with pytest.raises(StoreError):
        store.record_signature(S1, 4, 9, 2, b"d")
    store.record_signature(S1, 5, 2, 2, b"e")
    store.record_signature(S2, 1, 0, 1, b"other session")
    rec = store.last_signature(S1)
    assert rec is not None and rec.message == b"e"
    assert [m for _, _, m in store.signed_messages(S1, 5)] == [b"a", b"e"]
    store.close()


def test_signed_log_keeps_only_the_current_height(tmp_path: Path) -> None:
    store = Store(tmp_path / "node.sqlite")
    store.record_signature(S1, 1, 0, 1, b"x")
    store.record_signature(S1, 2, 0, 1, b"y")
    assert store.signed_messages(S1, 1) == []
    assert store.signed_messages(S1, 2) == [(0, 1, b"y")]
    store.close()


def test_lock_proof_kept_while_lock_unchanged(tmp_path: Path) -> None:
    store = Store(tmp_path / "node.sqlite")
    store.record_signature(S1, 3, 0, 2, b"pc", 0, b"h" * 32, b"proof")
    store.record_signature(S1, 3, 1, 1, b"pv", 0, b"h" * 32)
    rec = store.last_signature(S1)
    assert rec is not None and rec.lock_proof == b"proof"
    store.record_signature(S1, 4, 0, 1, b"pv2")
    rec = store.last_signature(S1)
    assert rec is not None and rec.lock_proof == b""
    store.close()


def test_blocks_are_kept_in_order_and_pruned(tmp_path: Path) -> None:
    store = Store(tmp_path / "node.sqlite")
    for h in (3, 1, 2):
        store.save_block(S1, h, b"block%d" % h, b"cert%d" % h)
    store.save_block(S2, 9, b"x", b"y")
    assert store.latest_height(S1) == 3
    assert store.block(S1, 2) == (b"block2", b"cert2")
    assert [h for h, _, _ in store.blocks_after(S1, 1)] == [2, 3]
    store.prune_blocks(S1, below=3)
    assert store.block(S1, 2) is None and store.block(S1, 3) is not None
    assert store.latest_height(S2) == 9
    assert Store(tmp_path / "node.sqlite").latest_height(S1) == 3


def test_snapshots_keep_the_newest(tmp_path: Path) -> None:
    store = Store(tmp_path / "node.sqlite")
    assert store.latest_snapshot(S1) is None
    for h in range(1, 6):
        store.save_snapshot(S1, h, b"snap%d" % h, b"cert", keep=2)
    assert store.latest_snapshot(S1) == (5, b"snap5", b"cert")
    rows = store._db.execute("SELECT height FROM snapshots WHERE session=?", (S1,)).fetchall()
    assert sorted(r[0] for r in rows) == [4, 5]
    store.close()


def test_evidence_is_stored_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "node.sqlite")
    store.save_evidence(S1, b"ev1", 4)
    store.save_evidence(S1, b"ev1", 4)
    store.save_evidence(S1, b"ev0", 2)
    assert store.evidence(S1) == [b"ev0", b"ev1"]
    store.close()


def test_uncommitted_transaction_is_not_visible_after_crash(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    store = Store(path)
    store.save_block(S1, 1, b"b1", b"c1")
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("BEGIN")
    raw.execute("INSERT INTO blocks VALUES (?, 2, x'00', x'00')", (S1,))
    # the writer dies mid-transaction: nothing of it may appear
    reopened = Store(path)
    assert reopened.latest_height(S1) == 1
    raw.close()
    reopened.close()


def test_own_nonce_survives_reopen_and_never_goes_down(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    first = Store(path)
    assert first.last_nonce(S1) == 0
    first.record_nonce(S1, 4)
    first.record_nonce(S1, 2)  # a lower one never lowers it
    first.record_nonce(S2, 1)
    second = Store(path)  # no close(): as after a power cut
    assert (second.last_nonce(S1), second.last_nonce(S2)) == (4, 1)


def test_sqlite_page_cache_stays_within_its_bound_as_the_database_grows(tmp_path: Path) -> None:
    """The page cache (CACHE_KIB) is what SQLite keeps of a growing database in RAM: 8 MiB of
    blocks written and pruned like a node's leave SQLite's memory near the bound, where
    SQLite's default cache (2000 KiB) held 4 times as much."""
    from ble_bridge.store import CACHE_KIB, sqlite_memory_used

    before = sqlite_memory_used()
    if before is None:
        pytest.skip("this SQLite does not expose sqlite3_memory_used")
    used = {}
    for kib in (CACHE_KIB, 2000):
        store = Store(tmp_path / f"s{kib}.sqlite3", durable=False, cache_kib=kib)
        start = sqlite_memory_used()
        assert start is not None
        for h in range(1, 2049):
            store.save_block(S1, h, bytes([h % 251]) * 4000, b"cert%d" % h)
            if h % 256 == 0:
                store.prune_blocks(S1, h - 1024)
            assert store.block(S1, h) is not None
        end = sqlite_memory_used()
        assert end is not None
        used[kib] = end - start
        store.close()
    assert used[CACHE_KIB] <= (CACHE_KIB + 256) * 1024, used
    assert used[2000] > 2 * used[CACHE_KIB], used
