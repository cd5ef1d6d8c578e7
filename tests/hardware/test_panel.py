"""The button/LED state machine (sans-IO, explicit now) and its service on the fake backend."""

from __future__ import annotations

import asyncio
import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hardware.boards import BOARDS
from hardware.gpio import FakePanelIo, GpioConfig, NullPanelIo, open_panel_io
from hardware.panel import (
    ALWAYS_SHOWN,
    PATTERNS,
    PRIORITY,
    Action,
    Button,
    Facts,
    Panel,
    PanelConfig,
    Press,
    Status,
    pattern_level,
    status_of,
)
from hardware.service import PanelService

DEBOUNCE = 0.03
LONG = 3.0
SETTLE = DEBOUNCE * 1.01  # a little more than the debounce time, float-safe

# a press: (gap before it, how long it is held)
presses = st.lists(st.tuples(st.floats(0.05, 5.0), st.floats(0.05, 6.0)), min_size=1, max_size=12)


def _expected(held: float) -> Press:
    return Press.LONG if held >= LONG else Press.SHORT


@given(presses, st.floats(0.001, 0.5))
def test_each_clean_press_gives_one_event_of_its_length(
    seq: list[tuple[float, float]], sample: float
) -> None:
    """Sampled at any rate, a clean press is one event: LONG iff held >= 3 s."""
    b = Button(debounce_s=DEBOUNCE, long_press_s=LONG)
    t = 0.0
    got: list[Press] = []
    want: list[Press] = []
    for gap, held in seq:
        t += gap
        got += b.step(t, True)
        end = t + held
        while t + sample < end:
            t += sample
            got += b.step(t)
        t = end
        got += b.step(t, False)
        want.append(_expected(held))
    got += b.step(t + 1.0)
    assert got == want
    assert not b.down


@given(presses)
def test_long_press_is_reported_while_still_held(seq: list[tuple[float, float]]) -> None:
    b = Button(debounce_s=DEBOUNCE, long_press_s=LONG)
    t = 0.0
    for gap, held in seq:
        t += gap
        assert b.step(t, True) == []
        assert b.deadline() == pytest.approx(t + DEBOUNCE)
        assert b.step(t + SETTLE) == [] and b.down
        if held >= LONG:
            assert b.deadline() == pytest.approx(t + LONG)
            assert b.step(t + LONG) == [Press.LONG]  # at 3 s, button still down
            assert b.step(t + held, False) == []
            assert b.step(t + held + SETTLE) == []  # never twice for one press
        else:
            b.step(t + held, False)
            assert b.step(t + held + SETTLE) == [Press.SHORT]
        t += held + SETTLE


@given(st.lists(st.floats(0.0, DEBOUNCE * 0.99), min_size=1, max_size=20))
def test_glitches_shorter_than_debounce_never_press(widths: list[float]) -> None:
    b = Button(debounce_s=DEBOUNCE, long_press_s=LONG)
    t = 1.0
    out: list[Press] = []
    for w in widths:
        out += b.step(t, True)
        out += b.step(t + w, False)
        t += w + DEBOUNCE * 2
        out += b.step(t)
    assert out == []
    assert not b.down


@given(st.lists(st.tuples(st.floats(-1.0, 2.0), st.one_of(st.none(), st.booleans())), max_size=60))
def test_any_sample_sequence_is_safe(samples: list[tuple[float, bool | None]]) -> None:
    """Random levels at random (even backwards) times: no crash, every release after an
    accepted press gives at most one event, and an event never comes without a press."""
    b = Button(debounce_s=DEBOUNCE, long_press_s=LONG)
    t = 0.0
    events = 0
    downs = 0
    was_down = False
    for dt, level in samples:
        t += dt
        events += len(b.step(t, level))
        if b.down and not was_down:
            downs += 1
        was_down = b.down
    assert events <= downs
    assert b.deadline() >= 0


def test_bouncy_contacts_count_as_one_press() -> None:
    b = Button(debounce_s=DEBOUNCE, long_press_s=LONG)
    out = []
    for i, level in enumerate([True, False, True, False, True]):  # 5 ms of bounce
        out += b.step(10.0 + i * 0.001, level)
    out += b.step(10.5, False)
    out += b.step(10.6)
    assert out == [Press.SHORT]
    assert b.glitches == 2  # two pulses up that did not last


@given(
    st.integers(0, 20),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_status_follows_priority(
    links: int, table: bool, committing: bool, partitioned: bool, pairing: bool, error: bool
) -> None:
    f = Facts(links, table, committing, partitioned, pairing, error)
    status = status_of(f)
    held = {
        Status.ERROR: error,
        Status.PAIRING: pairing,
        Status.PARTITIONED: partitioned,
        Status.COMMITTING: committing,
        Status.AT_TABLE: table,
        Status.LINKED: links > 0,
        Status.SEARCHING: True,
    }
    assert status is next(s for s in PRIORITY if held[s])


def test_every_status_has_its_own_pattern() -> None:
    assert set(PATTERNS) == set(Status)
    assert len(set(PATTERNS.values())) == len(Status)


@given(st.sampled_from(list(Status)), st.floats(0.0, 1e4))
def test_pattern_level_is_consistent(status: Status, t: float) -> None:
    pattern = PATTERNS[status]
    on, change = pattern_level(pattern, t)
    if not pattern:
        assert on and change == math.inf
        return
    assert 0 < change <= max(pattern) + 1e-9
    # just before the change the level is the same
    assert pattern_level(pattern, t + change * 0.5)[0] == on


def _trace(panel: Panel, start: float, end: float) -> list[tuple[float, bool]]:
    """Follow the LED through its own 'look again' times."""
    t = start
    out = []
    while t < end:
        on, look = panel.led(t)
        out.append((t, on))
        assert look > t
        t = min(look, end)
    return out


@given(st.integers(0, 12))
def test_short_press_blinks_the_link_count_then_the_status(links: int) -> None:
    panel = Panel(PanelConfig(idle="off"))
    panel.update(0.0, Facts(links=links))
    assert panel.led(0.5)[0] is False  # idle off: dark
    assert panel.step(1.0, True) == []
    assert panel.step(1.2, False) == []
    assert panel.step(1.3) == [Action.READOUT]
    end = panel.readout_end()
    assert end is not None
    trace = _trace(panel, 1.3, end + 1.0)
    ons = [t for (t, on), (_, prev) in zip(trace[1:], trace, strict=False) if on and not prev]
    count_ends = 1.3 + 0.6 + (1.0 if links == 0 else 0.5 * min(links, 9) - 0.3) + 0.6
    blinks = [t for t in ons if t < count_ends - 1e-9]
    assert len(blinks) == max(1, min(links, 9))
    status_blinks = [t for t in ons if count_ends - 1e-9 <= t < end]
    # searching (no links) blinks every 2 s, linked double-blinks every 3 s, for 6 s
    assert len(status_blinks) == (3 if links == 0 else 4)
    assert all(not on for t, on in trace if t >= end)  # dark again afterwards


def test_pairing_and_error_show_even_when_idle_is_off() -> None:
    panel = Panel(PanelConfig(idle="off"))
    for facts, status in ((Facts(pairing=True), Status.PAIRING), (Facts(error=True), Status.ERROR)):
        panel.update(10.0, facts)
        assert status in ALWAYS_SHOWN and panel.status is status
        assert any(on for _, on in _trace(panel, 10.0, 12.0))
    panel.update(20.0, Facts(links=2, at_table=True))
    assert not any(on for _, on in _trace(panel, 20.0, 25.0))


def test_long_press_opens_pairing_and_at_table_is_solid() -> None:
    panel = Panel()
    panel.update(0.0, Facts(links=3, at_table=True))
    assert _trace(panel, 0.0, 10.0) == [(0.0, True)]  # solid: nothing to look at again
    panel.step(5.0, True)
    assert panel.led(5.0)[1] == pytest.approx(5.0 + DEBOUNCE)  # the button's deadline
    panel.step(5.0 + SETTLE)
    assert panel.led(5.1)[1] == pytest.approx(8.0)
    assert panel.step(8.0) == [Action.OPEN_PAIRING]
    assert panel.presses[Press.LONG] == 1


def test_bad_idle_is_refused() -> None:
    with pytest.raises(ValueError, match="idle"):
        Panel(PanelConfig(idle="dim"))  # type: ignore[arg-type]


def test_null_backend_off_pi_and_without_pins() -> None:
    io, why = open_panel_io(GpioConfig(), BOARDS["generic"])
    assert isinstance(io, NullPanelIo) and why["reason"] == "no_pins"
    io, why = open_panel_io(GpioConfig(backend="null"), BOARDS["pi4"])
    assert isinstance(io, NullPanelIo)
    # a Pi profile off-Pi: the header chip is not there, so null (auto) ...
    io, why = open_panel_io(GpioConfig(), BOARDS["pi4"])
    assert isinstance(io, NullPanelIo) and why["reason"] == "no_gpio_chip"


def test_gpiod_backend_asked_for_without_a_chip_is_an_error() -> None:
    from hardware.gpio import GpioError

    with pytest.raises(GpioError, match="pinctrl-bcm2711"):
        open_panel_io(GpioConfig(backend="gpiod"), BOARDS["pi4"])


async def _until(cond: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():  # type: ignore[operator]
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


def test_service_on_the_fake_backend_short_and_long_press() -> None:
    """Through the fd, as with libgpiod: edges stamped by the monotonic clock."""

    async def main() -> None:
        io = FakePanelIo()
        facts = Facts(links=1)
        actions: list[Action] = []
        svc = PanelService(io, Panel(PanelConfig(long_press_s=0.5)), lambda: facts, actions.append)
        await svc.start()
        await _until(lambda: io.led_writes)
        io.press()
        await asyncio.sleep(0.1)
        io.release()
        await _until(lambda: Action.READOUT in actions)
        io.press()
        await _until(lambda: Action.OPEN_PAIRING in actions)  # while still held
        assert io.pressed
        io.release()
        facts = Facts(links=1, pairing=True)
        await _until(lambda: svc.panel.status is Status.PAIRING)
        await _until(lambda: sum(1 for _, on in io.led_writes if on) >= 4)
        await svc.stop()
        assert io.closed and svc.errors == 0
        assert actions == [Action.READOUT, Action.OPEN_PAIRING]

    asyncio.run(main())


@settings(max_examples=30)
@given(st.sampled_from(list(Status)))
def test_led_trace_matches_the_pattern(status: Status) -> None:
    facts = {
        Status.SEARCHING: Facts(),
        Status.LINKED: Facts(links=1),
        Status.AT_TABLE: Facts(links=1, at_table=True),
        Status.COMMITTING: Facts(links=1, at_table=True, committing=True),
        Status.PARTITIONED: Facts(links=1, partitioned=True),
        Status.PAIRING: Facts(pairing=True),
        Status.ERROR: Facts(error=True),
    }[status]
    panel = Panel()
    panel.update(100.0, facts)
    trace = _trace(panel, 100.0, 100.0 + 2 * (sum(PATTERNS[status]) or 1.0))
    pattern = PATTERNS[status]
    if not pattern:
        assert trace == [(100.0, True)]
        return
    durations = [b[0] - a[0] for a, b in itertools.pairwise(trace)]
    assert [on for _, on in trace[: len(pattern)]] == [i % 2 == 0 for i in range(len(pattern))]
    assert durations[: len(pattern)] == pytest.approx(list(pattern))
