"""Lean catch-up answers: certificates instead of blocks, first answer silences the rest."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ble_bridge.consensus.engine import ConsensusEngine
from ble_bridge.consensus.testing import LedgerState, add_op
from ble_bridge.consensus.testing import unit_engines as engines
from ble_bridge.wire.messages import (
    CertificateRequest,
    Commit,
    CommitCertificate,
    CommitRequest,
    Message,
    Step,
    Vote,
    decode_message,
    encode_message,
)

Engine = ConsensusEngine[LedgerState]
Drop = Callable[[Engine, Message], bool]


def _run(
    group: Sequence[Engine], now: float, until: float, drop: Drop, log: list[Message]
) -> float:
    """Deliver outboxes (except what ``drop`` says a receiver loses) and fire timers."""
    for _ in range(2000):
        moved = False
        for eng in group:
            for msg in eng.outbox():
                moved = True
                log.append(msg)
                for other in group:
                    if other is not eng and not drop(other, msg):
                        other.receive(now, msg)
        if not moved:
            timers = [t for t in (e.next_timer() for e in group) if t is not None]
            if not timers or min(timers) > until:
                return now
            now = max(now, min(timers))
            for eng in group:
                eng.handle_timer(now)
        now += 0.001
    return now


def _timers_until(engine: Engine, t: float, wanted: Message) -> tuple[list[Message], float]:
    """Fire ``engine``'s timers from ``t`` on until its outbox holds ``wanted`` (at most 20
    firings); the outbox that held it and the time it left."""
    for _ in range(20):
        due = engine.next_timer()
        assert due is not None
        t = max(t, due)
        engine.handle_timer(t)
        out = engine.outbox()
        if wanted in out:
            return out, t
    raise AssertionError(f"{wanted} never left")


def _lagging_height_one() -> tuple[list[Engine], Engine, list[Message], float]:
    """Four engines decide height 1; the laggard sees the proposal but no precommit."""
    group = engines(4)
    for e in group:
        e.start(0.0)
    laggard = next(e for e in group if e.key != group[0].proposer(1, 0))
    live = [e for e in group if e is not laggard]
    live[0].submit(0.0, add_op(5))
    log: list[Message] = []

    def lose_precommits(receiver: Engine, msg: Message) -> bool:
        return receiver is laggard and isinstance(msg, Vote) and msg.step is Step.PRECOMMIT

    now = _run(group, 0.0, 0.5, lose_precommits, log)
    assert all(e.height == 1 for e in live) and laggard.height == 0
    assert laggard.votes_for(live[0].last_block_hash, Step.PREVOTE) >= 3
    return group, laggard, log, now


def test_laggard_holding_the_block_is_answered_with_a_certificate_not_a_block() -> None:
    group, laggard, log, now = _lagging_height_one()
    log.clear()
    _run(group, now, now + 30.0, lambda r, m: False, log)
    assert laggard.height == 1
    helper = next(e for e in group if e is not laggard)
    assert laggard.last_block_hash == helper.last_block_hash
    assert any(isinstance(m, CommitCertificate) for m in log)
    assert not any(isinstance(m, Commit) for m in log)
    assert laggard.stats["certificates_accepted"] >= 1


def test_first_certificate_answer_silences_the_other_answerers() -> None:
    group, _, log, now = _lagging_height_one()
    log.clear()
    _run(group, now, now + 30.0, lambda r, m: False, log)
    answers = [m for m in log if isinstance(m, CommitCertificate) and m.height == 1]
    assert 1 <= len(answers) < 3  # the three deciders do not all answer the same votes


def test_a_height_answered_recently_is_not_answered_again() -> None:
    group, laggard, _, now = _lagging_height_one()
    helper = next(e for e in group if e is not laggard)
    late = Vote.create(
        laggard.signer.sign, laggard.key, laggard.session_id, Step.PREVOTE, 1, 0, b"\x01" * 32
    )
    later = now + 10.0
    helper.receive(later, late)
    due = helper.next_timer()
    assert due is not None
    helper.handle_timer(due)
    assert [m for m in helper.outbox() if isinstance(m, CommitCertificate)]
    helper.receive(due + 0.01, late)
    assert helper.stats["drop_answered_recently"] == 1
    helper.handle_timer(due + 5.0)
    assert not [m for m in helper.outbox() if isinstance(m, CommitCertificate)]


def test_catch_up_asks_for_the_certificate_when_it_holds_a_candidate_block() -> None:
    group, laggard, _, now = _lagging_height_one()
    ahead = next(e for e in group if e is not laggard)
    laggard.outbox()
    t = now + 1.0
    laggard.receive(t, ahead.state_announcement())
    # its precommits may be a message delay away: it waits, then asks for the certificate
    assert CertificateRequest(1) not in laggard.outbox()
    asked, _ = _timers_until(laggard, t, CertificateRequest(1))
    assert not [m for m in asked if isinstance(m, CommitRequest)]
    ahead.receive(now + 1.0, CertificateRequest(1))
    due = ahead.next_timer()
    assert due is not None
    ahead.handle_timer(due)
    (cert,) = [m for m in ahead.outbox() if isinstance(m, CommitCertificate)]
    laggard.receive(due, cert)
    assert laggard.height == 1


def test_certificate_for_a_block_it_does_not_hold_makes_it_ask_for_the_block() -> None:
    group = engines(4)
    for e in group:
        e.start(0.0)
    laggard = group[3]
    live = group[:3]
    live[0].submit(0.0, add_op(5))
    _run(live, 0.0, 0.5, lambda r, m: False, [])
    cert = live[0].last_certificate
    assert cert is not None and laggard.height == 0
    laggard.receive(1.0, cert)
    assert laggard.height == 0
    assert CommitRequest(1) in laggard.outbox()


def test_forged_or_far_certificates_are_dropped_and_counted() -> None:
    group, laggard, _, now = _lagging_height_one()
    cert = next(e for e in group if e is not laggard).last_certificate
    assert cert is not None
    forged = CommitCertificate(
        cert.height, cert.round, cert.block_hash, cert.n_validators, cert.signers,
        tuple(bytes(64) for _ in cert.signatures),
    )  # fmt: skip
    laggard.receive(now, forged)
    far = CommitCertificate(10_000, 0, cert.block_hash, 4, cert.signers, cert.signatures)
    laggard.receive(now, far)
    assert laggard.stats["drop_bad_certificate"] == 1
    assert laggard.stats["drop_certificate_too_far"] == 1
    assert laggard.height == 0


def test_certificate_messages_survive_the_wire() -> None:
    group, laggard, _, now = _lagging_height_one()
    cert = next(e for e in group if e is not laggard).last_certificate
    assert cert is not None
    laggard.receive_payload(now, encode_message(laggard.session_id, cert))
    assert laggard.height == 1
    _, back = decode_message(encode_message(laggard.session_id, CertificateRequest(3)))
    assert back == CertificateRequest(3)


def test_a_forged_answer_does_not_silence_an_honest_one() -> None:
    # seed 77 of the fault sweep: a FORGE node's answers silenced every honest answerer
    # and the laggard never caught up
    group, laggard, _, now = _lagging_height_one()
    helper = next(e for e in group if e is not laggard)
    cert = helper.last_certificate
    assert cert is not None
    forged = CommitCertificate(
        cert.height, cert.round, cert.block_hash, cert.n_validators, cert.signers,
        tuple(bytes(64) for _ in cert.signatures),
    )  # fmt: skip
    block = helper._recent[1][0]
    late = Vote.create(
        laggard.signer.sign, laggard.key, laggard.session_id, Step.PREVOTE, 1, 0, b"\x01" * 32
    )
    later = now + 10.0
    helper.receive(later, late)  # a laggard: the helper means to answer it
    helper.receive(later, forged)
    helper.receive(later, Commit(block, forged))
    assert helper.stats["drop_bad_certificate"] == 2
    due = helper.next_timer()
    assert due is not None
    helper.handle_timer(due)
    assert cert in helper.outbox()


def _votes_for_height_two(group: list[Engine], laggard: Engine) -> list[Vote]:
    """Prevotes for height 2 from f+1 = 2 validators that decided height 1."""
    live = [e for e in group if e is not laggard][:2]
    return [
        Vote.create(e.signer.sign, e.key, e.session_id, Step.PREVOTE, 2, 0, b"\x07" * 32)
        for e in live
    ]


def test_votes_for_the_next_height_wait_a_message_delay_before_asking() -> None:
    """f+1 validators voting on height 2 while we hold the height-1 block: our precommits
    are likely right behind their votes, so the certificate request waits for a timer."""
    group, laggard, log, now = _lagging_height_one()
    laggard.outbox()
    now += 1.0  # past the engine's own request_interval: only the new wait can hold it
    for v in _votes_for_height_two(group, laggard):
        laggard.receive(now, v)
    assert not [m for m in laggard.outbox() if isinstance(m, CertificateRequest)]
    # the precommits arrive before the timer: committed, nothing was asked
    for m in log:
        if isinstance(m, Vote) and m.step is Step.PRECOMMIT and m.height == 1:
            laggard.receive(now + 0.01, m)
    assert laggard.height == 1
    assert not [m for m in laggard.outbox() if isinstance(m, CertificateRequest)]


def test_votes_for_the_next_height_ask_for_the_certificate_when_precommits_stay_away() -> None:
    group, laggard, _, now = _lagging_height_one()
    laggard.outbox()
    now += 1.0
    for v in _votes_for_height_two(group, laggard):
        laggard.receive(now, v)
    assert not [m for m in laggard.outbox() if isinstance(m, CertificateRequest)]
    _, t = _timers_until(laggard, now, CertificateRequest(1))
    assert t - now < 5.0
