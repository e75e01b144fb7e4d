"""The ``fundarb data stats`` use case: read the settlements and prices,
compute the statistics and write them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl

from fundarb.data.history import FUNDING_FILE, NUMERIC, PRICES_FILE, SHIPPED_DIR, TEXT, read_table, snap_table
from fundarb.output.funding_stats import STATS_FILES, file_digest, write_stats
from fundarb.research.funding_stats import (
    DEFAULT_HOLDING_DAYS,
    DEFAULT_THRESHOLDS,
    FUNDING_COLUMNS,
    PRICE_COLUMNS,
    SETTLEMENT_TOLERANCE_S,
    FundingStats,
    _window,
    check_thresholds,
)


def run_stats(venues: Sequence[str] | None, since: str | None, until: str | None, out: Path, data_dir: Path | None,
              thresholds: Sequence[float] | None) -> tuple[FundingStats, dict[str, Path]]:
    """The command's work, raising DataError / StatsError / OutputError / ConfigError."""
    from fundarb.output.report import check_output_folder

    _window(since, until)
    check_thresholds(list(thresholds) if thresholds else DEFAULT_THRESHOLDS, DEFAULT_HOLDING_DAYS)
    check_output_folder(out, STATS_FILES)
    data_dir = data_dir or SHIPPED_DIR
    fpath, ppath = data_dir / FUNDING_FILE, data_dir / PRICES_FILE
    funding, prices = read_settlements(data_dir), read_prices(data_dir)
    inputs = {FUNDING_FILE: {"rows": funding.height, "sha256": file_digest(fpath)},
              PRICES_FILE: {"rows": prices.height, "sha256": file_digest(ppath)}}
    return write_stats(funding, out, list(venues) if venues else None, prices=prices, since=since, until=until,
                       thresholds=sorted(set(thresholds)) if thresholds else DEFAULT_THRESHOLDS, inputs=inputs)


NUMBERS = ("funding_time_ms", "funding_rate", "interval_hours", "open_time_ms", "close")


def read_settlements(data_dir: Path) -> pl.DataFrame:
    """The folder's funding settlements, one per instant: venue stamps a few
    ms late and rows sent twice are snapped and merged as a backtest reads them."""
    path = data_dir / FUNDING_FILE
    funding = read_table(path, {c: NUMERIC if c in NUMBERS else TEXT for c in FUNDING_COLUMNS})
    return snap_table(funding, path, SETTLEMENT_TOLERANCE_S)


def read_prices(data_dir: Path) -> pl.DataFrame:
    return read_table(data_dir / PRICES_FILE, {c: NUMERIC if c in NUMBERS else TEXT for c in PRICE_COLUMNS})
