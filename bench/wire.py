"""Wire pipeline cost relative to bare Ed25519, on one core.

pipeline_ratio = (signed ~200-byte consensus frames/s through reassemble + decode + verify +
envelope decompress) / (bare Ed25519 verifies/s of the same preimage bytes).
sign_ratio = (frames/s through build + envelope compress + sign + encode + fragment) /
(bare Ed25519 signs/s of the same preimage bytes).

Both sides are timed in alternating rounds of the same run; the ratios use the best round
of each side (as timeit advises: noise from other processes only ever adds time), and the
median-based ratios are printed too. The frames are split
for a 182-byte link (iOS's usual write/notify size), i.e. two fragments each.

    .venv/bin/python bench/wire.py [--seconds 20]

The last line is exactly ``wire pipeline_ratio=<float> sign_ratio=<float>``.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ble_bridge.wire.envelope import pack, unpack
from ble_bridge.wire.fragment import Reassembler, split
from ble_bridge.wire.identity import Identity
from ble_bridge.wire.packet import Packet, PacketType, decode, encode

LINK_LIMIT = 182
SESSION = hashlib.sha256(b"bench-session").digest()[:8]


def consensus_body(i: int) -> bytes:
    """A vote-sized consensus body (~110 bytes): ids, height, round, block hash, signature."""
    block = hashlib.sha256(i.to_bytes(8, "big")).digest()
    sig = hashlib.sha512(block).digest()
    return b"\x01" + SESSION + b"\x03" + i.to_bytes(8, "big") + b"\x00\x00\x00\x01" + block + sig


def build_frames(ident: Identity, n: int) -> list[tuple[bytes, list[bytes]]]:
    out = []
    for i in range(n):
        p = Packet(
            type=PacketType.CONSENSUS,
            sender=ident.peer_id,
            payload=pack(consensus_body(i)),
            timestamp=1_700_000_000_000 + i,
        ).signed(ident)
        frame = encode(p)
        out.append((frame, split(frame, p, LINK_LIMIT, os.urandom(8))))
    return out


def per_op(fn: Callable[[int], None], n: int) -> float:
    gc.disable()
    try:
        t0 = time.perf_counter()
        fn(n)
        return (time.perf_counter() - t0) / n
    finally:
        gc.enable()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=20.0, help="approximate total run time")
    args = ap.parse_args()

    ident = Identity.from_seed(b"bench")
    pub_raw = ident.signing_public
    pub = Ed25519PublicKey.from_public_bytes(pub_raw)
    priv = ident.signing_private
    n = 400
    frames = build_frames(ident, n)
    sample = decode(frames[0][0])
    preimages = [decode(f).signing_bytes() for f, _ in frames]
    signatures = [decode(f).signature or b"" for f, _ in frames]
    bodies = [consensus_body(i) for i in range(n)]
    fids = [os.urandom(8) for _ in range(n)]
    assert all(len(frags) == 2 for _, frags in frames), "frames must need two fragments"

    def receive(count: int) -> None:
        r = Reassembler()
        for i in range(count):
            _, frags = frames[i % n]
            got = None
            for f in frags:
                got = r.feed(0.0, decode(f)) or got
            assert got is not None
            p = decode(got)
            if not p.verify(pub_raw):
                raise AssertionError("signature did not verify")
            unpack(p.payload)

    def bare_verify(count: int) -> None:
        for i in range(count):
            j = i % n
            pub.verify(signatures[j], preimages[j])

    def send(count: int) -> None:
        sender = ident.peer_id
        for i in range(count):
            j = i % n
            p = Packet(
                type=PacketType.CONSENSUS,
                sender=sender,
                payload=pack(bodies[j]),
                timestamp=1_700_000_000_000 + j,
            ).signed(ident)
            split(encode(p), p, LINK_LIMIT, fids[j])

    def bare_sign(count: int) -> None:
        for i in range(count):
            priv.sign(preimages[i % n])

    # Sanity: the pipeline really produces what the receiver expects.
    receive(n)
    print(
        f"frame {len(frames[0][0])} bytes, preimage {len(preimages[0])} bytes, "
        f"2 fragments of <= {LINK_LIMIT} bytes; type 0x{sample.type:02x}"
    )

    batch = 300
    rounds: dict[str, list[float]] = {"receive": [], "verify": [], "send": [], "sign": []}
    fns = {"receive": receive, "verify": bare_verify, "send": send, "sign": bare_sign}
    deadline = time.perf_counter() + args.seconds
    while time.perf_counter() < deadline or len(rounds["receive"]) < 5:
        for name, fn in fns.items():
            rounds[name].append(per_op(fn, batch))
    best = {k: min(v) for k, v in rounds.items()}
    med = {k: statistics.median(v) for k, v in rounds.items()}
    for k in rounds:
        print(
            f"{k:8s} best {best[k] * 1e6:7.1f} us/op ({1 / best[k]:7.0f} op/s)  "
            f"median {med[k] * 1e6:7.1f} us/op  ({len(rounds[k])} rounds)"
        )
    print(
        f"median-based: pipeline_ratio={med['verify'] / med['receive']:.3f} "
        f"sign_ratio={med['sign'] / med['send']:.3f}"
    )
    # Best round of each side (timeit's advice): what the code costs when the shared
    # machine leaves it alone.
    pipeline_ratio = best["verify"] / best["receive"]
    sign_ratio = best["sign"] / best["send"]
    print(f"wire pipeline_ratio={pipeline_ratio:.3f} sign_ratio={sign_ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
