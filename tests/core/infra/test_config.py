from dataclasses import dataclass, field
from typing import Annotated, Literal

import pytest

from easytune.core.infra.config import (
    AT_LEAST_1,
    BETA,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    ConfigError,
    DatasetConfig,
    RuntimeConfig,
    from_dict,
    parameter_group,
    to_dict,
)


@dataclass
class Inner:
    width: int = 4
    rate: float = 0.1


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    steps: list[int] = field(default_factory=list)
    device: str | None = None


def test_builds_nested_and_converts_numbers():
    cfg = from_dict(Outer, {"inner": {"width": 8, "rate": 1}, "steps": [1, 2]})
    assert cfg.inner.width == 8 and cfg.inner.rate == 1.0 and isinstance(cfg.inner.rate, float)
    assert to_dict(cfg)["inner"] == {"width": 8, "rate": 1.0}


def test_unknown_key_names_the_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['widht'\].*valid keys are \['rate', 'width'\]"):
        from_dict(Outer, {"inner": {"widht": 3}})


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="expected an integer"):
        from_dict(Inner, {"width": "wide"})
    with pytest.raises(ConfigError, match="expected an integer"):
        from_dict(Inner, {"width": True})


@dataclass
class Ranged:
    lr: Annotated[float, POSITIVE] = 1e-3
    steps: Annotated[int | None, AT_LEAST_1] = None
    p: Annotated[float, FRACTION] = 0.5
    betas: Annotated[list[float], BETA] = field(default_factory=lambda: [0.9, 0.99])
    mode: Literal["a", "b"] = "a"


@parameter_group("group")
@dataclass
class Group:
    ranged: Ranged = field(default_factory=Ranged)
    inner: Inner = field(default_factory=Inner)
    seed: Annotated[int, NON_NEGATIVE] = 0

    def __post_init__(self) -> None:
        if self.inner.width > 100:
            raise ValueError("inner.width must be <= 100")


@pytest.mark.parametrize("params, message", [
    ({"lr": -1}, r"where.lr = -1.0: must be > 0"),
    ({"lr": 0}, r"where.lr = 0.0: must be > 0"),
    ({"steps": 0}, r"where.steps = 0: must be >= 1"),
    ({"p": 1.5}, r"where.p = 1.5: must be in \[0, 1\]"),
    ({"p": float("nan")}, r"where.p = nan: must be in \[0, 1\]"),
    ({"betas": [0.9, 1.0]}, r"where.betas\[1\] = 1.0: must be in \[0, 1\)"),
    ({"mode": "c"}, r"where.mode = 'c': must be one of \['a', 'b'\]"),
])
def test_out_of_range_values_name_the_parameter_the_value_and_the_range(params, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Ranged, params, where="where")


def test_none_means_off_and_is_not_range_checked():
    assert from_dict(Ranged, {"steps": None}).steps is None and from_dict(Ranged, {"steps": 3}).steps == 3


def test_a_parameter_group_validates_every_level_when_built_from_keywords():
    """``Group(**raw)`` is how Kedro instantiates an annotated ``params:`` input: nested dicts become dataclasses,
    and unknown keys, types and ranges at every level are errors naming the parameter path."""
    built = Group(**{"ranged": {"lr": 1, "betas": [0.5, 0.5]}, "inner": {"width": 8}})
    assert isinstance(built.ranged, Ranged) and built.ranged.lr == 1.0 and built.inner.width == 8
    with pytest.raises(ConfigError, match=r"group.ranged: unknown key\(s\) \['lrr'\]"):
        Group(**{"ranged": {"lrr": 1}})
    with pytest.raises(ConfigError, match=r"group: unknown key\(s\) \['extra'\]"):
        Group(extra=1)
    with pytest.raises(ConfigError, match=r"group.ranged.steps = 0: must be >= 1"):
        Group(ranged={"steps": 0})
    with pytest.raises(ConfigError, match=r"group.seed = -3: must be >= 0"):
        Group(seed=-3)
    with pytest.raises(ConfigError, match=r"group: inner.width must be <= 100"):  # __post_init__, prefixed
        Group(inner={"width": 101})
    assert from_dict(Group, built) is built  # an already validated instance passes through
    with pytest.raises(ConfigError, match=r"other.ranged.lr = -1.0"):
        from_dict(Group, {"ranged": {"lr": -1}}, where="other")


def test_runtime_and_dataset_groups():
    runtime = RuntimeConfig(device="cuda:1", seed=7)
    assert runtime["device"] == "cuda:1" and runtime["seed"] == 7  # nodes read it like the parameter dict
    for bad in ("gpu", "cuda:x", "cpu:0"):
        with pytest.raises(ConfigError, match="runtime.device"):
            RuntimeConfig(device=bad)
    with pytest.raises(ConfigError, match=r"dataset.skeleton = 'smpl': must be one of \['humanml3d', 'kit'\]"):
        DatasetConfig(skeleton="smpl")
    with pytest.raises(ConfigError, match=r"dataset.fps = 0.0: must be > 0"):
        DatasetConfig(fps=0)



def test_int_fields_refuse_floats_and_values_beyond_64_bits_naming_the_parameter():
    """#27: an int-typed field given 1e26 (a float) or 10**26 (an int no counter or seed can hold) is refused."""
    import dataclasses

    from easytune.core.infra.config import UPDATES, ConfigError, RuntimeConfig, from_dict

    @dataclasses.dataclass
    class Budget:
        max_updates: int = 100
        bounded: Annotated[int, UPDATES] = 100

    with pytest.raises(ConfigError, match=r"budget.max_updates = 1e\+26: expected an integer \(a whole number"):
        from_dict(Budget, {"max_updates": 1e26}, where="budget")
    with pytest.raises(ConfigError, match=r"budget.max_updates = 10{26}: must be within 64-bit integers"):
        from_dict(Budget, {"max_updates": 10**26}, where="budget")
    with pytest.raises(ConfigError, match=r"budget.bounded = 1000000001: must be in \[1, 1000000000\]"):
        from_dict(Budget, {"bounded": 10**9 + 1}, where="budget")
    assert from_dict(Budget, {"max_updates": 2**63 - 1, "bounded": 10**9}).bounded == 10**9
    with pytest.raises(ConfigError, match=r"runtime.seed = 4294967296: must be in \[0, 4294967295\]"):
        from_dict(RuntimeConfig, {"seed": 2**32})
