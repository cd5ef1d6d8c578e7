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


H4_HEADER = {1: (3, 2, 1), 2: (4, 2, 2), 3: (3, 2, 1), 5: (4, 2, 2)}
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


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
