"""Coinbase Advanced Trade spot in the loopback emulator: its REST API
(``/api/v3/brokerage/...`` and the ``/v2/...`` calls ccxt makes around it)
as the installed ccxt (``ccxt.coinbase``, and ccxt.pro's, 4.5.90) calls it,
for one market, BTC-USDT (ccxt ``BTC/USDT``). Registered with
``server.register_venue`` when ``server`` is imported.

**Prices are a STAND-IN. The shipped files hold no Coinbase prices**: the
market is served Binance's spot BTCUSDT hourly closes (the emulator's SPOT
series), as ``server`` serves them for Bybit: a real price of the same pair on
another venue beats an invented one. They are not Coinbase's prices. The
market is BTC-USDT so that the carry's money stays in USDT like the rest of
the project; Coinbase's deeper BTC book is BTC-USD (and BTC-USDC), not served.

- **SYNTHETIC** (not in any data, labelled where built): the book (a fixed
  one-tick book straddling the close), volumes (zero), candle open/high/low
  (the close), the ticker's "last trade" (the last hourly close, size 0: the
  data has no trades), ids, and the USD rates of ``/v2/exchange-rates`` (USDT
  taken at 1 USD).
- **Venue metadata** (not market data): BTC-USDT's base increment (lot)
  0.00000001 BTC, price increment (tick) 0.01, minimum order 1 USDT, at most
  3400 BTC / 150,000,000 USDT an order; the fee tier of ccxt's own Coinbase
  table's first row, 0.60% taker and 0.40% maker
  (``/api/v3/brokerage/transaction_summary``, which ccxt reads when it has keys;
  without keys ccxt assumes its default 1.2% / 0.6%). Fees are charged in the
  quote (USDT) on both sides (``accounts.MARKETS``). Only BTC-USDT spot is
  listed: the futures product list (``product_type=FUTURE``, which ccxt always
  asks) is empty.

**Signed calls** carry either the legacy HMAC headers (``CB-ACCESS-KEY``,
``CB-ACCESS-SIGN``, ``CB-ACCESS-TIMESTAMP``: what ccxt sends for an API key
and secret) or ``Authorization: Bearer <JWT>`` (a CDP key: a key name
``organizations/.../apiKeys/...`` and an EC private key in PEM, which ccxt
signs ES256). The signature is NOT verified: the key is read from the header
(the JWT's ``sub``), and when ``server.accounts.api_keys`` is a set, other keys
are refused. A refused or missing key is HTTP 401 ``Unauthorized`` in plain
text (ccxt: AuthenticationError).

**Orders** (wallet ``coinbase``: fund it with ``server.accounts.fund("coinbase",
"USDT", x)``): ``market_market_ioc`` by ``base_size`` (a market buy by
``quote_size`` spends that much including the fee), ``limit_limit_gtc``,
``sor_limit_ioc`` and ``limit_limit_fok`` (the unfilled rest of the last two
is cancelled, as IOC); ``post_only`` and stop orders are refused as
``UNSUPPORTED_ORDER_CONFIGURATION`` (not modelled). A placement the venue
turns down is HTTP 200 with ``success: false`` and an ``error_response``
naming the reason (``INSUFFICIENT_FUND`` with ``PREVIEW_INSUFFICIENT_FUND``:
ccxt raises InsufficientFunds; a size off the increment
``INVALID_SIZE_PRECISION``, under the minimum ``PREVIEW_INVALID_QUOTE_SIZE_TOO_SMALL``).
A ``client_order_id`` sent again does NOT make a new order: the venue answers
with the order that id already names (its documented idempotency), whatever
its state. An unknown order id is HTTP 404 ``NOT_FOUND``, "order with this
orderID was not found" (ccxt 4.5.90: a plain ExchangeError); cancelling an
order that is not open is ``success: false``, ``UNKNOWN_CANCEL_ORDER`` in the
batch answer (ccxt: BadRequest). An IOC order's unfilled rest (the
partial_fill fault) ends ``CANCELLED``. Lists (orders, fills) are newest
first, 100 a page by default, with a ``cursor``.

Faults in the venue's words: rate_limit and ip_ban are HTTP 429
``rate_limit_exceeded`` (ccxt: RateLimitExceeded); refuse is the
``INSUFFICIENT_FUND`` placement answer. Only one-hour candles are served
(``ONE_HOUR``; the shipped data is hourly), at most 350 a request, as the
venue refuses more.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, cast

from aiohttp import web

from fundarb.testkit.emulator.accounts import (
    BUY,
    CANCELED,
    EXPIRED,
    FILLED,
    LIMIT,
    MARKET,
    MARKETS,
    NEW,
    PARTIALLY_FILLED,
    SELL,
    SPOT,
    AccountError,
    Accounts,
    Order,
    Trade,
)
from fundarb.testkit.emulator.server import (
    MS_PER_HOUR,
    Ask,
    Fault,
    VenueError,
    VenueShape,
    _amt,
    _book,
    _book_top,
    _dec,
    _fill_ratio,
    _json,
    _limit,
    _window_24h,
    register_venue,
    signed,
)

VENUE = "coinbase"
PRODUCT, BASE, QUOTE = "BTC-USDT", "BTC", "USDT"
V3 = "/api/v3/brokerage"
# Venue metadata: Coinbase's published BTC-USDT product spec (not market data)
BASE_INCREMENT, PRICE_INCREMENT = "0.00000001", "0.01"
QUOTE_MIN, BASE_MIN, BASE_MAX, QUOTE_MAX = "1", "0.00000001", "3400", "150000000"
MAX_CANDLES = 350  # the venue refuses a candle request of more
USER_ID = "8b2f0e1c-5a43-5d2b-9d7e-000000000001"  # SYNTHETIC
PORTFOLIO_ID = "0f3c9d2a-7b1e-4c55-8a66-000000000002"  # SYNTHETIC
ACCOUNT_UUID = {BASE: "b7c3a2f0-0000-4000-8000-000000000b7c", QUOTE: "a1d2c3e4-0000-4000-8000-000000000a1d",
                "USD": "c0ffee00-0000-4000-8000-000000000c0f"}  # SYNTHETIC wallet ids
CURRENCY = {BASE: ("Bitcoin", 8), QUOTE: ("Tether", 6)}  # name, exponent


def _spec() -> Any:
    return MARKETS[(VENUE, SPOT)]


# ----------------------------------------------------------------- ids and times

def _order_uuid(internal: str) -> str:
    """The venue's UUID for the emulator's order id (reversible: the id is its last group)."""
    n = int(internal)
    return f"{(n * 2654435761) & 0xFFFFFFFF:08x}-c0de-4000-8000-{n:012x}"


def _internal_id(order_id: str | None) -> str | None:
    """The emulator's order id of a venue UUID, or None when it names no order of ours."""
    if not order_id:
        return None
    parts = order_id.split("-")
    if len(parts) != 5 or parts[1:4] != ["c0de", "4000", "8000"]:
        return None
    try:
        n = int(parts[4], 16)
    except ValueError:
        return None
    return str(n) if parts[0] == f"{(n * 2654435761) & 0xFFFFFFFF:08x}" else None


def _trade_uuid(internal: str) -> str:
    n = int(internal)
    return f"{(n * 40503) & 0xFFFFFFFF:08x}-7ade-4000-9000-{n:012x}"


def venue_ids(order_id: str, trade_id: str | None = None) -> tuple[str, str | None]:
    """The venue's ids of an order and a trade of the emulator's accounts (what ccxt reports)."""
    return _order_uuid(order_id), _trade_uuid(trade_id) if trade_id is not None else None


def _iso(ms: int) -> str:
    """An RFC 3339 time as the venue prints it, microseconds and Z."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ms_of(text: str | None, name: str) -> int | None:
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise VenueError(400, "INVALID_ARGUMENT", f"{name} is not an RFC 3339 time") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _int(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not raw.lstrip("-").isdigit():
        raise VenueError(400, "INVALID_ARGUMENT", f"{name} is not an integer")
    return int(raw)


def _product(params: Mapping[str, str], required: bool = True) -> bool:
    """True when the request names BTC-USDT (``product_id`` or ``product_ids``); an unknown product is refused."""
    product = params.get("product_id") or params.get("product_ids")
    if product is None:
        if required:
            raise VenueError(400, "INVALID_ARGUMENT", "product_id is required")
        return False
    if product != PRODUCT:
        raise VenueError(404, "NOT_FOUND", f"ProductID {product} could not be found")
    return True


# ----------------------------------------------------------------- public market data

def _product_row(ask: Ask) -> dict:
    w = _window_24h(ask.tape.prices[SPOT], ask.now_ms)
    return {
        "product_id": PRODUCT, "price": _dec(w["last"], 2),
        "price_percentage_change_24h": repr(round(100 * (w["last"] / w["open"] - 1), 6)),
        "volume_24h": "0", "volume_percentage_change_24h": "0",  # SYNTHETIC: no volume in the data
        "base_increment": BASE_INCREMENT, "quote_increment": PRICE_INCREMENT, "quote_min_size": QUOTE_MIN,
        "quote_max_size": QUOTE_MAX, "base_min_size": BASE_MIN, "base_max_size": BASE_MAX, "base_name": "Bitcoin",
        "quote_name": "Tether", "watched": False, "is_disabled": False, "new": False, "status": "online",
        "cancel_only": False, "limit_only": False, "post_only": False, "trading_disabled": False,
        "auction_mode": False, "product_type": "SPOT", "quote_currency_id": QUOTE, "base_currency_id": BASE,
        "fcm_trading_session_details": None, "mid_market_price": "", "alias": "", "alias_to": [],
        "base_display_symbol": BASE, "quote_display_symbol": QUOTE, "view_only": False,
        "price_increment": PRICE_INCREMENT, "display_name": PRODUCT, "product_venue": "CBE",
        "approximate_quote_24h_volume": "0",
    }


def _products(ask: Ask) -> dict:
    """Spot products: BTC-USDT only; any other product type (FUTURE, which ccxt always asks) lists none."""
    kind = ask.params.get("product_type") or "SPOT"
    rows = [_product_row(ask)] if kind == "SPOT" else []
    return {"products": rows, "num_products": len(rows)}


def _one_product(ask: Ask) -> dict:
    if ask.params.get("product_id") != PRODUCT:
        raise VenueError(404, "NOT_FOUND", f"ProductID {ask.params.get('product_id')} could not be found")
    return _product_row(ask)


def _ticker(ask: Ask) -> dict:
    """Market trades: SYNTHETIC, the last hourly close as the one last trade,
    at the data's now (size 0: the data has no trades; a venue's last trade is
    a moment old, not up to an hour), and the synthetic book's top."""
    _one_product(ask)
    series = ask.tape.prices[SPOT]
    i = series.index_at(ask.now_ms)
    if i < 0:
        raise VenueError(503, "UNAVAILABLE", "no price yet")
    close = float(series.close[i])
    bid, ask_px = _book_top(close, PRICE_INCREMENT)
    trade = {"trade_id": str(int(series.close_ms[i]) // MS_PER_HOUR), "product_id": PRODUCT, "price": _dec(close, 2),
             "size": "0", "time": _iso(ask.now_ms), "side": "BUY", "bid": "", "ask": "", "exchange": "CBE"}
    return {"trades": [trade], "best_bid": _dec(bid, 2), "best_ask": _dec(ask_px, 2)}


def _pricebook(ask: Ask, depth: int) -> dict:
    bids, asks = _book(ask.tape.prices[SPOT].price_at(ask.now_ms), PRICE_INCREMENT, depth, 2)
    return {"product_id": PRODUCT, "bids": [{"price": p, "size": q} for p, q in bids],
            "asks": [{"price": p, "size": q} for p, q in asks], "time": _iso(ask.now_ms)}


def _product_book(ask: Ask) -> dict:
    """The SYNTHETIC book: ``limit`` levels a side (default 50, at most 500: the emulator's reading)."""
    _product(ask.params)
    depth = _limit(_int(ask.params, "limit"), 50, 500)
    book = _pricebook(ask, depth)
    close = ask.tape.prices[SPOT].price_at(ask.now_ms)
    bid, ask_px = (Decimal(book["bids"][0]["price"]), Decimal(book["asks"][0]["price"]))
    return {"pricebook": book, "last": _dec(close, 2), "mid_market": str((bid + ask_px) / 2),
            "spread_bps": _dec((ask_px - bid) / ((bid + ask_px) / 2) * 10_000, 4), "spread_absolute": str(ask_px - bid)}


@signed
def _best_bid_ask(ask: Ask) -> dict:
    _product(ask.params, required=False)
    return {"pricebooks": [_pricebook(ask, 1)]}


def _candles(ask: Ask) -> dict:
    """One-hour candles whose start is in [start, end] (seconds), complete
    hours only, newest first; more than 350 a request is refused, as the
    venue does. open = high = low = close (only closes are shipped)."""
    _one_product(ask)
    if ask.params.get("granularity") != "ONE_HOUR":
        raise VenueError(400, "INVALID_ARGUMENT", "granularity: only ONE_HOUR candles are served (the data is hourly)")
    start, end = _int(ask.params, "start"), _int(ask.params, "end")
    if start is None or end is None:
        raise VenueError(400, "INVALID_ARGUMENT", "start and end are required")
    if (end - start) // 3600 > MAX_CANDLES:
        raise VenueError(400, "INVALID_ARGUMENT", f"number of candles requested should be less than {MAX_CANDLES}")
    series = ask.tape.prices[SPOT]
    upto = series.index_at(ask.now_ms) + 1
    limit = _limit(_int(ask.params, "limit"), MAX_CANDLES, MAX_CANDLES)
    rows = [i for i in range(upto) if start * 1000 <= int(series.open_ms[i]) <= end * 1000]
    out = []
    for i in reversed(rows[-limit:]):
        c = _dec(series.close[i], 2)
        out.append({"start": str(int(series.open_ms[i]) // 1000), "low": c, "high": c, "open": c, "close": c,
                    "volume": "0"})  # SYNTHETIC: open/high/low are the close, no volume
    return {"candles": out}


def _v3_time(ask: Ask) -> dict:
    return {"iso": _iso(ask.server_ms), "epochSeconds": str(ask.server_ms // 1000), "epochMillis": str(ask.server_ms)}


def _v2_time(ask: Ask) -> dict:
    return {"data": {"iso": _iso(ask.server_ms)[:19] + "Z", "epoch": ask.server_ms // 1000}}


def _v2_currencies(ask: Ask) -> dict:
    return {"data": [{"id": "USD", "name": "US Dollar", "min_size": "0.01"}]}


def _v2_crypto(ask: Ask) -> dict:
    return {"data": [{"asset_id": ACCOUNT_UUID[code], "code": code, "name": name, "color": "#000000",
                      "sort_index": i, "exponent": exponent, "type": "crypto", "address_regex": ""}
                     for i, (code, (name, exponent)) in enumerate(CURRENCY.items())]}


def _v2_rates(ask: Ask) -> dict:
    """USD rates: BTC at the stand-in close, USDT taken at 1 USD (SYNTHETIC)."""
    close = ask.tape.prices[SPOT].price_at(ask.now_ms)
    return {"data": {"currency": "USD", "rates": {"USD": "1", QUOTE: "1", BASE: repr(1.0 / close)}}}


# ----------------------------------------------------------------- accounts

def _accounts(ask: Ask) -> Accounts:
    if ask.accounts is None:
        raise VenueError(503, "UNAVAILABLE", "this emulator has no accounts")
    return ask.accounts


def _balances(acc: Accounts) -> list[tuple[str, float, float]]:
    """(currency, available, hold) of the wallet: BTC and USDT always, then any other asset funded."""
    w = acc.wallets[VENUE]
    codes = [BASE, QUOTE, *sorted(set(w.total) - {BASE, QUOTE})]
    return [(c, w.get(c) - w.locked.get(c, 0.0), w.locked.get(c, 0.0)) for c in codes]


@signed
def _v3_accounts(ask: Ask) -> dict:
    created = _iso(1_704_067_200_000)
    rows = [{"uuid": ACCOUNT_UUID.get(c, ACCOUNT_UUID[BASE]), "name": f"{c} Wallet", "currency": c,
             "available_balance": {"value": _amt(free), "currency": c}, "default": True, "active": True,
             "created_at": created, "updated_at": _iso(ask.server_ms), "deleted_at": None,
             "type": "ACCOUNT_TYPE_CRYPTO", "ready": True, "hold": {"value": _amt(hold), "currency": c},
             "retail_portfolio_id": PORTFOLIO_ID, "platform": "ACCOUNT_PLATFORM_CONSUMER"}
            for c, free, hold in _balances(_accounts(ask))]
    return {"accounts": rows, "has_next": False, "cursor": "", "size": len(rows)}


@signed
def _v2_accounts(ask: Ask) -> dict:
    """The Coinbase App's accounts (ccxt's default fetchBalance): the balance with holds included."""
    rows = []
    for c, free, hold in _balances(_accounts(ask)):
        name, exponent = CURRENCY.get(c, (c, 8))
        rows.append({"id": ACCOUNT_UUID.get(c, ACCOUNT_UUID[BASE]), "name": f"{c} Wallet", "primary": c == BASE,
                     "type": "wallet", "currency": {"code": c, "name": name, "exponent": exponent, "type": "crypto"},
                     "balance": {"amount": _amt(free + hold), "currency": c}, "created_at": "2024-01-01T00:00:00Z",
                     "updated_at": _iso(ask.server_ms)[:19] + "Z", "resource": "account",
                     "resource_path": f"/v2/accounts/{ACCOUNT_UUID.get(c, '')}", "allow_deposits": True,
                     "allow_withdrawals": True})
    pagination = {"ending_before": None, "starting_after": None, "previous_ending_before": None,
                  "next_starting_after": None, "limit": 250, "order": "desc", "previous_uri": None, "next_uri": None}
    return {"pagination": pagination, "data": rows}


@signed
def _transaction_summary(ask: Ask) -> dict:
    """The fee tier (venue metadata: the emulated market's rates) and no volume."""
    costs = _spec().costs
    return {"total_volume": 0, "total_fees": 0,
            "fee_tier": {"pricing_tier": "Advanced 1", "usd_from": "0", "usd_to": "10000",
                         "taker_fee_rate": repr(costs.taker_fee), "maker_fee_rate": repr(costs.maker_fee),
                         "aop_from": "", "aop_to": ""},
            "margin_rate": None, "goods_and_services_tax": None, "advanced_trade_only_volume": 0,
            "advanced_trade_only_fees": 0, "coinbase_pro_volume": 0, "coinbase_pro_fees": 0, "total_balance": "",
            "has_promo_fee": False}


# ----------------------------------------------------------------- orders

_STATUS = {NEW: "OPEN", PARTIALLY_FILLED: "OPEN", FILLED: "FILLED", CANCELED: "CANCELLED", EXPIRED: "CANCELLED"}
_TIF = {"GTC": "GOOD_UNTIL_CANCELLED", "IOC": "IMMEDIATE_OR_CANCEL", "FOK": "FILL_OR_KILL"}


def _configuration(o: Order) -> dict:
    """The order's ``order_configuration`` as the venue echoes it."""
    size = _dec(o.qty, 8)
    if o.type == MARKET:  # a buy by quote_size: what was sent, fee included (the trade itself had the rest)
        sent = o.quote_qty * (1 + _spec().costs.taker_fee) if o.quote_qty else 0.0
        return {"market_market_ioc": {"quote_size": _dec(sent, 2)} if o.quote_qty else {"base_size": size}}
    price = _dec(o.price or 0, 2)
    if o.time_in_force == "IOC":
        return {"sor_limit_ioc": {"base_size": size, "limit_price": price}}
    if o.time_in_force == "FOK":
        return {"limit_limit_fok": {"base_size": size, "limit_price": price}}
    return {"limit_limit_gtc": {"base_size": size, "limit_price": price, "post_only": False}}


def _order_row(o: Order, fills: int) -> dict:
    filled, cost = o.filled, o.cost
    done = not o.is_open
    return {
        "order_id": _order_uuid(o.id), "product_id": PRODUCT, "user_id": USER_ID, "order_configuration": _configuration(o),
        "side": o.side.upper(), "client_order_id": o.client_id, "status": _STATUS[o.status],
        "time_in_force": "IMMEDIATE_OR_CANCEL" if o.type == MARKET else _TIF.get(o.time_in_force, "GOOD_UNTIL_CANCELLED"),
        "created_time": _iso(o.created_ms), "completion_percentage": _dec(100 * filled / o.qty if o.qty else 0, 2),
        "filled_size": _dec(filled, 8), "average_filled_price": _dec(o.avg_price, 2) if filled else "0",
        "fee": "", "number_of_fills": str(fills), "filled_value": _amt(cost, 2), "pending_cancel": False,
        "size_in_quote": bool(o.quote_qty), "total_fees": _amt(o.fee, 2),
        "size_inclusive_of_fees": bool(o.quote_qty),
        "total_value_after_fees": _amt(round(cost + o.fee if o.side == BUY else cost - o.fee, 8), 2),
        "trigger_status": "INVALID_ORDER_TYPE", "order_type": o.type.upper(), "reject_reason": "REJECT_REASON_UNSPECIFIED",
        "settled": done, "product_type": "SPOT", "reject_message": "",
        "cancel_message": ("User requested cancel" if o.status == CANCELED else
                           "Order remainder cancelled (immediate or cancel)" if o.status == EXPIRED else ""),
        "order_placement_source": "RETAIL_ADVANCED", "outstanding_hold_amount": _amt(o.reserved, 2),
        "is_liquidation": False, "last_fill_time": _iso(o.updated_ms) if filled else None, "edit_history": [],
        "leverage": "", "margin_type": "UNKNOWN_MARGIN_TYPE", "retail_portfolio_id": PORTFOLIO_ID,
        "originating_order_id": "", "attached_order_id": "", "attached_order_configuration": None,
    }


def _fill_row(t: Trade) -> dict:
    return {
        "entry_id": f"{int(t.id):064x}", "trade_id": _trade_uuid(t.id), "order_id": _order_uuid(t.order_id),
        "trade_time": _iso(t.time_ms), "trade_type": "FILL", "price": _dec(t.price, 2), "size": _dec(t.qty, 8),
        "commission": _amt(t.fee, 2), "product_id": PRODUCT, "sequence_timestamp": _iso(t.time_ms),
        "liquidity_indicator": "MAKER" if t.maker else "TAKER", "size_in_quote": False, "user_id": USER_ID,
        "side": t.side.upper(), "retail_portfolio_id": PORTFOLIO_ID,
    }


def _failed(reason: str, message: str, preview: str, config: Any, details: str = "") -> dict:
    """A placement the venue turned down: HTTP 200, ``success: false``."""
    return {"success": False, "failure_reason": "UNKNOWN_FAILURE_REASON", "order_id": "",
            "error_response": {"error": reason, "message": message, "error_details": details,
                               "preview_failure_reason": preview, "new_order_failure_reason": reason},
            "order_configuration": config}


def _insufficient(config: Any) -> dict:
    return _failed("INSUFFICIENT_FUND", "Insufficient balance in source account", "PREVIEW_INSUFFICIENT_FUND", config)


def _placed(o: Order) -> dict:
    return {"success": True, "success_response": {"order_id": _order_uuid(o.id), "product_id": PRODUCT,
                                                  "side": o.side.upper(), "client_order_id": o.client_id,
                                                  "attached_order_id": ""},
            "order_configuration": _configuration(o)}


def _decimal(value: Any, increment: str) -> float | None:
    """A positive decimal text on the increment, or None when it is not one."""
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    if not d.is_finite() or d <= 0 or d % Decimal(increment) != 0:
        return None
    return float(d)


def _json_param(params: Mapping[str, str], name: str) -> Any:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise VenueError(400, "INVALID_ARGUMENT", f"{name} is not JSON") from None


@signed
def _create(ask: Ask) -> dict:
    """POST /orders. A client id already used answers that order (the venue is idempotent by it)."""
    acc = _accounts(ask)
    client_id = ask.params.get("client_order_id") or ""
    if not client_id:
        raise VenueError(400, "INVALID_ARGUMENT", "client_order_id is required")
    config = _json_param(ask.params, "order_configuration")
    if ask.params.get("product_id") != PRODUCT:
        return _failed("INVALID_PRODUCT_ID", "ProductID is invalid", "PREVIEW_INVALID_PRODUCT_ID", config)
    side = (ask.params.get("side") or "").lower()
    if side not in (BUY, SELL):
        return _failed("INVALID_SIDE", "Side is invalid", "PREVIEW_INVALID_SIDE", config)
    earlier = [o for o in acc.all_orders(VENUE, SPOT) if o.client_id == client_id]
    if earlier:
        return _placed(earlier[-1])
    if not isinstance(config, dict) or len(config) != 1:
        return _failed("UNSUPPORTED_ORDER_CONFIGURATION", "order_configuration must name one order type",
                       "PREVIEW_INVALID_ORDER_CONFIG", config)
    (kind, fields), = config.items()
    fields = fields if isinstance(fields, dict) else {}
    unsupported = _failed("UNSUPPORTED_ORDER_CONFIGURATION", f"{kind} is not supported by this emulator",
                          "PREVIEW_INVALID_ORDER_CONFIG", config)
    tif, price, quote_qty = "GTC", None, None
    if kind == "market_market_ioc":
        type_ = MARKET
        if fields.get("quote_size") is not None and side == BUY and fields.get("base_size") is None:
            quote_qty = _decimal(fields["quote_size"], PRICE_INCREMENT)
            if quote_qty is None:
                return _failed("INVALID_SIZE_PRECISION", "quote_size is not a multiple of the quote increment",
                               "PREVIEW_INVALID_SIZE_PRECISION", config)
    elif kind in ("limit_limit_gtc", "sor_limit_ioc", "limit_limit_fok"):
        type_, tif = LIMIT, {"limit_limit_gtc": "GTC", "sor_limit_ioc": "IOC", "limit_limit_fok": "IOC"}[kind]
        if fields.get("post_only") in (True, "true"):
            return unsupported
        price = _decimal(fields.get("limit_price"), PRICE_INCREMENT)
        if price is None:
            return _failed("INVALID_PRICE_PRECISION", "limit_price is not a multiple of the price increment",
                           "PREVIEW_INVALID_PRICE_PRECISION", config)
    else:
        return unsupported
    qty = 0.0
    if quote_qty is None:
        size = _decimal(fields.get("base_size"), BASE_INCREMENT)
        if size is None:
            return _failed("INVALID_SIZE_PRECISION", "base_size is not a multiple of the base increment",
                           "PREVIEW_INVALID_SIZE_PRECISION", config)
        if size > float(BASE_MAX):
            return _failed("UNKNOWN_FAILURE_REASON", "base_size is too large", "PREVIEW_INVALID_BASE_SIZE_TOO_LARGE",
                           config)
        qty = size
    try:
        # a buy by quote_size spends it fee included: the quote the trade itself may use is net of the fee
        o = acc.place(VENUE, SPOT, side, type_, qty, price, client_id=client_id, time_in_force=tif,
                      quote_qty=quote_qty / (1 + _spec().costs.taker_fee) if quote_qty else None,
                      fill_ratio=_fill_ratio(ask))
    except AccountError as err:
        if err.reason == "insufficient":
            return _insufficient(config)
        if err.reason == "min_notional":
            return _failed("UNKNOWN_FAILURE_REASON", "quote size is below the product's minimum",
                           "PREVIEW_INVALID_QUOTE_SIZE_TOO_SMALL", config)
        return _failed("INVALID_REQUEST", err.detail or err.reason, "PREVIEW_INVALID_ORDER_CONFIG", config)
    return _placed(o)


def _find(acc: Accounts, order_id: str | None) -> Order:
    internal = _internal_id(order_id)
    try:
        if internal is None:
            raise AccountError("unknown_order")
        return acc.find(VENUE, SPOT, internal)
    except AccountError:
        raise VenueError(404, "NOT_FOUND", "order with this orderID was not found") from None


def _rows(acc: Accounts, orders: list[Order]) -> list[dict]:
    fills: dict[str, int] = {}
    for t in acc.trade_list(VENUE, SPOT):
        fills[t.order_id] = fills.get(t.order_id, 0) + 1
    return [_order_row(o, fills.get(o.id, 0)) for o in orders]


@signed
def _get_order(ask: Ask) -> dict:
    acc = _accounts(ask)
    return {"order": _rows(acc, [_find(acc, ask.params.get("order_id"))])[0]}


def _page(rows: list, params: Mapping[str, str], default: int, most: int) -> tuple[list, str]:
    """A page of ``rows`` from the offset the ``cursor`` names; the next page's cursor ('' at the end)."""
    start = _int(params, "cursor") or 0
    limit = _limit(_int(params, "limit"), default, most)
    page = rows[start:start + limit]
    return page, str(start + limit) if start + limit < len(rows) else ""


_STATUSES = {"OPEN": (NEW, PARTIALLY_FILLED), "FILLED": (FILLED,), "CANCELLED": (CANCELED, EXPIRED),
             "EXPIRED": (), "FAILED": (), "PENDING": (), "QUEUED": (), "CANCEL_QUEUED": (), "EDIT_QUEUED": ()}


@signed
def _list_orders(ask: Ask) -> dict:
    """Orders newest first; ``order_status``, ``product_id(s)``, ``order_ids``, ``start_date``/``end_date``
    filter; 100 a page by default (at most 1000), ``cursor`` for the next."""
    acc = _accounts(ask)
    _product(ask.params, required=False)
    status = ask.params.get("order_status")
    if status is not None and status not in _STATUSES:
        raise VenueError(400, "INVALID_ARGUMENT", f"order_status {status} is invalid")
    start, end = _ms_of(ask.params.get("start_date"), "start_date"), _ms_of(ask.params.get("end_date"), "end_date")
    wanted = ask.params.get("order_ids")
    ids = {_internal_id(i) for i in json.loads(wanted)} if wanted and wanted.startswith("[") else (
        {_internal_id(wanted)} if wanted else None)
    orders = [o for o in reversed(acc.all_orders(VENUE, SPOT))
              if (status is None or o.status in _STATUSES[status]) and (ids is None or o.id in ids)
              and (start is None or o.created_ms >= start) and (end is None or o.created_ms <= end)]
    page, cursor = _page(orders, ask.params, 100, 1000)
    return {"orders": _rows(acc, page), "sequence": "0", "has_next": bool(cursor), "cursor": cursor}


@signed
def _list_fills(ask: Ask) -> dict:
    """Fills newest first; ``product_id(s)``, ``order_id(s)``, ``start_sequence_timestamp`` /
    ``end_sequence_timestamp`` filter; 100 a page by default (at most 1000), ``cursor`` for the next."""
    acc = _accounts(ask)
    _product(ask.params, required=False)
    start = _ms_of(ask.params.get("start_sequence_timestamp"), "start_sequence_timestamp")
    end = _ms_of(ask.params.get("end_sequence_timestamp"), "end_sequence_timestamp")
    wanted = ask.params.get("order_id") or ask.params.get("order_ids")
    order = _internal_id(wanted) if wanted else None
    fills = [t for t in reversed(acc.trade_list(VENUE, SPOT))
             if (not wanted or t.order_id == order) and (start is None or t.time_ms >= start)
             and (end is None or t.time_ms <= end)]
    page, cursor = _page(fills, ask.params, 100, 1000)
    return {"fills": [_fill_row(t) for t in page], "cursor": cursor}


@signed
def _batch_cancel(ask: Ask) -> dict:
    """Cancel each order named: ``success`` per order, ``UNKNOWN_CANCEL_ORDER`` for one that is not open."""
    acc = _accounts(ask)
    ids = _json_param(ask.params, "order_ids")
    if not isinstance(ids, list) or not ids:
        raise VenueError(400, "INVALID_ARGUMENT", "order_ids is required")
    results = []
    for order_id in ids:
        internal = _internal_id(str(order_id))
        try:
            if internal is None:
                raise AccountError("unknown_order")
            acc.cancel(VENUE, SPOT, internal)
            results.append({"success": True, "failure_reason": "UNKNOWN_CANCEL_FAILURE_REASON", "order_id": order_id})
        except AccountError:
            results.append({"success": False, "failure_reason": "UNKNOWN_CANCEL_ORDER", "order_id": order_id})
    return {"results": results}


# ----------------------------------------------------------------- authentication, errors, faults

def _jwt_subject(token: str) -> str | None:
    """The key name a JWT's payload carries (``sub``), read WITHOUT verifying the signature."""
    import base64

    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    sub = payload.get("sub") if isinstance(payload, dict) else None
    return sub if isinstance(sub, str) and sub else None


def check_signed(ask: Ask) -> None:
    """A private call carries the HMAC headers or a Bearer JWT (not verified); a known key when keys are set."""
    auth = ask.headers.get("Authorization") or ""
    if auth.startswith("Bearer "):
        key = _jwt_subject(auth[len("Bearer "):])
    elif ask.headers.get("CB-ACCESS-SIGN") and ask.headers.get("CB-ACCESS-TIMESTAMP"):
        key = ask.headers.get("CB-ACCESS-KEY")
    else:
        key = None
    known = ask.accounts.api_keys if ask.accounts is not None else None
    if not key or (known is not None and key not in known):
        raise VenueError(401, "UNAUTHENTICATED", "Unauthorized")


def error(err: VenueError, server_ms: int) -> Any:
    """401 is the venue's plain text; other refusals its JSON error (``error``, ``error_details``, ``message``)."""
    if err.status == 401:
        return web.Response(status=401, text="Unauthorized\n", content_type="text/plain")
    code = err.code if isinstance(err.code, str) else "NOT_FOUND" if err.status == 404 else "INTERNAL"
    return {"error": code, "error_details": err.msg, "message": err.msg}


def fault(f: Fault, server_ms: int) -> web.Response | None:
    if f.kind in ("rate_limit", "ip_ban"):
        return _json(f.status or 429, {"errors": [{"id": "rate_limit_exceeded", "message": "Too many requests"}]})
    if f.kind == "refuse":
        return _json(f.status or 200, _insufficient(None))
    return None


def path_of(path: str, params: Mapping[str, str]) -> str:
    """The route key of a path with an id in it: the id goes into ``params``
    (the server's own dict of the request's parameters, which it hands on to the route)."""
    for prefix, name in ((f"{V3}/orders/historical/", "order_id"), (f"{V3}/market/products/", "product_id"),
                         (f"{V3}/products/", "product_id")):
        if path.startswith(prefix):
            rest = path[len(prefix):].split("/")
            if name == "order_id" and rest[0] in ("batch", "fills"):
                return path
            cast(dict, params)[name] = rest[0]
            return prefix + "{" + name + "}" + "".join("/" + r for r in rest[1:])
    return path


ROUTES = {
    ("GET", "/v2/time"): _v2_time,
    ("GET", "/v2/currencies"): _v2_currencies,
    ("GET", "/v2/currencies/crypto"): _v2_crypto,
    ("GET", "/v2/exchange-rates"): _v2_rates,
    ("GET", "/v2/accounts"): _v2_accounts,
    ("GET", f"{V3}/time"): _v3_time,
    ("GET", f"{V3}/market/products"): _products,
    ("GET", f"{V3}/market/products/{{product_id}}"): _one_product,
    ("GET", f"{V3}/market/products/{{product_id}}/ticker"): _ticker,
    ("GET", f"{V3}/market/products/{{product_id}}/candles"): _candles,
    ("GET", f"{V3}/market/product_book"): _product_book,
    ("GET", f"{V3}/products"): signed(lambda ask: _products(ask)),
    ("GET", f"{V3}/products/{{product_id}}"): signed(lambda ask: _one_product(ask)),
    ("GET", f"{V3}/products/{{product_id}}/ticker"): signed(lambda ask: _ticker(ask)),
    ("GET", f"{V3}/products/{{product_id}}/candles"): signed(lambda ask: _candles(ask)),
    ("GET", f"{V3}/product_book"): signed(lambda ask: _product_book(ask)),
    ("GET", f"{V3}/best_bid_ask"): _best_bid_ask,
    ("GET", f"{V3}/transaction_summary"): _transaction_summary,
    ("GET", f"{V3}/accounts"): _v3_accounts,
    ("POST", f"{V3}/orders"): _create,
    ("POST", f"{V3}/orders/batch_cancel"): _batch_cancel,
    ("GET", f"{V3}/orders/historical/{{order_id}}"): _get_order,
    ("GET", f"{V3}/orders/historical/batch"): _list_orders,
    ("GET", f"{V3}/orders/historical/fills"): _list_fills,
}

SHAPE = register_venue(VenueShape(
    venue=VENUE, prefixes=(f"{V3}/", "/v2/"), routes=ROUTES, check_signed=check_signed, error=error, fault=fault,
    placement=frozenset({("POST", f"{V3}/orders")}), path_of=path_of,
))
