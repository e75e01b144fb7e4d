"""Stress scenarios: the funding and shock arithmetic of ``apply_scenario`` on
small synthetic histories, and the optional ``[scenario]`` config section."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fundarb.config import ConfigError, Scenario, canonical_json, config_hash, dumps, from_dict, load
from fundarb.core.model import NS_PER_HOUR
from fundarb.data.history import DataError, fmt_time
from fundarb.data.scenario import apply_scenario
from fundarb.testkit.builders import T0, synthetic_history

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "sims" / "spot_perp.toml"
BASELINE_HASH = "dfe6e84d4374"  # sims/spot_perp.toml's identity (no [scenario] section)


def history(n: int = 48, intervals: tuple[float, ...] = (8.0, 8.0, 4.0, 1.0, 8.0)):
    """n hours of a made-up path; settlements at hours 1, 9, 17, ... with the given intervals."""
    spot = 40_000 + 100 * np.sin(np.arange(n))
    perp = spot * (1 + 0.0005 * np.cos(np.arange(n)))
    h = synthetic_history(spot, perp, np.array([1e-4, -2e-4, 3e-4, 0.0, 5e-5, 2e-4]))
    k = h.funding_ts.size
    return attrs.evolve(h, funding_interval=np.resize(np.array(intervals), k))


def frozen_copy(h):
    """The history with read-only arrays (an in-place write raises) and a copy to compare with."""
    arrays = {f.name: getattr(h, f.name) for f in attrs.fields(type(h)) if isinstance(getattr(h, f.name), np.ndarray)}
    before = {k: v.copy() for k, v in arrays.items()}
    for v in arrays.values():
        v.flags.writeable = False
    return h, before


def test_none_is_the_identity():
    h = history()
    assert apply_scenario(h, None) is h


def test_scale_then_shift_per_settlement_interval():
    h = history()
    out = apply_scenario(h, Scenario("synthetic: funding x2 and -10% APR", funding_scale=2.0, funding_shift_apr=-0.10))
    # per settlement: rate * 2 - 0.10 * interval_hours / 8760, with the interval taken from the data
    expected = [2 * r - 0.10 * iv / 8760 for r, iv in zip(h.funding_rate.tolist(), h.funding_interval.tolist())]
    assert out.funding_rate.tolist() == pytest.approx(expected, rel=0, abs=1e-15)
    assert out.funding_rate[2] == pytest.approx(2 * 3e-4 - 0.10 * 4 / 8760)  # the 4 h settlement
    assert out.funding_rate[3] == pytest.approx(-0.10 / 8760)  # the 1 h settlement, real rate 0
    # funding only: prices, times, intervals and marks are the same arrays' values
    for name in ("hours", "spot", "perp", "carried", "funding_ts", "funding_interval"):
        np.testing.assert_array_equal(getattr(out, name), getattr(h, name))
    assert np.isnan(out.funding_mark).all()


def test_the_report_sources_say_what_changed():
    h = history()
    out = apply_scenario(h, Scenario("x", funding_scale=1.5, funding_shift_apr=-0.15, shock_return=0.3, shock_after_days=1))
    assert out.sources[:-1] == h.sources
    assert out.sources[-1] == f"scenario: funding x1.5; funding -15.00% APR; spot and perp +30.0% from {fmt_time(T0 + 24 * NS_PER_HOUR)}"
    assert apply_scenario(h, Scenario("labels only")).sources[-1] == "scenario: real data unchanged"
    assert "scenario: real data unchanged" in apply_scenario(h, Scenario("labels only")).describe()["sources"]


def test_shock_is_one_level_jump_at_exactly_its_hour():
    h = history()
    out = apply_scenario(h, Scenario("synthetic: +30% at hour 10", shock_return=0.30, shock_after_days=10 / 24))
    k = 10
    np.testing.assert_array_equal(out.spot[:k], h.spot[:k])
    np.testing.assert_array_equal(out.perp[:k], h.perp[:k])
    np.testing.assert_allclose(out.spot[k:], h.spot[k:] * 1.3, rtol=1e-15)
    np.testing.assert_allclose(out.perp[k:], h.perp[k:] * 1.3, rtol=1e-15)
    ret_in, ret_out = np.diff(np.log(h.spot)), np.diff(np.log(out.spot))
    moved = np.flatnonzero(~np.isclose(ret_out, ret_in, rtol=0, atol=1e-12))
    assert moved.tolist() == [k - 1]  # the return into hour k, and no other
    assert ret_out[k - 1] - ret_in[k - 1] == pytest.approx(math.log(1.3))
    np.testing.assert_allclose(out.perp / out.spot, h.perp / h.spot, rtol=1e-14)  # basis unchanged
    np.testing.assert_array_equal(out.funding_rate, h.funding_rate)
    assert np.isnan(out.funding_mark).all()  # no mark stays no mark: the shocked perp close stands in


def test_shock_hour_rounds_down_and_counts_from_the_first_hour():
    h = history()
    for days, hour in ((7 / 24, 7), (7.99 / 24, 7), (1.0, 24), (1 / 24, 1)):
        out = apply_scenario(h, Scenario("x", shock_return=-0.2, shock_after_days=days))
        first_moved = int(np.flatnonzero(out.spot != h.spot)[0])
        assert first_moved == hour and out.hours[first_moved] == T0 + hour * NS_PER_HOUR


def test_real_marks_move_with_the_level_from_the_shock_on():
    h = history()
    marks = h.perp[(h.funding_ts - T0) // NS_PER_HOUR]
    h = attrs.evolve(h, funding_mark=marks)  # settlements at hours 1, 9, 17, 25, 33, 41
    out = apply_scenario(h, Scenario("x", shock_return=0.5, shock_after_days=17 / 24))
    np.testing.assert_array_equal(out.funding_mark[:2], marks[:2])
    np.testing.assert_allclose(out.funding_mark[2:], marks[2:] * 1.5, rtol=1e-15)


def test_inputs_are_not_mutated():
    h, before = frozen_copy(history())
    out = apply_scenario(h, Scenario("x", funding_scale=3.0, funding_shift_apr=0.2, shock_return=0.3, shock_after_days=1.0))
    for name, arr in before.items():
        np.testing.assert_array_equal(getattr(h, name), arr)
    assert out is not h and out.spot is not h.spot and out.funding_rate is not h.funding_rate


@pytest.mark.parametrize("days", [0.0, 0.02, 2.0, 5.0])
def test_shock_outside_the_history_names_the_field_and_the_window(days):
    h = history(n=48)  # hours 0..47: the shock may fall on hours 1..47
    with pytest.raises(DataError) as err:
        apply_scenario(h, Scenario("x", shock_return=0.3, shock_after_days=days))
    msg = str(err.value)
    assert "scenario.shock_after_days" in msg
    assert fmt_time(h.start) in msg and fmt_time(h.end) in msg
    apply_scenario(h, Scenario("x", shock_return=0.3, shock_after_days=47 / 24))  # the last hour is inside


# --- hypothesis: invariants of the transform ---------------------------------------------

rates = st.lists(st.floats(-0.003, 0.003, allow_nan=False), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(rates=rates, intervals=st.lists(st.sampled_from([1.0, 4.0, 8.0]), min_size=40, max_size=40),
       scale=st.floats(-3, 3), shift=st.floats(-1, 1))
def test_shift_adds_exactly_its_share_per_settlement(rates, intervals, scale, shift):
    n = 8 * len(rates)  # one settlement per rate, at hours 1, 9, 17, ...
    h = synthetic_history(np.full(n, 30_000.0), np.full(n, 30_010.0), np.array(rates))
    h = attrs.evolve(h, funding_interval=np.array(intervals[: h.funding_ts.size]))
    assert h.funding_rate.size == h.funding_ts.size == len(rates)
    scaled = apply_scenario(h, Scenario("x", funding_scale=scale)).funding_rate
    shifted = apply_scenario(h, Scenario("x", funding_scale=scale, funding_shift_apr=shift)).funding_rate
    np.testing.assert_allclose(shifted - scaled, shift * h.funding_interval / 8760, rtol=1e-9, atol=1e-15)
    assert float(shifted.sum() - scaled.sum()) == pytest.approx(shift * float(h.funding_interval.sum()) / 8760, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.floats(-0.05, 0.05), min_size=3, max_size=60), shock=st.floats(-0.9, 2.0).filter(lambda x: abs(x) > 1e-6),
       where=st.floats(0, 1), basis=st.floats(-0.01, 0.01))
def test_only_the_shock_hour_return_changes(steps, shock, where, basis):
    spot = 50_000 * np.exp(np.cumsum([0.0, *steps]))
    h = synthetic_history(spot, spot * (1 + basis), np.zeros(1))
    k = 1 + int(where * (spot.size - 2))
    out = apply_scenario(h, Scenario("x", shock_return=shock, shock_after_days=k / 24))
    for before, after in ((h.spot, out.spot), (h.perp, out.perp)):
        ret_in, ret_out = after[1:] / after[:-1], before[1:] / before[:-1]
        others = np.arange(ret_in.size) != k - 1
        np.testing.assert_allclose(ret_in[others], ret_out[others], rtol=1e-12)
        assert ret_in[k - 1] == pytest.approx(ret_out[k - 1] * (1 + shock), rel=1e-12)
    np.testing.assert_allclose(out.perp / out.spot, h.perp / h.spot, rtol=1e-12)


# --- the [scenario] config section ----------------------------------------------------------

def raw_baseline() -> dict:
    return tomllib.loads(BASELINE.read_text())


def test_baseline_identity_is_unchanged_by_the_optional_section():
    cfg = load(BASELINE)
    assert cfg.scenario is None
    assert config_hash(cfg)[:12] == BASELINE_HASH
    assert "scenario" not in canonical_json(cfg) and "scenario" not in dumps(cfg)
    assert from_dict(tomllib.loads(dumps(cfg))) == cfg


def test_scenario_round_trips_through_dumps_and_load(tmp_path):
    raw = raw_baseline()
    raw["scenario"] = {"description": "2022 prices, funding -15% APR", "funding_scale": 0.5,
                       "funding_shift_apr": -0.15, "shock_return": 0.3, "shock_after_days": 12.5}
    cfg = from_dict(raw)
    assert cfg.scenario == Scenario("2022 prices, funding -15% APR", 0.5, -0.15, 0.3, 12.5)
    path = tmp_path / "stress.toml"
    path.write_text(dumps(cfg))
    again = load(path)
    assert again == cfg and config_hash(again) == config_hash(cfg)
    assert config_hash(cfg) != config_hash(load(BASELINE))  # a scenario is part of the identity


def test_missing_description_names_it():
    raw = raw_baseline()
    raw["scenario"] = {"funding_shift_apr": -0.1}
    with pytest.raises(ConfigError, match=r"scenario\.description"):
        from_dict(raw, "stress.toml")


@pytest.mark.parametrize("field, value, why", [
    ("shock_return", -1.0, "> -1"),
    ("shock_return", -2.5, "> -1"),
    ("shock_return", math.nan, "finite"),
    ("funding_scale", math.inf, "finite"),
    ("funding_shift_apr", -math.inf, "finite"),
    ("shock_after_days", -1.0, ">= 0"),
    ("shock_after_days", math.nan, "finite"),
    ("description", "   ", "not be empty"),
    ("shock_return", "big", "float"),
])
def test_bad_scenario_value_is_one_error_naming_the_field(field, value, why):
    raw = raw_baseline()
    raw["scenario"] = {"description": "x", "shock_return": 0.3, "shock_after_days": 10.0, field: value}
    with pytest.raises(ConfigError) as err:
        from_dict(raw, "stress.toml")
    msg = str(err.value)
    assert msg.startswith("stress.toml: ") and f"scenario.{field}" in msg and why in msg
    assert ";" not in msg  # one error, not a cascade


def test_shock_time_without_a_shock_is_refused():
    raw = raw_baseline()
    raw["scenario"] = {"description": "x", "shock_after_days": 10.0}
    with pytest.raises(ConfigError, match=r"scenario\.shock_after_days .* scenario\.shock_return is 0"):
        from_dict(raw, "stress.toml")


def test_unknown_scenario_key_is_refused():
    raw = raw_baseline()
    raw["scenario"] = {"description": "x", "shock_pct": 30}
    with pytest.raises(ConfigError, match=r"shock_pct.*scenario"):
        from_dict(raw, "stress.toml")
