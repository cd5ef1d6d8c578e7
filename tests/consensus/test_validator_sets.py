"""Validator-set changes: committed at H, effective at H+1, proven by certificates of their
own height, carried by snapshots; bad joins and leaves refused with a reason."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ble_bridge.consensus.engine import ConsensusEngine, EngineConfig, ValidatorsChanged
from ble_bridge.consensus.snapshot import Snapshot
from ble_bridge.consensus.testing import (
    UNIT_SESSION,
    LedgerApp,
    LedgerState,
    LinkModel,
    SimNetwork,
    add_op,
    exchange,
    unit_identities,
)
from ble_bridge.consensus.validators import (
    AddValidator,
    RemoveReason,
    RemoveValidator,
    SetLink,
    SetOpError,
    decode_set_op,
    encode_set_op,
)
from ble_bridge.wire.identity import Identity
from ble_bridge.wire.messages import (
    Commit,
    CommitCertificate,
    JoinRequest,
    Step,
    Vote,
    decode_message,
    encode_message,
)

Engine = ConsensusEngine[LedgerState]


def _group(n_genesis: int, n_extra: int, config: EngineConfig | None = None) -> list[Engine]:
    """``n_genesis`` validators plus ``n_extra`` observers (same genesis set)."""
    ids = unit_identities(n_genesis + n_extra)
    genesis = [i.signing_public for i in ids[:n_genesis]]
    return [ConsensusEngine(UNIT_SESSION, ident, genesis, LedgerApp(), config) for ident in ids]


def _start(group: list[Engine]) -> float:
    for e in group:
        e.start(0.0)
    return 0.0


def _commit_op(group: list[Engine], now: float, who: int = 0, amount: int = 1) -> float:
    group[who].submit(now, add_op(amount))
    return exchange(group, now) + 0.5


def test_set_ops_round_trip_and_bad_bytes_are_refused() -> None:
    ident = Identity.from_seed(b"joiner")
    req = JoinRequest.create(ident.sign, ident.signing_public, UNIT_SESSION, 7, 100)
    for op in (
        AddValidator(req),
        RemoveValidator(b"\x01" * 32, RemoveReason.SILENT),
        RemoveValidator(b"\x01" * 32, RemoveReason.LEAVE),
        RemoveValidator(b"\x01" * 32, RemoveReason.LEAVE, 1 << 40),
    ):
        assert decode_set_op(encode_set_op(op)) == op
    with pytest.raises(ValueError):
        RemoveValidator(b"\x01" * 32, RemoveReason.SILENT, 5)  # only a leave has a floor
    for bad in (
        b"\xfe",
        b"\xfe\x03",
        b"\xfe\x01" + b"\x00" * 5,
        b"\xfe\x02" + b"\x00" * 33 + b"\x07",
        b"\xfe\x02" + b"\x00" * 33 + b"\x00" * 8,  # a floor of 0 spelled out
        b"\xfe\x02" + b"\x00" * 32 + b"\x01" + b"\x00" * 7 + b"\x05",  # silent, floor
        b"\xfe\x02" + b"\x00" * 33 + b"\x05" * 4,
    ):
        with pytest.raises(SetOpError):
            decode_set_op(bad)
    _, msg = decode_message(encode_message(UNIT_SESSION, req))
    assert msg == req


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_set_op_bytes_raise_only_set_op_errors(data: bytes) -> None:
    with contextlib.suppress(SetOpError):
        decode_set_op(b"\xfe" + data)


def test_join_takes_effect_at_the_next_height_on_every_node() -> None:
    group = _group(4, 1)
    now = _start(group)
    now = _commit_op(group, now)
    joiner = group[4]
    assert not joiner.is_validator and joiner.height == 1  # an observer follows the chain
    joiner.request_join(now, nonce=1, buy_in=50)
    now = exchange(group, now) + 0.5
    changes = [ev for ev in group[0].events() if isinstance(ev, ValidatorsChanged)]
    assert len(changes) == 1 and changes[0].added == (joiner.key,)
    h = changes[0].height
    for e in group:
        assert e.height == h
        assert joiner.key not in e.validators_at(h)
        assert joiner.key in e.validators_at(h + 1)
        assert e.validators == e.validators_at(h + 1) and len(e.validators) == 5
    assert joiner.is_validator
    now = _commit_op(group, now, who=4)  # the joiner's own op commits, its vote counts
    cert = group[0].last_certificate
    assert cert is not None and cert.height == h + 1 and cert.n_validators == 5
    assert joiner.stats["joined"] == 1
    assert all(e.last_block_hash == group[0].last_block_hash for e in group)


def test_a_certificate_of_the_old_set_does_not_prove_a_height_of_the_new_one() -> None:
    group = _group(4, 1)
    now = _start(group)
    group[4].request_join(now, nonce=1)
    now = exchange(group, now) + 0.5
    h = group[0].height
    assert len(group[0].validators) == 5
    # the four old validators precommit some block at h+1: enough for the old set (3 of
    # 4), not for the new one (4 of 5)
    old = [group[i] for i in range(4)]
    fake = b"\x42" * 32
    old_keys = sorted(e.key for e in old)
    votes = {
        e.key: Vote.create(e.signer.sign, e.key, UNIT_SESSION, Step.PRECOMMIT, h + 1, 0, fake)
        for e in old[:3]
    }
    idx = tuple(sorted(old_keys.index(k) for k in votes))
    sigs = tuple(votes[old_keys[i]].signature for i in idx)
    cert = CommitCertificate(h + 1, 0, fake, 4, idx, sigs)
    assert cert.verify(old_keys, UNIT_SESSION)
    target = group[1]
    target.receive(now, cert)
    assert target.stats["drop_bad_certificate"] == 1
    # but a certificate of height h is checked against the (old) set of h and accepted
    real = group[0].last_certificate
    assert real is not None and real.n_validators == 4
    assert real.verify(target.validators_at(h), UNIT_SESSION)


def _several_changes(config: EngineConfig | None = None) -> tuple[list[Engine], float]:
    """4 genesis validators, two join, one genesis validator leaves, ops in between."""
    group = _group(4, 3, config)
    now = _start(group)
    now = _commit_op(group, now)
    group[4].request_join(now, nonce=1)
    now = exchange(group, now) + 0.5
    now = _commit_op(group, now, who=4)
    group[5].request_join(now, nonce=1)
    now = exchange(group, now) + 0.5
    now = _commit_op(group, now, who=5)
    group[1].leave(now)
    now = exchange(group, now) + 0.5
    now = _commit_op(group, now, who=2)
    return group, now


def test_leave_removes_the_validator_and_its_votes_and_ops_are_dropped() -> None:
    group, now = _several_changes()
    leaver = group[1]
    members = [group[i] for i in (0, 2, 3, 4, 5)]
    for e in members:
        assert leaver.key not in e.validators and len(e.validators) == 5
    assert not leaver.is_validator
    with pytest.raises(ValueError):
        leaver.submit(now, add_op(1))
    h = members[0].height
    stale = Vote.create(
        leaver.signer.sign, leaver.key, UNIT_SESSION, Step.PREVOTE, h + 1, 0, b"\x00" * 32
    )
    members[0].receive(now, stale)
    assert members[0].stats["drop_not_validator"] >= 1
    # the leaver still follows the chain as an observer
    now = _commit_op(members, now)
    leaver.receive(now, members[0].state_announcement())
    exchange(group, now + 1.0)
    assert leaver.height == members[0].height


def test_catch_up_by_blocks_across_several_changes() -> None:
    group, now = _several_changes()
    late = group[6]  # never exchanged with after the first commits? it followed: rebuild
    fresh = ConsensusEngine(UNIT_SESSION, late.signer, late.genesis_validators, LedgerApp())
    fresh.start(now)
    src = group[0]
    for h in range(1, src.height + 1):
        found = src._block_at(h)
        assert found is not None
        fresh.receive(now, Commit(*found))
    assert fresh.height == src.height
    assert fresh.validators == src.validators
    assert fresh.state_hash == src.state_hash
    assert [link.height for link in fresh.validator_history.links] == [
        link.height for link in src.validator_history.links
    ]


def test_catch_up_by_snapshot_across_several_changes_verifies_from_genesis() -> None:
    group, now = _several_changes()
    src = group[0]
    made = src.make_snapshot()
    assert made is not None
    blob, cert = made
    snap = Snapshot.decompress(blob)
    assert len(snap.links) == 3 and snap.keys == src.validators
    ident = Identity.from_seed(b"newcomer")
    fresh = ConsensusEngine(UNIT_SESSION, ident, src.genesis_validators, LedgerApp())
    fresh.start(now)
    assert fresh.install_snapshot(now, blob, cert)
    assert fresh.height == src.height and fresh.validators == src.validators
    assert fresh.state_hash == src.state_hash
    # and it goes on committing with the new set
    group.append(fresh)
    now = _commit_op(group, now, who=4)
    assert fresh.height == src.height


def test_a_snapshot_with_a_tampered_set_link_is_refused() -> None:
    group, _ = _several_changes()
    src = group[0]
    made = src.make_snapshot()
    assert made is not None
    blob, cert = made
    snap = Snapshot.decompress(blob)
    # claim a different set after the first change (the certificate no longer matches)
    first = snap.links[0]
    forged_keys = tuple(sorted([*first.keys[:-1], b"\x07" * 32]))
    bad_link = SetLink(first.header, first.certificate, forged_keys, first.rest_digest)
    forged = Snapshot(
        snap.header,
        snap.nonces,
        snap.banned,
        snap.app_state,
        snap.keys,
        snap.join_nonces,
        (bad_link, *snap.links[1:]),
    )
    # drop a link entirely: the next certificate is then checked against the wrong set
    missing = Snapshot(
        snap.header,
        snap.nonces,
        snap.banned,
        snap.app_state,
        snap.keys,
        snap.join_nonces,
        snap.links[1:],
    )
    # claim a different final set: the state hash no longer matches
    wrong_keys = Snapshot(
        snap.header,
        snap.nonces,
        snap.banned,
        snap.app_state,
        src.genesis_validators,
        snap.join_nonces,
        snap.links,
    )
    for bad, reason in (
        (forged, "snapshot_bad_set_links"),
        (missing, "snapshot_bad_set_links"),
        (wrong_keys, "snapshot_hash_mismatch"),
    ):
        fresh = ConsensusEngine(
            UNIT_SESSION, Identity.from_seed(b"x"), src.genesis_validators, LedgerApp()
        )
        fresh.start(0.0)
        assert not fresh.install_snapshot(0.0, bad.compress(), cert)
        assert fresh.stats[reason] == 1, (reason, dict(fresh.stats))
        assert fresh.height == 0


def test_the_last_validator_cannot_leave() -> None:
    (solo,) = _group(1, 0)
    solo.start(0.0)
    solo.leave(0.0)
    exchange([solo], 0.0)
    assert solo.is_validator and solo.validators == (solo.key,)
    assert solo.stats["op_build_failed_last_validator"] >= 1


def test_forged_replayed_and_flooded_joins_are_refused_with_reasons() -> None:
    group = _group(4, 2, EngineConfig(max_pending_joins=2))
    now = _start(group)
    v = group[0]
    joiner = group[4]
    # forged: signed by someone else
    other = Identity.from_seed(b"mallory")
    forged = JoinRequest(joiner.key, 5, 0, other.sign(b"not the join bytes"))
    v.receive(now, forged)
    assert v.stats["drop_join_bad_signature"] == 1
    # a real join, then its replay after the key left
    joiner.request_join(now, nonce=3)
    now = exchange(group, now) + 0.5
    assert joiner.is_validator
    first_request = JoinRequest.create(joiner.signer.sign, joiner.key, UNIT_SESSION, 3, 0)
    joiner.leave(now)
    now = exchange(group, now) + 0.5
    assert not joiner.is_validator and joiner.key not in v.validators
    v.receive(now, first_request)
    assert v.stats["drop_join_replayed"] == 1
    # a flood: one key rate-limited, distinct keys bounded by the pending list
    spam = [Identity.from_seed(b"spam-%d" % i) for i in range(5)]
    for k, ident in enumerate(spam):
        v.receive(now, JoinRequest.create(ident.sign, ident.signing_public, UNIT_SESSION, 1 + k, 0))
    assert v.stats["drop_join_pending_full"] >= 1
    assert len(v.pending_joins) <= 2
    again = JoinRequest.create(spam[0].sign, spam[0].signing_public, UNIT_SESSION, 99, 0)
    v.receive(now, again)
    assert v.stats["drop_join_rate_limited"] == 1
    # a join from an existing validator
    mine = JoinRequest.create(v.signer.sign, v.key, UNIT_SESSION, 1, 0)
    v.receive(now, mine)
    assert v.stats["drop_join_already_validator"] == 1


def test_a_join_request_asked_over_cannot_seat_the_key_again_after_it_left() -> None:
    # The key asked under nonce 3, then again under 7 (its first request seemed lost); 3
    # landed. Once it left, 7 was still above every nonce the chain held for it: a replay
    # of it seated the key again (churn seed 470's attacker could have). Its leave now
    # carries the highest nonce it signed, and the chain voids every request up to it.
    group = _group(4, 1)
    now = _start(group)
    now = _commit_op(group, now)
    joiner = group[4]
    joiner.request_join(now, nonce=3)
    first = joiner.outbox()
    later = joiner.request_join(now, nonce=7)
    joiner.outbox()  # the second request went nowhere (yet)
    for e in group[:4]:
        for msg in first:
            e.receive(now, msg)
    now = exchange(group, now) + 0.5
    assert joiner.is_validator and group[0].join_nonce(joiner.key) == 3
    joiner.leave(now)
    now = exchange(group, now) + 0.5
    assert not joiner.is_validator and joiner.key not in group[0].validators
    for e in group[:4]:
        e.receive(now, later)  # the replay
    now = exchange(group, now) + 0.5
    now = _commit_op(group, now)
    assert all(joiner.key not in e.validators for e in group[:4])
    for e in group[:4]:
        assert e.stats["drop_join_replayed"] == 1
        assert e.join_nonce(joiner.key) == 7  # the floor, chain state at every node
    # asking again under a fresh nonce seats it again
    joiner.request_join(now, nonce=8)
    now = exchange(group, now) + 0.5
    assert joiner.is_validator and all(joiner.key in e.validators for e in group[:4])


def test_a_byzantine_sponsor_cannot_add_a_key_without_its_signature() -> None:
    group = _group(4, 1)
    now = _start(group)
    victim = group[4]
    byz = group[0]
    bogus = JoinRequest(victim.key, 1, 0, b"\x00" * 64)
    byz._sign_own(now, encode_set_op(AddValidator(bogus)))
    byz._wake_for_work(now)
    now = exchange(group, now) + 0.5
    for e in group[:4]:
        assert victim.key not in e.validators
    assert byz.stats["op_build_failed_join_bad_signature"] >= 1


def test_a_silent_validator_is_removed_and_the_table_goes_on() -> None:
    cfg = EngineConfig(silence_heights=4, idle_block_interval=None)
    net = SimNetwork(5, seed=3, link=LinkModel(delay=0.01, jitter=0.01), config=cfg)
    net.start()
    net.load(rate=4.0, until=1e9)
    net.run(3.0)
    victim = 4
    net.crash(victim)
    live = [0, 1, 2, 3]
    net.run(30.0)
    for i in live:
        assert net.nodes[victim].key not in net.validators_of(i)
        assert len(net.validators_of(i)) == 4
    h = net.height_of(0)
    assert net.run_until_height(h + 3, 60.0, live)
    assert net.agreement(live) and net.sets_agree(live)
    stats = net.nodes[0].engine.stats if net.nodes[0].engine else {}
    assert stats["validators_removed"] == 1


def test_a_restarted_validator_is_not_thrown_out() -> None:
    cfg = EngineConfig(silence_heights=64, idle_block_interval=None)
    net = SimNetwork(4, seed=5, link=LinkModel(delay=0.01, jitter=0.01), config=cfg)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        for node in net.nodes:
            node.store_path = Path(d) / f"n{node.index}.sqlite"
        net.start()
        net.load(rate=4.0, until=1e9)
        net.run(3.0)
        net.crash(3)
        net.run(4.0)
        net.restart(3)
        net.run(25.0)
        assert all(len(net.validators_of(i)) == 4 for i in range(4))
        assert net.agreement() and net.sets_agree()
