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


_BAD = object()


def _coerce(tp: Any, value: Any) -> Any:
    """``value`` converted to type ``tp`` (TOML gives lists and numbers), or ``_BAD``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            out = _coerce(arg, value)
            if out is not _BAD:
                return out
        return _BAD
    if tp is type(None):
        return None if value is None else _BAD
    if tp is bool:
        return value if isinstance(value, bool) else _BAD
    if tp is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _BAD
    if tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return float(value) if ok else _BAD
    if tp is str:
        return value if isinstance(value, str) else _BAD
    if tp is Path:
        return Path(value) if isinstance(value, str) else _BAD
    if origin is typing.Literal:
        return value if value in args else _BAD
    if origin in (tuple, list, frozenset, set):
        if not isinstance(value, list | tuple):
            return _BAD
        if origin is tuple and args and (len(args) != 2 or args[1] is not Ellipsis):
            if len(args) != len(value):
                return _BAD
            items = [_coerce(a, v) for a, v in zip(args, value, strict=True)]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(item_tp, v) for v in value]
        if any(i is _BAD for i in items):
            return _BAD
        return origin(items)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, dict):
            return apply_table(tp(), value, tp.__name__)
        return _BAD
    if isinstance(tp, type):
        return value if isinstance(value, tp) else _BAD
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
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            changes[key] = apply_table(getattr(base, key), value, f"{section}.{key}")
            continue
        coerced = _coerce(tp, value)
        if coerced is _BAD:
            raise ConfigError(f"[{section}] {key} = {value!r} is not a valid {tp}")
        changes[key] = coerced
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
