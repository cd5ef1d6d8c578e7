"""Node identity, key files and ``ble-bridge keygen``."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from ble_bridge.cli import main
from ble_bridge.wire.identity import (
    Identity,
    KeyFileError,
    peer_id_from_noise_key,
    verify_signature,
)


def test_peer_id_is_the_first_8_bytes_of_sha256_of_the_x25519_key() -> None:
    ident = Identity.from_seed(b"n1")
    assert ident.peer_id == hashlib.sha256(ident.noise_public).digest()[:8]
    assert peer_id_from_noise_key(ident.noise_public) == ident.peer_id
    with pytest.raises(ValueError):
        peer_id_from_noise_key(b"\x00" * 31)


def test_seeded_identities_are_deterministic_and_distinct() -> None:
    assert Identity.from_seed(b"a").signing_public == Identity.from_seed(b"a").signing_public
    assert Identity.from_seed(b"a").peer_id != Identity.from_seed(b"b").peer_id


def test_sign_and_verify() -> None:
    ident = Identity.generate()
    sig = ident.sign(b"msg")
    assert verify_signature(ident.signing_public, sig, b"msg")
    assert not verify_signature(ident.signing_public, sig, b"msh")
    assert not verify_signature(ident.signing_public[:31], sig, b"msg")


def test_key_file_is_created_0600_and_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "id.key"
    ident = Identity.generate()
    ident.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = Identity.load(path)
    assert (loaded.peer_id, loaded.signing_public) == (ident.peer_id, ident.signing_public)


def test_saving_over_an_existing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "id.key"
    Identity.generate().save(path)
    with pytest.raises(KeyFileError, match="already exists"):
        Identity.generate().save(path)


def test_key_file_readable_by_others_is_refused_with_a_chmod_hint(tmp_path: Path) -> None:
    path = tmp_path / "id.key"
    Identity.generate().save(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        Identity.load(path)


def test_missing_key_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="keygen"):
        Identity.load(tmp_path / "nope.key")


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[1, 2]",
        b'{"version": 2, "noise_private": "00", "signing_private": "00"}',
        b'{"version": 1, "noise_private": "zz", "signing_private": "00"}',
        b'{"version": 1, "noise_private": "0011", "signing_private": "0011"}',
        b'{"version": 1}',
        b"\xff\xfe\x00binary",
    ],
)
def test_corrupt_key_files_fail_with_a_message_saying_what_to_do(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "id.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(KeyFileError, match="keygen --out"):
        Identity.load(path)


def test_keygen_cli_writes_a_0600_file_and_prints_the_ids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "node.key"
    assert main(["keygen", "--out", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    ident = Identity.load(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert out["peer_id"] == ident.peer_id.hex()
    assert out["noise_public"] == ident.noise_public.hex()
    assert out["signing_public"] == ident.signing_public.hex()
    assert main(["keygen", "--show", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["peer_id"] == ident.peer_id.hex()


def test_keygen_cli_reports_a_bad_key_file_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "node.key"
    Identity.generate().save(path)
    os.chmod(path, 0o640)
    assert main(["keygen", "--show", str(path)]) == 1
    assert "chmod 600" in capsys.readouterr().err
