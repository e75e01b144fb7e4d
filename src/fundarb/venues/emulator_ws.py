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
- **Bybit v5** on ``/v5/public/linear`` and ``/v5/public/spot``: ``op``
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
the live connections at once. Handshakes are logged in ``server.log`` with
status 101; frames and drops in ``WsHub.events``.

Not served: private streams (user data, orders, positions: they need the
listenKey / auth flows and the trading account model), trades, klines,
partial-depth ``@depth<N>`` streams, Binance's ws-api, periodic pushes while
the clock is fixed, Binance's 24 h disconnect and server pings.
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
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from fundarb.venues import emulator as emu
from fundarb.venues.emulator import (
    BINANCE_PERP_TICK,
    BINANCE_SPOT_TICK,
    BYBIT_PERP_TICK,
    BYBIT_SPOT_TICK,
    NS_PER_MS,
    PERP,
    SPOT,
    SYMBOL,
    Ask,
    LoggedRequest,
    point_ccxt,
)

POLL_S = 0.02  # how often the pusher looks at the clock when nothing wakes it
# Binance diffs keep this many levels a side: the REST depth maximum, so every REST snapshot stays exact
BINANCE_STREAM_DEPTH = {SPOT: 5000, PERP: 1000}
BYBIT_DEPTHS = {SPOT: (1, 50, 200, 1000), PERP: (1, 50, 200, 500, 1000)}
WS_FAULT_KINDS = ("dropped_websocket",)
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
BYBIT_PATHS = {"/v5/public/spot": SPOT, "/v5/public/linear": PERP}


# ----------------------------------------------------------------- faults

@dataclass
class WsFault:
    """A programmed websocket fault: it hits the next frame the server sends
    to a connection of ``venue`` (None: any) whose path starts with ``path``;
    ``times`` frames (None: until removed); ``probability`` per frame."""

    kind: str
    venue: str | None = None
    path: str = ""
    times: int | None = 1
    probability: float = 1.0
    mode: str = "close"
    hits: int = 0

    def matches(self, venue: str, path: str) -> bool:
        return (self.venue is None or self.venue == venue) and path.startswith(self.path)


class WsFaultPlan:
    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._faults: list[WsFault] = []
        self._rng = random.Random(seed)

    def add(self, kind: str = "dropped_websocket", *, venue: str | None = None, path: str = "",
            times: int | None = 1, probability: float = 1.0, mode: str = "close") -> WsFault:
        if kind not in WS_FAULT_KINDS:
            raise ValueError(f"unknown websocket fault kind {kind!r} (known: {', '.join(WS_FAULT_KINDS)})")
        if venue is not None and venue not in emu.VENUE_PREFIXES:
            raise ValueError(f"unknown venue {venue!r} (known: {', '.join(emu.VENUE_PREFIXES)})")
        if mode not in DROP_MODES:
            raise ValueError(f"unknown drop mode {mode!r} (known: {', '.join(DROP_MODES)})")
        if not 0.0 < probability <= 1.0:
            raise ValueError(f"fault probability must be in (0, 1], got {probability}")
        if times is not None and times < 1:
            raise ValueError(f"fault times must be >= 1 or None, got {times}")
        fault = WsFault(kind, venue, path, times, probability, mode)
        with self._lock:
            self._faults.append(fault)
        return fault

    def remove(self, fault: WsFault) -> None:
        with self._lock:
            if fault in self._faults:
                self._faults.remove(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending(self) -> list[WsFault]:
        with self._lock:
            return list(self._faults)

    def take(self, venue: str, path: str) -> WsFault | None:
        with self._lock:
            for fault in self._faults:
                if not fault.matches(venue, path):
                    continue
                if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                    continue
                fault.hits += 1
                if fault.times is not None and fault.hits >= fault.times:
                    self._faults.remove(fault)
                return fault
        return None


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

def _ask(tape: emu.MarketTape, ms: int, path: str, **params: str) -> Ask:
    return Ask(tape, {"symbol": SYMBOL, **params}, ms, ms, path)


@lru_cache(maxsize=64)
def _levels(price: float, tick: str, depth: int, places: int) -> tuple[tuple[tuple[str, str], ...], ...]:
    """The emulator's SYNTHETIC book (``emulator._book``), the same the REST depth answers."""
    bids, asks = emu._book(price, tick, depth, places)
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
    tick, places = (BINANCE_SPOT_TICK, 8) if market == SPOT else (BINANCE_PERP_TICK, 2)  # as _binance_depth
    return _levels(tape.prices[market].price_at(ms), tick, BINANCE_STREAM_DEPTH[market], places)


def _bybit_book(tape: emu.MarketTape, market: str, ms: int, depth: int) -> tuple:
    tick = BYBIT_SPOT_TICK if market == SPOT else BYBIT_PERP_TICK  # as _bybit_orderbook
    return _levels(tape.prices[market].price_at(ms), tick, depth, 2)


def binance_event(tape: emu.MarketTape, market: str, channel: str, ms: int) -> dict:
    """One Binance stream event at data time ``ms`` (not depth: see ``binance_depth_event``)."""
    path = "/api/v3" if market == SPOT else "/fapi/v1"
    if channel in ("ticker", "miniTicker"):
        row = emu._binance_24hr(_ask(tape, ms, path + "/ticker/24hr"), market)
        if channel == "miniTicker":
            return {"e": "24hrMiniTicker", "E": ms, "s": SYMBOL, "c": row["lastPrice"], "o": row["openPrice"],
                    "h": row["highPrice"], "l": row["lowPrice"], "v": row["volume"], "q": row["quoteVolume"]}
        event: dict[str, Any] = {"e": "24hrTicker", "E": ms, "s": SYMBOL, "p": row["priceChange"],
                                 "P": row["priceChangePercent"], "w": row["weightedAvgPrice"]}
        if market == SPOT:
            event["x"] = row["prevClosePrice"]
        event.update({"c": row["lastPrice"], "Q": row["lastQty"]})
        if market == SPOT:
            event.update({"b": row["bidPrice"], "B": row["bidQty"], "a": row["askPrice"], "A": row["askQty"]})
        event.update({"o": row["openPrice"], "h": row["highPrice"], "l": row["lowPrice"], "v": row["volume"],
                      "q": row["quoteVolume"], "O": row["openTime"], "C": row["closeTime"], "F": row["firstId"],
                      "L": row["lastId"], "n": row["count"]})
        return event
    if channel == "bookTicker":
        row = emu._binance_book_ticker(_ask(tape, ms, path + "/ticker/bookTicker"), market)
        quote = {"s": SYMBOL, "b": row["bidPrice"], "B": row["bidQty"], "a": row["askPrice"], "A": row["askQty"]}
        if market == SPOT:  # spot bookTicker frames carry no event type
            return {"u": ms, **quote}
        return {"e": "bookTicker", "u": ms, "E": ms, "T": ms, **quote}
    if channel == "markPrice":
        row = emu._binance_premium_index(_ask(tape, ms, "/fapi/v1/premiumIndex"))
        return {"e": "markPriceUpdate", "E": ms, "s": SYMBOL, "p": row["markPrice"], "i": row["indexPrice"],
                "P": row["estimatedSettlePrice"], "r": row["lastFundingRate"], "T": row["nextFundingTime"]}
    raise ValueError(f"no Binance {channel} stream")


def binance_depth_event(tape: emu.MarketTape, market: str, from_ms: int, to_ms: int) -> dict:
    """The diff taking the book at ``from_ms`` (update id from_ms) to ``to_ms``."""
    old_bids, old_asks = _binance_book(tape, market, from_ms)
    new_bids, new_asks = _binance_book(tape, market, to_ms)
    event: dict[str, Any] = {"e": "depthUpdate", "E": to_ms}
    if market == PERP:
        event["T"] = to_ms
    event.update({"s": SYMBOL, "U": from_ms + 1, "u": to_ms})
    if market == PERP:
        event["pu"] = from_ms
    event["b"] = _side_diff(old_bids, new_bids, "0.000", descending=True)
    event["a"] = _side_diff(old_asks, new_asks, "0.000", descending=False)
    return event


# fields of Bybit's spot ticker frame (the REST row has more: the book top)
_BYBIT_SPOT_WS_FIELDS = ("symbol", "lastPrice", "highPrice24h", "lowPrice24h", "prevPrice24h", "volume24h",
                         "turnover24h", "price24hPcnt", "usdIndexPrice")


def bybit_ticker_data(tape: emu.MarketTape, market: str, ms: int) -> dict:
    category = "spot" if market == SPOT else "linear"
    row = emu._bybit_ticker_row(_ask(tape, ms, "/v5/market/tickers", category=category), category)
    if market == SPOT:
        return {k: row[k] for k in _BYBIT_SPOT_WS_FIELDS}
    return row


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
        if self.binance:
            if sub.channel == "depth":
                if sub.last_ms is not None and ms < sub.last_ms:
                    await self.drop("close")  # ids cannot go back: the client must re-sync
                    return
                frame = binance_depth_event(tape, self.market, sub.last_ms if sub.last_ms is not None else ms, ms)
            else:
                event = binance_event(tape, self.market, sub.channel, ms)
                frame = [event] if sub.all_market else event
            sub.last_ms = ms
            if self.combined:
                frame = {"stream": sub.name, "data": frame}
            await self.send(frame)
            return
        if sub.channel == "tickers":
            data = bybit_ticker_data(tape, self.market, ms)
            kind = "snapshot"
            if self.market == PERP and sub.last_fields:  # linear: only what changed
                delta = {k: v for k, v in data.items() if sub.last_fields.get(k) != v}
                data, kind = {"symbol": SYMBOL, **delta}, "delta"
                sub.last_fields.update(delta)
            elif self.market == PERP:
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
                     "data": {"s": SYMBOL, "b": b, "a": a, "u": ms, "seq": ms}, "cts": ms}
        sub.last_ms = ms
        await self.send(frame)

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
        if channel in ("ticker", "miniTicker", "bookTicker") and not rest:
            return _Sub(name, channel, dormant=head != SYMBOL.lower())
        if channel == "depth" and rest in ([], ["100ms"], ["1000ms"], ["0ms"], ["250ms"], ["500ms"]):
            return _Sub(name, "depth", dormant=head != SYMBOL.lower())
        if channel == "markPrice" and perp and rest in ([], ["1s"]):
            return _Sub(name, "markPrice", dormant=head != SYMBOL.lower())
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

    async def on_bybit(self, text: str) -> None:
        try:
            request = json.loads(text)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            await self.send({"success": False, "ret_msg": "error:request not a json object", "conn_id": self.id,
                             "op": ""}, "error")
            return
        op, req_id, args = request.get("op"), request.get("req_id"), request.get("args", [])

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
            if parts[-1] != SYMBOL:
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

    def now_ms(self) -> int:
        return self.clock.now_ns // NS_PER_MS

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

    def _clock_moved(self, ns: int) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    async def on_shutdown(self, app: web.Application) -> None:
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
        if path in BYBIT_PATHS:
            venue, market, combined = "bybit", BYBIT_PATHS[path], False
        else:
            base = next(p for p in BINANCE_PATHS if path == p or path.startswith(p + "/"))
            venue, market, combined = BINANCE_PATHS[base]
        ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 22)
        await ws.prepare(request)
        conn = _Conn(self, ws, request, venue, market, combined)
        self.app.log.append(LoggedRequest("GET", path, dict(request.query), venue, 101, None, self.clock.now_ns))
        self.record(conn, "connect", request.path_qs)
        self.conns.add(conn)
        try:
            if conn.binance:  # streams named in the url: /ws/<name> or /stream?streams=a/b
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
                    if conn.binance:
                        await conn.on_binance(msg.data)
                    else:
                        await conn.on_bybit(msg.data)
        finally:
            self.conns.discard(conn)
            conn.dead = True
            self.record(conn, "close", str(ws.close_code))
        return ws


# ----------------------------------------------------------------- mounting and lookup

_HUBS: weakref.WeakKeyDictionary[Any, WsHub] = weakref.WeakKeyDictionary()


def mount(app: web.Application, emulator_app: emu.EmulatorApp) -> None:
    """The ``EmulatorApp.extensions`` hook: websocket routes ahead of the REST catch-all."""
    hub = WsHub(emulator_app)
    _HUBS[emulator_app.clock] = hub
    for path in (*BINANCE_PATHS, *BYBIT_PATHS):
        app.router.add_route("GET", path, hub.handle)
        if path in BINANCE_PATHS:
            app.router.add_route("GET", path + "/{stream:.*}", hub.handle)
    app.on_startup.append(hub.on_startup)
    app.on_shutdown.append(hub.on_shutdown)


def install() -> None:
    """Mount the streams on every emulator built from now on (idempotent; done on import)."""
    extensions = getattr(emu.EmulatorApp, "extensions", None)
    if extensions is None:
        raise RuntimeError("fundarb.venues.emulator has no EmulatorApp.extensions hook to mount websockets on")
    if mount not in extensions:
        extensions.append(mount)


def websockets(server: emu.EmulatorServer) -> WsHub:
    """The websocket hub of a running emulator (its faults, events, ``drop``)."""
    hub = _HUBS.get(server.clock)
    if hub is None:
        raise RuntimeError("this emulator serves no websockets: import fundarb.venues.emulator_ws before starting it")
    return hub


def point_ccxt_pro(exchange: Any, base_url: str) -> Any:
    """``point_ccxt`` for a ccxt.pro client: REST as ``point_ccxt`` does, and
    scheme and host of every (nested) ``urls['api']['ws']`` entry rewritten to
    ``base_url`` as ``ws://``, each path kept (FACTS: ccxt.pro derives the
    USD-M category paths from a url that must end in ``/ws``)."""
    point_ccxt(exchange, base_url)
    target = urlsplit(base_url)
    ws_root = f"ws://{target.netloc}"

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: rewrite(v) for k, v in node.items()}
        if isinstance(node, str) and node.startswith(("ws://", "wss://")):
            return ws_root + urlsplit(node.replace("{hostname}", "x")).path
        return node

    api = exchange.urls["api"]
    if isinstance(api.get("ws"), dict):
        api["ws"] = rewrite(api["ws"])
    return exchange


install()
