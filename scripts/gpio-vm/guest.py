"""GPIO VM (scripts/test-gpio-vm.sh): the project's GpiodPanelIo on real GPIO lines.

Runs in the guest as root with the project and its dependencies on PYTHONPATH. A gpio-sim
chip (the module built by scripts/gpio-vm/module.sh) is made through configfs: one bank of 28
lines labelled like a Pi's header chip. The simulated outside world is gpio-sim's sysfs:
writing ``pull-down`` to the button line's ``pull`` is a button to ground being pressed
(``pull-up``: released), and the LED line's ``value`` is what the output line drives. An LED
sampler runs in its own process, so the node's timing is not the sampler's.

Checks (out/checks.txt, "ok NAME" / "FAIL NAME") and measurements (out/measure.txt):
  1. the chip: found by its label (hardware.gpio.find_chip, the board-profile path);
  2. GpiodPanelIo alone: the request's pull-up reaches the line, set_led drives the output line
     (and active-low inverts it), a pull-down is a press edge (fd readable, kernel timestamp on
     the monotonic clock), pull-up a release, a busy line is a GpioError;
  3. PanelService + Panel + GpiodPanelIo (hardware/service.py): a short press gives the link
     count readout on the LED, a 3 s press opens the pairing window while still held, the
     pairing pattern blinks 0.25/0.25 s;
  4. the node: ``ble-bridge run --transport sim`` with ``[hardware] backend = "gpiod"`` on the
     chip: a long press opens the pairing window (``pair --status``: origin button), the LED
     blinks the pairing pattern, ``pair --close`` ends it, a short press shows the link count,
     SIGTERM leaves the LED dark and the lines free.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

H = Path("/mnt/host")
OUT = H / "out"
CFS = Path("/sys/kernel/config/gpio-sim")
LABEL = "pinctrl-gpio-vm"
BUTTON, LED = 17, 27
LINES = 28
PY = sys.executable

checks: list[tuple[bool, str]] = []


def say(msg: str) -> None:
    line = f"[guest {time.clock_gettime(time.CLOCK_BOOTTIME):.1f}s] {msg}"
    print(line, flush=True)
    with open("/dev/console", "w") as con:
        print(line, file=con)


def check(name: str, ok: bool, detail: object = "") -> bool:
    checks.append((ok, name))
    with open(OUT / "checks.txt", "a") as f:
        f.write(f"{'ok  ' if ok else 'FAIL'} {name}\n")
    if not ok:
        say(f"FAIL {name} {detail}")
    return ok


def measure(key: str, value: object) -> None:
    with open(OUT / "measure.txt", "a") as f:
        f.write(f"{key}={value}\n")
    say(f"measured {key}={value}")


# --- the simulated chip -------------------------------------------------------------------------


class SimChip:
    def __init__(self, name: str = "handheld") -> None:
        subprocess.run(["modprobe", "configfs"], check=False)
        if not CFS.parent.is_dir() or not any(CFS.parent.iterdir()):
            subprocess.run(["mount", "-t", "configfs", "none", str(CFS.parent)], check=True)
        subprocess.run(["insmod", str(H / "gpio-sim.ko")], check=True)
        self.dir = CFS / name
        bank = self.dir / "gpio-bank0"
        bank.mkdir(parents=True)
        (bank / "num_lines").write_text(f"{LINES}\n")
        (bank / "label").write_text(f"{LABEL}\n")
        (self.dir / "live").write_text("1\n")
        self.dev_name = (self.dir / "dev_name").read_text().strip()
        self.chip_name = (bank / "chip_name").read_text().strip()
        self.path = f"/dev/{self.chip_name}"
        self.sysfs = Path("/sys/devices/platform") / self.dev_name / self.chip_name

    def line(self, n: int) -> Path:
        return self.sysfs / f"sim_gpio{n}"

    def value(self, n: int) -> int:
        return int((self.line(n) / "value").read_text())

    def pull(self, n: int, up: bool) -> None:
        (self.line(n) / "pull").write_text("pull-up\n" if up else "pull-down\n")

    def press(self) -> float:
        self.pull(BUTTON, up=False)
        return time.monotonic()

    def release(self) -> float:
        self.pull(BUTTON, up=True)
        return time.monotonic()


# --- the LED, sampled in its own process ----------------------------------------------------------


def sample_main(path: str, seconds: float, out: str) -> int:
    """Transitions of a sysfs value file: (monotonic s, level) lines, every ~2 ms."""
    end = time.monotonic() + seconds
    last = -1
    rows = []
    with open(path) as f:
        Path(out + ".ready").touch()
        while (now := time.monotonic()) < end:
            f.seek(0)
            v = int(f.read())
            if v != last:
                rows.append((now, v))
                last = v
            time.sleep(0.002)
    rows.append((time.monotonic(), -1))  # the end of the last segment
    Path(out).write_text("".join(f"{t:.4f} {v}\n" for t, v in rows))
    return 0


class Sampler:
    def __init__(self, chip: SimChip, seconds: float, tag: str) -> None:
        self.out = OUT / f"led-{tag}.txt"
        self.proc = subprocess.Popen(
            [PY, __file__, "sample", str(chip.line(LED) / "value"), str(seconds), str(self.out)]
        )
        ready = Path(f"{self.out}.ready")
        for _ in range(300):  # Python starts slowly under TCG: wait until it samples
            if ready.exists() or self.proc.poll() is not None:
                break
            time.sleep(0.1)

    def segments(self) -> list[tuple[float, int, float]]:
        """(start, level, seconds) of every complete level segment."""
        self.proc.wait(timeout=120)
        rows = [tuple(map(float, ln.split())) for ln in self.out.read_text().splitlines()]
        return [(t0, int(v), t1 - t0) for (t0, v), (t1, _) in itertools.pairwise(rows)]


def blink(segs: list[tuple[float, int, float]]) -> tuple[float, float, int]:
    """Median on and off durations of the inner segments (first and last are cut) and their count."""
    inner = segs[1:-1]
    on = [d for _, v, d in inner if v == 1]
    off = [d for _, v, d in inner if v == 0]
    if not on or not off:
        return 0.0, 0.0, 0
    return statistics.median(on), statistics.median(off), len(inner)


def is_pairing(on: float, off: float, n: int) -> bool:
    return n >= 6 and abs(on - 0.25) <= 0.08 and abs(off - 0.25) <= 0.08


def readout_blinks(segs: list[tuple[float, int, float]], after: float) -> int | None:
    """The link-count readout after ``after``: a dark beat (0.6 s; longer when the pattern
    before or after it is dark too), N short blinks (0.2 s on, 0.3 s off) or, for no links, one
    1 s blink, then a dark beat. Its N, or None when no such run is there."""
    s = [x for x in segs if x[0] + x[2] > after]
    for i, (_, v, d) in enumerate(s):
        if v != 0 or d < 0.45:
            continue
        if i + 2 < len(s) and 0.8 <= s[i + 1][2] <= 1.3 and s[i + 2][2] >= 0.45:
            return 0
        n, j = 0, i + 1
        while j + 1 < len(s) and s[j][1] == 1 and 0.1 <= s[j][2] <= 0.35:
            n += 1
            gap = s[j + 1][2]
            if gap >= 0.45:  # the closing beat
                return n
            if gap < 0.2:
                break
            j += 2
    return None


# --- 2: GpiodPanelIo alone ---------------------------------------------------------------------


def io_checks(chip: SimChip) -> None:
    from hardware.gpio import GpiodPanelIo, GpioError, find_chip

    check("find_chip finds the header chip by its label", find_chip(LABEL) == chip.path)
    io = GpiodPanelIo(chip.path, BUTTON, LED)
    try:
        check("the request's pull-up reaches the button line (level 1)", chip.value(BUTTON) == 1)
        check("button not pressed at rest (active low)", io.button() is False)
        check("LED line low at start", chip.value(LED) == 0)
        io.set_led(True)
        check("set_led(True) drives the LED line high", chip.value(LED) == 1)
        io.set_led(False)
        check("set_led(False) drives it low", chip.value(LED) == 0)
        fd = io.fileno()
        assert fd is not None
        t0 = chip.press()
        readable = bool(select.select([fd], [], [], 5.0)[0])
        check("a pull-down on the button line makes the request fd readable", readable)
        edges = io.read_edges()
        check("one press edge", [p for _, p in edges] == [True], edges)
        stamp_ok = bool(edges) and abs(edges[0][0] - t0) < 2.0
        check("edge timestamp on the monotonic clock", stamp_ok, (edges, t0))
        check("button() pressed while pulled down", io.button() is True)
        chip.release()
        select.select([fd], [], [], 5.0)
        edges = io.read_edges()
        check("one release edge", [p for _, p in edges] == [False], edges)
        try:
            GpiodPanelIo(chip.path, BUTTON, None)
            busy = False
        except GpioError:
            busy = True
        check("a second request of a held line is a GpioError", busy)
    finally:
        io.close()
    inv = GpiodPanelIo(chip.path, None, LED, led_active_low=True)
    try:
        inv.set_led(True)
        check("active-low LED: on drives the line low", chip.value(LED) == 0)
        inv.set_led(False)
        check("active-low LED: off drives it high", chip.value(LED) == 1)
    finally:
        inv.close()


# --- 3: the panel service on the real lines -----------------------------------------------------


async def service_checks(chip: SimChip) -> None:
    from hardware.gpio import GpiodPanelIo
    from hardware.panel import Action, Facts, Panel, PanelConfig, Press
    from hardware.service import PanelService

    actions: list[tuple[float, Action]] = []
    pairing = False

    def facts() -> Facts:
        return Facts(links=2, at_table=True, pairing=pairing)

    def on_action(a: Action) -> None:
        nonlocal pairing
        actions.append((time.monotonic(), a))
        if a is Action.OPEN_PAIRING:
            pairing = True

    panel = Panel(PanelConfig(show_s=2.0))
    svc = PanelService(GpiodPanelIo(chip.path, BUTTON, LED), panel, facts, on_action)
    await svc.start()
    try:
        await asyncio.sleep(1.0)
        check("at a table: LED solid on", chip.value(LED) == 1)
        # short press: 0.3 s down
        sampler = Sampler(chip, 6.0, "service-short")
        await asyncio.sleep(0.5)
        chip.press()
        await asyncio.sleep(0.3)
        released = chip.release()
        await asyncio.sleep(5.5)
        segs = await asyncio.to_thread(sampler.segments)
        n = readout_blinks(segs, released - 0.5)
        measure("service_readout_blinks", n)
        check("short press: READOUT", [a for _, a in actions] == [Action.READOUT], actions)
        check("short press: the LED shows 2 links as 2 blinks", n == 2, segs)
        check("after the readout: solid again", chip.value(LED) == 1)
        # long press: held 4.5 s
        sampler = Sampler(chip, 9.0, "service-long")
        pressed = chip.press()
        await asyncio.sleep(4.5)
        released = chip.release()
        opened = [t for t, a in actions if a is Action.OPEN_PAIRING]
        took = opened[0] - pressed if opened else -1.0
        measure("service_long_press_s", f"{took:.2f}")
        check("long press: OPEN_PAIRING once", len(opened) == 1, actions)
        check("long press: reported at 3 s while still held", took >= 2.9 and opened[0] < released)
        await asyncio.sleep(4.0)
        segs = [s for s in await asyncio.to_thread(sampler.segments) if s[0] > released]
        on, off, count = blink(segs)
        measure("service_pairing_blink", f"{on:.3f}/{off:.3f}x{count}")
        check("pairing: the LED blinks 0.25/0.25 s", is_pairing(on, off, count), segs)
        check(
            "one short and one long press counted", panel.presses == {Press.SHORT: 1, Press.LONG: 1}
        )
        check("no panel errors", svc.errors == 0)
    finally:
        await svc.stop()
    check("service stop leaves the LED dark", chip.value(LED) == 0)


# --- 4: the node ----------------------------------------------------------------------------------


def node_checks(chip: SimChip) -> None:
    run = Path("/run/bb")
    run.mkdir(mode=0o700, exist_ok=True)
    data = Path("/tmp/node")
    data.mkdir(exist_ok=True)
    sock = run / "control.sock"
    cfg = data / "config.toml"
    cfg.write_text(
        f'[node]\ndata_dir = "{data}"\ncontrol_socket = "{sock}"\ntransport = "sim"\n'
        f'sim_peers = 1\n\n[hardware]\nbackend = "gpiod"\nchip = "{chip.path}"\n'
        f"button_pin = {BUTTON}\nled_pin = {LED}\n\n"
        '[pairing]\nbutton_code = "493021"\nwindow_s = 600.0\n'
    )
    log = open(OUT / "node.log", "w")  # noqa: SIM115 (open for the node's life)
    node = subprocess.Popen(
        [PY, "-m", "ble_bridge.cli", "run", "--config", str(cfg)], stdout=log, stderr=log
    )

    from ble_bridge.control import request

    def ctl(cmd: str) -> Any:
        """One control request, in this process (a CLI process per poll is seconds under TCG)."""
        try:
            return asyncio.run(request(sock, {"cmd": cmd}, timeout=30.0))
        except (OSError, TimeoutError, ValueError):
            return None

    def cli(*args: str) -> Any:
        """The ble-bridge CLI itself, as an operator runs it."""
        r = subprocess.run(
            [PY, "-m", "ble_bridge.cli", *args, "--socket", str(sock), "--json"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        return json.loads(r.stdout) if r.returncode == 0 else None

    try:
        t0 = time.monotonic()
        status = None
        while time.monotonic() - t0 < 240 and node.poll() is None:
            status = ctl("status")
            if status is not None:
                break
            time.sleep(2)
        measure("node_ready_s", f"{time.monotonic() - t0:.1f}")
        if not check("node serves its control socket", status is not None):
            return
        text = (OUT / "node.log").read_text()
        check(
            "node log: panel backend=gpiod on the chip",
            "backend=gpiod" in text and chip.path in text,
        )
        # long press
        pressed = chip.press()
        opened = None
        while time.monotonic() - pressed < 20:
            st = ctl("pair_status")
            if st is not None and st.get("open"):
                opened = time.monotonic() - pressed
                break
            time.sleep(0.3)
        chip.release()
        measure("node_long_press_s", f"{opened:.1f}" if opened is not None else "none")
        st = cli("pair", "--status") or {}
        check(
            "node: a long press opens the pairing window", opened is not None and opened >= 2.9, st
        )
        check("node: pair --status (the CLI) shows it open", st.get("open") is True, st)
        check(
            "node: window opened by the button with its code",
            st.get("origin") == "button" and st.get("code") == "493021",
            st,
        )
        sampler = Sampler(chip, 4.0, "node-pairing")
        segs = sampler.segments()
        on, off, count = blink(segs)
        measure("node_pairing_blink", f"{on:.3f}/{off:.3f}x{count}")
        check("node: the LED blinks the pairing pattern", is_pairing(on, off, count), segs)
        ctl("pair_close")
        time.sleep(1.0)
        sampler = Sampler(chip, 4.0, "node-closed")
        segs = sampler.segments()
        on, off, count = blink(segs)
        check(
            "node: after pair --close the pairing pattern is gone",
            not is_pairing(on, off, count),
            segs,
        )
        status = ctl("status") or {}
        links = len(status.get("links", []))
        measure("node_links", links)
        sampler = Sampler(chip, 6.0, "node-short")
        time.sleep(0.5)
        chip.press()
        time.sleep(0.3)
        released = chip.release()
        n = readout_blinks(sampler.segments(), released - 0.5)
        measure("node_readout_blinks", n)
        check("node: a short press shows the link count", n == min(links, 9), (n, links))
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            rc = node.wait(timeout=60)
        except subprocess.TimeoutExpired:
            node.kill()
            rc = node.wait()
        log.close()
    check("node: SIGTERM exits 0", rc == 0, rc)
    check("node: LED dark after stop", chip.value(LED) == 0)
    from hardware.gpio import GpiodPanelIo

    try:
        GpiodPanelIo(chip.path, BUTTON, LED).close()
        free = True
    except Exception:
        free = False
    check("node: lines free again after stop", free)
    text = (OUT / "node.log").read_text()
    check("node: no traceback in its log", "Traceback" not in text)


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd")
    s = sub.add_parser("sample")
    s.add_argument("path")
    s.add_argument("seconds", type=float)
    s.add_argument("out")
    args = ap.parse_args()
    if args.cmd == "sample":
        return sample_main(args.path, args.seconds, args.out)
    OUT.mkdir(exist_ok=True)
    (OUT / "checks.txt").write_text("")
    (OUT / "measure.txt").write_text("")
    say(f"kernel {os.uname().release}")
    try:
        chip = SimChip()
    except (OSError, subprocess.CalledProcessError) as exc:
        check("gpio-sim chip made through configfs", False, exc)
        return 1
    check("gpio-sim chip made through configfs", Path(chip.path).exists(), chip.path)
    measure("chip", f"{chip.path}:{chip.dev_name}")
    for part in (lambda: io_checks(chip), lambda: asyncio.run(service_checks(chip)),
                 lambda: node_checks(chip)):  # fmt: skip
        try:
            part()
        except Exception as exc:  # a crash is a failed check, and the next part still runs
            import traceback

            traceback.print_exc()
            check(f"no exception ({exc.__class__.__name__}: {exc})", False)
    with contextlib.suppress(OSError):
        (chip.dir / "live").write_text("0\n")
    failed = sum(1 for ok, _ in checks if not ok)
    say(f"done: {len(checks) - failed} ok, {failed} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
