"""Exit codes and the one-line startup failure every command reports.

A failure the operator can fix is raised as :class:`StartupError` (or, while running,
:class:`StorageFailure`); the CLI prints ``error: <problem>; <fix>`` on one line and exits
with the code below. systemd's ``RestartPreventExitStatus=`` lists the codes a restart
cannot fix. 1 stays "a bug" (an unexpected exception), 2 stays usage and config errors as
argparse and the config checks use it.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    BUG = 1
    USAGE = 2  # argparse, config file, key file problems
    ADAPTER_MISSING = 3  # no such Bluetooth adapter (hciN) on this bluetoothd
    NO_SYSTEM_BUS = 4  # the D-Bus system bus is not reachable
    BLUETOOTHD_ABSENT = 5  # org.bluez is not on the bus
    DATA_DIR = 6  # state directory not a directory, read-only or not writable
    DB_CORRUPT = 7  # database unusable and could not be moved aside
    STORAGE = 8  # disk full (at start or while running), a write failed: restart may help
    DATA_DIR_IN_USE = 9  # another ble-bridge run holds the data dir's lock


#: codes a restart by systemd cannot fix without the operator
NO_RESTART = (
    ExitCode.USAGE,
    ExitCode.ADAPTER_MISSING,
    ExitCode.DATA_DIR,
    ExitCode.DB_CORRUPT,
    ExitCode.DATA_DIR_IN_USE,
)


class StartupError(Exception):
    """A failure the operator can fix: one line naming the problem and the fix."""

    def __init__(self, code: ExitCode, problem: str, fix: str) -> None:
        super().__init__(f"{problem}; {fix}")
        self.code = code
        self.problem = problem
        self.fix = fix

    @property
    def line(self) -> str:
        return f"error: {self.problem}; {self.fix}"


class StorageFailure(Exception):
    """Durable state could not be written while running; signing has stopped."""

    code = ExitCode.STORAGE
