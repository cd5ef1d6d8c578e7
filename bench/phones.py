"""Noise XX responder handshakes through a node's real receive path, against bare X25519.

handshake_ratio = (responder handshakes per CPU second: XX message 1 and message 3 as padded
unsigned frames into ``Router.receive`` → delivery → ``PhoneChat`` → ``NoiseSessions`` → message
2 sent back through ``Router.send``) / (a quarter of bare X25519 operations per CPU second in
the responder's mix, one key generated and three DH, measured in the same run: a responder
does four, its ephemeral key and ee, es, se). Goal >= 0.5. The two sides are timed in
alternating blocks of 20 handshakes and 80 X25519 operations with ``time.process_time`` (one
process, one core), so load from other processes on the shared machine, which swung the
wall-clock ratio from 0.29 to 0.78, moves both sides alike. The initiator side (the phones)
is prepared and read outside the timed blocks. Handshake rate limits (10/min per peer, 30/min
overall) and the per-link inbound frame bucket are raised here: they are policy, not cost.
Several rounds (each with a fresh node); median and worst.

chat_cmd_ratio = p50 simulated time from a simulated phone's public ``!bet`` to the first
public line confirming it committed (the submitting node's ``phoneN: bet 1 field in at T``,
or the table's ``[T] phoneN bets 1 field``),
on an 8-node pi-tuned table with 2 phones (``ble-bridge simulate --phones 2``), / the
protocol minimum: the three message delays bench/consensus.py uses (one-hop delay x
diameter, the diameter taken as 1 here: a lower minimum, so a higher ratio) plus one hop
phone -> node and one hop node -> phone. Several seeds; median and worst. The node's reply
leaves at its next tables tick (0.5 s) after the commit; that is in the ratio: it is what a
person at the phone waits.

Where the responder's time goes (py-spy of the timed blocks, 2026-12-07, 4th sitting): X25519
about 45 %; the rest is HMAC-SHA256 (12 per handshake, Noise's HKDF), SHA-256 (MixHash), the
AEAD objects, frame decode/encode and dedup, the session bookkeeping. Removed: HKDF's HMAC
through OpenSSL's one-shot HMAC, which sets up a MAC context per call (now written out over
SHA-256: 0.39 -> 0.46), the static public key derived anew for each handshake, the remote
ephemeral key parsed once per DH, the empty prologue hashed per handshake.

    .venv/bin/python bench/phones.py [--rounds 5] [--handshakes 400] [--only chat|handshake]

The last line is exactly ``phones chat_cmd_ratio=<float> handshake_ratio=<float>``.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from ble_bridge.chat.phone import PhoneChat, PhoneConfig, pump
from ble_bridge.mesh.config import MeshConfig
from ble_bridge.mesh.router import Router
from ble_bridge.noise.protocol import HandshakeXX
from ble_bridge.noise.session import NoiseConfig, peer_id_of
from ble_bridge.transport import LinkInfo, LinkRole
from ble_bridge.wire.identity import Identity
from ble_bridge.wire.packet import pad

WALL = 1_790_000_000.0


def frame(ptype: int, sender: bytes, to: bytes, payload: bytes, ts: int) -> bytes:
    head = struct.pack(">BBBQBH", 1, ptype, 7, ts, 0x01, len(payload))
    return pad(head + sender + to + payload)


def _x25519_block(k: int, keys: list[X25519PublicKey]) -> float:
    """CPU seconds of the responder's X25519 mix, k times: one key generated, three DH."""
    priv = X25519PrivateKey.generate()
    t = time.process_time()
    for i in range(k):
        X25519PrivateKey.generate()
        priv.exchange(keys[i % 8])
        priv.exchange(keys[(i + 3) % 8])
        priv.exchange(keys[(i + 5) % 8])
    return time.process_time() - t


def handshake_round(n: int, block: int = 20) -> tuple[float, float]:
    """One round: (responder handshakes per CPU second, bare X25519 ops per CPU second).

    Both are timed in alternating blocks of ``block`` handshakes and ``4 * block`` X25519
    operations, so a change of the machine's load or clock touches both sides alike."""
    keys = [X25519PrivateKey.generate().public_key() for _ in range(8)]
    ident = Identity.generate()
    cfg = PhoneConfig(
        noise=NoiseConfig(
            handshakes_per_minute=10**9,
            handshakes_per_minute_per_peer=10**9,
            max_sessions=n + 1,
            max_half_open=n + 1,
        )
    )
    mesh = MeshConfig(seen_capacity=4 * n + 64, inbound_rate=1e9, inbound_burst=1e9)
    router = Router(ident, mesh, random.Random(1), WALL)
    router.link_up(0.0, LinkInfo(1, "phones", 517, LinkRole.PERIPHERAL))
    chat = PhoneChat(ident, list, router.peers.get, cfg)
    me = ident.peer_id
    now = 0.001
    ts = int(WALL * 1000) + 1
    t_hs = t_x = 0.0
    done = 0
    while done < n:
        k = min(block, n - done)
        t_x += _x25519_block(k, keys)
        # the phones' side (initiator) is prepared and read outside the timed parts
        phones = []
        for _ in range(k):
            hs = HandshakeXX(True, X25519PrivateKey.generate())
            phones.append(
                (peer_id_of(hs.s_pub), hs, frame(0x10, peer_id_of(hs.s_pub), me, hs.write(), ts))
            )
            ts += 1
        replies = []
        t = time.process_time()
        for _pid, _hs, m1 in phones:
            router.receive(now, 1, m1)
            pump(router, chat, now)
            replies.append(router.frames_to_send())
        t_hs += time.process_time() - t
        m3s = []
        for (pid, hs, _), out in zip(phones, replies, strict=True):
            assert out, dict(router.stats)
            (_, f) = out[-1]
            payload_len = struct.unpack_from(">H", f, 12)[0]
            hs.read(f[14 + 16 : 14 + 16 + payload_len])
            m3s.append(frame(0x10, pid, me, hs.write(), ts))
            ts += 1
        t = time.process_time()
        for m3 in m3s:
            router.receive(now, 1, m3)
            pump(router, chat, now)
            router.frames_to_send()
        t_hs += time.process_time() - t
        done += k
    assert chat.noise.stats["sessions_established"] == n, dict(chat.noise.stats)
    return n / t_hs, 4 * n / t_x


def chat_cmd(seed: int, duration: float) -> tuple[float, int, float]:
    """(p50 !bet -> line seconds, samples, protocol minimum seconds) of one seeded run."""
    from consensus import one_hop_delay  # bench/consensus.py

    from ble_bridge.sim.scenario import ScenarioConfig
    from ble_bridge.sim.table import TableConfig, simulate_table, table_session_id

    sc = ScenarioConfig(nodes=8, duration=duration, warmup=3.0, drain=5.0, trace=False, seed=seed)
    r = simulate_table(TableConfig(scenario=sc, phones=2))
    hop = one_hop_delay(sc.profile, table_session_id(seed))  # its vote frames' size
    minimum = 3 * hop + 2 * hop
    lat = r.phone_latencies
    return (statistics.median(lat) if lat else float("nan")), len(lat), minimum


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--handshakes", type=int, default=400, help="handshakes per round")
    ap.add_argument("--only", choices=("chat", "handshake"), help="run one part only")
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the chat_cmd runs")
    ap.add_argument("--duration", type=float, default=60.0, help="simulated s per chat run")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    chat_ratios: list[float] = []
    for seed in range(1, args.seeds + 1 if args.only != "handshake" else 1):
        p50, n, minimum = chat_cmd(seed, args.duration)
        chat_ratios.append(p50 / minimum)
        print(
            f"chat seed {seed}: !bet -> committed reply p50 {p50 * 1000:.0f} ms over {n} bets, "
            f"minimum {minimum * 1000:.1f} ms (5 hops), ratio {p50 / minimum:.2f}"
        )
    valid = [x for x in chat_ratios if not math.isnan(x)]
    chat_median = statistics.median(valid) if valid else float("nan")
    chat_worst = max(valid) if valid else float("nan")
    print(f"chat_cmd_ratio median={chat_median:.2f} worst={chat_worst:.2f} (goal <= 2.0)")
    ratios: list[float] = []
    for r in range(args.rounds if args.only != "chat" else 0):
        hs_rate, x_rate = handshake_round(args.handshakes)
        ratios.append(hs_rate / (x_rate / 4))
        print(
            f"round {r}: responder handshakes/s={hs_rate:.0f} "
            f"x25519 ops/s={x_rate:.0f} ratio={ratios[-1]:.3f}"
        )
    median = statistics.median(ratios) if ratios else float("nan")
    worst = min(ratios) if ratios else float("nan")
    print(f"handshake_ratio median={median:.3f} worst={worst:.3f} (goal >= 0.5)")
    print(f"phones chat_cmd_ratio={chat_median:.3f} handshake_ratio={median:.3f}")


if __name__ == "__main__":
    main()
