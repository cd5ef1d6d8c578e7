"""``[metrics]``: a status document as Prometheus families, and the bounded listener."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ble_bridge.config import ConfigError
from ble_bridge.metrics import MAX_REQUEST, MetricsConfig, MetricsServer, exposition
from ble_bridge.node import parse_node_config

STATUS: dict[str, Any] = {
    "peer_id": "aa" * 8,
    "health": "healthy",
    "links": [
        {
            "link_id": 1,
            "peer": "hci0/AA",
            "role": "central",
            "frames_in": 5,
            "bytes_in": 50,
            "frames_out": 6,
            "bytes_out": 60,
            "send_failures": 1,
        },
        {
            "link_id": 7,
            "peer": "mqtt:" + "bb" * 8,
            "role": "uplink",
            "frames_in": 9,
            "bytes_in": 900,
            "frames_out": 3,
            "bytes_out": 300,
            "send_failures": 0,
        },
        {"link_id": 8, "peer": "hci0/CC", "role": "peripheral"},  # not identified yet
    ],
    "mesh": {"frames_in": 14, "bad_signature": 2, "links": 3, "seen_entries": 40},
    "sessions": [{"name": "t", "height": 12, "round": 1}, {"name": "bad", "height": "x"}],
    "uplink": {
        "connected": True,
        "rtt_ms": 2.5,
        "queued_frames": 4,
        "stats": {"connects": 2, "oversized": 1, "frames_in": 9},
        "gateways": [
            {
                "peer_id": "bb" * 8,
                "messages_in": 3,
                "frames_in": 9,
                "bytes_in": 900,
                "frames_out": 3,
                "bytes_out": 300,
                "seq_gaps": 0,
                "drops": {"seen": 4},
            },
        ],
    },
}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_families_of_a_status_document() -> None:
    got = samples(exposition(lambda: STATUS).decode())
    up = (("link", "7"), ("peer", "mqtt:" + "bb" * 8), ("role", "uplink"))
    assert got[("ble_bridge_link_frames_in_total", up)] == 9
    assert got[("ble_bridge_link_bytes_out_total", up)] == 300
    radio = (("link", "1"), ("peer", "hci0/AA"), ("role", "central"))
    assert got[("ble_bridge_link_send_failures_total", radio)] == 1
    assert not any(k[0].startswith("ble_bridge_link_") and ("link", "8") in k[1] for k in got)
    assert got[("ble_bridge_links", (("role", "uplink"),))] == 1
    assert got[("ble_bridge_links", (("role", "central"),))] == 1
    assert got[("ble_bridge_mesh_events_total", (("event", "bad_signature"),))] == 2
    assert got[("ble_bridge_mesh_level", (("name", "seen_entries"),))] == 40
    assert ("ble_bridge_mesh_events_total", (("event", "links"),)) not in got
    assert got[("ble_bridge_session_height", (("session", "t"),))] == 12
    assert ("ble_bridge_session_height", (("session", "bad"),)) not in got
    assert got[("ble_bridge_uplink_connected", ())] == 1
    assert got[("ble_bridge_uplink_rtt_seconds", ())] == pytest.approx(0.0025)
    assert got[("ble_bridge_uplink_events_total", (("event", "oversized"),))] == 1
    gw = (("gateway", "bb" * 8),)
    assert got[("ble_bridge_uplink_gateway_frames_in_total", gw)] == 9
    assert got[("ble_bridge_uplink_gateway_drops_total", (*gw, ("reason", "seen")))] == 4
    assert got[("ble_bridge_node_info", (("health", "healthy"), ("peer_id", "aa" * 8)))] == 1


def test_no_uplink_no_uplink_families() -> None:
    text = exposition(lambda: {**STATUS, "uplink": None}).decode()
    assert "ble_bridge_uplink" not in text
    assert "ble_bridge_link_frames_in_total" in text


def test_config_section() -> None:
    assert parse_node_config({}).metrics.listen == ""
    cfg = parse_node_config({"metrics": {"listen": "127.0.0.1:9464"}})
    assert cfg.metrics.listen == "127.0.0.1:9464"
    assert MetricsConfig(listen="[::1]:9464").listen == "[::1]:9464"
    for bad in ("9464", "host:", "host:99999", ":80"):
        with pytest.raises(ConfigError, match="listen"):
            parse_node_config({"metrics": {"listen": bad}})
    with pytest.raises(ConfigError, match="no setting"):
        parse_node_config({"metrics": {"port": 1}})


async def ask(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 30)
    except ConnectionResetError:  # closed with our request unread
        return b""
    finally:
        writer.close()


def test_server_answers_and_refuses() -> None:
    calls = 0

    def status() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return STATUS

    async def main() -> None:
        server = MetricsServer(MetricsConfig(listen="127.0.0.1:0", max_clients=2), status)
        await server.start()
        port = server.address[1]
        try:
            ok = await ask(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            head, _, body = ok.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and b"text/plain; version=0.0.4" in head
            assert b"ble_bridge_link_frames_in_total" in body and calls == 1
            assert (await ask(port, b"GET / HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")
            assert (await ask(port, b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405")
            assert (await ask(port, b"garbage\r\n\r\n")).startswith(b"HTTP/1.1 400")
            assert await ask(port, b"GET /metrics HTTP/1.1\r\n" + b"X" * 2 * MAX_REQUEST) == b""
            # two silent clients hold both slots: a third is closed at once
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
            await asyncio.sleep(0.2)
            assert await ask(port, b"GET /metrics HTTP/1.1\r\n\r\n") == b""
            for _, w in held:
                w.close()
            await asyncio.sleep(0.2)
            assert (await ask(port, b"GET /metrics HTTP/1.0\r\n\r\n")).startswith(b"HTTP/1.1 200")
            assert server.stats["scrapes"] == 2 and server.stats["refused_busy"] == 1
            assert server.stats["not_found"] == 1 and server.stats["bad_method"] == 1
            assert server.stats["bad_request"] >= 2
        finally:
            await server.stop()

    asyncio.run(main())


def test_a_failing_status_is_counted_and_the_listener_lives() -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("boom")

    async def main() -> None:
        server = MetricsServer(MetricsConfig(listen="127.0.0.1:0"), broken)
        await server.start()
        try:
            port = server.address[1]
            assert await ask(port, b"GET /metrics HTTP/1.1\r\n\r\n") == b""
            assert server.stats["internal_error"] == 1
            server.status = lambda: STATUS
            assert (await ask(port, b"GET /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 200")
        finally:
            await server.stop()

    asyncio.run(main())
