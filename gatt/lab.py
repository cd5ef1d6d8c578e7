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
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
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

    def last_line(self) -> str:
        return (
            f"simulate heights={self.heights} ops={self.ops} p50_ms={self.p50_ms:.1f} "
            f"p95_ms={self.p95_ms:.1f} safety={'ok' if self.safe else 'violated'}"
        )


def _toml_config(i: int, root: Path, validators: list[str], ble: dict[str, Any]) -> str:
    ble_lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in ble.items())
    keys = ", ".join(f'"{v}"' for v in validators)
    return f"""[node]
nickname = "lab{i}"
data_dir = "{root / f"node{i}"}"
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


async def _watch(socks: list[Path], duration: float, progress: bool) -> LabResult:
    seen: dict[int, str] = {}
    result = LabResult()
    last: list[dict[str, Any] | None] = [None] * len(socks)
    loop = asyncio.get_running_loop()
    end = loop.time() + duration
    while loop.time() < end:
        replies = await asyncio.gather(*(_status(s) for s in socks))
        for i, r in enumerate(replies):
            if r is None:
                continue
            last[i] = r
            for s in r.get("sessions", []):
                h, digest = int(s["height"]), str(s["state_hash"])
                if seen.setdefault(h, digest) != digest:
                    result.safe = False
        if progress:
            heights = [
                (r["sessions"][0]["height"] if r and r.get("sessions") else "-") for r in last
            ]
            links = [len(r["links"]) if r else "-" for r in last]
            print(f"lab t={duration - (end - loop.time()):5.1f}s heights={heights} links={links}",
                  file=sys.stderr, flush=True)  # fmt: skip
        await asyncio.sleep(1.0)
    final = [r for r in last if r is not None]
    result.final = final
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


def run_lab(
    nodes: int,
    duration: float,
    fake_config: FakeBluezConfig | None = None,
    ble: dict[str, Any] | None = None,
    progress: bool = True,
) -> LabResult:
    """Start the fake and ``nodes`` node processes, watch for ``duration`` s, stop all."""
    from ble_bridge.signer import new_key_signer_file
    from ble_bridge.wire.identity import Identity

    cfg = fake_config or FakeBluezConfig(adapters=nodes, link=LinkModel(mtu=247))
    cfg.adapters = nodes
    ble_table = {"scan_on_s": 1.0, "scan_off_s": 0.5, "tie_break_grace_s": 2.0, **(ble or {})}
    root = Path(tempfile.mkdtemp(prefix="ble-bridge-lab-"))
    fake = FakeBluezProcess(cfg)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        address = fake.start()
        idents = [Identity.generate() for _ in range(nodes)]
        validators = [i.signing_public.hex() for i in idents]
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": address, "PYTHONPATH": _source_root()}
        socks = []
        for i, ident in enumerate(idents):
            (root / f"node{i}").mkdir()
            ident.save(root / f"node{i}" / "identity.key")
            new_key_signer_file(root / f"node{i}" / "identity.key", ident.signing_public)
            conf = root / f"node{i}.toml"
            conf.write_text(_toml_config(i, root, validators, ble_table))
            socks.append(root / f"node{i}.sock")
            log = (root / f"node{i}.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "ble_bridge.cli", "run", "--config", str(conf)],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        time.sleep(0.5)
        return asyncio.run(_watch(socks, duration, progress))
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
