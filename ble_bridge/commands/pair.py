"""``ble-bridge pair``: open the pairing window, list and remove owners and bonded devices.

``pair --window 60`` asks the running node (control socket) to open a window and prints the
six-digit code; the first phone that sends the node ``!pair CODE`` as a BitChat private
message inside the window becomes an owner. ``--wait`` waits until the window closes and
says who paired. ``--close`` closes it early, ``--status`` shows it, ``--list`` shows owners
and bonded devices, ``--remove ID`` removes one (an owner id prefix of 8+ hex digits, or a
device address). A refusal prints one line and exits 2; an unreachable node exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from .node import DEFAULT_SOCKET, _ask
from .tables import REFUSED, _sleep

FAILED = 1
POLL = 0.25


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from pathlib import Path

    p = sub.add_parser("pair", help="pair a phone with this node; list or remove owners")
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--window",
        type=float,
        metavar="SECONDS",
        default=None,
        help="open the pairing window for SECONDS (default action; [pairing] window_s, 60)",
    )
    g.add_argument("--close", action="store_true", help="close an open window")
    g.add_argument("--status", action="store_true", help="is a window open, with what code")
    g.add_argument("--list", action="store_true", help="owners and bonded devices")
    g.add_argument("--remove", metavar="ID", help="remove an owner (id prefix) or device (address)")
    p.add_argument("--wait", action="store_true", help="with --window: wait for the outcome")
    p.add_argument("--socket", type=Path, default=DEFAULT_SOCKET, help="control socket")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_pair)


def _call(args: argparse.Namespace, message: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    reply = _ask(args.socket, message)
    if reply is None:
        return FAILED, {}
    if not reply.get("ok"):
        if args.json:
            print(json.dumps(reply))
        print(f"ble-bridge pair: {reply.get('error') or 'refused'}", file=sys.stderr)
        return (REFUSED if reply.get("refused") else FAILED), reply
    return 0, reply


def cmd_pair(args: argparse.Namespace) -> int:
    if args.list:
        return _list(args)
    if args.remove:
        code, reply = _call(args, {"cmd": "pair_remove", "id": args.remove})
        if code == 0:
            print(json.dumps(reply) if args.json else "removed " + ", ".join(reply["removed"]))
        return code
    if args.close:
        code, reply = _call(args, {"cmd": "pair_close"})
        if code == 0:
            print(json.dumps(reply) if args.json else
                  ("window closed" if reply["closed"] else "no window was open"))  # fmt: skip
        return code
    if args.status:
        code, reply = _call(args, {"cmd": "pair_status"})
        if code == 0:
            print(json.dumps(reply) if args.json else _describe(reply))
        return code
    message: dict[str, Any] = {"cmd": "pair_open"}
    if args.window is not None:
        message["window"] = args.window
    code, reply = _call(args, message)
    if code != 0:
        return code
    if args.json:
        print(json.dumps(reply))
    else:
        print(f"pairing code {reply['code']}  (open {reply['remaining_s']:g} s)")
        print(f"send the node a private message: !pair {reply['code']}")
    sys.stdout.flush()
    return _wait(args, reply) if args.wait else 0


def _describe(s: dict[str, Any]) -> str:
    if s.get("open"):
        return f"window open: code {s['code']}, {s['remaining_s']:g} s left ({s['origin']})"
    last = s.get("closed_because") or "never opened"
    return f"no window open (last: {last}); {s.get('owners', 0)} owner(s)"


def _wait(args: argparse.Namespace, opened: dict[str, Any]) -> int:
    deadline = time.monotonic() + float(opened.get("remaining_s", 0)) + 5.0
    while time.monotonic() < deadline:
        code, s = _call(args, {"cmd": "pair_status"})
        if code != 0:
            return code
        if not s.get("open"):
            if s.get("closed_because") == "paired" and s.get("winner"):
                print(json.dumps(s) if args.json else f"paired: owner {s['winner'][:16]}")
                return 0
            print(json.dumps(s) if args.json else f"window closed: {s.get('closed_because')}")
            return FAILED
        _sleep(POLL)
    print("ble-bridge pair: the window did not close in time", file=sys.stderr)
    return FAILED


def _list(args: argparse.Namespace) -> int:
    code, reply = _call(args, {"cmd": "pair_list"})
    if code != 0:
        return code
    if args.json:
        print(json.dumps({"owners": reply["owners"], "bonded": reply["bonded"]}, indent=2))
        return 0
    owners, bonded = reply["owners"], reply["bonded"]
    if not owners and not bonded:
        print("no owners, no bonded devices")
    for o in owners:
        added = time.strftime("%Y-%m-%d %H:%M", time.gmtime(o["added_at"]))
        print(f"owner  {o['id'][:16]}  {o['nickname'] or '-':<16} since {added} UTC ({o['via']})")
    for d in bonded:
        print(f"bonded {d['address']}  {d.get('name') or '-':<16} {d.get('adapter', '')}")
    return 0
