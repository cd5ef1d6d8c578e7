"""Compact proposals: ops travel once; blocks are rebuilt from the mempool or fetched."""

from __future__ import annotations

from ble_bridge.consensus.engine import ConsensusEngine
from ble_bridge.consensus.testing import LedgerState, add_op, exchange
from ble_bridge.consensus.testing import unit_engines as engines
from ble_bridge.wire.messages import (
    CompactProposal,
    Message,
    Operation,
    Proposal,
    ProposalRequest,
    Step,
)

Engine = ConsensusEngine[LedgerState]


def _proposer(group: list[Engine]) -> Engine:
    return next(e for e in group if e.key == group[0].proposer(1, 0))


def _exchange_compact(group: list[Engine], now: float, lose: set[bytes] | None = None) -> float:
    """Deliver everything; the proposer's own proposals go compact; ``lose`` op ids never
    reach anyone but their submitter."""
    lost = lose or set()

    def compact(eng: Engine, msg: Message) -> Message | None:
        if isinstance(msg, Operation) and msg.op_id in lost:
            return None
        if (
            isinstance(msg, Proposal)
            and eng.proposer(msg.height, msg.round) == eng.key
            and not eng.full_proposal_requested(msg.height, msg.round)
        ):
            return CompactProposal.of(msg)
        return msg

    return exchange(group, now, steps=500, transform=compact)


def test_compact_proposal_is_rebuilt_from_gossiped_ops_and_commits() -> None:
    group = engines(4)
    for e in group:
        e.start(0.0)
    for k, e in enumerate(group):
        e.submit(0.0, add_op(k + 1))
    _exchange_compact(group, 0.0)
    heights = {e.height for e in group}
    assert len(heights) == 1 and heights.pop() >= 1
    assert {e.state_hash for e in group} == {group[0].state_hash}
    assert group[0].state.grand_total == 10
    assert sum(e.stats["compact_rebuilt"] for e in group) >= 3 * group[0].height
    assert sum(e.stats["sent_proposal_request"] for e in group) == 0


def test_missing_op_is_fetched_as_the_full_proposal() -> None:
    group = engines(4)
    for e in group:
        e.start(0.0)
    proposer = _proposer(group)
    op_id = proposer.submit(0.0, add_op(7))  # its gossip is lost: only the proposer has it
    _exchange_compact(group, 0.0, lose={op_id})
    assert {e.height for e in group} == {1}
    assert all(e.state.grand_total == 7 for e in group)
    assert sum(e.stats["sent_proposal_request"] for e in group) >= 1
    assert proposer.stats["sent_proposal"] >= 1


def test_forged_compact_proposal_is_dropped_before_any_fetch() -> None:
    group = engines(4)
    for e in group:
        e.start(0.0)
    proposer = _proposer(group)
    proposer.submit(0.0, add_op(3))
    (p,) = [m for m in proposer.outbox() if isinstance(m, Proposal)]
    other = next(e for e in group if e is not proposer)
    forged = CompactProposal.of(p)
    forged = CompactProposal(
        forged.height, forged.round, forged.pol_round, forged.header, forged.entries,
        forged.evidence, bytes(64),
    )  # fmt: skip
    other.receive(0.0, forged)
    assert other.stats["drop_bad_signature"] == 1
    assert not other.outbox()


def test_compact_with_an_unknown_short_id_asks_for_the_full_proposal_after_a_wait() -> None:
    group = engines(4)
    for e in group:
        e.start(0.0)
    proposer = _proposer(group)
    proposer.submit(0.0, add_op(3))
    (p,) = [m for m in proposer.outbox() if isinstance(m, Proposal)]
    other = next(e for e in group if e is not proposer)
    other.receive(0.0, CompactProposal.of(p))  # the op itself never reached it
    assert not [m for m in other.outbox() if isinstance(m, ProposalRequest)]
    due = other.next_timer()
    assert due is not None
    while not other.stats["sent_proposal_request"]:
        other.handle_timer(due)
        due = other.next_timer() or due + 0.1
    assert ProposalRequest(1, 0) in other.outbox()
    other.receive(due, p)  # the full proposal answers it
    assert other.votes_for(p.block.hash, Step.PREVOTE) >= 1


def test_inline_ops_need_no_mempool_and_no_fetch() -> None:
    group = engines(4)
    for e in group:
        e.start(0.0)
    proposer = _proposer(group)
    proposer.submit(0.0, add_op(3))
    (p,) = [m for m in proposer.outbox() if isinstance(m, Proposal)]
    other = next(e for e in group if e is not proposer)
    other.receive(0.0, CompactProposal.of(p, inline=lambda op: True))
    assert other.stats["compact_rebuilt"] == 1
    assert other.votes_for(p.block.hash, Step.PREVOTE) >= 1
