"""Funding statistics of the real settlement history: by venue, year and
market regime; persistence; and the entry-threshold question.

Every rate is first put on one scale, its simple APR from the venue's own
interval (``rate * 8760 / interval_hours``), so 1h and 8h venues compare.
The functions below take polars frames and return frames or plain dicts;
``fundarb.output.funding_stats`` writes them as one all-or-nothing
output folder.

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

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

import attrs
import numpy as np
import polars as pl

from fundarb.core.errors import FundarbError
from fundarb.core.model import HOURS_PER_YEAR
from fundarb.data.history import parse_time

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
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


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
    if preferred is not None and preferred in series:
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
    sims/spot_perp.toml, the carry on Binance USD-M's BTCUSDT, the reference
    series) at ``cost_price`` (default: median spot close)."""
    from fundarb.config import config_hash, load, spot_perp_config_path
    from fundarb.data.history import PERP_FUNDING
    from fundarb.wiring import round_trip_cost

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
        cost_price = float(cast(float, closes["close"].median()))
    if cfg is None:
        cfg = load(spot_perp_config_path())
    rt = round_trip_cost(cfg, cost_price)
    cost = {
        "round_trip_cost": rt, "price": cost_price, "config_name": cfg.name, "config_hash": config_hash(cfg),
        "price_rule": "median Binance spot BTCUSDT hourly close of the price file" if prices is not None else "given",
        "what": "backtest.round_trip_cost: taker fees, mean half spread and impact at the configured notional, both legs, "
                "open and close, plus two transfers (none for a one-account structure), as a fraction of notional; applied to every venue",
        "notional": cfg.strategy.notional,
        "amortised_apr": {f"{h:g}": cost_apr(rt, h) for h in holding_days},
    }
    preferred = PERP_FUNDING.get((cfg.perp.exchange, cfg.perp.symbol))
    return compute_stats(frame, closes, rt, thresholds, holding_days, preferred, cost)


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

