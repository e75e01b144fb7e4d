"""`fundarb backtest --data-dir` on history with one bad value, as a user
meets it: exit code 2 and one `error: ...` line naming the file, the row, its
time and the value, never a traceback, a hang or a silently different result.

Each folder holds real shipped rows (Binance spot and USD-M perp prices and
the BTCUSDT funding, 2022-12 .. 2023-02) with one SYNTHETIC change, made by
the test and named in it. Where the code before these checks looped without
end (an infinite rate, a negative interval), the CLI runs in a subprocess
with a time and memory limit.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from fundarb.cli.main import app
from fundarb.data.history import FUNDING_FILE, PRICES_FILE, SHIPPED_DIR

ROOT = Path(__file__).resolve().parents[2]
BASELINE = str(ROOT / "sims" / "spot_perp.toml")
WINDOW = ["--from", "2023-01-01", "--to", "2023-02-01"]
runner = CliRunner()
H_MS = 3_600_000
LO_MS, HI_MS = 1_669_852_800_000, 1_677_628_800_000  # 2022-12-01 .. 2023-03-01
BAD_SETTLEMENT_MS = 1_673_337_600_000  # 2023-01-10 08:00, a position is open by then in this window
BAD_OPEN_MS = 1_673_341_200_000  # the bar opening 2023-01-10 09:00 (closing 10:00)


def real_rows() -> tuple[pl.DataFrame, pl.DataFrame]:
    prices = pl.read_parquet(SHIPPED_DIR / PRICES_FILE).filter(
        (pl.col("open_time_ms") >= LO_MS) & (pl.col("open_time_ms") < HI_MS) & (pl.col("market") != "perp_inverse"))
    funding = pl.read_parquet(SHIPPED_DIR / FUNDING_FILE).filter(
        (pl.col("venue") == "binance") & (pl.col("symbol") == "BTCUSDT")
        & (pl.col("funding_time_ms") >= LO_MS) & (pl.col("funding_time_ms") < HI_MS))
    return prices, funding


def folder_with(tmp_path: Path, prices: pl.DataFrame, funding: pl.DataFrame, name: str = "data") -> Path:
    d = tmp_path / name
    d.mkdir()
    prices.write_parquet(d / PRICES_FILE)
    funding.write_parquet(d / FUNDING_FILE)
    return d


def changed(frame: pl.DataFrame, where: pl.Expr, col: str, value: pl.Expr) -> pl.DataFrame:
    """``frame`` with ``col`` set to ``value`` on the rows ``where`` picks (the SYNTHETIC change)."""
    return frame.with_columns(pl.when(where).then(value).otherwise(pl.col(col)).alias(col))


def row_of(frame: pl.DataFrame, where: pl.Expr) -> int:
    return int(frame.with_row_index("i", 1).filter(where)["i"][0])


AT_SETTLEMENT = pl.col("funding_time_ms") == BAD_SETTLEMENT_MS
AT_SPOT_HOUR = (pl.col("market") == "spot") & (pl.col("open_time_ms") == BAD_OPEN_MS)


def backtest(*args: str):
    return runner.invoke(app, ["backtest", BASELINE, *WINDOW, *args, "-q"], env={"COLUMNS": "200"})


def one_error_line(res, out: Path) -> str:
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert "Traceback" not in res.output and not out.exists()
    return lines[0]


CLI = "import sys; from fundarb.cli.main import main; sys.argv[0] = 'fundarb'; main()"


def limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2_000_000_000, 2_000_000_000))


def backtest_subprocess(*args: str, code: str = CLI) -> subprocess.CompletedProcess:
    """The CLI in its own process: 90 s and 2 GB at most (a loop fails the test, not the machine)."""
    return subprocess.run([sys.executable, "-c", code, "backtest", BASELINE, *WINDOW, *args, "-q"],
                          capture_output=True, text=True, timeout=90, preexec_fn=limited,
                          env={**os.environ, "COLUMNS": "200"})


def subprocess_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout[-1000:], done.stderr[-2000:])
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


# --- non-finite numbers --------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["inf", "-inf"])
def test_an_infinite_funding_rate_is_one_line_not_a_hang(tmp_path, value):
    prices, funding = real_rows()
    bad = changed(funding, AT_SETTLEMENT, "funding_rate", pl.lit(float(value)))
    data = folder_with(tmp_path, prices, bad)
    line = subprocess_error_line(backtest_subprocess("--data-dir", str(data), "--out", str(tmp_path / "o")))
    assert f"funding rate {value} at 2023-01-10 08:00:00.000 UTC" in line
    assert f"row {row_of(funding, AT_SETTLEMENT)} of {data / FUNDING_FILE}" in line
    assert not (tmp_path / "o").exists()


def test_an_infinite_spot_close_is_one_line(tmp_path):
    prices, funding = real_rows()
    data = folder_with(tmp_path, changed(prices, AT_SPOT_HOUR, "close", pl.lit(float("inf"))), funding)
    line = one_error_line(backtest("--data-dir", str(data), "--out", str(tmp_path / "o")), tmp_path / "o")
    assert "spot price at 2023-01-10 10:00 UTC is inf" in line
    assert f"row {row_of(prices, AT_SPOT_HOUR)} of {data / PRICES_FILE}" in line


# --- finite but implausible: these changed the results silently ----------------------------------

def test_one_settlement_x1000_is_refused_not_a_bigger_pnl(tmp_path):
    prices, funding = real_rows()
    rate = float(funding.filter(AT_SETTLEMENT)["funding_rate"][0]) * 1000
    data = folder_with(tmp_path, prices, changed(funding, AT_SETTLEMENT, "funding_rate", pl.col("funding_rate") * 1000))
    line = one_error_line(backtest("--data-dir", str(data), "--out", str(tmp_path / "o")), tmp_path / "o")
    assert f"funding rate {rate!r} at 2023-01-10 08:00:00.000 UTC" in line and "+-0.05 per settlement interval" in line
    assert str(data / FUNDING_FILE) in line


def test_one_hour_of_spot_x100_is_refused_not_a_drawdown(tmp_path):
    prices, funding = real_rows()
    close = float(prices.filter(AT_SPOT_HOUR)["close"][0]) * 100
    data = folder_with(tmp_path, changed(prices, AT_SPOT_HOUR, "close", pl.col("close") * 100), funding)
    line = one_error_line(backtest("--data-dir", str(data), "--out", str(tmp_path / "o")), tmp_path / "o")
    assert f"spot price at 2023-01-10 10:00 UTC is {close!r} (row {row_of(prices, AT_SPOT_HOUR)})" in line
    assert "a bad print" in line and str(data / PRICES_FILE) in line


def test_a_conflicting_repeated_price_names_both_rows_and_an_identical_one_changes_nothing(tmp_path):
    prices, funding = real_rows()
    clean = folder_with(tmp_path, prices, funding, "clean")
    res = backtest("--data-dir", str(clean), "--out", str(tmp_path / "o_clean"))
    assert res.exit_code == 0, res.output
    again = folder_with(tmp_path, pl.concat([prices, prices.filter(AT_SPOT_HOUR)]), funding, "repeated")
    res = backtest("--data-dir", str(again), "--out", str(tmp_path / "o_again"))
    assert res.exit_code == 0, res.output
    a, b = (json.loads((tmp_path / o / "report.json").read_text()) for o in ("o_clean", "o_again"))
    assert a["metrics"] == b["metrics"] and b["data"]["price_duplicate_rows_dropped"] == 1
    other = prices.filter(AT_SPOT_HOUR).with_columns(pl.col("close") + 5)
    data = folder_with(tmp_path, pl.concat([prices, other]), funding, "conflicting")
    line = one_error_line(backtest("--data-dir", str(data), "--out", str(tmp_path / "o")), tmp_path / "o")
    assert "spot price for the hour closing 2023-01-10 10:00 UTC appears twice with different closes" in line
    assert f"row {row_of(prices, AT_SPOT_HOUR)} (" in line and f"row {prices.height + 1} (" in line


# --- columns: missing, of the wrong kind, or a zero interval -------------------------------------

@pytest.mark.parametrize("value", [0.0, float("nan"), -8.0])
def test_a_bad_interval_is_one_line_naming_file_and_column(tmp_path, value):
    """In a subprocess: a zero or nan interval was a traceback, a negative one a simulator that never ends."""
    prices, funding = real_rows()
    data = folder_with(tmp_path, prices, changed(funding, AT_SETTLEMENT, "interval_hours", pl.lit(value)))
    line = subprocess_error_line(backtest_subprocess("--data-dir", str(data), "--out", str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()
    assert f"interval_hours {value} at 2023-01-10 08:00:00.000 UTC" in line and str(data / FUNDING_FILE) in line
    assert f"row {row_of(funding, AT_SETTLEMENT)} of" in line


@pytest.mark.parametrize("file, damage, expect", [
    (FUNDING_FILE, lambda f: f.drop("funding_rate"), "has no column 'funding_rate'"),
    (FUNDING_FILE, lambda f: f.with_columns(pl.col("funding_rate").cast(pl.Utf8)), "column 'funding_rate' is String"),
    (FUNDING_FILE, lambda f: f.with_columns(pl.col("interval_hours").cast(pl.Utf8)), "column 'interval_hours' is String"),
    (PRICES_FILE, lambda p: p.with_columns(pl.col("close").cast(pl.Utf8)), "column 'close' is String"),
    (PRICES_FILE, lambda p: p.drop("open_time_ms"), "has no column 'open_time_ms'"),
    (PRICES_FILE, lambda p: changed(p, AT_SPOT_HOUR, "open_time_ms", pl.lit(None)), "open_time_ms at row"),
    (PRICES_FILE, lambda p: changed(p.with_columns(pl.col("open_time_ms").cast(pl.Float64)), AT_SPOT_HOUR,
                                    "open_time_ms", pl.lit(float("nan"))), "open_time_ms nan at row"),
])
def test_a_missing_column_a_wrong_dtype_or_a_missing_time_is_one_line(tmp_path, file, damage, expect):
    prices, funding = real_rows()
    if file == PRICES_FILE:
        prices = damage(prices)
    else:
        funding = damage(funding)
    data = folder_with(tmp_path, prices, funding)
    line = one_error_line(backtest("--data-dir", str(data), "--out", str(tmp_path / "o")), tmp_path / "o")
    assert str(data / file) in line and expect in line


# --- the shipped files against their README's sums ------------------------------------------------

SHIPPED_STAND_IN = textwrap.dedent("""
    import sys
    from pathlib import Path
    from fundarb.data import history
    from fundarb.data import checksums
    copy = Path(sys.argv.pop(1))
    checksums.SHIPPED_DIR = history.SHIPPED_DIR = copy  # a copy stands in for the package's own folder
    sys.argv[0] = "fundarb"
    from fundarb.cli.main import main
    main()
""")


def test_a_changed_shipped_file_is_refused_naming_it(tmp_path):
    """A copy of the shipped folder stands in for it (the package's files are never written)."""
    copy = tmp_path / "shipped"
    shutil.copytree(SHIPPED_DIR, copy)
    done = subprocess.run([sys.executable, "-c", SHIPPED_STAND_IN, str(copy), "backtest", BASELINE, *WINDOW,
                           "--out", str(tmp_path / "o_ok"), "-q"], capture_output=True, text=True, timeout=90,
                          preexec_fn=limited)
    assert done.returncode == 0, done.stderr[-2000:]
    f = pl.read_parquet(copy / PRICES_FILE)
    changed(f, pl.int_range(pl.len()) == 10, "close", pl.col("close") + 0.01).write_parquet(copy / PRICES_FILE)
    done = subprocess.run([sys.executable, "-c", SHIPPED_STAND_IN, str(copy), "backtest", BASELINE, *WINDOW,
                           "--out", str(tmp_path / "o"), "-q"], capture_output=True, text=True, timeout=90,
                          preexec_fn=limited, env={**os.environ, "COLUMNS": "200"})
    line = subprocess_error_line(done)
    assert f"shipped data file {copy / PRICES_FILE} was changed" in line and "README.md" in line
    assert not (tmp_path / "o").exists()
