"""A node with the default config is listed by the BitChat apps: its announce passes the
apps' decoders (checked with rules taken from the upstream sources, not our encoder)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from upstream_rules import (
    android_accepts,
    ios_accepts,
    ios_encode_announce,
    ios_encode_capabilities,
    peer_id_of,
    sign_v1,
)

from ble_bridge.mesh.config import CAP_RELAY_DEFERRAL
from ble_bridge.node import Node, default_nickname, parse_node_config
from ble_bridge.transport import LinkInfo, LinkRole, SendResult, Transport, TransportHandler
from ble_bridge.wire.identity import Identity
from ble_bridge.wire.packet import PacketType
from ble_bridge.wire.payloads import Announce

WALL = 1_790_000_000.0


class IdleTransport(Transport):
    """A transport that is never started: the tests drive the router by hand."""

    def attach(self, handler: TransportHandler) -> None:
        pass

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def send(self, link_id: int, frame: bytes) -> SendResult:
        return SendResult.QUEUED

    def links(self) -> Sequence[LinkInfo]:
        return ()

    def queue_depth(self, link_id: int) -> int:
        return 0


def default_node(tmp: Path, **node: object) -> Node:
    doc = {"node": {"data_dir": str(tmp), "control_socket": "", "board": "pi4", **node}}
    return Node(
        parse_node_config(doc),
        identity=Identity.from_seed(b"visible-node"),
        transport=IdleTransport(),
        store_path=None,
        wall_offset=WALL,
    )


def first_announce(node: Node) -> bytes:
    router = node.mesh.router
    router.link_up(0.0, LinkInfo(1, "phone", 517, LinkRole.PERIPHERAL))
    router.handle_timer(1.0)
    frames = [f for _, f in router.frames_to_send() if f[1] == PacketType.ANNOUNCE]
    assert frames, "no announce went out"
    return frames[0]


def test_default_nickname_is_the_board_and_a_peer_id_suffix(tmp_path: Path) -> None:
    node = default_node(tmp_path)
    suffix = node.identity.peer_id[-2:].hex()
    assert (
        node.config.mesh.nickname
        == f"pi4-{suffix}"
        == default_nickname("pi4", node.identity.peer_id)
    )
    assert node.status()["nickname"] == f"pi4-{suffix}"
    assert default_nickname("generic", b"\x00" * 6 + b"\xab\xcd") == "bridge-abcd"


def test_configured_nickname_overrides_the_default(tmp_path: Path) -> None:
    node = default_node(tmp_path, nickname="Craps Table")
    assert node.config.mesh.nickname == "Craps Table"
    ann = ios_accepts(first_announce(node))
    assert ann is not None and ann.nickname == "Craps Table"


def test_default_config_announce_passes_both_apps_decoders(tmp_path: Path) -> None:
    node = default_node(tmp_path)
    frame = first_announce(node)
    ios = ios_accepts(frame)
    android = android_accepts(frame, int(WALL * 1000) + 1000)
    assert ios is not None and android is not None
    for ann in (ios, android):
        assert re.fullmatch(r"pi4-[0-9a-f]{4}", ann.nickname)
        assert ann.noise_key == node.identity.noise_public
        assert ann.signing_key == node.identity.signing_public
        assert peer_id_of(ann.noise_key) == node.identity.peer_id
        # the capability bits we set, written as iOS writes them
        assert ann.capabilities == CAP_RELAY_DEFERRAL
        assert ann.capabilities_bytes == ios_encode_capabilities(CAP_RELAY_DEFERRAL)


def test_an_announce_without_nickname_is_refused_by_the_apps(tmp_path: Path) -> None:
    # what nodes sent before: the same frame without TLV 0x01 is not listed by either app
    ident = Identity.from_seed(b"no-nick")
    payload = Announce(noise_key=ident.noise_public, signing_key=ident.signing_public).encode()
    frame = sign_v1(ident.signing_private, 0x01, ident.peer_id, payload, 5_000)
    assert ios_accepts(frame) is None and android_accepts(frame, 5_000) is None


@pytest.mark.parametrize("caps", [0, 1, 0x80, 0x100, CAP_RELAY_DEFERRAL, (1 << 63) | 1])
def test_capabilities_encode_as_ios_writes_them(caps: int) -> None:
    raw = ios_encode_capabilities(caps)
    assert Announce(capabilities=caps).encode() == bytes([0x05, len(raw)]) + raw
    assert Announce(capabilities=0).encode() == bytes.fromhex("050100")


def test_an_announce_built_as_ios_builds_it_is_learned_by_the_node(tmp_path: Path) -> None:
    node = default_node(tmp_path)
    router = node.mesh.router
    router.link_up(0.0, LinkInfo(1, "phone", 517, LinkRole.PERIPHERAL))
    phone_key = Ed25519PrivateKey.generate()
    signing = phone_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    noise = bytes(range(32))
    sender = peer_id_of(noise)
    payload = ios_encode_announce("alice", noise, signing, capabilities=0)
    assert payload.endswith(bytes.fromhex("050100"))
    frame = sign_v1(phone_key, 0x01, sender, payload, int(WALL * 1000) + 500)
    router.receive(0.5, 1, frame)
    assert router.stats["accepted"] == 1, dict(router.stats)
    rec = router.peers.get(sender)
    assert rec is not None and rec.nickname == "alice" and rec.signing_key == signing
    assert rec.noise_key == noise
