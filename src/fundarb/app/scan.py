"""The ``fundarb scan --history`` use case: read the stored settlements,
rank every structure they allow over the window and each year in it, and
write the table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from fundarb.app.funding_stats import read_prices, read_settlements
from fundarb.config import Config
from fundarb.data.history import FUNDING_FILE, PRICES_FILE, SHIPPED_DIR, DataError, parse_time, store_settlements
from fundarb.research.funding_stats import REGIME_PRICE, SETTLEMENT_TOLERANCE_S, fmt_ms
from fundarb.research.scan import ScanCosts, scan_windows

SHIPPED = "shipped"


def history_dir(history: str) -> Path:
    """``--history``: a folder of stored data, or ``shipped`` for the data fundarb ships."""
    if history == SHIPPED:
        return SHIPPED_DIR
    folder = Path(history)
    if not folder.is_dir():
        raise DataError(f"--history {history}: not a folder (give a folder of stored data, or 'shipped')")
    if not (folder / FUNDING_FILE).is_file() and not (folder / "funding").is_dir():
        raise DataError(f"--history {history}: no {FUNDING_FILE} and no `fundarb data fetch` store there (the scan "
                        f"reads the shipped files' layout, {FUNDING_FILE} and {PRICES_FILE} or --price, or a store)")
    return folder


def settlements_of(data_dir: Path) -> pl.DataFrame:
    """The folder's settlements: the shipped files' layout, or a fetch store."""
    if (data_dir / FUNDING_FILE).is_file():
        return read_settlements(data_dir)
    return store_settlements(data_dir, SETTLEMENT_TOLERANCE_S)


def sizing_price(data_dir: Path, since_ms: int, until_ms: int) -> tuple[float, str]:
    """The BTC price the scan sizes its costs' impact at, and what it is:
    the median Binance spot hourly close in the window, else the last one
    before its end (the folder's prices end earlier)."""
    if not (data_dir / PRICES_FILE).exists():
        raise DataError(f"{data_dir}: no {PRICES_FILE} to size the round trip's impact at; give --price")
    venue, market, symbol = REGIME_PRICE
    closes = read_prices(data_dir).filter(
        (pl.col("venue") == venue) & (pl.col("market") == market) & (pl.col("symbol") == symbol)
        & (pl.col("open_time_ms") < until_ms)).sort("open_time_ms")
    inside = closes.filter(pl.col("open_time_ms") >= since_ms)["close"]
    if not inside.is_empty():
        return float(inside.median()), f"the median {venue} {symbol} spot close in the window"  # type: ignore[arg-type]
    if closes.is_empty():
        raise DataError(f"{data_dir}/{PRICES_FILE} has no {venue} {symbol} spot close before {fmt_ms(until_ms)} to "
                        "size the round trip's impact at; give --price")
    last = closes.row(-1, named=True)
    return float(last["close"]), f"the last {venue} {symbol} spot close before the window, {fmt_ms(last['open_time_ms'])}"


def run_scan(cfg: Config, history: str, since: str, until: str, years: bool, hold_days: float | None,
             price: float | None) -> dict[str, Any]:
    lo, hi = parse_time(since, "--since") // 1_000_000, parse_time(until, "--until") // 1_000_000
    if lo >= hi:
        raise DataError(f"--since {since} is not before --until {until}")
    return scan_doc(cfg, history_dir(history), lo, hi, years, hold_days, price)


def scan_doc(cfg: Config, data_dir: Path, lo: int, hi: int, years: bool, hold_days: float | None,
             price: float | None, price_source: str = "--price") -> dict[str, Any]:
    """The history scan's document over [lo, hi) (ms) of ``data_dir``'s
    settlements; the impact sized at ``price`` (``price_source`` says
    what it is), else at ``sizing_price``."""
    price, priced = (price, price_source) if price is not None else sizing_price(data_dir, lo, hi)
    costs = ScanCosts.of(cfg, price, hold_days)
    return {"config": cfg.name, "data": str(data_dir), "price": price, "price_source": priced,
            "hold_days": costs.hold_days,
            "round_trip": {s: costs.round_trip(s) for s in ("spot_linear", "coin_margined", "perp_perp")},
            "capital_per_notional": {s: costs.capital(s) for s in ("spot_linear", "coin_margined", "perp_perp")},
            "windows": scan_windows(settlements_of(data_dir), lo, hi, costs, years)}
