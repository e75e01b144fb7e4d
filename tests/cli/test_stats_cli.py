"""`fundarb data stats` on the shipped real funding history: the files, their
numbers against a direct polars computation, and one clear error per bad input."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from PIL import Image
from typer.testing import CliRunner

from fundarb.cli.main import app
from fundarb.data.history import FUNDING_FILE, PRICES_FILE, SHIPPED_DIR
from fundarb.output.funding_stats import STATS_FILES

runner = CliRunner()


def shipped_apr(venue: str, symbol: str) -> pl.DataFrame:
    f = pl.read_parquet(SHIPPED_DIR / FUNDING_FILE).filter((pl.col("venue") == venue) & (pl.col("symbol") == symbol))
    return f.with_columns((pl.col("funding_rate") * 8760 / pl.col("interval_hours")).alias("apr"))


@pytest.fixture(scope="module")
def all_venues(tmp_path_factory):
    out = tmp_path_factory.mktemp("stats") / "funding-stats"
    res = runner.invoke(app, ["data", "stats", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out, res.output, json.loads((out / "stats.json").read_text())


def test_writes_every_file_and_valid_pngs(all_venues):
    out, output, _ = all_venues
    assert sorted(p.name for p in out.iterdir()) == sorted(STATS_FILES)
    for name in STATS_FILES:
        if name.endswith(".png"):
            with Image.open(out / name) as im:
                im.verify()
                assert im.format == "PNG" and im.size[0] > 800 and im.size[1] > 400
        assert f"wrote {out / name}" in output.replace("\n", "")
    assert "minimum profitable entry threshold" in output


def test_json_agrees_with_a_direct_computation_binance_2022(all_venues):
    _, _, doc = all_venues
    b = shipped_apr("binance", "BTCUSDT")
    y2022 = b.filter(pl.col("funding_time").dt.year() == 2022)
    row = next(r for r in doc["by_year"] if (r["venue"], r["symbol"], r["year"]) == ("binance", "BTCUSDT", 2022))
    assert row["count"] == y2022.height == 1095
    assert row["mean_apr"] == pytest.approx(y2022["apr"].mean(), rel=1e-12)
    assert row["median_apr"] == pytest.approx(y2022["apr"].median(), rel=1e-12)
    assert row["share_negative"] == pytest.approx((y2022["funding_rate"] < 0).mean(), rel=1e-12)
    assert row["min_apr"] == pytest.approx(y2022["apr"].min())
    venue = next(r for r in doc["by_venue"] if (r["venue"], r["symbol"]) == ("binance", "BTCUSDT"))
    assert venue["mean_apr"] == pytest.approx(b["apr"].mean(), rel=1e-12)
    assert venue["count"] == b.height
    # the hourly dYdX series is put on the same APR scale
    d = shipped_apr("dydx", "BTC-USD")
    dv = next(r for r in doc["by_venue"] if r["venue"] == "dydx")
    assert dv["mean_apr"] == pytest.approx((d["funding_rate"] * 8760).mean(), rel=1e-12)


def test_json_carries_rules_sources_cost_and_headline(all_venues):
    _, _, doc = all_venues
    assert "trailing 90-day return" in doc["rules"]["regime"]
    assert set(doc["data"]["inputs"]) == {FUNDING_FILE, PRICES_FILE}
    assert len(doc["data"]["series"]) == 13
    assert 0 < doc["cost"]["round_trip_cost"] < 0.01
    h = doc["headline"]
    assert h["reference_series"] == "binance BTCUSDT"
    assert set(h["min_profitable_threshold"]) == {"7", "30", "90"}
    assert {r["regime"] for r in doc["by_regime"]} == {"bull", "sideways", "bear", "no price data"}
    # BitMEX ended before the shipped prices begin: every settlement unlabelled
    assert {r["regime"] for r in doc["by_regime"] if r["venue"] == "bitmex"} == {"no price data"}
    assert doc["common_window"]["left_out"] == ["bitmex XBTUSD", "deribit BTC-PERPETUAL"]


def test_one_venue_over_a_window(tmp_path):
    out = tmp_path / "one"
    res = runner.invoke(app, ["data", "stats", "--venue", "binance:BTCUSDT", "--since", "2022-01-01", "--until", "2023-01-01",
                              "--threshold-apr", "0.1", "--threshold-apr", "0", "--out", str(out), "-q"])
    assert res.exit_code == 0, res.output
    assert res.output == ""
    doc = json.loads((out / "stats.json").read_text())
    assert [(r["venue"], r["symbol"]) for r in doc["by_venue"]] == [("binance", "BTCUSDT")]
    y2022 = shipped_apr("binance", "BTCUSDT").filter(pl.col("funding_time").dt.year() == 2022)
    assert doc["by_venue"][0]["mean_apr"] == pytest.approx(y2022["apr"].mean(), rel=1e-12)
    th = pl.read_csv(out / "thresholds.csv")
    assert sorted(set(th["threshold_apr"].to_list())) == [0.0, 0.1]


def _garbage_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    (d / FUNDING_FILE).write_bytes(b"not a parquet file at all")
    (d / PRICES_FILE).write_bytes((SHIPPED_DIR / PRICES_FILE).read_bytes())
    return d


@pytest.mark.parametrize("args, message", [
    (["--venue", "nowhere"], "unknown venue 'nowhere'; known: binance, bitmex"),
    (["--since", "2023-01-01", "--until", "2022-01-01"], "--since 2023-01-01 is not before --until 2022-01-01"),
    (["--venue", "okx", "--until", "2020-01-01"], "no funding settlements of okx BTC-USD-SWAP, okx BTC-USDT-SWAP"),
    (["--since", "last tuesday"], "is not an ISO date"),
    (["--threshold-apr", "10"], "--threshold-apr 10 is not an APR fraction"),
    (["--data-dir", "GARBAGE"], "is not readable parquet"),
    (["--data-dir", "EMPTY"], "history file missing"),
])
def test_bad_input_is_one_error_exit_2_and_nothing_written(args, message, tmp_path):
    if "GARBAGE" in args:
        args = [_garbage_dir(tmp_path) if a == "GARBAGE" else a for a in args]
    if "EMPTY" in args:
        args = [tmp_path if a == "EMPTY" else a for a in args]
    out = tmp_path / "out"
    res = runner.invoke(app, ["data", "stats", *map(str, args), "--out", str(out)])
    assert res.exit_code == 2, res.output
    flat = res.stderr.replace("\n", "")
    assert message in flat
    assert res.stderr.count("error:") == 1
    assert res.stdout == ""
    assert not out.exists()
