"""Host side of the real-BlueZ tier: judge one VM boot from the files it left in its share.

``verdict.py SHARE`` reads ``SHARE/out/result.json`` (written by guest.py), the node logs and
bluetoothd's log, writes ``SHARE/verdict.json``, prints a summary to stderr and, on stdout,
one word: ``ok``, ``retry`` or ``fail``. ``verdict.py --last-line SHARE`` prints the tier's last
line from a verdict.json.

``retry`` (the environment's connect race; the tier then boots the whole VM set once more) only
when one of:

- a VM's setup failed (``init-error.txt``: a controller or the air relay never came up);
- fewer links than wanted is the ONLY failure (heights not rising is then its consequence) and
  the logs show the race: bluetoothd's "is already connected" or a node's failed connect
  (``connect_failed`` / ``connect … failed``).

Never ``retry``: a traceback in any node log, a safety violation (two hashes or two blocks at
one height), a node that exited, heights not rising while every link formed, no result from
the guest, or missing links with no connect ever failing (the nodes did not even try: that is
the node's bug, not the environment's).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any


def judge(share: Path, nodes: int) -> dict[str, Any]:
    out = share / "out"
    try:
        r: dict[str, Any] = json.loads((out / "result.json").read_text())
    except (OSError, ValueError):
        r = {}
    # one VM: SHARE/out; one VM per node: SHARE/vmI/out
    outs = [out, *sorted(share.glob("vm*/out"))]
    tracebacks = [
        str(log.relative_to(share))
        for o in outs
        for log in sorted(o.glob("node*.log"))
        if "Traceback" in log.read_text(errors="replace")
    ]
    btd = "".join(
        (o / "bluetoothd.log").read_text(errors="replace")
        for o in outs
        if (o / "bluetoothd.log").exists()
    )
    race = len(re.findall(r"already connected", btd))
    connect_failures = sum(
        len(re.findall(r"connect_failed|connect \S+ failed", log.read_text(errors="replace")))
        for o in outs
        for log in sorted(o.glob("node*.log"))
    )
    reasons: list[str] = []
    init_errors = [o / "init-error.txt" for o in outs if (o / "init-error.txt").exists()]
    environment = bool(init_errors)
    if environment:
        reasons += ["VM setup: " + e.read_text().strip() for e in init_errors]
    elif not r:
        reasons.append("no result from the guest")
    else:
        if r.get("links", 0) != r.get("links_wanted", -1):
            reasons.append(
                f"links {r.get('links')}/{r.get('links_wanted')} (half-open {r.get('half_open')})"
            )
        if not r.get("rising"):
            reasons.append("heights not rising")
        if not r.get("safety_ok", True):
            reasons.append("safety: " + "; ".join(r.get("conflicts", [])[:3]))
        reasons += [ev for ev in r.get("events", []) if "exited" in ev]
        if "kills_wanted" in r:  # --scenario chaos: every kill made, every killed node back
            worst, limit = r.get("worst_rejoin_s"), r.get("rejoin_limit_s", 90)
            if r["kills"] < r["kills_wanted"] or r["rejoined"] < r["kills"]:
                reasons.append(
                    f"chaos: {r['rejoined']} of {r['kills']} kills rejoined within {limit} s"
                    f" ({r['kills_wanted']} kills wanted)"
                )
            elif worst is not None and worst > limit:
                reasons.append(f"chaos: worst rejoin {worst} s > {limit} s")
    for notes in (o / "init-notes.txt" for o in outs):
        if notes.exists():
            print("test-bluez-vm:   VM setup: " + notes.read_text().strip(), file=sys.stderr)
    if tracebacks:
        reasons.append("traceback in " + ",".join(tracebacks))
    # Heights cannot rise on a table whose links never formed: that failure is the links'.
    links_failed = any(x.startswith("links") for x in reasons)
    only_links = links_failed and all(
        x.startswith("links") or x == "heights not rising" for x in reasons
    )
    return {
        "nodes": int(r.get("nodes", nodes)),
        "links": int(r.get("links", 0)),
        "heights": int(r.get("heights", 0)),
        "rising": "yes" if r.get("rising") else "no",
        # Violated only on evidence: two hashes or two blocks at one height.
        "safety": "ok" if r.get("safety_ok", True) else "violated",
        "reasons": reasons,
        "connect_race_lines": race,
        "connect_failures": connect_failures,
        "retryable": (only_links and (race > 0 or connect_failures > 0)) or environment,
        "t_links_s": r.get("t_links_s"),
        "heights_per_min": r.get("heights_per_min"),
        "played_s": r.get("played_s"),
        "rejoin_s": r.get("rejoin_s"),
        "hash_heights": r.get("hash_heights"),
        "blocks_compared": r.get("blocks_compared"),
        "events": r.get("events", []),
        **{k: r[k] for k in ("kills", "rejoined", "worst_rejoin_s", "chaos_seed") if k in r},
    }


def last_line(v: dict[str, Any]) -> str:
    line = (
        f"bluez-vm nodes={v['nodes']} links={v['links']} heights={v['heights']} "
        f"rising={v['rising']} safety={v['safety']}"
    )
    if "kills" in v:  # --scenario chaos adds its keys after the stable ones
        worst = v.get("worst_rejoin_s")
        line += (
            f" kills={v['kills']} rejoined={v['rejoined']} "
            f"worst_rejoin_s={'nan' if worst is None else f'{float(worst):.1f}'}"
        )
    return line


def main(argv: list[str]) -> int:
    if argv[:1] == ["--last-line"]:
        print(last_line(json.loads((Path(argv[1]) / "verdict.json").read_text())))
        return 0
    share = Path(argv[0])
    nodes = int(argv[1]) if len(argv) > 1 else 0
    v = judge(share, nodes)
    (share / "verdict.json").write_text(json.dumps(v, indent=1))
    err = sys.stderr
    print(f"test-bluez-vm:   {'; '.join(v['reasons']) or 'all checks passed'}", file=err)
    for ev in v["events"]:
        print(f"test-bluez-vm:   {ev}", file=err)
    print(
        f"test-bluez-vm:   links after {v['t_links_s']} s; {v['heights_per_min']} heights/min "
        f"over {v['played_s']} s; {v['hash_heights']} heights hash-checked, "
        f"{v['blocks_compared']} stored blocks compared; rejoin {v['rejoin_s']} s; "
        f"bluetoothd 'already connected' lines: {v['connect_race_lines']}; "
        f"failed connects in node logs: {v['connect_failures']}",
        file=err,
    )
    print("ok" if not v["reasons"] else "retry" if v["retryable"] else "fail")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
