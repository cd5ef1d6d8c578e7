"""A node answers frames built byte for byte as the BitChat apps build them: a signed public
``!`` command, and a Noise XX handshake plus private message (rules in upstream_rules.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from test_visible import WALL, IdleTransport
from upstream_rules import (
    build_v1,
    ios_encode_announce,
    parse_private_message_tlv,
    parse_v1,
    peer_id_of,
    pkcs7_pad,
    private_message_tlv,
    sign_v1,
    verify,
)

from ble_bridge.air.clock import run_virtual
from ble_bridge.chat.commands import HELP
from ble_bridge.chat.phone import pump
from ble_bridge.consensus.craps import CrapsState, Stage
from ble_bridge.node import Node, parse_node_config
from ble_bridge.noise.protocol import HandshakeXX, public_bytes
from ble_bridge.transport import LinkInfo, LinkRole, SendResult
from ble_bridge.wire.identity import Identity


class Phone:
    """The keys and frames of one BitChat phone, built from the upstream rules."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.signing = Ed25519PrivateKey.generate()
        self.signing_public = self.signing.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.noise = X25519PrivateKey.generate()
        self.peer_id = peer_id_of(public_bytes(self.noise))

    def announce(self, ts: int) -> bytes:
        payload = ios_encode_announce(self.name, public_bytes(self.noise), self.signing_public, 0)
        return sign_v1(self.signing, 0x01, self.peer_id, payload, ts)

    def public(self, text: str, ts: int) -> bytes:
        return sign_v1(self.signing, 0x02, self.peer_id, text.encode(), ts)

    def noise_frame(self, ptype: int, payload: bytes, to: bytes, ts: int) -> bytes:
        # BLEService: unsigned, recipient set, ttl 7, padded for BLE (BLEOutboundPacketPolicy)
        return pkcs7_pad(build_v1(ptype, self.peer_id, payload, ts, recipient=to))


def node_with_table(tmp: Path) -> Node:
    ident = Identity.from_seed(b"answer-node")
    doc = {
        "node": {"data_dir": str(tmp), "control_socket": "", "board": "pi4"},
        "session": [{"name": "craps-1", "validators": [ident.signing_public.hex()]}],
    }
    node = Node(
        parse_node_config(doc),
        identity=ident,
        transport=IdleTransport(),
        store_path=None,
        wall_offset=WALL,
    )
    node.mesh.router.link_up(0.0, LinkInfo(1, "phone", 517, LinkRole.PERIPHERAL))
    return node


def ms(now: float) -> int:
    return int((WALL + now) * 1000)


def deliver(node: Node, now: float, frame: bytes) -> list[bytes]:
    router = node.mesh.router
    router.receive(now, 1, frame)
    assert node.phone is not None
    pump(router, node.phone, now)
    return [f for _, f in router.frames_to_send()]


def test_a_public_command_from_an_ios_built_frame_gets_a_public_reply(tmp_path: Path) -> None:
    node = node_with_table(tmp_path)
    phone = Phone("alice")
    deliver(node, 0.1, phone.announce(ms(0.1)))
    out = deliver(node, 0.2, phone.public("!tables", ms(0.2)))
    replies = [f for f in map(parse_v1, out) if f is not None and f.type == 0x02]
    assert len(replies) == 1
    reply = replies[0]
    assert reply.sender == node.identity.peer_id and reply.recipient is None
    text = reply.payload.decode()
    assert text.startswith("tables: craps-1 h") and len(reply.payload) < 100
    assert verify(reply, node.identity.signing_public)  # as the phone checks it
    # help for an unknown command, once per window even under a flood
    outs = [deliver(node, 0.3 + i * 0.01, phone.public("!dance", ms(0.3) + i)) for i in range(20)]
    helps = [f for o in outs for f in map(parse_v1, o) if f is not None and f.type == 0x02]
    assert len(helps) == 1 and HELP in helps[0].payload.decode()
    assert node.phone is not None and node.phone.commands.stats["help_suppressed"] == 19


def test_a_noise_dm_from_an_ios_built_handshake_gets_a_private_reply(tmp_path: Path) -> None:
    node = node_with_table(tmp_path)
    me = node.identity.peer_id
    phone = Phone("bob")
    deliver(node, 0.1, phone.announce(ms(0.1)))
    hs = HandshakeXX(True, phone.noise)
    out = deliver(node, 0.2, phone.noise_frame(0x10, hs.write(), me, ms(0.2)))
    (m2,) = [f for f in map(parse_v1, out) if f is not None and f.type == 0x10]
    assert m2.recipient == phone.peer_id and m2.signature is None and len(m2.payload) == 96
    hs.read(m2.payload)
    out = deliver(node, 0.3, phone.noise_frame(0x10, hs.write(), me, ms(0.3)))
    assert out == []  # message 3 needs no answer
    est = hs.split()
    assert est.remote_static == node.identity.noise_public
    dm = b"\x01" + private_message_tlv("6F1C0D6E-1A2B-4C3D-8E9F-0123456789AB", "!balance")
    out = deliver(node, 0.4, phone.noise_frame(0x11, est.send.encrypt(dm), me, ms(0.4)))
    frames = [f for f in map(parse_v1, out) if f is not None and f.type == 0x11]
    plain = [est.receive.decrypt(f.payload) for f in frames]
    assert plain[0] == b"\x03" + b"6F1C0D6E-1A2B-4C3D-8E9F-0123456789AB"  # delivered
    assert plain[1][0] == 0x01
    pm = parse_private_message_tlv(plain[1][1:])
    assert pm is not None and pm[1] == "no seat at any table"
    assert node.phone is not None and node.phone.stats["dm_replies"] == 1
    # the same ciphertext again in a new frame (so past the router's dedup): dropped, counted
    wire = est.send.encrypt(dm)
    assert len(deliver(node, 0.5, phone.noise_frame(0x11, wire, me, ms(0.5)))) == 2
    assert deliver(node, 0.6, phone.noise_frame(0x11, wire, me, ms(0.6))) == []
    assert node.phone.noise.stats["decrypt_replayed"] == 1
    tampered = bytearray(est.send.encrypt(dm))
    tampered[6] ^= 0x40
    assert deliver(node, 0.7, phone.noise_frame(0x11, bytes(tampered), me, ms(0.7))) == []
    assert node.phone.noise.stats["decrypt_bad_tag"] == 1


def _texts(out: list[bytes]) -> list[str]:
    return [f.payload.decode() for f in map(parse_v1, out) if f is not None and f.type == 0x02]


def test_join_and_bet_from_a_phone_are_checked_and_submitted_with_its_own_frames(
    tmp_path: Path,
) -> None:
    node = node_with_table(tmp_path)
    phone = Phone("carol")
    deliver(node, 0.1, phone.announce(ms(0.1)))
    # before joining, a bet is refused in words, and nothing is submitted
    out = deliver(node, 0.2, phone.public("!bet craps-1 pass 10", ms(0.2)))
    assert _texts(out) == ["carol: bet 10 pass at craps-1 refused (!join the table first)"]
    assert node.tables.counters["phone_ops"] == 0
    out = deliver(node, 0.3, phone.public("!join CRAPS-1", ms(0.3)))
    assert _texts(out) == ["carol: join sent to craps-1; a line follows when it is in"]
    assert node.tables.counters["phone_ops"] == 1
    sid = next(iter(node.sessions))
    assert len(node.bridge.engine(sid).mempool) == 1  # the PhoneOp, waiting to be proposed
    out = deliver(node, 7.0, phone.public("!join nowhere", ms(7.0)))
    assert _texts(out) == ["no table 'nowhere' here; !tables lists them"]
    # every play line went to the tables service with the phone's frames
    assert node.phone.stats["play_requests"] == 3


class RecordingTransport(IdleTransport):
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, link_id: int, frame: bytes) -> SendResult:
        self.sent.append(frame)
        return SendResult.QUEUED


def test_a_phone_joins_and_bets_and_the_table_says_so_once_committed(tmp_path: Path) -> None:
    """The running node on a virtual clock: the phone's !join and !bet commit as PhoneOps
    and the table's public lines confirm them."""
    ident = Identity.from_seed(b"answer-node")
    doc = {
        "node": {"data_dir": str(tmp_path), "control_socket": "", "board": "pi4"},
        "session": [{"name": "craps-1", "validators": [ident.signing_public.hex()]}],
    }
    transport = RecordingTransport()
    node = Node(
        parse_node_config(doc),
        identity=ident,
        transport=transport,
        store_path=None,
        wall_offset=WALL,
    )
    phone = Phone("erin")
    sid = next(iter(node.sessions))

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        await node.start()
        t0 = loop.time()
        node.mesh.link_up(LinkInfo(1, "phone", 517, LinkRole.PERIPHERAL))

        def at(dt: float) -> int:
            return ms(loop.time() - t0 + dt)

        node.mesh.frame_received(1, phone.announce(at(0)))
        await asyncio.sleep(0.5)
        node.mesh.frame_received(1, phone.public("!join craps-1", at(0)))
        await asyncio.sleep(5.0)
        node.mesh.frame_received(1, phone.public("!bet craps-1 field 7", at(0)))
        await asyncio.sleep(6.0)
        await node.stop()
        frames = [parse_v1(f) for f in transport.sent]
        return [f.payload.decode() for f in frames if f is not None and f.type == 0x02]

    lines = run_virtual(main(), seed=1)
    state = node.bridge.engine(sid).state
    assert isinstance(state, CrapsState)
    key = phone.signing_public
    assert len([e for e in state.replay.applied if e[1] == key]) == 2
    assert state.total_tokens == state.supply
    assert "erin: join sent to craps-1; a line follows when it is in" in lines
    said = " ".join(lines)
    assert "erin joined from a phone" in said and "erin bets 7 field" in said


def test_a_bet_sent_while_the_dice_roll_is_held_for_the_next_betting_window(
    tmp_path: Path,
) -> None:
    """An autoplaying seat closes the betting window within a block; a phone's bet that comes
    while the table reveals is held and submitted when the next window opens, then commits."""
    ident = Identity.from_seed(b"answer-node")
    doc = {
        "node": {"data_dir": str(tmp_path), "control_socket": "", "board": "pi4"},
        "session": [
            {"name": "craps-1", "validators": [ident.signing_public.hex()], "autoplay": True}
        ],
    }
    transport = RecordingTransport()
    node = Node(
        parse_node_config(doc), identity=ident, transport=transport, store_path=None,
        wall_offset=WALL,
    )  # fmt: skip
    phone = Phone("fay")
    sid = next(iter(node.sessions))

    async def main() -> tuple[list[str], int]:
        loop = asyncio.get_running_loop()
        await node.start()
        t0 = loop.time()
        node.mesh.link_up(LinkInfo(1, "phone", 517, LinkRole.PERIPHERAL))

        def at() -> int:
            return ms(loop.time() - t0)

        def stage() -> Stage | None:
            state = node.bridge.engine(sid).state
            return state.stage if isinstance(state, CrapsState) else None

        node.mesh.frame_received(1, phone.announce(at()))
        await asyncio.sleep(0.5)
        node.mesh.frame_received(1, phone.public("!join craps-1", at()))
        await asyncio.sleep(5.0)
        for _ in range(3000):  # until the dice roll (virtual time: 30 s at most)
            if stage() == Stage.REVEALING:
                break
            await asyncio.sleep(0.01)
        stage_then = stage()
        node.mesh.frame_received(1, phone.public("!bet craps-1 field 7", at()))
        await asyncio.sleep(6.0)
        await node.stop()
        frames = [parse_v1(f) for f in transport.sent]
        texts = [f.payload.decode() for f in frames if f is not None and f.type == 0x02]
        return texts, int(stage_then or 0)

    lines, stage_then = run_virtual(main(), seed=1)
    assert stage_then == Stage.REVEALING
    assert "fay: bet 7 field held for the next roll at craps-1" in lines
    assert any(t.startswith("fay: bet 7 field in at craps-1, balance ") for t in lines), lines
    assert not any("refused" in t for t in lines), lines
    assert node.tables.counters["phone_held_released"] == 1
    state = node.bridge.engine(sid).state
    assert isinstance(state, CrapsState) and state.total_tokens == state.supply
