"""A 10,000-frame junk flood into one router: every structure stays bounded, every frame counted."""

from __future__ import annotations

import random

from test_mesh_router import WALL, A, B, announce, frames_explained, message

from ble_bridge.mesh.config import MeshConfig
from ble_bridge.mesh.router import DROP_REASONS, Router
from ble_bridge.transport import LinkInfo, LinkRole
from ble_bridge.wire.fragment import FragmentPayload, ReassemblyLimits
from ble_bridge.wire.identity import Identity
from ble_bridge.wire.packet import Packet, PacketType, encode

CONFIG = MeshConfig(
    seen_capacity=64,
    max_pending_relays=16,
    max_events=32,
    max_outbound_frames=64,
    max_peers=32,
    clock_samples=16,
    inbound_rate=1500.0,
    inbound_burst=50.0,
    reassembly=ReassemblyLimits(
        max_sets=8, max_sets_per_sender=2, max_set_bytes=8192, max_total_bytes=16384
    ),
)


def junk(rng: random.Random, now: float, replay: list[bytes]) -> bytes:
    kind = rng.randrange(8)
    ts = int((WALL + now) * 1000)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 300))
    if kind == 1:  # plausible header, random rest
        return bytes([1, rng.randrange(256), 7]) + ts.to_bytes(8, "big") + rng.randbytes(60)
    if kind == 2:  # fragments of sets that never complete
        frag = FragmentPayload(
            rng.randbytes(8), rng.randrange(200), 200, PacketType.MESSAGE, rng.randbytes(150)
        )
        return encode(Packet(PacketType.FRAGMENT, rng.randbytes(8), frag.encode(), ts))
    if kind == 3:  # genuine, distinct messages from a known neighbour
        frame = encode(message(A, now, rng.randbytes(20)))
        replay.append(frame)
        del replay[:-50]
        return frame
    if kind == 4 and replay:
        return rng.choice(replay)
    if kind == 5:  # announces of ever new identities
        return announce(Identity.from_seed(rng.randbytes(8)), now)
    if kind == 6:  # stale but well signed
        return encode(message(B, now, rng.randbytes(8), timestamp=ts - 3_600_000))
    bad = bytearray(encode(message(A, now, rng.randbytes(30))))  # corrupted signature
    bad[-1] ^= 1
    return bytes(bad)


def assert_bounded(r: Router) -> None:
    cfg = r.config
    assert len(r.seen) <= cfg.seen_capacity
    assert r.pending_relays <= cfg.max_pending_relays
    assert len(r._relay_heap) <= 2 * cfg.max_pending_relays + 1
    assert r.outbound_frames <= cfg.max_outbound_frames
    assert r.pending_events <= cfg.max_events
    assert len(r.peers) <= cfg.max_peers
    assert len(r.clock) <= cfg.clock_samples
    for link in r.peers.links.values():
        assert len(link.reassembler) <= cfg.reassembly.max_sets
        assert link.reassembler.buffered_bytes <= cfg.reassembly.max_total_bytes


def test_junk_flood_leaves_every_cache_and_queue_within_its_limit() -> None:
    rng = random.Random(2026)
    r = Router(Identity.from_seed(b"flooded"), CONFIG, random.Random(0), WALL)
    r.link_up(0.0, LinkInfo(1, "attacker", 247, LinkRole.CENTRAL))
    r.link_up(0.0, LinkInfo(2, "friend", 247, LinkRole.PERIPHERAL))
    r.receive(0.0, 2, announce(A, 0.0))
    r.receive(0.0, 2, announce(B, 0.0))
    replay: list[bytes] = []
    now = 0.0
    for i in range(10_000):
        now += 0.0005
        while (t := r.next_timer()) is not None and t <= now:
            r.handle_timer(t)
        r.receive(now, 1, junk(rng, now, replay))  # never drained: queues must hold
        if i % 500 == 0:
            assert_bounded(r)
    assert_bounded(r)
    s = r.stats
    assert s["frames_in"] == 10_002
    assert frames_explained(r)
    for reason in ("rate_limited", "malformed", "duplicate", "stale", "bad_signature"):
        assert s[reason] > 0, reason
    assert s["fragment_buffered"] > 0 and s["fragment_evicted"] > 0
    assert s["event_overflow"] > 0 and s["outbound_full"] > 0
    assert set(k for k in s if s[k] and k in DROP_REASONS) <= DROP_REASONS
    assert s["internal_error"] == 0
