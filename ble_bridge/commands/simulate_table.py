"""``ble-bridge simulate --mode consensus`` (the default): handhelds play craps over BFT.

Registers itself with :mod:`ble_bridge.commands.simulate`; the shared options (nodes,
topology, profile, duration, seed, faults, ``--crash``, ``--capture``) build the network,
``--partition START:HEAL`` cuts a minority of f validators off the majority, and
``--byzantine N --behaviour B`` makes N nodes lie. The last line is machine-readable::

    simulate heights=<int> ops=<int> p50_ms=<float> p95_ms=<float> safety=<ok|violated>

and with ``--phones N`` (simulated BitChat phones, ``sim/phone.py``) it gains
``phone_bets=<int> phone_dms=<int>``: phone bets committed, private replies the phones read.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

from ..air.broker import INTERNET_PROFILES
from ..air.faults import FaultSpecError
from ..sim.byzantine import BEHAVIOURS, Behaviour
from ..sim.churn_attacks import CHURN_BEHAVIOURS
from ..sim.islands import IslandsConfig, IslandsResult, IslandsRun, simulate_islands
from ..sim.table import TableConfig, TableResult, plot_latency, simulate_table
from .simulate import live_progress, print_rows, register_mode, scenario_from_args, write_trace

CONSENSUS_WARMUP = 3.0
"""Seconds before the players sit down (links of the default profile form within ~2 s)."""


def add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("consensus mode")
    g.add_argument("--byzantine", type=int, default=0, metavar="N", help="N Byzantine validators")
    g.add_argument(
        "--behaviour",
        choices=BEHAVIOURS + CHURN_BEHAVIOURS,
        default=Behaviour.EQUIVOCATE.value,
        help="what the Byzantine validators do (default equivocate); with --churn also "
        "sponsor (seats keys it controls), forged-join, join-replay, removed-votes",
    )
    g.add_argument(
        "--phones",
        type=int,
        default=0,
        metavar="N",
        help="N simulated BitChat phones on the air: they join and bet through the chat and "
        "send private !balance (last line gains phone_bets= phone_dms=)",
    )
    g.add_argument("--plot", type=Path, metavar="FILE.png", help="plot commit latency over time")
    g.add_argument(
        "--churn",
        action="store_true",
        help="tables formed at runtime: nodes open and join one by one, some leave, crashed "
        "ones are removed, one rejoins (last line adds joins=, leaves=, removals=)",
    )
    u = p.add_argument_group("islands (gateways joined through a simulated MQTT broker)")
    u.add_argument(
        "--islands", type=int, default=1, metavar="N", help="split the nodes into N BLE islands"
    )
    u.add_argument(
        "--split", metavar="A:B[:...]", help="nodes per island (default: --nodes shared evenly)"
    )
    u.add_argument("--gateways", type=int, default=1, metavar="K", help="gateways per island")
    u.add_argument(
        "--broker-outage", metavar="START:END", help="the broker is down from START to END s"
    )
    u.add_argument(
        "--internet",
        choices=sorted(INTERNET_PROFILES),
        default="city",
        help="the gateways' path to the broker (default city)",
    )
    g.add_argument(
        "--store-dir",
        type=Path,
        metavar="DIR",
        help="keep each node's SQLite file here (default: a temporary directory)",
    )


def table_config(args: argparse.Namespace) -> TableConfig:
    windows = list(args.partition)
    ns = argparse.Namespace(**vars(args))
    ns.partition = []  # consensus partitions split minority/majority, not halves
    if ns.warmup is None:
        ns.warmup = CONSENSUS_WARMUP
    scenario = scenario_from_args(ns)
    partition = None
    if windows:
        start, _, heal = windows[0].partition(":")
        partition = (float(start), float(heal))
        if partition[1] <= partition[0]:
            raise ValueError("--partition: HEAL must come after START")
    if not 0 <= args.byzantine <= args.nodes:
        raise ValueError("--byzantine must be within 0..--nodes")
    if args.behaviour in CHURN_BEHAVIOURS:
        raise ValueError(f"--behaviour {args.behaviour} attacks set changes: it needs --churn")
    if not 0 <= args.phones <= 64:
        raise ValueError("--phones must be within 0..64")
    return TableConfig(
        scenario=dataclasses.replace(scenario, drain=min(5.0, scenario.duration / 4)),
        byzantine=args.byzantine,
        behaviour=Behaviour(args.behaviour),
        partition=partition,
        phones=args.phones,
    )


def islands_run(args: argparse.Namespace) -> IslandsRun:
    n = args.islands
    if args.split:
        try:
            sizes = tuple(int(x) for x in args.split.split(":"))
        except ValueError:
            raise ValueError(f"--split {args.split!r}: sizes like 6:2") from None
        if args.islands != 1 and len(sizes) != n:
            raise ValueError("--split names a size for each of --islands")
    else:
        if n < 2:
            raise ValueError("--islands must be at least 2")
        sizes = tuple(args.nodes // n + (1 if i < args.nodes % n else 0) for i in range(n))
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError("islands: at least two, each with a node")
    if not 1 <= args.gateways <= min(sizes):
        raise ValueError("--gateways must be within 1..the smallest island")
    outage = None
    if args.broker_outage:
        a, _, b = args.broker_outage.partition(":")
        outage = (float(a), float(b))
        if outage[1] <= outage[0]:
            raise ValueError("--broker-outage: END must come after START")
    unsupported = {
        "--byzantine": args.byzantine,
        "--phones": args.phones,
        "--partition": args.partition,
        "--crash": args.crash,
        "--capture": args.capture,
        "--plot": args.plot,
    }
    for flag, value in unsupported.items():
        if value:
            raise ValueError(f"{flag} is not supported with --islands yet")
    return IslandsRun(
        islands=IslandsConfig(
            sizes=sizes,
            gateways=args.gateways,
            profile=args.profile,
            seed=args.seed,
            warmup=CONSENSUS_WARMUP,
        ),
        duration=args.duration,
        outage=outage,
        internet=args.internet,
    )


def run_islands(args: argparse.Namespace) -> int:
    try:
        run = islands_run(args)
    except ValueError as exc:
        print(f"ble-bridge simulate: {exc}", file=sys.stderr)
        return 2
    result = simulate_islands(run)
    if args.json:
        print(json.dumps(islands_json(result), indent=2))
    else:
        print_islands_summary(result)
        print(result.last_line())
    return 0 if result.safe else 1


def print_islands_summary(result: IslandsResult) -> None:
    r = result.run
    sizes = "+".join(str(n) for n in r.islands.sizes)
    title = (
        f"craps table on islands {sizes}, {r.islands.gateways} gateway(s) each, "
        f"{r.islands.profile} + {r.internet} uplink, {r.duration:.0f} s, seed {r.islands.seed}"
    )
    rows = [
        ("heights committed", str(result.heights)),
        ("operations committed", str(result.ops)),
        (
            "commit latency p50 / p95",
            f"{result.latency(0.5) * 1000:.1f} / {result.latency(0.95) * 1000:.1f} ms",
        ),
        ("frames up the uplink", str(result.uplink_frames)),
        ("broker messages", str(result.broker_stats["messages"])),
        ("safety", "ok" if result.safe else "violated"),
        ("wall time", f"{result.wall_time:.1f} s"),
    ]
    if r.outage is not None:
        for k in range(len(r.islands.sizes)):
            rows.append(
                (
                    f"island {k}: heights during / after the outage",
                    f"{result.island_gain(k, 'outage', 'heal')} / "
                    f"{result.island_gain(k, 'heal', 'end')}",
                )
            )
    rows += [(f"uplink: {k}", str(v)) for k, v in sorted(result.uplink_stats.items()) if v]
    print_rows(title, rows)


def islands_json(result: IslandsResult) -> dict[str, object]:
    r = result.run
    return {
        "islands": list(r.islands.sizes),
        "gateways": r.islands.gateways,
        "seed": r.islands.seed,
        "duration": r.duration,
        "outage": r.outage,
        "heights": result.heights,
        "ops": result.ops,
        "latency_p50": _finite(result.latency(0.5)),
        "latency_p95": _finite(result.latency(0.95)),
        "safe": result.safe,
        "final_heights": {f"{k}.{i}": h for (k, i), h in result.final_heights.items()},
        "uplink_frames": result.uplink_frames,
        "uplink": dict(sorted(result.uplink_stats.items())),
        "broker": dict(sorted(result.broker_stats.items())),
        "wall_time": result.wall_time,
        "last_line": result.last_line(),
    }


def run_churn_cli(args: argparse.Namespace) -> int:
    from ..sim.churn import choose_byzantine, simulate_churn

    try:
        if args.islands != 1 or args.split:
            raise ValueError(
                "--churn does not combine with --islands: islands play one pre-arranged "
                "table across gateways"
            )
        if args.phones:
            raise ValueError("--churn does not combine with --phones")
        ns = argparse.Namespace(**vars(args))
        if ns.warmup is None:
            ns.warmup = CONSENSUS_WARMUP
        config = scenario_from_args(ns)
        byzantine = choose_byzantine(config.nodes, args.byzantine, args.behaviour, config.seed)
    except (ValueError, FaultSpecError) as exc:
        print(f"ble-bridge simulate: {exc}", file=sys.stderr)
        return 2
    live = sys.stdout.isatty() and not args.json
    with live_progress(config.duration, enabled=live) as update:
        result = simulate_churn(
            config, store_dir=args.store_dir, progress=update, byzantine=byzantine
        )
    if args.json:
        out = {
            "nodes": config.nodes,
            "seed": config.seed,
            "heights": result.heights,
            "ops": result.ops,
            "joins": result.joins,
            "leaves": result.leaves,
            "removals": result.removals,
            "tables": result.tables,
            "seated": result.seated,
            "agreement": result.agreement,
            "byzantine": {str(i): b for i, b in sorted(result.byzantine.items())},
            "attacks": result.attacks,
            "violations": result.reasons(),
            "latency_p50": _finite(result.latency(0.5)),
            "latency_p95": _finite(result.latency(0.95)),
            "events": result.events,
            "wall_time": result.wall_time,
            "last_line": result.last_line(),
        }
        print(json.dumps(out, indent=2))
    else:
        print_rows(
            f"tables at runtime: {config.nodes} nodes, {config.topology}, "
            f"{config.profile}, {config.duration:.0f} s, seed {config.seed}",
            result.summary_rows(),
        )
        print(result.last_line())
    return 0 if result.safe else 1


def run_consensus(args: argparse.Namespace) -> int:
    if args.churn:
        return run_churn_cli(args)
    if args.islands != 1 or args.split:
        return run_islands(args)
    try:
        config = table_config(args)
    except (ValueError, FaultSpecError) as exc:
        print(f"ble-bridge simulate: {exc}", file=sys.stderr)
        return 2
    live = sys.stdout.isatty() and not args.json
    with live_progress(config.scenario.duration, enabled=live) as update:
        result = simulate_table(config, store_dir=args.store_dir, progress=update)
    if args.plot is not None:
        plot_latency(result, args.plot)
    if args.trace is not None:
        write_trace(args.trace, result.scenario)
    if args.json:  # the machine-readable line is the JSON's "last_line" field
        print(json.dumps(result_json(result), indent=2))
    else:
        print_summary(result)
        print(result.last_line())
    r = result.scenario
    return 0 if result.safe and r.task_errors == 0 and r.handler_errors == 0 else 1


def print_summary(result: TableResult) -> None:
    c = result.config.scenario
    print_rows(
        f"craps table: {c.nodes} nodes, {c.topology}, {c.profile}, "
        f"{c.duration:.0f} s, seed {c.seed}",
        result.summary_rows(),
    )


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def result_json(result: TableResult) -> dict[str, object]:
    c = result.config
    return {
        "nodes": c.scenario.nodes,
        "seed": c.scenario.seed,
        "duration": c.scenario.duration,
        "byzantine": {str(i): b.value for i, b in result.byzantine.items()},
        "partition": c.partition,
        "heights": result.heights,
        "ops": result.ops,
        "ops_per_s": result.ops_per_s,
        "latency_p50": _finite(result.latency(0.5)),
        "latency_p95": _finite(result.latency(0.95)),
        "bytes_on_air": result.bytes_on_air,
        "agreement": result.agreement,
        "valid": result.valid,
        "invariants": result.invariants,
        "final_heights": result.final_heights,
        "drops": dict(sorted(result.scenario.drops.items())),
        "bridge_drops": dict(sorted(result.bridge_drops.items())),
        "wall_time": result.scenario.wall_time,
        "last_line": result.last_line(),
    }


register_mode("consensus", run_consensus, add_options, default=True)
