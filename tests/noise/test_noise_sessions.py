"""Noise sessions: handshakes between nodes and phones, bounds, rekey, quarantine, expiry."""

from __future__ import annotations

import contextlib

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from ble_bridge.noise.protocol import NoiseError, public_bytes
from ble_bridge.noise.session import NoiseConfig, NoiseSessions, peer_id_of


def party(config: NoiseConfig | None = None) -> NoiseSessions:
    key = X25519PrivateKey.generate()
    return NoiseSessions(peer_id_of(public_bytes(key)), key, config)


def handshake(a: NoiseSessions, b: NoiseSessions, now: float = 0.0) -> None:
    """``a`` initiates with ``b``; three messages."""
    m1 = a.initiate(now, b.peer_id)
    r2 = b.on_handshake(now, a.peer_id, m1)
    assert r2.reply is not None and not r2.established
    r3 = a.on_handshake(now, b.peer_id, r2.reply)
    assert r3.established and r3.reply is not None
    r4 = b.on_handshake(now, a.peer_id, r3.reply)
    assert r4.established and r4.reply is None


def test_full_handshake_and_messages_both_ways() -> None:
    phone, node = party(), party()
    handshake(phone, node)
    assert node.remote_static(phone.peer_id) == phone.static_public
    assert node.decrypt(1, phone.peer_id, phone.encrypt(1, node.peer_id, b"!help")) == b"!help"
    assert phone.decrypt(1, node.peer_id, node.encrypt(1, phone.peer_id, b"hi")) == b"hi"
    assert node.stats["sessions_established"] == 1


def test_a_static_key_that_is_not_the_senders_peer_id_is_refused() -> None:
    phone, node = party(), party()
    m1 = phone.initiate(0, node.peer_id)
    liar = b"\x01" * 8  # claims another id
    r2 = node.on_handshake(0, liar, m1)
    assert r2.reply is not None
    r3 = phone.on_handshake(0, node.peer_id, r2.reply)
    assert r3.reply is not None
    with pytest.raises(NoiseError, match="identity_mismatch"):
        node.on_handshake(0, liar, r3.reply)
    assert not node.established(liar) and node.stats["handshake_identity_mismatch"] == 1


def test_half_open_handshakes_are_bounded_and_expire() -> None:
    node = party(NoiseConfig(max_half_open=4, handshakes_per_minute=1000))
    for i in range(10):
        m1 = party().initiate(0, node.peer_id)
        try:
            node.on_handshake(0, bytes([i]) * 8, m1)
        except NoiseError as exc:
            assert exc.reason == "half_open_full"
    assert node.half_open == 4 and node.stats["handshake_half_open_full"] == 6
    node.expire(25.0)  # responder timeout 20 s
    assert node.half_open == 0 and len(node) == 0 and node.stats["handshake_timeout"] == 4


def test_handshake_floods_are_rate_limited_per_peer_and_overall() -> None:
    node = party()
    claimed = b"\x05" * 8
    refused = 0
    for i in range(15):
        try:
            node.on_handshake(i * 0.01, claimed, party().initiate(0, node.peer_id))
        except NoiseError:
            refused += 1
    assert refused == 5 and node.stats["handshake_rate_limited_peer"] == 5  # 10 a minute
    node2 = party(NoiseConfig(max_half_open=100))
    ok = 0
    for i in range(40):
        try:
            node2.on_handshake(0, bytes([i]) * 8, party().initiate(0, node2.peer_id))
            ok += 1
        except NoiseError:
            pass
    assert ok == 30 and node2.stats["handshake_rate_limited"] == 10  # 30 a minute overall


def test_sessions_are_bounded_least_recently_used_first() -> None:
    node = party(NoiseConfig(max_sessions=3, handshakes_per_minute=1000))
    phones = [party() for _ in range(4)]
    for i, p in enumerate(phones):
        handshake(p, node, now=float(i))
    assert len(node) == 3 and not node.established(phones[0].peer_id)
    assert node.stats["session_evicted"] == 1


def test_idle_sessions_expire() -> None:
    phone, node = party(), party(NoiseConfig(idle_timeout=60))
    handshake(phone, node)
    node.expire(59)
    assert node.established(phone.peer_id)
    node.expire(61)
    assert not node.established(phone.peer_id)


def test_a_new_message_1_keeps_the_old_keys_receive_only_until_it_completes() -> None:
    phone, node = party(), party()
    handshake(phone, node)
    old = phone.encrypt(1, node.peer_id, b"late but real")
    # someone (maybe not the phone) sends a message 1 in the phone's name
    node.on_handshake(2, phone.peer_id, party().initiate(2, node.peer_id))
    assert not node.established(phone.peer_id)
    assert node.decrypt(3, phone.peer_id, old) == b"late but real"
    node.expire(30)  # the impostor never finishes: the old transport is active again
    assert node.established(phone.peer_id)
    assert node.decrypt(31, phone.peer_id, phone.encrypt(31, node.peer_id, b"x")) == b"x"
    assert node.stats["sessions_restored"] == 1


def test_rekey_is_a_fresh_handshake_started_by_the_node() -> None:
    phone, node = party(), party(NoiseConfig(rekey_after_messages=3))
    handshake(phone, node)
    for _ in range(3):
        phone.decrypt(1, node.peer_id, node.encrypt(1, phone.peer_id, b"m"))
    assert node.needs_rekey(1, phone.peer_id)
    handshake(node, phone, now=2)
    assert not node.needs_rekey(2, phone.peer_id)
    assert phone.decrypt(3, node.peer_id, node.encrypt(3, phone.peer_id, b"new")) == b"new"
    assert party(NoiseConfig(max_age=10)).needs_rekey(0, b"\x00" * 8) is False


def test_crossed_initiations_resolve_to_the_smaller_peer_id() -> None:
    a, b = party(), party()
    m_a = a.initiate(0, b.peer_id)
    m_b = b.initiate(0, a.peer_id)
    small, big = (a, b) if a.peer_id < b.peer_id else (b, a)
    m_small, m_big = (m_a, m_b) if small is a else (m_b, m_a)
    with pytest.raises(NoiseError, match="crossed_kept_initiator"):
        small.on_handshake(0, big.peer_id, m_big)
    r2 = big.on_handshake(0, small.peer_id, m_small)  # big yields and answers
    assert r2.reply is not None
    r3 = small.on_handshake(0, big.peer_id, r2.reply)
    assert r3.established and r3.reply is not None
    assert big.on_handshake(0, small.peer_id, r3.reply).established


def test_encrypting_without_a_session_fails() -> None:
    with pytest.raises(NoiseError, match="no_session"):
        party().encrypt(0, b"\x02" * 8, b"x")


@given(st.binary(max_size=120), st.integers(0, 3))
def test_on_handshake_with_any_bytes_raises_only_noise_error(data: bytes, stage: int) -> None:
    phone, node = party(), party()
    if stage >= 1:
        r2 = node.on_handshake(0, phone.peer_id, phone.initiate(0, node.peer_id))
        if stage >= 2 and r2.reply is not None:
            r3 = phone.on_handshake(0, node.peer_id, r2.reply)
            if stage >= 3 and r3.reply is not None:
                node.on_handshake(0, phone.peer_id, r3.reply)
    with contextlib.suppress(NoiseError):
        node.on_handshake(1, phone.peer_id, data)
    with contextlib.suppress(NoiseError):
        node.decrypt(1, phone.peer_id, data)
    assert node.half_open <= 1
