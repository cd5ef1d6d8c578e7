"""Start and steer a fake bluetoothd: private dbus-daemon + fake process + control client."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from gatt.fakebluez import interfaces as I
from gatt.fakebluez.bus import PrivateBus
from gatt.fakebluez.config import FakeBluezConfig


def _source_root() -> str:
    """The directory holding the ``gatt`` package, first on the fake's PYTHONPATH."""
    root = str(Path(__file__).resolve().parents[2])
    rest = os.environ.get("PYTHONPATH")
    return f"{root}{os.pathsep}{rest}" if rest else root


class FakeBluezProcess:
    """A private bus with the fake bluetoothd running in its own process."""

    def __init__(self, config: FakeBluezConfig) -> None:
        self.config = config
        self.bus = PrivateBus()
        self.proc: subprocess.Popen[bytes] | None = None
        self.address = ""

    def start(self) -> str:
        """Start dbus-daemon (once) and the fake; return the bus address."""
        if not self.address:
            self.address = self.bus.start()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gatt.fakebluez",
                "--address",
                self.address,
                "--config",
                self.config.to_json(),
            ],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": _source_root()},
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("fake bluetoothd did not start")
        return self.address

    def stop_fake(self) -> None:
        """Stop the fake bluetoothd cleanly (it removes its objects), keep the bus."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None

    def restart(self, crash: bool = False) -> None:
        """What ``systemctl restart bluetooth`` does to clients: all state is gone.

        ``crash``: SIGKILL, so no InterfacesRemoved/Connected=False signals are sent first.
        """
        if crash and self.proc is not None:
            self.proc.kill()
        self.stop_fake()
        self.start()

    def close(self) -> None:
        self.stop_fake()
        self.bus.stop()

    def env(self) -> dict[str, str]:
        return {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.address}


class FakeControl:
    """Client of the fake's ``org.bluez.testing.FakeControl1`` interface."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._bus: MessageBus | None = None

    async def _call(self, member: str, sig: str = "", body: list[Any] | None = None) -> Any:
        if self._bus is None or not self._bus.connected:
            self._bus = await MessageBus(bus_address=self.address).connect()
        reply = await self._bus.call(
            Message(
                destination="org.bluez",
                path="/",
                interface=I.CONTROL,
                member=member,
                signature=sig,
                body=body or [],
            )
        )
        assert reply is not None
        if reply.message_type == MessageType.ERROR:
            raise RuntimeError(f"{reply.error_name}: {reply.body}")
        return reply.body

    async def configure(self, **changes: Any) -> None:
        """Change the fake's config (new links use the new link model)."""
        await self._call("Configure", "s", [json.dumps(changes)])

    async def set_link(self, a: int, b: int, **model: Any) -> None:
        await self._call("SetLink", "uus", [a, b, json.dumps(model)])

    async def drop_link(self, a: int, b: int, reason: str = "forced") -> None:
        await self._call("DropLink", "uus", [a, b, reason])

    async def set_powered(self, adapter: int, on: bool) -> None:
        await self._call("SetPowered", "ub", [adapter, on])

    async def stats(self) -> dict[str, Any]:
        body = await self._call("Stats")
        result: dict[str, Any] = json.loads(body[0])
        return result

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        """Poll stats until ``predicate(stats)`` holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            s = await self.stats()
            if predicate(s) or loop.time() > deadline:
                return s
            await asyncio.sleep(0.05)

    def close(self) -> None:
        if self._bus is not None:
            self._bus.disconnect()
            self._bus = None
