"""Funding statistics of the real settlement history: by venue, year and
market regime; persistence; and the entry-threshold question.

Every rate is first put on one scale, its simple APR from the venue's own
interval (``rate * 8760 / interval_hours``), so 1h and 8h venues compare.
The functions below take polars frames and return frames or plain dicts;
``write_stats`` turns them into one all-or-nothing output folder and
``stats_command`` is the ``fundarb data stats`` command.

Rules (also written into stats.json):

- regime of a settlement at t: trailing 90-day return of the Binance spot
  BTCUSDT close, close(t) / close(t - 90 d) - 1, each close the last one at or
  before the instant and at most 6 h old; > +20% bull, < -20% bear, otherwise
  sideways; "no price data" where either close is missing.
- signal at a settlement: mean APR of the last 9 settlements including it (the
  strategy's FundingSignal); entry right after it, holding H days earns the
  mean APR of the settlements in (t, t + H]; net = that - round-trip cost *
  365 / H.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import attrs
import numpy as np
import polars as pl
import typer

from fundarb.core.model import HOURS_PER_YEAR
from fundarb.data.history import FUNDING_FILE, NUMERIC, PRICES_FILE, SHIPPED_DIR, TEXT, DataError, parse_time, read_table, snap_table
from fundarb.errors import FundarbError

MS_PER_HOUR = 3_600_000
SETTLEMENT_TOLERANCE_S = 1.0  # the config's default data.settlement_tolerance_seconds
MS_PER_DAY = 24 * MS_PER_HOUR

REGIME_LOOKBACK_DAYS = 90
REGIME_BAND = 0.20
PRICE_TOLERANCE_HOURS = 6
REGIMES = ("bull", "sideways", "bear", "no price data")
NO_PRICE = "no price data"
REGIME_PRICE = ("binance", "spot", "BTCUSDT")

SIGNAL_SETTLEMENTS = 9
RUN_THRESHOLD_APR = 0.10
DEFAULT_THRESHOLDS = (0.0, 0.05, 0.10, 0.15, 0.20, 0.30)
DEFAULT_HOLDING_DAYS = (7, 30, 90)
ACF_MAX_DAYS = 30
COMMON_WINDOW_MIN_DAYS = 180
MAIN_SERIES = 6  # series drawn in persistence.png: the longest-running ones

STATS_FILE = "stats.json"
BY_VENUE_FILE = "by_venue.csv"
BY_YEAR_FILE = "by_year.csv"
BY_REGIME_FILE = "by_regime.csv"
THRESHOLDS_FILE = "thresholds.csv"
VENUE_PNG = "funding_by_venue.png"
YEAR_PNG = "funding_by_year.png"
THRESHOLDS_PNG = "thresholds.png"
PERSISTENCE_PNG = "persistence.png"
STATS_FILES = (STATS_FILE, BY_VENUE_FILE, BY_YEAR_FILE, BY_REGIME_FILE, THRESHOLDS_FILE,
               VENUE_PNG, YEAR_PNG, THRESHOLDS_PNG, PERSISTENCE_PNG)

FUNDING_COLUMNS = ("venue", "symbol", "funding_time_ms", "funding_rate", "interval_hours")
PRICE_COLUMNS = ("venue", "market", "symbol", "open_time_ms", "close")

RULES = {
    "apr": "simple APR of each settlement from its own interval: funding_rate * 8760 / interval_hours",
    "regime": (f"trailing {REGIME_LOOKBACK_DAYS}-day return of the Binance spot BTCUSDT hourly close at the settlement: "
               f"> +{REGIME_BAND:.0%} bull, < -{REGIME_BAND:.0%} bear, otherwise sideways; each close is the last one at "
               f"or before the instant and at most {PRICE_TOLERANCE_HOURS} h old, else '{NO_PRICE}' "
               "(the shipped prices cover 2021-07-01..2024-07-01, so regimes start 90 days later)"),
    "year": "UTC calendar year of the settlement; coverage = hours of settlements / hours in the year",
    "distribution": "per settlement APR; percentiles interpolate linearly (numpy); std with ddof=1; "
                    "share_negative = share of settlements with funding_rate < 0; min/max times are the first occurrence",
    "autocorrelation": "sample autocorrelation of the settlement APR series in settlement order (gaps ignored): "
                       "sum((x_t - m)(x_t+k - m)) / sum((x_t - m)^2) with m the series mean; "
                       "lag_1_day = 24 / interval settlements",
    "runs": (f"maximal runs of consecutive settlements with APR > {RUN_THRESHOLD_APR:.0%} ('above') or funding_rate < 0 "
             "('negative'); a spacing over 1.5x the interval (a data gap) ends a run; days = sum of the run's intervals / 24"),
    "signal": f"mean APR of the last {SIGNAL_SETTLEMENTS} settlements including the current one (core.strategy.FundingSignal)",
    "threshold_table": ("for each settlement whose signal is > threshold (share_above counts them over settlements with a full "
                        "signal), enter right after it and hold H days: forward APR = mean APR of the settlements in (t, t+H]; "
                        "only entries whose holding window ends inside the series count; expected_net_apr = mean forward APR "
                        "- round_trip_cost * 365 / H. Entries overlap: it is an average over entry times, not a trading run"),
    "min_profitable_threshold": "lowest listed threshold whose expected_net_apr > 0 for that holding period",
    "common_window": (f"the window covered by the most selected series (ties: the longer one), at least "
                      f"{COMMON_WINDOW_MIN_DAYS} days (or half the longest series if shorter); series not covering it "
                      "are left out of the comparison"),
}


class StatsError(FundarbError, ValueError):
    """A selection or input the statistics cannot be computed on; the message says which."""


# --- preparation -------------------------------------------------------------

def fmt_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


def series_label(venue: str, symbol: str) -> str:
    return f"{venue} {symbol}"


def known_series(funding: pl.DataFrame) -> list[tuple[str, str]]:
    rows = funding.select("venue", "symbol").unique().sort("venue", "symbol")
    return list(zip(rows["venue"].to_list(), rows["symbol"].to_list()))


def select_series(funding: pl.DataFrame, venues: Sequence[str] | None) -> list[tuple[str, str]]:
    """Series named by ``venues``: a venue ("bybit": all its symbols) or
    "venue:SYMBOL". None or empty: every series."""
    known = known_series(funding)
    if not venues:
        return known
    chosen: set[tuple[str, str]] = set()
    for name in venues:
        v, _, s = name.strip().partition(":")
        hit = [k for k in known if k[0] == v.lower() and (not s or k[1] == s)]
        if not hit:
            names = ", ".join(sorted({k[0] for k in known}) + [f"{a}:{b}" for a, b in known])
            raise StatsError(f"unknown venue {name!r}; known: {names}")
        chosen.update(hit)
    return sorted(chosen)


def check_columns(frame: pl.DataFrame, needed: Sequence[str], what: str) -> None:
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise StatsError(f"{what} lacks column(s) {', '.join(missing)}")


def funding_apr_frame(funding: pl.DataFrame, series: Sequence[tuple[str, str]] | None = None,
                      since_ms: int | None = None, until_ms: int | None = None) -> pl.DataFrame:
    """Settlements of the chosen series in [since, until) with their APR and
    UTC year, sorted by venue, symbol, time."""
    check_columns(funding, FUNDING_COLUMNS, "funding settlements")
    source = pl.col("source").cast(pl.String) if "source" in funding.columns else pl.lit(None, pl.String).alias("source")
    f = funding.select(
        pl.col("venue"), pl.col("symbol"), pl.col("funding_time_ms").cast(pl.Int64).alias("ts_ms"),
        pl.col("funding_rate").cast(pl.Float64).alias("rate"), pl.col("interval_hours").cast(pl.Float64), source,
    )
    if series is not None:
        keys = pl.DataFrame({"venue": [v for v, _ in series], "symbol": [s for _, s in series]})
        f = f.join(keys, on=["venue", "symbol"], how="semi")
    if since_ms is not None:
        f = f.filter(pl.col("ts_ms") >= since_ms)
    if until_ms is not None:
        f = f.filter(pl.col("ts_ms") < until_ms)
    bad = f.filter(pl.col("rate").is_null() | pl.col("rate").is_nan() | ~(pl.col("interval_hours") > 0))
    if bad.height:
        r = bad.row(0, named=True)
        raise StatsError(f"{r['venue']} {r['symbol']} settlement at {fmt_ms(r['ts_ms'])} has no usable rate or interval")
    return f.with_columns(
        (pl.col("rate") * HOURS_PER_YEAR / pl.col("interval_hours")).alias("apr"),
        pl.from_epoch("ts_ms", time_unit="ms").dt.year().cast(pl.Int32).alias("year"),
    ).sort("venue", "symbol", "ts_ms")


def spot_closes(prices: pl.DataFrame) -> pl.DataFrame:
    """(ts_ms, close) of the regime price: a close belongs to open_time + 1h."""
    check_columns(prices, PRICE_COLUMNS, "prices")
    venue, market, symbol = REGIME_PRICE
    return prices.filter(
        (pl.col("venue") == venue) & (pl.col("market") == market) & (pl.col("symbol") == symbol)
        & pl.col("close").is_not_null() & (pl.col("close") > 0)
    ).select((pl.col("open_time_ms").cast(pl.Int64) + MS_PER_HOUR).alias("price_ts"), pl.col("close").cast(pl.Float64)).sort("price_ts")


def label_regimes(frame: pl.DataFrame, closes: pl.DataFrame | None) -> pl.DataFrame:
    """Adds ``trailing_return`` and ``regime`` (see RULES["regime"])."""
    if closes is None or closes.height == 0:
        return frame.with_columns(pl.lit(None, pl.Float64).alias("trailing_return"), pl.lit(NO_PRICE).alias("regime"))
    tol = PRICE_TOLERANCE_HOURS * MS_PER_HOUR
    times = frame.select("ts_ms").unique().sort("ts_ms").with_columns(
        (pl.col("ts_ms") - REGIME_LOOKBACK_DAYS * MS_PER_DAY).alias("then_ms"))
    now = times.join_asof(closes.rename({"close": "p_now"}), left_on="ts_ms", right_on="price_ts",
                          strategy="backward", tolerance=tol).drop("price_ts")
    both = now.sort("then_ms").join_asof(closes.rename({"close": "p_then"}), left_on="then_ms", right_on="price_ts",
                                         strategy="backward", tolerance=tol)
    ret = (pl.col("p_now") / pl.col("p_then") - 1.0)
    labels = both.select(
        "ts_ms", ret.alias("trailing_return"),
        pl.when(ret.is_null()).then(pl.lit(NO_PRICE))
        .when(ret > REGIME_BAND).then(pl.lit("bull"))
        .when(ret < -REGIME_BAND).then(pl.lit("bear"))
        .otherwise(pl.lit("sideways")).alias("regime"),
    )
    return frame.join(labels, on="ts_ms", how="left").sort("venue", "symbol", "ts_ms")


# --- distribution ------------------------------------------------------------

DIST_KEYS = ("count", "mean_apr", "median_apr", "p5_apr", "p25_apr", "p75_apr", "p95_apr",
             "min_apr", "min_time", "max_apr", "max_time", "share_negative", "std_apr")


def distribution(apr: np.ndarray, ts_ms: np.ndarray) -> dict[str, Any]:
    """Summary of one group's settlement APRs (time order: extremes report
    their first occurrence)."""
    n = int(apr.size)
    if n == 0:
        return {k: (0 if k == "count" else None) for k in DIST_KEYS}
    p5, p25, p50, p75, p95 = (float(v) for v in np.percentile(apr, [5, 25, 50, 75, 95]))
    lo, hi = int(np.argmin(apr)), int(np.argmax(apr))
    return {
        "count": n, "mean_apr": float(apr.mean()), "median_apr": p50,
        "p5_apr": p5, "p25_apr": p25, "p75_apr": p75, "p95_apr": p95,
        "min_apr": float(apr[lo]), "min_time": fmt_ms(int(ts_ms[lo])),
        "max_apr": float(apr[hi]), "max_time": fmt_ms(int(ts_ms[hi])),
        "share_negative": float((apr < 0).mean()),
        "std_apr": float(apr.std(ddof=1)) if n > 1 else None,
    }


def group_stats(frame: pl.DataFrame, by: Sequence[str], order: dict[str, Sequence] | None = None) -> pl.DataFrame:
    """One row of ``distribution`` per (venue, symbol, *by) group. ``order``
    gives a column's value order (e.g. regimes) instead of sorting."""
    keys = ["venue", "symbol", *by]
    rows = []
    for part in frame.partition_by(keys, maintain_order=True):
        row = {k: part[k][0] for k in keys}
        row.update(distribution(part["apr"].to_numpy(), part["ts_ms"].to_numpy()))
        rows.append(row)
    out = pl.DataFrame(rows, schema=_stats_schema(frame, keys), orient="row") if rows else pl.DataFrame(schema=_stats_schema(frame, keys))
    sort_cols = []
    for k in keys:
        if order and k in order:
            out = out.with_columns(pl.col(k).replace_strict(list(order[k]), list(range(len(order[k]))),
                                                             return_dtype=pl.Int32).alias(f"_{k}"))
            sort_cols.append(f"_{k}")
        else:
            sort_cols.append(k)
    return out.sort(sort_cols).drop([c for c in sort_cols if c.startswith("_")])


def _stats_schema(frame: pl.DataFrame, keys: Sequence[str]) -> dict[str, pl.DataType]:
    schema: dict[str, Any] = {k: frame.schema[k] for k in keys}
    for k in DIST_KEYS:
        schema[k] = pl.Int64 if k == "count" else pl.String if k.endswith("_time") else pl.Float64
    return schema


def year_coverage(frame: pl.DataFrame) -> pl.DataFrame:
    """(venue, symbol, year, coverage): settlement hours / hours in the year."""
    days = pl.date(pl.col("year") + 1, 1, 1) - pl.date(pl.col("year"), 1, 1)
    return frame.group_by("venue", "symbol", "year").agg(pl.col("interval_hours").sum().alias("hours")).with_columns(
        (pl.col("hours") / (days.dt.total_days() * 24)).clip(upper_bound=1.0).alias("coverage")
    ).select("venue", "symbol", "year", "coverage")


# --- persistence -------------------------------------------------------------

def autocorrelation(x: np.ndarray, lags: Sequence[int]) -> list[float | None]:
    """Sample autocorrelation at each lag (RULES["autocorrelation"])."""
    d = np.asarray(x, dtype=np.float64) - float(np.mean(x)) if len(x) else np.asarray([], dtype=np.float64)
    denom = float(np.dot(d, d))
    out: list[float | None] = []
    for k in lags:
        if k <= 0 or k >= d.size or denom == 0.0:
            out.append(None)
        else:
            out.append(float(np.dot(d[:-k], d[k:]) / denom))
    return out


def runs(mask: np.ndarray, ts_ms: np.ndarray, interval_hours: np.ndarray) -> list[tuple[int, int, float]]:
    """Maximal runs of True in settlement order, broken also by a data gap
    (spacing > 1.5x the interval): (start ms, settlements, days)."""
    found: list[tuple[int, int, float]] = []
    start, n, hours = -1, 0, 0.0
    for i in range(mask.size):
        gap = i > 0 and ts_ms[i] - ts_ms[i - 1] > 1.5 * interval_hours[i - 1] * MS_PER_HOUR
        if n and (not mask[i] or gap):
            found.append((int(ts_ms[start]), n, hours / 24.0))
            n, hours = 0, 0.0
        if mask[i]:
            if n == 0:
                start = i
            n += 1
            hours += float(interval_hours[i])
    if n:
        found.append((int(ts_ms[start]), n, hours / 24.0))
    return found


def run_summary(found: list[tuple[int, int, float]]) -> dict[str, Any]:
    if not found:
        return {"count": 0, "mean_settlements": None, "median_settlements": None, "max_settlements": None,
                "mean_days": None, "median_days": None, "max_days": None, "longest_start": None}
    n = np.array([r[1] for r in found], dtype=np.float64)
    d = np.array([r[2] for r in found], dtype=np.float64)
    longest = int(np.argmax(d))
    return {"count": len(found), "mean_settlements": float(n.mean()), "median_settlements": float(np.median(n)),
            "max_settlements": int(n.max()), "mean_days": float(d.mean()), "median_days": float(np.median(d)),
            "max_days": float(d.max()), "longest_start": fmt_ms(found[longest][0])}


def modal_interval(interval_hours: np.ndarray) -> float:
    values, counts = np.unique(interval_hours, return_counts=True)
    return float(values[int(np.argmax(counts))])


def persistence(one: pl.DataFrame, run_threshold: float = RUN_THRESHOLD_APR) -> dict[str, Any]:
    """Autocorrelation and run lengths of one series' settlements (time order)."""
    apr, ts, iv = one["apr"].to_numpy(), one["ts_ms"].to_numpy(), one["interval_hours"].to_numpy()
    day_lag = max(1, round(24.0 / modal_interval(iv)))
    acf1, acf3, acf_day = autocorrelation(apr, [1, 3, day_lag])
    above, negative = runs(apr > run_threshold, ts, iv), runs(one["rate"].to_numpy() < 0, ts, iv)
    return {
        "acf_lag_1": acf1, "acf_lag_3": acf3, "acf_lag_1_day": acf_day, "lag_1_day_settlements": day_lag,
        "runs_above": {"threshold_apr": run_threshold, **run_summary(above)},
        "runs_negative": run_summary(negative),
        "_run_days": {"above": [r[2] for r in above], "negative": [r[2] for r in negative]},
    }


def acf_curve(one: pl.DataFrame, max_days: float = ACF_MAX_DAYS) -> tuple[np.ndarray, np.ndarray]:
    """(lag in days, autocorrelation) up to ``max_days``."""
    iv = modal_interval(one["interval_hours"].to_numpy())
    lags = list(range(1, int(max_days * 24 / iv) + 1))
    acf = autocorrelation(one["apr"].to_numpy(), lags)
    return np.array(lags) * iv / 24.0, np.array([math.nan if a is None else a for a in acf])


# --- the entry-threshold question ---------------------------------------------

def signal_apr(apr: np.ndarray, window: int = SIGNAL_SETTLEMENTS) -> np.ndarray:
    """Trailing mean of the last ``window`` APRs; NaN until the window is full."""
    out = np.full(apr.size, np.nan)
    if apr.size >= window:
        cs = np.concatenate([[0.0], np.cumsum(apr)])
        out[window - 1:] = (cs[window:] - cs[:-window]) / window
    return out


def forward_apr(ts_ms: np.ndarray, apr: np.ndarray, hold_days: float) -> np.ndarray:
    """Mean APR of the settlements in (t, t + hold] for each settlement t;
    NaN where the window runs past the series' last settlement or holds none."""
    hold = round(hold_days * MS_PER_DAY)
    cs = np.concatenate([[0.0], np.cumsum(apr)])
    j = np.searchsorted(ts_ms, ts_ms + hold, side="right")  # one past the window's last settlement
    i = np.arange(ts_ms.size) + 1  # the window's first settlement
    n = j - i
    out = np.full(ts_ms.size, np.nan)
    ok = (n > 0) & (ts_ms + hold <= ts_ms[-1]) if ts_ms.size else n > 0
    out[ok] = (cs[j[ok]] - cs[i[ok]]) / n[ok]
    return out


def cost_apr(round_trip: float, hold_days: float) -> float:
    return round_trip * 365.0 / hold_days


def threshold_table(one: pl.DataFrame, thresholds: Sequence[float], holding_days: Sequence[float],
                    round_trip: float, window: int = SIGNAL_SETTLEMENTS) -> pl.DataFrame:
    """One row per (threshold, holding period) of one series (RULES["threshold_table"])."""
    ts, apr = one["ts_ms"].to_numpy(), one["apr"].to_numpy()
    sig = signal_apr(apr, window)
    ready = ~np.isnan(sig)
    rows = []
    for h in holding_days:
        fwd = forward_apr(ts, apr, h)
        cost = cost_apr(round_trip, h)
        for th in thresholds:
            above = ready & (sig > th)
            entries = above & ~np.isnan(fwd)
            net = fwd[entries] - cost
            rows.append({
                "threshold_apr": float(th), "holding_days": float(h), "signals": int(ready.sum()),
                "share_above": float(above.sum() / ready.sum()) if ready.any() else None,
                "entries": int(entries.sum()),
                "mean_forward_apr": float(fwd[entries].mean()) if net.size else None,
                "cost_apr": cost,
                "expected_net_apr": float(net.mean()) if net.size else None,
                "median_net_apr": float(np.median(net)) if net.size else None,
                "share_net_positive": float((net > 0).mean()) if net.size else None,
            })
    return pl.DataFrame(rows, schema=THRESHOLD_SCHEMA, orient="row").sort("holding_days", "threshold_apr")


THRESHOLD_SCHEMA = {
    "threshold_apr": pl.Float64, "holding_days": pl.Float64, "signals": pl.Int64, "share_above": pl.Float64,
    "entries": pl.Int64, "mean_forward_apr": pl.Float64, "cost_apr": pl.Float64, "expected_net_apr": pl.Float64,
    "median_net_apr": pl.Float64, "share_net_positive": pl.Float64,
}


def min_profitable(table: pl.DataFrame) -> dict[str, dict[str, Any] | None]:
    """Per holding period (key: days as text): the lowest threshold with
    expected net APR > 0, its share of time and net APR; None if none is."""
    out: dict[str, dict[str, Any] | None] = {}
    for part in table.sort("holding_days", "threshold_apr").partition_by("holding_days", maintain_order=True):
        key = f"{part['holding_days'][0]:g}"
        hit = part.filter(pl.col("expected_net_apr").is_not_null() & (pl.col("expected_net_apr") > 0))
        out[key] = None if hit.height == 0 else {
            "threshold_apr": hit["threshold_apr"][0], "share_above": hit["share_above"][0],
            "expected_net_apr": hit["expected_net_apr"][0], "entries": hit["entries"][0],
        }
    return out


# --- cross-venue comparison ----------------------------------------------------

def spans(frame: pl.DataFrame) -> pl.DataFrame:
    """First and last settlement, count and data gaps (spacing > 1.5x the interval) per series."""
    gap = (pl.col("ts_ms").diff() > 1.5 * pl.col("interval_hours").shift(1) * MS_PER_HOUR).fill_null(False)
    return frame.sort("venue", "symbol", "ts_ms").group_by("venue", "symbol", maintain_order=True).agg(
        pl.col("ts_ms").min().alias("first_ms"), pl.col("ts_ms").max().alias("last_ms"), pl.len().alias("settlements"),
        gap.sum().cast(pl.Int64).alias("gaps"),
    ).sort("venue", "symbol")


def common_window(sp: pl.DataFrame, min_days: float = COMMON_WINDOW_MIN_DAYS) -> dict[str, Any]:
    """The window covered by the most series (ties: longer, then earlier), at
    least ``min_days`` long; if none is, at least half the longest series."""
    rows = sp.rows(named=True)
    best: tuple | None = None
    for s in sorted({r["first_ms"] for r in rows}):
        for e in sorted({r["last_ms"] for r in rows}):
            if e - s < min_days * MS_PER_DAY:
                continue
            members = [r for r in rows if r["first_ms"] <= s and r["last_ms"] >= e]
            key = (len(members), e - s, -s)
            if members and (best is None or key > best[0]):
                best = (key, s, e, members)
    if best is None:  # all too short: settle for half the longest series
        longest = max(r["last_ms"] - r["first_ms"] for r in rows) / MS_PER_DAY
        return common_window(sp, longest / 2) if min_days > longest / 2 else {
            "start_ms": rows[0]["first_ms"], "end_ms": rows[0]["last_ms"], "series": [(rows[0]["venue"], rows[0]["symbol"])]}
    _, s, e, members = best
    return {"start_ms": s, "end_ms": e, "series": [(r["venue"], r["symbol"]) for r in members]}


def window_means(frame: pl.DataFrame, window: dict[str, Any]) -> pl.DataFrame:
    keys = pl.DataFrame({"venue": [v for v, _ in window["series"]], "symbol": [s for _, s in window["series"]]})
    inside = frame.join(keys, on=["venue", "symbol"], how="semi").filter(
        (pl.col("ts_ms") >= window["start_ms"]) & (pl.col("ts_ms") <= window["end_ms"]))
    return group_stats(inside, []).sort("mean_apr", "venue", "symbol", descending=[True, False, False])


# --- everything together -------------------------------------------------------

@attrs.frozen
class FundingStats:
    frame: pl.DataFrame            # settlements with apr, year, regime
    by_venue: pl.DataFrame
    by_year: pl.DataFrame
    by_regime: pl.DataFrame
    thresholds: pl.DataFrame
    persistence: dict[str, dict[str, Any]]
    min_profitable: dict[str, dict[str, Any]]
    common: dict[str, Any]
    common_stats: pl.DataFrame
    reference: tuple[str, str]
    cost: dict[str, Any]
    spans: pl.DataFrame


def reference_series(series: Sequence[tuple[str, str]], preferred: tuple[str, str] | None, sp: pl.DataFrame) -> tuple[str, str]:
    """The series the headline threshold answer is for: the config's perp if
    selected, else the longest-running one."""
    if preferred in series:
        return preferred
    r = max(sp.rows(named=True), key=lambda r: (r["last_ms"] - r["first_ms"], r["venue"], r["symbol"]))
    return r["venue"], r["symbol"]


def compute_stats(frame: pl.DataFrame, closes: pl.DataFrame | None, round_trip: float,
                  thresholds: Sequence[float] = DEFAULT_THRESHOLDS, holding_days: Sequence[float] = DEFAULT_HOLDING_DAYS,
                  preferred: tuple[str, str] | None = ("binance", "BTCUSDT"), cost: dict[str, Any] | None = None) -> FundingStats:
    """All statistics of the settlements in ``frame`` (from funding_apr_frame)."""
    if frame.height == 0:
        raise StatsError("no funding settlements in the selection")
    frame = label_regimes(frame, closes)
    sp = spans(frame)
    pers, tables, minp = {}, [], {}
    for one in frame.partition_by("venue", "symbol", maintain_order=True):
        v, s = one["venue"][0], one["symbol"][0]
        label = series_label(v, s)
        pers[label] = persistence(one)
        t = threshold_table(one, thresholds, holding_days, round_trip)
        minp[label] = min_profitable(t)
        tables.append(t.select(pl.lit(v).alias("venue"), pl.lit(s).alias("symbol"), pl.all()))
    by_venue = group_stats(frame, []).join(sp, on=["venue", "symbol"]).join(_venue_extras(frame, pers), on=["venue", "symbol"])
    by_year = group_stats(frame, ["year"]).join(year_coverage(frame), on=["venue", "symbol", "year"], how="left")
    by_regime = group_stats(frame, ["regime"], order={"regime": REGIMES})
    common = common_window(sp)
    series = list(zip(sp["venue"].to_list(), sp["symbol"].to_list()))
    return FundingStats(
        frame=frame, by_venue=_by_venue_columns(by_venue), by_year=_lead(by_year, ["venue", "symbol", "year", "coverage"]),
        by_regime=by_regime, thresholds=pl.concat(tables).sort("venue", "symbol", "holding_days", "threshold_apr"),
        persistence=pers, min_profitable=minp, common=common, common_stats=window_means(frame, common),
        reference=reference_series(series, preferred, sp),
        cost=cost or {"round_trip_cost": round_trip}, spans=sp,
    )


def _venue_extras(frame: pl.DataFrame, pers: dict[str, dict[str, Any]]) -> pl.DataFrame:
    rows = []
    for v, s in known_series(frame):
        p = pers[series_label(v, s)]
        iv = sorted(set(frame.filter((pl.col("venue") == v) & (pl.col("symbol") == s))["interval_hours"].to_list()))
        rows.append({"venue": v, "symbol": s, "interval_hours": "/".join(f"{x:g}" for x in iv),
                     "acf_lag_1": p["acf_lag_1"], "acf_lag_3": p["acf_lag_3"], "acf_lag_1_day": p["acf_lag_1_day"],
                     "mean_run_days_above": p["runs_above"]["mean_days"], "max_run_days_above": p["runs_above"]["max_days"],
                     "mean_run_days_negative": p["runs_negative"]["mean_days"],
                     "max_run_days_negative": p["runs_negative"]["max_days"]})
    return pl.DataFrame(rows, schema={"venue": pl.String, "symbol": pl.String, "interval_hours": pl.String,
                                      **{k: pl.Float64 for k in ("acf_lag_1", "acf_lag_3", "acf_lag_1_day", "mean_run_days_above",
                                                                 "max_run_days_above", "mean_run_days_negative",
                                                                 "max_run_days_negative")}}, orient="row")


def _lead(frame: pl.DataFrame, first: list[str]) -> pl.DataFrame:
    return frame.select(first + [c for c in frame.columns if c not in first])


def _by_venue_columns(t: pl.DataFrame) -> pl.DataFrame:
    t = t.with_columns(
        pl.col("first_ms").map_elements(fmt_ms, return_dtype=pl.String).alias("first"),
        pl.col("last_ms").map_elements(fmt_ms, return_dtype=pl.String).alias("last"),
        ((pl.col("last_ms") - pl.col("first_ms")) / MS_PER_DAY).alias("span_days"),
    ).drop("first_ms", "last_ms", "settlements")
    return _lead(t, ["venue", "symbol", "interval_hours", "first", "last", "span_days", "gaps"])


def build_stats(funding: pl.DataFrame, venues: Sequence[str] | None = None, *, prices: pl.DataFrame | None = None,
                since: str | None = None, until: str | None = None, thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                holding_days: Sequence[float] = DEFAULT_HOLDING_DAYS, cfg: Any = None,
                cost_price: float | None = None) -> FundingStats:
    """Select, normalise and summarise: raw settlements (and Binance hourly
    prices, for regimes and the cost's size-dependent impact) -> FundingStats.
    The round-trip cost is ``backtest.round_trip_cost`` of ``cfg`` (default:
    sims/baseline.toml) at ``cost_price`` (default: median spot close)."""
    from fundarb.backtest import round_trip_cost
    from fundarb.config import config_hash
    from fundarb.data.history import PERP_FUNDING

    since_ms, until_ms = _window(since, until)
    check_thresholds(thresholds, holding_days)
    series = select_series(funding, venues)
    frame = funding_apr_frame(funding, series, since_ms, until_ms)
    if frame.height == 0:
        names = ", ".join(series_label(v, s) for v, s in series)
        raise StatsError(f"no funding settlements of {names} between {since or 'the start'} and {until or 'the end'}")
    closes = spot_closes(prices) if prices is not None else None
    if cost_price is None:
        if closes is None or closes.height == 0:
            raise StatsError("no Binance spot BTCUSDT closes to size the round-trip cost (give prices or cost_price)")
        cost_price = float(closes["close"].median())
    if cfg is None:
        cfg = _default_config()
    rt = round_trip_cost(cfg, cost_price)
    cost = {
        "round_trip_cost": rt, "price": cost_price, "config_name": cfg.name, "config_hash": config_hash(cfg),
        "price_rule": "median Binance spot BTCUSDT hourly close of the price file" if prices is not None else "given",
        "what": "backtest.round_trip_cost: taker fees, mean half spread and impact at the configured notional, both legs, "
                "open and close, plus two transfers, as a fraction of notional; applied to every venue",
        "notional": cfg.strategy.notional,
        "amortised_apr": {f"{h:g}": cost_apr(rt, h) for h in holding_days},
    }
    preferred = PERP_FUNDING.get((cfg.perp.exchange, cfg.perp.symbol))
    return compute_stats(frame, closes, rt, thresholds, holding_days, preferred, cost)


def _default_config() -> Any:
    from fundarb.cli import default_config_path
    from fundarb.config import load

    return load(default_config_path())


def _window(since: str | None, until: str | None) -> tuple[int | None, int | None]:
    lo = parse_time(since, "--since") // 1_000_000 if since else None
    hi = parse_time(until, "--until") // 1_000_000 if until else None
    if lo is not None and hi is not None and lo >= hi:
        raise StatsError(f"--since {since} is not before --until {until}")
    return lo, hi


def check_thresholds(thresholds: Sequence[float], holding_days: Sequence[float]) -> None:
    if not thresholds:
        raise StatsError("no entry thresholds given")
    for th in thresholds:
        if not math.isfinite(th) or abs(th) > 5:
            raise StatsError(f"--threshold-apr {th:g} is not an APR fraction (0.10 = 10% a year)")
    for h in holding_days:
        if not (math.isfinite(h) and h > 0):
            raise StatsError(f"holding period {h:g} days must be > 0")


# --- the JSON document ---------------------------------------------------------

def _rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return frame.rows(named=True)


def series_block(st: FundingStats) -> list[dict[str, Any]]:
    out = []
    for r in st.spans.rows(named=True):
        one = st.frame.filter((pl.col("venue") == r["venue"]) & (pl.col("symbol") == r["symbol"]))
        out.append({
            "venue": r["venue"], "symbol": r["symbol"], "first": fmt_ms(r["first_ms"]), "last": fmt_ms(r["last_ms"]),
            "settlements": r["settlements"], "gaps": r["gaps"],
            "interval_hours": sorted(set(one["interval_hours"].to_list())),
            "sources": sorted({s for s in one["source"].to_list() if s is not None}),
        })
    return out


def headline(st: FundingStats) -> dict[str, Any]:
    ref = series_label(*st.reference)
    best = st.common_stats.row(0, named=True)
    by_regime = st.by_regime.filter((pl.col("venue") == st.reference[0]) & (pl.col("symbol") == st.reference[1]))
    return {
        "reference_series": ref,
        "min_profitable_threshold": st.min_profitable[ref],
        "round_trip_cost": st.cost["round_trip_cost"],
        "best_venue_in_common_window": {"venue": best["venue"], "symbol": best["symbol"], "mean_apr": best["mean_apr"]},
        "reference_mean_apr_by_regime": {r["regime"]: r["mean_apr"] for r in by_regime.rows(named=True)},
    }


def stats_dict(st: FundingStats, inputs: dict[str, Any] | None = None, selection: dict[str, Any] | None = None) -> dict[str, Any]:
    from fundarb import __version__
    from fundarb.report import _clean

    sp = st.spans
    common = st.common
    members = set(common["series"])
    closes_range = None
    regime_rows = st.frame.filter(pl.col("regime") != NO_PRICE)
    if regime_rows.height:
        closes_range = [fmt_ms(int(regime_rows["ts_ms"].min())), fmt_ms(int(regime_rows["ts_ms"].max()))]
    return _clean({
        "fundarb_version": __version__,
        "rules": RULES,
        "data": {"inputs": inputs or {}, "selection": selection or {}, "series": series_block(st),
                 "regime_labelled_settlements": closes_range},
        "cost": st.cost,
        "by_venue": _rows(st.by_venue),
        "by_year": _rows(st.by_year),
        "by_regime": _rows(st.by_regime),
        "persistence": {k: {kk: vv for kk, vv in v.items() if not kk.startswith("_")} for k, v in sorted(st.persistence.items())},
        "thresholds": {
            "reference_series": series_label(*st.reference),
            "min_profitable": dict(sorted(st.min_profitable.items())),
            "rows": _rows(st.thresholds),
        },
        "common_window": {
            "start": fmt_ms(common["start_ms"]), "end": fmt_ms(common["end_ms"]),
            "days": (common["end_ms"] - common["start_ms"]) / MS_PER_DAY,
            "series": [series_label(v, s) for v, s in common["series"]],
            "left_out": [series_label(v, s) for v, s in zip(sp["venue"], sp["symbol"]) if (v, s) not in members],
            "ranking": _rows(st.common_stats),
        },
        "headline": headline(st),
    })


def render_stats_json(st: FundingStats, inputs: dict[str, Any] | None = None, selection: dict[str, Any] | None = None) -> str:
    return json.dumps(stats_dict(st, inputs, selection), sort_keys=True, indent=2) + "\n"


# --- pictures ------------------------------------------------------------------

DPI = 110


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    plt = _plt()
    try:
        fig.savefig(path, dpi=DPI, metadata={"Software": None})
    finally:
        plt.close(fig)


def _num(v: float) -> str:
    """One decimal, and never "-0.0"."""
    text = f"{v:.1f}"
    return "0.0" if text == "-0.0" else text


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def daily_apr(frame: pl.DataFrame) -> pl.DataFrame:
    """Mean APR per series and UTC day: puts 1h and 8h venues on one footing."""
    return frame.with_columns((pl.col("ts_ms") // MS_PER_DAY).alias("day")).group_by(
        "venue", "symbol", "day").agg(pl.col("apr").mean()).sort("venue", "symbol", "day")


def plot_by_venue(st: FundingStats, path: Path) -> None:
    plt = _plt()
    import matplotlib.dates as mdates

    common = st.common
    order = [(r["venue"], r["symbol"]) for r in st.common_stats.rows(named=True)]
    inside = st.frame.filter((pl.col("ts_ms") >= common["start_ms"]) & (pl.col("ts_ms") <= common["end_ms"]))
    days = daily_apr(inside)
    data = [days.filter((pl.col("venue") == v) & (pl.col("symbol") == s))["apr"].to_numpy() * 100 for v, s in order]
    n_all = st.spans.height
    fig, (ax, cov) = plt.subplots(2, 1, figsize=(12, 6.5 + 0.28 * n_all), constrained_layout=True,
                                  gridspec_kw={"height_ratios": [3, 0.6 + 0.22 * n_all]})
    fig.suptitle(f"Funding APR by venue over their common window {fmt_ms(common['start_ms'])[:10]} .. "
                 f"{fmt_ms(common['end_ms'])[:10]} UTC", fontsize=12)
    ax.boxplot(data, whis=(5, 95), showfliers=False, widths=0.55, patch_artist=True,
               boxprops={"facecolor": "#cfe2f3", "edgecolor": "#3d6a99"}, medianprops={"color": "#3d6a99", "lw": 1.5})
    means = [r["mean_apr"] * 100 for r in st.common_stats.rows(named=True)]
    ax.plot(range(1, len(order) + 1), means, "D", color="tab:red", ms=6, label="mean (per settlement)", zorder=3)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(1, len(order) + 1), [f"{v}\n{s}\nmean {_num(m)}%" for (v, s), m in zip(order, means)], fontsize=8)
    ax.set_ylabel("daily mean funding APR (%)")
    ax.set_title("box 25-75%, whiskers 5-95% of daily mean APR (outliers not drawn), line median; "
                 "ordered by mean", fontsize=9, loc="left")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    _coverage(cov, st, mdates)
    _save(fig, path)


def _coverage(ax: Any, st: FundingStats, mdates: Any) -> None:
    rows = st.spans.rows(named=True)
    members = set(st.common["series"])
    for y, r in enumerate(reversed(rows)):
        inside = (r["venue"], r["symbol"]) in members
        a, b = _dt(r["first_ms"]), _dt(r["last_ms"])
        ax.plot([a, b], [y, y], lw=6, color="#3d6a99" if inside else "#b0b0b0", solid_capstyle="butt")
        gaps = f", {r['gaps']} gap{'s' if r['gaps'] != 1 else ''}" if r["gaps"] else ""
        ax.annotate(f"{r['settlements']:,} settlements{gaps}", (b, y), xytext=(5, 0), textcoords="offset points",
                    fontsize=7, va="center")
    ax.axvspan(_dt(st.common["start_ms"]), _dt(st.common["end_ms"]), color="tab:orange", alpha=0.15, label="common window")
    ax.set_yticks(range(len(rows)), [series_label(r["venue"], r["symbol"]) for r in reversed(rows)], fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    lo = min(r["first_ms"] for r in rows)
    hi = max(r["last_ms"] for r in rows)
    ax.set_xlim(_dt(lo), _dt(hi + (hi - lo) // 6))  # room for the labels
    loc = mdates.YearLocator()
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y"))
    ax.set_title("coverage of each series (grey: outside the common window, not in the boxes above)", fontsize=9, loc="left")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)


def _heat(ax: Any, values: np.ndarray, notes: list[list[str]], xlabels: list[str], ylabels: list[str], norm: Any) -> Any:
    im = ax.imshow(np.ma.masked_invalid(values), cmap="RdYlGn", norm=norm, aspect="auto")
    ax.set_facecolor("#eeeeee")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if notes[i][j]:
                v = values[i, j]
                dark = abs(v) > 0.75 * norm.vmax if np.isfinite(v) else False
                ax.text(j, i, notes[i][j], ha="center", va="center", fontsize=7.5, color="white" if dark else "black")
    ax.set_xticks(range(len(xlabels)), xlabels, fontsize=8)
    ax.set_yticks(range(len(ylabels)), ylabels, fontsize=8)
    ax.tick_params(length=0)
    return im


def plot_by_year(st: FundingStats, path: Path) -> None:
    plt = _plt()
    from matplotlib.colors import TwoSlopeNorm

    labels = [series_label(v, s) for v, s in zip(st.spans["venue"], st.spans["symbol"])]
    years = sorted(set(st.by_year["year"].to_list()))
    regimes = [r for r in REGIMES if r in set(st.by_regime["regime"].to_list())]
    yv = np.full((len(labels), len(years)), np.nan)
    yn = [["" for _ in years] for _ in labels]
    for r in st.by_year.rows(named=True):
        i, j = labels.index(series_label(r["venue"], r["symbol"])), years.index(r["year"])
        yv[i, j] = r["mean_apr"] * 100
        yn[i][j] = _num(yv[i, j]) + ("*" if r["coverage"] < 0.95 else "")
    rv = np.full((len(labels), len(regimes)), np.nan)
    rn = [["" for _ in regimes] for _ in labels]
    for r in st.by_regime.rows(named=True):
        i, j = labels.index(series_label(r["venue"], r["symbol"])), regimes.index(r["regime"])
        rv[i, j] = r["mean_apr"] * 100
        rn[i][j] = f"{_num(rv[i, j])}\nn={r['count']:,}"
    lim = float(np.nanpercentile(np.abs(np.concatenate([yv.ravel(), rv.ravel()])), 95))
    lim = max(5.0, math.ceil(lim / 5) * 5)
    norm = TwoSlopeNorm(vmin=-lim, vcenter=0.0, vmax=lim)
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 2.2 + 0.42 * len(labels)), constrained_layout=True,
                               gridspec_kw={"width_ratios": [max(len(years), 1), max(len(regimes), 1) * 1.3]})
    fig.suptitle("Mean funding APR (%) by calendar year and by BTC market regime", fontsize=12)
    _heat(a, yv, yn, [str(y) for y in years], labels, norm)
    a.set_title("by UTC year (* = data cover < 95% of the year)", fontsize=9, loc="left")
    im = _heat(b, rv, rn, regimes, labels, norm)
    b.set_title(f"by regime: trailing {REGIME_LOOKBACK_DAYS}d Binance spot BTC return > +{REGIME_BAND:.0%} bull,\n"
                f"< -{REGIME_BAND:.0%} bear, else sideways; no price data outside the price file + {REGIME_LOOKBACK_DAYS}d",
                fontsize=9, loc="left")
    b.set_yticklabels([])
    cb = fig.colorbar(im, ax=b, shrink=0.8, extend="both")
    cb.set_label("mean APR (%)")
    _save(fig, path)


HOLD_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:olive")


def plot_thresholds(st: FundingStats, path: Path) -> None:
    plt = _plt()
    v, s = st.reference
    ref = series_label(v, s)
    t = st.thresholds.filter((pl.col("venue") == v) & (pl.col("symbol") == s))
    holds = sorted(set(t["holding_days"].to_list()))
    fig, (gross, net, share) = plt.subplots(1, 3, figsize=(16, 5.4), constrained_layout=True,
                                            gridspec_kw={"width_ratios": [1.5, 1.5, 1]})
    fig.suptitle(f"Entry threshold on the {SIGNAL_SETTLEMENTS}-settlement signal: enter when it is above, hold H days "
                 f"({ref}; round trip {st.cost['round_trip_cost'] * 1e4:.1f} bp, {st.cost['config_name']} config)", fontsize=11)
    for k, h in enumerate(holds):
        c = HOLD_COLOURS[k % len(HOLD_COLOURS)]
        part = t.filter(pl.col("holding_days") == h)
        x = part["threshold_apr"].to_numpy() * 100
        fwd = np.array([math.nan if e is None else e * 100 for e in part["mean_forward_apr"].to_list()])
        y = np.array([math.nan if e is None else e * 100 for e in part["expected_net_apr"].to_list()])
        cost = st.cost["amortised_apr"][f"{h:g}"] * 100
        gross.plot(x, fwd, "o-", color=c, lw=1.8, label=f"hold {h:g} d")
        gross.axhline(cost, color=c, ls="--", lw=1.2)
        gross.annotate(f"cost {h:g} d: {cost:.1f}%", (1.0, cost), xycoords=("axes fraction", "data"), xytext=(-4, 3),
                       textcoords="offset points", ha="right", fontsize=8, color=c)
        net.plot(x, y, "o-", color=c, lw=1.8, label=f"hold {h:g} d")
        mp = st.min_profitable[ref].get(f"{h:g}")
        if mp is not None:
            net.plot([mp["threshold_apr"] * 100], [mp["expected_net_apr"] * 100], "o", ms=13, mfc="none", mec=c, mew=1.8)
    xs = t["threshold_apr"].to_numpy() * 100
    pad = max(1.0, 0.05 * float(xs.max() - xs.min()))
    for ax, col in ((gross, "mean_forward_apr"), (net, "expected_net_apr")):
        ax.set_xlim(float(xs.min()) - pad, float(xs.max()) + pad)
        if t[col].is_null().all():
            ax.text(0.5, 0.5, "no entry with a full signal and a complete\nholding window in this selection",
                    transform=ax.transAxes, ha="center", va="center", fontsize=10, color="grey")
    gross.set_ylim(bottom=0)
    gross.set_ylabel("APR (%)")
    gross.set_title("mean funding APR over the next H days (solid)\nvs round-trip cost x 365 / H (dashed)", fontsize=9, loc="left")
    net.axhline(0, color="black", lw=0.9)
    net.set_ylabel("expected net APR (%)")
    net.set_title("expected net APR = funding - cost\ncircled: minimum profitable threshold", fontsize=9, loc="left")
    for ax in (gross, net):
        ax.set_xlabel("entry threshold: signal APR above (%)")
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
    first = t.filter(pl.col("holding_days") == holds[0])
    x = first["threshold_apr"].to_list()
    sh = first["share_above"].fill_null(0.0).to_numpy() * 100
    pos = np.arange(len(x))
    share.bar(pos, sh, width=0.6, color="#9fb8d4", edgecolor="#3d6a99")
    for xi, si in zip(pos, sh) if not first["share_above"].is_null().all() else ():
        share.annotate(f"{si:.0f}%", (xi, si), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=8)
    share.set_xticks(pos, [f"{th * 100:g}" for th in x])
    if first["share_above"].is_null().all():
        share.text(0.5, 0.5, f"fewer than {SIGNAL_SETTLEMENTS} settlements:\nno signal", transform=share.transAxes,
                   ha="center", va="center", fontsize=10, color="grey")
    share.set_ylim(0, 108)
    share.set_xlabel("entry threshold: signal APR above (%)")
    share.set_ylabel("share of settlements (%)")
    share.set_title("time the signal is above the threshold", fontsize=9, loc="left")
    share.grid(axis="y", alpha=0.3)
    _save(fig, path)


def main_series(st: FundingStats, n: int = MAIN_SERIES) -> list[tuple[str, str]]:
    rows = sorted(st.spans.rows(named=True), key=lambda r: (-(r["last_ms"] - r["first_ms"]), r["venue"], r["symbol"]))
    return [(r["venue"], r["symbol"]) for r in rows[:n]]


SERIES_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def plot_persistence(st: FundingStats, path: Path) -> None:
    plt = _plt()
    chosen = main_series(st)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), constrained_layout=True)
    fig.suptitle(f"Persistence of funding: autocorrelation and run lengths ({len(chosen)} longest-running series)", fontsize=12)
    acf_ax, up_ax, down_ax = axes
    for k, (v, s) in enumerate(chosen):
        c = SERIES_COLOURS[k % len(SERIES_COLOURS)]
        one = st.frame.filter((pl.col("venue") == v) & (pl.col("symbol") == s))
        lag_days, acf = acf_curve(one)
        acf_ax.plot(lag_days, acf, color=c, lw=1.3, label=series_label(v, s))
        runs_days = st.persistence[series_label(v, s)]["_run_days"]
        for ax, key in ((up_ax, "above"), (down_ax, "negative")):
            d = np.asarray(runs_days[key], dtype=np.float64)
            if d.size:
                u = np.unique(d)
                surv = np.array([(d >= x).mean() for x in u])  # share of runs lasting >= x; holds on (prev, x]
                ax.step(u, surv * 100, where="pre", color=c, lw=1.3, label=series_label(v, s))
    acf_ax.axhline(0, color="black", lw=0.8)
    acf_ax.set_xlabel("lag (days; settlements x interval)")
    acf_ax.set_ylabel("autocorrelation of settlement APR")
    acf_ax.set_title("autocorrelation by lag", fontsize=9, loc="left")
    acf_ax.set_ylim(-0.2, 1.0)
    for ax, what in ((up_ax, f"runs with APR > {RUN_THRESHOLD_APR:.0%}"), (down_ax, "runs of negative funding")):
        ax.set_xscale("log")
        lo, hi = ax.get_xlim()
        ticks = [t for t in (1 / 24, 1 / 3, 1, 3, 10, 30, 100, 300) if lo <= t <= hi]
        ax.set_xticks(ticks, [{1 / 24: "1 h", 1 / 3: "8 h"}.get(t, f"{t:g} d") for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("run length (log scale)")
        ax.set_ylabel("share of runs lasting at least that long (%)")
        ax.set_title(what, fontsize=9, loc="left")
        ax.set_ylim(0, 102)
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7.5)
    _save(fig, path)


# --- output folder and command ---------------------------------------------------

def csv_text(frame: pl.DataFrame) -> str:
    return frame.write_csv(float_precision=None)


def write_stats(frame: pl.DataFrame, out: Path, venues: Sequence[str] | None = None, *,
                prices: pl.DataFrame | None = None, since: str | None = None, until: str | None = None,
                thresholds: Sequence[float] = DEFAULT_THRESHOLDS, holding_days: Sequence[float] = DEFAULT_HOLDING_DAYS,
                cfg: Any = None, cost_price: float | None = None,
                inputs: dict[str, Any] | None = None) -> tuple[FundingStats, dict[str, Path]]:
    """Compute everything on the raw settlements ``frame`` and write
    stats.json, the CSVs and the PNGs into ``out``, all-or-nothing: any error
    is raised before ``out`` changes."""
    from fundarb.report import check_output_folder, publish_folder

    check_output_folder(out, STATS_FILES)
    st = build_stats(frame, venues, prices=prices, since=since, until=until, thresholds=thresholds,
                     holding_days=holding_days, cfg=cfg, cost_price=cost_price)
    selection = {"venues": sorted(venues) if venues else "all", "since": since, "until": until,
                 "thresholds_apr": list(thresholds), "holding_days": list(holding_days)}

    def build(tmp: Path) -> None:
        (tmp / STATS_FILE).write_text(render_stats_json(st, inputs, selection))
        (tmp / BY_VENUE_FILE).write_text(csv_text(st.by_venue))
        (tmp / BY_YEAR_FILE).write_text(csv_text(st.by_year))
        (tmp / BY_REGIME_FILE).write_text(csv_text(st.by_regime))
        (tmp / THRESHOLDS_FILE).write_text(csv_text(st.thresholds))
        plot_by_venue(st, tmp / VENUE_PNG)
        plot_by_year(st, tmp / YEAR_PNG)
        plot_thresholds(st, tmp / THRESHOLDS_PNG)
        plot_persistence(st, tmp / PERSISTENCE_PNG)

    publish_folder(out, STATS_FILES, build)
    return st, {name: out / name for name in STATS_FILES}


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pct(v: float | None, digits: int = 1) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v * 100:.{digits}f}%"


def print_headline(st: FundingStats, console: Any, paths: dict[str, Path]) -> None:
    from rich.table import Table

    t = Table(title="funding APR by venue (neg. = share of settlements < 0)")
    for col, just in (("series", "left"), ("span", "left"), ("n", "right"), ("mean", "right"),
                      ("median", "right"), ("neg.", "right")):
        t.add_column(col, justify=just, no_wrap=col in ("series", "span"))
    for r in st.by_venue.rows(named=True):
        t.add_row(series_label(r["venue"], r["symbol"]), f"{r['first'][:7]}..{r['last'][:7]}", f"{r['count']:,}",
                  _pct(r["mean_apr"], 2), _pct(r["median_apr"], 2), _pct(r["share_negative"]))
    console.print(t)
    common, best = st.common, st.common_stats.row(0, named=True)
    console.print(f"common window {fmt_ms(common['start_ms'])[:10]} .. {fmt_ms(common['end_ms'])[:10]} "
                  f"({len(common['series'])} series): best {series_label(best['venue'], best['symbol'])} "
                  f"mean {_pct(best['mean_apr'])}", highlight=False)
    ref = series_label(*st.reference)
    m = Table(title=f"minimum profitable entry threshold, {ref}")
    for col in ("hold", "cost APR", "min threshold", "share of time", "expected net APR"):
        m.add_column(col, justify="right")
    ref_rows = st.thresholds.filter((pl.col("venue") == st.reference[0]) & (pl.col("symbol") == st.reference[1]))
    for h, row in st.min_profitable[ref].items():
        cost = st.cost["amortised_apr"][h]
        if row is None:
            entries = ref_rows.filter(pl.col("holding_days") == float(h))["entries"].sum()
            m.add_row(f"{h} d", _pct(cost), "none" if entries else "no data", "-", "-")
        else:
            m.add_row(f"{h} d", _pct(cost), _pct(row["threshold_apr"], 0), _pct(row["share_above"]), _pct(row["expected_net_apr"]))
    console.print(m)
    console.print(f"round-trip cost {st.cost['round_trip_cost'] * 1e4:.1f} bp of notional ({st.cost['config_name']} config, "
                  f"BTC at {st.cost['price']:,.0f})", highlight=False)
    for p in paths.values():
        console.print(f"wrote {p}", highlight=False)


def run_stats(venues: Sequence[str] | None, since: str | None, until: str | None, out: Path, data_dir: Path | None,
              thresholds: Sequence[float] | None) -> tuple[FundingStats, dict[str, Path]]:
    """The command's work, raising DataError / StatsError / OutputError / ConfigError."""
    from fundarb.report import check_output_folder

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


def stats_command(
    venue: Optional[list[str]] = typer.Option(None, "--venue", help="a venue (all its symbols) or venue:SYMBOL, e.g. binance:BTCUSDT; repeatable (default: every series)"),
    since: Optional[str] = typer.Option(None, "--since", help="first settlement instant, UTC ISO date/time (default: all)"),
    until: Optional[str] = typer.Option(None, "--until", help="end instant, exclusive (default: all)"),
    out: Path = typer.Option(Path("runs/funding-stats"), "--out", help="output folder"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="folder with funding_settlements.parquet and prices_1h.parquet (default: shipped data)"),
    threshold_apr: Optional[list[float]] = typer.Option(None, "--threshold-apr", help="entry threshold on the signal APR, a fraction (0.10 = 10%); repeatable (default 0 0.05 0.10 0.15 0.20 0.30)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no table"),
) -> None:
    """Funding statistics by venue, year and BTC market regime, their persistence, and the entry-threshold table."""
    from rich.console import Console

    from fundarb.cli import fail
    from fundarb.config import ConfigError
    from fundarb.report import OutputError

    try:
        st, paths = run_stats(venue, since, until, out, data_dir, threshold_apr)
    except (ConfigError, DataError, StatsError, OutputError) as exc:
        fail(str(exc))
        return
    if not quiet:
        print_headline(st, Console(), paths)
