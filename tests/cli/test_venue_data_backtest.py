"""History as the venues send it, backtested from the CLI as a user does:
a data folder shaped like Binance's own answers, and `fundarb data fetch`
into an empty folder then `fundarb backtest --data-dir` on it, against the
loopback emulator (which stamps Binance settlements 0-16 ms late and gives
each a mark, as the venue does)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from fundarb.cli.main import app
from fundarb.data.history import FUNDING_FILE, PRICES_FILE, SHIPPED_DIR
from fundarb.testkit.builders import venue_shaped_folder

ROOT = Path(__file__).resolve().parents[2]
BASELINE = str(ROOT / "sims" / "spot_perp.toml")
runner = CliRunner()
MARK_COUNTS = ("settlements_at_venue_mark", "settlements_at_perp_price")


def backtest(*args: str):
    return runner.invoke(app, ["backtest", BASELINE, *args, "-q"], catch_exceptions=False, env={"COLUMNS": "200"})


def report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


def test_a_venue_shaped_folder_backtests_cleanly_and_counts_the_settlements_at_the_venue_mark(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    venue_shaped_folder(data)
    res = backtest("--from", "2024-03-01", "--to", "2024-04-01", "--data-dir", str(data), "--out", str(tmp_path / "o"))
    assert res.exit_code == 0, res.output
    r = report(tmp_path / "o")
    m, d = r["metrics"], r["data"]
    assert m["settlements_accrued"] > 50 and m["missed_settlements"] == 0
    assert m["settlements_at_venue_mark"] > 0 and m["settlements_at_perp_price"] > 0
    assert m["settlements_at_venue_mark"] + m["settlements_at_perp_price"] == m["settlements_accrued"]
    assert d["funding_intake"]["stamps_snapped_to_schedule"] > 0 and d["funding_intake"]["duplicate_rows_dropped"] > 0
    shipped = tmp_path / "s"
    assert backtest("--from", "2024-03-01", "--to", "2024-04-01", "--out", str(shipped)).exit_code == 0
    # the same rates, once each: what was paid moves only by the marks (1 bp above the perp close)
    s = report(shipped)["metrics"]
    assert s["settlements_accrued"] == m["settlements_accrued"] and s["settlements_at_venue_mark"] == 0
    assert m["funding_net"] == pytest.approx(s["funding_net"], rel=2e-4) and m["funding_net"] != s["funding_net"]


def test_the_exact_failure_users_hit_a_settlement_stamped_two_ms_late_while_in_position(tmp_path):
    # the 16:00 settlement stamped 16:00:00.002 used to be "missing" while a position was open
    data = tmp_path / "data"
    data.mkdir()
    venue_shaped_folder(data, late_ms=2, marks_from=10**6, duplicate_every=10**6)
    res = backtest("--from", "2024-03-01", "--to", "2024-04-01", "--data-dir", str(data), "--out", str(tmp_path / "o"))
    assert res.exit_code == 0, res.output
    assert report(tmp_path / "o")["metrics"]["missed_settlements"] == 0


def test_a_stamp_seconds_off_and_two_different_rows_are_one_line_errors(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    venue_shaped_folder(data)
    f = pl.read_parquet(data / FUNDING_FILE)
    moved = f.with_columns(pl.when(pl.int_range(pl.len()) == 40).then(pl.col("funding_time_ms") + 5_000)
                           .otherwise(pl.col("funding_time_ms")).alias("funding_time_ms"))
    moved.write_parquet(data / FUNDING_FILE)
    res = backtest("--from", "2024-03-01", "--to", "2024-04-01", "--data-dir", str(data), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1
    assert "binance BTCUSDT: funding stamp 2024-03-14 08:00:05" in res.output and "row 41 of" in res.output
    other = f.with_columns(pl.when(pl.int_range(pl.len()) == f.height - 1).then(pl.col("funding_rate") * 2)
                           .otherwise(pl.col("funding_rate")).alias("funding_rate"))
    other.write_parquet(data / FUNDING_FILE)
    res = backtest("--from", "2024-03-01", "--to", "2024-04-01", "--data-dir", str(data), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "two different rows for the" in res.output and not (tmp_path / "o").exists()


@pytest.mark.parametrize("damage, expect", [
    ("drop_close", "has no column 'close'"),
    ("text_close", "column 'close' is String, not a number"),
    ("garbage", "is not readable parquet"),
])
def test_a_parquet_file_with_the_wrong_schema_or_unreadable_is_one_line_naming_the_file(tmp_path, damage, expect):
    data = tmp_path / "data"
    data.mkdir()
    prices = pl.read_parquet(SHIPPED_DIR / PRICES_FILE).head(100)
    if damage == "drop_close":
        prices.drop("close").write_parquet(data / PRICES_FILE)
    elif damage == "text_close":
        prices.with_columns(pl.col("close").cast(pl.Utf8)).write_parquet(data / PRICES_FILE)
    else:
        (data / PRICES_FILE).write_bytes(b"PAR1 not really")
    (data / FUNDING_FILE).write_bytes((SHIPPED_DIR / FUNDING_FILE).read_bytes())
    res = backtest("--data-dir", str(data), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2, res.output
    line = res.output.strip()
    assert len(line.splitlines()) == 1 and str(data / PRICES_FILE) in line and expect in line
    assert "Traceback" not in res.output and not (tmp_path / "o").exists()


def test_fetch_into_an_empty_folder_then_backtest_it_equals_the_shipped_backtest(tmp_path, emulator, loopback_only):
    emulator.set_time("2024-04-02T00:00")
    store = tmp_path / "store"
    res = runner.invoke(app, ["data", "fetch", "--venue", "binanceusdm", "--symbol", "BTC/USDT:USDT",
                              "--since", "2024-01-01", "--until", "2024-04-01", "--store", str(store),
                              "--api-url", emulator.base_url], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "mark-price klines" in res.output and "index-price klines" in res.output
    assert "stamps a few ms after the settlement instant" in res.output
    raw = pl.read_parquet(store / "funding" / "binanceusdm" / "BTC_USDT_USDT.parquet")
    assert (raw["timestamp_ms"] % 3_600_000 != 0).any()  # the venue's own late stamps are what is stored
    assert raw["mark_price"].is_not_null().all()
    res = backtest("--from", "2024-01-01", "--to", "2024-04-01", "--data-dir", str(store), "--out", str(tmp_path / "f"))
    assert res.exit_code == 0, res.output
    assert backtest("--from", "2024-01-01", "--to", "2024-04-01", "--out", str(tmp_path / "s")).exit_code == 0
    fetched, shipped = report(tmp_path / "f"), report(tmp_path / "s")
    fm, sm = fetched["metrics"], shipped["metrics"]
    # the emulator's marks are the perp closes (the shipped data has no mark): every
    # settlement is at the venue's mark in one, at the perp close in the other
    assert fm["settlements_at_venue_mark"] == sm["settlements_at_perp_price"] == sm["settlements_accrued"] > 100
    assert {k: v for k, v in fm.items() if k not in MARK_COUNTS} == {k: v for k, v in sm.items() if k not in MARK_COUNTS}
    assert fetched["gates"] == shipped["gates"]
    for key in ("start", "end", "hours", "funding_settlements", "funding_gaps", "price_hours_carried_forward"):
        assert fetched["data"][key] == shipped["data"][key]
    assert fetched["data"]["hourly_mark"] == "venue mark-price klines"
