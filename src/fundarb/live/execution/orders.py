"""One leg's orders on a real venue, driven by the core order state machine.

``LegTrader.send`` journals the order (client id from the config hash and
the intent sequence) before it goes out, places it through the venue's
request queue, and follows it to a terminal state, recording every fill
under the venue's trade id. Placement is never retried blindly: after a
timeout or a network error the order is looked up by its client id (twice,
a moment apart, since a venue may still be processing it); when the venue
does not know it, it is looked up once more after the venue's receive window
(``recvWindow``) has passed since it was sent, since until then the request
may still land. Only then is it REJECTED and sent again, as a NEW order with
a new client id (a venue refuses a duplicate client id only among its open
orders: a late original and a re-send under one id would both fill). A venue
that says "duplicate" is asked again. A refusal (insufficient funds,
invalid order, bad key) is final: the order is REJECTED with the venue's
words.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

import attrs
import ccxt

from fundarb.core.book import btc_worth, units_worth
from fundarb.core.model import Fill, Liquidity, Side
from fundarb.core.orders import QTY_EPS, IllegalTransition, Order, OrderStatus
from fundarb.live.ccxt.client import RECV_WINDOW_MS, MarketRules
from fundarb.live.ccxt.ratelimit import RequestQueue
from fundarb.live.journal import Journal, VenueTrade
from fundarb.support.scrub import describe, scrub
from fundarb.venues import quirks_or_plain

S = OrderStatus
NS_PER_MS = 1_000_000


class OrderRefused(Exception):
    """The venue said no; the message is its answer."""


class PlacementUnknown(Exception):
    """We could not learn whether the venue has the order (the network kept failing)."""


class VenueDisagrees(Exception):
    """The venue's order and its trades (or the journal) tell two sizes: nothing is sized from either."""


class NeverLanded(Exception):
    """The venue does not know the order a receive window after it was sent: it never will."""


SUPERSEDED = "sent again under a new client id"  # in the reason of an order that never landed


def superseded(row: Any) -> bool:
    """An order row that never landed and was sent again as a new order: its size is the new one's."""
    return row["status"] == S.REJECTED.value and SUPERSEDED in str(row["status_reason"] or "")


def recv_window_s(leg: LiveLeg) -> float:
    """The receive window the leg's requests are sent with, in seconds."""
    options = getattr(leg.exchange, "options", None) or {}
    return float(options.get("recvWindow") or RECV_WINDOW_MS) / 1000.0


@attrs.define
class LiveLeg:
    """One market of the pair on one venue: the carry's long leg (``leg``
    "spot": a spot market, or a perp/perp carry's long perp) or its short
    (``leg`` "perp"). What the leg IS is its market's (``is_perp``), never
    its venue's name."""

    leg: str  # "spot" (the long leg) | "perp" (the short)
    account: str
    exchange: Any
    symbol: str
    queue: RequestQueue
    rules: MarketRules
    venue_id: str = ""  # the account's VenueIdentity key: fills are keyed by it

    @property
    def market(self) -> dict:
        return self.exchange.market(self.symbol)

    @property
    def is_perp(self) -> bool:
        """Whether the leg is a perpetual (a position on its venue, closed by
        reduce-only orders, learned from the venue's positions and paid
        funding) rather than a spot market (a wallet balance): the one rule
        every place that treats the two apart asks."""
        return bool(self.market.get("swap"))

    def reduces(self, side: Side) -> bool:
        """Whether an order of ``side`` on this leg only reduces the carry's
        position there, so goes out reduce-only: on a perp, the side against
        the leg's (a sell of the long perp, a buy of the short); a spot market
        has no such flag."""
        return self.is_perp and (side is Side.SELL) == (self.leg == "spot")

    @property
    def face(self) -> float:
        """USD per contract of an inverse perp (its unit is the contract); 0 for a leg that trades BTC."""
        return self.rules.face

    @property
    def unit(self) -> str:
        return self.rules.unit

    @property
    def settle(self) -> str:
        """What the leg margins and settles in: the quote (USDT), or an inverse perp's coin (BTC)."""
        return self.market.get("settle") or (self.base if self.face else self.quote)

    def btc(self, units: float, price: float) -> float:
        """BTC worth of ``units`` of this leg at ``price``."""
        return btc_worth(units, self.face, price)

    def units_for(self, btc: float, price: float) -> float:
        """This leg's units (unrounded) worth ``btc`` at ``price``."""
        return units_worth(btc, self.face, price)

    @property
    def base(self) -> str:
        return self.market["base"]

    @property
    def quote(self) -> str:
        return self.market["quote"]

    async def call(self, method: str, *args: Any, retry: bool = True, **kwargs: Any) -> Any:
        return await self.queue.call(getattr(self.exchange, method), *args, retry=retry, **kwargs)


def venue_status(reply: dict) -> str:
    return str(reply.get("status") or "")


@attrs.define
class LegTrader:
    journal: Journal
    config_hash: str
    now_ns: Callable[[], int] = time.time_ns
    poll_s: float = 0.2
    lookup_pause_s: float = 0.5
    place_attempts: int = 3
    window_margin_s: float = 0.25  # past the receive window, before the last look-up

    # --- sending ------------------------------------------------------------------
    async def send(self, leg: LiveLeg, op_id: int, role: str, side: Side, qty: float,
                   deadline_ns: int, reduce_only: bool = False) -> Order:
        for attempt in range(self.place_attempts):
            order = self.journal.reserve_order(self.now_ns(), op_id, self.config_hash, leg.account, leg.exchange.id,
                                               leg.symbol, leg.leg, role, side, qty, reduce_only)
            order.transition(S.SUBMITTED, self.now_ns())
            self.journal.save_order(order, self.config_hash, "sending" if not attempt else "sending again")
            try:
                venue_id = await self._place(leg, order)
            except NeverLanded as exc:  # it can no longer land: a new order, under a new client id
                order.transition(S.REJECTED, self.now_ns(), f"{SUPERSEDED}: {scrub(str(exc))[:400]}")
                self.journal.save_order(order, self.config_hash, "not on the venue after its receive window")
                continue
            except OrderRefused as exc:
                order.transition(S.REJECTED, self.now_ns(), scrub(str(exc))[:500])
                self.journal.save_order(order, self.config_hash, "refused by the venue")
                return order
            except PlacementUnknown as exc:
                order.status_reason = scrub(str(exc))[:500]
                self.journal.save_order(order, self.config_hash, "placement unknown")
                return order
            await self.follow(leg, order, venue_id, deadline_ns)
            return order
        return order

    def _params(self, leg: LiveLeg, order: Order) -> dict[str, Any]:
        # the client id as the venue takes it (``fundarb.venues``: ccxt's clientOrderId unless it says otherwise)
        params = quirks_or_plain(leg.exchange.id).order_params(leg.exchange, leg.symbol, "market", order.side.value,
                                                              leg.rules.amount(order.qty), order.client_id)
        if order.reduce_only and leg.is_perp:
            params["reduceOnly"] = True
        return params

    async def _place(self, leg: LiveLeg, order: Order) -> str:
        amount = leg.rules.amount(order.qty)
        last: Exception | None = None
        for _ in range(self.place_attempts):
            sent = time.monotonic()
            try:
                reply = await leg.call("create_order", leg.symbol, "market", order.side.value, amount, None,
                                       self._params(leg, order), retry=False)
                self.journal.save_order(order, self.config_hash, "placed", venue_order_id=str(reply["id"]))
                return str(reply["id"])
            except ccxt.DDoSProtection as exc:  # 429/418: turned away before it was read, the same order again
                last = exc
                found = await self.lookup(leg, order.client_id, patient=True)
                if found is not None:
                    return self._found(order, found)
                continue
            except ccxt.NetworkError as exc:  # timeout, 5xx: it may or may not be there, or land later
                last = exc
            except (ccxt.InvalidOrder, ccxt.ExchangeError) as exc:
                if not _duplicate(leg, exc):
                    raise OrderRefused(f"{leg.account}: {describe(exc)}") from None
                last = exc  # the venue already has this client id: find it
            found = await self.lookup(leg, order.client_id, patient=True)
            if found is not None:
                return self._found(order, found)
            if _duplicate(leg, last):
                break
            # until the receive window has passed since it was sent, the request may still land
            window = recv_window_s(leg)
            wait = sent + window + self.window_margin_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            found = await self._lookup_once(leg, order.client_id)
            if found is not None:
                return self._found(order, found)
            raise NeverLanded(f"{leg.account}: the venue has no order {order.client_id} {window:g} s (its receive "
                              f"window) after it was sent; it can no longer land ({type(last).__name__}: "
                              f"{str(last)[:200]})")
        raise PlacementUnknown(f"{leg.account}: no answer after {self.place_attempts} tries: {last}")

    def _found(self, order: Order, found: dict) -> str:
        self.journal.save_order(order, self.config_hash, "found after a failed placement",
                                venue_order_id=str(found["id"]))
        return str(found["id"])

    # --- looking up ---------------------------------------------------------------
    async def lookup(self, leg: LiveLeg, client_id: str, patient: bool = False) -> dict | None:
        """The venue's order with ``client_id``, or None when it has none."""
        for attempt in range(2 if patient else 1):
            if attempt:
                await asyncio.sleep(self.lookup_pause_s)
            found = await self._lookup_once(leg, client_id)
            if found is not None:
                return found
        return None

    async def _lookup_once(self, leg: LiveLeg, client_id: str) -> dict | None:
        return await quirks_or_plain(leg.exchange.id).find_order(leg, client_id)

    async def fetch(self, leg: LiveLeg, venue_id: str) -> dict:
        return await leg.call("fetch_order", venue_id, leg.symbol, quirks_or_plain(leg.exchange.id).fetch_params())

    # --- following to the end -------------------------------------------------------
    async def follow(self, leg: LiveLeg, order: Order, venue_id: str, deadline_ns: int) -> None:
        """Poll the order until it ends (cancelling it at the deadline), then
        record its fills and final state."""
        reply = await self.fetch(leg, venue_id)
        canceled = False
        while venue_status(reply) == "open":
            if self.now_ns() >= deadline_ns and not canceled:
                canceled = True
                await self._cancel(leg, venue_id)
            await asyncio.sleep(self.poll_s)
            reply = await self.fetch(leg, venue_id)
        await self.absorb(leg, order, reply)

    async def _cancel(self, leg: LiveLeg, venue_id: str) -> None:
        try:
            await leg.call("cancel_order", venue_id, leg.symbol)
        except ccxt.OrderNotFound:
            pass  # it ended on its own meanwhile

    async def absorb(self, leg: LiveLeg, order: Order, reply: dict) -> None:
        """Bring ``order`` to what the venue's ``reply`` says: fills first
        (from the venue's trades, each once), then the final status."""
        venue_id = str(reply["id"])
        filled_btc = float(reply.get("filled") or 0.0) * leg.rules.contract_size
        tol = QTY_EPS + 1e-9 * order.qty
        for _ in range(20):  # a venue may list trades a moment after the order shows them
            try:
                await self._record_trades(leg, order, venue_id, reply)
            except IllegalTransition as exc:  # its trades add up to more than the order's size
                raise self._disagree(leg, order, filled_btc, f"its trades overfill it ({describe(exc)})") from None
            if order.filled_qty >= filled_btc - tol:
                break
            await asyncio.sleep(self.poll_s)
        if abs(order.filled_qty - filled_btc) > tol:
            raise self._disagree(leg, order, filled_btc, f"its trades listed add up to {order.filled_qty:g} BTC")
        now = self.now_ns()
        status = venue_status(reply)
        if order.status is S.SUBMITTED and status in ("open", "closed", "canceled", "expired"):
            if order.filled_qty == 0:
                order.transition(S.ACCEPTED, now)
        if order.is_open and status != "open":
            _finish(order, status, now, reply)
        self.journal.save_order(order, self.config_hash, f"venue status {status or 'unknown'}", venue_order_id=venue_id)

    def _disagree(self, leg: LiveLeg, order: Order, filled_btc: float, why: str) -> VenueDisagrees:
        self.journal.save_order(order, self.config_hash, f"the venue says filled {filled_btc:g} BTC; {why}")
        return VenueDisagrees(f"{leg.account}: order {order.client_id}: the venue says {filled_btc:g} BTC filled, "
                              f"{why}; nothing is traded on a guess")

    async def _record_trades(self, leg: LiveLeg, order: Order, venue_id: str, reply: dict) -> None:
        since = reply.get("timestamp")
        trades = await leg.call("fetch_my_trades", leg.symbol, int(since) - 60_000 if since else None)
        for t in trades:
            if str(t.get("order")) == venue_id:
                self.record_fill(leg, order, t)

    def record_fill(self, leg: LiveLeg, order: Order, t: dict) -> bool:
        """Journal the venue trade ``t`` of ``order`` once, and the order row
        with it in one transaction (``order`` is brought to the row); False
        when the venue's (identity, order id, trade id) is already known. A
        fee in a third asset counts 0 in the order's fees, kept raw in the
        fills table."""
        return self.journal.record_fill(order, self.venue_trade(leg, order.client_id, t), self.now_ns(),
                                        self.config_hash)

    def venue_trade(self, leg: LiveLeg, client_id: str, t: dict) -> VenueTrade:
        """The fills row of the venue trade ``t`` (ccxt's shape) under ``client_id``:
        the fee raw as charged, and in the quote currency (None for a third asset)."""
        fill = self.fill_of(leg, client_id, t)
        cost, currency = _fee_raw(t)
        return VenueTrade(fill.ts, leg.venue_id, leg.exchange.id, str(t.get("order") or ""), str(t["id"]),
                          leg.account, client_id, fill.side, fill.qty, fill.price, cost, currency,
                          None if math.isnan(fill.fee) else fill.fee, fill.liquidity.value)

    def fill_of(self, leg: LiveLeg, client_id: str, t: dict) -> Fill:
        qty = float(t["amount"]) * leg.rules.contract_size
        price = float(t["price"])
        cost, currency = _fee_raw(t)
        if currency == leg.quote:
            fee = cost
        elif currency == leg.base:
            fee = cost * price
        else:
            fee = math.nan  # a fee in a third asset (BNB) has no price here; kept raw in the journal
        liquidity = Liquidity.MAKER if t.get("takerOrMaker") == "maker" else Liquidity.TAKER
        return Fill(int(t.get("timestamp") or 0) * NS_PER_MS, leg.account, client_id, Side(t["side"]), qty, price,
                    price, fee, liquidity)


def _fee_raw(t: dict) -> tuple[float, str]:
    fee = t.get("fee") or {}
    return float(fee.get("cost") or 0.0), str(fee.get("currency") or "")


def _duplicate(leg: LiveLeg, exc: Exception | None) -> bool:
    """The venue refused the client id as already taken (its own code or words): the order is there."""
    return exc is not None and quirks_or_plain(leg.exchange.id).duplicate_order(exc)


def _finish(order: Order, status: str, now: int, reply: dict) -> None:
    """Move an open order to the terminal state the venue reports."""
    info = reply.get("info") or {}
    reason = str(info.get("status") or info.get("orderStatus") or status)
    if status == "rejected":
        if order.status is S.SUBMITTED:
            order.transition(S.REJECTED, now, reason)
        else:
            order.transition(S.EXPIRED, now, reason)
    elif status == "canceled":
        if order.status is S.PARTIALLY_FILLED:
            order.transition(S.CANCEL_PENDING, now)
        order.transition(S.CANCELED if order.status is not S.SUBMITTED else S.CANCEL_PENDING, now, reason)
        if order.status is S.CANCEL_PENDING:
            order.transition(S.CANCELED, now, reason)
    else:  # closed with a remainder (market IOC rest), expired
        order.transition(S.EXPIRED, now, reason)
