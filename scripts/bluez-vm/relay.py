"""The "air" VM of the one-VM-per-node form: one btvirt LE server, its controllers on serial ports.

``btvirt -s`` makes one emulated LE controller per client of its ``/tmp/bt-server-le`` socket,
all on one emulated air. It needs the kernel's AF_ALG crypto sockets, which the host's
container lacks, so it runs in a small VM of its own; this relays virtio-serial port ``n<k>``
(k = 0..N-1; the host wires it to the second serial port of node k's VM, whose kernel attaches
it with btattach) to one client connection of that socket, bytes both ways, until killed.
(virtio ports, not more ISA serial ports: ISA ports 3 and 4 share edge-triggered IRQs with
ports 1 and 2, and bytes were lost.)

Towards btvirt the byte stream is cut into whole H4 packets, one send() each: btvirt 5.66's
server reads ACL headers without checking that all 4 bytes arrived and keeps partial command
headers in a buffer shared by all clients, so a packet split across reads (as a serial stream
splits them) desynchronises it and ATT requests vanish.

    python3 relay.py N        (system Python, standard library only)

In each node's VM, ``relay.py --vhci /dev/ttyS1`` is the other end: it creates the node's
controller on ``/dev/vhci`` and relays it to the serial port (whole H4 packets both ways; vhci
reads and writes one packet at a time). Not ``btattach`` (hci_uart): Debian 12's kernel (6.1)
lets a controller initiate an LE connection while it is peripheral on another only when the
driver sets HCI_QUIRK_VALID_LE_STATES, which vhci does and hci_uart's H4 does not, so with
btattach a node holding an inbound link never connected out and a triangle could deadlock
(newer kernels trust the controller's LE states unless told they are broken, as on Pi OS).
"""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import sys
import time
from pathlib import Path


def port(name: str) -> str:
    for entry in Path("/sys/class/virtio-ports").glob("*"):
        if (entry / "name").read_text().strip() == name:
            return f"/dev/{entry.name}"
    raise FileNotFoundError(f"no virtio port {name}")


H4_HEADER = {1: (3, 2, 1), 2: (4, 2, 2), 3: (3, 2, 1), 4: (2, 1, 1), 5: (4, 2, 2)}
"""H4 packet type -> (header length, offset of the length field, its size)."""


class Framer:
    """Cuts an H4 byte stream into whole packets."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out = []
        while self.buf:
            kind = self.buf[0]
            if kind not in H4_HEADER:
                print(f"relay: dropping byte {kind:#x} (not an H4 packet type)", flush=True)
                del self.buf[0]
                continue
            hlen, at, size = H4_HEADER[kind]
            if len(self.buf) < 1 + hlen:
                break
            body = int.from_bytes(self.buf[1 + at : 1 + at + size], "little")
            if kind == 5:
                body &= 0x3FFF
            total = 1 + hlen + body
            if len(self.buf) < total:
                break
            out.append(bytes(self.buf[:total]))
            del self.buf[:total]
        return out


def main(n: int) -> int:
    sel = selectors.DefaultSelector()
    pairs: dict[int, int] = {}
    framers: dict[int, Framer] = {}
    socks = []
    subprocess.run(["modprobe", "virtio_console"], check=False)
    ports = set()
    for k in range(n):
        for _ in range(100):
            try:
                path = port(f"n{k}")
                break
            except (FileNotFoundError, OSError):
                time.sleep(0.1)
        else:
            print(f"relay: no virtio port n{k}", flush=True)
            return 1
        fd = os.open(path, os.O_RDWR)
        ports.add(fd)
        framers[fd] = Framer()
        for _ in range(100):
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect("/tmp/bt-server-le")
                break
            except OSError:
                time.sleep(0.1)
        else:
            print(f"relay: no btvirt server for port n{k}", flush=True)
            return 1
        socks.append(s)
        pairs[fd] = s.fileno()
        pairs[s.fileno()] = fd
        sel.register(fd, selectors.EVENT_READ)
        sel.register(s.fileno(), selectors.EVENT_READ)
        print(f"relay: {path} (n{k}) <-> controller {k + 1}", flush=True)
    socks_by_fd = {s.fileno(): s for s in socks}
    ready = Path("/mnt/exchange/air-ready")
    if ready.parent.is_dir():
        ready.write_text("ready\n")  # the nodes' VMs attach their controllers now
    while True:
        for key, _ in sel.select():
            src = key.fd
            try:
                data = os.read(src, 4096)
            except BlockingIOError:
                continue
            if not data:
                if src in ports:  # the node's VM is not connected (yet, or any more)
                    time.sleep(0.05)
                    continue
                print(f"relay: btvirt closed controller fd {src}", flush=True)
                return 2
            if src in ports:
                for packet in framers[src].feed(data):
                    socks_by_fd[pairs[src]].sendall(packet)
                continue
            view = memoryview(data)
            while view:
                view = view[os.write(pairs[src], view) :]


def vhci(serial: str) -> int:
    """A node's controller: /dev/vhci <-> the serial port wired to the air VM."""
    import termios
    import tty

    tty_fd = os.open(serial, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(tty_fd)
    attrs = termios.tcgetattr(tty_fd)
    attrs[4] = attrs[5] = termios.B115200
    termios.tcsetattr(tty_fd, termios.TCSANOW, attrs)
    v = os.open("/dev/vhci", os.O_RDWR)
    os.write(v, bytes([0xFF, 0x00]))  # vendor packet: create a primary controller
    framer = Framer()
    sel = selectors.DefaultSelector()
    sel.register(v, selectors.EVENT_READ)
    sel.register(tty_fd, selectors.EVENT_READ)
    created = False
    while True:
        for key, _ in sel.select():
            data = os.read(key.fd, 4096)
            if key.fd == v:
                if data[:1] == b"\xff":  # vendor event: the controller's index
                    if not created:
                        created = True
                        print(f"relay: vhci controller created ({data.hex()})", flush=True)
                    continue
                view = memoryview(data)
                while view:
                    view = view[os.write(tty_fd, view) :]
            else:
                for packet in framer.feed(data):
                    try:
                        os.write(v, packet)
                    except OSError as e:  # the kernel refused it: say so, go on
                        print(f"relay: vhci refused {packet[:8].hex()}: {e}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--vhci"]:
        sys.exit(vhci(sys.argv[2]))
    sys.exit(main(int(sys.argv[1])))
