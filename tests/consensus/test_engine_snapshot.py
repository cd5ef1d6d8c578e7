"""Snapshots: codec, caps, and install accepted only with a certificate proving its state."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ble_bridge.consensus.engine import ConsensusEngine, EngineConfig
from ble_bridge.consensus.snapshot import Snapshot, SnapshotError, SnapshotTooLarge
from ble_bridge.consensus.testing import LedgerState, add_op, exchange, unit_engines
from ble_bridge.wire import envelope
from ble_bridge.wire.messages import BlockHeader, MessageError, MessageLimits


def _chain(heights: int) -> list[ConsensusEngine[LedgerState]]:
    group = unit_engines(4)
    for e in group:
        e.start(0.0)
    now = 0.0
    for k in range(heights):
        group[k % 4].submit(now, add_op(k + 1))
        now = exchange(group, now) + 1.0
    assert all(e.height == heights for e in group)
    return group


def test_snapshot_round_trips_and_compresses() -> None:
    header = BlockHeader(3, b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, b"\x04" * 32)
    snap = Snapshot(
        header, ((b"\x05" * 32, 9), (b"\x06" * 32, 2)), frozenset({b"\x07" * 32}), b"a" * 500
    )
    blob = snap.compress()
    assert len(blob) < len(snap.encode())
    assert Snapshot.decompress(blob) == snap


def test_snapshot_declared_size_over_cap_is_refused_before_decompressing() -> None:
    header = BlockHeader(3, b"\x01" * 32, b"\x02" * 32, b"\x03" * 32, b"\x04" * 32)
    blob = Snapshot(header, (), frozenset(), b"\x00" * 10_000).compress()
    with pytest.raises(SnapshotTooLarge):
        Snapshot.decompress(blob, max_size=1000)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_snapshot_bytes_raise_only_snapshot_errors(data: bytes) -> None:
    for blob in (data, envelope.pack(data), envelope.pack(b"\x01" + data)):
        try:
            Snapshot.decompress(blob)
        except SnapshotError as exc:
            assert isinstance(exc, MessageError)


def test_late_node_installs_a_certified_snapshot() -> None:
    group = _chain(3)
    blob, cert = group[1].make_snapshot() or (b"", None)
    assert cert is not None
    fresh = unit_engines(4)[0]
    fresh.start(10.0)
    assert fresh.install_snapshot(10.0, blob, cert)
    assert fresh.height == 3 and fresh.state_hash == group[0].state_hash
    assert fresh.state == group[0].state
    # and it keeps committing with the others afterwards
    others = group[1:]
    others[0].submit(11.0, add_op(5))
    exchange([fresh, *others], 11.0)
    assert fresh.height == 4 and fresh.state_hash == others[0].state_hash


def test_snapshot_with_tampered_state_is_refused() -> None:
    group = _chain(2)
    blob, cert = group[0].make_snapshot() or (b"", None)
    assert cert is not None
    snap = Snapshot.decompress(blob)
    state = group[0].app.restore(snap.app_state)
    richer = dataclasses.replace(state, totals=tuple((k, v + 1000) for k, v in state.totals))
    forged = dataclasses.replace(snap, app_state=group[0].app.snapshot(richer)).compress()
    fresh = unit_engines(4)[3]
    assert not fresh.install_snapshot(1.0, forged, cert)
    assert fresh.stats["snapshot_hash_mismatch"] == 1 and fresh.height == 0


def test_snapshot_needs_a_verifying_certificate_for_its_block() -> None:
    group = _chain(2)
    blob, cert = group[0].make_snapshot() or (b"", None)
    assert cert is not None
    fresh = unit_engines(4)[3]
    bad_sig = dataclasses.replace(cert, signatures=(b"\x00" * 64, *cert.signatures[1:]))
    assert not fresh.install_snapshot(1.0, blob, bad_sig)
    assert fresh.stats["snapshot_bad_certificate"] == 1
    other_block = dataclasses.replace(cert, block_hash=b"\x09" * 32)
    assert not fresh.install_snapshot(1.0, blob, other_block)
    assert fresh.stats["snapshot_certificate_mismatch"] == 1
    small = ConsensusEngine(
        fresh.session_id,
        fresh.signer,
        fresh.validators,
        fresh.app,
        EngineConfig(limits=MessageLimits(max_snapshot_bytes=64)),
    )
    assert not small.install_snapshot(1.0, blob, cert)
    assert small.stats["snapshot_oversized_snapshot"] == 1
    assert fresh.install_snapshot(1.0, blob, cert)
    assert not fresh.install_snapshot(1.0, blob, cert)  # not newer than what it has
    assert fresh.stats["snapshot_stale"] == 1
