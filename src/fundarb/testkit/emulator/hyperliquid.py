"""Hyperliquid in the loopback emulator: its ``/info`` and ``/exchange`` API as
the installed ccxt (``ccxt.hyperliquid``) calls it, for one perpetual, BTC
(ccxt ``BTC/USDC:USDC``, asset 0), margined and settled in USDC, funding
HOURLY. Registered with ``server.register_venue`` when ``server`` is imported.

**The data is a STAND-IN. The shipped files hold no Hyperliquid history.**

- **Funding:** the real HOURLY settlements of dYdX v3 BTC-USD
  (``funding_settlements.parquet``, venue ``dydx``, 2022-01-01 ..
  2023-12-31), served as the emulated Hyperliquid BTC perp's settlements:
  ``fundingHistory``, the ``funding`` field of ``metaAndAssetCtxs`` (the last
  settled rate, no look-ahead; null when the last settlement is more than an
  hour old) and what positions pay and receive (``userFunding``). They are
  dYdX's rates, not Hyperliquid's: a real hourly rate of the same underlying
  on another venue beats an invented one. Outside 2022-01 .. 2023-12 there
  are no settlements (the emulator's default start, 2024-07-01, has none: a
  test sets the clock inside the window).
- **Prices:** Binance USD-M BTCUSDT hourly closes (the emulator's PERP series)
  as the mark (``markPx``, positions, fills, liquidation) and Binance spot
  BTCUSDT closes as the oracle (``oraclePx``), as ``server`` serves Binance's
  closes for Bybit: not Hyperliquid's prices.
- **SYNTHETIC** (not in any data, labelled where built): the book (a fixed
  one-tick book straddling the close, ``impactPxs`` and ``midPx`` from it),
  volumes, open interest and trade counts (zero), candle open/high/low (the
  close). Hyperliquid's answers have no free-text field where the stand-in
  could be named; this docstring and ``server``'s are where it is said.
- **Venue metadata** (not market data): BTC's szDecimals 5, prices of at most
  5 significant figures and at most 6 - szDecimals = 1 decimal (an integer
  price is always valid), minimum order value 10 USDC, max leverage 40, base
  fees 0.045% taker / 0.015% maker (``accounts.MARKETS``). The margin table
  is the shipped snapshot's (``margin_tiers.json``: the first tier, 40x, so
  served as the single-tier table 40 by the venue's id convention; the
  venue's own BTC table adds a 20x tier above 150M USDC).

Every request is a POST to ``/info`` (operation in the body's ``type``) or
``/exchange`` (signed actions: ``action.type``); ``path_of`` turns them into
the route keys ``/info/<type>`` and ``/exchange/<action type>``, which the
request log shows and faults match (``path="/exchange/order"`` is order
placement; ``"/info"`` every info request).

**Accounts.** One account, wallet ``hyperliquid`` (USDC): fund it with
``server.accounts.fund("hyperliquid", "USDC", x)``. ``/info`` user queries
need a ``user`` address (0x + 40 hex); any address sees the account unless
``server.accounts.api_keys`` is a set, then only the addresses in it (others
get an empty account, as the venue answers for an address it does not know).
``/exchange`` actions need ``nonce`` and an EIP-712 ``signature`` (r, s, v):
present, NOT verified (the signer is not recovered, the nonce window is not
checked: the emulator's clock is historical, ccxt's nonces are the wall
clock's). Positions are ISOLATED whatever ``updateLeverage`` asks
(``isCross`` is accepted and recorded, the money model is the emulator's
isolated one, and positions say ``isolated``); the liquidation price is the
``hyperliquid`` rule of ``fundarb.core.liquidation``.

**Orders.** ``order`` actions of limit orders (tif Gtc, Ioc, Alo; ccxt's
"market" order is an Ioc limit at the price it bounds by its slippage):
filled at the (stand-in) close moved by the simulator's slippage when they
cross, resting otherwise (``accounts``). Trigger (TP/SL) orders and builder
fees above 0 are refused (not modelled; fundarb's ccxt options set
``builderFee`` off, and ccxt then attaches its builder at 0%). Refusals are
the venue's documented per-order error strings (``Insufficient margin to
place order.``, ``Order must have minimum value of $10.``, ``Price must be
divisible by tick size.``, ``Order has invalid size.``, ``Reduce only order
would increase position.``, ``Post only order would have immediately
matched``, ``Order could not immediately match against any resting orders.``,
cancel's ``Order was never placed, already canceled, or filled.``) and
``{"status": "unknownOid"}`` for ``orderStatus`` of an unknown order. A cloid
used before: ``Duplicate cloid.``, the emulator's wording (the venue's
published error list has no entry for it). A malformed body (no signature, a
cloid that is not 0x + 32 hex, an unknown ``type``) gets the venue's plain-text
HTTP 422 ``Failed to deserialize the JSON body into the target type: ...``.
Faults in the venue's words: rate_limit and ip_ban are HTTP 429 (the venue
limits by address and IP with 429; the body text is the emulator's), refuse
is the insufficient-margin status.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from aiohttp import web

from fundarb.testkit.emulator.accounts import (
    BUY,
    CANCELED,
    EXPIRED,
    FILLED,
    LIMIT,
    MARKETS,
    PERP,
    SELL,
    AccountError,
    Accounts,
    Order,
    Trade,
)
from fundarb.testkit.emulator.server import (
    SPOT,
    Ask,
    Fault,
    VenueError,
    VenueShape,
    _book_top,
    _rows_window,
    _window_24h,
    register_venue,
    signed,
)

VENUE = "hyperliquid"
COIN = "BTC"
ASSET = 0  # BTC's asset index (universe position) on Hyperliquid's main perp dex
SZ_DECIMALS = 5
PX_DECIMALS = 6 - SZ_DECIMALS  # perps: at most MAX_DECIMALS (6) - szDecimals decimals
PX_SIG_FIGS = 5
MAX_LEVERAGE = 40
BOOK_TICK = "1"  # BTC above 10,000 at 5 significant figures: whole dollars
BOOK_DEPTH = 20  # l2Book's levels per side
SYNTHETIC_LEVEL_SZ = "1.0"  # SYNTHETIC: BTC at every level of the made-up book
# rows per answer: the venue's published caps
MOST_CANDLES, MOST_FUNDING_ROWS, MOST_FILLS, MOST_ORDERS = 5000, 500, 2000, 2000
CLOID = re.compile(r"^0x[0-9a-fA-F]{32}$")
ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
ZERO_HASH = "0x" + "0" * 64
# the USDC token as spotMeta lists it (ccxt reads the currencies from it); the emulator serves no spot pairs
USDC_TOKEN = {"name": "USDC", "szDecimals": 8, "weiDecimals": 8, "index": 0,
              "tokenId": "0x6d1e7cde53ba9467b783cb7c530ce054", "isCanonical": True, "evmContract": None,
              "fullName": None}

# order errors: the venue's documented strings (Error responses), with the asset it names
TICK = "Price must be divisible by tick size."
MIN_VALUE = "Order must have minimum value of $10."
MARGIN = "Insufficient margin to place order."
REDUCE_ONLY = "Reduce only order would increase position."
BAD_ALO = "Post only order would have immediately matched, bbo was {bbo}."
IOC_CANCEL = "Order could not immediately match against any resting orders."
BAD_SIZE = "Order has invalid size."
MISSING_ORDER = "Order was never placed, already canceled, or filled."
DUPLICATE_CLOID = "Duplicate cloid."  # the emulator's wording: not in the venue's published list
NOT_MODELLED = "the emulator serves limit orders (Gtc, Ioc, Alo) only, not {what}"
# order statuses as orderStatus / historicalOrders print them
STATUS = {FILLED: "filled", CANCELED: "canceled"}
TIFS = {"Gtc": "GTC", "Ioc": "IOC", "Alo": "GTX"}


# ----------------------------------------------------------------- numbers and request fields

def _num(x: float | Decimal | str) -> str:
    """A number as the venue prints it: the shortest round-trip decimal, at least one decimal ("2000.0")."""
    text = format(Decimal(repr(float(x))) if not isinstance(x, Decimal) else x, "f")
    return text if "." in text else text + ".0"


def _deserialize(detail: str) -> VenueError:
    """The venue's answer to a body it cannot read: HTTP 422, plain text."""
    return VenueError(422, 422, f"Failed to deserialize the JSON body into the target type: {detail}")


def _json_field(ask: Ask, name: str) -> Any:
    """A top-level body field that was JSON (an object, list or number): decoded; missing: a 422."""
    raw = ask.params.get(name)
    if raw is None:
        raise _deserialize(f"missing field `{name}`")
    try:
        return json.loads(raw)
    except ValueError:
        return raw  # a plain string field


def _int_field(ask: Ask, name: str, required: bool) -> int | None:
    raw = ask.params.get(name)
    if raw is None or raw == "null":
        if required:
            raise _deserialize(f"missing field `{name}`")
        return None
    try:
        return int(raw)
    except ValueError:
        raise _deserialize(f"{name}: invalid type: string {raw!r}, expected u64") from None


def _accounts(ask: Ask) -> Accounts:
    if ask.accounts is None:
        raise VenueError(500, 500, "this emulator has no accounts")
    return ask.accounts


def _user(ask: Ask) -> tuple[str, bool]:
    """The queried address (lower case) and whether it is the emulator's account."""
    user = ask.params.get("user")
    if user is None:
        raise _deserialize("missing field `user`")
    if not ADDRESS.match(user):
        raise _deserialize(f"user: invalid address {user!r}")
    known = _accounts(ask).api_keys
    return user.lower(), known is None or user.lower() in {k.lower() for k in known}


def _cloid(order: Order) -> str | None:
    return order.client_id if CLOID.match(order.client_id or "") else None


# ----------------------------------------------------------------- market data

def _last_rate(ask: Ask) -> float | None:
    """The last settled (stand-in) rate, or None when none settled within the last hour."""
    funding = ask.tape.funding[VENUE]
    n = funding.count_upto(ask.now_ms)
    if n == 0 or ask.now_ms - int(funding.time_ms[n - 1]) > 3_600_000:
        return None
    return float(funding.rate[n - 1])


def _asset_ctx(ask: Ask) -> dict:
    """BTC's asset context. markPx: the stand-in perp close; oraclePx: the Binance spot close
    as the stand-in oracle; funding: the last settled stand-in rate (the venue's field is its
    running estimate of the next one: not in the data); SYNTHETIC book, volumes, open interest."""
    perp = ask.tape.prices[PERP]
    close = perp.price_at(ask.now_ms)
    bid, ask_px = _book_top(close, BOOK_TICK)
    rate = _last_rate(ask)
    return {
        "funding": None if rate is None else _num(rate),
        "openInterest": "0.0", "dayNtlVlm": "0.0", "dayBaseVlm": "0.0",  # SYNTHETIC
        "prevDayPx": _num(_window_24h(perp, ask.now_ms)["open"]),
        "markPx": _num(close), "oraclePx": _num(ask.tape.prices[SPOT].price_at(ask.now_ms)),
        "midPx": _num((bid + ask_px) / 2), "impactPxs": [_num(bid), _num(ask_px)],  # SYNTHETIC
    }


def _meta() -> dict:
    rule = MARKETS[(VENUE, PERP)].margin
    assert rule is not None
    tiers = [{"lowerBound": _num(t.floor), "maxLeverage": int(t.max_leverage)} for t in rule.tiers]
    return {"universe": [{"name": COIN, "szDecimals": SZ_DECIMALS, "maxLeverage": MAX_LEVERAGE,
                          "marginTableId": MAX_LEVERAGE}],
            "marginTables": [[MAX_LEVERAGE, {"description": "", "marginTiers": tiers}]]}


def _info_meta(ask: Ask) -> dict:
    return _meta()


def _info_meta_and_ctxs(ask: Ask) -> list:
    if ask.params.get("dex"):
        raise VenueError(200, 0, f"unknown perp dex {ask.params['dex']!r}: the emulator serves the main dex")
    return [_meta(), [_asset_ctx(ask)]]


def _info_spot_meta(ask: Ask) -> dict:
    return {"universe": [], "tokens": [USDC_TOKEN]}


def _info_exchange_status(ask: Ask) -> dict:
    return {"specialStatuses": None, "time": ask.server_ms}


def _coin(ask: Ask, value: Any) -> None:
    if value != COIN:
        raise VenueError(200, 0, f"unknown coin {value!r}: the emulator serves {COIN} only")


def _info_l2_book(ask: Ask) -> dict:
    """SYNTHETIC levels one tick apart around the stand-in close (only the centre is real)."""
    _coin(ask, ask.params.get("coin"))
    bid, ask_px = _book_top(ask.tape.prices[PERP].price_at(ask.now_ms), BOOK_TICK)
    tick = Decimal(BOOK_TICK)
    return {"coin": COIN, "time": ask.now_ms, "levels": [
        [{"px": _num(bid - i * tick), "sz": SYNTHETIC_LEVEL_SZ, "n": 1} for i in range(BOOK_DEPTH)],
        [{"px": _num(ask_px + i * tick), "sz": SYNTHETIC_LEVEL_SZ, "n": 1} for i in range(BOOK_DEPTH)]]}


def _info_candles(ask: Ask) -> list:
    """candleSnapshot: 1h only (the data holds hourly closes), open times in
    [startTime, endTime] among the 5000 most recent complete hours (the venue
    keeps no older candles); o = h = l = c (only closes exist), volume and
    trade count SYNTHETIC zero."""
    req = _json_field(ask, "req")
    if not isinstance(req, dict):
        raise _deserialize("req: expected a struct")
    _coin(ask, req.get("coin"))
    if req.get("interval") != "1h":
        raise _deserialize(f"req.interval: the emulator serves 1h candles only, got {req.get('interval')!r}")
    start, end = req.get("startTime"), req.get("endTime")
    if not isinstance(start, int):
        raise _deserialize("missing field `startTime`")
    series = ask.tape.prices[PERP]
    upto = series.index_at(ask.now_ms) + 1
    oldest = int(series.open_ms[max(upto - MOST_CANDLES, 0)]) if upto else 0
    idx = _rows_window(series.open_ms, upto, max(start, oldest), end if isinstance(end, int) else None,
                       MOST_CANDLES, anchor_start=True)
    out = []
    for i in idx:
        t, c = int(series.open_ms[i]), _num(series.close[i])
        out.append({"t": t, "T": t + 3_600_000 - 1, "s": COIN, "i": "1h", "o": c, "c": c, "h": c, "l": c,
                    "v": "0.0", "n": 0})
    return out


def _info_funding_history(ask: Ask) -> list:
    """fundingHistory: the STAND-IN (dYdX BTC-USD) settlements with time in
    [startTime, endTime], up to now, the first 500 from startTime. No
    ``premium``: the data has none."""
    _coin(ask, ask.params.get("coin"))
    start = _int_field(ask, "startTime", required=True)
    end = _int_field(ask, "endTime", required=False)
    funding = ask.tape.funding[VENUE]
    idx = _rows_window(funding.time_ms, funding.count_upto(ask.now_ms), start, end, MOST_FUNDING_ROWS,
                       anchor_start=True)
    return [{"coin": COIN, "fundingRate": _num(funding.rate[i]), "time": int(funding.time_ms[i])} for i in idx]


def _info_user_abstraction(ask: Ask) -> str:
    _user(ask)
    return "default"  # a standard account: perps margined by the perp USDC balance


# ----------------------------------------------------------------- account views

def _status(o: Order) -> str:
    if o.is_open:
        return "open"
    if o.status == EXPIRED:  # an Ioc's unfilled rest: nothing filled is the venue's rejection
        return "iocCancelRejected" if o.filled == 0 else "canceled"
    return STATUS.get(o.status, "canceled")


def _tif(o: Order) -> str:
    return {v: k for k, v in TIFS.items()}.get(o.time_in_force, "Gtc")


def _open_row(o: Order) -> dict:
    """openOrders' row."""
    return {"coin": COIN, "side": "B" if o.side == BUY else "A", "limitPx": _num(o.limit), "sz": _num(o.remaining),
            "oid": int(o.id), "timestamp": o.created_ms, "origSz": _num(o.qty), "cloid": _cloid(o)}


def _frontend_row(o: Order) -> dict:
    """frontendOpenOrders' row, and the order of orderStatus and historicalOrders."""
    return {**_open_row(o), "triggerCondition": "N/A", "isTrigger": False, "triggerPx": "0.0", "children": [],
            "isPositionTpsl": False, "reduceOnly": o.reduce_only, "orderType": "Limit", "tif": _tif(o)}


def _status_row(o: Order) -> dict:
    return {"order": _frontend_row(o), "status": _status(o), "statusTimestamp": o.updated_ms}


def _orders(ask: Ask) -> list[Order]:
    _, mine = _user(ask)
    return _accounts(ask).all_orders(VENUE, PERP) if mine else []


def _info_open_orders(ask: Ask) -> list:
    return [_open_row(o) for o in _orders(ask) if o.is_open]


def _info_frontend_open_orders(ask: Ask) -> list:
    return [_frontend_row(o) for o in _orders(ask) if o.is_open]


def _info_historical_orders(ask: Ask) -> list:
    """The most recent 2000 orders, newest first, each in its latest state."""
    return [_status_row(o) for o in _orders(ask)[::-1][:MOST_ORDERS]]


def _info_order_status(ask: Ask) -> dict:
    """By oid (a number) or cloid (0x + 32 hex): ``{"status": "order", ...}``,
    or ``{"status": "unknownOid"}``."""
    raw = ask.params.get("oid")
    if raw is None:
        raise _deserialize("missing field `oid`")
    _, mine = _user(ask)
    if not (raw.isdigit() or CLOID.match(raw)):
        raise _deserialize(f"oid: expected an order id or a cloid, got {raw!r}")
    if not mine:
        return {"status": "unknownOid"}
    try:
        o = (_accounts(ask).find(VENUE, PERP, order_id=raw) if raw.isdigit()
             else _accounts(ask).find(VENUE, PERP, client_id=raw.lower()))
    except AccountError:
        return {"status": "unknownOid"}
    return {"status": "order", "order": _status_row(o)}


def _fill_rows(acc: Accounts, user: str) -> list[dict]:
    """Every fill of the account, oldest first, with the position before it
    (``startPosition``), its direction and realised PnL (``closedPnl``)."""
    out, position = [], 0.0
    for t in acc.trade_list(VENUE, PERP):
        signed_qty = t.qty if t.side == BUY else -t.qty
        out.append(_fill_row(t, position, user))
        position = round(position + signed_qty, 12)
    return out


def _direction(before: float, side: str, qty: float) -> str:
    after = before + (qty if side == BUY else -qty)
    if before >= 0 and after >= 0:
        return "Open Long" if side == BUY else "Close Long"
    if before <= 0 and after <= 0:
        return "Open Short" if side == SELL else "Close Short"
    return "Short > Long" if side == BUY else "Long > Short"


def _fill_row(t: Trade, before: float, user: str) -> dict:
    row: dict[str, Any] = {
        "coin": COIN, "px": _num(t.price), "sz": _num(t.qty), "side": "B" if t.side == BUY else "A",
        "time": t.time_ms, "startPosition": _num(before), "dir": _direction(before, t.side, t.qty),
        "closedPnl": _num(t.realized_pnl), "hash": f"0x{int(t.id):064x}", "oid": int(t.order_id),
        "crossed": not t.maker, "fee": _num(t.fee), "tid": int(t.id), "feeToken": "USDC",
    }
    if t.liquidation:  # the account's own liquidation: its fills name it as the liquidated user
        row["liquidation"] = {"liquidatedUser": user, "markPx": _num(t.price), "method": "market"}
    return row


def _info_user_fills(ask: Ask) -> list:
    """The most recent 2000 fills, newest first."""
    user, mine = _user(ask)
    return _fill_rows(_accounts(ask), user)[::-1][:MOST_FILLS] if mine else []


def _info_user_fills_by_time(ask: Ask) -> list:
    """Fills with time in [startTime, endTime], the first 2000 from startTime, oldest first."""
    user, mine = _user(ask)
    start = _int_field(ask, "startTime", required=True)
    end = _int_field(ask, "endTime", required=False)
    if not mine:
        return []
    rows = [r for r in _fill_rows(_accounts(ask), user) if r["time"] >= (start or 0)
            and (end is None or r["time"] <= end)]
    return rows[:MOST_FILLS]


def _info_user_funding(ask: Ask) -> list:
    """The account's funding payments (``usdc``: received, positive; paid, negative) with
    time in [startTime, endTime], the first 500 from startTime. The rates are the STAND-IN's."""
    _, mine = _user(ask)
    start = _int_field(ask, "startTime", required=True)
    end = _int_field(ask, "endTime", required=False)
    if not mine:
        return []
    rows = [f for f in _accounts(ask).funding_list(VENUE) if f.time_ms >= (start or 0)
            and (end is None or f.time_ms <= end)]
    return [{"time": f.time_ms, "hash": ZERO_HASH,
             "delta": {"type": "funding", "coin": COIN, "usdc": _num(f.amount), "szi": _num(f.qty),
                       "fundingRate": _num(f.rate), "nSamples": None}} for f in rows[:MOST_FUNDING_ROWS]]


def _summary(value: float, ntl: float, raw: float, used: float) -> dict:
    return {"accountValue": _num(round(value, 8)), "totalNtlPos": _num(round(ntl, 8)),
            "totalRawUsd": _num(round(raw, 8)), "totalMarginUsed": _num(round(used, 8))}


def _info_clearinghouse_state(ask: Ask) -> dict:
    """The perp account (USDC): the isolated BTC position (``marginUsed`` =
    its collateral + unrealised PnL, ``rawUsd`` = collateral - szi * entry,
    the rule's ``liquidationPx``), ``marginSummary`` (accountValue = wallet +
    unrealised; totalMarginUsed = the position's marginUsed + resting orders'
    margin) and ``withdrawable`` (what is free). No ``cumFunding``: see ``userFunding``."""
    _, mine = _user(ask)
    empty = {"assetPositions": [], "crossMaintenanceMarginUsed": "0.0", "withdrawable": "0.0",
             "crossMarginSummary": _summary(0, 0, 0, 0), "marginSummary": _summary(0, 0, 0, 0),
             "time": ask.server_ms}
    if not mine:
        return empty
    acc = _accounts(ask)
    spec = MARKETS[(VENUE, PERP)]
    wallet = acc.wallets[spec.wallet].get(spec.settle_asset)
    pos, orders = acc.position(VENUE), acc.order_margin(VENUE)
    positions, ntl, upnl = [], 0.0, 0.0
    if pos.qty:
        mark = acc.mark(VENUE)
        upnl, ntl = round(pos.qty * (mark - pos.entry), 8), abs(pos.qty) * mark
        liq = acc.liquidation(VENUE)
        positions.append({"type": "oneWay", "position": {
            "coin": COIN, "szi": _num(pos.qty),
            "leverage": {"type": "isolated", "value": pos.leverage, "rawUsd": _num(round(pos.margin - pos.qty * pos.entry, 8))},
            "entryPx": _num(pos.entry), "positionValue": _num(round(ntl, 8)), "unrealizedPnl": _num(upnl),
            "returnOnEquity": _num(round(upnl / (abs(pos.qty) * pos.entry / pos.leverage), 8)),
            "liquidationPx": _num(liq) if math.isfinite(liq) and liq > 0 else None,
            "marginUsed": _num(round(pos.margin + upnl, 8)), "maxLeverage": MAX_LEVERAGE}})
    used = (pos.margin + upnl if pos.qty else 0.0) + orders
    cross = wallet - pos.margin
    return {"assetPositions": positions, "crossMaintenanceMarginUsed": "0.0",
            "crossMarginSummary": _summary(cross, 0.0, cross, orders),
            "marginSummary": _summary(wallet + upnl, ntl, wallet - pos.qty * pos.entry, used),
            "withdrawable": _num(round(max(acc.available(spec.wallet, spec.settle_asset), 0.0), 8)),
            "time": ask.server_ms}


# ----------------------------------------------------------------- /exchange

def _action(ask: Ask) -> dict:
    action = _json_field(ask, "action")
    if not isinstance(action, dict):
        raise _deserialize("action: expected a struct")
    return action


def _ok(kind: str, data: Any = None) -> dict:
    response: dict[str, Any] = {"type": kind}
    if data is not None:
        response["data"] = data
    return {"status": "ok", "response": response}


def _err(text: str) -> dict:
    return {"error": f"{text} asset={ASSET}"}


def _valid_px(px: Decimal) -> bool:
    """At most 5 significant figures and at most 1 decimal; an integer price is always valid."""
    if px == px.to_integral_value():
        return True
    digits = px.normalize().as_tuple()
    decimals = -int(digits.exponent)
    return len(digits.digits) <= PX_SIG_FIGS and decimals <= PX_DECIMALS


def _decimal(value: Any) -> Decimal | None:
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


def _refusal(err: AccountError, reduce_only: bool) -> dict:
    if err.reason == "insufficient":
        return _err(MARGIN)
    if err.reason == "min_notional":
        return _err(MIN_VALUE)
    if err.reason == "duplicate":
        return {"error": DUPLICATE_CLOID}
    if err.reason == "bad_param" and reduce_only:
        return _err(REDUCE_ONLY)
    return {"error": f"{err.detail or err.reason} asset={ASSET}"}


def _place_one(ask: Ask, spec: Any) -> dict:
    """One order of an ``order`` action: its status entry (resting, filled or error)."""
    acc = _accounts(ask)
    if not isinstance(spec, dict):
        raise _deserialize("action.orders: expected a struct")
    cloid = spec.get("c")
    if cloid is not None and not (isinstance(cloid, str) and CLOID.match(cloid)):
        raise _deserialize(f"action.orders.c: invalid cloid {cloid!r} (expected 0x and 32 hex digits)")
    if spec.get("a") != ASSET:
        return {"error": f"Unknown asset {spec.get('a')!r}: the emulator serves asset {ASSET} ({COIN}) only"}
    kind = spec.get("t") or {}
    if "limit" not in kind:
        return {"error": NOT_MODELLED.format(what="trigger (TP/SL) orders")}
    tif = (kind.get("limit") or {}).get("tif")
    if tif not in TIFS:
        raise _deserialize(f"action.orders.t.limit.tif: unknown variant {tif!r}, expected one of Alo, Ioc, Gtc")
    px, sz = _decimal(spec.get("p")), _decimal(spec.get("s"))
    if px is None or sz is None:
        raise _deserialize("action.orders: p and s must be decimal strings")
    if not px > 0 or not _valid_px(px):
        return _err(TICK)
    if not sz > 0 or -int(sz.normalize().as_tuple().exponent) > SZ_DECIMALS:
        return _err(BAD_SIZE)
    side, reduce_only = (BUY if spec.get("b") else SELL), bool(spec.get("r"))
    if tif == "Alo":  # post only: refused when it would take the (synthetic) book
        bid, ask_px = _book_top(ask.tape.prices[PERP].price_at(ask.now_ms), BOOK_TICK)
        if (side == BUY and px >= ask_px) or (side == SELL and px <= bid):
            return _err(BAD_ALO.format(bbo=f"{_num(bid)}@{_num(ask_px)}"))
    ratio = ask.fault.fill_ratio if ask.fault is not None and ask.fault.kind == "partial_fill" else 1.0
    try:
        o = acc.place(VENUE, PERP, side, LIMIT, float(sz), float(px), client_id=cloid.lower() if cloid else None,
                      time_in_force=TIFS[tif], reduce_only=reduce_only, fill_ratio=ratio)
    except AccountError as err:
        return _refusal(err, reduce_only)
    ids = {"oid": int(o.id), **({"cloid": cloid} if cloid else {})}
    if o.status == EXPIRED and o.filled == 0:
        return _err(IOC_CANCEL)
    if o.is_open:
        return {"resting": ids}
    return {"filled": {"totalSz": _num(o.filled), "avgPx": _num(o.avg_price), **ids}}


def _exchange_order(ask: Ask) -> dict:
    action = _action(ask)
    builder = action.get("builder")
    if isinstance(builder, dict) and builder.get("f"):
        return _ok("order", {"statuses": [{"error": "the emulator does not charge builder fees: send builder f=0 "
                                                    "(ccxt option builderFee=False)"}] * len(action.get("orders") or [])})
    orders = action.get("orders")
    if not isinstance(orders, list):
        raise _deserialize("missing field `orders`")
    if action.get("grouping", "na") != "na":
        return _ok("order", {"statuses": [{"error": NOT_MODELLED.format(what="TP/SL grouping")}] * len(orders)})
    return _ok("order", {"statuses": [_place_one(ask, spec) for spec in orders]})


def _cancel_one(acc: Accounts, order_id: str | None, cloid: str | None) -> Any:
    try:
        acc.cancel(VENUE, PERP, order_id=order_id, client_id=cloid)
    except AccountError:
        return _err(MISSING_ORDER)
    return "success"


def _exchange_cancel(ask: Ask) -> dict:
    acc, cancels = _accounts(ask), _action(ask).get("cancels")
    if not isinstance(cancels, list):
        raise _deserialize("missing field `cancels`")
    statuses = [_cancel_one(acc, str(c.get("o")), None) if c.get("a") == ASSET else _err(MISSING_ORDER)
                for c in cancels]
    return _ok("cancel", {"statuses": statuses})


def _exchange_cancel_by_cloid(ask: Ask) -> dict:
    acc, cancels = _accounts(ask), _action(ask).get("cancels")
    if not isinstance(cancels, list):
        raise _deserialize("missing field `cancels`")
    statuses = []
    for c in cancels:
        cloid = c.get("cloid")
        if not (isinstance(cloid, str) and CLOID.match(cloid)):
            raise _deserialize(f"action.cancels.cloid: invalid cloid {cloid!r}")
        statuses.append(_cancel_one(acc, None, cloid.lower()) if c.get("asset") == ASSET else _err(MISSING_ORDER))
    return _ok("cancel", {"statuses": statuses})


def _exchange_update_leverage(ask: Ask) -> dict:
    action = _action(ask)
    if action.get("asset") != ASSET:
        raise VenueError(200, 0, f"Unknown asset {action.get('asset')!r}")
    leverage = action.get("leverage")
    if not isinstance(leverage, int) or isinstance(leverage, bool):
        raise _deserialize("action.leverage: expected an integer")
    try:
        _accounts(ask).set_leverage(VENUE, leverage)
    except AccountError:
        raise VenueError(200, 0, f"Invalid leverage value {leverage}: 1 .. {MAX_LEVERAGE}") from None
    return _ok("default")


def _exchange_ack(ask: Ask) -> dict:
    """approveBuilderFee and setReferrer, which ccxt sends before trading: acknowledged, nothing changes."""
    _action(ask)
    return _ok("default")


def check_signed(ask: Ask) -> None:
    """An action needs ``nonce`` and an EIP-712 ``signature`` {r, s, v}: present, not verified."""
    _int_field(ask, "nonce", required=True)
    signature = _json_field(ask, "signature")
    if not (isinstance(signature, dict) and all(signature.get(k) not in (None, "") for k in ("r", "s", "v"))):
        raise _deserialize("signature: missing field `r`, `s` or `v`")
    _action(ask)


# ----------------------------------------------------------------- the shape

def error(err: VenueError, server_ms: int) -> Any:
    """A refusal: 422 and its plain text (a body the venue cannot read, an
    operation it does not know), otherwise ``{"status": "err", "response": text}``."""
    if err.code == -5000:  # a route the emulator does not serve: an unknown variant to the venue
        return web.Response(status=422, text=f"Failed to deserialize the JSON body into the target type: "
                                                f"unknown variant ({err.msg})", content_type="text/plain")
    if err.status == 422:
        return web.Response(status=422, text=err.msg, content_type="text/plain")
    return {"status": "err", "response": err.msg}


def fault(f: Fault, server_ms: int) -> web.Response | None:
    """rate_limit and ip_ban: HTTP 429 (the venue's limit answer; the text is the emulator's);
    refuse: the order's insufficient-margin status."""
    if f.kind in ("rate_limit", "ip_ban"):
        return web.Response(status=f.status or 429, text=f.body or "429 Too Many Requests: rate limited",
                            content_type="text/plain", headers={"Retry-After": str(f.retry_after_s)})
    if f.kind == "refuse":
        return web.json_response(_ok("order", {"statuses": [_err(MARGIN)]}), status=f.status or 200)
    return None


def path_of(path: str, params: Mapping[str, str]) -> str:
    """``/info`` -> ``/info/<type>``; ``/exchange`` -> ``/exchange/<action.type>``."""
    if path == "/info":
        return f"/info/{params.get('type', '')}"
    if path == "/exchange":
        try:
            action = json.loads(params.get("action", ""))
        except ValueError:
            action = None
        return f"/exchange/{action.get('type', '') if isinstance(action, dict) else ''}"
    return path


INFO = {
    "meta": _info_meta, "metaAndAssetCtxs": _info_meta_and_ctxs, "spotMeta": _info_spot_meta,
    "exchangeStatus": _info_exchange_status, "l2Book": _info_l2_book, "candleSnapshot": _info_candles,
    "fundingHistory": _info_funding_history, "userAbstraction": _info_user_abstraction,
    "orderStatus": _info_order_status, "openOrders": _info_open_orders,
    "frontendOpenOrders": _info_frontend_open_orders, "historicalOrders": _info_historical_orders,
    "userFills": _info_user_fills, "userFillsByTime": _info_user_fills_by_time,
    "clearinghouseState": _info_clearinghouse_state, "userFunding": _info_user_funding,
}
EXCHANGE = {
    "order": _exchange_order, "cancel": _exchange_cancel, "cancelByCloid": _exchange_cancel_by_cloid,
    "updateLeverage": _exchange_update_leverage, "approveBuilderFee": _exchange_ack, "setReferrer": _exchange_ack,
}
ROUTES = {
    **{("POST", f"/info/{name}"): handler for name, handler in INFO.items()},
    **{("POST", f"/exchange/{name}"): signed(handler) for name, handler in EXCHANGE.items()},
}

SHAPE = register_venue(VenueShape(
    venue=VENUE, prefixes=("/info", "/exchange"), routes=ROUTES, check_signed=check_signed, error=error,
    fault=fault, placement=frozenset({("POST", "/exchange/order")}), path_of=path_of,
))
