"""The network consensus bridge: consensus engines of several sessions joined to one mesh node.

``NetworkConsensusBridge`` (service.py) is the asyncio service; the names other modules
use are re-exported here.
"""

from .service import (
    BridgeConfig,
    BridgeError,
    BridgeStats,
    CommitHook,
    NetworkConsensusBridge,
    OperationStatus,
    PendingOperation,
    ProposalId,
    SessionHealth,
    SessionStats,
)

__all__ = [
    "BridgeConfig",
    "BridgeError",
    "BridgeStats",
    "CommitHook",
    "NetworkConsensusBridge",
    "OperationStatus",
    "PendingOperation",
    "ProposalId",
    "SessionHealth",
    "SessionStats",
]
