"""``ble-bridge lab``: N real node processes on fake adapters play the default craps session.

Each node is ``ble-bridge run`` (the systemd service's code path: Node, BleTransport, bless,
bleak) bound to its own fake adapter ``hciI`` on one private bus. The lab writes the keys and
configs, starts the fake and the nodes, polls their control sockets, and judges: safety is
violated if two nodes ever report different state hashes at the same height. The last line
has ``ble-bridge simulate``'s format (heights: lowest height every node reached; ops: sum of
the nodes' committed operations; p50/p95: median of the nodes' p50 and max of their p95).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatt.fakebluez.config import FakeBluezConfig, LinkModel
from gatt.fakebluez.harness import FakeBluezProcess, _source_root


@dataclass(slots=True)
class LabResult:
    heights: int = 0
    ops: int = 0
    p50_ms: float = math.nan
    p95_ms: float = math.nan
    safe: bool = True
    final: list[dict[str, Any]] = field(default_factory=list)
    # seconds from the start of the watch to each node's first status answer (None: never)
    answered_s: list[float | None] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)

    @property
    def rejoined(self) -> int:
        return sum(1 for k in self.kills if k.rejoin_s is not None)

    @property
    def worst_rejoin_s(self) -> float:
        times = [k.rejoin_s for k in self.kills if k.rejoin_s is not None]
        return max(times) if times else math.nan

    def last_line(self) -> str:
        return (
            f"simulate heights={self.heights} ops={self.ops} p50_ms={self.p50_ms:.1f} "
            f"p95_ms={self.p95_ms:.1f} safety={'ok' if self.safe else 'violated'} "
            f"kills={len(self.kills)} rejoined={self.rejoined} "
            f"worst_rejoin_s={self.worst_rejoin_s:.1f}"
        )


@dataclass(slots=True)
class Kill:
    """One SIGKILL of the chaos: which node, when, and how long until it rejoined."""

    node: int
    at: float
    height_before: int
    """The node's last reported height before the kill."""
    restarted_at: float = math.nan
    rejoin_s: float | None = None
    """Restart to links again and a height above ``height_before`` (None: not yet)."""


class Chaos:
    """Kills a random node with SIGKILL every ``every`` s and restarts it on its state dir.

    The first kill waits until every node has a link and a height (the mesh formed); a node
    still rejoining is not picked again, so at most a few are down at once.
    """

    def __init__(
        self,
        every: float,
        procs: list[subprocess.Popen[bytes]],
        spawn: Callable[[int], subprocess.Popen[bytes]],
        rng: random.Random,
        max_kills: int | None = None,
    ) -> None:
        self.every = every
        self.procs = procs
        self.spawn = spawn
        self.rng = rng
        self.max_kills = max_kills
        self.kills: list[Kill] = []
        self._next: float | None = None

    @property
    def done(self) -> bool:
        """Every kill made and every killed node back."""
        return (
            self.max_kills is not None
            and len(self.kills) >= self.max_kills
            and all(k.rejoin_s is not None for k in self.kills)
        )

    def step(self, now: float, last: list[dict[str, Any] | None], fresh: list[bool]) -> int | None:
        """Note rejoins in ``last`` (fresh: answered this poll); kill one if due; which."""
        for k in self.kills:
            r = last[k.node]
            if k.rejoin_s is None and fresh[k.node] and r is not None:
                height = int(r["sessions"][0]["height"]) if r.get("sessions") else -1
                if r.get("links") and height > k.height_before:
                    k.rejoin_s = now - k.restarted_at
        if self._next is None:
            formed = all(r is not None and r.get("links") and _height(r) >= 1 for r in last)
            if formed:
                self._next = now + self.every
            return None
        if now < self._next or (self.max_kills is not None and len(self.kills) >= self.max_kills):
            return None
        self._next = now + self.every
        busy = {k.node for k in self.kills if k.rejoin_s is None}
        choices = [i for i in range(len(self.procs)) if i not in busy]
        if not choices:
            return None
        i = self.rng.choice(choices)
        kill = Kill(i, now, _height(last[i]))
        self.procs[i].send_signal(signal.SIGKILL)
        self.procs[i].wait(10)
        self.procs[i] = self.spawn(i)
        kill.restarted_at = now
        self.kills.append(kill)
        return i


def _height(r: dict[str, Any] | None) -> int:
    return int(r["sessions"][0]["height"]) if r and r.get("sessions") else -1


def _toml_config(
    i: int, root: Path, validators: list[str], ble: dict[str, Any], nickname: bool = True
) -> str:
    ble_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in ble.items())
    keys = ", ".join(f'"{v}"' for v in validators)
    nick = f'nickname = "lab{i}"\n' if nickname else ""  # else the default one
    return f"""[node]
{nick}data_dir = "{root / f"node{i}"}"
board = "generic"
control_socket = "{root / f"node{i}.sock"}"
status_interval = 0.5

[ble]
adapter = "hci{i}"
{ble_lines}

[[session]]
name = "lab-table"
app = "craps"
validators = [{keys}]
autoplay = true
"""


async def _status(sock: Path) -> dict[str, Any] | None:
    from ble_bridge.control import request

    try:
        return await request(sock, {"cmd": "status"}, timeout=3.0)
    except (OSError, ConnectionError, TimeoutError, ValueError):
        return None


async def _watch(
    socks: list[Path],
    duration: float,
    progress: bool,
    chaos: Chaos | None = None,
    on_poll: Callable[[], None] | None = None,
    stop: Callable[[], bool] | None = None,
    until: Callable[[list[dict[str, Any] | None]], bool] | None = None,
) -> LabResult:
    seen: dict[int, str] = {}
    result = LabResult()
    last: list[dict[str, Any] | None] = [None] * len(socks)
    loop = asyncio.get_running_loop()
    began = loop.time()
    end = began + duration
    result.answered_s = [None] * len(socks)
    while loop.time() < end and not (stop is not None and stop()):
        replies = await asyncio.gather(*(_status(s) for s in socks))
        if on_poll is not None:
            on_poll()
        if chaos is not None:
            view = [r or last[i] for i, r in enumerate(replies)]
            killed = chaos.step(loop.time(), view, [r is not None for r in replies])
            if killed is not None:  # its reply is from before the kill
                replies[killed] = last[killed] = None
            if chaos.done:
                end = min(end, loop.time() + 3.0)  # a few more polls, then the verdict
        for i, r in enumerate(replies):
            if r is None:
                continue
            last[i] = r
            if result.answered_s[i] is None:
                result.answered_s[i] = round(loop.time() - began, 1)
            for s in r.get("sessions", []):
                h, digest = int(s["height"]), str(s["state_hash"])
                if seen.setdefault(h, digest) != digest:
                    result.safe = False
        if progress:
            heights = [
                (r["sessions"][0]["height"] if r and r.get("sessions") else "-") for r in last
            ]
            links = [len(r["links"]) if r else "-" for r in last]
            extra = ""
            if chaos is not None:
                extra = f" kills={len(chaos.kills)} down={[k.node for k in chaos.kills if k.rejoin_s is None]}"
            print(f"lab t={duration - (end - loop.time()):5.1f}s heights={heights} links={links}{extra}",
                  file=sys.stderr, flush=True)  # fmt: skip
        if until is not None and until(last):
            break
        await asyncio.sleep(1.0)
    final = [r for r in last if r is not None]
    result.final = final
    if chaos is not None:
        result.kills = list(chaos.kills)
    if len(final) == len(socks):
        result.heights = min(int(r["sessions"][0]["height"]) for r in final)
    result.ops = sum(int(r["bridge"].get("committed_operations", 0)) for r in final)
    p50s = [float(r["bridge"]["latency_p50"]) for r in final if r["bridge"].get("latency_p50")]
    p95s = [float(r["bridge"]["latency_p95"]) for r in final if r["bridge"].get("latency_p95")]
    p50s = [x for x in p50s if not math.isnan(x)]
    p95s = [x for x in p95s if not math.isnan(x)]
    if p50s:
        result.p50_ms = statistics.median(p50s) * 1000
    if p95s:
        result.p95_ms = max(p95s) * 1000
    return result


async def _watch_with(
    client: Callable[[], Coroutine[Any, Any, None]],
    socks: list[Path],
    duration: float,
    progress: bool,
    chaos: Chaos | None,
    on_poll: Callable[[], None] | None,
) -> LabResult:
    """:func:`_watch` until ``client`` returns; its exception (or a timeout) is raised."""
    task = asyncio.create_task(client(), name="lab-client")
    try:
        result = await _watch(socks, duration, progress, chaos, on_poll, stop=task.done)
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if task.cancelled():
        raise TimeoutError(f"the lab client did not finish within {duration} s")
    task.result()
    return result


def run_lab(
    nodes: int,
    duration: float,
    fake_config: FakeBluezConfig | None = None,
    ble: dict[str, Any] | None = None,
    progress: bool = True,
    chaos: float | None = None,
    max_kills: int | None = None,
    seed: int | None = None,
    root: Path | None = None,
    on_poll: Callable[[list[int]], None] | None = None,
    phones: int = 0,
    client: Callable[[], Coroutine[Any, Any, None]] | None = None,
    nicknames: bool = True,
    extra_config: Callable[[int], str] | None = None,
    extra_env: dict[str, str] | None = None,
    until: Callable[[list[dict[str, Any] | None]], bool] | None = None,
) -> LabResult:
    """Start the fake and ``nodes`` node processes, watch for ``duration`` s, stop all.

    ``chaos``: every so many seconds SIGKILL a random node and restart it on its state dir
    (:class:`Chaos`); with ``max_kills`` the watch ends once that many kills rejoined.
    ``root``: where the keys, configs, state dirs and node logs go (default: a new temp dir).
    ``on_poll``: called with the node processes' pids after each poll (once a second).
    ``phones``: extra fake adapters ``hci<nodes>``… that no node uses (for a phone client).
    ``client``: a coroutine run in this process beside the watch (``DBUS_SYSTEM_BUS_ADDRESS``
    points at the fake meanwhile, so bleak in it talks to the fake); the watch ends when it
    returns, its exception is raised, and one still running after ``duration`` is cancelled
    and a :class:`TimeoutError` raised. ``nicknames``: False leaves ``[node] nickname`` out
    (the nodes announce their default nickname). ``extra_config(i)``: TOML appended to node
    ``i``'s config (e.g. a ``[metrics]`` section); ``extra_env``: added to the nodes'
    environment (e.g. ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC``). ``until(replies)`` (not with
    ``client``): the watch ends as soon as it holds for the latest status of every node
    (None: not answered yet), ``duration`` then being only the bound.
    """
    from ble_bridge.signer import new_key_signer_file
    from ble_bridge.wire.identity import Identity

    cfg = fake_config or FakeBluezConfig(adapters=nodes, link=LinkModel(mtu=247))
    cfg.adapters = nodes + phones
    ble_table = {"scan_on_s": 1.0, "scan_off_s": 0.5, "tie_break_grace_s": 2.0, **(ble or {})}
    root = root or Path(tempfile.mkdtemp(prefix="ble-bridge-lab-"))
    fake = FakeBluezProcess(cfg)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        address = fake.start()
        idents = [Identity.generate() for _ in range(nodes)]
        validators = [i.signing_public.hex() for i in idents]
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": address, "PYTHONPATH": _source_root()}
        env.update(extra_env or {})
        socks = []

        def spawn(i: int) -> subprocess.Popen[bytes]:
            with (root / f"node{i}.log").open("ab") as log:
                return subprocess.Popen(
                    [sys.executable, "-m", "ble_bridge.cli", "run", "--config",
                     str(root / f"node{i}.toml")],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )  # fmt: skip

        for i, ident in enumerate(idents):
            (root / f"node{i}").mkdir()
            ident.save(root / f"node{i}" / "identity.key")
            new_key_signer_file(root / f"node{i}" / "identity.key", ident.signing_public)
            conf = root / f"node{i}.toml"
            extra = "" if extra_config is None else "\n" + extra_config(i)
            conf.write_text(_toml_config(i, root, validators, ble_table, nicknames) + extra)
            socks.append(root / f"node{i}.sock")
            procs.append(spawn(i))
        time.sleep(0.5)
        monkey = None
        if chaos is not None:
            monkey = Chaos(chaos, procs, spawn, random.Random(seed), max_kills)
        poll = None if on_poll is None else (lambda: on_poll([p.pid for p in procs]))
        if client is None:
            return asyncio.run(_watch(socks, duration, progress, monkey, poll, until=until))
        saved = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
        os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = address
        try:
            return asyncio.run(_watch_with(client, socks, duration, progress, monkey, poll))
        finally:
            if saved is None:
                del os.environ["DBUS_SYSTEM_BUS_ADDRESS"]
            else:
                os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = saved
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        fake.close()
        if progress:
            print(f"lab: node logs in {root}", file=sys.stderr)


def proc_sample(pid: int) -> tuple[float, float] | None:
    """(RSS in MiB, CPU seconds user+system) of a process from /proc; None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        statm = Path(f"/proc/{pid}/statm").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return rss, cpu


class ProcRecorder:
    """``run_lab(on_poll=…)``: RSS and CPU time of every node process, once a poll."""

    def __init__(self, window_s: float = 30.0) -> None:
        self.t0 = time.monotonic()
        self.window_s = window_s
        self.rss: dict[int, list[tuple[float, float]]] = {}
        self.cpu: dict[int, list[tuple[float, float]]] = {}

    def __call__(self, pids: list[int]) -> None:
        now = time.monotonic() - self.t0
        for pid in pids:
            got = proc_sample(pid)
            if got is None:
                continue
            self.rss.setdefault(pid, []).append((now, got[0]))
            self.cpu.setdefault(pid, []).append((now, got[1]))

    @property
    def end(self) -> float:
        return max(t for xs in self.rss.values() for t, _ in xs)

    def rss_around(self, pid: int, t: float) -> float:
        """Median RSS of ``pid`` in the window centred on ``t`` (nan if no sample there)."""
        xs = [r for when, r in self.rss[pid] if abs(when - t) <= self.window_s / 2]
        return statistics.median(xs) if xs else math.nan

    def rss_end(self, pid: int) -> float:
        return self.rss_around(pid, self.end - self.window_s / 2)

    def cpu_pct(self, pid: int) -> float:
        """Mean CPU of ``pid`` over its samples, in percent of one core."""
        (t_a, c_a), (t_b, c_b) = self.cpu[pid][0], self.cpu[pid][-1]
        return 100.0 * (c_b - c_a) / (t_b - t_a) if t_b > t_a else math.nan
