"""Funding statistics on SYNTHETIC frames whose answers are worked out by hand:
APR normalisation, distribution and extremes, runs, autocorrelation, the
threshold table, regimes from a constructed price path, byte-identical output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fundarb.config import load
from fundarb.output import funding_stats as O
from fundarb.research import funding_stats as S
from fundarb.wiring import round_trip_cost

BASELINE = Path(__file__).resolve().parents[2] / "sims" / "spot_perp.toml"
MS_H = 3_600_000
MS_D = 24 * MS_H
T0 = 1_640_995_200_000  # 2022-01-01 00:00 UTC


def synthetic_funding(rates, venue="synth", symbol="PERP", interval=8.0, start=T0, step_hours=None) -> pl.DataFrame:
    """A synthetic settlement frame (no real data): one row per rate."""
    step = int((step_hours or interval) * MS_H)
    n = len(rates)
    return pl.DataFrame({
        "venue": [venue] * n, "symbol": [symbol] * n,
        "funding_time_ms": [start + i * step for i in range(n)],
        "funding_rate": [float(r) for r in rates], "interval_hours": [float(interval)] * n,
        "source": ["synthetic"] * n,
    })


def synthetic_prices(closes, start=T0) -> pl.DataFrame:
    """Synthetic hourly Binance-spot-shaped closes; close i belongs to open_time + 1h."""
    n = len(closes)
    return pl.DataFrame({
        "venue": ["binance"] * n, "market": ["spot"] * n, "symbol": ["BTCUSDT"] * n,
        "open_time_ms": [start + i * MS_H for i in range(n)], "close": [float(c) for c in closes],
    })


# --- normalisation, distribution ---------------------------------------------------

def test_apr_uses_each_rows_own_interval():
    f = pl.concat([synthetic_funding([0.0001, 0.0002], "a", "X", 8.0), synthetic_funding([0.0001], "b", "Y", 1.0)])
    fr = S.funding_apr_frame(f)
    assert fr["apr"].to_list() == pytest.approx([0.0001 * 8760 / 8, 0.0002 * 8760 / 8, 0.0001 * 8760])
    assert fr["apr"][0] == pytest.approx(0.1095)
    assert fr["year"].to_list() == [2022, 2022, 2022]


def test_since_until_and_series_selection():
    f = pl.concat([synthetic_funding([0.0001] * 6, "a", "X"), synthetic_funding([0.0001] * 6, "a", "Z"),
                   synthetic_funding([0.0001] * 6, "b", "Y")])
    assert S.select_series(f, ["a"]) == [("a", "X"), ("a", "Z")]
    assert S.select_series(f, ["a:Z", "b"]) == [("a", "Z"), ("b", "Y")]
    with pytest.raises(S.StatsError, match=r"unknown venue 'c'; known: a, b, a:X"):
        S.select_series(f, ["c"])
    fr = S.funding_apr_frame(f, [("a", "X")], since_ms=T0 + 8 * MS_H, until_ms=T0 + 40 * MS_H)
    assert fr["ts_ms"].to_list() == [T0 + k * 8 * MS_H for k in (1, 2, 3, 4)]  # until is exclusive


def test_distribution_share_negative_and_extremes_with_their_times():
    apr = np.array([0.1, -0.2, 0.5, -0.2, 0.5, 0.0, 0.3, 0.1])
    ts = np.array([T0 + i * 8 * MS_H for i in range(apr.size)])
    d = S.distribution(apr, ts)
    assert d["count"] == 8
    assert d["mean_apr"] == pytest.approx(1.1 / 8)
    assert d["share_negative"] == 0.25  # 0.0 is not negative
    assert d["min_apr"] == -0.2 and d["min_time"] == "2022-01-01 08:00"  # first of the two
    assert d["max_apr"] == 0.5 and d["max_time"] == "2022-01-01 16:00"
    assert d["median_apr"] == pytest.approx(0.1)
    assert d["std_apr"] == pytest.approx(float(np.std(apr, ddof=1)))
    # percentiles interpolate linearly between order statistics: 0..100 gives the percent itself
    d = S.distribution(np.arange(101, dtype=float), np.arange(101) * MS_H + T0)
    assert (d["p5_apr"], d["p25_apr"], d["p75_apr"], d["p95_apr"]) == (5.0, 25.0, 75.0, 95.0)


def test_group_stats_by_year_and_empty_group_shape():
    # 2021-12-31 16:00 then 2022-01-01 00:00, 08:00
    f = synthetic_funding([-0.0001, 0.0001, 0.0003], start=T0 - 8 * MS_H)
    fr = S.funding_apr_frame(f)
    by_year = S.group_stats(fr, ["year"])
    assert by_year["year"].to_list() == [2021, 2022]
    assert by_year["count"].to_list() == [1, 2]
    assert by_year["mean_apr"].to_list() == pytest.approx([-0.1095, 0.219])
    assert by_year["share_negative"].to_list() == [1.0, 0.0]
    assert by_year["std_apr"][0] is None  # one settlement: no spread
    cov = S.year_coverage(fr).sort("year")
    assert cov["coverage"].to_list() == pytest.approx([8 / 8760, 16 / 8760])


# --- persistence -----------------------------------------------------------------

def test_runs_in_settlements_and_days():
    mask = np.array([1, 1, 0, 1, 1, 1, 0, 0, 1], dtype=bool)
    ts = np.array([T0 + i * 8 * MS_H for i in range(mask.size)])
    iv = np.full(mask.size, 8.0)
    found = S.runs(mask, ts, iv)
    assert [(n, d) for _, n, d in found] == [(2, pytest.approx(2 / 3)), (3, 1.0), (1, pytest.approx(1 / 3))]
    assert found[1][0] == int(ts[3])
    summary = S.run_summary(found)
    assert summary["count"] == 3
    assert summary["mean_settlements"] == 2.0 and summary["median_settlements"] == 2.0 and summary["max_settlements"] == 3
    assert summary["max_days"] == 1.0 and summary["longest_start"] == "2022-01-02 00:00"


def test_a_data_gap_ends_a_run():
    ts = np.array([0, 8, 16, 48, 56]) * MS_H + T0  # 32 h between the 3rd and 4th: a gap
    found = S.runs(np.ones(5, dtype=bool), ts, np.full(5, 8.0))
    assert [n for _, n, _ in found] == [3, 2]


def test_persistence_counts_negative_runs_and_hourly_day_lag():
    rates = [0.0002, 0.0002, -0.0001, -0.0001, -0.0001, 0.0, 0.0002, -0.0001]
    p = S.persistence(S.funding_apr_frame(synthetic_funding(rates)))
    assert p["runs_negative"]["count"] == 2
    assert p["runs_negative"]["max_settlements"] == 3
    assert p["runs_above"]["count"] == 2  # 0.0002 per 8h = 21.9% APR > 10%
    assert p["lag_1_day_settlements"] == 3
    hourly = S.persistence(S.funding_apr_frame(synthetic_funding([0.00001 * (i % 5) for i in range(100)], interval=1.0)))
    assert hourly["lag_1_day_settlements"] == 24


def test_lag_1_autocorrelation_of_constructed_series():
    # 1,2,3,4: deviations -1.5,-.5,.5,1.5; sum of squares 5; lag-1 products .75-.25+.75 = 1.25
    assert S.autocorrelation(np.array([1.0, 2.0, 3.0, 4.0]), [1])[0] == pytest.approx(0.25)
    # alternating +-1 over n points: lag 1 = -(n-1)/n, lag 2 = (n-2)/n
    x = np.array([1.0, -1.0] * 10)
    a1, a2 = S.autocorrelation(x, [1, 2])
    assert a1 == pytest.approx(-19 / 20) and a2 == pytest.approx(18 / 20)
    assert S.autocorrelation(np.ones(5), [1]) == [None]  # no variance: undefined
    assert S.autocorrelation(x, [20]) == [None]


# --- the entry-threshold question ---------------------------------------------------

def test_signal_is_the_mean_of_the_last_nine_settlements():
    apr = np.arange(12, dtype=float)
    sig = S.signal_apr(apr, 9)
    assert np.isnan(sig[:8]).all()
    assert sig[8:].tolist() == [4.0, 5.0, 6.0, 7.0]


def test_forward_apr_is_the_mean_over_the_holding_window_after_entry():
    ts = np.array([0, 1, 2, 3, 4]) * MS_D + T0
    apr = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    fwd = S.forward_apr(ts, apr, 2)
    # entry after day 0: days 1 and 2; after day 1: 2, 3; after day 2: 3, 4; later windows run past the data
    assert fwd[:3].tolist() == [1.5, 2.5, 3.5]
    assert np.isnan(fwd[3:]).all()


def test_threshold_table_on_a_constant_rate_is_the_rate_minus_the_amortised_cost():
    cfg = load(BASELINE)
    rt = round_trip_cost(cfg, 40_000.0)
    rate = 0.0002  # per 8h: 21.9% APR
    n = 3 * 200  # 200 days of 8h settlements
    one = S.funding_apr_frame(synthetic_funding([rate] * n))
    t = S.threshold_table(one, [0.0, 0.20, 0.25], [7, 30], rt)
    apr = rate * 8760 / 8
    for h in (7, 30):
        rows = t.filter(pl.col("holding_days") == h)
        below, above = rows.filter(pl.col("threshold_apr") < apr), rows.filter(pl.col("threshold_apr") > apr)
        assert below["share_above"].to_list() == [1.0, 1.0]
        assert below["expected_net_apr"].to_list() == pytest.approx([apr - rt * 365 / h] * 2, rel=1e-12)
        assert below["cost_apr"][0] == pytest.approx(rt * 365 / h)
        # signal ready from the 9th settlement; the window must end by the last one
        assert below["entries"].to_list() == [n - 8 - 3 * h] * 2
        assert below["signals"][0] == n - 8
        assert above["share_above"].to_list() == [0.0] and above["entries"].to_list() == [0]
        assert above["expected_net_apr"][0] is None
    mp = S.min_profitable(t)
    assert mp["7"] == {"threshold_apr": 0.0, "share_above": 1.0, "expected_net_apr": pytest.approx(apr - rt * 365 / 7),
                       "entries": n - 8 - 21}


def test_min_profitable_picks_the_lowest_threshold_with_positive_net():
    t = pl.DataFrame({"threshold_apr": [0.0, 0.05, 0.10, 0.0, 0.05, 0.10], "holding_days": [7.0] * 3 + [30.0] * 3,
                      "share_above": [0.9, 0.5, 0.2, 0.9, 0.5, 0.2], "entries": [9, 5, 2, 9, 5, 2],
                      "expected_net_apr": [-0.1, 0.02, 0.05, -0.1, -0.01, None]})
    mp = S.min_profitable(t)
    assert mp["7"] == {"threshold_apr": 0.05, "share_above": 0.5, "expected_net_apr": 0.02, "entries": 5}
    assert mp["30"] is None


# --- regimes and windows ------------------------------------------------------------

def test_regime_labels_from_a_constructed_price_path():
    # hourly closes from T0: 100 for 200 days, 130 for the next 100, then 70 until day 400
    closes = [100.0] * (200 * 24) + [130.0] * (100 * 24) + [70.0] * (100 * 24)
    prices = synthetic_prices(closes)
    days = [50, 150, 210, 310, 399, 420]
    f = pl.DataFrame({"venue": "s", "symbol": "P", "funding_time_ms": [T0 + d * MS_D for d in days],
                      "funding_rate": 0.0001, "interval_hours": 8.0})
    fr = S.label_regimes(S.funding_apr_frame(f), S.spot_closes(prices))
    assert fr["regime"].to_list() == [
        "no price data",  # day 50: no close 90 days earlier
        "sideways",       # day 150: 100 / 100
        "bull",           # day 210: 130 / 100 = +30%
        "bear",           # day 310: 70 / 130 = -46%
        "sideways",       # day 399: 70 / 70 (day 309)
        "no price data",  # day 420: the last close is 20 days old
    ]
    assert fr["trailing_return"][2] == pytest.approx(0.3)


def test_common_window_is_the_one_most_series_cover():
    d = MS_D
    sp = pl.DataFrame({"venue": ["a", "b", "c", "d"], "symbol": ["X"] * 4,
                       "first_ms": [0, 100 * d, 150 * d, 2000 * d], "last_ms": [1000 * d, 900 * d, 500 * d, 2500 * d]})
    w = S.common_window(sp, min_days=180)
    assert (w["start_ms"], w["end_ms"]) == (150 * d, 500 * d)
    assert w["series"] == [("a", "X"), ("b", "X"), ("c", "X")]


# --- the output folder ---------------------------------------------------------------

def _synthetic_inputs():
    rng = np.random.default_rng(11)
    rates8 = 0.0001 + 0.0002 * np.sin(np.arange(3 * 400) / 40) + rng.normal(0, 5e-5, 3 * 400)
    rates1 = 0.00001 + 0.00003 * np.sin(np.arange(24 * 300) / 300)
    funding = pl.concat([synthetic_funding(rates8, "alpha", "PERP", 8.0),
                         synthetic_funding(rates1, "beta", "PERP", 1.0, start=T0 + 50 * MS_D)])
    closes = 20_000 * np.exp(np.cumsum(rng.normal(0, 0.004, 24 * 420)))
    return funding, synthetic_prices(closes, start=T0 - 100 * MS_D)


def test_write_stats_is_byte_identical_on_the_same_inputs(tmp_path):
    funding, prices = _synthetic_inputs()
    cfg = load(BASELINE)
    outs = []
    for name in ("one", "two"):
        out = tmp_path / name
        st, _ = O.write_stats(funding, out, None, prices=prices, cfg=cfg)
        assert sorted(p.name for p in out.iterdir()) == sorted(O.STATS_FILES)
        outs.append({p.name: p.read_bytes() for p in out.iterdir()})
    assert outs[0] == outs[1]
    assert outs[0][O.VENUE_PNG][:8] == b"\x89PNG\r\n\x1a\n"
    assert st.cost["round_trip_cost"] == round_trip_cost(cfg, float(S.spot_closes(prices)["close"].median()))
    assert st.reference == ("alpha", "PERP")  # the config's perp is absent: the longest-running series


def test_write_stats_refuses_an_empty_selection_and_writes_nothing(tmp_path):
    funding, prices = _synthetic_inputs()
    out = tmp_path / "out"
    with pytest.raises(S.StatsError, match="no funding settlements of alpha PERP"):
        O.write_stats(funding, out, ["alpha"], prices=prices, until="2021-01-01", cfg=load(BASELINE))
    with pytest.raises(S.StatsError, match="is not before"):
        O.write_stats(funding, out, None, prices=prices, since="2022-03-01", until="2022-02-01", cfg=load(BASELINE))
    assert not out.exists()
