"""The loopback exchange emulator through the REAL ccxt clients.

Every expected number is read straight from the shipped parquet files here
(not through the emulator's own loader), so a shape or an off-by-one in the
emulator shows up as a mismatch with the real data. Only 127.0.0.1 is
reachable (``loopback_only``); a faulthandler watchdog bounds every test.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import ccxt
import polars as pl
import pytest

from fundarb.core.model import NS_PER_HOUR
from fundarb.data.history import FUNDING_FILE, SHIPPED_DIR
from fundarb.testkit.emulator.harness import EMULATOR_START, ccxt_client, close_at, ms, running_emulator
from fundarb.testkit.emulator.server import BINANCE_FUNDING_LATE_MS, EmulatorServer, ccxt_config, late_stamps, point_ccxt

MS_H = 3_600_000
SPOT_SYM, PERP_SYM = "BTC/USDT", "BTC/USDT:USDT"
VENUE_SYMBOLS = {"binance": [SPOT_SYM], "binanceusdm": [PERP_SYM], "bybit": [SPOT_SYM, PERP_SYM]}
FUNDING_VENUE = {"binanceusdm": "binance", "bybit": "bybit"}  # emulator venue -> rows in the parquet


pytestmark = pytest.mark.usefixtures("hang_guard")


# ----------------------------------------------------------------- the oracle: the parquet as shipped

@pytest.fixture(scope="module")
def funding() -> dict[str, pl.DataFrame]:
    rows = pl.read_parquet(SHIPPED_DIR / FUNDING_FILE)
    out = {v: rows.filter((pl.col("venue") == src) & (pl.col("symbol") == "BTCUSDT")).sort("funding_time_ms")
           for v, src in FUNDING_VENUE.items()}
    # stamp_ms: what the venue's funding history says; Binance stamps each
    # settlement 0-16 ms after its instant (the same lateness on every run)
    return {v: f.with_columns(pl.Series("stamp_ms", late_stamps(f["funding_time_ms"].to_numpy(), BINANCE_FUNDING_LATE_MS)
                                        if v == "binanceusdm" else f["funding_time_ms"].to_numpy()))
            for v, f in out.items()}


def stamp(funding: dict[str, pl.DataFrame], venue: str, instant_ms: int) -> int:
    """The venue's stamp of the settlement at ``instant_ms``."""
    return funding[venue].filter(pl.col("funding_time_ms") == instant_ms)["stamp_ms"][0]


# ----------------------------------------------------------------- binding

@pytest.mark.parametrize("host", ["0.0.0.0", "localhost", "::1", "::", "192.168.1.10", ""])
def test_binds_nothing_but_127_0_0_1(host):
    with pytest.raises(ValueError, match="127.0.0.1 only"):
        EmulatorServer(host=host)


def test_listens_on_loopback_only(emulator):
    port = emulator.port
    assert emulator.base_url == f"http://127.0.0.1:{port}"
    assert emulator.bound == ("127.0.0.1", port)
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    emulator.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_a_taken_port_is_one_clear_error(emulator):
    with pytest.raises(RuntimeError, match=f"could not bind 127.0.0.1:{emulator.port}"):
        EmulatorServer(port=emulator.port).start()


@contextmanager
def emulator_process(call: str) -> Iterator[tuple[subprocess.Popen, str, str]]:
    """``run_emulator`` in a child process: (process, its first line, its base URL);
    killed at the end if the test has not stopped it."""
    code = f"from fundarb.testkit.emulator.main import run_emulator; {call}"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        yield proc, first, re.search(r"(http://127\.0\.0\.1:\d+)", first).group(1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_run_emulator_serves_until_ctrl_c():
    with emulator_process("run_emulator(0, '2023-06-01T07:30')") as (proc, _, base):
        with urllib.request.urlopen(base + "/fapi/v1/time", timeout=5) as reply:
            assert json.load(reply) == {"serverTime": ms("2023-06-01T07:30")}
        rest = proc.stdout.readline() + proc.stdout.readline() + proc.stdout.readline()
        assert "point_ccxt" in rest + proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0


def test_run_emulator_plays_the_data_forward_at_the_given_speed():
    with emulator_process("run_emulator(0, '2023-06-01T07:30', speed=3600)") as (proc, first, base):
        assert "3600 s per second" in first
        seen = []
        for _ in range(40):  # bounded: at most about 4 s
            with urllib.request.urlopen(base + "/fapi/v1/time", timeout=5) as reply:
                seen.append(json.load(reply)["serverTime"])
            if seen[-1] >= ms("2023-06-01T09:30"):
                break
            time.sleep(0.1)
        assert seen[0] >= ms("2023-06-01T07:30") and seen[-1] >= ms("2023-06-01T09:30")
        assert seen == sorted(seen)  # the clock only moves forward
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0


def test_clock_refuses_times_outside_the_shipped_prices():
    with pytest.raises(ValueError, match="outside the shipped prices"):
        EmulatorServer(start="2020-01-01")
    with running_emulator() as server:
        with pytest.raises(ValueError, match="outside the shipped prices"):
            server.set_time("2025-01-01")
        with pytest.raises(ValueError, match="only moves forward"):
            server.advance(-1)


# ----------------------------------------------------------------- shapes through the real ccxt

@pytest.mark.parametrize("venue", ["binance", "binanceusdm", "bybit"])
def test_markets_time_ticker_book(emulator, closes, venue):
    ex = ccxt_client(emulator, venue)
    markets = ex.load_markets()
    # Bybit's unified account trades its inverse BTCUSD too (served from the COIN-M stand-in series)
    assert sorted(markets) == sorted([*VENUE_SYMBOLS[venue], *(["BTC/USD:BTC"] if venue == "bybit" else [])])
    now = ms(EMULATOR_START)
    assert ex.fetch_time() == now
    for symbol in VENUE_SYMBOLS[venue]:
        market = markets[symbol]
        assert market["id"] == "BTCUSDT" and market["active"]
        assert market["spot"] is (symbol == SPOT_SYM) and market["swap"] is (symbol == PERP_SYM)
        last = close_at(closes, symbol, now)
        ticker = ex.fetch_ticker(symbol)
        assert ticker["symbol"] == symbol and ticker["last"] == pytest.approx(last, abs=1e-9)
        day_ago = close_at(closes, symbol, now - 24 * MS_H)
        assert ticker["open"] == pytest.approx(day_ago, abs=1e-9)
        window = closes[symbol].filter((pl.col("close_ms") > now - 24 * MS_H) & (pl.col("close_ms") <= now))["close"]
        assert ticker["high"] == pytest.approx(max(window.max(), day_ago))
        assert ticker["low"] == pytest.approx(min(window.min(), day_ago))
        if ticker["bid"] is not None:  # Binance USD-M's 24hr ticker carries no book
            assert ticker["bid"] < last < ticker["ask"]
        book = ex.fetch_order_book(symbol, 5)
        bids, asks = book["bids"], book["asks"]
        assert len(bids) == len(asks) == 5
        assert bids[0][0] < last < asks[0][0]
        assert [b[0] for b in bids] == sorted((b[0] for b in bids), reverse=True)
        assert [a[0] for a in asks] == sorted(a[0] for a in asks)
    assert {e.status for e in emulator.log.entries} == {200}
    assert {e.venue for e in emulator.log.entries} == {venue}


@pytest.mark.parametrize("venue", ["binance", "binanceusdm", "bybit"])
def test_ohlcv_pages_are_the_real_closes(emulator, closes, venue):
    ex = ccxt_client(emulator, venue)
    emulator.set_time("2023-03-26T00:00")  # spans the real 2023-03-24 13:00 gap
    since, now = ms("2023-03-23T00:00"), ms("2023-03-26T00:00")
    for symbol in VENUE_SYMBOLS[venue]:
        got, cursor = [], since
        for _ in range(20):
            page = ex.fetch_ohlcv(symbol, "1h", since=cursor, limit=20)
            if not page:
                break
            got += page
            cursor = page[-1][0] + 1
        want = closes[symbol].filter((pl.col("open_time_ms") >= since) & (pl.col("close_ms") <= now))
        assert [c[0] for c in got] == want["open_time_ms"].to_list()  # the missing hour stays missing
        assert [c[4] for c in got] == want["close"].to_list()
        assert all(c[1] == c[2] == c[3] == c[4] for c in got)  # only closes exist
        assert len(got) > 60
        latest = ex.fetch_ohlcv(symbol, "1h", limit=3)  # no since: the newest complete hours
        assert [c[0] + MS_H for c in latest] == want["close_ms"].to_list()[-3:]


@pytest.mark.parametrize("venue", ["binanceusdm", "bybit"])
def test_funding_rate_now_is_the_last_settled_real_rate(emulator, closes, funding, venue):
    ex = ccxt_client(emulator, venue)
    now = ms(EMULATOR_START)
    rows = funding[venue]
    settled = rows.filter(pl.col("funding_time_ms") <= now)
    upcoming = rows.filter(pl.col("funding_time_ms") > now)
    rate = ex.fetch_funding_rate(PERP_SYM)
    assert rate["symbol"] == PERP_SYM
    assert rate["fundingRate"] == settled["funding_rate"][-1]
    assert rate["fundingTimestamp"] == upcoming["funding_time_ms"][0]
    assert rate["markPrice"] == pytest.approx(close_at(closes, PERP_SYM, now))
    assert rate["indexPrice"] == pytest.approx(close_at(closes, SPOT_SYM, now))
    assert rate["timestamp"] == now


@pytest.mark.parametrize("venue", ["binanceusdm", "bybit"])
def test_funding_history_since_limit_until(emulator, funding, venue):
    ex = ccxt_client(emulator, venue)
    rows = funding[venue]
    since, until = ms("2023-06-01T00:00"), ms("2023-06-05T00:00")
    # ccxt keeps rows at or after since; Bybit answers the newest `limit` in the window,
    # so ask from just before a settlement
    got = ex.fetch_funding_rate_history(PERP_SYM, since=since - 1, limit=5)
    want = rows.filter(pl.col("funding_time_ms") >= since).head(5)
    assert [r["timestamp"] for r in got] == want["stamp_ms"].to_list()
    assert [r["fundingRate"] for r in got] == want["funding_rate"].to_list()
    got = ex.fetch_funding_rate_history(PERP_SYM, limit=1000 if venue == "binanceusdm" else 200,
                                        params={"until": until})
    want = rows.filter(pl.col("stamp_ms") <= until)  # a settlement stamped after `until` is not in it
    assert got[-1]["timestamp"] == want["stamp_ms"][-1]
    assert [r["fundingRate"] for r in got] == want["funding_rate"].to_list()[-len(got):]
    assert len(got) == (1000 if venue == "binanceusdm" else 200)


def test_binance_funding_history_pages_forward_without_gaps(emulator, funding):
    ex = ccxt_client(emulator, "binanceusdm")
    emulator.set_time("2023-01-01T00:00")
    since, now = ms("2021-07-01T00:00"), ms("2023-01-01T00:00")
    got, cursor = [], since
    for _ in range(50):
        page = ex.fetch_funding_rate_history(PERP_SYM, since=cursor, limit=200)
        got += page
        if len(page) < 200:
            break
        cursor = page[-1]["timestamp"] + 1
    want = funding["binanceusdm"].filter((pl.col("funding_time_ms") >= since) & (pl.col("funding_time_ms") <= now))
    assert [r["timestamp"] for r in got] == want["stamp_ms"].to_list()
    assert any(r["timestamp"] % MS_H for r in got) and all(r["timestamp"] % MS_H <= 16 for r in got)
    assert [r["fundingRate"] for r in got] == want["funding_rate"].to_list()
    asked = [e for e in emulator.log.entries if e.path == "/fapi/v1/fundingRate"]
    assert len(asked) > 5 and all(e.query["limit"] == "200" for e in asked)


def test_bybit_funding_history_pages_backward_and_forward_without_gaps(emulator, funding):
    ex = ccxt_client(emulator, "bybit")
    emulator.set_time("2023-01-01T00:00")
    start, now = ms("2021-07-01T00:00"), ms("2023-01-01T00:00")
    want = funding["bybit"].filter((pl.col("funding_time_ms") >= start) & (pl.col("funding_time_ms") <= now))

    # backward by endTime, as Bybit documents for its newest-first list
    got: dict[int, float] = {}
    until = now
    for _ in range(50):
        page = ex.fetch_funding_rate_history(PERP_SYM, limit=200, params={"until": until})
        got.update({r["timestamp"]: r["fundingRate"] for r in page if r["timestamp"] >= start})
        if not page or page[0]["timestamp"] <= start:
            break
        until = page[0]["timestamp"] - 1
    assert sorted(got) == want["funding_time_ms"].to_list()
    assert [got[t] for t in sorted(got)] == want["funding_rate"].to_list()
    assert sum(e.path == "/v5/market/funding/history" for e in emulator.log.entries) > 5

    # forward: each call re-asks from the last row seen (overlap), duplicates dropped
    forward: dict[int, float] = {}
    cursor = start - 1
    for _ in range(50):
        page = ex.fetch_funding_rate_history(PERP_SYM, since=cursor, limit=200)
        new = {r["timestamp"]: r["fundingRate"] for r in page if r["timestamp"] not in forward}
        if not new:
            break
        forward.update(new)
        cursor = page[-1]["timestamp"]
    assert sorted(forward) == want["funding_time_ms"].to_list()


def test_bybit_asks_prelaunch_instruments_and_gets_none(emulator):
    ccxt_client(emulator, "bybit").load_markets()
    asked = [e.query for e in emulator.log.entries if e.path == "/v5/market/instruments-info"]
    assert {"category": "linear", "limit": "1000", "status": "PreLaunch"} in asked
    assert {"category": "inverse", "limit": "1000", "status": "PreLaunch"} in asked
    assert len(asked) == 5  # spot, linear, inverse, and the pre-launch of each kind of perpetual


# ----------------------------------------------------------------- the clock

@pytest.mark.parametrize("venue", ["binanceusdm", "bybit"])
def test_the_clock_hides_the_future(emulator, closes, funding, venue):
    ex = ccxt_client(emulator, venue)
    emulator.set_time("2023-06-01T07:30")
    now = ms("2023-06-01T07:30")
    history = ex.fetch_funding_rate_history(PERP_SYM, limit=50)
    assert history[-1]["timestamp"] == stamp(funding, venue, ms("2023-06-01T00:00"))
    later = ex.fetch_funding_rate_history(PERP_SYM, since=now - 1, limit=10, params={"until": now + 100 * MS_H})
    assert later == []
    assert ex.fetch_ohlcv(PERP_SYM, "1h", limit=2)[-1][0] + MS_H <= now
    assert ex.fetch_ticker(PERP_SYM)["last"] == pytest.approx(close_at(closes, PERP_SYM, now))

    emulator.advance(NS_PER_HOUR)  # 08:30: the 08:00 settlement and a new close now exist
    now += MS_H
    history = ex.fetch_funding_rate_history(PERP_SYM, limit=50)
    assert history[-1]["timestamp"] == stamp(funding, venue, ms("2023-06-01T08:00"))
    assert history[-1]["fundingRate"] == funding[venue].filter(
        pl.col("funding_time_ms") == ms("2023-06-01T08:00"))["funding_rate"][0]
    assert ex.fetch_funding_rate(PERP_SYM)["fundingTimestamp"] == ms("2023-06-01T16:00")
    assert ex.fetch_ticker(PERP_SYM)["last"] == pytest.approx(close_at(closes, PERP_SYM, now))
    assert ex.fetch_time() == now


# ----------------------------------------------------------------- errors in the venue's own shape

def test_unknown_paths_and_bad_symbols_raise_meaningful_errors(emulator):
    binance = ccxt_client(emulator, "binanceusdm")
    with pytest.raises(ccxt.ExchangeError, match="-5000"):
        binance.fapiPublicGetOpenInterest({"symbol": "BTCUSDT"})  # a real path the emulator does not serve
    with pytest.raises(ccxt.BadSymbol):
        binance.fapiPublicGetPremiumIndex({"symbol": "ETHUSDT"})
    with pytest.raises(ccxt.BadRequest):
        binance.fapiPublicGetKlines({"symbol": "BTCUSDT", "interval": "1m"})
    bybit = ccxt_client(emulator, "bybit")
    with pytest.raises(ccxt.BadRequest, match="10001"):
        bybit.publicGetV5MarketOpenInterest({"category": "linear", "symbol": "BTCUSDT", "intervalTime": "1h"})
    with pytest.raises(ccxt.BadRequest, match="10001"):
        bybit.publicGetV5MarketTickers({"category": "linear", "symbol": "ETHUSDT"})
    statuses = [(e.path, e.status) for e in emulator.log.entries]
    assert ("/fapi/v1/openInterest", 404) in statuses and ("/v5/market/open-interest", 404) in statuses
    assert ("/fapi/v1/premiumIndex", 400) in statuses and ("/v5/market/tickers", 200) in statuses


# ----------------------------------------------------------------- faults

FAULT_CASES = [
    # venue, fault kind, settings, the ccxt exception ccxt 4.5.90 raises
    ("binanceusdm", "rate_limit", {}, ccxt.DDoSProtection),
    ("binanceusdm", "rate_limit", {"status": 200}, ccxt.RateLimitExceeded),
    ("binanceusdm", "ip_ban", {}, ccxt.DDoSProtection),
    ("binance", "rate_limit", {}, ccxt.DDoSProtection),
    ("bybit", "rate_limit", {}, ccxt.RateLimitExceeded),
    ("bybit", "rate_limit", {"status": 200}, ccxt.RateLimitExceeded),
    ("bybit", "ip_ban", {}, ccxt.RateLimitExceeded),
    ("binanceusdm", "server_error", {"status": 500}, ccxt.ExchangeNotAvailable),
    ("binanceusdm", "server_error", {"status": 502}, ccxt.ExchangeNotAvailable),
    ("binanceusdm", "server_error", {"status": 503}, ccxt.ExchangeNotAvailable),
    ("binanceusdm", "server_error", {"status": 504}, ccxt.RequestTimeout),
    ("bybit", "server_error", {"status": 502}, ccxt.ExchangeNotAvailable),
    ("bybit", "server_error", {"status": 503}, ccxt.ExchangeNotAvailable),
]


@pytest.mark.parametrize("venue,kind,settings,error", FAULT_CASES,
                         ids=[f"{v}-{k}-{s.get('status', '')}" for v, k, s, _ in FAULT_CASES])
def test_each_fault_raises_the_documented_ccxt_exception(emulator, venue, kind, settings, error):
    ex = ccxt_client(emulator, venue)
    symbol = VENUE_SYMBOLS[venue][-1]
    ex.load_markets()
    emulator.faults.add(kind, venue=venue, path="", times=1, retry_after_s=7, **settings)
    with pytest.raises(error):
        ex.fetch_ticker(symbol)
    last = emulator.log.entries[-1]
    assert last.fault == kind and last.venue == venue
    assert last.status == settings.get("status", {"rate_limit": 429, "ip_ban": 418 if venue != "bybit" else 403,
                                                  "server_error": 502}[kind])
    if kind in ("rate_limit", "ip_ban"):
        assert ex.last_response_headers["Retry-After"] == "7"  # ccxt ignores it on REST; the caller reads it
    assert emulator.faults.pending == []  # a one-shot fault clears
    assert ex.fetch_ticker(symbol)["last"] is not None


def test_rate_limits_are_network_errors_for_backoff(emulator):
    for venue in ("binanceusdm", "bybit"):
        ex = ccxt_client(emulator, venue)
        ex.load_markets()
        emulator.faults.add("rate_limit", venue=venue)
        with pytest.raises(ccxt.NetworkError):
            ex.fetch_funding_rate(PERP_SYM)


def test_timeout_fault_raises_request_timeout(emulator):
    ex = ccxt_client(emulator, "binanceusdm", timeout=300)
    ex.load_markets()
    emulator.faults.add("timeout", venue="binanceusdm", path="/fapi/v1/premiumIndex", delay_s=3.0)
    with pytest.raises(ccxt.RequestTimeout):
        ex.fetch_funding_rate(PERP_SYM)
    timed_out = [e for e in emulator.log.entries if e.fault == "timeout"]
    assert [(e.path, e.status) for e in timed_out] == [("/fapi/v1/premiumIndex", None)]
    assert ex.fetch_funding_rate(PERP_SYM)["fundingRate"] is not None


def test_non_json_body_raises_nothing_and_parses_to_none(emulator):
    # ccxt 4.5.90: an HTTP 200 with a non-JSON body raises nothing; fields come back None
    for venue in ("binanceusdm", "bybit"):
        ex = ccxt_client(emulator, venue)
        emulator.faults.add("non_json", venue=venue, path=VENUE_PATH_TIME[venue])
        assert ex.fetch_time() is None
        assert emulator.log.entries[-1].fault == "non_json" and emulator.log.entries[-1].status == 200
        assert ex.fetch_time() == ms(EMULATOR_START)


VENUE_PATH_TIME = {"binanceusdm": "/fapi/v1/time", "bybit": "/v5/market/time"}


@pytest.mark.parametrize("venue", ["binanceusdm", "bybit"])
def test_stale_funding_keeps_answering_the_old_data(emulator, funding, venue):
    ex = ccxt_client(emulator, venue)
    ex.load_markets()
    path = "/fapi/v1/" if venue == "binanceusdm" else "/v5/market/"
    before = len(emulator.log)
    fault = emulator.faults.add("stale", venue=venue, path=path, times=None)  # frozen as of now
    as_of = ms(EMULATOR_START)
    emulator.advance(24 * NS_PER_HOUR)
    history = ex.fetch_funding_rate_history(PERP_SYM, limit=10)
    assert history[-1]["timestamp"] == funding[venue].filter(pl.col("funding_time_ms") <= as_of)["stamp_ms"][-1]
    rate = ex.fetch_funding_rate(PERP_SYM)
    assert rate["fundingTimestamp"] == ms("2024-01-10T16:00")  # still the one due after the old time
    assert [e.fault for e in emulator.log.entries[before:]] == ["stale", "stale"]
    emulator.faults.remove(fault)
    assert ex.fetch_funding_rate_history(PERP_SYM, limit=10)[-1]["timestamp"] == stamp(funding, venue, ms("2024-01-11T08:00"))


def test_faults_count_down_filter_by_path_and_draw_from_the_seed(emulator):
    ex = ccxt_client(emulator, "binanceusdm")
    ex.load_markets()
    emulator.faults.add("server_error", venue="binanceusdm", path="/fapi/v1/premiumIndex", times=2, status=503)
    emulator.faults.add("server_error", venue="bybit", times=None)  # another venue: never hits here
    assert ex.fetch_ticker(PERP_SYM)["last"] is not None  # other path untouched
    for _ in range(2):
        with pytest.raises(ccxt.ExchangeNotAvailable):
            ex.fetch_funding_rate(PERP_SYM)
    assert ex.fetch_funding_rate(PERP_SYM)["fundingRate"] is not None
    assert [f.venue for f in emulator.faults.pending] == ["bybit"]
    emulator.faults.clear()

    def pattern(seed: int) -> list[bool]:
        with running_emulator(seed=seed) as server:
            client = ccxt_client(server, "binance")
            server.faults.add("server_error", venue="binance", path="/api/v3/time", times=None, probability=0.5)
            hits = []
            for _ in range(24):
                try:
                    client.fetch_time()
                    hits.append(False)
                except ccxt.ExchangeNotAvailable:
                    hits.append(True)
            return hits

    first = pattern(7)
    assert first == pattern(7) and 0 < sum(first) < 24
    assert first != pattern(8)


def test_fault_plan_rejects_what_it_cannot_do(emulator):
    with pytest.raises(ValueError, match="unknown fault kind"):
        emulator.faults.add("earthquake")
    with pytest.raises(ValueError, match="unknown venue"):
        emulator.faults.add("rate_limit", venue="bitstamp")
    with pytest.raises(ValueError, match="probability"):
        emulator.faults.add("rate_limit", probability=0)


def test_point_ccxt_keeps_paths_and_the_config_keeps_to_served_endpoints(emulator):
    ex = point_ccxt(ccxt.binanceusdm(ccxt_config("binanceusdm")), emulator.base_url)
    assert ex.urls["api"]["fapiPublic"] == emulator.base_url + "/fapi/v1"
    assert ex.urls["api"]["public"] == emulator.base_url + "/api/v3"
    assert all(u.startswith(emulator.base_url) for u in ex.urls["api"].values() if isinstance(u, str))
    ex.enableRateLimit = False
    ex.load_markets()
    assert emulator.log.paths() == ["/fapi/v1/exchangeInfo"]
    with pytest.raises(ValueError, match="serves"):
        ccxt_config("bitstamp")


def test_request_log_records_method_path_query_venue_status(emulator):
    ex = ccxt_client(emulator, "bybit")
    ex.load_markets()
    ex.fetch_funding_rate_history(PERP_SYM, limit=3)
    entry = emulator.log.entries[-1]
    assert (entry.method, entry.path, entry.venue, entry.status, entry.fault) == (
        "GET", "/v5/market/funding/history", "bybit", 200, None)
    assert entry.query == {"category": "linear", "symbol": "BTCUSDT", "limit": "3"}
    assert entry.now_ns == emulator.now_ns
    assert emulator.log.paths("bybit")[:3] == ["/v5/market/instruments-info"] * 3
    emulator.log.clear()
    assert len(emulator.log) == 0
