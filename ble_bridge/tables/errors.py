"""The one error a table command fails with: a counter-style ``reason`` and one clear line."""

from __future__ import annotations


class TableError(Exception):
    """A table request refused before anything was submitted (the CLI exits 2)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
