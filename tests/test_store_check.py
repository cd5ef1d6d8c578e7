"""``check_database`` moves a database aside only for its content (empty, corrupt, not
ours, another key's), never because it could not be read now: locked by another program,
no permission (EACCES), a device read error (EIO). Each case on a real SQLite file; the
EIO one on a real ext2 filesystem on a loop device shrunk under it (root only), the
EACCES one as an unprivileged user (root bypasses file modes)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ble_bridge.store import (
    DatabaseUnavailable,
    Store,
    StoreState,
    Unavailable,
    check_database,
    classify_sqlite_error,
    open_store,
)

OWNER = b"\x01" * 32


def _real_db(path: Path, size: int = 0) -> None:
    opened = open_store(path, OWNER)
    if size:
        opened.store.set_meta("filler", b"\0" * size)
    opened.store.close()


def _untouched(path: Path) -> None:
    assert path.is_file()
    assert not list(path.parent.glob(path.name + ".broken-*"))


def test_a_good_database_and_real_corruption() -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "state.sqlite3"
        _real_db(path, 100_000)
        assert check_database(path, OWNER) is None
        assert check_database(path, b"\x02" * 32) == f"foreign (belongs to key {'01' * 8})"
        data = bytearray(path.read_bytes())
        data[4096 : 4096 * 3] = os.urandom(8192)  # pages 2 and 3: the b-trees under them
        path.write_bytes(bytes(data))
        reason = check_database(path, OWNER)
        assert reason is not None and reason.startswith("corrupt ("), reason
        path.write_bytes(os.urandom(8192))
        assert check_database(path, OWNER) == "corrupt (file is not a database)"
        opened = open_store(path, OWNER)
        opened.store.close()
        assert opened.state is StoreState.MOVED_ASIDE
        assert len(list(Path(d).glob("state.sqlite3.broken-*Z"))) == 1


def test_a_database_locked_by_another_program_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    _real_db(path)
    other = sqlite3.connect(path)  # e.g. an sqlite3 shell: an exclusive lock, held
    other.execute("PRAGMA locking_mode=EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")
    other.execute("INSERT INTO meta VALUES ('x', x'00')")
    try:
        with pytest.raises(DatabaseUnavailable) as locked:
            check_database(path, OWNER, timeout=0.2)
        assert locked.value.kind is Unavailable.LOCKED
        assert locked.value.detail == "database is locked"
        with pytest.raises(DatabaseUnavailable):
            open_store(path, OWNER)  # default busy timeout 5 s, then the same
        _untouched(path)
    finally:
        other.rollback()
        other.close()
    assert check_database(path, OWNER) is None


def test_sqlite_error_codes_are_classified() -> None:
    def err(code: int) -> sqlite3.Error:
        e = sqlite3.OperationalError("x")
        e.sqlite_errorcode = code  # type: ignore[attr-defined]
        return e

    assert classify_sqlite_error(err(11)) is None  # SQLITE_CORRUPT
    assert classify_sqlite_error(err(26)) is None  # SQLITE_NOTADB
    assert classify_sqlite_error(err(11 | (1 << 8))) is None  # SQLITE_CORRUPT_VTAB
    assert classify_sqlite_error(err(5)) is Unavailable.LOCKED  # SQLITE_BUSY
    assert classify_sqlite_error(err(6)) is Unavailable.LOCKED
    assert classify_sqlite_error(err(14)) is Unavailable.ACCESS  # SQLITE_CANTOPEN
    assert classify_sqlite_error(err(10 | (1 << 8))) is Unavailable.IO  # SQLITE_IOERR_READ
    assert classify_sqlite_error(sqlite3.OperationalError("no code")) is Unavailable.IO


def _as_nobody(path: Path) -> str:
    """check_database(path) in a forked child that dropped to uid/gid 65534."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery, only the answer down the pipe
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            try:
                out = str(check_database(path, OWNER))
            except DatabaseUnavailable as exc:
                out = f"{exc.kind.value} {exc.detail}"
            os.write(w, out.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return out


def test_a_database_we_may_not_read_is_left_alone() -> None:
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        path = Path(d) / "state.sqlite3"
        _real_db(path)
        os.chmod(path, 0o600)
        if os.geteuid() == 0:  # root reads any file: look as nobody, in a forked child
            assert _as_nobody(path) == "access Permission denied"
        else:
            os.chmod(path, 0)
            try:
                with pytest.raises(DatabaseUnavailable) as denied:
                    check_database(path, OWNER)
                assert denied.value.kind is Unavailable.ACCESS
            finally:
                os.chmod(path, 0o600)
        _untouched(path)


@contextlib.contextmanager
def _shrinkable_fs(tmp: Path) -> Iterator[tuple[Path, Path, str]]:
    """An ext2 filesystem on a loop device over a 16 MiB file; yields (mount point, image,
    loop device). Skips unless mount and losetup work here."""
    if os.geteuid() != 0:
        pytest.skip("needs root for losetup and mount")
    img, mnt = tmp / "disk.img", tmp / "mnt"
    mnt.mkdir()
    with img.open("wb") as f:
        f.truncate(16 << 20)
    subprocess.run(["mkfs.ext2", "-q", "-F", str(img)], check=True, capture_output=True)
    r = subprocess.run(["losetup", "-f", "--show", str(img)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"no loop device: {r.stderr.strip()}")
    dev = r.stdout.strip()
    try:
        m = subprocess.run(["mount", str(dev), str(mnt)], capture_output=True, text=True)
        if m.returncode != 0:
            pytest.skip(f"cannot mount: {m.stderr.strip()}")
        try:
            yield mnt, img, dev
        finally:
            subprocess.run(["umount", "-l", str(mnt)], check=False)
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def test_a_database_the_device_fails_to_read_is_left_alone(tmp_path: Path) -> None:
    """The device ends under the file (the loop device shrunk to 8 MiB, the file's pages
    beyond it): reads fail with EIO, as on a failing SD card. SQLite's quick_check calls
    that "failed to get page N"; check_database must call it an I/O error."""
    with _shrinkable_fs(tmp_path) as (mnt, img, dev):
        with (mnt / "filler").open("wb") as f:  # the low blocks: the database lands above
            f.write(b"\0" * (9 << 20))
        path = mnt / "state.sqlite3"
        _real_db(path, 3 << 20)
        os.sync()
        fd = os.open(path, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # next reads go to the device
        os.close(fd)
        with img.open("r+b") as f:
            f.truncate(8 << 20)
        subprocess.run(["losetup", "-c", dev], check=True)
        with pytest.raises(DatabaseUnavailable) as failed:
            check_database(path, OWNER)
        assert failed.value.kind is Unavailable.IO
        assert failed.value.detail == "Input/output error"
        with pytest.raises(DatabaseUnavailable):
            open_store(path, OWNER)
        assert not list(mnt.glob("state.sqlite3.broken-*"))


def test_store_opens_after_the_lock_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    _real_db(path)
    opened = open_store(path, OWNER)
    assert opened.state is StoreState.OK
    assert isinstance(opened.store, Store)
    opened.store.close()
