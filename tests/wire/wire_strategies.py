"""Hypothesis strategies for wire packets, shared by the wire tests."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from ble_bridge.wire.packet import Packet, deflate_raw

ids = st.binary(min_size=8, max_size=8)
payloads = st.one_of(
    st.binary(max_size=600),
    st.text(max_size=300).map(lambda t: t.encode("utf-8")),
    st.builds(lambda b, n: b * n, st.binary(min_size=1, max_size=8), st.integers(1, 200)),
)


@st.composite
def packets(draw: st.DrawFn, compression: bool = True) -> Packet:
    """Random v1/v2 packets with optional recipient, route, signature, compression, rsr."""
    version = draw(st.sampled_from([1, 2]))
    payload = draw(payloads)
    p = Packet(
        type=draw(st.integers(0, 255)),
        sender=draw(ids),
        payload=payload,
        timestamp=draw(st.integers(0, (1 << 64) - 1)),
        ttl=draw(st.integers(0, 255)),
        version=version,
        recipient=draw(st.none() | ids),
        route=tuple(draw(st.lists(ids, max_size=4))) if version == 2 else (),
        signature=draw(st.none() | st.binary(min_size=64, max_size=64)),
        rsr=draw(st.booleans()),
    )
    mode = draw(st.sampled_from(["none", "rule", "force"])) if compression else "none"
    if mode == "rule":
        p = p.compress()
    elif mode == "force" and payload:
        p = Packet(
            p.type,
            p.sender,
            p.payload,
            p.timestamp,
            p.ttl,
            p.version,
            p.recipient,
            p.route,
            p.signature,
            deflate_raw(payload),
            p.rsr,
        )
    return p


# Applied per test (not as a global profile, which would change other suites' settings):
# no deadlines on a shared, busy machine.
WIRE = settings(
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
