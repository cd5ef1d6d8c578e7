from pathlib import Path

import pytest

from hardware import BOARDS, NodeHealth, StatusLed, board_by_name, board_from_model, read_battery
from hardware.boards import detect_board


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("Raspberry Pi 5 Model B Rev 1.0\x00", "pi5"),
        ("Raspberry Pi 4 Model B Rev 1.5", "pi4"),
        ("Raspberry Pi 3 Model B Plus Rev 1.3", "pi3b+"),
        ("Raspberry Pi Zero 2 W Rev 1.0", "zero2w"),
        ("QEMU Virtual Machine", "generic"),
    ],
)
def test_board_from_device_tree_model(model: str, name: str) -> None:
    assert board_from_model(model).name == name


def test_pi4_cannot_advertise_while_connecting_and_zero_lacks_dle() -> None:
    assert not BOARDS["pi4"].advertise_while_connecting
    assert not BOARDS["zero2w"].data_length_extension
    assert BOARDS["zero2w"].sim_profile == "zero2w"


def test_detect_board_off_pi_is_generic(tmp_path: Path) -> None:
    assert detect_board(tmp_path / "missing").name == "generic"
    model = tmp_path / "model"
    model.write_text("Raspberry Pi 4 Model B Rev 1.4\x00")
    assert detect_board(model).name == "pi4"


def test_unknown_board_name_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="known: auto"):
        board_by_name("pi9")


def _fake_led(root: Path) -> Path:
    led = root / "ACT"
    led.mkdir(parents=True)
    for f in ("trigger", "brightness", "delay_on", "delay_off"):
        (led / f).write_text("")
    return led


def test_led_blinks_slowly_when_partitioned(tmp_path: Path) -> None:
    led_dir = _fake_led(tmp_path)
    led = StatusLed("ACT", root=tmp_path)
    led.show(NodeHealth.PARTITIONED)
    assert (led_dir / "trigger").read_text() == "timer"
    assert (led_dir / "delay_on").read_text() == "1000"
    led.show(NodeHealth.HEALTHY)
    assert (led_dir / "trigger").read_text() == "default-on"


def test_missing_led_is_a_no_op(tmp_path: Path) -> None:
    led = StatusLed("nope", root=tmp_path)
    led.show(NodeHealth.ISOLATED)
    assert not led.available and led.errors == 0 and led.shown is None
    StatusLed(None).show(NodeHealth.HEALTHY)


def test_battery_reads_first_battery_supply(tmp_path: Path) -> None:
    ac = tmp_path / "AC"
    ac.mkdir()
    (ac / "type").write_text("Mains\n")
    bat = tmp_path / "BAT0"
    bat.mkdir()
    (bat / "type").write_text("Battery\n")
    (bat / "capacity").write_text("87\n")
    (bat / "status").write_text("Discharging\n")
    reading = read_battery(tmp_path)
    assert reading is not None
    assert reading.capacity_percent == 87 and reading.status == "Discharging"
    assert read_battery(tmp_path / "none") is None
