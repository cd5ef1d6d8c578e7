"""Chat commands: replies, per-sender rate limits, bounds; the private-message TLV decoder."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from upstream_rules import parse_private_message_tlv, private_message_tlv

from ble_bridge.chat.commands import HELP, ChatConfig, Commands, TableView
from ble_bridge.noise.payloads import PrivateMessage, split_typed
from ble_bridge.wire.packet import WireError

ALICE = b"\xaa" * 32
BOB = b"\xbb" * 32


def commands(**cfg: object) -> Commands:
    tables = [
        TableView("craps-1", 12, "active", 8, 8, {ALICE: 990}.get),
        TableView("craps-2", 3, "active", 4, 4, lambda _k: None),
    ]
    return Commands(lambda: tables, ChatConfig(**cfg))  # type: ignore[arg-type]


def test_the_three_commands() -> None:
    c = commands()
    assert c.handle(0, ALICE, "!help", private=False) == HELP
    assert c.handle(0, ALICE, "!tables", private=False) == (
        "tables: craps-1 h12 active 8p/8v; craps-2 h3 active 4p/4v"
    )
    assert c.handle(0, ALICE, " !BALANCE ", private=True) == "balance: craps-1 990"
    assert c.handle(0, BOB, "!balance", private=True) == "no seat at any table"
    assert c.handle(0, BOB, "hello all", private=False) is None
    assert c.stats["not_a_command"] == 1


def test_join_and_bet_are_not_commands_yet() -> None:
    c = commands()
    assert c.handle(0, ALICE, "!join craps-1", private=True) == "unknown command; " + HELP
    assert c.handle(0, BOB, "!bet craps-1 pass 10", private=True) is not None


def test_replies_per_sender_are_rate_limited() -> None:
    c = commands(replies_burst=3, reply_interval=5.0)
    got = [c.handle(i * 0.1, ALICE, "!tables", private=False) for i in range(10)]
    assert sum(r is not None for r in got) == 3 and c.stats["rate_limited"] == 7
    assert c.handle(0.5, BOB, "!tables", private=False) is not None  # others unaffected
    assert c.handle(6.0, ALICE, "!tables", private=False) is not None  # refilled


def test_help_for_unknown_oversized_or_malformed_lines_once_per_window() -> None:
    c = commands(help_interval=30.0, max_command_bytes=50)
    assert c.handle(0, ALICE, "!" + "x" * 60, private=False) is not None
    assert c.handle(1, ALICE, "!nope", private=False) is None
    assert c.handle(2, ALICE, "!tables extra words", private=False) is None
    assert c.handle(31, ALICE, "!nope", private=False) is not None
    assert c.stats["oversized"] == 1 and c.stats["unknown_command"] == 3
    assert c.stats["help_suppressed"] == 2


def test_public_replies_stay_under_the_compression_threshold() -> None:
    tables = [TableView(f"table-{i}", i, "active", 8, 8, lambda _k: 1) for i in range(20)]
    c = Commands(lambda: tables)
    pub = c.handle(0, ALICE, "!tables", private=False)
    dm = c.handle(0, BOB, "!tables", private=True)
    assert pub is not None and len(pub.encode()) <= 99
    assert dm is not None and len(dm.encode()) <= 255


def test_senders_remembered_are_bounded() -> None:
    c = commands(max_senders=10)
    for i in range(100):
        c.handle(0, i.to_bytes(32, "big"), "!help", private=False)
    assert len(c._senders) == 10


@given(st.text(max_size=300))
def test_handle_never_fails_and_replies_are_bounded(text: str) -> None:
    reply = commands().handle(0, ALICE, text, private=False)
    assert reply is None or len(reply.encode()) <= 99


def test_private_message_matches_the_upstream_tlvs() -> None:
    pm = PrivateMessage("ID-1", "!help")
    assert pm.encode() == private_message_tlv("ID-1", "!help")
    assert PrivateMessage.decode(private_message_tlv("x", "é")) == PrivateMessage("x", "é")
    for bad in (b"\x02\x01a", b"\x00\x05ab", b"\x00\x01\xff\x01\x00", b"\x01\x01a"):
        with pytest.raises(WireError):
            PrivateMessage.decode(bad)


@given(
    st.binary(max_size=300)
    | st.builds(private_message_tlv, st.text(max_size=40), st.text(max_size=60))
    | st.builds(lambda a, b: a + b, st.binary(max_size=4), st.binary(max_size=20))
)
def test_private_message_decoder_agrees_with_upstream(data: bytes) -> None:
    ours: tuple[str, str] | None
    try:
        pm = PrivateMessage.decode(data)
        ours = (pm.message_id, pm.content)
    except WireError:
        ours = None
    assert ours == parse_private_message_tlv(data)


@given(st.binary(max_size=40))
def test_split_typed_raises_only_wire_errors(data: bytes) -> None:
    with contextlib.suppress(WireError):
        ptype, rest = split_typed(data)
        assert bytes([ptype]) + rest == data
