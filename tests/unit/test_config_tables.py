from dataclasses import dataclass
from pathlib import Path

import pytest

from ble_bridge.config import ConfigError, apply_table, read_toml


@dataclass(frozen=True)
class Sample:
    ttl: int = 7
    window: float = 120.0
    name: str | None = None
    path: Path = Path("/var/lib/x")
    ids: tuple[str, ...] = ()


def test_table_overrides_fields_and_converts_types() -> None:
    s = apply_table(Sample(), {"ttl": 3, "window": 5, "path": "/tmp/y", "ids": ["a"]}, "mesh")
    assert s == Sample(ttl=3, window=5.0, path=Path("/tmp/y"), ids=("a",))
    assert isinstance(s.window, float)


def test_unknown_key_names_section_and_known_keys() -> None:
    with pytest.raises(ConfigError, match=r"\[mesh\] has no setting 'tll'.*ttl"):
        apply_table(Sample(), {"tll": 3}, "mesh")


@pytest.mark.parametrize("value", ["7", 7.5, True, None])
def test_wrong_type_is_refused(value: object) -> None:
    with pytest.raises(ConfigError, match=r"\[mesh\] ttl"):
        apply_table(Sample(), {"ttl": value}, "mesh")


def test_read_toml_reports_syntax_errors(tmp_path: Path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text("[mesh\nttl=")
    with pytest.raises(ConfigError, match=r"c\.toml"):
        read_toml(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        read_toml(tmp_path / "missing.toml")


@dataclass(frozen=True)
class Inner:
    limit: int = 10


@dataclass(frozen=True)
class Outer:
    inner: Inner = Inner()
    kinds: frozenset[int] = frozenset({1})
    bands: tuple[tuple[int, float], ...] = ((1, 0.5),)


def test_nested_tables_sets_and_nested_tuples() -> None:
    o = apply_table(
        Outer(), {"inner": {"limit": 3}, "kinds": [2, 3], "bands": [[4, 1], [5, 2.5]]}, "mesh"
    )
    assert o == Outer(Inner(3), frozenset({2, 3}), ((4, 1.0), (5, 2.5)))
    with pytest.raises(ConfigError, match=r"\[mesh\.inner\] has no setting 'limt'"):
        apply_table(Outer(), {"inner": {"limt": 3}}, "mesh")
    with pytest.raises(ConfigError, match="bands"):
        apply_table(Outer(), {"bands": [[4, 1, 2]]}, "mesh")
