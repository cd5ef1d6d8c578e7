"""The ``ble-bridge`` command: one subcommand per module, registered here."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# Modules providing ``register(subparsers)``; each adds its own subcommands.
COMMAND_MODULES = (
    "ble_bridge.commands.keys",
    "ble_bridge.commands.wire",
    "ble_bridge.commands.node",
    "ble_bridge.commands.tables",
    "ble_bridge.commands.bench",
    "gatt.cli",
    "ble_bridge.commands.simulate",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ble-bridge",
        description="BitChat-compatible BLE mesh with Byzantine-fault-tolerant consensus.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
