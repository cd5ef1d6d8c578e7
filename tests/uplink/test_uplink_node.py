"""A node whose config has [uplink]: its status, peers and CLI show the uplink link."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ble_bridge import cli
from ble_bridge.air.network import Network, NodeSpec
from ble_bridge.air.profiles import IDEAL
from ble_bridge.air.topology import full
from ble_bridge.control import request
from ble_bridge.node import Node, parse_node_config
from ble_bridge.uplink.mosquitto import Mosquitto, free_port
from ble_bridge.wire.identity import Identity


def test_gateway_nodes_from_config_link_through_the_broker(
    tmp_path: Path, mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [Identity.from_seed(bytes([40 + i]) * 32) for i in range(2)]
    sock = tmp_path / "ctl.sock"
    ready, done = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    nodes: list[Node] = []
    metrics_port = free_port()

    def config(i: int) -> dict[str, object]:
        return {
            "metrics": {"listen": f"127.0.0.1:{metrics_port}"} if i == 0 else {},
            "node": {
                "data_dir": str(tmp_path / f"n{i}"),
                "control_socket": str(sock) if i == 0 else "",
            },
            "session": [{"name": "t", "validators": [v.signing_public.hex() for v in ids]}],
            "uplink": {"broker": mosquitto.url, "mesh_id": "node-test", "priority": 3},
        }

    async def serve() -> None:
        nets = []
        for i in range(2):
            cfg = parse_node_config(config(i))

            def factory(spec: NodeSpec, cfg=cfg, i=i) -> Node:  # type: ignore[no-untyped-def]
                node = Node(cfg, identity=ids[i], transport=spec.transport, rng=spec.rng)
                nodes.append(node)
                return node

            net = Network(full(1), IDEAL, factory, seed=i + 1)
            await net.start()
            nets.append(net)
        ready.set()
        while not done.is_set():
            await asyncio.sleep(0.05)
        for net in nets:
            await net.stop()

    def thread_main() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:
            errors.append(exc)
            ready.set()

    t = threading.Thread(target=thread_main, daemon=True)
    t.start()
    assert ready.wait(30)
    try:
        status: dict[str, object] = {}
        submitted = False
        for _ in range(600):  # two validators on two "islands": they commit only together
            status = asyncio.run(request(sock, {"cmd": "status"}))
            if not submitted and status["links"]:
                join = asyncio.run(request(sock, {"cmd": "submit", "session": "t", "op": "01"}))
                submitted = bool(join["ok"])
            sessions = status["sessions"]
            assert isinstance(sessions, list)
            if sessions[0]["height"] >= 1:
                break
            asyncio.run(asyncio.sleep(0.1))
        assert status["sessions"][0]["height"] >= 1, status["uplink"]  # type: ignore[index]
        uplink = status["uplink"]
        assert isinstance(uplink, dict) and uplink["connected"]
        (gw,) = uplink["gateways"]
        assert gw["peer_id"] == ids[1].peer_id.hex() and gw["priority"] == 3
        assert gw["frames_in"] > 0 and gw["frames_out"] > 0
        links = status["links"]
        assert isinstance(links, list)
        assert [li["role"] for li in links] == ["uplink"]
        assert links[0]["peer"] == "mqtt:" + ids[1].peer_id.hex()
        # the uplink link has the router's own counters, like a radio link
        assert links[0]["peer_id"] == ids[1].peer_id.hex()
        assert links[0]["frames_in"] > 0 and links[0]["frames_out"] > 0
        assert links[0]["bytes_in"] > 0 and links[0]["bytes_out"] > 0
        # ... and so it is in the metrics, with the uplink's own counters
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as reply:
            assert reply.status == 200
            text = reply.read().decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
        }
        peer = "mqtt:" + ids[1].peer_id.hex()
        link_labels = (("link", str(links[0]["link_id"])), ("peer", peer), ("role", "uplink"))
        assert samples[("ble_bridge_link_frames_in_total", link_labels)] > 0
        assert samples[("ble_bridge_link_frames_out_total", link_labels)] > 0
        assert samples[("ble_bridge_links", (("role", "uplink"),))] == 1
        assert samples[("ble_bridge_uplink_connected", ())] == 1
        gw_labels = (("gateway", ids[1].peer_id.hex()),)
        assert samples[("ble_bridge_uplink_gateway_frames_in_total", gw_labels)] > 0
        assert samples[("ble_bridge_uplink_events_total", (("event", "connects"),))] >= 1
        assert samples[("ble_bridge_session_height", (("session", "t"),))] >= 1
        capsys.readouterr()
        assert cli.main(["status", "--socket", str(sock)]) == 0
        out = capsys.readouterr().out
        assert "uplink 127.0.0.1:" in out and "connected" in out and "1/1 remote gateways" in out
        assert f"link {links[0]['link_id']} uplink {peer}: in " in out
        assert cli.main(["peers", "--socket", str(sock), "--json"]) == 0
        peers = json.loads(capsys.readouterr().out)
        (row,) = [p for p in peers if p["peer_id"] == ids[1].peer_id.hex()]
        assert row["via"] == ["uplink"]
    finally:
        done.set()
        t.join(30)
    assert not errors, errors
