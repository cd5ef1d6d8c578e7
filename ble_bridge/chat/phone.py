"""What a node says to BitChat phones: command replies in public and by Noise private message.

:class:`PhoneChat` is sans-IO: feed it delivered packets (:class:`~ble_bridge.mesh.router.
Delivered`) with ``now``, send the :class:`Outgoing` it returns. :class:`PhoneChatService`
is the thin part that subscribes to a :class:`~ble_bridge.mesh.service.MeshNode` and sends.

- Public ``!`` lines (type 0x02, signed; the router has verified them with the sender's
  announced key): answered in public by one node only: a node answers if the phone is its
  direct neighbour and it ranks first, by SHA-256 of (phone's peer id, node id), among the
  phone's announced neighbours that are ble-bridge nodes (capability bit 15) plus itself. The
  rank is per phone, not per packet, so one node answers all of a phone's lines and its
  per-sender rate limits hold for the mesh (ranked per packet, a phone next to k nodes got
  up to k times the replies).
- Noise: handshake frames (0x10) go to :class:`~ble_bridge.noise.session.NoiseSessions`;
  transport frames (0x11) are decrypted, a private message (0x01) gets a ``delivered``
  receipt (0x03) and the command reply as a private message. Sends to a peer without a
  session (or whose session wants a rekey) wait in a bounded queue while we handshake.
- The sender of a private message is the peer whose announce carried the session's static
  key; its Ed25519 signing key from that (signed) announce is its player key.
- ``!join TABLE`` and ``!bet TABLE KIND N`` in public go to the ``play`` hook (the tables
  service) with the phone's own signed frames: the message and its last announce (kept in
  a bounded map), which the validators check before the phone's account moves. In a
  private message they get a pointer to the public chat: a Noise message proves nothing
  to the other validators.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..mesh.config import CAP_RELAY_DEFERRAL
from ..mesh.peers import PeerRecord
from ..mesh.router import Delivered, Router
from ..noise.payloads import NoisePayloadType, PrivateMessage, split_typed, typed
from ..noise.protocol import NoiseError
from ..noise.session import NoiseConfig, NoiseSessions
from ..wire.identity import Identity
from ..wire.packet import PacketType, WireError, encode
from .commands import ChatConfig, Commands, TablesSource

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PhoneConfig:
    """``[phone]``: chat commands and Noise sessions with BitChat phones."""

    enabled: bool = True
    answer_public: bool = True
    answer_private: bool = True  # False: a simulated phone, which reads DMs and answers none
    commands: ChatConfig = field(default_factory=ChatConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    queue_per_peer: int = 4
    queue_peers: int = 32


@dataclass(frozen=True, slots=True)
class Outgoing:
    type: int
    payload: bytes
    recipient: bytes | None  # None: broadcast
    signed: bool


PeerLookup = Callable[[bytes], PeerRecord | None]
PrivateHook = Callable[[float, PeerRecord, str], str | None]
"""Sees each private command line first (e.g. ``!pair``, owner commands): its reply, ""
for handled without a reply, None to leave the line to :class:`Commands`."""
# (now, command line, the phone's announce frame, its message frame) -> the reply
PlayHook = Callable[[float, str, bytes, bytes], str]
PLAY_WORDS = ("!join", "!bet")
MAX_ANNOUNCES = 256


class PhoneChat:
    """Sans-IO: delivered packets in, packets to send out (see the module docstring)."""

    def __init__(
        self,
        identity: Identity,
        tables: TablesSource,
        peers: PeerLookup,
        config: PhoneConfig | None = None,
        play: PlayHook | None = None,
    ) -> None:
        self.identity = identity
        self.play = play
        self.last_dm: str | None = None  # with answer_private off: the last DM text read
        self._announces: OrderedDict[bytes, bytes] = OrderedDict()  # peer -> signed frame
        self.peer_id = identity.peer_id
        self.config = config or PhoneConfig()
        self.commands = Commands(tables, self.config.commands)
        self.noise = NoiseSessions(identity.peer_id, identity.noise_private, self.config.noise)
        self.peers = peers
        self.stats: Counter[str] = Counter()
        self._queue: OrderedDict[bytes, deque[bytes]] = OrderedDict()  # peer -> plaintexts
        self._next_expire = float("-inf")
        self.private_hook: PrivateHook | None = None

    # -- receive ---------------------------------------------------------------------

    def on_packet(self, now: float, event: Delivered, direct_peer: bytes | None) -> list[Outgoing]:
        """Handle one delivered packet; ``direct_peer`` is the peer bound to its link."""
        p = event.packet
        if now >= self._next_expire:  # idle sessions and stale handshakes, every 5 s at most
            self._next_expire = now + 5.0
            self.noise.expire(now)
        try:
            if p.type == PacketType.ANNOUNCE:
                self._keep_announce(p.sender, event)
                return []
            if p.type == PacketType.MESSAGE:
                return self._public(now, event, direct_peer)
            if p.type == PacketType.NOISE_HANDSHAKE and p.recipient == self.peer_id:
                return self._handshake(now, p.sender, p.payload)
            if p.type == PacketType.NOISE_ENCRYPTED and p.recipient == self.peer_id:
                return self._encrypted(now, p.sender, p.payload)
        except NoiseError as exc:
            self.stats[f"noise_{exc.reason}"] += 1
        return []

    def _public(self, now: float, event: Delivered, direct_peer: bytes | None) -> list[Outgoing]:
        p = event.packet
        try:
            text = bytes(p.payload).decode("utf-8")
        except UnicodeDecodeError:
            self.stats["public_not_utf8"] += 1
            return []
        if not text.lstrip().startswith("!"):
            self.stats["public_chat"] += 1
            return []
        rec = self.peers(p.sender)
        if rec is None or rec.signing_key is None:  # the router verified it, so unlikely
            self.stats["public_unknown_sender"] += 1
            return []
        if not self.config.answer_public or not self._we_answer(p.sender, rec, direct_peer):
            self.stats["public_left_to_another_node"] += 1
            return []
        words = text.split()
        if self.play is not None and words[0].lower() in PLAY_WORDS and len(words) >= 2:
            reply = self._play(now, event, rec.signing_key, text)
        else:
            reply = self.commands.handle(now, rec.signing_key, text, private=False)
        if reply is None:
            return []
        reply = self.commands._limit(reply, False)
        self.stats["public_replies"] += 1
        return [Outgoing(PacketType.MESSAGE, reply.encode("utf-8"), None, True)]

    def _keep_announce(self, sender: bytes, event: Delivered) -> None:
        if sender == self.peer_id or event.packet.signature is None:
            return
        try:
            frame = encode(event.packet)
        except WireError:
            return
        self._announces[sender] = frame
        self._announces.move_to_end(sender)
        while len(self._announces) > MAX_ANNOUNCES:
            self._announces.popitem(last=False)

    def _play(self, now: float, event: Delivered, key: bytes, text: str) -> str | None:
        p = event.packet
        word = text.split()[0].lower()
        if not self.commands.allow(now, key, word[1:]):
            return None
        assert self.play is not None
        announce = self._announces.get(p.sender)
        if announce is None:
            self.stats["play_no_announce"] += 1
            return "no announce heard from you yet; try again in a few seconds"
        self.stats["play_requests"] += 1
        return self.play(now, text.strip(), announce, encode(p))

    def _we_answer(self, sender: bytes, rec: PeerRecord, direct_peer: bytes | None) -> bool:
        if direct_peer != sender:
            return False
        candidates = {self.peer_id}
        for n in rec.neighbors:
            other = self.peers(n)
            if other is not None and (other.capabilities or 0) & CAP_RELAY_DEFERRAL:
                candidates.add(n)
        best = min(candidates, key=lambda c: hashlib.sha256(sender + c).digest())
        return best == self.peer_id

    def _handshake(self, now: float, sender: bytes, payload: bytes) -> list[Outgoing]:
        result = self.noise.on_handshake(now, sender, bytes(payload))
        out = []
        if result.reply is not None:
            out.append(Outgoing(PacketType.NOISE_HANDSHAKE, result.reply, sender, False))
        if result.established:
            self.stats["sessions_established"] += 1
            out.extend(self._flush(now, sender))
        return out

    def _encrypted(self, now: float, sender: bytes, payload: bytes) -> list[Outgoing]:
        plaintext = self.noise.decrypt(now, sender, bytes(payload))
        try:
            ptype, data = split_typed(plaintext)
            if ptype != NoisePayloadType.PRIVATE_MESSAGE:
                self.stats[f"noise_payload_{ptype:#04x}_ignored"] += 1
                return []
            pm = PrivateMessage.decode(data)
        except WireError as exc:
            self.stats[f"dm_{exc.reason}"] += 1
            return []
        self.stats["dms_received"] += 1
        out = self.send_private(
            now, sender, typed(NoisePayloadType.DELIVERED, pm.message_id.encode("utf-8"))
        )
        if not self.config.answer_private:
            self.last_dm = pm.content
            return out
        rec = self.peers(sender)
        remote = self.noise.remote_static(sender)
        if rec is None or rec.signing_key is None or rec.noise_key != remote:
            self.stats["dm_unannounced_sender"] += 1  # no signed announce binds its keys
            return out
        text = pm.content if pm.content.lstrip().startswith("!") else "!" + pm.content.strip()
        reply = self.private_hook(now, rec, text) if self.private_hook is not None else None
        words = text.split()
        if reply is not None:
            pass
        elif (
            words
            and words[0].lower() in PLAY_WORDS
            and self.commands.allow(now, rec.signing_key, "dm_play")
        ):
            reply = f"send {words[0].lower()} in the public chat: the table checks your signed line"
        else:
            reply = self.commands.handle(now, rec.signing_key, text, private=True)
        if reply:  # "" from the hook: handled, nothing to say
            self.stats["dm_replies"] += 1
            out += self.send_private(now, sender, self.private_message(reply))
        return out

    # -- send ------------------------------------------------------------------------

    @staticmethod
    def private_message(text: str) -> bytes:
        pm = PrivateMessage(str(uuid.uuid4()).upper(), text)
        return typed(NoisePayloadType.PRIVATE_MESSAGE, pm.encode())

    def send_private(self, now: float, peer: bytes, plaintext: bytes) -> list[Outgoing]:
        """Encrypt ``plaintext`` (a typed Noise payload) for ``peer``, or queue it and start
        a handshake (a rekey when the session is due one)."""
        if self.noise.established(peer) and not self.noise.needs_rekey(now, peer):
            wire = self.noise.encrypt(now, peer, plaintext)
            return [Outgoing(PacketType.NOISE_ENCRYPTED, wire, peer, False)]
        q = self._queue.get(peer)
        if q is None:
            q = self._queue[peer] = deque(maxlen=self.config.queue_per_peer)
            while len(self._queue) > self.config.queue_peers:
                self._queue.popitem(last=False)
                self.stats["queue_peer_evicted"] += 1
        if len(q) == q.maxlen:
            self.stats["queue_dropped"] += 1
        q.append(plaintext)
        try:
            msg1 = self.noise.initiate(now, peer)
        except NoiseError as exc:
            self.stats[f"noise_{exc.reason}"] += 1
            return []
        return [Outgoing(PacketType.NOISE_HANDSHAKE, msg1, peer, False)]

    def _flush(self, now: float, peer: bytes) -> list[Outgoing]:
        q = self._queue.pop(peer, None)
        out = []
        for plaintext in q or ():
            wire = self.noise.encrypt(now, peer, plaintext)
            out.append(Outgoing(PacketType.NOISE_ENCRYPTED, wire, peer, False))
        return out

    def status(self) -> dict[str, int]:
        out = dict(self.stats)
        out.update({f"cmd_{k}": v for k, v in self.commands.stats.items()})
        out.update({f"noise_{k}": v for k, v in self.noise.stats.items()})
        out["noise_sessions"] = len(self.noise)
        out["noise_half_open"] = self.noise.half_open
        return out


def pump(router: Router, chat: PhoneChat, now: float) -> int:
    """Sans-IO glue, as :class:`PhoneChatService` does it: hand the router's delivered
    packets to ``chat`` and send what it answers through the router. Returns packets sent."""
    sent = 0
    for event in router.events():
        if event.packet.type not in _CHAT_TYPES:
            continue
        link = router.peers.links.get(event.link_id) if event.link_id is not None else None
        for out in chat.on_packet(now, event, link.peer_id if link is not None else None):
            router.send(now, out.type, out.payload, out.recipient, sign=out.signed)
            sent += 1
    return sent


_CHAT_TYPES = frozenset(
    {
        PacketType.ANNOUNCE,
        PacketType.MESSAGE,
        PacketType.NOISE_HANDSHAKE,
        PacketType.NOISE_ENCRYPTED,
    }
)


class PhoneChatService:
    """Wires :class:`PhoneChat` to a mesh node: subscribe, feed, send. No timer: sessions
    expire as packets arrive, and every structure is bounded meanwhile."""

    def __init__(self, mesh: object, chat: PhoneChat) -> None:
        from ..mesh.service import MeshNode

        assert isinstance(mesh, MeshNode)
        self.mesh = mesh
        self.chat = chat
        for t in _CHAT_TYPES:
            mesh.subscribe(t, self._on_event)

    def _on_event(self, event: Delivered) -> None:
        router = self.mesh.router
        link = router.peers.links.get(event.link_id) if event.link_id is not None else None
        direct = link.peer_id if link is not None else None
        for out in self.chat.on_packet(self.mesh.now(), event, direct):
            self.send(out)

    def send(self, out: Outgoing) -> None:
        try:
            self.mesh.send(out.type, out.payload, out.recipient, sign=out.signed)
        except ValueError:
            self.chat.stats["send_refused"] += 1


__all__ = ["Outgoing", "PhoneChat", "PhoneChatService", "PhoneConfig", "PlayHook", "pump"]
