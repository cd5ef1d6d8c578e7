"""Neighbour-gossip policy: who our validator neighbours are and whether our own messages
must be flooded too. Pure functions over a :class:`MeshView` (like CometBFT's vote pickers
over a peer's state).

Gossip reaches the validators connected to us through validator-validator links (their
announced neighbour lists), relayed by validators that are not leaves (proven
equivocators relay nothing of ours but still get what they need to keep up). While some
validator is outside that reach or out of contact, or we have no validator neighbour, our
own messages are flooded as well. A message of a later round is always flooded: a failed
round hints that gossip lost something (a frame dropped on a bad link, a stale view).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from ..wire.messages import CompactProposal, Evidence, Message, Operation, Proposal, Vote

GOSSIPED = (Vote, Proposal, CompactProposal, Operation, Evidence)
"""The messages that travel by neighbour gossip (the rest, e.g. announcements, flood)."""


@dataclass(frozen=True, slots=True)
class MeshView:
    """What the bridge needs of the mesh, as a value the service builds from
    :class:`~ble_bridge.mesh.service.MeshNode`'s peer table.

    ``keys``: peer id -> signing key, every peer whose key we know; ``linked``: peer ids
    with a link up to us; ``graph``: peer id -> the neighbours it announced;
    ``link_depths``: linked peer id -> frames queued on its least busy link;
    ``node_depth``: frames queued on all our links; ``links``: how many links are up."""

    peer_id: bytes
    keys: Mapping[bytes, bytes]
    linked: frozenset[bytes]
    graph: Mapping[bytes, frozenset[bytes]]
    link_depths: Mapping[bytes, int] = field(default_factory=dict)
    node_depth: int = 0
    links: int = 0


@dataclass(frozen=True, slots=True)
class GossipPlan:
    """One session's gossip as :func:`plan` chose it."""

    neighbours: list[bytes]  # validator neighbours (peer ids), sorted
    peer_of: dict[bytes, bytes]  # validator signing key -> its peer id
    graph: dict[bytes, set[bytes]]  # the validator graph gossip trees are built on
    leaves: set[bytes]  # peer ids of banned validators: they relay nothing of ours
    flood_own: bool  # our own messages must be flooded too


def plan(
    view: MeshView,
    validators: Collection[bytes],
    me: bytes,
    banned: Collection[bytes],
    in_contact: int,
    max_neighbours: int,
) -> GossipPlan:
    """Our validator neighbours, the validator graph, and whether to flood our own
    messages; ``in_contact``: validators (us included) heard within the contact timeout;
    gossip keeps the first ``max_neighbours`` neighbours (the tree's edges from us)."""
    by_peer = {pid: key for pid, key in view.keys.items() if key in validators and key != me}
    leaves = {pid for pid, key in by_peer.items() if key in banned}
    neighbours = sorted(pid for pid in view.linked if pid in by_peer)
    graph: dict[bytes, set[bytes]] = {view.peer_id: set(neighbours[:max_neighbours])}
    for pid in by_peer:
        announced = view.graph.get(pid)
        if announced is not None:
            graph[pid] = {nb for nb in announced if nb in by_peer}
    reach = {view.peer_id, *neighbours}
    frontier = list(neighbours)
    while frontier:
        pid = frontier.pop()
        announced = view.graph.get(pid)
        if announced is None or pid in leaves:
            continue
        for nb in announced:
            if nb in by_peer and nb not in reach:
                reach.add(nb)
                frontier.append(nb)
    reached = {by_peer[p] for p in reach if p in by_peer}
    others = set(validators) - {me}
    flood = not neighbours or not others <= reached or in_contact < len(validators)
    return GossipPlan(neighbours, {key: pid for pid, key in by_peer.items()}, graph, leaves, flood)


def floods(gossip: bool, flood_own: bool, msg: Message) -> bool:
    """Whether our own ``msg`` leaves as a mesh flood rather than by neighbour gossip."""
    if not gossip or flood_own or not isinstance(msg, GOSSIPED):
        return True
    return isinstance(msg, Vote | Proposal | CompactProposal) and msg.round > 0
