"""Hypothesis profiles: CI runs a fixed example set (reproducible), developers explore."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_collection_modifyitems(config: object, items: list[object]) -> None:
    """Tests marked ``slow`` (an hour-long lab, sweeps) run only with BLE_BRIDGE_SLOW=1."""
    import pytest

    if os.environ.get("BLE_BRIDGE_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow tier: set BLE_BRIDGE_SLOW=1 to run")
    for item in items:
        if "slow" in getattr(item, "keywords", {}):
            item.add_marker(skip)  # type: ignore[attr-defined]
