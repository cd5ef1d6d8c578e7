"""pcap capture of the air: read back in Python, and by tshark with the Lua dissector."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from ble_bridge.sim.capture import AirEvent, CaptureFormatError, read_pcap
from ble_bridge.sim.faults import FaultPlan, LinkDrop
from ble_bridge.sim.scenario import ScenarioConfig, ScenarioResult, simulate
from ble_bridge.wire.fragment import FragmentPayload
from ble_bridge.wire.packet import PacketType, decode

LUA = Path(__file__).resolve().parents[2] / "tools" / "wireshark" / "ble_bridge.lua"


def _capture(path: Path) -> ScenarioResult:
    return simulate(
        ScenarioConfig(
            nodes=5,
            topology="line",
            profile="pi-tuned",
            duration=30.0,
            seed=4,
            rate=0.5,
            payload_size=700,  # fragments on 512-byte frames
            capture=path,
            faults=FaultPlan((LinkDrop(20.0, node=2),)),
        )
    )


def test_every_frame_on_the_air_is_in_the_capture(tmp_path: Path) -> None:
    pcap = tmp_path / "air.pcap"
    result = _capture(pcap)
    records = list(read_pcap(pcap))
    events = Counter(r.event for r in records)
    assert events[AirEvent.DELIVERED] == result.air_stats["frames_delivered"]
    assert events[AirEvent.LOST_LINK] == result.air_stats["drop_link_lost"]
    assert sum(events.values()) == result.air_stats["frames_sent"]
    times = [r.time for r in records]
    assert times == sorted(times) and 0 < times[0] < times[-1] <= 30.0
    types: Counter[int] = Counter()
    for r in records:
        assert abs(r.src - r.dst) == 1  # a line: only neighbours talk
        packet = decode(r.frame)
        types[packet.type] += 1
        if packet.type == PacketType.FRAGMENT:
            frag = FragmentPayload.decode(packet.payload)
            assert frag.original_type == PacketType.MESSAGE and frag.total == 2
    assert types[PacketType.ANNOUNCE] > 0 and types[PacketType.FRAGMENT] > 0


def test_reading_something_else_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "not.pcap"
    bad.write_bytes(b"\xd4\xc3\xb2\xa1" + b"\x00" * 40)
    with pytest.raises(CaptureFormatError):
        list(read_pcap(bad))


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_dissects_the_capture_with_the_lua_dissector(tmp_path: Path) -> None:
    pcap = tmp_path / "air.pcap"
    _capture(pcap)
    expected = [(r.src, r.dst, decode(r.frame).type, decode(r.frame).ttl) for r in read_pcap(pcap)]
    out = subprocess.run(
        [
            "tshark",
            "-X",
            f"lua_script:{LUA}",
            "-r",
            str(pcap),
            "-T",
            "fields",
            "-e",
            "blebridge_air.src",
            "-e",
            "blebridge_air.dst",
            "-e",
            "bitchat.type",
            "-e",
            "bitchat.ttl",
            "-e",
            "bitchat.fragment.total",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = [line.split("\t") for line in out.stdout.splitlines() if line.strip()]
    got = [(int(s), int(d), int(t, 16), int(ttl)) for s, d, t, ttl, _ in rows]
    assert got == expected
    assert any(total == "2" for *_, total in rows)
