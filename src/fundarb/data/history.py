"""Load the real price and funding history a backtest runs on.

Two layouts are read, both as they are written:

- the shipped layout (``prices_1h.parquet`` + ``funding_settlements.parquet``,
  long tables keyed by the venue's own names, described in
  ``docs/data.md``), which ``--data-dir`` also accepts;
- a ``fundarb data fetch`` store (``ohlcv/``, ``mark/``, ``funding/``, one
  file per venue and ccxt symbol).

Prices: hourly closes; a close belongs to ``open_time + 1h``. Gaps up to the
config's tolerance carry the last price forward (counted in the report);
longer gaps, NaN or non-positive prices are errors naming the hour. Where the
venue's mark-price klines are there, they are the perp's hourly mark (margin,
liquidation, valuation); elsewhere the perp close stands in.

Funding: the venue's raw stamps are snapped to the settlement schedule here,
once (``core.funding.scheduled_instant``; venues stamp a few ms late), within
``data.settlement_tolerance_seconds``; a stamp further off is an error naming
the row. Two rows for one settlement: identical ones are kept once and
counted, differing ones are an error naming both. A settlement accrues at
the venue's mark where the history carries it (Binance's funding history
returns ``markPrice``), else at the mark kline's close at that hour, else at
the perp close (the report counts which).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import numpy as np
import polars as pl

from fundarb.core.funding import schedule_gaps, scheduled_instant
from fundarb.core.model import NS_PER_HOUR, NS_PER_SECOND

if TYPE_CHECKING:
    from fundarb.config import Config

SHIPPED_DIR = Path(__file__).parent / "shipped"
PRICES_FILE = "prices_1h.parquet"
FUNDING_FILE = "funding_settlements.parquet"
NS_PER_MS = 1_000_000
MARK_MARKETS = ("perp_mark", "mark", "mark_price")  # the hourly mark of a perp in the long layout

# (ccxt exchange id, unified symbol) -> rows of the shipped files (kept for the
# statistics, which prefer the config's own series)
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


def fmt_stamp(ns: int) -> str:
    """A raw venue stamp to the millisecond."""
    return datetime.fromtimestamp(ns // NS_PER_MS / 1e3, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def venue_names(exchange: str, symbol: str) -> tuple[str, str, str]:
    """ccxt exchange id and unified symbol -> (venue, market, venue symbol) as
    the long layout names them: binanceusdm BTC/USDT:USDT -> (binance,
    perp_linear, BTCUSDT); binance BTC/USDT -> (binance, spot, BTCUSDT)."""
    venue = exchange.removesuffix("usdm").removesuffix("coinm")
    pair, _, settle = symbol.partition(":")
    base, _, quote = pair.partition("/")
    if not settle:
        return venue, "spot", f"{base}{quote}"
    if settle == quote:
        return venue, "perp_linear", f"{base}{quote}"
    return venue, "perp_inverse", f"{base}{quote}_PERP" if venue == "binance" else f"{base}{quote}"


@attrs.frozen
class FundingIntake:
    """How the raw funding rows of the window were taken in."""

    file: str
    rows: int  # raw rows read for the window
    stamps_snapped: int  # raw stamps that were not exactly on their instant
    duplicates_dropped: int  # identical repeated rows kept once
    tolerance_seconds: float

    def describe(self) -> dict:
        return {"file": self.file, "rows": self.rows, "stamps_snapped_to_schedule": self.stamps_snapped,
                "duplicate_rows_dropped": self.duplicates_dropped, "settlement_tolerance_seconds": self.tolerance_seconds}


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
    funding_mark: np.ndarray  # nan where no venue mark is known: the perp close stands in
    sources: tuple[str, ...]
    funding_gaps: tuple[tuple[int, int], ...] = ()
    mark: np.ndarray | None = None  # the venue's hourly mark; None: the perp close stands in
    intake: FundingIntake | None = None

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
        n = int(self.funding_ts.size)
        with_mark = int(np.count_nonzero(~np.isnan(self.funding_mark))) if n else 0
        out = {
            "start": fmt_time(self.start),
            "end": fmt_time(self.end),
            "hours": int(self.hours.size),
            "price_hours_carried_forward": int(self.carried.sum()),
            "funding_settlements": n,
            "funding_settlements_with_venue_mark": with_mark,
            "funding_gaps": [[fmt_time(a), fmt_time(b)] for a, b in self.funding_gaps],
            "mark_price": mark_text(with_mark, n),
            "hourly_mark": "venue mark-price klines" if self.mark is not None else "perp hourly close stands in",
            "sources": list(self.sources),
        }
        if self.intake is not None:
            out["funding_intake"] = self.intake.describe()
        return out


def mark_text(with_mark: int, n: int) -> str:
    if with_mark == 0:
        return "perp hourly close at the settlement hour stands in for the mark (history has no mark)"
    if with_mark == n:
        return "venue mark price at every settlement"
    return (f"venue mark price at {with_mark:,} of {n:,} settlements; the perp hourly close at the settlement "
            f"hour stands in for the other {n - with_mark:,}")


# --- reading files --------------------------------------------------------------

NUMERIC, TEXT = "a number", "text"


def read_table(path: Path, columns: dict[str, str], optional: dict[str, str] | None = None) -> pl.DataFrame:
    """A parquet file with the named columns of the named kinds, or one
    DataError naming the file and what is wrong with it."""
    if not path.is_file():
        raise DataError(f"history file missing: {path}")
    try:
        frame = pl.read_parquet(path)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"history file {path} is not readable parquet: {first}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"history file {path} has no column {', '.join(repr(c) for c in missing)} "
                        f"(it has: {', '.join(frame.columns) or 'none'})")
    for name, kind in {**columns, **{k: v for k, v in (optional or {}).items() if k in frame.columns}}.items():
        dtype = frame.schema[name]
        ok = dtype.is_numeric() if kind == NUMERIC else dtype in (pl.Utf8, pl.Categorical)
        if dtype == pl.Null:
            ok = True
        if not ok:
            raise DataError(f"history file {path}: column {name!r} is {dtype}, not {kind}")
    return frame


@attrs.frozen
class RawHistory:
    """What a layout holds for one spot/perp pair, before alignment."""

    spot: pl.DataFrame  # ts (close instant, ns), close, source
    perp: pl.DataFrame
    mark: pl.DataFrame | None  # ts, close, source: the venue's mark klines
    funding: pl.DataFrame  # row (1-based), stamp (ns), rate, interval (null: infer), mark (null: none), source
    label: str  # the funding series in messages: "binance BTCUSDT"
    funding_file: Path


def _long_layout(data_dir: Path, spot: tuple[str, str], perp: tuple[str, str]) -> RawHistory:
    prices = read_table(data_dir / PRICES_FILE, {"venue": TEXT, "market": TEXT, "symbol": TEXT,
                                                 "open_time_ms": NUMERIC, "close": NUMERIC}, {"source": TEXT})
    if "source" not in prices.columns:
        prices = prices.with_columns(pl.lit(f"{data_dir / PRICES_FILE}").alias("source"))

    def series(venue: str, markets: tuple[str, ...], symbol: str) -> pl.DataFrame:
        return prices.filter((pl.col("venue") == venue) & pl.col("market").is_in(markets) & (pl.col("symbol") == symbol)).select(
            ((pl.col("open_time_ms").cast(pl.Int64) + 3_600_000) * NS_PER_MS).alias("ts"),
            pl.col("close").cast(pl.Float64), pl.col("source"))

    sv, sm, ss = venue_names(*spot)
    pv, pm, ps = venue_names(*perp)
    s, p = series(sv, (sm,), ss), series(pv, (pm,), ps)
    for frame, (ex, sym), (v, m, name) in ((s, spot, (sv, sm, ss)), (p, perp, (pv, pm, ps))):
        if frame.height == 0:
            held = prices.select("venue", "market", "symbol").unique().sort("venue", "market", "symbol")
            known = ", ".join(f"{a} {b} {c}" for a, b, c in held.iter_rows()) or "none"
            raise DataError(f"no prices for exchange {ex!r} symbol {sym!r} (venue {v} market {m} symbol {name}) "
                            f"in {data_dir / PRICES_FILE} (it holds: {known})")
    mark = series(pv, MARK_MARKETS, ps)
    f, label, file = _long_funding(data_dir, perp)
    return RawHistory(s, p, mark if mark.height else None, f, label, file)


class NoFundingSeries(DataError):
    """The history holds no funding rows for the asked perp at all."""


def _long_funding(data_dir: Path, perp: tuple[str, str]) -> tuple[pl.DataFrame, str, Path]:
    pv, _, ps = venue_names(*perp)
    file = data_dir / FUNDING_FILE
    funding = read_table(file, {"venue": TEXT, "symbol": TEXT, "funding_time_ms": NUMERIC, "funding_rate": NUMERIC},
                         {"interval_hours": NUMERIC, "mark_price": NUMERIC, "source": TEXT})
    f = funding.with_columns(pl.int_range(1, pl.len() + 1).alias("row")).filter(
        (pl.col("venue") == pv) & (pl.col("symbol") == ps))
    if f.height == 0:
        held = funding.select("venue", "symbol").unique().sort("venue", "symbol")
        known = ", ".join(f"{a} {b}" for a, b in held.iter_rows()) or "none"
        raise NoFundingSeries(f"no funding history for exchange {perp[0]!r} symbol {perp[1]!r} (venue {pv} symbol {ps}) "
                              f"in {file} (it holds: {known})")
    return _funding_rows(f, "funding_time_ms", str(file)), f"{pv} {ps}", file


def _funding_rows(f: pl.DataFrame, stamp_col: str, source: str) -> pl.DataFrame:
    """A funding table's rows (with ``row`` numbers) in the loader's columns:
    row, stamp (ns), rate, interval (null: infer), mark (null: none), source."""
    null_f64 = pl.lit(None, dtype=pl.Float64)
    return f.select(
        pl.col("row"),
        (pl.col(stamp_col).cast(pl.Int64) * NS_PER_MS).alias("stamp"),
        pl.col("funding_rate").cast(pl.Float64).alias("rate"),
        (pl.col("interval_hours").cast(pl.Float64) if "interval_hours" in f.columns else null_f64).alias("interval"),
        (pl.col("mark_price").cast(pl.Float64) if "mark_price" in f.columns else null_f64).alias("mark"),
        (pl.col("source").cast(pl.Utf8) if "source" in f.columns else pl.lit(source)).alias("source"),
    )


def _store_funding(store: Path, perp: tuple[str, str]) -> tuple[pl.DataFrame, str, Path]:
    from fundarb.data.fetch import funding_path

    path = funding_path(store, *perp)
    if not path.is_file():
        raise NoFundingSeries(f"history file missing: {path}; fetch it with "
                              f"`fundarb data fetch --venue {perp[0]} --symbol {perp[1]} --store {store}`")
    raw = read_table(path, {"timestamp_ms": NUMERIC, "funding_rate": NUMERIC}, {"mark_price": NUMERIC})
    f = _funding_rows(raw.with_columns(pl.int_range(1, pl.len() + 1).alias("row")).drop("source", strict=False),
                      "timestamp_ms", f"{perp[0]} {perp[1]} funding via ccxt: {path}")
    return f, f"{perp[0]} {perp[1]}", path


def _is_store(data_dir: Path) -> bool:
    if (data_dir / PRICES_FILE).exists() or (data_dir / FUNDING_FILE).exists():
        return False
    if (data_dir / "ohlcv").is_dir() or (data_dir / "funding").is_dir():
        return True
    if not data_dir.is_dir():
        raise DataError(f"--data-dir {data_dir}: no such folder")
    raise DataError(f"{data_dir}: no history here: expected {PRICES_FILE} and {FUNDING_FILE}, "
                    f"or a `fundarb data fetch` store (ohlcv/, funding/)")


def _store_layout(store: Path, spot: tuple[str, str], perp: tuple[str, str]) -> RawHistory:
    from fundarb.data.fetch import kline_path

    def bars(kind: str, exchange: str, symbol: str, required: bool) -> pl.DataFrame | None:
        path = kline_path(store, kind, exchange, symbol, "1h")
        if not path.is_file():
            if not required:
                return None
            others = sorted(p.name for p in path.parent.glob("*.parquet")) if path.parent.is_dir() else []
            hint = f" (there: {', '.join(others)}; the backtest needs 1h bars)" if others else ""
            raise DataError(f"history file missing: {path}{hint}; fetch it with "
                            f"`fundarb data fetch --venue {exchange} --symbol {symbol} --timeframe 1h --store {store}`")
        frame = read_table(path, {"timestamp_ms": NUMERIC, "close": NUMERIC})
        return frame.select(((pl.col("timestamp_ms").cast(pl.Int64) + 3_600_000) * NS_PER_MS).alias("ts"),
                            pl.col("close").cast(pl.Float64),
                            pl.lit(f"{exchange} {symbol} {kind} 1h via ccxt: {path}").alias("source"))

    s = bars("ohlcv", *spot, required=True)
    p = bars("ohlcv", *perp, required=True)
    mark = bars("mark", *perp, required=False)
    f, label, path = _store_funding(store, perp)
    assert s is not None and p is not None
    return RawHistory(s, p, mark, f, label, path)


def read_raw(data_dir: Path, spot: tuple[str, str], perp: tuple[str, str]) -> RawHistory:
    return _store_layout(data_dir, spot, perp) if _is_store(data_dir) else _long_layout(data_dir, spot, perp)


# --- settlements -------------------------------------------------------------------

def _infer_intervals(instants: np.ndarray) -> np.ndarray:
    """Hours between settlements where the data does not say: the shorter of
    the spacings to each neighbour (a gap on one side does not widen it)."""
    if instants.size < 2:
        raise DataError("one funding settlement alone does not say its interval: the history needs interval_hours")
    step = np.diff(instants) / NS_PER_HOUR
    prev = np.concatenate(([step[0]], step))
    nxt = np.concatenate((step, [step[-1]]))
    return np.minimum(prev, nxt)


def snap_settlements(f: pl.DataFrame, label: str, file: Path, tolerance_s: float) -> tuple[pl.DataFrame, int, int]:
    """Raw rows (``row, stamp, rate, interval, mark, source``) -> one row per
    settlement instant (``ts`` added), sorted; also (stamps snapped,
    duplicates dropped)."""
    bad = f.filter(pl.col("rate").is_null() | pl.col("rate").is_nan())
    if bad.height:
        raise DataError(f"{label} funding rate missing at {fmt_stamp(bad['stamp'][0])} UTC (row {bad['row'][0]} of {file})")
    bad = f.filter(pl.col("mark").is_not_null() & ~(pl.col("mark") > 0) | pl.col("mark").is_nan())
    if bad.height:
        raise DataError(f"{label} mark price {bad['mark'][0]} at {fmt_stamp(bad['stamp'][0])} UTC "
                        f"(row {bad['row'][0]} of {file}) is not a usable price")
    f = f.sort("stamp", "row")
    stamps = f["stamp"].to_list()
    intervals = f["interval"].to_list()
    tol = int(round(tolerance_s * NS_PER_SECOND))
    instants = []
    for stamp, interval, row in zip(stamps, intervals, f["row"].to_list()):
        hours = interval if interval is not None and math.isfinite(interval) and interval > 0 else 1.0
        at = scheduled_instant(stamp, hours, tol)
        if at is None:
            near = scheduled_instant(stamp, hours, 1 << 62)
            raise DataError(f"{label}: funding stamp {fmt_stamp(stamp)} UTC (row {row} of {file}) is "
                            f"{abs(stamp - near) / NS_PER_SECOND:.3f} s from its scheduled instant {fmt_time(near)}, "
                            f"beyond data.settlement_tolerance_seconds = {tolerance_s:g}")
        instants.append(at)
    f = f.with_columns(pl.Series("ts", instants, dtype=pl.Int64)).sort("ts", "row")
    snapped = int((f["ts"] != f["stamp"]).sum())
    keep, dropped = _dedupe(f, label, file)
    out = f[keep]
    if out.height and out["interval"].is_null().any():
        inferred = _infer_intervals(out["ts"].to_numpy())
        out = out.with_columns(pl.col("interval").fill_null(pl.Series(inferred)))
    return out, snapped, dropped


def _dedupe(f: pl.DataFrame, label: str, file: Path) -> tuple[list[int], int]:
    """Indices to keep: one row per instant. Repeats with the same rate are
    the same settlement (the one that carries a mark is kept); a different
    rate, or two different marks, is an error naming both rows."""
    ts, rate, mark = f["ts"].to_list(), f["rate"].to_list(), f["mark"].to_list()
    rows, stamps = f["row"].to_list(), f["stamp"].to_list()
    keep: list[int] = []
    dropped = 0
    for i in range(len(ts)):
        if keep and ts[keep[-1]] == ts[i]:
            j = keep[-1]
            same_mark = mark[i] is None or mark[j] is None or mark[i] == mark[j]
            if rate[i] != rate[j] or not same_mark:
                def say(k: int) -> str:
                    m = "no mark" if mark[k] is None else f"mark {mark[k]:,.2f}"
                    return f"row {rows[k]} ({fmt_stamp(stamps[k])}, rate {rate[k]:.8g}, {m})"
                raise DataError(f"{label}: two different rows for the {fmt_time(ts[i])} UTC settlement in {file}: "
                                f"{say(j)} and {say(i)}")
            dropped += 1
            if mark[j] is None and mark[i] is not None:
                keep[-1] = i
            continue
        keep.append(i)
    return keep, dropped


def load_settlements(perp: tuple[str, str], tolerance_s: float, lo: int, hi: int,
                     data_dir: Path | None = None) -> pl.DataFrame:
    """The perp's snapped settlements with ``lo <= ts <= hi`` (``ts, rate,
    interval, mark, source``): what a replay reads beside its capture.
    ``NoFundingSeries`` when the history has none of that perp at all."""
    data_dir = data_dir or SHIPPED_DIR
    raw, label, file = _store_funding(data_dir, perp) if _is_store(data_dir) else _long_funding(data_dir, perp)
    near = raw.filter((pl.col("stamp") > lo - NS_PER_HOUR) & (pl.col("stamp") <= hi + NS_PER_HOUR))
    f, _, _ = snap_settlements(near, label, file, tolerance_s)
    return f.filter((pl.col("ts") >= lo) & (pl.col("ts") <= hi)).select("ts", "rate", "interval", "mark", "source")


def snap_table(funding: pl.DataFrame, file: Path, tolerance_s: float) -> pl.DataFrame:
    """A whole long funding table (every venue and symbol in it) with each
    series' stamps snapped to their instants and repeated rows kept once,
    by the same rules as a backtest's series: what the statistics read."""
    rows = funding.with_columns(pl.int_range(1, pl.len() + 1).alias("row"))
    out = []
    for (venue, symbol), part in rows.group_by(["venue", "symbol"], maintain_order=True):
        f = _funding_rows(part, "funding_time_ms", str(file))
        snapped, _, _ = snap_settlements(f, f"{venue} {symbol}", file, tolerance_s)
        out.append(part.filter(pl.col("row").is_in(snapped["row"].implode())).join(
            snapped.select("row", (pl.col("ts") // NS_PER_MS).alias("instant_ms")), on="row"))
    if not out:
        return funding
    both = pl.concat(out)
    return both.with_columns(pl.col("instant_ms").cast(funding.schema["funding_time_ms"]).alias("funding_time_ms")).select(
        funding.columns)


# --- the aligned history ---------------------------------------------------------------

def history_for(cfg: Config, data_dir: Path | None = None) -> MarketHistory:
    """The history a config's backtest runs on (its window, gap and stamp tolerances)."""
    d = cfg.data
    return load_history((cfg.spot.exchange, cfg.spot.symbol), (cfg.perp.exchange, cfg.perp.symbol),
                        d.start, d.end, d.max_price_gap_hours, data_dir, d.settlement_tolerance_seconds)


def load_history(
    spot: tuple[str, str],
    perp: tuple[str, str],
    start: str,
    end: str,
    max_gap_hours: float,
    data_dir: Path | None = None,
    tolerance_s: float = 1.0,
) -> MarketHistory:
    lo, hi = parse_time(start, "start"), parse_time(end, "end")
    if lo >= hi:
        raise DataError(f"start {fmt_time(lo)} is not before end {fmt_time(hi)}")
    data_dir = data_dir or SHIPPED_DIR
    raw = read_raw(data_dir, spot, perp)
    s = raw.spot.filter((pl.col("ts") >= lo) & (pl.col("ts") < hi)).sort("ts")
    p = raw.perp.filter((pl.col("ts") >= lo) & (pl.col("ts") < hi)).sort("ts")
    if s.height == 0 or p.height == 0:
        both = raw.spot.join(raw.perp, on="ts")["ts"]
        held = f" (it holds {fmt_time(both.min())} .. {fmt_time(both.max())} UTC: choose the window with --from/--to)" \
            if both.len() else ""
        raise DataError(f"no price history between {fmt_time(lo)} and {fmt_time(hi)} in {data_dir}{held}")
    for frame, label in ((s, "spot"), (p, "perp")):
        dup = frame.filter(pl.col("ts").is_duplicated())
        if dup.height:
            raise DataError(f"{label} price for the hour closing {fmt_time(dup['ts'][0])} appears {dup.height} times in {data_dir}")
        bad = frame.filter(pl.col("close").is_null() | pl.col("close").is_nan() | (pl.col("close") <= 0))
        if bad.height:
            raise DataError(f"{label} price at {fmt_time(bad['ts'][0])} is {bad['close'][0]}: not a usable price")
    first = max(s["ts"][0], p["ts"][0])
    last = min(s["ts"][-1], p["ts"][-1])
    # count in integers: np.arange sizes its output in float64, which at 1e18 ns
    # loses the last hour
    n_hours = (last - first) // NS_PER_HOUR + 1
    grid = pl.DataFrame({"ts": first + np.arange(n_hours, dtype=np.int64) * NS_PER_HOUR})
    joined = grid.join(s.select("ts", pl.col("close").alias("spot")), on="ts", how="left").join(
        p.select("ts", pl.col("close").alias("perp")), on="ts", how="left")
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
    hourly_mark, mark_sources = _hourly_mark(raw, joined, lo, hi)

    near = raw.funding.filter((pl.col("stamp") > first - NS_PER_HOUR) & (pl.col("stamp") <= last + NS_PER_HOUR))
    f, snapped, dropped = snap_settlements(near, raw.label, raw.funding_file, tolerance_s)
    f = f.filter((pl.col("ts") > first) & (pl.col("ts") <= last))
    if f.height == 0:
        raise DataError(f"no {raw.label} funding settlements between {fmt_time(first)} and {fmt_time(last)}")
    fts = f["ts"].to_numpy()
    intervals = f["interval"].to_numpy()
    marks = f["mark"].fill_null(float("nan")).to_numpy()
    if hourly_mark is not None:  # the venue's mark kline at the settlement hour, where the row has none
        at = np.searchsorted(joined["ts"].to_numpy(), fts)
        on_grid = (at < n_hours) & (joined["ts"].to_numpy()[np.minimum(at, n_hours - 1)] == fts)
        kline = np.where(on_grid, hourly_mark[np.minimum(at, n_hours - 1)], np.nan)
        marks = np.where(np.isnan(marks), kline, marks)
    gaps = tuple(schedule_gaps(fts.tolist(), intervals.tolist()))
    sources = tuple(sorted(set(s["source"].to_list()) | set(p["source"].to_list()) | set(f["source"].to_list())
                           | mark_sources))
    intake = FundingIntake(str(raw.funding_file), near.height, snapped, dropped, tolerance_s)
    return MarketHistory(
        hours=joined["ts"].to_numpy(),
        spot=joined["spot"].to_numpy(),
        perp=joined["perp"].to_numpy(),
        carried=carried,
        funding_ts=fts,
        funding_rate=f["rate"].to_numpy(),
        funding_interval=intervals,
        funding_mark=marks,
        sources=sources,
        funding_gaps=gaps,
        mark=hourly_mark,
        intake=intake,
    )


def _hourly_mark(raw: RawHistory, joined: pl.DataFrame, lo: int, hi: int) -> tuple[np.ndarray | None, set[str]]:
    """The venue's hourly mark on the price grid, carried over its own gaps;
    hours before its first close take the perp close. None without klines."""
    if raw.mark is None:
        return None, set()
    m = raw.mark.filter((pl.col("ts") >= lo) & (pl.col("ts") < hi))
    if m.height == 0:
        return None, set()
    bad = m.filter(pl.col("close").is_null() | pl.col("close").is_nan() | (pl.col("close") <= 0))
    if bad.height:
        raise DataError(f"mark price at {fmt_time(bad['ts'][0])} is {bad['close'][0]}: not a usable price")
    col = joined.join(m.unique("ts", keep="first").select("ts", pl.col("close").alias("mark")), on="ts", how="left")
    mark = col["mark"].forward_fill().fill_null(col["perp"])
    return mark.to_numpy(), set(m["source"].to_list())
