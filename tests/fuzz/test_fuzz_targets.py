"""Run every fuzz target on a small corpus without atheris, so CI exercises them."""

from __future__ import annotations

import random

import pytest
from fuzz_targets import TARGETS, seeds


def corpus(name: str, n: int = 1500) -> list[bytes]:
    """Seeds, random bytes, and seeds with random bytes flipped, cut or extended."""
    rnd = random.Random(f"wire-fuzz-{name}")
    base = seeds(name)
    out = list(base)
    for _ in range(n):
        kind = rnd.random()
        if kind < 0.3:
            out.append(rnd.randbytes(rnd.randrange(0, 300)))
            continue
        data = bytearray(rnd.choice(base))
        for _ in range(rnd.randrange(1, 4)):
            if data and kind < 0.7:
                data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
            elif data and kind < 0.85:
                del data[rnd.randrange(len(data)) :]
            else:
                data += rnd.randbytes(rnd.randrange(1, 20))
        out.append(bytes(data))
    return out


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target_survives_a_random_corpus(name: str) -> None:
    target = TARGETS[name]
    for data in corpus(name):
        target(data)
