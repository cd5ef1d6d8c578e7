"""TOML configuration: one file, every tunable with a default, validated on load.

Sections map onto the config dataclasses of the layers (``[mesh]`` onto the router's
``MeshConfig``, ``[consensus]`` onto the engine's config, ...): a key that is not a field,
or a value of the wrong type, is an error that names the section and key.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """The configuration file is unreadable or has an unknown key or a bad value."""


def _accepts(tp: Any, value: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(arg, value) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is Path:
        return isinstance(value, str)
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            return False
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return all(_accepts(args[0], v) for v in value)
        if origin is list and args:
            return all(_accepts(args[0], v) for v in value)
        return True
    if typing.get_origin(tp) is typing.Literal:
        return value in typing.get_args(tp)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def _convert(tp: Any, value: Any) -> Any:
    if tp is float and isinstance(value, int):
        return float(value)
    if tp is Path or (
        typing.get_origin(tp) in (typing.Union, types.UnionType) and Path in typing.get_args(tp)
    ):
        return Path(value) if isinstance(value, str) else value
    if typing.get_origin(tp) is tuple and isinstance(value, list):
        return tuple(value)
    return value


def apply_table(base: T, table: Mapping[str, Any], section: str) -> T:
    """A copy of dataclass ``base`` with ``table``'s keys applied, type-checked by field."""
    if not dataclasses.is_dataclass(base) or isinstance(base, type):
        raise TypeError("base must be a dataclass instance")
    hints = typing.get_type_hints(type(base))
    names = {f.name for f in dataclasses.fields(base) if f.init and not f.name.startswith("_")}
    changes: dict[str, Any] = {}
    for key, value in table.items():
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"[{section}] has no setting {key!r}; known: {known}")
        tp = hints[key]
        if not _accepts(tp, value):
            raise ConfigError(f"[{section}] {key} = {value!r} is not a valid {tp}")
        changes[key] = _convert(tp, value)
    try:
        return dataclasses.replace(base, **changes)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{section}] {exc}") from exc


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, turning every failure into a :class:`ConfigError`."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} does not exist") from exc
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
