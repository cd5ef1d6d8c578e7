"""Print a btmon capture (btsnoop, monitor format) as one line per record, with timestamps.

``btmon -r`` of BlueZ 5.66 segfaults on the captures of the VM tier (at the first LE Create
Connection of a btvirt controller), so this reads the few things the tier's diagnosis needs:
bluetoothd's log lines (they are in the capture, with their time), HCI commands and events by
name or number, mgmt commands and events, and ATT opcodes on ACL data.

    python3 scripts/bluez-vm/snoop.py hci.btsnoop [--grep TEXT]
"""

from __future__ import annotations

import argparse
import struct
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

EPOCH_DELTA_US = 0x00DCDDB30F2F8000  # btsnoop time: microseconds since 0000-01-01

HCI_CMD = {
    0x0406: "Disconnect",
    0x0C03: "Reset",
    0x2005: "LE Set Random Address",
    0x2006: "LE Set Adv Parameters",
    0x2008: "LE Set Adv Data",
    0x2009: "LE Set Scan Rsp Data",
    0x200A: "LE Set Adv Enable",
    0x200B: "LE Set Scan Parameters",
    0x200C: "LE Set Scan Enable",
    0x200D: "LE Create Connection",
    0x200E: "LE Create Connection Cancel",
    0x2016: "LE Read Remote Features",
    0x2022: "LE Set Data Length",
    0x2035: "LE Set Adv Set Random Address",
    0x2036: "LE Set Ext Adv Parameters",
    0x2037: "LE Set Ext Adv Data",
    0x2038: "LE Set Ext Scan Rsp Data",
    0x2039: "LE Set Ext Adv Enable",
    0x2041: "LE Set Ext Scan Parameters",
    0x2042: "LE Set Ext Scan Enable",
    0x2043: "LE Ext Create Connection",
}
HCI_EVT = {0x05: "Disconnect Complete", 0x0E: "Command Complete", 0x0F: "Command Status"}
LE_SUB = {
    0x01: "LE Connection Complete",
    0x02: "LE Advertising Report",
    0x03: "LE Connection Update Complete",
    0x04: "LE Read Remote Features Complete",
    0x07: "LE Data Length Change",
    0x0A: "LE Enhanced Connection Complete",
}
MGMT_EVT = {
    0x000B: "Device Connected",
    0x000C: "Device Disconnected",
    0x000D: "Connect Failed",
    0x0012: "Device Found",
    0x0013: "Discovering",
    0x0023: "Advertising Added",
    0x0024: "Advertising Removed",
}
MGMT_CMD = {
    0x0005: "Set Powered",
    0x000E: "Disconnect",
    0x0023: "Start Discovery",
    0x0024: "Stop Discovery",
    0x003A: "Start Service Discovery",
    0x003E: "Add Advertising",
    0x003F: "Remove Advertising",
}


def records(data: bytes) -> Iterator[tuple[float, int, int, bytes]]:
    """(unix time, controller index, monitor opcode, payload) per record."""
    if data[:8] != b"btsnoop\0":
        raise ValueError("not a btsnoop file")
    pos = 16
    while pos + 24 <= len(data):
        _orig, incl, flags, _drops, ts = struct.unpack(">IIIIq", data[pos : pos + 24])
        pos += 24
        payload = data[pos : pos + incl]
        pos += incl
        yield (ts - EPOCH_DELTA_US) / 1e6, flags >> 16, flags & 0xFFFF, payload


def describe(op: int, p: bytes) -> str | None:
    if op == 13 and len(p) >= 2:  # user logging (bluetoothd's log)
        n = p[1]
        return "= " + p[2 + n :].rstrip(b"\0").decode(errors="replace").strip()
    if op == 2 and len(p) >= 3:
        code = struct.unpack_from("<H", p)[0]
        extra = ""
        if code == 0x200C and len(p) >= 5:
            extra = f" enable={p[3]} filter_dup={p[4]}"
        if code == 0x200A and len(p) >= 4:
            extra = f" enable={p[3]}"
        if code == 0x2005 and len(p) >= 9:
            extra = " addr=" + ":".join(f"{b:02X}" for b in reversed(p[3:9]))
        if code == 0x200B and len(p) >= 10:
            extra = f" type={p[3]} own_addr_type={p[8]}"
        if code == 0x200D and len(p) >= 13:
            extra = " peer=" + ":".join(f"{b:02X}" for b in reversed(p[9:15]))
            extra += f" filter={p[7]} own_addr_type={p[15] if len(p) > 15 else '?'}"
        return f"< {HCI_CMD.get(code, hex(code))}{extra}"
    if op == 3 and len(p) >= 2:
        code = p[0]
        if code == 0x3E and len(p) >= 3:
            sub = p[2]
            extra = ""
            if sub == 0x02 and len(p) >= 12:
                addr = ":".join(f"{b:02X}" for b in reversed(p[6:12]))
                extra = f" type={p[4]} {addr}"
            if sub in (0x01, 0x0A) and len(p) >= 6:
                extra = f" status={p[3]:#x} handle={struct.unpack_from('<H', p, 4)[0]}"
            return f"> {LE_SUB.get(sub, hex(sub))}{extra}"
        if code in (0x0E, 0x0F) and len(p) >= 5:
            status = p[2] if code == 0x0F else (p[5] if len(p) > 5 else 0)
            cmd = struct.unpack_from("<H", p, 3 if code == 0x0E else 4)[0]
            return f"> {HCI_EVT[code]} {HCI_CMD.get(cmd, hex(cmd))} status={status:#x}"
        if code == 0x05 and len(p) >= 6:
            handle = struct.unpack_from("<H", p, 3)[0]
            return f"> Disconnect Complete handle={handle} reason={p[5]:#x}"
        return f"> event {code:#x}"
    if op in (4, 5) and len(p) >= 9:
        handle = struct.unpack_from("<H", p)[0] & 0x0FFF
        cid = struct.unpack_from("<H", p, 6)[0]
        att = f" att={p[8]:#04x}" if cid == 4 else f" cid={cid:#x}"
        return f"{'<' if op == 4 else '>'} ACL handle={handle}{att} len={len(p) - 8}"
    if op == 16 and len(p) >= 6:
        code = struct.unpack_from("<H", p, 4)[0]
        return f"@ MGMT {MGMT_CMD.get(code, hex(code))}"
    if op == 17 and len(p) >= 6:
        code = struct.unpack_from("<H", p, 4)[0]
        if code in (1, 2):  # command complete/status: skip, noisy
            return None
        extra = ""
        if code in (0x000B, 0x000C, 0x000D, 0x0012) and len(p) >= 12:
            extra = " " + ":".join(f"{b:02X}" for b in reversed(p[6:12]))
        if code == 0x000C and len(p) >= 14:
            extra += f" reason={p[13]}"
        return f"@ MGMT {MGMT_EVT.get(code, hex(code))}{extra}"
    if op in (0, 1, 8, 9, 12):
        return f"# monitor op {op}"
    return None


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("capture")
    ap.add_argument("--grep", default="")
    ap.add_argument("--no-adv", action="store_true", help="skip advertising reports")
    args = ap.parse_args(argv)
    with open(args.capture, "rb") as f:
        data = f.read()
    for t, index, op, payload in records(data):
        text = describe(op, payload)
        if text is None or (args.no_adv and ("Advertising Report" in text or "Found" in text)):
            continue
        stamp = datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S.%f")
        line = f"{stamp} [hci{index if index != 0xFFFF else '-'}] {text}"
        if args.grep in line:
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
