"""Gossip choice as pure functions over a hand-made MeshView (no mesh, no event loop)."""

from __future__ import annotations

from ble_bridge.bridge.policy import MeshView, floods, plan
from ble_bridge.wire.messages import StateAnnounce, Step, Vote

ME = b"me-peer!"
# peer id -> signing key; the chain ME - A - B - C, and D linked to nobody
PEERS = {b"A" * 8: b"ka", b"B" * 8: b"kb", b"C" * 8: b"kc", b"D" * 8: b"kd"}
A, B, C, D = PEERS
KEY = b"kme"


def view(linked: set[bytes], graph: dict[bytes, set[bytes]]) -> MeshView:
    full = {p: frozenset(graph.get(p, set())) for p in PEERS}
    return MeshView(ME, PEERS, frozenset(linked), full)


CHAIN = {A: {ME, B}, B: {A, C}, C: {B}}


def test_no_validator_neighbour_floods() -> None:
    p = plan(view(set(), CHAIN), {KEY, b"ka"}, KEY, (), in_contact=2, max_neighbours=8)
    assert p.neighbours == [] and p.flood_own


def test_validators_reached_over_validator_links_are_gossiped_to() -> None:
    validators = {KEY, b"ka", b"kb", b"kc"}
    p = plan(view({A}, CHAIN), validators, KEY, (), in_contact=4, max_neighbours=8)
    assert p.neighbours == [A] and not p.flood_own
    assert p.graph[ME] == {A} and p.graph[B] == {A, C}
    assert p.peer_of == {b"ka": A, b"kb": B, b"kc": C}


def test_a_validator_beyond_the_validator_graph_makes_us_flood() -> None:
    validators = {KEY, b"ka", b"kb", b"kc", b"kd"}  # D announced no link to any of us
    p = plan(view({A}, CHAIN), validators, KEY, (), in_contact=5, max_neighbours=8)
    assert p.flood_own


def test_a_banned_validator_relays_nothing_so_those_behind_it_need_a_flood() -> None:
    validators = {KEY, b"ka", b"kb", b"kc"}
    p = plan(view({A}, CHAIN), validators, KEY, {b"kb"}, in_contact=4, max_neighbours=8)
    assert p.leaves == {B} and p.flood_own  # C is only reachable through B
    p = plan(view({A}, CHAIN), validators, KEY, {b"kc"}, in_contact=4, max_neighbours=8)
    assert p.leaves == {C} and not p.flood_own  # a leaf at the end still gets it


def test_a_validator_out_of_contact_makes_us_flood() -> None:
    validators = {KEY, b"ka", b"kb", b"kc"}
    p = plan(view({A}, CHAIN), validators, KEY, (), in_contact=3, max_neighbours=8)
    assert p.flood_own


def test_non_validators_are_never_neighbours() -> None:
    validators = {KEY, b"kb"}
    p = plan(view({A, B}, CHAIN), validators, KEY, (), in_contact=2, max_neighbours=8)
    assert p.neighbours == [B] and set(p.graph) == {ME, B}


def test_later_rounds_and_unsigned_messages_flood() -> None:
    def vote(rnd: int) -> Vote:
        return Vote(Step.PREVOTE, 1, rnd, bytes(32), b"k" * 32, b"s" * 64)

    assert not floods(True, False, vote(0))
    assert floods(True, False, vote(1))
    assert floods(True, True, vote(0))  # flood_own
    assert floods(False, False, vote(0))  # gossip off
    assert floods(True, False, StateAnnounce(1, bytes(32), bytes(32)))
