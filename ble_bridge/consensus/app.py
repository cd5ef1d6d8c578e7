"""The deterministic application interface the consensus engine drives.

An application is a pure state machine: the same operations applied in the same order to
the same state give the same state and the same canonical hash on every node. Operations
reach it already authenticated: ``submitter`` is the Ed25519 public key (32 bytes) of the
validator whose signature over the operation the engine has checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

S = TypeVar("S")


class InvalidOperation(Exception):
    """An operation the application refuses; ``reason`` is a short counter name."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class BlockContext:
    """What an application may know about the block it runs in (all deterministic)."""

    height: int
    proposer: bytes
    validators: tuple[bytes, ...]


class Application(Protocol, Generic[S]):
    """A deterministic replicated state machine."""

    name: str

    def initial_state(self, validators: Sequence[bytes]) -> S:
        """The genesis state for a session whose validators are ``validators``."""
        ...

    def check(self, state: S, submitter: bytes, op: bytes, ctx: BlockContext) -> None:
        """Raise :class:`InvalidOperation` when ``op`` may not be applied to ``state``."""
        ...

    def apply(self, state: S, submitter: bytes, op: bytes, ctx: BlockContext) -> S:
        """Apply one checked operation; must not mutate ``state`` in place."""
        ...

    def end_block(self, state: S, ctx: BlockContext) -> S:
        """Deterministic per-block housekeeping (deadlines counted in heights)."""
        ...

    def ban(self, state: S, offender: bytes, ctx: BlockContext) -> S:
        """Apply committed equivocation evidence against ``offender``."""
        ...

    def state_hash(self, state: S) -> bytes:
        """32-byte canonical hash of the state."""
        ...

    def snapshot(self, state: S) -> bytes:
        """Canonical serialisation of the state (restorable with :meth:`restore`)."""
        ...

    def restore(self, data: bytes) -> S:
        """Inverse of :meth:`snapshot`; raise ValueError on malformed data."""
        ...
