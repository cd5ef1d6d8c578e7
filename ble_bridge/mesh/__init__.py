"""Mesh routing: a sans-IO :class:`Router` (explicit ``now``) and the thin asyncio
:class:`MeshNode` that runs it over any :class:`~ble_bridge.transport.Transport`.

Policy choices (see ``router.py`` for the rules):

- Unsigned packets: fragments (0x20) are reassembled hop by hop and the result is checked
  like any frame; unsigned Noise (0x10/0x11) and file-transfer (0x22) frames are relayed as
  opaque BitChat traffic but never delivered; every other unsigned type is dropped.
- Keys: learned from announces on first use (a later announce with another signing key for
  the same id is refused), or pinned with ``add_peer_key``. Unknown senders are dropped.
- Freshness: timestamps are compared with an estimate of mesh time (median offset of peers'
  verified timestamps), not with the local clock; packets we originate carry mesh time.
- Our own packets are not delivered back to us.
- A link is bound to a peer when that peer's own announce (ttl still at ``config.ttl``)
  arrives on it. ttl is not signed, so a neighbour could fake this; the binding only steers
  relay pruning and the neighbour list, never what is accepted.
- Breaker failures are ``SendResult.QUEUE_FULL``/``TOO_LARGE`` answers; the Transport
  interface has no write-timeout event, so a stalled BLE link shows up as a full queue.
"""

from .config import MeshConfig
from .router import DROP_REASONS, Delivered, Router
from .service import MeshNode

__all__ = ["DROP_REASONS", "Delivered", "MeshConfig", "MeshNode", "Router"]
