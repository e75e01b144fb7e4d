"""The emulator's trading endpoints through the REAL ccxt clients.

Every call a live backend makes (balance, orders by id and by client order
id, open orders, trades, positions, leverage, transfers) goes through ccxt to
127.0.0.1 only. Money is checked independently of the emulator's own numbers:
from the fills ccxt parses, the fee rates and the shipped closes.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import ccxt
import pytest

from fundarb.core.model import NS_PER_HOUR
from fundarb.testkit.emulator.accounts import MARKETS
from fundarb.testkit.emulator.harness import EMULATOR_START, close_at, ms, running_emulator, trading_client

SPOT_SYM, PERP_SYM = "BTC/USDT", "BTC/USDT:USDT"
MS_H = 3_600_000
START_USDT = 10_000.0
# (ccxt id, symbol, emulator market key) of every market the emulator trades
MARKET_CASES = [("binance", SPOT_SYM, ("binance", "spot")), ("binanceusdm", PERP_SYM, ("binanceusdm", "perp")),
                ("bybit", SPOT_SYM, ("bybit", "spot")), ("bybit", PERP_SYM, ("bybit", "perp"))]
MARKET_IDS = ["binance-spot", "binanceusdm-perp", "bybit-spot", "bybit-perp"]


pytestmark = pytest.mark.usefixtures("hang_guard")


def fund_all(server, usdt: float = START_USDT) -> None:
    for wallet in ("binance", "binanceusdm", "bybit"):
        server.accounts.fund(wallet, "USDT", usdt)


def order_by_client_id(ex, symbol: str, client_id: str) -> dict:
    """How a live backend finds an order it may or may not have placed."""
    if ex.id == "bybit":
        # ccxt's bybit fetch_order(None, ...) sends orderId=None and it has no fetch_orders:
        # ask /v5/order/realtime by orderLinkId (any recent order, open or not) and let ccxt parse it
        market = ex.market(symbol)
        reply = ex.privateGetV5OrderRealtime({"category": "spot" if market["spot"] else "linear",
                                              "symbol": market["id"], "orderLinkId": client_id})
        rows = reply["result"]["list"]
        assert len(rows) == 1, rows
        return ex.parse_order(rows[0], market)
    return ex.fetch_order(None, symbol, params={"origClientOrderId": client_id})


def fetch_order(ex, order_id: str, symbol: str) -> dict:
    params = {"acknowledged": True} if ex.id == "bybit" else {}
    return ex.fetch_order(order_id, symbol, params=params)


def slippage_bounds(key, close: float, qty: float, side: str) -> tuple[float, float]:
    costs, tick = MARKETS[key].costs, MARKETS[key].tick
    lo = close * (1 + costs.half_spread_bp_min / 1e4)
    hi = close * (1 + (costs.half_spread_bp_max + costs.impact_bp_per_btc * qty) / 1e4)
    if side == "sell":
        lo, hi = close * (1 - (costs.half_spread_bp_max + costs.impact_bp_per_btc * qty) / 1e4), \
            close * (1 - costs.half_spread_bp_min / 1e4)
    return lo - tick, hi + tick


# ----------------------------------------------------------------- round trips per market

@pytest.mark.parametrize("venue,symbol,key", MARKET_CASES, ids=MARKET_IDS)
def test_market_order_round_trip_and_money_conserves(emulator, closes, venue, symbol, key):
    fund_all(emulator)
    ex = trading_client(emulator, venue)
    ex.load_markets()
    spot = symbol == SPOT_SYM
    before = ex.fetch_balance()
    assert before["USDT"]["total"] == START_USDT and before["USDT"]["free"] == START_USDT

    qty = 0.01
    placed = ex.create_order(symbol, "market", "buy" if spot else "sell", qty, params={"clientOrderId": "carry-1"})
    assert placed["clientOrderId"] == "carry-1" and placed["id"]
    if venue == "bybit":  # ccxt 4.5.90: Bybit's create answers ids only
        assert placed["status"] is None
    order = fetch_order(ex, placed["id"], symbol)
    assert order_by_client_id(ex, symbol, "carry-1")["id"] == order["id"]
    assert (order["status"], order["filled"], order["remaining"], order["clientOrderId"]) == ("closed", qty, 0, "carry-1")

    close = close_at(closes, symbol, ms(EMULATOR_START))
    lo, hi = slippage_bounds(key, close, qty, "buy" if spot else "sell")
    assert lo <= order["average"] <= hi  # the real close moved by the sim's slippage model
    trades = ex.fetch_my_trades(symbol)
    assert [t["order"] for t in trades] == [order["id"]]
    (trade,) = trades
    price, rate = trade["price"], MARKETS[key].costs.taker_fee
    assert trade["takerOrMaker"] == "taker" and trade["amount"] == qty and price == order["average"]
    after = ex.fetch_balance()
    if spot:  # fee in the asset received: BTC on a buy
        assert trade["fee"]["currency"] == "BTC" and trade["fee"]["cost"] == pytest.approx(rate * qty, abs=1e-12)
        btc, usdt = after["BTC"]["total"], after["USDT"]["total"]
        assert btc == pytest.approx(qty - rate * qty, abs=1e-12)
        # cash + position value + fees == start, valued at the fill price
        assert usdt + btc * price + trade["fee"]["cost"] * price == pytest.approx(START_USDT, abs=1e-9)
    else:
        fee = trade["fee"]["cost"]
        assert trade["fee"]["currency"] == "USDT" and fee == pytest.approx(rate * qty * price, abs=1e-8)
        (pos,) = ex.fetch_positions([symbol])
        assert (pos["side"], pos["contracts"], pos["entryPrice"]) == ("short", qty, price)
        wallet = START_USDT - fee
        # ccxt's total: Binance marginBalance (wallet + unrealised), Bybit walletBalance
        upnl_in_total = pos["unrealizedPnl"] if venue == "binanceusdm" else 0.0
        assert after["USDT"]["total"] == pytest.approx(wallet + upnl_in_total, abs=1e-9)
        assert pos["unrealizedPnl"] == pytest.approx(-qty * (close - price), abs=1e-9)
        leverage = emulator.accounts.position(key[0]).leverage
        margin = round(qty * price / leverage, 8)
        # the venue's rule, isolated, written out: Binance (bracket 1 at this size)
        # (margin + q entry) / (q (1 + 0.4%)); Bybit (MM = 0.5% of the entry value) entry + (margin - MM) / q
        want = ((margin + qty * price) / (qty * 1.004) if venue == "binanceusdm"
                else price + (margin - 0.005 * qty * price) / qty)
        assert pos["liquidationPrice"] == pytest.approx(want, abs=0.01)
        assert want == pytest.approx(MARKETS[key].margin.liquidation_price(margin, -qty, price, "isolated"), abs=1e-6)
        assert after["USDT"]["free"] == pytest.approx(wallet - margin, abs=1e-9)

        # close it: the wallet gains the realised PnL and pays a second fee
        emulator.advance(NS_PER_HOUR)
        ex.create_order(symbol, "market", "buy", qty, params={"clientOrderId": "carry-2", "reduceOnly": True})
        trades = ex.fetch_my_trades(symbol)
        assert len(trades) == 2
        exit_px = next(t["price"] for t in trades if t["side"] == "buy")
        fees = sum(t["fee"]["cost"] for t in trades)
        pnl = round(qty * (price - exit_px), 8)
        assert ex.fetch_positions([symbol]) == [] or ex.fetch_positions([symbol])[0]["contracts"] in (0, None)
        final = ex.fetch_balance()["USDT"]
        assert final["total"] == pytest.approx(START_USDT + pnl - fees, abs=1e-9)
        assert final["free"] == pytest.approx(final["total"], abs=1e-9)  # no collateral left in use


@pytest.mark.parametrize("venue,symbol,key", MARKET_CASES, ids=MARKET_IDS)
def test_limit_order_rests_locks_funds_cancels_and_fills_when_the_clock_crosses(emulator, closes, venue, symbol, key):
    fund_all(emulator)
    ex = trading_client(emulator, venue)
    now = ms(EMULATOR_START)
    # 08:30 -> the next close (09:00 bar) is lower on both markets: a buy between them fills after one hour
    current, nxt = close_at(closes, symbol, now), close_at(closes, symbol, now + MS_H)
    assert nxt < current - 100
    limit = round((current + nxt) / 2)
    qty = 0.01

    far = ex.create_order(symbol, "limit", "buy", qty, current - 5000, params={"clientOrderId": "far"})
    near = ex.create_order(symbol, "limit", "buy", qty, limit, params={"clientOrderId": "near"})
    open_ids = sorted(o["id"] for o in ex.fetch_open_orders(symbol))
    assert open_ids == sorted([far["id"], near["id"]])
    locked = qty * (current - 5000) + qty * limit
    if symbol == PERP_SYM:
        locked /= emulator.accounts.position(key[0]).leverage
    assert ex.fetch_balance()["USDT"]["used"] == pytest.approx(locked, abs=1e-8)

    canceled = ex.cancel_order(far["id"], symbol)
    assert canceled["id"] == far["id"]
    assert fetch_order(ex, far["id"], symbol)["status"] == "canceled"
    with pytest.raises(ccxt.OrderNotFound):
        ex.cancel_order(far["id"], symbol)  # no longer open

    emulator.advance(NS_PER_HOUR // 4)  # the 09:00 close is not out yet
    assert fetch_order(ex, near["id"], symbol)["status"] == "open"
    emulator.advance(NS_PER_HOUR)
    filled = fetch_order(ex, near["id"], symbol)
    assert (filled["status"], filled["filled"], filled["average"]) == ("closed", qty, limit)
    (trade,) = ex.fetch_my_trades(symbol)
    assert trade["takerOrMaker"] == "maker" and trade["price"] == limit
    maker = MARKETS[key].costs.maker_fee
    assert trade["fee"]["cost"] == pytest.approx(maker * qty * (1 if symbol == SPOT_SYM else limit), abs=1e-12)
    assert ex.fetch_open_orders(symbol) == []
    if symbol == SPOT_SYM:
        bal = ex.fetch_balance()
        assert bal["USDT"]["used"] == 0 and bal["USDT"]["total"] == pytest.approx(START_USDT - qty * limit, abs=1e-9)
        assert bal["BTC"]["total"] == pytest.approx(qty * (1 - maker), abs=1e-12)


def test_a_marketable_limit_fills_at_once_as_taker(emulator, closes):
    fund_all(emulator)
    ex = trading_client(emulator, "binance")
    current = close_at(closes, SPOT_SYM, ms(EMULATOR_START))
    order = ex.create_order(SPOT_SYM, "limit", "buy", 0.01, current + 50)
    assert order["status"] == "closed" and order["average"] <= current + 50
    assert ex.fetch_my_trades(SPOT_SYM)[0]["takerOrMaker"] == "taker"


def test_perp_position_adds_reduces_flips_and_the_ledger_balances(emulator):
    """wallet == deposit + realised - fees + funding after any sequence of fills."""
    fund_all(emulator)
    for venue in ("binanceusdm", "bybit"):
        ex = trading_client(emulator, venue)
        ex.set_leverage(5, PERP_SYM)
        for i, (side, qty) in enumerate([("sell", 0.02), ("sell", 0.01), ("buy", 0.015), ("buy", 0.025)]):
            ex.create_order(PERP_SYM, "market", side, qty, params={"clientOrderId": f"{venue}-{i}"})
            emulator.advance(NS_PER_HOUR)
        trades = ex.fetch_my_trades(PERP_SYM)
        assert len(trades) == 4
        fees = sum(t["fee"]["cost"] for t in trades)
        # realised PnL recomputed from the fills alone (average-entry accounting)
        qty = entry = realised = 0.0
        for t in trades:
            signed = t["amount"] if t["side"] == "buy" else -t["amount"]
            if qty == 0 or (qty > 0) == (signed > 0):
                entry = (abs(qty) * entry + abs(signed) * t["price"]) / abs(qty + signed)
                qty += signed
            else:
                closed = min(abs(signed), abs(qty))
                realised += round(closed * (t["price"] - entry) * (1 if qty > 0 else -1), 8)
                rest = abs(signed) - closed
                qty, entry = (signed / abs(signed) * rest, t["price"]) if rest > 1e-12 else (round(qty + signed, 12), entry)
        (pos,) = ex.fetch_positions([PERP_SYM])
        assert pos["contracts"] == pytest.approx(abs(qty)) and pos["side"] == "long"
        assert pos["entryPrice"] == pytest.approx(entry, abs=0.1)
        assert pos["leverage"] == 5 or venue == "binanceusdm"  # Binance's v3 positionRisk carries no leverage
        total = ex.fetch_balance()["USDT"]["total"]
        wallet = total - pos["unrealizedPnl"] if venue == "binanceusdm" else total  # Bybit's total is the wallet
        # funding the position received at settlements it was open for (Bybit: ccxt passes the fee sign through)
        funding = sum(-f["amount"] if venue == "bybit" else f["amount"] for f in ex.fetch_funding_history(PERP_SYM))
        assert wallet == pytest.approx(START_USDT + realised - fees + funding, abs=1e-9)
        if venue == "binanceusdm":
            assert sum(float(t["info"]["realizedPnl"]) for t in trades) == pytest.approx(realised, abs=1e-9)


# ----------------------------------------------------------------- refusals

def test_insufficient_balance_and_margin_map_to_the_venue_codes(emulator):
    emulator.accounts.fund("binance", "USDT", 100)
    emulator.accounts.fund("binanceusdm", "USDT", 100)
    emulator.accounts.fund("bybit", "USDT", 100)
    spot = trading_client(emulator, "binance")
    with pytest.raises(ccxt.InsufficientFunds, match="insufficient balance"):
        spot.create_order(SPOT_SYM, "market", "buy", 0.01)
    with pytest.raises(ccxt.InsufficientFunds):
        spot.create_order(SPOT_SYM, "market", "sell", 0.01)  # no BTC to sell

    perp = trading_client(emulator, "binanceusdm")
    perp.set_leverage(2, PERP_SYM)
    # ccxt maps -2019 by hostname; through 127.0.0.1 it is a plain ExchangeError, so check the code
    with pytest.raises(ccxt.ExchangeError, match='"code":-2019') as caught:
        perp.create_order(PERP_SYM, "market", "sell", 0.01)
    assert not isinstance(caught.value, ccxt.InsufficientFunds)
    real_host = perp.get_exceptions_by_url("https://fapi.binance.com/fapi/v1/order", "exact")
    assert real_host["-2019"] is ccxt.InsufficientFunds  # what the same answer raises on the real host

    bybit = trading_client(emulator, "bybit")
    with pytest.raises(ccxt.InsufficientFunds, match="110007"):
        bybit.create_order(PERP_SYM, "market", "sell", 0.05)  # ~2,290 USDT at the default 10x needs ~229
    with pytest.raises(ccxt.InsufficientFunds, match="170131"):
        bybit.create_order(SPOT_SYM, "limit", "buy", 0.01, 40000)
    # a refused order leaves no trace
    for ex, sym in ((spot, SPOT_SYM), (perp, PERP_SYM), (bybit, SPOT_SYM), (bybit, PERP_SYM)):
        assert ex.fetch_my_trades(sym) == [] and ex.fetch_open_orders(sym) == []
    assert spot.fetch_balance()["USDT"]["total"] == 100 and perp.fetch_balance()["USDT"]["total"] == 100


def test_bybit_margin_at_default_leverage(emulator, closes):
    # 10x default: 0.01 BTC (~458 USDT) needs ~45.8 collateral + ~0.25 fee
    emulator.accounts.fund("bybit", "USDT", 40)
    ex = trading_client(emulator, "bybit")
    with pytest.raises(ccxt.InsufficientFunds, match="110007"):
        ex.create_order(PERP_SYM, "market", "sell", 0.01)
    emulator.accounts.fund("bybit", "USDT", 10)
    ex.create_order(PERP_SYM, "market", "sell", 0.01)
    assert ex.fetch_positions([PERP_SYM])[0]["contracts"] == 0.01


def test_duplicate_client_order_ids_get_the_venue_codes(emulator, closes):
    fund_all(emulator)
    low = close_at(closes, SPOT_SYM, ms(EMULATOR_START)) - 3000
    spot = trading_client(emulator, "binance")
    spot.create_order(SPOT_SYM, "limit", "buy", 0.01, low, params={"clientOrderId": "dup"})
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        spot.create_order(SPOT_SYM, "limit", "buy", 0.01, low, params={"clientOrderId": "dup"})

    perp = trading_client(emulator, "binanceusdm")
    perp.create_order(PERP_SYM, "limit", "buy", 0.01, low, params={"clientOrderId": "dup"})
    with pytest.raises(ccxt.ExchangeError, match='"code":-4116') as caught:
        perp.create_order(PERP_SYM, "limit", "buy", 0.01, low, params={"clientOrderId": "dup"})
    assert not isinstance(caught.value, ccxt.InvalidOrder)  # by hostname, as -2019
    assert perp.get_exceptions_by_url("https://fapi.binance.com/fapi/v1/order", "exact")["-4116"] is ccxt.InvalidOrder

    # Binance: "a unique id among OPEN orders": once the first is closed, the id is free again.
    # A retry after a lost answer must therefore look the id up before it sends again.
    spot.cancel_order(None, SPOT_SYM, params={"origClientOrderId": "dup"})
    again = spot.create_order(SPOT_SYM, "market", "buy", 0.001, params={"clientOrderId": "dup"})
    assert again["status"] == "closed"

    bybit = trading_client(emulator, "bybit")
    bybit.create_order(PERP_SYM, "market", "sell", 0.01, params={"clientOrderId": "once"})
    with pytest.raises(ccxt.InvalidOrder, match="110072"):  # Bybit refuses a used orderLinkId even when filled
        bybit.create_order(PERP_SYM, "market", "sell", 0.01, params={"clientOrderId": "once"})
    assert len(bybit.fetch_my_trades(PERP_SYM)) == 1


def test_unknown_orders_and_unsigned_calls(emulator):
    fund_all(emulator)
    for venue, symbol in (("binance", SPOT_SYM), ("binanceusdm", PERP_SYM), ("bybit", PERP_SYM)):
        ex = trading_client(emulator, venue)
        with pytest.raises(ccxt.OrderNotFound):
            ex.cancel_order("4999999999" if venue != "bybit" else "no-such-order", symbol)
        with pytest.raises(ccxt.OrderNotFound):
            fetch_order(ex, "4999999999" if venue != "bybit" else "no-such-order", symbol)

    def raw(path: str, headers: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(emulator.base_url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                return reply.status, json.load(reply)
        except urllib.error.HTTPError as err:
            return err.code, json.load(err)

    assert raw("/api/v3/account?timestamp=1&signature=x") == (401, {"code": -2014, "msg": "API-key format invalid."})
    status, body = raw("/fapi/v3/account?timestamp=1", {"X-MBX-APIKEY": "k"})
    assert (status, body["code"]) == (400, -1102) and "signature" in body["msg"]
    status, body = raw("/v5/account/wallet-balance?accountType=UNIFIED")
    assert (status, body["retCode"]) == (401, 10003)
    assert ccxt.bybit().exceptions["exact"]["10003"] is ccxt.AuthenticationError
    assert ccxt.binance().exceptions["exact"]["-2014"] is ccxt.AuthenticationError


# ----------------------------------------------------------------- faults

@pytest.mark.parametrize("venue,symbol", [("binance", SPOT_SYM), ("binanceusdm", PERP_SYM), ("bybit", PERP_SYM)])
def test_timeout_after_place_the_order_exists_and_is_found_by_client_id(emulator, venue, symbol):
    fund_all(emulator)
    ex = trading_client(emulator, venue, timeout=300)
    ex.load_markets()
    emulator.faults.add("timeout_after_place", venue=venue, delay_s=1.0)
    with pytest.raises(ccxt.RequestTimeout):
        ex.create_order(symbol, "market", "buy", 0.01, params={"clientOrderId": "lost-answer"})
    assert [(e.path, e.status, e.fault) for e in emulator.log.entries if e.fault] == [
        (emulator.log.entries[-1].path, None, "timeout_after_place")]
    # the reconciliation a live backend runs: look the client id up before re-sending
    found = order_by_client_id(ex, symbol, "lost-answer")
    assert (found["status"], found["filled"], found["clientOrderId"]) == ("closed", 0.01, "lost-answer")
    assert [t["order"] for t in ex.fetch_my_trades(symbol)] == [found["id"]]  # placed once


@pytest.mark.parametrize("venue,symbol", [("binance", SPOT_SYM), ("binanceusdm", PERP_SYM), ("bybit", SPOT_SYM),
                                          ("bybit", PERP_SYM)])
def test_partial_fill_fills_a_share_and_the_rest_expires(emulator, venue, symbol):
    fund_all(emulator)
    ex = trading_client(emulator, venue)
    ex.load_markets()
    fault = emulator.faults.add("partial_fill", venue=venue, fill_ratio=0.4)
    ex.fetch_balance()  # not an order placement: the fault waits for one
    assert emulator.faults.pending == [fault]
    placed = ex.create_order(symbol, "market", "buy", 0.05, params={"clientOrderId": "part"})
    order = fetch_order(ex, placed["id"], symbol)
    assert order["filled"] == pytest.approx(0.02) and order["amount"] == 0.05
    # Binance prints EXPIRED (ccxt 'expired'); Bybit PartiallyFilledCanceled (ccxt 'closed')
    assert order["status"] == ("closed" if venue == "bybit" else "expired")
    assert order["info"]["orderStatus" if venue == "bybit" else "status"] in ("PartiallyFilledCanceled", "EXPIRED")
    assert sum(t["amount"] for t in ex.fetch_my_trades(symbol)) == pytest.approx(0.02)
    assert ex.fetch_open_orders(symbol) == []
    assert emulator.faults.pending == []


def test_placement_faults_validate(emulator):
    with pytest.raises(ValueError, match="fill_ratio"):
        emulator.faults.add("partial_fill", fill_ratio=1.5)


# ----------------------------------------------------------------- transfers

def test_binance_transfer_moves_usdt_between_spot_and_usdm(emulator):
    emulator.accounts.fund("binance", "USDT", 1000)
    spot, perp = trading_client(emulator, "binance"), trading_client(emulator, "binanceusdm")
    # ccxt 4.5.90 reads 'future' as an isolated-margin symbol; USD-M is 'linear' (or 'swap')
    out = spot.transfer("USDT", 400, "spot", "linear")
    # Binance answers only a tranId (numbered on across emulator starts, as a venue never repeats one)
    assert out["id"].isdigit() and int(out["id"]) > 100_000_000_000 and out["status"] is None
    assert spot.fetch_balance()["USDT"]["total"] == 600 and perp.fetch_balance()["USDT"]["total"] == 400
    perp.transfer("USDT", 150, "linear", "spot")
    assert spot.fetch_balance()["USDT"]["total"] == 750 and perp.fetch_balance()["USDT"]["total"] == 250
    with pytest.raises(ccxt.ExchangeError, match="-5013"):  # the spot-host table maps it to InsufficientFunds
        spot.transfer("USDT", 10_000, "spot", "linear")
    assert spot.get_exceptions_by_url("https://api.binance.com/sapi/v1/asset/transfer", "exact")["-5013"] \
        is ccxt.InsufficientFunds
    # collateral in use cannot leave the futures wallet
    perp.set_leverage(1, PERP_SYM)
    perp.create_order(PERP_SYM, "market", "sell", 0.005)
    free = perp.fetch_balance()["USDT"]["free"]
    with pytest.raises(ccxt.ExchangeError, match="-5013"):
        perp.transfer("USDT", free + 1, "linear", "spot")
    perp.transfer("USDT", free, "linear", "spot")
    assert perp.fetch_balance()["USDT"]["free"] == pytest.approx(0, abs=1e-9)


def test_bybit_transfer_between_funding_and_unified(emulator):
    emulator.accounts.fund("bybit:FUND", "USDT", 500)
    ex = trading_client(emulator, "bybit")
    ex.transfer("USDT", 200, "funding", "unified")
    assert ex.fetch_balance()["USDT"]["total"] == 200
    assert ex.fetch_balance({"type": "funding"})["USDT"]["total"] == 300
    with pytest.raises(ccxt.InsufficientFunds):
        ex.transfer("USDT", 1000, "unified", "funding")
    with pytest.raises(ccxt.BadRequest):
        ex.transfer("USDT", 1, "spot", "unified")  # no SPOT account on a unified account


# ----------------------------------------------------------------- determinism

def test_fills_are_seeded(closes):
    def prices(seed: int) -> list[float]:
        with running_emulator(seed=seed) as server:
            server.accounts.fund("binance", "USDT", 100_000)
            ex = trading_client(server, "binance")
            return [ex.create_order(SPOT_SYM, "market", "buy", 0.01)["average"] for _ in range(5)]

    first = prices(3)
    assert first == prices(3) and first != prices(4)
