"""The lab with a phone: real ``ble-bridge run`` processes on the fake BlueZ, and a scripted
BitChat phone (tests/phone/lab_phone.py: a bleak central on its own fake adapter, frames as
the apps build them) that sees a node's advert, connects, announces, reads the table's lines
in the public chat, talks Noise with the node, joins the table and has a bet commit."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest
from lab_phone import SLACK, LabPhone, legacy_advert_size

from ble_bridge.control import request
from ble_bridge.node import default_nickname
from gatt.fakebluez import FakeBluezConfig, LinkModel
from gatt.fakebluez.bus import dbus_daemon_path
from gatt.lab import run_lab
from gatt.profile import ADV_COMPANY_ID, BITCHAT_SERVICE_UUID

pytestmark = pytest.mark.dbus

NODES = 2
TABLE = "lab-table"


@pytest.mark.timeout(900)
def test_a_phone_sees_a_node_joins_its_table_bets_and_gets_a_private_reply(
    tmp_path: Path,
) -> None:
    if dbus_daemon_path() is None:
        pytest.skip("dbus-daemon is not installed")
    phone = LabPhone(f"hci{NODES}", "alice")
    log: list[str] = []

    async def script() -> None:
        found = await phone.scan(30)
        assert found, "the phone hears a node's advert"
        for _dev, adv in found:
            assert BITCHAT_SERVICE_UUID in [u.lower() for u in adv.service_uuids]
            assert legacy_advert_size(adv) <= 31, adv  # a legacy advert, flags included
        device, adv = found[0]
        short_id = bytes(adv.manufacturer_data[ADV_COMPANY_ID])
        await phone.connect(device)
        keep_announcing = asyncio.create_task(_announce_every(phone, 10.0))
        try:
            await _play(phone, short_id, log)
        except AssertionError:  # what the nodes counted, for the report
            for i in range(NODES):
                st = await request(tmp_path / f"node{i}.sock", {"cmd": "status"}, timeout=5.0)
                _step(log, f"node{i} phone={st.get('phone')} tables={st.get('tables')}")
            raise
        finally:
            keep_announcing.cancel()
            await phone.close()

    result = run_lab(
        NODES,
        300.0 * SLACK,
        FakeBluezConfig(adapters=NODES, link=LinkModel(mtu=247)),
        progress=False,
        phones=1,
        client=script,
        nicknames=False,
        root=tmp_path,
    )
    assert result.safe, log


async def _announce_every(phone: LabPhone, every: float) -> None:
    while True:
        await phone.announce()
        await asyncio.sleep(every)


def _step(log: list[str], what: str) -> None:
    log.append(what)
    print(f"lab phone: {what}", file=sys.stderr, flush=True)  # pytest -s shows the progress


async def _play(phone: LabPhone, short_id: bytes, log: list[str]) -> None:
    heard = phone.heard
    _step(log, "connected")
    # every node's announce (the other one relayed): decoded by the apps' rules, default names
    assert await phone.until(lambda: len(heard.announces) >= NODES, 60), heard.announces
    for pid, ann in heard.announces.items():
        assert ann.nickname == default_nickname("generic", pid)
    direct = next(pid for pid in heard.announces if pid.startswith(short_id))
    _step(log, f"announces heard; own frames heard back: {heard.own}")

    # the table speaks in the public chat, signed by a node
    def table_lines() -> list[str]:
        return [t for t in phone.public_lines() if t.startswith(f"[{TABLE}] ")]

    assert await phone.until(lambda: bool(table_lines()), 60), list(heard.public)
    _step(log, f"table line: {table_lines()[0]}")

    # Noise XX with the node it is linked to, then a private !balance
    await phone.handshake(direct, 30)
    await phone.dm(direct, "!help", "LAB-PHONE-1")
    assert await phone.until(lambda: any(s == direct for s, _ in heard.dms), 30)
    assert "LAB-PHONE-1" in heard.delivered
    dm = next(t for s, t in heard.dms if s == direct)
    _step(log, f"private reply: {dm}")
    assert "!bet" in dm, dm

    # join from the public chat; the submitting node says when it committed
    def mine() -> list[str]:
        return [t for t in phone.public_lines() if "alice" in t]

    def said(pattern: str) -> bool:
        return any(re.search(pattern, t) for t in phone.public_lines() if t.startswith("alice: "))

    await phone.say(f"!join {TABLE}")
    assert await phone.until(lambda: said(rf"^alice: join in at {TABLE}"), 60), list(heard.public)
    _step(log, "joined")
    # one bet: sent at once, or held for the next betting window if the dice are rolling
    await phone.say(f"!bet {TABLE} field 10")
    assert await phone.until(lambda: said(r"^alice: bet 10 field (sent to|held for)"), 30)
    _step(log, f"bet: {mine()[-1]}")
    assert await phone.until(lambda: said(rf"^alice: bet 10 field in at {TABLE}"), 60), mine()
    assert not said("refused"), mine()
    assert said(r"balance 990"), mine()
    # a private !balance (after one reply token refilled: 3 replies a burst, 1 per 5 s)
    await asyncio.sleep(5.0)
    await phone.dm(direct, "!balance", "LAB-PHONE-2")
    assert await phone.until(lambda: sum(1 for s, _ in heard.dms if s == direct) >= 2, 30), (
        list(heard.dms),
        list(heard.delivered),
    )
    _step(log, f"private reply: {[t for s, t in heard.dms if s == direct][-1]}")
