"""What a running node gains from items 5 and 6 of issue 17: owners, the pairing window, the
handheld's button and LED, the control requests ``pair_*`` and (on BlueZ) the agent.

:class:`OwnerFeatures` is attached to a node (``ble_bridge.node.Node``) and keeps the
node's own code to a few calls: build it in ``__init__``, ``start()`` once the control
socket listens, ``stop()`` before the transport stops. It is also the
:class:`~ble_bridge.pairing.owners.OwnerHost` the owner commands act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from hardware.boards import BoardProfile
from hardware.gpio import GpioConfig, PanelIo, open_panel_io
from hardware.panel import Action, Facts, Panel, PanelConfig
from hardware.service import PanelService

from ..bridge import NetworkConsensusBridge, SessionHealth
from ..chat.phone import PhoneChat
from ..events import kv
from ..mesh.service import MeshNode
from ..store import Store
from ..tables.errors import TableError
from ..tables.service import TableService
from ..transport import Transport
from .owners import Pairing
from .window import PairingConfig

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
NICK_META = "owner_nickname"  # meta row: the nickname an owner set by DM
ADDRESS = re.compile(r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")


class Bonds(Protocol):
    """Devices bonded at the OS level (``gatt.agent.PairingAgent`` is one)."""

    async def bonded(self) -> list[dict[str, Any]]: ...

    async def remove(self, address: str) -> bool: ...

    def set_window(self, is_open: bool) -> None: ...


class NodeParts(Protocol):
    """The parts of a node this module uses."""

    @property
    def transport(self) -> Transport: ...

    @property
    def bridge(self) -> NetworkConsensusBridge: ...

    @property
    def mesh(self) -> MeshNode: ...

    @property
    def tables(self) -> TableService: ...

    @property
    def phone(self) -> PhoneChat | None: ...

    def status(self) -> dict[str, Any]: ...


class OwnerFeatures:
    def __init__(
        self,
        node: NodeParts,
        store: Store | None,
        pairing: PairingConfig,
        hardware: GpioConfig,
        board: BoardProfile,
        *,
        panel_io: PanelIo | None = None,
    ) -> None:
        self.node = node
        self._own_store = store is None
        self.store = store if store is not None else Store(":memory:", durable=False)
        self.pairing = Pairing(self.store, self, pairing)
        if node.phone is not None:
            node.phone.private_hook = self.pairing.on_private
        nick = self.store.meta(NICK_META)
        if nick:  # an owner's !nick outlives restarts
            self._apply_nickname(nick.decode("utf-8", "replace"))
        if panel_io is None:
            panel_io, why = open_panel_io(hardware, board)
            quiet = why.get("reason") == "no_pins"  # off-Pi: nothing worth an INFO line
            log.log(logging.DEBUG if quiet else logging.INFO, "%s", kv("panel", **why))
        self.panel: PanelService | None = None
        if panel_io.has_button or panel_io.has_led:
            panel = Panel(
                PanelConfig(hardware.debounce_s, hardware.long_press_s, hardware.show_s,
                            hardware.led_idle)
            )  # fmt: skip
            self.panel = PanelService(panel_io, panel, self.facts, self._on_panel)
        self.bonds: Bonds | None = None
        self._task: asyncio.Task[None] | None = None

    def attach_bonds(self, bonds: Bonds) -> None:
        """The OS-level side (BlueZ agent): told when the window opens and closes."""
        self.bonds = bonds
        self.pairing.listeners.append(bonds.set_window)
        bonds.set_window(self.pairing.is_open())

    async def start(self) -> None:
        self._task = asyncio.create_task(self.pairing.run(), name="pairing-window")
        if self.panel is not None:
            await self.panel.start()

    async def stop(self) -> None:
        if self.panel is not None:
            await self.panel.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.pairing.close("stopped")
        if self._own_store:
            self.store.close()

    # -- the panel ---------------------------------------------------------------------

    def facts(self) -> Facts:
        node = self.node
        bridge = node.bridge
        healths = [bridge.health(sid) for sid in bridge.sessions]
        return Facts(
            links=len(node.transport.links()),
            at_table=any(h is SessionHealth.ACTIVE for h in healths),
            committing=bool(bridge.pending_operations()),
            partitioned=any(h is SessionHealth.PARTITIONED for h in healths),
            pairing=self.pairing.is_open(),
            error=bool(node.transport.issues()),
        )

    def _on_panel(self, action: Action) -> None:
        if action is Action.OPEN_PAIRING:
            self.pairing.open(origin="button")

    # -- OwnerHost ---------------------------------------------------------------------

    def status_line(self) -> str:
        s = self.node.status()
        tables = ", ".join(
            f"{t.get('name')} h{t.get('height')} {t.get('health')}" for t in s.get("sessions", [])
        )
        return f"{s.get('nickname')} {s.get('health')}, {len(s.get('links', []))} links" + (
            f"; {tables}" if tables else "; no tables"
        )

    def _apply_nickname(self, nickname: str) -> None:
        router = self.node.mesh.router
        router.config = dataclasses.replace(router.config, nickname=nickname)
        self.node.tables.nickname = nickname

    def set_nickname(self, now: float, nickname: str) -> None:
        self._apply_nickname(nickname)
        self.store.set_meta(NICK_META, nickname.encode("utf-8"))
        router = self.node.mesh.router
        router._announce_soon(now)  # phones list the new name soon
        log.info("%s", kv("nickname_set", by="owner", nickname=nickname))

    def open_table(self, name: str, seats: int | None) -> str:
        t = self.node.tables.open(name, seats, None, None)
        return f"opened {t.get('table', name)} ({str(t.get('id', ''))[:8]})"

    def close_table(self, name: str) -> str:
        """Leave the table; a table only this node sits at ends here (nobody is left to
        play it: it is no longer announced, and the session closes)."""
        tables = self.node.tables
        try:
            out = tables.leave(name)
        except TableError as exc:
            if exc.reason != "last_validator":
                raise
            tables._forget(tables._resolve(name))  # TableService has no public "end" yet
            return f"closed {name}"
        return f"left {out.get('table', name)}" if out.get("left") else f"leaving {name}"

    # -- control requests --------------------------------------------------------------

    def handlers(self) -> dict[str, Handler]:
        return {
            "pair_open": self._ctl_open,
            "pair_close": self._ctl_close,
            "pair_status": self._ctl_status,
            "pair_list": self._ctl_list,
            "pair_remove": self._ctl_remove,
        }

    async def _ctl_open(self, request: dict[str, Any]) -> dict[str, Any]:
        window = request.get("window")
        if window is not None and (not isinstance(window, int | float) or isinstance(window, bool)):
            return {"ok": False, "refused": True, "error": "'window' must be seconds"}
        try:
            return {"ok": True, **self.pairing.open(window)}
        except ValueError as exc:
            return {"ok": False, "refused": True, "error": str(exc)}

    async def _ctl_close(self, _request: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "closed": self.pairing.close()}

    async def _ctl_status(self, _request: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, **self.pairing.status()}

    async def _ctl_list(self, _request: dict[str, Any]) -> dict[str, Any]:
        bonded: list[dict[str, Any]] = []
        if self.bonds is not None:
            bonded = await self.bonds.bonded()
        return {"ok": True, "owners": self.pairing.owners(), "bonded": bonded}

    async def _ctl_remove(self, request: dict[str, Any]) -> dict[str, Any]:
        ident = request.get("id")
        if not isinstance(ident, str) or not ident:
            return {"ok": False, "refused": True, "error": "'id' must be an owner id or address"}
        if ADDRESS.match(ident):
            if self.bonds is None or not await self.bonds.remove(ident.upper()):
                return {"ok": False, "refused": True, "error": f"no bonded device {ident}"}
            return {"ok": True, "removed": [ident.upper()]}
        try:
            removed = self.pairing.remove(ident)
        except ValueError as exc:
            return {"ok": False, "refused": True, "error": str(exc)}
        if not removed:
            return {"ok": False, "refused": True, "error": f"no owner {ident}"}
        return {"ok": True, "removed": removed}


__all__ = ["Bonds", "NodeParts", "OwnerFeatures"]
