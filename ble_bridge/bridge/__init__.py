"""The network consensus bridge: consensus engines of several sessions joined to one mesh node.

``BridgeCore`` (core.py) is the sans-IO bridge, composed of parts of one job each (inbox,
pending, announce, contact, policy, pacing, compact; one ``Session`` per session);
``NetworkConsensusBridge`` (service.py) is the thin asyncio service that feeds it. The
names other modules use are re-exported here.
"""

from .config import BridgeConfig, BridgeError
from .contact import SessionHealth
from .core import BridgeCore, OutputFilter
from .pending import OperationStatus, PendingOperation, ProposalId
from .service import CommitHook, NetworkConsensusBridge
from .stats import BridgeStats, SessionStats

__all__ = [
    "BridgeConfig",
    "BridgeCore",
    "BridgeError",
    "BridgeStats",
    "CommitHook",
    "NetworkConsensusBridge",
    "OperationStatus",
    "OutputFilter",
    "PendingOperation",
    "ProposalId",
    "SessionHealth",
    "SessionStats",
]
