"""The emulator's inverse (coin-margined) markets through the REAL ccxt
clients: Binance COIN-M (``binancecoinm``, ``/dapi``, BTCUSD_PERP, 100 USD a
contract) and Bybit v5 ``category=inverse`` (BTCUSD, 1 USD a contract), both
settled in BTC; and Bybit's UNIFIED wallet counting spot BTC at its tiered
collateral value.

Expected numbers come from the shipped parquet files, not from the emulator:
the COIN-M BTCUSD_PERP hourly closes (the price, the mark, and the stand-in
for Bybit's BTCUSD, of which no prices are shipped), binance BTCUSD_PERP and
bybit BTCUSD settlements, the shipped BTC margin tiers, and the inverse rules
written out here (fee ``rate * contracts * size / price`` BTC, PnL
``face * (1/entry - 1/price)``, funding ``-face / mark * rate``).

The window, 2023-01-10: COIN-M settles +0.0003% at 16:00 and -0.0018% at
00:00, Bybit BTCUSD +0.0074% and -0.0103%. Everything goes to 127.0.0.1.
"""

from __future__ import annotations

import asyncio

import ccxt
import ccxt.pro
import polars as pl
import pytest

from fundarb.config import BYBIT_BTC_COLLATERAL_EXAMPLE
from fundarb.core.liquidation import CROSS, collateral_value
from fundarb.data.history import FUNDING_FILE, PRICES_FILE, SHIPPED_DIR
from fundarb.data.margin_tiers import rule_from_ccxt_tiers, shipped_rule
from fundarb.testkit.emulator.accounts import MARKETS
from fundarb.testkit.emulator.harness import ms, running_emulator, trading_client
from fundarb.testkit.emulator.server import ccxt_config
from fundarb.testkit.emulator.ws import point_ccxt_pro, websockets

INV = "BTC/USD:BTC"
MS_H = 3_600_000
START = "2023-01-10T08:30"
NEXT_SETTLEMENT = "2023-01-10T16:00"
COINM_FEES = MARKETS[("binancecoinm", "inverse")].costs
BYBIT_FEES = MARKETS[("bybit", "inverse")].costs

pytestmark = pytest.mark.usefixtures("hang_guard")


@pytest.fixture(scope="module")
def shipped() -> dict[str, pl.DataFrame]:
    prices = pl.read_parquet(SHIPPED_DIR / PRICES_FILE)
    funding = pl.read_parquet(SHIPPED_DIR / FUNDING_FILE)

    def closes(market: str, symbol: str) -> pl.DataFrame:
        return prices.filter((pl.col("market") == market) & (pl.col("symbol") == symbol)
                             & pl.col("close").is_not_null()).select(
            (pl.col("open_time_ms") + MS_H).alias("close_ms"), "close").sort("close_ms")

    def settlements(venue: str, symbol: str) -> pl.DataFrame:
        return funding.filter((pl.col("venue") == venue) & (pl.col("symbol") == symbol)).select(
            "funding_time_ms", "funding_rate").sort("funding_time_ms")

    return {"coinm": closes("perp_inverse", "BTCUSD_PERP"), "spot": closes("spot", "BTCUSDT"),
            "binancecoinm": settlements("binance", "BTCUSD_PERP"), "bybit": settlements("bybit", "BTCUSD")}


def close_at(shipped, series: str, t_ms: int) -> float:
    """The last close known at ``t_ms`` (a missing hour carries the one before)."""
    return shipped[series].filter(pl.col("close_ms") <= t_ms)["close"][-1]


def rates_upto(shipped, venue: str, t_ms: int) -> pl.DataFrame:
    return shipped[venue].filter(pl.col("funding_time_ms") <= t_ms)


@pytest.fixture
def server():
    with running_emulator(START) as emu:
        yield emu


def coinm_btc(ex) -> dict:
    """The COIN-M wallet's BTC row as /dapi/v1/account answers it."""
    return next(a for a in ex.dapiPrivateGetAccount()["assets"] if a["asset"] == "BTC")


def dapi_paths(server) -> list[str]:
    return [e.path for e in server.log.entries if e.venue == "binancecoinm"]


# ----------------------------------------------------------------- Binance COIN-M: market data

def test_coinm_markets_ticker_funding_and_book(server, shipped):
    ex = trading_client(server, "binancecoinm")
    markets = ex.load_markets()
    assert list(markets) == [INV]
    m = markets[INV]
    assert (m["id"], m["contractSize"], m["inverse"], m["linear"], m["settle"], m["swap"]) == \
        ("BTCUSD_PERP", 100, True, False, "BTC", True)
    assert (m["precision"]["amount"], m["precision"]["price"], m["limits"]["amount"]["min"]) == (1, 0.1, 1)

    now = ms(START)
    close = close_at(shipped, "coinm", now)
    assert ex.fetch_ticker(INV)["last"] == close
    rate = ex.fetch_funding_rate(INV)
    assert rate["markPrice"] == close and rate["indexPrice"] == close_at(shipped, "spot", now)
    assert rate["fundingRate"] == rates_upto(shipped, "binancecoinm", now)["funding_rate"][-1]  # last settled
    assert rate["fundingTimestamp"] == ms(NEXT_SETTLEMENT)

    # the history: the real rows, each stamped 0-16 ms after its instant as the venue does
    since = ms("2023-01-08T00:00")
    rows = ex.fetch_funding_rate_history(INV, since=since, limit=5)
    want = shipped["binancecoinm"].filter(pl.col("funding_time_ms") >= since).head(5)
    assert [r["fundingRate"] for r in rows] == want["funding_rate"].to_list()
    assert all(0 <= r["timestamp"] - t <= 16 for r, t in zip(rows, want["funding_time_ms"], strict=True))
    assert len(rows) == 5 and want["funding_time_ms"][-1] == ms("2023-01-09T08:00")  # the first 5 from since

    book = ex.fetch_order_book(INV, 5)
    assert book["bids"][0][0] < close < book["asks"][0][0]
    assert book["asks"][0][0] - book["bids"][0][0] <= 0.2 + 1e-9 and book["bids"][0][1] == 100  # contracts

    assert set(dapi_paths(server)) <= {"/dapi/v1/exchangeInfo", "/dapi/v1/ticker/24hr", "/dapi/v1/premiumIndex",
                                       "/dapi/v1/fundingRate", "/dapi/v1/depth"}
    assert all(e.status == 200 for e in server.log.entries)

    # hours missing from the shipped COIN-M closes (2023-05-10 has none) are missing here too: the last close carries
    gap = shipped["coinm"].filter(pl.col("close_ms").is_between(ms("2023-05-10T00:00") + 1, ms("2023-05-10T12:00")))
    assert gap.height == 0
    server.set_time("2023-05-10T12:00")
    assert ex.fetch_ticker(INV)["last"] == close_at(shipped, "coinm", ms("2023-05-10T00:00"))


# ----------------------------------------------------------------- Binance COIN-M: trading

def test_coinm_short_pays_funding_in_btc_and_buys_back(server, shipped):
    """BTC moves spot -> COIN-M by the universal transfer; a short of 20 contracts
    is margined by it (cross), receives/pays the real settlements in BTC, and
    closes reduce-only; the BTC ledger balances to the satoshi."""
    server.accounts.fund("binance", "BTC", 0.02)
    spot, ex = trading_client(server, "binance"), trading_client(server, "binancecoinm")
    spot.transfer("BTC", 0.01, "spot", "inverse")  # ccxt: MAIN_CMFUTURE
    asked = [e for e in server.log.entries if e.path == "/sapi/v1/asset/transfer"]
    assert asked[-1].query["type"] == "MAIN_CMFUTURE"
    assert spot.fetch_balance()["BTC"]["total"] == pytest.approx(0.01, abs=1e-12)
    assert ex.fetch_balance()["BTC"]["total"] == pytest.approx(0.01, abs=1e-12)

    n, size = 20, 100
    order = ex.create_order(INV, "market", "sell", n, params={"newOrderRespType": "RESULT"})
    assert (order["status"], order["filled"], order["amount"]) == ("closed", n, n)
    entry = order["average"]
    close = close_at(shipped, "coinm", ms(START))
    assert entry <= close and entry == round(entry, 1)  # a sell at or under the close, on the 0.1 tick
    open_fee = round(COINM_FEES.taker_fee * n * size / entry, 8)

    (pos,) = ex.fetch_positions([INV])
    face = -n * size
    assert (pos["contracts"], pos["contractSize"], pos["side"], pos["entryPrice"], pos["marginMode"]) == \
        (n, size, "short", entry, "cross")
    assert pos["markPrice"] == close
    assert pos["unrealizedPnl"] == pytest.approx(face * (1 / entry - 1 / close), abs=1e-8)  # BTC
    assert pos["notional"] == pytest.approx(n * size / close, abs=1e-8)  # BTC
    wallet = 0.01 - open_fee
    balance = ex.fetch_balance()["BTC"]  # ccxt's total is COIN-M's marginBalance: the wallet plus the unrealised PnL
    assert float(coinm_btc(ex)["walletBalance"]) == pytest.approx(wallet, abs=1e-9)
    assert balance["total"] == pytest.approx(wallet + pos["unrealizedPnl"], abs=1e-8)
    # the liquidation price: binance_coinm, cross, the shipped BTC bracket and the wallet's BTC
    want_liq = shipped_rule("binancecoinm", INV).liquidation_price(wallet, face, entry, CROSS)
    assert pos["liquidationPrice"] == pytest.approx(want_liq, rel=1e-9) and want_liq > entry

    (trade,) = ex.fetch_my_trades(INV)
    assert (trade["amount"], trade["price"], trade["fee"]["currency"]) == (n, entry, "BTC")
    assert trade["fee"]["cost"] == pytest.approx(open_fee, abs=1e-12)
    assert trade["info"]["baseQty"] == f"{n * size / entry:.8f}" and trade["info"]["commissionAsset"] == "BTC"

    # two real settlements of opposite signs: -face / mark * rate BTC each, mark the COIN-M close at the instant
    server.set_time("2023-01-11T00:30")
    paid = ex.fetch_funding_history(INV)
    want = shipped["binancecoinm"].filter(pl.col("funding_time_ms").is_between(ms(START), ms("2023-01-11T00:30")))
    expected = [(t, round(-face / close_at(shipped, "coinm", t) * r, 8)) for t, r in want.iter_rows()]
    assert len(expected) == 2 and expected[0][1] * expected[1][1] < 0
    assert [(f["timestamp"], f["amount"], f["code"]) for f in paid] == [(t, a, "BTC") for t, a in expected]

    # buy back reduce-only; a reduce-only order that would open is refused with COIN-M's code
    back = ex.create_order(INV, "market", "buy", n, params={"reduceOnly": True, "newOrderRespType": "RESULT"})
    exit_px = back["average"]
    assert ex.fetch_positions([INV]) == []  # flat: ccxt drops the zero row
    with pytest.raises(ccxt.ExchangeError, match="-2022"):
        ex.create_order(INV, "market", "buy", 1, params={"reduceOnly": True})
    close_fee = round(COINM_FEES.taker_fee * n * size / exit_px, 8)
    realized = round(face * (1 / entry - 1 / exit_px), 8)
    trades = ex.fetch_my_trades(INV)
    assert [t["side"] for t in trades] == ["sell", "buy"]
    assert float(trades[-1]["info"]["realizedPnl"]) == pytest.approx(realized, abs=1e-12)
    ledger = 0.01 - open_fee - close_fee + realized + sum(a for _, a in expected)
    assert ex.fetch_balance()["BTC"]["total"] == pytest.approx(ledger, abs=1e-9)
    income = ex.dapiPrivateGetIncome({"symbol": "BTCUSD_PERP"})
    assert sorted({r["incomeType"] for r in income}) == ["COMMISSION", "FUNDING_FEE", "REALIZED_PNL"]
    assert all(r["asset"] == "BTC" for r in income)

    # the BTC goes back to the spot wallet
    spot.transfer("BTC", ledger, "inverse", "spot")
    assert [e.query["type"] for e in server.log.entries if e.path == "/sapi/v1/asset/transfer"][-1] == "CMFUTURE_MAIN"
    assert spot.fetch_balance()["BTC"]["total"] == pytest.approx(0.01 + ledger, abs=1e-9)
    assert [(e.method, e.status) for e in server.log.entries if e.venue == "binancecoinm" and e.status != 200] == [
        ("POST", 400)]  # the reduce-only refusal only


def test_coinm_leverage_tiers_and_refusals(server):
    ex = trading_client(server, "binancecoinm")
    tiers = ex.fetch_leverage_tiers([INV])[INV]  # ccxt asks /dapi/v2/leverageBracket
    assert "/dapi/v2/leverageBracket" in dapi_paths(server)
    assert [(t["minNotional"], t["maxNotional"], t["maintenanceMarginRate"], t["maxLeverage"]) for t in tiers] == \
        [(0, 50, 0.004, 125)]
    assert rule_from_ccxt_tiers("binancecoinm", INV, tiers).tiers == shipped_rule("binancecoinm", INV).tiers

    server.accounts.fund("binancecoinm", "BTC", 0.001)
    # margin is insufficient: 100 contracts at 20x need ~0.011 BTC. Through 127.0.0.1 ccxt maps the
    # futures codes to ExchangeError (its error table is chosen by hostname): assert on the code
    with pytest.raises(ccxt.ExchangeError, match="-2019"):
        ex.create_order(INV, "market", "sell", 100)
    with pytest.raises(ccxt.ExchangeError, match="-2013"):
        ex.fetch_order("123456", INV)
    below = round(ex.fetch_ticker(INV)["last"] * 0.9, 1)
    ex.create_order(INV, "limit", "buy", 1, below, {"clientOrderId": "rest-1"})
    with pytest.raises(ccxt.ExchangeError, match="-4116"):
        ex.create_order(INV, "limit", "buy", 1, below, {"clientOrderId": "rest-1"})
    (resting,) = ex.fetch_open_orders(INV)
    assert (resting["clientOrderId"], resting["amount"], resting["price"]) == ("rest-1", 1, below)
    ex.cancel_order(resting["id"], INV)
    assert ex.fetch_open_orders(INV) == []
    ex.set_leverage(2, INV)
    assert ex.dapiPrivateGetPositionRisk({"symbol": "BTCUSD_PERP"})[0]["leverage"] == "2"


def test_coinm_order_faults_429_and_a_lost_answer(server):
    server.accounts.fund("binancecoinm", "BTC", 0.05)
    ex = trading_client(server, "binancecoinm", timeout=300)
    ex.load_markets()
    server.faults.add("rate_limit", venue="binancecoinm", path="/dapi/v1/order", retry_after_s=3)
    with pytest.raises(ccxt.DDoSProtection):
        ex.create_order(INV, "market", "sell", 5)
    assert ex.last_response_headers["Retry-After"] == "3"
    assert ex.fetch_positions([INV]) == []  # refused before placing

    server.faults.add("timeout_after_place", venue="binancecoinm", delay_s=1.0)
    with pytest.raises(ccxt.RequestTimeout):
        ex.create_order(INV, "market", "sell", 5, params={"clientOrderId": "lost-answer"})
    assert [(e.path, e.status, e.fault) for e in server.log.entries if e.fault] == [
        ("/dapi/v1/order", 429, "rate_limit"), ("/dapi/v1/order", None, "timeout_after_place")]
    # the venue placed it: found by its client id, filled once
    found = ex.fetch_order(None, INV, params={"origClientOrderId": "lost-answer"})
    assert (found["status"], found["filled"], found["clientOrderId"]) == ("closed", 5, "lost-answer")
    assert [t["order"] for t in ex.fetch_my_trades(INV)] == [found["id"]]
    assert ex.fetch_positions([INV])[0]["contracts"] == 5


# ----------------------------------------------------------------- Bybit inverse and the unified wallet

def test_bybit_inverse_round_trip_and_unified_collateral(server, shipped):
    server.accounts.fund("bybit", "BTC", 0.2)
    server.accounts.fund("bybit", "USDT", 1000)
    ex = trading_client(server, "bybit")
    m = ex.load_markets()[INV]
    assert (m["id"], m["contractSize"], m["inverse"], m["settle"], m["precision"]["price"]) == \
        ("BTCUSD", 1, True, "BTC", 0.5)
    now = ms(START)
    close = close_at(shipped, "coinm", now)  # the stand-in: Binance's COIN-M close, never called Bybit's
    assert ex.fetch_ticker(INV)["last"] == close
    assert ex.fetch_funding_rate(INV)["fundingRate"] == rates_upto(shipped, "bybit", now)["funding_rate"][-1]
    history = ex.fetch_funding_rate_history(INV, limit=3)
    assert [(r["timestamp"], r["fundingRate"]) for r in history] == \
        list(rates_upto(shipped, "bybit", now).tail(3).iter_rows())

    n = 1500  # contracts of 1 USD
    placed = ex.create_order(INV, "market", "sell", n, params={"clientOrderId": "inv-1"})
    order = ex.fetch_order(placed["id"], INV, params={"acknowledged": True})
    entry = order["average"]
    assert (order["status"], order["filled"]) == ("closed", n) and entry == round(entry * 2) / 2  # 0.5 tick
    (pos,) = ex.fetch_positions([INV])
    assert (pos["contracts"], pos["side"], pos["entryPrice"], pos["markPrice"]) == (n, "short", entry, close)
    assert pos["unrealizedPnl"] == pytest.approx(-n * (1 / entry - 1 / close), abs=1e-8)
    assert pos["liquidationPrice"] is None  # 0.2 BTC covers a 0.03 BTC short: none (bybit_inverse, cross)
    (trade,) = ex.fetch_my_trades(INV)
    fee = round(BYBIT_FEES.taker_fee * n / entry, 8)
    assert (trade["fee"]["currency"], trade["fee"]["cost"]) == ("BTC", pytest.approx(fee, abs=1e-12))

    # the unified wallet: spot BTC counted at its tiered collateral value; the short's BTC margin and PnL
    row = ex.privateGetV5AccountWalletBalance({"accountType": "UNIFIED"})["result"]["list"][0]
    px = close_at(shipped, "spot", now)
    btc = 0.2 - fee
    upnl_usd = -n * (1 / entry - 1 / close) * px
    assert float(row["totalWalletBalance"]) == pytest.approx(
        1000 + collateral_value(btc, BYBIT_BTC_COLLATERAL_EXAMPLE) * px, abs=1e-6)
    assert float(row["totalEquity"]) == pytest.approx(1000 + btc * px + upnl_usd, abs=1e-6)
    assert float(row["totalMarginBalance"]) == pytest.approx(float(row["totalWalletBalance"]) + upnl_usd, abs=1e-6)
    im_usd = n / close / 10 * px  # default 10x, at the mark
    assert float(row["totalInitialMargin"]) == pytest.approx(im_usd, abs=1e-6)
    assert float(row["accountIMRate"]) == pytest.approx(im_usd / float(row["totalMarginBalance"]), abs=1e-4)
    coin = {c["coin"]: c for c in row["coin"]}
    assert float(coin["BTC"]["totalPositionIM"]) == pytest.approx(n / close / 10, abs=1e-8)
    ratio = ex.publicGetV5SpotMarginTradeCollateral({"currency": "BTC"})["result"]["list"]
    assert ratio == [{"currency": "BTC", "collateralRatioList": [
        {"maxQty": "1000000", "minQty": "0", "collateralRatio": "0.85"}]}]

    # a real Bybit BTCUSD settlement: -face / mark * rate BTC; ccxt passes Bybit's execFee
    # (the funding as a fee: paid > 0) through as the amount
    server.set_time("2023-01-10T16:30")
    (paid,) = ex.fetch_funding_history(INV)
    rate = shipped["bybit"].filter(pl.col("funding_time_ms") == ms(NEXT_SETTLEMENT))["funding_rate"][0]
    amount = round(n / close_at(shipped, "coinm", ms(NEXT_SETTLEMENT)) * rate, 8)
    assert (paid["timestamp"], paid["info"]["feeCurrency"], float(paid["info"]["execFee"])) == \
        (ms(NEXT_SETTLEMENT), "BTC", pytest.approx(-amount, abs=1e-12))

    back = ex.create_order(INV, "market", "buy", n, params={"reduceOnly": True})
    exit_px = ex.fetch_order(back["id"], INV, params={"acknowledged": True})["average"]
    assert [(p["contracts"], p["side"]) for p in ex.fetch_positions([INV])] == [(0, None)]  # asked by symbol: the flat row
    close_fee = round(BYBIT_FEES.taker_fee * n / exit_px, 8)
    realized = round(-n * (1 / entry - 1 / exit_px), 8)
    assert ex.fetch_balance()["BTC"]["total"] == pytest.approx(0.2 - fee - close_fee + realized + amount, abs=1e-9)
    assert ex.fetch_balance()["USDT"]["total"] == 1000
    assert all(e.status == 200 for e in server.log.entries)


# ----------------------------------------------------------------- websockets (ccxt.pro)

STEP = 5.0  # bound of every single await


async def step(aw):
    async with asyncio.timeout(STEP):
        return await aw


def pro_trader(server, exchange_id: str):
    """A ccxt.pro client with keys, REST and websockets pointed at the emulator."""
    config = ccxt_config(exchange_id, enableRateLimit=False, timeout=5000, apiKey="k", secret="s")
    if exchange_id == "bybit":  # skip ccxt's account-type detection
        config["options"].update({"enableUnifiedAccount": True, "enableUnifiedMargin": False})
    return point_ccxt_pro(getattr(ccxt.pro, exchange_id)(config), server.base_url)


async def subscribed(server, path: str, what: str, count: int) -> None:
    for _ in range(int(STEP / 0.01)):
        if sum(1 for e in websockets(server).events if e.path.startswith(path) and e.what == what) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {what} x{count} on {path}: {websockets(server).events}")


def test_streams_follow_the_clock_and_tell_inverse_fills(server, shipped):
    """COIN-M: ticker and mark price (dstream's bare /ws, as ccxt.pro connects it) follow the
    clock; the listenKey stream tells the fill and the short. Bybit: /v5/public/inverse
    tickers and the private position of an inverse short."""
    server.accounts.fund("binancecoinm", "BTC", 0.05)
    server.accounts.fund("bybit", "BTC", 0.05)
    now = ms(START)

    async def main():
        ex = pro_trader(server, "binancecoinm")
        try:
            await step(ex.load_markets())
            assert (await step(ex.watch_ticker(INV)))["last"] == close_at(shipped, "coinm", now)
            mark = await step(ex.watch_mark_price(INV))
            assert (mark["markPrice"], mark["info"]["s"]) == (close_at(shipped, "coinm", now), "BTCUSD_PERP")
            server.advance_hours(1)
            assert (await step(ex.watch_ticker(INV)))["last"] == close_at(shipped, "coinm", now + MS_H)

            assert await step(ex.watch_positions([INV])) == []  # ccxt's REST snapshot: flat
            positions = asyncio.ensure_future(ex.watch_positions([INV]))
            orders = asyncio.ensure_future(ex.watch_orders(INV))
            await subscribed(server, "/ws/", "connect", 3)  # ticker, mark price, and the listenKey stream
            placed = await step(ex.create_order(INV, "market", "sell", 20))
            (order,) = [o for o in await step(orders) if o["id"] == placed["id"]]
            (short,) = await step(positions)
            assert (order["status"], order["filled"]) == ("closed", 20)
            assert (short["contracts"], short["side"], short["entryPrice"]) == (20, "short", order["average"])
        finally:
            await ex.close()

        by = pro_trader(server, "bybit")
        try:
            await step(by.load_markets())
            ticker = await step(by.watch_ticker(INV))
            assert ticker["last"] == close_at(shipped, "coinm", now + MS_H)  # the COIN-M stand-in
            assert await step(by.watch_positions([INV])) == []
            positions = asyncio.ensure_future(by.watch_positions([INV]))
            await subscribed(server, "/v5/private", "subscribe", 1)
            await step(by.create_order(INV, "market", "sell", 300))
            (short,) = await step(positions)
            assert (short["symbol"], short["contracts"], short["side"]) == (INV, 300, "short")
        finally:
            await by.close()

    asyncio.run(asyncio.wait_for(main(), 20))
    assert server.accounts.listener_errors == []
