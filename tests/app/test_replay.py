"""Recorded feeds replayed through the engine: golden files, determinism,
the cache, no network, and bad captures."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import attrs
import pytest
from typer.testing import CliRunner

from fundarb.app.replay import GOLDEN_FILE, golden_diff, golden_text, run_replay
from fundarb.cli.main import app
from fundarb.config import load
from fundarb.replay.parse import ReplayError, load_recording, parse_feed

ROOT = Path(__file__).resolve().parents[2]
RECORDINGS = sorted(p.parent for p in (ROOT / "recordings").glob("*/recording.toml"))
BINANCE = ROOT / "recordings" / "binance_btcusdt_2024-08-08"
runner = CliRunner()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("replay-cache")


@pytest.fixture(autouse=True)
def no_network(no_connections):
    """Replays read files only: any connection attempt fails the test."""


@pytest.fixture(autouse=True)
def cryptofeed_reads():
    """Leave cryptofeed's HTTP reads as found: its playback swaps them for
    readers of the capture and puts them back only when it ends normally, so
    a capture that fails to play would leave every later symbol lookup of
    the process reading the capture's leftovers."""
    from cryptofeed.connection import HTTPAsyncConn, HTTPSync

    saved = HTTPSync.read, HTTPAsyncConn.read
    yield
    HTTPSync.read, HTTPAsyncConn.read = saved


def replay(folder: Path, cache: Path, **changes):
    rec = load_recording(folder)
    cfg = load(ROOT / "sims" / rec.config)
    if changes:
        cfg = attrs.evolve(cfg, **changes)
    return run_replay(rec, cfg, cache)


def test_there_are_recordings():
    assert {p.name for p in RECORDINGS} >= {"binance_btcusdt_2024-08-08", "bitmex_xbtusd_2021-07-22"}


@pytest.mark.parametrize("folder", RECORDINGS, ids=lambda p: p.name)
def test_recording_replays_to_its_golden_file(folder, cache):
    result, _ = replay(folder, cache)
    expected = (folder / GOLDEN_FILE).read_text()
    actual = golden_text(result)
    assert actual == expected, "replay differs from the golden file:\n" + golden_diff(expected, actual)


def test_binance_window_enters_fills_and_settles_the_midnight_funding(cache):
    result, _ = replay(BINANCE, cache)
    log = result.log
    intents = [r for k, r in log if k == "intent"]
    assert [(i["venue"], i["side"], i["reason"]) for i in intents] == [
        ("binance:spot", "buy", "entry"), ("binanceusdm:perp", "sell", "entry")]
    fills = [r for k, r in log if k == "fill"]
    assert len(fills) == 2 and {f["venue"] for f in fills} == {"binance:spot", "binanceusdm:perp"}
    # fills are at the recorded top of book plus the model's slippage, not at bar closes
    assert all(61_500 < f["price"] < 62_000 for f in fills)
    funding = [r for k, r in log if k == "funding"]
    assert len(funding) == 1 and funding[0]["ts"] == 1723161600 * 10**9  # 2024-08-09 00:00 UTC
    f = funding[0]
    assert f["rate"] == pytest.approx(4.994e-05) and f["qty"] < 0
    assert f["amount"] == pytest.approx(-f["qty"] * f["mark"] * f["rate"])
    m = result.metrics
    assert m["settlements_in_window"] == 1 and m["settlements_accrued"] == 1 and m["missed_settlements"] == 0
    assert m["delta_drift_max"] < 0.02
    assert "real funding history" in result.history.describe()["replay"]["funding_settlements_from"]


def test_cold_and_cached_replays_are_byte_identical(tmp_path):
    out = {}
    for name in ("cold", "cached"):
        res = runner.invoke(app, ["replay", str(BINANCE), "--out", str(tmp_path / name), "--cache-dir", str(tmp_path / "c"), "-q"])
        assert res.exit_code == 0, res.output
        out[name] = {f: (tmp_path / name / f).read_bytes() for f in ("report.json", "trades.sqlite", "backtest.png")}
    assert out["cold"] == out["cached"]
    assert list((tmp_path / "c").glob("*.parquet"))


def test_a_changed_threshold_fails_the_golden_check_with_a_readable_diff(cache):
    rec = load_recording(BINANCE)
    cfg = load(ROOT / "sims" / rec.config)
    stricter = attrs.evolve(cfg, strategy=attrs.evolve(cfg.strategy, entry_apr=0.5))
    result, _ = run_replay(rec, stricter, cache)
    expected = (BINANCE / GOLDEN_FILE).read_text()
    actual = golden_text(result)
    assert actual != expected
    diff = golden_diff(expected, actual)
    assert diff.startswith("--- golden\n+++ replay")
    removed = [line for line in diff.splitlines() if line.startswith("-  [\"intent\"")]
    assert len(removed) == 2  # the two entry intents are gone
    assert '-  "entries": 1,' in diff and '+  "entries": 0,' in diff


def test_update_golden_rewrites_and_says_what_changed(tmp_path, cache):
    folder = tmp_path / "rec"
    shutil.copytree(ROOT / "recordings" / "bitmex_xbtusd_2021-07-22", folder)
    golden = folder / GOLDEN_FILE
    golden.write_text(golden.read_text().replace('"orders": 0', '"orders": 7'))
    res = runner.invoke(app, ["replay", str(folder), "--out", str(tmp_path / "o"), "--cache-dir", str(cache), "-q"])
    assert res.exit_code == 1 and "differs" in res.output  # the outputs are written; the verdict fails
    res = runner.invoke(app, ["replay", str(folder), "--update-golden", "--out", str(tmp_path / "o"), "--cache-dir", str(cache), "-q"])
    assert res.exit_code == 0, res.output
    assert "rewritten; what changed" in res.output and '-  "orders": 7,' in res.output and '+  "orders": 0,' in res.output
    assert golden.read_text() == (ROOT / "recordings" / "bitmex_xbtusd_2021-07-22" / GOLDEN_FILE).read_text()
    res = runner.invoke(app, ["replay", str(folder), "--update-golden", "--out", str(tmp_path / "o"), "--cache-dir", str(cache), "-q"])
    assert "unchanged" in res.output


def test_replay_cli_writes_the_backtest_outputs(tmp_path, cache):
    out = tmp_path / "o"
    res = runner.invoke(app, ["replay", "binance_btcusdt_2024-08-08", "--out", str(out), "--cache-dir", str(cache)],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "replay of binance_btcusdt_2024-08-08" in res.output and "golden" in res.output and "matches" in res.output
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["replay"]["feeds"]["perp"]["events"] == {"quote": 66089, "trade": 21313}
    assert report["metrics"]["entries"] == 1


# --- bad captures: one clear error naming the file; nothing cached --------------------

def copy_binance(tmp_path: Path) -> Path:
    folder = tmp_path / "rec"
    shutil.copytree(BINANCE, folder)
    return folder


def test_truncated_capture_names_the_file(tmp_path):
    folder = copy_binance(tmp_path)
    perp = folder / "usdm_btcusdt_20240808.gz"
    data = perp.read_bytes()
    perp.write_bytes(data[: len(data) // 2])  # SYNTHETIC damage: cut the real file in half
    cache = tmp_path / "cache"
    rec = load_recording(folder)
    with pytest.raises(ReplayError, match=r"usdm_btcusdt_20240808\.gz:\d+: truncated or corrupt capture"):
        parse_feed(rec, rec.feed("perp"), cache)
    assert not cache.exists() or not list(cache.iterdir())


def test_corrupt_line_names_file_and_line(tmp_path):
    folder = copy_binance(tmp_path)
    perp = folder / "usdm_btcusdt_20240808.gz"
    with gzip.open(perp, "rt") as fh:
        lines = [next(fh) for _ in range(50)]
    lines[9] = lines[9][:40] + "\n"  # SYNTHETIC damage: a line cut short
    with gzip.open(perp, "wt") as fh:
        fh.writelines(lines)
    rec = load_recording(folder)
    with pytest.raises(ReplayError, match=r"usdm_btcusdt_20240808\.gz:10: not JSON"):
        parse_feed(rec, rec.feed("perp"), tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_capture_without_btc_is_an_error(tmp_path):
    folder = copy_binance(tmp_path)
    perp = folder / "usdm_btcusdt_20240808.gz"
    with gzip.open(perp, "rt") as fh:
        lines = [next(fh) for _ in range(200)]
    # SYNTHETIC: the same real messages relabelled as another symbol
    with gzip.open(perp, "wt") as fh:
        fh.writelines(line.replace('"s":"BTCUSDT"', '"s":"ETHUSDT"') for line in lines)
    rec = load_recording(folder)
    with pytest.raises(ReplayError, match=r"usdm_btcusdt_20240808\.gz: no BTC-USDT-PERP quotes"):
        parse_feed(rec, rec.feed("perp"), tmp_path / "cache")


@pytest.mark.parametrize("edit, message", [
    (('exchange = "binanceusdm"', 'exchange = "mtgox"'), "[[feeds]] exchange 'mtgox' is not one of: binance, binanceusdm"),
    (('files = ["usdm_btcusdt_20240808.gz"]', 'files = ["missing.gz"]'), "capture file missing"),
    (('role = "perp"', 'role = "option"'), "[[feeds]] role 'option' is not one of: spot, perp"),
    (('format = "binance_lines"', 'format = "csv"'), "[[feeds]] format 'csv' is not one of: cryptofeed, binance_lines"),
])
def test_bad_manifest_is_one_clear_error(tmp_path, edit, message):
    folder = copy_binance(tmp_path)
    manifest = folder / "recording.toml"
    text = manifest.read_text()
    assert edit[0] in text
    manifest.write_text(text.replace(*edit))
    res = runner.invoke(app, ["replay", str(folder), "--out", str(tmp_path / "o")], env={"COLUMNS": "300"})
    assert res.exit_code == 2 and message in res.output and res.output.count("error:") == 1
    assert "recording.toml" in res.output and len(res.output.strip().splitlines()) == 1
    for internals in ("Attribute(", "validator=", "<in_", "NOTHING"):  # attrs' own repr never reaches the user
        assert internals not in res.output
    assert not (tmp_path / "o").exists()


def test_unknown_recording_name(tmp_path):
    res = runner.invoke(app, ["replay", "no_such_day", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no recording 'no_such_day'" in res.output


# --- the raw-line trade normaliser equals cryptofeed's own trade parser ---------------

def test_raw_trade_events_parse_as_cryptofeed_parses_agg_trades():
    import asyncio

    from cryptofeed.defines import TRADES
    from cryptofeed.exchanges import BinanceFutures

    from fundarb.replay.parse import _offline_feed, _Rows, binance_trade

    feed = _offline_feed("binanceusdm", "BTC-USDT-PERP", _Rows(), [0])
    got = []

    async def cb(t, receipt):
        got.append(t)

    feed.callbacks[TRADES] = [cb]
    with gzip.open(BINANCE / "usdm_btcusdt_20240808.gz", "rt") as fh:
        raw_trades = [json.loads(line.split(" ", 1)[1])["data"] for line in fh if "@trade" in line[:60]][:200]
    assert len(raw_trades) == 200
    for data in raw_trades:
        ours = binance_trade(feed, data)
        # the same print, shaped as the aggTrade cryptofeed's handler reads
        agg = dict(data, e="aggTrade", a=data["t"])
        asyncio.run(BinanceFutures._trade(feed, agg, 0.0))
        theirs = got.pop()
        for field in ("exchange", "symbol", "side", "amount", "price", "timestamp", "id"):
            assert getattr(ours, field) == getattr(theirs, field), field


def test_corrupt_cryptofeed_capture_names_the_file(tmp_path):
    folder = tmp_path / "rec"
    shutil.copytree(ROOT / "recordings" / "bitmex_xbtusd_2021-07-22", folder)
    ws = folder / "BITMEX.ws.1.0"
    lines = ws.read_text().splitlines(keepends=True)
    lines[40] = lines[40].split(": ", 1)[0] + ': {"table":"quote","action":"insert","data":[{"symbol":\n'  # SYNTHETIC damage
    ws.write_text("".join(lines))
    rec = load_recording(folder)
    from cryptofeed.connection import HTTPAsyncConn, HTTPSync

    reads = HTTPSync.read, HTTPAsyncConn.read
    with pytest.raises(ReplayError, match=r"BITMEX\.ws\.1\.0: cryptofeed playback failed"):
        parse_feed(rec, rec.feed("perp"), tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
    # the failed playback left cryptofeed's HTTP reads as they were (a later symbol lookup reads the network)
    assert (HTTPSync.read, HTTPAsyncConn.read) == reads
