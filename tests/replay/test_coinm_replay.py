"""Binance COIN-M raw websocket lines through cryptofeed's own ``BinanceDelivery``
handler, and the coin-margined recording built from the shipped real data
(recordings/binance_coinm_btcusd_2024-06-30: NOT a capture, see its README)
replayed across the 2024-07-01 00:00 settlement, paid in BTC."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fundarb.app.replay import GOLDEN_FILE, golden_diff, golden_text, prepare_replay, replay_always_on
from fundarb.cli.main import app
from fundarb.config import load
from fundarb.data.history import FUNDING_FILE, PRICES_FILE, SHIPPED_DIR
from fundarb.replay.parse import NS, CaptureFeed, Recording, load_recording, parse_feed
from fundarb.sim.backtest import result_of

ROOT = Path(__file__).resolve().parents[2]
COINM = ROOT / "recordings" / "binance_coinm_btcusd_2024-06-30"
SETTLEMENT_MS = 1719792000000  # 2024-07-01 00:00 UTC
runner = CliRunner()


@pytest.fixture(autouse=True)
def no_network(no_connections):
    """Parsing and replay read files only: any connection attempt fails the test."""


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("coinm-cache")


# SYNTHETIC lines, crafted for this test in Binance COIN-M's combined-stream
# shapes (bookTicker sizes and aggTrade quantities are contracts of 100 USD;
# markPriceUpdate P is the estimated settle price, i the index price)
SYNTHETIC = [
    (1_000, {"stream": "btcusd_perp@bookTicker", "data": {
        "e": "bookTicker", "u": 11, "s": "BTCUSD_PERP", "ps": "BTCUSD", "b": "60000.0", "B": "600", "a": "60000.1", "A": "1200",
        "T": 1719781000000, "E": 1719781000001}}),
    (2_000, {"stream": "btcusd_perp@aggTrade", "data": {
        "e": "aggTrade", "E": 1719781000002, "a": 7, "s": "BTCUSD_PERP", "p": "60000.1", "q": "30", "f": 70, "l": 71,
        "T": 1719781000002, "m": False}}),
    (3_000, {"stream": "btcusd_perp@markPrice", "data": {
        "e": "markPriceUpdate", "E": 1719781000003, "s": "BTCUSD_PERP", "p": "60010.5", "P": "60020.7", "i": "60005.2",
        "r": "0.00012345", "T": SETTLEMENT_MS}}),
    (4_000, {"stream": "ethusd_perp@bookTicker", "data": {
        "e": "bookTicker", "u": 12, "s": "ETHUSD_PERP", "ps": "ETHUSD", "b": "3400.0", "B": "5", "a": "3400.1", "A": "5",
        "T": 1719781000004, "E": 1719781000004}}),
]


def _synthetic_recording(tmp_path: Path) -> tuple[Recording, CaptureFeed]:
    with gzip.open(tmp_path / "coinm.gz", "wt", encoding="utf-8") as fh:
        for stamp, msg in SYNTHETIC:
            fh.write(f"{1719781000000 * 1_000_000 + stamp} {json.dumps(msg)}\n")
    feed = CaptureFeed("perp", "binancecoinm", "BTC-USD-PERP", "binance_lines", ("coinm.gz",))
    return Recording("synthetic", "synthetic COIN-M lines", "none.toml", (feed,), tmp_path), feed


def test_coinm_lines_parse_through_cryptofeeds_binance_delivery_handler(tmp_path, monkeypatch):
    from cryptofeed.exchanges import BinanceDelivery

    handled = []
    original = BinanceDelivery.message_handler

    async def spy(self, msg, conn, timestamp):
        handled.append(type(self).__name__)
        return await original(self, msg, conn, timestamp)

    monkeypatch.setattr(BinanceDelivery, "message_handler", spy)
    rec, feed = _synthetic_recording(tmp_path)
    parsed = parse_feed(rec, feed, tmp_path / "cache")
    assert handled == ["BinanceDelivery"] * 3  # the ETHUSD_PERP line is skipped before the handler
    assert parsed.counts == {"messages": 4, "book_ticker": 1, "agg_trade": 1, "mark_price": 1, "other_symbol": 1}
    ev = {k: parsed.events.filter(parsed.events["kind"] == k).row(0, named=True) for k in ("quote", "trade", "funding")}
    t0 = 1719781000000 * 1_000_000
    q = ev["quote"]
    assert (q["ts"], q["bid"], q["ask"]) == (t0 + 1_000, 60000.0, 60000.1)
    # sizes in contracts of 100 USD become BTC at their own price
    assert q["bid_size"] == pytest.approx(600 * 100 / 60000.0) and q["ask_size"] == pytest.approx(1200 * 100 / 60000.1)
    t = ev["trade"]
    assert (t["ts"], t["price"], t["side"]) == (t0 + 2_000, 60000.1, "buy") and t["qty"] == pytest.approx(30 * 100 / 60000.1)
    f = ev["funding"]
    assert (f["ts"], f["mark"], f["rate"], f["next_funding_ts"]) == (t0 + 3_000, 60010.5, 0.00012345, SETTLEMENT_MS * 1_000_000)
    # r is Binance's running estimate of the next rate; cryptofeed's predicted_rate would be P, a price
    assert f["predicted_rate"] == 0.00012345


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_coinm_tape", ROOT / "benchmarks" / "make_coinm_tape.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_tape_is_what_the_generator_builds_from_the_shipped_data(tmp_path):
    digests = _load_generator().write(tmp_path)
    readme = (COINM / "README.md").read_text()
    assert "not a capture" in readme
    for name, digest in digests.items():
        assert (tmp_path / name).read_bytes() == (COINM / name).read_bytes(), name
        assert digest in readme and hashlib.sha256((COINM / name).read_bytes()).hexdigest() == digest


def _shipped_rate() -> float:
    import polars as pl

    f = pl.read_parquet(SHIPPED_DIR / FUNDING_FILE).filter(
        (pl.col("venue") == "binance") & (pl.col("symbol") == "BTCUSD_PERP") & (pl.col("funding_time_ms") == SETTLEMENT_MS))
    assert f.height == 1
    return float(f["funding_rate"][0])


def _shipped_close(market: str, symbol: str, open_ms: int) -> float:
    import polars as pl

    p = pl.read_parquet(SHIPPED_DIR / PRICES_FILE).filter(
        (pl.col("venue") == "binance") & (pl.col("market") == market) & (pl.col("symbol") == symbol) & (pl.col("open_time_ms") == open_ms))
    assert p.height == 1
    return float(p["close"][0])


def test_the_recording_replays_to_its_golden_and_accrues_the_settlement_in_btc(cache):
    rec = load_recording(COINM)
    cfg = load(ROOT / "sims" / rec.config)
    assert cfg.structure_kind == "coin_margined" and cfg.perp.exchange == "binancecoinm"
    assert {f.role: (f.exchange, f.symbol) for f in rec.feeds} == {"spot": ("binance", "BTC-USDT"), "perp": ("binancecoinm", "BTC-USD-PERP")}
    engine, sim, window, _ = prepare_replay(rec, cfg, cache)
    engine.run()
    result = result_of(cfg, window, engine, sim, replay_always_on(rec, cfg, cache))
    expected = (COINM / GOLDEN_FILE).read_text()
    actual = golden_text(result)
    assert actual == expected, "replay differs from the golden file:\n" + golden_diff(expected, actual)

    # the replay spans the settlement and holds the coin-margined carry across it
    assert window.start < SETTLEMENT_MS * 1_000_000 < window.end
    fills = [r for k, r in result.log if k == "fill"]
    assert {f["venue"] for f in fills} == {cfg.spot_account, cfg.perp_account}
    assert all(f["ts"] < SETTLEMENT_MS * 1_000_000 for f in fills)
    contracts = sum((-1 if f["side"] == "sell" else 1) * f["qty"] for f in fills if f["venue"] == cfg.perp_account)
    face = contracts * cfg.structure_settings.contract_size
    assert face < 0  # short

    ledger = engine.book.funding_ledger
    assert len(ledger) == 1
    entry = ledger[0]
    rate = _shipped_rate()
    assert entry.ts == SETTLEMENT_MS * 1_000_000 and entry.venue == cfg.perp_account
    assert entry.rate == rate
    # the mark: the tape's last markPriceUpdate before 00:00, the shipped COIN-M close of the 23:00 bar
    assert entry.mark == _shipped_close("perp_inverse", "BTCUSD_PERP", SETTLEMENT_MS - 3_600_000)
    assert entry.amount == pytest.approx(-face / entry.mark * rate * entry.mark, rel=1e-12)
    m = result.metrics
    assert m["funding_btc"] == pytest.approx(-face / entry.mark * rate, rel=1e-12)
    if rate > 0:
        assert m["funding_btc"] > 0 and entry.amount > 0
    assert m["settlements_in_window"] == 1 and m["settlements_accrued"] == 1 and m["missed_settlements"] == 0
    assert m["structure"] == "coin_margined" and m["liquidations"] == 0
    # marks come from the tape's markPriceUpdate messages, through the handler
    assert result.history.describe()["replay"]["mark_price"] == "venue mark price"


def test_cold_and_cached_replays_are_byte_identical(tmp_path):
    out = {}
    for name in ("cold", "cached"):
        res = runner.invoke(app, ["replay", str(COINM), "--out", str(tmp_path / name), "--cache-dir", str(tmp_path / "c"), "-q"])
        assert res.exit_code == 0, res.output
        assert "matches" in res.output
        out[name] = {f: (tmp_path / name / f).read_bytes() for f in ("report.json", "trades.sqlite", "backtest.png")}
    assert out["cold"] == out["cached"]
    assert len(list((tmp_path / "c").glob("*.parquet"))) == 2


def test_the_tape_stamps_each_close_at_its_kline_close_time():
    # the window's first and last messages are the bar closes at open + 1 h - 1 ms
    rec = load_recording(COINM)
    with gzip.open(rec.paths(rec.feeds[1])[0], "rt") as fh:
        stamps = [int(line.split(" ", 1)[0]) for line in fh]
    assert stamps[0] == (SETTLEMENT_MS - 3 * 3_600_000 - 1) * 1_000_000 and stamps[-1] == (SETTLEMENT_MS + 3_600_000 - 1) * 1_000_000
    assert all(s % NS == NS - 1_000_000 for s in stamps)
