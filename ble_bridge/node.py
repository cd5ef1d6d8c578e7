"""A node assembled from configuration: identity, store, transport, mesh, bridge, sessions.

``Node`` is the service behind ``ble-bridge run``: it owns the SQLite store (WAL) in the data
directory, the BlueZ transport (or one handed in, e.g. the loopback air's), the mesh node,
the consensus bridge with the configured sessions, the status LED, and the local control
socket. The same classes run in the simulator; only the transport and the clock differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from hardware import NodeHealth, StatusLed, board_by_name
from hardware.gpio import GpioConfig, PanelIo

from .bridge import (
    BridgeConfig,
    BridgeError,
    NetworkConsensusBridge,
    OperationStatus,
    SessionHealth,
)
from .chat.commands import TableView
from .chat.phone import PhoneChat, PhoneChatService, PhoneConfig
from .config import ConfigError, apply_table, read_toml
from .consensus.app import Application
from .consensus.craps import CrapsApp, CrapsState, TablePlayer
from .control import ControlServer
from .errors import ExitCode, StartupError, StorageFailure
from .events import LogSection, NodeEvents, TableSeen, kv
from .memory import Trimmer
from .mesh.config import MeshConfig
from .mesh.router import DROP_REASONS
from .mesh.service import MeshNode
from .metrics import MetricsConfig, MetricsServer
from .pairing.attach import OwnerFeatures
from .pairing.window import PairingConfig, valid_code
from .signer import ForeignSignerFile, Opened, SignerFile, signer_path_for
from .store import (
    DatabaseUnavailable,
    Store,
    Unavailable,
    classify_sqlite_error,
    migrate_legacy,
    open_store,
    signer_catch_up,
)
from .tables import registry as table_registry
from .tables.service import TablesConfig, TableService
from .transport import LinkRole, Transport
from .uplink.composite import CompositeTransport
from .uplink.config import UplinkConfig
from .wire.identity import Identity, KeyFileError
from .wire.messages import SESSION_ID_LEN

log = logging.getLogger(__name__)

APPS = ("craps",)


def default_nickname(board: str, peer_id: bytes) -> str:
    """The nickname a node announces unless ``[node] nickname`` sets one: the board and the
    last 2 bytes of the peer id, e.g. ``pi4-3fa2`` (BitChat apps show no peer without one)."""
    prefix = "bridge" if board == "generic" else board
    return f"{prefix}-{peer_id[-2:].hex()}"


def session_id_from_name(name: str) -> bytes:
    """A session's 16-byte id from its configured name (every member derives the same)."""
    return hashlib.sha256(b"ble-bridge/session/" + name.encode("utf-8")).digest()[:SESSION_ID_LEN]


@dataclass(frozen=True, slots=True)
class NodeSection:
    nickname: str | None = None
    data_dir: Path = Path("/var/lib/ble-bridge")
    key_file: Path | None = None  # default: <data_dir>/identity.key
    board: str = "auto"
    control_socket: Path = Path("/run/ble-bridge/control.sock")
    status_interval: float = 2.0  # seconds between status LED / health updates
    transport: Literal["ble", "sim"] = "ble"  # sim: loopback air with simulated neighbours
    sim_peers: int = 3  # simulated neighbours with transport = "sim"
    signer_file: Path | None = None  # default: <key_file>.signer, beside the key
    failure_exit_s: float = 5.0  # a node that stopped signing shows it this long, then exits
    # a data dir full at start is re-checked this long before the node exits 8: systemd's
    # restarts (3 s apart) then stay under the unit's start limit, so the node keeps coming
    # back until space is freed instead of giving up after 5 quick tries
    full_wait_s: float = 30.0
    # every this many seconds housekeeping runs gc.collect() and glibc's malloc_trim(0) so
    # freed heap goes back to the kernel instead of staying as RSS after a busy spell
    # (ble_bridge/memory.py); 0 turns it off
    memory_trim_s: float = 60.0

    @property
    def key_path(self) -> Path:
        return self.key_file or self.data_dir / "identity.key"

    @property
    def signer_path(self) -> Path:
        return self.signer_file or signer_path_for(self.key_path)

    @property
    def store_path(self) -> Path:
        return self.data_dir / "state.sqlite3"


@dataclass(frozen=True, slots=True)
class SessionSection:
    name: str = ""
    validators: tuple[str, ...] = ()  # Ed25519 public keys, hex
    app: str = "craps"
    autoplay: bool = False  # play the table automatically (demo handhelds)
    id: str = ""  # 16-byte session id, hex; default: derived from the name

    @property
    def session_id(self) -> bytes:
        if self.id:
            try:
                sid = bytes.fromhex(self.id)
            except ValueError:
                raise ConfigError(f"[[session]] {self.name}: id {self.id!r} is not hex") from None
            if len(sid) != SESSION_ID_LEN:
                raise ConfigError(f"[[session]] {self.name}: id is {SESSION_ID_LEN} bytes")
            return sid
        return session_id_from_name(self.name)

    def validator_keys(self) -> list[bytes]:
        keys = []
        for v in self.validators:
            try:
                key = bytes.fromhex(v)
            except ValueError:
                raise ConfigError(f"[[session]] {self.name}: {v!r} is not hex") from None
            if len(key) != 32:
                raise ConfigError(f"[[session]] {self.name}: validator keys are 32 bytes")
            keys.append(key)
        return keys


@dataclass(frozen=True)
class NodeConfig:
    """The whole configuration file."""

    node: NodeSection = field(default_factory=NodeSection)
    ble: dict[str, Any] = field(default_factory=dict)  # gatt.config.BleConfig fields
    mesh: MeshConfig = field(default_factory=MeshConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    sessions: tuple[SessionSection, ...] = ()
    uplink: UplinkConfig | None = None  # [uplink]: this node is a gateway to an MQTT broker
    phone: PhoneConfig = field(default_factory=PhoneConfig)  # [phone]: answering BitChat phones
    tables: TablesConfig = field(default_factory=TablesConfig)  # [tables]: runtime tables
    metrics: MetricsConfig = field(default_factory=MetricsConfig)  # [metrics]: Prometheus
    hardware: GpioConfig = field(default_factory=GpioConfig)  # [hardware]: button and LED
    log: LogSection = field(default_factory=LogSection)  # [log]: periodic INFO lines
    pairing: PairingConfig = field(default_factory=PairingConfig)  # [pairing]: owners


_UPLINK_REQUIRED = ("broker", "mesh_id")
_UPLINK_PLACEHOLDER = UplinkConfig(broker="mqtt://placeholder", mesh_id="placeholder")


def parse_uplink(table: object) -> UplinkConfig:
    """``[uplink]`` into an :class:`UplinkConfig` (``broker`` and ``mesh_id`` required)."""
    if not isinstance(table, dict):
        raise ConfigError("[uplink] must be a table")
    missing = [k for k in _UPLINK_REQUIRED if k not in table]
    if missing:
        raise ConfigError(f"[uplink] needs {' and '.join(missing)}")
    return apply_table(_UPLINK_PLACEHOLDER, table, "uplink")


def parse_node_config(doc: dict[str, Any]) -> NodeConfig:
    """Validate a parsed TOML document into a :class:`NodeConfig`."""
    known = {"node", "ble", "mesh", "bridge", "session", "uplink", "phone", "tables"}
    known |= {"metrics", "hardware", "log", "pairing"}
    unknown = set(doc) - known
    if unknown:
        raise ConfigError(f"unknown section(s) {sorted(unknown)}; known: {sorted(known)}")
    node = apply_table(NodeSection(), doc.get("node", {}), "node")
    mesh = apply_table(MeshConfig(), doc.get("mesh", {}), "mesh")
    if node.nickname and mesh.nickname is None:
        mesh = apply_table(mesh, {"nickname": node.nickname}, "mesh")
    bridge = apply_table(BridgeConfig(), doc.get("bridge", {}), "bridge")
    sessions = []
    for i, table in enumerate(doc.get("session", [])):
        s = apply_table(SessionSection(), table, f"session.{i}")
        if not s.name:
            raise ConfigError(f"[[session]] number {i + 1} needs a name")
        if s.app not in APPS:
            raise ConfigError(f"[[session]] {s.name}: unknown app {s.app!r}; known: {APPS}")
        s.validator_keys()
        _ = s.session_id  # a bad explicit id fails here, not at start
        sessions.append(s)
    names = [s.name for s in sessions]
    if len(set(names)) != len(names):
        raise ConfigError("[[session]] names must be unique")
    ble = doc.get("ble", {})
    if not isinstance(ble, dict):
        raise ConfigError("[ble] must be a table")
    uplink = parse_uplink(doc["uplink"]) if "uplink" in doc else None
    phone = apply_table(PhoneConfig(), doc.get("phone", {}), "phone")
    tables = apply_table(TablesConfig(), doc.get("tables", {}), "tables")
    if not 1 <= tables.default_seats <= 16:
        raise ConfigError("[tables] default_seats must be 1..16")
    metrics = apply_table(MetricsConfig(), doc.get("metrics", {}), "metrics")
    hw = apply_table(GpioConfig(), doc.get("hardware", {}), "hardware")
    if not 0 <= hw.debounce_s < hw.long_press_s:
        raise ConfigError("[hardware] needs 0 <= debounce_s < long_press_s")
    log_section = apply_table(LogSection(), doc.get("log", {}), "log")
    pairing = apply_table(PairingConfig(), doc.get("pairing", {}), "pairing")
    if pairing.button_code and not valid_code(pairing.button_code):
        raise ConfigError("[pairing] button_code is six digits")
    return NodeConfig(
        node,
        dict(ble),
        mesh,
        bridge,
        tuple(sessions),
        uplink,
        phone,
        tables,
        metrics,
        hw,
        log_section,
        pairing,
    )


def load_node_config(path: Path) -> NodeConfig:
    return parse_node_config(read_toml(path))


def _balance_of(state: CrapsState) -> Callable[[bytes], int | None]:
    """A seat's balance, else a phone player's."""

    def of(key: bytes) -> int | None:
        bal = state.balance_of(key)
        return bal if bal is not None else state.phone_balance(key)

    return of


def make_app(name: str) -> Application[Any]:
    if name == "craps":
        return CrapsApp()
    raise ConfigError(f"unknown app {name!r}")


def build_ble_transport(config: NodeConfig, identity: Identity) -> Transport:
    """The BlueZ transport for this node (imports bleak/bless only when asked)."""
    from gatt.config import BleConfig
    from gatt.transport import BleTransport

    board = board_by_name(config.node.board)
    base = BleConfig(link_budget=board.link_budget)
    base.pause_advertising_on_connect = not board.advertise_while_connecting
    return BleTransport(apply_table(base, config.ble, "ble"), identity.peer_id)


DATA_DIR_MIN_FREE = 1 << 20
"""Bytes a data dir must have free at start (SQLite's WAL, the signer state, the snapshot)."""

FIX_FULL = (
    "free space on that filesystem (journalctl --vacuum-size, old logs); the node starts again"
    " by itself (systemd restarts it)"
)


def check_data_dir(path: Path, min_free: int = DATA_DIR_MIN_FREE) -> None:
    """Is ``path`` a directory we can write, with room? Else a one-line StartupError.

    It is created if missing (with its parents). A probe file is written, fsynced and
    removed: a read-only mount, a file where the directory should be and missing permission
    each give their own problem text and exit code 6 (the operator must act); a full disk is
    exit 8 (storage: freeing space is enough, systemd's restart then succeeds).
    """
    fix_perm = f"make {path} a writable directory of the ble-bridge user ([node] data_dir)"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise StartupError(
            ExitCode.DATA_DIR, f"data dir {path} is not a directory", fix_perm
        ) from None
    except OSError as exc:
        raise _data_dir_error(path, exc, "cannot be created", fix_perm) from None
    if not path.is_dir():
        raise StartupError(ExitCode.DATA_DIR, f"data dir {path} is not a directory", fix_perm)
    probe = path / f".write-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"ble-bridge write probe\n" * 16)
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)
    except OSError as exc:
        raise _data_dir_error(path, exc, "is not writable", fix_perm) from None
    try:
        st = os.statvfs(path)
    except OSError:
        return
    free = st.f_bavail * st.f_frsize
    if free < min_free:
        raise StartupError(
            ExitCode.STORAGE,
            f"data dir {path} is full ({free // 1024} KiB free, need {min_free // 1024} KiB)",
            FIX_FULL,
        )


LOCK_FILE = "ble-bridge.lock"
"""In the data dir: held (``flock``) by the one ``ble-bridge run`` using it, with its pid."""


def lock_data_dir(path: Path) -> int:
    """Take the data dir's lock, or a one-line StartupError (exit 9) naming the holder.

    An exclusive ``flock`` on ``<data_dir>/ble-bridge.lock``, kept for the life of the
    process: the kernel drops it when the process dies (also by SIGKILL or a crash), so a
    restart after kill -9 finds it free. Returns the lock's file descriptor (close it to
    release). A second node on one data dir would share the SQLite file and signer state
    and could move the live database aside; it never gets that far."""
    lock = path / LOCK_FILE
    fix_perm = f"make {path} a writable directory of the ble-bridge user ([node] data_dir)"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise _data_dir_error(
            path, exc, "has a lock file that cannot be opened", fix_perm
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        try:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
        except OSError:
            holder = "?"
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise _data_dir_error(path, exc, "cannot be locked", fix_perm) from None
        raise StartupError(
            ExitCode.DATA_DIR_IN_USE,
            f"data dir {path} is in use by another ble-bridge run (pid {holder})",
            "stop that one first (systemctl stop ble-bridge), or give this one its own"
            " [node] data_dir",
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:  # the pid is only for the message; the lock is what counts
        pass
    return fd


def wait_for_data_dir(
    path: Path,
    wait_s: float,
    *,
    check: Callable[[Path], None] = check_data_dir,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    every: float = 1.0,
) -> None:
    """:func:`check_data_dir`, re-checked for up to ``wait_s`` seconds while the only
    problem is a full disk (space freed meanwhile: the node starts); any other problem, or
    still full at the end, raises at once / then."""
    deadline = clock() + wait_s
    while True:
        try:
            check(path)
            return
        except StartupError as exc:
            if exc.code is not ExitCode.STORAGE or clock() + every > deadline:
                raise
        sleep(every)


def _data_dir_error(path: Path, exc: OSError, what: str, fix_perm: str) -> StartupError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StartupError(ExitCode.STORAGE, f"data dir {path} is full ({exc.strerror})", FIX_FULL)
    if exc.errno == errno.EROFS:
        return StartupError(
            ExitCode.DATA_DIR,
            f"data dir {path} is on a read-only filesystem",
            "remount it read-write (an SD card remounted read-only after errors needs fsck) "
            "or point [node] data_dir at a writable place",
        )
    if exc.errno == errno.ENOTDIR:
        return StartupError(
            ExitCode.DATA_DIR, f"data dir {path}: a parent is not a directory", fix_perm
        )
    return StartupError(
        ExitCode.DATA_DIR, f"data dir {path} {what} ({exc.strerror or exc})", fix_perm
    )


def open_state(
    store_path: Path, signer_path: Path, key: bytes, *, new_key: bool = False
) -> tuple[Store, SignerFile, Callable[[bytes], str | None]]:
    """The node's database and signer-state file, and why a session must catch up before
    it signs (None: it may sign at once). A broken or foreign database is moved aside,
    a corrupt signer file too (each reported in one log line); a signer file of another
    key is a StartupError (exit 2): the node refuses to sign rather than guess."""
    try:
        signer = SignerFile.open(signer_path, key)
    except ForeignSignerFile as exc:
        raise StartupError(
            ExitCode.USAGE,
            f"signer state {signer_path} belongs to key {exc.found.hex()[:16]}, not this"
            f" node's {key.hex()[:16]}",
            "put this node's own identity key back, or, if the key was replaced on purpose,"
            " move the signer file away (the node then catches up before it signs)",
        ) from None
    except StorageFailure as exc:
        if _disk_full(exc):
            raise StartupError(ExitCode.STORAGE, str(exc), FIX_FULL) from None
        raise StartupError(
            ExitCode.DATA_DIR, str(exc), "make the key's directory writable ([node] signer_file)"
        ) from None
    if new_key and signer.opened is Opened.MISSING:
        signer.opened, signer.note = Opened.CREATED, ""
    if signer.note:
        log.warning(kv("signer_state", note=signer.note))
    try:
        opened = open_store(store_path, key)
    except DatabaseUnavailable as exc:
        signer.close()
        raise _unavailable_error(exc) from None
    except OSError as exc:
        signer.close()
        raise StartupError(
            ExitCode.DB_CORRUPT,
            f"database {store_path} is unusable and cannot be moved aside ({exc.strerror or exc})",
            f"move {store_path} (and its -wal/-shm files) away by hand; the node then syncs"
            " from its peers",
        ) from None
    except (sqlite3.Error, StorageFailure) as exc:
        signer.close()
        if _disk_full(exc):  # not a broken database: space freed, the restart succeeds
            raise StartupError(ExitCode.STORAGE, f"{store_path}: {exc}", FIX_FULL) from None
        if isinstance(exc, sqlite3.Error) and (kind := classify_sqlite_error(exc)) is not None:
            raise _unavailable_error(DatabaseUnavailable(store_path, kind, str(exc))) from None
        raise StartupError(
            ExitCode.DB_CORRUPT,
            f"database {store_path} cannot be opened ({exc})",
            f"move {store_path} away by hand; the node then syncs from its peers",
        ) from None
    if opened.note:
        log.warning(kv("database", note=opened.note))
    migrated = migrate_legacy(signer, opened)
    if migrated:
        log.info(kv("signer_state_created", source="database", sessions=migrated))
    store = opened.store

    def reason(session: bytes) -> str | None:
        return signer_catch_up(signer, opened, session)

    return store, signer, reason


def _unavailable_error(exc: DatabaseUnavailable) -> StartupError:
    """A database that could not be read for a reason other than its content: one line,
    the file left where it is."""
    where = f"database {exc.path}"
    if exc.kind is Unavailable.LOCKED:
        return StartupError(
            ExitCode.DATA_DIR_IN_USE,
            f"{where} is locked by another program ({exc.detail})",
            "close the program holding it (an sqlite3 shell, a backup), then start the node"
            " again; the file was left as it is",
        )
    if exc.kind is Unavailable.ACCESS:
        return StartupError(
            ExitCode.DATA_DIR,
            f"{where} cannot be read ({exc.detail})",
            "make it readable and writable by the ble-bridge user (chown ble-bridge:"
            " <data dir>/state.sqlite3*); the file was left as it is",
        )
    return StartupError(
        ExitCode.STORAGE,
        f"{where}: read failed ({exc.detail})",
        "check the storage device (dmesg, fsck; an SD card may be failing); the file was"
        " left as it is and the node tries again when systemd restarts it",
    )


def _disk_full(exc: BaseException) -> bool:
    """Is ``exc`` (or what it wraps) "no space left": ENOSPC/EDQUOT or SQLite's FULL?"""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if (
            isinstance(seen, sqlite3.Error)
            and getattr(seen, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        ):
            return True  # "database or disk is full"
        seen = seen.__cause__
    return False


class BridgeFactory(Protocol):
    """Builds the node's bridge (the simulator injects a Byzantine one)."""

    def __call__(
        self, mesh: MeshNode, identity: Identity, *, store: Store | None, config: BridgeConfig
    ) -> NetworkConsensusBridge: ...


@dataclass(slots=True)
class Turn:
    """What one :meth:`Seat.play` did: op ids submitted, reasons of submissions refused."""

    submitted: list[bytes] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


class Seat:
    """A :class:`TablePlayer` at one session of a bridge.

    Each turn it first tells the player how its submitted ops ended (the bridge tracks
    them: committed, failed, timed out; an op the bridge no longer knows, e.g. after a
    restart, counts as failed), then submits what the player plans from the committed
    state. An op still pending ``give_up_after`` seconds after its submission counts as
    lost too: ops are gossiped once, so one sent while the links were down (or across a
    partition) never reaches a proposer, and the bridge's own ``operation_timeout`` is
    long. Giving up cannot withdraw the op, so if it was only slow the replacement may be
    refused; that is why the wait is several commit latencies. The seat remembers only ops
    the bridge still tracks, so at most the bridge's ``pending_capacity`` of them.
    """

    def __init__(
        self, player: TablePlayer, session_id: bytes, *, give_up_after: float = 8.0
    ) -> None:
        self.player = player
        self.session_id = session_id
        self.give_up_after = give_up_after
        self._ops: dict[bytes, bytes] = {}  # op id -> encoded op

    def play(self, bridge: NetworkConsensusBridge, now: float) -> Turn:
        for op_id, body in list(self._ops.items()):
            tracked = bridge.operation(op_id)
            if (
                tracked is not None
                and tracked.status is OperationStatus.PENDING
                and now - tracked.submitted_at < self.give_up_after
            ):
                continue
            del self._ops[op_id]
            ok = tracked is not None and tracked.status is OperationStatus.COMMITTED
            self.player.settled(body, ok)
        turn = Turn()
        if bridge.health(self.session_id) is not SessionHealth.ACTIVE:
            return turn  # cut off or behind: what the player would plan cannot commit
        state = bridge.engine(self.session_id).state
        if not isinstance(state, CrapsState):
            return turn
        for body in self.player.next_ops(state):
            try:
                op_id = bridge.submit_operation(self.session_id, body)
            except BridgeError as exc:  # pending full etc.: the player plans again next turn
                self.player.settled(body, False)
                turn.refused.append(exc.reason)
                continue
            self._ops[op_id] = body
            turn.submitted.append(op_id)
        return turn


class Node:
    """One running ble-bridge node, on BlueZ or on the loopback air.

    The keyword hooks exist for the simulator and tests; a node from ``ble-bridge run`` uses
    none of them. ``identity``/``transport``: given instead of loaded/built from config.
    ``rng``/``wall_offset``: the mesh's jitter source and clock offset. ``store_path``: the
    SQLite file, ``"data_dir"`` (default) for ``<data_dir>/state.sqlite3``, None to keep
    consensus state in memory only. ``peer_keys``: peer id -> Ed25519 key pinned in the mesh.
    ``bridge_factory``/``app_factory``: what bridge and which application (by the session's
    ``app`` name) the sessions run on. ``uplink_transport``: the gateway's uplink (the
    simulator's broker), instead of the MQTT one ``[uplink]`` would build. ``tables_path``:
    the runtime tables file (default ``<data_dir>/tables.json`` when the store is the data
    dir's, else none).
    """

    def __init__(
        self,
        config: NodeConfig,
        *,
        identity: Identity | None = None,
        transport: Transport | None = None,
        rng: random.Random | None = None,
        wall_offset: float | None = None,
        store_path: Path | Literal["data_dir"] | None = "data_dir",
        peer_keys: Mapping[bytes, bytes] | None = None,
        bridge_factory: BridgeFactory = NetworkConsensusBridge,
        app_factory: Callable[[str], Application[Any]] = make_app,
        uplink_transport: Transport | None = None,
        panel_io: PanelIo | None = None,
        tables_path: Path | Literal["data_dir"] | None = "data_dir",
    ) -> None:
        self.identity = identity or Identity.load(config.node.key_path)
        if store_path == "data_dir":  # the service's own state dir: writable, with room
            wait_for_data_dir(config.node.data_dir, config.node.full_wait_s)
        # held until stop() or the process dies: one node per data dir
        self._lock_fd: int | None = None
        if store_path == "data_dir":
            self._lock_fd = lock_data_dir(config.node.data_dir)
        if config.mesh.nickname is None:  # phones list no peer without a nickname
            board_name = board_by_name(config.node.board).name
            nickname = default_nickname(board_name, self.identity.peer_id)
            config = dataclasses.replace(
                config, mesh=dataclasses.replace(config.mesh, nickname=nickname)
            )
        self.config = config
        self.store_path = config.node.store_path if store_path == "data_dir" else store_path
        self.store: Store | None = None
        self.signer: SignerFile | None = None
        self.failure: str | None = None  # why the node stopped signing (health error)
        self.failure_code = ExitCode.OK
        self.on_failure: Callable[[str, ExitCode], None] | None = None
        catch_up = None
        if self.store_path is not None:
            self.store_path.parent.mkdir(parents=True, exist_ok=True)
            signer_path = (
                config.node.signer_path
                if store_path == "data_dir"
                else self.store_path.with_name(self.store_path.name + ".signer")
            )
            # an identity handed in without a key file on disk (a simulation, a test) was
            # made just now: a missing signer file is then a new one, not a lost one
            injected = identity is not None and not config.node.key_path.exists()
            try:
                self.store, self.signer, catch_up = open_state(
                    self.store_path, signer_path, self.identity.signing_public, new_key=injected
                )
            except BaseException:
                if self._lock_fd is not None:
                    os.close(self._lock_fd)
                    self._lock_fd = None
                raise
        self._on_bluez = transport is None  # then the pairing agent runs on BlueZ too
        self.radio = transport or build_ble_transport(config, self.identity)
        self.transport: Transport = self.radio
        self.uplink: Transport | None = uplink_transport
        if self.uplink is None and config.uplink is not None:
            from .uplink.service import UplinkTransport

            self.uplink = UplinkTransport(config.uplink, self.identity.peer_id, rng=rng)
        if self.uplink is not None:  # a gateway: radio links and remote gateways as one
            self.transport = CompositeTransport([self.radio, self.uplink])
        self.mesh = MeshNode(
            self.identity, self.transport, config.mesh, rng=rng, wall_offset=wall_offset
        )
        for peer_id, key in (peer_keys or {}).items():
            if peer_id != self.identity.peer_id:
                self.mesh.add_peer_key(peer_id, key)
        self.bridge = bridge_factory(
            self.mesh, self.identity, store=self.store, config=config.bridge
        )
        self.bridge.signer = self.signer
        self.bridge.catch_up_reason = catch_up
        self.bridge.on_failure = self._bridge_failed
        self.sessions: dict[bytes, SessionSection] = {}
        self.seats: dict[bytes, Seat] = {}  # autoplaying table players
        for s in config.sessions:
            validators = s.validator_keys()
            app = app_factory(s.app)
            if isinstance(app, CrapsApp) and app.table_name is None:
                app.table_name = s.name  # what phones write in !join NAME
            self.bridge.open_session(s.session_id, validators, app)
            self.sessions[s.session_id] = s
            if s.autoplay and self.identity.signing_public in validators:
                # secrets for commit-reveal must be unpredictable: system randomness
                player = TablePlayer(self.identity.signing_public, random.SystemRandom())
                self.seats[s.session_id] = Seat(player, s.session_id)
        if tables_path == "data_dir":  # beside the SQLite file of the data dir, if any
            on_disk = store_path == "data_dir"
            tables_path = config.node.data_dir / table_registry.FILE_NAME if on_disk else None
        self.tables = TableService(
            self.identity,
            self.mesh,
            self.bridge,
            config.tables,
            nickname=config.mesh.nickname or "",
            path=tables_path,
        )
        for s in config.sessions:
            if s.app == "craps":
                self.tables.adopt(s.session_id, s.name, autoplay=s.session_id in self.seats)
        self.tables.restore()
        self.phone: PhoneChat | None = None  # answers BitChat phones: commands, Noise DMs
        if config.phone.enabled:
            self.phone = PhoneChat(
                self.identity,
                self.table_views,
                self.mesh.router.peers.get,
                config.phone,
                play=self.tables.phone_command,
            )
            PhoneChatService(self.mesh, self.phone)
        board = board_by_name(config.node.board)
        self.led = StatusLed(board.status_led)
        self.owners = OwnerFeatures(  # owners, pairing window, button and LED
            self, self.store, config.pairing, config.hardware, board, panel_io=panel_io
        )
        self._tasks: list[asyncio.Task[None]] = []
        self.control: ControlServer | None = None
        self._events = NodeEvents(config.log)
        self.trimmer = Trimmer(config.node.memory_trim_s)
        self.metrics: MetricsServer | None = None

    async def start(self) -> None:
        await self.mesh.start()
        await self.bridge.start()
        await self.tables.start()
        if self.seats or self.led.path is not None or log.isEnabledFor(logging.INFO):
            # else housekeeping has nothing to do (the simulator's nodes: no seats, no LED,
            # no INFO log; their virtual-clock schedule stays what it was)
            task = asyncio.create_task(self._housekeeping(), name="node-housekeeping")
            task.add_done_callback(self._task_done)
            self._tasks.append(task)
        if self.config.node.control_socket != Path():
            self.control = ControlServer(self, self.config.node.control_socket)
            self.control.handlers.update(self.owners.handlers())
            await self.control.start()
        await self.owners.start()
        if self._on_bluez:
            await self.owners.start_agent(str(self.config.ble.get("adapter", "hci0")))
        if self.config.metrics.listen:
            self.metrics = MetricsServer(self.config.metrics, self.status)
            await self.metrics.start()
        log.info(
            kv(
                "start",
                peer=self.identity.peer_id.hex(),
                nickname=self.config.mesh.nickname,
                transport=type(self.radio).__name__,
                adapter=str(self.config.ble.get("adapter", "")) or None,
                tables=",".join(s.name for s in self.sessions.values()) or None,
                store=str(self.store_path) if self.store_path else "memory",
                control=str(self.config.node.control_socket) if self.control else None,
            )
        )

    async def stop(self) -> None:
        if self.metrics is not None:
            await self.metrics.stop()
            self.metrics = None
        if self.control is not None:
            await self.control.stop()
            self.control = None
        await self.owners.stop()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        await self.tables.stop()
        await self.bridge.stop()
        await self.mesh.stop()
        self.led.show(NodeHealth.STOPPED)
        if self.store is not None:
            self.store.close()
        if self.signer is not None:
            self.signer.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # last: the state is closed, another node may take it
            self._lock_fd = None

    # -- failure: stop signing, show it, exit ----------------------------------------------

    def fail(self, reason: str, code: ExitCode) -> None:
        """Stop signing for good: health ``error`` with ``reason`` (status, LED, the
        watchdog stops), then ``ble-bridge run`` exits with ``code`` after
        ``[node] failure_exit_s`` so systemd restarts it from its durable state."""
        if self.failure is not None:
            return
        self.failure, self.failure_code = reason, code
        log.error(kv("node_failed", code=int(code), reason=reason))
        self.led.show(NodeHealth.ERROR)
        if self.bridge.failure is None:
            self.bridge._fail(RuntimeError(reason))
        if self.on_failure is not None:
            self.on_failure(reason, code)

    def _bridge_failed(self, reason: str, exc: BaseException) -> None:
        self.fail(reason, ExitCode.STORAGE if isinstance(exc, StorageFailure) else ExitCode.BUG)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error(kv("task_died", task=task.get_name()), exc_info=exc)
            self.fail(f"bug: task {task.get_name()} died: {exc!r}", ExitCode.BUG)

    def health(self) -> NodeHealth:
        if self.failure is not None or self.bridge.failure is not None:
            return NodeHealth.ERROR
        if not self.transport.links():
            return NodeHealth.ISOLATED
        if any(
            self.bridge.health(sid) is SessionHealth.PARTITIONED for sid in self.bridge.sessions
        ):
            return NodeHealth.PARTITIONED
        if self.transport.issues():  # e.g. bluetoothd refuses our advertisement
            return NodeHealth.DEGRADED
        return NodeHealth.HEALTHY

    async def _housekeeping(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.trimmer.run(loop.time())
            health = self.health()
            self.led.show(health)
            self.autoplay()
            try:
                self.log_events(health)
            except Exception:  # the log must not take the node down
                log.exception("log_events_failed")
            await asyncio.sleep(self.config.node.status_interval)

    def log_events(self, health: NodeHealth | None = None) -> None:
        """Health changes, table joins, every N-th commit, drops per minute (events.py)."""
        health = health or self.health()
        tables = []
        for sid, s in self.sessions.items():
            engine = self.bridge.engine(sid)
            tables.append(
                TableSeen(
                    s.name,
                    engine.height,
                    engine.round,
                    engine.state_hash.hex(),
                    self.bridge.health(sid).value,
                    self.bridge.active_participants(sid),
                    len(s.validators),
                    self.bridge.counters["operations_committed"],
                )
            )
        now = asyncio.get_running_loop().time()
        lines = self._events.tick(
            now, health.value, len(self.transport.links()), tables, self.drop_counts
        )
        for level, line in lines:
            log.log(level, line)

    def drop_counts(self) -> dict[str, int]:
        """Frames and messages dropped so far, by reason: the mesh's and the bridge's (with
        its engines'), without the duplicates and own packets every flood and gossip bring
        (``status`` has those)."""
        stats = self.mesh.router.stats
        out = {
            f"mesh_{k}": v
            for k, v in stats.items()
            if k in DROP_REASONS and k not in ("duplicate", "own_packet") and v
        }
        drops = self.bridge.stats().drops
        out.update({f"bridge_{k}": v for k, v in drops.items() if k != "duplicate"})
        return out

    def autoplay(self) -> int:
        """Submit what the autoplaying table players want now; returns how many ops."""
        n = 0
        now = asyncio.get_running_loop().time()
        for seat in self.seats.values():
            turn = seat.play(self.bridge, now)
            n += len(turn.submitted)
            for reason in turn.refused:  # pending full etc.: planned again next tick
                log.debug("autoplay op refused: %s", reason)
        return n

    def table_views(self) -> list[TableView]:
        """The tables this node sits at, as the phone commands show them."""
        views = []
        names = {sid: s.name for sid, s in self.sessions.items()}
        names.update({sid: t.genesis.name for sid, t in self.tables.tables.items()})
        for sid, name in names.items():
            engine = self.bridge.engine(sid)
            state = engine.state
            balance_of = _balance_of(state) if isinstance(state, CrapsState) else _no_balance
            players = len(state.balances) if isinstance(state, CrapsState) else 0
            views.append(
                TableView(
                    name,
                    engine.height,
                    self.bridge.health(sid).value,
                    len(engine.validators),
                    players,
                    balance_of,
                )
            )
        return views

    # -- what the control socket reports ------------------------------------------------

    def status(self) -> dict[str, Any]:
        stats = self.bridge.stats()
        sessions = []
        for sid, s in self.sessions.items():
            engine = self.bridge.engine(sid)
            sessions.append(
                {
                    "name": s.name,
                    "id": sid.hex(),
                    "app": s.app,
                    "height": engine.height,
                    "round": engine.round,
                    "state_hash": engine.state_hash.hex(),
                    "health": self.bridge.health(sid).value,
                    "validators": len(engine.validators),
                    "active_participants": self.bridge.active_participants(sid),
                    "pending_operations": len(self.bridge.pending_operations(sid)),
                }
            )
        sessions.extend(self.tables.status())
        return {
            "peer_id": self.identity.peer_id.hex(),
            "signing_public": self.identity.signing_public.hex(),
            "nickname": self.config.mesh.nickname,
            "health": self.health().value,
            "error": self.failure or self.bridge.failure,
            "signer": self.signer_status(),
            "healthy": self.bridge.is_healthy(),
            "issues": self.transport.issues(),
            "links": self.link_rows(),
            "uplink": self.uplink_status(),
            "sessions": sessions,
            "bridge": _jsonable(stats),
            "mesh": self.mesh.stats(),
            "phone": self.phone.status() if self.phone is not None else None,
            "tables": {
                "directory": len(self.tables.directory),
                "drops": dict(self.tables.directory.drops),
                **dict(self.tables.counters),
            },
        }

    def signer_status(self) -> dict[str, Any] | None:
        """The signer-state file and the sessions still catching up before they sign."""
        if self.signer is None:
            return None
        waiting = {}
        for sid in self.bridge.sessions:
            why = self.bridge.engine(sid).catching_up_signer
            if why is not None:
                waiting[sid.hex()] = why
        return {"file": str(self.signer.path), "writes": self.signer.writes, "catching_up": waiting}

    def link_rows(self) -> list[dict[str, object]]:
        """Every live link (radio or uplink) with the router's own counters for it."""
        states = self.mesh.router.peers.links
        rows: list[dict[str, object]] = []
        for li in self.transport.links():
            row: dict[str, object] = {
                "link_id": li.link_id,
                "peer": li.peer_address,
                "mtu": li.mtu,
                "role": li.role.value,
            }
            st = states.get(li.link_id)
            if st is not None:
                row.update(
                    peer_id=None if st.peer_id is None else st.peer_id.hex(),
                    frames_in=st.frames_in,
                    bytes_in=st.bytes_in,
                    frames_out=st.frames_out,
                    bytes_out=st.bytes_out,
                    send_failures=st.send_failures,
                    loss=round(st.loss, 4),
                    queue_depth=self.transport.queue_depth(li.link_id),
                )
            rows.append(row)
        return rows

    def uplink_status(self) -> object:
        """The uplink's counters and remote gateways (None without an uplink)."""
        snapshot = getattr(self.uplink, "snapshot", None)
        return None if snapshot is None else _jsonable(snapshot())

    def peers(self) -> list[dict[str, object]]:
        """Known peers; ``via`` says whether a neighbour is linked by radio or uplink."""
        loop = asyncio.get_running_loop()
        uplink = {li.link_id for li in self.transport.links() if li.role is LinkRole.UPLINK}
        rows = []
        for row in self.mesh.router.peers.rows(loop.time()):
            out = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in row.items()}
            links = row.get("links")
            ids = set(links) if isinstance(links, list) else set()
            out["via"] = sorted(
                {"uplink" if lid in uplink else "radio" for lid in ids if isinstance(lid, int)}
            )
            rows.append(out)
        return rows

    def session_by_name(self, name: str) -> bytes:
        for sid, s in self.sessions.items():
            if s.name == name or sid.hex() == name:
                return sid
        for sid, t in self.tables.tables.items():
            if t.genesis.name == name or sid.hex() == name:
                return sid
        raise KeyError(name)


def _no_balance(_key: bytes) -> int | None:
    return None


def _jsonable(obj: object) -> object:
    """Dataclasses, enums, bytes and counters as JSON-friendly values."""
    import dataclasses
    import enum
    import math

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(_jsonable(k)): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, float) and math.isnan(obj):
        return None  # JSON has no NaN
    return obj


__all__ = [
    "BridgeFactory",
    "ConfigError",
    "KeyFileError",
    "Node",
    "NodeConfig",
    "default_nickname",
    "load_node_config",
    "parse_node_config",
    "session_id_from_name",
]
