"""``BleTransport``: the mesh's :class:`~ble_bridge.transport.Transport` over BlueZ.

Every node is peripheral (bless, :mod:`gatt.peripheral`) and central (bleak,
:mod:`gatt.central`) at once. A *central link* is a node we connected to: we write, it
notifies. A *peripheral link* is a central that connected to us; it comes up at the central's
first write, because that write tells us the central's object path and its link MTU.

Sending on a peripheral link notifies every subscribed central (BlueZ has no per-device
notify for GATT servers); identical frames queued for several peripheral links are sent once
(``notify_coalesced``). A central that receives a frame meant for a sibling link sees a
duplicate packet (dropped by the mesh's seen cache) or, if the sibling's MTU is larger, a
truncated frame (rejected by the decoder, counted there). Duplicate links between two nodes
are resolved by peer id (:mod:`gatt.policy`). A central writes one empty frame right after
subscribing (``BleConfig.hello_write``) so that the peripheral link comes up at once.
Senders of frames received lately tell :meth:`BleTransport.reachable` which peers the mesh
has a path to; the link rotation of :mod:`gatt.policy` only makes room for the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ble_bridge.errors import ExitCode, StartupError
from ble_bridge.events import kv
from ble_bridge.mesh.liveness import (
    CAP_LINK_KEEPALIVE,
    LinkLiveness,
    LivenessConfig,
    is_keepalive,
    keepalive_frame,
    kind_of,
)
from ble_bridge.transport import (
    LinkInfo,
    LinkRole,
    SendResult,
    Transport,
    TransportHandler,
)
from gatt.central import CentralSession, MeshCentral, reset_bleak
from gatt.config import BleConfig
from gatt.doctor import preflight
from gatt.peripheral import AdapterNotFound, MeshPeripheral, address_of
from gatt.policy import LinkPolicy
from gatt.profile import SHORT_ID_BYTES

log = logging.getLogger(__name__)

NOTIFY_BACKLOG_PAUSE = 512
"""D-Bus writer backlog (messages) above which the notify pump waits."""
MESH_PATH_S = 60.0
"""A peer whose packet arrived this recently is reachable (announces come every 15-30 s)."""
MESH_SENDERS_MAX = 512
"""Senders remembered for :meth:`BleTransport.reachable` (oldest forgotten first)."""
_SENDER_AT = {1: 15, 2: 17}
"""Offset of the 8-byte sender id in a BitChat frame, by version (PROTOCOL.md)."""


@dataclass(slots=True)
class _Link:
    info: LinkInfo
    address: str
    session: CentralSession | None = None
    since: float = 0.0
    peer_id: bytes | None = None
    """Bound by the peer's own announce on this link (:meth:`BleTransport.link_identified`)."""
    capabilities: int = 0


class BleTransport(Transport):
    """Links to neighbouring nodes over one BlueZ adapter."""

    def __init__(self, config: BleConfig, peer_id: bytes) -> None:
        self.config = config
        self.peer_id = bytes(peer_id)
        self.stats: Counter[str] = Counter()
        rng = random.Random(config.seed) if config.seed is not None else random.Random()
        self.policy = LinkPolicy(config, self.peer_id, rng)
        self.peripheral = MeshPeripheral(
            config.adapter,
            config.profile,
            self.peer_id,
            on_write=self._on_write,
            on_device=self._on_device,
            on_bluez=self._on_bluez,
            adv_retry_base_s=config.adv_retry_base_s,
            adv_retry_max_s=config.adv_retry_max_s,
        )
        self.peripheral.disconnect_stale = config.disconnect_stale_at_start
        self.liveness: LinkLiveness[int | str] = LinkLiveness(
            LivenessConfig(
                idle_s=config.link_idle_timeout_s,
                app_idle_s=config.app_idle_timeout_s,
                first_frame_s=config.first_frame_timeout_s,
                identify_s=config.identify_timeout_s,
            )
        )
        """Keys: link ids, and object paths of inbound connections that have not written."""
        self._live_task: asyncio.Task[None] | None = None
        self.peripheral.want_advertising = lambda: len(self._links) < config.link_budget
        self.central = MeshCentral(config, self, self.policy)
        self._handler: TransportHandler | None = None
        self._links: dict[int, _Link] = {}
        self._central_by_addr: dict[str, int] = {}
        self._periph_by_addr: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._notify_q: deque[tuple[bytes, set[int]]] = deque()
        self._notify_latest: dict[bytes, tuple[bytes, set[int]]] = {}
        self._notify_wake = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._senders: OrderedDict[bytes, float] = OrderedDict()
        self._addr_peer: OrderedDict[str, bytes] = OrderedDict()
        """address -> full peer id announced on a link from it (bounded, oldest forgotten)"""

    # ------------------------------------------------------------ Transport API

    def attach(self, handler: TransportHandler) -> None:
        self._handler = handler

    async def start(self) -> None:
        if self._started:
            return
        # no bus, no bluetoothd, no such adapter: one line and its exit code (the doctor's)
        await preflight(self.config.adapter)
        self._started = True
        self._notify_wake = asyncio.Event()
        try:
            await self.peripheral.start()
        except AdapterNotFound as exc:  # vanished between the preflight and now
            self._started = False
            raise StartupError(
                ExitCode.ADAPTER_MISSING, str(exc), "check `ble-bridge doctor` and [ble] adapter"
            ) from exc
        self._pump = asyncio.get_running_loop().create_task(self._notify_pump())
        self._live_task = asyncio.get_running_loop().create_task(self._liveness_loop())
        await self.central.start()

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        await self.central.stop()
        if self._pump is not None:
            self._pump.cancel()
        if self._live_task is not None:
            self._live_task.cancel()
        await self.peripheral.stop()
        for lid in list(self._links):
            self._link_down(lid, "stopped")
        for t in list(self._tasks):
            t.cancel()

    def send(self, link_id: int, frame: bytes) -> SendResult:
        link = self._links.get(link_id)
        if link is None:
            return SendResult.NO_SUCH_LINK
        if len(frame) > link.info.max_frame:
            self.stats["send_too_large"] += 1
            return SendResult.TOO_LARGE
        self.liveness.sent(link_id, asyncio.get_running_loop().time())
        if link.session is not None:
            if not link.session.enqueue(bytes(frame)):
                self.stats["send_queue_full"] += 1
                return SendResult.QUEUE_FULL
            return SendResult.QUEUED
        frame = bytes(frame)
        latest = self._notify_latest.get(frame)
        if latest is not None and link_id not in latest[1]:
            latest[1].add(link_id)  # one notification reaches every subscribed central
            self.stats["notify_coalesced"] += 1
            return SendResult.QUEUED
        if len(self._notify_q) >= self.config.notify_queue_limit:
            self.stats["send_queue_full"] += 1
            return SendResult.QUEUE_FULL
        entry = (frame, {link_id})
        self._notify_q.append(entry)
        self._notify_latest[frame] = entry
        self._notify_wake.set()
        return SendResult.QUEUED

    def links(self) -> Sequence[LinkInfo]:
        return [lk.info for lk in self._links.values()]

    def queue_depth(self, link_id: int) -> int:
        link = self._links.get(link_id)
        if link is None:
            return 0
        if link.session is not None:
            return len(link.session.queue)
        return sum(1 for _, members in self._notify_q if link_id in members)

    # ------------------------------------------------------------ link table

    def _link_up(
        self, address: str, mtu: int, role: LinkRole, session: CentralSession | None
    ) -> int:
        lid = next(self._ids)
        info = LinkInfo(lid, address, mtu, role)
        now = asyncio.get_running_loop().time()
        self._links[lid] = _Link(info, address, session, now)
        self.liveness.up(lid, now)
        (self._central_by_addr if role is LinkRole.CENTRAL else self._periph_by_addr)[address] = lid
        self.stats[f"link_up_{role.value}"] += 1
        if self._handler is not None:
            self._handler.link_up(info)
        self._adjust_advertising()
        return lid

    def _link_down(self, link_id: int, reason: str) -> None:
        link = self._links.pop(link_id, None)
        if link is None:
            return
        self.liveness.down(link_id)
        by_addr = self._central_by_addr if link.session is not None else self._periph_by_addr
        if by_addr.get(link.address) == link_id:
            del by_addr[link.address]
        for _, members in self._notify_q:
            members.discard(link_id)
        self.stats[f"link_down_{reason}"] += 1
        if self._handler is not None:
            self._handler.link_down(link_id, reason)
        self._adjust_advertising()
        self.central.kick()

    def link_count(self) -> int:
        return len(self._links)

    def linked_addresses(self) -> set[str]:
        """Nodes we have a link with, or whose connection to us is up (not written yet)."""
        inbound = {address_of(p) for p in self.peripheral.connected_devices}
        return set(self._central_by_addr) | set(self._periph_by_addr) | inbound

    def inbound_addresses(self) -> list[str]:
        """Nodes connected to us (we are the peripheral): links, and connections that have not
        written yet; not those we also hold (or are making) a central link to."""
        ours = set(self._central_by_addr) | set(self.central.sessions)
        ours |= {s.address for s in self.central.abandoned}
        if self.central.connecting is not None:
            ours.add(self.central.connecting)
        inbound = set(self._periph_by_addr)
        inbound |= {address_of(p) for p in self.peripheral.connected_devices}
        return sorted(inbound - ours)

    def link_ages(self, now: float) -> list[tuple[str, float]]:
        """(address, seconds up) of every link, for the rotation rule."""
        return [(lk.address, now - lk.since) for lk in self._links.values()]

    def reachable(self, peer_id: bytes) -> bool:
        """A packet sent by ``peer_id`` arrived within :data:`MESH_PATH_S`."""
        t = self._senders.get(bytes(peer_id[:SHORT_ID_BYTES]))
        return t is not None and asyncio.get_running_loop().time() - t <= MESH_PATH_S

    async def drop_link(self, address: str, reason: str) -> None:
        """End our link to ``address`` (rotation: room for a stranded node)."""
        self.stats[f"drop_link_{reason}"] += 1
        session = self.central.sessions.get(address)
        if session is not None:
            self.central.drop(address, reason)
            await session.close()
            return
        lid = self._periph_by_addr.get(address)
        if lid is not None:
            self._link_down(lid, reason)
        for device in self.peripheral.connected_devices:
            if address_of(device) == address:
                with contextlib.suppress(Exception):
                    await self.peripheral.disconnect(device)

    def _adjust_advertising(self) -> None:
        if not self._started:
            return
        self._spawn(self.peripheral.sync_advertising())

    def _spawn(self, coro: Any) -> None:
        async def guarded() -> None:
            try:
                await coro
            except Exception as e:
                log.info(kv("transport_task_failed", error=f"{type(e).__name__}: {e}"))

        task = asyncio.get_running_loop().create_task(guarded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ central side (CentralHost)

    def central_up(self, session: CentralSession) -> bool:
        addr = session.address
        peer = self._peer_of(addr)
        if addr in self._periph_by_addr:
            keep = self.policy.keep_central(peer)
            if keep is False:
                self.stats["duplicate_kept_peripheral"] += 1
                return False
            if keep is None:
                self.stats["duplicate_undecided"] += 1  # both stay until the peer announces
            else:
                self.stats["duplicate_kept_central"] += 1
                self._link_down(self._periph_by_addr[addr], "duplicate")
        session.link_id = self._link_up(addr, session.mtu, LinkRole.CENTRAL, session)
        return True

    def central_down(self, session: CentralSession, reason: str) -> None:
        if session.link_id:
            self._link_down(session.link_id, reason)

    def central_frame(self, session: CentralSession, data: bytes) -> None:
        if session.link_id in self._links:
            self._deliver(session.link_id, data)

    async def pause_advertising(self) -> bool:
        if not self.peripheral.advertising:
            return False
        self.peripheral.paused = True
        await self.peripheral.sync_advertising()
        return True

    def connect_failed(self, address: str) -> None:
        """A connect attempt failed. bluetoothd may still hold (or finish on its own) the LE
        link, and bleak's Disconnect may not have reached it (seen on BlueZ 5.66 with one
        daemon for several controllers): end it from our own bus if it shows up."""
        self._spawn(self._end_failed_connect(address))

    async def _end_failed_connect(self, address: str) -> None:
        device = f"{self.peripheral.adapter_path}/dev_{address.replace(':', '_')}"
        for wait in (0.5, 2.0, 5.0):
            await asyncio.sleep(wait)
            if (
                address in self._central_by_addr
                or address in self._periph_by_addr
                or address in self.central.sessions
                or address == self.central.connecting
            ):
                return  # linked after all (or trying again): nothing to end
            if device in self.peripheral.connected_devices:
                self.stats["failed_connect_disconnected"] += 1
                log.info(kv("stale_link_disconnect", address=address, why="failed_connect"))
                await self.peripheral.disconnect(device)
                return

    async def resume_advertising(self) -> None:
        self.peripheral.paused = False
        await self.peripheral.sync_advertising()

    def _peer_of(self, address: str) -> bytes | None:
        """The peer id of the node at ``address``: announced on a link, else advertised."""
        known = self._addr_peer.get(address)
        if known is not None:
            return known
        c = self.policy.candidates.get(address)
        return c.peer_id if c is not None else None

    def link_identified(self, link_id: int, peer_id: bytes, capabilities: int) -> None:
        link = self._links.get(link_id)
        if link is None:
            return
        self._addr_peer[link.address] = bytes(peer_id)
        self._addr_peer.move_to_end(link.address)
        while len(self._addr_peer) > MESH_SENDERS_MAX:
            self._addr_peer.popitem(last=False)
        link.peer_id = bytes(peer_id)
        link.capabilities = capabilities
        self.stats["links_identified"] += 1
        self.liveness.identified(link_id, kind_of(capabilities), asyncio.get_running_loop().time())
        self._resolve_duplicate(link.address)

    def _resolve_duplicate(self, addr: str) -> None:
        """A central and a peripheral link to one node: now that its id is known, keep one."""
        c_lid, p_lid = self._central_by_addr.get(addr), self._periph_by_addr.get(addr)
        if c_lid is None or p_lid is None:
            return
        keep = self.policy.keep_central(self._peer_of(addr))
        if keep is None:
            return
        if keep:
            self.stats["duplicate_kept_central"] += 1
            self._link_down(p_lid, "duplicate")
        else:
            self.stats["duplicate_kept_peripheral"] += 1
            self._spawn(self.central.abandon(addr))

    def announce_capabilities(self) -> int:
        return CAP_LINK_KEEPALIVE

    def issues(self) -> list[str]:
        out = []
        if self.peripheral.adv_error is not None:
            out.append(
                f"advertising refused x{self.peripheral.adv_failures}: {self.peripheral.adv_error}"
            )
        return out

    # ------------------------------------------------------------ peripheral side

    def _on_write(self, device: str, mtu: int, data: bytes) -> None:
        addr = address_of(device)
        lid = self._periph_by_addr.get(addr)
        if lid is None:
            if addr in self._central_by_addr:
                keep = self.policy.keep_central(self._peer_of(addr))
                if keep:
                    self.stats["duplicate_writes_ignored"] += 1
                    return
                if keep is None:
                    self.stats["duplicate_undecided"] += 1
                else:
                    self.stats["duplicate_kept_peripheral"] += 1
                    self._spawn(self.central.abandon(addr))
            elif len(self._links) >= self.config.link_budget:
                # connected while our advertisement was being withdrawn: refuse politely
                self.stats["inbound_over_budget"] += 1
                self._spawn(self.peripheral.disconnect(device))
                return
            lid = self._link_up(addr, min(mtu, 517), LinkRole.PERIPHERAL, None)
            self.liveness.down(device)  # the inbound connection wrote: it is a link now
        self._deliver(lid, data)

    def _on_device(self, device: str, connected: bool) -> None:
        if connected:
            if address_of(device) not in self._periph_by_addr:
                self.liveness.up(device, asyncio.get_running_loop().time())  # must write soon
            return
        self.liveness.down(device)
        addr = address_of(device)
        lid = self._periph_by_addr.get(addr)
        if lid is not None:
            self._link_down(lid, "disconnected")

    def _on_bluez(self, up: bool) -> None:
        if up:
            self.central.kick()
            return
        # bleak's object cache survives a bluetoothd restart: drop it now, so that whatever
        # bleak does next reads the new bluetoothd's objects (not again once it is back: that
        # would end the sessions made since, of this node or another one in this process)
        self._spawn(reset_bleak())
        self.central.forget_all("bluetoothd_restart")
        for lid in list(self._links):
            self._link_down(lid, "bluetoothd_restart")

    def _deliver(self, link_id: int, data: bytes) -> None:
        self.liveness.heard(link_id, asyncio.get_running_loop().time())
        if is_keepalive(data):
            self.stats["hello_writes" if not data else "keepalives_in"] += 1
            return
        self.stats["frames_in"] += 1
        at = _SENDER_AT.get(data[0])
        if at is not None and len(data) >= at + 8:
            sender = bytes(data[at : at + SHORT_ID_BYTES])  # what adverts name
            self._senders[sender] = asyncio.get_running_loop().time()
            self._senders.move_to_end(sender)
            if len(self._senders) > MESH_SENDERS_MAX:
                self._senders.popitem(last=False)
        if self._handler is not None:
            try:
                self._handler.frame_received(link_id, data)
            except Exception:  # the mesh must never take the transport down
                self.stats["handler_errors"] += 1
                log.exception("frame handler failed")

    async def _notify_pump(self) -> None:
        sent = 0
        while True:
            if not self._notify_q:
                self._notify_wake.clear()
                await self._notify_wake.wait()
                continue
            while self.peripheral.backlog() > NOTIFY_BACKLOG_PAUSE:
                await asyncio.sleep(0.001)
            entry = self._notify_q.popleft()
            frame, members = entry
            if self._notify_latest.get(frame) is entry:
                del self._notify_latest[frame]
            if not members:
                continue
            with contextlib.suppress(Exception):
                self.peripheral.notify(frame)
                self.stats["frames_notified"] += 1
            sent += 1
            if sent % 32 == 0:
                await asyncio.sleep(0)

    # ------------------------------------------------------------ liveness

    async def _liveness_loop(self) -> None:
        """Close half-open and dead links, send keepalives (:mod:`ble_bridge.mesh.liveness`)."""
        loop = asyncio.get_running_loop()
        while True:
            nxt = self.liveness.next_deadline()
            wait = 1.0 if nxt is None else min(1.0, max(0.05, nxt - loop.time()))
            await asyncio.sleep(wait)
            try:
                self.check_liveness(loop.time())
            except Exception:  # never lose the liveness timer
                self.stats["liveness_errors"] += 1
                log.exception("liveness check failed")

    def check_liveness(self, now: float) -> None:
        verdict = self.liveness.poll(now)
        for key, why in verdict.close:
            if isinstance(key, str):  # a connection that never wrote to us
                addr = address_of(key)
                if (
                    addr in self._central_by_addr
                    or addr in self._periph_by_addr
                    or addr in self.central.sessions
                    or addr == self.central.connecting
                ):
                    continue  # our own outgoing connection, or a link by now
                self.stats[f"closed_{why}"] += 1
                log.info(kv("inbound_close", address=addr, reason=why, why="never_wrote"))
                self._spawn(self.peripheral.disconnect(key))
                continue
            self.stats[f"closed_{why}"] += 1
            link = self._links.get(key)
            if link is None:
                continue
            log.info(
                kv(
                    "link_close",
                    link=key,
                    address=link.address,
                    role=link.info.role.value,
                    peer=link.peer_id.hex() if link.peer_id else None,
                    reason=why,
                )
            )
            self._spawn(self._close_link(key, why))
        wall_ms = int(time.time() * 1000)
        for key in verdict.keepalive:
            if not isinstance(key, int) or (link := self._links.get(key)) is None:
                continue
            frame = keepalive_frame(self.peer_id, wall_ms, link.info.max_frame)
            if self.send(key, frame) is SendResult.QUEUED:
                self.stats["keepalives_out"] += 1

    async def _close_link(self, link_id: int, reason: str) -> None:
        """End a link for good: our side of the LE connection goes too, so both sides retry."""
        link = self._links.get(link_id)
        if link is None:
            return
        if link.session is not None:
            session = link.session
            self.central.drop(link.address, reason)
            await session.close()
            return
        self._link_down(link_id, reason)
        for device in self.peripheral.connected_devices:
            if address_of(device) == link.address:
                await self.peripheral.disconnect(device)
