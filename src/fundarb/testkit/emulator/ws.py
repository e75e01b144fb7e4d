"""Websocket MARKET streams for the loopback exchange emulator, in the frames
the real venues send and the real ccxt.pro clients watch.

Importing this module mounts the streams on every :class:`EmulatorServer`
started afterwards (through ``EmulatorApp.extensions``); point a ccxt.pro
client at it with :func:`point_ccxt_pro` (REST as ``point_ccxt`` does, plus
every ``urls['api']['ws']`` entry, paths kept). What is served:

- **Binance spot** on ``/ws``, ``/ws/<anything>`` and the combined
  ``/stream?streams=a/b`` (frames wrapped ``{"stream", "data"}``):
  ``<sym>@ticker``, ``@miniTicker``, ``@bookTicker``, ``@depth[@100ms|@1000ms]``
  and ``!ticker@arr``, ``!miniTicker@arr``; ``SUBSCRIBE``, ``UNSUBSCRIBE``,
  ``LIST_SUBSCRIPTIONS``. A raw stream name in the path (``/ws/btcusdt@ticker``)
  subscribes it; ccxt.pro connects to ``/ws/<n>`` (n a stream index, not a
  name) and sends ``SUBSCRIBE``.
- **Binance USD-M** on ``/public/ws``, ``/market/ws`` (ccxt.pro 4.5 rewrites
  the ``linear`` url ``.../ws`` to ``.../public/ws`` for depth and bookTicker and
  ``.../market/ws`` for ticker and mark price; both paths serve every stream
  here) and the combined ``/public/stream``, ``/market/stream``: the spot
  streams plus ``<sym>@markPrice[@1s]`` and ``!markPrice@arr[@1s]``.
- **Binance COIN-M** (dstream): ccxt.pro's ``binancecoinm`` connects the
  bare ``/ws/<n>`` spot's host has, so on this one host a stream named for
  BTCUSD_PERP (``btcusd_perp@ticker``, ``@miniTicker``, ``@bookTicker``,
  ``@depth``, ``@markPrice[@1s]``) on ``/ws`` or ``/stream`` is served from
  COIN-M (contracts, the COIN-M closes, COIN-M funding); other symbols stay
  spot's. Its user data: ``/dapi/v1/listenKey`` then ``/ws/<listenKey>``.
- **Bybit v5** on ``/v5/public/linear``, ``/v5/public/inverse`` (BTCUSD: the
  COIN-M closes as its stand-in series) and ``/v5/public/spot``: ``op``
  ``subscribe`` / ``unsubscribe`` / ``ping`` with Bybit's acks and pong;
  ``tickers.BTCUSDT`` (linear: a snapshot, then deltas with the changed fields;
  spot: a snapshot every time) and ``orderbook.<1|50|200|500|1000>.BTCUSDT``
  (a snapshot, then deltas; a new snapshot when the clock moves backwards).

Every number is the one the REST endpoints answer at the same emulator time
(the frames are built by the REST handlers' own functions): real closes and
real funding, the SYNTHETIC one-tick book of ``emulator._book``.

**Clock.** Frames are pushed on the emulator's clock, never the wall clock: a
subscription gets the current state at once (tickers, mark price, Bybit
snapshots; Binance depth diffs start with the first move), then one frame per
stream each time the clock has moved (``set_time`` / ``advance``), within a few
ms (the pusher wakes on the clock's listeners when the emulator has them, and
polls every ``POLL_S`` otherwise). Several moves between two wake-ups give one
frame for the latest time. Nothing is pushed while the clock stands still.

**Update ids.** Binance depth ids are the data time in ms, as the REST
``lastUpdateId`` is: a diff from time a to time b carries ``U = a + 1``,
``u = b`` (USD-M also ``pu = a``), so ccxt's snapshot-then-diffs sync lines
up with ``/api/v3/depth`` and ``/fapi/v1/depth`` at any moment. The diffs keep
the top ``BINANCE_STREAM_DEPTH`` levels (the REST maximum, so any REST
snapshot stays exact); levels leaving that window are sent with quantity 0.
Time moving backwards cannot be expressed in Binance's ids: a Binance depth
subscriber is then disconnected (code 1001), as the venue does on a stream
reset, and the client re-syncs on its next watch. Bybit ``u`` and ``seq`` are
the data time in ms too (as the REST orderbook's).

**Faults.** ``websockets(server).faults.add("dropped_websocket", venue=...,
path=..., mode=...)`` hits the next frame the server is about to send to a
matching connection (an ack, a push or a pong), like the REST plan hits the
next request: ``mode="close"`` sends a close frame (1001, going away) and ends
the connection, ``"reset"`` drops the TCP connection without a close frame,
``"silent"`` keeps the socket open but sends nothing more (no data, no pong:
the client notices through its keep-alive). ``WsHub.drop`` does the same to
the live connections at once. ``faults.add("bad_mark", venue=..., factor=10)``
multiplies the mark price of the next perp frame that carries one (Binance
``markPriceUpdate`` ``p``, Bybit linear ``tickers`` ``markPrice``) by
``factor``, once by default: a finite, positive and wrong price; the frame
after it carries the real mark again. ``bad_index`` does the same to the
index price of such a frame (``markPriceUpdate`` ``i``, ``tickers``
``indexPrice``). Handshakes are logged in ``server.log`` with
status 101; frames and drops in ``WsHub.events``.

**Private streams** (user data), built from the account model
(``emulator_accounts``: its ``AccountEvent`` listeners), rendered at the step
they tell (an order's booking, each fill, its cancel or expiry; then the
wallet) by the same functions the REST endpoints use, so a stream frame and a
REST answer at the same moment agree:

- **Binance spot**, ``/ws-api/v3``: ``userDataStream.subscribe.signature``
  (apiKey, timestamp and signature required; the HMAC is not checked), as
  ccxt.pro 4.5 subscribes; ``userDataStream.unsubscribe``, ``ping``. Events
  come wrapped ``{"subscriptionId", "event"}``: ``executionReport`` per step
  (x NEW / TRADE / CANCELED / EXPIRED) and ``outboundAccountPosition`` (every
  spot asset, free/locked as ``/api/v3/account``) after each operation.
- **Binance listenKey streams**: ``POST/PUT/DELETE /api/v3/userDataStream`` and
  ``/fapi/v1/listenKey`` (REST, API key only) give a key; ``/private/ws?listenKey=K``
  (what ccxt.pro derives for USD-M), ``/private/ws/K`` and ``/ws/K`` stream that
  account, unwrapped. USD-M: ``ORDER_TRADE_UPDATE`` per step and
  ``ACCOUNT_UPDATE`` (wallet ``wb``/``cw``; the position when a fill moved it;
  ``m`` ORDER, DEPOSIT, ASSET_TRANSFER) only when money moved, as the venue
  does. Keys never expire on the emulator clock (tests move it by hours); a
  DELETEd key's connections are closed at their next event; an unknown key is
  refused with HTTP 400 (-1125).
- **Binance COIN-M**, ``/ws/<listenKey>`` (a ``/dapi/v1/listenKey`` key):
  ``ORDER_TRADE_UPDATE`` (contracts, fee and realised PnL in BTC) and
  ``ACCOUNT_UPDATE`` (the BTC wallet, the cross position), as USD-M's.
- **Bybit v5**, ``/v5/private``: ``auth`` (``args`` = key, expires, signature:
  all three required, none verified), then ``subscribe`` to ``order``,
  ``execution``, ``position``, ``wallet`` (and the ``.spot`` / ``.linear`` /
  ``.inverse`` variants; inverse rows carry ``category`` inverse); ``ping`` answers ``op: pong``. Rows are the REST rows plus
  ``category``.

Funding and liquidation (``emulator_accounts``): Binance USD-M tells a
settlement with ``ACCOUNT_UPDATE`` ``m`` FUNDING_FEE (the USDT balance and the
isolated position), a liquidation with ``ORDER_TRADE_UPDATE`` (clientOrderId
``autoclose-...``, ``x`` CALCULATED, FILLED) then ``ACCOUNT_UPDATE`` (the flat
position); Bybit tells a settlement with an ``execution`` row of execType
Funding then ``wallet`` (and ``position``), a liquidation with ``order``
(createType CreateByLiq, Market), ``execution`` (BustTrade), ``wallet`` and
``position``. They are pushed from the clock move that crossed them, stamped
with their own time; the rows read the account as of the push.

Orders are told as they step: a market order NEW then TRADE (FILLED); under
the ``partial_fill`` fault TRADE (PARTIALLY_FILLED) then EXPIRED; a resting
limit NEW, then TRADE when the clock moves the close across it (pushed from
the clock move, whichever thread makes it). Events while a client is not
connected are lost, as on the venue; ``dropped_websocket`` faults and
``WsHub.drop`` act on private connections too (match ``path="/ws-api"``,
``"/private/ws"``, ``"/v5/private"``).

Not served: trades, klines, partial-depth ``@depth<N>`` streams, Binance's
ws-api beyond the user data subscription (no order placement or queries over
ws, no ``session.logon``), USD-M's ws-api (``/ws-fapi/v1``), Bybit's
``/v5/trade`` and ``execution.fast``, ``listenKeyExpired`` events, periodic
pushes while the clock is fixed, Binance's 24 h disconnect and server pings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import uuid
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any, cast

from aiohttp import WSMsgType, web

from fundarb.support.ccxt_urls import point_ccxt_pro  # noqa: F401 (the emulator's usage)
from fundarb.testkit.emulator import server as emu
from fundarb.testkit.emulator.accounts import (
    BALANCE,
    CANCELED,
    FUNDING,
    INVERSE,
    TRADE,
    AccountEvent,
    Accounts,
)
from fundarb.testkit.emulator.server import (
    BINANCE_PERP_TICK,
    BINANCE_SPOT_TICK,
    BYBIT_INVERSE_SYMBOL,
    BYBIT_SPOT_TICK,
    COINM_SYMBOL,
    COINM_TICK,
    NS_PER_MS,
    PERP,
    SPOT,
    SYMBOL,
    SYNTHETIC_COINM_LEVEL_QTY,
    Ask,
    LoggedRequest,
)

POLL_S = 0.02  # how often the pusher looks at the clock when nothing wakes it
# Binance diffs keep this many levels a side: the REST depth maximum, so every REST snapshot stays exact
BINANCE_STREAM_DEPTH = {SPOT: 5000, PERP: 1000, INVERSE: 1000}
BYBIT_DEPTHS = {SPOT: (1, 50, 200, 1000), PERP: (1, 50, 200, 500, 1000), INVERSE: (1, 50, 200, 500)}
WS_FAULT_KINDS = ("dropped_websocket", "bad_mark", "bad_index")
DROP_MODES = ("close", "reset", "silent")
GOING_AWAY = 1001

# path -> (emulator venue, market, combined). Binance spot answers on the
# bare paths ccxt keeps from wss://stream.binance.com:9443/ws; USD-M on the
# category paths ccxt derives from wss://fstream.binance.com/ws.
BINANCE_PATHS = {
    "/ws": ("binance", SPOT, False), "/stream": ("binance", SPOT, True),
    "/public/ws": ("binanceusdm", PERP, False), "/market/ws": ("binanceusdm", PERP, False),
    "/public/stream": ("binanceusdm", PERP, True), "/market/stream": ("binanceusdm", PERP, True),
}
BYBIT_PATHS = {"/v5/public/spot": SPOT, "/v5/public/linear": PERP, "/v5/public/inverse": INVERSE}
# Binance COIN-M's stream host (dstream) has the bare /ws path spot's has: on this one host a
# stream named for BTCUSD_PERP (``btcusd_perp@...``) on /ws or /stream is served from COIN-M
COINM_STREAM_HEAD = COINM_SYMBOL.lower()
# private (user data) paths: Binance spot's ws-api (ccxt.pro 4.5 subscribes the spot user data
# there with userDataStream.subscribe.signature), USD-M's listenKey stream (ccxt derives
# .../private/ws?listenKey=<key> from the linear url) and Bybit's v5 private stream
WS_API_PATH, BINANCE_PRIVATE_PATH, BYBIT_PRIVATE_PATH = "/ws-api/v3", "/private/ws", "/v5/private"
BYBIT_PRIVATE_TOPICS = {"order": ("order", ""), "order.spot": ("order", "spot"), "order.linear": ("order", "linear"),
                        "order.inverse": ("order", "inverse"),
                        "execution": ("execution", ""), "execution.spot": ("execution", "spot"),
                        "execution.linear": ("execution", "linear"), "execution.inverse": ("execution", "inverse"),
                        "position": ("position", ""), "position.linear": ("position", "linear"),
                        "position.inverse": ("position", "inverse"), "wallet": ("wallet", "")}


# ----------------------------------------------------------------- faults

@dataclass
class WsFault:
    """A programmed websocket fault: it hits the next frame the server sends
    to a connection of ``venue`` (None: any) whose path starts with ``path``;
    ``times`` frames (None: until removed); ``probability`` per frame.
    ``dropped_websocket`` hits any frame; ``bad_mark`` (``bad_index``) only a
    perp frame carrying the mark price, whose mark (index) it multiplies by
    ``factor``."""

    kind: str
    venue: str | None = None
    path: str = ""
    times: int | None = 1
    probability: float = 1.0
    mode: str = "close"
    hits: int = 0
    factor: float = 10.0

    def matches(self, venue: str, path: str, kind: str = "dropped_websocket") -> bool:
        return self.kind == kind and (self.venue is None or self.venue == venue) and path.startswith(self.path)


class WsFaultPlan(emu.FaultRegistry):
    """Faults of the websocket side; a connection asks ``take(venue, path)`` before each frame."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__(random.Random(seed))

    def add(self, kind: str = "dropped_websocket", *, venue: str | None = None, path: str = "",
            times: int | None = 1, probability: float = 1.0, mode: str = "close",
            factor: float = 10.0) -> WsFault:
        if kind not in WS_FAULT_KINDS:
            raise ValueError(f"unknown websocket fault kind {kind!r} (known: {', '.join(WS_FAULT_KINDS)})")
        if mode not in DROP_MODES:
            raise ValueError(f"unknown drop mode {mode!r} (known: {', '.join(DROP_MODES)})")
        if not (0 < factor < float("inf")):
            raise ValueError(f"{kind} factor must be a positive finite number, got {factor}")
        self.check(venue, times, probability)
        return self.register(WsFault(kind, venue, path, times, probability, mode, factor=factor))


@dataclass(frozen=True)
class WsEvent:
    """One thing that happened on a websocket: connect, subscribe, unsubscribe,
    ping, push, drop (with the mode), close."""

    venue: str
    path: str
    conn_id: str
    what: str
    detail: str
    now_ns: int


# ----------------------------------------------------------------- frames (from the REST handlers)

@lru_cache(maxsize=64)
def _levels(price: float, tick: str, depth: int, places: int,
            qty: str = emu.SYNTHETIC_LEVEL_QTY) -> tuple[tuple[tuple[str, str], ...], ...]:
    """The emulator's SYNTHETIC book (``emulator._book``), the same the REST depth answers."""
    bids, asks = emu._book(price, tick, depth, places, qty)
    return tuple(tuple(lvl) for lvl in bids), tuple(tuple(lvl) for lvl in asks)


def _side_diff(old: Iterable[tuple[str, str]], new: Iterable[tuple[str, str]], zero: str,
               descending: bool) -> list[list[str]]:
    """Levels to set (changed or new) and to delete (quantity ``zero``), in book order."""
    old_map, new_map = dict(old), dict(new)
    out = [[p, q] for p, q in new_map.items() if old_map.get(p) != q]
    out += [[p, zero] for p in old_map if p not in new_map]
    out.sort(key=lambda lvl: Decimal(lvl[0]), reverse=descending)
    return out


def _binance_book(tape: emu.MarketTape, market: str, ms: int) -> tuple:
    if market == INVERSE:  # as _coinm_depth: sizes in contracts
        return _levels(tape.prices[INVERSE].price_at(ms), COINM_TICK, BINANCE_STREAM_DEPTH[INVERSE], 1,
                       SYNTHETIC_COINM_LEVEL_QTY)
    tick, places = (BINANCE_SPOT_TICK, 8) if market == SPOT else (BINANCE_PERP_TICK, 2)  # as _binance_depth
    return _levels(tape.prices[market].price_at(ms), tick, BINANCE_STREAM_DEPTH[market], places)


def _bybit_book(tape: emu.MarketTape, market: str, ms: int, depth: int) -> tuple:
    """As _bybit_orderbook: inverse the COIN-M stand-in closes, sizes in contracts."""
    if market == SPOT:
        return _levels(tape.prices[SPOT].price_at(ms), BYBIT_SPOT_TICK, depth, 2)
    bp = emu.BYBIT_PERPS[emu._bybit_category_of(market)]
    return _levels(tape.prices[market].price_at(ms), bp.tick, depth, 2, bp.level_qty)


def binance_event(tape: emu.MarketTape, market: str, channel: str, ms: int) -> dict:
    """One Binance stream event at data time ``ms`` (not depth: see
    ``binance_depth_event``), from the REST handlers' rows: spot, USD-M, or
    COIN-M (dstream) for ``INVERSE`` (BTCUSD_PERP: its frames name the pair, ``ps``)."""
    coinm = market == INVERSE
    fv = emu.COINM if coinm else emu.USDM  # spot's markPrice (no such stream on the venue) reads USD-M's
    symbol, path = (SYMBOL, "/api/v3") if market == SPOT else (fv.symbol, fv.prefix + "/v1")
    ask = Ask(tape, {"symbol": symbol}, ms, ms, path)
    head = {"s": symbol, **({"ps": fv.pair} if coinm else {})}
    if channel in ("ticker", "miniTicker"):
        row = emu._coinm_24hr(ask)[0] if coinm else cast(dict[str, Any], emu._binance_24hr(ask, market))
        volume = row["baseVolume" if coinm else "quoteVolume"]
        if channel == "miniTicker":
            return {"e": "24hrMiniTicker", "E": ms, **head, "c": row["lastPrice"], "o": row["openPrice"],
                    "h": row["highPrice"], "l": row["lowPrice"], "v": row["volume"], "q": volume}
        event: dict[str, Any] = {"e": "24hrTicker", "E": ms, **head, "p": row["priceChange"],
                                 "P": row["priceChangePercent"], "w": row["weightedAvgPrice"]}
        if market == SPOT:
            event["x"] = row["prevClosePrice"]
        event.update({"c": row["lastPrice"], "Q": row["lastQty"]})
        if market == SPOT:
            event.update({"b": row["bidPrice"], "B": row["bidQty"], "a": row["askPrice"], "A": row["askQty"]})
        event.update({"o": row["openPrice"], "h": row["highPrice"], "l": row["lowPrice"], "v": row["volume"],
                      "q": volume, "O": row["openTime"], "C": row["closeTime"], "F": row["firstId"],
                      "L": row["lastId"], "n": row["count"]})
        return event
    if channel == "bookTicker":
        row = emu._coinm_book_ticker(ask)[0] if coinm else cast(dict[str, Any], emu._binance_book_ticker(ask, market))
        quote = {**head, "b": row["bidPrice"], "B": row["bidQty"], "a": row["askPrice"], "A": row["askQty"]}
        if market == SPOT:  # spot bookTicker frames carry no event type
            return {"u": ms, **quote}
        if coinm:
            return {"e": "bookTicker", "u": ms, **quote, "T": ms, "E": ms}
        return {"e": "bookTicker", "u": ms, "E": ms, "T": ms, **quote}
    if channel == "markPrice":
        row = emu._binance_premium_row(ask, fv)
        return {"e": "markPriceUpdate", "E": ms, "s": fv.symbol, "p": row["markPrice"], "i": row["indexPrice"],
                "P": row["estimatedSettlePrice"], "r": row["lastFundingRate"], "T": row["nextFundingTime"]}
    raise ValueError(f"no Binance {'COIN-M ' if coinm else ''}{channel} stream")


def binance_depth_event(tape: emu.MarketTape, market: str, from_ms: int, to_ms: int) -> dict:
    """The diff taking the book at ``from_ms`` (update id from_ms) to ``to_ms``."""
    old_bids, old_asks = _binance_book(tape, market, from_ms)
    new_bids, new_asks = _binance_book(tape, market, to_ms)
    event: dict[str, Any] = {"e": "depthUpdate", "E": to_ms}
    if market != SPOT:
        event["T"] = to_ms
    event.update({"s": COINM_SYMBOL if market == INVERSE else SYMBOL, "U": from_ms + 1, "u": to_ms})
    if market != SPOT:
        event["pu"] = from_ms
    event["b"] = _side_diff(old_bids, new_bids, "0.000", descending=True)
    event["a"] = _side_diff(old_asks, new_asks, "0.000", descending=False)
    return event


# fields of Bybit's spot ticker frame (the REST row has more: the book top)
_BYBIT_SPOT_WS_FIELDS = ("symbol", "lastPrice", "highPrice24h", "lowPrice24h", "prevPrice24h", "volume24h",
                         "turnover24h", "price24hPcnt", "usdIndexPrice")


def bybit_ticker_data(tape: emu.MarketTape, market: str, ms: int) -> dict:
    category = emu._bybit_category_of(market)
    symbol = emu.BYBIT_PERPS[category].symbol if market != SPOT else SYMBOL
    row = emu._bybit_ticker_row(Ask(tape, {"symbol": symbol, "category": category}, ms, ms, "/v5/market/tickers"),
                                category)
    if market == SPOT:
        return {k: row[k] for k in _BYBIT_SPOT_WS_FIELDS}
    return row


# ----------------------------------------------------------------- private frames (from the account model)

def _last(ev: AccountEvent) -> tuple[float, float]:
    return (ev.trade.qty, ev.trade.price) if ev.trade is not None else (0.0, 0.0)


def binance_execution_report(ev: AccountEvent) -> dict:
    """Binance spot ``executionReport`` for one step of an order (read at the step)."""
    o, t = ev.order, ev.trade
    assert o is not None
    qty, px = _last(ev)
    return {
        "e": "executionReport", "E": ev.time_ms, "s": SYMBOL, "c": o.client_id, "S": o.side.upper(),
        "o": o.type.upper(), "f": o.time_in_force, "q": emu._dec(o.qty, 8), "p": emu._dec(o.price or 0, 8),
        "P": "0.00000000", "F": "0.00000000", "g": -1, "C": o.client_id if ev.what == CANCELED else "",
        "x": ev.what, "X": o.status, "r": "NONE", "i": int(o.id), "l": emu._dec(qty, 8), "z": emu._dec(o.filled, 8),
        "L": emu._dec(px, 8), "n": emu._amt(t.fee) if t else "0", "N": t.fee_asset if t else None,
        "T": ev.time_ms, "t": int(t.id) if t else -1, "I": ev.time_ms, "w": o.is_open and o.filled == 0,
        "m": bool(t and t.maker), "M": False, "O": o.created_ms, "Z": emu._dec(o.cost, 8),
        "Y": emu._amt(round(qty * px, 8)), "Q": emu._dec(o.quote_qty or 0, 8), "W": o.created_ms,
        "V": "EXPIRE_MAKER",
    }


def binance_account_position(acc: Accounts, ms: int) -> dict:
    """Binance spot ``outboundAccountPosition``: every asset of the spot wallet (free/locked as /api/v3/account)."""
    rows = emu._binance_balance_rows(acc, "binance")
    return {"e": "outboundAccountPosition", "E": ms, "u": ms,
            "B": [{"a": r["asset"], "f": r["free"], "l": r["locked"]} for r in rows]}


def binance_order_trade_update(ev: AccountEvent) -> dict:
    """Binance USD-M or COIN-M ``ORDER_TRADE_UPDATE`` for one step of an
    order. A liquidation's fill is execution type CALCULATED (Binance's
    "liquidation execution"; ccxt then updates the order but books no trade
    from it). COIN-M: quantities in contracts, the fee and realised PnL in BTC
    (``ma``, ``N``), the frame tagged with the account alias (``i``)."""
    o, t = ev.order, ev.trade
    assert o is not None
    qty, px = _last(ev)
    what = "CALCULATED" if o.liquidation and ev.what == TRADE else ev.what
    if ev.venue == "binancecoinm":
        return {"e": "ORDER_TRADE_UPDATE", "E": ev.time_ms, "T": ev.time_ms, "i": "SfsR", "o": {
            "s": COINM_SYMBOL, "c": o.client_id, "S": o.side.upper(), "o": o.type.upper(), "f": o.time_in_force,
            "q": emu._dec(o.qty, 0), "p": emu._dec(o.price or 0, 1), "ap": emu._amt(o.inverse_avg(100.0), 1),
            "sp": "0", "x": what, "X": o.status, "i": int(o.id), "l": emu._dec(qty, 0), "z": emu._dec(o.filled, 0),
            "L": emu._dec(px, 1), "ma": "BTC", "N": "BTC", "n": emu._amt(t.fee) if t else "0", "T": ev.time_ms,
            "t": int(t.id) if t else 0, "rp": emu._amt(t.realized_pnl) if t else "0", "b": "0", "a": "0",
            "m": bool(t and t.maker), "R": o.reduce_only, "wt": "CONTRACT_PRICE", "ot": o.type.upper(), "ps": "BOTH",
            "cp": False, "pP": False, "si": 0, "ss": 0, "V": "NONE", "pm": "NONE", "gtd": 0}}
    avg = o.cost / o.filled if o.filled else 0.0
    return {"e": "ORDER_TRADE_UPDATE", "E": ev.time_ms, "T": ev.time_ms, "o": {
        "s": SYMBOL, "c": o.client_id, "S": o.side.upper(), "o": o.type.upper(), "f": o.time_in_force,
        "q": emu._dec(o.qty, 3), "p": emu._dec(o.price or 0, 2), "ap": emu._amt(avg, 2), "sp": "0",
        "x": what, "X": o.status, "i": int(o.id), "l": emu._dec(qty, 3), "z": emu._dec(o.filled, 3),
        "L": emu._dec(px, 2), "N": "USDT", "n": emu._amt(t.fee) if t else "0", "T": ev.time_ms,
        "t": int(t.id) if t else 0, "b": "0", "a": "0", "m": bool(t and t.maker), "R": o.reduce_only,
        "wt": "CONTRACT_PRICE", "ot": o.type.upper(), "ps": "BOTH", "cp": False,
        "rp": emu._amt(t.realized_pnl) if t else "0", "pP": False, "si": 0, "ss": 0, "V": "EXPIRE_MAKER",
        "pm": "NONE", "gtd": 0}}


_BINANCE_UPDATE_REASON = {"ORDER": "ORDER", "DEPOSIT": "DEPOSIT", "TRANSFER": "ASSET_TRANSFER",
                          "FUNDING_FEE": "FUNDING_FEE"}


def binance_account_update(tape: emu.MarketTape, acc: Accounts, ev: AccountEvent) -> dict:
    """Binance USD-M or COIN-M ``ACCOUNT_UPDATE``: the wallet's assets as its
    account endpoint lists them, and the position (as its positionRisk) when a
    fill moved it. A settlement (``m`` FUNDING_FEE) carries the margin asset
    only (and the position), as the venue documents. USD-M's position is
    isolated, COIN-M's cross; COIN-M's frame carries the account alias (``i``)."""
    fv = emu.FUTURES[ev.venue]
    ask = Ask(tape, {}, ev.time_ms, ev.time_ms, fv.account_path, accounts=acc)
    assets = fv.balances(ask)
    if ev.reason == "FUNDING_FEE":
        assets = assets[:1]
    balances = [{"a": r["asset"], "wb": r["walletBalance"], "cw": r["crossWalletBalance"], "bc": "0"} for r in assets]
    positions = [_binance_position_update(acc, ask, fv)] if ev.traded else []
    alias = {"i": "SfsR"} if fv is emu.COINM else {}
    return {"e": "ACCOUNT_UPDATE", "E": ev.time_ms, "T": ev.time_ms, **alias,
            "a": {"m": _BINANCE_UPDATE_REASON.get(ev.reason, ev.reason), "B": balances, "P": positions}}


def _binance_position_update(acc: Accounts, ask: Ask, fv: emu.FuturesVenue) -> dict:
    """An ACCOUNT_UPDATE's position, from the venue's positionRisk row."""
    if fv is emu.COINM:
        row = emu._coinm_position_row(acc)
        return {"s": fv.symbol, "pa": row["positionAmt"], "ep": row["entryPrice"], "bep": row["breakEvenPrice"],
                "cr": emu._amt(acc.position(fv.venue, fv.kind).realized), "up": row["unRealizedProfit"],
                "mt": "cross", "iw": "0", "ps": "BOTH"}
    row = emu._binance_position_row(acc, ask)
    return {"s": fv.symbol, "pa": row["positionAmt"], "ep": row["entryPrice"], "bep": row["breakEvenPrice"],
            "cr": emu._amt(acc.position(fv.venue).realized), "up": row["unRealizedProfit"],
            "mt": "isolated", "iw": row["isolatedWallet"], "ps": "BOTH", "ma": "USDT"}


def _bybit_frame(topic: str, ms: int, data: list) -> dict:
    return {"id": f"{topic}-{ms}-{uuid.uuid4().hex[:12]}", "topic": topic, "creationTime": ms, "data": data}


def bybit_private_frames(acc: Accounts, ev: AccountEvent) -> list[tuple[str, str, dict]]:
    """Bybit v5 private frames for one event: (topic, category, frame)."""
    out: list[tuple[str, str, dict]] = []
    if ev.what == FUNDING:  # a settlement paid: an execution of type Funding
        assert ev.funding is not None
        category = emu._bybit_category_of(ev.kind)
        row = {"category": category, **emu._bybit_funding_row(ev.funding, inverse=ev.kind == INVERSE)}
        return [("execution", category, _bybit_frame("execution", ev.time_ms, [row]))]
    if ev.what == BALANCE:
        if ev.wallet != "bybit":  # the funding wallet is not the trading account
            return out
        out.append(("wallet", "", _bybit_frame("wallet", ev.time_ms, [emu._bybit_wallet_row(acc)])))
        if ev.traded and ev.kind in (PERP, INVERSE):
            bp = emu.BYBIT_PERPS[emu._bybit_category_of(ev.kind)]
            row = {**emu._bybit_position_row(acc, bp), "category": bp.category}
            out.append(("position", bp.category, _bybit_frame("position", ev.time_ms, [row])))
        return out
    o = ev.order
    assert o is not None
    category = emu._bybit_category_of(o.kind)
    row = {"category": category, **emu._bybit_order_row(o, o.kind)}
    if o.kind == SPOT:
        row.pop("tpslMode")  # ccxt reads a row carrying tpslMode as a contract's
    if o.fee > 0:
        row["cumFeeDetail"] = {o.fee_asset: emu._amt(o.fee, 0)}
    out.append(("order", category, _bybit_frame("order", ev.time_ms, [row])))
    if ev.what == TRADE and ev.trade is not None:
        execution = {"category": category, **emu._bybit_execution_row(acc, ev.trade, o)}
        out.append(("execution", category, _bybit_frame("execution", ev.time_ms, [execution])))
    return out



# ----------------------------------------------------------------- connections

@dataclass
class _Sub:
    name: str  # Binance stream name / Bybit topic
    channel: str  # ticker, miniTicker, bookTicker, depth, markPrice / tickers, orderbook
    all_market: bool = False  # Binance '!...@arr': frames are lists
    depth: int = 0  # Bybit orderbook depth
    last_ms: int | None = None  # data time of the last frame sent
    last_fields: dict = field(default_factory=dict)  # Bybit linear ticker: what the client holds
    dormant: bool = False  # a symbol the emulator has no data for: subscribed, never pushed
    market: str | None = None  # the market it streams when not the connection's (COIN-M streams on /ws)


class _Conn:
    def __init__(self, hub: WsHub, ws: web.WebSocketResponse, request: web.Request, venue: str, market: str,
                 combined: bool) -> None:
        self.hub, self.ws, self.venue, self.market, self.combined = hub, ws, venue, market, combined
        self.path = request.path
        self.transport = request.transport
        self.id = str(uuid.uuid4())
        self.subs: dict[str, _Sub] = {}
        self.silent = False
        self.dead = False
        self._lock = asyncio.Lock()
        # private (user data) side: set for /ws-api/v3, /private/ws, /ws/<listenKey>, /v5/private
        self.mode: str | None = None  # 'wsapi', 'listenkey' or 'bybit'
        self.private: str | None = None  # the venue whose account events this connection gets
        self.listen_key: str | None = None
        self.ws_api_sub: int | None = None  # Binance ws-api user data subscription id
        self.authed = False  # Bybit private: auth op accepted
        self.topics: set[str] = set()  # Bybit private topics
        self.outbox: asyncio.Queue | None = None  # private frames, sent in order by one writer

    @property
    def binance(self) -> bool:
        return self.venue != "bybit"

    async def send(self, frame: Any, what: str = "push", detail: str = "") -> bool:
        """Send one frame unless a fault takes it; False when nothing was sent."""
        if self.dead or self.silent:
            return False
        fault = self.hub.faults.take(self.venue, self.path)
        if fault is not None:
            await self.drop(fault.mode)
            return False
        async with self._lock:
            if self.ws.closed:
                return False
            try:
                await self.ws.send_str(json.dumps(frame, separators=(",", ":")))
            except (ConnectionError, RuntimeError):
                self.dead = True
                return False
        if what != "push" or detail:
            self.hub.record(self, what, detail)
        return True

    async def send_pong(self, data: bytes) -> None:
        """Answer a protocol ping unless a fault takes the frame."""
        if self.dead or self.silent:
            return
        fault = self.hub.faults.take(self.venue, self.path)
        if fault is not None:
            await self.drop(fault.mode)
            return
        async with self._lock:
            if not self.ws.closed:
                await self.ws.pong(data)

    async def drop(self, mode: str) -> None:
        self.hub.record(self, "drop", mode)
        if mode == "silent":
            self.silent = True
            return
        self.dead = True
        if mode == "reset" and self.transport is not None:
            self.transport.abort()
            return
        # a close frame; the client's answer ends the handler's receive loop
        self.hub.spawn(self.ws.close(code=GOING_AWAY, message=b"dropped by the emulator"))

    # ------------------------------------------------------------ pushes

    async def push(self, sub: _Sub, ms: int) -> None:
        """Bring one subscription to data time ``ms``."""
        if sub.last_ms == ms or sub.dormant:
            return
        tape = self.hub.tape
        market = sub.market or self.market
        if self.binance:
            if sub.channel == "depth":
                if sub.last_ms is not None and ms < sub.last_ms:
                    await self.drop("close")  # ids cannot go back: the client must re-sync
                    return
                frame: Any = binance_depth_event(tape, market, sub.last_ms if sub.last_ms is not None else ms, ms)
            else:
                event = binance_event(tape, market, sub.channel, ms)
                if sub.channel == "markPrice":
                    event["p"] = self._bad_price(event["p"], 8)
                    event["i"] = self._bad_price(event["i"], 8, "bad_index")
                frame = [event] if sub.all_market else event
            sub.last_ms = ms
            if self.combined:
                frame = {"stream": sub.name, "data": frame}
            await self.send(frame)
            return
        if sub.channel == "tickers":
            data = bybit_ticker_data(tape, self.market, ms)
            if self.market in (PERP, INVERSE):  # the next delta carries the real mark again: it differs from this one
                data["markPrice"] = self._bad_price(data["markPrice"], 2)
                data["indexPrice"] = self._bad_price(data["indexPrice"], 2, "bad_index")
            kind = "snapshot"
            if self.market in (PERP, INVERSE) and sub.last_fields:  # linear and inverse: only what changed
                delta = {k: v for k, v in data.items() if sub.last_fields.get(k) != v}
                data, kind = {"symbol": data["symbol"], **delta}, "delta"
                sub.last_fields.update(delta)
            elif self.market in (PERP, INVERSE):
                sub.last_fields = dict(data)
            frame = {"topic": sub.name, "type": kind, "data": data, "cs": ms, "ts": ms}
        else:
            bids, asks = _bybit_book(tape, self.market, ms, sub.depth)
            if sub.last_ms is None or ms < sub.last_ms:  # first frame, or time went back: a new snapshot
                kind, b, a = "snapshot", [list(x) for x in bids], [list(x) for x in asks]
            else:
                old_bids, old_asks = _bybit_book(tape, self.market, sub.last_ms, sub.depth)
                kind = "delta"
                b = _side_diff(old_bids, bids, "0", descending=True)
                a = _side_diff(old_asks, asks, "0", descending=False)
            frame = {"topic": sub.name, "type": kind, "ts": ms,
                     "data": {"s": BYBIT_INVERSE_SYMBOL if self.market == INVERSE else SYMBOL, "b": b, "a": a,
                              "u": ms, "seq": ms}, "cts": ms}
        sub.last_ms = ms
        await self.send(frame)

    def _bad_price(self, price: str, places: int, kind: str = "bad_mark") -> str:
        """The price a ``bad_mark`` (``bad_index``) fault puts in this frame (``price`` when none hits it)."""
        fault = self.hub.faults.take(self.venue, self.path, kind)
        if fault is None:
            return price
        bad = emu._dec(float(price) * fault.factor, places)
        self.hub.record(self, kind, f"{price} -> {bad}")
        return bad

    async def catch_up(self, ms: int) -> None:
        for sub in list(self.subs.values()):
            if self.dead:
                return
            if self.binance and sub.channel == "depth" and sub.last_ms is None:
                sub.last_ms = ms  # depth diffs start at the subscription time
                continue
            await self.push(sub, ms)

    # ------------------------------------------------------------ requests

    def binance_sub(self, name: str) -> _Sub | None:
        """A Binance stream name as the venue spells it, or None when it is not one.
        Another symbol's stream is accepted and stays silent, as on the venue."""
        parts = name.split("@")
        if len(parts) < 2:
            return None
        head, channel, rest = parts[0], parts[1], parts[2:]
        perp = self.market == PERP
        if head.startswith("!"):  # all-market streams: '!miniTicker@arr', '!markPrice@arr@1s'
            channel, all_channels = head[1:], ("ticker", "miniTicker", "markPrice") if perp else ("ticker", "miniTicker")
            if parts[1] != "arr" or channel not in all_channels:
                return None
            if rest not in ([], ["1s"]) or (rest and channel != "markPrice"):
                return None
            return _Sub(name, channel, all_market=True)
        if not head or head != head.lower():
            return None
        # BTCUSD_PERP's streams: on COIN-M's own connections, and on the bare /ws and /stream (dstream's paths)
        coinm = head == COINM_STREAM_HEAD and self.market in (SPOT, INVERSE)
        own = COINM_STREAM_HEAD if self.market == INVERSE else SYMBOL.lower()
        market = INVERSE if coinm and self.market != INVERSE else None
        dormant = head != own and not coinm
        if channel in ("ticker", "miniTicker", "bookTicker") and not rest:
            return _Sub(name, channel, dormant=dormant, market=market)
        if channel == "depth" and rest in ([], ["100ms"], ["1000ms"], ["0ms"], ["250ms"], ["500ms"]):
            return _Sub(name, "depth", dormant=dormant, market=market)
        if channel == "markPrice" and (perp or coinm) and rest in ([], ["1s"]):
            return _Sub(name, "markPrice", dormant=dormant, market=market)
        return None

    async def on_binance(self, text: str) -> None:
        try:
            request = json.loads(text)
        except ValueError:
            await self.send({"error": {"code": 3, "msg": "Invalid JSON: expected value at line 1 column 1"}}, "error")
            return
        if not isinstance(request, dict):
            await self.send({"error": {"code": 3, "msg": "Invalid JSON: expected an object"}}, "error")
            return
        rid, method, params = request.get("id"), request.get("method"), request.get("params", [])
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS"):
            await self.send({"error": {"code": 2, "msg": f"Invalid request: unknown method {method!r}"}, "id": rid},
                            "error")
            return
        if method == "LIST_SUBSCRIPTIONS":
            await self.send({"result": list(self.subs), "id": rid}, "list")
            return
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            await self.send({"error": {"code": 2, "msg": "Invalid request: params must be a list of stream names"},
                             "id": rid}, "error")
            return
        if method == "UNSUBSCRIBE":
            for name in params:
                self.subs.pop(name, None)
            await self.send({"result": None, "id": rid}, "unsubscribe", ",".join(params))
            return
        new: list[_Sub] = []
        for name in params:
            sub = self.binance_sub(name)
            if sub is None:
                await self.send({"error": {"code": 2, "msg": f"Invalid request: unknown stream {name!r}"},
                                 "id": rid}, "error", name)
                return
            new.append(sub)
        for sub in new:
            self.subs.setdefault(sub.name, sub)
        if not await self.send({"result": None, "id": rid}, "subscribe", ",".join(params)):
            return
        await self.catch_up(self.hub.now_ms())

    async def bybit_request(self, text: str) -> tuple[Any, Any, Any] | None:
        """(op, req_id, args) of a Bybit request, or None once a frame that is
        not a JSON object has been answered with Bybit's error."""
        try:
            request = json.loads(text)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            await self.send({"success": False, "ret_msg": "error:request not a json object", "conn_id": self.id,
                             "op": ""}, "error")
            return None
        return request.get("op"), request.get("req_id"), request.get("args", [])

    async def on_bybit(self, text: str) -> None:
        request = await self.bybit_request(text)
        if request is None:
            return
        op, req_id, args = request

        def answer(success: bool, ret_msg: str) -> dict:
            frame: dict[str, Any] = {"success": success, "ret_msg": ret_msg, "conn_id": self.id}
            if req_id is not None:
                frame["req_id"] = req_id
            frame["op"] = op
            return frame

        if op == "ping":
            await self.send(answer(True, "pong"), "ping")
            return
        if op not in ("subscribe", "unsubscribe"):
            await self.send(answer(False, f"error:unknown op {op!r}"), "error")
            return
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            await self.send(answer(False, "error:args must be a list of topics"), "error")
            return
        if op == "unsubscribe":
            for topic in args:
                self.subs.pop(topic, None)
            await self.send(answer(True, ""), "unsubscribe", ",".join(args))
            return
        new: list[_Sub] = []
        for topic in args:
            parts = topic.split(".")
            if parts[0] == "tickers" and len(parts) == 2:
                sub = _Sub(topic, "tickers")
            elif parts[0] == "orderbook" and len(parts) == 3 and parts[1].isdigit() \
                    and int(parts[1]) in BYBIT_DEPTHS[self.market]:
                sub = _Sub(topic, "orderbook", depth=int(parts[1]))
            else:
                await self.send(answer(False, f"error:handler not found,topic:{topic}"), "error", topic)
                return
            if parts[-1] != (BYBIT_INVERSE_SYMBOL if self.market == INVERSE else SYMBOL):
                await self.send(answer(False, f"Invalid symbol :[{topic}]"), "error", topic)
                return
            if topic in self.subs:
                await self.send(answer(False, f"error:already subscribed,topic:{topic}"), "error", topic)
                return
            new.append(sub)
        for sub in new:
            self.subs[sub.name] = sub
        if not await self.send(answer(True, "subscribe"), "subscribe", ",".join(args)):
            return
        await self.catch_up(self.hub.now_ms())


    # ------------------------------------------------------------ private streams

    def wants(self, topic: str, category: str) -> bool:
        """Does this (Bybit private) connection get a frame of ``topic`` / ``category``?"""
        for name in self.topics:
            base, only = BYBIT_PRIVATE_TOPICS[name]
            if base == topic and (not only or not category or only == category):
                return True
        return False

    def enqueue(self, topic: str, category: str, frame: dict) -> None:
        """Queue one account frame for this private connection if it is subscribed to it."""
        if self.dead or self.outbox is None:
            return
        if self.mode == "wsapi":
            if self.ws_api_sub is None:
                return
            frame = {"subscriptionId": self.ws_api_sub, "event": frame}
        elif self.mode == "bybit" and not (self.authed and self.wants(topic, category)):
            return
        self.outbox.put_nowait((frame, topic))

    async def writer(self) -> None:
        assert self.outbox is not None
        while not self.dead:
            frame, topic = await self.outbox.get()
            if self.mode == "listenkey" and self.hub.accounts is not None \
                    and self.hub.accounts.listen_key_venue(self.listen_key) != self.private:
                await self.drop("close")  # the key was closed (DELETE): the stream ends
                return
            await self.send(frame, "push", topic)

    async def on_ws_api(self, text: str) -> None:
        """Binance spot ws-api: the user data stream requests ccxt.pro makes (and ping)."""
        try:
            request = json.loads(text)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            await self.send({"id": None, "status": 400, "error": {"code": -1000, "msg": "Invalid JSON request"}},
                            "error")
            return
        rid, method, params = request.get("id"), request.get("method"), request.get("params") or {}

        def error(code: int, msg: str, status: int = 400) -> dict:
            return {"id": rid, "status": status, "error": {"code": code, "msg": msg}}

        if method == "userDataStream.subscribe.signature":
            for name in ("apiKey", "timestamp", "signature"):
                if not isinstance(params, dict) or not params.get(name):
                    await self.send(error(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, "
                                                 "or malformed."), "error")
                    return
            if self.ws_api_sub is None:
                self.ws_api_sub = self.hub.next_subscription_id()
                self.private = "binance"
            await self.send({"id": rid, "status": 200, "result": {"subscriptionId": self.ws_api_sub},
                             "rateLimits": []}, "subscribe", "userDataStream")
        elif method == "userDataStream.unsubscribe":
            self.ws_api_sub = None
            await self.send({"id": rid, "status": 200, "result": {}}, "unsubscribe", "userDataStream")
        elif method == "ping":
            await self.send({"id": rid, "status": 200, "result": {}}, "ping")
        else:
            await self.send(error(-1000, f"Unsupported method {method!r} (the emulator's ws-api serves "
                                         "userDataStream.subscribe.signature, userDataStream.unsubscribe, ping)"),
                            "error")

    async def on_bybit_private(self, text: str) -> None:
        request = await self.bybit_request(text)
        if request is None:
            return
        op, req_id, args = request

        def answer(success: bool, ret_msg: str) -> dict:
            frame: dict[str, Any] = {"success": success, "ret_msg": ret_msg, "op": op, "conn_id": self.id}
            if req_id is not None:
                frame["req_id"] = req_id
            return frame

        if op == "ping":
            frame: dict[str, Any] = {"op": "pong", "args": [str(self.hub.now_ms())], "conn_id": self.id}
            if req_id is not None:
                frame = {"req_id": req_id, **frame}
            await self.send(frame, "ping")
            return
        if op == "auth":
            # any key and signature pass (as on REST); all three fields must be there
            ok = (isinstance(args, list) and len(args) == 3 and isinstance(args[0], str) and args[0]
                  and str(args[1]).isdigit() and isinstance(args[2], str) and args[2])
            if not ok:
                await self.send(answer(False, "Params Error"), "error", "auth")
                return
            if self.authed:
                await self.send(answer(False, "Request repeated"), "error", "auth")
                return
            self.authed = True
            self.private = "bybit"
            await self.send(answer(True, ""), "auth")
            return
        if op not in ("subscribe", "unsubscribe"):
            await self.send(answer(False, f"error:unknown op {op!r}"), "error")
            return
        if not self.authed:
            await self.send(answer(False, "Request not authorized"), "error", op)
            return
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            await self.send(answer(False, "error:args must be a list of topics"), "error")
            return
        if op == "unsubscribe":
            self.topics.difference_update(args)
            await self.send(answer(True, ""), "unsubscribe", ",".join(args))
            return
        for topic in args:
            if topic not in BYBIT_PRIVATE_TOPICS:
                await self.send(answer(False, f"error:handler not found,topic:{topic}"), "error", topic)
                return
        self.topics.update(args)
        await self.send(answer(True, ""), "subscribe", ",".join(args))


# ----------------------------------------------------------------- the hub

class WsHub:
    """The websocket side of one emulator: connections, pushes on the clock,
    faults. Reach it from a test with :func:`websockets`."""

    def __init__(self, emulator_app: emu.EmulatorApp, seed: int = 0) -> None:
        self.app = emulator_app
        self.tape, self.clock = emulator_app.tape, emulator_app.clock
        self.faults = WsFaultPlan(seed)
        self._events: list[WsEvent] = []
        self._events_lock = threading.Lock()
        self.conns: set[_Conn] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._pusher: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self.accounts: Accounts | None = emulator_app.accounts
        self._sub_ids = 0

    def now_ms(self) -> int:
        return self.clock.now_ns // NS_PER_MS

    def next_subscription_id(self) -> int:
        sid, self._sub_ids = self._sub_ids, self._sub_ids + 1
        return sid

    # ------------------------------------------------------------ private streams: account events

    def _on_account(self, ev: AccountEvent) -> None:
        """An ``Accounts`` listener (any thread, account lock held): render the
        frames now, from the state as of this step, and hand them to the loop."""
        loop, acc = self._loop, self.accounts
        if loop is None or loop.is_closed() or acc is None:
            return
        if not any(c.private == ev.venue for c in list(self.conns)):
            return  # nobody listens: skip the rendering
        items: list[tuple[str, str, str, dict]] = []  # (venue, topic, category, frame)
        if ev.venue == "binance":
            if ev.what == BALANCE:
                items.append(("binance", "balance", "", binance_account_position(acc, ev.time_ms)))
            else:
                items.append(("binance", "order", "", binance_execution_report(ev)))
        elif ev.venue in emu.FUTURES:  # USD-M, COIN-M
            if ev.what == FUNDING:
                pass  # told by the ACCOUNT_UPDATE (m FUNDING_FEE) of the balance event that follows
            elif ev.what != BALANCE:
                items.append((ev.venue, "order", "", binance_order_trade_update(ev)))
            elif ev.traded or ev.reason != "ORDER":  # the venue pushes ACCOUNT_UPDATE only when money moved
                items.append((ev.venue, "account", "", binance_account_update(self.tape, acc, ev)))
        elif ev.venue == "bybit":
            items += [("bybit", topic, category, frame) for topic, category, frame in bybit_private_frames(acc, ev)]
        if items:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._deliver, items)

    def _deliver(self, items: list[tuple[str, str, str, dict]]) -> None:
        for conn in list(self.conns):
            for venue, topic, category, frame in items:
                if conn.private == venue:
                    conn.enqueue(topic, category, frame)

    # ------------------------------------------------------------ records

    def record(self, conn: _Conn, what: str, detail: str = "") -> None:
        with self._events_lock:
            self._events.append(WsEvent(conn.venue, conn.path, conn.id, what, detail, self.clock.now_ns))

    @property
    def events(self) -> list[WsEvent]:
        with self._events_lock:
            return list(self._events)

    def connection_count(self, venue: str | None = None) -> int:
        return sum(1 for e in self.events if e.what == "connect" and (venue is None or e.venue == venue))

    # ------------------------------------------------------------ test-thread controls

    def drop(self, venue: str | None = None, path: str = "", mode: str = "close") -> int:
        """Drop the live connections of ``venue`` (None: all) under ``path`` now; how many."""
        if mode not in DROP_MODES:
            raise ValueError(f"unknown drop mode {mode!r} (known: {', '.join(DROP_MODES)})")
        if self._loop is None:
            raise RuntimeError("the emulator is not running")

        async def run() -> int:
            hit = [c for c in self.conns if not c.dead and (venue is None or c.venue == venue)
                   and c.path.startswith(path)]
            for conn in hit:
                await conn.drop(mode)
            return len(hit)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(5)

    # ------------------------------------------------------------ server side

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def on_startup(self, app: web.Application) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        listeners = getattr(self.clock, "listeners", None)
        if isinstance(listeners, list):  # wake at once when the clock says it moved; polling covers the rest
            listeners.append(self._clock_moved)
        self._pusher = self._loop.create_task(self._push_loop())
        if self.accounts is not None:
            self.accounts.listeners.append(self._on_account)

    def _clock_moved(self, ns: int) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    async def on_shutdown(self, app: web.Application) -> None:
        if self.accounts is not None and self._on_account in self.accounts.listeners:
            self.accounts.listeners.remove(self._on_account)
        listeners = getattr(self.clock, "listeners", None)
        if isinstance(listeners, list) and self._clock_moved in listeners:
            listeners.remove(self._clock_moved)
        if self._pusher is not None:
            self._pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pusher
        for conn in list(self.conns):
            conn.dead = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.ws.close(code=GOING_AWAY, message=b"server shutdown"), 0.5)
        for task in list(self._tasks):
            task.cancel()

    async def _push_loop(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_S)
            self._wake.clear()
            ms = self.now_ms()
            for conn in list(self.conns):
                if not conn.dead and conn.subs:
                    try:
                        await conn.catch_up(ms)
                    except Exception as exc:  # noqa: BLE001 - one broken connection must not stop the others' pushes
                        self.record(conn, "error", repr(exc))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return await self.app.handle(request)  # a plain request: the REST side answers (404 in venue shape)
        path = request.path
        mode, key, base = None, None, ""
        if path in BYBIT_PATHS:
            venue, market, combined = "bybit", BYBIT_PATHS[path], False
        elif path == BYBIT_PRIVATE_PATH:
            venue, market, combined, mode = "bybit", PERP, False, "bybit"
        elif path == WS_API_PATH:
            venue, market, combined, mode = "binance", SPOT, False, "wsapi"
        elif path == BINANCE_PRIVATE_PATH or path.startswith(BINANCE_PRIVATE_PATH + "/"):
            key = request.query.get("listenKey") or path[len(BINANCE_PRIVATE_PATH) + 1:]
            venue, market, combined, mode, base = "binanceusdm", PERP, False, "listenkey", BINANCE_PRIVATE_PATH
        else:
            base = next(p for p in BINANCE_PATHS if path == p or path.startswith(p + "/"))
            venue, market, combined = BINANCE_PATHS[base]
            tail = path[len(base) + 1:]
            owner = self.accounts.listen_key_venue(tail) if self.accounts is not None and tail else None
            if owner is not None and not combined:  # /ws/<listenKey>: that account's user data stream
                market = SPOT if owner == "binance" else INVERSE if owner == "binancecoinm" else PERP
                venue, mode, key = owner, "listenkey", tail
        if mode == "listenkey":
            owner = self.accounts.listen_key_venue(key) if self.accounts is not None else None
            if owner is None or (path.startswith(BINANCE_PRIVATE_PATH) and owner != "binanceusdm"):
                self.app.log.append(LoggedRequest("GET", path, dict(request.query), venue, 400, None,
                                                  self.clock.now_ns))
                return web.json_response({"code": -1125, "msg": "This listenKey does not exist."}, status=400)
        ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 22)
        await ws.prepare(request)
        conn = _Conn(self, ws, request, venue, market, combined)
        writer: asyncio.Task | None = None
        if mode is not None:
            conn.mode, conn.listen_key = mode, key
            conn.private = venue if mode == "listenkey" else None  # ws-api and Bybit: after subscribe / auth
            conn.outbox = asyncio.Queue()
            writer = asyncio.get_running_loop().create_task(conn.writer())
        self.app.log.append(LoggedRequest("GET", path, dict(request.query), venue, 101, None, self.clock.now_ns))
        self.record(conn, "connect", request.path_qs)
        self.conns.add(conn)
        try:
            if conn.binance and mode is None:  # streams named in the url: /ws/<name> or /stream?streams=a/b
                names = request.query.get("streams", "").split("/") if combined else [path[len(base) + 1:]]
                for name in filter(None, names):
                    sub = conn.binance_sub(name)
                    if sub is not None:
                        conn.subs[name] = sub
                if conn.subs:
                    await conn.catch_up(self.now_ms())
            async for msg in ws:
                if conn.dead or conn.silent:
                    continue
                if msg.type == WSMsgType.PING:
                    await conn.send_pong(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    if mode == "wsapi":
                        await conn.on_ws_api(msg.data)
                    elif mode == "bybit":
                        await conn.on_bybit_private(msg.data)
                    elif conn.binance:  # public streams, and SUBSCRIBE on a listenKey stream
                        await conn.on_binance(msg.data)
                    else:
                        await conn.on_bybit(msg.data)
        finally:
            self.conns.discard(conn)
            conn.dead = True
            if writer is not None:
                writer.cancel()
            self.record(conn, "close", str(ws.close_code))
        return ws


# ----------------------------------------------------------------- mounting and lookup

_HUBS: weakref.WeakKeyDictionary[Any, WsHub] = weakref.WeakKeyDictionary()


def mount(app: web.Application, emulator_app: emu.EmulatorApp) -> None:
    """The ``EmulatorApp.extensions`` hook: websocket routes ahead of the REST catch-all."""
    hub = WsHub(emulator_app)
    _HUBS[emulator_app.clock] = hub
    for path in (*BINANCE_PATHS, *BYBIT_PATHS, WS_API_PATH, BINANCE_PRIVATE_PATH, BYBIT_PRIVATE_PATH):
        app.router.add_route("GET", path, hub.handle)
        if path in BINANCE_PATHS or path == BINANCE_PRIVATE_PATH:
            app.router.add_route("GET", path + "/{stream:.*}", hub.handle)
    app.on_startup.append(hub.on_startup)
    app.on_shutdown.append(hub.on_shutdown)


def install() -> None:
    """Mount the streams on every emulator built from now on (idempotent; done on import)."""
    extensions = getattr(emu.EmulatorApp, "extensions", None)
    if extensions is None:
        raise RuntimeError("fundarb.testkit.emulator.server has no EmulatorApp.extensions hook to mount websockets on")
    if mount not in extensions:
        extensions.append(mount)


def websockets(server: emu.EmulatorServer) -> WsHub:
    """The websocket hub of a running emulator (its faults, events, ``drop``)."""
    hub = _HUBS.get(server.clock)
    if hub is None:
        raise RuntimeError("this emulator serves no websockets: import fundarb.testkit.emulator.ws before starting it")
    return hub


install()
