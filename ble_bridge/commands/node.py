"""``ble-bridge run|status|peers|submit``: the node service and its local control API."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..errors import ExitCode, StartupError, StorageFailure
from ..wire.identity import KeyFileError

DEFAULT_CONFIG = Path("/etc/ble-bridge/config.toml")
DEFAULT_SOCKET = Path("/run/ble-bridge/control.sock")
log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run a node on BlueZ (the systemd service runs this)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="TOML config file")
    p.add_argument(
        "--transport",
        choices=("ble", "sim"),
        default=None,
        help="ble: BlueZ (default); sim: a loopback air on the wall clock with simulated "
        "neighbours (overrides [node] transport)",
    )
    p.add_argument(
        "--sim-peers",
        type=int,
        default=None,
        metavar="N",
        help="simulated neighbours with --transport sim (default: [node] sim_peers, 3)",
    )
    p.set_defaults(func=cmd_run, default_log_level=logging.INFO)

    for name, helptext, func in (
        ("status", "a running node's health, sessions and counters", cmd_status),
        ("peers", "a running node's neighbour table", cmd_peers),
    ):
        q = sub.add_parser(name, help=helptext)
        q.add_argument("--socket", type=Path, default=DEFAULT_SOCKET, help="control socket")
        q.add_argument("--json", action="store_true", help="print raw JSON")
        q.set_defaults(func=func)

    s = sub.add_parser("submit", help="submit an operation to a session of a running node")
    s.add_argument("session", help="session name (or id hex) from the config")
    s.add_argument("op", help="the operation, hex-encoded (e.g. craps Join is 01)")
    s.add_argument("--socket", type=Path, default=DEFAULT_SOCKET, help="control socket")
    s.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the commit")
    s.set_defaults(func=cmd_submit)


def _install_loop_policy() -> None:
    """uvloop on Linux when installed: less CPU per D-Bus message on a Pi."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _serve(config_path: Path, transport: str | None, sim_peers: int | None) -> int:
    from hardware import NodeHealth

    from ..daemon import serve_until_signalled, status_line
    from ..node import Node, load_node_config

    config = load_node_config(config_path)
    kind = transport or config.node.transport
    peers = config.node.sim_peers if sim_peers is None else sim_peers
    nodes: list[Node] = []
    loop = asyncio.get_running_loop()
    stop_event = asyncio.Event()

    def failed(reason: str, code: ExitCode) -> None:
        # health error (status, LED, no watchdog ping) for a moment, then exit non-zero
        loop.call_later(max(0.0, config.node.failure_exit_s), stop_event.set)

    def unhandled(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """An exception nobody handled in a callback or a task: logged with its
        traceback, and the node stops signing and exits (never a dead task in a live
        process)."""
        loop.default_exception_handler(context)
        exc = context.get("exception")
        if nodes and isinstance(exc, Exception):
            code = ExitCode.STORAGE if isinstance(exc, StorageFailure) else ExitCode.BUG
            nodes[0].fail(f"{context.get('message', 'unhandled')}: {exc!r}", code)

    loop.set_exception_handler(unhandled)
    if kind == "sim":
        from ..sim.local import LoopbackAir

        try:
            air = LoopbackAir(config, peers)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

        async def start() -> None:
            nodes.append(await air.start())
            nodes[0].on_failure = failed

        stop = air.stop
    else:
        node = Node(config)
        node.on_failure = failed
        nodes.append(node)
        start, stop = node.start, node.stop

    def alive() -> bool:
        return bool(nodes) and nodes[0].health() is not getattr(NodeHealth, "ERROR", None)

    def status() -> str:
        return status_line(nodes[0].status()) if nodes else "starting"

    from ..memtrace import interval_from_env, trace_forever

    trace_every = interval_from_env()  # BLE_BRIDGE_TRACEMALLOC=<s>: where memory grows
    tracer = None if trace_every is None else asyncio.create_task(trace_forever(trace_every))
    try:
        code = await serve_until_signalled(
            start, stop, alive=alive, status=status, stop_event=stop_event
        )
    finally:
        if tracer is not None:
            tracer.cancel()
    if nodes and nodes[0].failure is not None:
        print(f"ble-bridge run: error: {nodes[0].failure}", file=sys.stderr)
        return int(nodes[0].failure_code)
    return code


def cmd_run(args: argparse.Namespace) -> int:
    _install_loop_policy()
    try:
        return asyncio.run(_serve(args.config, args.transport, args.sim_peers))
    except (ConfigError, KeyFileError) as exc:
        print(f"ble-bridge run: {exc}", file=sys.stderr)
        return int(ExitCode.USAGE)
    except StartupError as exc:
        print(f"ble-bridge run: {exc.line}", file=sys.stderr)
        return int(exc.code)
    except StorageFailure as exc:
        print(f"ble-bridge run: error: storage failed: {exc}", file=sys.stderr)
        return int(ExitCode.STORAGE)


def _ask(path: Path, message: dict[str, Any]) -> dict[str, Any] | None:
    from ..control import request

    try:
        return asyncio.run(request(path, message))
    except (OSError, ConnectionError, TimeoutError, ValueError) as exc:
        print(f"ble-bridge: cannot reach the node at {path}: {exc}", file=sys.stderr)
        return None


def cmd_status(args: argparse.Namespace) -> int:
    reply = _ask(args.socket, {"cmd": "status"})
    if reply is None:
        return 1
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    print(f"peer {reply['peer_id']}  health {reply['health']}  links {len(reply['links'])}")
    if reply.get("error"):
        print(f"  error: {reply['error']}")
    signer = reply.get("signer")
    if isinstance(signer, dict):
        for sid, why in (signer.get("catching_up") or {}).items():
            print(f"  session {sid[:8]} not signing yet: catching up first ({why})")
    uplink = reply.get("uplink")
    if isinstance(uplink, dict):
        state = "connected" if uplink.get("connected") else "disconnected"
        gateways = uplink.get("gateways") or []
        linked = sum(1 for g in gateways if g.get("link_id") is not None)
        print(
            f"  uplink {uplink.get('broker', '')} {state}, rtt {uplink.get('rtt_ms')} ms, "
            f"{linked}/{len(gateways)} remote gateways linked"
        )
    for li in reply["links"]:
        print(
            f"  link {li['link_id']} {li['role']} {li['peer']}: "
            f"in {li.get('frames_in', 0)} frames / {li.get('bytes_in', 0)} B, "
            f"out {li.get('frames_out', 0)} frames / {li.get('bytes_out', 0)} B, "
            f"{li.get('send_failures', 0)} failed sends"
        )
    for s in reply["sessions"]:
        print(
            f"  session {s['name']}: height {s['height']} round {s['round']} {s['health']}, "
            f"{s['active_participants']}/{s['validators']} validators in contact, "
            f"{s['pending_operations']} pending"
        )
    return 0


def cmd_peers(args: argparse.Namespace) -> int:
    reply = _ask(args.socket, {"cmd": "peers"})
    if reply is None:
        return 1
    peers: list[dict[str, Any]] = reply["peers"]
    if args.json:
        print(json.dumps(peers, indent=2))
        return 0
    if not peers:
        print("no peers heard yet")
        return 0
    columns = list(peers[0])
    widths = {c: max(len(c), *(len(str(p.get(c, ""))) for p in peers)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for p in peers:
        print("  ".join(str(p.get(c, "")).ljust(widths[c]) for c in columns))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    reply = _ask(args.socket, {"cmd": "submit", "session": args.session, "op": args.op})
    if reply is None:
        return 1
    if not reply.get("ok"):
        print(f"ble-bridge submit: refused: {reply.get('error')}", file=sys.stderr)
        return 1
    op_id = reply["id"]
    status: dict[str, Any] = {"id": op_id, "status": "pending"}
    waited = 0.0
    while waited < args.wait and status["status"] == "pending":
        asyncio.run(asyncio.sleep(0.5))
        waited += 0.5
        got = _ask(args.socket, {"cmd": "operation", "id": op_id})
        if got is None or not got.get("ok"):
            break
        status = {"id": op_id, **{k: v for k, v in got.items() if k != "ok"}}
    print(json.dumps(status))
    return 0 if status["status"] != "failed" else 1
