"""Board profiles: what a Pi model's Bluetooth controller and GPIO can do.

Numbers come from published measurements summarised in ``shared/BLUEZ-DBUS.md``: ~7 stable
central links on a Pi 3B+ ("Limited Resources" at 9–10), Pi 4/5 (BCM4345C0) cannot advertise
and initiate at once, Pi Zero 2 W has no Data Length Extension (a third of the throughput).
The link budget is set below the failure point so links stay stable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEVICE_TREE_MODEL = Path("/proc/device-tree/model")


@dataclass(frozen=True, slots=True)
class BoardProfile:
    """What the node may ask of this board."""

    name: str
    link_budget: int
    """Links (inbound + outbound) the controller keeps stable."""
    advertise_while_connecting: bool
    """False where the controller fails an outgoing connect while advertising (HCI 0x3c)."""
    data_length_extension: bool
    sim_profile: str
    """The loopback-air link profile that models this board."""
    status_led: str | None = None
    """sysfs LED name under /sys/class/leds, if the board has one the node may drive."""
    gpio_chip_label: str | None = None
    """Label of the GPIO chip behind the 40-pin header (libgpiod finds /dev/gpiochipN by it)."""
    button_pin: int | None = None
    """Header line (BCM number) of the handheld's push button, wired to ground."""
    led_pin: int | None = None
    """Header line (BCM number) of the handheld's external LED (through a resistor)."""


BOARDS: dict[str, BoardProfile] = {
    # the handheld wiring: button GPIO17 (header pin 11) to GND, LED GPIO27 (pin 13)
    "pi5": BoardProfile("pi5", 5, False, True, "pi-tuned", "ACT", "pinctrl-rp1", 17, 27),
    "pi4": BoardProfile("pi4", 5, False, True, "pi-tuned", "ACT", "pinctrl-bcm2711", 17, 27),
    "pi3b+": BoardProfile("pi3b+", 5, True, True, "pi-tuned", "led0", "pinctrl-bcm2835", 17, 27),
    "zero2w": BoardProfile("zero2w", 4, True, False, "zero2w", "ACT", "pinctrl-bcm2835", 17, 27),
    "generic": BoardProfile("generic", 5, True, True, "pi-untuned", None),
}

_MODEL_PREFIXES = (
    ("Raspberry Pi 5", "pi5"),
    ("Raspberry Pi 4", "pi4"),
    ("Raspberry Pi Compute Module 4", "pi4"),
    ("Raspberry Pi 3 Model B Plus", "pi3b+"),
    ("Raspberry Pi Zero 2 W", "zero2w"),
)


def board_from_model(model: str) -> BoardProfile:
    """Map a device-tree model string (e.g. ``Raspberry Pi 4 Model B Rev 1.5``) to a profile."""
    model = model.strip("\x00 \n")
    for prefix, name in _MODEL_PREFIXES:
        if model.startswith(prefix):
            return BOARDS[name]
    return BOARDS["generic"]


def detect_board(model_path: Path = DEVICE_TREE_MODEL) -> BoardProfile:
    """The profile of the board we run on; ``generic`` off-Pi."""
    try:
        return board_from_model(model_path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return BOARDS["generic"]


def board_by_name(name: str) -> BoardProfile:
    """A profile by name, or ``auto`` to detect; raises ValueError with the known names."""
    if name == "auto":
        return detect_board()
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r}; known: auto, {', '.join(BOARDS)}") from None
