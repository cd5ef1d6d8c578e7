"""``ble-bridge fake-bluez`` and ``ble-bridge doctor`` (wired into ``ble_bridge.cli``)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from gatt.fakebluez.config import FakeBluezConfig, LinkModel


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "fake-bluez",
        help="run a fake bluetoothd with N linked adapters on a private D-Bus",
        description="Starts a private dbus-daemon and the fake bluetoothd, prints the bus "
        "address, and runs until Ctrl-C. Point bleak/bless (or `ble-bridge run`) at it with "
        "DBUS_SYSTEM_BUS_ADDRESS=<address> and --adapter hciN.",
    )
    p.add_argument("--adapters", type=int, default=2, help="number of adapters (hci0..)")
    p.add_argument("--mtu", type=int, default=247, help="ATT MTU of every link")
    p.add_argument("--latency-ms", type=float, default=0.0, help="one-way link latency")
    p.add_argument("--loss", type=float, default=0.0, help="frame loss probability")
    p.add_argument("--link-limit", type=int, default=7, help="connections per adapter")
    p.add_argument(
        "--pi-controller",
        action="store_true",
        help="outgoing connects fail while advertising (BCM4345C0 rule)",
    )
    p.add_argument(
        "--connect-race",
        type=float,
        default=0.0,
        metavar="P",
        help="probability that a connect ends half-open, as with one bluetoothd driving "
        "several controllers (one side connected, the other not)",
    )
    p.add_argument(
        "--connect-blocked-while-peripheral",
        action="store_true",
        help="a Connect waits while the adapter holds a peripheral-role link, as on Linux "
        "6.1 with an hci_uart controller (no HCI_QUIRK_VALID_LE_STATES)",
    )
    p.add_argument(
        "--bluez-version",
        default="5.66",
        help="bluetoothd to imitate (5.80+ with --experimental reads scan-response properties)",
    )
    p.add_argument("--experimental", action="store_true", help="as bluetoothd --experimental")
    p.add_argument("--config", default="", help="full FakeBluezConfig as JSON (overrides)")
    p.set_defaults(func=run_fake_bluez)

    lab = sub.add_parser(
        "lab",
        help="N real node processes on fake adapters play the default craps session",
    )
    lab.add_argument("--nodes", type=int, default=4)
    lab.add_argument("--duration", type=float, default=30.0, help="seconds to watch")
    lab.add_argument("--latency-ms", type=float, default=0.0, help="one-way link latency")
    lab.add_argument("--line", action="store_true", help="adapters in a row (multi-hop)")
    lab.add_argument("--quiet", action="store_true", help="no progress lines")
    lab.add_argument(
        "--chaos",
        type=float,
        default=None,
        metavar="SECONDS",
        help="every SECONDS kill a random node with SIGKILL and restart it on its state dir",
    )
    lab.add_argument("--kills", type=int, default=None, help="with --chaos: stop after N rejoins")
    lab.add_argument("--seed", type=int, default=None, help="with --chaos: which nodes die")
    lab.set_defaults(func=run_lab_command)

    d = sub.add_parser("doctor", help="check BlueZ, the adapter and known-bad settings")
    d.add_argument("--adapter", default="hci0")
    d.add_argument("--json", action="store_true", help="print the findings as JSON")
    d.set_defaults(func=lambda args: _doctor(args.adapter, args.json))


def run_lab_command(args: argparse.Namespace) -> int:
    from gatt.lab import run_lab

    link = LinkModel(latency_s=args.latency_ms / 1000.0)
    if args.line:
        cfg = FakeBluezConfig.line(args.nodes, link=link)
    else:
        cfg = FakeBluezConfig(adapters=args.nodes, link=link)
    result = run_lab(
        args.nodes,
        args.duration,
        cfg,
        progress=not args.quiet,
        chaos=args.chaos,
        max_kills=args.kills,
        seed=args.seed,
    )
    if not args.quiet:
        for k in result.kills:
            took = "not rejoined" if k.rejoin_s is None else f"rejoined in {k.rejoin_s:.1f}s"
            print(f"lab: kill node{k.node} at height {k.height_before}: {took}", file=sys.stderr)
    print(result.last_line())
    return 0 if result.safe and result.rejoined == len(result.kills) else 1


def _doctor(adapter: str, as_json: bool = False) -> int:
    from gatt.doctor import run_doctor

    return run_doctor(adapter, as_json)


def config_from_args(args: argparse.Namespace) -> FakeBluezConfig:
    if args.config:
        cfg = FakeBluezConfig.from_json(args.config)
    else:
        cfg = FakeBluezConfig(
            adapters=args.adapters,
            link=LinkModel(latency_s=args.latency_ms / 1000.0, loss=args.loss, mtu=args.mtu),
            link_limit=args.link_limit,
            connect_fails_while_advertising=args.pi_controller,
            connect_race=args.connect_race,
            connect_blocked_while_peripheral=args.connect_blocked_while_peripheral,
            bluez_version=args.bluez_version,
            experimental=args.experimental,
        )
    cfg.adapters = args.adapters
    return cfg


def run_fake_bluez(args: argparse.Namespace) -> int:
    from gatt.fakebluez.bus import PrivateBus, dbus_daemon_path
    from gatt.fakebluez.service import FakeBluez

    if dbus_daemon_path() is None:
        print("ble-bridge fake-bluez: dbus-daemon not found (apt install dbus)", file=sys.stderr)
        return 1
    config = config_from_args(args)
    bus = PrivateBus()
    address = bus.start()

    async def serve() -> None:
        fake = FakeBluez(config)
        await fake.start(address)
        print(address, flush=True)
        print(
            f"export DBUS_SYSTEM_BUS_ADDRESS='{address}'  # adapters hci0..hci{config.adapters - 1}",
            file=sys.stderr,
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await fake.stop()

    try:
        asyncio.run(serve())
    finally:
        bus.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m gatt.cli``) until ``ble_bridge.cli`` registers us."""
    parser = argparse.ArgumentParser(prog="ble-bridge")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
