"""Benchmark: what a node costs in normal play: RSS, RSS growth and CPU of real processes.

A 4-node ``ble-bridge lab`` on the fake BlueZ (real ``ble-bridge run`` processes, bless,
bleak, SQLite) plays the craps table for ``--minutes`` (default 10). Every second each node's
RSS (``VmRSS``) and CPU time (``utime + stime``) are read from ``/proc``. Reported:

  rss_mb         the largest RSS of any node at the end (median of its last 30 s of samples)
  rss_growth_mb  the largest growth of any node over the second half of the run (median of
                 the last 30 s minus median of the 30 s around the half)
  cpu_core_pct   the mean CPU of a node, in percent of one core, from when all nodes run
                 to the end

Goals (issue 13): rss_mb <= 64, rss_growth_mb <= 1.0, cpu_core_pct <= 15; each ratio is
value / goal (<= 1 meets it). The machine is shared, so CPU swings with its load; the
hour-long slow-tier run (tests/gatt/test_gatt_memory.py) decides a leak, this is the quick
signal.

The nodes run as the installed service does (issue 17): each serves ``[metrics]`` on a
localhost port, scraped every 15 s as Prometheus would, and has systemd's watchdog on
(``NOTIFY_SOCKET`` here, ``WATCHDOG_USEC`` of the unit's ``WatchdogSec=30s``: a ping every
15 s); ``--bare`` runs them without either. Last line: ``node rss_mb=<float>
rss_growth_mb=<float> cpu_core_pct=<float> metrics=<on|off> scrapes_ok=<int>/<int>
watchdog_pings=<int>``.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gatt.fakebluez import FakeBluezConfig, LinkModel
from gatt.lab import ProcRecorder, run_lab

GOALS = {"rss_mb": 64.0, "rss_growth_mb": 1.0, "cpu_core_pct": 15.0}
SCRAPE_S = 15.0
WATCHDOG_USEC = 30_000_000  # deploy/ble-bridge.service WatchdogSec=30s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """The systemd side (a notify socket counting READY/WATCHDOG) and a Prometheus scraper."""

    def __init__(self, nodes: int, folder: Path) -> None:
        self.ports = [free_port() for _ in range(nodes)]
        self.path = folder / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.5)
        self.ready = self.pings = self.scrapes = self.scrapes_ok = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=f, daemon=True) for f in (self._notify, self._scrape)
        ]
        for t in self._threads:
            t.start()

    def config(self, i: int) -> str:
        return f'[metrics]\nlisten = "127.0.0.1:{self.ports[i]}"\n'

    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}

    def _notify(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                lines = self.sock.recv(4096).decode(errors="replace").splitlines()
                self.ready += "READY=1" in lines
                self.pings += "WATCHDOG=1" in lines

    def _scrape(self) -> None:
        while not self._stop.wait(SCRAPE_S):
            for port in self.ports:
                self.scrapes += 1
                with contextlib.suppress(OSError):
                    url = f"http://127.0.0.1:{port}/metrics"
                    with urllib.request.urlopen(url, timeout=5) as r:
                        self.scrapes_ok += r.status == 200 and b"ble_bridge_" in r.read()

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)
        self.sock.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="how long the table plays")
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--bare", action="store_true", help="no metrics endpoint, no watchdog")
    args = ap.parse_args()
    duration = args.minutes * 60.0
    rec = ProcRecorder()
    with tempfile.TemporaryDirectory(prefix="bench-node-") as tmp:
        service = None if args.bare else Service(args.nodes, Path(tmp))
        t0 = time.monotonic()
        try:
            result = run_lab(
                args.nodes,
                duration,
                FakeBluezConfig(adapters=args.nodes, link=LinkModel(mtu=247)),
                progress=False,
                on_poll=rec,
                extra_config=None if service is None else service.config,
                extra_env=None if service is None else service.env(),
            )
        finally:
            if service is not None:
                service.close()
        ran = time.monotonic() - t0
    pids = sorted(rec.rss)
    last = {pid: rec.rss_end(pid) for pid in pids}
    mid = {pid: rec.rss_around(pid, rec.end / 2) for pid in pids}
    growth = {pid: last[pid] - mid[pid] for pid in pids}
    cpus = [rec.cpu_pct(pid) for pid in pids]
    values = {
        "rss_mb": max(last.values()),
        "rss_growth_mb": max(growth.values()),
        "cpu_core_pct": statistics.mean(cpus),
    }
    print(result.last_line())
    for pid in sorted(rec.rss):
        first = rec.rss[pid][0][1]
        print(
            f"pid {pid}: rss start {first:.1f} MiB, half {mid[pid]:.1f}, end {last[pid]:.1f} "
            f"(growth over the second half {growth[pid]:+.2f})"
        )
    print(f"cpu of each node, % of one core: {', '.join(f'{c:.1f}' for c in cpus)}")
    for key, goal in GOALS.items():
        print(f"{key} {values[key]:.2f} goal <= {goal:g} ratio {values[key] / goal:.2f}")
    if service is None:
        extra = "metrics=off scrapes_ok=0/0 watchdog_pings=0"
    else:
        due = args.nodes * ran / (WATCHDOG_USEC / 2e6)
        print(
            f"service: READY from {service.ready} of {args.nodes} nodes; {service.pings} "
            f"watchdog pings (~{due:.0f} due at one per {WATCHDOG_USEC / 2e6:g} s a node); "
            f"{service.scrapes_ok} of {service.scrapes} scrapes answered"
        )
        extra = (
            f"metrics=on scrapes_ok={service.scrapes_ok}/{service.scrapes} "
            f"watchdog_pings={service.pings}"
        )
    print(
        f"node rss_mb={values['rss_mb']:.2f} rss_growth_mb={values['rss_growth_mb']:.2f} "
        f"cpu_core_pct={values['cpu_core_pct']:.2f} {extra}"
    )
    return 0 if result.safe else 1


if __name__ == "__main__":
    sys.exit(main())
