"""The network consensus bridge: consensus engines of several sessions joined to one mesh node.

``NetworkConsensusBridge`` (service.py) is the asyncio service; its parts are sans-IO
modules of one job each (see the README's architecture section). The names other modules
use are re-exported here.
"""

from .config import BridgeConfig, BridgeError
from .contact import SessionHealth
from .pending import OperationStatus, PendingOperation, ProposalId
from .service import CommitHook, NetworkConsensusBridge
from .stats import BridgeStats, SessionStats

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
