"""What a history file must hold before anything runs on it: finite numbers
in plausible ranges, every column of the right kind, one value per hour and
market, and the shipped files as their README's sha256 sums say. Each bad
input is one DataError line naming the file, the row, its time and the value.

The small histories here are SYNTHETIC (a random walk around 40,000 and a
constant funding rate, ``source`` = "synthetic"); the checks of the real
shipped files read them as they are. The core's own guard against inf and
nan (the engine and the risk monitor) is run on SYNTHETIC books and
histories, in a subprocess with a time and memory limit where a regression
would loop.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fundarb.config import Scenario
from fundarb.core.book import PositionBook
from fundarb.core.model import Side
from fundarb.core.risk import NO_ACTION, RiskLimits, RiskMonitor, VenueCosts
from fundarb.data import checksums
from fundarb.data import history as hist
from fundarb.data.history import (
    FUNDING_FILE,
    MAX_ABS_FUNDING_RATE,
    MAX_INTERVAL_HOURS,
    MAX_PRICE_MOVE,
    PRICES_FILE,
    SHIPPED_DIR,
    DataError,
    check_funding,
    check_prices,
    load_history,
    snap_table,
)
from fundarb.data.margin_tiers import shipped_rule
from fundarb.data.scenario import apply_scenario
from fundarb.testkit.builders import PERP, SPOT, make_fill, synthetic_history

PAIR = (("binance", "BTC/USDT"), ("binanceusdm", "BTC/USDT:USDT"))
START_MS = 1_640_995_200_000  # 2022-01-01 00:00 UTC
H_MS = 3_600_000
HOURS = 24 * 4
WINDOW = ("2022-01-01", "2022-01-05")


# --- a small SYNTHETIC history in the shipped layout ---------------------------------------

def synthetic_frames(hours: int = HOURS) -> tuple[pl.DataFrame, pl.DataFrame]:
    """SYNTHETIC prices (spot and USD-M perp, one row per hour) and funding
    (every 8 h, rates of 1e-4 .. 5e-4 in size and either sign, the venue's
    mark on every row)."""
    open_ms = START_MS + np.arange(hours, dtype=np.int64) * H_MS
    mid = 40_000 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.002, hours)))
    prices = pl.concat([
        pl.DataFrame({"venue": "binance", "market": market, "symbol": "BTCUSDT", "open_time_ms": open_ms,
                      "close": px, "source": "synthetic"})
        for market, px in (("spot", mid), ("perp_linear", mid * 1.0001))])
    f_ms = START_MS + np.arange(8, hours, 8, dtype=np.int64) * H_MS
    k = f_ms.size
    rates = np.array([(1 + i % 5) * 1e-4 * (1 if i % 3 else -1) for i in range(k)])
    marks = mid[(f_ms - START_MS) // H_MS - 1] * 1.0002  # the perp close of the settlement hour, near enough
    funding = pl.DataFrame({"venue": "binance", "symbol": "BTCUSDT", "funding_time_ms": f_ms, "funding_rate": rates,
                            "interval_hours": 8.0, "mark_price": marks, "source": "synthetic"})
    return prices, funding


def write(folder: Path, prices: pl.DataFrame, funding: pl.DataFrame) -> Path:
    """The files whole and sealed (their values are what these tests damage,
    not their bytes: a damaged file's bytes are test_damaged_parquet's)."""
    from fundarb.support.parquet import write_sealed

    folder.mkdir(parents=True, exist_ok=True)
    write_sealed(prices, folder / PRICES_FILE)
    write_sealed(funding, folder / FUNDING_FILE)
    return folder


def load(folder: Path):
    return load_history(*PAIR, *WINDOW, 6, folder)


def set_value(frame: pl.DataFrame, col: str, row: int, value) -> pl.DataFrame:
    """``frame`` with ``col`` at 0-based ``row`` replaced (the column turns float for inf/nan)."""
    values = frame[col].to_list()
    values[row] = value
    dtype = pl.Float64 if isinstance(value, float) else frame.schema[col]
    return frame.with_columns(pl.Series(col, values, dtype=dtype))


def one_line_error(folder: Path) -> str:
    with pytest.raises(DataError) as err:
        load(folder)
    text = str(err.value)
    assert "\n" not in text
    return text


@pytest.fixture
def clean(tmp_path) -> tuple[pl.DataFrame, pl.DataFrame]:
    return synthetic_frames()


# --- non-finite and implausible numbers (SYNTHETIC files) ------------------------------------

@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_synthetic_non_finite_funding_rate_names_file_row_time_and_value(tmp_path, clean, value):
    prices, funding = clean
    folder = write(tmp_path / "d", prices, set_value(funding, "funding_rate", 4, value))
    msg = one_line_error(folder)
    assert str(folder / FUNDING_FILE) in msg and "row 5 of" in msg and "2022-01-02 16:00:00.000 UTC" in msg
    assert f"funding rate {value}" in msg and "not a finite number" in msg


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), 0.0, -40_000.0])
def test_synthetic_unusable_close_names_file_row_time_and_value(tmp_path, clean, value):
    prices, funding = clean
    folder = write(tmp_path / "d", set_value(prices, "close", 10, value), funding)
    msg = one_line_error(folder)
    # the bar opening 10:00 closes at 11:00
    assert str(folder / PRICES_FILE) in msg and "row 11 of" in msg and "spot price at 2022-01-01 11:00 UTC" in msg
    assert f"is {value}" in msg


def test_synthetic_funding_rate_x1000_is_beyond_the_bound(tmp_path, clean):
    prices, funding = clean
    rate = funding["funding_rate"][3] * 1000
    folder = write(tmp_path / "d", prices, set_value(funding, "funding_rate", 3, rate))
    msg = one_line_error(folder)
    assert f"funding rate {rate!r}" in msg and "row 4 of" in msg and f"+-{MAX_ABS_FUNDING_RATE:g}" in msg


def test_synthetic_rate_at_the_bound_loads(tmp_path, clean):
    prices, funding = clean
    load(write(tmp_path / "d", prices, set_value(funding, "funding_rate", 3, -MAX_ABS_FUNDING_RATE)))


@pytest.mark.parametrize("factor, where", [(100.0, 30), (0.01, 30), (1000.0, 0), (2.5, HOURS - 1)])
def test_synthetic_bad_print_is_named_with_its_neighbours(tmp_path, clean, factor, where):
    prices, funding = clean
    close = prices["close"][where] * factor
    folder = write(tmp_path / "d", set_value(prices, "close", where, close), funding)
    msg = one_line_error(folder)
    assert str(folder / PRICES_FILE) in msg and f"row {where + 1})" in msg and repr(close) in msg
    if 0 < where < HOURS - 1:  # a spike: the print is named, and both its neighbours
        assert "a bad print" in msg and f"row {where})" in msg and f"row {where + 2})" in msg


def test_synthetic_real_sized_moves_load(tmp_path, clean):
    """A 15% hourly fall and its recovery (more than any hour of the shipped history) is a move, not a print."""
    prices, funding = clean
    close = prices["close"].to_list()
    close[40] *= 0.85
    folder = write(tmp_path / "d", prices.with_columns(pl.Series("close", close)), funding)
    h = load(folder)
    assert h.spot.min() == pytest.approx(close[40])


@pytest.mark.parametrize("value", [0.0, -8.0, float("nan"), float("inf"), MAX_INTERVAL_HOURS + 1])
def test_synthetic_interval_hours_out_of_range_names_row(tmp_path, clean, value):
    prices, funding = clean
    folder = write(tmp_path / "d", prices, set_value(funding, "interval_hours", 2, value))
    msg = one_line_error(folder)
    assert f"interval_hours {value}" in msg and "row 3 of" in msg and str(folder / FUNDING_FILE) in msg


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, 0.0])
def test_synthetic_unusable_mark_names_row(tmp_path, clean, value):
    prices, funding = clean
    folder = write(tmp_path / "d", prices, set_value(funding, "mark_price", 2, value))
    msg = one_line_error(folder)
    assert "mark price" in msg and "row 3 of" in msg and str(value) in msg


def test_synthetic_mark_far_from_the_perp_is_refused(tmp_path, clean):
    prices, funding = clean
    marks = (funding["mark_price"] * 100).to_list()  # every mark in the wrong unit: no jump between them
    folder = write(tmp_path / "d", prices, funding.with_columns(pl.Series("mark_price", marks)))
    msg = one_line_error(folder)
    assert "settlement mark" in msg and "x100" in msg and "the perp's close" in msg


def test_synthetic_spot_far_from_the_perp_is_refused(tmp_path, clean):
    prices, funding = clean
    prices = prices.with_columns(pl.when(pl.col("market") == "spot").then(pl.col("close") * 10)
                                 .otherwise(pl.col("close")).alias("close"))
    msg = one_line_error(write(tmp_path / "d", prices, funding))
    assert msg.startswith("spot price") and "the perp's close" in msg


@pytest.mark.parametrize("col, value, why", [
    ("open_time_ms", None, "missing (null)"),
    ("open_time_ms", float("nan"), "not a finite number"),
    ("open_time_ms", 1_641_000_000.0, "not a UTC time in ms"),  # seconds, not ms
    ("open_time_ms", float(START_MS + 1_800_000), "not on a whole UTC hour"),
    ("open_time_ms", START_MS + 0.5, "not a whole number of milliseconds"),
    ("venue", None, "has no venue (null)"),
])
def test_synthetic_bad_price_time_or_key_names_row(tmp_path, clean, col, value, why):
    prices, funding = clean
    folder = write(tmp_path / "d", set_value(prices, col, 7, value), funding)
    msg = one_line_error(folder)
    assert str(folder / PRICES_FILE) in msg and "row 8" in msg and why in msg


def test_synthetic_funding_stamp_null_or_infinite_names_row(tmp_path, clean):
    prices, funding = clean
    for value, why in ((None, "missing (null)"), (float("inf"), "not a finite number")):
        folder = write(tmp_path / str(value), prices, set_value(funding, "funding_time_ms", 1, value))
        msg = one_line_error(folder)
        assert str(folder / FUNDING_FILE) in msg and "funding_time_ms" in msg and "row 2" in msg and why in msg


# --- duplicates (SYNTHETIC files) ----------------------------------------------------------------

def test_synthetic_identical_price_rows_are_kept_once_and_counted(tmp_path, clean):
    prices, funding = clean
    base = load(write(tmp_path / "a", prices, funding))
    doubled = pl.concat([prices, prices[5:8], prices[100:101]])
    h = load(write(tmp_path / "b", doubled, funding))
    assert np.array_equal(h.spot, base.spot) and np.array_equal(h.perp, base.perp)
    assert h.describe()["price_duplicate_rows_dropped"] == 4
    assert "price_duplicate_rows_dropped" not in base.describe()  # a clean file's report is unchanged


def test_synthetic_conflicting_price_rows_name_both(tmp_path, clean):
    prices, funding = clean
    other = prices[5:6].with_columns(pl.col("close") + 1)
    folder = write(tmp_path / "d", pl.concat([prices, other]), funding)
    msg = one_line_error(folder)
    assert "appears twice with different closes" in msg and "row 6 (" in msg and f"row {prices.height + 1} (" in msg


def test_synthetic_repeated_settlement_with_another_interval_is_an_error(tmp_path, clean):
    prices, funding = clean
    other = funding[2:3].with_columns(pl.lit(4.0).alias("interval_hours"))
    msg = one_line_error(write(tmp_path / "d", prices, pl.concat([funding, other])))
    assert "two different rows for the 2022-01-02 00:00 UTC settlement" in msg and "interval 4 h" in msg


# --- columns missing or of the wrong kind (SYNTHETIC files) --------------------------------

PRICE_COLUMNS = ["venue", "market", "symbol", "open_time_ms", "close"]
FUNDING_COLUMNS = ["venue", "symbol", "funding_time_ms", "funding_rate"]


@pytest.mark.parametrize("file, col", [(PRICES_FILE, c) for c in PRICE_COLUMNS]
                         + [(FUNDING_FILE, c) for c in FUNDING_COLUMNS])
def test_synthetic_missing_column_is_one_line_naming_file_and_column(tmp_path, clean, file, col):
    prices, funding = clean
    if file == PRICES_FILE:
        prices = prices.drop(col)
    else:
        funding = funding.drop(col)
    folder = write(tmp_path / "d", prices, funding)
    msg = one_line_error(folder)
    assert str(folder / file) in msg and f"no column {col!r}" in msg


@pytest.mark.parametrize("file, col, cast", [
    (PRICES_FILE, "close", pl.Utf8), (PRICES_FILE, "open_time_ms", pl.Utf8), (PRICES_FILE, "close", pl.Boolean),
    (PRICES_FILE, "venue", pl.Int64), (FUNDING_FILE, "funding_rate", pl.Utf8),
    (FUNDING_FILE, "interval_hours", pl.Utf8), (FUNDING_FILE, "mark_price", pl.Utf8),
    (FUNDING_FILE, "funding_time_ms", pl.Datetime("ms")), (FUNDING_FILE, "symbol", pl.Int64),
])
def test_synthetic_wrong_dtype_is_one_line_naming_file_and_column(tmp_path, clean, file, col, cast):
    prices, funding = clean

    def damage(frame: pl.DataFrame) -> pl.DataFrame:
        if cast == pl.Int64 and frame.schema[col] == pl.Utf8:
            return frame.with_columns(pl.lit(1, dtype=pl.Int64).alias(col))
        return frame.with_columns(pl.col(col).cast(cast))

    if file == PRICES_FILE:
        prices = damage(prices)
    else:
        funding = damage(funding)
    folder = write(tmp_path / "d", prices, funding)
    msg = one_line_error(folder)
    assert str(folder / file) in msg and f"column {col!r}" in msg


# --- the real shipped files pass, with room ---------------------------------------------------

def test_the_whole_shipped_history_passes_every_check_with_room():
    """Every row of the real shipped files: prices of all three markets and
    the 13 funding series. The bounds sit well outside their real extremes."""
    prices = pl.read_parquet(SHIPPED_DIR / PRICES_FILE)
    kept, repeats = check_prices(prices, SHIPPED_DIR / PRICES_FILE, ["venue", "market", "symbol"], "open_time_ms",
                                 lambda r: (r["market"], r["market"]))
    assert repeats == 0 and kept.height == prices.height
    funding = pl.read_parquet(SHIPPED_DIR / FUNDING_FILE)
    checked = check_funding(funding, SHIPPED_DIR / FUNDING_FILE, ["venue", "symbol"], "funding_time_ms",
                            lambda r: f"{r['venue']} {r['symbol']}")
    assert checked.height == funding.height == snap_table(funding, SHIPPED_DIR / FUNDING_FILE, 1.0).height
    assert funding.select("venue", "symbol").unique().height == 13
    # the real extremes the bounds clear
    assert funding["funding_rate"].abs().max() == pytest.approx(0.01125)  # BitMEX XBTUSD
    assert funding["funding_rate"].abs().max() < MAX_ABS_FUNDING_RATE / 4
    assert set(funding["interval_hours"].unique().to_list()) == {1.0, 8.0, 24.0}
    moves = (prices.filter(pl.col("close").is_not_null()).sort("venue", "market", "symbol", "open_time_ms")
             .select((pl.col("close") / pl.col("close").shift(1).over("venue", "market", "symbol")).alias("r"))["r"])
    assert 1.06 < moves.max() < 1.07 and 0.92 < moves.min() < 0.93
    assert moves.max() < MAX_PRICE_MOVE / 1.8 and moves.min() > 1.8 / MAX_PRICE_MOVE


def test_the_shipped_window_loads_byte_for_byte_as_before_the_checks():
    """The baseline window's arrays hash to what the loader gave before any of these checks existed."""
    h = load_history(*PAIR, "2021-07-01", "2024-07-01", 6)
    digest = hashlib.sha256()
    for a in (h.hours, h.spot, h.perp, h.carried, h.funding_ts, h.funding_rate, h.funding_interval, h.funding_mark):
        digest.update(np.ascontiguousarray(a).tobytes())
    assert (h.hours.size, h.funding_ts.size, int(h.carried.sum()), h.price_duplicates) == (26_302, 3_287, 19, 0)
    assert digest.hexdigest() == "f75ce2976fd1bd731335285888b51be13eab5453911294a340db83a99894bdf7"


# --- the shipped files against the README's sha256 sums ---------------------------------------

def test_the_shipped_files_match_the_readme_sums():
    sums = checksums.listed_sums()
    assert set(sums) >= {PRICES_FILE, FUNDING_FILE}
    for name in (PRICES_FILE, FUNDING_FILE):
        assert checksums.sha256_of(SHIPPED_DIR / name) == sums[name]
        assert checksums.shipped_problem(SHIPPED_DIR / name) is None


@pytest.fixture
def shipped_copy(tmp_path, monkeypatch) -> Path:
    """A copy of the shipped folder standing in for it (the real one is never written)."""
    copy = tmp_path / "shipped"
    shutil.copytree(SHIPPED_DIR, copy)
    monkeypatch.setattr(checksums, "SHIPPED_DIR", copy)
    monkeypatch.setattr(hist, "SHIPPED_DIR", copy)
    checksums.forget()
    yield copy
    checksums.forget()


def doctor(path: Path) -> None:
    """One funding rate changed, SYNTHETIC: the file no longer matches its sum."""
    f = pl.read_parquet(path)
    f.with_columns(pl.when(pl.int_range(pl.len()) == 100).then(pl.col("funding_rate") + 1e-6)
                   .otherwise(pl.col("funding_rate")).alias("funding_rate")).write_parquet(path)


def test_a_changed_shipped_file_is_refused_in_one_line(shipped_copy):
    load_history(*PAIR, "2022-01-01", "2022-02-01", 6)  # the copy as shipped loads
    doctor(shipped_copy / FUNDING_FILE)
    with pytest.raises(DataError) as err:
        load_history(*PAIR, "2022-01-01", "2022-02-01", 6)
    msg = str(err.value)
    assert "\n" not in msg and str(shipped_copy / FUNDING_FILE) in msg and "was changed" in msg


def test_a_shipped_file_the_readme_does_not_list_is_refused(shipped_copy):
    readme = shipped_copy / "README.md"
    readme.write_text("\n".join(line for line in readme.read_text().splitlines() if PRICES_FILE not in line))
    with pytest.raises(DataError, match="has no sha256 listed"):
        load_history(*PAIR, "2022-01-01", "2022-02-01", 6)


def test_the_verdict_is_cached_per_size_and_mtime(shipped_copy, monkeypatch):
    calls = []
    real = checksums.sha256_of
    monkeypatch.setattr(checksums, "sha256_of", lambda p: calls.append(p.name) or real(p))
    for _ in range(3):
        load_history(*PAIR, "2022-01-01", "2022-02-01", 6)
    assert sorted(calls) == [FUNDING_FILE, PRICES_FILE]  # hashed once each
    doctor(shipped_copy / FUNDING_FILE)
    os.utime(shipped_copy / FUNDING_FILE, ns=(1, 1))  # another version, whatever the clock's tick
    with pytest.raises(DataError, match="was changed"):
        load_history(*PAIR, "2022-01-01", "2022-02-01", 6)
    assert calls.count(FUNDING_FILE) == 2


def test_a_data_dir_of_the_users_is_not_checksummed(tmp_path):
    """A folder passed with --data-dir holds the user's files: a README beside them is not a promise."""
    folder = tmp_path / "mine"
    shutil.copytree(SHIPPED_DIR, folder)
    doctor(folder / FUNDING_FILE)
    load_history(*PAIR, "2022-01-01", "2022-02-01", 6, folder)


# --- a scenario never hands the engine a non-finite number (SYNTHETIC history) -------------------

def test_synthetic_history_with_an_infinite_price_is_refused_by_the_scenario():
    n = 48
    spot = np.full(n, 40_000.0)
    spot[20] = np.inf
    h = synthetic_history(spot, np.full(n, 40_004.0), np.full(n, 1e-4))
    with pytest.raises(DataError, match=r"spot price at .* inf: not a finite number"):
        apply_scenario(h, Scenario("synthetic stress", funding_scale=2.0))


# --- the core: inf and nan never drive an action (SYNTHETIC books) -------------------------------

COSTS = VenueCosts(0.001, 0.0005, 0.001, shipped_rule("binanceusdm", "BTC/USDT:USDT"), 1.0, 0.35)


@pytest.mark.parametrize("bad", [float("nan"), float("-inf"), float("inf")])
def test_synthetic_flat_book_with_non_finite_cash_halts_and_moves_nothing(bad):
    book = PositionBook.open(SPOT, PERP, 65_000.0, 35_000.0)
    book.perp.cash = bad
    monitor = RiskMonitor(RiskLimits(), COSTS)
    first = monitor.evaluate(book, 1, False, False)
    assert first.halted and first.transfer is None and first.transfer_to_perp == 0
    assert "not a finite number" in monitor.kill.reason
    for t in range(2, 50):  # and nothing after, on every later event
        assert monitor.evaluate(book, t, False, False) is NO_ACTION


def test_synthetic_open_book_with_non_finite_cash_only_flattens_once():
    book = PositionBook.open(SPOT, PERP, 65_000.0, 35_000.0)
    book.apply_fill(make_fill(SPOT, Side.BUY, 1.0, 40_000.0))
    book.apply_fill(make_fill(PERP, Side.SELL, 1.0, 40_000.0))
    book.perp.cash = float("nan")
    monitor = RiskMonitor(RiskLimits(), COSTS)
    first = monitor.evaluate(book, 1, False, False)
    assert first.halted and {i.reason for i in first.intents} == {"kill_flatten"}
    assert all(i.qty == 1.0 for i in first.intents)
    later = [monitor.evaluate(book, t, False, False) for t in range(2, 20)]
    assert sum(len(a.intents) for a in later) == 0 and all(a.transfer is None for a in later)


ENGINE_RUN = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np
    from fundarb.config import load
    from fundarb.core.model import NS_PER_HOUR, TransferRejected
    from fundarb.data.history import MarketHistory
    import fundarb.sim.backtest as bt

    bad, refuse = float(sys.argv[1]), sys.argv[2] == "refuse"
    n = 24 * 40
    t0 = 1_700_000_000 * 1_000_000_000 // NS_PER_HOUR * NS_PER_HOUR
    mid = 40_000 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 0.004, n)))
    hours = t0 + np.arange(n, dtype=np.int64) * NS_PER_HOUR
    fts = hours[1::8]
    # enter, then exit (the late rates are below the default's exit bar of -100% APR): the cash goes back by transfer
    rates = np.where(np.arange(fts.size) < 20, 6e-4, -1.2e-3)
    rates[12] = bad  # SYNTHETIC: one settlement's rate (inf or nan in the tests of the guard), the position open
    h = MarketHistory(hours=hours, spot=mid, perp=mid * 1.0001, carried=np.zeros(n, dtype=bool), funding_ts=fts,
                      funding_rate=rates, funding_interval=np.full(fts.size, 8.0),
                      funding_mark=np.full(fts.size, np.nan), sources=("synthetic",))

    class RefusingVenue(bt.SimExchange):
        def request_transfer(self, request):
            self._out.append(TransferRejected(self.now, request.from_venue, request.to_venue, request.amount,
                                              "SYNTHETIC: withdrawals suspended"))

    if refuse:
        bt.SimExchange = RefusingVenue
    engine, sim = bt.build_simulation(load(Path(sys.argv[3])), h)
    engine.run()
    transfers = [r for k, r in engine.recorder.rows if k == "transfer"]
    requested = [r for r in transfers if r["status"] == "requested"]
    print(json.dumps({
        "events_past_the_tape": engine.clock.now_ns() - int(hours[-1]),
        "kill": engine.monitor.kill.reason,
        "alerts": [a.kind for a in engine.alerts],
        "requested": len(requested),
        "instants": len({r["ts"] for r in requested}),
        "non_finite_amounts": sum(1 for r in transfers if not np.isfinite(r["amount"])),
        "equity_finite": bool(np.isfinite(engine.book.equity)),
    }))
""")

BASELINE = Path(__file__).resolve().parents[2] / "sims" / "spot_perp.toml"


def run_engine(bad: float, refuse: bool = False) -> dict:
    """The engine on a SYNTHETIC history in a subprocess: 60 s and 1.5 GB at
    most, so a loop that never ends fails the test instead of the machine."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000, 1_500_000_000))

    done = subprocess.run([sys.executable, "-c", ENGINE_RUN, repr(bad), "refuse" if refuse else "accept", str(BASELINE)],
                          capture_output=True, text=True, timeout=60, preexec_fn=limit)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("bad", [float("-inf"), float("inf"), float("nan")])
def test_synthetic_non_finite_rate_in_the_engine_ends_halted_without_a_non_finite_transfer(bad):
    out = run_engine(bad)
    assert "not a finite number" in out["kill"] and "non_finite" in out["alerts"]
    assert out["alerts"].count("non_finite") == 1
    assert out["non_finite_amounts"] == 0 and out["equity_finite"]
    assert out["events_past_the_tape"] <= 24 * 3_600 * 1_000_000_000  # it ends, a day after the data at most


def test_synthetic_venue_refusing_every_transfer_gets_one_request_per_instant():
    out = run_engine(0.0006, refuse=True)
    assert out["requested"] > 0 and out["requested"] == out["instants"]


# --- random corruption of a SYNTHETIC copy: a clean reading or one DataError line -----------------

CLEAN = synthetic_frames(48)
PRICE_NUMERIC = ["open_time_ms", "close"]
FUNDING_NUMERIC = ["funding_time_ms", "funding_rate", "interval_hours", "mark_price"]
# columns whose absence changes nothing (the rest are required: dropping them is an error);
# mark_price is optional too, but without it the perp close stands in, a different reading by design
NEUTRAL_OPTIONAL = {PRICES_FILE: ["source"], FUNDING_FILE: ["source", "interval_hours"]}


def _arrays(h) -> list[np.ndarray]:
    return [h.hours, h.spot, h.perp, h.carried, h.funding_ts, h.funding_rate, h.funding_interval, h.funding_mark]


def _corrupt(frame: pl.DataFrame, file: str, kind: str, col: str, row: int) -> pl.DataFrame:
    row %= frame.height
    if kind in ("inf", "-inf", "nan"):
        return set_value(frame, col, row, float(kind))
    if kind == "negative":
        return set_value(frame, col, row, -abs(frame[col][row]))
    if kind == "x1000":
        return set_value(frame, col, row, frame[col][row] * 1000)
    if kind == "duplicate":
        return pl.concat([frame, frame[row:row + 1]])
    if kind == "duplicate_changed":
        other = frame[row:row + 1].with_columns((pl.col(col) * 1.01).cast(frame.schema[col]))
        return pl.concat([frame, other])
    if kind == "drop_column":
        required = PRICE_COLUMNS if file == PRICES_FILE else FUNDING_COLUMNS
        names = required + NEUTRAL_OPTIONAL[file]
        return frame.drop(names[row % len(names)])
    if kind == "text":
        return frame.with_columns(pl.col(col).cast(pl.Utf8))
    if kind == "boolean":
        return frame.with_columns(pl.col(col) > 0)
    raise AssertionError(kind)


# a negative rate is a real rate, and x1000 of a rate of at least 1e-4 is beyond the bound
KINDS = ["inf", "-inf", "nan", "negative", "x1000", "duplicate", "duplicate_changed", "drop_column", "text", "boolean"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(file=st.sampled_from([PRICES_FILE, FUNDING_FILE]), kind=st.sampled_from(KINDS),
       col_pick=st.integers(0, 3), row=st.integers(0, 10_000))
def test_synthetic_random_corruption_loads_clean_or_fails_in_one_line(file, kind, col_pick, row):
    prices, funding = CLEAN
    numeric = PRICE_NUMERIC if file == PRICES_FILE else FUNDING_NUMERIC
    col = numeric[col_pick % len(numeric)]
    if kind == "negative" and col == "funding_rate":
        col = "interval_hours"
    if kind == "duplicate_changed" and col in ("open_time_ms", "funding_time_ms"):
        col = "close" if file == PRICES_FILE else "funding_rate"
    if file == PRICES_FILE:
        prices = _corrupt(prices, file, kind, col, row)
    else:
        funding = _corrupt(funding, file, kind, col, row)
    with tempfile.TemporaryDirectory() as tmp:
        clean = load_history(*PAIR, "2022-01-01", "2022-01-03", 6, write(Path(tmp) / "clean", *CLEAN))
        folder = write(Path(tmp) / "corrupt", prices, funding)
        try:
            h = load_history(*PAIR, "2022-01-01", "2022-01-03", 6, folder)
        except DataError as exc:
            msg = str(exc)
            assert "\n" not in msg and msg.strip() == msg and str(folder) in msg
            return
    for got, want in zip(_arrays(h), _arrays(clean)):
        assert np.array_equal(got, want, equal_nan=got.dtype.kind == "f"), (kind, file, col, row)
