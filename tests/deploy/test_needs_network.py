"""deploy/needs-network.sh: the installer adds the unit's network drop-in exactly when the
node opens IP sockets: an [uplink] section, or [metrics] with a listen address (the example
config has both commented). A [metrics] section without listen leaves metrics off, so it
needs no drop-in."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ble_bridge.config import read_toml
from ble_bridge.node import parse_node_config

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "needs-network.sh"


def run(conf: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), str(conf)], check=False, capture_output=True, text=True
    )


def needs(tmp_path: Path, text: str) -> bool:
    conf = tmp_path / "config.toml"
    conf.write_text(text)
    rc = run(conf).returncode
    assert rc in (0, 1)
    return rc == 0


CASES = [
    ('[node]\nnickname = "a"\n', False),
    ('[uplink]\nbroker = "mqtt://h"\nmesh_id = "m"\n', True),
    ('[node]\n\n[metrics]\nlisten = "127.0.0.1:9464"\n', True),
    ('  [metrics]   # on\nlisten = "[::1]:9464"\n', True),
    ("[metrics]\n", False),
    ("[metrics]\nmax_clients = 4\n", False),
    ('[metrics]\nlisten = ""\n', False),
    ('[metrics]\n# listen = "127.0.0.1:9464"\n', False),
    ('[node]\nnickname = "[metrics] listen = 0.0.0.0:1"\n', False),
    ('# [uplink]\n# broker = "mqtt://h"\n', False),
    ('[node]\nnickname = "[uplink]"\n', False),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_sections_that_need_ip_sockets(tmp_path: Path, text: str, expected: bool) -> None:
    assert needs(tmp_path, text) is expected


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_the_script_agrees_with_what_the_node_opens(
    tmp_path: Path, text: str, expected: bool
) -> None:
    """The node starts a MetricsServer only when metrics.listen is set and an uplink only
    when [uplink] parsed: the script's answer is the node's own config reading (cases the
    node would refuse to load are not among them)."""
    conf = tmp_path / "config.toml"
    conf.write_text(text)
    config = parse_node_config(read_toml(conf))
    opens_ip = config.uplink is not None or bool(config.metrics.listen)
    assert opens_ip is expected


def test_the_example_config_needs_none() -> None:
    assert run(ROOT / "deploy" / "config.example.toml").returncode == 1


def test_a_file_that_is_not_toml_is_an_error_not_a_no(tmp_path: Path) -> None:
    conf = tmp_path / "config.toml"
    conf.write_text("[metrics\nlisten = \n")
    done = run(conf)
    assert done.returncode == 2
    assert str(conf) in done.stderr
    assert run(tmp_path / "absent.toml").returncode == 2
