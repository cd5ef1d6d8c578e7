"""``ble-bridge wire decode|encode``: inspect and craft mesh frames (filled in by the wire work)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    del sub
