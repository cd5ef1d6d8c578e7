"""[uplink]: parsed like the other sections; a bad key or value names section and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ble_bridge.config import ConfigError
from ble_bridge.node import parse_node_config
from ble_bridge.uplink.config import UplinkConfig, parse_broker_url
from ble_bridge.wire.packet import PacketType

BASE = {"broker": "mqtt://127.0.0.1:1883", "mesh_id": "rooms"}


def uplink(**kw: object) -> UplinkConfig:
    cfg = parse_node_config({"uplink": {**BASE, **kw}}).uplink
    assert cfg is not None
    return cfg


def test_absent_section_means_no_uplink() -> None:
    assert parse_node_config({}).uplink is None


def test_defaults() -> None:
    cfg = uplink()
    assert cfg.frame_types == ("announce", "consensus")
    assert PacketType.MESSAGE not in cfg.packet_types  # BitChat chat off by default
    assert {PacketType.ANNOUNCE, PacketType.CONSENSUS} <= cfg.packet_types
    assert cfg.qos == 0 and cfg.priority == 0
    assert cfg.address.port == 1883 and not cfg.address.tls


def test_full_section(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    cfg = uplink(
        broker="mqtts://gw:pass@broker.example:8884",
        ca_file=str(tmp_path / "ca.pem"),
        cert_file=str(tmp_path / "c.pem"),
        key_file=str(tmp_path / "k.pem"),
        password_file=str(pw),
        topic_prefix="clubs/ble",
        qos=1,
        bytes_per_s=1000,
        frames_per_s=10,
        frame_types=["announce", "consensus", "chat"],
        priority=7,
    )
    assert cfg.address.tls and cfg.address.port == 8884 and cfg.address.host == "broker.example"
    assert cfg.credentials() == ("gw", "s3cret")
    assert PacketType.MESSAGE in cfg.packet_types
    assert cfg.bytes_per_s == 1000.0 and isinstance(cfg.bytes_per_s, float)


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ({"brokr": "x"}, "[uplink] has no setting 'brokr'"),
        ({"qos": "1"}, "[uplink] qos"),
        ({"qos": 2}, "qos"),
        ({"priority": 300}, "priority"),
        ({"frames_per_s": -1}, "frames_per_s"),
        ({"frame_types": ["consensus"]}, "announce"),
        ({"frame_types": ["announce", "tv"]}, "frame_types"),
        ({"broker": "http://x"}, "broker"),
        ({"broker": "mqtt://"}, "broker"),
        ({"broker": "mqtt://h:99999"}, "broker"),
        ({"mesh_id": "a/#"}, "mesh_id"),
        ({"topic_prefix": "a//b"}, "topic_prefix"),
        ({"ca_file": "/ca.pem"}, "mqtts"),
        ({"cert_file": "/c.pem", "broker": "mqtts://h"}, "key_file"),
        ({"link_timeout": 1.0}, "link_timeout"),
        ({"max_message_bytes": 2000, "max_frame": 4096}, "max_message_bytes"),
    ],
)
def test_bad_values_name_the_key(table: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_node_config({"uplink": {**BASE, **table}})
    assert needle in str(err.value)
    assert "uplink" in str(err.value)


@pytest.mark.parametrize("missing", ["broker", "mesh_id"])
def test_required_keys(missing: str) -> None:
    table = dict(BASE)
    del table[missing]
    with pytest.raises(ConfigError, match=f"\\[uplink\\] needs {missing}"):
        parse_node_config({"uplink": table})


def test_not_a_table() -> None:
    with pytest.raises(ConfigError, match="uplink"):
        parse_node_config({"uplink": 3})


def test_url_forms() -> None:
    a = parse_broker_url("mqtt://u%40x:p%3A@[::1]:1999")
    assert (a.host, a.port, a.username, a.password) == ("::1", 1999, "u@x", "p:")
    assert parse_broker_url("mqtts://h").port == 8883
