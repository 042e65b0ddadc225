"""The generic config merge (:func:`common.config.merge_into`) and converter hooks."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from common.config import ConfigError, config_to_dict, from_dict, merge_into, register_converter


@dataclass
class Span:
    lo: float
    hi: float


@dataclass
class Fixed:
    value: float


Range = Span | Fixed


def _range_from(value, where):
    """A test converter: ``{lo, hi}``, ``{value}`` or a number (a fixed value)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Fixed(float(value))
    if isinstance(value, dict) and set(value) == {"lo", "hi"}:
        return from_dict(Span, value, where)
    if isinstance(value, dict) and set(value) == {"value"}:
        return from_dict(Fixed, value, where)
    raise ConfigError(f"{where}: expected {{lo, hi}}, {{value}} or a number, got {value!r}")


register_converter(Range, _range_from)


@dataclass
class Inner:
    angle: Range = field(default_factory=lambda: Span(-10, 10))
    prob: float = 0.5
    count: int = 3

    def validate(self, path: str) -> None:
        if not 0 <= self.prob <= 1:
            raise ConfigError(f"{path}.prob: must be in [0, 1], got {self.prob:g}")


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    other: Inner = field(default_factory=Inner)


def test_merge_into_merges_nested_fields_in_place_and_converts():
    cfg = Outer()
    inner = cfg.inner
    out = merge_into(cfg, {"inner": {"angle": {"lo": -30, "hi": 30}, "count": 4.0}, "name": 7})
    assert out is cfg and cfg.inner is inner  # in place; untouched fields keep their values
    assert cfg.inner == Inner(angle=Span(-30.0, 30.0), prob=0.5, count=4) and type(cfg.inner.count) is int
    assert cfg.name == "7" and cfg.other == Inner()
    merge_into(cfg, {"other": {"angle": 2}})
    assert cfg.other.angle == Fixed(2.0)
    # the same conversion builds a config from scratch, and round-trips through plain data
    assert from_dict(Outer, config_to_dict(cfg)) == cfg


@pytest.mark.parametrize("overrides, match", [
    ({"inner": {"angel": 1}}, r"^inner\.angel: unknown key \(did you mean 'angle'\?\); allowed keys: angle, prob, count$"),
    ({"inner": {"count": "many"}}, r"^inner\.count: expected an integer, got str 'many'$"),
    ({"inner": {"angle": {"lo": "a", "hi": 1}}}, r"^inner\.angle\.lo: expected a number, got str 'a'$"),
    ({"inner": {"angle": "wide"}}, r"^inner\.angle: expected \{lo, hi\}, \{value\} or a number, got 'wide'$"),
    ({"inner": 3}, r"^inner: expected a mapping, got int 3$"),
    ({"other": {"prob": 2}}, r"^other\.prob: must be in \[0, 1\], got 2$"),
])
def test_merge_into_errors_name_the_full_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        merge_into(Outer(), overrides)


def test_merge_into_with_a_path_prefixes_the_key():
    with pytest.raises(ConfigError, match=r"^render\.inner\.prob: expected a number"):
        merge_into(Outer(), {"inner": {"prob": None}}, "render")


def test_morphable_distributions_convert_through_the_common_mechanism():
    from morphable.variation import Bernoulli, Normal, RenderConfig, Uniform, apply_overrides, preset

    cfg = apply_overrides(preset("wild"), {"pose": {"yaw": {"mean": 0, "std": 20}, "roll": 5},
                                           "light": {"shadows": 0}, "degradation": {"jpeg": {"p": 0.5}}})
    assert cfg.pose.yaw == Normal(0.0, 20.0) and cfg.pose.roll == Uniform(5.0, 5.0)
    assert cfg.pose.pitch == preset("wild").pose.pitch and cfg.degradation.jpeg == Bernoulli(0.5)
    assert isinstance(cfg.light.shadows, float)
    assert from_dict(RenderConfig, config_to_dict(preset("wild"))) == preset("wild")
    with pytest.raises(ConfigError, match=r"^pose\.yaw: a distribution is \{lo, hi\}"):
        apply_overrides(preset("wild"), {"pose": {"yaw": {"mean": 0}}})
    with pytest.raises(ConfigError, match=r"^pose\.yaw: lo \(30\) > hi \(-30\)$"):
        apply_overrides(preset("wild"), {"pose": {"yaw": {"lo": 30, "hi": -30}}})
