"""`fundarb data fetch` against the loopback emulator through the real ccxt:
many pages, injected 429s and 5xx, an interruption and a resume."""

from __future__ import annotations

import polars as pl
import pytest
from typer.testing import CliRunner

from fundarb.cli.main import app
from fundarb.core.funding import scheduled_instant
from fundarb.data.fetch import (
    FUNDING_SCHEMA,
    OHLCV_SCHEMA,
    Backoff,
    FetchError,
    FetchPlan,
    fetch_all,
    read_store,
)
from fundarb.data.history import SHIPPED_DIR, parse_time
from fundarb.data.store_layout import funding_path, ohlcv_path

MS = 1_000_000
SINCE, UNTIL = "2021-07-01", "2024-06-01"


def real_funding(venue: str, lo_ms: int, hi_ms: int) -> list[tuple[int, float]]:
    f = pl.read_parquet(SHIPPED_DIR / "funding_settlements.parquet").filter(
        (pl.col("venue") == venue) & (pl.col("symbol") == "BTCUSDT")
        & (pl.col("funding_time_ms") >= lo_ms) & (pl.col("funding_time_ms") <= hi_ms)).sort("funding_time_ms")
    return list(zip(f["funding_time_ms"].to_list(), f["funding_rate"].to_list()))


def settled(stored: pl.DataFrame) -> list[tuple[int, float]]:
    """(settlement instant, rate) of stored rows: the venue's raw stamps
    snapped by the loader's rule (Binance stamps a few ms late)."""
    instants = [scheduled_instant(t * MS, 8.0, 1_000_000_000) // MS for t in stored["timestamp_ms"].to_list()]
    return list(zip(instants, stored["funding_rate"].to_list()))


def plan(venue: str, spot: bool = False) -> FetchPlan:
    sv, ss = ("binance", "BTC/USDT") if spot else (None, None)
    return FetchPlan(venue, "BTC/USDT:USDT", parse_time(SINCE, "s") // MS, parse_time(UNTIL, "u") // MS, "1h", sv, ss)


def quiet_backoff() -> Backoff:
    return Backoff(sleep=lambda s: None)


@pytest.mark.parametrize("venue, source, per_page", [("binanceusdm", "binance", 1000), ("bybit", "bybit", 200)])
def test_thousands_of_settlements_across_pages_with_faults_end_exact(tmp_path, emulator, loopback_only, venue, source, per_page):
    emulator.set_time("2024-06-02T00:00")
    path = "/fapi/v1/fundingRate" if venue == "binanceusdm" else "/v5/market/funding/history"
    emulator.faults.add("rate_limit", path=path, times=3, retry_after_s=2)
    emulator.faults.add("server_error", path=path, times=2, status=502)
    emulator.faults.add("server_error", path=path, probability=0.2, times=None, status=503)
    backoff = quiet_backoff()
    p = plan(venue)
    reports = fetch_all(p, tmp_path, emulator.base_url, backoff, rate_limit=False)
    stored = read_store(funding_path(tmp_path, venue, p.symbol), FUNDING_SCHEMA)
    expected = real_funding(source, p.since_ms, p.until_ms)
    assert len(expected) > 3000
    assert settled(stored) == expected
    late = (stored["timestamp_ms"] % 3_600_000).to_list()
    if venue == "binanceusdm":  # stored as the venue sent them: 0-16 ms after the instant, with its mark
        assert max(late) <= 16 and sum(1 for x in late if x) > len(late) // 2
        # the venue's mark, but none before the shipped prices begin (2021-07-01 01:00), as Binance prints ""
        assert stored.filter(pl.col("timestamp_ms") > 1_625_104_800_000)["mark_price"].is_not_null().all()
        assert stored["mark_price"].is_null().sum() == 1
    else:
        assert not any(late) and stored["mark_price"].is_null().all()  # Bybit: on the instant, no mark in its history
    funding = reports[0]
    assert funding.pages > len(expected) // per_page  # many pages
    assert funding.checks["gaps"] == [] and funding.checks["duplicates"] == 0 and funding.checks["out_of_range"] == []
    assert len(backoff.waited) >= 5 and max(backoff.waited) >= 2.0  # retried, honouring Retry-After
    statuses = [e.status for e in emulator.log.entries if e.path == path]
    assert statuses.count(429) == 3 and statuses.count(502) == 2 and statuses.count(503) > 0


def test_an_interrupted_fetch_resumes_where_it_stopped(tmp_path, emulator, loopback_only):
    emulator.set_time("2024-06-02T00:00")
    path = "/fapi/v1/fundingRate"
    p = plan("binanceusdm")
    pages = []

    def stop_after_three(what: str, ts: int) -> None:
        pages.append(ts)
        if len(pages) == 3 and "funding" in what:
            emulator.faults.add("server_error", path=path, times=None, status=500)  # the venue goes down

    with pytest.raises(FetchError, match="gave up after 4 attempts: ExchangeNotAvailable"):
        fetch_all(p, tmp_path, emulator.base_url, Backoff(attempts=4, sleep=lambda s: None), rate_limit=False,
                  progress=stop_after_three)
    store = funding_path(tmp_path, "binanceusdm", p.symbol)
    partial = read_store(store, FUNDING_SCHEMA)
    assert 0 < partial.height < 3000  # what arrived before the outage is kept
    emulator.faults.clear()
    emulator.log.clear()
    reports = fetch_all(p, tmp_path, emulator.base_url, quiet_backoff(), rate_limit=False)
    assert reports[0].resumed_from_ms == int(partial["timestamp_ms"].max())
    first_query = next(e.query for e in emulator.log.entries if e.path == path)
    assert int(first_query["startTime"]) == int(partial["timestamp_ms"].max()) + 1  # not from the start again
    stored = read_store(store, FUNDING_SCHEMA)
    assert settled(stored) == real_funding("binance", p.since_ms, p.until_ms)


def test_ohlcv_of_both_legs(tmp_path, emulator, loopback_only):
    emulator.set_time("2024-06-02T00:00")
    p = plan("binanceusdm", spot=True)
    p = FetchPlan(p.venue, p.symbol, parse_time("2024-01-01", "s") // MS, p.until_ms, "1h", "binance", "BTC/USDT")
    fetch_all(p, tmp_path, emulator.base_url, quiet_backoff(), rate_limit=False)
    prices = pl.read_parquet(SHIPPED_DIR / "prices_1h.parquet")
    for venue, symbol, market in (("binanceusdm", "BTC/USDT:USDT", "perp_linear"), ("binance", "BTC/USDT", "spot")):
        bars = read_store(ohlcv_path(tmp_path, venue, symbol, "1h"), OHLCV_SCHEMA)
        real = prices.filter((pl.col("market") == market) & (pl.col("symbol") == "BTCUSDT")
                             & (pl.col("open_time_ms") >= p.since_ms - 3_600_000)  # the bar whose close is the price at since
                             & (pl.col("open_time_ms") <= p.until_ms)).sort("open_time_ms")
        assert bars["timestamp_ms"].to_list() == real["open_time_ms"].to_list()
        assert bars["close"].to_list() == real["close"].to_list()


def test_cli_fetch_reports_what_it_stored_and_checked(tmp_path, emulator, loopback_only):
    emulator.set_time("2024-06-02T00:00")
    res = CliRunner().invoke(app, [
        "data", "fetch", "--venue", "bybit", "--symbol", "BTC/USDT:USDT", "--since", "2024-01-01", "--until", "2024-03-01",
        "--store", str(tmp_path), "--api-url", emulator.base_url, "--no-spot"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "bybit BTC/USDT:USDT funding: 181 rows 2024-01-01 00:00 .. 2024-03-01 00:00 UTC" in res.output  # --until is inclusive
    assert "bybit BTC/USDT:USDT 1h OHLCV: 1,442 rows" in res.output  # from the bar that closes at --since
    assert "no gaps, duplicates or out-of-range values" in res.output


def test_unknown_symbol_is_one_clear_error(tmp_path, emulator, loopback_only):
    res = CliRunner().invoke(app, ["data", "fetch", "--venue", "binanceusdm", "--symbol", "DOGE/USDT:USDT", "--since", "2024-01-01",
                                   "--until", "2024-02-01", "--store", str(tmp_path), "--api-url", emulator.base_url])
    assert res.exit_code == 2 and "binanceusdm has no market 'DOGE/USDT:USDT' (BTC markets: BTC/USDT:USDT)" in res.output
    assert not list(tmp_path.iterdir())
