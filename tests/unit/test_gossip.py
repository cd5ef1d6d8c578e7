"""Neighbour gossip (ble_bridge.gossip): who gets which message, trees, bounds."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from ble_bridge.gossip import Gossip, GossipConfig, gossip_trees, pack, tree_children

A, B, C, D = b"A" * 8, b"B" * 8, b"C" * 8, b"D" * 8


def sent(g: Gossip, peer: bytes) -> list[bytes]:
    return [it.key for it in g.take(peer)]


def test_offer_skips_the_source_and_whoever_has_it() -> None:
    g = Gossip()
    g.set_neighbours([A, B, C])
    g.heard(C, b"k1")
    assert g.offer(b"k1", b"data", 1, source=A) == 1  # not back to A, C has it
    assert sent(g, B) == [b"k1"]
    assert sent(g, A) == [] and sent(g, C) == []
    assert g.offer(b"k1", b"data", 1) == 0  # B has it now (we sent it)


def test_resend_goes_again_only_where_delivery_was_not_certain() -> None:
    g = Gossip()
    g.set_neighbours([A, B])
    g.offer(b"own", b"x", 1)
    assert sorted([*sent(g, A), *sent(g, B)]) == [b"own", b"own"]
    g.heard(A, b"own")  # A echoed it: A certainly has it
    assert g.offer(b"own", b"x", 1, again=True) == 1
    assert sent(g, B) == [b"own"] and sent(g, A) == []


def test_a_new_neighbour_gets_recent_items_and_old_heights_are_forgotten() -> None:
    g = Gossip()
    g.set_neighbours([A])
    g.offer(b"vote-h1", b"v", 1)
    g.offer(b"op", b"o", None)
    g.offer(b"vote-h2", b"v", 2)
    g.forget_below(2)
    assert g.set_neighbours([A, B]) == [B]
    assert sorted(sent(g, B)) == [b"op", b"vote-h2"]
    assert set(sent(g, A)) == {b"op", b"vote-h2"}  # its queued h1 vote was dropped


def test_a_gone_neighbour_is_forgotten() -> None:
    g = Gossip()
    g.set_neighbours([A, B])
    g.offer(b"k", b"x", 1)
    g.set_neighbours([B])
    assert g.neighbours == [B]
    assert g.waiting() == [B]


def test_messages_follow_their_authors_tree() -> None:
    # line A - B - C - D plus the chord A - C: from A, D hangs below C
    graph = {A: {B, C}, B: {A, C}, C: {A, B, D}, D: {C}}
    g = Gossip()
    g.set_graph(C, graph)
    g.set_neighbours([A, B, D])
    assert g.children(A) == {D}
    assert g.offer(b"from-A", b"x", 1, source=A, origin=A) == 1
    assert sent(g, D) == [b"from-A"] and sent(g, B) == []
    assert g.children(b"Z" * 8) is None  # unknown author: every neighbour
    assert g.offer(b"from-Z", b"x", 1, origin=b"Z" * 8) == 3


def test_due_is_the_most_pressing_item() -> None:
    g = Gossip()
    g.set_neighbours([A])
    assert g.due(A) is None
    g.offer(b"op", b"o", None, due=5.0)
    g.offer(b"vote", b"v", 1, due=2.0)
    assert g.due(A) == 2.0
    assert [it.key for it in g.take(A)] == [b"op", b"vote"]  # same priority: queue order


def test_every_structure_is_bounded() -> None:
    cfg = GossipConfig(max_neighbours=2, max_known=8, max_queue=4, max_recent=5)
    g = Gossip(cfg)
    assert g.set_neighbours([A, B, C]) == [A, B]
    for i in range(50):
        g.offer(i.to_bytes(4, "big"), b"x", 1)
        g.heard(A, (1000 + i).to_bytes(4, "big"))
    assert len(g.take(B)) == 4
    assert g.stats["queue_overflow"] > 0
    assert len(g._recent) == 5
    assert all(len(nb.known) <= 8 for nb in g._neighbours.values())


graphs = st.integers(2, 14).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=3 * n),
        st.integers(0, n - 1),
        st.randoms(use_true_random=False),
    )
)


@settings(max_examples=200)
@given(graphs)
def test_tree_reaches_every_connected_node_exactly_once(
    case: tuple[int, list[tuple[int, int]], int, random.Random],
) -> None:
    n, extra, origin, rnd = case
    ids = [bytes([i]) * 8 for i in range(n)]
    edges = {(i, i + 1) for i in range(n - 1)} | {(a, b) for a, b in extra if a != b}
    graph: dict[bytes, set[bytes]] = {x: set() for x in ids}
    for a, b in edges:
        graph[ids[a]].add(ids[b])
        graph[ids[b]].add(ids[a])
    # every node computes its own children; a message then reaches each node once
    received = {ids[origin]: 1}
    frontier = [ids[origin]]
    while frontier:
        u = frontier.pop(rnd.randrange(len(frontier)))
        for v in tree_children(graph, ids[origin], u):
            assert v in graph[u]
            received[v] = received.get(v, 0) + 1
            frontier.append(v)
    assert received == dict.fromkeys(ids, 1)


@given(st.lists(st.binary(min_size=1, max_size=300), max_size=40), st.integers(50, 2000))
def test_pack_keeps_order_and_the_size_limit(items: list[bytes], limit: int) -> None:
    batches = pack(items, limit)
    assert [x for b in batches for x in b] == items
    for b in batches:
        assert b
        assert len(b) == 1 or sum(len(x) + 2 for x in b) <= limit


def test_a_flooded_own_message_reaches_neighbours_that_appear_later() -> None:
    g = Gossip()
    g.set_neighbours([A])
    g.offer(b"queued", b"q", 1)
    g.flooded(b"queued", b"q", 1)  # the flood covered A: no second copy from gossip
    g.flooded(b"own", b"x", 1)
    assert sent(g, A) == []
    assert g.set_neighbours([A, B]) == [B]
    assert sorted(sent(g, B)) == [b"own", b"queued"]


def test_trees_spread_relaying_over_the_nodes_that_could_relay() -> None:
    # six leaves, each linked to both hubs: every leaf-to-leaf message needs a hub
    hubs = [b"\x00" * 8, b"\x01" * 8]
    leaves = [bytes([0x10 + i]) * 8 for i in range(6)]
    graph = {h: set(leaves) for h in hubs} | {leaf: set(hubs) for leaf in leaves}
    relayed = {h: 0 for h in hubs}
    for origin, parent in gossip_trees(graph).items():
        assert set(parent) == set(graph)  # every tree spans the graph
        for node, p in parent.items():
            if node != origin and p in relayed:
                relayed[p] += 1
    # byte order alone would make hub 0 relay everything (4 x 6 leaf messages + ...)
    assert abs(relayed[hubs[0]] - relayed[hubs[1]]) <= 2
    # the same graph gives the same trees, whatever the set order
    shuffled = {k: set(sorted(v, reverse=True)) for k, v in reversed(list(graph.items()))}
    assert gossip_trees(shuffled) == gossip_trees(graph)


def test_a_graph_change_reoffers_recent_items_to_new_children() -> None:
    me, b, c, x = (bytes([i]) * 8 for i in (1, 2, 3, 9))
    g = Gossip()
    g.set_neighbours([b, c])
    # x - b, b - me, b - c, me - c: x's messages reach c from b, not from us
    g.set_graph(me, {me: {b, c}, b: {x, me, c}, c: {me, b}})
    assert g.offer(b"k", b"data", 1, b, origin=x) == 0
    # b loses its link to c: c now hears x through us, and we already had the message
    g.set_graph(me, {me: {b, c}, b: {x, me}, c: {me}})
    assert [it.key for it in g.take(c)] == [b"k"]
    assert g.take(b) == []  # b sent it to us
    assert g.stats["reoffered"] == 1
    g.set_graph(me, {me: {b, c}, b: {x, me, c}, c: {me, b}})
    assert g.take(c) == []  # c probably has it now: no second copy on the next change


def test_urgency_is_the_most_pressing_queued_priority() -> None:
    g = Gossip()
    peer = b"\x02" * 8
    g.set_neighbours([peer])
    assert g.urgency(peer) is None
    g.offer(b"op", b"o", None, priority=2)
    assert g.urgency(peer) == 2
    g.offer(b"vote", b"v", 1, priority=0)
    assert g.urgency(peer) == 0


def test_forgotten_items_are_neither_queued_nor_given_to_new_neighbours() -> None:
    g = Gossip()
    a, b = b"\x02" * 8, b"\x03" * 8
    g.set_neighbours([a])
    g.offer(b"op1", b"1", None, meta="committed")
    g.offer(b"op2", b"2", None, meta="pending")
    g.forget(lambda item: item.meta == "committed")
    assert [it.key for it in g.take(a)] == [b"op2"]
    g.set_neighbours([a, b])  # b appears: it gets what is still of use
    assert [it.key for it in g.take(b)] == [b"op2"]


@settings(max_examples=200)
@given(graphs, st.sets(st.integers(0, 11), max_size=3))
def test_leaves_receive_but_relay_only_their_own(
    case: tuple[int, list[tuple[int, int]], int, random.Random], leaf_idx: set[int]
) -> None:
    n, extra, origin, _ = case
    ids = [bytes([i]) * 8 for i in range(n)]
    leaves = {ids[i] for i in leaf_idx if i < n}
    graph: dict[bytes, set[bytes]] = {x: set() for x in ids}
    for a, b in {(i, i + 1) for i in range(n - 1)} | set(extra):
        if a != b:
            graph[ids[a]].add(ids[b])
            graph[ids[b]].add(ids[a])
    parent = gossip_trees(graph, leaves)[ids[origin]]
    for node, p in parent.items():
        if node != ids[origin]:
            assert p not in leaves or p == ids[origin]  # no leaf relays another's message
            assert p in graph[node]
    # every node one step from the relays (or the author) gets it: leaves too
    relays = {ids[origin]} | {x for x in parent if x not in leaves}
    for x in ids:
        if any(r in graph[x] for r in relays if r in parent):
            assert x in parent
