"""Host side of the one-VM-per-node form of the real-BlueZ tier: judge the table as it runs.

Each VM (``guest.py --node I``) appends a status row per poll to ``ATTEMPT/vmI/out/status.jsonl``
and published its adapter address in ``ATTEMPT/exchange/nodeI.json``. This reads the rows as they
come (plain Python, no project imports), with the same checks as the one-VM form of guest.py:

- links: node pairs linked in both directions (each side lists the other's adapter address);
- rising: the lowest height at the end is above the lowest height ``--rising-window`` s earlier;
- safety: every height any node reported has one state hash, and every block two nodes both
  stored (``blocks.json``, written when they stop) is the same block;
- heights: the lowest height every node reached.

When the links formed and ``--duration`` s of play passed (or the link bound ran out, or a node
exited) it writes ``exchange/stop``, waits for every VM's ``blocks.json`` and writes
``ATTEMPT/out/result.json`` (the keys verdict.py reads).

``--chaos S --kills K`` (the lab's ``--chaos``, on real bluetoothd): S s after every node reached
height 1 (the table commits; bounded by ``--link-wait``), and S s after each rejoin, it asks a random node's VM (``--seed``) to SIGKILL its node and start
it again on its state (``exchange/killI.K``; guest.py does it and writes ``killed``/``restarted``
rows). A kill has rejoined when, in rows written after the restart, the node is linked both ways
to every other node and its height is above its last height before the kill (with 3 validators
the table cannot commit without it, so that height is one the restarted node helped commit).
The rejoin time runs from the kill request (so it includes the guest's poll and the kill); a
kill not rejoined within ``--rejoin-limit`` s (90: Python starts slowly under TCG) ends the
chaos. Play then goes on for ``--rising-window`` + 5 s so the heights' rise is checked after it.

    watch.py ATTEMPT --nodes N [--duration S] [--link-wait S] [--chaos S --kills K --seed X]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any


def progress(t0: float, msg: str) -> None:
    print(f"[watch {time.monotonic() - t0:7.1f}s] {msg}", file=sys.stderr, flush=True)


class Rows:
    """The rows one VM appended so far (read incrementally)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.last: dict[str, Any] | None = None
        self.stopped: int | None = None
        self.exited: int | None = None
        self.restarts = 0
        self.rows_since_restart = 0
        self._partial = b""

    def read(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:
            return
        self.offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if "stopped" in row:
                self.stopped = row["stopped"]
                continue
            if "killed" in row:
                continue
            if "restarted" in row:
                self.restarts = int(row["restarted"])
                self.rows_since_restart = 0
                continue
            if "exited" in row:
                self.exited = row["exited"]
            self.rows_since_restart += 1
            self.last = row


class Chaos:
    """Kill requests to the node VMs, one at a time, and their rejoin times (see the docstring)."""

    def __init__(self, args: argparse.Namespace, n: int, ex: Path, result: dict[str, Any]) -> None:
        self.every = float(args.chaos)
        self.max_kills = int(args.kills)
        self.limit = float(args.rejoin_limit)
        self.tail = float(args.rising_window) + 5.0
        self.seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
        self.rng = random.Random(self.seed)
        self.n = n
        self.ex = ex
        self.events: list[str] = result["events"]
        # one dict per kill: node, number (per node), at, height_before, rejoin_s
        self.kills: list[dict[str, Any]] = []
        self.t0 = time.monotonic()
        self.start_wait = float(args.link_wait)
        self.next_at: float | None = None  # set once the table commits
        self.ended_at: float | None = None

    def running(self) -> bool:
        return self.ended_at is None or time.monotonic() - self.ended_at < self.tail

    def step(self, rows: list[Rows], hs: list[int | None], peers_of: Any, say: Any) -> None:
        now = time.monotonic()
        if self.ended_at is not None:
            return
        if self.kills and self.kills[-1]["rejoin_s"] is None:
            k = self.kills[-1]
            i, r = k["node"], rows[k["node"]]
            others = set(range(self.n)) - {i}
            if (
                r.restarts >= k["number"]
                and r.rows_since_restart > 0
                and r.last is not None
                and r.last.get("up")
                and peers_of(i) >= others
                and all(i in peers_of(j) for j in others)
                and hs[i] is not None
                and hs[i] > k["height_before"]
            ):
                k["rejoin_s"] = round(now - k["at"], 1)
                msg = f"kill {len(self.kills)}: node{i} rejoined {k['rejoin_s']} s after the kill"
                self.events.append(msg + f" (heights {hs})")
                say(msg)
                self.next_at = now + self.every
            elif now - k["at"] > self.limit:
                msg = f"kill {len(self.kills)}: node{i} NOT rejoined within {self.limit:.0f} s"
                self.events.append(msg + f" (heights {hs}, restarts seen {r.restarts})")
                say(msg)
                self.ended_at = now
            return
        if len(self.kills) >= self.max_kills:
            self.ended_at = now
            return
        if self.next_at is None:  # the first kill waits for a committing table (as the lab's)
            if all(h is not None and h >= 1 for h in hs):
                self.next_at = now + self.every
                say(f"table committing (heights {hs}): first kill in {self.every:.0f} s")
            elif now - self.t0 > self.start_wait:
                msg = f"the table never committed within {self.start_wait:.0f} s: no kill made"
                self.events.append(msg)
                say(msg)
                self.ended_at = now
            return
        if now < self.next_at:
            return
        i = self.rng.randrange(self.n)
        number = 1 + sum(1 for k in self.kills if k["node"] == i)
        before = hs[i] if hs[i] is not None else -1
        (self.ex / f"kill{i}.{number}").write_text("kill\n")
        self.kills.append(
            {"node": i, "number": number, "at": now, "height_before": before, "rejoin_s": None}
        )
        msg = f"kill {len(self.kills)}: node{i} (SIGKILL + restart) at height {before}"
        self.events.append(msg)
        say(msg)

    def summary(self) -> dict[str, Any]:
        times = [k["rejoin_s"] for k in self.kills if k["rejoin_s"] is not None]
        return {
            "chaos_s": self.every,
            "chaos_seed": self.seed,
            "kills": len(self.kills),
            "kills_wanted": self.max_kills,
            "rejoined": len(times),
            "worst_rejoin_s": max(times) if times else None,
            "rejoin_limit_s": self.limit,
            "kill_log": [{k: v for k, v in x.items() if k != "at"} for x in self.kills],
        }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("attempt")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--duration", type=float, default=90.0)
    ap.add_argument("--link-wait", type=float, default=180.0)
    ap.add_argument("--boot-wait", type=float, default=300.0)
    ap.add_argument("--rising-window", type=float, default=30.0)
    ap.add_argument("--poll", type=float, default=2.0)
    ap.add_argument("--chaos", type=float, default=0.0, help="kill a node every S s (0: none)")
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--rejoin-limit", type=float, default=90.0)
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args(argv)
    att = Path(args.attempt)
    ex = att / "exchange"
    n = args.nodes
    want = n * (n - 1) // 2
    t0 = time.monotonic()
    result: dict[str, Any] = {"nodes": n, "events": []}
    rows = [Rows(att / f"vm{i}" / "out" / "status.jsonl") for i in range(n)]

    def vm_ended(i: int) -> bool:
        return (att / f"vm{i}" / "exitcode").exists()

    # Boot: until every node published its address (the nodes start right then).
    addresses: list[str] = []
    while time.monotonic() - t0 < args.boot_wait:
        try:
            addresses = [
                str(json.loads((ex / f"node{i}.json").read_text())["address"]).upper()
                for i in range(n)
            ]
            break
        except (OSError, ValueError, KeyError):
            if any(vm_ended(i) for i in range(n)):
                break
            time.sleep(0.5)
    result["addresses"] = addresses
    hashes: dict[int, str] = {}
    conflicts: list[str] = []
    history: list[tuple[float, list[int | None]]] = []

    def peers_of(i: int) -> set[int]:
        last = rows[i].last
        if not last or not addresses:
            return set()
        return {addresses.index(a) for a in last.get("links", []) if a in addresses}

    def pairs() -> tuple[int, int]:
        full = half = 0
        for a in range(n):
            for b in range(a + 1, n):
                ab, ba = b in peers_of(a), a in peers_of(b)
                full += ab and ba
                half += ab != ba
        return full, half

    def poll() -> list[int | None]:
        heights: list[int | None] = []
        for i, r in enumerate(rows):
            r.read()
            last = r.last
            h = last.get("height") if last else None
            if h is not None and last is not None and last.get("state_hash"):
                digest = str(last["state_hash"])
                if hashes.setdefault(int(h), digest) != digest:
                    conflicts.append(f"height {h}: node{i} {digest} != {hashes[int(h)]}")
            heights.append(None if h is None else int(h))
        history.append((time.monotonic(), heights))
        del history[:-2000]
        return heights

    def min_height(hs: list[int | None]) -> int | None:
        return None if not hs or any(h is None for h in hs) else min(h for h in hs if h is not None)

    t_links: float | None = None
    played = 0.0
    if len(addresses) == n:
        progress(t0, f"all {n} nodes started; adapters {addresses}")
        t_start = time.monotonic()
        next_report = 0.0
        while time.monotonic() - t_start < args.link_wait:
            hs = poll()
            if pairs()[0] == want:
                t_links = time.monotonic() - t_start
                break
            dead = [i for i in range(n) if rows[i].exited is not None or vm_ended(i)]
            if dead:
                result["events"].append(f"nodes {dead} exited during startup")
                break
            if time.monotonic() - t_start >= next_report:
                progress(t0, f"waiting for links: heights {hs} pairs {pairs()}")
                next_report += 15
            time.sleep(args.poll)
        progress(t0, f"links formed after {t_links:.1f} s" if t_links else "links NOT formed")
        if t_links is not None:
            h0 = min_height(poll()) or 0
            t_play = time.monotonic()
            next_report = 15.0
            chaos = Chaos(args, n, ex, result) if args.chaos > 0 else None
            while chaos.running() if chaos else time.monotonic() - t_play < args.duration:
                time.sleep(args.poll)
                hs = poll()
                dead = [i for i in range(n) if rows[i].exited is not None or vm_ended(i)]
                if dead:
                    result["events"].append(f"nodes {dead} exited during play")
                    break
                if chaos is not None:
                    chaos.step(rows, hs, peers_of, lambda m: progress(t0, m))
                if time.monotonic() - t_play >= next_report:
                    progress(
                        t0, f"play {time.monotonic() - t_play:5.0f}s heights {hs} pairs {pairs()}"
                    )
                    next_report += 15
            played = time.monotonic() - t_play
            h1 = min_height(history[-1][1]) or 0
            result["heights_per_min"] = round((h1 - h0) * 60 / played, 1) if played else 0.0
            result["played_s"] = round(played, 1)
            if chaos is not None:
                result.update(chaos.summary())
    else:
        result["events"].append(f"only {len(addresses)} of {n} nodes published an address")
    result["t_links_s"] = round(t_links, 1) if t_links is not None else None
    full, half = pairs()
    hmin = min_height(history[-1][1]) if history else None
    t_now = history[-1][0] if history else 0.0
    earlier = None
    for when, hs in reversed(history):
        if when <= t_now - args.rising_window and min_height(hs) is not None:
            earlier = min_height(hs)
            break
    ex.mkdir(parents=True, exist_ok=True)
    (ex / "stop").write_text("stop\n")
    # Every VM stops its node and writes blocks.json, then powers off.
    t_stop = time.monotonic()
    while time.monotonic() - t_stop < 90 and not all(
        (att / f"vm{i}" / "out" / "blocks.json").exists() or vm_ended(i) for i in range(n)
    ):
        time.sleep(0.5)
    for r in rows:
        r.read()
    blocks: list[dict[str, str]] = []
    for i in range(n):
        try:
            blocks.append(json.loads((att / f"vm{i}" / "out" / "blocks.json").read_text()))
        except (OSError, ValueError):
            blocks.append({})
    compared: set[str] = set()
    block_conflicts = []
    for a in range(n):
        for b in range(a + 1, n):
            for h in blocks[a].keys() & blocks[b].keys():
                compared.add(h)
                if blocks[a][h] != blocks[b][h]:
                    block_conflicts.append(f"block {h}: node{a} != node{b}")
    result.update(
        links=full,
        half_open=half,
        links_wanted=want,
        heights=hmin or 0,
        rising=hmin is not None and earlier is not None and hmin > earlier,
        hash_heights=len(hashes),
        blocks_compared=len(compared),
        conflicts=conflicts + block_conflicts,
        safety_ok=not conflicts and not block_conflicts,
        exit_codes=[r.stopped for r in rows],
        wall_s=round(time.monotonic() - t0, 1),
    )
    out = att / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=1))
    progress(
        t0,
        f"result nodes={n} links={full} heights={hmin or 0} rising={result['rising']} "
        f"safety_ok={result['safety_ok']}",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
