"""The emulator's PRIVATE websocket streams through the REAL ccxt.pro clients.

watch_orders / watch_my_trades / watch_balance / watch_positions on Binance
spot (ws-api user data stream), Binance USD-M (listenKey stream) and Bybit v5
(/v5/private with auth), checked against the same client's REST answers and
the shipped closes. Each test runs its coroutine under ``asyncio.run`` with
every await bounded, closes its client, and may reach 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import ccxt
import ccxt.pro
import polars as pl
import pytest

from fundarb.core.model import NS_PER_HOUR
from fundarb.data.history import PRICES_FILE, SHIPPED_DIR
from fundarb.testkit.emulator.accounts import MARKETS
from fundarb.testkit.emulator.harness import EMULATOR_START, ms
from fundarb.testkit.emulator.server import ccxt_config
from fundarb.testkit.emulator.ws import point_ccxt_pro, websockets

MS_H = 3_600_000
SPOT_SYM, PERP_SYM = "BTC/USDT", "BTC/USDT:USDT"
START_USDT = 10_000.0
STEP = 5.0  # bound of every single await
# (ccxt id, symbol, emulator market key)
CASES = [("binance", SPOT_SYM, ("binance", "spot")), ("binanceusdm", PERP_SYM, ("binanceusdm", "perp")),
         ("bybit", SPOT_SYM, ("bybit", "spot")), ("bybit", PERP_SYM, ("bybit", "perp"))]
IDS = ["binance-spot", "binanceusdm", "bybit-spot", "bybit-linear"]
PRIVATE_PATH = {"binance": "/ws-api/v3", "binanceusdm": "/private/ws", "bybit": "/v5/private"}


pytestmark = pytest.mark.usefixtures("hang_guard")


def close_at(symbol: str, now_ms: int) -> float:
    market = "spot" if symbol == SPOT_SYM else "perp_linear"
    rows = pl.read_parquet(SHIPPED_DIR / PRICES_FILE).filter(
        (pl.col("venue") == "binance") & (pl.col("market") == market) & (pl.col("symbol") == "BTCUSDT")
        & (pl.col("open_time_ms") + MS_H <= now_ms)).sort("open_time_ms")
    return rows["close"][-1]


def pro_trader(server, exchange_id: str):
    """A ccxt.pro client with keys 'k'/'s', REST and ws pointed at the emulator."""
    config = ccxt_config(exchange_id, enableRateLimit=False, timeout=5000, apiKey="k", secret="s")
    if exchange_id == "bybit":  # skip ccxt's account-type detection
        config["options"].update({"enableUnifiedAccount": True, "enableUnifiedMargin": False})
    return point_ccxt_pro(getattr(ccxt.pro, exchange_id)(config), server.base_url)


@asynccontextmanager
async def loaded_trader(server, exchange_id: str):
    """``pro_trader`` with its markets loaded, closed on the way out."""
    ex = pro_trader(server, exchange_id)
    try:
        await step(ex.load_markets())
        yield ex
    finally:
        await ex.close()


def fund_all(server) -> None:
    for wallet in ("binance", "binanceusdm", "bybit"):
        server.accounts.fund(wallet, "USDT", START_USDT)


def run(coro, total: float = 15.0):
    return asyncio.run(asyncio.wait_for(coro, total))


async def step(aw):
    # awaited in this task (no wait_for task): a watch registers its future before anything else runs,
    # so a frame already read off the socket cannot slip in between a cache check and the watch
    async with asyncio.timeout(STEP):
        return await aw


def events(server, venue: str, what: str, detail: str | None = None) -> int:
    return sum(1 for e in websockets(server).events if e.venue == venue and e.what == what
               and e.path == PRIVATE_PATH[venue] and (detail is None or e.detail == detail))


async def subscribed(server, venue: str, topic: str = "order", count: int = 1) -> None:
    """Wait until the server holds the private subscription (the count-th time):
    Binance spot's ws-api subscribe, the USD-M listenKey connection, a Bybit topic."""
    what, detail = {"binance": ("subscribe", "userDataStream"), "binanceusdm": ("connect", None),
                    "bybit": ("subscribe", topic)}[venue]
    for _ in range(int(STEP / 0.01)):
        if events(server, venue, what, detail) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no private {venue} {what} {detail} x{count}: {websockets(server).events}")


def spy_orders(ex) -> list[tuple[str, str, float]]:
    """(id, status, filled) of every order update the client parses off the stream."""
    seen: list[tuple[str, str, float]] = []
    name = "parse_ws_order" if ex.id.startswith("binance") else "parse_order"
    original = getattr(ex, name)

    def spy(order, market=None):
        parsed = original(order, market)
        if ex.id.startswith("binance") or "category" in order:  # Bybit stream rows carry it, REST rows do not
            seen.append((parsed["id"], parsed["status"], parsed["filled"]))
        return parsed

    setattr(ex, name, spy)
    return seen


async def until_order(ex, symbol: str, order_id: str, done) -> dict:
    """The cached stream state of an order once ``done(order)``; watch for more until then."""
    for _ in range(20):
        cached = ex.orders.hashmap.get(symbol, {}).get(order_id) if ex.orders is not None else None
        if cached is not None and done(cached):
            return cached
        await step(ex.watch_orders(symbol))
    raise AssertionError(f"order {order_id} never reached the state")


# ----------------------------------------------------------------- orders and trades

@pytest.mark.parametrize("venue,symbol,key", CASES, ids=IDS)
def test_watch_orders_and_my_trades_see_a_market_order_from_new_to_filled(emulator, venue, symbol, key):
    fund_all(emulator)

    async def main():
        async with loaded_trader(emulator, venue) as ex:
            seen = spy_orders(ex)
            first = asyncio.ensure_future(ex.watch_orders(symbol))
            trades_task = asyncio.ensure_future(ex.watch_my_trades(symbol))
            await subscribed(emulator, venue, "order")
            if venue == "bybit":
                await subscribed(emulator, venue, "execution")
            side = "sell" if symbol == PERP_SYM else "buy"
            placed = await step(ex.create_order(symbol, "market", side, 0.01, params={"clientOrderId": "ws-mkt"}))
            await step(first)
            order = await until_order(ex, symbol, placed["id"], lambda o: o["status"] == "closed")
            rest = await step(ex.fetch_order(placed["id"], symbol,
                                             params={"acknowledged": True} if venue == "bybit" else {}))
            assert (order["clientOrderId"], order["side"], order["type"]) == ("ws-mkt", side, "market")
            assert order["filled"] == rest["filled"] == 0.01 and order["remaining"] == 0
            assert order["average"] == rest["average"]
            close = close_at(symbol, ms(EMULATOR_START))
            assert abs(order["average"] - close) / close < 5e-4  # the close plus a few bp of slippage
            # the stream told NEW (open, nothing filled) before FILLED (closed)
            steps = [(status, filled) for oid, status, filled in seen if oid == placed["id"]]
            assert steps[0] == ("open", 0.0) and steps[-1] == ("closed", 0.01), steps

            trades = await step(trades_task)
            (rest_trade,) = await step(ex.fetch_my_trades(symbol))
            (trade,) = [t for t in trades if t["order"] == placed["id"]]
            assert (trade["id"], trade["price"], trade["amount"]) == (rest_trade["id"], order["average"], 0.01)
            assert trade["fee"]["cost"] == pytest.approx(rest_trade["fee"]["cost"], abs=1e-12)
            assert trade["fee"]["currency"] == rest_trade["fee"]["currency"]
            assert trade["takerOrMaker"] == "taker"

    run(main())


@pytest.mark.parametrize("venue,symbol,key", CASES, ids=IDS)
def test_a_resting_limit_fills_when_the_clock_moves_and_the_watcher_sees_it(emulator, venue, symbol, key):
    fund_all(emulator)
    now = ms(EMULATOR_START)
    current, nxt = close_at(symbol, now), close_at(symbol, now + MS_H)
    assert nxt < current - 100  # 08:30 -> the 09:00 close is lower: a buy between them fills
    limit = round((current + nxt) / 2)

    async def main():
        async with loaded_trader(emulator, venue) as ex:
            first = asyncio.ensure_future(ex.watch_orders(symbol))
            await subscribed(emulator, venue, "order")
            placed = await step(ex.create_order(symbol, "limit", "buy", 0.01, limit,
                                                params={"clientOrderId": "ws-lim"}))
            await step(first)
            resting = await until_order(ex, symbol, placed["id"], lambda o: o["status"] == "open")
            assert resting["filled"] == 0 and resting["price"] == limit

            await asyncio.sleep(0.05)
            watch = asyncio.ensure_future(ex.watch_orders(symbol))
            await asyncio.sleep(0.05)
            emulator.advance(NS_PER_HOUR // 4)  # the 09:00 close is not out yet: nothing to tell
            await asyncio.sleep(0.1)
            assert not watch.done()
            emulator.advance(NS_PER_HOUR)  # from the test's thread: the fill is pushed from the clock move
            await step(watch)
            filled = await until_order(ex, symbol, placed["id"], lambda o: o["status"] == "closed")
            assert (filled["filled"], filled["average"], filled["clientOrderId"]) == (0.01, limit, "ws-lim")
            rest = await step(ex.fetch_order(placed["id"], symbol,
                                             params={"acknowledged": True} if venue == "bybit" else {}))
            assert (rest["status"], rest["filled"], rest["average"]) == ("closed", 0.01, limit)

    run(main())


# ----------------------------------------------------------------- balances and positions

@pytest.mark.parametrize("venue,symbol", [("binance", SPOT_SYM), ("bybit", SPOT_SYM)], ids=["binance", "bybit"])
def test_watch_balance_after_a_spot_fill_is_what_rest_answers(emulator, venue, symbol):
    fund_all(emulator)
    taker = MARKETS[(venue, "spot")].costs.taker_fee

    async def main():
        async with loaded_trader(emulator, venue) as ex:
            watch = asyncio.ensure_future(ex.watch_balance())
            await subscribed(emulator, venue, "wallet")
            placed = await step(ex.create_order(symbol, "market", "buy", 0.01))
            streamed = await step(watch)
            rest = await step(ex.fetch_balance())
            order = await step(ex.fetch_order(placed["id"], symbol,
                                              params={"acknowledged": True} if venue == "bybit" else {}))
            for code in ("BTC", "USDT"):
                assert (streamed[code]["free"], streamed[code]["used"], streamed[code]["total"]) == \
                    (rest[code]["free"], rest[code]["used"], rest[code]["total"]), code
            # the fill and its fee, to the 8-decimal unit the venues book
            assert streamed["USDT"]["total"] == pytest.approx(START_USDT - order["cost"], abs=1e-8)
            assert streamed["BTC"]["total"] == pytest.approx(0.01 * (1 - taker), abs=1e-12)

    run(main())


@pytest.mark.parametrize("venue", ["binanceusdm", "bybit"])
def test_watch_balance_and_positions_after_a_perp_sell(emulator, venue):
    """Balance: Binance's ACCOUNT_UPDATE carries the wallet balance (ccxt's ws
    total) where REST's total is the margin balance (wallet + unrealised);
    Bybit's wallet frame gives ccxt the equity where REST gives the wallet
    balance. Both sides are the same account: wallet = deposit - fee."""
    fund_all(emulator)
    taker = MARKETS[(venue, "perp")].costs.taker_fee

    async def main():
        async with loaded_trader(emulator, venue) as ex:
            snapshot = await step(ex.watch_positions([PERP_SYM]))  # ccxt's REST snapshot first
            assert all(p["contracts"] == 0 for p in snapshot)
            positions = asyncio.ensure_future(ex.watch_positions([PERP_SYM]))
            balance = asyncio.ensure_future(ex.watch_balance({"type": "swap"} if venue == "binanceusdm" else {}))
            await subscribed(emulator, venue, "position")
            await subscribed(emulator, venue, "wallet")
            await step(ex.create_order(PERP_SYM, "market", "sell", 0.01, params={"clientOrderId": "short"}))
            (short,) = [p for p in await step(positions) if p["contracts"]]
            (rest_pos,) = [p for p in await step(ex.fetch_positions([PERP_SYM])) if p["contracts"]]
            (trade,) = await step(ex.fetch_my_trades(PERP_SYM))
            assert (short["symbol"], short["side"], short["contracts"]) == (PERP_SYM, "short", 0.01)
            assert short["entryPrice"] == rest_pos["entryPrice"] == trade["price"]
            assert trade["fee"]["cost"] == pytest.approx(taker * 0.01 * trade["price"], abs=1e-8)

            streamed = await step(balance)
            rest = await step(ex.fetch_balance())
            wallet = START_USDT - trade["fee"]["cost"]
            if venue == "binanceusdm":
                (usdt,) = [a for a in rest["info"]["assets"] if a["asset"] == "USDT"]
                assert streamed["USDT"]["total"] == float(usdt["walletBalance"]) == pytest.approx(wallet, abs=1e-8)
                assert rest["USDT"]["total"] == pytest.approx(
                    wallet + float(usdt["unrealizedProfit"]), abs=1e-8)
            else:
                (coin,) = [c for c in streamed["info"][0]["coin"] if c["coin"] == "USDT"]
                assert float(coin["walletBalance"]) == rest["USDT"]["total"] == pytest.approx(wallet, abs=1e-8)
                assert streamed["USDT"]["total"] == float(coin["equity"]) == pytest.approx(
                    wallet + float(coin["unrealisedPnl"]), abs=1e-8)

    run(main())


# ----------------------------------------------------------------- faults

@pytest.mark.parametrize("venue,symbol,key", CASES, ids=IDS)
def test_a_partial_fill_streams_partially_filled_then_expired(emulator, venue, symbol, key):
    fund_all(emulator)

    async def main():
        async with loaded_trader(emulator, venue) as ex:
            seen = spy_orders(ex)
            first = asyncio.ensure_future(ex.watch_orders(symbol))
            await subscribed(emulator, venue, "order")
            emulator.faults.add("partial_fill", venue=venue, fill_ratio=0.4)
            placed = await step(ex.create_order(symbol, "market", "buy", 0.05, params={"clientOrderId": "part"}))
            await step(first)
            final = "closed" if venue == "bybit" else "expired"  # Bybit PartiallyFilledCanceled: ccxt 'closed'
            order = await until_order(ex, symbol, placed["id"], lambda o: o["status"] == final)
            assert order["filled"] == pytest.approx(0.02) and order["amount"] == 0.05
            steps = [(status, filled) for oid, status, filled in seen if oid == placed["id"]]
            assert ("open", pytest.approx(0.02)) in steps, steps  # partially filled, still open
            assert steps[-1] == (final, pytest.approx(0.02)), steps

    run(main())


@pytest.mark.parametrize("venue,symbol,mode", [("binance", SPOT_SYM, "close"), ("binance", SPOT_SYM, "reset"),
                                               ("binanceusdm", PERP_SYM, "close"), ("bybit", PERP_SYM, "close"),
                                               ("bybit", SPOT_SYM, "reset")])
def test_after_a_dropped_private_stream_a_new_watch_reconnects(emulator, venue, symbol, mode):
    fund_all(emulator)
    hub = websockets(emulator)

    async def main():
        async with loaded_trader(emulator, venue) as ex:
            first = asyncio.ensure_future(ex.watch_orders(symbol))
            await subscribed(emulator, venue, "order")
            hub.faults.add("dropped_websocket", venue=venue, path=PRIVATE_PATH[venue], mode=mode)
            lost = await step(ex.create_order(symbol, "market", "buy", 0.01))  # its first frame drops the stream
            with pytest.raises(ccxt.NetworkError):
                await step(first)
            assert hub.faults.pending == []

            again = asyncio.ensure_future(ex.watch_orders(symbol))  # a new connection: re-subscribe / re-auth
            await subscribed(emulator, venue, "order", count=2)
            placed = await step(ex.create_order(symbol, "market", "buy", 0.01, params={"clientOrderId": "after"}))
            await step(again)
            order = await until_order(ex, symbol, placed["id"], lambda o: o["status"] == "closed")
            assert (order["filled"], order["clientOrderId"]) == (0.01, "after")
            assert lost["id"] not in ex.orders.hashmap.get(symbol, {})  # told while nobody was connected

    run(main())
    connects = [e for e in hub.events if e.what == "connect" and e.venue == venue]
    drops = [e.detail for e in hub.events if e.what == "drop" and e.venue == venue]
    assert len(connects) == 2 and drops == [mode]
    if venue == "bybit":
        assert events(emulator, "bybit", "auth") == 2  # ccxt authenticates the new connection
    if venue == "binanceusdm":  # ccxt keeps its listenKey (it renews it only every 20 min) and the venue accepts it again
        keys = {e.detail.split("listenKey=")[1] for e in connects}
        assert len(keys) == 1 and emulator.log.paths("binanceusdm").count("/fapi/v1/listenKey") == 1


def test_listen_keys_over_rest(emulator):
    """The listenKey endpoints Binance clients call: create (the live key again), keep alive, close."""
    import ccxt as sync_ccxt

    from fundarb.testkit.emulator.server import point_ccxt

    spot = point_ccxt(sync_ccxt.binance(ccxt_config("binance", apiKey="k", secret="s", enableRateLimit=False)),
                      emulator.base_url)
    key = spot.publicPostUserDataStream()["listenKey"]
    assert len(key) == 64 and spot.publicPostUserDataStream()["listenKey"] == key
    assert spot.publicPutUserDataStream({"listenKey": key}) == {}
    assert spot.publicDeleteUserDataStream({"listenKey": key}) == {}
    with pytest.raises(ccxt.BaseError, match="-1125"):
        spot.publicPutUserDataStream({"listenKey": key})
    usdm = point_ccxt(sync_ccxt.binanceusdm(ccxt_config("binanceusdm", apiKey="k", secret="s",
                                                        enableRateLimit=False)), emulator.base_url)
    fkey = usdm.fapiPrivatePostListenKey()["listenKey"]
    assert fkey != key and usdm.fapiPrivatePutListenKey()["listenKey"] == fkey
    assert emulator.accounts.listen_key_venue(fkey) == "binanceusdm"
