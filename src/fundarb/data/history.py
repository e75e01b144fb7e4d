"""Load the real price and funding history a backtest runs on.

Two layouts are read, both as they are written:

- the shipped layout (``prices_1h.parquet`` + ``funding_settlements.parquet``,
  long tables keyed by the venue's own names, described in
  ``docs/data.md``), which ``--data-dir`` also accepts;
- a ``fundarb data fetch`` store (``ohlcv/``, ``mark/``, ``funding/``, one
  file per venue and ccxt symbol).

Every file is checked whole as it is read (``check_prices``,
``check_funding``): each number finite and in a plausible range (funding
rates within ``MAX_ABS_FUNDING_RATE`` per interval, intervals in (0,
``MAX_INTERVAL_HOURS``], prices above 0 and within ``MAX_PRICE_MOVE`` of the
close before, times whole UTC ms in a sane span), no key missing, and one
value per hour and market; anything else is one DataError naming the file,
the row, its time and the value. The shipped files are also checked against
the sha256 sums their README lists (``data.checksums``).

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
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import attrs
import numpy as np
import polars as pl

from fundarb.core.errors import FundarbError
from fundarb.core.funding import schedule_gaps, scheduled_instant
from fundarb.core.model import NS_PER_HOUR, NS_PER_SECOND
from fundarb.data import checksums
from fundarb.data.store_layout import funding_path, kline_path
from fundarb.support.parquet import ParquetUnreadable, read_parquet

if TYPE_CHECKING:
    from fundarb.config import Config

SHIPPED_DIR = checksums.SHIPPED_DIR
PRICES_FILE = "prices_1h.parquet"
FUNDING_FILE = "funding_settlements.parquet"
NS_PER_MS = 1_000_000
MARK_MARKETS = ("perp_mark", "mark", "mark_price")  # the hourly mark of a perp in the long layout

# (ccxt exchange id, unified symbol) -> rows of the shipped files (kept for the
# statistics, which prefer the config's own series)
PERP_FUNDING = {("binanceusdm", "BTC/USDT:USDT"): ("binance", "BTCUSDT"),
                ("binancecoinm", "BTC/USD:BTC"): ("binance", "BTCUSD_PERP")}


class DataError(FundarbError, ValueError):
    """History that cannot be used as asked; the message names what and where."""


def parse_time(text: str, what: str) -> int:
    """An ISO date or datetime (UTC unless it says otherwise) -> ns."""
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise DataError(f"{what}: {text!r} is not an ISO date like 2022-01-31 or 2022-01-31T08:00") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


def fmt_time(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M")


def fmt_stamp(ns: int) -> str:
    """A raw venue stamp to the millisecond."""
    return datetime.fromtimestamp(ns // NS_PER_MS / 1e3, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def venue_names(exchange: str, symbol: str) -> tuple[str, str, str]:
    """ccxt exchange id and unified symbol -> (venue, market, venue symbol) as
    the long layout names them: binanceusdm BTC/USDT:USDT -> (binance,
    perp_linear, BTCUSDT); binance BTC/USDT -> (binance, spot, BTCUSDT);
    okx BTC/USDT:USDT -> (okx, perp_linear, BTC-USDT-SWAP)."""
    venue = exchange.removesuffix("usdm").removesuffix("coinm")
    pair, _, settle = symbol.partition(":")
    base, _, quote = pair.partition("/")
    if not settle:
        return venue, "spot", f"{base}{quote}"
    if venue == "okx":  # OKX names its swaps BTC-USDT-SWAP (linear) and BTC-USD-SWAP (inverse)
        return venue, "perp_linear" if settle == quote else "perp_inverse", f"{base}-{quote}-SWAP"
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
    price_duplicates: int = 0  # identical repeated price rows in the files read, kept once
    # a perp/perp carry: ``spot`` holds the long perp's closes, and these its settlements (None otherwise)
    long_funding_ts: np.ndarray | None = None
    long_funding_rate: np.ndarray | None = None
    long_funding_interval: np.ndarray | None = None
    bar_hours: int = 1  # hours between two price rows (8: the multi-venue bars)

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
        if self.price_duplicates:
            out["price_duplicate_rows_dropped"] = self.price_duplicates
        if self.long_funding_ts is not None:
            out["long_funding_settlements"] = int(self.long_funding_ts.size)
            out["bar_hours"] = self.bar_hours
            out["mark_price"] = (f"each venue's last close before a settlement (up to {self.bar_hours} h old on "
                                 f"{self.bar_hours}-hour bars) stands in for its mark (history has no mark)")
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
    problem = checksums.shipped_problem(path)
    if problem is not None:
        raise DataError(problem)
    try:  # a file that is not a checksummed shipped one is read first where its damage cannot crash us
        frame = read_parquet(path, vouched=checksums.is_shipped(path))
    except ParquetUnreadable as exc:
        raise DataError(f"history file {path} is not readable parquet: {exc}") from None
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


# --- plausible values ----------------------------------------------------------------
# Every number a history file holds meets these, or the load fails naming the
# file, the row, its time and the value. Each bound clears the real shipped
# history by a wide margin: its largest |funding rate| is 0.01125 per interval
# (BitMEX XBTUSD, 2016), its intervals are 1, 8 and 24 h, its largest move
# between hourly closes is x1.067 / x0.929 (Binance, 2022-05 and 2022-11) and
# Deribit's index moved at most x1.20 / x0.83 between hourly settlements
# (2020-03-12).

MAX_ABS_FUNDING_RATE = 0.05  # per settlement interval; venues cap far lower (Binance BTCUSDT +-0.3% .. +-3%)
MAX_INTERVAL_HOURS = 24.0  # BitMEX's daily settlement before 2016-06, the longest any venue used
MAX_PRICE_MOVE = 2.0  # a price above x2 or under /2 the one before it (within a day) is a bad print
PRICE_MOVE_SPAN_HOURS = 24  # prices further apart than this are not compared
EARLIEST_MS = 1_230_940_800_000  # 2009-01-03 00:00 UTC, the first bitcoin block
LATEST_MS = 4_102_444_800_000  # 2100-01-01 00:00 UTC
MS_PER_HOUR = 3_600_000


def _num(v: object) -> str:
    if v is None:
        return "missing"
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    return str(v)


def _first(frame: pl.DataFrame, mask: pl.Expr) -> dict | None:
    hit = frame.filter(mask.fill_null(False)).head(1)
    return hit.row(0, named=True) if hit.height else None


def _check_keys(frame: pl.DataFrame, file: Path, keys: list[str]) -> None:
    for col in keys:
        r = _first(frame, pl.col(col).is_null())
        if r is not None:
            raise DataError(f"{file}: row {r['row']} has no {col} (null); every row needs {', '.join(keys)}")


def _check_times(frame: pl.DataFrame, file: Path, col: str, hourly: bool) -> None:
    """Whole UTC milliseconds in [2009-01-03, 2100-01-01); an hourly bar's open on the hour."""
    x = pl.col(col).cast(pl.Float64)
    checks = [
        (pl.col(col).is_null(), "missing (null)"),
        (~x.is_finite(), "not a finite number"),
        (x != x.floor(), "not a whole number of milliseconds"),
        ((x < EARLIEST_MS) | (x >= LATEST_MS), "not a UTC time in ms from 2009-01-03 to 2100-01-01"),
    ]
    if hourly:  # in integers: a float modulo is not exact at 1e12
        checks.append((x.cast(pl.Int64, strict=False) % MS_PER_HOUR != 0,
                       "not on a whole UTC hour (an hourly bar opens on the hour)"))
    for mask, why in checks:  # in this order: each mask holds only for values the ones before passed
        r = _first(frame, mask)
        if r is not None:
            value = "" if r[col] is None else f" {_num(r[col])}"
            raise DataError(f"{file}: {col}{value} at row {r['row']} is {why}")


def _check_positive(frame: pl.DataFrame, col: str, say: Callable[[dict, str], str]) -> None:
    """Null is a missing value (left to the caller); any other value is a finite number above 0."""
    x = pl.col(col).cast(pl.Float64)
    for mask, why in ((~x.is_finite(), "not a finite number"), (x <= 0, "not above 0")):
        r = _first(frame, mask)
        if r is not None:
            raise DataError(say(r, why))


def _check_moves(frame: pl.DataFrame, keys: list[str], col: str,
                 say: Callable[[dict, tuple, tuple | None], str]) -> None:
    """No price more than ``MAX_PRICE_MOVE`` times (or under 1/that) the one
    before it in its series, when the two are at most ``PRICE_MOVE_SPAN_HOURS``
    apart. ``frame`` has ``row`` and ``t_ns``; ``say(row, before, after)``
    words the error (``after`` is None unless the next price reverts: a spike)."""
    x = frame.filter(pl.col(col).is_not_null()).select(*keys, "row", "t_ns", pl.col(col).cast(pl.Float64).alias("_v"))
    if x.height < 2:
        return
    x = x.sort([*keys, "t_ns", "row"])

    def shift(name: str, n: int) -> pl.Expr:
        e = pl.col(name).shift(n)
        return e.over(keys) if keys else e

    x = x.with_columns(shift("_v", 1).alias("_pv"), shift("t_ns", 1).alias("_pt"), shift("row", 1).alias("_pr"),
                       shift("_v", -1).alias("_nv"), shift("t_ns", -1).alias("_nt"), shift("row", -1).alias("_nr"))
    span = PRICE_MOVE_SPAN_HOURS * NS_PER_HOUR
    up = pl.col("_v") / pl.col("_pv")
    r = _first(x, ((pl.col("t_ns") - pl.col("_pt")) <= span) & ((up > MAX_PRICE_MOVE) | (up < 1 / MAX_PRICE_MOVE)))
    if r is None:
        return
    before = (r["_pv"], r["_pt"], r["_pr"])
    after = None
    if r["_nv"] is not None and r["_nt"] - r["t_ns"] <= span:
        back = r["_nv"] / r["_v"]
        if (r["_v"] > r["_pv"] and back < 1 / MAX_PRICE_MOVE) or (r["_v"] < r["_pv"] and back > MAX_PRICE_MOVE):
            after = (r["_nv"], r["_nt"], r["_nr"])
    raise DataError(say(r, before, after))


def _move_text(what: str, r: dict, value: float, before: tuple, after: tuple | None, where: str) -> str:
    pv, pt, pr = before
    if after is None:
        return (f"{what} jumps from {_num(pv)} at {fmt_time(pt)} UTC (row {pr}) to {_num(value)} at "
                f"{fmt_time(r['t_ns'])} UTC (row {r['row']}) {where}: x{value / pv:.4g} within "
                f"{(r['t_ns'] - pt) / NS_PER_HOUR:g} h, beyond the x{MAX_PRICE_MOVE:g} a price can move in a day")
    nv, nt, nr = after
    return (f"{what} at {fmt_time(r['t_ns'])} UTC is {_num(value)} (row {r['row']}) {where}: x{value / pv:.4g} the "
            f"{_num(pv)} before it (row {pr}) and x{value / nv:.4g} the {_num(nv)} after it (row {nr}), a bad "
            f"print (a price moves less than x{MAX_PRICE_MOVE:g} in a day)")


def check_prices(frame: pl.DataFrame, file: Path, keys: list[str], time_col: str,
                 name: Callable[[dict], tuple[str, str]], bar_hours: int = 1) -> tuple[pl.DataFrame, int]:
    """Closes of bars of ``bar_hours`` (``time_col`` the bar's open, UTC ms; ``close``) checked
    whole: keys present, times valid and on the hour, each close null (a
    missing hour) or finite, above 0 and within ``MAX_PRICE_MOVE`` of the
    close before; a repeated hour of one market kept once when its close is
    the same, else an error naming both rows. ``name(row)`` gives (what,
    series) for messages: ("spot", "binance spot BTCUSDT"). Returns the rows
    (with ``row``, 1-based in the file) and how many repeats were dropped."""
    frame = frame.with_columns(pl.int_range(1, pl.len() + 1).alias("row"))
    _check_keys(frame, file, keys)
    _check_times(frame, file, time_col, hourly=True)
    f = frame.with_columns(((pl.col(time_col).cast(pl.Int64) + bar_hours * MS_PER_HOUR) * NS_PER_MS).alias("t_ns"))

    def where(r: dict) -> str:
        return f"({name(r)[1]}, row {r['row']} of {file})"

    _check_positive(f, "close", lambda r, why: f"{name(r)[0]} price at {fmt_time(r['t_ns'])} UTC is {_num(r['close'])}: "
                    f"not a usable price, {why} {where(r)}")
    k = [*keys, time_col]
    first = f.with_columns(pl.col("close").first().over(k).alias("_fc"), pl.col("row").first().over(k).alias("_fr"))
    r = _first(first, pl.col("close").ne_missing(pl.col("_fc")))
    if r is not None:
        bar = "hour" if bar_hours == 1 else f"{bar_hours}-hour bar"
        raise DataError(f"{name(r)[0]} price for the {bar} closing {fmt_time(r['t_ns'])} UTC appears twice with different "
                        f"closes in {file} ({name(r)[1]}): row {r['_fr']} ({_num(r['_fc'])}) and row {r['row']} "
                        f"({_num(r['close'])})")
    kept = f.unique(subset=k, keep="first", maintain_order=True)
    _check_moves(kept, keys, "close", lambda r, b, a: _move_text(f"{name(r)[0]} price", r, r["_v"], b, a,
                                                                  f"in {file} ({name(r)[1]})"))
    return kept.drop("t_ns"), f.height - kept.height


def check_funding(frame: pl.DataFrame, file: Path, keys: list[str], stamp_col: str,
                  name: Callable[[dict], str]) -> pl.DataFrame:
    """A funding table (``stamp_col`` the venue's stamp, UTC ms;
    ``funding_rate``; optional ``interval_hours``, ``mark_price``,
    ``index_price``) checked whole: keys present, stamps valid, each rate
    finite with |rate| <= ``MAX_ABS_FUNDING_RATE``, each interval null (infer
    it) or in (0, ``MAX_INTERVAL_HOURS``], each mark and index null or a
    price above 0 within ``MAX_PRICE_MOVE`` of the one before. ``name(row)``
    is the series ("binance BTCUSDT"). Repeated settlements are judged after
    snapping (``snap_settlements``). Returns the rows with ``row`` (1-based)."""
    frame = frame.with_columns(pl.int_range(1, pl.len() + 1).alias("row"))
    _check_keys(frame, file, keys)
    _check_times(frame, file, stamp_col, hourly=False)
    f = frame.with_columns((pl.col(stamp_col).cast(pl.Int64) * NS_PER_MS).alias("t_ns"))

    def at(r: dict) -> str:
        return f"at {fmt_stamp(r['t_ns'])} UTC (row {r['row']} of {file})"

    rate = pl.col("funding_rate").cast(pl.Float64)
    r = _first(f, pl.col("funding_rate").is_null())
    if r is not None:
        raise DataError(f"{name(r)} funding rate missing {at(r)}")
    r = _first(f, ~rate.is_finite())
    if r is not None:
        raise DataError(f"{name(r)} funding rate {_num(r['funding_rate'])} {at(r)} is not a finite number")
    r = _first(f, rate.abs() > MAX_ABS_FUNDING_RATE)
    if r is not None:
        raise DataError(f"{name(r)} funding rate {_num(float(r['funding_rate']))} {at(r)} is beyond "
                        f"+-{MAX_ABS_FUNDING_RATE:g} per settlement interval, more than any venue allows "
                        f"(Binance BTCUSDT caps at +-0.3% to +-3%): a bad row")
    if "interval_hours" in f.columns:
        iv = pl.col("interval_hours").cast(pl.Float64)
        r = _first(f, pl.col("interval_hours").is_not_null() & ~((iv > 0) & (iv <= MAX_INTERVAL_HOURS)))
        if r is not None:
            raise DataError(f"{name(r)} interval_hours {_num(r['interval_hours'])} {at(r)} is not a settlement "
                            f"interval: a number of hours above 0 and at most {MAX_INTERVAL_HOURS:g}")
    for col, what in (("mark_price", "mark price"), ("index_price", "index price")):
        if col not in f.columns:
            continue
        def unusable(r: dict[str, Any], why: str, col: str = col, what: str = what) -> str:
            return f"{name(r)} {what} {_num(r[col])} {at(r)} is not a usable price: {why}"

        def moved(r: dict[str, Any], b: Any, a: Any, what: str = what) -> str:
            return _move_text(f"{name(r)} {what}", r, r["_v"], b, a, f"in {file}")

        _check_positive(f, col, unusable)
        _check_moves(f, keys, col, moved)
    return f.drop("t_ns")


@attrs.frozen
class RawHistory:
    """What a layout holds for one spot/perp pair, before alignment."""

    spot: pl.DataFrame  # ts (close instant, ns), close, source
    perp: pl.DataFrame
    mark: pl.DataFrame | None  # ts, close, source: the venue's mark klines
    funding: pl.DataFrame  # row (1-based), stamp (ns), rate, interval (null: infer), mark (null: none), source
    label: str  # the funding series in messages: "binance BTCUSDT"
    funding_file: Path
    price_duplicates: int = 0  # identical repeated price rows, kept once


def _long_layout(data_dir: Path, spot: tuple[str, str], perp: tuple[str, str]) -> RawHistory:
    prices = read_table(data_dir / PRICES_FILE, {"venue": TEXT, "market": TEXT, "symbol": TEXT,
                                                 "open_time_ms": NUMERIC, "close": NUMERIC}, {"source": TEXT})
    prices, repeats = check_prices(prices, data_dir / PRICES_FILE, ["venue", "market", "symbol"], "open_time_ms",
                                   lambda r: (r["market"], f"{r['venue']} {r['market']} {r['symbol']}"))
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
    return RawHistory(s, p, mark if mark.height else None, f, label, file, repeats)


class NoFundingSeries(DataError):
    """The history holds no funding rows for the asked perp at all."""


def _long_funding(data_dir: Path, perp: tuple[str, str]) -> tuple[pl.DataFrame, str, Path]:
    pv, _, ps = venue_names(*perp)
    file = data_dir / FUNDING_FILE
    funding = read_table(file, {"venue": TEXT, "symbol": TEXT, "funding_time_ms": NUMERIC, "funding_rate": NUMERIC},
                         {"interval_hours": NUMERIC, "mark_price": NUMERIC, "index_price": NUMERIC, "source": TEXT})
    f = check_funding(funding, file, ["venue", "symbol"], "funding_time_ms",
                      lambda r: f"{r['venue']} {r['symbol']}").filter((pl.col("venue") == pv) & (pl.col("symbol") == ps))
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
    path = funding_path(store, *perp)
    if not path.is_file():
        raise NoFundingSeries(f"history file missing: {path}; fetch it with "
                              f"`fundarb data fetch --venue {perp[0]} --symbol {perp[1]} --store {store}`")
    raw = read_table(path, {"timestamp_ms": NUMERIC, "funding_rate": NUMERIC},
                     {"mark_price": NUMERIC, "interval_hours": NUMERIC, "index_price": NUMERIC})
    label = f"{perp[0]} {perp[1]}"
    checked = check_funding(raw.drop("source", strict=False), path, [], "timestamp_ms", lambda r: label)
    f = _funding_rows(checked, "timestamp_ms", f"{perp[0]} {perp[1]} funding via ccxt: {path}")
    return f, label, path


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
    repeats = 0

    def bars(kind: str, exchange: str, symbol: str, required: bool, what: str) -> pl.DataFrame | None:
        nonlocal repeats
        path = kline_path(store, kind, exchange, symbol, "1h")
        if not path.is_file():
            if not required:
                return None
            others = sorted(p.name for p in path.parent.glob("*.parquet")) if path.parent.is_dir() else []
            hint = f" (there: {', '.join(others)}; the backtest needs 1h bars)" if others else ""
            raise DataError(f"history file missing: {path}{hint}; fetch it with "
                            f"`fundarb data fetch --venue {exchange} --symbol {symbol} --timeframe 1h --store {store}`")
        frame = read_table(path, {"timestamp_ms": NUMERIC, "close": NUMERIC})
        frame, dropped = check_prices(frame.select("timestamp_ms", "close"), path, [], "timestamp_ms",
                                      lambda r: (what, f"{exchange} {symbol} {kind} 1h"))
        repeats += dropped
        return frame.select(((pl.col("timestamp_ms").cast(pl.Int64) + 3_600_000) * NS_PER_MS).alias("ts"),
                            pl.col("close").cast(pl.Float64),
                            pl.lit(f"{exchange} {symbol} {kind} 1h via ccxt: {path}").alias("source"))

    s = bars("ohlcv", *spot, required=True, what="spot")
    p = bars("ohlcv", *perp, required=True, what="perp")
    mark = bars("mark", *perp, required=False, what="mark")
    f, label, path = _store_funding(store, perp)
    assert s is not None and p is not None
    return RawHistory(s, p, mark, f, label, path, repeats)


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
            assert near is not None  # within an unbounded tolerance every stamp has an instant
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
    rate, two different marks or two different intervals is an error naming
    both rows."""
    ts, rate, mark = f["ts"].to_list(), f["rate"].to_list(), f["mark"].to_list()
    rows, stamps, interval = f["row"].to_list(), f["stamp"].to_list(), f["interval"].to_list()
    keep: list[int] = []
    dropped = 0
    for i in range(len(ts)):
        if keep and ts[keep[-1]] == ts[i]:
            j = keep[-1]
            same_mark = mark[i] is None or mark[j] is None or mark[i] == mark[j]
            same_interval = interval[i] is None or interval[j] is None or interval[i] == interval[j]
            if rate[i] != rate[j] or not same_mark or not same_interval:
                def say(k: int, same_interval: bool = same_interval) -> str:
                    m = "no mark" if mark[k] is None else f"mark {mark[k]:,.2f}"
                    iv = "" if same_interval else f", interval {interval[k]:g} h"
                    return f"row {rows[k]} ({fmt_stamp(stamps[k])}, rate {rate[k]:.8g}, {m}{iv})"
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


def store_settlements(store: Path, tolerance_s: float) -> pl.DataFrame:
    """Every funding series of a ``fundarb data fetch`` store as one long
    table (venue: the ccxt exchange id; symbol: the series' file name, as
    ``store_layout`` spells the unified symbol; funding_time_ms,
    funding_rate, interval_hours inferred from the stamps where the venue
    gave none), each checked and snapped as a backtest reads it."""
    out = []
    for path in sorted((store / "funding").glob("*/*.parquet")):
        venue, symbol = path.parent.name, path.stem
        raw = read_table(path, {"timestamp_ms": NUMERIC, "funding_rate": NUMERIC},
                         {"mark_price": NUMERIC, "interval_hours": NUMERIC, "index_price": NUMERIC})
        label = f"{venue} {symbol}"
        checked = check_funding(raw.drop("source", strict=False), path, [], "timestamp_ms", _named(label))
        f, _, _ = snap_settlements(_funding_rows(checked, "timestamp_ms", str(path)), label, path, tolerance_s)
        out.append(f.select(pl.lit(venue).alias("venue"), pl.lit(symbol).alias("symbol"),
                            (pl.col("ts") // NS_PER_MS).alias("funding_time_ms"), pl.col("rate").alias("funding_rate"),
                            pl.col("interval").alias("interval_hours")))
    if not out:
        raise DataError(f"{store}: no funding series in this store (fetch some with `fundarb data fetch --store {store}`)")
    return pl.concat(out)


def _named(label: str) -> Callable[[dict], str]:
    """A row-naming function for the checks' messages: every row is ``label``."""
    return lambda _row: label


def snap_table(funding: pl.DataFrame, file: Path, tolerance_s: float) -> pl.DataFrame:
    """A whole long funding table (every venue and symbol in it) with each
    series' stamps snapped to their instants and repeated rows kept once,
    by the same rules as a backtest's series: what the statistics read."""
    rows = check_funding(funding, file, ["venue", "symbol"], "funding_time_ms", lambda r: f"{r['venue']} {r['symbol']}")
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

BARS_8H_FILE = "prices_8h_multi_venue.parquet"
# Hours from a bar's open_time_ms to the instant its close was printed, per
# venue of BARS_8H_FILE. Measured against Binance's hourly closes
# (prices_1h.parquet): Binance's bars close at open + 8 h (their close is the
# hourly close of that instant on 1,640 of 1,641 bars); Bybit's and OKX's
# closes sit within a median 1.3 and 4.2 bp of Binance's hourly close at
# open + 4 h, against 31 bp and more at open + 8 h: their rows are labelled
# 4 h after their true opens (tests/data/test_bars_8h.py measures it again).
BAR_CLOSE_HOURS = {"binance": 8, "bybit": 4, "okx": 4}
BAR_8H_COLUMNS = {"venue": TEXT, "market": TEXT, "source_pair": TEXT, "open_time_ms": NUMERIC, "close": NUMERIC}


def read_bars_8h(data_dir: Path | None = None) -> pl.DataFrame:
    """The 8-hour bars of several venues' spot and perps (``BARS_8H_FILE``:
    venue, market, source_pair, open_time_ms, close), checked as the hourly
    prices are, and each market on the 8-hour grid (00/08/16 UTC) without a
    hole: one error naming the file, the market and the bar otherwise."""
    path = (data_dir or SHIPPED_DIR) / BARS_8H_FILE
    raw = read_table(path, BAR_8H_COLUMNS)
    keys = ["venue", "market", "source_pair"]
    bars, _ = check_prices(raw, path, keys, "open_time_ms",
                           lambda r: (r["market"], f"{r['venue']} {r['market']} {r['source_pair']}"), bar_hours=8)
    bars = bars.sort([*keys, "open_time_ms"])
    step = 8 * MS_PER_HOUR
    off = bars.filter(pl.col("open_time_ms") % step != 0)
    if off.height:
        r = off.row(0, named=True)
        raise DataError(f"{path}: {r['venue']} {r['market']} bar at {fmt_time(r['open_time_ms'] * NS_PER_MS)} UTC (row "
                        f"{r['row']}) does not open at 00, 08 or 16 UTC")
    gaps = bars.with_columns(pl.col("open_time_ms").diff().over(keys).alias("_gap")).filter(pl.col("_gap") > step)
    if gaps.height:
        r = gaps.row(0, named=True)
        raise DataError(f"{path}: {r['venue']} {r['market']} has no bar for the {int(r['_gap'] // step) - 1} 8-hour "
                        f"period(s) before {fmt_time(r['open_time_ms'] * NS_PER_MS)} UTC (row {r['row']})")
    return bars.drop("row")


def history_for(cfg: Config, data_dir: Path | None = None) -> MarketHistory:
    """The history a config's backtest runs on (its window, gap and stamp tolerances)."""
    from fundarb.config import PERP_PERP

    d = cfg.data
    if cfg.structure_kind == PERP_PERP:
        return load_pair_history((cfg.spot.exchange, cfg.spot.symbol), (cfg.perp.exchange, cfg.perp.symbol),
                                 d.start, d.end, data_dir, d.settlement_tolerance_seconds)
    return load_history((cfg.spot.exchange, cfg.spot.symbol), (cfg.perp.exchange, cfg.perp.symbol),
                        d.start, d.end, d.max_price_gap_hours, data_dir, d.settlement_tolerance_seconds)


def load_pair_history(long: tuple[str, str], short: tuple[str, str], start: str, end: str,
                      data_dir: Path | None = None, tolerance_s: float = 1.0) -> MarketHistory:
    """Two venues' linear perps for a perp/perp carry: their closes side by
    side at the instants both printed one (a venue's hourly closes where
    ``PRICES_FILE`` has them, else its 8-hour bars at their measured close
    instants, ``BAR_CLOSE_HOURS``), and each perp's settlements in the
    window, the long one's in the ``long_funding_*`` fields. A settlement
    between two bars settles at the last close before it."""
    lo, hi = parse_time(start, "start"), parse_time(end, "end")
    if lo >= hi:
        raise DataError(f"start {fmt_time(lo)} is not before end {fmt_time(hi)}")
    data_dir = data_dir or SHIPPED_DIR
    bars = read_bars_8h(data_dir)
    step = 8 * NS_PER_HOUR

    hourly = read_table(data_dir / PRICES_FILE, {"venue": TEXT, "market": TEXT, "open_time_ms": NUMERIC,
                                                 "close": NUMERIC}, {"source": TEXT})

    def closes(leg: tuple[str, str], name: str) -> pl.DataFrame:
        """The leg's closes at the instants they were printed: hourly ones where
        the hourly file has the market, else its 8-hour bars (``BAR_CLOSE_HOURS``)."""
        venue, market, _ = venue_names(*leg)
        one = hourly.filter((pl.col("venue") == venue) & (pl.col("market") == market) & pl.col("close").is_not_null())
        offset = 1
        if one.height == 0:
            one = bars.filter((pl.col("venue") == venue) & (pl.col("market") == market))
            offset = BAR_CLOSE_HOURS.get(venue, 0)
        if one.height == 0 or not offset:
            held = ", ".join(f"{a} {b}" for a, b in bars.select("venue", "market").unique().sort("venue", "market").iter_rows())
            raise DataError(f"no prices of {leg[0]} {leg[1]} (venue {venue}, market {market}) in {data_dir} whose "
                            f"close instants are known; the 8-hour bars hold {held}")
        return one.select((pl.col("open_time_ms").cast(pl.Int64) * NS_PER_MS + offset * NS_PER_HOUR).alias("ts"),
                          pl.col("close").alias(name), pl.col("source").alias(f"{name}_source"))

    joined = closes(long, "long").join(closes(short, "short"), on="ts").filter(
        (pl.col("ts") >= lo) & (pl.col("ts") < hi)).sort("ts")
    if joined.height < 2:
        raise DataError(f"no 8-hour bars of both {long[0]} and {short[0]} between {fmt_time(lo)} and {fmt_time(hi)} in "
                        f"{data_dir / BARS_8H_FILE} (it holds {fmt_time(cast(int, bars['open_time_ms'].min()) * NS_PER_MS)} "
                        f".. {fmt_time(cast(int, bars['open_time_ms'].max()) * NS_PER_MS + step)} UTC)")
    ts = joined["ts"].to_numpy()
    first, last = int(ts[0]), int(ts[-1])
    _check_beside_perp(ts, joined["long"].to_numpy(), joined["short"].to_numpy(), f"{long[0]} perp price",
                       f"in {data_dir / BARS_8H_FILE}")
    legs = {}
    for leg in (long, short):
        f = load_settlements(leg, tolerance_s, first + 1, last, data_dir)
        if f.height == 0:
            raise DataError(f"no {leg[0]} {leg[1]} funding settlements between {fmt_time(first)} and {fmt_time(last)}")
        legs[leg] = f
    f_short, f_long = legs[short], legs[long]
    sources = tuple(sorted(set(joined["long_source"].to_list()) | set(joined["short_source"].to_list())
                           | set(f_short["source"].to_list()) | set(f_long["source"].to_list())))
    return MarketHistory(
        hours=ts, spot=joined["long"].to_numpy(), perp=joined["short"].to_numpy(), carried=np.zeros(ts.size, dtype=bool),
        funding_ts=f_short["ts"].to_numpy(), funding_rate=f_short["rate"].to_numpy(),
        funding_interval=f_short["interval"].to_numpy(), funding_mark=np.full(f_short.height, np.nan),
        sources=sources, funding_gaps=tuple(schedule_gaps(f_short["ts"].to_list(), f_short["interval"].to_list())),
        long_funding_ts=f_long["ts"].to_numpy(), long_funding_rate=f_long["rate"].to_numpy(),
        long_funding_interval=f_long["interval"].to_numpy(), bar_hours=8)


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
    # a null close is a missing hour (the checks let only that through): a gap, carried below
    s = raw.spot.filter((pl.col("ts") >= lo) & (pl.col("ts") < hi) & pl.col("close").is_not_null()).sort("ts")
    p = raw.perp.filter((pl.col("ts") >= lo) & (pl.col("ts") < hi) & pl.col("close").is_not_null()).sort("ts")
    if s.height == 0 or p.height == 0:
        both = raw.spot.join(raw.perp, on="ts")["ts"]
        held = f" (it holds {fmt_time(cast(int, both.min()))} .. {fmt_time(cast(int, both.max()))} UTC: choose the window with --from/--to)" \
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
    # an hour without both prices carries both (the last hour that had them):
    # one leg moving while the other stands still would be a basis no venue showed
    either_missing = pl.col("spot").is_null() | pl.col("perp").is_null()
    carried = joined.select(either_missing).to_series().to_numpy()
    joined = joined.with_columns(pl.when(either_missing).then(None).otherwise(pl.col(c)).alias(c)
                                 for c in ("spot", "perp"))
    joined = joined.with_columns(pl.col("spot").forward_fill(), pl.col("perp").forward_fill())
    grid_ts, perp_close = joined["ts"].to_numpy(), joined["perp"].to_numpy()
    where = f"in {data_dir}"
    _check_beside_perp(grid_ts, joined["spot"].to_numpy(), perp_close, "spot price", where)
    hourly_mark, mark_sources = _hourly_mark(raw, joined, lo, hi)
    if hourly_mark is not None:
        _check_beside_perp(grid_ts, hourly_mark, perp_close, "mark price", where)

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
    at = np.minimum(np.searchsorted(grid_ts, fts), n_hours - 1)
    on_grid = grid_ts[at] == fts
    _check_beside_perp(fts[on_grid], marks[on_grid], perp_close[at[on_grid]], f"{raw.label} settlement mark",
                       f"in {raw.funding_file}")
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
        price_duplicates=raw.price_duplicates,
    )


def _check_beside_perp(ts: np.ndarray, values: np.ndarray, perp: np.ndarray, what: str, where: str) -> None:
    """A price of the perp's market (spot, mark) beyond ``MAX_PRICE_MOVE``
    times the perp's close of the same hour is not that market's price: the
    real basis stays within a few percent (shipped history: spot x0.997 ..
    x1.019 the USD-M perp, the COIN-M perp x0.969 .. x1.037). NaN values
    (none known) are skipped."""
    known = np.flatnonzero(~np.isnan(values))
    if known.size == 0:
        return
    ratio = values[known] / perp[known]
    bad = (ratio > MAX_PRICE_MOVE) | (ratio < 1 / MAX_PRICE_MOVE)
    if bad.any():
        i = int(known[int(np.argmax(bad))])
        raise DataError(f"{what} {_num(float(values[i]))} at {fmt_time(int(ts[i]))} UTC {where} is "
                        f"x{values[i] / perp[i]:.4g} the perp's close {_num(float(perp[i]))} of that hour: "
                        f"not a price of this market")


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
