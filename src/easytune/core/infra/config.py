"""Typed configuration: dataclasses validated when they are built, at every level, with one message per problem.

Every core component takes a dataclass config, declared once. Building one from a parameter dict -- with
:func:`from_dict`, or by ``cls(**raw)`` for a top-level parameter group marked with :func:`parameter_group` (that
is how Kedro instantiates a node's annotated ``params:`` input before the run) -- checks, at every nesting level:

- unknown keys (the message lists the valid ones);
- types (ints are accepted for float fields, floats such as ``1e26`` are refused for int fields, and every int is
  within signed 64 bits; nested dataclasses come from nested dicts; ``Literal`` enums);
- ranges declared next to the field with ``Annotated``: ``lr: Annotated[float, POSITIVE] = 1e-5``; a range of a
  list field applies to every item; ``None`` is never range-checked (``int | None`` means "off" or "default");
- the class's own ``__post_init__`` checks (their message is prefixed with the parameter path).

A failure raises :class:`ConfigError` naming the parameter path, the value and what is allowed, e.g.
``finetune.common.num_steps = 0: must be >= 1``.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A parameter dict does not match its dataclass (unknown key, wrong type, value out of range)."""


@dataclasses.dataclass(frozen=True)
class Range:
    """Allowed values of a number (of every item, for a list field): lower bound ``gt``/``ge``, upper ``lt``/``le``."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def allows(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        return ((self.gt is None or value > self.gt) and (self.ge is None or value >= self.ge)
                and (self.lt is None or value < self.lt) and (self.le is None or value <= self.le))

    def __str__(self) -> str:
        low = f"> {_num(self.gt)}" if self.gt is not None else f">= {_num(self.ge)}" if self.ge is not None else ""
        high = f"< {_num(self.lt)}" if self.lt is not None else f"<= {_num(self.le)}" if self.le is not None else ""
        if low and high:
            left = "(" if self.gt is not None else "["
            right = ")" if self.lt is not None else "]"
            lo = self.gt if self.gt is not None else self.ge
            hi = self.lt if self.lt is not None else self.le
            return f"in {left}{_num(lo)}, {_num(hi)}{right}"
        return low or high or "any number"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


POSITIVE = Range(gt=0)          #: > 0 (learning rates, scales, temperatures)
NON_NEGATIVE = Range(ge=0)      #: >= 0 (weights, counts where 0 means "off", seeds)
AT_LEAST_1 = Range(ge=1)        #: >= 1 (steps, batch sizes, sizes)
AT_LEAST_2 = Range(ge=2)        #: >= 2 (contrastive batches: a positive needs a negative)
FRACTION = Range(ge=0, le=1)    #: in [0, 1] (probabilities, dropout, fractions)
BETA = Range(ge=0, lt=1)        #: in [0, 1) (Adam betas)
SEED = Range(ge=0, le=2**32 - 1)        #: a random seed (numpy's legacy seeding takes 0..2**32-1)
SAMPLING_STEPS = Range(ge=1, le=1000)   #: sampling steps of a diffusion sampler (at most its 1,000 training steps)
UPDATES = Range(ge=1, le=10**9)         #: optimizer updates / training steps of a run

#: every int parameter is within signed 64 bits (torch, numpy and the checkpoints store int64)
INT64_MAX = 2**63 - 1

#: the parameter path of the dataclass being built (set by from_dict for nested levels)
_WHERE: contextvars.ContextVar[str | None] = contextvars.ContextVar("easytune_config_where", default=None)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _is_union(origin: Any) -> bool:
    return origin in (typing.Union, types.UnionType)


def _convert(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        converted = _convert(value, args[0], where)
        for rule in args[1:]:
            if isinstance(rule, Range):
                _check_range(converted, rule, where)
        return converted
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} = {value!r}: expected a mapping of {annotation.__name__} fields")
        return from_dict(annotation, value, where=where)
    if _is_union(origin):
        if value is None and type(None) in args:
            return None
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:
            return _convert(value, members[0], where)
        last_error: Exception | None = None
        for arg in members:
            try:
                return _convert(value, arg, where)
            except (ConfigError, TypeError, ValueError) as exc:  # try the next member of the union
                last_error = exc
        raise ConfigError(f"{where} = {value!r}: does not match {annotation}") from last_error
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} = {value!r}: expected a list")
        item_type = args[0] if args else Any
        items = [_convert(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} = {value!r}: expected a mapping")
        return dict(value)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where} = {value!r}: must be one of {list(args)}")
        return value
    if annotation is Any or annotation is object:
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} = {value!r}: expected a number")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            hint = " (a whole number, without an exponent or a decimal point)" if isinstance(value, float) else ""
            raise ConfigError(f"{where} = {value!r}: expected an integer{hint}")
        if not -INT64_MAX - 1 <= value <= INT64_MAX:
            raise ConfigError(f"{where} = {value!r}: must be within 64-bit integers (|value| < 2**63)")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} = {value!r}: expected true or false")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} = {value!r}: expected a string")
        return value
    return value


def _check_range(value: Any, rule: Range, where: str) -> None:
    if value is None:
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_range(item, rule, f"{where}[{i}]")
        return
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not rule.allows(value):
        raise ConfigError(f"{where} = {value!r}: must be {rule}")


def _checked_kwargs(cls: type, params: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``params`` converted field by field (unknown keys, types, ranges, nested dataclasses)."""
    if not isinstance(params, Mapping):
        raise ConfigError(f"{where} = {params!r}: expected a mapping of {cls.__name__} fields")
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(params) - fields, key=str)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(fields)}")
    hints = _hints(cls)
    return {name: _convert(value, hints[name], f"{where}.{name}") for name, value in params.items()}


def _construct(cls: type, init, self_or_none, kwargs: dict[str, Any], where: str):
    """Run the dataclass ``__init__`` (and ``__post_init__``); its errors are prefixed with ``where``."""
    try:
        if self_or_none is None:
            return cls(**kwargs)
        init(self_or_none, **kwargs)
        return self_or_none
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # a missing required field, or a __post_init__ check
        raise ConfigError(f"{where}: {exc}") from exc


def from_dict(cls: type[T], params: Mapping[str, Any] | T | None, *, where: str | None = None) -> T:
    """Build dataclass ``cls`` from ``params`` (a mapping; an instance of ``cls`` is returned as it is).

    Unknown keys, wrong types and out-of-range values raise :class:`ConfigError` naming the parameter path
    (``where``, default: the class's parameter group or name); missing keys take the dataclass defaults.
    """
    if isinstance(params, cls):
        return params
    where = where or getattr(cls, "parameter_group", None) or cls.__name__
    params = {} if params is None else params
    if getattr(cls, "_validated_init", False):
        token = _WHERE.set(where)
        try:
            return cls(**_checked_mapping(params, cls, where))
        finally:
            _WHERE.reset(token)
    return _construct(cls, None, None, _checked_kwargs(cls, params, where), where)


def _checked_mapping(params: Any, cls: type, where: str) -> Mapping[str, Any]:
    if not isinstance(params, Mapping):
        raise ConfigError(f"{where} = {params!r}: expected a mapping of {cls.__name__} fields")
    return params


def parameter_group(key: str):
    """Class decorator for the dataclass of the top-level parameter group ``params:<key>``.

    ``cls(**raw)`` then validates like ``from_dict(cls, raw, where=key)`` -- unknown keys, types and ranges at
    every level -- so a node argument annotated with ``cls`` is validated and converted by Kedro before any node
    runs (``kedro.validation``: stdlib dataclasses are built with ``cls(**raw)``).
    """

    def wrap(cls: type[T]) -> type[T]:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"@parameter_group({key!r}) must decorate a dataclass (put it above @dataclass)")
        original = cls.__init__

        @functools.wraps(original)
        def __init__(self, **kwargs: Any) -> None:
            where = _WHERE.get() or key
            token = _WHERE.set(None)  # nested levels get their own path from from_dict
            try:
                _construct(cls, original, self, _checked_kwargs(cls, kwargs, where), where)
            finally:
                _WHERE.reset(token)

        cls.__init__ = __init__
        cls.parameter_group = key
        cls._validated_init = True
        return cls

    return wrap


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested dict of a dataclass config (for checkpoints and logging)."""
    return dataclasses.asdict(config)


def with_overrides(config: T, **overrides: Any) -> T:
    """Copy of ``config`` with top-level fields replaced (validated like :func:`from_dict`)."""
    merged = to_dict(config)
    merged.update(overrides)
    return from_dict(type(config), merged)


# ------------------------------------------------------------------------------- shared parameter groups
class _ReadByKey:
    """``config["field"]`` reads a field: nodes written against the parameter dict work with the validated
    dataclass Kedro now passes them, and with a plain dict in tests that build a catalog by hand."""

    def __getitem__(self, name: str) -> Any:
        if name not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(name)
        return getattr(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in {f.name for f in dataclasses.fields(self)} else default


@dataclasses.dataclass
class DistributedOptions(_ReadByKey):
    """``params:runtime.distributed``: ``nproc_per_node`` > 1 runs each fine-tuning in that many local workers
    (torch's elastic launcher; one GPU each on CUDA, gloo on CPU) and keeps rank 0's result; ``auto`` = every GPU."""

    nproc_per_node: int | str = 1

    def __post_init__(self) -> None:
        if not (self.nproc_per_node == "auto" or (isinstance(self.nproc_per_node, int) and self.nproc_per_node >= 1)):
            raise ConfigError(f"runtime.distributed.nproc_per_node = {self.nproc_per_node!r}: must be 'auto' or an "
                              f"integer >= 1")


@parameter_group("runtime")
@dataclasses.dataclass
class RuntimeConfig(_ReadByKey):
    """``params:runtime``: ``device`` (``auto`` = CUDA when present, else CPU; ``cpu``; ``cuda``; ``cuda:N``;
    ``mps``), the run's ``seed`` (python, numpy and torch generators; part of every resume key) and ``threads``:
    torch's intra-op threads for the run (``auto`` = the cores this process may use)."""

    device: str = "auto"
    seed: Annotated[int, SEED] = 1234
    threads: int | str = "auto"
    distributed: DistributedOptions = dataclasses.field(default_factory=DistributedOptions)

    def __post_init__(self) -> None:
        if not (self.threads == "auto" or (isinstance(self.threads, int) and self.threads >= 1)):
            raise ConfigError(f"runtime.threads = {self.threads!r}: must be 'auto' or an integer >= 1")
        head, _, index = self.device.partition(":")
        if head not in ("auto", "cpu", "cuda", "mps") or (index and (head != "cuda" or not index.isdigit())):
            raise ConfigError(f"runtime.device = {self.device!r}: must be one of 'auto', 'cpu', 'cuda', "
                              f"'cuda:<index>', 'mps'")


@parameter_group("dataset")
@dataclasses.dataclass
class DatasetConfig(_ReadByKey):
    """``params:dataset``: which skeleton the motions use (``humanml3d``: 22 joints, 263-d features; ``kit``: 21
    joints, 251-d) and their frame rate."""

    skeleton: Literal["humanml3d", "kit"] = "humanml3d"
    fps: Annotated[float, POSITIVE] = 20.0
