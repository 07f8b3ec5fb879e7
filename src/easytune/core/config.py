"""Typed configuration: build frozen-ish dataclasses from parameter dicts, rejecting unknown keys.

Every core component takes a dataclass config. Kedro nodes turn their ``params:`` dicts into these with
:func:`from_dict`, so a misspelt key fails loudly with the list of valid keys instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A parameter dict does not match its dataclass (unknown key, wrong type, bad value)."""


def _resolve_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _convert(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {annotation.__name__}, got {type(value).__name__}")
        return from_dict(annotation, value, where=where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        last_error: Exception | None = None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except (ConfigError, TypeError, ValueError) as exc:  # try the next member of the union
                last_error = exc
        raise ConfigError(f"{where}: {value!r} does not match {annotation}") from last_error
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} ({value!r})")
        item_type = args[0] if args else Any
        items = [_convert(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if annotation is Any or annotation is object:
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], params: dict[str, Any] | None, *, where: str | None = None) -> T:
    """Build dataclass ``cls`` from ``params``; unknown keys raise :class:`ConfigError` naming the valid ones.

    Nested dataclass fields accept nested dicts; missing keys take the dataclass defaults; ints are accepted
    for float fields; ``__post_init__`` validation of the dataclass runs as usual.
    """
    where = where or cls.__name__
    params = dict(params or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(fields)}")
    hints = _resolve_types(cls)
    kwargs = {name: _convert(value, hints[name], f"{where}.{name}") for name, value in params.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{where}: {exc}") from exc


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a dataclass config (for checkpoints and logging)."""
    return dataclasses.asdict(config)


def with_overrides(config: T, **overrides: Any) -> T:
    """Copy of ``config`` with top-level fields replaced (validated like :func:`from_dict`)."""
    merged = to_dict(config)
    merged.update(overrides)
    return from_dict(type(config), merged)
