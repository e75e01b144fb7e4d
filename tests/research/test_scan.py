"""``fundarb scan --history``: the ranking worked by hand on SYNTHETIC
settlements (constant rates, labelled as such: no venue paid them), its
cost and capital rules against the backtest's, and the command on the
shipped real data as a user runs it."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fundarb.app.funding_stats import read_settlements
from fundarb.cli.main import app
from fundarb.config import load
from fundarb.data.history import SHIPPED_DIR
from fundarb.research.funding_stats import StatsError
from fundarb.research.scan import COIN_MARGINED, PERP_PERP, SPOT_LINEAR, ScanCosts, scan_history
from fundarb.wiring import round_trip_cost

ROOT = Path(__file__).resolve().parents[2]
BASELINE = load(ROOT / "sims" / "spot_perp.toml")
H = 3_600_000
T0 = int(datetime(2023, 1, 1, tzinfo=UTC).timestamp() * 1000)
DAYS = 30


def synthetic(venue: str, symbol: str, rate: float, interval_h: int, days: int = DAYS, start: int = T0) -> pl.DataFrame:
    """SYNTHETIC settlements: a constant ``rate`` every ``interval_h`` hours."""
    n = days * 24 // interval_h
    return pl.DataFrame({"venue": [venue] * n, "symbol": [symbol] * n,
                         "funding_time_ms": [start + i * interval_h * H for i in range(n)],
                         "funding_rate": [rate] * n, "interval_hours": [float(interval_h)] * n,
                         "source": ["synthetic"] * n})


COSTS = ScanCosts(spot_leg=0.001, perp_leg=0.0005, hold_days=30.0, spot_linear_capital=1.5, perp_leg_capital=0.5)


def test_a_hand_worked_scan_ranks_every_structure():
    funding = pl.concat([
        synthetic("alpha", "BTCUSDT", 0.0001, 8),      # 10.95% APR
        synthetic("beta", "BTC-USD", 0.00002, 1),      # hourly: 17.52% APR
        synthetic("gamma", "BTCUSD_PERP", 0.00005, 8),  # inverse: 5.475% APR
    ])
    doc = scan_history(funding, T0, T0 + DAYS * 24 * H, COSTS)
    rows = {(r["structure"], r["short"], r["long"]): r for r in doc["rows"]}
    assert doc["buckets"] == DAYS * 3 and doc["left_out"] == {}
    # spot/linear on beta: 8 hourly settlements a bucket, 17.52% gross; a round trip of 0.3% over 30 days is 3.65%
    beta = rows[(SPOT_LINEAR, "beta BTC-USD", "spot")]
    assert beta["gross_apr"] == pytest.approx(0.00002 * 8760)
    assert beta["cost_apr"] == pytest.approx(2 * (0.001 + 0.0005) * 365 / 30)
    assert beta["net_apr_on_capital"] == pytest.approx((0.1752 - 0.0365) / 1.5)
    # the inverse perp is a coin-margined carry, on capital equal to its notional
    gamma = rows[(COIN_MARGINED, "gamma BTCUSD_PERP", "spot")]
    assert gamma["capital_per_notional"] == 1.0 and gamma["gross_apr"] == pytest.approx(0.05475)
    # perp/perp shorts beta (it paid more) against alpha: the differential, on two legs' collateral
    pair = rows[(PERP_PERP, "beta BTC-USD", "alpha BTCUSDT")]
    assert pair["gross_apr"] == pytest.approx(0.1752 - 0.1095)
    assert pair["cost_apr"] == pytest.approx(4 * 0.0005 * 365 / 30)
    assert pair["capital_per_notional"] == 1.0
    assert pair["negative_buckets"] == 0.0
    assert (PERP_PERP, "alpha BTCUSDT", "beta BTC-USD") not in rows  # its mirror loses: not listed
    assert not any(r["structure"] == PERP_PERP and "gamma" in r["short"] + r["long"] for r in doc["rows"])
    assert [r["rank"] for r in doc["rows"]] == list(range(1, len(doc["rows"]) + 1))
    nets = [r["net_apr_on_capital"] for r in doc["rows"]]
    assert nets == sorted(nets, reverse=True)


def test_a_series_that_does_not_cover_the_window_is_left_out_with_its_coverage():
    funding = pl.concat([synthetic("alpha", "BTCUSDT", 0.0001, 8),
                         synthetic("late", "BTCUSDT", 0.0003, 8, days=DAYS // 2, start=T0 + DAYS // 2 * 24 * H)])
    doc = scan_history(funding, T0, T0 + DAYS * 24 * H, COSTS)
    assert doc["left_out"] == {"late BTCUSDT": pytest.approx(0.5)}
    assert all("late" not in r["short"] + r["long"] for r in doc["rows"])


def test_negative_buckets_count_the_buckets_in_which_the_carry_paid():
    pay = synthetic("alpha", "BTCUSDT", 0.0001, 8).with_columns(
        pl.when(pl.int_range(pl.len()) % 4 == 0).then(-0.0001).otherwise(pl.col("funding_rate")).alias("funding_rate"))
    (row,) = scan_history(pay, T0, T0 + DAYS * 24 * H, COSTS)["rows"]
    n = DAYS * 3
    paid = sum(1 for i in range(n) if i % 4 == 0)
    assert row["negative_buckets"] == pytest.approx(paid / n)
    assert row["gross_apr"] == pytest.approx(0.0001 * (n - 2 * paid) * 1095 / n)


@settings(max_examples=60, deadline=None)
@given(rates=st.lists(st.floats(-0.001, 0.001), min_size=2, max_size=5, unique=True))
def test_each_pair_is_listed_once_shorting_the_one_that_paid_more(rates):
    funding = pl.concat([synthetic(f"v{i}", "BTCUSDT", r, 8) for i, r in enumerate(rates)])
    rows = [r for r in scan_history(funding, T0, T0 + DAYS * 24 * H, COSTS)["rows"] if r["structure"] == PERP_PERP]
    listed = {frozenset((r["short"], r["long"])) for r in rows}
    assert len(listed) == len(rows)
    for r in rows:
        assert r["gross_apr"] > 0
        short, long = (rates[int(name.split()[0][1:])] for name in (r["short"], r["long"]))
        assert r["gross_apr"] == pytest.approx((short - long) * 1095, rel=1e-9)
    n_pairs = sum(1 for i, a in enumerate(rates) for b in rates[i + 1:] if (a - b) * DAYS * 3 != 0)
    assert len(rows) == n_pairs


def test_the_costs_and_capital_are_the_backtests():
    price = 30_000.0
    costs = ScanCosts.of(BASELINE, price)
    assert costs.round_trip(SPOT_LINEAR) == pytest.approx(round_trip_cost(BASELINE, price), rel=1e-12)
    assert costs.capital(SPOT_LINEAR) == pytest.approx(BASELINE.capital / BASELINE.strategy.notional)
    assert costs.capital(PERP_PERP) == pytest.approx(2 * BASELINE.capital * BASELINE.perp_allocation / BASELINE.strategy.notional)
    assert costs.hold_days == BASELINE.strategy.expected_holding_days
    with pytest.raises(StatsError, match="price"):
        ScanCosts.of(BASELINE, math.nan)
    with pytest.raises(StatsError, match="empty"):
        scan_history(synthetic("alpha", "BTCUSDT", 0.0001, 8), T0, T0, COSTS)


# --- the command on the shipped real data ------------------------------------------------------

def _scan(tmp_path: Path, *args: str):
    return CliRunner().invoke(app, ["scan", "--history", "shipped", "--out", str(tmp_path / "s"), *args],
                              env={"COLUMNS": "200"})


def test_scan_history_on_the_shipped_data_ranks_and_writes_its_files(tmp_path):
    res = _scan(tmp_path)
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "s" / "scan.json").read_text())
    labels = [w["label"] for w in doc["windows"]]
    assert labels == ["2023-01-01..2024-07-01", "2023", "2024"]
    whole, y2023 = doc["windows"][0], doc["windows"][1]
    # over the whole window only Binance, Bybit and OKX cover it; in 2023 eight linear venues and three inverse do
    assert set(whole["left_out"]) == {"dydx BTC-USD", "gate BTC_USDT", "htx BTC-USDT", "kucoin XBTUSDTM", "mexc BTC_USDT"}
    assert y2023["left_out"] == {}
    assert {r["structure"] for r in y2023["rows"]} == {SPOT_LINEAR, COIN_MARGINED, PERP_PERP}
    csv_rows = (tmp_path / "s" / "scan.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + sum(len(w["rows"]) for w in doc["windows"])
    text = " ".join(res.output.split())
    assert "2023: 39 candidates" in text and "left out" in text
    findings = (ROOT / "docs" / "findings.md").read_text()
    for w in doc["windows"][:2]:  # docs/findings.md quotes the best of each kind in the whole window and in 2023
        for kind in (SPOT_LINEAR, COIN_MARGINED, PERP_PERP):
            r = next(r for r in w["rows"] if r["structure"] == kind)
            line = (f"| {w['label']} | {kind} | {r['short']} | {r['long']} | {r['gross_apr']:.2%} | {r['cost_apr']:.2%} "
                    f"| {r['net_apr_on_capital']:.2%} |")
            assert line in findings, line
    # and the default carry's place among them in 2023 and over the whole window
    prose = " ".join(findings.split())
    binance = next(r for r in y2023["rows"] if r["structure"] == SPOT_LINEAR and r["short"] == "binance BTCUSDT")
    assert f"{binance['net_apr_on_capital']:.2%} on capital that year (rank {binance['rank']} of {len(y2023['rows'])})" in prose
    binance = next(r for r in whole["rows"] if r["structure"] == SPOT_LINEAR and r["short"] == "binance BTCUSDT")
    assert f"on Binance {binance['net_apr_on_capital']:.2%}" in prose


@pytest.mark.parametrize(("args", "message"), [
    (["--history", "/nonexistent/folder"], "not a folder"),
    (["--history", "shipped", "--since", "2024-01-01", "--until", "2023-01-01"], "is not before"),
    (["--history", "shipped", "--hold", "0"], "--hold must be"),
    (["--history", "shipped", "--since", "2019-01-01", "--until", "2020-01-01"], "spot close before"),
    (["--history", "shipped", "--since", "yesterday"], "--since"),
    (["--history", "."], "no funding_settlements.parquet and no `fundarb data fetch` store there"),
])
def test_bad_scan_input_is_one_error_and_writes_nothing(args, message, tmp_path):
    out = tmp_path / "s"
    res = CliRunner().invoke(app, ["scan", *args, "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split())
    assert res.output.count("error:") == 1
    assert not out.exists()


# --- the live scan against the loopback emulator (the shipped real data from 2024-03-01 06:00) -------

def _live(server, tmp_path: Path, *args: str):
    return CliRunner().invoke(app, ["scan", "--api-url", server.base_url, "--out", str(tmp_path / "live"), *args],
                              env={"COLUMNS": "200"})


@pytest.mark.usefixtures("hang_guard")
def test_the_live_scan_reads_each_market_and_ranks_the_carries_as_the_history_rule_does(tmp_path):
    from fundarb.research.funding_stats import fmt_ms
    from fundarb.testkit.emulator.harness import running_emulator

    with running_emulator(start="2024-03-01T06:00") as server:
        res = _live(server, tmp_path)
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "live" / "scan.json").read_text())
    assert doc["failed"] == {}
    labels = [m["label"] for m in doc["markets"]]
    assert labels == ["binanceusdm BTC/USDT:USDT", "bybit BTC/USDT:USDT", "binancecoinm BTC/USD:BTC", "bybit BTC/USD:BTC"]
    by = {m["label"]: m for m in doc["markets"]}
    assert by["binancecoinm BTC/USD:BTC"]["inverse"] and not by["bybit BTC/USDT:USDT"]["inverse"]
    assert all(m["interval_hours"] == 8 and fmt_ms(m["next_ts_ms"]) == "2024-03-01 08:00" for m in doc["markets"])
    # the signal is the mean of the last nine real settlements before the emulator's clock, annualised
    shipped = read_settlements(SHIPPED_DIR).filter((pl.col("venue") == "binance") & (pl.col("symbol") == "BTCUSDT")
                                                   & (pl.col("funding_time_ms") <= int(datetime(2024, 3, 1, 6, tzinfo=UTC)
                                                                                        .timestamp() * 1000)))
    last9 = shipped.sort("funding_time_ms")["funding_rate"].to_list()[-BASELINE.strategy.signal_settlements:]
    assert by["binanceusdm BTC/USDT:USDT"]["signal_apr"] == pytest.approx(sum(last9) / len(last9) * 1095, rel=1e-9)
    # every carry the four markets allow: two spot/linear, two coin-margined, one perp/perp (the other way loses)
    kinds = sorted(r["structure"] for r in doc["rows"])
    assert kinds == [COIN_MARGINED, COIN_MARGINED, PERP_PERP, SPOT_LINEAR, SPOT_LINEAR]
    pair = next(r for r in doc["rows"] if r["structure"] == PERP_PERP)
    short, long = by[pair["short"]], by[pair["long"]]
    assert short["signal_apr"] > long["signal_apr"]
    costs = ScanCosts.of(BASELINE, sorted(m["mark"] for m in doc["markets"])[2])
    assert pair["gross_apr"] == pytest.approx(short["signal_apr"] - long["signal_apr"])
    assert pair["net_apr_on_capital"] == pytest.approx((pair["gross_apr"] - pair["cost_apr"]) / costs.capital(PERP_PERP))
    assert pair["cost_apr"] == pytest.approx(costs.round_trip(PERP_PERP) * 365 / costs.hold_days)
    nets = [r["net_apr_on_capital"] for r in doc["rows"]]
    assert nets == sorted(nets, reverse=True)
    assert "funding now, by market" in res.output and "not published" in res.output


@pytest.mark.usefixtures("hang_guard")
def test_a_rate_limited_or_silent_venue_is_shown_as_such_and_the_others_are_ranked(tmp_path):
    from fundarb.testkit.emulator.harness import running_emulator

    with running_emulator(start="2024-03-01T06:00") as server:
        server.faults.add("rate_limit", venue="bybit", times=None, retry_after_s=30)
        server.faults.add("timeout", venue="binancecoinm", times=None, delay_s=5.0)
        res = _live(server, tmp_path, "--timeout", "2")
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "live" / "scan.json").read_text())
    assert set(doc["failed"]) == {"bybit BTC/USDT:USDT", "bybit BTC/USD:BTC", "binancecoinm BTC/USD:BTC"}
    assert all(v.startswith("rate-limited") for k, v in doc["failed"].items() if k.startswith("bybit"))
    assert doc["failed"]["binancecoinm BTC/USD:BTC"].startswith("unreachable")
    assert [r["short"] for r in doc["rows"]] == ["binanceusdm BTC/USDT:USDT"]  # the one market that answered
    assert "rate-limited" in " ".join(res.output.split())


@pytest.mark.usefixtures("hang_guard")
def test_scan_history_reads_a_store_fetched_with_fundarb_data_fetch(tmp_path):
    """`fundarb data fetch` from the emulator (the shipped real series), then `scan --history STORE`:
    the store's series by their ccxt exchange ids, the inverse one as coin-margined."""
    from fundarb.testkit.emulator.harness import running_emulator

    store = tmp_path / "store"
    with running_emulator(start="2024-03-01T06:00") as server:  # its clock past the window: all of it is history
        for venue, symbol in (("binanceusdm", "BTC/USDT:USDT"), ("bybit", "BTC/USDT:USDT"), ("binancecoinm", "BTC/USD:BTC")):
            got = CliRunner().invoke(app, ["data", "fetch", "--venue", venue, "--symbol", symbol, "--since", "2024-01-01",
                                           "--until", "2024-03-01", "--store", str(store), "--api-url", server.base_url,
                                           "--no-spot", "-q", "--attempts", "2"])
            assert got.exit_code == 0, got.output
    res = CliRunner().invoke(app, ["scan", "--history", str(store), "--since", "2024-01-01", "--until", "2024-03-01",
                                   "--price", "45000", "--out", str(tmp_path / "s")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    (window,) = json.loads((tmp_path / "s" / "scan.json").read_text())["windows"]
    kinds = {(r["structure"], r["short"]) for r in window["rows"]}
    assert (COIN_MARGINED, "binancecoinm BTC_USD_BTC") in kinds
    assert (SPOT_LINEAR, "binanceusdm BTC_USDT_USDT") in kinds and (SPOT_LINEAR, "bybit BTC_USDT_USDT") in kinds
    # the same settlements as the shipped file holds for Binance's USDT perp, through the store
    shipped = read_settlements(SHIPPED_DIR).filter((pl.col("venue") == "binance") & (pl.col("symbol") == "BTCUSDT"))
    lo = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
    hi = int(datetime(2024, 3, 1, tzinfo=UTC).timestamp() * 1000)
    rates = shipped.filter((pl.col("funding_time_ms") >= lo) & (pl.col("funding_time_ms") < hi))["funding_rate"]
    binance = next(r for r in window["rows"] if r["short"] == "binanceusdm BTC_USDT_USDT" and r["structure"] == SPOT_LINEAR)
    assert binance["gross_apr"] == pytest.approx(float(rates.sum()) * 1095 / window["buckets"], rel=1e-9)


def test_the_live_scan_reads_an_hourly_venue_by_its_own_clock_and_over_the_same_span(tmp_path):
    """Hyperliquid's hourly perp on the emulator (dYdX's real hourly
    settlements as its stand-in): the history is asked from the venue's own
    clock, the signal covers as many hourly settlements as the default's
    window of 8-hour ones, and the next settlement is the hour after the venue's last."""
    from fundarb.research.funding_stats import fmt_ms
    from fundarb.testkit.emulator.harness import running_emulator

    with running_emulator(start="2023-06-01T06:30") as server:
        res = _live(server, tmp_path, "--market", "hyperliquid:BTC/USDC:USDC", "--market", "binanceusdm:BTC/USDT:USDT")
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "live" / "scan.json").read_text())
    assert doc["failed"] == {}
    hl = next(m for m in doc["markets"] if m["label"] == "hyperliquid BTC/USDC:USDC")
    assert hl["interval_hours"] == 1 and fmt_ms(hl["next_ts_ms"]) == "2023-06-01 07:00"
    cut = int(datetime(2023, 6, 1, 6, 30, tzinfo=UTC).timestamp() * 1000)
    rows = read_settlements(SHIPPED_DIR).filter((pl.col("venue") == "dydx") & (pl.col("funding_time_ms") <= cut))
    hourly = 8 * BASELINE.strategy.signal_settlements  # the default's window of 8-hour settlements, in hours
    last = rows.sort("funding_time_ms")["funding_rate"].to_list()[-hourly:]
    assert hl["signal_apr"] == pytest.approx(sum(last) / hourly * 8760, rel=1e-6)
    assert any(r["structure"] == PERP_PERP for r in doc["rows"])
