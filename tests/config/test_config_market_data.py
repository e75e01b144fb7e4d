"""The optional [market_data] section: absent, the config keeps its hash and
the guard runs at its defaults; present, it is part of the config's identity;
bad values are one ConfigError line naming the field."""

from __future__ import annotations

import tomllib
from pathlib import Path

import attrs
import pytest

from fundarb.config import ConfigError, MarketDataSettings, config_hash, dumps, from_dict, load, to_dict
from fundarb.core.market_guard import GuardLimits

BASELINE_PATH = Path(__file__).resolve().parents[2] / "sims" / "spot_perp.toml"
BASELINE_HASH = "dfe6e84d437443ddca2262cad18b64c79392a847e93b7e84b315dc7ede0de8d6"  # as every shipped report says


def baseline_raw() -> dict:
    return tomllib.loads(BASELINE_PATH.read_text())


def test_without_the_section_the_hash_is_unchanged_and_the_defaults_apply():
    cfg = load(BASELINE_PATH)
    assert cfg.market_data is None and "market_data" not in to_dict(cfg) and "market_data" not in dumps(cfg)
    assert config_hash(cfg) == BASELINE_HASH
    assert cfg.market_data_settings == MarketDataSettings()
    assert cfg.market_data_settings.limits() == GuardLimits()  # the config's defaults are the guard's


def test_the_section_loads_round_trips_and_is_part_of_the_identity(tmp_path):
    raw = baseline_raw()
    raw["market_data"] = {"max_jump": 0.25, "max_gap": 0.02, "confirm_count": 5}
    cfg = from_dict(raw, "with_market_data.toml")
    assert cfg.market_data == MarketDataSettings(max_jump=0.25, max_gap=0.02, confirm_count=5)
    assert cfg.market_data_settings.confirm_seconds == 60.0
    assert cfg.market_data_settings.limits() == GuardLimits(0.25, 0.02, 60.0, 5, 60.0)
    assert config_hash(cfg) != BASELINE_HASH
    path = tmp_path / "c.toml"
    path.write_text(dumps(cfg))
    again = load(path)
    assert again == cfg and config_hash(again) == config_hash(cfg)
    assert config_hash(attrs.evolve(cfg, market_data=None)) == BASELINE_HASH


@pytest.mark.parametrize("field, value, says", [
    ("max_jump", 0, "market_data.max_jump must be > 0, got 0"),
    ("max_jump", -0.5, "market_data.max_jump must be > 0"),
    ("max_jump", float("inf"), "market_data.max_jump must be a finite number"),
    ("max_gap", 0, "market_data.max_gap must be > 0"),
    ("max_gap", float("nan"), "market_data.max_gap must be a finite number"),
    ("reference_seconds", -1, "market_data.reference_seconds must be > 0"),
    ("confirm_seconds", 0, "market_data.confirm_seconds must be > 0"),
    ("confirm_count", 1, "market_data.confirm_count must be a whole number >= 2"),
    ("confirm_count", 2.5, "market_data.confirm_count must be a whole number >= 2, got 2.5"),
    ("confirm_count", "3", "market_data.confirm_count must be a whole number >= 2, got '3'"),
    ("confirm_count", True, "market_data.confirm_count must be a whole number >= 2, got True"),
    ("max_jump", "big", "max_jump"),
    ("max_jumps", 0.5, "max_jumps"),
])
def test_bad_values_are_one_config_error_line_naming_the_field(field, value, says):
    raw = baseline_raw()
    raw["market_data"] = {field: value}
    with pytest.raises(ConfigError) as err:
        from_dict(raw, "bad.toml")
    text = str(err.value)
    assert text.startswith("bad.toml: ") and "\n" not in text
    assert says in text and "market_data" in text


def test_a_value_that_is_not_a_table_is_refused_in_one_line():
    raw = baseline_raw()
    raw["market_data"] = 0.5
    with pytest.raises(ConfigError) as err:
        from_dict(raw, "bad.toml")
    assert str(err.value) == "bad.toml: market_data must be a [market_data] section (a table), got 0.5"
