"""Configuration loading: unknown keys are errors naming the nearest valid key."""

from dataclasses import dataclass, field

import pytest

from csstflux.config import from_dict, load_config, to_dict
from csstflux.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    radius: float = 1.0
    """Match radius, arcsec."""


@dataclass(frozen=True)
class Demo:
    batch_size: int = 256
    """Spectra per model call."""
    snrs: tuple[float, ...] = (20.0, 40.0)
    """Signal-to-noise ratios."""
    inner: Inner = field(default_factory=Inner)
    """Nested table."""

    def __post_init__(self):
        if self.batch_size <= 0:
            raise ValueError("batch_size must be positive")


def test_load_and_coerce(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("batch_size = 64\nsnrs = [20, 80]\n[inner]\nradius = 2\n")
    cfg = load_config(p, Demo)
    assert cfg == Demo(batch_size=64, snrs=(20.0, 80.0), inner=Inner(radius=2.0))
    assert to_dict(cfg) == {"batch_size": 64, "snrs": [20.0, 80.0], "inner": {"radius": 2.0}}


def test_unknown_key_suggests_nearest(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("batch_sise = 64\n")
    with pytest.raises(ConfigError, match="'batch_sise'.*did you mean 'batch_size'") as exc:
        load_config(p, Demo)
    assert str(p) in str(exc.value)
    with pytest.raises(ConfigError, match="'inner.radious'.*'radius'"):
        from_dict(Demo, {"inner": {"radious": 3}})


def test_invalid_value_and_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[train]\nbatch_size = 8\n")
    assert load_config(p, Demo, table="train", overrides={"batch_size": 16}).batch_size == 16
    assert load_config(p, Demo, table="train", overrides={"batch_size": None}).batch_size == 8
    with pytest.raises(ConfigError, match="batch_size must be positive"):
        load_config(p, Demo, table="train", overrides={"batch_size": 0})
    with pytest.raises(ConfigError, match=r"no \[predict\] table"):
        load_config(p, Demo, table="predict")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml", Demo)
