"""The engine's one persistence edge: every durable write it makes, and what a restart reads.

``ConsensusEngine`` never calls the store or the signer-state file itself; it tells its
:class:`Journal` what happened, at the moment the rule says it must be durable:

- ``signed``: a proposal or vote is about to leave (the signer-state file first, then the
  store's copy of the message and the lock, both before the engine emits it: "a vote is
  durable before it leaves the node");
- ``floor_raised``: catch-up or a foreign signature moved the double-sign floor up;
- ``nonce``: an own op's nonce, before the op leaves (a restart never reuses it);
- ``block``: a committed block and its certificate, before ``Committed`` is reported;
- ``evidence`` and ``snapshot``: kept for laggards and restarts.

A restart reads back through the same object (``floor``, ``last_signature``,
``signed_messages``, ``latest_snapshot``, ``blocks_after``, ``last_nonce``): the engine
re-executes the stored blocks with the ``_execute`` and ``_adopt`` its live commits use
(``ConsensusEngine._recover``) and puts the stored signatures back into the round state,
re-sending them (``_resume``). Without a store and a guard
(tests, simulations that do not restart) every write is a no-op and every read is empty.
"""

from __future__ import annotations

from typing import Protocol

from ..signer import SignedAt
from ..store import SignerRecord, Store


class SignerGuard(Protocol):
    """Where the double-sign floor lives (``signer.SignerFile`` fits): read once at
    start, written durably before every new signature leaves."""

    def floor(self, session: bytes) -> SignedAt | None: ...

    def record(self, session: bytes, at: SignedAt) -> None: ...


class Journal:
    """Durable writes and restart reads of one engine in one session."""

    def __init__(self, session: bytes, store: Store | None, guard: SignerGuard | None) -> None:
        self.session = session
        self._store = store
        self._guard = guard

    @property
    def durable(self) -> bool:
        """True when there is a store (blocks, snapshots, signed messages survive)."""
        return self._store is not None

    @property
    def has_guard(self) -> bool:
        """True when a signer-state file holds the double-sign floor."""
        return self._guard is not None

    # -- writes --------------------------------------------------------------------------

    def signed(
        self,
        at: SignedAt,
        message: bytes,
        lock_round: int,
        lock_hash: bytes,
        lock_proof: bytes | None,
    ) -> None:
        """A new signature is about to leave: the signer file, then the store's copy."""
        if self._guard is not None:
            self._guard.record(self.session, at)
        if self._store is not None:
            self._store.record_signature(
                self.session,
                at.height,
                at.round,
                at.step,
                message,
                lock_round,
                lock_hash,
                lock_proof,
            )

    def floor_raised(self, at: SignedAt) -> None:
        """The double-sign floor moved up without a signature of ours (signer file only)."""
        if self._guard is not None:
            self._guard.record(self.session, at)

    def nonce(self, nonce: int) -> None:
        if self._store is not None:
            self._store.record_nonce(self.session, nonce)

    def block(self, height: int, block: bytes, certificate: bytes) -> None:
        if self._store is not None:
            self._store.save_block(self.session, height, block, certificate)

    def evidence(self, evidence: bytes, height: int) -> None:
        if self._store is not None:
            self._store.save_evidence(self.session, evidence, height)

    def snapshot(
        self, height: int, blob: bytes, certificate: bytes, prune_below: int | None = None
    ) -> None:
        """Store a snapshot; with ``prune_below``, drop the stored blocks below it."""
        if self._store is None:
            return
        self._store.save_snapshot(self.session, height, blob, certificate)
        if prune_below is not None:
            self._store.prune_blocks(self.session, prune_below)

    # -- reads (start and restart) -------------------------------------------------------

    def floor(self) -> SignedAt | None:
        """The signer file's floor for this session (None without a file or a record)."""
        return None if self._guard is None else self._guard.floor(self.session)

    def last_signature(self) -> SignerRecord | None:
        return None if self._store is None else self._store.last_signature(self.session)

    def signed_messages(self, height: int) -> list[tuple[int, int, bytes]]:
        return [] if self._store is None else self._store.signed_messages(self.session, height)

    def stored_block(self, height: int) -> tuple[bytes, bytes] | None:
        return None if self._store is None else self._store.block(self.session, height)

    def latest_snapshot(self) -> tuple[int, bytes, bytes] | None:
        return None if self._store is None else self._store.latest_snapshot(self.session)

    def blocks_after(self, height: int) -> list[tuple[int, bytes, bytes]]:
        return [] if self._store is None else self._store.blocks_after(self.session, height)

    def last_nonce(self) -> int:
        return 0 if self._store is None else self._store.last_nonce(self.session)
