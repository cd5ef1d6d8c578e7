"""``ble-bridge pair`` against a real ``ble-bridge run --transport sim`` process over its
control socket: --window prints a code, --status/--close, --wait on a timeout, --list and
--remove of an owner kept in the node's SQLite file across a restart, and clear refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sim_process import Running

from ble_bridge.cli import main
from ble_bridge.store import OwnerRecord, Store

pytestmark = pytest.mark.timeout(300)


def run(capsys: pytest.CaptureFixture[str], node: Running, *argv: str) -> tuple[int, str, str]:
    code = main(["pair", *argv, "--socket", str(node.sock)])
    out, err = capsys.readouterr()
    return code, out, err


def test_pair_window_status_close_list_remove(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = Running(tmp_path, sim_peers=1)
    node.start()
    try:
        code, out, _ = run(capsys, node, "--window", "60")
        assert code == 0, out
        digits = out.split()[2]
        assert out.startswith("pairing code ") and len(digits) == 6 and digits.isdigit()
        assert f"!pair {digits}" in out
        code, out, _ = run(capsys, node, "--status", "--json")
        s = json.loads(out)
        assert code == 0 and s["open"] and s["code"] == digits and 0 < s["remaining_s"] <= 60
        code, out, err = run(capsys, node, "--window", "0")
        assert code == 2 and err.startswith("ble-bridge pair: window must be") and out == ""
        code, out, _ = run(capsys, node, "--close")
        assert (code, out) == (0, "window closed\n")
        code, out, _ = run(capsys, node, "--status")
        assert code == 0 and out.startswith("no window open (last: closed)")
        code, out, _ = run(capsys, node, "--window", "1", "--wait")
        assert code == 1 and "window closed: timeout" in out
        code, out, _ = run(capsys, node, "--list")
        assert (code, out) == (0, "no owners, no bonded devices\n")
        code, _, err = run(capsys, node, "--remove", "abc")
        assert code == 2 and "8 or more hex digits" in err
        code, _, err = run(capsys, node, "--remove", "00112233")
        assert code == 2 and "no owner 00112233" in err
        code, _, err = run(capsys, node, "--remove", "02:B1:0E:00:00:09")
        assert code == 2 and "no bonded device" in err  # the sim transport has no BlueZ
        node.stop()
        # an owner in the node's SQLite file (as !pair leaves it) is there after a restart
        key = bytes(range(32))
        store = Store(node.data / "state.sqlite3")
        assert store.add_owner(OwnerRecord(key, bytes(32), "alice", 1.8e9, "dm"), 8)
        store.close()
        node.start()
        code, out, _ = run(capsys, node, "--list")
        assert code == 0 and out.startswith(f"owner  {key.hex()[:16]}  alice")
        code, out, _ = run(capsys, node, "--list", "--json")
        assert [o["id"] for o in json.loads(out)["owners"]] == [key.hex()]
        code, out, _ = run(capsys, node, "--remove", key.hex()[:8])
        assert (code, out) == (0, f"removed {key.hex()}\n")
        code, out, _ = run(capsys, node, "--list")
        assert out == "no owners, no bonded devices\n"
        err_text = node.stop().decode()
        assert "Traceback" not in err_text
    finally:
        node.kill()


def test_unreachable_node_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["pair", "--list", "--socket", str(tmp_path / "none.sock")])
    assert code == 1
    assert "cannot reach the node" in capsys.readouterr().err
