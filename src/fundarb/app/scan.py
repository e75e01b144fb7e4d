"""The ``fundarb scan --history`` use case: read the stored settlements,
rank every structure they allow over the window and each year in it, and
write the table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from fundarb.app.funding_stats import read_prices, read_settlements
from fundarb.config import Config
from fundarb.data.history import FUNDING_FILE, PRICES_FILE, SHIPPED_DIR, DataError, parse_time
from fundarb.research.funding_stats import REGIME_PRICE, fmt_ms
from fundarb.research.scan import ScanCosts, scan_windows

SHIPPED = "shipped"


def history_dir(history: str) -> Path:
    """``--history``: a folder of stored data, or ``shipped`` for the data fundarb ships."""
    if history == SHIPPED:
        return SHIPPED_DIR
    folder = Path(history)
    if not folder.is_dir():
        raise DataError(f"--history {history}: not a folder (give a folder of stored data, or 'shipped')")
    if not (folder / FUNDING_FILE).is_file():
        raise DataError(f"--history {history}: no {FUNDING_FILE} there (the scan reads the shipped files' layout: "
                        f"{FUNDING_FILE}, and {PRICES_FILE} or --price)")
    return folder


def sizing_price(data_dir: Path, since_ms: int, until_ms: int) -> float:
    """The BTC price the scan sizes its costs' impact at: the median Binance
    spot hourly close in the window, from the folder's prices."""
    if not (data_dir / PRICES_FILE).exists():
        raise DataError(f"{data_dir}: no {PRICES_FILE} to size the round trip's impact at; give --price")
    venue, market, symbol = REGIME_PRICE
    closes = read_prices(data_dir).filter(
        (pl.col("venue") == venue) & (pl.col("market") == market) & (pl.col("symbol") == symbol)
        & (pl.col("open_time_ms") >= since_ms) & (pl.col("open_time_ms") < until_ms))["close"]
    if closes.is_empty():
        raise DataError(f"{data_dir}/{PRICES_FILE} has no {venue} {symbol} spot close in {fmt_ms(since_ms)} .. "
                        f"{fmt_ms(until_ms)} to size the round trip's impact at; give --price")
    return float(closes.median())  # type: ignore[arg-type]


def run_scan(cfg: Config, history: str, since: str, until: str, years: bool, hold_days: float | None,
             price: float | None) -> dict[str, Any]:
    data_dir = history_dir(history)
    lo, hi = parse_time(since, "--since") // 1_000_000, parse_time(until, "--until") // 1_000_000
    if lo >= hi:
        raise DataError(f"--since {since} is not before --until {until}")
    price = price if price is not None else sizing_price(data_dir, lo, hi)
    costs = ScanCosts.of(cfg, price, hold_days)
    return {"config": cfg.name, "data": str(data_dir), "price": price, "hold_days": costs.hold_days,
            "round_trip": {s: costs.round_trip(s) for s in ("spot_linear", "coin_margined", "perp_perp")},
            "capital_per_notional": {s: costs.capital(s) for s in ("spot_linear", "coin_margined", "perp_perp")},
            "windows": scan_windows(read_settlements(data_dir), lo, hi, costs, years)}
