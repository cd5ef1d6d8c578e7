"""Raspberry Pi board support: board profiles, status LED, battery; null backends off-Pi."""

from .boards import BOARDS, BoardProfile, board_by_name, board_from_model, detect_board
from .status import BatteryReading, NodeHealth, StatusLed, read_battery

__all__ = [
    "BOARDS",
    "BatteryReading",
    "BoardProfile",
    "NodeHealth",
    "StatusLed",
    "board_by_name",
    "board_from_model",
    "detect_board",
    "read_battery",
]
