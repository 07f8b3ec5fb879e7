from dataclasses import dataclass, field

import pytest

from easytune.core.config import ConfigError, from_dict, to_dict


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
