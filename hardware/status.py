"""Status LED and battery gauge through sysfs, with a null backend off-Pi.

The LED shows the node's health at a glance: solid = healthy, slow blink = no quorum
(partitioned), fast blink = no links,
short flashes = error (stopped signing). Driving sysfs needs write access to
``/sys/class/leds/<name>/trigger`` and ``brightness`` (the systemd unit grants it).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

SYS_LEDS = Path("/sys/class/leds")
SYS_POWER = Path("/sys/class/power_supply")


class NodeHealth(enum.Enum):
    HEALTHY = "healthy"
    PARTITIONED = "partitioned"
    ISOLATED = "isolated"
    DEGRADED = "degraded"  # linked and in quorum, but the transport reports a problem
    STOPPED = "stopped"
    ERROR = "error"  # stopped signing: a storage error or a bug; exits soon (systemd restarts)


# (trigger, delay_on ms, delay_off ms) per health state; "timer" blinks in the kernel.
_PATTERNS: dict[NodeHealth, tuple[str, int, int]] = {
    NodeHealth.HEALTHY: ("default-on", 0, 0),
    NodeHealth.PARTITIONED: ("timer", 1000, 1000),
    NodeHealth.DEGRADED: ("heartbeat", 0, 0),
    NodeHealth.ISOLATED: ("timer", 100, 100),
    NodeHealth.STOPPED: ("none", 0, 0),
    NodeHealth.ERROR: ("timer", 50, 450),  # a short flash twice a second
}


class StatusLed:
    """A sysfs LED; every method is a no-op when the LED does not exist or is not writable."""

    def __init__(self, name: str | None, root: Path = SYS_LEDS) -> None:
        self.path = root / name if name else None
        self.errors = 0
        self.shown: NodeHealth | None = None

    @property
    def available(self) -> bool:
        return self.path is not None and (self.path / "trigger").exists()

    def show(self, health: NodeHealth) -> None:
        """Set the LED pattern for ``health`` (only writes when it changes)."""
        if health is self.shown or not self.available:
            return
        assert self.path is not None
        trigger, on, off = _PATTERNS[health]
        try:
            (self.path / "trigger").write_text(trigger)
            if trigger == "timer":
                (self.path / "delay_on").write_text(str(on))
                (self.path / "delay_off").write_text(str(off))
            elif trigger == "none":
                (self.path / "brightness").write_text("0")
            self.shown = health
        except OSError:
            self.errors += 1


@dataclass(frozen=True, slots=True)
class BatteryReading:
    capacity_percent: int | None
    status: str | None


def read_battery(root: Path = SYS_POWER) -> BatteryReading | None:
    """First battery under /sys/class/power_supply (e.g. a UPS HAT with a kernel driver)."""
    try:
        supplies = sorted(root.iterdir())
    except OSError:
        return None
    for supply in supplies:
        try:
            if (supply / "type").read_text().strip() != "Battery":
                continue
        except OSError:
            continue
        capacity: int | None
        try:
            capacity = int((supply / "capacity").read_text().strip())
        except (OSError, ValueError):
            capacity = None
        try:
            status: str | None = (supply / "status").read_text().strip()
        except OSError:
            status = None
        return BatteryReading(capacity, status)
    return None
