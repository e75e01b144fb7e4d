"""The one event loop: venue events -> book -> strategy -> risk -> venue commands.

The engine never asks whether it is live: the venue, the clock and the
recorder are what differ between the simulator, replay and live trading.

A number that is not finite (inf, nan) is never acted on: a settlement with
such a rate (or such a mark while a position accrues at it) is not booked
and a transfer of such an amount is not asked for; either halts the kill
switch, with one critical alert per kind.
A transfer the venue refused is not asked for again at the same instant, so
each event leads to a bounded number of requests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import attrs

from fundarb.core import risk
from fundarb.core.book import PositionBook
from fundarb.core.clock import SimClock
from fundarb.core.market_guard import MarketGuard
from fundarb.core.model import (
    Alert,
    Charge,
    Fill,
    FundingRate,
    FundingSettlement,
    IndexPrice,
    MarkPrice,
    OrderIntent,
    OrderUpdate,
    Quote,
    Timer,
    Trade,
    TransferDone,
    TransferRejected,
    TransferRequest,
)
from fundarb.core.orders import Order, OrderStatus, client_order_id
from fundarb.core.strategy import CarryStrategy
from fundarb.core.venue import Venue


class Recorder(Protocol):
    """Where the decision log goes (memory for a backtest, SQLite live)."""

    def record(self, kind: str, row: dict[str, Any]) -> None: ...


class NullRecorder:
    def record(self, kind: str, row: dict[str, Any]) -> None:
        pass


# the guard's series name per kind of price ("<series> <venue>"), and the field with its price
SERIES = {Quote: "quote", MarkPrice: "mark", IndexPrice: "index"}
PRICE_FIELD = {Quote: "mid", MarkPrice: "mark", IndexPrice: "index"}

CURVE_FIELDS = ("ts", "equity", "funding", "fees", "delta", "drift", "margin_buffer", "leverage", "spot", "mark", "in_position",
                "held_pnl")


class Engine:
    def __init__(
        self,
        venue: Venue,
        book: PositionBook,
        strategy: CarryStrategy,
        monitor: risk.RiskMonitor,
        config_hash: str,
        clock: SimClock | None = None,
        recorder: Recorder | None = None,
        guard: MarketGuard | None = None,
    ) -> None:
        self.venue = venue
        self.book = book
        self.strategy = strategy
        self.monitor = monitor
        self.config_hash = config_hash
        self.clock = clock or SimClock()
        self.recorder = recorder or NullRecorder()
        self.orders: dict[str, Order] = {}
        self.open_orders: set[str] = set()
        self.intent_seq = 0
        self.transfer_pending = 0
        self._transfer_refused_at: int | None = None  # instant of the venue's last refusal of a transfer
        self._refused: set[str] = set()  # kinds of non-finite input already alerted
        self.spot_mid = math.nan
        self.last_trade: dict[str, float] = {}
        self.curve: dict[str, list[Any]] = {k: [] for k in CURVE_FIELDS}
        self.alerts: list[Alert] = []
        self.vetoes = 0
        # drift when the last order in flight ends: between hourly marks this is
        # where a partial fill or a rejected leg shows as exposure
        self.settled_drift_max = 0.0
        self.on_timer: Callable[[int], None] | None = None
        # every market price passes the guard before it reaches the book (and
        # so the drawdown the kill switch measures); prices the book already
        # holds (a runner's start from the venues) are its first references
        self.guard = guard or MarketGuard()
        self._keys: dict[type, dict[str, str]] = {kind: {} for kind in SERIES}  # kind -> venue -> series name
        self._quote_keys = self._keys[Quote]
        for account, kind in ((book.spot_venue, Quote), (book.perp_venue, MarkPrice)):
            self.guard.seed(self._key(kind, account), self.clock.now_ns(), book.accounts[account].price)
        # what the guard did (held, accepted, dropped, ...), for a runner to log and count
        self.price_notes: list[Any] = []
        self._handlers: dict[type, Callable[[Any], bool]] = {
            Quote: self._on_quote,
            MarkPrice: self._on_mark,
            IndexPrice: self._on_index,
            FundingSettlement: self._on_settlement,
            FundingRate: self._on_rate,
            Fill: self._on_fill,
            OrderUpdate: self._on_update,
            TransferDone: self._on_transfer,
            TransferRejected: self._on_transfer_rejected,
            Charge: self._on_charge,
            Alert: self._on_alert,
            Timer: self._on_timer,
            Trade: self._on_trade,
        }

    # --- loop -------------------------------------------------------------
    def run(self) -> None:
        for event in self.venue.events():
            self.on_event(event)

    def on_event(self, event: Any) -> None:
        ts = event.ts
        self.clock.advance_to(ts)
        kind = type(event)
        if self._handlers[kind](event):
            self._monitor(ts)
        # the strategy is asked while no order is in flight; a quote or a mark moves only a price and the time,
        # so not before the instant its last answer promised to stay nothing (``CarryStrategy.still_until``;
        # a risk action on the mark withdraws the promise, ``_monitor``)
        price_only = kind is Quote or kind is MarkPrice
        if not self.open_orders and (ts >= self.strategy.still_until or not price_only):
            self._decide(ts)
        elif not price_only:
            self.strategy.still_until = 0  # not asked after this event: its promise may no longer hold

    # --- market prices: only what the guard accepts reaches the book -----------
    def _key(self, kind: type, venue: str) -> str:
        keys = self._keys[kind]
        key = keys.get(venue)
        if key is None:
            key = keys[venue] = f"{SERIES[kind]} {venue}"
        return key

    def screen(self, event: Any) -> tuple[Any, ...]:
        """The market events to pass on now for ``event``: itself when its
        price is accepted, nothing while it is held, a held event before it
        when this one confirms it. Other events pass as they are. A venue
        that acts on prices (the paper runner's simulator) is fed through
        this; the engine screens every price itself again, and an accepted
        price seen again is accepted at once."""
        t = type(event)
        if t in PRICE_FIELD:  # an index too: a series of its own, judged like a price, a reference for the others
            out = self.guard.observe(self._key(t, event.venue), event.ts, getattr(event, PRICE_FIELD[t]), event)
        elif t is FundingSettlement:  # settled at the last accepted mark when its own is not plausible
            mark = self.guard.settlement_price(self._key(MarkPrice, event.venue), event.ts, event.mark)
            out = (event if mark == event.mark else attrs.evolve(event, mark=mark, mark_source="last_accepted_mark"),)
        else:
            return (event,)
        if self.guard.notes:
            self._guard_notes()
        return out

    def _guard_notes(self) -> None:
        for n in self.guard.notes:
            self.price_notes.append(n)
            if n.what in ("held", "refused", "replaced"):  # once per episode: a repeat is not a new problem
                self._alert(Alert(n.ts, "implausible_price", n.message, "warning"))
        self.guard.notes.clear()

    def _apply_prices(self, events: tuple[Any, ...]) -> bool:
        risk_again = False
        for ev in events:
            t = type(ev)
            if t is Quote:
                self._apply_quote(ev.venue, ev.mid)
            elif t is MarkPrice:
                self.book.revalue(ev.venue, ev.mark)
                risk_again = not self.book.is_flat
            # an IndexPrice values nothing: the guard keeps it as a reference
        return risk_again

    def _apply_quote(self, venue: str, mid: float) -> None:
        """An accepted quote: the spot venue's mid values the spot leg (a perp quote values nothing)."""
        if venue == self.book.spot_venue:
            self.spot_mid = mid
            self.book.revalue(venue, mid)

    # --- handlers: return True when risk should look again ------------------
    def _on_quote(self, q: Quote) -> bool:
        # most events are quotes, and the guard passes nearly all of them on as
        # they are: its cheap test first, then screen + _apply_prices for the rest
        mid = q.mid
        if self.guard.accept_plain(self._quote_keys.get(q.venue) or self._key(Quote, q.venue), q.ts, mid):
            self._apply_quote(q.venue, mid)
            return False
        return self._apply_prices(self.screen(q))

    def _on_trade(self, t: Trade) -> bool:
        self.last_trade[t.venue] = t.price
        return False

    def _on_mark(self, m: MarkPrice) -> bool:
        return self._apply_prices(self.screen(m))

    def _on_index(self, i: IndexPrice) -> bool:
        # not applied to the book, but it may confirm a held mark or quote, which is
        return self._apply_prices(self.screen(i))

    def _on_settlement(self, s: FundingSettlement) -> bool:
        s, = self.screen(s)
        # a rate feeds the signal and, with the mark, a position's funding: neither is taken from inf or nan
        # (a mark no one has is harmless while the leg is flat: nothing accrues at it)
        if not math.isfinite(s.rate) or (not math.isfinite(s.mark) and self.book.accounts[s.venue].qty != 0):
            self._refuse_non_finite(s.ts, "settlement", f"{s.venue} funding settlement refused: rate {s.rate} and mark "
                                    f"{s.mark} must be finite numbers")
            return True
        entry = self.book.apply_funding(s)
        self.strategy.on_settlement(s.venue, s.ts, s.rate, s.interval_hours)
        if entry is not None:
            self.recorder.record("funding", {
                "ts": s.ts, "venue": s.venue, "qty": entry.qty, "rate": s.rate, "mark": s.mark,
                "amount": entry.amount, "mark_source": s.mark_source,
            })
        return entry is not None

    def _on_rate(self, r: FundingRate) -> bool:
        self.strategy.on_rate(r.venue, r.predicted_rate, r.interval_hours, r.next_funding_ts)
        return False

    def _on_fill(self, f: Fill) -> bool:
        self.book.apply_fill(f)
        order = self.orders.get(f.client_id)
        if order is not None:
            order.apply_fill(f)
            self._order_changed(order)
        self.recorder.record("fill", {
            "ts": f.ts, "venue": f.venue, "client_id": f.client_id, "side": f.side.value, "qty": f.qty,
            "price": f.price, "mid": f.mid, "fee": f.fee, "liquidity": f.liquidity.value, "liquidation": f.liquidation,
        })
        return True

    def _on_update(self, u: OrderUpdate) -> bool:
        order = self.orders[u.client_id]
        order.transition(OrderStatus(u.status), u.ts, u.reason)
        self._order_changed(order)
        return not order.is_open

    def _on_transfer(self, t: TransferDone) -> bool:
        self.book.transfer_in(t)
        self.transfer_pending -= 1
        self.recorder.record("transfer", {
            "ts": t.ts, "transfer_id": t.transfer_id, "from_venue": t.from_venue, "to_venue": t.to_venue,
            "amount": t.amount, "fee": t.fee, "status": "arrived",
        })
        return True

    def _on_transfer_rejected(self, t: TransferRejected) -> bool:
        self.book.transfer_back(t.from_venue, t.amount)
        self.transfer_pending -= 1
        self._transfer_refused_at = t.ts
        self.recorder.record("transfer", {
            "ts": t.ts, "transfer_id": "", "from_venue": t.from_venue, "to_venue": t.to_venue,
            "amount": t.amount, "fee": 0.0, "status": "rejected",
        })
        self._alert(Alert(t.ts, "transfer_rejected", t.reason))
        return True

    def _on_charge(self, c: Charge) -> bool:
        self.book.charge(c.venue, c.amount)
        self.recorder.record("charge", {"ts": c.ts, "venue": c.venue, "amount": c.amount, "kind": c.kind})
        return False

    def _on_alert(self, a: Alert) -> bool:
        self._alert(a)
        return False

    def _on_timer(self, t: Timer) -> bool:
        self._snapshot(t.ts)
        if self.on_timer is not None:
            self.on_timer(t.ts)
        return True

    # --- decisions ------------------------------------------------------------
    def _decide(self, now: int) -> None:
        if self.monitor.kill.halted and self.book.is_flat:
            self.strategy.still_until = 0  # not asked: after a resume it is asked afresh
            return  # halted: no entries until resumed, and nothing left to exit
        intents = self.strategy.decide(self.book, self.spot_mid, now)
        if intents:
            self._submit_checked(intents, now)

    def halt(self, reason: str, now: int, flatten: bool) -> None:
        """The kill switch from outside the core (a command, a reconciliation
        mismatch): no new entries; with ``flatten`` both legs are closed now,
        whatever ``risk.flatten_on_kill`` says."""
        if self.monitor.kill.halt(reason, now):
            self._alert(Alert(now, "kill_switch", f"halted: {reason}", "critical"))
        if flatten and not self.book.is_flat and not self.open_orders:
            # one attempt, shared with the monitor's own flatten: a refused close
            # is not re-sent on the next call, only after the positions change
            intents = self.monitor.begin_flatten(self.book)
            if intents:
                self._submit_checked(intents, now)

    def _monitor(self, now: int) -> None:
        actions = self.monitor.evaluate(self.book, now, bool(self.open_orders), self.transfer_pending > 0)
        if actions is risk.NO_ACTION:
            return
        self.strategy.still_until = 0  # the risk monitor acted: the strategy is asked afresh
        for a in actions.alerts:
            self._alert(a)
        if actions.transfer_to_perp > 0:
            self._transfer(now, self.book.spot_venue, self.book.perp_venue, actions.transfer_to_perp)
        if actions.transfer is not None:
            self._transfer(now, *actions.transfer)
        if actions.intents:
            self._submit_checked(list(actions.intents), now)

    def _submit_checked(self, intents: list[OrderIntent], now: int) -> None:
        approved, vetoes = risk.check(intents, self.book, self.spot_mid, self.monitor.limits, self.monitor.costs, self.monitor.kill)
        if vetoes:
            for v in vetoes:
                self.vetoes += 1
                self.recorder.record("veto", {"ts": now, "venue": v.intent.venue, "side": v.intent.side.value,
                                              "qty": v.intent.qty, "reason": v.intent.reason, "why": v.reason})
            if any(v.intent.reason == "entry" for v in vetoes):
                self.strategy.abandon(now)  # the entry did not happen: wait out the cooldown
        for intent in approved:
            self._send(intent, now)

    def _send(self, intent: OrderIntent, now: int) -> None:
        """Log the intent and book the order as submitted, then hand it to the
        venue: the decision log is written ahead, so a crash after the hand-off
        never leaves an order at the venue that the log does not hold."""
        self.intent_seq += 1
        order = Order.from_intent(intent, client_order_id(self.config_hash, self.intent_seq), now)
        self.recorder.record("intent", {
            "ts": now, "client_id": order.client_id, "venue": intent.venue, "side": intent.side.value,
            "qty": intent.qty, "reason": intent.reason, "pair_id": intent.pair_id, "reduce_only": intent.reduce_only,
        })
        order.transition(OrderStatus.SUBMITTED, now)
        self.orders[order.client_id] = order
        self.open_orders.add(order.client_id)
        self._order_changed(order)
        self.venue.submit(order)

    def _order_changed(self, order: Order) -> None:
        if not order.is_open:
            self.open_orders.discard(order.client_id)
            if not self.open_orders:
                drift = self.book.drift
                if drift > self.settled_drift_max:
                    self.settled_drift_max = drift
        self.recorder.record("order", {
            "ts": order.ts_updated, "client_id": order.client_id, "venue": order.venue, "side": order.side.value,
            "qty": order.qty, "filled_qty": order.filled_qty, "avg_price": order.avg_price, "fees": order.fees,
            "status": order.status.value, "reason": order.reason, "status_reason": order.status_reason,
            "pair_id": order.pair_id,
        })

    def _transfer(self, now: int, src: str, dst: str, amount: float) -> None:
        if not math.isfinite(amount):
            self._refuse_non_finite(now, "transfer", f"transfer of {amount} from {src} to {dst} refused: "
                                    "not a finite amount")
            return
        if amount <= 0 or self.book.accounts[src].cash < amount:
            return
        if now == self._transfer_refused_at:
            return  # the venue refused a transfer at this instant: ask again on a later event, not in a loop
        self.book.transfer_out(src, amount)
        self.transfer_pending += 1
        self.recorder.record("transfer", {"ts": now, "transfer_id": "", "from_venue": src, "to_venue": dst,
                                          "amount": amount, "fee": 0.0, "status": "requested"})
        self.venue.request_transfer(TransferRequest(now, src, dst, amount))

    def _refuse_non_finite(self, now: int, kind: str, message: str) -> None:
        """Something computed from an inf or nan reached an action: it is not
        taken, the kill switch halts (no new entries), and each kind is
        alerted once, however often it repeats."""
        if kind not in self._refused:
            self._refused.add(kind)
            self._alert(Alert(now, "non_finite", message, "critical"))
        self.halt(f"not a finite number: {message}", now, flatten=False)

    def _alert(self, a: Alert) -> None:
        self.alerts.append(a)
        self.recorder.record("alert", {"ts": a.ts, "kind": a.kind, "severity": a.severity, "message": a.message})

    def _snapshot(self, ts: int) -> None:
        b, c = self.book, self.curve
        # a book holding a non-finite number has no margin buffer to show (and
        # the venue's tiers cannot place a liquidation for it)
        buf = b.margin_buffer(self.monitor.costs.margin) if math.isfinite(b.equity) else math.nan
        c["ts"].append(ts)
        c["equity"].append(b.equity)
        c["funding"].append(b.funding)
        c["fees"].append(b.fees)
        c["delta"].append(b.delta)
        c["drift"].append(b.drift)
        c["margin_buffer"].append(buf if math.isfinite(buf) else math.nan)
        c["leverage"].append(b.leverage())
        c["spot"].append(b.spot.price)
        c["mark"].append(b.perp.price)
        c["in_position"].append(not b.is_flat)
        c["held_pnl"].append(b.held_pnl)
