"""``ble-bridge run --transport sim``: one real node on a loopback air on the wall clock.

The node is the one ``ble-bridge run`` builds from its config (its key, its SQLite file, its
control socket, metrics, LED); only its transport is a :class:`~.air.SimTransport` instead of
BlueZ. Beside it the air holds ``peers`` simulated handhelds (in-memory state, the
``pi-tuned`` link profile) whose identities come from a seed kept in the data directory, so a
restarted node finds the same neighbours and the same demo table again. Together they open
the demo table (``demo-table``: the node and its peers as validators, everyone autoplaying):
a person can try the service, control socket, metrics, watchdog and LED without a radio.
The first simulated neighbour also opens a table at runtime, ``sim-open`` (8 seats, only
itself seated), so ``ble-bridge table list`` has something to show and
``ble-bridge table join sim-open`` something to join.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import secrets
from pathlib import Path

from ..air.network import Network, NodeSpec, SimNode
from ..air.profiles import PI_TUNED, LinkProfile
from ..air.topology import full
from ..node import Node, NodeConfig, SessionSection
from ..signer import new_key_signer_file
from ..wire.identity import Identity

DEMO_TABLE = "demo-table"
OPEN_TABLE = "sim-open"
SEED_FILE = "sim-peers.seed"
MAX_SIM_PEERS = 15


def peer_identities(data_dir: Path, peers: int) -> list[Identity]:
    """The simulated neighbours' identities, from a seed created once in ``data_dir``."""
    path = data_dir / SEED_FILE
    try:
        seed = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        seed = b""
    if len(seed) != 32:
        seed = secrets.token_bytes(32)
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(seed.hex() + "\n")
        tmp.replace(path)
    return [
        Identity.from_seed(hashlib.sha256(b"ble-bridge/sim-peer/%d/" % i + seed).digest())
        for i in range(peers)
    ]


def with_demo_table(config: NodeConfig, node: Identity, peers: list[Identity]) -> NodeConfig:
    """``config`` plus the demo table whose validators are the node and its peers."""
    validators = tuple(i.signing_public.hex() for i in [node, *peers])
    demo = SessionSection(name=DEMO_TABLE, validators=validators, autoplay=True)
    others = tuple(s for s in config.sessions if s.name != DEMO_TABLE)
    return dataclasses.replace(config, sessions=(*others, demo))


class LoopbackAir:
    """The node (index 0) and its simulated neighbours on one air on the running loop."""

    def __init__(self, config: NodeConfig, peers: int = 3, profile: LinkProfile = PI_TUNED) -> None:
        if not 0 <= peers <= MAX_SIM_PEERS:
            raise ValueError(f"--sim-peers must be 0..{MAX_SIM_PEERS}")
        key = config.node.key_path
        if not key.exists():  # a demo node may start from an empty data dir
            new = Identity.generate()
            new.save(key)
            new_key_signer_file(key, new.signing_public)
        self.identity = Identity.load(key)
        self.peer_ids = peer_identities(config.node.data_dir, peers)
        self.config = with_demo_table(config, self.identity, self.peer_ids)
        everyone = [self.identity, *self.peer_ids]
        self._pins = {i.peer_id: i.signing_public for i in everyone}
        self._profile = profile
        self._everyone = everyone
        self.node: Node | None = None
        self.network: Network | None = None

    def _make(self, spec: NodeSpec) -> SimNode:
        if spec.index == 0:
            node = Node(
                self.config,
                identity=self.identity,
                transport=spec.transport,
                rng=spec.rng,
                peer_keys=self._pins,
            )
            self.node = node
            return node
        peer = spec.identity
        peer_config = NodeConfig(
            node=dataclasses.replace(self.config.node, control_socket=Path(), board="generic"),
            mesh=dataclasses.replace(self.config.mesh, nickname=f"sim-peer-{spec.index}"),
            bridge=self.config.bridge,
            sessions=tuple(s for s in self.config.sessions if s.name == DEMO_TABLE),
        )
        node = Node(
            peer_config,
            identity=peer,
            transport=spec.transport,
            rng=spec.rng,
            store_path=None,
            peer_keys=self._pins,
            tables_path=None,
        )
        if spec.index == 1:
            node.tables.open(OPEN_TABLE)
        return node

    async def start(self) -> Node:
        """Build the air, start every node; returns the node (index 0)."""
        net = Network(full(len(self._everyone)), self._profile, self._make, trace=False)
        net.identities[:] = self._everyone
        self.network = net
        await net.start()
        assert self.node is not None
        return self.node

    async def stop(self) -> None:
        if self.network is not None:
            await self.network.stop()
            self.network = None
