"""The tables this node opened or joined, kept across restarts in ``<data_dir>/tables.json``.

The file holds what a restarted node needs to take its seats again (the consensus state
itself is in the SQLite store): each table's genesis (hex) and whether we opened it or
asked to join (with the join nonce we used), and whether it yields to an older table of its
name (reached by ``sit NAME``). It is written whole, atomically (a temporary
file, fsync, rename, fsync of the directory), so a crash leaves the old or the new file.
A file that does not parse is kept aside as ``tables.json.bad`` and the node starts with
no runtime tables rather than not at all.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .genesis import GenesisError, TableGenesis

log = logging.getLogger(__name__)

FILE_NAME = "tables.json"
FILE_VERSION = 1
MAX_TABLES = 16


@dataclass(frozen=True, slots=True)
class TableRecord:
    genesis: TableGenesis
    role: str  # "opened" | "joined"
    join_nonce: int = 0
    yields: bool = False  # reached by ``sit NAME``: an older table of that name wins

    def to_json(self) -> dict[str, object]:
        return {
            "genesis": self.genesis.encode().hex(),
            "role": self.role,
            "join_nonce": self.join_nonce,
            "yields": self.yields,
            "name": self.genesis.name,  # for people reading the file
            "id": self.genesis.session_id.hex(),
        }

    @classmethod
    def from_json(cls, obj: object) -> TableRecord:
        if not isinstance(obj, dict):
            raise ValueError("table record is not an object")
        genesis = TableGenesis.decode(bytes.fromhex(str(obj["genesis"])))
        role = str(obj["role"])
        if role not in ("opened", "joined"):
            raise ValueError(f"unknown role {role!r}")
        nonce = obj.get("join_nonce", 0)
        if not isinstance(nonce, int) or nonce < 0:
            raise ValueError("bad join nonce")
        yields = obj.get("yields", False)
        if not isinstance(yields, bool):
            raise ValueError("bad yields flag")
        return cls(genesis, role, nonce, yields)


def load(path: Path) -> list[TableRecord]:
    """The records in ``path`` ([] when it does not exist; a broken file is set aside)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("version") != FILE_VERSION:
            raise ValueError("unknown tables file version")
        tables = doc.get("tables")
        if not isinstance(tables, list):
            raise ValueError("tables is not a list")
        records = [TableRecord.from_json(t) for t in tables[:MAX_TABLES]]
    except (ValueError, KeyError, TypeError, GenesisError) as exc:
        log.error("%s is broken (%s); kept as %s.bad, starting without it", path, exc, path.name)
        with contextlib.suppress(OSError):
            path.replace(path.with_name(path.name + ".bad"))
        return []
    return records


def save(path: Path, records: list[TableRecord]) -> None:
    """Write ``records`` atomically (raises OSError when the disk refuses)."""
    doc = {"version": FILE_VERSION, "tables": [r.to_json() for r in records[:MAX_TABLES]]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


__all__ = ["FILE_NAME", "TableRecord", "load", "save"]
