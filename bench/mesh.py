"""Mesh flood cost and simulator speed on the loopback air (pi-tuned profile).

Runs an 8-node full mesh and a 50-node random geometric network flooding broadcasts, and
prints frames transmitted per broadcast delivered to one node next to the naive-flood
baseline on the same link graph of the same run (every node forwards each new packet on
every link but the ingress one). sim_speed is simulated seconds per wall second of the
8-node run. Last line: ``mesh tx_per_delivery=<50-node> sim_speed=<8-node> nodes=50``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ble_bridge.sim.scenario import ScenarioConfig, ScenarioResult, simulate


def run(nodes: int, topology: str, duration: float, rate: float, seed: int) -> ScenarioResult:
    config = ScenarioConfig(
        nodes=nodes,
        topology=topology,
        profile="pi-tuned",
        duration=duration,
        warmup=15.0,
        seed=seed,
        rate=rate,
        trace=False,
    )
    return simulate(config)


def report(name: str, r: ScenarioResult) -> None:
    naive = r.naive_flood_tx
    print(
        f"{name}: delivered {r.delivered}/{r.expected} ({r.delivery_ratio:.1%}), "
        f"tx/delivery {r.tx_per_delivery:.3f} vs naive flood {naive:.3f} "
        f"(ratio {r.tx_per_delivery / naive:.2f}), p50 {r.latency(0.5) * 1000:.0f} ms, "
        f"p95 {r.latency(0.95) * 1000:.0f} ms, {r.sim_time:.0f} sim s in {r.wall_time:.2f} s "
        f"({r.sim_speed:.1f}x)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--duration-8", type=float, default=300.0)
    ap.add_argument("--duration-50", type=float, default=120.0)
    args = ap.parse_args()
    wall = time.perf_counter()
    small = run(8, "full", args.duration_8, 1.0, args.seed)
    report("8-node full, 1 broadcast/node/s", small)
    big = run(50, "random", args.duration_50, 0.02, args.seed)
    report("50-node random geometric, 1 broadcast/s", big)
    print(f"total wall time {time.perf_counter() - wall:.1f} s")
    print(
        f"mesh tx_per_delivery={big.tx_per_delivery:.3f} sim_speed={small.sim_speed:.1f} nodes=50"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
