"""``ble-bridge simulate``: a whole network on the loopback air, with live progress and a summary.

``--mode mesh`` floods broadcasts between mesh-only nodes. Other modes plug in without
touching this file's logic: a module listed in :data:`MODE_MODULES` calls
:func:`register_mode` at import (runner, extra options such as ``--byzantine``,
``--behaviour``, ``--plot``, and whether it is the default). Every mode shares the options
below and can turn them into a :class:`ScenarioConfig` with :func:`scenario_from_args`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import random
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..air.faults import Crash, FaultPlan, FaultSpecError, Heal, LinkDrop, Partition, parse_faults
from ..air.profiles import DEFAULT_PROFILE, PROFILES
from ..air.topology import TOPOLOGIES
from ..mesh.config import MeshConfig
from ..sim.scenario import Progress, ScenarioConfig, ScenarioResult, simulate

ModeRunner = Callable[[argparse.Namespace], int]
OptionAdder = Callable[[argparse.ArgumentParser], None]
MODES: dict[str, ModeRunner] = {}
MODE_OPTIONS: list[OptionAdder] = []
MODE_MODULES: tuple[str, ...] = ("ble_bridge.commands.simulate_table",)
"""Modules that register extra simulate modes when imported (e.g. the consensus mode)."""
_default_mode = "mesh"
MESH_WARMUP = 10.0


def register_mode(
    name: str, runner: ModeRunner, options: OptionAdder | None = None, *, default: bool = False
) -> None:
    """Add a ``--mode`` choice; ``options`` adds its own arguments to the parser."""
    global _default_mode
    MODES[name] = runner
    if options is not None:
        MODE_OPTIONS.append(options)
    if default:
        _default_mode = name


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for module in MODE_MODULES:
        importlib.import_module(module)
    p = sub.add_parser(
        "simulate",
        help="run a simulated network on the loopback air (virtual time, deterministic by seed)",
        description="Run N nodes on the loopback air with a BLE link profile, faults and a "
        "workload; virtual time, so minutes take seconds. Same seed, same run.",
    )
    p.add_argument(
        "--mode",
        choices=sorted(MODES),
        default=_default_mode,
        help=f"what the nodes run (default {_default_mode})",
    )
    p.add_argument("--nodes", type=int, default=8, help="number of nodes (default 8)")
    p.add_argument("--topology", choices=TOPOLOGIES, default="full", help="layout (default full)")
    p.add_argument("--radio-range", type=float, help="range for --topology random (unit square)")
    p.add_argument(
        "--profile", choices=sorted(PROFILES), default=DEFAULT_PROFILE, help="BLE link model"
    )
    p.add_argument("--duration", type=float, default=60.0, help="simulated seconds (default 60)")
    p.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds before traffic starts (default: mesh 10, consensus 3)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed; same seed, identical run")
    p.add_argument("--rate", type=float, default=0.2, help="broadcasts per node per second")
    p.add_argument("--payload-size", type=int, default=64, help="bytes per broadcast")
    p.add_argument("--ttl", type=int, help="TTL of originated packets (default 7)")
    p.add_argument(
        "--faults",
        default="",
        metavar="SPEC[,SPEC]",
        help="partition@START:HEAL, crash:NODE@T[+RESTART], drop[:NODE]@T, loss:P@START:END, "
        "delay:S@START:END, skew:NODE=S, move",
    )
    p.add_argument(
        "--partition",
        action="append",
        default=[],
        metavar="START:HEAL",
        help="cut the network in two halves from START to HEAL seconds (repeatable)",
    )
    p.add_argument("--crash", type=int, default=0, metavar="N", help="crash N random nodes")
    p.add_argument(
        "--restart-after",
        type=float,
        default=20.0,
        metavar="S",
        help="crashed nodes come back after S seconds (0: never)",
    )
    p.add_argument("--link-drops", type=int, default=0, metavar="N", help="break N random links")
    p.add_argument("--capture", type=Path, metavar="FILE.pcap", help="write every frame to a pcap")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument(
        "--trace",
        type=Path,
        metavar="FILE.jsonl",
        help="write the event trace, one JSON list a line",
    )
    for add_options in MODE_OPTIONS:
        add_options(p)
    p.set_defaults(func=run_simulate)


def run_simulate(args: argparse.Namespace) -> int:
    runner = MODES.get(args.mode)
    if runner is None:
        print(f"ble-bridge simulate: unknown mode {args.mode!r}", file=sys.stderr)
        return 2
    return runner(args)


def scenario_from_args(args: argparse.Namespace) -> ScenarioConfig:
    """The :class:`ScenarioConfig` the common options describe (any mode)."""
    if args.nodes < 1:
        raise ValueError("--nodes must be at least 1")
    if args.duration <= 0:
        raise ValueError("--duration must be positive")
    plan = parse_faults(args.faults)
    for window in args.partition:
        plan = plan + parse_faults(f"partition@{window}")
    rng = random.Random(f"cli-faults/{args.seed}")
    warmup = MESH_WARMUP if args.warmup is None else args.warmup
    lo, hi = warmup, max(warmup, args.duration * 0.8)
    extra: list[Crash | LinkDrop | Partition | Heal] = []
    for node in sorted(rng.sample(range(args.nodes), min(args.crash, args.nodes))):
        restart = args.restart_after if args.restart_after > 0 else None
        extra.append(Crash(round(rng.uniform(lo, hi), 3), node, restart))
    for _ in range(args.link_drops):
        extra.append(LinkDrop(round(rng.uniform(lo, hi), 3)))
    plan = plan + FaultPlan(tuple(extra))
    plan.validate(args.nodes)
    mesh = MeshConfig() if args.ttl is None else MeshConfig(ttl=args.ttl)
    return ScenarioConfig(
        nodes=args.nodes,
        topology=args.topology,
        radio_range=args.radio_range,
        profile=args.profile,
        duration=args.duration,
        warmup=min(warmup, args.duration),
        seed=args.seed,
        faults=plan,
        rate=args.rate,
        payload_size=args.payload_size,
        mesh=mesh,
        capture=args.capture,
        trace=getattr(args, "trace", None) is not None,
    )


def run_mesh(args: argparse.Namespace) -> int:
    try:
        config = scenario_from_args(args)
    except (ValueError, FaultSpecError) as exc:
        print(f"ble-bridge simulate: {exc}", file=sys.stderr)
        return 2
    with live_progress(config.duration, enabled=sys.stdout.isatty() and not args.json) as update:
        result = simulate(config, progress=update)
    if args.trace is not None:
        write_trace(args.trace, result)
    if args.json:
        print(json.dumps(result_json(result), indent=2))
    else:
        print_summary(result)
    return 0 if result.task_errors == 0 and result.handler_errors == 0 else 1


register_mode("mesh", run_mesh)


@contextmanager
def live_progress(duration: float, *, enabled: bool) -> Iterator[Callable[[Progress], None] | None]:
    """A rich progress bar fed by scenario snapshots; nothing when stdout is not a terminal."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    bar = Bar(
        TextColumn("[bold]sim[/] {task.completed:>6.0f}/{task.total:.0f} s"),
        BarColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        transient=True,
    )
    task = bar.add_task("", total=duration)

    def update(p: Progress) -> None:
        bar.update(
            task,
            completed=min(p.sim_time, duration),
            description=f"nodes {p.nodes_up}  links {p.links}  sent {p.sent}  "
            f"delivered {p.delivered}  frames {p.frames}",
        )

    with bar:
        yield update


def print_summary(result: ScenarioResult) -> None:
    c = result.config
    print_rows(
        f"{c.nodes} nodes, {c.topology}, {c.profile}, {c.duration:.0f} s, seed {c.seed}",
        result.summary_rows(),
    )


def print_rows(title: str, rows: Iterable[tuple[str, str]]) -> None:
    """A run's summary as a two-column rich table (metric, value)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)


def write_trace(path: Path, result: ScenarioResult) -> None:
    """The event trace as JSON lines: ``[time, kind, details...]``."""
    with path.open("w", encoding="utf-8") as f:
        for event in result.trace:
            f.write(json.dumps(list(event), default=str) + "\n")


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def result_json(result: ScenarioResult) -> dict[str, object]:
    c = result.config
    return {
        "config": {
            "nodes": c.nodes,
            "topology": c.topology,
            "profile": c.profile,
            "duration": c.duration,
            "seed": c.seed,
            "rate": c.rate,
            "faults": [dataclasses.asdict(f) for f in c.faults.faults],
        },
        "sent": result.sent,
        "expected": result.expected,
        "delivered": result.delivered,
        "delivery_ratio": result.delivery_ratio,
        "duplicates_delivered": result.duplicates_delivered,
        "duplicates_suppressed": result.duplicates_suppressed,
        "tx_per_delivery": _finite(result.tx_per_delivery),
        "latency_p50": _finite(result.latency(0.5)),
        "latency_p95": _finite(result.latency(0.95)),
        "frames": result.frames_total,
        "links_formed": result.links_up,
        "drops": dict(sorted(result.drops.items())),
        "sim_time": result.sim_time,
        "wall_time": result.wall_time,
    }
