"""Coinbase Advanced Trade and Kraken spot in the emulator, through the REAL
ccxt clients: market data against the shipped closes they stand in with,
trading with each venue's fees (in USDT) and lot rules, each venue's own
refusals as ccxt raises them, and what fundarb's venue modules rely on.

Money is checked from the fills ccxt parses, the published fee rates and the
shipped closes, not from the emulator's own numbers. Only 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import ccxt
import pytest

from fundarb.core.model import NS_PER_HOUR
from fundarb.testkit.emulator.accounts import MARKETS
from fundarb.testkit.emulator.harness import EMULATOR_START, SPOT_SYM, ccxt_client, close_at, ms, trading_client
from fundarb.venues import kraken as kraken_module
from fundarb.venues import quirks

pytestmark = pytest.mark.usefixtures("hang_guard")

VENUES = ("coinbase", "kraken")
START_USDT = 10_000.0
QTY = 0.01
MS_H = 3_600_000
# venue metadata the markets must carry: (id, lot, tick, least amount, least cost, taker, maker)
SPECS = {"coinbase": ("BTC-USDT", 1e-8, 0.01, 1e-8, 1.0, 0.006, 0.004),
         "kraken": ("XBTUSDT", 1e-8, 0.1, 0.00005, 0.5, 0.004, 0.0025)}


def client(server: Any, venue: str, **config: Any) -> Any:
    ex = trading_client(server, venue, **config)
    ex.load_markets()
    return ex


def params(ex: Any, order_type: str, side: str, client_id: str, amount: float = QTY) -> dict[str, Any]:
    """create_order's params as fundarb's live layer sends them (the venue module's ``order_params``)."""
    return quirks(ex.id).order_params(ex, SPOT_SYM, order_type, side, amount, client_id)


def funded(server: Any, venue: str, usdt: float = START_USDT) -> None:
    server.accounts.fund(venue, "USDT", usdt)


# ----------------------------------------------------------------- market data

@pytest.mark.parametrize("venue", VENUES)
def test_the_market_carries_the_venues_published_spec_and_fees(emulator, venue):
    ex = client(emulator, venue)
    assert list(ex.markets) == [SPOT_SYM]  # BTC/USDT spot, nothing else
    m = ex.market(SPOT_SYM)
    market_id, lot, tick, least, least_cost, taker, maker = SPECS[venue]
    assert (m["id"], m["spot"], m["base"], m["quote"]) == (market_id, True, "BTC", "USDT")
    assert (m["precision"]["amount"], m["precision"]["price"]) == (lot, tick)
    assert (m["limits"]["amount"]["min"], m["limits"]["cost"]["min"]) == (least, least_cost)
    assert (m["taker"], m["maker"]) == (taker, maker)
    spec = MARKETS[(venue, "spot")]  # the money model trades by the same numbers
    assert (spec.costs.taker_fee, spec.costs.maker_fee, spec.tick, spec.step) == (taker, maker, tick, lot)
    assert {e.status for e in emulator.log.entries} == {200}, [(e.path, e.status) for e in emulator.log.entries]


@pytest.mark.parametrize("venue", VENUES)
def test_ticker_book_and_candles_are_the_shipped_closes(emulator, closes, venue):
    ex = client(emulator, venue)
    tick = SPECS[venue][2]
    for when in ("2024-01-10T08:30", "2024-03-01T06:00"):
        emulator.set_time(when)
        now = ms(when)
        close = close_at(closes, SPOT_SYM, now)
        ticker = ex.fetch_ticker(SPOT_SYM)
        assert ticker["last"] == pytest.approx(close, abs=1e-9)
        assert ticker["bid"] < close < ticker["ask"] and ticker["ask"] - ticker["bid"] <= 2 * tick + 1e-9
        book = ex.fetch_order_book(SPOT_SYM, 20)
        assert len(book["bids"]) == len(book["asks"]) == 20
        assert (book["bids"][0][0], book["asks"][0][0]) == (ticker["bid"], ticker["ask"])
        assert all(a[0] - b[0] == pytest.approx(tick) for a, b in zip(book["bids"], book["bids"][1:]))
        since = now - now % MS_H - 6 * MS_H
        candles = ex.fetch_ohlcv(SPOT_SYM, "1h", since=since, params={"until": now})
        shipped = closes[SPOT_SYM]
        want = shipped.filter((shipped["open_time_ms"] >= since) & (shipped["close_ms"] <= now))
        assert [c[0] for c in candles] == want["open_time_ms"].to_list()  # complete hours only, none ahead
        assert [c[4] for c in candles] == pytest.approx(want["close"].to_list(), abs=1e-9)


def test_coinbase_refuses_a_candle_window_over_350_and_kraken_answers_only_its_last_720(emulator):
    now = ms(EMULATOR_START)
    cb = client(emulator, "coinbase")
    with pytest.raises(ccxt.BadRequest, match="less than 350"):
        cb.fetch_ohlcv(SPOT_SYM, "1h", since=now - 400 * MS_H, params={"until": now})
    kr = client(emulator, "kraken")
    candles = kr.fetch_ohlcv(SPOT_SYM, "1h", since=now - 2000 * MS_H, limit=1000)
    assert len(candles) == 720 and candles[0][0] > now - 721 * MS_H


# ----------------------------------------------------------------- trading

@pytest.mark.parametrize("venue", VENUES)
def test_a_market_round_trip_pays_the_taker_fee_in_usdt_and_conserves_money(emulator, closes, venue):
    funded(emulator, venue)
    ex = client(emulator, venue)
    q = quirks(venue)
    taker = SPECS[venue][5]
    bought = ex.create_order(SPOT_SYM, "market", "buy", QTY, None, params(ex, "market", "buy", "fa0123456789ab-1"))
    order = ex.fetch_order(bought["id"], SPOT_SYM, q.fetch_params())
    assert (order["status"], order["filled"], order["clientOrderId"]) == ("closed", QTY, "fa0123456789ab-1")
    close = close_at(closes, SPOT_SYM, ms(EMULATOR_START))
    costs = MARKETS[(venue, "spot")].costs
    assert close <= order["average"] <= close * (1 + (costs.half_spread_bp_max + costs.impact_bp_per_btc * QTY) / 1e4) + 0.1
    (buy,) = ex.fetch_my_trades(SPOT_SYM)
    assert (buy["order"], buy["side"], buy["amount"], buy["takerOrMaker"]) == (order["id"], "buy", QTY, "taker")
    assert buy["fee"]["currency"] == "USDT" and buy["fee"]["cost"] == pytest.approx(taker * QTY * buy["price"], abs=1e-8)
    bal = ex.fetch_balance()
    assert bal["BTC"]["total"] == QTY  # the fee is not taken from the BTC bought
    assert bal["USDT"]["total"] == pytest.approx(START_USDT - QTY * buy["price"] - buy["fee"]["cost"], abs=1e-8)

    emulator.advance(NS_PER_HOUR)
    ex.create_order(SPOT_SYM, "market", "sell", QTY, None, params(ex, "market", "sell", "fa0123456789ab-2"))
    sell = next(t for t in ex.fetch_my_trades(SPOT_SYM) if t["side"] == "sell")
    assert sell["fee"]["currency"] == "USDT" and sell["fee"]["cost"] == pytest.approx(taker * QTY * sell["price"], abs=1e-8)
    bal = ex.fetch_balance()
    assert bal["BTC"]["total"] == 0
    want = START_USDT + QTY * (sell["price"] - buy["price"]) - buy["fee"]["cost"] - sell["fee"]["cost"]
    assert bal["USDT"]["total"] == pytest.approx(want, abs=1e-8) and bal["USDT"]["free"] == bal["USDT"]["total"]


def test_a_coinbase_market_buy_by_quote_size_spends_that_much_fee_included(emulator):
    funded(emulator, "coinbase")
    ex = client(emulator, "coinbase")
    placed = ex.create_market_buy_order_with_cost(SPOT_SYM, 100.0, {"client_order_id": "fa0123456789ab-15"})
    order = ex.fetch_order(placed["id"], SPOT_SYM)
    assert order["info"]["order_configuration"] == {"market_market_ioc": {"quote_size": "100.00"}}
    (trade,) = ex.fetch_my_trades(SPOT_SYM)
    spent = trade["amount"] * trade["price"] + trade["fee"]["cost"]
    # at most the quote size, and short of it by less than one lot's worth (the size is floored to the lot)
    assert 100.0 - trade["price"] * 1e-8 * 1.006 - 1e-8 <= spent <= 100.0 + 1e-8
    assert ex.fetch_balance()["USDT"]["total"] == pytest.approx(START_USDT - spent, abs=1e-8)


@pytest.mark.parametrize("venue", VENUES)
def test_a_resting_buy_holds_its_fee_too_cancels_and_fills_as_maker_when_the_close_comes_down(emulator, closes, venue):
    funded(emulator, venue)
    ex = client(emulator, venue)
    q = quirks(venue)
    maker = SPECS[venue][6]
    now = ms(EMULATOR_START)
    # 08:30 -> the 09:00 bar's close is lower: a buy between the two fills after one hour
    current, nxt = close_at(closes, SPOT_SYM, now), close_at(closes, SPOT_SYM, now + MS_H)
    assert nxt < current - 100
    limit = round((current + nxt) / 2)
    far_px = float(ex.price_to_precision(SPOT_SYM, current - 5000))  # on the venue's tick
    far = ex.create_order(SPOT_SYM, "limit", "buy", QTY, far_px, params(ex, "limit", "buy", "fa0123456789ab-3"))
    near = ex.create_order(SPOT_SYM, "limit", "buy", QTY, limit, params(ex, "limit", "buy", "fa0123456789ab-4"))
    assert sorted(o["id"] for o in ex.fetch_open_orders(SPOT_SYM)) == sorted([far["id"], near["id"]])
    held = QTY * far_px * (1 + maker) + QTY * limit * (1 + maker)  # the fee in USDT is held as well
    assert ex.fetch_balance()["USDT"]["used"] == pytest.approx(held, abs=1e-8)

    ex.cancel_order(far["id"], SPOT_SYM)
    assert ex.fetch_order(far["id"], SPOT_SYM, q.fetch_params())["status"] == "canceled"
    emulator.advance(NS_PER_HOUR // 4)  # the 09:00 close is not out yet
    assert ex.fetch_order(near["id"], SPOT_SYM, q.fetch_params())["status"] == "open"
    emulator.advance(NS_PER_HOUR)
    filled = ex.fetch_order(near["id"], SPOT_SYM, q.fetch_params())
    assert (filled["status"], filled["filled"], filled["average"]) == ("closed", QTY, limit)
    (trade,) = ex.fetch_my_trades(SPOT_SYM)
    assert trade["takerOrMaker"] == "maker" and trade["price"] == limit
    assert trade["fee"]["cost"] == pytest.approx(maker * QTY * limit, abs=1e-8) and trade["fee"]["currency"] == "USDT"
    bal = ex.fetch_balance()
    assert bal["USDT"]["used"] == 0 and bal["BTC"]["total"] == QTY
    assert bal["USDT"]["total"] == pytest.approx(START_USDT - QTY * limit * (1 + maker), abs=1e-8)
    assert ex.fetch_open_orders(SPOT_SYM) == []


# ----------------------------------------------------------------- each venue's refusals

@pytest.mark.parametrize("venue", VENUES)
def test_an_order_the_account_cannot_pay_for_is_insufficient_funds_and_nothing_is_placed(emulator, venue):
    funded(emulator, venue, 100.0)
    ex = client(emulator, venue)
    with pytest.raises(ccxt.InsufficientFunds):
        ex.create_order(SPOT_SYM, "market", "buy", QTY, None, params(ex, "market", "buy", "fa0123456789ab-5"))
    with pytest.raises(ccxt.InsufficientFunds):  # BTC the account does not hold
        ex.create_order(SPOT_SYM, "market", "sell", QTY, None, params(ex, "market", "sell", "fa0123456789ab-6"))
    assert emulator.accounts.all_orders(venue, "spot") == []
    assert ex.fetch_balance()["USDT"]["total"] == 100.0


def test_coinbase_unknown_orders_are_its_not_found_and_failed_cancel(emulator):
    funded(emulator, "coinbase")
    ex = client(emulator, "coinbase")
    q = quirks("coinbase")
    unknown = "00000000-0000-4000-8000-000000000000"
    with pytest.raises(ccxt.ExchangeError) as caught:  # HTTP 404 NOT_FOUND: ccxt 4.5.90 maps it to no subclass
        ex.fetch_order(unknown, SPOT_SYM)
    assert "order with this orderID was not found" in str(caught.value) and q.order_unknown(caught.value)
    assert emulator.log.entries[-1].status == 404
    done = ex.create_order(SPOT_SYM, "market", "buy", QTY, None, params(ex, "market", "buy", "fa0123456789ab-7"))
    for order_id in (unknown, done["id"]):  # never placed, or no longer open
        with pytest.raises(ccxt.BadRequest):
            ex.cancel_order(order_id, SPOT_SYM)
    reply = ex.v3PrivatePostBrokerageOrdersBatchCancel({"order_ids": [done["id"]]})  # what the venue says
    assert reply["results"] == [{"success": False, "failure_reason": "UNKNOWN_CANCEL_ORDER", "order_id": done["id"]}]


def test_kraken_unknown_orders_are_its_invalid_and_unknown_order(emulator):
    funded(emulator, "kraken")
    ex = client(emulator, "kraken")
    q = quirks("kraken")
    with pytest.raises(ccxt.InvalidOrder, match="EOrder:Invalid order") as caught:
        ex.fetch_order("OABCDE-FGHIJ-KLMNOP", SPOT_SYM)
    assert q.order_unknown(caught.value)
    done = ex.create_order(SPOT_SYM, "market", "buy", QTY, None, params(ex, "market", "buy", "fa0123456789ab-8"))
    for order_id in ("OABCDE-FGHIJ-KLMNOP", done["id"]):  # never placed, or no longer open
        with pytest.raises(ccxt.OrderNotFound, match="EOrder:Unknown order") as caught:
            ex.cancel_order(order_id, SPOT_SYM)
        assert q.order_unknown(caught.value)


def test_coinbase_answers_a_client_id_sent_again_with_the_order_it_names(emulator):
    funded(emulator, "coinbase")
    ex = client(emulator, "coinbase")
    first = ex.create_order(SPOT_SYM, "market", "buy", QTY, None, params(ex, "market", "buy", "fa0123456789ab-9"))
    again = ex.create_order(SPOT_SYM, "market", "buy", QTY, None, params(ex, "market", "buy", "fa0123456789ab-9"))
    assert again["id"] == first["id"] and again["clientOrderId"] == "fa0123456789ab-9"
    assert len(emulator.accounts.all_orders("coinbase", "spot")) == 1  # the idempotent venue placed it once
    assert ex.fetch_balance()["BTC"]["total"] == QTY


def test_kraken_refuses_a_client_id_of_an_open_order_and_takes_it_again_once_it_is_not(emulator, closes):
    funded(emulator, "kraken")
    ex = client(emulator, "kraken")
    q = quirks("kraken")
    low = round(close_at(closes, SPOT_SYM, ms(EMULATOR_START)) * 0.9)
    resting = ex.create_order(SPOT_SYM, "limit", "buy", QTY, low, params(ex, "limit", "buy", "fa0123456789ab-10"))
    with pytest.raises(ccxt.ExchangeError, match="EOrder:Duplicate order") as caught:
        ex.create_order(SPOT_SYM, "limit", "buy", QTY, low, params(ex, "limit", "buy", "fa0123456789ab-10"))
    assert q.duplicate_order(caught.value)
    ex.cancel_order(resting["id"], SPOT_SYM)
    # unique among OPEN orders only, as Kraken documents it
    again = ex.create_order(SPOT_SYM, "limit", "buy", QTY, low, params(ex, "limit", "buy", "fa0123456789ab-10"))
    assert again["id"] != resting["id"]


def test_kraken_lot_rules_and_client_id_form_are_its_own_refusals(emulator):
    funded(emulator, "kraken")
    ex = client(emulator, "kraken")
    with pytest.raises(ccxt.InvalidOrder, match="EOrder:Order minimum not met"):  # under ordermin 0.00005 BTC
        ex.create_order(SPOT_SYM, "market", "buy", 0.00004, None, params(ex, "market", "buy", "fa0123456789ab-11", 0.00004))
    with pytest.raises(ccxt.ExchangeError, match="cl_ord_id"):  # free text of more than 18 characters
        ex.create_order(SPOT_SYM, "market", "buy", QTY, None, {"clientOrderId": "a-client-id-of-19ch"})
    assert emulator.accounts.all_orders("kraken", "spot") == []


def test_kraken_takes_a_long_fundarb_client_id_as_a_uuid_and_the_module_finds_it(emulator):
    funded(emulator, "kraken")
    long_id = "fa0123456789ab-123456"  # past sequence 999: longer than Kraken's 18 characters of free text
    venue_id = kraken_module.venue_client_id(long_id)
    assert len(venue_id) == 36 and kraken_module.client_id_of(venue_id) == long_id
    assert kraken_module.venue_client_id("fa0123456789ab-999") == "fa0123456789ab-999"
    ex = client(emulator, "kraken")
    placed = ex.create_order(SPOT_SYM, "market", "buy", QTY, None, params(ex, "market", "buy", long_id))
    assert emulator.accounts.all_orders("kraken", "spot")[0].client_id == venue_id

    class Leg:  # the duck-typed leg the look-up takes
        exchange, symbol = ex, SPOT_SYM
        market = ex.market(SPOT_SYM)

        async def call(self, method: str, *args: Any) -> Any:
            return getattr(ex, method)(*args)

    found = asyncio.run(quirks("kraken").find_order(Leg(), long_id))
    assert found is not None and found["id"] == placed["id"] and found["status"] == "closed"


@pytest.mark.parametrize("venue", VENUES)
def test_a_key_the_venue_does_not_know_is_an_authentication_error(emulator, venue):
    emulator.accounts.api_keys = {"the-right-key"}
    with pytest.raises(ccxt.AuthenticationError):  # Coinbase: its fee tier is read at load with keys
        ex = client(emulator, venue)
        ex.fetch_balance()
    ex = trading_client(emulator, venue, apiKey="the-right-key")
    ex.load_markets()
    assert ex.fetch_balance()["USDT"]["total"] == 0
    if venue == "coinbase":
        statuses = {e.status for e in emulator.log.entries if e.path.endswith("transaction_summary")}
        assert statuses == {401, 200}
    signed = [e for e in emulator.log.entries if e.path.startswith(("/0/private", "/api/v3/brokerage/accounts"))]
    assert signed


def test_coinbase_takes_a_cdp_key_signed_as_a_jwt(emulator):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()).decode()
    name = "organizations/emulator-org/apiKeys/emulator-key"
    emulator.accounts.api_keys = {name}
    funded(emulator, "coinbase")
    ex = client(emulator, "coinbase", apiKey=name, secret=pem)
    assert ex.fetch_balance()["USDT"]["total"] == START_USDT
    token = emulator.log.entries[-1]  # the emulator read the key from the JWT: the request is logged as served
    assert token.status == 200
    other = trading_client(emulator, "coinbase", apiKey="organizations/emulator-org/apiKeys/another", secret=pem)
    with pytest.raises(ccxt.AuthenticationError):
        other.load_markets()


def test_coinbase_jwt_subject_is_read_without_the_signature():
    from fundarb.testkit.emulator.coinbase import _jwt_subject

    payload = base64.urlsafe_b64encode(json.dumps({"sub": "organizations/o/apiKeys/k"}).encode()).decode().rstrip("=")
    assert _jwt_subject(f"e30.{payload}.c2ln") == "organizations/o/apiKeys/k"
    assert _jwt_subject("not-a-jwt") is None and _jwt_subject("e30.bm9wZQ.c2ln") is None


# ----------------------------------------------------------------- faults in each venue's words

@pytest.mark.parametrize("venue, raised, text", [("coinbase", ccxt.RateLimitExceeded, "rate_limit_exceeded"),
                                                  ("kraken", ccxt.DDoSProtection, "EAPI:Rate limit exceeded")])
def test_a_rate_limit_is_the_venues_own_answer(emulator, venue, raised, text):
    funded(emulator, venue)
    ex = client(emulator, venue)
    emulator.faults.add("rate_limit", venue=venue, times=1)
    with pytest.raises(raised, match=text):
        ex.fetch_balance()
    assert ex.fetch_balance()["USDT"]["total"] == START_USDT  # one answer only


@pytest.mark.parametrize("venue, raised", [("coinbase", ccxt.InsufficientFunds), ("kraken", ccxt.InsufficientFunds)])
def test_a_refuse_fault_is_the_venues_insufficient_funds_and_places_nothing(emulator, venue, raised):
    funded(emulator, venue)
    ex = client(emulator, venue)
    emulator.faults.add("refuse", venue=venue)
    with pytest.raises(raised):
        ex.create_order(SPOT_SYM, "market", "buy", QTY, None, params(ex, "market", "buy", "fa0123456789ab-12"))
    assert emulator.accounts.all_orders(venue, "spot") == []


# ----------------------------------------------------------------- what the venue modules work around

def test_ccxt_alone_drops_coinbases_client_id_and_wants_a_price_for_a_market_buy(emulator):
    """Why ``fundarb.venues.coinbase`` sends its own order params: ccxt 4.5.90 as it is."""
    funded(emulator, "coinbase")
    ex = client(emulator, "coinbase")
    with pytest.raises(ccxt.InvalidOrder, match="requires a price"):
        ex.create_order(SPOT_SYM, "market", "buy", QTY, None, {"clientOrderId": "fa0123456789ab-13"})
    placed = ex.create_order(SPOT_SYM, "limit", "buy", QTY, 1000.0, {"clientOrderId": "fa0123456789ab-14"})
    (order,) = emulator.accounts.all_orders("coinbase", "spot")
    assert order.client_id.startswith("ccxt-") and placed["id"]  # ccxt sent its own id, not ours


def test_ccxts_default_coinbase_balance_is_served_too(emulator):
    """A plain ccxt client (its default fetchBalance: the Coinbase App's accounts) reads the same wallet."""
    funded(emulator, "coinbase", 1234.5)
    plain = ccxt_client(emulator, "coinbase", apiKey="emulator-key", secret="emulator-secret",
                        options={"fetchBalance": "v2PrivateGetAccounts"})
    assert plain.fetch_balance()["USDT"]["total"] == 1234.5
    assert "/v2/accounts" in emulator.log.paths("coinbase")
