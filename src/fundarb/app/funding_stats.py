"""The ``fundarb data stats`` use case: read the settlements and prices,
compute the statistics and write them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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
    numbers = ("funding_time_ms", "funding_rate", "interval_hours", "open_time_ms", "close")
    funding = read_table(fpath, {c: NUMERIC if c in numbers else TEXT for c in FUNDING_COLUMNS})
    # venue stamps a few ms late, rows sent twice: one settlement per instant, as a backtest reads them
    funding = snap_table(funding, fpath, SETTLEMENT_TOLERANCE_S)
    prices = read_table(ppath, {c: NUMERIC if c in numbers else TEXT for c in PRICE_COLUMNS})
    inputs = {FUNDING_FILE: {"rows": funding.height, "sha256": file_digest(fpath)},
              PRICES_FILE: {"rows": prices.height, "sha256": file_digest(ppath)}}
    return write_stats(funding, out, list(venues) if venues else None, prices=prices, since=since, until=until,
                       thresholds=sorted(set(thresholds)) if thresholds else DEFAULT_THRESHOLDS, inputs=inputs)


