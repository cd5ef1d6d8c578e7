"""``ble-bridge wire decode|encode``: the inspection JSON and frame crafting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ble_bridge.cli import main
from ble_bridge.commands.wire import JSON_KEYS
from ble_bridge.wire.fragment import FragmentPayload
from ble_bridge.wire.identity import Identity
from ble_bridge.wire.packet import Packet, PacketType, decode, encode, pad
from ble_bridge.wire.payloads import Announce

ALICE = Identity.from_seed(b"cli-alice")
EXPECTED_KEYS = {
    "version",
    "type",
    "ttl",
    "timestamp",
    "flags",
    "sender",
    "recipient",
    "route",
    "compressed",
    "payload",
    "signature",
    "signature_valid",
    "decoded",
    "decoded_error",
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def decoded_json(capsys: pytest.CaptureFixture[str], frame: bytes, *extra: str) -> Any:
    code, out, err = run(capsys, "wire", "decode", *extra, frame.hex())
    assert code == 0, err
    return json.loads(out)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "alice.key"
    ALICE.save(path)
    return path


def test_decode_prints_exactly_the_documented_keys(capsys: pytest.CaptureFixture[str]) -> None:
    frame = encode(Packet(type=PacketType.LEAVE, sender=ALICE.peer_id, payload=b"", timestamp=5))
    doc = decoded_json(capsys, frame)
    assert set(doc) == EXPECTED_KEYS == set(JSON_KEYS)
    assert doc["decoded"] is None and doc["signature_valid"] is None


def test_decode_of_a_signed_v2_message_with_route(capsys: pytest.CaptureFixture[str]) -> None:
    p = Packet(
        type=PacketType.MESSAGE,
        sender=ALICE.peer_id,
        payload=b"table 3: seven out",
        timestamp=1_700_000_000_123,
        ttl=6,
        version=2,
        recipient=b"\xff" * 8,
        route=(b"\x01" * 8,),
        rsr=True,
    ).signed(ALICE)
    doc = decoded_json(capsys, encode(p), "--verify-key", ALICE.signing_public.hex())
    assert doc == {
        "version": 2,
        "type": 2,
        "ttl": 6,
        "timestamp": 1_700_000_000_123,
        "flags": 0x01 | 0x02 | 0x08 | 0x10,
        "sender": ALICE.peer_id.hex(),
        "recipient": "ff" * 8,
        "route": ["01" * 8],
        "compressed": False,
        "payload": b"table 3: seven out".hex(),
        "signature": (p.signature or b"").hex(),
        "signature_valid": True,
        "decoded": {"text": "table 3: seven out"},
        "decoded_error": None,
    }


def test_verify_key_reports_false_for_another_key(capsys: pytest.CaptureFixture[str]) -> None:
    p = Packet(type=2, sender=ALICE.peer_id, payload=b"x", timestamp=1).signed(ALICE)
    other = Identity.from_seed(b"other").signing_public.hex()
    assert decoded_json(capsys, encode(p), "--verify-key", other)["signature_valid"] is False


def test_decode_of_an_announce_lists_every_tlv(capsys: pytest.CaptureFixture[str]) -> None:
    ann = Announce(
        nickname="pi-7",
        noise_key=ALICE.noise_public,
        signing_key=ALICE.signing_public,
        neighbors=(b"\x02" * 8,),
        capabilities=5,
        unknown=((0x42, b"\x00\x01"),),
    )
    p = Packet(type=PacketType.ANNOUNCE, sender=ALICE.peer_id, payload=ann.encode(), timestamp=1)
    assert decoded_json(capsys, encode(p))["decoded"] == {
        "nickname": "pi-7",
        "noise_key": ALICE.noise_public.hex(),
        "signing_key": ALICE.signing_public.hex(),
        "neighbors": ["02" * 8],
        "capabilities": 5,
        "unknown": [{"type": 0x42, "value": "0001"}],
    }


def test_decode_of_a_fragment_shows_its_header(capsys: pytest.CaptureFixture[str]) -> None:
    payload = FragmentPayload(b"\x0a" * 8, 2, 5, 0x1C, b"\xde\xad").encode()
    p = Packet(type=PacketType.FRAGMENT, sender=ALICE.peer_id, payload=payload, timestamp=1)
    assert decoded_json(capsys, encode(p))["decoded"] == {
        "fragment_id": "0a" * 8,
        "index": 2,
        "total": 5,
        "original_type": 0x1C,
        "chunk": "dead",
    }


def test_decode_shows_the_decompressed_payload(capsys: pytest.CaptureFixture[str]) -> None:
    text = "the point is six " * 20
    p = Packet(type=2, sender=ALICE.peer_id, payload=text.encode(), timestamp=1).compress()
    assert p.compressed
    doc = decoded_json(capsys, encode(p))
    assert doc["compressed"] is True and bytes.fromhex(doc["payload"]) == text.encode()
    assert doc["flags"] == 0x04


def test_decode_accepts_padded_frames(capsys: pytest.CaptureFixture[str]) -> None:
    frame = encode(Packet(type=2, sender=ALICE.peer_id, payload=b"hi", timestamp=1))
    assert decoded_json(capsys, pad(frame))["decoded"] == {"text": "hi"}


@pytest.mark.parametrize(
    ("arg", "reason"),
    [
        ("0102", "truncated"),
        ("zz", "not valid hex"),
        ("03" + "00" * 30, "bad_version"),
    ],
)
def test_undecodable_input_exits_non_zero_with_the_reason(
    capsys: pytest.CaptureFixture[str], arg: str, reason: str
) -> None:
    code, out, err = run(capsys, "wire", "decode", arg)
    assert code != 0 and out == "" and reason in err


def test_a_valid_frame_with_a_non_utf8_message_prints_the_payload_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    frame = encode(
        Packet(type=PacketType.MESSAGE, sender=ALICE.peer_id, payload=b"\xff", timestamp=1)
    )
    code, out, err = run(capsys, "wire", "decode", frame.hex())
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert doc["payload"] == "ff" and doc["decoded"] is None
    assert "bad_payload" in doc["decoded_error"] and "UTF-8" in doc["decoded_error"]
    # the printed object encodes back to the same frame (decoded_error is ignored)
    code, out, _ = run(capsys, "wire", "encode", json.dumps(doc))
    assert code == 0 and out.strip() == frame.hex()


def test_bad_verify_key_is_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    frame = encode(Packet(type=2, sender=ALICE.peer_id, payload=b"x", timestamp=1))
    code, _, err = run(capsys, "wire", "decode", "--verify-key", "abcd", frame.hex())
    assert code != 0 and "32 bytes" in err


def test_encode_reads_back_what_decode_printed(capsys: pytest.CaptureFixture[str]) -> None:
    p = Packet(
        type=PacketType.CONSENSUS,
        sender=ALICE.peer_id,
        payload=b"vote " * 40,
        timestamp=42,
        version=2,
        route=(b"\x03" * 8, b"\x04" * 8),
        recipient=b"\x05" * 8,
    ).compress()
    frame = encode(p.signed(ALICE))
    doc = decoded_json(capsys, frame)
    code, out, err = run(capsys, "wire", "encode", json.dumps(doc))
    assert code == 0, err
    assert bytes.fromhex(out.strip()) == frame


def test_encode_signs_with_a_key_file_and_fills_in_the_sender(
    capsys: pytest.CaptureFixture[str], key_file: Path
) -> None:
    doc = {"type": "message", "timestamp": 7, "decoded": {"text": "hello"}}
    code, out, err = run(capsys, "wire", "encode", "--sign-key", str(key_file), json.dumps(doc))
    assert code == 0, err
    p = decode(bytes.fromhex(out.strip()))
    assert p.sender == ALICE.peer_id and p.payload == b"hello" and p.timestamp == 7
    assert p.verify(ALICE.signing_public)


def test_encode_builds_announce_and_fragment_payloads_from_decoded(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ann = {
        "nickname": "n",
        "noise_key": "11" * 32,
        "signing_key": None,
        "neighbors": ["22" * 8],
        "capabilities": 3,
        "unknown": [{"type": 99, "value": "ab"}],
    }
    doc = {"type": 1, "sender": "01" * 8, "timestamp": 1, "decoded": ann}
    code, out, _ = run(capsys, "wire", "encode", json.dumps(doc))
    assert code == 0
    payload = decode(bytes.fromhex(out.strip())).payload
    assert Announce.decode(payload) == Announce(
        nickname="n",
        noise_key=b"\x11" * 32,
        neighbors=(b"\x22" * 8,),
        capabilities=3,
        unknown=((99, b"\xab"),),
    )
    frag = {"fragment_id": "0f" * 8, "index": 0, "total": 1, "original_type": 2, "chunk": "00"}
    doc = {"type": "fragment", "sender": "01" * 8, "timestamp": 1, "decoded": frag}
    code, out, _ = run(capsys, "wire", "encode", json.dumps(doc))
    assert code == 0
    assert (
        FragmentPayload.decode(decode(bytes.fromhex(out.strip())).payload).fragment_id
        == b"\x0f" * 8
    )


def test_encode_pad_applies_bucket_padding(capsys: pytest.CaptureFixture[str]) -> None:
    doc = {"type": 2, "sender": "01" * 8, "timestamp": 1, "payload": "6869"}
    code, out, _ = run(capsys, "wire", "encode", "--pad", json.dumps(doc))
    assert code == 0 and len(bytes.fromhex(out.strip())) == 256


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ("not json", "not valid JSON"),
        ('{"type": 2}', "'sender' is required"),
        ('{"type": 2, "sender": "0101"}', "8 bytes"),
        ('{"type": 2, "sender": "0101010101010101", "ttl": 300}', "'ttl'"),
        ('{"type": 2, "sender": "0101010101010101", "version": 3}', "bad_version"),
        ('{"type": 2, "sender": "0101010101010101", "flags": 1}', "disagree"),
        ('{"type": "nope", "sender": "0101010101010101"}', "unknown type"),
        ('{"type": 2, "sender": "0101010101010101", "colour": 1}', "unknown keys"),
    ],
)
def test_encode_rejects_bad_json_with_a_reason(
    capsys: pytest.CaptureFixture[str], doc: str, reason: str
) -> None:
    code, out, err = run(capsys, "wire", "encode", doc)
    assert code != 0 and out == "" and reason in err


def test_encode_refuses_a_world_readable_key_file(
    capsys: pytest.CaptureFixture[str], key_file: Path
) -> None:
    os.chmod(key_file, 0o644)
    code, _, err = run(capsys, "wire", "encode", "--sign-key", str(key_file), '{"type": 2}')
    assert code != 0 and "chmod" in err


def test_the_installed_command_round_trips_in_a_subprocess() -> None:
    doc = json.dumps(
        {"type": "message", "sender": "0a" * 8, "timestamp": 3, "decoded": {"text": "hi"}}
    )
    cmd = [sys.executable, "-m", "ble_bridge.cli", "wire"]
    enc = subprocess.run([*cmd, "encode", doc], capture_output=True, text=True, timeout=60)
    assert enc.returncode == 0, enc.stderr
    dec = subprocess.run(
        [*cmd, "decode", enc.stdout.strip()], capture_output=True, text=True, timeout=60
    )
    assert dec.returncode == 0, dec.stderr
    assert json.loads(dec.stdout)["decoded"] == {"text": "hi"}
    bad = subprocess.run([*cmd, "decode", "00"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "truncated" in bad.stderr
