"""``ble-bridge wire decode|encode``: inspect and craft mesh frames as one JSON object.

``decode`` prints ``version, type, ttl, timestamp, flags, sender, recipient, route,
compressed, payload, signature, signature_valid, decoded, decoded_error``; a frame that
decodes but whose payload does not (a MESSAGE that is not UTF-8, a malformed announce) is
still printed, with ``decoded`` null and the reason in ``decoded_error``, and exits 0 (the
router relays such frames). ``encode`` reads the same JSON (``payload`` or, failing that,
``decoded`` gives the payload; ``decoded_error`` is ignored) and prints the frame as hex.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..wire.fragment import FragmentPayload
from ..wire.identity import KEY_LEN, PEER_ID_LEN, SIGNATURE_LEN, Identity, KeyFileError
from ..wire.packet import (
    DEFAULT_TTL,
    Flag,
    Packet,
    PacketType,
    WireError,
    decode,
    deflate_raw,
    encode,
    pad,
)
from ..wire.payloads import Announce, decode_message, encode_message

JSON_KEYS = (
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
)


class InputError(ValueError):
    """The JSON given to ``wire encode`` (or a hex argument) is not usable."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("wire", help="decode or craft BitChat-compatible mesh frames")
    wsub = p.add_subparsers(dest="wire_command", metavar="ACTION", required=True)
    d = wsub.add_parser("decode", help="decode one frame (hex) and print it as JSON")
    d.add_argument("hex", metavar="HEX", help="the frame as hex; '-' reads stdin")
    d.add_argument(
        "--verify-key", metavar="ED25519_PUB_HEX", help="check the signature with this key"
    )
    d.set_defaults(func=run_decode)
    e = wsub.add_parser("encode", help="build a frame from JSON (as printed by decode)")
    e.add_argument("json", metavar="JSON", help="the frame as a JSON object; '-' reads stdin")
    e.add_argument("--sign-key", type=Path, metavar="PATH", help="sign with this key file")
    e.add_argument("--pad", action="store_true", help="apply BitChat's PKCS#7 bucket padding")
    e.set_defaults(func=run_encode)


# -- decode ---------------------------------------------------------------------------


def frame_to_json(frame: bytes, verify_key: bytes | None = None) -> dict[str, Any]:
    """Decode ``frame`` into the inspection JSON object; raises :class:`WireError`."""
    p = decode(frame)
    decoded: dict[str, Any] | None = None
    error: str | None = None
    try:
        decoded = decode_payload(p.type, p.payload)
    except WireError as exc:  # the frame is valid; only its payload is not understood
        error = _reason(exc)
    return {
        "version": p.version,
        "type": p.type,
        "ttl": p.ttl,
        "timestamp": p.timestamp,
        "flags": frame[11],
        "sender": p.sender.hex(),
        "recipient": None if p.recipient is None else p.recipient.hex(),
        "route": [hop.hex() for hop in p.route],
        "compressed": p.compressed,
        "payload": p.payload.hex(),
        "signature": None if p.signature is None else p.signature.hex(),
        "signature_valid": None if verify_key is None else p.verify(verify_key),
        "decoded": decoded,
        "decoded_error": error,
    }


def decode_payload(ptype: int, payload: bytes) -> dict[str, Any] | None:
    """The ``decoded`` member: announce, message and fragment payloads, else ``None``."""
    if ptype == PacketType.ANNOUNCE:
        a = Announce.decode(payload)
        return {
            "nickname": a.nickname,
            "noise_key": None if a.noise_key is None else a.noise_key.hex(),
            "signing_key": None if a.signing_key is None else a.signing_key.hex(),
            "neighbors": [n.hex() for n in a.neighbors],
            "capabilities": a.capabilities,
            "unknown": [{"type": t, "value": v.hex()} for t, v in a.unknown],
        }
    if ptype == PacketType.MESSAGE:
        return {"text": decode_message(payload)}
    if ptype == PacketType.FRAGMENT:
        f = FragmentPayload.decode(payload)
        return {
            "fragment_id": f.fragment_id.hex(),
            "index": f.index,
            "total": f.total,
            "original_type": f.original_type,
            "chunk": f.chunk.hex(),
        }
    return None


def run_decode(args: argparse.Namespace) -> int:
    try:
        frame = _hex_arg(_read_arg(args.hex), "frame")
        key = None
        if args.verify_key is not None:
            key = _hex_arg(args.verify_key, "--verify-key")
            if len(key) != KEY_LEN:
                raise InputError(f"--verify-key must be {KEY_LEN} bytes, got {len(key)}")
        doc = frame_to_json(frame, key)
    except (WireError, InputError) as exc:
        print(f"ble-bridge wire decode: {_reason(exc)}", file=sys.stderr)
        return 1
    print(json.dumps(doc))
    return 0


# -- encode ---------------------------------------------------------------------------


def packet_from_json(doc: object, identity: Identity | None = None, now_ms: int = 0) -> Packet:
    """Build a packet from the inspection JSON; ``identity`` signs it and gives the sender.

    ``compressed`` true forces raw DEFLATE, false forbids it, absent applies BitChat's rule.
    ``flags`` is optional; its 0x10 bit sets request-sync response, the rest must agree with
    the fields. Raises :class:`InputError` or :class:`WireError`.
    """
    if not isinstance(doc, dict):
        raise InputError("the frame must be a JSON object")
    unknown = set(doc) - set(JSON_KEYS)
    if unknown:
        raise InputError(f"unknown keys: {', '.join(sorted(unknown))}")
    ptype = _type_value(doc.get("type"))
    if doc.get("sender") is not None:
        sender = _hex_field(doc, "sender", PEER_ID_LEN)
    elif identity is not None:
        sender = identity.peer_id
    else:
        raise InputError("'sender' is required unless --sign-key gives the identity")
    if identity is not None and sender != identity.peer_id:
        raise InputError("'sender' differs from the peer id of --sign-key")
    recipient = None if doc.get("recipient") is None else _hex_field(doc, "recipient", PEER_ID_LEN)
    route_doc = doc.get("route", [])
    if not isinstance(route_doc, list):
        raise InputError("'route' must be a list of hex peer ids")
    route = tuple(_hex_value(h, "route", PEER_ID_LEN) for h in route_doc)
    if doc.get("payload") is not None:
        payload = _hex_field(doc, "payload")
    elif doc.get("decoded") is not None:
        payload = encode_payload(ptype, doc["decoded"])
    else:
        payload = b""
    flags = _int_field(doc, "flags", 0, 0xFF)
    p = Packet(
        type=ptype,
        sender=sender,
        payload=payload,
        timestamp=_int_field(doc, "timestamp", now_ms, (1 << 64) - 1),
        ttl=_int_field(doc, "ttl", DEFAULT_TTL, 0xFF),
        version=_int_field(doc, "version", 1, 0xFF),
        recipient=recipient,
        route=route,
        rsr=bool(flags & Flag.IS_RSR),
    )
    compressed = doc.get("compressed")
    if compressed is True:
        p = dataclasses.replace(p, signature=None, wire_payload=deflate_raw(p.payload))
    elif compressed is None:
        p = p.compress()
    elif compressed is not False:
        raise InputError("'compressed' must be true, false or absent")
    if identity is not None:
        p = p.signed(identity)
    elif doc.get("signature") is not None:
        sig = _hex_field(doc, "signature", SIGNATURE_LEN)
        p = dataclasses.replace(p, signature=sig)
    # Recipient, compression and route bits must match the fields; the signature bit follows
    # the signature (or --sign-key) and 0x10 is taken from ``flags``.
    if doc.get("flags") is not None and (flags & 0x0D) != (p.flags & 0x0D):
        raise InputError(
            f"'flags' {flags:#04x} disagree with the fields (they give {p.flags:#04x})"
        )
    return p


def encode_payload(ptype: int, decoded: object) -> bytes:
    """The payload for a ``decoded`` member of type announce, message or fragment."""
    if not isinstance(decoded, dict):
        raise InputError("'decoded' must be an object")
    if ptype == PacketType.MESSAGE:
        text = decoded.get("text")
        if not isinstance(text, str):
            raise InputError("'decoded.text' must be a string")
        return encode_message(text)
    if ptype == PacketType.ANNOUNCE:
        unknown = decoded.get("unknown") or []
        if not isinstance(unknown, list) or not all(isinstance(u, dict) for u in unknown):
            raise InputError("'decoded.unknown' must be a list of {type, value}")
        nickname = decoded.get("nickname")
        if nickname is not None and not isinstance(nickname, str):
            raise InputError("'decoded.nickname' must be a string")
        neighbors = decoded.get("neighbors") or []
        if not isinstance(neighbors, list):
            raise InputError("'decoded.neighbors' must be a list of hex peer ids")
        caps = decoded.get("capabilities")
        if caps is not None and (not isinstance(caps, int) or isinstance(caps, bool) or caps < 0):
            raise InputError("'decoded.capabilities' must be a non-negative integer")
        return Announce(
            nickname=nickname,
            noise_key=_opt_hex(decoded, "noise_key", KEY_LEN),
            signing_key=_opt_hex(decoded, "signing_key", KEY_LEN),
            neighbors=tuple(_hex_value(n, "neighbors", PEER_ID_LEN) for n in neighbors),
            capabilities=caps,
            unknown=tuple(
                (_int_field(u, "type", None, 0xFF), _hex_value(u.get("value"), "unknown.value"))
                for u in unknown
            ),
        ).encode()
    if ptype == PacketType.FRAGMENT:
        return FragmentPayload(
            _hex_field(decoded, "fragment_id", 8),
            _int_field(decoded, "index", None, 0xFFFF),
            _int_field(decoded, "total", None, 0xFFFF),
            _int_field(decoded, "original_type", None, 0xFF),
            _hex_field(decoded, "chunk"),
        ).encode()
    raise InputError(f"'decoded' is not understood for type {ptype:#04x}; give 'payload'")


def run_encode(args: argparse.Namespace) -> int:
    try:
        identity = Identity.load(args.sign_key) if args.sign_key is not None else None
        try:
            doc = json.loads(_read_arg(args.json))
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON: {exc}") from exc
        frame = encode(packet_from_json(doc, identity, int(time.time() * 1000)))
    except (WireError, InputError, KeyFileError) as exc:
        print(f"ble-bridge wire encode: {_reason(exc)}", file=sys.stderr)
        return 1
    print((pad(frame) if args.pad else frame).hex())
    return 0


# -- helpers --------------------------------------------------------------------------


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return f"{reason}: {exc}" if isinstance(exc, WireError) and reason else str(exc)


def _read_arg(value: str) -> str:
    return sys.stdin.read() if value == "-" else value


def _hex_arg(text: str, what: str) -> bytes:
    cleaned = "".join(text.split()).replace(":", "")
    if cleaned.startswith(("0x", "0X")):
        cleaned = cleaned[2:]
    try:
        return bytes.fromhex(cleaned)
    except ValueError as exc:
        raise InputError(f"{what} is not valid hex: {exc}") from exc


def _hex_value(value: object, key: str, length: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise InputError(f"'{key}' must be a hex string")
    raw = _hex_arg(value, f"'{key}'")
    if length is not None and len(raw) != length:
        raise InputError(f"'{key}' must be {length} bytes, got {len(raw)}")
    return raw


def _hex_field(doc: dict[str, Any], key: str, length: int | None = None) -> bytes:
    return _hex_value(doc.get(key), key, length)


def _opt_hex(doc: dict[str, Any], key: str, length: int) -> bytes | None:
    return None if doc.get(key) is None else _hex_field(doc, key, length)


def _int_field(doc: dict[str, Any], key: str, default: int | None, maximum: int) -> int:
    value = doc.get(key)
    if value is None:
        if default is None:
            raise InputError(f"'{key}' is required")
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise InputError(f"'{key}' must be an integer in 0..{maximum}")
    return value


def _type_value(value: object) -> int:
    if isinstance(value, str):
        try:
            return int(PacketType[value.upper().replace("-", "_")])
        except KeyError as exc:
            raise InputError(f"unknown type name {value!r}") from exc
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFF:
        raise InputError("'type' must be an integer in 0..255 or a type name")
    return value
