"""Table events and command replies in the public chat of an 8-node table on the loopback air
(virtual clock), read back from the air capture: one validator speaks, at most one table
line per 2 s, and two phones flooding ``!`` commands get replies within the per-sender
limits of one node, not of every node next to them."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

from ble_bridge.air.capture import AirEvent, read_pcap
from ble_bridge.chat.commands import ChatConfig
from ble_bridge.chat.events import MAX_LINE, EventsConfig
from ble_bridge.sim.scenario import ScenarioConfig
from ble_bridge.sim.table import TABLE_SESSION_NAME, TableConfig, simulate_table
from ble_bridge.wire.packet import PacketType, WireError, decode
from ble_bridge.wire.payloads import Announce

NODES = 8
PHONES = 2
DURATION = 24.0
SETTLED = 12.0  # by then every node has heard the phones' and each other's announces


def test_eight_node_table_speaks_once_per_event_and_holds_its_limits_under_a_flood(
    tmp_path: Path,
) -> None:
    cap = tmp_path / "air.pcap"
    sc = ScenarioConfig(
        nodes=NODES, duration=DURATION, warmup=3.0, drain=3.0, trace=False, seed=1, capture=cap
    )
    result = simulate_table(TableConfig(scenario=sc, phones=PHONES, phone_flood=4.0))
    assert result.safe
    flood = result.phone_totals["phone_flood_sent"]
    assert flood >= PHONES * 4 * (DURATION - 6)

    # the first time each packet went on the air, and who sent it
    first: dict[bytes, tuple[float, bytes, str]] = {}
    stamp: dict[bytes, int] = {}  # packet id -> its timestamp (the sender's clock, ms)
    signing: dict[bytes, bytes] = {}  # peer id -> Ed25519 key, from the announces heard
    for rec in read_pcap(cap):
        if rec.event != AirEvent.DELIVERED:
            continue
        try:
            p = decode(rec.frame)
        except WireError:
            continue
        if p.type == PacketType.ANNOUNCE:
            ann = Announce.decode(p.payload)
            if ann.signing_key is not None:
                signing[p.sender] = ann.signing_key
        if p.type == PacketType.MESSAGE and p.packet_id not in first:
            first[p.packet_id] = (rec.time, p.sender, bytes(p.payload).decode("utf-8"))
            stamp[p.packet_id] = p.timestamp
    said = sorted(first.values())
    prefix = f"[{TABLE_SESSION_NAME}] "
    table = [(t, s, text) for t, s, text in said if text.startswith(prefix)]
    phone_ids = {s for _, s, text in said if text.startswith("!")}
    assert len(phone_ids) == PHONES
    replies = [
        (t, s, text)
        for t, s, text in said
        if s not in phone_ids and not text.startswith(prefix) and not text.startswith("phone")
    ]

    # one validator speaks: every table line by the speaker of its heights (all below one
    # 64-height epoch here: the first validator in key order), each line once
    assert result.heights < EventsConfig().epoch
    # said at height 0, it waited for the speaker's first link (it used to go to no link)
    assert [text for _, _, text in table if "opened" in text] == [
        f"{prefix}table {TABLE_SESSION_NAME} opened (buy-in 1000, min bet 1): "
        f"!join {TABLE_SESSION_NAME}"
    ]
    lines = {text for _, _, text in table}
    assert len(lines) == len(table)  # no line said twice (by two nodes, or by one)
    speakers = {s for _, s, _ in table}
    node_keys = {k for pid, k in signing.items() if pid not in phone_ids}
    assert len(node_keys) == NODES
    assert [signing[s] for s in speakers] == [min(node_keys)]
    assert any("rolled " in text for _, _, text in table)
    assert all(len(text.encode()) <= MAX_LINE for _, _, text in table)

    # at most one table line per 2 s, flood or not: by the speaker's own timestamps (the air
    # delays a frame by a varying queue, so the capture times can be closer)
    times = sorted(stamp[pid] / 1000 for pid, (_, _, text) in first.items() if text in lines)
    assert len(times) == len(table) >= 5
    assert all(b - a >= EventsConfig().interval - 0.001 for a, b in itertools.pairwise(times))

    # the flood: once the mesh settled, each phone is answered by one node, so the replies
    # stay within one node's per-sender budget (burst, one per reply_interval, one help per
    # help_interval); ranked per packet, every node next to a phone answered in turn
    cfg = ChatConfig()
    end = max(t for t, _, _ in said)
    late = [r for r in replies if r[0] >= SETTLED]
    span = end - SETTLED
    budget = cfg.replies_burst + span / cfg.reply_interval + span / cfg.help_interval + 1
    assert 0 < len(late) <= PHONES * budget, Counter(text[:20] for _, _, text in late)
    answering = {s for _, s, _ in late}
    assert len(answering) <= PHONES
