"""The live market data of one instrument on one venue, from an async ccxt.pro
client the caller has built (and pointed: this module never makes a client).

:class:`MarketFeed` turns what the venue says into ``core.model`` events and
hands each to ``on_event``; ``venue`` on every event is the feed's
``account`` (e.g. ``"binanceusdm:perp"``). ``ts`` is the venue's timestamp
(ns) where the message carries one, else ``now_ns()`` at receipt.

What is emitted, from which call
--------------------------------
Two streams run side by side as tasks: **quote** (every instrument) and
**funding** (perps only).

- ``Quote(bid, ask, bid_size, ask_size)``. Websocket: ``watch_bids_asks``
  (Binance spot and USD-M ``<sym>@bookTicker``; Bybit ``orderbook.1``),
  because the tickers lack the book top there: ccxt.pro 4.5.90's Binance
  ``watch_ticker`` subscribes the mini ticker (no bid/ask), USD-M's 24 h
  ticker has none at all, nor does Bybit's spot ticker. A venue without
  ``watchBidsAsks`` is watched with ``watch_ticker``. REST polling:
  ``fetch_bids_asks([symbol])`` where ccxt has it natively (Binance:
  ``/ticker/bookTicker``), else ``fetch_ticker`` (Bybit ``/v5/market/tickers``;
  Coinbase, whose native one needs a key: ``fundarb.venues``' ``quote_poll``).
  Binance spot's book ticker carries no time, so those quotes are stamped
  ``now_ns()``.
- ``MarkPrice(mark)`` and ``FundingRate(rate, interval_hours,
  next_funding_ts, predicted_rate)`` for perps. Websocket: Binance USD-M
  ``watch_mark_price`` (``<sym>@markPrice@1s``; there is no
  ``watch_funding_rate`` (ccxt 4.5.90): the rate is ``info['r']``, the next
  settlement ``info['T']``); Bybit ``watch_ticker`` (``tickers.<sym>``: info
  ``markPrice``, ``fundingRate``, ``nextFundingTime``). REST polling:
  ``fetch_funding_rate`` (``markPrice``, ``fundingRate``, the venue's next
  funding time, ``interval`` when given). The interval is the message's, else
  the market's ``fundingInterval`` (Bybit, minutes), else the last one seen,
  else 8 h (Binance publishes one only for symbols it changed).
  ``predicted_rate`` equals ``rate``: on both venues the live funding field is
  the running estimate of the next settlement, which is what the strategy's
  predicted-rate signal wants.
- ``IndexPrice(index)`` for perps, from the same message when it carries the
  venue's index: Binance ``markPriceUpdate`` ``i`` (ccxt ``indexPrice``),
  Bybit linear ``tickers`` ``indexPrice``, REST ``fetch_funding_rate``
  ``indexPrice`` (Binance ``premiumIndex``). Emitted before the mark of the
  same message, so the mark is judged against it (the engine's market guard).

Values are checked before they are emitted (ccxt 4.5.90: an HTTP 200 with a
non-JSON body gives ``None`` fields): prices (the index too) finite and > 0, bid <= ask, sizes
finite and >= 0 (a missing size is sent as 0.0), a finite rate under 100 % and
a next funding time. A bad value is dropped and recorded in ``errors``; a websocket
message without bid/ask (another ticker kind) is skipped quietly, a REST answer
without them is an error.

Reconnect policy
----------------
Any exception from a ``watch_*`` call is a drop (ccxt.pro raises
``NetworkError`` on a close or reset, ``RequestTimeout`` when its keep-alive
finds a silent socket). The stream goes RECONNECTING, waits
``reconnect_delay_s * 2**(n-1)`` capped at ``max_reconnect_delay_s`` (no
jitter; ``fundarb.support.backoff.BackoffPolicy``), and watches again
(ccxt.pro reconnects and resubscribes). After the drop and
``MAX_FAILED_RECONNECTS`` (3) failed reconnects in a row it polls REST
(POLLING) and tries the websocket again every ``ws_retry_s`` (60 s), polling
on while it tries (a connect may hang until its timeout). When a
stream that had delivered delivers over the websocket again, it is STREAMING;
once every dropped stream is back (a shared connection drops both streams at
once, and that is one outage), ``reconnects += 1`` and ``on_reconnect(account)``
is awaited, once per recovery; its failure is recorded, never raised.
A socket can also stay open while its watches stop resolving (seen after a
burst of non-JSON frames; ccxt.pro's keep-alive still gets its pongs). The
watchdog on data age catches it: with ``max_silence_s`` (seconds, or a
callable giving the limit now, e.g. tighter near a settlement; None: off), a
watch that brings nothing for that long declares the stream stale:
``stale += 1``, ``on_stale(account, stream, seconds)`` is called, the
exchange's websocket clients are torn down (the next watch opens a new
connection and subscribes again), and the stream polls REST (POLLING, so it
is no longer reported as streaming) while it retries the websocket, as
after failed reconnects. Its return counts as a recovery (``on_reconnect``).
REST failures while polling are recorded and retried with the same back-off
(never faster than ``poll_interval_s``). ``run`` raises only for errors that no
retry can heal (bad symbol, bad keys, unsupported call) and for exceptions from
``on_event`` (the caller's own).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import ccxt

from fundarb.core.model import FundingRate, IndexPrice, MarketKind, MarkPrice, Quote
from fundarb.support.backoff import BackoffPolicy
from fundarb.support.scrub import describe, scrub_logger
from fundarb.venues import quirks_or_plain

log = logging.getLogger(__name__)  # the runner's JSON log when it runs (app.runner.logs)
scrub_logger(log)  # whatever handler takes its records gets them scrubbed

NS_PER_MS = 1_000_000
MAX_FAILED_RECONNECTS = 3
WS_RETRY_S = 60.0
MAX_ERRORS = 20
MAX_ERROR_CHARS = 400
DEFAULT_FUNDING_INTERVAL_H = 8.0
# errors no retry can heal: configuration, not the network
FATAL_ERRORS = (ccxt.AuthenticationError, ccxt.BadSymbol, ccxt.NotSupported, ccxt.ArgumentsRequired)
# query parameters that may carry credentials in an error message's URL
_SECRET_PARAMS = re.compile(r"(?i)(signature|api_?key|secret|listen_?key|token|passphrase)=[^&\s\"']+")


class FeedState(str, Enum):
    CONNECTING = "connecting"
    STREAMING = "streaming"
    POLLING = "polling"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"


class _Silent(Exception):
    """A watch brought nothing within the feed's silence limit."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no data for {seconds:.1f} s")
        self.seconds = seconds


# a ccxt method with its positional arguments
Call = tuple[Callable[..., Awaitable[Any]], tuple[Any, ...]]


@dataclass
class _Stream:
    name: str
    watch: Call | None  # None: the venue has no stream for it, so it is polled
    fetch: Call
    handle: Callable[[Any, bool], None]  # (answer, came from REST)
    state: FeedState = FeedState.CONNECTING
    streamed: bool = False  # its websocket has delivered at least once


# ----------------------------------------------------------------- values

def quote_problem(bid: float, ask: float, bid_size: float | None = None,
                  ask_size: float | None = None) -> str | None:
    """Why a top of book cannot be used, or None when it can."""
    for name, price in (("bid", bid), ("ask", ask)):
        if not math.isfinite(price) or price <= 0:
            return f"{name} {price!r} is not a finite positive price"
    if bid > ask:
        return f"crossed book: bid {bid!r} > ask {ask!r}"
    for name, size in (("bid size", bid_size), ("ask size", ask_size)):
        if size is not None and (not math.isfinite(size) or size < 0):
            return f"{name} {size!r} is not a finite size >= 0"
    return None


def _num(value: Any) -> float | None:
    """A number from a ccxt field: None when absent, NaN when unreadable (so
    validation drops it rather than mistaking it for absent)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _int_ms(value: Any) -> int | None:
    number = _num(value)
    return int(number) if number is not None and math.isfinite(number) and number > 0 else None


def _interval_hours(value: Any) -> float | None:
    """ccxt's funding ``interval`` ("8h", "60m") or a number of hours."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([hm]?)\s*", value)
        if not match:
            return None
        amount = float(match.group(1))
        return amount / 60 if match.group(2) == "m" else amount
    hours = _num(value)
    return hours if hours is not None and math.isfinite(hours) and hours > 0 else None


def _info(answer: dict) -> dict:
    # a non-JSON 200 leaves the raw text in 'info'
    info = answer.get("info")
    return info if isinstance(info, dict) else {}


def _describe(exc: BaseException) -> str:
    return describe(exc)


# ----------------------------------------------------------------- the feed

class MarketFeed:
    """Quotes (and for perps mark price and funding) of one instrument; see
    the module docstring for the calls per venue and the reconnect policy."""

    def __init__(self, exchange: Any, *, account: str, symbol: str, kind: MarketKind | str,
                 on_event: Callable[[object], None],
                 on_reconnect: Callable[[str], Awaitable[None] | None] | None = None,
                 use_websocket: bool | None = None,
                 poll_interval_s: float = 1.0, reconnect_delay_s: float = 0.5, max_reconnect_delay_s: float = 10.0,
                 stale_after_s: float = 30.0,
                 call: Callable[..., Awaitable[Any]] | None = None,
                 now_ns: Callable[[], int] = time.time_ns,
                 ws_retry_s: float = WS_RETRY_S,
                 unstamped_ns: Callable[[], int] | None = None,
                 max_silence_s: float | Callable[[], float | None] | None = None,
                 on_stale: Callable[[str, str, float], None] | None = None) -> None:
        self.exchange, self.account, self.symbol, self.kind = exchange, account, symbol, MarketKind(kind)
        self._on_event, self._on_reconnect = on_event, on_reconnect
        self.poll_interval_s, self.reconnect_delay_s = poll_interval_s, reconnect_delay_s
        self.max_reconnect_delay_s, self.stale_after_s, self.ws_retry_s = max_reconnect_delay_s, stale_after_s, ws_retry_s
        BackoffPolicy(base=reconnect_delay_s, cap=max_reconnect_delay_s)  # bad delays fail here, not at the first drop
        self._call = call or _direct_call
        self._now = now_ns
        # the time given to an answer the venue did not stamp (default: our clock;
        # the runner, on the venue's clock, says "the last venue time")
        self._unstamped = unstamped_ns or now_ns
        self.reconnects = 0
        self._max_silence, self._on_stale = max_silence_s, on_stale
        self.stale = 0  # times a stream was declared stale by the watchdog on data age
        self.last_event_ns = 0  # our clock (now_ns) at the last emit, not the venue's: staleness is ours to judge
        self.errors: list[str] = []
        self._interval_h = DEFAULT_FUNDING_INTERVAL_H
        self._streams = self._build_streams()
        self.use_websocket = self._choose_websocket(use_websocket)
        self._down: set[str] = set()  # streams dropped since the last recovery
        self._running = False

    # ------------------------------------------------------------- public

    @property
    def state(self) -> FeedState:
        """The worst of the streams' states (STOPPED when not running)."""
        if not self._running:
            return FeedState.STOPPED
        states = {s.state for s in self._streams}
        for worst in (FeedState.RECONNECTING, FeedState.POLLING, FeedState.CONNECTING):
            if worst in states:
                return worst
        return FeedState.STREAMING

    def is_down(self, now_ns: int) -> bool:
        """Cannot (re)connect, or polling REST without an answer for
        ``stale_after_s``. A quiet websocket is not down: a calm market (or
        the emulator with its clock still) may send nothing for a while."""
        state = self.state
        return state in (FeedState.RECONNECTING, FeedState.CONNECTING) or (
            state is FeedState.POLLING and self.is_stale(now_ns))

    def is_stale(self, now_ns: int) -> bool:
        """True when nothing was emitted for ``stale_after_s`` (or ever)."""
        return self.last_event_ns == 0 or now_ns - self.last_event_ns > self.stale_after_s * 1e9

    async def run(self) -> None:
        """Run every stream until cancelled (state STOPPED afterwards)."""
        self._running = True
        tasks = [asyncio.create_task(self._run_stream(s), name=f"feed {self.account} {s.name}")
                 for s in self._streams]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._running = False

    # ------------------------------------------------------------- which calls

    def _has(self, capability: str) -> bool:
        return bool(self.exchange.has.get(capability))

    def _build_streams(self) -> list[_Stream]:
        ex, sym = self.exchange, self.symbol
        if self._has("watchBidsAsks"):
            quote_watch: Call | None = (ex.watch_bids_asks, ([sym],))
        else:
            quote_watch = (ex.watch_ticker, (sym,)) if self._has("watchTicker") else None
        # only a native fetchBidsAsks: Bybit's 'emulated' one downloads every ticker of the category; and
        # not where it needs a key (Coinbase's best_bid_ask): the public ticker has the book's top there
        native = ex.has.get("fetchBidsAsks") is True and quirks_or_plain(ex.id).quote_poll != "fetch_ticker"
        quote_fetch: Call = (ex.fetch_bids_asks, ([sym],)) if native else (ex.fetch_ticker, (sym,))
        streams = [_Stream("quote", quote_watch, quote_fetch, self._handle_quote)]
        if self.kind is MarketKind.PERP:
            if self._has("watchMarkPrice"):  # Binance: the mark price stream carries the funding
                funding_watch: Call | None = (ex.watch_mark_price, (sym,))
            else:  # Bybit: the ticker carries mark and funding
                funding_watch = (ex.watch_ticker, (sym,)) if self._has("watchTicker") else None
            streams.append(_Stream("funding", funding_watch, (ex.fetch_funding_rate, (sym,)), self._handle_funding))
        return streams

    def _choose_websocket(self, wanted: bool | None) -> bool:
        available = all(s.watch is not None for s in self._streams)
        if wanted and not available:
            missing = [s.name for s in self._streams if s.watch is None]
            raise ValueError(f"{self.exchange.id} has no websocket for the {', '.join(missing)} stream of {self.symbol}")
        return available if wanted is None else wanted

    # ------------------------------------------------------------- the loops

    async def _run_stream(self, s: _Stream) -> None:
        if self.use_websocket and s.watch is not None:
            await self._stream_ws(s)
        else:
            await self._poll(s)

    async def _stream_ws(self, s: _Stream) -> None:
        fn, args = s.watch  # type: ignore[misc]
        failures = 0  # the drop, then each failed reconnect
        while True:
            try:
                answer = await self._bounded(fn, args)
            except _Silent as silent:
                failures = 0
                await self._declare_stale(s, silent.seconds)
                answer = await self._fall_back(s)
            except Exception as exc:  # noqa: BLE001 - any failure of a watch is a drop; fatal ones re-raised
                _raise_if_fatal(exc)
                failures += 1
                self._went_down(s, exc)
                if failures <= MAX_FAILED_RECONNECTS:
                    await asyncio.sleep(self.backoff.delay(failures - 1))
                    continue
                answer = await self._fall_back(s)
            failures = 0
            await self._came_back(s)
            s.handle(answer, False)

    async def _fall_back(self, s: _Stream) -> Any:
        """Poll REST until the websocket answers again; retry it every
        ``ws_retry_s``. Polling goes on during a retry, so a connect that hangs
        until its timeout leaves no gap. Returns the websocket's first answer."""
        fn, args = s.watch  # type: ignore[misc]
        poller = asyncio.create_task(self._poll(s), name=f"feed {self.account} {s.name} fallback")
        try:
            while True:
                done, _ = await asyncio.wait({poller}, timeout=self.ws_retry_s)
                if done:
                    poller.result()  # only a fatal error ends the poller: raise it here
                try:
                    return await self._bounded(fn, args)
                except _Silent as silent:
                    self._error(f"{s.name} websocket retry: no data for {silent.seconds:.1f} s")
                    await self._restart_sockets()
                except Exception as exc:  # noqa: BLE001 - still down: keep polling; fatal ones re-raised
                    _raise_if_fatal(exc)
                    self._error(f"{s.name} websocket retry: {_describe(exc)}")
        finally:
            poller.cancel()
            await asyncio.wait({poller})  # unlike awaiting it, this never swallows our own cancellation

    def _silence_limit(self) -> float | None:
        limit = self._max_silence() if callable(self._max_silence) else self._max_silence
        return limit if limit and limit > 0 else None

    async def _bounded(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> Any:
        """One watch, raising ``_Silent`` when it brings nothing within the silence limit."""
        limit = self._silence_limit()
        if limit is None:
            return await fn(*args)
        task = asyncio.ensure_future(fn(*args))
        try:
            done, _ = await asyncio.wait({task}, timeout=limit)
        except BaseException:
            task.cancel()
            raise
        if not done:
            task.cancel()
            await asyncio.wait({task})
            raise _Silent(limit)
        return task.result()

    async def _declare_stale(self, s: _Stream, seconds: float) -> None:
        """The watchdog: the stream's websocket brought nothing for ``seconds``."""
        self.stale += 1
        s.state = FeedState.POLLING
        self._down.add(s.name)  # its return is a recovery: the caller reconciles
        self._error(f"{s.name} websocket: stale, no data for {seconds:.1f} s; resubscribing, polling REST meanwhile")
        if self._on_stale is not None:
            try:
                self._on_stale(self.account, s.name, seconds)
            except Exception as exc:  # noqa: BLE001 - a failed alert must not stop the prices
                self._error(f"on_stale: {_describe(exc)}")
        await self._restart_sockets()

    async def _restart_sockets(self) -> None:
        """Tear down the exchange's websocket connections as a keep-alive timeout
        would: pending watches fail, the next watch connects and subscribes anew."""
        for client in list((getattr(self.exchange, "clients", None) or {}).values()):
            try:
                client.on_error(ccxt.RequestTimeout("no data within the feed's silence limit"))
            except Exception as exc:  # noqa: BLE001 - best effort: the fallback polls anyway
                self._error(f"websocket restart: {_describe(exc)}")
        await asyncio.sleep(0)

    async def _poll(self, s: _Stream) -> None:
        """Poll REST for ever, backing off while it fails."""
        s.state = FeedState.POLLING
        failures = 0
        while True:
            failures = await self._poll_once(s, failures)
            await asyncio.sleep(max(self.poll_interval_s, self.backoff.delay(failures - 1)) if failures else self.poll_interval_s)

    async def _poll_once(self, s: _Stream, failures: int) -> int:
        """One REST read; returns the count of failures in a row."""
        fn, args = s.fetch
        try:
            answer = await self._call(fn, *args)
        except Exception as exc:  # noqa: BLE001 - network, HTTP status, parse: retried; fatal ones re-raised
            _raise_if_fatal(exc)
            self._error(f"{s.name} REST {getattr(fn, '__name__', 'call')}: {_describe(exc)}")
            return failures + 1
        s.handle(answer, True)
        return 0

    @property
    def backoff(self) -> BackoffPolicy:
        """The wait after the n-th failure in a row is ``backoff.delay(n - 1)``."""
        return BackoffPolicy(base=self.reconnect_delay_s, cap=self.max_reconnect_delay_s)

    # ------------------------------------------------------------- drops and recoveries

    def _went_down(self, s: _Stream, exc: Exception) -> None:
        s.state = FeedState.RECONNECTING
        if s.streamed:  # a first connection that fails is not a drop to recover from
            self._down.add(s.name)
        self._error(f"{s.name} websocket: {_describe(exc)}")

    async def _came_back(self, s: _Stream) -> None:
        s.state = FeedState.STREAMING
        s.streamed = True
        if s.name not in self._down:
            return
        self._down.discard(s.name)
        # one drop of a shared connection takes both streams down: one recovery, when the last is back
        if any(o.state is FeedState.RECONNECTING for o in self._streams if o.name in self._down):
            return
        self.reconnects += 1
        log.info("%s %s: websocket back (reconnect %d)", self.account, self.symbol, self.reconnects)
        await self._notify_reconnect()

    async def _notify_reconnect(self) -> None:
        if self._on_reconnect is None:
            return
        try:
            result = self._on_reconnect(self.account)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # noqa: BLE001 - a failed reconcile must not stop the prices
            self._error(f"on_reconnect: {_describe(exc)}")

    # ------------------------------------------------------------- messages to events

    def _ticker_of(self, answer: Any) -> dict | None:
        """The ticker of our symbol from a ticker or a {symbol: ticker} map."""
        if not isinstance(answer, dict):
            return None
        if "symbol" in answer:
            return answer
        ticker = answer.get(self.symbol)
        return ticker if isinstance(ticker, dict) else None

    def _ts(self, answer: dict) -> int:
        ms = _int_ms(answer.get("timestamp"))
        return ms * NS_PER_MS if ms is not None else self._unstamped()

    def _handle_quote(self, answer: Any, from_rest: bool) -> None:
        ticker = self._ticker_of(answer)
        bid, ask = (None, None) if ticker is None else (_num(ticker.get("bid")), _num(ticker.get("ask")))
        if bid is None or ask is None:
            if from_rest:  # the REST call is meant to answer them (ccxt 4.5.90: a non-JSON 200 gives None)
                self._error(f"quote: the {self.exchange.id} answer has no bid/ask")
            return
        assert ticker is not None  # no ticker gives no bid and ask
        bid_size, ask_size = _num(ticker.get("bidVolume")), _num(ticker.get("askVolume"))
        problem = quote_problem(bid, ask, bid_size, ask_size)
        if problem:
            self._error(f"quote dropped: {problem}")
            return
        self._emit(Quote(self._ts(ticker), self.account, bid, ask,
                         0.0 if bid_size is None else bid_size, 0.0 if ask_size is None else ask_size))

    def _handle_funding(self, answer: Any, from_rest: bool) -> None:
        ticker = self._ticker_of(answer)
        if ticker is None:
            if from_rest:
                self._error(f"funding: the {self.exchange.id} answer is not a funding rate")
            return
        info, ts = _info(ticker), self._ts(ticker)
        mark = _first(_num(ticker.get("markPrice")), _num(info.get("markPrice")), _num(info.get("p")))
        index = _first(_num(ticker.get("indexPrice")), _num(info.get("indexPrice")), _num(info.get("i")))
        rate = _first(_num(ticker.get("fundingRate")), _num(info.get("r")), _num(info.get("fundingRate")))
        # the venue's own next-settlement field first: ccxt's fundingTimestamp means it on Binance and Bybit
        next_ms = _first(_int_ms(info.get("T")), _int_ms(info.get("nextFundingTime")),
                         _int_ms(ticker.get("fundingTimestamp")), _int_ms(ticker.get("nextFundingTimestamp")))
        if mark is None and rate is None:
            if from_rest:
                self._error(f"funding: the {self.exchange.id} answer has no mark price or rate")
            return
        self._emit_index(ts, index)
        self._emit_mark(ts, mark)
        self._emit_rate(ts, rate, next_ms, self._funding_interval(ticker))

    def _emit_mark(self, ts: int, mark: float | None) -> None:
        if mark is None:
            return
        if not math.isfinite(mark) or mark <= 0:
            self._error(f"mark price dropped: {mark!r} is not a finite positive price")
            return
        self._emit(MarkPrice(ts, self.account, mark))

    def _emit_index(self, ts: int, index: float | None) -> None:
        if index is None:  # not every message carries it: nothing to say
            return
        if not math.isfinite(index) or index <= 0:
            self._error(f"index price dropped: {index!r} is not a finite positive price")
            return
        self._emit(IndexPrice(ts, self.account, index))

    def _emit_rate(self, ts: int, rate: float | None, next_ms: int | None, interval_h: float) -> None:
        if rate is None:
            return
        if not math.isfinite(rate) or abs(rate) >= 1 or next_ms is None:
            self._error(f"funding rate dropped: rate {rate!r}, next funding {next_ms!r} ms")
            return
        self._emit(FundingRate(ts, self.account, rate, interval_h, next_ms * NS_PER_MS, rate))

    def _funding_interval(self, answer: dict) -> float:
        hours = _interval_hours(answer.get("interval"))
        if hours is None:
            market = (getattr(self.exchange, "markets", None) or {}).get(self.symbol) or {}
            minutes = _num(_info(market).get("fundingInterval"))  # Bybit instruments-info: minutes
            hours = minutes / 60 if minutes is not None and math.isfinite(minutes) and minutes > 0 else None
        if hours is not None:
            self._interval_h = hours
        return self._interval_h

    # ------------------------------------------------------------- out

    def _emit(self, event: object) -> None:
        self.last_event_ns = self._now()
        self._on_event(event)

    def _error(self, text: str) -> None:
        text = self._scrub(text)[:MAX_ERROR_CHARS]  # scrubbed whole first: a cut must not split a secret
        log.warning("%s %s: %s", self.account, self.symbol, text)
        self.errors.append(text)
        del self.errors[:-MAX_ERRORS]

    def _scrub(self, text: str) -> str:
        """No credential reaches ``errors`` or the log, even inside a URL."""
        text = _SECRET_PARAMS.sub(lambda m: f"{m.group(1)}=***", text)
        for name in ("apiKey", "secret", "password", "uid", "privateKey", "token"):
            value = getattr(self.exchange, name, None)
            if isinstance(value, str) and len(value) >= 4:
                text = text.replace(value, "***")
        return text


async def _direct_call(fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    return await fn(*args, **kwargs)


def _raise_if_fatal(exc: Exception) -> None:
    if isinstance(exc, FATAL_ERRORS):
        raise exc


__all__ = ["MAX_FAILED_RECONNECTS", "WS_RETRY_S", "FeedState", "MarketFeed", "quote_problem"]
