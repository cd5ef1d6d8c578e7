"""``ble-bridge run`` logs INFO events by default, one line each (real process, sim transport).

The process is the service's own code path; ``--transport sim`` gives it simulated
neighbours on the wall clock, so no D-Bus is needed. The test waits for the lines (no timed
assertion), with a generous bound for a loaded machine.
"""

from __future__ import annotations

import itertools
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

WAIT_S = 120.0


def _config(tmp: Path) -> Path:
    conf = tmp / "node.toml"
    conf.write_text(
        f'[node]\ndata_dir = "{tmp / "data"}"\ncontrol_socket = "{tmp / "c.sock"}"\n'
        'transport = "sim"\nstatus_interval = 0.5\n'
        "[log]\ncommit_every = 5\ndrops_every_s = 60\n"
    )
    return conf


def _lines_until(
    conf: Path, flags: list[str], wanted: list[str], bound: float = WAIT_S
) -> tuple[list[str], int]:
    """Run until every ``wanted`` regex matched a stderr line (or ``bound``); SIGINT; lines."""
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root}
    env.pop("NOTIFY_SOCKET", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ble_bridge.cli", *flags, "run", "--config", str(conf)],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stderr is not None
    stream = proc.stderr
    lines: list[str] = []
    missing = [re.compile(w) for w in wanted]
    got: queue.Queue[str | None] = queue.Queue()

    def reader() -> None:
        for line in stream:
            got.put(line.rstrip("\n"))
        got.put(None)

    threading.Thread(target=reader, daemon=True).start()
    end = time.monotonic() + bound
    done = False
    try:
        settle: float | None = None  # without wanted lines: up (control socket) + 5 s
        while time.monotonic() < end:
            if not missing and wanted:
                break
            if not wanted:
                if settle is None and (conf.parent / "c.sock").exists():
                    settle = time.monotonic() + 5.0
                if settle is not None and time.monotonic() > settle:
                    break
            try:
                line = got.get(timeout=1.0)
            except queue.Empty:
                continue
            if line is None:
                done = True
                break
            lines.append(line)
            missing = [m for m in missing if not m.search(line)]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    while not done:
        line = got.get(timeout=30)
        if line is None:
            break
        lines.append(line)
    return lines, proc.returncode


def test_run_logs_start_links_joins_commits_and_health_at_info(tmp_path: Path) -> None:
    wanted = [
        r"^INFO start peer=[0-9a-f]{16} nickname=\S+ transport=SimTransport ",
        r"^INFO ready notify=no ",
        r"^INFO link_up link=\d+ address=\S+ role=(central|peripheral) mtu=\d+ links=\d+$",
        r"^INFO link_identified link=\d+ peer=[0-9a-f]{16} nickname=\S+$",
        r"^INFO health to=healthy was=isolated links=\d+$",
        r"^INFO table_joined table=demo-table height=\d+ in_contact=\d+ validators=4 after_s=",
        r"^INFO commit table=demo-table height=\d+ round=\d+ state=[0-9a-f]{16} ops=\d+$",
    ]
    lines, code = _lines_until(_config(tmp_path), [], wanted)
    for w in wanted:
        assert any(re.search(w, line) for line in lines), (w, lines[-30:])
    assert any(line == "INFO stopped" for line in lines), lines[-10:]
    assert code == 0
    commits = [
        int(m.group(1)) for x in lines if (m := re.search(r"^INFO commit .*height=(\d+)", x))
    ]
    assert all(b // 5 > a // 5 for a, b in itertools.pairwise(commits)), commits
    # every line is `LEVEL event key=value …`
    event = re.compile(r'^(DEBUG|INFO|WARNING|ERROR|CRITICAL) [a-z_]+( [a-z_0-9]+=("[^"]*"|\S*))*$')
    odd = [x for x in lines if not event.match(x)]
    assert odd == [], odd


@pytest.mark.parametrize(("flags", "levels"), [(["-q"], {"WARNING", "ERROR"}), (["-v"], {"DEBUG"})])
def test_quiet_and_verbose(tmp_path: Path, flags: list[str], levels: set[str]) -> None:
    wanted = [r"^DEBUG "] if "-v" in flags else []
    lines, code = _lines_until(_config(tmp_path), flags, wanted, bound=WAIT_S)
    assert code == 0
    seen = {x.split(" ", 1)[0] for x in lines if x}
    if "-q" in flags:
        assert seen <= levels, lines[:10]
    else:
        assert seen & levels, lines[:10]
