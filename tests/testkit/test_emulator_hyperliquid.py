"""Hyperliquid in the emulator through the REAL ccxt client (``ccxt.hyperliquid``,
signing every action offline with the harness's TEST wallet).

The shipped data has no Hyperliquid history: the emulated BTC perp settles
dYdX BTC-USD's real HOURLY rates and prices at Binance's USD-M closes, both
STAND-INS (``fundarb.testkit.emulator.hyperliquid``). Every expected number
here is read from the shipped parquet files or written out by hand (the fee
rates, the liquidation formula of the venue's docs), never taken from the
emulator. Only 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import ccxt
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fundarb.core.model import NS_PER_HOUR
from fundarb.data.history import FUNDING_FILE, PRICES_FILE, SHIPPED_DIR
from fundarb.testkit.emulator.harness import TEST_WALLET, ms, trading_client
from fundarb.venues import quirks
from fundarb.venues.hyperliquid import client_id_of, cloid_of

SYM = "BTC/USDC:USDC"
START = "2023-06-01T00:30"  # inside the stand-in funding window (dYdX BTC-USD 2022-01 .. 2023-12)
MS_H = 3_600_000
START_USDC = 10_000.0
QTY = 0.01
# Hyperliquid's published base perp fees and maintenance margin (half the initial margin at 40x), written out
TAKER, MAKER, MMR = 0.00045, 0.00015, 1 / (2 * 40)
HALF_SPREAD_BP, IMPACT_BP = (0.1, 0.5), 0.5  # the simulator's slippage model the fills draw from (VenueConfig)

pytestmark = pytest.mark.usefixtures("hang_guard")


def cloid(n: int) -> str:
    return f"0x{n:032x}"


@pytest.fixture(scope="module")
def tape() -> dict[str, pl.DataFrame]:
    """The oracle: Binance's perp and spot hourly closes (close instant = open + 1 h) and dYdX's BTC-USD settlements."""
    prices = pl.read_parquet(SHIPPED_DIR / PRICES_FILE).filter((pl.col("venue") == "binance")
                                                                & (pl.col("symbol") == "BTCUSDT"))

    def closes(market: str) -> pl.DataFrame:
        return prices.filter(pl.col("market") == market).select(
            (pl.col("open_time_ms") + MS_H).alias("close_ms"), "close").drop_nulls().sort("close_ms")

    funding = pl.read_parquet(SHIPPED_DIR / FUNDING_FILE).filter(
        (pl.col("venue") == "dydx") & (pl.col("symbol") == "BTC-USD")).select(
        "funding_time_ms", "funding_rate", "interval_hours").sort("funding_time_ms")
    return {"perp": closes("perp_linear"), "spot": closes("spot"), "funding": funding}


def close_at(tape, market: str, t_ms: int) -> float:
    return tape[market].filter(pl.col("close_ms") <= t_ms)["close"][-1]


def rates_between(tape, after_ms: int, upto_ms: int) -> list[tuple[int, float]]:
    rows = tape["funding"].filter((pl.col("funding_time_ms") > after_ms) & (pl.col("funding_time_ms") <= upto_ms))
    return list(rows.select("funding_time_ms", "funding_rate").iter_rows())


def client(emulator, when: str = START, usdc: float = START_USDC, **config: Any) -> Any:
    emulator.set_time(when)
    if usdc:
        emulator.accounts.fund("hyperliquid", "USDC", usdc)
    ex = trading_client(emulator, "hyperliquid", **config)
    ex.load_markets()
    return ex


def short_liq(margin: float, qty: float, entry: float) -> float:
    """The docs' formula for a short (side -1): price - side * margin_available / size / (1 - l * side)."""
    return entry + (margin - qty * entry * MMR) / qty / (1 + MMR)


def slippage_bounds(close: float, qty: float, side: str) -> tuple[float, float]:
    lo_bp, hi_bp = HALF_SPREAD_BP[0], HALF_SPREAD_BP[1] + IMPACT_BP * qty
    if side == "buy":
        return close * (1 + lo_bp / 1e4), math.ceil(close * (1 + hi_bp / 1e4))
    return math.floor(close * (1 - hi_bp / 1e4)), close * (1 - lo_bp / 1e4)


# ----------------------------------------------------------------- market data

def test_markets_load_the_btc_perp_alone_from_what_the_emulator_serves(emulator):
    ex = client(emulator)
    assert list(ex.markets) == [SYM]
    m = ex.market(SYM)
    assert (m["type"], m["linear"], m["settle"], m["baseName"], m["id"]) == ("swap", True, "USDC", "BTC", "0")
    assert (m["precision"]["amount"], m["precision"]["price"], m["limits"]["leverage"]["max"]) == (1e-5, 1.0, 40)
    paths = [e.path for e in emulator.log.entries]
    assert set(paths) == {"/exchange/approveBuilderFee", "/exchange/setReferrer", "/info/userAbstraction",
                          "/info/spotMeta", "/info/metaAndAssetCtxs"}, paths
    assert {e.status for e in emulator.log.entries} == {200}
    approve = next(e for e in emulator.log.entries if e.path == "/exchange/approveBuilderFee")
    assert json.loads(approve.query["action"])["maxFeeRate"] == "0%"  # fundarb's options turn ccxt's builder fee off


def test_ticker_book_and_candles_are_the_stand_in_closes(emulator, tape):
    ex = client(emulator, usdc=0)
    now = ms(START)
    close = close_at(tape, "perp", now)
    t = ex.fetch_ticker(SYM)
    assert float(t["info"]["markPx"]) == close and float(t["info"]["oraclePx"]) == close_at(tape, "spot", now)
    assert t["bid"] < close < t["ask"] and t["ask"] - t["bid"] <= 2  # a one-tick synthetic book around it
    assert t["previousClose"] == close_at(tape, "perp", now - 24 * MS_H)
    book = ex.fetch_order_book(SYM)
    bids, asks = [p for p, _ in book["bids"]], [p for p, _ in book["asks"]]
    assert len(bids) == len(asks) == 20 and bids == sorted(bids, reverse=True) and asks == sorted(asks)
    assert bids[0] < close < asks[0] and book["timestamp"] == now

    candles = ex.fetch_ohlcv(SYM, "1h", since=now - 10 * MS_H)
    want = tape["perp"].filter((pl.col("close_ms") - MS_H >= now - 10 * MS_H) & (pl.col("close_ms") <= now))
    assert [c[0] for c in candles] == [t - MS_H for t in want["close_ms"]]
    assert [c[4] for c in candles] == want["close"].to_list()
    assert all(c[1] == c[2] == c[3] == c[4] for c in candles)  # only closes exist
    with pytest.raises(ccxt.ExchangeError):  # only hourly closes are shipped
        ex.fetch_ohlcv(SYM, "15m", since=now - MS_H)


def test_funding_rate_and_history_are_dydx_hourly_settlements_in_the_window(emulator, tape):
    ex = client(emulator, usdc=0)
    now = ms(START)
    rate = ex.fetch_funding_rate(SYM)
    (last_t, last_rate), = rates_between(tape, now - MS_H, now)
    assert (rate["fundingRate"], rate["interval"]) == (last_rate, "1h")

    since = now - 48 * MS_H
    history = ex.fetch_funding_rate_history(SYM, since=since)
    want = rates_between(tape, since - 1, now)
    assert [(h["timestamp"], h["fundingRate"]) for h in history] == want and len(want) == 48
    assert {b["timestamp"] - a["timestamp"] for a, b in zip(history, history[1:])} == {MS_H}  # hourly
    assert history[-1]["timestamp"] == last_t <= now  # nothing after now

    # a page is 500 settlements from startTime (the venue's cap; its request takes no limit)
    page = ex.fetch_funding_rate_history(SYM, since=ms("2022-01-01T00:00"))
    assert len(page) == 500 and page[0]["timestamp"] == ms("2022-01-01T00:00")

    # the stand-in ends 2023-12-31 23:00: after it there is no funding at all
    emulator.set_time("2024-03-01T00:30")
    assert ex.fetch_funding_rate(SYM)["fundingRate"] is None
    assert ex.fetch_funding_rate_history(SYM, since=ms("2024-01-01T00:00")) == []
    tail = ex.fetch_funding_rate_history(SYM, since=ms("2023-12-31T20:00"))
    assert [h["timestamp"] for h in tail] == [ms(f"2023-12-31T{h}:00") for h in (20, 21, 22, 23)]


# ----------------------------------------------------------------- orders

def test_a_market_order_round_trip_costs_the_taker_fee_and_the_ledger_balances(emulator, tape):
    ex = client(emulator)
    ex.set_leverage(10, SYM, params={"marginMode": "isolated"})
    now = ms(START)
    close = close_at(tape, "perp", now)
    placed = ex.create_order(SYM, "market", "sell", QTY, close, params={"clientOrderId": cloid(1)})
    assert (placed["clientOrderId"], placed["filled"]) == (cloid(1), QTY)
    order = ex.fetch_order(placed["id"], SYM)
    assert ex.fetch_order(None, SYM, params={"clientOrderId": cloid(1)})["id"] == order["id"]
    assert (order["status"], order["filled"], order["remaining"], order["side"]) == ("closed", QTY, 0, "sell")
    (trade,) = ex.fetch_my_trades(SYM)
    price, fee = trade["price"], trade["fee"]["cost"]
    lo, hi = slippage_bounds(close, QTY, "sell")
    assert lo <= price <= hi and price == int(price)  # the close moved by the slippage model, on a whole dollar
    assert trade["takerOrMaker"] == "taker" and trade["fee"]["currency"] == "USDC"
    assert fee == pytest.approx(round(TAKER * QTY * price, 8), abs=1e-9)

    (pos,) = ex.fetch_positions([SYM])
    margin = QTY * price / 10
    assert (pos["side"], pos["contracts"], pos["entryPrice"], pos["leverage"]) == ("short", QTY, price, 10)
    assert pos["liquidationPrice"] == pytest.approx(short_liq(margin, QTY, price), abs=1e-6)
    bal = ex.fetch_balance()["USDC"]
    upnl = -QTY * (close - price)
    assert bal["total"] == pytest.approx(START_USDC - fee + upnl, abs=1e-8)  # accountValue: wallet + unrealised
    assert bal["free"] == pytest.approx(START_USDC - fee - margin, abs=1e-8)

    emulator.advance(NS_PER_HOUR)  # 01:30: the 01:00 settlement is paid to the short
    ex.create_order(SYM, "market", "buy", QTY, close_at(tape, "perp", now + MS_H),
                    params={"clientOrderId": cloid(2), "reduceOnly": True})
    trades = ex.fetch_my_trades(SYM)
    exit_px = next(t["price"] for t in trades if t["side"] == "buy")
    (t_set, rate), = rates_between(tape, now, now + MS_H)
    funding = round(QTY * close_at(tape, "perp", t_set) * rate, 8)
    fees = sum(t["fee"]["cost"] for t in trades)
    assert ex.fetch_positions([SYM]) == []
    final = ex.fetch_balance()["USDC"]
    assert final["total"] == pytest.approx(START_USDC + QTY * (price - exit_px) - fees + funding, abs=1e-8)
    assert final["free"] == pytest.approx(final["total"], abs=1e-9)
    closing = next(t for t in trades if t["side"] == "buy")["info"]
    assert (closing["dir"], float(closing["startPosition"])) == ("Close Short", -QTY)
    assert float(closing["closedPnl"]) == pytest.approx(QTY * (price - exit_px), abs=1e-8)


def test_a_limit_order_rests_cancels_by_id_and_cloid_and_fills_as_maker_when_the_clock_crosses(emulator, tape):
    ex = client(emulator)
    now = ms(START)
    current, nxt = close_at(tape, "perp", now), close_at(tape, "perp", now + MS_H)
    assert nxt < current - 100  # 01:00 closes lower: a buy between the two fills then
    limit = round((current + nxt) / 2)
    far = ex.create_order(SYM, "limit", "buy", QTY, 25_000, params={"clientOrderId": cloid(10)})
    near = ex.create_order(SYM, "limit", "buy", QTY, limit, params={"clientOrderId": cloid(11)})
    by_cloid = ex.create_order(SYM, "limit", "buy", QTY, 25_500, params={"clientOrderId": cloid(12)})
    assert {o["id"] for o in ex.fetch_open_orders(SYM)} == {far["id"], near["id"], by_cloid["id"]}
    used = QTY * (25_000 + limit + 25_500) / 20  # resting orders hold their margin at the default 20x
    assert ex.fetch_balance()["USDC"]["used"] == pytest.approx(used, abs=1e-8)

    ex.cancel_order(far["id"], SYM)
    ex.cancel_order(None, SYM, params={"clientOrderId": cloid(12)})  # cancelByCloid
    assert ex.fetch_order(far["id"], SYM)["status"] == "canceled"
    assert ex.fetch_order(None, SYM, params={"clientOrderId": cloid(12)})["status"] == "canceled"
    with pytest.raises(ccxt.OrderNotFound):
        ex.cancel_order(far["id"], SYM)  # no longer open
    assert any(e.path == "/exchange/cancelByCloid" for e in emulator.log.entries)

    emulator.advance(NS_PER_HOUR // 4)  # 00:45: the 01:00 close is not out yet
    assert ex.fetch_order(near["id"], SYM)["status"] == "open"
    emulator.advance(NS_PER_HOUR)
    filled = ex.fetch_order(near["id"], SYM)
    assert (filled["status"], filled["filled"], filled["price"]) == ("closed", QTY, limit)
    (trade,) = ex.fetch_my_trades(SYM)
    assert (trade["takerOrMaker"], trade["price"]) == ("maker", limit)
    assert trade["fee"]["cost"] == pytest.approx(round(MAKER * QTY * limit, 8), abs=1e-9)
    assert ex.fetch_open_orders(SYM) == []
    history = {o["id"]: o["status"] for o in ex.fetch_orders(SYM)}
    assert history == {far["id"]: "canceled", near["id"]: "closed", by_cloid["id"]: "canceled"}


# ----------------------------------------------------------------- funding, hourly

def test_a_short_collects_the_stand_in_rates_every_hour_the_clock_crosses(emulator, tape):
    ex = client(emulator)
    ex.set_leverage(2, SYM, params={"marginMode": "isolated"})
    now = ms(START)
    ex.create_order(SYM, "market", "sell", QTY, close_at(tape, "perp", now), params={"clientOrderId": cloid(20)})
    (trade,) = ex.fetch_my_trades(SYM)
    entry, fee = trade["price"], trade["fee"]["cost"]
    seen = []
    for _ in range(6):  # 00:30 -> 06:30, an hour at a time: one settlement each
        emulator.advance(NS_PER_HOUR)
        rows = ex.fetch_funding_history(SYM, since=now)
        seen.append(len(rows))
    assert seen == [1, 2, 3, 4, 5, 6]
    end = now + 6 * MS_H
    want = [(t, rate, round(QTY * close_at(tape, "perp", t) * rate, 8)) for t, rate in rates_between(tape, now, end)]
    assert [t for t, _, _ in want] == [ms(f"2023-06-01T0{h}:00") for h in range(1, 7)]  # hourly
    got = [(r["timestamp"], r["rate"], r["amount"]) for r in rows]
    assert got == [(t, pytest.approx(rate, abs=1e-15), pytest.approx(amount, abs=1e-9)) for t, rate, amount in want]
    assert quirks("hyperliquid").funding_sign == 1.0 and all(r["code"] == "USDC" for r in rows)
    received = sum(a for _, _, a in want)
    assert received > 0  # the stand-in rates were positive: longs paid the short
    # the isolated collateral took the payments: they move the liquidation price, as the rule says
    (pos,) = ex.fetch_positions([SYM])
    assert pos["liquidationPrice"] == pytest.approx(short_liq(QTY * entry / 2 + received, QTY, entry), abs=1e-6)
    mark = close_at(tape, "perp", end)
    assert ex.fetch_balance()["USDC"]["total"] == pytest.approx(
        START_USDC - fee + received - QTY * (mark - entry), abs=1e-8)


def test_no_settlement_is_paid_outside_the_stand_in_window(emulator):
    ex = client(emulator, when="2024-02-01T00:30")
    ex.create_order(SYM, "market", "sell", QTY, 43_000, params={"clientOrderId": cloid(30)})
    emulator.advance(5 * NS_PER_HOUR)
    assert ex.fetch_funding_history(SYM, since=ms("2024-01-01T00:00")) == []
    assert emulator.accounts.funding("hyperliquid") == 0.0


# ----------------------------------------------------------------- liquidation

def test_a_40x_short_is_liquidated_at_the_rules_price_when_the_closes_cross_it(emulator, tape):
    when = "2022-02-24T16:30"  # BTC rose from 35,892 (16:00) past 38,000 by 21:00
    ex = client(emulator, when=when)
    ex.set_leverage(40, SYM, params={"marginMode": "isolated"})
    now = ms(when)
    ex.create_order(SYM, "market", "sell", QTY, close_at(tape, "perp", now), params={"clientOrderId": cloid(40)})
    (opened,) = ex.fetch_my_trades(SYM)
    entry, open_fee = opened["price"], opened["fee"]["cost"]
    # walk the shipped closes and settlements by hand: mark first, then funding, at each hour
    margin, hit, liq = round(QTY * entry / 40, 8), None, math.nan
    for t in range(now - now % MS_H + MS_H, now + 8 * MS_H, MS_H):
        liq = short_liq(margin, QTY, entry)
        if close_at(tape, "perp", t) >= liq:
            hit = t
            break
        for _, rate in rates_between(tape, t - 1, t):
            margin = round(margin + QTY * close_at(tape, "perp", t) * rate, 8)
    assert hit == ms("2022-02-24T19:00"), hit
    emulator.set_time("2022-02-24T21:30")
    assert ex.fetch_positions([SYM]) == []
    (liquidation,) = ex.fetch_my_liquidations(SYM)
    price = math.ceil(liq)  # one tick (a dollar) against the account
    assert (liquidation["price"], liquidation["timestamp"], liquidation["contracts"]) == (price, hit, QTY)
    fill = next(t for t in ex.fetch_my_trades(SYM) if t["id"] == liquidation["info"]["tid"].__str__())
    assert fill["info"]["dir"] == "Close Short" and fill["info"]["liquidation"]["method"] == "market"
    pnl = round(QTY * (entry - price), 8)
    liq_fee = round(min(TAKER * QTY * price, margin + pnl), 8)  # the market close's taker fee
    funding = margin - round(QTY * entry / 40, 8)
    assert funding == pytest.approx(sum(r["amount"] for r in ex.fetch_funding_history(SYM, since=now)), abs=1e-9)
    assert ex.fetch_balance()["USDC"]["total"] == pytest.approx(START_USDC - open_fee + funding + pnl - liq_fee,
                                                                abs=1e-8)


# ----------------------------------------------------------------- refusals

def test_refusals_raise_the_ccxt_errors_hyperliquids_answers_map_to(emulator, tape):
    ex = client(emulator, usdc=20.0)
    close = close_at(tape, "perp", ms(START))
    with pytest.raises(ccxt.InsufficientFunds):  # ~1,360 USDC of margin at 20x
        ex.create_order(SYM, "market", "sell", 1.0, close, params={"clientOrderId": cloid(50)})
    with pytest.raises(ccxt.InvalidOrder, match=r"minimum value of \$10"):
        ex.create_order(SYM, "limit", "buy", 0.0001, 25_000)
    with pytest.raises(ccxt.InvalidOrder, match="Reduce only order would increase position"):
        ex.create_order(SYM, "market", "buy", QTY, close, params={"reduceOnly": True})
    with pytest.raises(ccxt.InvalidOrder, match="Post only order would have immediately matched"):
        ex.create_order(SYM, "limit", "buy", 0.001, close + 100, params={"postOnly": True})
    with pytest.raises(ccxt.OrderNotFound):
        ex.cancel_order("123456", SYM)
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order("123456", SYM)
    with pytest.raises(ccxt.ExchangeError):
        ex.set_leverage(41, SYM)
    assert emulator.accounts.all_orders("hyperliquid", "perp") == []  # nothing refused was booked

    q = quirks("hyperliquid")
    ex.create_order(SYM, "limit", "buy", 0.001, 25_000, params={"clientOrderId": cloid(51)})
    with pytest.raises(ccxt.ExchangeError) as twice:
        ex.create_order(SYM, "limit", "buy", 0.001, 25_000, params={"clientOrderId": cloid(51)})
    assert q.duplicate_order(twice.value) and not isinstance(twice.value, ccxt.InsufficientFunds)
    with pytest.raises(ccxt.InsufficientFunds) as broke:
        ex.create_order(SYM, "market", "sell", 1.0, close, params={"clientOrderId": cloid(52)})
    assert not q.duplicate_order(broke.value)
    assert len(emulator.accounts.all_orders("hyperliquid", "perp")) == 1


def test_a_body_without_a_signature_or_with_a_bad_cloid_is_refused_before_anything_happens(emulator, tape):
    ex = client(emulator)
    order = {"a": 0, "b": False, "p": "20000", "s": "0.01", "r": False, "t": {"limit": {"tif": "Ioc"}}}
    action = {"type": "order", "orders": [order], "grouping": "na"}
    with pytest.raises(ccxt.ExchangeError, match="missing field `signature`"):
        ex.privatePostExchange({"action": action, "nonce": ex.milliseconds()})  # ccxt's transport, no signature
    bad = {**action, "orders": [{**order, "c": "carry-1"}]}  # a client id that is not 0x + 32 hex digits
    nonce = ex.milliseconds()
    with pytest.raises(ccxt.ExchangeError, match="invalid cloid"):
        ex.privatePostExchange({"action": bad, "nonce": nonce, "signature": ex.sign_l1_action(bad, nonce)})
    tick = {**action, "orders": [{**order, "p": "20000.5"}]}  # 6 significant figures
    nonce = ex.milliseconds() + 1
    with pytest.raises(ccxt.InvalidOrder, match="divisible by tick size"):
        ex.privatePostExchange({"action": tick, "nonce": nonce, "signature": ex.sign_l1_action(tick, nonce)})
    assert [e.status for e in emulator.log.entries if e.path == "/exchange/order"] == [422, 422, 200]
    assert emulator.accounts.all_orders("hyperliquid", "perp") == []


def test_another_address_sees_an_empty_account_when_the_emulator_knows_its_wallets(emulator, tape):
    ex = client(emulator)
    ex.create_order(SYM, "market", "sell", QTY, close_at(tape, "perp", ms(START)), params={"clientOrderId": cloid(60)})
    emulator.accounts.api_keys = {TEST_WALLET[0]}
    assert ex.fetch_positions([SYM])[0]["contracts"] == QTY
    stranger = {"user": "0x" + "11" * 20}
    assert ex.fetch_positions([SYM], params=stranger) == [] and ex.fetch_my_trades(SYM, params=stranger) == []
    assert ex.fetch_balance(params=stranger)["USDC"]["total"] == 0


# ----------------------------------------------------------------- faults

class Leg:
    """The duck-typed order leg of ``fundarb.venues`` over a synchronous client."""

    def __init__(self, exchange: Any) -> None:
        self.exchange, self.symbol = exchange, SYM

    @property
    def market(self) -> dict[str, Any]:
        return self.exchange.market(SYM)

    async def call(self, method: str, *args: Any) -> Any:
        return getattr(self.exchange, method)(*args)


def test_an_order_whose_answer_never_came_is_found_by_its_fundarb_client_id(emulator, tape):
    ex = client(emulator, timeout=400)
    emulator.faults.add("timeout_after_place", venue="hyperliquid", delay_s=1.5)
    client_id = "fa0123456789ab-7"
    with pytest.raises(ccxt.RequestTimeout):
        ex.create_order(SYM, "market", "sell", QTY, close_at(tape, "perp", ms(START)),
                        params={"clientOrderId": cloid_of(client_id)})
    q = quirks("hyperliquid")
    found = asyncio.run(q.find_order(Leg(ex), client_id))
    assert found is not None and (found["clientOrderId"], found["status"], found["filled"]) == (
        cloid_of(client_id), "closed", QTY)
    assert client_id_of(found["clientOrderId"]) == client_id
    assert asyncio.run(q.find_order(Leg(ex), "fa0123456789ab-8")) is None  # never sent: None, not an error


def test_partial_fills_refusals_and_rate_limits_in_the_venues_words(emulator, tape):
    ex = client(emulator)
    close = close_at(tape, "perp", ms(START))
    emulator.faults.add("partial_fill", venue="hyperliquid", fill_ratio=0.5)
    ioc = ex.create_order(SYM, "market", "sell", 0.02, close, params={"clientOrderId": cloid(70)})
    assert ioc["filled"] == QTY  # an Ioc's rest is cancelled
    assert (ex.fetch_order(ioc["id"], SYM)["status"], ex.fetch_order(ioc["id"], SYM)["remaining"]) == ("canceled", QTY)
    emulator.faults.add("partial_fill", venue="hyperliquid", fill_ratio=0.5)
    gtc = ex.create_order(SYM, "limit", "buy", 0.02, close + 50, params={"clientOrderId": cloid(71)})
    order = ex.fetch_order(gtc["id"], SYM)
    assert (order["status"], order["filled"], order["remaining"]) == ("open", QTY, QTY)  # a Gtc's rest rests

    emulator.faults.add("refuse", venue="hyperliquid")
    with pytest.raises(ccxt.InsufficientFunds):
        ex.create_order(SYM, "limit", "buy", QTY, 25_000, params={"clientOrderId": cloid(72)})
    assert ex.fetch_order(None, SYM, params={"clientOrderId": cloid(71)})["id"] == gtc["id"]  # only /exchange/order
    with pytest.raises(ccxt.OrderNotFound):
        ex.fetch_order(None, SYM, params={"clientOrderId": cloid(72)})

    emulator.faults.add("rate_limit", venue="hyperliquid", path="/info/l2Book")
    ex.fetch_ticker(SYM)  # another info type: not limited
    with pytest.raises(ccxt.RateLimitExceeded):
        ex.fetch_order_book(SYM)
    # the venue has no ban answer: its IP limit is a 429 too, which ccxt raises as RateLimitExceeded
    # (a NetworkError, not the DDoSProtection of Binance's 418)
    emulator.faults.add("ip_ban", venue="hyperliquid", path="/info")
    with pytest.raises(ccxt.RateLimitExceeded) as banned:
        ex.fetch_positions([SYM])
    assert not isinstance(banned.value, ccxt.DDoSProtection)
    assert ex.fetch_order_book(SYM)["bids"]  # both spent


# ----------------------------------------------------------------- client ids

@given(st.text("0123456789abcdef", min_size=12, max_size=12), st.integers(1, 16 ** 20 - 1))
def test_a_fundarb_client_id_and_its_cloid_turn_into_each_other(digits, seq):
    client_id = f"fa{digits}-{seq}"
    made = cloid_of(client_id)
    assert len(made) == 34 and made.startswith("0x") and int(made, 16) >= 0
    assert client_id_of(made) == client_id and cloid_of(made) == made


def test_an_id_that_is_no_cloid_and_no_fundarb_id_is_refused():
    for bad in ("carry-1", "fa0123-1", "fa0123456789ab-" + str(16 ** 20)):
        with pytest.raises(ValueError, match="cloid"):
            cloid_of(bad)
    assert client_id_of(None) is None and client_id_of("0x12") is None
