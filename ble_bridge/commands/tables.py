"""``ble-bridge table open|list|join|leave|show``, ``bet``, ``balance``, ``history``.

Every command talks to a running node over its control socket (``--socket``, like
``status``). A request the node refuses before submitting anything (unknown table, bet
not allowed in this phase, balance too small, ...) prints one line and exits 2; a node
that cannot be reached exits 1. Commands that submit wait for the outcome (``--timeout``
seconds, 0: do not wait) and print it; an outcome other than success exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .node import DEFAULT_SOCKET, _ask

REFUSED = 2
FAILED = 1
POLL = 0.25


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    t = sub.add_parser("table", help="open, find, join and leave tables at runtime")
    tsub = t.add_subparsers(dest="table_command", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser, *, wait: bool = False) -> None:
        p.add_argument("--socket", type=Path, default=DEFAULT_SOCKET, help="control socket")
        p.add_argument("--json", action="store_true", help="print JSON")
        if wait:
            p.add_argument(
                "--timeout",
                type=float,
                default=30.0,
                help="seconds to wait for the commit (0: do not wait; default 30)",
            )

    o = tsub.add_parser("open", help="open a table here and announce it")
    o.add_argument("name")
    o.add_argument("--seats", type=int, default=None, help="seats, 1..16 (default 8)")
    o.add_argument("--buy-in", type=int, default=None, help="tokens each seat starts with")
    o.add_argument("--min-bet", type=int, default=None, help="smallest bet taken")
    common(o)
    o.set_defaults(func=cmd_open)
    li = tsub.add_parser("list", help="tables heard nearby and the ones you sit at")
    common(li)
    li.set_defaults(func=cmd_list)
    j = tsub.add_parser("join", help="ask a table's seats to seat you; waits until seated")
    j.add_argument("name", help="table name (or id prefix, 4+ hex digits)")
    j.add_argument(
        "--open",
        action="store_true",
        help="open it here when no such table is heard (an older one heard later wins "
        "while you sit alone: you move there)",
    )
    common(j, wait=True)
    j.set_defaults(func=cmd_join)
    lv = tsub.add_parser("leave", help="leave a table (cash out); waits for the commit")
    lv.add_argument("name")
    common(lv, wait=True)
    lv.set_defaults(func=cmd_leave)
    sh = tsub.add_parser("show", help="a table: phase, point, bets, balances, validators")
    sh.add_argument("name")
    common(sh)
    sh.set_defaults(func=cmd_show)

    b = sub.add_parser("bet", help="place a bet at a table you sit at; waits for the commit")
    b.add_argument("table")
    b.add_argument("kind", help="pass, dont-pass or field")
    b.add_argument("amount", type=int)
    common(b, wait=True)
    b.set_defaults(func=cmd_bet)
    bal = sub.add_parser("balance", help="your balance at each table (or one)")
    bal.add_argument("table", nargs="?")
    common(bal)
    bal.set_defaults(func=cmd_balance)
    h = sub.add_parser("history", help="a table's last rolls and cash-outs")
    h.add_argument("table")
    common(h)
    h.set_defaults(func=cmd_history)


class _Refused(Exception):
    def __init__(self, reply: dict[str, Any]) -> None:
        super().__init__(str(reply.get("error")))
        self.reply = reply


def _call(args: argparse.Namespace, message: dict[str, Any]) -> dict[str, Any] | None:
    """The node's reply; None (message printed) when unreachable; raises _Refused."""
    reply = _ask(args.socket, message)
    if reply is None:
        return None
    if not reply.get("ok"):
        raise _Refused(reply)
    return reply


def _run(args: argparse.Namespace, body: Any) -> int:
    try:
        result: int = body()
        return result
    except _Refused as exc:
        line = exc.reply.get("error") or "refused"
        if args.json:
            print(json.dumps(exc.reply))
        print(f"ble-bridge: {line}", file=sys.stderr)
        return REFUSED if exc.reply.get("refused") else FAILED


def _sleep(seconds: float) -> None:
    asyncio.run(asyncio.sleep(seconds))


def _wait_op(args: argparse.Namespace, op_id: str) -> dict[str, Any]:
    """Poll the operation until it left ``pending`` or ``--timeout`` passed."""
    deadline = time.monotonic() + args.timeout
    status: dict[str, Any] = {"status": "pending"}
    while args.timeout > 0 and time.monotonic() < deadline:
        got = _ask(args.socket, {"cmd": "operation", "id": op_id})
        if got is not None and got.get("ok"):
            status = {k: v for k, v in got.items() if k != "ok"}
            if status["status"] != "pending":
                break
        _sleep(POLL)
    return status


def cmd_open(args: argparse.Namespace) -> int:
    def body() -> int:
        msg = {
            "cmd": "table_open",
            "name": args.name,
            "seats": args.seats,
            "buy_in": args.buy_in,
            "min_bet": args.min_bet,
        }
        reply = _call(args, msg)
        if reply is None:
            return FAILED
        if args.json:
            print(json.dumps(reply))
        else:
            print(
                f"opened table {reply['table']} ({reply['id'][:8]}): {reply['seats']} seats, "
                f"buy-in {reply['buy_in']}, min bet {reply['min_bet']}; you sit at it "
                f"with {reply['balance']}"
            )
        return 0

    return _run(args, body)


def _outcome(
    args: argparse.Namespace,
    status: dict[str, Any],
    out: dict[str, Any],
    done: Callable[[], str],
    sent: str,
    what: str,
) -> int:
    """Print a submitted operation's outcome from its wait ``status`` (``out`` is what --json
    prints): committed, submitted without waiting (``--timeout 0``), or one line and FAILED."""
    if args.json:
        print(json.dumps(out))
    if status["status"] == "committed":
        if not args.json:
            print(done())
        return 0
    if status["status"] == "pending" and args.timeout <= 0:
        if not args.json:
            print(sent)
        return 0
    why = status.get("reason") or "not committed in time"
    print(f"ble-bridge: {what} did not commit: {why}", file=sys.stderr)
    return FAILED


def _ago(value: object) -> str:
    return "here" if value is None else f"{value}s ago"


def cmd_list(args: argparse.Namespace) -> int:
    def body() -> int:
        reply = _call(args, {"cmd": "table_list"})
        if reply is None:
            return FAILED
        tables: list[dict[str, Any]] = reply["tables"]
        if args.json:
            print(json.dumps(tables))
            return 0
        if not tables:
            print("no tables heard yet (ble-bridge table open NAME opens one)")
            return 0
        head = ("NAME", "OPENER", "SEATS", "PLAYERS", "HEIGHT", "HOPS", "HEARD", "")
        rows = [
            (
                t["name"],
                str(t["opener"]),
                f"{t['seats_taken']}/{t['seats']}",
                str(t["players"]),
                str(t["height"]),
                str(t["hops"]) if t["hops"] else "-",
                _ago(t["last_heard"]),
                ("seated" if t.get("seated") else "joining") if t.get("here") else "",
            )
            for t in tables
        ]
        widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
        for r in (head, *rows):
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        return 0

    return _run(args, body)


def cmd_join(args: argparse.Namespace) -> int:
    def body() -> int:
        reply = _call(args, {"cmd": "table_join", "name": args.name, "open": args.open})
        if reply is None:
            return FAILED
        name = reply["table"]
        deadline = time.monotonic() + args.timeout
        while not reply.get("seated") and time.monotonic() < deadline:
            _sleep(POLL)
            got = _ask(args.socket, {"cmd": "table_show", "name": reply["id"]})
            if got is not None and got.get("ok"):
                reply = got
        if args.json:
            print(json.dumps(reply))
        if reply.get("seated"):
            if not args.json:
                print(f"seated at {name} at height {reply['height']}, balance {reply['balance']}")
            return 0
        if args.timeout <= 0:
            if not args.json:
                print(f"asked to join {name}; ble-bridge table show {name} says when you sit")
            return 0
        print(
            f"ble-bridge: not seated at {name} within {args.timeout:g} s "
            f"(the request is still repeated; ble-bridge table show {name})",
            file=sys.stderr,
        )
        return FAILED

    return _run(args, body)


def cmd_leave(args: argparse.Namespace) -> int:
    def body() -> int:
        reply = _call(args, {"cmd": "table_leave", "name": args.name})
        if reply is None:
            return FAILED
        name = reply["table"]
        if reply.get("left") or reply.get("op") is None:
            if args.json:
                print(json.dumps(reply))
            else:
                print(f"left {name} (you had no seat yet)")
            return 0
        status = _wait_op(args, reply["op"])
        return _outcome(
            args,
            status,
            {**reply, **status},
            done=lambda: f"left {name} at height {status['height']}",
            sent=f"leaving {name}: submitted {reply['op'][:16]}",
            what=f"leaving {name}",
        )

    return _run(args, body)


def cmd_show(args: argparse.Namespace) -> int:
    def body() -> int:
        t = _call(args, {"cmd": "table_show", "name": args.name})
        if t is None:
            return FAILED
        if args.json:
            print(json.dumps(t))
            return 0
        seat = "seated" if t["seated"] else ("joining" if t["joining"] else "watching")
        point = f" point {t['point']}" if t["point"] else ""
        print(f"{t['table']} ({t['id'][:8]}): height {t['height']} {t['health']}, you are {seat}")
        print(
            f"  {t['phase']}{point}, {t['stage']} (roll {t['round']}); seats "
            f"{t['seats_taken']}/{t['seats']}, players {t['players']}, buy-in {t['buy_in']}, "
            f"min bet {t['min_bet']}, bank {t['bank']}"
        )
        if t["balance"] is not None:
            print(f"  your balance {t['balance']}")
        for b in t["bets"]:
            who = b["nickname"] or b["player"][:8]
            print(f"  bet {b['kind']} {b['amount']} by {who}")
        for v in t["validators"]:
            who = v["nickname"] or v["key"][:8]
            health = "you" if v["me"] else ("in contact" if v["in_contact"] else "out of contact")
            heard = (
                "" if v["me"] or v["heard_s_ago"] is None else f", heard {v['heard_s_ago']}s ago"
            )
            print(
                f"  seat {who}: balance {v['balance']}, {health}{heard}, "
                f"silent {v['silent_heights']} heights"
            )
        return 0

    return _run(args, body)


def cmd_bet(args: argparse.Namespace) -> int:
    def body() -> int:
        msg = {"cmd": "bet", "table": args.table, "kind": args.kind, "amount": args.amount}
        reply = _call(args, msg)
        if reply is None:
            return FAILED
        status = _wait_op(args, reply["op"])
        balance = None
        if status["status"] == "committed":
            got = _ask(args.socket, {"cmd": "balance", "table": args.table})
            if got is not None and got.get("ok") and got["balances"]:
                balance = got["balances"][0]["balance"]
        what = f"bet {args.kind} {args.amount} at {reply['table']}"
        return _outcome(
            args,
            status,
            {**reply, **status, "balance": balance},
            done=lambda: f"{what} committed at height {status['height']}; balance {balance}",
            sent=f"{what} submitted ({reply['op'][:16]})",
            what=what,
        )

    return _run(args, body)


def cmd_balance(args: argparse.Namespace) -> int:
    def body() -> int:
        msg: dict[str, Any] = {"cmd": "balance"}
        if args.table is not None:
            msg["table"] = args.table
        reply = _call(args, msg)
        if reply is None:
            return FAILED
        rows: list[dict[str, Any]] = reply["balances"]
        if args.json:
            print(json.dumps(rows))
            return 0
        if not rows:
            print("you sit at no table (ble-bridge table list; table join NAME)")
        for r in rows:
            extra = f" (+{r['on_table']} on the table)" if r["on_table"] else ""
            print(f"{r['table']}: {r['balance']}{extra} at height {r['height']}")
        return 0

    return _run(args, body)


def cmd_history(args: argparse.Namespace) -> int:
    def body() -> int:
        reply = _call(args, {"cmd": "history", "table": args.table})
        if reply is None:
            return FAILED
        if args.json:
            print(json.dumps({k: v for k, v in reply.items() if k != "ok"}))
            return 0
        rolls = reply["rolls"]
        print(f"{reply['table']} at height {reply['height']}: {len(rolls)} rolls")
        for r in rolls[-20:]:
            d1, d2 = r["dice"]
            print(f"  {d1}+{d2} = {r['total']}")
        for c in reply["cashed_out"]:
            print(f"  {c['nickname'] or c['player'][:8]} left with {c['amount']}")
        return 0

    return _run(args, body)
