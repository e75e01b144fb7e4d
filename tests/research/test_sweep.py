"""Sweep grid syntax, grid points applied to configs, and the robust rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fundarb.config import ConfigError, load
from fundarb.research.sweep import (
    MIN_P_MAXDD_OK,
    GridError,
    apply_params,
    grid_points,
    parse_grid,
    recommend,
)

BASE = load(Path(__file__).resolve().parents[2] / "sims" / "spot_perp.toml")


def test_grid_with_several_names_in_one_option_and_repeated_options():
    g = parse_grid(["entry=0.04,0.06,exit=0,0.01", "leverage=2:3:0.5"], BASE)
    assert g == {"entry": [0.04, 0.06], "exit": [0.0, 0.01], "leverage": [2.0, 2.5, 3.0]}
    points = grid_points(g)
    assert len(points) == 12
    assert points[0] == {"entry": 0.04, "exit": 0.0, "leverage": 2.0}
    assert points[-1] == {"entry": 0.06, "exit": 0.01, "leverage": 3.0}


def test_ranges_are_inclusive_and_clean():
    assert parse_grid(["entry=0.02:0.1:0.02"], BASE)["entry"] == [0.02, 0.04, 0.06, 0.08, 0.1]


def test_dotted_config_fields_are_allowed():
    assert parse_grid(["strategy.cooldown_hours=0,24"], BASE) == {"strategy.cooldown_hours": [0.0, 24.0]}


@pytest.mark.parametrize("spec, message", [
    ("0.04,0.06", "must start with name=value"),
    ("entry=", "empty value for 'entry'"),
    ("entry=0.04,,0.06", "empty value"),
    ("entry=abc", "'abc' is not a number"),
    ("entry=nan", "not a finite number"),
    ("bogus=1,2", "unknown parameter 'bogus'"),
    ("strategy.allow_reverse=0,1", "not a numeric config field"),
    ("entry=0.04,0.04", "given twice"),
    ("entry=0.1:0.02:0.01", "start <= stop and step > 0"),
    ("entry=0:1", "must be start:stop:step"),
    ("=0.04", "parameter name is missing"),
    ("entry=0:1000:0.01", "more than 1000"),
])
def test_bad_grid_syntax_names_the_part(spec, message):
    with pytest.raises(GridError, match=message.replace("(", r"\(")):
        parse_grid([spec], BASE)


def test_a_name_given_twice_across_options_is_an_error():
    with pytest.raises(GridError, match="given twice"):
        parse_grid(["entry=0.04", "entry=0.06"], BASE)


def test_too_many_points_is_an_error():
    with pytest.raises(GridError, match="more than 10,000"):
        parse_grid(["entry=0:0.99:0.01,exit=0:0.99:0.01,holding=1:3:1"], BASE)


def test_params_land_in_the_config_and_keep_ints_int():
    cfg = apply_params(BASE, {"entry": 0.08, "signal": 12.0})
    assert cfg.strategy.entry_apr == 0.08
    assert cfg.strategy.signal_settlements == 12 and isinstance(cfg.strategy.signal_settlements, int)
    assert cfg.risk == BASE.risk


def test_an_invalid_grid_value_is_a_config_error_naming_point_and_field():
    with pytest.raises(ConfigError, match=r"grid point buffer=-0.1.*min_margin_buffer"):
        apply_params(BASE, {"buffer": -0.1})


@settings(max_examples=50, deadline=None)
@given(lev=st.floats(1.0, 3.0))
def test_leverage_sizes_accounts_to_that_perp_leverage(lev):
    cfg = apply_params(BASE, {"leverage": lev})
    assert cfg.strategy.notional / cfg.perp_cash == pytest.approx(lev, rel=1e-4)
    assert cfg.spot_cash + cfg.perp_cash == pytest.approx(cfg.capital)
    # the spot leg uses the same share of its account as in the base config
    assert cfg.strategy.notional / cfg.spot_cash == pytest.approx(BASE.strategy.notional / BASE.spot_cash, rel=1e-4)


def test_leverage_above_the_risk_limit_is_refused():
    with pytest.raises(ConfigError, match="risk.max_leverage"):
        apply_params(BASE, {"leverage": 3.5})


def row(point, p5, median, p_dd, p_traded=1.0):
    return {"point": point, "p5_net_apr": p5, "median_net_apr": median, "p_max_drawdown_ok": p_dd, "p_traded": p_traded}


def test_rule_prefers_best_p5_among_safe_configs_that_trade():
    rows = [
        row(0, 0.09, 0.12, MIN_P_MAXDD_OK - 0.01),  # best tail but too often deep drawdowns
        row(1, 0.03, 0.05, 0.99),
        row(2, 0.05, 0.04, 0.96),  # best p5 among the safe ones
        row(3, 0.20, 0.20, 1.0, p_traded=0.2),  # hardly ever trades
    ]
    assert recommend(rows) == 2


def test_rule_ties_go_to_median_then_grid_order():
    assert recommend([row(0, 0.05, 0.04, 1.0), row(1, 0.05, 0.06, 1.0)]) == 1
    assert recommend([row(0, 0.05, 0.06, 1.0), row(1, 0.05, 0.06, 1.0)]) == 0


def test_no_safe_config_means_no_recommendation():
    assert recommend([row(0, 0.05, 0.06, 0.5), row(1, 0.07, 0.08, 0.9)]) is None
