"""Which links a scheduled relay goes to: flood control for a mesh of unicast BLE links.

A broadcast costs one transmission per link it crosses, so the ideal is a spanning tree (one
transmission per receiving node). A relay therefore skips every peer that is sure to get the
packet anyway:

1. peers it heard the packet from, and the origin;
2. neighbours of the origin (an origin sends on every link);
3. neighbours of a relay it heard, when that relay cannot have deferred them: no node of the
   peer's neighbourhood ranks before the relay (so the relay sent to the peer itself);
4. with ``relay_deferral``: peers that have a neighbour which surely holds a copy going at
   least as far as ours, ranks before us for this packet, and announces
   ``CAP_RELAY_DEFERRAL``; that neighbour will send it.

Ranks hash the packet id with the node id, so every node agrees on them; "surely holds"
means a transmitter we heard (or the origin) or one of its announced neighbours. Why this
never strands a peer z next to a relaying transmitter: take the best-ranked relaying holder
M next to z. M sends to z unless rule 1–3 shows an earlier sender, or rule 4 names a better
ranked holder, which would then be a relaying holder ranked before M. Neighbour lists come
from announces, so a change is safe once the re-announce that follows it has spread.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

from ..wire.packet import Packet
from .config import CAP_RELAY_DEFERRAL, MeshConfig
from .peers import LinkState, PeerTable


@dataclass(slots=True)
class PendingRelay:
    """A verified packet waiting out its relay jitter, and who we heard it from."""

    packet: Packet
    due: float
    heard_links: set[int]
    heard_peers: dict[bytes, int] = field(default_factory=dict)  # peer -> best ttl it sent us


def fresh_neighbors(
    peers: PeerTable, now: float, peer_id: bytes, max_age: float
) -> frozenset[bytes] | None:
    """The peer's announced neighbour ids, or ``None`` when unknown or too old."""
    rec = peers.get(peer_id)
    if rec is None or now - rec.neighbors_at > max_age:
        return None
    return rec.neighbors


def relay_targets(
    now: float,
    pending: PendingRelay,
    peers: PeerTable,
    me: bytes,
    config: MeshConfig,
    stats: Counter[str],
) -> list[LinkState]:
    """Links to peers not known to hold the packet and not left to a better-ranked relay."""
    packet = pending.packet
    sender = packet.sender
    pid = packet.packet_id
    links = [
        link for link_id, link in sorted(peers.links.items()) if link_id not in pending.heard_links
    ]
    if not config.neighbor_pruning:
        return [
            link
            for link in links
            if link.peer_id is None
            or (link.peer_id != sender and link.peer_id not in pending.heard_peers)
        ]
    max_age = config.neighbor_info_ttl
    ranks: dict[bytes, bytes] = {}

    def rank(node: bytes) -> bytes:
        r = ranks.get(node)
        if r is None:
            r = ranks[node] = hashlib.sha256(pid + node).digest()[:8]
        return r

    def defers_like_us(peer_id: bytes) -> bool:
        rec = peers.get(peer_id)
        return rec is not None and bool(rec.capabilities & CAP_RELAY_DEFERRAL)

    # who transmitted, with the ttl of their copies (an origin not heard sent at least ours+1)
    sent_ttl = dict(pending.heard_peers)
    sent_ttl.setdefault(sender, max(config.ttl, packet.ttl + 1))
    neighbors = {t: fresh_neighbors(peers, now, t, max_age) or frozenset() for t in sent_ttl}
    holder_ttl: dict[bytes, int] = {}  # sure holders -> ttl of their copy (lower bound)
    for t, ttl in sent_ttl.items():
        for w in (t, *neighbors[t]):
            holder_ttl[w] = max(holder_ttl.get(w, 0), ttl)
    targets = []
    for link in links:
        z = link.peer_id
        if z is None:  # not identified yet: it may need the packet
            targets.append(link)
            continue
        if z in sent_ttl or z in neighbors[sender]:  # rules 1 and 2
            continue
        nz = fresh_neighbors(peers, now, z, max_age)
        if nz is not None and any(  # rule 3
            z in neighbors[t] and not any(rank(w) < rank(t) for w in nz if w not in (t, z))
            for t in pending.heard_peers
        ):
            continue
        if (
            config.relay_deferral
            and nz is not None
            and any(  # rule 4
                holder_ttl.get(w, 0) >= packet.ttl
                and rank(w) < rank(me)
                and defers_like_us(w)
                and z in (fresh_neighbors(peers, now, w, max_age) or ())
                for w in nz
                if w not in (me, z)
            )
        ):
            stats["relay_deferred"] += 1
            continue
        targets.append(link)
    return targets
