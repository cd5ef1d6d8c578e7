"""Run the fake bluetoothd on a given bus: ``python -m gatt.fakebluez --address ADDR``."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from gatt.fakebluez.config import FakeBluezConfig
from gatt.fakebluez.service import FakeBluez


async def _serve(address: str, config: FakeBluezConfig) -> None:
    fake = FakeBluez(config)
    await fake.start(address)
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await fake.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gatt.fakebluez", description=__doc__)
    p.add_argument("--address", required=True, help="D-Bus address to serve org.bluez on")
    p.add_argument("--adapters", type=int, default=None)
    p.add_argument("--config", default="", help="FakeBluezConfig as JSON")
    args = p.parse_args(argv)
    config = FakeBluezConfig.from_json(args.config)
    if args.adapters is not None:
        config.adapters = args.adapters
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_serve(args.address, config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
