"""The live market feed (``fundarb.live.ccxt.feed``) through REAL ccxt.pro
clients pointed at the loopback emulator.

Quotes are checked against the shipped closes (the emulator's one-tick book
straddles the real close), mark price and funding against the emulator's own
REST answers at the same emulator time and the shipped settlements; drops are
the emulator's ``dropped_websocket`` faults, REST failures its REST faults.
The feed's clock is the emulator's (``now_ns=lambda: server.now_ns``), so an
event without a venue time is stamped with emulator time too. Every wait is
bounded; nothing asserts a wall-clock duration; clients are closed; only
127.0.0.1 is reached. Tests named ``synthetic`` use made-up values and a stub
exchange, no data. Importing ``emulator_ws`` (at the top, before any server
starts) mounts the websocket streams on every server started afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import ccxt
import ccxt.pro
import polars as pl
import pytest

from fundarb.core.model import FundingRate, MarketKind, MarkPrice, Quote
from fundarb.data.history import FUNDING_FILE, SHIPPED_DIR
from fundarb.live.ccxt.feed import (
    MAX_FAILED_RECONNECTS,
    FeedState,
    MarketFeed,
    quote_problem,
)
from fundarb.testkit.emulator.harness import PERP_SYM, SPOT_SYM, close_at
from fundarb.testkit.emulator.server import ccxt_config
from fundarb.testkit.emulator.ws import point_ccxt_pro, websockets

pytestmark = pytest.mark.usefixtures("hang_guard")

MS_H = 3_600_000
NS_PER_MS = 1_000_000
STEP = 5.0  # bound of every single wait
SETTLE = 0.05  # let a stream re-register its watch before the clock moves (ccxt.pro resolves the next update)

# (ccxt id, symbol, kind): every instrument the emulator serves
INSTRUMENTS = {
    "binance-spot": ("binance", SPOT_SYM, MarketKind.SPOT),
    "binanceusdm-perp": ("binanceusdm", PERP_SYM, MarketKind.PERP),
    "bybit-spot": ("bybit", SPOT_SYM, MarketKind.SPOT),
    "bybit-perp": ("bybit", PERP_SYM, MarketKind.PERP),
}
PERPS = ["binanceusdm-perp", "bybit-perp"]


def pro_client(server, exchange_id: str, keep_alive_ms: int | None = None):
    ex = point_ccxt_pro(getattr(ccxt.pro, exchange_id)(ccxt_config(exchange_id, enableRateLimit=False, timeout=5000)),
                        server.base_url)
    if keep_alive_ms is not None:
        ex.streaming["keepAlive"] = keep_alive_ms
    return ex


def run(coro, total: float = 45.0):
    return asyncio.run(asyncio.wait_for(coro, total))


def last_settlement(venue: str, now_ms: int) -> tuple[float, int]:
    """(last settled rate at or before now, next settlement after now) in the shipped parquet."""
    rows = pl.read_parquet(SHIPPED_DIR / FUNDING_FILE).filter(
        (pl.col("venue") == venue) & (pl.col("symbol") == "BTCUSDT")).sort("funding_time_ms")
    return (rows.filter(pl.col("funding_time_ms") <= now_ms)["funding_rate"][-1],
            rows.filter(pl.col("funding_time_ms") > now_ms)["funding_time_ms"][0])


class Running:
    """A feed running as a task, what it emitted, and bounded waits on it."""

    def __init__(self, feed: MarketFeed, events: list[object], task: asyncio.Task) -> None:
        self.feed, self.events, self.task = feed, events, task

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        async def poll() -> None:
            while not predicate():
                if self.task.done():  # a feed that died fails the test now, with its own error
                    self.task.result()
                    raise AssertionError(f"the feed stopped while waiting for {what}")
                await asyncio.sleep(0.01)
        try:
            await asyncio.wait_for(poll(), STEP)
        except TimeoutError:
            raise AssertionError(f"no {what} within {STEP} s; state {self.feed.state}, errors {self.feed.errors}") from None

    async def event(self, kind: type, ts: int) -> Any:
        """The latest event of ``kind`` stamped ``ts``, waiting for it."""
        def found() -> list:
            return [e for e in self.events if isinstance(e, kind) and e.ts == ts]

        await self.until(lambda: bool(found()), f"{kind.__name__} at {ts}")
        return found()[-1]

    async def event_where(self, kind: type, ts: int, good: Callable[[Any], bool], what: str) -> Any:
        """The latest event of ``kind`` stamped ``ts`` once it is ``good``: a poll sent
        before the emulator's clock moved may be answered with the hour before and
        stamped when it lands; the answers after it must be right within the bound."""
        def latest() -> Any:
            return next((e for e in reversed(self.events) if isinstance(e, kind) and e.ts == ts), None)

        await self.until(lambda: latest() is not None and good(latest()), f"{kind.__name__} at {ts} with {what}")
        return latest()


@contextlib.asynccontextmanager
async def running(exchange, server, account: str, symbol: str, kind: MarketKind, **options: Any) -> AsyncIterator[Running]:
    events: list[object] = []
    feed = MarketFeed(exchange, account=account, symbol=symbol, kind=kind, on_event=events.append,
                      now_ns=lambda: server.now_ns, **options)
    task = asyncio.create_task(feed.run())
    try:
        yield Running(feed, events, task)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, STEP)
    assert feed.state is FeedState.STOPPED


async def move(server, hours: float = 1) -> int:
    await asyncio.sleep(SETTLE)
    server.advance_hours(hours)
    return server.now_ns


async def check_events_at(r: Running, exchange, closes, symbol: str, kind: MarketKind, now_ns: int) -> None:
    """The quote straddles the real close; a perp's mark is the real perp close and its funding is
    what REST answers at the same emulator time (and the shipped settlement)."""
    now_ms = now_ns // NS_PER_MS
    close = close_at(closes, symbol, now_ms)
    quote = await r.event_where(Quote, now_ns, lambda q: q.bid < close < q.ask, f"a book around the close {close}")
    assert quote.venue == r.feed.account
    assert quote.bid < close < quote.ask and quote.ask - quote.bid < 0.25  # the one-tick book around it
    assert quote.bid_size > 0 and quote.ask_size > 0
    if kind is MarketKind.SPOT:
        return
    perp_close = close_at(closes, PERP_SYM, now_ms)
    mark = await r.event_where(MarkPrice, now_ns, lambda m: m.mark == perp_close, f"the perp close {perp_close}")
    assert mark.mark == perp_close and mark.venue == r.feed.account
    rate = await r.event(FundingRate, now_ns)
    rest = await asyncio.wait_for(exchange.fetch_funding_rate(symbol), STEP)
    assert rate.rate == rest["fundingRate"] == rate.predicted_rate
    assert rate.next_funding_ts == rest["fundingTimestamp"] * NS_PER_MS
    venue = "binance" if exchange.id == "binanceusdm" else "bybit"
    assert (rate.rate, rate.next_funding_ts // NS_PER_MS) == last_settlement(venue, now_ms)
    assert rate.interval_hours == 8.0


# ----------------------------------------------------------------- websockets

@pytest.mark.parametrize("name", INSTRUMENTS)
def test_websocket_feed_follows_the_clock_with_real_prices_and_funding(emulator, closes, name):
    exchange_id, symbol, kind = INSTRUMENTS[name]

    rest_calls: list[str] = []

    async def main():
        ex = pro_client(emulator, exchange_id)
        try:
            async with running(ex, emulator, f"{exchange_id}:{kind.value}", symbol, kind,
                               call=lambda fn, *a: rest_calls.append(fn.__name__)) as r:
                await check_events_at(r, ex, closes, symbol, kind, emulator.now_ns)  # the subscription's first frames
                for _ in range(2):
                    await check_events_at(r, ex, closes, symbol, kind, await move(emulator))
                if kind is MarketKind.PERP:  # across a real settlement: the new rate and schedule
                    next_ms = rate_event(r).next_funding_ts // NS_PER_MS
                    await asyncio.sleep(SETTLE)
                    emulator.set_time((next_ms + MS_H) * NS_PER_MS)
                    await check_events_at(r, ex, closes, symbol, kind, emulator.now_ns)
                    assert rate_event(r).next_funding_ts > next_ms * NS_PER_MS
                assert r.feed.state is FeedState.STREAMING and r.feed.use_websocket
                assert r.feed.reconnects == 0 and r.feed.errors == []
                assert not r.feed.is_stale(emulator.now_ns)
        finally:
            await ex.close()
        assert rest_calls == []  # streamed, never polled

    run(main())


def rate_event(r: Running) -> FundingRate:
    return [e for e in r.events if isinstance(e, FundingRate)][-1]


# (instrument, the connection to drop, mode); Binance USD-M quotes and mark price have one connection each
DROPS = [
    ("binanceusdm-perp", "/public/ws", "close"),
    ("binanceusdm-perp", "/public/ws", "reset"),
    ("binanceusdm-perp", "/market/ws", "close"),
    ("bybit-perp", "/v5/public/linear", "close"),
    ("bybit-perp", "/v5/public/linear", "reset"),
    ("bybit-perp", "/v5/public/linear", "silent"),  # found by ccxt's keep-alive (shortened here)
    ("binance-spot", "/ws", "reset"),
]


@pytest.mark.parametrize("name,path,mode", DROPS, ids=[f"{n}-{p.strip('/').replace('/', '.')}-{m}" for n, p, m in DROPS])
def test_dropped_websocket_reconnects_once_and_prices_are_right_after(emulator, closes, name, path, mode):
    exchange_id, symbol, kind = INSTRUMENTS[name]
    account = f"{exchange_id}:{kind.value}"
    reconciled: list[str] = []

    async def reconcile(acc: str) -> None:  # async, as the caller's reconciliation is
        await asyncio.sleep(0)
        reconciled.append(acc)

    async def main():
        ex = pro_client(emulator, exchange_id, keep_alive_ms=200 if mode == "silent" else None)
        hub = websockets(emulator)
        try:
            async with running(ex, emulator, account, symbol, kind, on_reconnect=reconcile,
                               reconnect_delay_s=0.05) as r:
                await check_events_at(r, ex, closes, symbol, kind, emulator.now_ns)
                hub.faults.add("dropped_websocket", venue=exchange_id, path=path, mode=mode)
                now = await move(emulator)  # the next frame on that connection is the drop
                await r.until(lambda: r.feed.reconnects == 1, "a recovery")
                assert reconciled == [account]
                assert any(f"websocket: {'RequestTimeout' if mode == 'silent' else 'NetworkError'}" in e
                           for e in r.feed.errors)
                await check_events_at(r, ex, closes, symbol, kind, now)  # the resubscription's state
                for _ in range(2):
                    await check_events_at(r, ex, closes, symbol, kind, await move(emulator))
                assert r.feed.state is FeedState.STREAMING
                assert r.feed.reconnects == 1 and reconciled == [account]
        finally:
            await ex.close()
        assert [e.detail for e in hub.events if e.what == "drop"] == [mode] and hub.faults.pending == []

    run(main())


def test_three_failed_reconnects_fall_back_to_polling_then_the_websocket_returns(emulator, closes):
    reconciled: list[str] = []

    async def main():
        ex = pro_client(emulator, "binance")
        hub = websockets(emulator)
        try:
            async with running(ex, emulator, "binance:spot", SPOT_SYM, MarketKind.SPOT, on_reconnect=reconciled.append,
                               reconnect_delay_s=0.02, poll_interval_s=0.05, ws_retry_s=2.0) as r:
                await check_events_at(r, ex, closes, SPOT_SYM, MarketKind.SPOT, emulator.now_ns)
                # the drop, then each reconnect's first frame (the subscription ack) is dropped too
                hub.faults.add("dropped_websocket", venue="binance", mode="close", times=1 + MAX_FAILED_RECONNECTS)
                await move(emulator)
                await r.until(lambda: r.feed.state is FeedState.POLLING, "the fallback to polling")
                now = await move(emulator)
                await check_events_at(r, ex, closes, SPOT_SYM, MarketKind.SPOT, now)
                polled = [e for e in emulator.log.entries if e.path == "/api/v3/ticker/bookTicker"]
                assert polled and polled[-1].now_ns == now  # REST answered while the websocket was down
                await r.until(lambda: r.feed.state is FeedState.STREAMING, "the websocket retry")
                assert r.feed.reconnects == 1 and reconciled == ["binance:spot"]
                await check_events_at(r, ex, closes, SPOT_SYM, MarketKind.SPOT, await move(emulator))
        finally:
            await ex.close()
        assert [e.detail for e in hub.events if e.what == "drop"] == ["close"] * (1 + MAX_FAILED_RECONNECTS)

    run(main())


# ----------------------------------------------------------------- REST polling

@pytest.mark.parametrize("name", INSTRUMENTS)
def test_polling_emits_what_the_websockets_emit(emulator, closes, name):
    exchange_id, symbol, kind = INSTRUMENTS[name]
    queued: list[str] = []

    async def queue(fn, *args, **kwargs):  # stands for the rate-limit queue every REST call goes through
        queued.append(fn.__name__)
        return await fn(*args, **kwargs)

    def latest(r: Running, ts: int) -> list[object]:
        return [next(e for e in reversed(r.events) if isinstance(e, k) and e.ts == ts)
                for k in ((Quote,) if kind is MarketKind.SPOT else (Quote, MarkPrice, FundingRate))]

    async def main():
        ws_ex, rest_ex = pro_client(emulator, exchange_id), pro_client(emulator, exchange_id)
        try:
            async with (running(ws_ex, emulator, "a", symbol, kind) as ws,
                        running(rest_ex, emulator, "a", symbol, kind, use_websocket=False, poll_interval_s=0.05,
                                call=queue) as polled):
                for hours in (0, 1, 9):  # the first frames, an hour later, across a settlement
                    now = await move(emulator, hours) if hours else emulator.now_ns
                    for r in (ws, polled):
                        await check_events_at(r, rest_ex, closes, symbol, kind, now)
                    assert latest(ws, now) == latest(polled, now)
                assert polled.feed.state is FeedState.POLLING and not polled.feed.use_websocket
                assert polled.feed.errors == [] and rest_ex.clients == {}  # never opened a websocket
        finally:
            await ws_ex.close()
            await rest_ex.close()
        quote_call = "fetch_bids_asks" if exchange_id.startswith("binance") else "fetch_ticker"
        expected = {quote_call} | ({"fetch_funding_rate"} if kind is MarketKind.PERP else set())
        assert set(queued) == expected

    run(main())


@pytest.mark.parametrize("name", PERPS)
def test_polling_survives_server_errors_and_non_json_answers(emulator, closes, name):
    exchange_id, symbol, kind = INSTRUMENTS[name]

    async def main():
        ex = pro_client(emulator, exchange_id)
        try:
            await ex.load_markets()
            async with running(ex, emulator, "p", symbol, kind, use_websocket=False, poll_interval_s=0.02,
                               reconnect_delay_s=0.02, max_reconnect_delay_s=0.1) as r:
                await check_events_at(r, ex, closes, symbol, kind, emulator.now_ns)
                emulator.faults.add("server_error", venue=exchange_id, times=4)
                await r.until(lambda: sum("ExchangeNotAvailable" in e for e in r.feed.errors) == 4, "the 502s")
                emulator.faults.add("non_json", venue=exchange_id, times=2)  # a 200 whose fields parse as None
                await r.until(lambda: len(r.feed.errors) >= 6, "the non-JSON answers")
                await check_events_at(r, ex, closes, symbol, kind, await move(emulator))
                assert r.feed.state is FeedState.POLLING
        finally:
            await ex.close()
        errors = r.feed.errors
        assert len(errors) == 6 and all(("REST" in e) != ("answer" in e) for e in errors)
        assert not [e for e in r.events if isinstance(e, Quote) and quote_problem(e.bid, e.ask, e.bid_size, e.ask_size)]
        assert all(math.isfinite(e.mark) for e in r.events if isinstance(e, MarkPrice))

    run(main())


# ----------------------------------------------------------------- synthetic: validation, errors, the API

def test_quote_problem_on_synthetic_values():
    assert quote_problem(100.0, 100.5, 1.0, 2.0) is None
    assert quote_problem(100.0, 100.0) is None  # a locked book is a valid top
    for bid, ask in ((math.nan, 100.0), (100.0, math.inf), (0.0, 100.0), (-1.0, 100.0), (100.0, -math.inf)):
        assert "finite positive price" in quote_problem(bid, ask)
    assert "crossed book" in quote_problem(101.0, 100.0)
    assert "bid size" in quote_problem(100.0, 101.0, -1.0, 1.0)
    assert "ask size" in quote_problem(100.0, 101.0, 1.0, math.nan)


class SyntheticExchange:
    """A stub ccxt.pro client that plays a script of SYNTHETIC answers and errors."""

    id = "synthetic"
    apiKey = "SYNTHETIC-KEY-0123"
    secret = "SYNTHETIC-SECRET-0123"

    def __init__(self, script: list[Any]) -> None:
        self.script = list(script)
        self.has = {"watchTicker": True}
        self.markets: dict = {}
        self.done = asyncio.Event()

    async def watch_ticker(self, symbol: str) -> dict:
        if not self.script:
            self.done.set()
            await asyncio.Event().wait()  # no more frames
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return {"symbol": symbol, "timestamp": step[0], "bid": step[1], "ask": step[2],
                "bidVolume": step[3], "askVolume": step[4], "info": {}}

    async def fetch_ticker(self, symbol: str) -> dict:
        raise ccxt.ExchangeNotAvailable("not used")


def test_synthetic_bad_tickers_are_dropped_and_errors_hold_no_secrets():
    leak = ccxt.NetworkError(f"GET https://x/api?signature=deadbeef&apiKey={SyntheticExchange.apiKey} "
                             f"failed, secret {SyntheticExchange.secret}")
    script = [
        (1_000, 100.0, 100.5, 1.0, 1.0),      # good
        (2_000, math.nan, 100.5, 1.0, 1.0),   # NaN bid
        (3_000, 101.0, 100.5, 1.0, 1.0),      # crossed
        (4_000, 0.0, 100.5, 1.0, 1.0),        # zero
        (5_000, "abc", 100.5, 1.0, 1.0),      # unreadable
        (6_000, None, None, None, None),      # no book top (another ticker kind): skipped quietly
        (7_000, 100.0, 100.5, -2.0, 1.0),     # negative size
        leak,                                 # a drop
        (8_000, 100.1, 100.6, None, 3.0),     # back; a missing size is sent as 0.0
    ]
    reconciled: list[str] = []

    async def main():
        ex = SyntheticExchange(script)
        events: list[object] = []
        feed = MarketFeed(ex, account="synthetic:spot", symbol="SYN/USDT", kind="spot", on_event=events.append,
                          on_reconnect=reconciled.append, reconnect_delay_s=0.01, now_ns=lambda: 42)
        assert feed.state is FeedState.STOPPED and feed.is_stale(42)
        task = asyncio.create_task(feed.run())
        await asyncio.wait_for(ex.done.wait(), STEP)
        assert feed.state is FeedState.STREAMING and not feed.is_stale(42 + 29 * 10**9) and feed.is_stale(42 + 31 * 10**9)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, STEP)
        return feed, events

    feed, events = run(main())
    assert events == [Quote(1_000 * NS_PER_MS, "synthetic:spot", 100.0, 100.5, 1.0, 1.0),
                      Quote(8_000 * NS_PER_MS, "synthetic:spot", 100.1, 100.6, 0.0, 3.0)]
    assert feed.reconnects == 1 and reconciled == ["synthetic:spot"] and feed.state is FeedState.STOPPED
    assert len(feed.errors) == 6 and sum("quote dropped" in e for e in feed.errors) == 5
    text = " ".join(feed.errors)
    assert "SYNTHETIC-KEY" not in text and "SYNTHETIC-SECRET" not in text and "deadbeef" not in text
    assert "https://x/api?***" in text  # the signed query string is gone whole, the endpoint is still named


def test_synthetic_errors_keep_the_last_twenty_and_fatal_errors_stop_the_feed():
    script = [ccxt.RequestTimeout(f"synthetic timeout {i}") for i in range(25)] + [ccxt.BadSymbol("synthetic: no SYN")]

    async def main():
        feed = MarketFeed(SyntheticExchange(script), account="s", symbol="SYN/USDT", kind=MarketKind.SPOT,
                          on_event=lambda e: None, reconnect_delay_s=0.0, ws_retry_s=0.0)
        with pytest.raises(ccxt.BadSymbol):  # a wrong symbol does not heal by retrying
            await asyncio.wait_for(feed.run(), STEP)
        return feed

    feed = run(main())
    assert len(feed.errors) == 20 and feed.errors[-1].endswith("synthetic timeout 24")
    assert feed.state is FeedState.STOPPED and feed.reconnects == 0  # it never streamed: nothing to recover


def test_a_venue_without_the_stream_refuses_websockets_explicitly():
    ex = SyntheticExchange([])
    ex.has = {}
    feed = MarketFeed(ex, account="s", symbol="SYN/USDT", kind=MarketKind.SPOT, on_event=lambda e: None)
    assert feed.use_websocket is False  # auto: polls
    with pytest.raises(ValueError, match="no websocket for the quote stream"):
        MarketFeed(ex, account="s", symbol="SYN/USDT", kind=MarketKind.SPOT, on_event=lambda e: None, use_websocket=True)
