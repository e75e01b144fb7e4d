"""Funding history as venues really send it: stamps a few ms off the
settlement instant, rows sent twice, marks on some rows only. The rows are
SYNTHETIC variations of the shipped real rates (stamps moved, rows repeated,
marks added), labelled as such in their ``source``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fundarb.core.funding import scheduled_instant
from fundarb.core.model import NS_PER_HOUR, NS_PER_SECOND
from fundarb.data.history import (
    DataError,
    load_history,
    snap_settlements,
)
from fundarb.testkit.builders import venue_shaped_folder

MS = 1_000_000
H_MS = 3_600_000
SPOT, PERP = ("binance", "BTC/USDT"), ("binanceusdm", "BTC/USDT:USDT")
LO_MS = 1_709_251_200_000  # 2024-03-01
LABEL = "SYNTHETIC test variation of shipped binance BTCUSDT rows"


def raw(stamps_ms, rates, marks=None) -> pl.DataFrame:
    n = len(stamps_ms)
    return pl.DataFrame({
        "row": list(range(1, n + 1)), "stamp": [t * MS for t in stamps_ms], "rate": rates,
        "interval": [8.0] * n, "mark": marks if marks is not None else [None] * n, "source": [LABEL] * n,
    }, schema={"row": pl.Int64, "stamp": pl.Int64, "rate": pl.Float64, "interval": pl.Float64, "mark": pl.Float64,
               "source": pl.Utf8})


@settings(max_examples=120, deadline=None)
@given(offsets=st.lists(st.integers(-1000, 1000), min_size=2, max_size=30))
def test_stamps_within_the_tolerance_are_their_settlement_and_nothing_else_changes(offsets):
    instants = [LO_MS + k * 8 * H_MS for k in range(len(offsets))]
    rates = [1e-5 * (k + 1) for k in range(len(offsets))]
    out, snapped, dropped = snap_settlements(raw([t + o for t, o in zip(instants, offsets)], rates), "binance BTCUSDT",
                                             Path("f"), 1.0)
    assert out["ts"].to_list() == [t * MS for t in instants]
    assert out["rate"].to_list() == rates
    assert snapped == sum(1 for o in offsets if o != 0) and dropped == 0


@settings(max_examples=60, deadline=None)
@given(off_ms=st.integers(1001, 30 * 60 * 1000 - 1), row=st.integers(0, 5))
def test_a_stamp_beyond_the_tolerance_is_an_error_naming_venue_symbol_and_row(off_ms, row):
    stamps = [LO_MS + k * 8 * H_MS for k in range(6)]
    stamps[row] += off_ms
    with pytest.raises(DataError) as err:
        snap_settlements(raw(stamps, [1e-4] * 6), "binance BTCUSDT", Path("funding.parquet"), 1.0)
    msg = str(err.value)
    assert "binance BTCUSDT" in msg and f"row {row + 1} of funding.parquet" in msg
    assert "data.settlement_tolerance_seconds = 1" in msg


def test_the_tolerance_is_the_configs():
    stamps = [LO_MS, LO_MS + 8 * H_MS + 2500]
    with pytest.raises(DataError, match="2.500 s from its scheduled instant"):
        snap_settlements(raw(stamps, [1e-4, 2e-4]), "binance BTCUSDT", Path("f"), 1.0)
    out, snapped, _ = snap_settlements(raw(stamps, [1e-4, 2e-4]), "binance BTCUSDT", Path("f"), 3.0)
    assert out["ts"].to_list()[1] == (LO_MS + 8 * H_MS) * MS and snapped == 1


def test_an_identical_row_sent_twice_is_one_settlement_and_is_counted():
    stamps = [LO_MS + 2, LO_MS, LO_MS + 8 * H_MS + 3, LO_MS + 8 * H_MS + 3]
    out, snapped, dropped = snap_settlements(raw(stamps, [1e-4, 1e-4, 2e-4, 2e-4], [None, 61_000.0, None, None]),
                                             "binance BTCUSDT", Path("f"), 1.0)
    assert out.height == 2 and dropped == 2
    assert out["mark"].to_list()[0] == 61_000.0  # the copy with the venue's mark is the one kept


def test_two_different_rows_for_one_settlement_is_an_error_naming_both():
    stamps = [LO_MS + 2, LO_MS + 8 * H_MS, LO_MS + 8 * H_MS + 5]
    with pytest.raises(DataError) as err:
        snap_settlements(raw(stamps, [1e-4, 2e-4, 3e-4]), "binance BTCUSDT", Path("funding.parquet"), 1.0)
    msg = str(err.value)
    assert "two different rows for the 2024-03-01 08:00 UTC settlement" in msg
    assert "row 2 (2024-03-01 08:00:00.000, rate 0.0002, no mark)" in msg and "row 3 (2024-03-01 08:00:00.005, rate 0.0003" in msg


def test_scheduled_instant_is_the_nearest_whole_hour_within_the_tolerance():
    h = NS_PER_HOUR
    assert scheduled_instant(16 * h + 2 * MS, 8.0, NS_PER_SECOND) == 16 * h
    assert scheduled_instant(16 * h - 2 * MS, 8.0, NS_PER_SECOND) == 16 * h
    assert scheduled_instant(16 * h + 2 * NS_PER_SECOND, 8.0, NS_PER_SECOND) is None
    assert scheduled_instant(4 * h + 7 * MS, 8.0, NS_PER_SECOND) == 4 * h  # a 04/12/20 venue (KuCoin)
    assert scheduled_instant(12 * h, 24.0, 0) == 12 * h  # BitMEX's 24 h settlements at 12:00


# --- a whole data folder as a venue's history looks -------------------------------------

def test_a_venue_shaped_folder_loads_each_settlement_once_at_its_instant_with_its_mark(tmp_path):
    real = venue_shaped_folder(tmp_path)
    h = load_history(SPOT, PERP, "2024-03-01", "2024-04-01", 6, tmp_path, 1.0)
    shipped = load_history(SPOT, PERP, "2024-03-01", "2024-04-01", 6)
    np.testing.assert_array_equal(h.funding_ts, shipped.funding_ts)
    np.testing.assert_array_equal(h.funding_rate, shipped.funding_rate)
    n = h.funding_ts.size
    with_mark = int(np.count_nonzero(~np.isnan(h.funding_mark)))
    assert 0 < with_mark < n
    d = h.describe()
    assert d["funding_settlements_with_venue_mark"] == with_mark
    assert d["mark_price"].startswith(f"venue mark price at {with_mark} of {n} settlements")
    assert d["funding_intake"]["duplicate_rows_dropped"] == len(range(0, real.height, 20))
    assert d["funding_intake"]["stamps_snapped_to_schedule"] > 0


def test_the_statistics_read_every_series_of_a_table_by_the_same_rules(tmp_path):
    from fundarb.data.history import snap_table

    h = 3_600_000
    table = pl.DataFrame({
        "venue": ["binance"] * 3 + ["hyperliquid"] * 3,
        "symbol": ["BTCUSDT"] * 3 + ["BTC"] * 3,
        "funding_time_ms": [LO_MS + 2, LO_MS + 8 * h + 16, LO_MS + 8 * h + 16, LO_MS + 7, LO_MS + h - 3, LO_MS + 2 * h],
        "funding_rate": [1e-4, 2e-4, 2e-4, 1e-5, 2e-5, 3e-5],
        "interval_hours": [8.0, 8.0, 8.0, 1.0, 1.0, 1.0],
        "source": [LABEL] * 6,
    })
    out = snap_table(table, tmp_path / "f.parquet", 1.0)
    assert out.columns == table.columns
    assert out.sort("venue", "funding_time_ms")["funding_time_ms"].to_list() == [
        LO_MS, LO_MS + 8 * h, LO_MS, LO_MS + h, LO_MS + 2 * h]
    bad = table.with_columns(pl.when(pl.col("venue") == "hyperliquid").then(pl.col("funding_time_ms") + 4000)
                             .otherwise(pl.col("funding_time_ms")).alias("funding_time_ms"))
    with pytest.raises(DataError, match=r"hyperliquid BTC: funding stamp .* \(row 4 of"):
        snap_table(bad, tmp_path / "f.parquet", 1.0)
