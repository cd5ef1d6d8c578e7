"""Hypothesis profiles: CI runs a fixed example set (reproducible), developers explore."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


# Tests that run on the wall clock: real node processes, the fake BlueZ on a private bus, a real
# mosquitto, systemd tools. scripts/test.sh runs them alone, after the virtual-clock tests have run
# on every core, so their bounds meet a machine loaded only by themselves.
WALLCLOCK_PATHS = (
    "tests/gatt/",
    "tests/node/",
    "tests/uplink/",
    "tests/deploy/",
    "tests/phone/test_lab_phone.py",
)


def pytest_collection_modifyitems(config: object, items: list[object]) -> None:
    """Mark wall-clock tests by path; tests marked ``slow`` run only with BLE_BRIDGE_SLOW=1."""
    import pytest

    root = os.path.dirname(os.path.abspath(__file__))
    wallclock = pytest.mark.wallclock
    for item in items:
        rel = os.path.relpath(str(getattr(item, "fspath", "")), root).replace(os.sep, "/")
        if rel.startswith(WALLCLOCK_PATHS):
            item.add_marker(wallclock)  # type: ignore[attr-defined]
    if os.environ.get("BLE_BRIDGE_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow tier: set BLE_BRIDGE_SLOW=1 to run")
    for item in items:
        if "slow" in getattr(item, "keywords", {}):
            item.add_marker(skip)  # type: ignore[attr-defined]
