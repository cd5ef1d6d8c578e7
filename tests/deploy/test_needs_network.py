"""deploy/needs-network.sh: the installer adds the unit's network drop-in exactly when the
config has an [uplink] or a [metrics] section (the example config has both commented)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "needs-network.sh"


def needs(tmp_path: Path, text: str) -> bool:
    conf = tmp_path / "config.toml"
    conf.write_text(text)
    rc = subprocess.run(["bash", str(SCRIPT), str(conf)], check=False).returncode
    assert rc in (0, 1)
    return rc == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[node]\nnickname = "a"\n', False),
        ('[uplink]\nbroker = "mqtt://h"\nmesh_id = "m"\n', True),
        ('[node]\n\n[metrics]\nlisten = "127.0.0.1:9464"\n', True),
        ("  [metrics]   # on\n", True),
        ('# [uplink]\n# broker = "mqtt://h"\n', False),
        ("[uplinks]\n", False),
        ('[node]\nnickname = "[uplink]"\n', False),
    ],
)
def test_sections_that_need_ip_sockets(tmp_path: Path, text: str, expected: bool) -> None:
    assert needs(tmp_path, text) is expected


def test_the_example_config_needs_none() -> None:
    example = ROOT / "deploy" / "config.example.toml"
    rc = subprocess.run(["bash", str(SCRIPT), str(example)], check=False).returncode
    assert rc == 1
