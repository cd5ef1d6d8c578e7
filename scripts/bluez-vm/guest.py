"""Runs inside the real-BlueZ VM: N ``ble-bridge run`` nodes of one table on N controllers.

Started by the VM's init with the project's venv. Writes keys and configs, starts the nodes
(the systemd service's code path), polls every control socket from this one process (Python
starts slowly under TCG, so no CLI call per poll), and judges the run:

- links: node pairs linked in both directions (each side reports a link to the other's
  adapter address) at the last poll; all ``N*(N-1)/2`` must be there;
- rising: the lowest height at the end is above the lowest height ``--rising-window`` s earlier;
- safety: every height any node reported has one state hash, and every committed block that
  two nodes both stored is the same block;
- heights: the lowest height every node reached.

Everything lands in ``--out``: node logs, ``status.jsonl`` (one line per poll), D-Bus
snapshots of what bluetoothd shows (``--scenario kill``), and ``result.json``.

``--node I --exchange DIR`` is the one-VM-per-node form (each VM has its own kernel and
bluetoothd, its controller on the host's ``btvirt -s`` server): this VM runs node I only. It
publishes its adapter address and validator key in DIR, waits for the other nodes' files, runs
its node, appends one status row per poll to ``--out``/status.jsonl (the host's watch.py judges
the table from every VM's rows), and when the host writes DIR/stop it stops the node and writes
``blocks.json`` (sha256 of every stored block by height) for the host's block comparison.
When the host writes DIR/killI.K (watch.py ``--chaos``) it kills node I with SIGKILL the K-th
time, starts it again on the same state dir at once (as systemd's Restart= would), and writes a
``killed`` and a ``restarted`` row.

``--scenario kill`` adds what the project needs to know about real bluetoothd: node 0 is
killed with SIGKILL once the mesh is up; D-Bus snapshots before and after show whether its
LE connections, GATT application and advertisement survive; a foreign D-Bus client on node
0's adapter then writes to a peer on the still-open connection; node 0 is restarted on its
state and the time it takes to link and commit again is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ble_bridge.control import request
from ble_bridge.signer import new_key_signer_file
from ble_bridge.wire.identity import Identity

WORK = Path("/run/bluez-vm")
SERVICE_UUID_HINT = "f47b5e2d"  # first 8 hex digits of the BitChat mesh service UUID


def progress(msg: str) -> None:
    line = f"[guest {time.monotonic():7.1f}s] {msg}"
    print(line, file=sys.stderr, flush=True)
    with contextlib.suppress(OSError), open("/dev/console", "w") as console:
        console.write(line + "\n")


def adapter_addresses(n: int) -> list[str]:
    out = subprocess.run(["btmgmt", "info"], capture_output=True, text=True, timeout=30).stdout
    found: dict[int, str] = {}
    idx = None
    for line in out.splitlines():
        m = re.match(r"hci(\d+):", line.strip())
        if m:
            idx = int(m.group(1))
        m = re.search(r"addr ([0-9A-F:]{17})", line)
        if m and idx is not None:
            found[idx] = m.group(1)
    return [found.get(i, "") for i in range(n)]


def node_config(
    i: int, validators: list[str], extra_ble: dict[str, Any], adapter: int | None = None
) -> str:
    keys = ", ".join(f'"{v}"' for v in validators)
    ble = "".join(f"{k} = {json.dumps(v)}\n" for k, v in extra_ble.items())
    return f"""[node]
nickname = "vm{i}"
data_dir = "{WORK / f"node{i}"}"
board = "generic"
control_socket = "{WORK / f"node{i}.sock"}"

[ble]
adapter = "hci{i if adapter is None else adapter}"
{ble}
[[session]]
name = "vm-table"
app = "craps"
validators = [{keys}]
autoplay = true
"""


class Node:
    def __init__(self, i: int, out: Path, verbose: int) -> None:
        self.i = i
        self.verbose = verbose
        self.conf = WORK / f"node{i}.toml"
        self.sock = WORK / f"node{i}.sock"
        self.out = out
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        suffix = "" if self.starts == 1 else f".{self.starts}"
        log = (self.out / f"node{self.i}{suffix}.log").open("wb")
        exe = Path(sys.executable).with_name("ble-bridge")
        self.proc = subprocess.Popen(
            [str(exe), "-" + "v" * self.verbose, "run", "--config", str(self.conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


async def status(sock: Path) -> dict[str, Any] | None:
    try:
        return await request(sock, {"cmd": "status"}, timeout=8.0)
    except (OSError, ConnectionError, TimeoutError, ValueError):
        return None


class Watch:
    """Polls the nodes; keeps the per-height state hashes and a bounded history."""

    def __init__(self, nodes: list[Node], addresses: list[str], out: Path) -> None:
        self.nodes = nodes
        self.addresses = [a.upper() for a in addresses]
        self.hashes: dict[int, str] = {}
        self.conflicts: list[str] = []
        self.history: list[tuple[float, list[int | None], int]] = []
        self.last: list[dict[str, Any] | None] = [None] * len(nodes)
        self.t0 = time.monotonic()
        self.log = (out / "status.jsonl").open("w")

    def peers_of(self, r: dict[str, Any] | None) -> set[int]:
        if not r:
            return set()
        out = set()
        for link in r.get("links", []):
            addr = str(link.get("peer", "")).upper()
            if addr in self.addresses:
                out.add(self.addresses.index(addr))
        return out

    def last_links(self) -> list[list[int] | None]:
        return [sorted(self.peers_of(r)) if r else None for r in self.last]

    def pairs(self) -> tuple[int, int]:
        """(pairs linked both ways, pairs linked one way only) at the last poll."""
        n = len(self.nodes)
        full = half = 0
        for a in range(n):
            for b in range(a + 1, n):
                ab = b in self.peers_of(self.last[a])
                ba = a in self.peers_of(self.last[b])
                full += ab and ba
                half += ab != ba
        return full, half

    async def poll(self) -> None:
        replies = await asyncio.gather(*(status(n.sock) for n in self.nodes))
        now = time.monotonic() - self.t0
        heights: list[int | None] = []
        for i, r in enumerate(replies):
            self.last[i] = r
            h = None
            if r and r.get("sessions"):
                s = r["sessions"][0]
                h = int(s["height"])
                digest = str(s["state_hash"])
                if self.hashes.setdefault(h, digest) != digest:
                    self.conflicts.append(f"height {h}: node{i} {digest} != {self.hashes[h]}")
            heights.append(h)
        full, half = self.pairs()
        self.history.append((now, heights, full))
        del self.history[:-2000]
        row = {
            "t": round(now, 1),
            "heights": heights,
            "pairs": full,
            "half_open": half,
            "links": [sorted(self.peers_of(r)) if r else None for r in replies],
            "health": [r.get("health") if r else None for r in replies],
        }
        self.log.write(json.dumps(row) + "\n")
        self.log.flush()

    def min_height(self) -> int | None:
        hs = self.history[-1][1] if self.history else []
        if not hs or any(h is None for h in hs):
            return None
        return min(h for h in hs if h is not None)

    def min_height_at(self, t: float) -> int | None:
        for when, hs, _ in reversed(self.history):
            if when <= t and hs and all(h is not None for h in hs):
                return min(h for h in hs if h is not None)
        return None


async def dbus_snapshot(label: str, out: Path) -> dict[str, Any]:
    """What bluetoothd shows: adapters (advertising instances), devices, GATT services."""
    from dbus_fast import BusType, Message
    from dbus_fast.aio import MessageBus

    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        reply = await bus.call(
            Message(
                destination="org.bluez",
                path="/",
                interface="org.freedesktop.DBus.ObjectManager",
                member="GetManagedObjects",
            )
        )
    finally:
        bus.disconnect()
    objects: dict[str, Any] = reply.body[0] if reply.body else {}
    view: dict[str, Any] = {"label": label, "adapters": {}, "devices": {}}
    for path, ifaces in sorted(objects.items()):
        if "org.bluez.LEAdvertisingManager1" in ifaces:
            adv = ifaces["org.bluez.LEAdvertisingManager1"]
            view["adapters"][path] = {
                "active_adverts": adv["ActiveInstances"].value,
                "supported_adverts": adv["SupportedInstances"].value,
            }
        if "org.bluez.Device1" in ifaces:
            d = ifaces["org.bluez.Device1"]
            services = [
                p
                for p, i in objects.items()
                if p.startswith(path + "/service") and "org.bluez.GattService1" in i
            ]
            mesh = [
                p
                for p in services
                if str(objects[p]["org.bluez.GattService1"]["UUID"].value).startswith(
                    SERVICE_UUID_HINT
                )
            ]
            view["devices"][path] = {
                "connected": d["Connected"].value,
                "services_resolved": d["ServicesResolved"].value,
                "gatt_services": len(services),
                "mesh_service": bool(mesh),
            }
    (out / f"dbus-{label}.json").write_text(json.dumps(view, indent=1, sort_keys=True))
    return view


async def foreign_write(adapter: str, peer_addr: str, payload: bytes) -> str:
    """A new process's D-Bus client writes to the peer's mesh characteristic on ``adapter``."""
    from dbus_fast import BusType, Message, MessageType
    from dbus_fast.aio import MessageBus
    from dbus_fast.signature import Variant

    dev = f"/org/bluez/{adapter}/dev_{peer_addr.replace(':', '_')}"
    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        reply = await bus.call(
            Message(
                destination="org.bluez",
                path="/",
                interface="org.freedesktop.DBus.ObjectManager",
                member="GetManagedObjects",
            )
        )
        objects: dict[str, Any] = reply.body[0]
        chars = [
            p
            for p, i in objects.items()
            if p.startswith(dev + "/service") and "org.bluez.GattCharacteristic1" in i
        ]
        if not chars:
            return f"no characteristic under {dev}"
        connected = objects[dev]["org.bluez.Device1"]["Connected"].value
        res = await bus.call(
            Message(
                destination="org.bluez",
                path=chars[0],
                interface="org.bluez.GattCharacteristic1",
                member="WriteValue",
                signature="aya{sv}",
                body=[payload, {"type": Variant("s", "command")}],
            )
        )
        ok = res.message_type != MessageType.ERROR
        return f"connected={connected} write {chars[0]} ok={ok} {res.body if not ok else ''}"
    finally:
        bus.disconnect()


async def _call(
    bus: Any, path: str, iface: str, member: str, sig: str = "", body: Any = None
) -> Any:
    from dbus_fast import Message, MessageType

    reply = await bus.call(
        Message(
            destination="org.bluez",
            path=path,
            interface=iface,
            member=member,
            signature=sig,
            body=body or [],
        )
    )
    if reply.message_type == MessageType.ERROR:
        raise RuntimeError(f"{member}: {reply.error_name} {reply.body}")
    return reply.body


async def probe_central(adapter: str, peer_addr: str) -> None:
    """A bare D-Bus central (no bleak): connect, subscribe, write, then wait to be killed."""
    from dbus_fast import BusType
    from dbus_fast.aio import MessageBus
    from dbus_fast.signature import Variant

    bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    apath = f"/org/bluez/{adapter}"
    dev = f"{apath}/dev_{peer_addr.replace(':', '_')}"
    om = "org.freedesktop.DBus.ObjectManager"
    props = "org.freedesktop.DBus.Properties"

    async def objects() -> dict[str, Any]:
        body = await _call(bus, "/", om, "GetManagedObjects")
        return dict(body[0])

    if dev not in await objects():
        await _call(bus, apath, "org.bluez.Adapter1", "StartDiscovery")
        for _ in range(60):
            await asyncio.sleep(0.5)
            if dev in await objects():
                break
        with contextlib.suppress(RuntimeError):
            await _call(bus, apath, "org.bluez.Adapter1", "StopDiscovery")
    for attempt in range(5):
        try:
            await _call(bus, dev, "org.bluez.Device1", "Connect")
            break
        except RuntimeError as e:
            print(f"probe: connect attempt {attempt}: {e}", flush=True)
            await asyncio.sleep(2)
    for _ in range(60):
        got = await _call(bus, dev, props, "Get", "ss", ["org.bluez.Device1", "ServicesResolved"])
        if got[0].value:
            break
        await asyncio.sleep(0.5)
    objs = await objects()
    chars = sorted(
        p
        for p, i in objs.items()
        if p.startswith(dev + "/") and "org.bluez.GattCharacteristic1" in i
    )
    mesh = [
        p
        for p in chars
        if str(objs[p]["org.bluez.GattCharacteristic1"]["UUID"].value).startswith("a1b2c3d4")
        or "notify" in objs[p]["org.bluez.GattCharacteristic1"]["Flags"].value
    ]
    char = (mesh or chars)[-1]
    await _call(bus, char, "org.bluez.GattCharacteristic1", "StartNotify")
    await _call(
        bus,
        char,
        "org.bluez.GattCharacteristic1",
        "WriteValue",
        "aya{sv}",
        [b"\x01probe-junk", {"type": Variant("s", "command")}],
    )
    print(f"probe: ready {char}", flush=True)
    while True:
        await asyncio.sleep(60)


def compare_blocks(n: int) -> tuple[int, list[str]]:
    """Compare every committed block two nodes both stored: (heights compared, conflicts)."""
    blocks: list[dict[int, bytes]] = []
    for i in range(n):
        db = WORK / f"node{i}" / "state.sqlite3"
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            rows = con.execute("SELECT height, block FROM blocks").fetchall()
            con.close()
        except sqlite3.Error:
            rows = []
        blocks.append({int(h): bytes(b) for h, b in rows})
    compared: set[int] = set()
    conflicts = []
    for a in range(n):
        for b in range(a + 1, n):
            for h in blocks[a].keys() & blocks[b].keys():
                compared.add(h)
                if blocks[a][h] != blocks[b][h]:
                    conflicts.append(f"block {h}: node{a} != node{b}")
    return len(compared), conflicts


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out)
    n = args.nodes
    WORK.mkdir(parents=True, exist_ok=True)
    addresses = adapter_addresses(n)
    progress(f"adapters {addresses}")
    idents = [Identity.generate() for _ in range(n)]
    validators = [x.signing_public.hex() for x in idents]
    extra_ble = json.loads(args.ble) if args.ble else {}
    nodes = [Node(i, out, args.verbose) for i in range(n)]
    for i, ident in enumerate(idents):
        (WORK / f"node{i}").mkdir(exist_ok=True)
        ident.save(WORK / f"node{i}" / "identity.key")
        new_key_signer_file(WORK / f"node{i}" / "identity.key", ident.signing_public)
        nodes[i].conf.write_text(node_config(i, validators, extra_ble))
    result: dict[str, Any] = {"nodes": n, "addresses": addresses, "events": []}
    t_start = time.monotonic()
    for node in nodes:
        node.start()
    watch = Watch(nodes, addresses, out)
    want = n * (n - 1) // 2
    t_links: float | None = None
    next_report = 0.0
    try:
        # Phase 1: until every pair is linked both ways (or the bound runs out).
        while time.monotonic() - t_start < args.link_wait:
            await watch.poll()
            if watch.pairs()[0] == want:
                t_links = time.monotonic() - t_start
                break
            exited = [x.i for x in nodes if x.proc is not None and x.proc.poll() is not None]
            if exited:
                result["events"].append(f"nodes {exited} exited during startup")
                break
            if time.monotonic() - t_start >= next_report:
                progress(f"waiting for links: {watch.history[-1][1:]}")
                next_report += 15
            await asyncio.sleep(args.poll)
        result["t_links_s"] = round(t_links, 1) if t_links is not None else None
        progress(f"links formed after {result['t_links_s']} s" if t_links else "links NOT formed")
        if args.scenario == "kill":  # bluetoothd's behaviour is the point, links or not
            await kill_scenario(args, nodes, watch, addresses, out, result)
        elif t_links is not None:
            h0 = watch.min_height() or 0
            t_play = time.monotonic()
            while time.monotonic() - t_play < args.duration:
                await asyncio.sleep(args.poll)
                await watch.poll()
                if time.monotonic() - t_play >= next_report - (t_play - t_start):
                    progress(f"play {time.monotonic() - t_play:5.0f}s {watch.history[-1][1:]}")
                    next_report += 15
            played = time.monotonic() - t_play
            h1 = watch.min_height() or 0
            result["heights_per_min"] = round((h1 - h0) * 60 / played, 1) if played else 0.0
            result["played_s"] = round(played, 1)
    finally:
        result["exit_codes"] = [x.stop() for x in nodes]
    full, half = watch.pairs()
    hmin = watch.min_height()
    t_now = watch.history[-1][0] if watch.history else 0.0
    earlier = watch.min_height_at(t_now - args.rising_window)
    compared, block_conflicts = compare_blocks(n)
    result.update(
        links=full,
        half_open=half,
        links_wanted=want,
        heights=hmin or 0,
        rising=hmin is not None and earlier is not None and hmin > earlier,
        hash_heights=len(watch.hashes),
        blocks_compared=compared,
        conflicts=watch.conflicts + block_conflicts,
        safety_ok=not watch.conflicts and not block_conflicts,
        wall_s=round(time.monotonic() - t_start, 1),
    )
    return result


async def kill_scenario(
    args: argparse.Namespace,
    nodes: list[Node],
    watch: Watch,
    addresses: list[str],
    out: Path,
    result: dict[str, Any],
) -> None:
    ev: list[str] = result["events"]
    t_play = time.monotonic()
    while time.monotonic() - t_play < 30:
        await asyncio.sleep(args.poll)
        await watch.poll()
    # A bare D-Bus central on hci2 links to node 1, subscribes and writes; then it is killed.
    probe = subprocess.Popen(
        [sys.executable, __file__, "--probe-central", "hci2", addresses[1], "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert probe.stdout is not None
    ready = ""
    t_probe = time.monotonic()
    while time.monotonic() - t_probe < 90:
        line = await asyncio.to_thread(probe.stdout.readline)
        if not line:
            break
        ev.append(line.strip())
        if line.startswith("probe: ready"):
            ready = line.strip()
            break
    await dbus_snapshot("probe-up", out)
    probe.kill()
    probe.wait()
    ev.append(f"probe central killed with SIGKILL ({'after ' + ready if ready else 'never ready'})")
    await asyncio.sleep(1)
    await dbus_snapshot("probe-kill+1s", out)
    await asyncio.sleep(9)
    await dbus_snapshot("probe-kill+10s", out)
    await dbus_snapshot("before-kill", out)
    ev.append(f"before kill: heights {watch.history[-1][1]} links {watch.pairs()}")
    nodes[0].kill9()
    t_kill = time.monotonic()
    progress("node0 killed with SIGKILL")
    for label, at in (("kill+1s", 1), ("kill+5s", 5), ("kill+15s", 15), ("kill+40s", 40)):
        while time.monotonic() - t_kill < at:
            await asyncio.sleep(0.5)
        await dbus_snapshot(label, out)
        await watch.poll()
        ev.append(f"{label}: heights {watch.history[-1][1]} links {watch.last_links()}")
        if label == "kill+5s":
            before = watch.last[1]["mesh"] if watch.last[1] else {}
            msg = await foreign_write("hci0", addresses[1], b"\x01\x02junk-from-a-new-process")
            ev.append(f"foreign write from a new process on hci0 to node1: {msg}")
            await asyncio.sleep(3)
            await watch.poll()
            after = watch.last[1]["mesh"] if watch.last[1] else {}
            diff = {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}
            ev.append(f"node1 mesh counters that changed after it: {diff}")
    nodes[0].start()
    t_restart = time.monotonic()
    progress("node0 restarted")
    rejoined: float | None = None
    h_restart = None
    while time.monotonic() - t_restart < args.rejoin_wait:
        await asyncio.sleep(args.poll)
        await watch.poll()
        hs = watch.history[-1][1]
        if h_restart is None and hs[1] is not None:
            h_restart = hs[1]
        if (
            rejoined is None
            and hs[0] is not None
            and h_restart is not None
            and hs[0] > h_restart
            and len(watch.peers_of(watch.last[0])) == len(nodes) - 1
        ):
            rejoined = time.monotonic() - t_restart
            ev.append(f"node0 rejoined {rejoined:.1f}s after restart: heights {hs}")
            break
    await dbus_snapshot("after-restart", out)
    ev.append(f"after restart: heights {watch.history[-1][1]} links {watch.last_links()}")
    result["rejoin_s"] = round(rejoined, 1) if rejoined is not None else None
    t_end = time.monotonic()
    while time.monotonic() - t_end < 40:
        await asyncio.sleep(args.poll)
        await watch.poll()


def block_digests(i: int) -> dict[str, str]:
    db = WORK / f"node{i}" / "state.sqlite3"
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        rows = con.execute("SELECT height, block FROM blocks").fetchall()
        con.close()
    except sqlite3.Error:
        rows = []
    return {str(int(h)): hashlib.sha256(bytes(b)).hexdigest() for h, b in rows}


async def one_node(args: argparse.Namespace) -> int:
    """One VM, one node: publish, wait for the others, run, report rows until told to stop."""
    out, ex, i, n = Path(args.out), Path(args.exchange), args.node, args.nodes
    WORK.mkdir(parents=True, exist_ok=True)
    (address,) = adapter_addresses(1)
    ident = Identity.generate()
    (WORK / f"node{i}").mkdir(exist_ok=True)
    ident.save(WORK / f"node{i}" / "identity.key")
    # a new key has signed nothing (as `ble-bridge keygen` says), or the node catches up first
    new_key_signer_file(WORK / f"node{i}" / "identity.key", ident.signing_public)
    mine = {"address": address, "validator": ident.signing_public.hex()}
    tmp = ex / f".node{i}.json"
    tmp.write_text(json.dumps(mine))
    tmp.rename(ex / f"node{i}.json")
    progress(f"node{i} adapter {address}; waiting for {n - 1} other node(s)")
    t0 = time.monotonic()
    peers: list[dict[str, str]] = []
    while time.monotonic() - t0 < args.link_wait:
        try:
            peers = [json.loads((ex / f"node{k}.json").read_text()) for k in range(n)]
            break
        except (OSError, ValueError):
            await asyncio.sleep(0.5)
    if len(peers) != n:
        progress("the other nodes never published their keys")
        return 3
    extra_ble = json.loads(args.ble) if args.ble else {}
    node = Node(i, out, args.verbose)
    node.conf.write_text(node_config(i, [p["validator"] for p in peers], extra_ble, adapter=0))
    node.start()
    progress(f"node{i} started")
    rows = (out / "status.jsonl").open("w")
    kills = 0
    try:
        while not (ex / "stop").exists() and time.monotonic() - t0 < args.bound:
            if (ex / f"kill{i}.{kills + 1}").exists():
                kills += 1
                node.kill9()
                rows.write(json.dumps({"wall": round(time.time(), 2), "killed": kills}) + "\n")
                node.start()
                rows.write(json.dumps({"wall": round(time.time(), 2), "restarted": kills}) + "\n")
                rows.flush()
                progress(f"node{i} killed with SIGKILL and restarted ({kills})")
            r = await status(node.sock)
            row: dict[str, Any] = {"wall": round(time.time(), 2), "up": r is not None}
            if r is not None:
                s = r["sessions"][0] if r.get("sessions") else None
                row.update(
                    height=int(s["height"]) if s else None,
                    state_hash=str(s["state_hash"]) if s else None,
                    links=sorted(str(li.get("peer", "")).upper() for li in r.get("links", [])),
                    health=r.get("health"),
                    issues=r.get("issues", []),
                )
            if node.proc is not None and node.proc.poll() is not None:
                row["exited"] = node.proc.returncode
            rows.write(json.dumps(row) + "\n")
            rows.flush()
            await asyncio.sleep(args.poll)
    finally:
        code = node.stop()
        rows.write(json.dumps({"wall": round(time.time(), 2), "stopped": code}) + "\n")
        rows.close()
        (out / "blocks.json").write_text(json.dumps(block_digests(i)))
    progress(f"node{i} stopped (exit code {code})")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--node", type=int, default=None, help="one-VM-per-node: this VM's node")
    p.add_argument("--exchange", default="", help="one-VM-per-node: the shared folder")
    p.add_argument("--bound", type=float, default=900.0, help="one-VM-per-node: run at most (s)")
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--duration", type=float, default=90.0, help="play after links formed (s)")
    p.add_argument("--link-wait", type=float, default=180.0, help="bound for all links (s)")
    p.add_argument("--rising-window", type=float, default=30.0)
    p.add_argument("--rejoin-wait", type=float, default=120.0)
    p.add_argument("--poll", type=float, default=2.0)
    p.add_argument("--scenario", choices=["play", "kill"], default="play")
    p.add_argument("--verbose", type=int, default=1, choices=[1, 2], help="node -v count")
    p.add_argument("--ble", default="", help="extra [ble] keys as JSON")
    p.add_argument("--out", required=True)
    p.add_argument("--probe-central", nargs=2, metavar=("ADAPTER", "PEER"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.probe_central:
        asyncio.run(probe_central(*args.probe_central))
        return 0
    if args.node is not None:
        return asyncio.run(one_node(args))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    result = asyncio.run(main_async(args))
    Path(args.out, "result.json").write_text(json.dumps(result, indent=1))
    progress(
        f"result nodes={result['nodes']} links={result['links']} heights={result['heights']} "
        f"rising={result['rising']} safety_ok={result['safety_ok']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
