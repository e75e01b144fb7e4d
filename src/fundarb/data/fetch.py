"""Fetch funding history and OHLCV through ccxt into a parquet store that
``fundarb backtest --data-dir`` reads as it is.

The store holds, per venue and ccxt symbol: funding settlements with the
venue's raw stamps (kept for provenance: the loader snaps them to the
schedule) and the venue's mark price where it returns one; OHLCV of the perp
and of its spot counterpart; the perp's mark-price klines and, where the
venue has them, its index-price klines.

Pages are fetched by advancing ``since`` past the last row (ccxt's own
``paginate`` stops at 10 calls and steps in fixed windows), with overlap and
de-duplication. Every page is merged into the store at once (written to a
temporary file, then renamed), so an interrupted fetch loses at most the page
in flight and the next run resumes after the last stored row. Network errors
(429/418, 5xx, timeouts, a refused connection) are retried with exponential
back-off and jitter (``fundarb.support.backoff``), honouring Retry-After
where the venue sends it, within a bound: at most ``Backoff.attempts`` (8)
attempts of one request and ``Backoff.budget_s`` (120 s) of waiting between
them; back-off alone waits 0.5, 1, 2, 4, 8, 8, 8 s (+ up to 25%), so an
unreachable venue fails after 8 attempts and 31.5-39.4 s. A wait longer
than 2 s is shown while it lasts (``Backoff.waits``, a
``fundarb.support.waits.WaitReporter``).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, cast

import attrs
import polars as pl

from fundarb.core.errors import FundarbError
from fundarb.data.store_layout import KLINE_LABEL, funding_path, kline_path
from fundarb.support.backoff import BackoffPolicy, parse_retry_after
from fundarb.support.parquet import ParquetUnreadable, read_parquet, write_sealed
from fundarb.venues import load_only, quirks_or_plain

FUNDING_SCHEMA = {"timestamp_ms": pl.Int64, "funding_rate": pl.Float64, "mark_price": pl.Float64}
OHLCV_SCHEMA = {"timestamp_ms": pl.Int64, "open": pl.Float64, "high": pl.Float64, "low": pl.Float64,
                "close": pl.Float64, "volume": pl.Float64}
STAMP_SLACK_MS = 1_000  # the default settlement tolerance: how late a stamp may be and still be its settlement
MAX_ABS_RATE = 0.03  # per settlement: far beyond any BTC perp's cap; larger is a data error
TIMEFRAME_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000, "4h": 14_400_000, "1d": 86_400_000}


class FetchError(FundarbError, RuntimeError):
    """A fetch that cannot go on; the message says where it stopped."""


@attrs.define
class Backoff:
    """Retries for network errors: ``base * 2**attempt`` seconds (at most
    ``cap``), or the venue's Retry-After if longer, plus up to ``jitter``
    (25%) more; at most ``attempts`` attempts of one request, and no more
    than ``budget_s`` seconds of waiting between them (a Retry-After that
    would go beyond it gives up at once). The arithmetic is
    ``fundarb.support.backoff.BackoffPolicy`` (``policy``); this holds the
    fetch's own bounds and what it waited. ``waits`` (a
    ``fundarb.support.waits.WaitReporter``) is told of each retry and of the
    end of each wait."""

    attempts: int = 8
    base: float = 0.5
    cap: float = 8.0
    budget_s: float = 120.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = attrs.field(factory=lambda: random.Random(0))
    waited: list[float] = attrs.field(factory=list)
    waits: Any = None
    jitter: float = 0.25

    @property
    def policy(self) -> BackoffPolicy:
        return BackoffPolicy(base=self.base, cap=self.cap, jitter=self.jitter, budget=self.budget_s, rng=self.rng)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        return self.policy.delay(attempt, retry_after)


def call_with_retry(exchange: Any, backoff: Backoff, what: str, fn: Callable[[], Any]) -> Any:
    import ccxt

    from fundarb.support.waits import error_reason

    waited = 0.0
    try:
        for attempt in range(1, backoff.attempts + 1):
            try:
                return fn()
            except ccxt.NetworkError as exc:  # 429/418, 5xx, timeouts, refused connections: worth another try
                why = _why(exc, error_reason(exc))
                if attempt == backoff.attempts:
                    raise FetchError(f"{what}: gave up after {_attempts(attempt)}: {why}") from None
                asked = parse_retry_after(getattr(exchange, "last_response_headers", None))
                policy = backoff.policy
                d = policy.delay(attempt - 1, asked)
                if policy.over_budget(waited, d):  # a long Retry-After: say so rather than wait it out
                    told = f"the venue asks to wait {asked:g} s (Retry-After), " if asked is not None else ""
                    raise FetchError(f"{what}: gave up after {_attempts(attempt)}: {told}beyond the {backoff.budget_s:g} s "
                                     f"one request may wait in all: {why}") from None
                if backoff.waits is not None:
                    backoff.waits.on_retry(what, attempt, d, exc, attempts=backoff.attempts)
                waited += d
                backoff.waited.append(d)
                backoff.sleep(d)
            except ccxt.BaseError as exc:
                raise FetchError(f"{what}: {type(exc).__name__}: {exc}") from None
    finally:
        if backoff.waits is not None:
            backoff.waits.done(what)
    raise AssertionError("unreachable")


def _attempts(n: int) -> str:
    return f"{n} attempt{'s' if n != 1 else ''}"


def _why(exc: Exception, reason: str) -> str:
    """The error's type and text, with the socket's reason when the text lacks one."""
    text = f"{type(exc).__name__}: {exc}"
    extra = reason.partition(": ")[2]
    return f"{text} ({extra})" if extra and extra not in text.lower() else text


# --- the store --------------------------------------------------------------

def read_store(path: Path, schema: dict) -> pl.DataFrame:
    if not path.is_file():
        return pl.DataFrame(schema=schema)
    try:
        return read_parquet(path)
    except ParquetUnreadable as exc:
        raise FetchError(f"store file {path} is not readable parquet ({exc}); move it aside to refetch") from None


def merge_into_store(path: Path, rows: pl.DataFrame) -> tuple[int, int]:
    """Merge a page into the stored series, de-duplicated by timestamp (the
    stored row wins), sorted; written atomically. Returns (new rows, duplicates)."""
    old = read_store(path, dict(rows.schema))
    # diagonal: a store written before a column existed gets it as null
    both = pl.concat([old, rows], how="diagonal_relaxed").select(rows.columns)
    merged = both.unique(subset="timestamp_ms", keep="first", maintain_order=True).sort("timestamp_ms")
    added = merged.height - old.height
    path.parent.mkdir(parents=True, exist_ok=True)
    write_sealed(merged, path)  # sealed: read back directly while its bytes are the ones written
    return added, rows.height - added


# --- paging -----------------------------------------------------------------

@attrs.define
class FetchReport:
    what: str
    path: Path
    pages: int = 0
    added: int = 0
    duplicates: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    resumed_from_ms: int | None = None
    checks: dict[str, Any] = attrs.field(factory=dict)


def _resume_from(path: Path, schema: dict, since_ms: int) -> tuple[int, int | None]:
    stored = read_store(path, schema)
    if stored.height == 0:
        return since_ms, None
    last = _last_ms(stored)
    first = _first_ms(stored)
    # the stored series already covers since..last (a first row stamped a few
    # ms after ``since`` still covers it: venues stamp settlements late)
    if first <= since_ms + 2 * STAMP_SLACK_MS and since_ms <= last + 1:
        return last + 1, last
    return since_ms, None


def page_through(
    exchange: Any, what: str, path: Path, schema: dict, since_ms: int, until_ms: int,
    fetch_page: Callable[[int, int], list], to_rows: Callable[[list], pl.DataFrame], limit: int, step_ms: int,
    backoff: Backoff, progress: Callable[[int], None] | None = None,
) -> FetchReport:
    """Fetch from ``since_ms`` (or after the stored series) to ``until_ms`` in
    windows of ``limit`` steps, so no window can hold more rows than a page:
    venues that answer newest-first (Bybit) then lose nothing. The next
    window starts after the last row received (a venue may cap pages below
    ``limit``), or after an empty window (a gap). Each page is merged into the
    store as it arrives."""
    from fundarb.data.history import fmt_time

    cursor, resumed = _resume_from(path, schema, since_ms)
    report = FetchReport(what, path, resumed_from_ms=resumed)
    window = limit * step_ms
    while cursor <= until_ms:
        end = min(cursor + window - 1, until_ms)
        page = call_with_retry(exchange, backoff, f"{what} from {fmt_time(cursor * 1_000_000)} UTC",
                               partial(fetch_page, cursor, end))
        rows = to_rows(page).filter((pl.col("timestamp_ms") >= cursor) & (pl.col("timestamp_ms") <= end))
        report.pages += 1
        if rows.height:
            added, dupes = merge_into_store(path, rows)
            report.added += added
            report.duplicates += dupes
        # after the last row (a venue may cap pages below ``limit``); past an empty window
        cursor = _last_ms(rows) + 1 if rows.height else end + 1
        if progress is not None:
            progress(cursor)
    stored = read_store(path, schema)
    if stored.height:
        report.first_ms, report.last_ms = _first_ms(stored), _last_ms(stored)
    return report


def _mark_of(row: dict) -> float | None:
    """The venue's mark at the settlement where its answer has one (Binance's
    ``markPrice``; older rows say "" or nothing), else None."""
    info = row.get("info") or {}
    text = info.get("markPrice") if isinstance(info, dict) else None
    try:
        mark = float(text) if text not in (None, "") else None
    except (TypeError, ValueError):
        raise FetchError(f"funding row at {row.get('timestamp')} has a mark price that is not a number: {text!r}") from None
    return mark if mark is not None and math.isfinite(mark) and mark > 0 else None


def funding_rows(page: list[dict]) -> pl.DataFrame:
    """ccxt funding-history entries -> rows with the venue's own stamps (not
    snapped: the loader does that) and its mark where it gives one; the
    interval is the spacing of the stored series, not guessed per page."""
    rows = [r for r in page if r.get("timestamp") is not None]
    for r in rows:
        rate = r.get("fundingRate")
        if rate is None or not math.isfinite(float(rate)):
            raise FetchError(f"funding page has no usable rate at {r['timestamp']} (response: {r.get('info')})")
    frame = pl.DataFrame({"timestamp_ms": [int(r["timestamp"]) for r in rows],
                          "funding_rate": [float(r["fundingRate"]) for r in rows],
                          "mark_price": [_mark_of(r) for r in rows]}, schema=FUNDING_SCHEMA)
    return frame.unique(subset="timestamp_ms", keep="first", maintain_order=True).sort("timestamp_ms")


def ohlcv_rows(page: list[list[Any]]) -> pl.DataFrame:
    cols: list[Any] = list(zip(*page)) if page else [[] for _ in range(6)]
    frame = pl.DataFrame({k: list(v) for k, v in zip(OHLCV_SCHEMA, cols)}, schema=OHLCV_SCHEMA)
    return frame.unique(subset="timestamp_ms", keep="first", maintain_order=True).sort("timestamp_ms")


# --- validation -------------------------------------------------------------

def check_funding(path: Path, tolerance_s: float = 1.0) -> dict[str, Any]:
    """What the stored series holds: span, nominal interval, gaps, duplicate
    settlements, out-of-range rates, stamps off the hour (``late_stamps``:
    within ``tolerance_s``, snapped at load; ``off_schedule``: further off,
    an error at load) and how many rows carry the venue's mark."""

    f = read_store(path, FUNDING_SCHEMA)
    out: dict[str, Any] = {"rows": f.height}
    if f.height < 2:
        return out
    tol = int(round(tolerance_s * 1000))
    stamps = f["timestamp_ms"].to_list()
    instants = [_instant_ms(t, tol) for t in stamps]
    snapped = pl.Series("instant", [t if t is not None else s for t, s in zip(instants, stamps)], dtype=pl.Int64)
    step = snapped.diff().drop_nulls()
    nominal = float(cast(float, step.median()))
    gaps = pl.DataFrame({"after": snapped.shift(1), "before": snapped, "step": snapped.diff()}).filter(pl.col("step") > 1.5 * nominal)
    out.update({
        "first_ms": _first_ms(f), "last_ms": _last_ms(f),
        "nominal_interval_hours": nominal / 3_600_000,
        "gaps": [[int(a), int(b)] for a, b in zip(gaps["after"], gaps["before"])],
        "duplicates": int(f.height - snapped.n_unique()),
        "out_of_range": f.filter(pl.col("funding_rate").abs() > MAX_ABS_RATE)["timestamp_ms"].to_list(),
        "late_stamps": sum(1 for t, s in zip(instants, stamps) if t is not None and t != s),
        "off_schedule": sum(1 for t in instants if t is None),
        "with_mark": int(f["mark_price"].is_not_null().sum()) if "mark_price" in f.columns else 0,
    })
    return out


def _instant_ms(stamp_ms: int, tolerance_ms: int) -> int | None:
    """The settlement instant (ms) of a raw stamp, by the loader's rule."""
    from fundarb.core.funding import scheduled_instant

    at = scheduled_instant(stamp_ms * 1_000_000, 1.0, tolerance_ms * 1_000_000)
    return None if at is None else at // 1_000_000


def check_ohlcv(path: Path, timeframe: str) -> dict[str, Any]:
    f = read_store(path, OHLCV_SCHEMA)
    out: dict[str, Any] = {"rows": f.height}
    if f.height < 2:
        return out
    step = TIMEFRAME_MS.get(timeframe)
    d = f.select(pl.col("timestamp_ms").shift(1).alias("after"), pl.col("timestamp_ms").alias("before"),
                 pl.col("timestamp_ms").diff().alias("step")).filter(pl.col("step") > (step or 0))
    bad = f.filter((pl.col("close") <= 0) | pl.col("close").is_nan() | (pl.col("high") < pl.col("low")))
    out.update({
        "first_ms": _first_ms(f), "last_ms": _last_ms(f),
        "gaps": [[int(a), int(b)] for a, b in zip(d["after"], d["before"])] if step else [],
        "bad_bars": bad["timestamp_ms"].to_list(),
    })
    return out


# --- one venue, end to end ----------------------------------------------------

def make_exchange(venue: str, api_url: str | None = None, rate_limit: bool = True) -> Any:
    """A ccxt client; ``api_url`` (scheme://host:port) replaces the scheme and
    host of every REST endpoint, keeping paths (how tests and a local
    emulator are reached)."""
    import ccxt

    if venue not in ccxt.exchanges:
        raise FetchError(f"unknown ccxt venue {venue!r} (e.g. binance, binanceusdm, bybit, okx, kraken)")
    ex = getattr(ccxt, venue)({"enableRateLimit": rate_limit})
    opts = ex.options
    opts["fetchCurrencies"] = False
    opts["fetchMargins"] = False
    types = quirks_or_plain(venue).market_types
    if types:  # a venue with a module: only the markets fundarb trades
        load_only(opts, types)
    if api_url:
        from fundarb.support.ccxt_urls import point_ccxt

        point_ccxt(ex, api_url)
    return ex


@attrs.frozen
class FetchPlan:
    venue: str
    symbol: str
    since_ms: int
    until_ms: int
    timeframe: str
    spot_venue: str | None
    spot_symbol: str | None


def fetch_all(plan: FetchPlan, store: Path, api_url: str | None = None, backoff: Backoff | None = None,
              rate_limit: bool = True, progress: Callable[[str, int], None] | None = None) -> list[FetchReport]:
    """Funding history (if the market is a perp) and OHLCV of the perp and of
    its spot counterpart, each into the store, each resumable."""
    backoff = backoff or Backoff()
    ex = make_exchange(plan.venue, api_url, rate_limit)
    markets = call_with_retry(ex, backoff, f"{plan.venue} markets", ex.load_markets)
    if plan.symbol not in markets:
        btc = sorted(s for s in markets if s.startswith("BTC/"))[:12]
        raise FetchError(f"{plan.venue} has no market {plan.symbol!r} (BTC markets: {', '.join(btc) or 'none'})")
    market = markets[plan.symbol]
    f_limit, o_limit = quirks_or_plain(plan.venue).page_limits
    reports = []

    def tick(what: str) -> Callable[[int], None] | None:
        return None if progress is None else (lambda ts: progress(what, ts))

    if market.get("swap") or market.get("future"):
        what = f"{plan.venue} {plan.symbol} funding"
        # stamps come a few ms late: a settlement at --until is stamped after it
        r = page_through(ex, what, funding_path(store, plan.venue, plan.symbol), FUNDING_SCHEMA,
                         plan.since_ms - STAMP_SLACK_MS, plan.until_ms + STAMP_SLACK_MS,
                         lambda c, e: ex.fetch_funding_rate_history(plan.symbol, since=c, limit=f_limit, params={"until": e}),
                         funding_rows, f_limit, 3_600_000, backoff, tick(what))
        r.checks = check_funding(r.path)
        reports.append(r)
    if plan.timeframe not in TIMEFRAME_MS:
        raise FetchError(f"--timeframe {plan.timeframe!r}: use one of {', '.join(TIMEFRAME_MS)}")
    # (client, venue, symbol, store kind, ccxt method): the perp's traded,
    # mark and index klines where the venue has them, then the spot's
    targets = [(ex, plan.venue, plan.symbol, "ohlcv", "fetch_ohlcv")]
    if market.get("swap") or market.get("future"):
        targets += [(ex, plan.venue, plan.symbol, kind, method)
                    for kind, method, has in (("mark", "fetch_mark_ohlcv", "fetchMarkOHLCV"),
                                              ("index", "fetch_index_ohlcv", "fetchIndexOHLCV")) if ex.has.get(has)]
    if plan.spot_venue and plan.spot_symbol:
        spot_ex = ex if plan.spot_venue == plan.venue else make_exchange(plan.spot_venue, api_url, rate_limit)
        spot_markets = call_with_retry(spot_ex, backoff, f"{plan.spot_venue} markets", spot_ex.load_markets)
        if plan.spot_symbol not in spot_markets:
            raise FetchError(f"{plan.spot_venue} has no market {plan.spot_symbol!r}")
        targets.append((spot_ex, plan.spot_venue, plan.spot_symbol, "ohlcv", "fetch_ohlcv"))
    # a bar's close is the price at its open + one bar: the bar that opens one
    # bar before ``since`` gives the price at ``since``
    bars_from = plan.since_ms - TIMEFRAME_MS[plan.timeframe]
    for client, venue, symbol, kind, method in targets:
        what = f"{venue} {symbol} {plan.timeframe} {KLINE_LABEL[kind]}"
        fetch = getattr(client, method)
        r = page_through(client, what, kline_path(store, kind, venue, symbol, plan.timeframe), OHLCV_SCHEMA,
                         bars_from, plan.until_ms,
                         partial(_kline_page, fetch, symbol, plan.timeframe, o_limit),
                         ohlcv_rows, o_limit, TIMEFRAME_MS[plan.timeframe], backoff, tick(what))
        r.checks = check_ohlcv(r.path, plan.timeframe)
        reports.append(r)
    return reports


def spot_counterpart(venue: str, symbol: str) -> tuple[str, str]:
    """binanceusdm BTC/USDT:USDT -> binance BTC/USDT; other venues keep their id."""
    return quirks_or_plain(venue).spot_id, symbol.split(":", 1)[0]


def _kline_page(fetch: Callable[..., Any], symbol: str, timeframe: str, limit: int, since: int, until: int) -> Any:
    """One page of klines from ``since`` to ``until`` (ms) through a ccxt fetch method."""
    return fetch(symbol, timeframe, since=since, limit=limit, params={"until": until})


def _first_ms(frame: pl.DataFrame) -> int:
    """The earliest ``timestamp_ms`` of a non-empty frame."""
    return int(cast(int, frame["timestamp_ms"].min()))


def _last_ms(frame: pl.DataFrame) -> int:
    """The latest ``timestamp_ms`` of a non-empty frame."""
    return int(cast(int, frame["timestamp_ms"].max()))
