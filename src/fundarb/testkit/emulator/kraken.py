"""Kraken spot in the loopback emulator: its REST API (``/0/public/...``,
``/0/private/...``) as the installed ccxt (``ccxt.kraken``, and ccxt.pro's,
4.5.90) calls it, for one pair, XBTUSDT (ccxt ``BTC/USDT``: Kraken's asset
XXBT is ccxt's BTC). Registered with ``server.register_venue`` when
``server`` is imported.

**Prices are a STAND-IN. The shipped files hold no Kraken prices**: the pair
is served Binance's spot BTCUSDT hourly closes (the emulator's SPOT series),
as ``server`` serves them for Bybit: a real price of the same pair on another
venue beats an invented one. They are not Kraken's prices. The pair is
XBTUSDT so that the carry's money stays in USDT like the rest of the project;
Kraken's deeper BTC book is XBT/USD (XXBTZUSD), not served.

- **SYNTHETIC** (not in any data, labelled where built): the book (a fixed
  one-tick book straddling the close), volumes, VWAPs and trade counts (zero),
  candle open/high/low (the close), ids.
- **Venue metadata** (not market data): XBTUSDT's pair_decimals 1 (tick 0.1),
  lot_decimals 8, cost_decimals 5, ordermin 0.00005 BTC, costmin 0.5 USDT; the
  Kraken Pro fee schedule (``fees`` / ``fees_maker``, percent by 30-day USD
  volume), whose first row, 0.40% taker and 0.25% maker, is the emulated
  account's (``accounts.MARKETS``). Fees are charged in the quote (USDT) on
  both sides, as Kraken does by default on this pair (order flag ``fciq``;
  ``fcib``, the fee in BTC, is refused: not modelled). Margin trading is not
  served (no leverage is listed).

**Signed calls** (POST, form body) need the ``API-Key`` and ``API-Sign``
headers and a ``nonce`` in the body: present, NOT verified (the HMAC is not
checked, nor that nonces increase). When ``server.accounts.api_keys`` is a set,
other keys are refused. Refusals are Kraken's: HTTP 200 with the reason in the
``error`` list, ``{"error": ["EAPI:Invalid key"]}`` (ccxt: AuthenticationError),
``EAPI:Invalid signature``, ``EAPI:Invalid nonce``.

**Orders** (wallet ``kraken``: fund it with ``server.accounts.fund("kraken",
"USDT", x)``): ``market`` and ``limit`` (``timeinforce`` GTC or IOC; volume in
the quote with ``oflags=viqc`` on a market buy); ``validate`` checks without
placing. Refusals: ``EOrder:Insufficient funds`` (ccxt: InsufficientFunds),
``EOrder:Order minimum not met`` (under ordermin), ``EOrder:Cost minimum not met``
(under costmin), ``EGeneral:Invalid arguments:volume`` (more than 8
decimals), ``EOrder:Invalid price:...`` (more than 1 decimal),
``EQuery:Unknown asset pair``. ``QueryOrders`` of an id it does not know:
``EOrder:Invalid order`` (ccxt: InvalidOrder); ``CancelOrder`` of an order that
is not open: ``EOrder:Unknown order`` (ccxt's cancel_order: OrderNotFound).
Client ids: ``cl_ord_id`` (what ccxt sends for ``clientOrderId``), a UUID or
free text of at most 18 characters, unique among OPEN orders as Kraken
documents; one already on an open order is refused with ``EOrder:Duplicate order``
(the emulator's wording: Kraken documents the rule, not the text). ``userref``
is accepted and not kept. An order's unfilled rest (an IOC's, or the
partial_fill fault's) ends ``canceled``, reason ``Insufficient liquidity``.
Lists (ClosedOrders, TradesHistory) are newest first, 50 a page (``ofs``).

Faults in the venue's words: rate_limit ``EAPI:Rate limit exceeded`` and
ip_ban ``EGeneral:Temporary lockout`` (ccxt: DDoSProtection, both HTTP 200);
refuse ``EOrder:Insufficient funds``. Only one-hour OHLC is served
(``interval=60``: the data is hourly); like the venue it answers at most the
720 most recent candles, whatever ``since`` asks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

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
    SYNTHETIC_LEVEL_QTY,
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

VENUE = "kraken"
PAIR, WSNAME = "XBTUSDT", "XBT/USDT"  # the pair's id (also its altname) and websocket name
BASE_ID, QUOTE_ID = "XXBT", "USDT"
ASSET_OF = {"BTC": BASE_ID}  # the emulator's asset names -> Kraken's asset ids
# Venue metadata: Kraken's published XBTUSDT pair (not market data)
PAIR_DECIMALS, LOT_DECIMALS, COST_DECIMALS = 1, 8, 5
TICK, ORDERMIN, COSTMIN = "0.1", "0.00005", "0.5"
# the Kraken Pro schedule above the first row (30-day USD volume, percent); the first row is the account's
FEE_STEPS = ((10_000, 0.35, 0.20), (50_000, 0.24, 0.14), (100_000, 0.22, 0.12), (250_000, 0.20, 0.10),
             (500_000, 0.18, 0.08), (1_000_000, 0.16, 0.06), (2_500_000, 0.14, 0.04), (5_000_000, 0.12, 0.02),
             (10_000_000, 0.10, 0.0))
OHLC_MOST = 720
PAGE = 50
FREE_TEXT_ID = re.compile(r"[\x21-\x7e]{1,18}")
UUID_ID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
_B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def _spec() -> Any:
    return MARKETS[(VENUE, SPOT)]


def _fees() -> tuple[list[list[float]], list[list[float]]]:
    """(fees, fees_maker) as AssetPairs lists them: [volume, percent], the account's rates first."""
    costs = _spec().costs
    taker = [[0, round(costs.taker_fee * 100, 4)], *([v, t] for v, t, _ in FEE_STEPS)]
    maker = [[0, round(costs.maker_fee * 100, 4)], *([v, m] for v, _, m in FEE_STEPS)]
    return taker, maker


# ----------------------------------------------------------------- ids and numbers

_SPREAD, _SPAN = 0x9E3779B97F4A7C15 | 1, 32**16  # an odd multiplier: a bijection of the 80-bit ids (SYNTHETIC look)


def _txid(prefix: str, internal: str) -> str:
    """A Kraken-style id (``OUF4EM-FRGI2-MQMWZD``) for the emulator's id: reversible, base32 of the number spread."""
    n, chars = int(internal) * _SPREAD % _SPAN, []
    for _ in range(16):
        n, r = divmod(n, 32)
        chars.append(_B32[r])
    s = "".join(reversed(chars))
    return f"{prefix}{s[:5]}-{s[5:10]}-{s[10:]}"


def _internal(prefix: str, txid: str | None) -> str | None:
    """The emulator's id of a Kraken-style id, or None when it names none of ours."""
    if not txid or not txid.startswith(prefix) or len(txid) != 19 or txid[6] != "-" or txid[12] != "-":
        return None
    s = txid[1:].replace("-", "")
    if any(c not in _B32 for c in s):
        return None
    n = 0
    for c in s:
        n = n * 32 + _B32.index(c)
    return str(n * pow(_SPREAD, -1, _SPAN) % _SPAN)


def venue_ids(order_id: str, trade_id: str | None = None) -> tuple[str, str | None]:
    """The venue's ids of an order and a trade of the emulator's accounts (what ccxt reports)."""
    return _txid("O", order_id), _txid("T", trade_id) if trade_id is not None else None


def _seconds(ms: int) -> float:
    """Kraken's times: unix seconds with four decimals."""
    return round(ms / 1000, 4)


def _decimal(raw: str | None, places: int) -> float | None:
    """A positive decimal of at most ``places`` decimals, or None."""
    try:
        d = Decimal(raw or "")
    except InvalidOperation:
        return None
    exponent = d.as_tuple().exponent
    if not d.is_finite() or d <= 0 or not isinstance(exponent, int) or -exponent > places:
        return None
    return float(d)


def _pair(params: Mapping[str, str], required: bool = True) -> bool:
    pair = params.get("pair")
    if not pair:
        if required:
            raise VenueError(200, "EGeneral:Invalid arguments", "pair is required")
        return False
    if any(p not in (PAIR, WSNAME, "XXBTZUSDT") for p in pair.split(",")):
        raise VenueError(200, "EQuery:Unknown asset pair", pair)
    return True


def _int(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(float(raw))
    except ValueError:
        raise VenueError(200, f"EGeneral:Invalid arguments:{name}", raw) from None


# ----------------------------------------------------------------- public market data

def _time(ask: Ask) -> dict:
    now = datetime.fromtimestamp(ask.server_ms / 1000, tz=UTC)
    return {"unixtime": ask.server_ms // 1000, "rfc1123": now.strftime("%a, %d %b %y %H:%M:%S +0000")}


def _status(ask: Ask) -> dict:
    return {"status": "online", "timestamp": datetime.fromtimestamp(ask.server_ms / 1000, tz=UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ")}


_ASSETS = {BASE_ID: {"aclass": "currency", "altname": "XBT", "decimals": 10, "display_decimals": 5,
                     "collateral_value": 1.0, "status": "enabled"},
           QUOTE_ID: {"aclass": "currency", "altname": "USDT", "decimals": 8, "display_decimals": 4,
                      "collateral_value": 1.0, "status": "enabled"},
           "ZUSD": {"aclass": "currency", "altname": "USD", "decimals": 4, "display_decimals": 2,
                    "collateral_value": 1.0, "status": "enabled"}}


def _assets(ask: Ask) -> dict:
    wanted = ask.params.get("asset")
    if not wanted:
        return dict(_ASSETS)
    names = wanted.split(",")
    found = {k: v for k, v in _ASSETS.items() if k in names or v["altname"] in names}
    if len(found) < len(names):
        raise VenueError(200, "EQuery:Unknown asset", wanted)
    return found


def _pair_row() -> dict:
    fees, fees_maker = _fees()
    return {"altname": PAIR, "wsname": WSNAME, "aclass_base": "currency", "base": BASE_ID, "aclass_quote": "currency",
            "quote": QUOTE_ID, "lot": "unit", "cost_decimals": COST_DECIMALS, "pair_decimals": PAIR_DECIMALS,
            "lot_decimals": LOT_DECIMALS, "lot_multiplier": 1, "leverage_buy": [], "leverage_sell": [],
            "fees": fees, "fees_maker": fees_maker, "fee_volume_currency": "ZUSD", "margin_call": 80,
            "margin_stop": 40, "ordermin": ORDERMIN, "costmin": COSTMIN, "tick_size": TICK, "status": "online"}


def _asset_pairs(ask: Ask) -> dict:
    _pair(ask.params, required=False)
    return {PAIR: _pair_row()}


def _ticker(ask: Ask) -> dict:
    """The 24 h ticker: last, the SYNTHETIC book's top, today's (UTC) and 24 h lows and highs of
    the hourly closes, today's open (the close at midnight); volume, VWAP and trades zero (SYNTHETIC)."""
    _pair(ask.params, required=False)
    series = ask.tape.prices[SPOT]
    w = _window_24h(series, ask.now_ms)
    midnight = ask.now_ms - ask.now_ms % (24 * MS_PER_HOUR)
    today = series.close[series.index_at(midnight) + 1: series.index_at(ask.now_ms) + 1]
    lo, hi = (float(today.min()), float(today.max())) if today.size else (w["last"], w["last"])
    bid, ask_px = _book_top(w["last"], TICK)
    qty = SYNTHETIC_LEVEL_QTY
    # the stand-in closes as they are (2 decimals), not rounded to Kraken's tick: they are no Kraken trade
    return {PAIR: {"a": [_dec(ask_px, 1), "1", qty], "b": [_dec(bid, 1), "1", qty],
                   "c": [_amt(w["last"], 1), "0.00000000"], "v": ["0.00000000", "0.00000000"],
                   "p": ["0.0", "0.0"], "t": [0, 0], "l": [_amt(lo, 1), _amt(w["low"], 1)],
                   "h": [_amt(hi, 1), _amt(w["high"], 1)], "o": _amt(series.price_at(midnight), 1)}}


def _depth(ask: Ask) -> dict:
    """The SYNTHETIC book: ``count`` levels a side (default 100, at most 500)."""
    _pair(ask.params)
    depth = _limit(_int(ask.params, "count"), 100, 500)
    bids, asks = _book(ask.tape.prices[SPOT].price_at(ask.now_ms), TICK, depth, PAIR_DECIMALS)
    ts = ask.now_ms // 1000
    return {PAIR: {"asks": [[p, q, ts] for p, q in asks], "bids": [[p, q, ts] for p, q in bids]}}


def _ohlc(ask: Ask) -> dict:
    """Hourly candles (open time in seconds), complete hours only, oldest first: the
    720 most recent, of them those that open after ``since`` (the venue's rule).
    open = high = low = close (only closes are shipped); vwap, volume, count 0."""
    _pair(ask.params)
    if ask.params.get("interval", "1") != "60":
        raise VenueError(200, "EGeneral:Invalid arguments:interval", "only interval=60 is served (the data is hourly)")
    since = _int(ask.params, "since")
    series = ask.tape.prices[SPOT]
    upto = series.index_at(ask.now_ms) + 1
    rows = []
    for i in range(max(0, upto - OHLC_MOST), upto):
        t = int(series.open_ms[i]) // 1000
        if since is not None and t <= since:
            continue
        c = _amt(float(series.close[i]), 1)  # the stand-in close as it is (see the ticker)
        rows.append([t, c, c, c, c, "0.0", "0.00000000", 0])  # SYNTHETIC: no vwap, volume or trades
    last = rows[-1][0] if rows else (since or 0)
    return {PAIR: rows, "last": last}


# ----------------------------------------------------------------- accounts

def _accounts(ask: Ask) -> Accounts:
    if ask.accounts is None:
        raise VenueError(503, "EService:Unavailable", "this emulator has no accounts")
    return ask.accounts


def _wallet(acc: Accounts) -> list[tuple[str, float, float]]:
    """(Kraken asset id, balance, held by open orders): XXBT and USDT always, then any other asset funded."""
    w = acc.wallets[VENUE]
    names = ["BTC", "USDT", *sorted(set(w.total) - {"BTC", "USDT"})]
    return [(ASSET_OF.get(a, a), w.get(a), w.locked.get(a, 0.0)) for a in names]


@signed
def _balance(ask: Ask) -> dict:
    return {asset: _dec(total, 10 if asset == BASE_ID else 8) for asset, total, _ in _wallet(_accounts(ask))}


@signed
def _balance_ex(ask: Ask) -> dict:
    return {asset: {"balance": _dec(total, 10 if asset == BASE_ID else 8), "credit": "0.0000", "credit_used": "0.0000",
                    "hold_trade": _dec(hold, 10 if asset == BASE_ID else 8)}
            for asset, total, hold in _wallet(_accounts(ask))}


@signed
def _trade_volume(ask: Ask) -> dict:
    costs = _spec().costs
    taker, maker = costs.taker_fee * 100, costs.maker_fee * 100
    return {"currency": "ZUSD", "volume": "0.0000",
            "fees": {PAIR: {"fee": f"{taker:.4f}", "minfee": "0.1000", "maxfee": f"{taker:.4f}", "nextfee": "0.3500",
                            "nextvolume": "10000.0000", "tiervolume": "0.0000"}},
            "fees_maker": {PAIR: {"fee": f"{maker:.4f}", "minfee": "0.0000", "maxfee": f"{maker:.4f}",
                                  "nextfee": "0.2000", "nextvolume": "10000.0000", "tiervolume": "0.0000"}}}


# ----------------------------------------------------------------- orders

_STATUS = {NEW: "open", PARTIALLY_FILLED: "open", FILLED: "closed", CANCELED: "canceled", EXPIRED: "canceled"}


def _own_client_id(o: Order) -> str | None:
    """The cl_ord_id the order was placed with (None: the emulator named it)."""
    return None if o.client_id.startswith(f"emu-{VENUE}-") else o.client_id


def _description(o: Order) -> dict:
    text = f"{o.side} {_dec(o.qty, LOT_DECIMALS)} {PAIR} @ " + (
        "market" if o.type == MARKET else f"limit {_dec(o.price or 0, PAIR_DECIMALS)}")
    return {"pair": PAIR, "type": o.side, "ordertype": o.type,
            "price": _dec(o.price or 0, PAIR_DECIMALS), "price2": "0", "leverage": "none", "order": text, "close": ""}


def _order_row(o: Order, trades: list[Trade] | None = None) -> dict:
    row: dict[str, Any] = {
        "refid": None, "userref": 0, "status": _STATUS[o.status],
        "reason": "User requested" if o.status == CANCELED else "Insufficient liquidity" if o.status == EXPIRED else None,
        "opentm": _seconds(o.created_ms), "starttm": 0, "expiretm": 0, "descr": _description(o),
        "vol": _dec(o.qty, LOT_DECIMALS), "vol_exec": _dec(o.filled, LOT_DECIMALS), "cost": _amt(o.cost, COST_DECIMALS),
        "fee": _amt(o.fee, COST_DECIMALS), "price": _amt(o.avg_price, PAIR_DECIMALS), "stopprice": "0.00000",
        "limitprice": "0.00000", "misc": "", "oflags": "fciq",
    }
    cid = _own_client_id(o)
    if cid is not None:
        row["cl_ord_id"] = cid
    if not o.is_open:
        row["closetm"] = _seconds(o.updated_ms)
    if trades:
        row["trades"] = [_txid("T", t.id) for t in trades]
    return row


def _trade_row(t: Trade, o: Order) -> dict:
    return {"ordertxid": _txid("O", t.order_id), "postxid": _txid("P", t.id), "pair": PAIR, "time": _seconds(t.time_ms),
            "type": t.side, "ordertype": o.type, "price": _dec(t.price, PAIR_DECIMALS),
            "cost": _amt(round(t.qty * t.price, 8), COST_DECIMALS), "fee": _amt(t.fee, COST_DECIMALS),
            "vol": _dec(t.qty, LOT_DECIMALS), "margin": "0.00000", "leverage": "0", "misc": "",
            "trade_id": int(t.id), "maker": t.maker}


def _trades_by_order(acc: Accounts) -> dict[str, list[Trade]]:
    out: dict[str, list[Trade]] = {}
    for t in acc.trade_list(VENUE, SPOT):
        out.setdefault(t.order_id, []).append(t)
    return out


def _wants_trades(params: Mapping[str, str]) -> bool:
    return (params.get("trades") or "").lower() == "true"


def _check_client_id(cid: str) -> None:
    if not (FREE_TEXT_ID.fullmatch(cid) or UUID_ID.fullmatch(cid)):
        raise VenueError(200, "EGeneral:Invalid arguments:cl_ord_id",
                         "a UUID or free text of at most 18 characters")


@signed
def _add_order(ask: Ask) -> dict:
    acc = _accounts(ask)
    p = ask.params
    _pair(p)
    side, type_ = p.get("type"), p.get("ordertype")
    if side not in (BUY, SELL):
        raise VenueError(200, "EGeneral:Invalid arguments:type", str(side))
    if type_ not in (MARKET, LIMIT):
        raise VenueError(200, "EGeneral:Invalid arguments:ordertype", f"{type_} is not served by this emulator")
    flags = set(filter(None, (p.get("oflags") or "").split(",")))
    if flags - {"fciq", "nompp", "viqc"}:
        raise VenueError(200, "EGeneral:Invalid arguments:oflags", f"{','.join(sorted(flags))} is not served")
    if (p.get("reduce_only") or "").lower() == "true" or p.get("leverage"):
        raise VenueError(200, "EGeneral:Invalid arguments:leverage", "margin trading is not served")
    tif = (p.get("timeinforce") or "GTC").upper()
    if tif not in ("GTC", "IOC"):
        raise VenueError(200, "EGeneral:Invalid arguments:timeinforce", tif)
    in_quote = "viqc" in flags and type_ == MARKET and side == BUY
    volume = _decimal(p.get("volume"), COST_DECIMALS if in_quote else LOT_DECIMALS)
    if volume is None:
        raise VenueError(200, "EGeneral:Invalid arguments:volume", str(p.get("volume")))
    if not in_quote and volume < float(ORDERMIN):
        raise VenueError(200, "EOrder:Order minimum not met", f"volume minimum not met: {ORDERMIN}")
    price = None
    if type_ == LIMIT:
        price = _decimal(p.get("price"), PAIR_DECIMALS)
        if price is None:
            raise VenueError(200, "EOrder:Invalid price",
                             f"{PAIR} price can only be specified up to {PAIR_DECIMALS} decimals.")
    cid = p.get("cl_ord_id") or None
    if cid is not None:
        _check_client_id(cid)
        if any(o.client_id == cid and o.is_open for o in acc.all_orders(VENUE, SPOT)):
            raise VenueError(200, "EOrder:Duplicate order", f"cl_ord_id {cid} is on an open order")
    descr = {"order": f"{side} {_dec(volume, COST_DECIMALS if in_quote else LOT_DECIMALS)} {PAIR} @ "
                      + ("market" if type_ == MARKET else f"limit {_dec(price or 0, PAIR_DECIMALS)}")}
    if (p.get("validate") or "").lower() == "true":
        return {"descr": descr}
    try:
        o = acc.place(VENUE, SPOT, side, type_, 0.0 if in_quote else volume, price, client_id=cid, time_in_force=tif,
                      quote_qty=volume if in_quote else None, fill_ratio=_fill_ratio(ask))
    except AccountError as err:
        if err.reason == "insufficient":
            raise VenueError(200, "EOrder:Insufficient funds", err.detail) from None
        if err.reason == "min_notional":
            raise VenueError(200, "EOrder:Cost minimum not met", f"cost minimum not met: {COSTMIN}") from None
        if err.reason == "duplicate":
            raise VenueError(200, "EOrder:Duplicate order", err.detail) from None
        raise VenueError(200, "EGeneral:Invalid arguments", err.detail) from None
    return {"descr": descr, "txid": [_txid("O", o.id)]}


def _find(acc: Accounts, txid: str | None) -> Order | None:
    internal = _internal("O", txid)
    if internal is None:
        return None
    try:
        return acc.find(VENUE, SPOT, internal)
    except AccountError:
        return None


@signed
def _cancel_order(ask: Ask) -> dict:
    """Cancel by ``txid`` (or ``cl_ord_id``); an order that is not open is ``EOrder:Unknown order``."""
    acc = _accounts(ask)
    cid = ask.params.get("cl_ord_id")
    order = (next((o for o in acc.all_orders(VENUE, SPOT) if o.client_id == cid and o.is_open), None) if cid
             else _find(acc, ask.params.get("txid")))
    if order is None or not order.is_open:
        raise VenueError(200, "EOrder:Unknown order", "the order is not open")
    acc.cancel(VENUE, SPOT, order.id)
    return {"count": 1}


@signed
def _query_orders(ask: Ask) -> dict:
    acc = _accounts(ask)
    txids = [t for t in (ask.params.get("txid") or "").split(",") if t]
    if not txids:
        raise VenueError(200, "EGeneral:Invalid arguments:txid", "txid is required")
    if len(txids) > 50:
        raise VenueError(200, "EGeneral:Invalid arguments:txid", "at most 50 txids")
    trades = _trades_by_order(acc) if _wants_trades(ask.params) else {}
    out = {}
    for txid in txids:
        order = _find(acc, txid)
        if order is None:
            raise VenueError(200, "EOrder:Invalid order", txid)
        out[txid] = _order_row(order, trades.get(order.id))
    return out


def _matches(o: Order, params: Mapping[str, str]) -> bool:
    cid = params.get("cl_ord_id")
    return cid is None or o.client_id == cid


@signed
def _open_orders(ask: Ask) -> dict:
    acc = _accounts(ask)
    trades = _trades_by_order(acc) if _wants_trades(ask.params) else {}
    return {"open": {_txid("O", o.id): _order_row(o, trades.get(o.id))
                     for o in reversed(acc.open_orders(VENUE, SPOT)) if _matches(o, ask.params)}}


@signed
def _closed_orders(ask: Ask) -> dict:
    """Orders no longer open, newest first, 50 from ``ofs``; ``start``/``end`` (seconds) on the open time."""
    acc = _accounts(ask)
    start, end, ofs = _int(ask.params, "start"), _int(ask.params, "end"), _int(ask.params, "ofs") or 0
    trades = _trades_by_order(acc) if _wants_trades(ask.params) else {}
    rows = [o for o in reversed(acc.all_orders(VENUE, SPOT)) if not o.is_open and _matches(o, ask.params)
            and (start is None or o.created_ms / 1000 > start) and (end is None or o.created_ms / 1000 <= end)]
    return {"closed": {_txid("O", o.id): _order_row(o, trades.get(o.id)) for o in rows[ofs:ofs + PAGE]},
            "count": len(rows)}


@signed
def _trades_history(ask: Ask) -> dict:
    """Trades newest first, 50 from ``ofs``; ``start`` (exclusive) and ``end`` (inclusive), seconds."""
    acc = _accounts(ask)
    start, end, ofs = _int(ask.params, "start"), _int(ask.params, "end"), _int(ask.params, "ofs") or 0
    orders = {o.id: o for o in acc.all_orders(VENUE, SPOT)}
    rows = [t for t in reversed(acc.trade_list(VENUE, SPOT))
            if (start is None or t.time_ms / 1000 > start) and (end is None or t.time_ms / 1000 <= end)]
    return {"trades": {_txid("T", t.id): _trade_row(t, orders[t.order_id]) for t in rows[ofs:ofs + PAGE]},
            "count": len(rows)}


# ----------------------------------------------------------------- authentication, errors, faults

def check_signed(ask: Ask) -> None:
    key = ask.headers.get("API-Key")
    known = ask.accounts.api_keys if ask.accounts is not None else None
    if not key or (known is not None and key not in known):
        raise VenueError(200, "EAPI:Invalid key", "")
    if not ask.headers.get("API-Sign"):
        raise VenueError(200, "EAPI:Invalid signature", "")
    if not (ask.params.get("nonce") or "").isdigit():
        raise VenueError(200, "EAPI:Invalid nonce", "")


def envelope(body: Any, server_ms: int) -> dict:
    return {"error": [], "result": body}


def error(err: VenueError, server_ms: int) -> dict:
    """Kraken's refusal: the reason (category:message[:detail]) in the ``error`` list."""
    if isinstance(err.code, str):
        text = err.code
    else:  # the server's own refusals (an unknown path)
        text = "EGeneral:Unknown method" if err.status == 404 else "EGeneral:Internal error"
    return {"error": [text]}


def fault(f: Fault, server_ms: int) -> web.Response | None:
    text = {"rate_limit": "EAPI:Rate limit exceeded", "ip_ban": "EGeneral:Temporary lockout",
            "refuse": "EOrder:Insufficient funds"}.get(f.kind)
    return _json(f.status or 200, {"error": [text]}) if text else None


ROUTES = {
    ("GET", "/0/public/Time"): _time,
    ("GET", "/0/public/SystemStatus"): _status,
    ("GET", "/0/public/Assets"): _assets,
    ("GET", "/0/public/AssetPairs"): _asset_pairs,
    ("GET", "/0/public/Ticker"): _ticker,
    ("GET", "/0/public/Depth"): _depth,
    ("GET", "/0/public/OHLC"): _ohlc,
    ("POST", "/0/private/Balance"): _balance,
    ("POST", "/0/private/BalanceEx"): _balance_ex,
    ("POST", "/0/private/TradeVolume"): _trade_volume,
    ("POST", "/0/private/AddOrder"): _add_order,
    ("POST", "/0/private/CancelOrder"): _cancel_order,
    ("POST", "/0/private/QueryOrders"): _query_orders,
    ("POST", "/0/private/OpenOrders"): _open_orders,
    ("POST", "/0/private/ClosedOrders"): _closed_orders,
    ("POST", "/0/private/TradesHistory"): _trades_history,
}

SHAPE = register_venue(VenueShape(
    venue=VENUE, prefixes=("/0/",), routes=ROUTES, check_signed=check_signed, error=error, envelope=envelope,
    fault=fault, placement=frozenset({("POST", "/0/private/AddOrder")}),
))
