"""The mesh's outgoing links: bleak scans, connects, writes and subscribes.

:class:`MeshCentral` runs a scan duty cycle filtered on the mesh service, feeds what it hears
to the sans-IO :class:`gatt.policy.LinkPolicy`, and connects to the addresses the policy picks
(one attempt at a time, advertising paused around it). Each link is a :class:`CentralSession`:
a bleak client, a bounded frame queue and a pump that pipelines write-without-response calls.
The adapter is always passed explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Protocol

from bleak import BleakClient, BleakScanner
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from ble_bridge.events import kv
from gatt.config import BleConfig
from gatt.policy import LinkPolicy

log = logging.getLogger(__name__)


def classify_error(exc: BaseException) -> str:
    """A short, countable name for why a connect failed."""
    text = f"{type(exc).__name__} {exc}"
    for needle, name in (
        ("InProgress", "inprogress"),
        ("le-connection-abort-by-local", "abort_by_local"),
        ("0x3c", "advertising_conflict"),
        ("Limited Resources", "limited_resources"),
        ("Timeout", "timeout"),
        ("NotReady", "adapter_not_ready"),
        ("not found", "not_found"),
    ):
        if needle in text:
            return name
    return "other"


BLEAK_CALL_TIMEOUT_S = 10.0
"""Bound on one bleak scanner start or stop (a few D-Bus round trips): a call that never
returns must not stop the scan loop for good."""


async def reset_bleak() -> None:
    """Make bleak forget what it cached from a bluetoothd that went away.

    bleak keeps one BlueZ object cache per event loop and does not watch bluetoothd's bus
    name: after a crash its cache still shows the old connections (``Connected`` true, so a
    new ``connect`` skips BlueZ's Connect). Its bus is closed while holding bleak's own bus
    lock (no scan start or stop is mid-call then), and bleak's manager is left without a bus:
    the next bleak call builds a fresh one from bluetoothd's objects, and a call still holding
    the closed one fails at once instead of waiting forever (dbus-fast: a call on a closed
    bus whose fd number was reused by a newer socket never returns; it used to hold bleak's
    lock and so every later scan and connect of the process). Safe to call several times.
    """
    from bleak.backends.bluezdbus.manager import get_global_bluez_manager

    try:
        manager = await get_global_bluez_manager()
    except Exception:  # no bus to bluetoothd now: nothing cached to forget
        return
    lock = getattr(manager, "_bus_lock", None)
    async with lock if lock is not None else contextlib.nullcontext():
        bus = getattr(manager, "_bus", None)
        if bus is None:
            return
        bus.disconnect()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(bus.wait_for_disconnect(), BLEAK_CALL_TIMEOUT_S)
        watcher = getattr(manager, "_bus_watcher_task", None)
        if watcher is not None:  # bleak >= 3: resets the cache and tells its clients
            await asyncio.wait({watcher}, timeout=BLEAK_CALL_TIMEOUT_S)
            manager._bus_watcher_task = None
        manager._bus = None


class CentralHost(Protocol):
    """What the central needs from the transport that owns it."""

    def central_up(self, session: CentralSession) -> bool: ...

    def central_down(self, session: CentralSession, reason: str) -> None: ...

    def central_frame(self, session: CentralSession, data: bytes) -> None: ...

    def link_count(self) -> int: ...

    def linked_addresses(self) -> set[str]: ...

    def link_ages(self, now: float) -> list[tuple[str, float]]: ...

    def reachable(self, peer_id: bytes) -> bool: ...

    async def drop_link(self, address: str, reason: str) -> None: ...

    def inbound_addresses(self) -> list[str]: ...

    async def pause_advertising(self) -> bool: ...

    def connect_failed(self, address: str) -> None: ...

    async def resume_advertising(self) -> None: ...


class CentralSession:
    """One outgoing link: bleak client, mesh characteristic, bounded queue, write pump."""

    def __init__(
        self,
        address: str,
        client: BleakClient,
        char: BleakGATTCharacteristic,
        mtu: int,
        cfg: BleConfig,
    ) -> None:
        self.address = address
        self.client = client
        self.char = char
        self.mtu = mtu
        self.link_id = 0
        self.queue: deque[bytes] = deque()
        self.limit = cfg.send_queue_limit
        self._window = asyncio.Semaphore(cfg.writes_in_flight)
        self._wake = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None
        self.active = True
        self.write_errors = 0
        self.failed_in_a_row = 0
        self.failures_to_close = cfg.write_failures_to_close
        self.on_dead: Callable[[CentralSession, str], None] | None = None
        """Called once when ``failures_to_close`` writes in a row failed (the peer's GATT
        application vanished, the link is gone): the owner ends the session."""

    def start(self) -> None:
        self._pump_task = asyncio.get_running_loop().create_task(self._pump())

    def enqueue(self, frame: bytes) -> bool:
        if len(self.queue) >= self.limit:
            return False
        self.queue.append(frame)
        self._wake.set()
        return True

    async def _pump(self) -> None:
        while self.active:
            if not self.queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            frame = self.queue.popleft()
            await self._window.acquire()
            asyncio.get_running_loop().create_task(self._write(frame))

    async def _write(self, frame: bytes) -> None:
        try:
            await self.client.write_gatt_char(self.char, frame, response=False)
            self.failed_in_a_row = 0
        except Exception as e:
            self.write_errors += 1
            self.failed_in_a_row += 1
            if self.write_errors == 1:
                log.info(kv("write_failed", address=self.address, error=f"{type(e).__name__}: {e}"))
            if self.failed_in_a_row == self.failures_to_close and self.on_dead is not None:
                self.on_dead(self, f"{type(e).__name__}: {e}")
        finally:
            self._window.release()

    def halt(self) -> None:
        """Stop sending (link down or abandoned); the queue is dropped."""
        self.active = False
        self.queue.clear()
        self._wake.set()
        if self._pump_task is not None:
            self._pump_task.cancel()

    async def abandon(self) -> None:
        """Stop using this session without ending the ACL link (duplicate-link tie-break)."""
        self.halt()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.stop_notify(self.char), 2.0)

    async def close(self) -> None:
        self.halt()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.disconnect(), 3.0)


class MeshCentral:
    """Scan duty cycle + connection attempts + session bookkeeping."""

    def __init__(self, config: BleConfig, host: CentralHost, policy: LinkPolicy) -> None:
        self.config = config
        self.host = host
        self.policy = policy
        self.sessions: dict[str, CentralSession] = {}
        self.abandoned: list[CentralSession] = []
        self.stats: Counter[str] = Counter()
        self._devices: dict[str, BLEDevice] = {}
        self._task: asyncio.Task[None] | None = None
        self._running = False
        self._kick = asyncio.Event()
        self._closing: set[asyncio.Task[None]] = set()
        self.connecting: str | None = None
        """Address of the connect attempt in progress, if any."""
        self.scanning = False
        """A scan window is open (between bleak's StartDiscovery and StopDiscovery)."""

    async def start(self) -> None:
        self._running = True
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._running = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        for s in list(self.sessions.values()) + self.abandoned:
            await s.close()
        self.sessions.clear()
        self.abandoned.clear()

    def kick(self) -> None:
        """Look for connect candidates now (a link went down, budget freed)."""
        self._kick.set()

    def _loop_time(self) -> float:
        return asyncio.get_running_loop().time()

    def _heard(self, device: BLEDevice, adv: AdvertisementData) -> None:
        peer = self.config.profile.peer_id_from(
            {k.lower(): bytes(v) for k, v in adv.service_data.items()},
            {int(k): bytes(v) for k, v in adv.manufacturer_data.items()},
        )
        self.policy.heard(device.address, peer, adv.rssi, self._loop_time())
        if device.address in self.policy.candidates:
            self._devices[device.address] = device
        if len(self._devices) > self.config.max_candidates:  # forgotten candidates go too
            for addr in [a for a in self._devices if a not in self.policy.candidates]:
                del self._devices[addr]

    async def _run(self) -> None:
        cfg = self.config
        while self._running:
            try:
                await self._scan(cfg.scan_on_s)
            except Exception as e:
                self.stats["scan_errors"] += 1
                log.info(kv("scan_failed", adapter=cfg.adapter, error=str(e)))
                await asyncio.sleep(min(cfg.backoff_max_s, 1.0))
            await self._connect_round()
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), cfg.scan_off_s)

    async def _scan(self, seconds: float) -> None:
        # at full budget too: the rotation rule must hear stranded nodes
        scanner = BleakScanner(
            detection_callback=self._heard,
            service_uuids=[self.config.profile.service_uuid],
            # every received advert is a callback (the short id in ManufacturerData changes
            # nothing and real RSSI may not either: btvirt reports a fixed 127), so a node
            # that advertises again after a link ended is fresh again (candidate_fresh_s)
            bluez={"adapter": self.config.adapter, "filters": {"DuplicateData": True}},
        )
        await asyncio.wait_for(scanner.start(), BLEAK_CALL_TIMEOUT_S)
        self.scanning = True
        try:
            await asyncio.sleep(seconds)
        finally:
            self.scanning = False
            try:
                await asyncio.wait_for(scanner.stop(), BLEAK_CALL_TIMEOUT_S)
            except TimeoutError:
                self.stats["scan_stop_timeouts"] += 1
                log.info(kv("scan_stop_timeout", adapter=self.config.adapter))
            except Exception as e:  # bluetoothd gone or bleak's bus reset: the next scan retries
                log.debug("scan stop failed: %s", e)

    async def _connect_round(self) -> None:
        if self.host.link_count() >= self.config.link_budget:
            await self._rotate()
            return
        for _ in range(self.config.connects_per_round):
            if not self._running:
                return
            now = self._loop_time()
            linked = self.host.linked_addresses() | set(self.sessions)
            picks = self.policy.next_candidates(now, self.host.link_count(), linked)
            if not picks:
                wait = self.config.connect_interval_s - (now - self.policy.last_attempt)
                if not 0 < wait <= self.config.connect_interval_s:
                    return
                await asyncio.sleep(wait)  # rate limit: try again once the interval passed
                continue
            await self._attempt(picks[0])

    async def _rotate(self) -> None:
        """Full: give up our most redundant link for a stranded node, if the policy says so."""
        now = self._loop_time()
        rot = self.policy.rotation(now, self.host.link_ages(now), self.host.reachable)
        if rot is None or rot.join not in self._devices:
            return
        self.stats["rotations"] += 1
        log.info(kv("link_rotate", drop=rot.drop, join=rot.join))
        await self.host.drop_link(rot.drop, "rotated")
        await self._attempt(rot.join)

    async def _attempt(self, address: str) -> None:
        device = self._devices.get(address)
        self.policy.attempt(address, self._loop_time())
        if device is None:
            self.policy.failed(address, self._loop_time())
            return
        self.connecting = address
        try:
            await self._attempt_connect(address, device)
        finally:
            self.connecting = None

    async def _attempt_connect(self, address: str, device: BLEDevice) -> None:
        cfg = self.config
        paused = cfg.pause_advertising_on_connect and await self.host.pause_advertising()
        client = BleakClient(
            device,
            disconnected_callback=self._on_disconnect,
            timeout=cfg.connect_timeout_s,
            bluez={"adapter": cfg.adapter},
        )
        freed = False
        try:
            await asyncio.wait_for(client.connect(), cfg.connect_timeout_s + 1.0)
        except Exception as e:
            reason = classify_error(e)
            self.stats[f"connect_failed_{reason}"] += 1
            delay = self.policy.failed(address, self._loop_time())
            log.info(
                kv(
                    "connect_failed",
                    address=address,
                    reason=reason,
                    error=f"{type(e).__name__}: {e}",
                    retry_s=round(delay, 1),
                )
            )
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), 2.0)
            self.host.connect_failed(address)
            # bluetoothd never answered (as when the kernel will not initiate), not an error
            # it returned; our advert is still paused: no one connects to us meanwhile
            if isinstance(e, TimeoutError):
                freed = await self._free_central_role(address)
            if not freed:
                return
        finally:
            if paused:
                with contextlib.suppress(Exception):
                    await self.host.resume_advertising()
        if freed:  # once: the policy frees the role for a node once until it links
            self.policy.attempt(address, self._loop_time())
            await self._attempt_connect(address, device)
            return
        await self._open_session(address, client)

    async def _free_central_role(self, address: str) -> bool:
        """The LE-states limit (``peripheral_connect_timeouts``): end our inbound links so the
        controller is no longer a peripheral and may initiate; their peers reconnect to us."""
        inbound = self.host.inbound_addresses()
        if not self.policy.free_central_role(address, len(inbound)):
            return False
        self.stats["freed_central_role"] += 1
        log.info(
            kv(
                "free_central_role",
                address=address,
                drop=",".join(inbound),
                why="connects time out while we are a peripheral (controller LE states)",
            )
        )
        for peer in inbound:
            await self.host.drop_link(peer, "free_central_role")
        return True

    async def _open_session(self, address: str, client: BleakClient) -> None:
        cfg = self.config
        char = client.services.get_characteristic(cfg.profile.characteristic_uuid)
        if char is None:
            self.stats["connect_failed_no_mesh_char"] += 1
            self.policy.failed(address, self._loop_time())
            await CentralSession(address, client, None, 23, cfg).close()  # type: ignore[arg-type]
            return
        mtu = char.max_write_without_response_size + 3
        if mtu <= 23:
            try:  # BlueZ < 5.62 has no MTU property: AcquireWrite tells it
                await client._backend._acquire_mtu()  # type: ignore[attr-defined]
                mtu = client.mtu_size
            except Exception as e:
                log.debug("acquire mtu failed: %s", e)
        mtu = min(mtu, cfg.max_central_mtu)
        session = CentralSession(address, client, char, mtu, cfg)
        self.sessions[address] = session
        try:
            await client.start_notify(char, lambda _c, data: self._frame(session, data))
        except Exception as e:
            self.stats["subscribe_failed"] += 1
            log.info(kv("subscribe_failed", address=address, error=f"{type(e).__name__}: {e}"))
            del self.sessions[address]
            self.policy.failed(address, self._loop_time())
            await session.close()
            return
        self.policy.connected(address, self._loop_time())
        self.stats["connected"] += 1
        if not self.host.central_up(session):
            del self.sessions[address]
            self.stats["abandoned_duplicate"] += 1
            self.abandoned.append(session)
            await session.abandon()
            return
        session.on_dead = self._session_dead
        session.start()
        if cfg.hello_write:
            session.enqueue(b"")

    def _session_dead(self, session: CentralSession, text: str) -> None:
        if self.sessions.get(session.address) is not session:
            return
        self.stats["closed_write_failed"] += 1
        log.info(
            kv(
                "link_close",
                address=session.address,
                reason="write_failed",
                failed_in_a_row=session.failed_in_a_row,
                error=text,
            )
        )
        self.drop(session.address, "write_failed")
        task = asyncio.get_running_loop().create_task(session.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _frame(self, session: CentralSession, data: Any) -> None:
        if session.active:
            self.host.central_frame(session, bytes(data))

    def _on_disconnect(self, client: BleakClient) -> None:
        for s in self.abandoned:
            if s.client is client:
                self.abandoned.remove(s)
                return
        for addr, s in list(self.sessions.items()):
            if s.client is client:
                self.drop(addr, "disconnected")
                return

    def drop(self, address: str, reason: str) -> None:
        """Forget a session whose link is gone and schedule a reconnect with backoff."""
        s = self.sessions.pop(address, None)
        if s is None:
            return
        s.halt()
        self.host.central_down(s, reason)
        self.policy.disconnected(address, self._loop_time())
        self.kick()

    async def abandon(self, address: str) -> None:
        """Tie-break lost after the fact: keep the ACL, stop using our session."""
        s = self.sessions.pop(address, None)
        if s is None:
            return
        self.abandoned.append(s)
        self.host.central_down(s, "duplicate")
        self.policy.connected(address, self._loop_time())
        await s.abandon()

    def forget_all(self, reason: str) -> None:
        """bluetoothd went away: every session is dead without a Disconnect to call."""
        for addr in list(self.sessions):
            self.drop(addr, reason)
        for s in self.abandoned:
            s.halt()
        self.abandoned.clear()
        self._devices.clear()
