"""Load the real price and funding history a backtest runs on.

Prices: hourly closes; a close belongs to ``open_time + 1h``. Gaps up to the
config's tolerance carry the last price forward (counted in the report);
longer gaps, NaN or non-positive prices are errors naming the hour.
Funding: real settlement times and rates; where the history has no mark price
the perp close at the settlement hour stands in (and the report says so).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import attrs
import numpy as np
import polars as pl

from fundarb.core.model import NS_PER_HOUR

SHIPPED_DIR = Path(__file__).parent / "shipped"
PRICES_FILE = "prices_1h.parquet"
FUNDING_FILE = "funding_settlements.parquet"
NS_PER_MS = 1_000_000

# (ccxt exchange id, unified symbol) -> rows in the shipped files
SPOT_PRICES = {("binance", "BTC/USDT"): ("binance", "spot", "BTCUSDT")}
PERP_PRICES = {("binanceusdm", "BTC/USDT:USDT"): ("binance", "perp_linear", "BTCUSDT")}
PERP_FUNDING = {("binanceusdm", "BTC/USDT:USDT"): ("binance", "BTCUSDT")}


class DataError(ValueError):
    """History that cannot be used as asked; the message names what and where."""


def parse_time(text: str, what: str) -> int:
    """An ISO date or datetime (UTC unless it says otherwise) -> ns."""
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise DataError(f"{what}: {text!r} is not an ISO date like 2022-01-31 or 2022-01-31T08:00") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def fmt_time(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


@attrs.frozen
class MarketHistory:
    """Aligned hourly spot and perp prices plus the perp's funding settlements."""

    hours: np.ndarray  # int64 ns, one per hour, contiguous
    spot: np.ndarray
    perp: np.ndarray
    carried: np.ndarray  # bool: price carried forward over a gap
    funding_ts: np.ndarray
    funding_rate: np.ndarray
    funding_interval: np.ndarray
    funding_mark: np.ndarray  # nan where the history has no mark
    sources: tuple[str, ...]
    funding_gaps: tuple[tuple[int, int], ...] = ()

    @property
    def start(self) -> int:
        return int(self.hours[0])

    @property
    def end(self) -> int:
        return int(self.hours[-1])

    @property
    def days(self) -> float:
        return (self.end - self.start) / (24 * NS_PER_HOUR)

    def describe(self) -> dict:
        return {
            "start": fmt_time(self.start),
            "end": fmt_time(self.end),
            "hours": int(self.hours.size),
            "price_hours_carried_forward": int(self.carried.sum()),
            "funding_settlements": int(self.funding_ts.size),
            "funding_gaps": [[fmt_time(a), fmt_time(b)] for a, b in self.funding_gaps],
            "mark_price": "perp hourly close at the settlement hour stands in for the mark (history has no mark)"
            if bool(np.isnan(self.funding_mark).any())
            else "venue mark price",
            "sources": list(self.sources),
        }


def _lookup(table: dict, exchange: str, symbol: str, what: str) -> tuple:
    try:
        return table[(exchange, symbol)]
    except KeyError:
        known = ", ".join(f"{e} {s}" for e, s in table)
        raise DataError(f"no shipped {what} for exchange {exchange!r} symbol {symbol!r} (available: {known})") from None


def _read(data_dir: Path, name: str) -> pl.DataFrame:
    path = data_dir / name
    if not path.is_file():
        raise DataError(f"history file missing: {path}")
    try:
        return pl.read_parquet(path)
    except Exception as exc:
        raise DataError(f"history file {path} is not readable parquet: {exc}") from None


def _price_series(prices: pl.DataFrame, key: tuple, lo: int, hi: int, label: str) -> pl.DataFrame:
    venue, market, symbol = key
    rows = prices.filter(
        (pl.col("venue") == venue) & (pl.col("market") == market) & (pl.col("symbol") == symbol)
    ).select(
        ((pl.col("open_time_ms") + 3_600_000) * NS_PER_MS).alias("ts"),
        pl.col("close").alias(label),
        pl.col("source"),
    )
    return rows.filter((pl.col("ts") >= lo) & (pl.col("ts") < hi)).sort("ts")


def load_history(
    spot: tuple[str, str],
    perp: tuple[str, str],
    start: str,
    end: str,
    max_gap_hours: float,
    data_dir: Path | None = None,
) -> MarketHistory:
    lo, hi = parse_time(start, "start"), parse_time(end, "end")
    if lo >= hi:
        raise DataError(f"start {fmt_time(lo)} is not before end {fmt_time(hi)}")
    spot_key = _lookup(SPOT_PRICES, *spot, "spot prices")
    perp_key = _lookup(PERP_PRICES, *perp, "perp prices")
    fund_key = _lookup(PERP_FUNDING, *perp, "funding history")
    data_dir = data_dir or SHIPPED_DIR
    prices = _read(data_dir, PRICES_FILE)
    s = _price_series(prices, spot_key, lo, hi, "spot")
    p = _price_series(prices, perp_key, lo, hi, "perp")
    if s.height == 0 or p.height == 0:
        raise DataError(f"no price history between {fmt_time(lo)} and {fmt_time(hi)} in {data_dir / PRICES_FILE}")
    for frame, label in ((s, "spot"), (p, "perp")):
        bad = frame.filter(pl.col(label).is_null() | pl.col(label).is_nan() | (pl.col(label) <= 0))
        if bad.height:
            raise DataError(f"{label} price at {fmt_time(bad['ts'][0])} is {bad[label][0]}: not a usable price")
    first = max(s["ts"][0], p["ts"][0])
    last = min(s["ts"][-1], p["ts"][-1])
    # count in integers: np.arange sizes its output in float64, which at 1e18 ns
    # loses the last hour
    n_hours = (last - first) // NS_PER_HOUR + 1
    grid = pl.DataFrame({"ts": first + np.arange(n_hours, dtype=np.int64) * NS_PER_HOUR})
    joined = grid.join(s.select("ts", "spot"), on="ts", how="left").join(p.select("ts", "perp"), on="ts", how="left")
    known = joined.filter(pl.col("spot").is_not_null() & pl.col("perp").is_not_null())["ts"].to_numpy()
    steps = np.diff(known)
    if steps.size and steps.max() > max_gap_hours * NS_PER_HOUR:
        i = int(steps.argmax())
        raise DataError(
            f"price gap of {steps[i] / NS_PER_HOUR:.0f} h after {fmt_time(int(known[i]))} "
            f"exceeds max_price_gap_hours {max_gap_hours:g}"
        )
    carried = (joined["spot"].is_null() | joined["perp"].is_null()).to_numpy()
    joined = joined.with_columns(pl.col("spot").forward_fill(), pl.col("perp").forward_fill())

    funding = _read(data_dir, FUNDING_FILE)
    venue, symbol = fund_key
    f = funding.filter(
        (pl.col("venue") == venue)
        & (pl.col("symbol") == symbol)
        & (pl.col("funding_time_ms") * NS_PER_MS > first)
        & (pl.col("funding_time_ms") * NS_PER_MS <= last)
    ).sort("funding_time_ms")
    if f.height == 0:
        raise DataError(f"no {venue} {symbol} funding settlements between {fmt_time(first)} and {fmt_time(last)}")
    bad = f.filter(pl.col("funding_rate").is_null() | pl.col("funding_rate").is_nan())
    if bad.height:
        raise DataError(f"{venue} {symbol} funding rate missing at {fmt_time(bad['funding_time_ms'][0] * NS_PER_MS)}")
    fts = (f["funding_time_ms"] * NS_PER_MS).to_numpy()
    intervals = f["interval_hours"].to_numpy()
    from fundarb.core.funding import schedule_gaps

    gaps = tuple(schedule_gaps(fts.tolist(), intervals.tolist()))
    sources = tuple(sorted(set(s["source"].to_list()) | set(p["source"].to_list()) | set(f["source"].to_list())))
    return MarketHistory(
        hours=joined["ts"].to_numpy(),
        spot=joined["spot"].to_numpy(),
        perp=joined["perp"].to_numpy(),
        carried=carried,
        funding_ts=fts,
        funding_rate=f["funding_rate"].to_numpy(),
        funding_interval=intervals,
        funding_mark=f["mark_price"].cast(pl.Float64).fill_null(float("nan")).to_numpy(),
        sources=sources,
        funding_gaps=gaps,
    )
