"""Binding an owner by code over a Noise DM from a simulated phone (frames built as the
BitChat apps build them), the owner commands it then may use, and wrong codes."""

from __future__ import annotations

from pathlib import Path

from test_answers import Phone, deliver, ms
from test_visible import WALL, IdleTransport
from upstream_rules import parse_private_message_tlv, parse_v1, private_message_tlv

from ble_bridge.node import Node, parse_node_config
from ble_bridge.noise.protocol import HandshakeXX, TransportCipher
from ble_bridge.transport import LinkInfo, LinkRole
from ble_bridge.wire.identity import Identity


def make_node(tmp: Path, **pairing: object) -> Node:
    ident = Identity.from_seed(b"pairing-node")
    doc = {
        "node": {"data_dir": str(tmp), "control_socket": "", "board": "pi4"},
        "session": [{"name": "craps-1", "validators": [ident.signing_public.hex()]}],
        "pairing": pairing,
    }
    node = Node(
        parse_node_config(doc),
        identity=ident,
        transport=IdleTransport(),
        store_path=tmp / "state.sqlite3",
        wall_offset=WALL,
    )
    node.mesh.router.link_up(0.0, LinkInfo(1, "phone", 517, LinkRole.PERIPHERAL))
    return node


class Session:
    """A phone with an established Noise session to the node."""

    def __init__(self, node: Node, phone: Phone, t: float) -> None:
        self.node, self.phone, self.t = node, phone, t
        me = node.identity.peer_id
        deliver(node, self.tick(), phone.announce(ms(self.t)))
        hs = HandshakeXX(True, phone.noise)
        out = deliver(node, self.tick(), phone.noise_frame(0x10, hs.write(), me, ms(self.t)))
        (m2,) = [f for f in map(parse_v1, out) if f is not None and f.type == 0x10]
        hs.read(m2.payload)
        deliver(node, self.tick(), phone.noise_frame(0x10, hs.write(), me, ms(self.t)))
        est = hs.split()
        self.send: TransportCipher = est.send
        self.receive: TransportCipher = est.receive
        self.n = 0

    def tick(self) -> float:
        self.t += 0.05
        return self.t

    def dm(self, text: str) -> str | None:
        """Send ``text`` as a private message; the node's text reply (None: no reply)."""
        self.n += 1
        mid = f"M{self.n}"  # short: the harness builds uncompressed frames only (< 100 B)
        wire = self.send.encrypt(b"\x01" + private_message_tlv(mid, text))
        me = self.node.identity.peer_id
        out = deliver(self.node, self.tick(), self.phone.noise_frame(0x11, wire, me, ms(self.t)))
        frames = [f for f in map(parse_v1, out) if f is not None and f.type == 0x11]
        plain = [self.receive.decrypt(f.payload) for f in frames]
        assert plain and plain[0] == b"\x03" + mid.encode()  # delivered receipt first
        texts = [parse_private_message_tlv(p[1:]) for p in plain[1:] if p[0] == 0x01]
        assert len(texts) <= 1
        return texts[0][1] if texts and texts[0] is not None else None


def test_the_first_phone_with_the_code_becomes_the_owner(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    alice = Session(node, Phone("alice"), 0.0)
    mallory = Session(node, Phone("mallory"), 1.0)
    pairing = node.owners.pairing
    assert alice.dm("!pair 123456") == "no pairing window is open"
    assert "unknown command" in (alice.dm("!status") or "")  # not an owner (yet)
    code = pairing.open(60)["code"]
    assert isinstance(code, str) and len(code) == 6 and code.isdigit()
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    assert mallory.dm(f"!pair {wrong}") == "wrong pairing code"
    assert alice.dm(f"!pair {code}") == "paired: you own this node (!help lists owner commands)"
    assert not pairing.is_open()  # closes after the first success
    assert mallory.dm(f"!pair {code}") == "no pairing window is open"  # too late
    owners = pairing.owners()
    assert [o["id"] for o in owners] == [alice.phone.signing_public.hex()]
    assert owners[0]["nickname"] == "alice" and owners[0]["via"] == "dm"
    # owner commands: status, nickname, open and close a table; not for mallory
    status = alice.dm("!status")
    assert status is not None and status.startswith(str(node.config.mesh.nickname))
    assert "craps-1" in status
    assert alice.dm("!nick felt-box") == "nickname is now felt-box"
    assert node.mesh.router.config.nickname == "felt-box"
    assert node.tables.nickname == "felt-box"
    assert (alice.dm("!nick " + "x" * 40) or "").startswith("usage")
    opened = alice.dm("!open lucky 4")
    assert opened is not None and opened.startswith("opened lucky"), opened
    assert any(t["name"] == "lucky" for t in node.tables.status())
    assert (alice.dm("!open lucky") or "").startswith("refused:")
    assert alice.dm("!close lucky") == "closed lucky"  # nobody else sat there: it ends
    assert not any(t["name"] == "lucky" for t in node.tables.status())
    assert (alice.dm("!close craps-1") or "").startswith("refused:")  # from config.toml
    assert "unknown command" in (mallory.dm("!nick evil") or "")
    assert node.mesh.router.config.nickname == "felt-box"
    assert "owner:" in (alice.dm("!help") or "")
    assert pairing.stats["pair_paired"] == 1 and pairing.stats["pair_wrong"] == 1


def test_owner_and_nickname_survive_a_restart(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    alice = Session(node, Phone("alice"), 0.0)
    code = node.owners.pairing.open(30)["code"]
    alice.dm(f"pair {code}")  # the apps may drop the '!': the node adds it
    alice.dm("!nick pocket")
    assert node.store is not None
    node.store.close()  # as a stopped node leaves it
    again = make_node(tmp_path)
    assert [o["nickname"] for o in again.owners.pairing.owners()] == ["alice"]
    assert again.mesh.router.config.nickname == "pocket"


def test_wrong_codes_are_limited_per_sender_and_per_window(tmp_path: Path) -> None:
    node = make_node(tmp_path, tries_per_sender=3, tries_per_window=5)
    pairing = node.owners.pairing
    a = Session(node, Phone("a"), 0.0)
    b = Session(node, Phone("b"), 1.0)
    code = pairing.open(60)["code"]
    wrong = f"{(int(code) + 7) % 1_000_000:06d}"
    for _ in range(3):
        assert a.dm(f"!pair {wrong}") == "wrong pairing code"
    assert a.dm(f"!pair {code}") is None  # its tries are used: ignored, silently
    assert pairing.is_open()
    assert b.dm("!pair 12ab") is not None  # malformed counts as a try
    assert b.dm(f"!pair {wrong}") == "wrong pairing code"  # 5th wrong try: window closes
    assert not pairing.is_open()
    assert pairing.window.closed_because == "too_many_tries"
    assert b.dm(f"!pair {code}") == "no pairing window is open"
    assert pairing.owners() == []
    s = pairing.status()
    assert s["tries_wrong"] == 4 and s["tries_malformed"] == 1 and s["tries_ignored"] == 1


def test_a_button_code_from_the_config_is_used_by_a_long_press(tmp_path: Path) -> None:
    node = make_node(tmp_path, button_code="424242")
    alice = Session(node, Phone("alice"), 0.0)
    from hardware.panel import Action

    node.owners._on_panel(Action.OPEN_PAIRING)
    assert node.owners.pairing.window.code == "424242"
    assert node.owners.pairing.window.origin == "button"
    assert (alice.dm("!pair 424242") or "").startswith("paired")
