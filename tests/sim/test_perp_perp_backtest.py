"""The perp/perp backtest on the shipped real data (sims/perp_perp.toml: the
Bybit BTCUSDT perp against Binance USD-M's, 2023-01 .. 2024-06): the two
legs priced at the same instants, every settlement of each venue accrued to
that venue's leg at its own shipped rate, the book's identity, and configs
that cannot be a perp/perp carry refused by name."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fundarb.config import ConfigError, from_dict, load, to_dict
from fundarb.core.model import NS_PER_HOUR
from fundarb.data.history import SHIPPED_DIR, DataError, history_for, load_pair_history
from fundarb.sim.backtest import run_backtest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = load(ROOT / "sims" / "perp_perp.toml")


@functools.cache
def run():
    h = history_for(CONFIG)
    return h, run_backtest(CONFIG, h)


def test_the_legs_are_priced_at_the_same_instants():
    h, _ = run()
    # Binance's hourly closes beside Bybit's 8-hour closes, which print at 04, 12 and 20 UTC
    assert set((h.hours // NS_PER_HOUR % 24).tolist()) == {4, 12, 20}
    assert np.all(np.diff(h.hours) == 8 * NS_PER_HOUR) and h.hours.size > 1600
    basis = np.abs(h.spot / h.perp - 1)
    assert np.median(basis) < 5e-4 and basis.max() < 0.01  # one instant on both venues: a few bp apart
    assert h.long_funding_ts is not None and h.long_funding_ts.size == h.funding_ts.size


def test_each_venue_settles_its_own_leg_at_its_own_rate():
    h, r = run()
    shipped = pl.read_parquet(SHIPPED_DIR / "funding_settlements.parquet")
    rates = {venue: {int(t) * 1_000_000: float(x) for t, x in shipped.filter(
        (pl.col("venue") == venue) & (pl.col("symbol") == "BTCUSDT")).select("funding_time_ms", "funding_rate").iter_rows()}
        for venue in ("binance", "bybit")}
    rows = [row for kind, row in r.log if kind == "funding"]
    assert {row["venue"] for row in rows} == {CONFIG.spot_account, CONFIG.perp_account}
    for row in rows:
        venue = "bybit" if row["venue"] == CONFIG.spot_account else "binance"
        assert row["rate"] == rates[venue][row["ts"]]
        assert row["amount"] == pytest.approx(-row["qty"] * row["mark"] * row["rate"], rel=1e-12)
    m = r.metrics
    for account, total in m["funding_by_account"].items():
        assert total == pytest.approx(sum(x["amount"] for x in rows if x["venue"] == account), abs=1e-6)
    assert m["missed_settlements"] == 0 and m["liquidations"] == 0 and m["entries"] > 0
    assert m["structure"] == "perp_perp" and m["transfers"] > 0  # collateral moved back between the venues while flat


def test_the_book_identity_holds_and_the_legs_stay_equal():
    _, r = run()
    m = r.metrics
    assert m["net_pnl"] == pytest.approx(m["funding_net"] - m["fees"] - m["slippage"] + m["price_pnl"], abs=1e-6)
    assert m["delta_drift_max"] < 1e-9
    # the legs are equal whenever no order is in flight (drift above), and what was bought of one was sold of the other
    fills = [row for kind, row in r.log if kind == "fill"]
    net = {a: sum(f["qty"] * (1 if f["side"] == "buy" else -1) for f in fills if f["venue"] == a)
           for a in (CONFIG.spot_account, CONFIG.perp_account)}
    assert net[CONFIG.spot_account] == pytest.approx(-net[CONFIG.perp_account], abs=1e-9)


@pytest.mark.parametrize(("changes", "field"), [
    ({"spot": {"symbol": "BTC/USDT"}}, "spot.symbol"),
    ({"spot": {"exchange": "binanceusdm"}}, "spot.exchange"),
])
def test_a_config_that_is_no_cross_venue_perp_pair_is_refused_by_name(changes, field):
    raw = copy.deepcopy(to_dict(CONFIG))
    for section, values in changes.items():
        raw[section].update(values)
    with pytest.raises(ConfigError) as err:
        from_dict(raw, "pp.toml")
    assert field in str(err.value)


def test_a_venue_without_known_close_instants_is_refused():
    with pytest.raises(DataError, match="close instants"):
        load_pair_history(("gate", "BTC/USDT:USDT"), ("binanceusdm", "BTC/USDT:USDT"), "2023-01-01", "2023-02-01")


def test_the_figures_findings_and_readme_quote_are_the_backtests(tmp_path):
    """docs/findings.md and README quote `fundarb backtest sims/perp_perp.toml` and the spot/perp carry over its window."""
    from typer.testing import CliRunner

    from fundarb.cli.main import app

    _, r = run()
    m = r.metrics
    res = CliRunner().invoke(app, ["backtest", str(ROOT / "sims" / "spot_perp.toml"), "--from", "2023-01-01", "--to",
                                   "2024-07-01", "--out", str(tmp_path / "b"), "-q"])
    assert res.exit_code == 0, res.output
    import json

    base = json.loads((tmp_path / "b" / "report.json").read_text())["metrics"]
    findings = " ".join((ROOT / "docs" / "findings.md").read_text().split())
    readme = " ".join((ROOT / "README.md").read_text().split())
    lost = f"{-m['net_apr']:.2%}"
    assert f"carry lost {lost} a year on capital: {m['entries']} entries" in findings
    fund, fees = m["funding_by_account"], m["fees_by_account"]
    assert (f"funding {fund[CONFIG.spot_account]:+,.2f} USDT on the Bybit leg and {fund[CONFIG.perp_account]:+,.2f} on the "
            f"Binance leg, fees {fees[CONFIG.spot_account]:,.2f} and {fees[CONFIG.perp_account]:,.2f}") in findings
    assert f"basis {m['price_pnl']:+,.2f}, {m['transfers']} collateral moves" in findings
    assert f"made {base['net_apr']:.2%} (Sharpe {base['sharpe']:.2f}, {base['entries']} entries)" in findings
    assert f"lost {lost} a year where Binance's spot/perp carry made {base['net_apr']:.2%}" in readme


# --- the joint bootstrap: both venues drawn together, bar by bar ---------------------------------

def test_the_pair_history_is_cut_into_bars_with_each_venues_settlement():
    from fundarb.research.bootstrap import PairPeriods, cut_periods

    h, _ = run()
    src = cut_periods(h)
    assert isinstance(src, PairPeriods) and src.periods == h.hours.size - 1
    # each venue settles at 00, 08 and 16 UTC: 4 hours before the bar's close at 04, 12 and 20
    assert set(src.offset.tolist()) == {4 * NS_PER_HOUR} and set(src.long_offset.tolist()) == {4 * NS_PER_HOUR}
    assert src.rate.tolist() == h.funding_rate.tolist() and src.long_rate.tolist() == h.long_funding_rate.tolist()


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_a_bootstrapped_bar_keeps_its_prices_and_both_venues_rates_together(seed):
    from fundarb.research.bootstrap import bootstrap_history, cut_periods

    h, _ = run()
    src = cut_periods(h)
    path = bootstrap_history(src, 24 * 90, 5.0, np.random.default_rng(seed))
    assert path.hours.size == 271 and np.all(np.diff(path.hours) == 8 * NS_PER_HOUR)
    by_return = {round(float(r), 15): k for k, r in enumerate(src.log_ret)}
    rets = np.diff(np.log(path.spot))
    matched = 0
    for i, r in enumerate(rets):
        k = by_return.get(round(float(r), 15))
        if k is None:
            continue  # a return that rounds differently after the rebuild: the others carry the check
        matched += 1
        assert path.funding_rate[i] == src.rate[k] and path.long_funding_rate[i] == src.long_rate[k]
        assert path.perp[i + 1] / path.spot[i + 1] - 1 == pytest.approx(src.basis[k], abs=1e-12)
        assert path.funding_ts[i] == path.hours[i + 1] - 4 * NS_PER_HOUR
    assert matched > 200, matched


def test_monte_carlo_runs_a_perp_perp_carry_with_no_missed_settlement(tmp_path):
    from typer.testing import CliRunner

    from fundarb.cli.main import app

    res = CliRunner().invoke(app, ["montecarlo", str(ROOT / "sims" / "perp_perp.toml"), "--paths", "3", "--days", "60",
                                   "--out", str(tmp_path / "mc"), "-q"])
    assert res.exit_code == 0, res.output
    rows = pl.read_csv(tmp_path / "mc" / "paths.csv")
    assert rows.height == 3 and (rows["missed_settlements"] == 0).all()
