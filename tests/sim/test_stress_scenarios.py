"""The shipped stress configs (sims/stress_*.toml) on the shipped real history:
each scenario does what it is for, and the carry strategy answers it."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import numpy as np
import pytest
from typer.testing import CliRunner

from fundarb.cli.main import app
from fundarb.config import Config, load
from fundarb.core.model import NS_PER_HOUR
from fundarb.data.history import MarketHistory, load_history, parse_time
from fundarb.data.scenario import apply_scenario
from fundarb.sim.backtest import run_backtest

SIMS = Path(__file__).resolve().parents[2] / "sims"


def real_history(cfg: Config) -> MarketHistory:
    return load_history((cfg.spot.exchange, cfg.spot.symbol), (cfg.perp.exchange, cfg.perp.symbol),
                        cfg.data.start, cfg.data.end, cfg.data.max_price_gap_hours)


def stress_run(name: str, cfg: Config | None = None):
    cfg = cfg or load(SIMS / f"{name}.toml")
    history = apply_scenario(real_history(cfg), cfg.scenario)
    return cfg, history, run_backtest(cfg, history)


def rows(result, log_kind: str, **match) -> list[dict]:
    """The recorder rows of one kind (intent, fill, alert, transfer ...) whose fields match."""
    return [r for k, r in result.log if k == log_kind and all(r.get(f) == v for f, v in match.items())]


@pytest.fixture(scope="module")
def bear():
    return stress_run("stress_bear")


@pytest.fixture(scope="module")
def bull():
    return stress_run("stress_bull")


@pytest.fixture(scope="module")
def shock():
    return stress_run("stress_shock")


# --- bear: real bear-market prices, funding shifted negative ------------------------------

def test_bear_funding_is_persistently_negative_where_the_real_one_was_not(bear):
    cfg, h, result = bear
    real = real_history(cfg)
    assert real.spot[-1] / real.spot[0] - 1 < -0.7  # the real top-to-bottom fall
    assert real.funding_rate.mean() > 0 and (real.funding_rate < 0).mean() < 0.3
    assert result.metrics["mean_funding_apr_in_window"] < -0.05
    assert (h.funding_rate < 0).mean() > 0.95
    # holding the carry through the window would have paid funding, not earned it
    assert result.metrics["frictionless_hold_funding_apr_on_notional"] < 0
    assert h.sources[-1].startswith("scenario: funding -15.00% APR")


def test_bear_strategy_exits_and_stays_out_with_a_bounded_loss(bear):
    cfg, h, result = bear
    m = result.metrics
    entries, exits = rows(result, "intent", reason="entry"), rows(result, "intent", reason="exit_signal")
    assert entries and exits and exits[-1]["ts"] > entries[-1]["ts"]  # whatever it entered, it left
    assert not result.curve["in_position"][-1]
    assert m["time_in_position"] < 0.05
    assert m["net_pnl"] > -0.005 * cfg.capital  # at most about one round trip of costs
    assert m["liquidations"] == 0 and m["kill_switch"] is None and m["missed_settlements"] == 0


def test_bear_exit_is_the_scenario_doing(bear):
    cfg, _, result = bear
    _, _, real = stress_run("stress_bear", attrs.evolve(cfg, scenario=None))
    # on the real funding of the same prices the carry is on most of the time
    assert real.metrics["time_in_position"] > 0.5 > 10 * result.metrics["time_in_position"]
    assert real.metrics["funding_net"] > 0


# --- bull: the real high-funding window, unchanged ------------------------------------------

def test_bull_window_is_high_funding_real_data(bull):
    cfg, h, result = bull
    real = real_history(cfg)
    assert cfg.scenario.funding_scale == 1.0 and cfg.scenario.funding_shift_apr == 0.0
    for name in ("spot", "perp", "funding_rate", "funding_ts"):
        np.testing.assert_array_equal(getattr(h, name), getattr(real, name))
    assert h.sources[-1] == "scenario: real data unchanged"
    assert result.metrics["mean_funding_apr_in_window"] > 0.15 and (h.funding_rate < 0).sum() == 0
    assert h.spot[-1] / h.spot[0] > 1.8  # BTC rises under the short


def test_bull_earns_more_than_the_spot_perp_carry_and_most_of_the_carry(bull):
    cfg, _, result = bull
    m = result.metrics
    _, _, baseline = stress_run("spot_perp")
    assert m["net_apr"] > 0.10 > baseline.metrics["net_apr"]
    assert m["net_apr"] > 2 * baseline.metrics["net_apr"]
    assert m["time_in_position"] > 0.9
    # costs and the size cuts below take little of what holding the notional earns
    assert m["net_apr"] > 0.8 * m["frictionless_hold_funding_apr_on_capital"]


def test_bull_rally_is_met_by_margin_cuts_not_liquidation(bull):
    cfg, _, result = bull
    m = result.metrics
    cuts = rows(result, "alert", kind="margin_reduce")
    assert cuts and all("leverage" in a["message"] for a in cuts)
    assert m["liquidations"] == 0 and m["min_margin_buffer"] > cfg.risk.hard_margin_buffer
    assert m["max_leverage"] < cfg.risk.max_leverage * 1.1
    assert m["delta_drift_max"] <= cfg.risk.max_drift


# --- shock: +30% within one hour while in position ---------------------------------------

def shock_ts(cfg: Config, h: MarketHistory) -> int:
    return h.start + int(cfg.scenario.shock_after_days * 24) * NS_PER_HOUR


def test_shock_lands_while_in_position(shock):
    cfg, h, result = shock
    t = shock_ts(cfg, h)
    assert t == parse_time("2021-08-20T23:00", "shock")
    k = int(np.searchsorted(h.hours, t))
    assert result.curve["in_position"][k - 1]
    assert h.spot[k] / h.spot[k - 1] > 1.25  # the jump, on top of that hour's real move
    assert result.curve["margin_buffer"][k - 1] >= cfg.risk.min_margin_buffer


def test_shock_is_answered_by_reduction_then_a_delayed_topup(shock):
    cfg, h, result = shock
    t = shock_ts(cfg, h)
    m = result.metrics
    critical = rows(result, "alert", kind="margin_reduce", severity="critical", ts=t)
    assert critical, "the shock hour should pierce the hard margin floor"
    cuts = rows(result, "intent", reason="margin_reduce", ts=t)
    assert {i["venue"] for i in cuts} == {cfg.spot_account, cfg.perp_account}  # both legs, hedged
    # once the cuts lift the buffer over the hard floor, collateral is sent: it arrives after the delay
    requested = [x for x in rows(result, "transfer", status="requested", to_venue=cfg.perp_account)
                 if t <= x["ts"] < t + NS_PER_HOUR]
    assert len(requested) == 1
    topup = rows(result, "alert", kind="margin_topup")
    assert [a for a in topup if a["ts"] == requested[0]["ts"]]
    arrived = [x for x in rows(result, "transfer", status="arrived", to_venue=cfg.perp_account) if x["ts"] > t]
    assert arrived[0]["ts"] - requested[0]["ts"] == cfg.transfer.delay_minutes * 60 * 1_000_000_000
    assert arrived[0]["amount"] == pytest.approx(requested[0]["amount"])
    # buffer pierced but never gone; restored once the collateral has arrived
    assert 0 < m["min_margin_buffer"] < cfg.risk.hard_margin_buffer
    assert m["liquidations"] == 0
    k = int(np.searchsorted(np.asarray(result.curve["ts"]), arrived[0]["ts"]))
    assert result.curve["margin_buffer"][k + 1] >= cfg.risk.min_margin_buffer
    assert m["delta_drift_max"] <= cfg.risk.max_drift and m["missed_settlements"] == 0


def test_without_the_shock_the_hour_is_quiet(shock):
    cfg, h, _ = shock
    _, _, real = stress_run("stress_shock", attrs.evolve(cfg, scenario=None))
    assert not rows(real, "alert", severity="critical")
    assert real.metrics["min_margin_buffer"] > cfg.risk.min_margin_buffer


def test_shock_beyond_the_buffer_liquidates_and_the_spot_leg_is_unwound(shock):
    cfg, h, _ = shock
    bigger = attrs.evolve(cfg, scenario=attrs.evolve(cfg.scenario, shock_return=0.40))
    _, _, result = stress_run("stress_shock", bigger)
    t = shock_ts(cfg, h)
    assert result.metrics["liquidations"] == 1
    liquidated = rows(result, "fill", liquidation=True)
    assert len(liquidated) == 1 and liquidated[0]["venue"] == cfg.perp_account and liquidated[0]["ts"] == t
    # the spot leg is sold at once: by the hard-floor cut of both legs decided
    # at the same mark, or by the naked-leg unwind after the liquidation
    sells = [i for i in rows(result, "intent", venue=cfg.spot_account, side="sell")
             if i["reason"] in ("margin_reduce", "unwind_naked_leg") and i["ts"] >= t]
    assert sells
    spot_left = sum(f["qty"] if f["side"] == "buy" else -f["qty"]
                    for f in rows(result, "fill", venue=cfg.spot_account) if f["ts"] <= t + 60 * 1_000_000_000)
    assert abs(spot_left) < 1e-9  # the naked spot leg lives under a minute
    assert result.metrics["missed_settlements"] == 0


# --- the CLI applies the scenario ---------------------------------------------------------

def test_cli_backtest_applies_the_scenario_and_says_so(tmp_path):
    out = tmp_path / "bear"
    res = CliRunner().invoke(app, ["backtest", str(SIMS / "stress_bear.toml"), "--from", "2021-11-10",
                                   "--to", "2022-01-10", "--out", str(out), "-q"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["sources"][-1] == "scenario: funding -15.00% APR"
    assert report["config"]["scenario"]["funding_shift_apr"] == -0.15
    assert report["metrics"]["mean_funding_apr_in_window"] < 0


def test_cli_shock_outside_the_window_is_one_clear_error(tmp_path):
    res = CliRunner().invoke(app, ["backtest", str(SIMS / "stress_shock.toml"), "--to", "2021-08-01",
                                   "--out", str(tmp_path / "x"), "-q"])
    assert res.exit_code == 2
    text = " ".join(res.output.split())
    assert "scenario.shock_after_days" in text and "outside the history" in text
    assert not (tmp_path / "x").exists()
