"""A loopback exchange that answers the REAL REST shapes ccxt uses (market
data first), from the shipped REAL history, with programmable faults.

Point an unmodified ccxt client at it with :func:`point_ccxt` (it rewrites
scheme and host of every ``urls['api']`` entry and keeps each path; see
docs/design.md, "Venue and library behaviour the code relies on") and the live code paths (parsing,
error mapping, pagination, back-off) run against known data and known faults.

What is served, and where each number comes from:

- **Prices.** Binance hourly closes from ``prices_1h.parquet`` (spot BTCUSDT
  for spot markets, USD-M BTCUSDT for linear perps, COIN-M BTCUSD_PERP for
  inverse perps). The price "at now" is the last close whose close time
  (open + 1 h) is at or before now; hours missing from the shipped data are
  missing here too (the last close carries; the COIN-M series has such
  hours). Bybit is served the *Binance* closes as well: the shipped data has
  no Bybit prices, and a real price of the same contract on another venue
  beats an invented one. In particular Bybit's inverse BTCUSD is served
  Binance's COIN-M BTCUSD_PERP closes as its STAND-IN series: they are not
  Bybit's prices. Hyperliquid's BTC perp (USDC) is served the Binance USD-M
  closes the same way, as its STAND-IN price: they are not Hyperliquid's.
  Coinbase's BTC-USDT and Kraken's XBTUSDT spot (``emulator.coinbase``,
  ``emulator.kraken``) are served Binance's spot closes, as their STAND-IN
  series: they are not Coinbase's or Kraken's prices.
- **Funding.** The venue's own real settlements from
  ``funding_settlements.parquet``: binance BTCUSDT for Binance USD-M, binance
  BTCUSD_PERP for Binance COIN-M, bybit BTCUSDT for Bybit linear, bybit
  BTCUSD for Bybit inverse (those rows cover 2023-01 .. 2024-07 only: before
  that the inverse market has no funding). Hyperliquid (``emulator.hyperliquid``)
  has no rows of its own in the data: dYdX BTC-USD's real hourly settlements
  (2022-01 .. 2023-12) are served as its STAND-IN series, hourly as the venue
  settles, and none outside that window. The live "current rate" fields (Binance
  ``lastFundingRate``, Bybit ticker ``fundingRate``) are, on the real venues,
  the running estimate of the next settlement; the data holds no estimates,
  so the emulator serves the last settled real rate (no look-ahead).
- **Not in the data, so SYNTHETIC and labelled where built:** order book
  depth and sizes, best bid/ask (a fixed one-tick book straddling the real
  close), volumes/turnover/open interest/trade counts (zero), kline
  open/high/low (set to the close: only closes exist), update ids. Venue
  metadata (tick size, lot size, limits) is the venue's published contract
  spec, written down below, not market data. The margin tiers (Binance
  ``/fapi/v1/leverageBracket`` and ``/dapi/v2/leverageBracket``, Bybit
  ``/v5/market/risk-limit``, linear and inverse) are the shipped snapshot
  ``data/shipped/margin_tiers.json``, the same table its liquidation prices use.
- **Clock.** The emulator's now is set by the caller (``set_time``,
  ``advance``); it never follows the wall clock. Nothing after now exists:
  funding rows, klines and prices are cut at now.

- **Trading** (signed endpoints: balances, orders, trades, positions,
  leverage, transfers) runs on :class:`~fundarb.testkit.emulator.accounts.Accounts`
  (``server.accounts``; fund it with ``server.accounts.fund(wallet, asset,
  amount)``): fills at the real close plus the simulator's slippage model,
  maker/taker fees, isolated-style perp collateral, resting limits that fill
  when the clock moves the close across them; see that module for the money
  rules. Perp positions pay and receive funding at the venue's real
  settlements and are liquidated when the clock walks the real closes across
  the liquidation price (the simulator's rules; also in that module): Binance
  ``/fapi/v1/income`` (FUNDING_FEE, REALIZED_PNL, COMMISSION) and
  ``/fapi/v1/forceOrders`` (``autoclose-`` orders); Bybit ``/v5/execution/list``
  rows of execType Funding and BustTrade (ccxt's fetch_funding_history and
  fetch_my_liquidations ask it by execType); COIN-M ``/dapi/v1/income`` and
  ``/dapi/v1/forceOrders`` likewise, in BTC. Signed calls need the venue's key header and signature parameters;
  the HMAC is not verified; when ``server.accounts.api_keys`` is a set, other keys are
  refused (Binance -2015, Bybit 10003). Refusals answer the venue's own codes. Binance's
  user-data stream keys (``/api/v3/userDataStream``, ``/fapi/v1/listenKey``, ``/dapi/v1/listenKey``)
  need the API key header only; the streams are in ``emulator_ws``.

- **Coin-margined (inverse) perps.** Binance COIN-M under ``/dapi`` (ccxt
  ``binancecoinm``: BTCUSD_PERP, quantities in contracts of 100 USD; PnL,
  fees, funding and margin in BTC; cross margin on the COIN-M wallet's BTC;
  ``/dapi/v2/leverageBracket`` and the liquidation price from the shipped BTC
  bracket, ``binance_coinm`` rule; the wallet filled from spot by
  ``/sapi/v1/asset/transfer`` type MAIN_CMFUTURE) and Bybit v5
  ``category=inverse`` (BTCUSD, 1 USD a contract, margined by the UNIFIED
  account's BTC, ``bybit_inverse`` rule). See the COIN-M section below and
  ``accounts`` for the money rules.
- **Unified margin (Bybit).** The UNIFIED wallet reports spot BTC at its
  tiered collateral value (``/v5/account/wallet-balance`` account fields,
  ``/v5/spot-margin-trade/collateral``); see ``_bybit_wallet_row``.

Routing is a table per venue (``ROUTES``), keyed by (method, path); signed
routes are marked with :func:`signed`. Faults match a venue by its path
prefix (``VENUE_PREFIXES``: ``/dapi/`` is ``binancecoinm``); the placement
faults match ``ORDER_PLACEMENT`` (``POST /dapi/v1/order`` included; Bybit's
one ``/v5/order/create`` places spot, linear and inverse orders).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Self, cast

import numpy as np
import polars as pl
from aiohttp import web

from fundarb.core.liquidation import MarginRule
from fundarb.core.model import NS_PER_HOUR
from fundarb.data.history import (
    FUNDING_FILE,
    PRICES_FILE,
    SHIPPED_DIR,
    fmt_time,
    parse_time,
)
from fundarb.support.ccxt_urls import point_ccxt  # noqa: F401 (the emulator's usage)
from fundarb.testkit.emulator.accounts import (
    BUY,
    CANCELED,
    FILLED,
    INVERSE,
    INVERSE_FUNDING_KEY,
    LIMIT,
    MARKET,
    MARKETS,
    NEW,
    PARTIALLY_FILLED,
    SELL,
    AccountError,
    Accounts,
    FundingPayment,
    Order,
    Trade,
    Wallet,
)
from fundarb.venues import CCXT_OPTIONS, ccxt_config  # noqa: F401 (the emulator's usage)

NS_PER_MS = 1_000_000
MS_PER_HOUR = 3_600_000
LOOPBACK_HOST = "127.0.0.1"
DEFAULT_START = "2024-07-01T00:00"  # last hour both venues' funding and the prices cover

SPOT, PERP = "spot", "perp"
COINM_SYMBOL, COINM_PAIR, BYBIT_INVERSE_SYMBOL = "BTCUSD_PERP", "BTCUSD", "BTCUSD"
# emulator venue name -> path prefix it owns; ccxt ids, so a test names a venue as ccxt does
VENUE_PREFIXES = {"binance": "/api/", "binanceusdm": "/fapi/", "bybit": "/v5/", "binancecoinm": "/dapi/"}
# other path prefixes a venue owns: Binance's wallet API (transfers between spot and the futures wallets)
EXTRA_PREFIXES = {"/sapi/": "binance"}
FAULT_KINDS = ("rate_limit", "ip_ban", "server_error", "timeout", "non_json", "stale",
               "timeout_after_place", "partial_fill", "refuse")
# faults that act on order placement only: they match nothing but these requests
# (Bybit's one create path places spot, linear and inverse orders alike)
ORDER_PLACEMENT = {("POST", "/api/v3/order"), ("POST", "/fapi/v1/order"), ("POST", "/v5/order/create"),
                   ("POST", "/dapi/v1/order")}
PLACEMENT_FAULTS = ("timeout_after_place", "partial_fill")
# "refuse": the venue turns the order down (insufficient balance) before placing it
PLACEMENT_ONLY = (*PLACEMENT_FAULTS, "refuse")

# SYNTHETIC: size of every level of the made-up book (BTC). There is no depth in the data.
SYNTHETIC_LEVEL_QTY = "1.000"


# ----------------------------------------------------------------- the real data

@dataclass(frozen=True)
class PriceSeries:
    """Hourly closes of one market; ``close_ms`` = open time + 1 h."""

    open_ms: np.ndarray
    close_ms: np.ndarray
    close: np.ndarray

    def index_at(self, now_ms: int) -> int:
        """Index of the last close at or before now (-1: none yet)."""
        return int(np.searchsorted(self.close_ms, now_ms, side="right")) - 1

    def price_at(self, now_ms: int) -> float:
        i = self.index_at(now_ms)
        if i < 0:
            raise VenueError(503, "no price yet", f"no price at or before {now_ms} ms in the shipped data")
        return float(self.close[i])

    def between(self, after_ms: int, upto_ms: int) -> list[tuple[int, float]]:
        """(close_ms, close) of the hours that closed in (after, upto], ascending."""
        lo, hi = self.index_at(after_ms) + 1, self.index_at(upto_ms) + 1
        return list(zip(self.close_ms[lo:hi].tolist(), self.close[lo:hi].tolist()))


@dataclass(frozen=True)
class FundingSeries:
    venue: str
    symbol: str
    time_ms: np.ndarray  # the settlement instants
    rate: np.ndarray
    interval_h: np.ndarray
    stamp_ms: np.ndarray | None = None  # what the venue's funding history says (None: the instants)

    @property
    def stamps(self) -> np.ndarray:
        return self.time_ms if self.stamp_ms is None else self.stamp_ms

    def count_upto(self, now_ms: int) -> int:
        """Number of settlements at or before now (they exist; later ones do not yet)."""
        return int(np.searchsorted(self.time_ms, now_ms, side="right"))

    def between(self, after_ms: int, upto_ms: int) -> list[tuple[int, float]]:
        """(time_ms, rate) of the settlements in (after, upto], ascending."""
        lo, hi = self.count_upto(after_ms), self.count_upto(upto_ms)
        return list(zip(self.time_ms[lo:hi].tolist(), self.rate[lo:hi].tolist()))

    def next_time_after(self, now_ms: int) -> int:
        """The next settlement time after now: from the schedule in the data,
        or one interval past the last row when the data ends."""
        i = self.count_upto(now_ms)
        if i < self.time_ms.size:
            return int(self.time_ms[i])
        return int(self.time_ms[-1] + self.interval_h[-1] * MS_PER_HOUR)


@dataclass(frozen=True)
class MarketTape:
    """Everything the market-data endpoints read: real closes and real funding."""

    prices: Mapping[str, PriceSeries]  # SPOT, PERP, INVERSE (COIN-M BTCUSD_PERP)
    funding: Mapping[str, FundingSeries]  # emulator venue (bybit inverse: 'bybit:inverse') -> its own rows

    # the clock's range is the linear markets' (the COIN-M series has the same hours, some of them missing)
    @property
    def first_ns(self) -> int:
        return max(int(s.close_ms[0]) for k, s in self.prices.items() if k in (SPOT, PERP)) * NS_PER_MS

    @property
    def last_ns(self) -> int:
        return min(int(s.close_ms[-1]) for k, s in self.prices.items() if k in (SPOT, PERP)) * NS_PER_MS


def _price_series(prices: pl.DataFrame, market: str, symbol: str = "BTCUSDT") -> PriceSeries:
    rows = prices.filter(
        (pl.col("venue") == "binance") & (pl.col("market") == market) & (pl.col("symbol") == symbol)
        & pl.col("close").is_not_null()  # a null close is an hour missing from the data: missing here too
    ).sort("open_time_ms")
    if rows.height == 0:
        raise ValueError(f"no binance {market} {symbol} closes in {PRICES_FILE}")
    open_ms = rows["open_time_ms"].to_numpy().astype(np.int64)
    return PriceSeries(open_ms, open_ms + MS_PER_HOUR, rows["close"].to_numpy().astype(np.float64))


# Binance USD-M's /fapi/v1/fundingRate stamps each settlement 0-16 ms after
# its instant (measured on the venue's 2025-26 answers). The shipped history
# has the exact instants, so the emulator adds a SYNTHETIC lateness of that
# size, the same for the same instant on every run, to test what the venue sends.
BINANCE_FUNDING_LATE_MS = 16


def late_stamps(time_ms: np.ndarray, most_ms: int) -> np.ndarray:
    """Each instant plus 0..``most_ms`` ms, fixed per instant (a hash of it)."""
    return time_ms + (time_ms // MS_PER_HOUR * 2_654_435_761) % (most_ms + 1)


def _funding_series(funding: pl.DataFrame, venue: str, symbol: str, late_ms: int = 0) -> FundingSeries:
    rows = funding.filter((pl.col("venue") == venue) & (pl.col("symbol") == symbol)).sort("funding_time_ms")
    if rows.height == 0:
        raise ValueError(f"no {venue} {symbol} funding in {FUNDING_FILE}")
    time_ms = rows["funding_time_ms"].to_numpy().astype(np.int64)
    return FundingSeries(
        venue, symbol, time_ms,
        rows["funding_rate"].to_numpy().astype(np.float64),
        rows["interval_hours"].to_numpy().astype(np.float64),
        late_stamps(time_ms, late_ms) if late_ms else None,
    )


def _read_history(path: Path) -> pl.DataFrame:
    """A history file as the backtest reads it: a shipped one only if its
    checksum holds, any other through the bounded reader."""
    from fundarb.data import checksums
    from fundarb.support.parquet import read_parquet

    problem = checksums.shipped_problem(path)
    if problem is not None:
        raise ValueError(problem)
    return read_parquet(path, vouched=checksums.is_shipped(path))


@lru_cache(maxsize=4)
def load_tape(data_dir: Path = SHIPPED_DIR) -> MarketTape:
    """Read the shipped files once per process (the tape is immutable)."""
    prices, funding = (_read_history(data_dir / name) for name in (PRICES_FILE, FUNDING_FILE))
    return MarketTape(
        prices={SPOT: _price_series(prices, "spot"), PERP: _price_series(prices, "perp_linear"),
                INVERSE: _price_series(prices, "perp_inverse", COINM_SYMBOL)},
        funding={
            "binanceusdm": _funding_series(funding, "binance", "BTCUSDT", BINANCE_FUNDING_LATE_MS),
            "bybit": _funding_series(funding, "bybit", "BTCUSDT"),
            "binancecoinm": _funding_series(funding, "binance", COINM_SYMBOL, BINANCE_FUNDING_LATE_MS),
            INVERSE_FUNDING_KEY["bybit"]: _funding_series(funding, "bybit", BYBIT_INVERSE_SYMBOL),
            # STAND-IN: the data has no Hyperliquid history; dYdX v3 BTC-USD's real HOURLY
            # settlements (2022-01 .. 2023-12) stand in for it (emulator.hyperliquid says so)
            "hyperliquid": _funding_series(funding, "dydx", "BTC-USD"),
        },
    )


# ----------------------------------------------------------------- clock

class EmulatorClock:
    """The emulator's now in ns; moved only by the caller. Thread-safe: tests
    move it from their thread while the server reads it on its loop."""

    def __init__(self, start_ns: int, first_ns: int, last_ns: int) -> None:
        self._lock = threading.Lock()
        self._first, self._last = first_ns, last_ns
        self._now = self._checked(start_ns)
        # called with the new now (ns) after every move, outside the lock:
        # the accounts fill resting limit orders the new price reaches
        self.listeners: list[Callable[[int], Any]] = []

    def _moved(self, ns: int) -> None:
        for listener in list(self.listeners):
            listener(ns)

    def _checked(self, ns: int) -> int:
        if not self._first <= ns <= self._last:
            raise ValueError(
                f"emulator time {fmt_time(ns)} is outside the shipped prices "
                f"({fmt_time(self._first)} .. {fmt_time(self._last)} UTC)"
            )
        return int(ns)

    @property
    def now_ns(self) -> int:
        with self._lock:
            return self._now

    def set(self, ns: int) -> None:
        with self._lock:
            self._now = now = self._checked(ns)
        self._moved(now)

    def advance(self, ns: int) -> int:
        if ns < 0:
            raise ValueError(f"the emulator clock only moves forward (asked {ns} ns)")
        with self._lock:
            self._now = now = self._checked(self._now + ns)
        self._moved(now)
        return now


# ----------------------------------------------------------------- faults

@dataclass
class Fault:
    """One programmed fault. ``path`` is a prefix ('' = every path), ``venue``
    an emulator venue name or None (any). ``times``: how many requests it hits
    before it clears (None: until removed). ``probability``: chance it hits a
    matching request, drawn from the plan's seeded generator."""

    kind: str
    venue: str | None = None
    path: str = ""
    times: int | None = 1
    probability: float = 1.0
    status: int | None = None  # override the kind's HTTP status
    retry_after_s: int = 1  # rate_limit / ip_ban: the Retry-After header
    delay_s: float = 2.0  # timeout: how long the handler sleeps before answering
    body: str | None = None  # non_json / server_error: override the body text
    as_of_ns: int | None = None  # stale: the data time answered (default: now when added)
    fill_ratio: float = 0.5  # partial_fill: share of the quantity that fills (the rest expires / rests)
    hits: int = 0

    def matches(self, venue: str, path: str, method: str = "GET") -> bool:
        if self.kind in PLACEMENT_ONLY and (method, path) not in ORDER_PLACEMENT:
            return False
        return (self.venue is None or self.venue == venue) and path.startswith(self.path)


class FaultRegistry:
    """Programmed faults, matched in the order they were added. A fault with a
    probability below 1 draws from the registry's seeded generator (certain
    faults use no randomness); a spent fault clears itself."""

    def __init__(self, rng: Any) -> None:
        self._lock = threading.Lock()
        self._faults: list[Any] = []
        self._rng = rng  # anything with .random() -> [0, 1)

    @staticmethod
    def check(venue: str | None, times: int | None, probability: float) -> None:
        if venue is not None and venue not in VENUE_PREFIXES:
            raise ValueError(f"unknown venue {venue!r} (known: {', '.join(VENUE_PREFIXES)})")
        if not 0.0 < probability <= 1.0:
            raise ValueError(f"fault probability must be in (0, 1], got {probability}")
        if times is not None and times < 1:
            raise ValueError(f"fault times must be >= 1 or None, got {times}")

    def register(self, fault: Any) -> Any:
        with self._lock:
            self._faults.append(fault)
        return fault

    def remove(self, fault: Any) -> None:
        with self._lock:
            if fault in self._faults:
                self._faults.remove(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending(self) -> list[Any]:
        with self._lock:
            return list(self._faults)

    def take(self, *request: Any) -> Any | None:
        """The first fault matching ``request`` that fires."""
        with self._lock:
            for fault in self._faults:
                if not fault.matches(*request):
                    continue
                if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                    continue
                fault.hits += 1
                if fault.times is not None and fault.hits >= fault.times:
                    self._faults.remove(fault)
                return fault
        return None


class FaultPlan(FaultRegistry):
    """Faults of the REST server; it asks ``take(venue, path, method)`` once per request."""

    def __init__(self, clock: EmulatorClock, seed: int = 0) -> None:
        super().__init__(np.random.default_rng(seed))
        self._clock = clock

    def add(self, kind: str, *, venue: str | None = None, path: str = "", times: int | None = 1,
            probability: float = 1.0, **settings: Any) -> Fault:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r} (known: {', '.join(FAULT_KINDS)})")
        self.check(venue, times, probability)
        if kind == "partial_fill" and not 0.0 < settings.get("fill_ratio", 0.5) < 1.0:
            raise ValueError(f"partial_fill fill_ratio must be in (0, 1), got {settings['fill_ratio']}")
        fault = Fault(kind, venue, path, times, probability, **settings)
        if kind == "stale" and fault.as_of_ns is None:
            fault.as_of_ns = self._clock.now_ns
        return self.register(fault)


# ----------------------------------------------------------------- request log

@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    query: dict[str, str]
    venue: str | None
    status: int | None  # None: the client was left waiting (timeout fault)
    fault: str | None
    now_ns: int


class RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[LoggedRequest] = []

    def append(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._entries.append(entry)

    @property
    def entries(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._entries)

    def paths(self, venue: str | None = None) -> list[str]:
        return [e.path for e in self.entries if venue is None or e.venue == venue]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


# ----------------------------------------------------------------- request context and errors

class VenueError(Exception):
    """A refusal the venue answers in its own error shape. ``code``: the venue
    code (Binance negative int, Bybit retCode); ``status``: HTTP status (Bybit
    answers parameter errors with HTTP 200, as the real one does)."""

    def __init__(self, status: int, code: int | str, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


@dataclass(frozen=True)
class Ask:
    """One request as a handler sees it. ``now_ms`` is the data clock (older
    under a stale fault); ``server_ms`` is the emulator's real now."""

    tape: MarketTape
    params: Mapping[str, str]
    now_ms: int
    server_ms: int
    path: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)  # case-insensitive (aiohttp's)
    accounts: Accounts | None = None
    fault: Fault | None = None  # a placement fault for this request (partial_fill)


Handler = Callable[[Ask], Any]


def _dec(x: float | str | Decimal, places: int) -> str:
    """Fixed-point text as venues print prices ("61837.63000000"); no exponent."""
    return f"{Decimal(str(x)):.{places}f}"


def _rate(x: float, min_places: int = 0) -> str:
    """A funding rate as text that reads back to the same float (repr is the
    shortest round-trip), padded to the venue's usual decimals."""
    text = format(Decimal(repr(float(x))), "f")
    places = len(text.split(".")[1]) if "." in text else 0
    return _dec(text, max(places, min_places))


def _book_top(price: float, tick: str) -> tuple[Decimal, Decimal]:
    """SYNTHETIC best bid/ask around the real close: the ticks just below and
    above it (two ticks apart when the close sits on a tick), so bid < close < ask."""
    t = Decimal(tick)
    p = Decimal(str(price))
    bid = (p / t).to_integral_value(ROUND_CEILING) * t - t
    ask = (p / t).to_integral_value(ROUND_FLOOR) * t + t
    return bid, ask


def _book(price: float, tick: str, depth: int, places: int, qty: str = SYNTHETIC_LEVEL_QTY) -> tuple[list, list]:
    """SYNTHETIC depth: ``depth`` levels each side one tick apart from the
    synthetic top, each ``qty`` (an inverse book's sizes are contracts). Only the centre is real."""
    bid, ask = _book_top(price, tick)
    t = Decimal(tick)
    bids = [[_dec(bid - i * t, places), qty] for i in range(depth)]
    asks = [[_dec(ask + i * t, places), qty] for i in range(depth)]
    return bids, asks


def _window_24h(series: PriceSeries, now_ms: int) -> dict[str, float]:
    """Last, open (price 24 h ago), high and low over the closes of the last
    24 h. Real closes only: a real high/low would be wider than the hourly closes."""
    i = series.index_at(now_ms)
    j = series.index_at(now_ms - 24 * MS_PER_HOUR)
    last = float(series.close[i])
    first = float(series.close[max(j, 0)])
    window = series.close[max(j, 0): i + 1]
    return {"last": last, "open": first, "high": float(window.max()), "low": float(window.min())}


# ----------------------------------------------------------------- parameter parsing

def _binance_int(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 20:
        raise VenueError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
    return int(raw)


def _bybit_int(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise VenueError(200, 10001, f"params error: {name} invalid")
    return int(raw)


def _limit(value: int | None, default: int, most: int) -> int:
    # Over-long limits are cut to the venue's maximum (the emulator's reading of
    # "max N"); a limit below 1 is treated as 1.
    return default if value is None else max(1, min(value, most))


def _rows_window(times: np.ndarray, upto: int, start: int | None, end: int | None, limit: int,
                 anchor_start: bool) -> np.ndarray:
    """Indices of rows [0, upto) with start <= t <= end, cut to ``limit`` from
    the start (anchor_start) or from the end."""
    lo = 0 if start is None else int(np.searchsorted(times[:upto], start, side="left"))
    hi = upto if end is None else min(upto, int(np.searchsorted(times[:upto], end, side="right")))
    idx = np.arange(lo, max(lo, hi))
    return idx[:limit] if anchor_start else idx[-limit:]


# ----------------------------------------------------------------- Binance (spot /api/v3, USD-M /fapi/v1)

SYMBOL = "BTCUSDT"
BINANCE_SPOT_TICK, BINANCE_PERP_TICK = "0.01", "0.10"

# Venue metadata: Binance's published BTCUSDT contract specs (not market data).
_BINANCE_SPOT_SYMBOL = {
    "symbol": SYMBOL, "status": "TRADING", "baseAsset": "BTC", "baseAssetPrecision": 8,
    "quoteAsset": "USDT", "quotePrecision": 8, "quoteAssetPrecision": 8,
    "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
    "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
    "icebergAllowed": True, "ocoAllowed": True, "quoteOrderQtyMarketAllowed": True,
    "allowTrailingStop": True, "cancelReplaceAllowed": True,
    "isSpotTradingAllowed": True, "isMarginTradingAllowed": True,
    "filters": [
        {"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000", "tickSize": "0.01000000"},
        {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000", "stepSize": "0.00001000"},
        {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": "100.00000000", "stepSize": "0.00000000"},
        {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
         "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
        {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
    ],
    "permissions": [], "permissionSets": [["SPOT", "MARGIN"]],
    "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
    "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
}
_BINANCE_PERP_SYMBOL = {
    "symbol": SYMBOL, "pair": SYMBOL, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
    "onboardDate": 1569398400000, "status": "TRADING", "maintMarginPercent": "2.5000",
    "requiredMarginPercent": "5.0000", "baseAsset": "BTC", "quoteAsset": "USDT", "marginAsset": "USDT",
    "pricePrecision": 2, "quantityPrecision": 3, "baseAssetPrecision": 8, "quotePrecision": 8,
    "underlyingType": "COIN", "underlyingSubType": ["PoW"], "settlePlan": 0, "triggerProtect": "0.0500",
    "liquidationFee": "0.012500", "marketTakeBound": "0.05", "maxMoveOrderLimit": 10000,
    "filters": [
        {"filterType": "PRICE_FILTER", "minPrice": "556.80", "maxPrice": "4529764", "tickSize": "0.10"},
        {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"},
        {"filterType": "MARKET_LOT_SIZE", "minQty": "0.001", "maxQty": "120", "stepSize": "0.001"},
        {"filterType": "MAX_NUM_ORDERS", "limit": 200},
        {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
        {"filterType": "MIN_NOTIONAL", "notional": "100"},
        {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500", "multiplierDecimal": "4"},
    ],
    "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
    "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
}
_BINANCE_RATE_LIMITS = [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
    {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
]


@dataclass(frozen=True)
class FuturesVenue:
    """What tells Binance's two futures venues apart where their routes share
    one rule: USD-M (``/fapi``, the linear BTCUSDT, margined in USDT, isolated)
    and COIN-M (``/dapi``, the inverse BTCUSD_PERP in contracts of 100 USD,
    margined in BTC, cross). ``venue`` is also its wallet and the key of its
    funding series; the row functions render its own order, trade and wallet
    rows (they differ in fields and units, not in when they are answered)."""

    venue: str  # ccxt id, wallet and funding key: binanceusdm / binancecoinm
    kind: str  # the account model's market and the price series served: PERP / INVERSE
    symbol: str
    asset: str  # the margin asset its PnL, fees and funding are paid in
    prefix: str  # the path prefix its routes live under
    pair: str  # the pair COIN-M's rows name ('': USD-M's rows name none)
    account_path: str  # its account endpoint (USD-M's is v3, COIN-M's v1)
    order_row: Callable[..., dict]  # (order, ack=False) -> the venue's order row
    trade_row: Callable[[Trade], dict]
    balances: Callable[[Ask], list[dict]]  # the wallet's asset rows, the margin asset first


def _binance_symbol(ask: Ask, required: bool) -> bool:
    """True when a symbol was given (it must be BTCUSDT); False when omitted and allowed."""
    symbol = ask.params.get("symbol")
    if symbol is None:
        if required:
            raise VenueError(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        return False
    if symbol != SYMBOL:
        raise VenueError(400, -1121, "Invalid symbol.")
    return True


def _one_or_all(ask: Ask, row: dict) -> dict | list:
    # Binance answers an object for one symbol and a list when no symbol is given
    return row if _binance_symbol(ask, required=False) else [row]


def _binance_ping(ask: Ask) -> dict:
    return {}


def _binance_time(ask: Ask) -> dict:
    return {"serverTime": ask.server_ms}


def _binance_spot_info(ask: Ask) -> dict:
    if "symbol" in ask.params:
        _binance_symbol(ask, required=True)
    return {"timezone": "UTC", "serverTime": ask.server_ms, "rateLimits": _BINANCE_RATE_LIMITS,
            "exchangeFilters": [], "symbols": [_BINANCE_SPOT_SYMBOL]}


def _binance_perp_info(ask: Ask) -> dict:
    return {"timezone": "UTC", "serverTime": ask.server_ms, "futuresType": "U_MARGINED",
            "rateLimits": _BINANCE_RATE_LIMITS, "exchangeFilters": [],
            "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
            "symbols": [_BINANCE_PERP_SYMBOL]}


def _binance_24hr(ask: Ask, market: str) -> dict | list:
    series = ask.tape.prices[market]
    w = _window_24h(series, ask.now_ms)
    places = 8 if market == SPOT else 2
    change = w["last"] - w["open"]
    row = {
        "symbol": SYMBOL,
        "priceChange": _dec(round(change, 8), places),
        "priceChangePercent": _dec(round(100 * change / w["open"], 3), 3),
        "weightedAvgPrice": _dec(0, places),  # SYNTHETIC: no volume in the data, so no VWAP (Binance prints 0 at zero volume)
        "lastPrice": _dec(w["last"], places),
        "lastQty": _dec(0, places),  # SYNTHETIC: no trades in the data
        "openPrice": _dec(w["open"], places),
        "highPrice": _dec(w["high"], places),
        "lowPrice": _dec(w["low"], places),
        "volume": _dec(0, places), "quoteVolume": _dec(0, places),  # SYNTHETIC: no volume in the data
        "openTime": ask.now_ms - 24 * MS_PER_HOUR, "closeTime": ask.now_ms,
        "firstId": -1, "lastId": -1, "count": 0,  # SYNTHETIC: Binance's "no trades" values
    }
    if market == SPOT:
        bid, ask_px = _book_top(w["last"], BINANCE_SPOT_TICK)
        row.update({
            "prevClosePrice": _dec(w["open"], places),
            "bidPrice": _dec(bid, places), "bidQty": _dec(SYNTHETIC_LEVEL_QTY, places),
            "askPrice": _dec(ask_px, places), "askQty": _dec(SYNTHETIC_LEVEL_QTY, places),
        })
        row = {k: row[k] for k in (  # Binance's field order, for byte-faithful captures
            "symbol", "priceChange", "priceChangePercent", "weightedAvgPrice", "prevClosePrice", "lastPrice",
            "lastQty", "bidPrice", "bidQty", "askPrice", "askQty", "openPrice", "highPrice", "lowPrice",
            "volume", "quoteVolume", "openTime", "closeTime", "firstId", "lastId", "count")}
    return _one_or_all(ask, row)


def _binance_book_ticker(ask: Ask, market: str) -> dict | list:
    price = ask.tape.prices[market].price_at(ask.now_ms)
    tick, places = (BINANCE_SPOT_TICK, 8) if market == SPOT else (BINANCE_PERP_TICK, 2)
    bid, ask_px = _book_top(price, tick)
    row: dict[str, Any] = {"symbol": SYMBOL, "bidPrice": _dec(bid, places), "bidQty": SYNTHETIC_LEVEL_QTY,
                           "askPrice": _dec(ask_px, places), "askQty": SYNTHETIC_LEVEL_QTY}
    if market == PERP:
        row.update({"time": ask.now_ms, "lastUpdateId": ask.now_ms})  # SYNTHETIC update id: the data time in ms
    return _one_or_all(ask, row)


def _binance_price(ask: Ask, market: str) -> dict | list:
    price = ask.tape.prices[market].price_at(ask.now_ms)
    row: dict[str, Any] = {"symbol": SYMBOL, "price": _dec(price, 8 if market == SPOT else 2)}
    if market == PERP:
        row["time"] = ask.now_ms
    return _one_or_all(ask, row)


def _binance_depth(ask: Ask, market: str) -> dict:
    _binance_symbol(ask, required=True)
    most = 5000 if market == SPOT else 1000
    depth = _limit(_binance_int(ask.params, "limit"), 100, most)
    price = ask.tape.prices[market].price_at(ask.now_ms)
    tick, places = (BINANCE_SPOT_TICK, 8) if market == SPOT else (BINANCE_PERP_TICK, 2)
    bids, asks = _book(price, tick, depth, places)
    if market == SPOT:
        return {"lastUpdateId": ask.now_ms, "bids": bids, "asks": asks}  # SYNTHETIC update id
    return {"lastUpdateId": ask.now_ms, "E": ask.now_ms, "T": ask.now_ms, "bids": bids, "asks": asks}


def _binance_klines(ask: Ask, market: str, price: str = "last") -> list:
    """Binance klines: open times in [startTime, endTime]; with startTime the
    first ``limit`` from it, else the last ``limit`` up to endTime/now; ascending.
    Only complete hours exist (the close time is at or before now): the data
    has closes, not the running hour. open = high = low = close (only closes exist).
    ``price`` "mark" (/fapi/v1/markPriceKlines) serves the perp closes and
    "index" (/fapi/v1/indexPriceKlines, asked by ``pair``) the spot closes:
    the shipped data has no mark or index series, so the same stand-ins as
    premiumIndex."""
    if price == "index":
        if ask.params.get("pair") != SYMBOL:
            raise VenueError(400, -1121, "Invalid symbol.")
    else:
        _binance_symbol(ask, required=True)
    places = 8 if market == SPOT else 2
    return _binance_kline_rows(ask, ask.tape.prices[SPOT if price == "index" else market],
                               1000 if market == SPOT else 1500, places, _dec(0, places))


def _binance_kline_rows(ask: Ask, series: PriceSeries, most: int, places: int, zero: str) -> list:
    """The klines of ``series`` a Binance klines request asks (spot, USD-M and
    COIN-M alike, the symbol checked): 1h only; limit default 500, max
    ``most``; open times in [startTime, endTime], with startTime the first
    ``limit`` from it, else the last ``limit`` up to endTime/now; complete hours
    only; open = high = low = close printed to ``places``; ``zero`` for the
    volumes (SYNTHETIC: volumes and trade counts are not in the data)."""
    if ask.params.get("interval") != "1h":
        raise VenueError(400, -1120, "Invalid interval.")  # only 1h closes are shipped
    limit = _limit(_binance_int(ask.params, "limit"), 500, most)
    start, end = _binance_int(ask.params, "startTime"), _binance_int(ask.params, "endTime")
    upto = series.index_at(ask.now_ms) + 1
    idx = _rows_window(series.open_ms, upto, start, end, limit, anchor_start=start is not None)
    out = []
    for i in idx:
        o, c = int(series.open_ms[i]), _dec(series.close[i], places)
        out.append([o, c, c, c, c, zero, o + MS_PER_HOUR - 1, zero, 0, zero, zero, "0"])
    return out


def _binance_premium_row(ask: Ask, fv: FuturesVenue) -> dict:
    """A futures venue's premiumIndex row (and its markPrice stream's numbers)."""
    funding = ask.tape.funding[fv.venue]
    n = funding.count_upto(ask.now_ms)
    mark = ask.tape.prices[fv.kind].price_at(ask.now_ms)
    index = ask.tape.prices[SPOT].price_at(ask.now_ms)
    return {
        "symbol": fv.symbol, **({"pair": fv.pair} if fv.pair else {}),
        # the contract's close stands in for the mark: the data has no mark price
        "markPrice": _dec(mark, 8),
        # Binance spot BTCUSDT close stands in for the index (the real index is a multi-venue spot composite)
        "indexPrice": _dec(index, 8),
        "estimatedSettlePrice": _dec(index, 8),
        # last SETTLED real rate; the live field is Binance's estimate of the next one (not in the data)
        "lastFundingRate": _rate(funding.rate[n - 1], 8) if n else "",
        "interestRate": "0.00010000",  # Binance's published fixed interest rate per 8 h
        "nextFundingTime": funding.next_time_after(ask.now_ms),
        "time": ask.now_ms,
    }


def _binance_premium_index(ask: Ask) -> dict | list:
    return _one_or_all(ask, _binance_premium_row(ask, USDM))


def _binance_funding_history(ask: Ask, fv: FuturesVenue, symbol_required: bool) -> list:
    """/fapi/v1/fundingRate and /dapi/v1/fundingRate (there the symbol is
    required): default limit 100, max 1000; with startTime the first ``limit``
    rows from it, otherwise the most recent ``limit`` up to endTime; ascending
    by fundingTime; bounds inclusive."""
    _symbol_check(fv.venue)(ask, symbol_required)
    funding = ask.tape.funding[fv.venue]
    limit = _limit(_binance_int(ask.params, "limit"), 100, 1000)
    start, end = _binance_int(ask.params, "startTime"), _binance_int(ask.params, "endTime")
    upto = funding.count_upto(ask.now_ms)
    idx = _rows_window(funding.stamps, upto, start, end, limit, anchor_start=start is not None)
    # fundingTime: the venue's late stamp; markPrice: the contract's close at
    # the instant stands in for the venue's mark (the shipped rows carry none)
    closes = ask.tape.prices[fv.kind]

    def mark(at_ms: int) -> str:  # "" where the data has no close yet, as Binance prints where it has no mark
        return _dec(closes.price_at(at_ms), 8) if closes.index_at(at_ms) >= 0 else ""

    return [{"symbol": fv.symbol, "fundingTime": int(funding.stamps[i]), "fundingRate": _rate(funding.rate[i], 8),
             "markPrice": mark(int(funding.time_ms[i]))} for i in idx]


# ----------------------------------------------------------------- Bybit v5

BYBIT_SPOT_TICK, BYBIT_PERP_TICK = "0.01", "0.10"

# Venue metadata: Bybit's published BTCUSDT specs (not market data).
_BYBIT_SPOT_INSTRUMENT = {
    "symbol": SYMBOL, "baseCoin": "BTC", "quoteCoin": "USDT", "innovation": "0", "status": "Trading",
    "marginTrading": "utaOnly", "stTag": "0",
    "lotSizeFilter": {"basePrecision": "0.000001", "quotePrecision": "0.00000001", "minOrderQty": "0.000048",
                      "maxOrderQty": "71.73956243", "minOrderAmt": "1", "maxOrderAmt": "2000000"},
    "priceFilter": {"tickSize": "0.01"},
    "riskParameters": {"limitParameter": "0.03", "marketParameter": "0.03"},
}


def _bybit_linear_instrument(funding: FundingSeries) -> dict:
    return {
        "symbol": SYMBOL, "contractType": "LinearPerpetual", "status": "Trading", "baseCoin": "BTC",
        "quoteCoin": "USDT", "launchTime": "1584230400000", "deliveryTime": "0", "deliveryFeeRate": "",
        "priceScale": "2",
        "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
        "priceFilter": {"minPrice": "0.10", "maxPrice": "1999999.80", "tickSize": "0.10"},
        "lotSizeFilter": {"maxOrderQty": "1190.000", "minOrderQty": "0.001", "qtyStep": "0.001",
                          "postOnlyMaxOrderQty": "1190.000", "maxMktOrderQty": "119.000",
                          "minNotionalValue": "5"},
        "unifiedMarginTrade": True,
        # the interval of the data's last settlement, in minutes as Bybit prints it
        "fundingInterval": int(funding.interval_h[-1] * 60),
        "settleCoin": "USDT", "copyTrading": "both", "upperFundingRate": "0.005",
        "lowerFundingRate": "-0.005", "isPreListing": False, "preListingInfo": None,
    }


BYBIT_INVERSE_TICK = "0.50"


def _bybit_inverse_instrument(funding: FundingSeries) -> dict:
    """Venue metadata: Bybit's published BTCUSD inverse perpetual spec (1 USD a
    contract, settled in BTC). Its prices here are NOT Bybit's: the shipped
    data has no Bybit inverse prices, so the inverse market (tickers,
    orderbook, klines, fills, marks) is served Binance's COIN-M BTCUSD_PERP
    hourly closes as the stand-in series; its funding is Bybit's own BTCUSD
    settlements (2023-01 .. 2024-07 only)."""
    return {
        "symbol": BYBIT_INVERSE_SYMBOL, "contractType": "InversePerpetual", "status": "Trading", "baseCoin": "BTC",
        "quoteCoin": "USD", "launchTime": "1542211200000", "deliveryTime": "0", "deliveryFeeRate": "",
        "priceScale": "2",
        "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
        "priceFilter": {"minPrice": "0.50", "maxPrice": "1999999.00", "tickSize": BYBIT_INVERSE_TICK},
        "lotSizeFilter": {"maxOrderQty": "1000000", "minOrderQty": "1", "qtyStep": "1",
                          "postOnlyMaxOrderQty": "1000000", "maxMktOrderQty": "200000", "minNotionalValue": "0"},
        "unifiedMarginTrade": True, "fundingInterval": int(funding.interval_h[-1] * 60), "settleCoin": "BTC",
        "copyTrading": "none", "upperFundingRate": "0.00375", "lowerFundingRate": "-0.00375",
        "isPreListing": False, "preListingInfo": None,
    }


def _bybit_category(ask: Ask, allowed: tuple[str, ...]) -> str:
    category = ask.params.get("category")
    if category not in allowed:
        raise VenueError(200, 10001, "params error: Category is invalid")
    return category


def _bybit_symbol(ask: Ask, required: bool) -> bool:
    """The symbol of the request's category: BTCUSD for inverse, BTCUSDT otherwise."""
    symbol = ask.params.get("symbol")
    if symbol is None:
        if required:
            raise VenueError(200, 10001, "params error: symbol is required")
        return False
    if symbol != (BYBIT_INVERSE_SYMBOL if ask.params.get("category") == "inverse" else SYMBOL):
        raise VenueError(200, 10001, "params error: Symbol Is Invalid")
    return True


def _bybit_time(ask: Ask) -> dict:
    ns = ask.server_ms * NS_PER_MS
    return {"timeSecond": str(ns // 1_000_000_000), "timeNano": str(ns)}


def _bybit_instruments(ask: Ask) -> dict:
    category = _bybit_category(ask, ("spot", "linear", "inverse", "option"))
    _bybit_symbol(ask, required=False)
    rows: list[dict] = []
    # only Trading instruments exist here: status=PreLaunch (which ccxt always asks) is empty;
    # option is not served (no data for it), so it is empty too
    if ask.params.get("status", "Trading") == "Trading":
        if category == "spot":
            rows = [_BYBIT_SPOT_INSTRUMENT]
        elif category == "linear":
            rows = [_bybit_linear_instrument(ask.tape.funding["bybit"])]
        elif category == "inverse":
            rows = [_bybit_inverse_instrument(ask.tape.funding[INVERSE_FUNDING_KEY["bybit"]])]
    result: dict[str, Any] = {"category": category, "list": rows}
    if category != "spot":
        result["nextPageCursor"] = ""
    return result


# SYNTHETIC: size of every level of the made-up Bybit inverse book, in contracts (1 USD each)
SYNTHETIC_BYBIT_INVERSE_LEVEL_QTY = "10000"


@dataclass(frozen=True)
class BybitPerp:
    """What tells Bybit's two perp categories apart where their routes share
    one rule: linear BTCUSDT (USDT, isolated) and inverse BTCUSD (contracts of
    1 USD settled in BTC, cross; its prices are Binance's COIN-M BTCUSD_PERP
    closes as the stand-in series, never Bybit's)."""

    category: str  # v5's category: linear / inverse
    kind: str  # the account model's market, and the price series served: PERP / INVERSE
    symbol: str
    tick: str
    level_qty: str  # SYNTHETIC size of every book level
    funding_key: str  # the tape's key of its own real settlements
    cap_format: str  # how a risk limit (the tier's cap: USDT, BTC) prints


BYBIT_LINEAR = BybitPerp("linear", PERP, SYMBOL, BYBIT_PERP_TICK, SYNTHETIC_LEVEL_QTY, "bybit", ".0f")
BYBIT_INVERSE = BybitPerp("inverse", INVERSE, BYBIT_INVERSE_SYMBOL, BYBIT_INVERSE_TICK,
                          SYNTHETIC_BYBIT_INVERSE_LEVEL_QTY, INVERSE_FUNDING_KEY["bybit"], "g")
BYBIT_PERPS = {bp.category: bp for bp in (BYBIT_LINEAR, BYBIT_INVERSE)}


def _bybit_perp_ticker_row(ask: Ask, bp: BybitPerp) -> dict:
    """A linear or inverse ticker. Binance's spot close stands in for the
    index, the contract's close for the mark (no index/mark in the data); the
    inverse BTCUSD's prices are Binance's COIN-M BTCUSD_PERP closes as a
    stand-in (the shipped data has no Bybit inverse prices; they are never
    Bybit's). The funding rate is Bybit's own last settled rate of the contract."""
    series = ask.tape.prices[bp.kind]
    w = _window_24h(series, ask.now_ms)
    bid, ask_px = _book_top(w["last"], bp.tick)
    funding = ask.tape.funding[bp.funding_key]
    n = funding.count_upto(ask.now_ms)
    zero = "0"  # SYNTHETIC: volume, turnover and open interest are not in the data
    return {
        "symbol": bp.symbol, "lastPrice": _dec(w["last"], 2),
        "indexPrice": _dec(ask.tape.prices[SPOT].price_at(ask.now_ms), 2), "markPrice": _dec(w["last"], 2),
        "prevPrice24h": _dec(w["open"], 2), "price24hPcnt": _dec(round(w["last"] / w["open"] - 1, 6), 6),
        "highPrice24h": _dec(w["high"], 2), "lowPrice24h": _dec(w["low"], 2),
        "prevPrice1h": _dec(series.price_at(ask.now_ms - MS_PER_HOUR), 2),
        "openInterest": zero, "openInterestValue": zero, "turnover24h": zero, "volume24h": zero,
        # last SETTLED real Bybit rate; the live field is Bybit's estimate of the next one (not in the data)
        "fundingRate": _rate(funding.rate[n - 1]) if n else "",
        "nextFundingTime": str(funding.next_time_after(ask.now_ms)),
        "predictedDeliveryPrice": "", "basisRate": "", "deliveryFeeRate": "", "deliveryTime": "0",
        "ask1Size": bp.level_qty, "bid1Price": _dec(bid, 2), "ask1Price": _dec(ask_px, 2),
        "bid1Size": bp.level_qty, "basis": "", "preOpenPrice": "", "preQty": "",
        "curPreListingPhase": "",
    }


def _bybit_ticker_row(ask: Ask, category: str) -> dict:
    if category != "spot":
        return _bybit_perp_ticker_row(ask, BYBIT_PERPS[category])
    w = _window_24h(ask.tape.prices[SPOT], ask.now_ms)
    bid, ask_px = _book_top(w["last"], BYBIT_SPOT_TICK)
    zero = "0"  # SYNTHETIC: volume and turnover are not in the data
    return {"symbol": SYMBOL, "bid1Price": _dec(bid, 2), "bid1Size": SYNTHETIC_LEVEL_QTY,
            "ask1Price": _dec(ask_px, 2), "ask1Size": SYNTHETIC_LEVEL_QTY, "lastPrice": _dec(w["last"], 2),
            "prevPrice24h": _dec(w["open"], 2), "price24hPcnt": _dec(round(w["last"] / w["open"] - 1, 6), 6),
            "highPrice24h": _dec(w["high"], 2), "lowPrice24h": _dec(w["low"], 2), "turnover24h": zero,
            "volume24h": zero,
            # Binance spot close stands in for Bybit's USD index
            "usdIndexPrice": _dec(ask.tape.prices[SPOT].price_at(ask.now_ms), 2)}


def _bybit_tickers(ask: Ask) -> dict:
    category = _bybit_category(ask, ("spot", "linear", "inverse", "option"))
    _bybit_symbol(ask, required=False)
    rows = [_bybit_ticker_row(ask, category)] if category in ("spot", "linear", "inverse") else []
    return {"category": category, "list": rows}


def _bybit_orderbook(ask: Ask) -> dict:
    category = _bybit_category(ask, ("spot", "linear", "inverse", "option"))
    _bybit_symbol(ask, required=True)
    if category not in ("spot", "linear", "inverse"):
        raise VenueError(200, 10001, "params error: Symbol Is Invalid")
    most, default = (200, 1) if category == "spot" else (500, 25)
    depth = _limit(_bybit_int(ask.params, "limit"), default, most)
    if category == "spot":
        symbol, (bids, asks) = SYMBOL, _book(ask.tape.prices[SPOT].price_at(ask.now_ms), BYBIT_SPOT_TICK, depth, 2)
    else:  # inverse: the COIN-M closes as the stand-in centre; sizes in contracts
        bp = BYBIT_PERPS[category]
        symbol = bp.symbol
        bids, asks = _book(ask.tape.prices[bp.kind].price_at(ask.now_ms), bp.tick, depth, 2, bp.level_qty)
    # SYNTHETIC update ids: the data time in ms
    return {"s": symbol, "b": bids, "a": asks, "ts": ask.now_ms, "u": ask.now_ms, "seq": ask.now_ms,
            "cts": ask.now_ms}


def _bybit_kline(ask: Ask, price: str = "last") -> dict:
    """Bybit kline: [start, end] on open times; with start the first ``limit``
    from it, otherwise the last ``limit`` up to end/now (the emulator's reading
    of the docs); newest first. Complete hours only; open = high = low = close.
    ``price`` "mark" (/v5/market/mark-price-kline) serves the perp closes and
    "index" (/v5/market/index-price-kline) the spot closes, as stand-ins (no
    mark or index series is shipped); those rows have no volume fields."""
    category = ask.params.get("category", "linear")  # Bybit's default category for kline
    if category not in (("spot", "linear", "inverse") if price == "last" else ("linear", "inverse")):
        raise VenueError(200, 10001, "params error: Category is invalid")
    _bybit_symbol(ask, required=True)
    if ask.params.get("interval") != "60":
        raise VenueError(200, 10001, "params error: Invalid period!")  # only 1h closes are shipped
    limit = _limit(_bybit_int(ask.params, "limit"), 200, 1000)
    start, end = _bybit_int(ask.params, "start"), _bybit_int(ask.params, "end")
    # inverse: the COIN-M closes as the stand-in for Bybit's BTCUSD (no Bybit inverse prices are shipped)
    series = ask.tape.prices[SPOT if category == "spot" or price == "index" else INVERSE if category == "inverse"
                             else PERP]
    upto = series.index_at(ask.now_ms) + 1
    idx = _rows_window(series.open_ms, upto, start, end, limit, anchor_start=start is not None)
    rows = []
    for i in idx[::-1]:
        c = _dec(series.close[i], 2)
        row = [str(int(series.open_ms[i])), c, c, c, c]
        rows.append(row + ["0", "0"] if price == "last" else row)  # SYNTHETIC volume/turnover
    return {"category": category, "symbol": BYBIT_INVERSE_SYMBOL if category == "inverse" else SYMBOL, "list": rows}


def _bybit_funding_history(ask: Ask) -> dict:
    """Bybit /v5/market/funding/history: limit 1..200 (default 200); startTime
    alone is an error; endTime alone or neither: the newest ``limit`` up to
    endTime/now; both: the newest ``limit`` in [startTime, endTime]; newest first."""
    category = _bybit_category(ask, ("linear", "inverse"))
    _bybit_symbol(ask, required=True)
    start, end = _bybit_int(ask.params, "startTime"), _bybit_int(ask.params, "endTime")
    if start is not None and end is None:
        raise VenueError(200, 10001, "params error: endTime is required when startTime is set")
    limit = _limit(_bybit_int(ask.params, "limit"), 200, 200)
    # inverse: Bybit's own BTCUSD settlements (the shipped rows: 2023-01 .. 2024-07 only)
    bp = BYBIT_PERPS[category]
    funding = ask.tape.funding[bp.funding_key]
    upto = funding.count_upto(ask.now_ms)
    idx = _rows_window(funding.time_ms, upto, start, end, limit, anchor_start=False)
    rows = [{"symbol": bp.symbol, "fundingRate": _rate(funding.rate[i]), "fundingRateTimestamp": str(int(funding.time_ms[i]))}
            for i in idx[::-1]]
    return {"category": category, "list": rows}


# ----------------------------------------------------------------- trading: shared

def signed(handler: Handler) -> Handler:
    """Mark a route as a signed (private) endpoint: it needs the venue's key
    header and signature. The HMAC itself is NOT verified (any key and secret
    pass); the emulator checks that a signed call was made, not by whom."""
    handler.signed = True  # type: ignore[attr-defined]
    return handler


def _check_signed(venue: str | None, ask: Ask) -> None:
    if venue in SHAPES:
        SHAPES[venue].check_signed(ask)
        return
    known = ask.accounts.api_keys if ask.accounts is not None else None
    if venue == "bybit":
        key = ask.headers.get("X-BAPI-API-KEY")
        if not key or (known is not None and key not in known):
            raise VenueError(401, 10003, "API key is invalid.")
        if not ask.headers.get("X-BAPI-SIGN") or not ask.headers.get("X-BAPI-TIMESTAMP"):
            raise VenueError(401, 10004, "error sign! origin_string[]")
        return
    if not ask.headers.get("X-MBX-APIKEY"):
        raise VenueError(401, -2014, "API-key format invalid.")
    if known is not None and ask.headers["X-MBX-APIKEY"] not in known:
        raise VenueError(401, -2015, "Invalid API-key, IP, or permissions for action.")
    for name in ("timestamp", "signature"):
        if not ask.params.get(name):
            raise VenueError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


async def _body_params(request: web.Request) -> dict[str, str]:
    """Parameters of a POST/DELETE body: JSON (Bybit) or a form (Binance)."""
    if request.method == "GET" or not request.can_read_body:
        return {}
    text = await request.text()
    if not text:
        return {}
    if text.lstrip().startswith("{"):
        try:
            raw = json.loads(text)
        except ValueError:
            return {}
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    from urllib.parse import parse_qsl

    return dict(parse_qsl(text, keep_blank_values=True))


def _accounts(ask: Ask) -> Accounts:
    if ask.accounts is None:
        raise VenueError(503, -1000, "this emulator has no accounts")
    return ask.accounts


def _fill_ratio(ask: Ask) -> float:
    return ask.fault.fill_ratio if ask.fault is not None and ask.fault.kind == "partial_fill" else 1.0


def _amt(x: float, min_places: int = 8) -> str:
    """An amount as text that reads back to the same float, at least
    ``min_places`` decimals (balances are booked in 8-decimal units)."""
    return _rate(x if x != 0 else 0.0, min_places)


# ----------------------------------------------------------------- trading: Binance spot and USD-M

def _binance_decimal(params: Mapping[str, str], name: str, required: bool) -> float | None:
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise VenueError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
        return None
    try:
        value = float(raw)
    except ValueError:
        raise VenueError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '^([0-9]{{1,20}})(\\.[0-9]{{1,20}})?$'.") from None
    if not math.isfinite(value) or value < 0:
        raise VenueError(400, -1100, f"Illegal characters found in parameter '{name}'.")
    return value


def _binance_refusal(err: AccountError, kind: str, action: str = "place") -> VenueError:
    """The venue's own code for a refusal. Spot codes are /api's; perp codes
    /fapi's, which /dapi shares, plus COIN-M's own for a position beyond the
    tiers and a fraction of a contract (ccxt maps the futures codes only on
    the real hostname: through 127.0.0.1 they arrive as ExchangeError, so
    check the code)."""
    if kind == INVERSE and err.reason == "limit":
        return VenueError(400, -2027, "Exceeded the maximum allowable position at current leverage.")
    if kind == INVERSE and err.detail.startswith("Precision"):
        return VenueError(400, -1111, "Precision is over the maximum defined for this asset.")
    spot = kind == SPOT
    if err.reason == "insufficient":
        if action == "transfer":
            return VenueError(400, -5013, "Asset transfer failed: insufficient balance")
        return (VenueError(400, -2010, "Account has insufficient balance for requested action.") if spot
                else VenueError(400, -2019, "Margin is insufficient."))
    if err.reason == "duplicate":
        return (VenueError(400, -2010, "Duplicate order sent.") if spot
                else VenueError(400, -4116, "ClientOrderId is duplicated."))
    if err.reason == "unknown_order":
        return (VenueError(400, -2011, "Unknown order sent.") if action == "cancel"
                else VenueError(400, -2013, "Order does not exist."))
    if err.reason == "min_notional":
        return (VenueError(400, -1013, "Filter failure: NOTIONAL") if spot
                else VenueError(400, -4164, "Order's notional must be no smaller than 100 (unless you choose reduce only)."))
    if err.detail.startswith("ReduceOnly"):
        return VenueError(400, -2022, "ReduceOnly Order is rejected.")
    return VenueError(400, -1102, f"A parameter was malformed: {err.detail}")


def _binance_order_key(ask: Ask) -> tuple[str | None, str | None]:
    order_id = ask.params.get("orderId")
    client_id = ask.params.get("origClientOrderId")
    if order_id is None and client_id is None:
        raise VenueError(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
    return order_id, client_id


def _symbol_check(venue: str) -> Callable[[Ask, bool], bool]:
    """The symbol check of a Binance venue's routes: BTCUSDT, or COIN-M's BTCUSD_PERP / pair BTCUSD."""
    return _coinm_symbol if venue == "binancecoinm" else _binance_symbol


def _binance_spot_order_row(o: Order) -> dict:
    return {
        "symbol": SYMBOL, "orderId": int(o.id), "orderListId": -1, "clientOrderId": o.client_id,
        "price": _dec(o.price or 0, 8), "origQty": _dec(o.qty, 8), "executedQty": _dec(o.filled, 8),
        "cummulativeQuoteQty": _dec(o.cost, 8), "status": o.status, "timeInForce": o.time_in_force,
        "type": o.type.upper(), "side": o.side.upper(), "stopPrice": "0.00000000", "icebergQty": "0.00000000",
        "time": o.created_ms, "updateTime": o.updated_ms, "isWorking": True, "workingTime": o.created_ms,
        "origQuoteOrderQty": _dec(o.quote_qty or 0, 8), "selfTradePreventionMode": "EXPIRE_MAKER",
    }


def _binance_spot_trade_row(t: Trade) -> dict:
    return {"symbol": SYMBOL, "id": int(t.id), "orderId": int(t.order_id), "orderListId": -1,
            "price": _dec(t.price, 8), "qty": _dec(t.qty, 8), "quoteQty": _amt(round(t.qty * t.price, 8)),
            "commission": _amt(t.fee), "commissionAsset": t.fee_asset, "time": t.time_ms,
            "isBuyer": t.side == BUY, "isMaker": t.maker, "isBestMatch": True}


def _binance_balance_rows(acc: Accounts, wallet: str) -> list[dict]:
    w = acc.wallets[wallet]
    assets = sorted(set(w.total) | {"BTC", "USDT"})
    return [{"asset": a, "free": _amt(w.get(a) - w.locked.get(a, 0.0)), "locked": _amt(w.locked.get(a, 0.0))}
            for a in assets]


def _binance_spot_account(ask: Ask) -> dict:
    acc = _accounts(ask)
    maker, taker = (f"{x:.8f}" for x in (MARKETS[("binance", SPOT)].costs.maker_fee,
                                         MARKETS[("binance", SPOT)].costs.taker_fee))
    rows = _binance_balance_rows(acc, "binance")
    if ask.params.get("omitZeroBalances") == "true":
        rows = [r for r in rows if float(r["free"]) or float(r["locked"])]
    return {
        "makerCommission": 10, "takerCommission": 10, "buyerCommission": 0, "sellerCommission": 0,
        "commissionRates": {"maker": maker, "taker": taker, "buyer": "0.00000000", "seller": "0.00000000"},
        "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
        "requireSelfTradePrevention": False, "preventSor": False, "updateTime": ask.server_ms,
        "accountType": "SPOT", "balances": rows, "permissions": ["SPOT"], "uid": 1000001,
    }


def _binance_place(ask: Ask, venue: str, kind: str) -> Order:
    """POST order on spot, USD-M or COIN-M (quantities in contracts there; a
    quote-sized market order on spot only)."""
    acc = _accounts(ask)
    _symbol_check(venue)(ask, True)
    if ask.params.get("symbol") is None:  # COIN-M: a pair alone names no contract to trade
        raise VenueError(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
    side = ask.params.get("side", "").lower()
    type_ = ask.params.get("type", "").lower()
    if side not in (BUY, SELL):
        raise VenueError(400, -1102, "Mandatory parameter 'side' was not sent, was empty/null, or malformed.")
    if type_ not in (MARKET, LIMIT):
        raise VenueError(400, -1116, "Invalid orderType.")
    quote_qty = _binance_decimal(ask.params, "quoteOrderQty", False) if kind == SPOT and type_ == MARKET else None
    qty = _binance_decimal(ask.params, "quantity", quote_qty is None) or 0.0
    price = _binance_decimal(ask.params, "price", type_ == LIMIT)
    tif = ask.params.get("timeInForce", "GTC")
    if type_ == LIMIT and "timeInForce" not in ask.params:
        raise VenueError(400, -1102, "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed.")
    client_id = ask.params.get("newClientOrderId") or None
    try:
        return acc.place(venue, kind, side, type_, qty, price, client_id=client_id, time_in_force=tif,
                         reduce_only=ask.params.get("reduceOnly", "false").lower() == "true",
                         quote_qty=quote_qty if quote_qty and not qty else None, fill_ratio=_fill_ratio(ask))
    except AccountError as err:
        raise _binance_refusal(err, kind) from None


def _binance_spot_create(ask: Ask) -> dict:
    o = _binance_place(ask, "binance", SPOT)
    resp_type = ask.params.get("newOrderRespType", "FULL")
    row = {"symbol": SYMBOL, "orderId": int(o.id), "orderListId": -1, "clientOrderId": o.client_id,
           "transactTime": o.created_ms}
    if resp_type == "ACK":
        return row
    full = _binance_spot_order_row(o)
    row.update({k: full[k] for k in ("price", "origQty", "executedQty", "origQuoteOrderQty", "cummulativeQuoteQty",
                                     "status", "timeInForce", "type", "side", "workingTime",
                                     "selfTradePreventionMode")})
    if resp_type == "FULL":
        row["fills"] = [{"price": _dec(t.price, 8), "qty": _dec(t.qty, 8), "commission": _amt(t.fee),
                         "commissionAsset": t.fee_asset, "tradeId": int(t.id)}
                        for t in _accounts(ask).trade_list("binance", SPOT) if t.order_id == o.id]
    return row


def _binance_get_order(ask: Ask, venue: str, kind: str) -> Order:
    _symbol_check(venue)(ask, True)
    order_id, client_id = _binance_order_key(ask)
    try:
        return _accounts(ask).find(venue, kind, order_id, client_id)
    except AccountError as err:
        raise _binance_refusal(err, kind, "fetch") from None


def _binance_cancel(ask: Ask, venue: str, kind: str) -> Order:
    _symbol_check(venue)(ask, True)
    order_id, client_id = _binance_order_key(ask)
    try:
        return _accounts(ask).cancel(venue, kind, order_id, client_id)
    except AccountError as err:
        raise _binance_refusal(err, kind, "cancel") from None


def _binance_spot_cancel(ask: Ask) -> dict:
    o = _binance_cancel(ask, "binance", SPOT)
    row = _binance_spot_order_row(o)
    for k in ("time", "updateTime", "isWorking", "workingTime", "stopPrice", "icebergQty"):
        row.pop(k)
    return {"symbol": SYMBOL, "origClientOrderId": o.client_id, **{k: v for k, v in row.items() if k != "symbol"},
            "transactTime": ask.server_ms}


def _binance_open_orders(ask: Ask, venue: str, kind: str, render: Callable[[Order], dict]) -> list:
    _symbol_check(venue)(ask, False)
    return [render(o) for o in _accounts(ask).open_orders(venue, kind)]


def _binance_trades(ask: Ask, venue: str, kind: str, render: Callable[[Trade], dict]) -> list:
    """myTrades / userTrades: oldest first; orderId, startTime/endTime, fromId, limit (default 500, max 1000)."""
    _symbol_check(venue)(ask, venue != "binancecoinm")  # COIN-M: symbol or pair
    trades = _accounts(ask).trade_list(venue, kind)
    order_id = ask.params.get("orderId")
    start, end = _binance_int(ask.params, "startTime"), _binance_int(ask.params, "endTime")
    from_id = _binance_int(ask.params, "fromId")
    limit = _limit(_binance_int(ask.params, "limit"), 500, 1000)
    rows = [t for t in trades if (order_id is None or t.order_id == order_id)
            and (start is None or t.time_ms >= start) and (end is None or t.time_ms <= end)
            and (from_id is None or int(t.id) >= from_id)]
    return [render(t) for t in rows[:limit]]


def _binance_futures_order_row(o: Order, ack: bool = False) -> dict:
    """USD-M order. ``ack``: the answer to a placement with the default
    newOrderRespType=ACK, as of acceptance (NEW, nothing executed yet: the
    real venue answers before matching; ask again, or use RESULT, for fills)."""
    filled, cost, status = (0.0, 0.0, NEW) if ack else (o.filled, o.cost, o.status)
    return {
        "orderId": int(o.id), "symbol": SYMBOL, "status": status, "clientOrderId": o.client_id,
        "price": _dec(o.price or 0, 2), "avgPrice": _amt(cost / filled if filled else 0.0, 2),
        "origQty": _dec(o.qty, 3), "executedQty": _dec(filled, 3), "cumQty": _dec(filled, 3),
        "cumQuote": _amt(cost, 5), "timeInForce": o.time_in_force, "type": o.type.upper(),
        "reduceOnly": o.reduce_only, "closePosition": False, "side": o.side.upper(), "positionSide": "BOTH",
        "stopPrice": "0.00", "workingType": "CONTRACT_PRICE", "priceProtect": False, "origType": o.type.upper(),
        "priceMatch": "NONE", "selfTradePreventionMode": "EXPIRE_MAKER", "goodTillDate": 0,
        "time": o.created_ms, "updateTime": o.created_ms if ack else o.updated_ms,
    }


def _binance_futures_trade_row(t: Trade) -> dict:
    return {"buyer": t.side == BUY, "commission": _amt(t.fee), "commissionAsset": t.fee_asset, "id": int(t.id),
            "maker": t.maker, "orderId": int(t.order_id), "price": _dec(t.price, 2), "qty": _dec(t.qty, 3),
            "quoteQty": _amt(round(t.qty * t.price, 8)), "realizedPnl": _amt(t.realized_pnl),
            "side": t.side.upper(), "positionSide": "BOTH", "symbol": SYMBOL, "time": t.time_ms}


def _binance_futures_create(ask: Ask, fv: FuturesVenue) -> dict:
    o = _binance_place(ask, fv.venue, fv.kind)
    return fv.order_row(o, ack=ask.params.get("newOrderRespType", "ACK") == "ACK")


def _binance_income(ask: Ask, fv: FuturesVenue) -> list:
    """/fapi/v1/income and /dapi/v1/income, in the margin asset: FUNDING_FEE
    (each settlement paid), REALIZED_PNL and COMMISSION (each fill; a
    liquidation's penalty is its fill's commission here). incomeType filters;
    startTime/endTime inclusive, neither: the last 7 days; oldest first; limit
    default 100, max 1000."""
    _symbol_check(fv.venue)(ask, False)
    acc = _accounts(ask)
    wanted = ask.params.get("incomeType") or None
    start, end = _binance_int(ask.params, "startTime"), _binance_int(ask.params, "endTime")
    if start is None and end is None:
        start = ask.server_ms - 7 * 24 * MS_PER_HOUR
    limit = _limit(_binance_int(ask.params, "limit"), 100, 1000)
    rows: list[tuple[int, int, dict]] = []

    def add(kind: str, amount: float, time_ms: int, tran_id: int, trade_id: str = "") -> None:
        rows.append((time_ms, tran_id, {"symbol": fv.symbol, "incomeType": kind, "income": _amt(amount),
                                        "asset": fv.asset, "info": kind if kind == "FUNDING_FEE" else "",
                                        "time": time_ms, "tranId": tran_id, "tradeId": trade_id}))

    for f in acc.funding_list(fv.venue, fv.kind):
        add("FUNDING_FEE", f.amount, f.time_ms, int(f.id))
    for t in acc.trade_list(fv.venue, fv.kind):
        if t.realized_pnl:
            add("REALIZED_PNL", t.realized_pnl, t.time_ms, 9_000_000_000 + int(t.id), t.id)
        if t.fee:
            add("COMMISSION", -t.fee, t.time_ms, 9_500_000_000 + int(t.id), t.id)
    rows.sort(key=lambda r: (r[0], r[1]))
    out = [r for _, _, r in rows if (wanted is None or r["incomeType"] == wanted)
           and (start is None or r["time"] >= start) and (end is None or r["time"] <= end)]
    return out[:limit]


def _binance_force_orders(ask: Ask, fv: FuturesVenue) -> list:
    """/fapi/v1/forceOrders and /dapi/v1/forceOrders: the account's liquidation
    orders (autoCloseType LIQUIDATION; there is no ADL here), newest first;
    limit default 50, max 100."""
    _symbol_check(fv.venue)(ask, False)
    if ask.params.get("autoCloseType", "LIQUIDATION") != "LIQUIDATION":
        return []
    start, end = _binance_int(ask.params, "startTime"), _binance_int(ask.params, "endTime")
    limit = _limit(_binance_int(ask.params, "limit"), 50, 100)
    rows = [o for o in _accounts(ask).all_orders(fv.venue, fv.kind) if o.liquidation
            and (start is None or o.created_ms >= start) and (end is None or o.created_ms <= end)]
    return [fv.order_row(o) for o in rows[::-1][:limit]]


def _binance_position_row(acc: Accounts, ask: Ask) -> dict:
    venue = "binanceusdm"
    pos = acc.position(venue)
    mark = acc.mark(venue)
    upnl = acc.unrealized(venue)
    notional = pos.qty * mark
    liq = acc.liquidation(venue) if pos.qty else 0.0
    return {
        "symbol": SYMBOL, "positionSide": "BOTH", "positionAmt": _dec(pos.qty, 3),
        "entryPrice": _amt(pos.entry, 1), "breakEvenPrice": _amt(pos.entry, 1), "markPrice": _dec(mark, 8),
        "unRealizedProfit": _amt(round(upnl, 8)), "liquidationPrice": _amt(round(liq, 8), 1),
        "isolatedMargin": _amt(round(pos.margin + upnl, 8)), "notional": _amt(round(notional, 8)),
        "marginAsset": "USDT", "isolatedWallet": _amt(pos.margin),
        "initialMargin": _amt(round(abs(notional) / pos.leverage, 8)),
        "maintMargin": _amt(round(acc.maintenance(venue), 8)),
        "positionInitialMargin": _amt(round(abs(notional) / pos.leverage, 8)),
        "openOrderInitialMargin": _amt(acc.order_margin(venue)), "adl": 0,
        "bidNotional": "0", "askNotional": "0", "updateTime": pos.updated_ms,
    }


def _binance_position_risk(ask: Ask) -> list:
    """v3 positionRisk: only symbols with a position or open orders appear."""
    _binance_symbol(ask, required=False)
    acc = _accounts(ask)
    if acc.position("binanceusdm").qty == 0 and not acc.open_orders("binanceusdm", PERP):
        return []
    return [_binance_position_row(acc, ask)]


def _binance_futures_balances(ask: Ask) -> list[dict]:
    """The USD-M wallet's assets as /fapi/v3/account lists them: USDT first (the margin of BTCUSDT)."""
    acc = _accounts(ask)
    w = acc.wallets["binanceusdm"]
    wallet = w.get("USDT")
    upnl = acc.unrealized("binanceusdm")
    avail = acc.available("binanceusdm", "USDT")
    pos = acc.position("binanceusdm")
    usdt = {
        "asset": "USDT", "walletBalance": _amt(wallet), "unrealizedProfit": _amt(round(upnl, 8)),
        "marginBalance": _amt(round(wallet + upnl, 8)), "maintMargin": _amt(round(acc.maintenance("binanceusdm"), 8)),
        "initialMargin": _amt(round(pos.margin + acc.order_margin("binanceusdm"), 8)),
        "positionInitialMargin": _amt(pos.margin), "openOrderInitialMargin": _amt(acc.order_margin("binanceusdm")),
        "crossWalletBalance": _amt(round(wallet - pos.margin, 8)), "crossUnPnl": "0.00000000",
        "availableBalance": _amt(round(avail, 8)), "maxWithdrawAmount": _amt(round(max(avail, 0.0), 8)),
        "updateTime": ask.server_ms,
    }
    return [usdt, *_binance_other_assets(w, usdt)]


def _binance_other_assets(w: Wallet, margin: dict) -> list[dict]:
    """A futures wallet's assets besides its margin asset (row ``margin``), in
    the margin row's fields: the balance as wallet, margin, cross and
    available balance and as withdrawable, everything else zero."""
    return [{**{k: "0.00000000" for k in margin if k not in ("asset", "updateTime")}, "asset": a,
             "walletBalance": _amt(w.get(a)), "marginBalance": _amt(w.get(a)), "crossWalletBalance": _amt(w.get(a)),
             "availableBalance": _amt(w.get(a)), "maxWithdrawAmount": _amt(w.get(a)), "updateTime": margin["updateTime"]}
            for a in sorted(w.total) if a != margin["asset"]]


def _binance_futures_account(ask: Ask) -> dict:
    acc = _accounts(ask)
    usdt, *others = _binance_futures_balances(ask)
    positions = []
    if acc.position("binanceusdm").qty:
        row = _binance_position_row(acc, ask)
        positions.append({"unrealizedProfit": row["unRealizedProfit"],
                          **{k: row[k] for k in ("symbol", "positionSide", "positionAmt", "isolatedMargin", "notional",
                                                 "isolatedWallet", "initialMargin", "maintMargin", "updateTime")}})
    total = {f"total{k[0].upper()}{k[1:]}": usdt[k] for k in (
        "initialMargin", "maintMargin", "walletBalance", "unrealizedProfit", "marginBalance",
        "positionInitialMargin", "openOrderInitialMargin", "crossWalletBalance")}
    return {**total, "totalCrossUnPnl": "0.00000000", "availableBalance": usdt["availableBalance"],
            "maxWithdrawAmount": usdt["maxWithdrawAmount"], "assets": [usdt, *others], "positions": positions}


def _binance_futures_balance(ask: Ask) -> list:
    return [{"accountAlias": "SgsR", "asset": r["asset"], "balance": r["walletBalance"],
             "crossWalletBalance": r["crossWalletBalance"], "crossUnPnl": r["crossUnPnl"],
             "availableBalance": r["availableBalance"], "maxWithdrawAmount": r["maxWithdrawAmount"],
             "marginAvailable": True, "updateTime": r["updateTime"]} for r in _binance_futures_balances(ask)]


def _whole(x: float) -> int | float:
    return int(x) if float(x).is_integer() else x


def _binance_brackets(fv: FuturesVenue) -> list[dict]:
    """Venue metadata, not market data: the contract's brackets as the shipped
    margin tier snapshot holds them (fundarb/data/shipped/margin_tiers.json),
    the same table the emulator's liquidation prices use: USD-M's BTCUSDT by
    notional (USDT), COIN-M's BTCUSD_PERP by quantity (BTC)."""
    unit = "qty" if fv.kind == INVERSE else "notional"
    return [{"bracket": i + 1, "initialLeverage": _whole(t.max_leverage), f"{unit}Cap": _whole(t.cap),
             f"{unit}Floor": _whole(t.floor), "maintMarginRatio": t.mmr, "cum": float(t.amount)}
            for i, t in enumerate(cast(MarginRule, MARKETS[(fv.venue, fv.kind)].margin).tiers)]


def _binance_leverage_bracket(ask: Ask) -> list | dict:
    row = {"symbol": SYMBOL, "notionalCoef": 1.0, "brackets": _binance_brackets(USDM)}
    return row if _binance_symbol(ask, required=False) else [row]


def _binance_symbol_config(ask: Ask) -> list:
    """/fapi/v1/symbolConfig: the symbol's margin type and leverage setting,
    with or without a position (the emulator's perps are isolated)."""
    _binance_symbol(ask, required=False)
    lev = _accounts(ask).position("binanceusdm").leverage
    return [{"symbol": SYMBOL, "marginType": "ISOLATED", "isAutoAddMargin": "false", "leverage": lev,
             "maxNotionalValue": "1000000"}]


def _binance_set_leverage(ask: Ask, fv: FuturesVenue) -> int:
    """POST /fapi/v1/leverage and /dapi/v1/leverage: set the symbol's leverage; the leverage set."""
    _symbol_check(fv.venue)(ask, True)
    lev = _binance_int(ask.params, "leverage")
    if lev is None:
        raise VenueError(400, -1102, "Mandatory parameter 'leverage' was not sent, was empty/null, or malformed.")
    try:
        _accounts(ask).set_leverage(fv.venue, lev, fv.kind)
    except AccountError:
        raise VenueError(400, -4028, f"Leverage {lev} is not valid") from None
    return lev


def _usdm_set_leverage(ask: Ask) -> dict:
    lev = _binance_set_leverage(ask, USDM)
    cap = max((b["notionalCap"] for b in _binance_brackets(USDM) if b["initialLeverage"] >= lev), default=50000)
    return {"leverage": lev, "maxNotionalValue": str(cap), "symbol": SYMBOL}


# sapi transfer types the emulator serves: spot wallet <-> USD-M wallet, spot wallet <-> COIN-M wallet
_BINANCE_TRANSFER_TYPES = {"MAIN_UMFUTURE": ("binance", "binanceusdm"), "UMFUTURE_MAIN": ("binanceusdm", "binance"),
                           # spot wallet <-> COIN-M wallet (ccxt: transfer(code, amount, 'spot', 'inverse'))
                           "MAIN_CMFUTURE": ("binance", "binancecoinm"), "CMFUTURE_MAIN": ("binancecoinm", "binance")}


def _binance_transfer(ask: Ask) -> dict:
    kind = ask.params.get("type")
    if kind not in _BINANCE_TRANSFER_TYPES:
        raise VenueError(400, -1100 if kind else -1102, f"Illegal characters found in parameter 'type' ({kind}).")
    asset = ask.params.get("asset")
    if not asset:
        raise VenueError(400, -1102, "Mandatory parameter 'asset' was not sent, was empty/null, or malformed.")
    amount = _binance_decimal(ask.params, "amount", True) or 0.0
    src, dst = _BINANCE_TRANSFER_TYPES[kind]
    try:
        tran_id = _accounts(ask).transfer(src, dst, asset, amount)
    except AccountError as err:
        raise _binance_refusal(err, SPOT, "transfer") from None
    return {"tranId": tran_id}


def keyed(handler: Handler) -> Handler:
    """Mark a route as API-key-only (Binance's USER_STREAM security: the
    X-MBX-APIKEY header, no timestamp or signature)."""
    handler.keyed = True  # type: ignore[attr-defined]
    return handler


def _binance_listen_key(ask: Ask, venue: str) -> dict:
    """User-data stream keys: POST makes one (or answers the live one), PUT
    keeps it alive, DELETE closes it. Keys do not expire on the emulator's
    clock (tests move it by hours); a closed key streams nothing more."""
    acc = _accounts(ask)
    if ask.method == "POST":
        return {"listenKey": acc.open_listen_key(venue)}
    key = ask.params.get("listenKey")
    if venue == "binance" and not key:
        raise VenueError(400, -1102, "Mandatory parameter 'listenKey' was not sent, was empty/null, or malformed.")
    live = acc.listen_key_venue(key) == venue if key is not None else venue in acc.listen_keys.values()
    if not live:
        raise VenueError(400, -1125, "This listenKey does not exist.")
    if ask.method == "DELETE":
        acc.close_listen_key(venue, key)
        return {}
    return {"listenKey": acc.open_listen_key(venue)} if venue == "binanceusdm" else {}


# ----------------------------------------------------------------- Binance COIN-M (/dapi): market data and trading
#
# BTCUSD_PERP, an inverse perpetual: quantities in contracts of 100 USD, PnL,
# fees, funding and margin in BTC (the account model's INVERSE market, cross
# margin). Prices: the real COIN-M BTCUSD_PERP hourly closes (hours missing in
# the shipped data are missing here too: the last close carries); funding: the
# real binance BTCUSD_PERP settlements, stamped a few ms late as /fapi's are.
# The mark is the COIN-M close, the index Binance's spot BTCUSDT close
# (stand-ins: the data has no mark or index series). Not served: delivery
# (quarterly) contracts, aggTrades/trades, premiumIndexKlines, allOrders,
# positionSide dual mode, isolated margin. Where /dapi answers by /fapi's rule
# (funding history, premium index, orders, income, liquidations, leverage,
# brackets) one handler serves both, told apart by a ``FuturesVenue``
# (``USDM``, ``COINM``); what is COIN-M's own (its rows, units, pair) is here.

COINM_TICK = "0.1"
COINM_CONTRACT_USD = 100
# SYNTHETIC: size of every level of the made-up COIN-M book, in contracts (100 USD each)
SYNTHETIC_COINM_LEVEL_QTY = "100"

# Venue metadata: Binance's published BTCUSD_PERP contract spec (not market data).
_BINANCE_COINM_SYMBOL = {
    "symbol": COINM_SYMBOL, "pair": COINM_PAIR, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
    "onboardDate": 1597042800000, "contractStatus": "TRADING", "contractSize": COINM_CONTRACT_USD,
    "marginAsset": "BTC", "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000", "baseAsset": "BTC",
    "quoteAsset": "USD", "pricePrecision": 1, "quantityPrecision": 0, "baseAssetPrecision": 8, "quotePrecision": 8,
    "equalQtyPrecision": 4, "maxMoveOrderLimit": 10000, "triggerProtect": "0.0500", "underlyingType": "COIN",
    "underlyingSubType": ["PoW"],
    "filters": [
        {"minPrice": "1000", "maxPrice": "4520958", "filterType": "PRICE_FILTER", "tickSize": COINM_TICK},
        {"stepSize": "1", "filterType": "LOT_SIZE", "maxQty": "1000000", "minQty": "1"},
        {"stepSize": "1", "filterType": "MARKET_LOT_SIZE", "maxQty": "60000", "minQty": "1"},
        {"limit": 200, "filterType": "MAX_NUM_ORDERS"},
        {"limit": 20, "filterType": "MAX_NUM_ALGO_ORDERS"},
        {"multiplierDown": "0.9500", "multiplierUp": "1.0500", "multiplierDecimal": "4", "filterType": "PERCENT_PRICE"},
    ],
    "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
    "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
    # the emulator's liquidation penalty (VenueConfig default), as /fapi's symbol prints its own
    "liquidationFee": "0.012500", "marketTakeBound": "0.05",
}


def _coinm_symbol(ask: Ask, required: bool) -> bool:
    """True when the request names the contract (symbol BTCUSD_PERP, or pair BTCUSD where COIN-M takes one)."""
    symbol, pair = ask.params.get("symbol"), ask.params.get("pair")
    if symbol is None and pair is None:
        if required:
            raise VenueError(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        return False
    if (symbol is not None and symbol != COINM_SYMBOL) or (pair is not None and pair != COINM_PAIR):
        raise VenueError(400, -1121, "Invalid symbol.")
    return True


def _coinm_info(ask: Ask) -> dict:
    return {"timezone": "UTC", "serverTime": ask.server_ms, "rateLimits": _BINANCE_RATE_LIMITS,
            "exchangeFilters": [], "symbols": [_BINANCE_COINM_SYMBOL]}


def _coinm_premium_index(ask: Ask) -> list:
    """COIN-M premiumIndex: always a list (it may be asked by pair)."""
    _coinm_symbol(ask, required=False)
    return [_binance_premium_row(ask, COINM)]


def _coinm_24hr(ask: Ask) -> list:
    _coinm_symbol(ask, required=False)
    w = _window_24h(ask.tape.prices[INVERSE], ask.now_ms)
    change = w["last"] - w["open"]
    return [{
        "symbol": COINM_SYMBOL, "pair": COINM_PAIR, "priceChange": _dec(round(change, 8), 1),
        "priceChangePercent": _dec(round(100 * change / w["open"], 3), 3),
        "weightedAvgPrice": "0", "lastPrice": _dec(w["last"], 1),  # SYNTHETIC: no volume, no VWAP
        "lastQty": "0", "openPrice": _dec(w["open"], 1), "highPrice": _dec(w["high"], 1),
        "lowPrice": _dec(w["low"], 1), "volume": "0", "baseVolume": "0",  # SYNTHETIC: no volume in the data
        "openTime": ask.now_ms - 24 * MS_PER_HOUR, "closeTime": ask.now_ms, "firstId": -1, "lastId": -1, "count": 0,
    }]


def _coinm_book_ticker(ask: Ask) -> list:
    _coinm_symbol(ask, required=False)
    bid, ask_px = _book_top(ask.tape.prices[INVERSE].price_at(ask.now_ms), COINM_TICK)
    return [{"lastUpdateId": ask.now_ms, "symbol": COINM_SYMBOL, "pair": COINM_PAIR, "bidPrice": _dec(bid, 1),
             "bidQty": SYNTHETIC_COINM_LEVEL_QTY, "askPrice": _dec(ask_px, 1), "askQty": SYNTHETIC_COINM_LEVEL_QTY,
             "time": ask.now_ms}]


def _coinm_price(ask: Ask) -> list:
    _coinm_symbol(ask, required=False)
    return [{"symbol": COINM_SYMBOL, "ps": COINM_PAIR, "price": _dec(ask.tape.prices[INVERSE].price_at(ask.now_ms), 1),
             "time": ask.now_ms}]


def _coinm_depth(ask: Ask) -> dict:
    _coinm_symbol(ask, required=True)
    depth = _limit(_binance_int(ask.params, "limit"), 500, 1000)
    bids, asks = _book(ask.tape.prices[INVERSE].price_at(ask.now_ms), COINM_TICK, depth, 1, SYNTHETIC_COINM_LEVEL_QTY)
    return {"lastUpdateId": ask.now_ms, "symbol": COINM_SYMBOL, "pair": COINM_PAIR, "E": ask.now_ms, "T": ask.now_ms,
            "bids": bids, "asks": asks}


def _coinm_klines(ask: Ask, price: str = "last") -> list:
    """COIN-M klines, markPriceKlines (the COIN-M closes) and indexPriceKlines
    (by ``pair``: the spot closes), as ``_binance_klines``: 1h only, complete
    hours, open = high = low = close; default limit 500, max 1500."""
    if price == "index":
        if ask.params.get("pair") != COINM_PAIR:
            raise VenueError(400, -1121, "Invalid symbol.")
    elif ask.params.get("symbol") != COINM_SYMBOL:
        raise VenueError(400, -1121 if "symbol" in ask.params else -1102,
                         "Invalid symbol." if "symbol" in ask.params else "Mandatory parameter 'symbol' was not sent.")
    places = 1 if price == "last" else 8  # mark and index prices print 8 decimals (the spot close has 2)
    return _binance_kline_rows(ask, ask.tape.prices[SPOT if price == "index" else INVERSE], 1500, places, "0")


def _coinm_order_row(o: Order, ack: bool = False) -> dict:
    """A COIN-M order; quantities in contracts, cumBase the BTC its fills were
    worth, avgPrice the harmonic mean. ``ack``: as of acceptance (see the USD-M row)."""
    filled, base, status = (0.0, 0.0, NEW) if ack else (o.filled, o.base_value, o.status)
    avg = o.inverse_avg(COINM_CONTRACT_USD) if not ack else 0.0
    return {
        "orderId": int(o.id), "symbol": COINM_SYMBOL, "pair": COINM_PAIR, "status": status,
        "clientOrderId": o.client_id, "price": _dec(o.price or 0, 1), "avgPrice": _amt(avg, 1),
        "origQty": _dec(o.qty, 0), "executedQty": _dec(filled, 0), "cumQty": _dec(filled, 0),
        "cumBase": _amt(round(base, 8)), "timeInForce": o.time_in_force, "type": o.type.upper(), "reduceOnly": o.reduce_only,
        "closePosition": False, "side": o.side.upper(), "positionSide": "BOTH", "stopPrice": "0",
        "workingType": "CONTRACT_PRICE", "priceProtect": False, "origType": o.type.upper(), "priceMatch": "NONE",
        "selfTradePreventionMode": "NONE", "time": o.created_ms, "updateTime": o.created_ms if ack else o.updated_ms,
    }


def _coinm_trade_row(t: Trade) -> dict:
    return {"symbol": COINM_SYMBOL, "id": int(t.id), "orderId": int(t.order_id), "pair": COINM_PAIR,
            "side": t.side.upper(), "price": _dec(t.price, 1), "qty": _dec(t.qty, 0),
            "realizedPnl": _amt(t.realized_pnl), "marginAsset": "BTC",
            "baseQty": _amt(round(t.qty * COINM_CONTRACT_USD / t.price, 8)), "commission": _amt(t.fee),
            "commissionAsset": t.fee_asset, "time": t.time_ms, "positionSide": "BOTH", "buyer": t.side == BUY,
            "maker": t.maker}


def _coinm_liq_text(liq: float) -> str:
    """Binance prints 0 where a position has no liquidation price (flat, or a short its BTC covers)."""
    return _amt(round(liq, 8), 1) if math.isfinite(liq) and liq > 0 else "0"


def _coinm_position_row(acc: Accounts) -> dict:
    """/dapi/v1/positionRisk's row: positionAmt in contracts, notionalValue
    signed BTC at the mark, unRealizedProfit BTC, cross margin."""
    venue = "binancecoinm"
    pos = acc.position(venue, INVERSE)
    mark = acc.mark(venue, INVERSE)
    notional = math.copysign(acc.inverse_notional(venue, mark), pos.qty) if pos.qty else 0.0
    liq = acc.inverse_liquidation(venue) if pos.qty else math.nan
    rule = acc.margin_rule(venue, INVERSE)
    return {
        "symbol": COINM_SYMBOL, "positionAmt": _dec(pos.qty, 0), "entryPrice": _amt(round(pos.entry, 8), 1),
        "breakEvenPrice": _amt(round(pos.entry, 8), 1), "markPrice": _dec(mark, 8),
        "unRealizedProfit": _amt(round(acc.inverse_unrealized(venue, mark), 8)), "liquidationPrice": _coinm_liq_text(liq),
        "leverage": str(pos.leverage), "maxQty": f"{rule.tiers[-1].cap:g}", "marginType": "cross",
        "isolatedMargin": "0.00000000", "isAutoAddMargin": "false", "positionSide": "BOTH",
        "notionalValue": _amt(round(notional, 8)), "isolatedWallet": "0", "updateTime": pos.updated_ms,
    }


def _coinm_position_risk(ask: Ask) -> list:
    """COIN-M positionRisk: the contract's row, with or without a position (as the venue lists its symbols)."""
    _coinm_symbol(ask, required=False)
    return [_coinm_position_row(_accounts(ask))]


def _coinm_balances(ask: Ask) -> list[dict]:
    """The COIN-M wallet's assets as /dapi/v1/account lists them: BTC first (the margin of BTCUSD_PERP)."""
    acc = _accounts(ask)
    venue = "binancecoinm"
    w = acc.wallets[venue]
    wallet = w.get("BTC")
    upnl = acc.inverse_unrealized(venue)
    avail = acc.available(venue, "BTC")
    pos_im, ord_im = acc.inverse_initial_margin(venue), acc.inverse_order_margin(venue)
    btc = {
        "asset": "BTC", "walletBalance": _amt(wallet), "unrealizedProfit": _amt(round(upnl, 8)),
        "marginBalance": _amt(round(wallet + upnl, 8)), "maintMargin": _amt(round(acc.inverse_maintenance(venue), 8)),
        "initialMargin": _amt(round(pos_im + ord_im, 8)), "positionInitialMargin": _amt(round(pos_im, 8)),
        "openOrderInitialMargin": _amt(round(ord_im, 8)), "maxWithdrawAmount": _amt(round(max(avail, 0.0), 8)),
        "crossWalletBalance": _amt(wallet), "crossUnPnl": _amt(round(upnl, 8)),
        "availableBalance": _amt(round(avail, 8)), "updateTime": ask.server_ms,
    }
    return [btc, *_binance_other_assets(w, btc)]


def _coinm_account(ask: Ask) -> dict:
    acc = _accounts(ask)
    row = _coinm_position_row(acc)
    pos = acc.position("binancecoinm", INVERSE)
    im = acc.inverse_initial_margin("binancecoinm")
    position = {"symbol": COINM_SYMBOL, "positionAmt": row["positionAmt"], "initialMargin": _amt(round(im, 8)),
                "maintMargin": _amt(round(acc.inverse_maintenance("binancecoinm"), 8)),
                "unrealizedProfit": row["unRealizedProfit"], "positionInitialMargin": _amt(round(im, 8)),
                "openOrderInitialMargin": _amt(round(acc.inverse_order_margin("binancecoinm"), 8)),
                "leverage": row["leverage"], "isolated": False, "positionSide": "BOTH", "entryPrice": row["entryPrice"],
                "breakEvenPrice": row["breakEvenPrice"], "maxQty": row["maxQty"], "notionalValue": row["notionalValue"],
                "isolatedWallet": "0", "updateTime": pos.updated_ms}
    return {"assets": _coinm_balances(ask), "positions": [position], "canDeposit": True, "canTrade": True,
            "canWithdraw": True, "feeTier": 0, "updateTime": ask.server_ms}


def _coinm_balance(ask: Ask) -> list:
    return [{"accountAlias": "SgsR", "asset": r["asset"], "balance": r["walletBalance"],
             "withdrawAvailable": r["maxWithdrawAmount"], "crossWalletBalance": r["crossWalletBalance"],
             "crossUnPnl": r["crossUnPnl"], "availableBalance": r["availableBalance"], "updateTime": r["updateTime"]}
            for r in _coinm_balances(ask)]


def _coinm_leverage_bracket(ask: Ask, v2: bool) -> list:
    """/dapi/v2/leverageBracket (by symbol; what ccxt asks) and /dapi/v1/leverageBracket (by pair)."""
    _coinm_symbol(ask, required=False)
    if v2:
        return [{"symbol": COINM_SYMBOL, "notionalCoef": 1.0, "brackets": _binance_brackets(COINM)}]
    return [{"pair": COINM_PAIR, "brackets": _binance_brackets(COINM)}]


def _coinm_set_leverage(ask: Ask) -> dict:
    lev = _binance_set_leverage(ask, COINM)
    cap = max((b["qtyCap"] for b in _binance_brackets(COINM) if b["initialLeverage"] >= lev), default=0)
    return {"leverage": lev, "maxQty": str(cap), "symbol": COINM_SYMBOL}


USDM = FuturesVenue("binanceusdm", PERP, SYMBOL, "USDT", "/fapi", pair="", account_path="/fapi/v3/account",
                    order_row=_binance_futures_order_row, trade_row=_binance_futures_trade_row,
                    balances=_binance_futures_balances)
COINM = FuturesVenue("binancecoinm", INVERSE, COINM_SYMBOL, "BTC", "/dapi", pair=COINM_PAIR,
                     account_path="/dapi/v1/account", order_row=_coinm_order_row, trade_row=_coinm_trade_row,
                     balances=_coinm_balances)
FUTURES = {fv.venue: fv for fv in (USDM, COINM)}  # by emulator venue (ccxt id)


# ----------------------------------------------------------------- trading: Bybit v5 (unified account)

_BYBIT_STATUS = {NEW: "New", PARTIALLY_FILLED: "PartiallyFilled", FILLED: "Filled", CANCELED: "Cancelled"}


def _bybit_kind(ask: Ask) -> str:
    category = _bybit_category(ask, ("spot", "linear", "inverse"))
    return SPOT if category == "spot" else INVERSE if category == "inverse" else PERP


def _bybit_category_of(kind: str) -> str:
    return "spot" if kind == SPOT else "inverse" if kind == INVERSE else "linear"


def _bybit_refusal(err: AccountError, kind: str) -> VenueError:
    spot = kind == SPOT
    if err.reason == "insufficient":
        return (VenueError(200, 170131, "Insufficient balance.") if spot
                else VenueError(200, 110007, "ab not enough for new order"))
    if err.reason == "duplicate":
        return VenueError(200, 110072, "OrderLinkedID is duplicate")
    if err.reason == "unknown_order":
        return VenueError(200, 110001, "order not exists or too late to cancel")
    if err.reason == "min_notional":
        return (VenueError(200, 170140, "Order value exceeded lower limit.") if spot
                else VenueError(200, 110094, "Order does not meet minimum order value 5USDT"))
    if err.detail.startswith("ReduceOnly"):
        return VenueError(200, 110017, "Reduce-only rule not satisfied")
    if err.reason == "limit":  # an inverse position beyond the shipped risk limit
        return VenueError(200, 110090, "Order would exceed the position's risk limit")
    return VenueError(200, 10001, f"params error: {err.detail}")


def _bybit_decimal(params: Mapping[str, str], name: str, required: bool) -> float | None:
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise VenueError(200, 10001, f"params error: {name} is required")
        return None
    try:
        value = float(raw)
    except ValueError:
        raise VenueError(200, 10001, f"params error: {name} invalid") from None
    if not math.isfinite(value) or value < 0:
        raise VenueError(200, 10001, f"params error: {name} invalid")
    return value


def _bybit_order_row(o: Order, kind: str) -> dict:
    """A spot, linear or inverse order. Inverse (BTCUSD): qty in contracts
    (1 USD), values and fees in BTC, avgPrice the harmonic mean."""
    status = _BYBIT_STATUS.get(o.status)
    if status is None:  # expired: the unfilled rest of a market (IOC) order was cancelled
        status = "PartiallyFilledCanceled" if o.filled > 0 else "Cancelled"
    if kind == INVERSE:
        leaves = o.remaining if o.is_open else 0.0
        symbol, price, qty = BYBIT_INVERSE_SYMBOL, _dec(o.price or 0, 2), _dec(o.qty, 0)
        avg = _amt(o.inverse_avg(1.0), 0) if o.filled else "0"
        leaves_qty, leaves_value = _dec(leaves, 0), _amt(round(leaves / o.price, 8) if leaves and o.price else 0.0, 0)
        cum_qty, cum_value = _dec(o.filled, 0), _amt(round(o.base_value, 8), 0)
    else:
        symbol, price = SYMBOL, _dec(o.price or 0, 2 if kind == SPOT else 1)
        qty = _amt(o.quote_qty if o.quote_qty else o.qty, 0)
        avg = _amt(o.avg_price, 0) if o.filled else ("" if kind == SPOT else "0")
        leaves_qty = _amt(o.remaining if o.is_open else 0.0, 0)
        leaves_value = _amt(round(o.remaining * (o.price or 0), 8) if o.is_open else 0.0, 0)
        cum_qty, cum_value = _amt(o.filled, 0), _amt(o.cost, 0)
    return {
        "orderId": o.id, "orderLinkId": o.client_id, "blockTradeId": "", "symbol": symbol,
        "price": price, "qty": qty, "side": o.side.capitalize(), "isLeverage": "0" if kind == SPOT else "",
        "positionIdx": 0, "orderStatus": status, "cancelType": "UNKNOWN" if o.status != CANCELED else "CancelByUser",
        "rejectReason": "EC_NoError", "avgPrice": avg, "leavesQty": leaves_qty, "leavesValue": leaves_value,
        "cumExecQty": cum_qty, "cumExecValue": cum_value, "cumExecFee": _amt(o.fee, 0),
        "timeInForce": "IOC" if o.type == MARKET else o.time_in_force, "orderType": o.type.capitalize(),
        "stopOrderType": "", "orderIv": "", "marketUnit": ("quoteCoin" if o.quote_qty else "baseCoin")
        if kind == SPOT and o.type == MARKET else "",
        "triggerPrice": "0.00", "takeProfit": "0.00", "stopLoss": "0.00", "tpTriggerBy": "", "slTriggerBy": "",
        "triggerDirection": 0, "triggerBy": "", "lastPriceOnCreated": "", "reduceOnly": o.reduce_only,
        "closeOnTrigger": False, "smpType": "None", "smpGroup": 0, "smpOrderId": "", "tpslMode": "",
        "tpLimitPrice": "", "slLimitPrice": "", "placeType": "", "slippageToleranceType": "UNKNOWN",
        "slippageTolerance": "", "createdTime": str(o.created_ms), "updatedTime": str(o.updated_ms),
        "createType": "CreateByLiq" if o.liquidation else "CreateByUser",
    }


def _bybit_create(ask: Ask) -> dict:
    acc = _accounts(ask)
    kind = _bybit_kind(ask)
    _bybit_symbol(ask, required=True)
    side = ask.params.get("side", "").lower()
    type_ = ask.params.get("orderType", "").lower()
    if side not in (BUY, SELL):
        raise VenueError(200, 10001, "params error: side invalid")
    if type_ not in (MARKET, LIMIT):
        raise VenueError(200, 10001, "params error: orderType invalid")
    qty = _bybit_decimal(ask.params, "qty", True) or 0.0
    price = _bybit_decimal(ask.params, "price", type_ == LIMIT)
    # a UTA spot market buy is sized in quote unless marketUnit says baseCoin (Bybit's default)
    unit = ask.params.get("marketUnit") or ("quoteCoin" if side == BUY else "baseCoin")
    quote_qty = qty if kind == SPOT and type_ == MARKET and unit == "quoteCoin" else None
    tif = ask.params.get("timeInForce") or "GTC"
    try:
        o = acc.place("bybit", kind, side, type_, 0.0 if quote_qty else qty, price if type_ == LIMIT else None,
                      client_id=ask.params.get("orderLinkId") or None,
                      time_in_force="GTC" if tif == "PostOnly" else tif,
                      reduce_only=ask.params.get("reduceOnly", "false").lower() == "true",
                      quote_qty=quote_qty, fill_ratio=_fill_ratio(ask))
    except AccountError as err:
        raise _bybit_refusal(err, kind) from None
    return {"orderId": o.id, "orderLinkId": o.client_id if ask.params.get("orderLinkId") else ""}


def _bybit_cancel(ask: Ask) -> dict:
    kind = _bybit_kind(ask)
    _bybit_symbol(ask, required=True)
    order_id, link_id = ask.params.get("orderId") or None, ask.params.get("orderLinkId") or None
    if order_id is None and link_id is None:
        raise VenueError(200, 10001, "params error: orderId or orderLinkId is required")
    try:
        o = _accounts(ask).cancel("bybit", kind, order_id, link_id)
    except AccountError as err:
        raise _bybit_refusal(err, kind) from None
    return {"orderId": o.id, "orderLinkId": o.client_id}


def _bybit_orders(ask: Ask, history: bool) -> dict:
    """realtime: open orders, or any recent order asked by orderId/orderLinkId;
    history: orders no longer open (or the one asked by id). Newest first."""
    kind = _bybit_kind(ask)
    _bybit_symbol(ask, required=False)
    order_id, link_id = ask.params.get("orderId") or None, ask.params.get("orderLinkId") or None
    orders = _accounts(ask).all_orders("bybit", kind)
    if order_id is not None or link_id is not None:
        rows = [o for o in orders if (order_id is None or o.id == order_id)
                and (link_id is None or o.client_id == link_id)]
    elif history:
        rows = [o for o in orders if not o.is_open]
    else:
        open_only = ask.params.get("openOnly", "0")
        rows = [o for o in orders if o.is_open] if open_only == "0" else []
    limit = _limit(_bybit_int(ask.params, "limit"), 20, 50)
    return {"category": ask.params["category"], "list": [_bybit_order_row(o, kind) for o in rows[::-1][:limit]],
            "nextPageCursor": ""}


def _bybit_execution_row(acc: Accounts, t: Trade, o: Order) -> dict:
    """One execution of order ``o`` (REST /v5/execution/list and the private
    ``execution`` topic). Inverse: contracts of 1 USD, the value in BTC, the
    mark the COIN-M stand-in close."""
    inverse = t.kind == INVERSE

    def qty(x: float) -> str:
        return _dec(x, 0) if inverse else _amt(x, 0)

    return {
        "symbol": BYBIT_INVERSE_SYMBOL if inverse else SYMBOL, "orderId": t.order_id, "orderLinkId": t.client_id,
        "side": t.side.capitalize(), "orderPrice": _dec(o.price or 0, 2), "orderQty": qty(o.qty),
        "leavesQty": qty(o.remaining), "createType": "CreateByLiq" if t.liquidation else "CreateByUser",
        "orderType": o.type.capitalize(), "stopOrderType": "", "execFee": _amt(t.fee, 0),
        "feeCurrency": t.fee_asset, "execId": t.id, "execPrice": _amt(t.price, 0), "execQty": qty(t.qty),
        "execType": "BustTrade" if t.liquidation else "Trade",
        "execValue": _amt(round(t.qty / t.price if inverse else t.qty * t.price, 8), 0),
        "execTime": str(t.time_ms), "isMaker": t.maker, "feeRate": _amt(t.fee_rate, 0), "tradeIv": "",
        "markIv": "", "markPrice": _dec(acc.mark_at(t.time_ms, INVERSE if inverse else PERP), 2),
        "indexPrice": "", "underlyingPrice": "", "blockTradeId": "", "closedSize": "0",
        "seq": int(t.id.split("-")[0], 16),
    }


def _bybit_funding_row(f: FundingPayment, inverse: bool = False) -> dict:
    """One settlement paid, as Bybit lists it among executions (execType Funding):
    ``execFee`` is the funding as a fee (positive: paid, negative: received, so
    ``-amount``), ``feeRate`` the rate, ``side`` the position's side, ``execPrice``
    and ``markPrice`` the mark, ``execValue`` |q| * mark. ccxt 4.5.90's
    fetch_funding_history passes execFee through as the amount. ``inverse``:
    a BTCUSD settlement: execQty in contracts, execValue |q| / mark BTC, the
    fee in BTC."""
    return {
        "symbol": BYBIT_INVERSE_SYMBOL if inverse else SYMBOL, "orderId": f.id, "orderLinkId": "",
        "side": "Buy" if f.qty > 0 else "Sell",
        "orderPrice": "0", "orderQty": "0", "leavesQty": "0", "createType": "", "orderType": "UNKNOWN",
        "stopOrderType": "UNKNOWN", "execFee": _amt(-f.amount if f.amount else 0.0, 0),
        "feeCurrency": "BTC" if inverse else "USDT",
        "execId": f.id, "execPrice": _amt(f.mark, 0), "execQty": _dec(abs(f.qty), 0) if inverse else _amt(abs(f.qty), 0), "execType": "Funding",
        "execValue": _amt(round(abs(f.qty) / f.mark if inverse else abs(f.qty) * f.mark, 8), 0), "execTime": str(f.time_ms), "isMaker": False,
        "feeRate": _rate(f.rate), "tradeIv": "", "markIv": "", "markPrice": _amt(f.mark, 0), "indexPrice": "",
        "underlyingPrice": "", "blockTradeId": "", "closedSize": "0", "seq": int(f.id.split("-")[0], 16),
    }


_BYBIT_EXEC_TYPES = ("Trade", "BustTrade", "Funding")


def _bybit_executions(ask: Ask) -> dict:
    """/v5/execution/list: fills (execType Trade), liquidation fills (BustTrade)
    and, for linear and inverse, settlements paid (Funding); ``execType`` keeps one kind
    (ccxt asks Trade for fetch_my_trades, Funding for fetch_funding_history,
    BustTrade for fetch_my_liquidations). Newest first."""
    kind = _bybit_kind(ask)
    _bybit_symbol(ask, required=False)
    order_id, link_id = ask.params.get("orderId") or None, ask.params.get("orderLinkId") or None
    start, end = _bybit_int(ask.params, "startTime"), _bybit_int(ask.params, "endTime")
    exec_type = ask.params.get("execType") or None
    if exec_type is not None and exec_type not in _BYBIT_EXEC_TYPES:
        return {"category": ask.params["category"], "list": [], "nextPageCursor": ""}  # none of that kind here
    limit = _limit(_bybit_int(ask.params, "limit"), 50, 100)
    acc = _accounts(ask)
    rows: list[tuple[int, int, dict]] = []
    for t in acc.trade_list("bybit", kind):
        if (order_id and t.order_id != order_id) or (link_id and t.client_id != link_id):
            continue
        if exec_type is not None and exec_type != ("BustTrade" if t.liquidation else "Trade"):
            continue
        row = _bybit_execution_row(acc, t, acc.find("bybit", kind, t.order_id))
        rows.append((t.time_ms, row["seq"], row))
    if kind != SPOT and exec_type in (None, "Funding") and not order_id and not link_id:
        rows += [(f.time_ms, int(f.id.split("-")[0], 16), _bybit_funding_row(f, inverse=kind == INVERSE))
                 for f in acc.funding_list("bybit", kind)]
    rows = [r for r in rows if (start is None or r[0] >= start) and (end is None or r[0] <= end)]
    rows.sort(key=lambda r: (r[0], r[1]), reverse=True)
    return {"category": ask.params["category"], "list": [r for _, _, r in rows[:limit]], "nextPageCursor": ""}


def _bybit_positions(ask: Ask) -> dict:
    """Linear and inverse positions. Inverse needs neither symbol nor
    settleCoin: without a symbol it lists the BTCUSD position only while one
    is open (ccxt.pro's position snapshot asks both categories), with
    symbol=BTCUSD the row, open or flat."""
    if _bybit_category(ask, ("linear", "inverse")) == "inverse":
        acc = _accounts(ask)
        listed = _bybit_symbol(ask, required=False) or acc.position("bybit", INVERSE).qty != 0
        rows = [_bybit_position_row(acc, BYBIT_INVERSE)] if listed else []
        return {"category": "inverse", "list": rows, "nextPageCursor": ""}
    if ask.params.get("symbol") is None and ask.params.get("settleCoin") is None:
        raise VenueError(200, 10001, "params error: symbol or settleCoin is required")
    _bybit_symbol(ask, required=False)
    return {"category": "linear", "list": [_bybit_position_row(_accounts(ask), BYBIT_LINEAR)], "nextPageCursor": ""}


def _bybit_position_row(acc: Accounts, bp: BybitPerp) -> dict:
    """The BTCUSDT linear or BTCUSD inverse position (REST /v5/position/list
    and the private ``position`` topic). Linear: size in BTC, isolated
    (tradeMode 1), the risk tier of the value at the entry. Inverse: size in
    contracts (USD), values, PnL and margins in BTC, cross margin (tradeMode 0)
    on the UNIFIED account's BTC, liqPrice by the bybit_inverse rule (cross:
    at the mark) with the shipped BTC tier, the risk tier of the value at the mark."""
    venue = "bybit"
    tiers = cast(MarginRule, MARKETS[(venue, bp.kind)].margin).tiers
    if bp.kind == INVERSE:
        pos, mark = acc.position(venue, INVERSE), acc.mark(venue, INVERSE)
        value = acc.inverse_notional(venue, mark)  # BTC at the mark
        liq = acc.inverse_liquidation(venue) if pos.qty else math.nan
        size, avg = _dec(abs(pos.qty), 0), _amt(round(pos.entry, 8), 0) if pos.qty else "0"
        position_value = _amt(round(abs(pos.qty) / pos.entry, 8) if pos.qty else 0.0, 0)
        # no liquidation price (flat, or a short its BTC covers): ""
        liq_text = _amt(round(liq, 2), 1) if math.isfinite(liq) and liq > 0 else ""
        im, mm = _amt(round(acc.inverse_initial_margin(venue), 8), 0), _amt(round(acc.inverse_maintenance(venue), 8), 0)
        balance, upnl = "0", acc.inverse_unrealized(venue, mark)
    else:
        pos, mark = acc.position(venue), acc.mark(venue)
        value = abs(pos.qty) * pos.entry
        size, avg, position_value = _dec(abs(pos.qty), 3), _amt(pos.entry, 1), _amt(round(value, 8), 0)
        liq_text = _amt(round(acc.liquidation(venue), 2), 1) if pos.qty else ""
        im, mm = _amt(pos.margin, 0), _amt(round(acc.maintenance(venue), 8), 0)
        balance, upnl = _amt(pos.margin, 0), acc.unrealized(venue)
    risk_id = next((i for i, t in enumerate(tiers) if value < t.cap), len(tiers) - 1) + 1
    return {
        "positionIdx": 0, "riskId": risk_id, "riskLimitValue": f"{tiers[risk_id - 1].cap:{bp.cap_format}}",
        "symbol": bp.symbol, "side": "" if pos.qty == 0 else ("Buy" if pos.qty > 0 else "Sell"), "size": size,
        "avgPrice": avg, "positionValue": position_value, "tradeMode": 0 if bp.kind == INVERSE else 1,
        "autoAddMargin": 0, "positionStatus": "Normal", "leverage": str(pos.leverage), "markPrice": _dec(mark, 2),
        "liqPrice": liq_text, "bustPrice": "", "positionIM": im, "positionMM": mm, "positionBalance": balance,
        "tpslMode": "Full", "takeProfit": "0.00", "stopLoss": "0.00", "trailingStop": "0.00",
        "unrealisedPnl": _amt(round(upnl, 8), 0),
        "curRealisedPnl": _amt(pos.realized, 0), "cumRealisedPnl": _amt(pos.realized, 0), "adlRankIndicator": 0,
        "createdTime": str(pos.updated_ms), "updatedTime": str(pos.updated_ms), "seq": pos.updated_ms,
        "isReduceOnly": False, "mmrSysUpdatedTime": "", "leverageSysUpdatedTime": "",
    }


def _bybit_risk_limit(ask: Ask) -> dict:
    """/v5/market/risk-limit: the risk limit tiers from the shipped margin tier
    snapshot (the tables the emulator's liquidation prices use), in v5's shape
    (rates as fractions, riskLimitValue the tier's cap): BTCUSDT (USDT) for
    linear, BTCUSD (BTC) for inverse."""
    category = _bybit_category(ask, ("linear", "inverse"))
    _bybit_symbol(ask, required=False)
    bp = BYBIT_PERPS[category]
    rule = cast(MarginRule, MARKETS[("bybit", bp.kind)].margin)
    rows = [{"id": i + 1, "symbol": bp.symbol, "riskLimitValue": f"{t.cap:{bp.cap_format}}",
             "maintenanceMargin": f"{t.mmr:g}", "initialMargin": f"{1 / t.max_leverage:g}", "isLowestRisk": int(i == 0),
             "maxLeverage": f"{t.max_leverage:.2f}", "mmDeduction": "" if i == 0 else f"{t.amount:g}"}
            for i, t in enumerate(rule.tiers)]
    return {"category": category, "list": rows, "nextPageCursor": ""}


def _bybit_set_leverage(ask: Ask) -> dict:
    kind = BYBIT_PERPS[_bybit_category(ask, ("linear", "inverse"))].kind
    _bybit_symbol(ask, required=True)
    buy, sell = _bybit_decimal(ask.params, "buyLeverage", True), _bybit_decimal(ask.params, "sellLeverage", True)
    assert buy is not None and sell is not None  # required: absent ones were refused
    if buy != sell:
        raise VenueError(200, 10001, "params error: buy leverage must equal sell leverage in one-way mode")
    acc = _accounts(ask)
    if acc.position("bybit", kind).leverage == buy:
        raise VenueError(200, 110043, "leverage not modified")
    if buy != int(buy):
        raise VenueError(200, 10001, "params error: leverage step")  # the emulator keeps whole leverages
    try:
        acc.set_leverage("bybit", int(buy), kind)
    except AccountError:
        raise VenueError(200, 10001, "params error: leverage invalid") from None
    return {}


def _bybit_coin_rows(acc: Accounts) -> list[dict]:
    """The UNIFIED account's coins. USDT carries the linear BTCUSDT position's
    margin and PnL; BTC the inverse BTCUSD position's (in BTC: Bybit's UTA
    margins an inverse contract with its coin)."""
    w = acc.wallets["bybit"]
    pos = acc.position("bybit")
    upnl = acc.unrealized("bybit")
    inv = acc.position("bybit", INVERSE)
    inv_upnl = acc.inverse_unrealized("bybit")
    coins = set(w.total) | {"USDT"} | ({"BTC"} if inv.qty or acc.inverse_order_margin("bybit") else set())
    rows = []
    for coin in sorted(coins):
        total = w.get(coin)
        usdt = coin == "USDT"
        btc = coin == "BTC"
        equity = total + (upnl if usdt else inv_upnl if btc else 0.0)
        rows.append({
            "coin": coin, "equity": _amt(round(equity, 8), 0),
            "usdValue": _amt(round(total if usdt else equity * acc._price_at(SPOT, acc._now_ms()), 8), 0),
            "walletBalance": _amt(total, 0), "free": None, "locked": _amt(w.locked.get(coin, 0.0), 0),
            "spotHedgingQty": "0", "borrowAmount": "0", "availableToWithdraw": "", "accruedInterest": "0",
            "totalOrderIM": _amt(acc.order_margin("bybit") if usdt else
                                 round(acc.inverse_order_margin("bybit"), 8) if btc else 0.0, 0),
            "totalPositionIM": _amt(pos.margin if usdt else
                                    round(acc.inverse_initial_margin("bybit"), 8) if btc else 0.0, 0),
            "totalPositionMM": _amt(round(abs(pos.qty) * acc.mark("bybit") * 0.004, 8) if usdt else
                                    round(acc.inverse_maintenance("bybit"), 8) if btc else 0.0, 0),
            "unrealisedPnl": _amt(round(upnl, 8) if usdt else round(inv_upnl, 8) if btc else 0.0, 0),
            "cumRealisedPnl": _amt(pos.realized if usdt else inv.realized if btc else 0.0, 0), "bonus": "0",
            "marginCollateral": True, "collateralSwitch": True, "availableToBorrow": "",
        })
    for r in rows:
        r.pop("free")  # absent on the real venue: ccxt then derives free = total - used
    return rows


def _bybit_wallet_balance(ask: Ask) -> dict:
    if ask.params.get("accountType") != "UNIFIED":
        raise VenueError(200, 10001, "accountType only support UNIFIED.")
    coin = ask.params.get("coin")
    return {"list": [_bybit_wallet_row(_accounts(ask), set(coin.split(",")) if coin else None)]}


def _ratio(x: float, of: float) -> str:
    return _dec(round(x / of, 4), 4) if of > 0 else "0"


def _bybit_wallet_row(acc: Accounts, wanted: set[str] | None = None) -> dict:
    """The UNIFIED account (REST /v5/account/wallet-balance and the private
    ``wallet`` topic), cross margin, in USD at Binance's spot close:

    - totalEquity: every coin's equity (wallet + its perps' unrealised PnL), no haircut;
    - totalWalletBalance: every coin's wallet balance at its collateral value:
      USDT 1:1, BTC ``collateral_value(BTC, acc.collateral_tiers)`` (Bybit's tiered
      collateral value ratio, ``/v5/spot-margin-trade/collateral``);
    - totalPerpUPL: the linear position's PnL plus the inverse position's (BTC, valued);
    - totalMarginBalance = totalWalletBalance + totalPerpUPL;
    - totalInitialMargin / totalMaintenanceMargin: the linear position and
      orders (USDT) plus the inverse ones (BTC, valued);
    - totalAvailableBalance = totalMarginBalance - totalInitialMargin;
    - accountIMRate / accountMMRate = those margins / totalMarginBalance.

    The account figures cover every coin; ``wanted`` keeps only the coin rows
    asked. Only reported: the linear perp's funds check still counts USDT alone."""
    rows = _bybit_coin_rows(acc)
    coins = [c for c in rows if c["coin"] in wanted] if wanted else rows
    price = acc._price_at(SPOT, acc._now_ms())
    w = acc.wallets["bybit"]
    upnl = acc.unrealized("bybit")
    equity = sum(float(c["usdValue"]) for c in rows) + upnl
    wallet = sum((w.get(c) if c == "USDT" else acc.collateral_btc("bybit") * price if c == "BTC" else w.get(c) * price)
                 for c in w.total)
    perp_upl = upnl + acc.inverse_unrealized("bybit") * price
    margin_balance = wallet + perp_upl
    pos = acc.position("bybit")
    initial = (pos.margin + acc.order_margin("bybit")
               + (acc.inverse_initial_margin("bybit") + acc.inverse_order_margin("bybit")) * price)
    maintenance = (acc.maintenance("bybit") if pos.qty else 0.0) + acc.inverse_maintenance("bybit") * price
    return {
        "accountType": "UNIFIED", "accountIMRate": _ratio(initial, margin_balance),
        "accountMMRate": _ratio(maintenance, margin_balance), "accountLTV": "0",
        "totalEquity": _amt(round(equity, 8), 0), "totalWalletBalance": _amt(round(wallet, 8), 0),
        "totalMarginBalance": _amt(round(margin_balance, 8), 0),
        "totalAvailableBalance": _amt(round(margin_balance - initial, 8), 0),
        "totalPerpUPL": _amt(round(perp_upl, 8), 0),
        "totalInitialMargin": _amt(round(initial, 8), 0),
        "totalMaintenanceMargin": _amt(round(maintenance, 8), 0), "coin": coins,
    }


def _plain(x: float) -> str:
    """A number as plain text without exponent or trailing zeros: 1000000, 0.85."""
    return format(Decimal(repr(float(x))).normalize(), "f")


def _bybit_collateral(ask: Ask) -> dict:
    """/v5/spot-margin-trade/collateral: the tiered collateral value ratio the
    UNIFIED wallet counts its coins at (``currency`` one coin, else all). BTC:
    ``Accounts.collateral_tiers`` (default ``fundarb.config.BYBIT_BTC_COLLATERAL_EXAMPLE``,
    the example of Bybit's API documentation, not a fetched table); USDT 1."""
    tiers = _accounts(ask).collateral_tiers
    btc, floor = [], 0.0
    for cap, ratio in tiers:
        btc.append({"maxQty": "" if math.isinf(cap) else _plain(cap), "minQty": _plain(floor),
                    "collateralRatio": _plain(ratio)})
        floor = cap
    table = {"BTC": btc, "USDT": [{"maxQty": "", "minQty": "0", "collateralRatio": "1"}]}
    currency = ask.params.get("currency")
    if currency is not None and currency not in table:
        raise VenueError(200, 10001, f"params error: currency {currency} is not supported")
    return {"list": [{"currency": c, "collateralRatioList": rows} for c, rows in table.items()
                     if currency is None or c == currency]}


def _bybit_fund_balance(ask: Ask) -> dict:
    if ask.params.get("accountType") != "FUND":
        raise VenueError(200, 10001, "params error: accountType invalid")
    w = _accounts(ask).wallets["bybit:FUND"]
    rows = [{"coin": c, "walletBalance": _amt(w.get(c), 0), "transferBalance": _amt(w.get(c), 0), "bonus": ""}
            for c in sorted(w.total)]
    return {"accountType": "FUND", "memberId": "1000001", "balance": rows}


# Bybit account types the emulator has: the unified trading account and the funding wallet
_BYBIT_WALLETS = {"UNIFIED": "bybit", "FUND": "bybit:FUND"}


def _bybit_transfer(ask: Ask) -> dict:
    src, dst = ask.params.get("fromAccountType"), ask.params.get("toAccountType")
    if src not in _BYBIT_WALLETS or dst not in _BYBIT_WALLETS or src == dst:
        raise VenueError(200, 10001, f"params error: accountType {src} -> {dst} is not supported for a unified account")
    coin = ask.params.get("coin")
    if not coin:
        raise VenueError(200, 10001, "params error: coin is required")
    amount = _bybit_decimal(ask.params, "amount", True) or 0.0
    try:
        _accounts(ask).transfer(_BYBIT_WALLETS[src], _BYBIT_WALLETS[dst], coin, amount)
    except AccountError as err:
        if err.reason == "insufficient":
            raise VenueError(200, 131212, "Insufficient balance") from None
        raise VenueError(200, 10001, f"params error: {err.detail}") from None
    return {"transferId": ask.params.get("transferId") or f"emu-{ask.server_ms}", "status": "SUCCESS"}


# Venue metadata: the coins the emulator's accounts hold (Bybit's published chain data, abridged).
_BYBIT_COINS = [
    {"name": "BTC", "coin": "BTC", "remainAmount": "150", "chains": [
        {"chainType": "BTC", "confirmation": "1", "withdrawFee": "0.0002", "depositMin": "0.0001",
         "withdrawMin": "0.001", "chain": "BTC", "chainDeposit": "1", "chainWithdraw": "1", "minAccuracy": "8",
         "withdrawPercentageFee": "0", "contractAddress": "", "safeConfirmNumber": "1"}]},
    {"name": "USDT", "coin": "USDT", "remainAmount": "5000000", "chains": [
        {"chainType": "Ethereum", "confirmation": "6", "withdrawFee": "4", "depositMin": "0", "withdrawMin": "10",
         "chain": "ETH", "chainDeposit": "1", "chainWithdraw": "1", "minAccuracy": "6",
         "withdrawPercentageFee": "0", "contractAddress": "", "safeConfirmNumber": "6"}]},
]


def _bybit_coin_info(ask: Ask) -> dict:
    coin = ask.params.get("coin")
    return {"rows": [c for c in _BYBIT_COINS if coin is None or c["coin"] == coin]}


# ----------------------------------------------------------------- routing tables

def _binance_futures_routes(fv: FuturesVenue) -> dict[tuple[str, str], Handler]:
    """The routes USD-M and COIN-M answer by one rule, under the venue's prefix."""
    p = fv.prefix
    return {
        ("GET", f"{p}/v1/ping"): _binance_ping,
        ("GET", f"{p}/v1/time"): _binance_time,
        ("POST", f"{p}/v1/order"): signed(lambda a: _binance_futures_create(a, fv)),
        ("GET", f"{p}/v1/order"): signed(lambda a: fv.order_row(_binance_get_order(a, fv.venue, fv.kind))),
        ("DELETE", f"{p}/v1/order"): signed(lambda a: fv.order_row(_binance_cancel(a, fv.venue, fv.kind))),
        ("GET", f"{p}/v1/openOrders"): signed(lambda a: _binance_open_orders(a, fv.venue, fv.kind, fv.order_row)),
        ("GET", f"{p}/v1/userTrades"): signed(lambda a: _binance_trades(a, fv.venue, fv.kind, fv.trade_row)),
        ("GET", f"{p}/v1/income"): signed(lambda a: _binance_income(a, fv)),
        ("GET", f"{p}/v1/forceOrders"): signed(lambda a: _binance_force_orders(a, fv)),
        **{(method, f"{p}/v1/listenKey"): keyed(lambda a: _binance_listen_key(a, fv.venue))
           for method in ("POST", "PUT", "DELETE")},
    }


ROUTES: dict[str, dict[tuple[str, str], Handler]] = {
    "binance": {
        ("GET", "/api/v3/ping"): _binance_ping,
        ("GET", "/api/v3/time"): _binance_time,
        ("GET", "/api/v3/exchangeInfo"): _binance_spot_info,
        ("GET", "/api/v3/ticker/24hr"): lambda a: _binance_24hr(a, SPOT),
        ("GET", "/api/v3/ticker/bookTicker"): lambda a: _binance_book_ticker(a, SPOT),
        ("GET", "/api/v3/ticker/price"): lambda a: _binance_price(a, SPOT),
        ("GET", "/api/v3/depth"): lambda a: _binance_depth(a, SPOT),
        ("GET", "/api/v3/klines"): lambda a: _binance_klines(a, SPOT),
        ("GET", "/api/v3/account"): signed(_binance_spot_account),
        ("POST", "/api/v3/order"): signed(_binance_spot_create),
        ("GET", "/api/v3/order"): signed(lambda a: _binance_spot_order_row(_binance_get_order(a, "binance", SPOT))),
        ("DELETE", "/api/v3/order"): signed(_binance_spot_cancel),
        ("GET", "/api/v3/openOrders"): signed(
            lambda a: _binance_open_orders(a, "binance", SPOT, _binance_spot_order_row)),
        ("GET", "/api/v3/myTrades"): signed(lambda a: _binance_trades(a, "binance", SPOT, _binance_spot_trade_row)),
        ("POST", "/sapi/v1/asset/transfer"): signed(_binance_transfer),
        ("POST", "/api/v3/userDataStream"): keyed(lambda a: _binance_listen_key(a, "binance")),
        ("PUT", "/api/v3/userDataStream"): keyed(lambda a: _binance_listen_key(a, "binance")),
        ("DELETE", "/api/v3/userDataStream"): keyed(lambda a: _binance_listen_key(a, "binance")),
    },
    "binanceusdm": {
        **_binance_futures_routes(USDM),
        ("GET", "/fapi/v1/exchangeInfo"): _binance_perp_info,
        ("GET", "/fapi/v1/premiumIndex"): _binance_premium_index,
        ("GET", "/fapi/v1/fundingRate"): lambda a: _binance_funding_history(a, USDM, symbol_required=False),
        ("GET", "/fapi/v1/ticker/24hr"): lambda a: _binance_24hr(a, PERP),
        ("GET", "/fapi/v1/ticker/bookTicker"): lambda a: _binance_book_ticker(a, PERP),
        ("GET", "/fapi/v1/ticker/price"): lambda a: _binance_price(a, PERP),
        ("GET", "/fapi/v1/depth"): lambda a: _binance_depth(a, PERP),
        ("GET", "/fapi/v1/klines"): lambda a: _binance_klines(a, PERP),
        ("GET", "/fapi/v1/markPriceKlines"): lambda a: _binance_klines(a, PERP, "mark"),
        ("GET", "/fapi/v1/indexPriceKlines"): lambda a: _binance_klines(a, PERP, "index"),
        ("GET", USDM.account_path): signed(_binance_futures_account),
        ("GET", "/fapi/v3/balance"): signed(_binance_futures_balance),
        ("GET", "/fapi/v3/positionRisk"): signed(_binance_position_risk),
        ("GET", "/fapi/v1/leverageBracket"): signed(_binance_leverage_bracket),
        ("POST", "/fapi/v1/leverage"): signed(_usdm_set_leverage),
        ("GET", "/fapi/v1/symbolConfig"): signed(_binance_symbol_config),
    },
    "binancecoinm": {
        **_binance_futures_routes(COINM),
        ("GET", "/dapi/v1/exchangeInfo"): _coinm_info,
        ("GET", "/dapi/v1/premiumIndex"): _coinm_premium_index,
        ("GET", "/dapi/v1/fundingRate"): lambda a: _binance_funding_history(a, COINM, symbol_required=True),
        ("GET", "/dapi/v1/ticker/24hr"): _coinm_24hr,
        ("GET", "/dapi/v1/ticker/bookTicker"): _coinm_book_ticker,
        ("GET", "/dapi/v1/ticker/price"): _coinm_price,
        ("GET", "/dapi/v1/depth"): _coinm_depth,
        ("GET", "/dapi/v1/klines"): _coinm_klines,
        ("GET", "/dapi/v1/markPriceKlines"): lambda a: _coinm_klines(a, "mark"),
        ("GET", "/dapi/v1/indexPriceKlines"): lambda a: _coinm_klines(a, "index"),
        ("GET", COINM.account_path): signed(_coinm_account),
        ("GET", "/dapi/v1/balance"): signed(_coinm_balance),
        ("GET", "/dapi/v1/positionRisk"): signed(_coinm_position_risk),
        ("GET", "/dapi/v2/leverageBracket"): signed(lambda a: _coinm_leverage_bracket(a, v2=True)),
        ("GET", "/dapi/v1/leverageBracket"): signed(lambda a: _coinm_leverage_bracket(a, v2=False)),
        ("POST", "/dapi/v1/leverage"): signed(_coinm_set_leverage),
    },
    "bybit": {
        ("GET", "/v5/market/time"): _bybit_time,
        ("GET", "/v5/market/instruments-info"): _bybit_instruments,
        ("GET", "/v5/market/tickers"): _bybit_tickers,
        ("GET", "/v5/market/orderbook"): _bybit_orderbook,
        ("GET", "/v5/market/kline"): _bybit_kline,
        ("GET", "/v5/market/mark-price-kline"): lambda a: _bybit_kline(a, "mark"),
        ("GET", "/v5/market/index-price-kline"): lambda a: _bybit_kline(a, "index"),
        ("GET", "/v5/market/funding/history"): _bybit_funding_history,
        ("GET", "/v5/market/risk-limit"): _bybit_risk_limit,
        ("GET", "/v5/asset/coin/query-info"): signed(_bybit_coin_info),
        ("GET", "/v5/account/wallet-balance"): signed(_bybit_wallet_balance),
        ("GET", "/v5/spot-margin-trade/collateral"): _bybit_collateral,
        ("GET", "/v5/asset/transfer/query-account-coins-balance"): signed(_bybit_fund_balance),
        ("POST", "/v5/order/create"): signed(_bybit_create),
        ("POST", "/v5/order/cancel"): signed(_bybit_cancel),
        ("GET", "/v5/order/realtime"): signed(lambda a: _bybit_orders(a, history=False)),
        ("GET", "/v5/order/history"): signed(lambda a: _bybit_orders(a, history=True)),
        ("GET", "/v5/execution/list"): signed(_bybit_executions),
        ("GET", "/v5/position/list"): signed(_bybit_positions),
        ("POST", "/v5/position/set-leverage"): signed(_bybit_set_leverage),
        ("POST", "/v5/asset/transfer/inter-transfer"): signed(_bybit_transfer),
    },
}
BINANCE_VENUES = ("binance", "binanceusdm", "binancecoinm")


@dataclass(frozen=True)
class VenueShape:
    """A venue served from a module of its own (``emulator.coinbase``, ...): its
    path prefixes, routes and the way it words answers, errors and faults.

    ``check_signed(ask)`` raises the venue's own ``VenueError`` for a private
    call without its key and signature; ``envelope(body, server_ms)`` wraps a
    successful answer (None: sent as it is); ``error(err, server_ms)`` is the
    body of a refusal (JSON, sent with ``err.status``; or a whole
    ``web.Response``, for a refusal in plain text); ``fault(fault, server_ms)`` answers a programmed
    rate_limit, ip_ban or refuse in the venue's words (None: the Binance-shaped
    default). ``placement`` are the (method, path) pairs that place orders.
    ``path_of(path, params)`` turns a request into the route key, for venues that
    put the operation in the body (one POST path for many calls)."""

    venue: str
    prefixes: tuple[str, ...]
    routes: Mapping[tuple[str, str], Handler]
    check_signed: Callable[[Ask], None]
    error: Callable[[VenueError, int], Any]
    envelope: Callable[[Any, int], Any] | None = None
    fault: Callable[[Fault, int], web.Response | None] | None = None
    placement: frozenset[tuple[str, str]] = frozenset()
    path_of: Callable[[str, Mapping[str, str]], str] | None = None


SHAPES: dict[str, VenueShape] = {}


def register_venue(shape: VenueShape) -> VenueShape:
    """Serve ``shape``'s venue: its routes, prefixes and placement paths join the tables."""
    SHAPES[shape.venue] = shape
    ROUTES[shape.venue] = dict(shape.routes)
    VENUE_PREFIXES.setdefault(shape.venue, shape.prefixes[0])
    for prefix in shape.prefixes[1:]:
        EXTRA_PREFIXES[prefix] = shape.venue
    ORDER_PLACEMENT.update(shape.placement)
    return shape


def venue_of(path: str) -> str | None:
    # a module's venue may own a longer prefix inside another's (Coinbase's /api/v3/brokerage/)
    for shape in SHAPES.values():
        if any(path.startswith(prefix) for prefix in shape.prefixes):
            return shape.venue
    for venue, prefix in VENUE_PREFIXES.items():
        if path.startswith(prefix):
            return venue
    for prefix, venue in EXTRA_PREFIXES.items():
        if path.startswith(prefix):
            return venue
    return None


# ----------------------------------------------------------------- response shapes per venue

def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(body, separators=(",", ":")),
                        content_type="application/json", headers=headers)


def _bybit_envelope(result: Any, server_ms: int, code: int = 0, msg: str = "OK") -> dict:
    return {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": server_ms}


def _error_response(venue: str | None, err: VenueError, server_ms: int) -> web.Response:
    if venue in SHAPES:  # the module's body, or a whole answer (a venue that refuses in plain text)
        body = SHAPES[venue].error(err, server_ms)
        return body if isinstance(body, web.Response) else _json(err.status, body)
    if venue == "bybit":
        return _json(err.status, _bybit_envelope({}, server_ms, int(err.code), err.msg))
    return _json(err.status, {"code": err.code, "msg": err.msg})


def _not_found(venue: str | None, method: str, path: str, server_ms: int) -> web.Response:
    # Binance's code for a path it does not serve is -5000 ("Path ..., Method GET is invalid")
    if venue == "bybit":
        return _error_response(venue, VenueError(404, 10001, f"Path {path}, Method {method} is not served"), server_ms)
    return _error_response(venue, VenueError(404, -5000, f"Path {path}, Method {method} is invalid"), server_ms)


def _fault_response(fault: Fault, venue: str | None, server_ms: int) -> web.Response:
    """The answer a programmed fault gives instead of the data (timeout and
    stale are handled by the caller: they answer data, late or old)."""
    retry = {"Retry-After": str(fault.retry_after_s)}
    shape = SHAPES.get(venue or "")
    if shape is not None and shape.fault is not None and fault.kind in ("rate_limit", "ip_ban", "refuse"):
        worded = shape.fault(fault, server_ms)
        if worded is not None:
            return worded
    if fault.kind == "rate_limit":
        status = fault.status or 429
        if venue == "bybit":
            headers = {**retry, "X-Bapi-Limit-Status": "0", "X-Bapi-Limit": "120",
                       "X-Bapi-Limit-Reset-Timestamp": str(server_ms + 1000 * fault.retry_after_s)}
            return _json(status, _bybit_envelope({}, server_ms, 10006, "Too many visits!"), headers)
        return _json(status, {"code": -1003, "msg": "Too much request weight used; current limit is 6000 request "
                              "weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API."},
                     retry)
    if fault.kind == "ip_ban":
        if venue == "bybit":  # Bybit's IP limit answer is HTTP 403 with a plain-text body
            return web.Response(status=fault.status or 403, text=fault.body or "access too frequent", headers=retry)
        until = server_ms + 1000 * fault.retry_after_s
        return _json(fault.status or 418, {"code": -1003, "msg": f"Way too many requests; IP(127.0.0.1) banned until "
                                           f"{until}. Please use WebSocket Streams for live updates to avoid bans."},
                     retry)
    if fault.kind == "server_error":
        status = fault.status or 502
        # what a load balancer in front of the venue sends: HTML, not the venue's JSON
        text = fault.body or f"<html><head><title>{status}</title></head><body><center><h1>{status}</h1></center></body></html>"
        return web.Response(status=status, text=text, content_type="text/html")
    if fault.kind == "non_json":
        text = fault.body or "<html><body>The service is being upgraded. Please try again later.</body></html>"
        return web.Response(status=fault.status or 200, text=text, content_type="text/html")
    if fault.kind == "refuse":  # the venues' own words for an order the account cannot pay for
        if venue == "bybit":
            return _json(fault.status or 200, _bybit_envelope({}, server_ms, 110007, "ab not enough for new order"))
        return _json(fault.status or 400, {"code": -2010, "msg": fault.body or
                                           "Account has insufficient balance for requested action."})
    raise AssertionError(f"fault {fault.kind} has no canned response")


# ----------------------------------------------------------------- the aiohttp app

class EmulatorApp:
    """The request handler: log, fault, route, render in the venue's shape."""

    def __init__(self, tape: MarketTape, clock: EmulatorClock, faults: FaultPlan, log: RequestLog,
                 accounts: Accounts | None = None) -> None:
        self.tape, self.clock, self.faults, self.log = tape, clock, faults, log
        self.accounts = accounts
        self.stopping = asyncio.Event()

    # callables (aiohttp app, this EmulatorApp) -> None that every build runs before the
    # REST catch-all route, so another module can mount routes (emulator_ws: websockets)
    extensions: list[Callable[[web.Application, EmulatorApp], None]] = []

    def build(self) -> web.Application:
        app = web.Application()
        for extend in self.extensions:
            extend(app, self)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        method, path = request.method, request.path
        params = {k: v for k, v in request.query.items()}
        params.update(await _body_params(request))  # signed POSTs carry their parameters in the body
        headers = request.headers
        venue = venue_of(path)
        shape = SHAPES.get(venue or "")
        if shape is not None and shape.path_of is not None:  # the operation named in the body: its route key
            path = shape.path_of(path, params)
        server_ns = self.clock.now_ns
        server_ms = server_ns // NS_PER_MS

        def logged(status: int | None, fault: str | None) -> None:
            self.log.append(LoggedRequest(method, path, params, venue, status, fault, server_ns))

        async def withheld() -> None:  # sleep past the client's timeout; a stopping server wakes it
            assert fault is not None
            try:
                await asyncio.wait_for(self.stopping.wait(), fault.delay_s)
            except TimeoutError:
                pass

        def answer(data_ns: int) -> web.Response:
            return self._answer(venue, method, path, params, data_ns, server_ms, headers, fault)

        fault = self.faults.take(venue, path, method) if venue is not None else None
        data_ns = server_ns
        if fault is not None and fault.kind == "timeout":
            logged(None, fault.kind)
            await withheld()
            return answer(data_ns)
        if fault is not None and fault.kind == "timeout_after_place":
            # the venue acts on the order (it exists from now on), but the answer never arrives
            response = answer(data_ns)
            logged(None, fault.kind)
            await withheld()
            return response
        if fault is not None and fault.kind == "stale":
            data_ns = min(server_ns, fault.as_of_ns if fault.as_of_ns is not None else server_ns)
        elif fault is not None and fault.kind not in PLACEMENT_FAULTS:
            response = _fault_response(fault, venue, server_ms)
            logged(response.status, fault.kind)
            return response
        response = answer(data_ns)
        logged(response.status, fault.kind if fault is not None else None)
        return response

    def _answer(self, venue: str | None, method: str, path: str, params: dict, data_ns: int,
                server_ms: int, headers: Mapping[str, str] | None = None, fault: Fault | None = None) -> web.Response:
        shape = SHAPES.get(venue or "")
        handler = ROUTES.get(venue or "", {}).get((method, path))
        if handler is None:
            return _not_found(venue, method, path, server_ms)
        ask = Ask(self.tape, params, data_ns // NS_PER_MS, server_ms, path, method, headers or {},
                  self.accounts, fault if fault is not None and fault.kind in PLACEMENT_FAULTS else None)
        try:
            if getattr(handler, "signed", False):
                _check_signed(venue, ask)
            elif getattr(handler, "keyed", False) and not ask.headers.get("X-MBX-APIKEY"):
                raise VenueError(401, -2014, "API-key format invalid.")
            body = handler(ask)
        except VenueError as err:
            return _error_response(venue, err, server_ms)
        if venue == "bybit":
            body = _bybit_envelope(body, server_ms)
        elif shape is not None and shape.envelope is not None:
            body = shape.envelope(body, server_ms)
        return _json(200, body)


class EmulatorServer:
    """The emulator on 127.0.0.1 in a background thread with its own event
    loop, so synchronous ccxt code can call it. Use as a context manager::

        with EmulatorServer(start="2024-01-10T08:00") as server:
            ex = point_ccxt(ccxt.binanceusdm(ccxt_config("binanceusdm")), server.base_url)
            ex.fetch_funding_rate("BTC/USDT:USDT")
    """

    def __init__(self, host: str = LOOPBACK_HOST, port: int = 0, start: str | int | None = None,
                 seed: int = 0, data_dir: Path | None = None) -> None:
        if host != LOOPBACK_HOST:
            raise ValueError(f"the emulator binds {LOOPBACK_HOST} only, not {host!r}")
        if not 0 <= int(port) <= 65535:
            raise ValueError(f"port {port} is not a TCP port")
        self.host, self._port = host, int(port)
        self.tape = load_tape(data_dir or SHIPPED_DIR)
        start_ns = parse_time(start or DEFAULT_START, "start") if not isinstance(start, int) else start
        self.clock = EmulatorClock(start_ns, self.tape.first_ns, self.tape.last_ns)
        self.faults = FaultPlan(self.clock, seed)
        self.log = RequestLog()
        # wallets, orders, positions; fills draw their slippage from the same seed
        self.accounts = Accounts(lambda market, ms: self.tape.prices[market].price_at(ms),
                                 lambda: self.clock.now_ns // NS_PER_MS, seed,
                                 settlements=lambda venue, after, upto: self.tape.funding[venue].between(after, upto),
                                 marks_between=lambda after, upto: self.tape.prices[PERP].between(after, upto),
                                 inverse_marks_between=lambda after, upto: self.tape.prices[INVERSE].between(after, upto))
        self.clock.listeners.append(lambda ns: self.accounts.on_clock(ns // NS_PER_MS))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._app: EmulatorApp | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.bound: tuple[str, int] | None = None

    # clock
    @property
    def now_ns(self) -> int:
        return self.clock.now_ns

    def set_time(self, when: int | str) -> None:
        """Move now to ``when`` (ns, or an ISO time, UTC unless it says otherwise)."""
        self.clock.set(parse_time(when, "emulator time") if isinstance(when, str) else when)

    def advance(self, ns: int) -> int:
        return self.clock.advance(ns)

    def advance_hours(self, hours: float) -> int:
        return self.clock.advance(int(hours * NS_PER_HOUR))

    # lifecycle
    @property
    def port(self) -> int:
        if self.bound is None or self._thread is None:
            raise RuntimeError("the emulator is not running")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("the emulator is already started")
        self._thread = threading.Thread(target=self._serve, name="fundarb-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the emulator did not start within 10 s")
        if self.bound is None:
            self._thread = None
            raise RuntimeError(f"the emulator could not bind {self.host}:{self._port}: {self._error}") from self._error
        return self

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._bind())
        except OSError as exc:  # e.g. the port is taken: start() reports it
            self._error = exc
            if self._runner is not None:
                loop.run_until_complete(self._runner.cleanup())
        finally:
            self._ready.set()
        if self.bound is None:
            loop.close()
            return
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._unbind())
            loop.close()

    async def _bind(self) -> None:
        self._app = EmulatorApp(self.tape, self.clock, self.faults, self.log, self.accounts)
        self._runner = web.AppRunner(self._app.build(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port)
        await site.start()
        self.bound = tuple(self._runner.addresses[0][:2])  # what the OS actually bound: (host, port)
        self._port = self.bound[1]

    async def _unbind(self) -> None:
        if self._app is not None:
            self._app.stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        if self._thread is None:
            return
        loop = self._loop
        if loop is not None and loop.is_running():
            if self._app is not None:
                loop.call_soon_threadsafe(self._app.stopping.set)
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._thread = None
        self._runner = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------- pointing ccxt at it

# Options that keep ccxt to the endpoints the emulator serves: no sapi
# currency/margin calls, no COIN-M or option market lists.
importlib.import_module("fundarb.testkit.emulator.hyperliquid")  # registers the venue; by name, as below

# imported by name: a static import of a module that imports this one is an import cycle (.importlinter)
importlib.import_module("fundarb.testkit.emulator.coinbase")  # registers the venue
importlib.import_module("fundarb.testkit.emulator.kraken")  # registers the venue
