"""The assembled node (config → store, mesh, bridge, sessions) on the loopback air."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from ble_bridge import cli
from ble_bridge.air.clock import run_virtual
from ble_bridge.air.network import Network, NodeSpec
from ble_bridge.air.profiles import IDEAL
from ble_bridge.air.topology import full
from ble_bridge.config import ConfigError
from ble_bridge.control import request
from ble_bridge.node import Node, NodeConfig, parse_node_config, session_id_from_name
from ble_bridge.wire.identity import Identity

pytestmark = pytest.mark.timeout(120)


def _identities(n: int) -> list[Identity]:
    return [Identity.from_seed(b"node-test-%d" % i) for i in range(n)]


def _config(
    tmp: Path, index: int, validators: list[Identity], autoplay: bool = True, **node: object
) -> NodeConfig:
    doc = {
        "node": {"data_dir": str(tmp / f"n{index}"), "control_socket": "", **node},
        "mesh": {"nickname": f"pi-{index}"},
        "session": [
            {
                "name": "table-1",
                "validators": [v.signing_public.hex() for v in validators],
                "autoplay": autoplay,
            }
        ],
    }
    return parse_node_config(doc)


def test_config_rejects_unknown_sections_and_bad_validator_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown section"):
        parse_node_config({"nodes": {}})
    with pytest.raises(ConfigError, match="not hex"):
        parse_node_config({"session": [{"name": "t", "validators": ["zz"]}]})
    with pytest.raises(ConfigError, match="needs a name"):
        parse_node_config({"session": [{"validators": []}]})
    with pytest.raises(ConfigError, match="unknown app"):
        parse_node_config({"session": [{"name": "t", "app": "poker"}]})


def test_session_id_is_derived_from_the_name() -> None:
    assert session_id_from_name("table-1") == session_id_from_name("table-1")
    assert session_id_from_name("table-1") != session_id_from_name("table-2")
    assert len(session_id_from_name("x")) == 16


def _run_table(tmp: Path, n: int, seconds: float, nodes_out: list[Node]) -> None:
    ids = _identities(n)

    def factory(spec: NodeSpec) -> Node:
        node = Node(
            _config(tmp, spec.index, ids),
            identity=spec.identity,
            transport=spec.transport,
            rng=spec.rng,
            wall_offset=spec.wall_offset,
        )
        nodes_out.append(node)
        return node

    async def main() -> None:
        net = Network(full(n), IDEAL, factory, seed=7)
        net.identities[:] = ids  # the session's validators are these identities
        await net.start()
        await asyncio.sleep(seconds)
        await net.stop()

    run_virtual(main(), seed=7)


def test_four_configured_nodes_autoplay_and_agree(tmp_path: Path) -> None:
    nodes: list[Node] = []
    _run_table(tmp_path, 4, 60.0, nodes)
    sid = session_id_from_name("table-1")
    heights = [n.bridge.engine(sid).height for n in nodes]
    assert min(heights) >= 3, heights
    # every node's chain agrees at every height both stored
    ref = nodes[0]
    ref_store_blocks = {h: b for h, b, _ in _blocks(tmp_path / "n0")}
    for i in range(1, 4):
        for h, block, _ in _blocks(tmp_path / f"n{i}"):
            if h in ref_store_blocks:
                assert ref_store_blocks[h] == block
    assert ref.bridge.stats().committed_operations > 0


def _blocks(data_dir: Path) -> list[tuple[int, bytes, bytes]]:
    from ble_bridge.store import Store

    store = Store(data_dir / "state.sqlite3")
    try:
        return store.blocks_after(session_id_from_name("table-1"), 0)
    finally:
        store.close()


def test_restarted_node_resumes_from_its_sqlite_file(tmp_path: Path) -> None:
    nodes: list[Node] = []
    _run_table(tmp_path, 4, 30.0, nodes)
    sid = session_id_from_name("table-1")
    before = nodes[0].bridge.engine(sid).height
    assert before >= 2
    ids = _identities(4)
    again = Node(_config(tmp_path, 0, ids), identity=ids[0], transport=nodes[0].transport)
    try:
        assert again.bridge.engine(sid).height == before
        assert again.bridge.engine(sid).state_hash == nodes[0].bridge.engine(sid).state_hash
    finally:
        again.store.close()


def test_control_socket_answers_status_peers_and_submit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = _identities(1)
    sock = tmp_path / "ctl.sock"
    ready = threading.Event()
    done = threading.Event()
    errors: list[BaseException] = []

    async def serve() -> None:
        config = _config(tmp_path, 0, ids, autoplay=False, control_socket=str(sock))

        def factory(spec: NodeSpec) -> Node:
            return Node(config, identity=ids[0], transport=spec.transport, rng=spec.rng)

        net = Network(full(1), IDEAL, factory, seed=1)
        await net.start()
        ready.set()
        while not done.is_set():
            await asyncio.sleep(0.05)
        await net.stop()

    def thread_main() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # surfaced in the test thread
            errors.append(exc)
            ready.set()

    t = threading.Thread(target=thread_main, daemon=True)
    t.start()
    assert ready.wait(20)
    try:
        status = asyncio.run(request(sock, {"cmd": "status"}))
        assert status["ok"] and status["peer_id"] == ids[0].peer_id.hex()
        assert status["sessions"][0]["name"] == "table-1"
        bad = asyncio.run(request(sock, {"cmd": "nope"}))
        assert not bad["ok"] and "unknown cmd" in bad["error"]
        submitted = asyncio.run(request(sock, {"cmd": "submit", "session": "table-1", "op": "01"}))
        assert submitted["ok"], submitted
        op = asyncio.run(request(sock, {"cmd": "operation", "id": submitted["id"]}))
        assert op["ok"] and op["required_votes"] == 1
        assert cli.main(["status", "--socket", str(sock)]) == 0
        assert cli.main(["peers", "--socket", str(sock)]) == 0
        # the first Join commits; a second one is refused by the table and reported failed
        for _ in range(100):
            op = asyncio.run(request(sock, {"cmd": "operation", "id": submitted["id"]}))
            if op["status"] != "pending":
                break
            time.sleep(0.1)
        assert op["status"] == "committed", op
        assert cli.main(["submit", "table-1", "01", "--socket", str(sock), "--wait", "5"]) == 1
        assert '"already_joined"' in capsys.readouterr().out
    finally:
        done.set()
        t.join(20)
    assert not errors, errors


def test_status_of_a_missing_node_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["status", "--socket", str(tmp_path / "none.sock")]) == 1
    assert "cannot reach the node" in capsys.readouterr().err


def test_shipped_example_config_is_valid() -> None:
    from ble_bridge.node import load_node_config

    config = load_node_config(Path(__file__).parents[2] / "deploy" / "config.example.toml")
    assert config.node.board == "auto" and config.ble["adapter"] == "hci0"


def test_bench_command_refuses_unknown_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "nope"]) == 2
    assert "known: consensus, gatt, mesh, node, phones, uplink, wire" in capsys.readouterr().err


def test_session_id_may_be_given_explicitly_in_hex() -> None:
    sid = bytes(range(16))
    config = parse_node_config({"session": [{"name": "t", "id": sid.hex()}]})
    assert config.sessions[0].session_id == sid
    with pytest.raises(ConfigError, match="16 bytes"):
        parse_node_config({"session": [{"name": "t", "id": "abcd"}]})
    with pytest.raises(ConfigError, match="not hex"):
        parse_node_config({"session": [{"name": "t", "id": "zz"}]})


def test_node_without_a_store_path_keeps_state_in_memory_and_pins_peer_keys(
    tmp_path: Path,
) -> None:
    ids = _identities(2)
    built: list[Node] = []

    def factory(spec: NodeSpec) -> Node:
        node = Node(
            _config(tmp_path, spec.index, ids, autoplay=False),
            identity=ids[spec.index],
            transport=spec.transport,
            rng=spec.rng,
            store_path=None,
            peer_keys={i.peer_id: i.signing_public for i in ids},
        )
        built.append(node)
        return node

    async def main() -> None:
        net = Network(full(2), IDEAL, factory, seed=3)
        await net.start()
        await asyncio.sleep(5.0)
        assert not any(n._tasks for n in built), "nothing to do: no housekeeping task"
        await net.stop()

    run_virtual(main(), seed=3)
    assert all(n.store is None for n in built)
    assert not (tmp_path / "n0").exists() and not (tmp_path / "n1").exists()
    pinned = built[0].mesh.router.peers.get(ids[1].peer_id)
    assert pinned is not None and pinned.pinned and pinned.signing_key == ids[1].signing_public
    assert built[0].mesh.router.peers.get(ids[0].peer_id) is None, "never pins itself"
