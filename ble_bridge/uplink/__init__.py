"""Gateways that join BLE islands through an MQTT broker (issue 19; see the README's uplink).

``config`` (the ``[uplink]`` section), ``wire`` (topics and message layout), ``core``
(the sans-IO gateway), ``composite`` (radio + uplink as one transport) and ``service``
(the asyncio transport over aiomqtt, imported only when a node has an uplink).
"""

from .composite import CompositeTransport
from .config import UplinkConfig
from .core import GatewayCore

__all__ = ["CompositeTransport", "GatewayCore", "UplinkConfig"]
