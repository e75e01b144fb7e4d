"""`fundarb backtest` as a user runs it: outputs, determinism, bad input."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from fundarb.cli.main import app
from fundarb.data.history import FUNDING_FILE, PRICES_FILE, SHIPPED_DIR

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "sims" / "spot_perp.toml"
WINDOW = ["--from", "2021-08-01", "--to", "2021-11-01"]
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, ["backtest", *args], catch_exceptions=False)


def test_backtest_writes_report_plot_and_trade_log(tmp_path):
    out = tmp_path / "out"
    res = run(str(BASELINE), *WINDOW, "--out", str(out))
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    m = report["metrics"]
    # the report's own numbers tie out: equity change = funding - fees - slippage + price pnl
    assert m["net_pnl"] == pytest.approx(m["funding_net"] - m["fees"] - m["slippage"] + m["price_pnl"], rel=1e-9)
    assert report["data"]["start"].startswith("2021-08-01")
    assert len(report["config_hash"]) == 64
    assert {g["gate"] for g in report["gates"]} >= {"Sharpe > 1", "zero missed funding"}
    png = (out / "backtest.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    db = sqlite3.connect(out / "trades.sqlite")
    meta = dict(db.execute("select key, value from meta"))
    assert (meta["schema_version"], meta["source"]) == ("3", "backtest") and meta["config_hash"] == report["config_hash"]
    funding = db.execute("select sum(amount), count(*) from funding").fetchone()
    assert funding[0] == pytest.approx(m["funding_net"], rel=1e-9)
    assert funding[1] == m["settlements_accrued"]
    fees = db.execute("select coalesce(sum(fee), 0) from fills").fetchone()[0]
    transfer_fees = db.execute("select coalesce(sum(fee), 0) from transfers where status='arrived'").fetchone()[0]
    charges = db.execute("select coalesce(sum(amount), 0) from charges").fetchone()[0]
    assert fees + transfer_fees + charges == pytest.approx(m["fees"], rel=1e-9)
    assert {r[0] for r in db.execute("select distinct config_hash from fills")} <= {report["config_hash"]}
    assert "PASS" in res.output or "FAIL" in res.output


def test_same_config_and_seed_is_byte_identical(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run(str(BASELINE), *WINDOW, "--out", str(a), "-q").exit_code == 0
    assert run(str(BASELINE), *WINDOW, "--out", str(b), "-q").exit_code == 0
    assert (a / "report.json").read_bytes() == (b / "report.json").read_bytes()
    assert (a / "trades.sqlite").read_bytes() == (b / "trades.sqlite").read_bytes()


def test_seed_changes_execution_but_not_funding_schedule(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run(str(BASELINE), *WINDOW, "--out", str(a), "-q", "--seed", "1").exit_code == 0
    assert run(str(BASELINE), *WINDOW, "--out", str(b), "-q", "--seed", "2").exit_code == 0
    ra, rb = (json.loads((p / "report.json").read_text()) for p in (a, b))
    assert ra["config_hash"] != rb["config_hash"]
    assert ra["metrics"]["slippage"] != rb["metrics"]["slippage"]


def expect_error(args: list[str], needle: str, out: Path) -> None:
    res = runner.invoke(app, ["backtest", *args, "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert "Traceback" not in res.output
    assert not out.exists(), "a failed run must not leave output behind"


def test_missing_config(tmp_path):
    expect_error([str(tmp_path / "nope.toml")], "config file not found", tmp_path / "o")


def test_malformed_config(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'x'\n[spot\n")
    expect_error([str(bad)], "not valid TOML", tmp_path / "o")


def test_config_field_with_wrong_type(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(BASELINE.read_text().replace("taker_fee = 0.001", "taker_fee = 'cheap'"))
    expect_error([str(bad)], "spot.taker_fee", tmp_path / "o")


def test_section_given_as_a_plain_value(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('scenario = "yes"\n' + BASELINE.read_text())
    expect_error([str(bad)], "scenario must be a [scenario] section (a table), got 'yes'", tmp_path / "o")


def test_leverage_above_three_is_refused(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(BASELINE.read_text().replace("max_leverage = 3.0", "max_leverage = 5.0"))
    expect_error([str(bad)], "max_leverage", tmp_path / "o")


def test_unknown_venue_and_symbol(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(BASELINE.read_text().replace('exchange = "binanceusdm"', 'exchange = "nosuchex"'))
    expect_error([str(bad)], "nosuchex", tmp_path / "o")
    bad.write_text(BASELINE.read_text().replace('symbol = "BTC/USDT"\n', 'symbol = "DOGE/USDT"\n'))
    expect_error([str(bad)], "DOGE/USDT", tmp_path / "o")


def test_from_after_to(tmp_path):
    expect_error([str(BASELINE), "--from", "2023-01-01", "--to", "2022-01-01"], "not before", tmp_path / "o")


def test_bad_date(tmp_path):
    expect_error([str(BASELINE), "--from", "yesterday"], "--from", tmp_path / "o")


# --- synthetic history (named as such): shaped like the shipped files --------

def synthetic_data(tmp_path: Path, *, nan_at: int | None = None, drop_hours: range | None = None,
                   drop_funding: int | None = None, name: str = "synthetic_data") -> Path:
    d = tmp_path / name
    d.mkdir()
    start_ms = 1_640_995_200_000  # 2022-01-01 00:00 UTC
    hours = 24 * 20
    open_ms = start_ms + np.arange(hours, dtype=np.int64) * 3_600_000
    rng = np.random.default_rng(0)
    mid = 40_000 * np.exp(np.cumsum(rng.normal(0, 0.002, hours)))
    spot = mid.copy()
    if nan_at is not None:
        spot[nan_at] = np.nan
    keep = np.ones(hours, dtype=bool)
    if drop_hours is not None:
        keep[list(drop_hours)] = False
    frames = []
    for market, px in (("spot", spot), ("perp_linear", mid * 1.0001)):
        frames.append(pl.DataFrame({"venue": "binance", "market": market, "symbol": "BTCUSDT",
                                    "open_time_ms": open_ms[keep], "close": px[keep], "source": "synthetic"}))
    pl.concat(frames).write_parquet(d / PRICES_FILE)
    f_ms = start_ms + np.arange(0, hours, 8, dtype=np.int64) * 3_600_000
    rates = np.full(f_ms.size, 0.0006)  # 65% APR: the strategy enters at once
    fkeep = np.ones(f_ms.size, dtype=bool)
    if drop_funding is not None:
        fkeep[drop_funding] = False
    pl.DataFrame({"venue": "binance", "symbol": "BTCUSDT", "funding_time_ms": f_ms[fkeep],
                  "funding_rate": rates[fkeep], "interval_hours": 8.0, "mark_price": pl.Series([None] * int(fkeep.sum()), dtype=pl.Float64),
                  "source": "synthetic"}).write_parquet(d / FUNDING_FILE)
    return d


SYN_WINDOW = ["--from", "2022-01-01", "--to", "2022-01-21"]


def test_synthetic_history_runs(tmp_path):
    d = synthetic_data(tmp_path)
    res = run(str(BASELINE), *SYN_WINDOW, "--data-dir", str(d), "--out", str(tmp_path / "o"), "-q")
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    m = report["metrics"]
    assert m["settlements_accrued"] > 30 and m["missed_settlements"] == 0
    # closes belong to open + 1h: 480 bars from 2022-01-01 00:00 close at 01:00 .. 2022-01-21 00:00,
    # and the window's end is exclusive, so the last hour in it is 2022-01-20 23:00
    assert (report["data"]["start"], report["data"]["end"]) == ("2022-01-01 01:00", "2022-01-20 23:00")
    assert report["data"]["hours"] == 479


def test_missing_funding_while_open_fails_closed(tmp_path):
    d = synthetic_data(tmp_path, drop_funding=30)  # 2022-01-11 00:00, position open by then
    expect_error([str(BASELINE), *SYN_WINDOW, "--data-dir", str(d)], "no funding settlement at 2022-01-11 00:00", tmp_path / "o")


def test_nan_price_is_an_error(tmp_path):
    d = synthetic_data(tmp_path, nan_at=100)
    expect_error([str(BASELINE), *SYN_WINDOW, "--data-dir", str(d)], "spot price at 2022-01-05 05:00", tmp_path / "o")


def test_long_price_gap_is_an_error_short_one_is_carried(tmp_path):
    d = synthetic_data(tmp_path, drop_hours=range(100, 110))
    expect_error([str(BASELINE), *SYN_WINDOW, "--data-dir", str(d)], "price gap of 11 h", tmp_path / "o")
    d2 = synthetic_data(tmp_path, drop_hours=range(100, 103), name="synthetic_short_gap")
    res = run(str(BASELINE), *SYN_WINDOW, "--data-dir", str(d2), "--out", str(tmp_path / "o2"), "-q")
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "o2" / "report.json").read_text())["data"]
    assert data["price_hours_carried_forward"] == 3


def test_failed_run_keeps_previous_outputs(tmp_path):
    out = tmp_path / "o"
    assert run(str(BASELINE), *WINDOW, "--out", str(out), "-q").exit_code == 0
    before = (out / "report.json").read_bytes()
    d = synthetic_data(tmp_path, nan_at=5)
    res = runner.invoke(app, ["backtest", str(BASELINE), *SYN_WINDOW, "--data-dir", str(d), "--out", str(out)])
    assert res.exit_code == 2
    assert (out / "report.json").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["backtest.png", "report.json", "trades.sqlite"]


def test_shipped_data_is_inside_the_package():
    assert (SHIPPED_DIR / PRICES_FILE).is_file() and (SHIPPED_DIR / FUNDING_FILE).is_file()
    assert (SHIPPED_DIR / "README.md").is_file()


def test_drawdown_stop_halts_flattens_and_stays_halted(tmp_path):
    cfg = tmp_path / "tight.toml"
    cfg.write_text(BASELINE.read_text().replace("max_drawdown = 0.05", "max_drawdown = 0.004"))
    out = tmp_path / "o"
    assert run(str(cfg), "--out", str(out), "-q").exit_code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["metrics"]["kill_switch"].startswith("drawdown")
    db = sqlite3.connect(out / "trades.sqlite")
    (halt_ts,) = db.execute("select ts from alerts where kind='kill_switch'").fetchone()
    after = db.execute("select role from orders where ts_created >= ?", (halt_ts,)).fetchall()
    assert after and {r for (r,) in after} == {"kill_flatten"}, after
    last = db.execute("select delta, equity from equity order by ts desc limit 1").fetchone()
    spot_qty = db.execute(
        "select coalesce(sum(case side when 'buy' then qty else -qty end), 0) from fills where account like '%:spot'"
    ).fetchone()[0]
    assert abs(spot_qty) < 1e-9 and last[0] == 0.0


def test_byte_identical_across_processes_with_different_hash_seeds(tmp_path):
    import os
    import subprocess
    import sys

    outs = []
    for hash_seed in ("1", "4242"):
        out = tmp_path / f"run{hash_seed}"
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run(
            [sys.executable, "-c", "from fundarb.cli.main import main; main()", "backtest", str(BASELINE), *WINDOW,
             "--out", str(out), "-q"],
            check=True, env=env, cwd=tmp_path, timeout=300,
        )
        outs.append(out)
    for name in ("report.json", "trades.sqlite", "backtest.png"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name


def test_output_folder_with_foreign_files_is_refused(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    res = runner.invoke(app, ["backtest", str(BASELINE), *WINDOW, "--out", str(out)])
    assert res.exit_code == 2 and "notes.txt" in res.output
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_output_path_that_is_a_file_is_refused(tmp_path):
    out = tmp_path / "o"
    out.write_text("x")
    res = runner.invoke(app, ["backtest", str(BASELINE), *WINDOW, "--out", str(out)])
    assert res.exit_code == 2 and "not a folder" in res.output
    assert out.read_text() == "x"


def test_run_name_cannot_escape_the_runs_folder(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(BASELINE.read_text().replace('name = "spot_perp"', 'name = "../../elsewhere"'))
    res = runner.invoke(app, ["backtest", str(bad)])
    assert res.exit_code == 2 and "name must be" in res.output
