"""The external button and LED: GPIO lines through libgpiod v2, a null backend, a fake.

:class:`PanelIo` is what the panel service needs: the button's level, its edge events
(with the kernel's monotonic timestamps) behind a readable file descriptor, and an LED to
switch. :class:`GpiodPanelIo` requests the lines from the character device
(``/dev/gpiochipN``) with the ``gpiod`` package (libgpiod v2's Python bindings); the
chip is found by its label (``pinctrl-rp1`` on a Pi 5, ``pinctrl-bcm2711`` on a Pi 4, ...)
unless a path is configured. :class:`NullPanelIo` is used off-Pi or without pins;
:class:`FakePanelIo` is the tests' button and LED (an os.pipe stands in for the request's
fd, so the service's wait works the same way). On-board LEDs stay on sysfs
(:class:`hardware.status.StatusLed`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from .boards import BoardProfile


@dataclass(frozen=True, slots=True)
class GpioConfig:
    """``[hardware]``: the handheld's button and LED (pins are BCM line offsets)."""

    backend: Literal["auto", "gpiod", "null"] = "auto"
    chip: str = ""  # /dev/gpiochipN; "" = the board's header chip, found by label
    button_pin: int | None = None  # None: the board profile's
    led_pin: int | None = None
    button_active_low: bool = True  # a button to ground with the internal pull-up
    led_active_low: bool = False
    debounce_s: float = 0.03
    long_press_s: float = 3.0
    show_s: float = 6.0  # how long a short press shows the status pattern
    led_idle: Literal["pattern", "off"] = "pattern"


class PanelIo(Protocol):
    @property
    def has_button(self) -> bool: ...

    @property
    def has_led(self) -> bool: ...

    def button(self) -> bool:
        """Is the button pressed now?"""
        ...

    def fileno(self) -> int | None:
        """Readable when edge events wait (None: no button)."""
        ...

    def read_edges(self) -> list[tuple[float, bool]]:
        """Queued edges as (monotonic seconds, pressed), oldest first."""
        ...

    def set_led(self, on: bool) -> None: ...

    def close(self) -> None: ...


class NullPanelIo:
    """No button, no LED."""

    has_button = False
    has_led = False

    def button(self) -> bool:
        return False

    def fileno(self) -> int | None:
        return None

    def read_edges(self) -> list[tuple[float, bool]]:
        return []

    def set_led(self, on: bool) -> None:
        pass

    def close(self) -> None:
        pass


class FakePanelIo:
    """A button a test presses and an LED it reads; edges are timestamped by the caller's
    clock (``time.monotonic`` by default), as the kernel stamps real ones."""

    has_button = True
    has_led = True

    def __init__(self, max_edges: int = 64) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self.pressed = False
        self.led = False
        self.led_writes: list[tuple[float, bool]] = []
        self._edges: list[tuple[float, bool]] = []
        self.max_edges = max_edges
        self.dropped = 0
        self.closed = False

    def press(self, at: float | None = None) -> None:
        self._edge(True, at)

    def release(self, at: float | None = None) -> None:
        self._edge(False, at)

    def _edge(self, pressed: bool, at: float | None) -> None:
        if pressed == self.pressed:
            return
        self.pressed = pressed
        if len(self._edges) >= self.max_edges:  # the kernel's event buffer overflows too
            self.dropped += 1
            return
        self._edges.append((time.monotonic() if at is None else at, pressed))
        os.write(self._w, b"e")

    def button(self) -> bool:
        return self.pressed

    def fileno(self) -> int | None:
        return self._r

    def read_edges(self) -> list[tuple[float, bool]]:
        with contextlib.suppress(BlockingIOError):
            os.read(self._r, 4096)
        out, self._edges = self._edges, []
        return out

    def set_led(self, on: bool) -> None:
        if on != self.led or not self.led_writes:
            self.led_writes.append((time.monotonic(), on))
            if len(self.led_writes) > 4096:
                del self.led_writes[:2048]
        self.led = on

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._r)
            os.close(self._w)


class GpioError(Exception):
    """The GPIO lines could not be requested (no chip, line busy, no permission)."""


def find_chip(label: str, dev: Path = Path("/dev")) -> str | None:
    """The /dev/gpiochipN whose label is ``label`` (None when none is)."""
    import gpiod

    for path in sorted(dev.glob("gpiochip*")):
        try:
            if not gpiod.is_gpiochip_device(str(path)):
                continue
            with gpiod.Chip(str(path)) as chip:
                if chip.get_info().label == label:
                    return str(path)
        except OSError:
            continue
    return None


class GpiodPanelIo:
    """Button and LED lines requested through libgpiod v2 (``gpiod`` >= 2).

    Tested on real lines (a gpio-sim chip in a VM) by ``scripts/test-gpio-vm.sh``."""

    EDGE_BATCH = 16
    MAX_EDGE_READS = 4

    def __init__(
        self,
        chip: str,
        button_pin: int | None,
        led_pin: int | None,
        *,
        button_active_low: bool = True,
        led_active_low: bool = False,
        consumer: str = "ble-bridge",
    ) -> None:
        import gpiod
        from gpiod.line import Bias, Direction, Edge, Value

        self._Value = Value
        self.button_pin = button_pin
        self.led_pin = led_pin
        config: dict[Iterable[int | str] | int | str, gpiod.LineSettings | None] = {}
        if button_pin is not None:
            config[button_pin] = gpiod.LineSettings(
                direction=Direction.INPUT,
                edge_detection=Edge.BOTH,
                bias=Bias.PULL_UP if button_active_low else Bias.PULL_DOWN,
                active_low=button_active_low,
            )
        if led_pin is not None:
            config[led_pin] = gpiod.LineSettings(
                direction=Direction.OUTPUT, active_low=led_active_low, output_value=Value.INACTIVE
            )
        if not config:
            raise GpioError("no button or LED pin configured")
        try:
            self._req = gpiod.request_lines(chip, consumer=consumer, config=config)
        except (OSError, ValueError) as exc:
            lines = sorted(map(str, config))
            raise GpioError(f"{chip}: cannot request lines {lines}: {exc}") from exc
        from gpiod.edge_event import EdgeEvent

        self._rising = EdgeEvent.Type.RISING_EDGE

    @property
    def has_button(self) -> bool:
        return self.button_pin is not None

    @property
    def has_led(self) -> bool:
        return self.led_pin is not None

    def button(self) -> bool:
        if self.button_pin is None:
            return False
        return bool(self._req.get_value(self.button_pin) == self._Value.ACTIVE)

    def fileno(self) -> int | None:
        return self._req.fd if self.button_pin is not None else None

    def read_edges(self) -> list[tuple[float, bool]]:
        if self.button_pin is None:
            return []
        # read_edge_events() blocks until an event comes, and the service calls this on
        # every wake-up (LED steps too): read only what is queued now. Bounded: at most
        # MAX_EDGE_READS batches; the rest waits for the next call (the fd stays readable).
        out: list[tuple[float, bool]] = []
        for _ in range(self.MAX_EDGE_READS):
            if not self._req.wait_edge_events(0):
                break
            # active_low is applied by the kernel: a rising edge is the button going down
            out += [
                (ev.timestamp_ns / 1e9, ev.event_type == self._rising)
                for ev in self._req.read_edge_events(self.EDGE_BATCH)
            ]
        return out

    def set_led(self, on: bool) -> None:
        if self.led_pin is not None:
            self._req.set_value(self.led_pin, self._Value.ACTIVE if on else self._Value.INACTIVE)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._req.release()


def open_panel_io(config: GpioConfig, board: BoardProfile) -> tuple[PanelIo, dict[str, str]]:
    """The backend for this board and config, and what to log: backend, reason, details."""
    button = config.button_pin if config.button_pin is not None else board.button_pin
    led = config.led_pin if config.led_pin is not None else board.led_pin
    if config.backend == "null":
        return NullPanelIo(), {"backend": "null", "reason": "configured"}
    if button is None and led is None:
        return NullPanelIo(), {"backend": "null", "reason": "no_pins", "board": board.name}
    try:
        import gpiod  # noqa: F401
    except ImportError:
        if config.backend == "gpiod":
            raise GpioError("the gpiod package (libgpiod v2 bindings) is not installed") from None
        return NullPanelIo(), {"backend": "null", "reason": "gpiod_not_installed"}
    chip = config.chip
    if not chip and board.gpio_chip_label:
        chip = find_chip(board.gpio_chip_label) or ""
    if not chip:
        if config.backend == "gpiod":
            raise GpioError(f"no GPIO chip labelled {board.gpio_chip_label!r}; set [hardware] chip")
        return NullPanelIo(), {"backend": "null", "reason": "no_gpio_chip", "board": board.name}
    try:
        io = GpiodPanelIo(
            chip,
            button,
            led,
            button_active_low=config.button_active_low,
            led_active_low=config.led_active_low,
        )
    except GpioError as exc:
        if config.backend == "gpiod":
            raise
        return NullPanelIo(), {"backend": "null", "reason": "gpio_error", "error": str(exc)}
    return io, {"backend": "gpiod", "chip": chip, "button": str(button), "led": str(led)}


__all__ = [
    "FakePanelIo",
    "GpioConfig",
    "GpioError",
    "GpiodPanelIo",
    "NullPanelIo",
    "PanelIo",
    "find_chip",
    "open_panel_io",
]
