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
    "ble_bridge.commands.pair",
    "ble_bridge.commands.bench",
    "gatt.cli",
    "ble_bridge.commands.simulate",
)


LOG_FORMAT = "%(levelname)s %(message)s"
"""``LEVEL event key=value …`` (``ble_bridge.events``); journald adds the time."""


def log_level(args: argparse.Namespace) -> int:
    """The service (``run``, and so ``lab``'s nodes) logs INFO by default, other commands
    WARNING; each ``-v`` is one level more (down to DEBUG), each ``-q`` one less."""
    base: int = getattr(args, "default_log_level", logging.WARNING)
    level = base - 10 * args.verbose + 10 * args.quiet
    return int(max(logging.DEBUG, min(logging.CRITICAL, level)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ble-bridge",
        description="BitChat-compatible BLE mesh with Byzantine-fault-tolerant consensus.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-v: one level, -vv: two)"
    )
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=log_level(args), stream=sys.stderr, format=LOG_FORMAT)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
