"""Gossip items -> the bytes of one neighbour's batch, compacted. Pure.

Votes that agree on step, height, round and block go as one VoteSet (~103 bytes for one
vote instead of 142; ~75 with a short block reference), operations of validators as
OperationRefs (the submitter as its index in the validator set), compact proposals as
ProposalRefs (without what the proposer rotation tells). A VoteSet names its block by a
4-byte hash prefix to a neighbour that showed it knows the block (``known``) and for nil,
and its voters by their indices in the set of the votes' height (not the current one: a
late vote of the height before a set change, to a neighbour still deciding it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Sequence

from ..gossip import Item
from ..wire.messages import (
    MAX_VOTE_SET,
    NIL,
    CompactProposal,
    Operation,
    Vote,
    encode_operation_ref,
    encode_proposal_ref,
    encode_vote_set,
)

VoteGroup = tuple[int, int, int, bytes]  # (step, height, round, block hash)


def compact_items(
    items: Sequence[Item],
    *,
    members: Collection[bytes],
    index: Callable[[bytes], int],
    proposer: Callable[[int, int], bytes],
    known: Collection[bytes] | None,
    short_sets: bool,
    counters: Counter[str],
    set_at: Callable[[int], Sequence[bytes]] | None = None,
) -> list[bytes]:
    """The item bytes for one neighbour, in queue order (a vote set where its first vote
    was). ``members``/``index``: the validator set; ``set_at(height)``: the sorted set of
    a height, which a VoteSet's indices point into (default: ``members``, sorted);
    ``proposer(height, round)``: the rotation; ``known``: blocks the neighbour named to us
    (None: none). Counts ``vote_sets_short`` and ``vote_sets_full`` in ``counters``."""
    current = tuple(sorted(members))

    def voters(height: int) -> Sequence[bytes]:
        return current if set_at is None else set_at(height)

    groups: dict[VoteGroup, list[Vote]] = {}
    order: list[bytes | VoteGroup] = []
    n = len(members)
    for item in items:
        v = item.meta
        if isinstance(v, Operation) and v.submitter in members:
            order.append(encode_operation_ref(v, index, n))
            continue
        if (
            isinstance(v, CompactProposal)
            and v.header.height == v.height
            and v.header.proposer == proposer(v.height, v.round)
        ):
            order.append(encode_proposal_ref(v))
            continue
        if isinstance(v, Vote) and v.validator in voters(v.height):
            k = (int(v.step), v.height, v.round, v.block_hash)
            if k not in groups:
                groups[k] = []
                order.append(k)
            groups[k].append(v)
        else:
            order.append(item.data)
    out: list[bytes] = []
    for entry in order:
        if isinstance(entry, bytes):
            out.append(entry)
            continue
        votes = groups[entry]
        block = entry[3]
        short = short_sets and (block == NIL or (known is not None and block in known))
        counters["vote_sets_short" if short else "vote_sets_full"] += 1
        keys = voters(entry[1])
        for i in range(0, len(votes), MAX_VOTE_SET):
            chunk = votes[i : i + MAX_VOTE_SET]
            out.append(encode_vote_set(chunk, keys.index, len(keys), short=short))
    return out
