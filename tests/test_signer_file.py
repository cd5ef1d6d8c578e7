"""The signer-state file: its decoder (hypothesis), two-slot updates, torn writes,
another key's file, and the policy that decides when a node catches up before it signs."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ble_bridge.errors import StorageFailure
from ble_bridge.signer import (
    MAX_RECORDS,
    SLOT,
    UNKNOWN,
    ForeignSignerFile,
    Opened,
    SignedAt,
    SignerFile,
    SignerFileError,
    SignerTable,
    decode_file,
    decode_slot,
    encode_slot,
)
from ble_bridge.store import (
    Store,
    StoreState,
    migrate_legacy,
    open_store,
    signer_catch_up,
)

KEY = b"\x11" * 32
OTHER = b"\x22" * 32
S1 = b"\x01" * 16

records = st.dictionaries(
    st.binary(min_size=16, max_size=16),
    st.builds(
        SignedAt,
        st.integers(0, 2**64 - 1),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2),
        st.binary(min_size=32, max_size=32),
    ),
    max_size=MAX_RECORDS,
)
tables = st.builds(
    SignerTable, st.integers(0, 2**64 - 1), st.binary(min_size=32, max_size=32), records
)


@given(tables)
def test_slot_round_trips(table: SignerTable) -> None:
    assert decode_slot(encode_slot(table)) == table


@given(st.binary(max_size=2 * SLOT + 8))
@settings(max_examples=300)
def test_arbitrary_bytes_decode_or_raise_signer_file_error(data: bytes) -> None:
    with contextlib.suppress(SignerFileError):
        decode_file(data)
    with contextlib.suppress(SignerFileError):
        decode_slot(data[:SLOT].ljust(SLOT, b"\0"))


@given(tables, st.integers(0, SLOT - 1), st.integers(1, 255))
@settings(max_examples=300)
def test_any_flipped_byte_invalidates_the_slot(table: SignerTable, pos: int, xor: int) -> None:
    slot = bytearray(encode_slot(table))
    slot[pos] ^= xor
    with pytest.raises(SignerFileError):
        decode_slot(bytes(slot))


def test_updates_alternate_slots_and_a_torn_write_keeps_the_previous(tmp_path: Path) -> None:
    path = tmp_path / "identity.key.signer"
    f = SignerFile.create(path, KEY)
    assert path.stat().st_size == 2 * SLOT
    f.record(S1, SignedAt(5, 0, 1, b"a" * 32))
    f.record(S1, SignedAt(5, 0, 2, b"b" * 32))
    f.close()
    data = bytearray(path.read_bytes())
    table, slot = decode_file(bytes(data))
    assert table.records[S1] == SignedAt(5, 0, 2, b"b" * 32)
    data[slot * SLOT + 100] ^= 0xFF  # the newest slot torn by a power cut
    path.write_bytes(bytes(data))
    g = SignerFile.open(path, KEY)
    assert g.opened is Opened.OK
    assert g.floor(S1) == SignedAt(5, 0, 1, b"a" * 32)
    g.close()


def test_record_never_goes_back(tmp_path: Path) -> None:
    f = SignerFile.create(tmp_path / "s", KEY)
    f.record(S1, SignedAt(5, 2, 1, b"a" * 32))
    f.record(S1, SignedAt(5, 2, 1, b"a" * 32))  # the identical one again
    for bad in (SignedAt(5, 2, 1, b"b" * 32), SignedAt(5, 1, 2, b"a" * 32), SignedAt(4, 9, 2)):
        with pytest.raises(ValueError):
            f.record(S1, bad)
    f.record(S1, SignedAt(5, 3, 0))
    assert f.writes == 2
    f.close()
    assert SignerFile.open(tmp_path / "s", KEY).floor(S1) == SignedAt(5, 3, 0, UNKNOWN)


def test_missing_corrupt_and_foreign_files(tmp_path: Path) -> None:
    path = tmp_path / "s"
    f = SignerFile.open(path, KEY)
    assert f.opened is Opened.MISSING and "missing" in f.note
    f.close()
    path.write_bytes(os.urandom(2 * SLOT))
    g = SignerFile.open(path, KEY)
    assert g.opened is Opened.CORRUPT and "moved to" in g.note
    assert len(list(tmp_path.glob("s.broken-*"))) == 1
    g.close()
    SignerFile.create(path, OTHER).close()
    with pytest.raises(ForeignSignerFile) as err:
        SignerFile.open(path, KEY)
    assert err.value.found == OTHER
    assert decode_file(path.read_bytes())[0].key == OTHER  # left as it was


def test_write_failure_is_a_storage_failure(tmp_path: Path) -> None:
    f = SignerFile.create(tmp_path / "s", KEY)
    f.close()
    with pytest.raises(StorageFailure):
        f.record(S1, SignedAt(1, 0, 0))


@pytest.mark.parametrize("how", ["empty", "truncated", "random", "directory", "foreign"])
def test_broken_database_is_moved_aside(tmp_path: Path, how: str) -> None:
    path = tmp_path / "state.sqlite3"
    good = open_store(path, KEY)
    assert good.state is StoreState.NEW
    for h in range(1, 200):
        good.store.save_block(S1, h, os.urandom(200), b"c" * 64)
    good.store.close()
    data = path.read_bytes()
    if how == "empty":
        path.write_bytes(b"")
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "random":
        path.write_bytes(os.urandom(len(data)))
    elif how == "directory":
        path.unlink()
        path.mkdir()
    opened = open_store(path, OTHER if how == "foreign" else KEY)
    assert opened.state is StoreState.MOVED_ASIDE
    assert opened.note.startswith(f"database {path} ") and "moved to" in opened.note
    assert opened.aside is not None and opened.aside.name.startswith("state.sqlite3.broken-")
    assert opened.store.latest_height(S1) == 0
    opened.store.close()


def test_catch_up_policy_and_legacy_migration(tmp_path: Path) -> None:
    # a database from before signer files: its record becomes the floor, no catch-up
    legacy = Store(tmp_path / "db")
    legacy.record_signature(S1, 7, 1, 2, b"vote")
    legacy._db.execute("DROP TABLE meta")
    legacy.close()
    opened = open_store(tmp_path / "db", KEY)
    assert opened.state is StoreState.LEGACY
    signer = SignerFile.open(tmp_path / "s", KEY)
    assert signer.opened is Opened.MISSING
    assert migrate_legacy(signer, opened) == 1
    assert signer.floor(S1) is not None and signer.floor(S1).key == (7, 1, 2)  # type: ignore[union-attr]
    assert signer_catch_up(signer, opened, S1) is None
    signer.close()
    opened.store.close()
    # reopened: the file is trusted; the database gone -> catch up where it signed
    signer = SignerFile.open(tmp_path / "s", KEY)
    assert signer_catch_up(signer, open_store(tmp_path / "db", KEY), S1) is None
    fresh = open_store(tmp_path / "db2", KEY)
    assert signer_catch_up(signer, fresh, S1) == "database db2 was lost"
    assert signer_catch_up(signer, fresh, b"\x09" * 16) is None  # never signed there
    signer.close()
    (tmp_path / "s").unlink()
    missing = SignerFile.open(tmp_path / "s", KEY)
    assert signer_catch_up(missing, fresh, S1) == "signer state s was missing"
