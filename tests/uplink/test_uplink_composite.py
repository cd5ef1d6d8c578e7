"""CompositeTransport: children's links under one id space, never reused."""

from __future__ import annotations

from collections.abc import Sequence

from ble_bridge.transport import LinkInfo, LinkRole, SendResult, Transport, TransportHandler
from ble_bridge.uplink.composite import CompositeTransport


class Fake(Transport):
    def __init__(self) -> None:
        self.handler: TransportHandler | None = None
        self.sent: list[tuple[int, bytes]] = []
        self.up: dict[int, LinkInfo] = {}

    def attach(self, handler: TransportHandler) -> None:
        self.handler = handler

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def send(self, link_id: int, frame: bytes) -> SendResult:
        if link_id not in self.up:
            return SendResult.NO_SUCH_LINK
        self.sent.append((link_id, frame))
        return SendResult.QUEUED

    def links(self) -> Sequence[LinkInfo]:
        return list(self.up.values())

    def queue_depth(self, link_id: int) -> int:
        return 7 if link_id in self.up else 0

    def bring_up(self, lid: int, role: LinkRole) -> None:
        self.up[lid] = LinkInfo(lid, f"addr{lid}", 247, role)
        assert self.handler is not None
        self.handler.link_up(self.up[lid])

    def take_down(self, lid: int) -> None:
        del self.up[lid]
        assert self.handler is not None
        self.handler.link_down(lid, "gone")


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def link_up(self, info: LinkInfo) -> None:
        self.events.append(("up", info))

    def link_down(self, link_id: int, reason: str) -> None:
        self.events.append(("down", link_id))

    def frame_received(self, link_id: int, data: bytes) -> None:
        self.events.append(("frame", (link_id, data)))


def test_ids_are_mapped_both_ways_and_never_reused() -> None:
    radio, uplink = Fake(), Fake()
    comp = CompositeTransport([radio, uplink])
    rec = Recorder()
    comp.attach(rec)
    radio.bring_up(1, LinkRole.CENTRAL)
    uplink.bring_up(1, LinkRole.UPLINK)  # the same child id in another child
    ids = [info.link_id for kind, info in rec.events if kind == "up"]  # type: ignore[union-attr]
    assert len(set(ids)) == 2
    r_id, u_id = ids
    assert comp.child_of(u_id) == 1 and comp.child_link(u_id) == 1
    assert comp.send(u_id, b"x") is SendResult.QUEUED and uplink.sent == [(1, b"x")]
    assert comp.queue_depth(r_id) == 7
    assert uplink.handler is not None
    uplink.handler.frame_received(1, b"y")
    assert rec.events[-1] == ("frame", (u_id, b"y"))
    uplink.take_down(1)
    assert rec.events[-1] == ("down", u_id)
    assert comp.send(u_id, b"x") is SendResult.NO_SUCH_LINK
    uplink.bring_up(1, LinkRole.UPLINK)
    new_id = rec.events[-1][1].link_id  # type: ignore[union-attr]
    assert new_id not in (r_id, u_id)
    assert [li.link_id for li in comp.links()] == [r_id, new_id]
    uplink.handler.frame_received(99, b"z")  # unknown child link: ignored
    assert rec.events[-1][0] == "up"
