"""A simulated BitChat phone on the loopback air, built from the apps' rules.

It runs the mesh stack as a phone does: signed announces with a nickname, its X25519 and
Ed25519 keys and no ble-bridge capability bit (``relay_deferral`` off), signed public
messages, and Noise XX as initiator for private messages (``PhoneChat`` with
``answer_private`` off: it reads the nodes' replies and answers none). What it does:
``!join TABLE`` until the table says it joined, then ``!bet TABLE field 1`` when the table
says it rolled (a new round's bets open) or every ``bet_interval`` seconds, and a private ``!balance`` to one ble-bridge node every
``dm_interval`` seconds. It counts the bets the table confirmed in public (``NICK bets``)
and the private replies it read. One timer; everything bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from dataclasses import dataclass

from ..air.network import NodeSpec
from ..chat.phone import Outgoing, PhoneChat, PhoneConfig
from ..mesh.config import CAP_RELAY_DEFERRAL, MeshConfig
from ..mesh.router import Delivered
from ..mesh.service import MeshNode
from ..noise.payloads import NoisePayloadType, PrivateMessage, typed
from ..wire.packet import PacketType


@dataclass(frozen=True, slots=True)
class PhonePlan:
    table: str
    start: float = 4.0  # seconds after start before the first !join
    join_retry: float = 10.0
    bet_interval: float = 6.0
    dm_interval: float = 15.0
    tick: float = 1.0
    flood: float = 0.0
    """Public ``!`` commands a second besides the plan (``!help``, ``!tables``, ``!balance``,
    an unknown one, in turn): a phone spamming the chat. 0: none."""


FLOOD_COMMANDS = ("!help", "!tables", "!balance", "!spin")


class SimPhone:
    """One phone on the air (a :class:`~ble_bridge.air.network.SimNode`)."""

    def __init__(
        self,
        spec: NodeSpec,
        plan: PhonePlan,
        totals: Counter[str],
        latencies: list[float] | None = None,
    ) -> None:
        self.nickname = f"phone{spec.index}"
        self.plan = plan
        self.totals = totals  # shared by every phone of the run
        mesh_cfg = MeshConfig(nickname=self.nickname, relay_deferral=False)
        self.mesh = MeshNode(
            spec.identity, spec.transport, mesh_cfg, rng=spec.rng, wall_offset=spec.wall_offset
        )
        self.chat = PhoneChat(
            spec.identity,
            list,
            self.mesh.router.peers.get,
            PhoneConfig(answer_public=False, answer_private=False),
        )
        self.joined = False
        self._last_bet = float("-inf")
        # !bet -> its first confirmation (the node's "NICK: bet ... in at T" or the table's line)
        self.latencies = latencies if latencies is not None else []
        self._unconfirmed: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._dms_read = 0
        for t in (PacketType.NOISE_HANDSHAKE, PacketType.NOISE_ENCRYPTED):
            self.mesh.subscribe(t, self._on_noise)
        self.mesh.subscribe(PacketType.MESSAGE, self._on_public)

    async def start(self) -> None:
        await self.mesh.start()
        self._task = asyncio.create_task(self._run(), name=f"{self.nickname}-plan")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.mesh.stop()

    # -- behaviour ---------------------------------------------------------------------

    async def _run(self) -> None:
        plan = self.plan
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        next_join = next_bet = t0 + plan.start
        next_dm = t0 + plan.start + plan.dm_interval / 2
        tick = min(plan.tick, 1.0 / plan.flood) if plan.flood > 0 else plan.tick
        flooded = 0
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            try:
                if plan.flood > 0 and now >= t0 + plan.start:
                    self._say(FLOOD_COMMANDS[flooded % len(FLOOD_COMMANDS)])
                    flooded += 1
                    self.totals["phone_flood_sent"] += 1
                if not self.joined and now >= next_join:
                    self._say(f"!join {plan.table}")
                    next_join = now + plan.join_retry
                if self.joined and now >= next_bet and now - self._last_bet >= plan.bet_interval:
                    self._bet(now)
                    next_bet = now + plan.bet_interval
                if now >= next_dm:
                    self._dm(now)
                    next_dm = now + plan.dm_interval
            except ValueError:
                self.totals["phone_send_refused"] += 1

    def _bet(self, now: float) -> None:
        self._last_bet = now
        self._unconfirmed = now
        self._say(f"!bet {self.plan.table} field 1")
        self.totals["phone_bets_sent"] += 1

    def _confirmed(self) -> None:
        """The first confirmation of the last bet sent: its latency."""
        if self._unconfirmed is not None and len(self.latencies) < 10_000:
            self.latencies.append(self.mesh.now() - self._unconfirmed)
        self._unconfirmed = None

    def _say(self, text: str) -> None:
        self.mesh.send(PacketType.MESSAGE, text.encode("utf-8"))

    def _dm(self, now: float) -> None:
        nodes = sorted(
            rec.peer_id
            for rec in self.mesh.router.peers
            if rec.capabilities is not None and rec.capabilities & CAP_RELAY_DEFERRAL
        )
        if not nodes:
            return
        peer = nodes[self.totals["phone_dms_sent"] % len(nodes)]
        self.totals["phone_dms_sent"] += 1
        pm = PrivateMessage(f"SIM-{self.nickname}-{self.totals['phone_dms_sent']}", "!balance")
        self._send(
            self.chat.send_private(now, peer, typed(NoisePayloadType.PRIVATE_MESSAGE, pm.encode()))
        )

    def _send(self, outs: list[Outgoing]) -> None:
        for out in outs:
            try:
                self.mesh.send(out.type, out.payload, out.recipient, sign=out.signed)
            except ValueError:
                self.totals["phone_send_refused"] += 1

    # -- what it hears -----------------------------------------------------------------

    def _on_noise(self, event: Delivered) -> None:
        before = self.chat.stats["dms_received"]
        self._send(self.chat.on_packet(self.mesh.now(), event, None))
        dm = self.chat.last_dm
        if self.chat.stats["dms_received"] > before and dm and not dm.startswith("unknown"):
            self.totals["phone_dms"] += 1

    def _on_public(self, event: Delivered) -> None:
        try:
            text = bytes(event.packet.payload).decode("utf-8")
        except UnicodeDecodeError:
            return
        mine = f"{self.nickname}: "
        if text.startswith(mine) and f" in at {self.plan.table}" in text:
            # the submitting node's committed reply
            if text.startswith(mine + "join "):
                self.joined = True
            elif text.startswith(mine + "bet "):
                self.totals["phone_bets_confirmed"] += 1
                self._confirmed()
            return
        if not text.startswith(f"[{self.plan.table}] "):
            return
        for part in text.split(" · "):
            if f"{self.nickname} joined from a phone" in part:
                self.joined = True
            if f"{self.nickname} bets " in part:
                self.totals["phone_bets"] += 1
                self._confirmed()
        # a roll opens the next round's bets: bet now, as a person watching would
        now = self.mesh.now()
        if self.joined and "rolled " in text and now - self._last_bet >= self.plan.bet_interval / 2:
            try:
                self._bet(now)
            except ValueError:
                self.totals["phone_send_refused"] += 1


__all__ = ["FLOOD_COMMANDS", "PhonePlan", "SimPhone"]
