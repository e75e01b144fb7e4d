"""The emulator's websocket market streams through the REAL ccxt.pro clients.

Every stream is checked against what REST answers at the same emulator time
(the same client's fetch_* calls) and against the shipped parquet (closes,
funding); books are compared level by level after diffs have been applied.
Each test runs its coroutine under ``asyncio.run`` with every await bounded,
closes its clients, and may reach 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import ccxt
import ccxt.pro
import polars as pl
import pytest

from fundarb.data.history import FUNDING_FILE, PRICES_FILE, SHIPPED_DIR
from fundarb.testkit.emulator.harness import EMULATOR_START, ms
from fundarb.testkit.emulator.server import ccxt_config
from fundarb.testkit.emulator.ws import point_ccxt_pro, websockets

MS_H = 3_600_000
SPOT_SYM, PERP_SYM = "BTC/USDT", "BTC/USDT:USDT"
STEP = 5.0  # bound of every single await


pytestmark = pytest.mark.usefixtures("hang_guard")


def close_at(market: str, now_ms: int) -> float:
    rows = pl.read_parquet(SHIPPED_DIR / PRICES_FILE).filter(
        (pl.col("venue") == "binance") & (pl.col("market") == market) & (pl.col("symbol") == "BTCUSDT")
        & (pl.col("open_time_ms") + MS_H <= now_ms)).sort("open_time_ms")
    return rows["close"][-1]


def last_settlement(venue: str, now_ms: int) -> tuple[float, int]:
    """(last settled rate at or before now, next settlement time after now) from the parquet."""
    rows = pl.read_parquet(SHIPPED_DIR / FUNDING_FILE).filter(
        (pl.col("venue") == venue) & (pl.col("symbol") == "BTCUSDT")).sort("funding_time_ms")
    past = rows.filter(pl.col("funding_time_ms") <= now_ms)
    future = rows.filter(pl.col("funding_time_ms") > now_ms)
    return past["funding_rate"][-1], future["funding_time_ms"][0]


def pro_client(server, exchange_id: str, keep_alive_ms: int | None = None):
    config = ccxt_config(exchange_id, enableRateLimit=False, timeout=5000)
    ex = point_ccxt_pro(getattr(ccxt.pro, exchange_id)(config), server.base_url)
    if keep_alive_ms is not None:
        ex.streaming["keepAlive"] = keep_alive_ms
    return ex


def run(coro, total: float = 20.0):
    return asyncio.run(asyncio.wait_for(coro, total))


async def step(aw):
    return await asyncio.wait_for(aw, STEP)


async def after_move(watch, move):
    """Let the frames of earlier moves land, start a watch, let it register,
    move the emulator clock, await the watch: ccxt.pro resolves a watch with
    the next update after the call, which must be the one for this move."""
    await asyncio.sleep(0.1)
    task = asyncio.ensure_future(watch)
    await asyncio.sleep(0.05)
    move()
    return await step(task)


async def until_nonce(ex, symbol: str, nonce: int) -> None:
    """Wait until the client's cached book has reached update id ``nonce``."""
    while (ex.orderbooks.get(symbol) or {}).get("nonce") != nonce:
        await asyncio.sleep(0.01)


def levels(side, n: int) -> list[tuple[float, float]]:
    return [(float(p), float(q)) for p, q, *_ in side[:n]]


def assert_book_is_rest(book, rest, n: int) -> None:
    assert levels(book["bids"], n) == levels(rest["bids"], n)
    assert levels(book["asks"], n) == levels(rest["asks"], n)
    assert book["bids"][0][0] < book["asks"][0][0]


def subscriptions(server, venue: str) -> list[str]:
    return [e.detail for e in websockets(server).events if e.venue == venue and e.what == "subscribe"]


# ----------------------------------------------------------------- Binance spot

def test_binance_spot_ticker_and_book_follow_the_clock(emulator):
    async def main():
        ex = pro_client(emulator, "binance")
        try:
            now = ms(EMULATOR_START)
            # ccxt.pro 4.5.90's watch_ticker subscribes the MINI ticker (no book top) unless told otherwise
            mini = await step(ex.watch_ticker(SPOT_SYM))
            assert mini["info"]["e"] == "24hrMiniTicker" and mini["bid"] is None
            ticker = await step(ex.watch_ticker(SPOT_SYM, {"name": "ticker"}))
            assert ticker["info"]["e"] == "24hrTicker"
            assert mini["last"] == ticker["last"] == close_at("spot", now) == (await step(ex.fetch_ticker(SPOT_SYM)))["last"]
            assert ticker["bid"] < ticker["last"] < ticker["ask"] and ticker["timestamp"] == now

            book = await step(ex.watch_order_book(SPOT_SYM))
            assert book["nonce"] == now  # the REST snapshot's lastUpdateId
            assert_book_is_rest(book, await step(ex.fetch_order_book(SPOT_SYM, 1000)), 1000)

            for hours in (1, 3):  # the diffs carry the book across real hourly closes
                book = await after_move(ex.watch_order_book(SPOT_SYM), lambda h=hours: emulator.advance_hours(h))
                now += hours * MS_H
                assert book["nonce"] == now
                assert (book["bids"][0][0] + book["asks"][0][0]) / 2 == pytest.approx(close_at("spot", now), abs=0.01)
                assert_book_is_rest(book, await step(ex.fetch_order_book(SPOT_SYM, 1000)), 1000)
            ticker = await after_move(ex.watch_ticker(SPOT_SYM, {"name": "ticker"}),
                                      lambda: emulator.advance(60_000 * 1_000_000))
            assert ticker["last"] == close_at("spot", now + 60_000) and ticker["timestamp"] == now + 60_000
        finally:
            await ex.close()
        # what ccxt.pro 4.5.90 asks for: the mini ticker (the full one on request), the 100 ms diff
        # stream and a REST snapshot
        assert subscriptions(emulator, "binance") == ["btcusdt@miniTicker", "btcusdt@ticker", "btcusdt@depth@100ms"]
        depth_calls = [e for e in emulator.log.entries if e.path == "/api/v3/depth"]
        assert depth_calls[0].query == {"symbol": "BTCUSDT", "limit": "1000"}

    run(main())


# ----------------------------------------------------------------- Binance USD-M

def test_binance_usdm_mark_price_ticker_and_book(emulator):
    async def main():
        ex = pro_client(emulator, "binanceusdm")
        try:
            now = ms(EMULATOR_START)
            mark = await step(ex.watch_mark_price(PERP_SYM))
            rate, next_time = last_settlement("binance", now)
            assert float(mark["info"]["r"]) == rate and mark["info"]["T"] == next_time
            assert float(mark["info"]["p"]) == close_at("perp_linear", now)
            assert float(mark["info"]["i"]) == close_at("spot", now)
            rest = await step(ex.fetch_funding_rate(PERP_SYM))
            assert rest["fundingRate"] == rate and rest["fundingTimestamp"] == next_time

            ticker = await step(ex.watch_ticker(PERP_SYM))
            assert ticker["info"]["e"] == "24hrMiniTicker" and ticker["last"] == close_at("perp_linear", now)

            book = await step(ex.watch_order_book(PERP_SYM))
            assert book["nonce"] == now
            # across a settlement: the next mark frame carries the new rate and schedule
            later = next_time + MS_H
            mark = await after_move(ex.watch_mark_price(PERP_SYM), lambda: emulator.set_time(later * 1_000_000))
            rate, next_after = last_settlement("binance", later)
            assert float(mark["info"]["r"]) == rate and mark["info"]["T"] == next_after > next_time
            book = await after_move(ex.watch_order_book(PERP_SYM), lambda: emulator.advance_hours(1))
            assert book["nonce"] == later + MS_H  # pu/U/u lined up with the snapshot and each other
            assert_book_is_rest(book, await step(ex.fetch_order_book(PERP_SYM, 1000)), 1000)
        finally:
            await ex.close()
        assert subscriptions(emulator, "binanceusdm") == [
            "btcusdt@markPrice@1s", "btcusdt@miniTicker", "btcusdt@depth@100ms"]
        paths = {e.path.rsplit("/", 1)[0] for e in websockets(emulator).events if e.what == "connect"}
        assert paths == {"/market/ws", "/public/ws"}  # ccxt's category urls, derived from '.../ws'

    run(main())


# ----------------------------------------------------------------- Bybit

def test_bybit_linear_ticker_carries_funding_and_book_snapshot_then_deltas(emulator):
    async def main():
        ex = pro_client(emulator, "bybit", keep_alive_ms=200)
        try:
            now = ms(EMULATOR_START)
            ticker = await step(ex.watch_ticker(PERP_SYM))
            rate, next_time = last_settlement("bybit", now)
            info = ticker["info"]
            assert float(info["fundingRate"]) == rate and int(info["nextFundingTime"]) == next_time
            assert float(info["markPrice"]) == ticker["last"] == close_at("perp_linear", now)
            assert info == (await step(ex.fetch_ticker(PERP_SYM)))["info"]  # the REST row, field for field

            book = await step(ex.watch_order_book(PERP_SYM))  # orderbook.50: a snapshot
            assert_book_is_rest(book, await step(ex.fetch_order_book(PERP_SYM, 50)), 50)
            later = next_time + 1  # just past a settlement: the delta carries the new rate
            ticker = await after_move(ex.watch_ticker(PERP_SYM), lambda: emulator.set_time(later * 1_000_000))
            rate, next_after = last_settlement("bybit", later)
            assert float(ticker["info"]["fundingRate"]) == rate
            assert int(ticker["info"]["nextFundingTime"]) == next_after > next_time
            assert ticker["info"] == (await step(ex.fetch_ticker(PERP_SYM)))["info"]  # the merged deltas
            book = await after_move(ex.watch_order_book(PERP_SYM), lambda: emulator.advance_hours(2))
            assert_book_is_rest(book, await step(ex.fetch_order_book(PERP_SYM, 50)), 50)
            assert len(book["bids"]) == len(book["asks"]) == 50
            await asyncio.sleep(0.5)  # a few keep-alive rounds: Bybit's op ping answered with its pong
        finally:
            await ex.close()
        events = websockets(emulator).events
        assert sum(e.what == "ping" for e in events) >= 2
        assert [e.detail for e in events if e.what == "subscribe"] == ["tickers.BTCUSDT", "orderbook.50.BTCUSDT"]
        assert not [e for e in events if e.what == "drop"]

    run(main())


def test_bybit_spot_ticker_and_book(emulator):
    async def main():
        ex = pro_client(emulator, "bybit")
        try:
            now = ms(EMULATOR_START)
            ticker = await step(ex.watch_ticker(SPOT_SYM))
            assert ticker["symbol"] == SPOT_SYM and ticker["last"] == close_at("spot", now)
            assert "fundingRate" not in ticker["info"] and "usdIndexPrice" in ticker["info"]
            book = await step(ex.watch_order_book(SPOT_SYM, 200))
            assert_book_is_rest(book, await step(ex.fetch_order_book(SPOT_SYM, 200)), 200)
            book = await after_move(ex.watch_order_book(SPOT_SYM, 200), lambda: emulator.advance_hours(1))
            assert_book_is_rest(book, await step(ex.fetch_order_book(SPOT_SYM, 200)), 200)
            ticker = await after_move(ex.watch_ticker(SPOT_SYM), lambda: emulator.advance_hours(1))
            assert ticker["last"] == close_at("spot", now + 2 * MS_H)
        finally:
            await ex.close()
        assert subscriptions(emulator, "bybit") == ["tickers.BTCUSDT", "orderbook.200.BTCUSDT"]

    run(main())


# ----------------------------------------------------------------- the wire, without ccxt

def test_raw_frames_combined_stream_acks_and_refusals(emulator):
    async def main():
        async with aiohttp.ClientSession() as http:
            url = f"ws://127.0.0.1:{emulator.port}"
            async with http.ws_connect(url + "/stream?streams=btcusdt@bookTicker/btcusdt@miniTicker") as ws:
                frames = [json.loads((await step(ws.receive())).data) for _ in range(2)]
                assert {f["stream"] for f in frames} == {"btcusdt@bookTicker", "btcusdt@miniTicker"}
                book = next(f["data"] for f in frames if f["stream"] == "btcusdt@bookTicker")
                assert float(book["b"]) < close_at("spot", ms(EMULATOR_START)) < float(book["a"])
                await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 7})
                assert json.loads((await step(ws.receive())).data) == {
                    "result": ["btcusdt@bookTicker", "btcusdt@miniTicker"], "id": 7}
                await ws.send_json({"method": "SUBSCRIBE", "params": ["btcusdt@markPrice"], "id": 8})  # spot has none
                assert json.loads((await step(ws.receive())).data)["error"]["code"] == 2
            async with http.ws_connect(url + "/market/ws/0") as ws:  # ccxt's USD-M url shape
                await ws.send_json({"method": "SUBSCRIBE", "params": ["ethusdt@markPrice@1s", "!markPrice@arr@1s"],
                                    "id": 1})
                assert json.loads((await step(ws.receive())).data) == {"result": None, "id": 1}
                frame = json.loads((await step(ws.receive())).data)  # only BTCUSDT exists: ETHUSDT stays silent
                assert isinstance(frame, list) and frame[0]["e"] == "markPriceUpdate" and frame[0]["s"] == "BTCUSDT"
                emulator.advance_hours(1)
                frame = json.loads((await step(ws.receive())).data)
                assert frame[0]["E"] == ms(EMULATOR_START) + MS_H
            async with http.ws_connect(url + "/v5/public/linear") as ws:
                await ws.send_json({"op": "subscribe", "req_id": "a", "args": ["orderbook.7.BTCUSDT"]})
                reply = json.loads((await step(ws.receive())).data)
                assert reply["success"] is False and reply["req_id"] == "a" and reply["op"] == "subscribe"
                await ws.send_json({"op": "subscribe", "req_id": "b", "args": ["orderbook.1.BTCUSDT"]})
                ack, snap = [json.loads((await step(ws.receive())).data) for _ in range(2)]
                assert ack["success"] is True and ack["ret_msg"] == "subscribe"
                assert snap["type"] == "snapshot" and len(snap["data"]["b"]) == len(snap["data"]["a"]) == 1
                assert snap["data"]["u"] == emulator.now_ns // 1_000_000  # as the REST orderbook's u
                await ws.send_json({"op": "ping", "req_id": "c"})
                assert json.loads((await step(ws.receive())).data)["ret_msg"] == "pong"
            async with http.get(url + "/ws") as reply:  # no upgrade: the REST side's 404
                assert reply.status == 404

    run(main())


# ----------------------------------------------------------------- faults and the clock going back

def test_dropped_websocket_raises_a_network_error_and_a_new_watch_reconnects(emulator):
    async def main():
        hub = websockets(emulator)
        binance, bybit = pro_client(emulator, "binanceusdm"), pro_client(emulator, "bybit", keep_alive_ms=150)
        try:
            await step(binance.watch_mark_price(PERP_SYM))
            await step(bybit.watch_ticker(PERP_SYM))
            await step(bybit.watch_ticker(SPOT_SYM))

            # close: the next frame becomes a close frame
            hub.faults.add("dropped_websocket", venue="binanceusdm", mode="close")
            with pytest.raises(ccxt.NetworkError, match="closing code 1001"):
                await after_move(binance.watch_mark_price(PERP_SYM), lambda: emulator.advance_hours(1))
            mark = await step(binance.watch_mark_price(PERP_SYM))  # reconnects, resubscribes
            assert float(mark["info"]["p"]) == close_at("perp_linear", ms(EMULATOR_START) + MS_H)

            # reset: the TCP connection is cut, no close frame
            hub.faults.add("dropped_websocket", venue="bybit", path="/v5/public/linear", mode="reset")
            with pytest.raises(ccxt.NetworkError):
                await after_move(bybit.watch_ticker(PERP_SYM), lambda: emulator.advance_hours(1))
            assert (await step(bybit.watch_ticker(PERP_SYM)))["last"] == close_at(
                "perp_linear", ms(EMULATOR_START) + 2 * MS_H)

            # silent: the socket stays open but nothing comes, not even pongs; the keep-alive notices
            hub.faults.add("dropped_websocket", venue="bybit", path="/v5/public/spot", mode="silent")
            with pytest.raises(ccxt.RequestTimeout, match="ping-pong keepalive"):
                await after_move(bybit.watch_ticker(SPOT_SYM), lambda: emulator.advance_hours(1))
            assert (await step(bybit.watch_ticker(SPOT_SYM)))["last"] == close_at("spot", ms(EMULATOR_START) + 3 * MS_H)
            assert hub.faults.pending == []
        finally:
            await binance.close()
            await bybit.close()
        assert [e.detail for e in hub.events if e.what == "drop"] == ["close", "reset", "silent"]
        assert hub.connection_count("binanceusdm") == 2 and hub.connection_count("bybit") == 4
        assert [e.status for e in emulator.log.entries if e.status == 101].count(101) == 6

    run(main())


def test_drop_now_and_time_going_back(emulator):
    async def main():
        hub = websockets(emulator)
        binance, bybit = pro_client(emulator, "binance"), pro_client(emulator, "bybit")
        try:
            await step(binance.watch_order_book(SPOT_SYM))
            await step(bybit.watch_order_book(PERP_SYM))
            later = ms(EMULATOR_START) + 5 * MS_H
            emulator.set_time(later * 1_000_000)
            # let the forward move's diff land first (under load 0.2 s was not always enough): a watch
            # started before it would resolve with that diff instead of seeing the drop below
            await step(until_nonce(binance, SPOT_SYM, later))
            # back in time: Bybit sends a new snapshot, Binance (ids cannot go back) drops its depth stream
            task = asyncio.ensure_future(binance.watch_order_book(SPOT_SYM))
            book = await after_move(bybit.watch_order_book(PERP_SYM), lambda: emulator.set_time(EMULATOR_START))
            assert_book_is_rest(book, await step(bybit.fetch_order_book(PERP_SYM, 50)), 50)
            with pytest.raises(ccxt.NetworkError):
                await step(task)
            book = await step(binance.watch_order_book(SPOT_SYM))  # a new connection, a new snapshot
            assert book["nonce"] == ms(EMULATOR_START)
            assert_book_is_rest(book, await step(binance.fetch_order_book(SPOT_SYM, 1000)), 1000)

            task = asyncio.ensure_future(bybit.watch_order_book(PERP_SYM))
            await asyncio.sleep(0.05)
            assert hub.drop(venue="bybit") == 1
            with pytest.raises(ccxt.NetworkError):
                await step(task)
        finally:
            await binance.close()
            await bybit.close()

    run(main())


def test_ws_fault_plan_refuses_what_it_cannot_do(emulator):
    hub = websockets(emulator)
    with pytest.raises(ValueError, match="unknown websocket fault kind"):
        hub.faults.add("rate_limit")
    with pytest.raises(ValueError, match="unknown venue"):
        hub.faults.add(venue="okx")
    with pytest.raises(ValueError, match="unknown drop mode"):
        hub.faults.add(mode="explode")
    with pytest.raises(ValueError, match="unknown drop mode"):
        hub.drop(mode="explode")
    assert hub.faults.pending == []
