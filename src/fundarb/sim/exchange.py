"""The discrete-event simulator: one or more simulated accounts behind the
`Venue` interface, driven by a time-ordered tape of market events.

Each account keeps its own balances (the exchange's truth, separate from the
engine's PositionBook). Orders arrive after a seeded latency and fill against
the market *at arrival*; an order larger than the quote's depth fills partly
and the rest waits for later quotes until its time-to-live. Perp accounts are
margined and liquidated; funding settles at the tape's real settlement times
with the real rate and mark; transfers between accounts take a delay and a fee.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import attrs
import numpy as np

from fundarb.config import VenueConfig
from fundarb.core.book import OWN_COLLATERAL, Collateral, VenueAccount, linear_equity, liquidation_of
from fundarb.core.funding import MissingFundingSettlement, next_settlement
from fundarb.core.liquidation import MarginRule
from fundarb.core.model import (
    HOURS_PER_YEAR,
    NS_PER_HOUR,
    Alert,
    Charge,
    Fill,
    FundingSettlement,
    Liquidity,
    MarketKind,
    MarkPrice,
    OrderUpdate,
    Quote,
    Side,
    Timer,
    TransferDone,
    TransferRejected,
    TransferRequest,
)
from fundarb.core.orders import Order, OrderStatus
from fundarb.data.margin_tiers import shipped_rule
from fundarb.sim import queue as q
from fundarb.sim.models import (
    FeeModel,
    LatencyModel,
    SlippageModel,
    over_venue_leverage,
    seconds,
    spot_buy_short_of_cash,
)


def _shipped_margin(spec: SimVenueSpec) -> MarginRule | None:
    return shipped_rule(spec.venue.exchange, spec.venue.symbol) if spec.kind is MarketKind.PERP else None


@attrs.frozen
class SimVenueSpec:
    """One simulated account: its name, market kind, starting cash, the
    venue's cost parameters (a `VenueConfig`) and, for a perp, the venue's
    liquidation rule (``margin``; default: the shipped snapshot's rule of the
    configured exchange and symbol, which raises when used on a market it
    does not model). The account is one wallet backing one position: the
    rule's cross mode."""

    name: str
    kind: MarketKind
    cash: float
    venue: VenueConfig
    allow_short: bool = False  # spot margin short (reverse carry)
    margin: MarginRule | None = attrs.field(default=attrs.Factory(_shipped_margin, takes_self=True))
    contract_size: float = 0.0  # an inverse perp's USD per contract (orders in contracts, PnL in BTC)
    btc: float = 0.0  # spot: BTC held from the start (a capital held in BTC)

    def __attrs_post_init__(self) -> None:
        if self.kind is MarketKind.PERP and self.margin is None:
            raise ValueError(f"perp account {self.name} needs its venue's margin rule")

    @property
    def symbol(self) -> str:
        return self.venue.symbol


@attrs.define(slots=True)
class _Working:
    """The simulator's copy of a live order."""

    order: Order
    remaining: float
    expires: int
    canceled: bool = False
    arrived: bool = False


class _SimAccount:
    __slots__ = ("spec", "is_spot", "acct", "fees", "slip", "latency", "quote", "depth_buy", "depth_sell", "resting")

    def __init__(self, spec: SimVenueSpec, seeds: np.random.SeedSequence) -> None:
        lat_seed, slip_seed = seeds.spawn(2)
        v = spec.venue
        self.spec = spec
        self.is_spot = spec.kind is MarketKind.SPOT
        self.acct = VenueAccount(spec.name, spec.kind, spec.cash, qty=spec.btc, contract_size=spec.contract_size)
        self.fees = FeeModel(v.maker_fee, v.taker_fee)
        self.slip = SlippageModel(v.half_spread_bp_min, v.half_spread_bp_max, v.impact_bp_per_btc, np.random.default_rng(slip_seed))
        self.latency = LatencyModel(v.latency_ms_median, v.latency_sigma, np.random.default_rng(lat_seed))
        self.quote: Quote | None = None
        self.depth_buy = 0.0
        self.depth_sell = 0.0
        self.resting: list[_Working] = []


class SimExchange:
    """Implements `fundarb.core.venue.Venue`."""

    def __init__(
        self,
        specs: Iterable[SimVenueSpec],
        tape: Iterable[tuple[int, int, Any]],
        seeds: np.random.SeedSequence,
        transfer_delay_s: float = 3600.0,
        transfer_fee: float = 0.0,
        funding_schedule: dict[str, tuple[int, float]] | None = None,
        collateral: Collateral = OWN_COLLATERAL,
    ) -> None:
        specs = list(specs)
        # what margins a perp account: the spot account's BTC (coin-margined) or
        # the whole unified account count beside its own wallet
        self.collateral = collateral
        self._spot_of = next((s.name for s in specs if s.kind is MarketKind.SPOT), None)
        self._perp_of = next((s.name for s in specs if s.kind is MarketKind.PERP), None)
        children = seeds.spawn(len(specs))
        self.accounts = {s.name: _SimAccount(s, c) for s, c in zip(specs, children)}
        self._tape = iter(tape)
        self._queue = q.EventQueue()
        self._out: deque[Any] = deque()
        self._working: dict[str, _Working] = {}
        self.now = 0
        self.transfer_delay = seconds(transfer_delay_s)
        self.transfer_fee = transfer_fee
        # how long past the tape's last event the simulator runs on: long enough for
        # what is in flight then to land (a transfer) or expire (an order's time-to-live)
        self.settle_after_end = max([self.transfer_delay] + [seconds(s.venue.order_ttl_seconds) for s in specs])
        # venue -> (next expected settlement ts, interval hours)
        self._next_funding = dict(funding_schedule or {})
        self._funding_due = 0
        self._update_funding_due()
        self._liq_seq = 0
        self._xfer_seq = 0
        self._last_timer: int | None = None
        self.liquidations = 0
        self.requested_qty = 0.0
        self.filled_qty = 0.0

    # --- Venue interface ------------------------------------------------
    def submit(self, order: Order) -> None:
        sim = self.accounts[order.venue]
        ttl = seconds(sim.spec.venue.order_ttl_seconds)
        arrive = self.now + sim.latency.delay_ns()
        w = _Working(order, order.qty, arrive + ttl)
        self._working[order.client_id] = w
        self.requested_qty += self._btc(sim, order.qty)
        self._queue.push(arrive, q.P_ORDER, ("arrive", w))

    def cancel(self, client_id: str) -> None:
        w = self._working.get(client_id)
        if w is None:
            return
        delay = self.accounts[w.order.venue].latency.delay_ns()
        self._queue.push(self.now + delay, q.P_CANCEL, ("cancel", w))

    def request_transfer(self, request: TransferRequest) -> None:
        src = self.accounts[request.from_venue].acct
        if request.amount <= 0 or src.cash < request.amount:
            why = f"cash {src.cash:,.2f} on {request.from_venue} does not cover {request.amount:,.2f}"
            self._out.append(TransferRejected(self.now, request.from_venue, request.to_venue, request.amount, why))
            return
        src.cash -= request.amount
        self._xfer_seq += 1
        tid = request.transfer_id or f"xfer-{self._xfer_seq}"
        done = TransferDone(self.now + self.transfer_delay, tid, request.from_venue, request.to_venue, request.amount, self.transfer_fee)
        self._queue.push(done.ts, q.P_TRANSFER, ("transfer", done))

    def transfers_in_flight(self) -> list[TransferDone]:
        """The transfers requested and not yet arrived (each as it will arrive)."""
        return [what for _, _, _, (tag, what) in sorted(self._queue.heap) if tag == "transfer"]

    def events(self) -> Iterator[Any]:
        out = self._out
        heap = self._queue.heap
        tape = self._tape
        tape_next = next(tape, None)
        tape_end: int | None = None
        while True:
            while out:
                yield out.popleft()
            if tape_next is not None and (not heap or (tape_next[0], tape_next[1]) <= heap[0][:2]):
                ts, prio, event = tape_next
                tape_next = next(tape, None)
                if ts < self.now or ts >= self._funding_due:
                    self._advance(ts, prio)  # its checks: time going back, a settlement due
                else:
                    self.now = ts
                if type(event) is Quote:  # most of a tape: the quote's own path, without the dispatch
                    self._on_quote(event)
                else:
                    self._on_market(event)
                yield event  # the event itself goes before what it caused
            elif heap:
                if tape_next is None:
                    # past the tape's last event: its settlements are past the data, so
                    # none can be missing (a transfer landing on the window's end must
                    # not ask for a settlement the window does not hold)
                    self._funding_due = 1 << 62
                    if tape_end is None:
                        tape_end = self.now
                    if heap[0][0] > tape_end + self.settle_after_end:
                        # what was in flight at the data's end has landed or expired; an
                        # order sent again after that would wait for a quote that never comes
                        return
                ts, prio, item = self._queue.pop()
                self._advance(ts, prio)
                self._on_internal(item)
            else:
                return

    def feed(self, ts: int, prio: int, event: Any) -> Iterator[Any]:
        """Push one market event from outside (paper trading on a live feed):
        what falls due before it first, then the event, then what it caused.
        The same order ``events`` keeps for a tape."""
        out, heap = self._out, self._queue.heap
        while True:
            while out:
                yield out.popleft()
            if not (heap and heap[0][:2] < (ts, prio)):
                break
            t, p, item = self._queue.pop()
            self._advance(t, p)
            self._on_internal(item)
        self._advance(ts, prio)
        self._on_market(event)
        yield event
        while out:
            yield out.popleft()

    # --- time and funding schedule ----------------------------------------
    def _advance(self, ts: int, prio: int) -> None:
        if ts < self.now:
            raise RuntimeError(f"simulator time went back: {ts} < {self.now}")
        self.now = ts
        if ts >= self._funding_due:
            self._check_funding(ts, prio)

    def _check_funding(self, ts: int, prio: int) -> None:
        for venue, (expected, interval) in list(self._next_funding.items()):
            # past the instant, or at it after the settlement's own slot: an
            # order arriving at the instant must not hide a missing payment
            if ts > expected or (ts == expected and prio > q.P_FUNDING):
                self._missed_funding(venue, expected, interval, ts)

    def _missed_funding(self, venue: str, expected: int, interval: float, ts: int) -> None:
        sim = self.accounts[venue]
        if sim.acct.qty != 0:
            stamp = datetime.fromtimestamp(expected / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M")
            raise MissingFundingSettlement(
                f"{venue} {sim.spec.symbol}: no funding settlement at {stamp} UTC while a position of "
                f"{sim.acct.qty:+.6f} BTC was open; refusing to treat it as zero"
            )
        while expected <= ts:  # flat through a gap in the schedule: nothing was owed
            expected = next_settlement(expected, interval)
        self._next_funding[venue] = (expected, interval)
        self._update_funding_due()

    def _update_funding_due(self) -> None:
        self._funding_due = min((e for e, _ in self._next_funding.values()), default=1 << 62)

    # --- market events ------------------------------------------------------
    def _on_market(self, event: Any) -> None:
        kind = type(event)
        if kind is Quote:
            self._on_quote(event)
        elif kind is MarkPrice:
            sim = self.accounts[event.venue]
            sim.acct.price = event.mark
            if sim.acct.qty != 0:
                self._check_liquidation(sim)
        elif kind is FundingSettlement:
            self._settle(event)
        elif kind is Timer:
            self._charge_borrow()

    def _on_quote(self, q: Quote) -> None:
        sim = self.accounts.get(q.venue)
        if sim is None:
            return
        sim.quote = q
        sim.depth_buy, sim.depth_sell = q.ask_size, q.bid_size
        if sim.is_spot:
            sim.acct.price = q.mid
        if sim.resting:
            self._match_resting(sim)

    def _settle(self, s: FundingSettlement) -> None:
        sim = self.accounts[s.venue]
        if sim.acct.qty != 0:
            sim.acct.settle_funding(s.mark, s.rate)
            self._sweep(sim)
        if s.venue in self._next_funding:
            self._next_funding[s.venue] = (next_settlement(s.ts, s.interval_hours), s.interval_hours)
            self._update_funding_due()

    def _charge_borrow(self) -> None:
        # interest for the time since the last timer (an hour on history
        # tapes; a replay ticks more often)
        hours = 1.0 if self._last_timer is None else (self.now - self._last_timer) / NS_PER_HOUR
        self._last_timer = self.now
        for sim in self.accounts.values():
            a = sim.acct
            if sim.spec.kind is MarketKind.SPOT and a.qty < 0 and sim.spec.venue.borrow_rate_annual > 0:
                amount = -a.qty * a.price * sim.spec.venue.borrow_rate_annual * hours / HOURS_PER_YEAR
                a.cash -= amount
                a.fees += amount
                self._out.append(Charge(self.now, sim.spec.name, amount, "borrow_interest"))

    def _btc(self, sim: _SimAccount, units: float) -> float:
        """BTC of an order of ``units`` on this account, at its market now."""
        if not sim.acct.contract_size:
            return units
        price = sim.quote.mid if sim.quote is not None else sim.acct.price
        return sim.acct.btc_of(units, price) if price == price and price > 0 else 0.0

    def _sweep(self, sim: _SimAccount) -> None:
        """Coin-margined: the perp's settled BTC joins the spot balance, and
        a spot sale waiting for it (an exit that landed first) fills now."""
        if sim.spec.kind is MarketKind.PERP and self._spot_of is not None and (sim.acct.coin or sim.acct.cash):
            self.collateral.sweep(self._spot_acct(), sim.acct)
            spot = self.accounts[self._spot_of]
            if spot.resting and spot.quote is not None:
                self._match_resting(spot)

    def _perp_acct(self) -> VenueAccount:
        assert self._perp_of is not None
        return self.accounts[self._perp_of].acct

    def _spot_acct(self) -> VenueAccount:
        if self._spot_of is None:
            return VenueAccount("", MarketKind.SPOT, 0.0)
        return self.accounts[self._spot_of].acct

    def _check_liquidation(self, sim: _SimAccount) -> None:
        a, spec = sim.acct, sim.spec
        assert spec.margin is not None  # a perp's: checked when the spec was made
        liq = liquidation_of(spec.margin, self.collateral, self._spot_acct(), a)
        mark = a.price
        if not ((a.qty < 0 and mark >= liq) or (a.qty > 0 and mark <= liq)):
            return
        # Closed at the liquidation price even when the mark jumped past it:
        # the account loses its margin down to maintenance plus the penalty,
        # and a gap beyond that is the venue's insurance fund's, not ours.
        price = liq
        qty = abs(a.units)
        side = Side.BUY if a.qty < 0 else Side.SELL
        left = self.collateral.margin_equity(self._spot_acct(), attrs.evolve(a, price=price))
        if a.contract_size:  # the penalty is BTC: what is left, and the rate of the notional, in BTC
            fee = max(min(a.fee_for(spec.venue.liquidation_fee_rate, qty, price), left / price), 0.0)
        else:
            fee = max(min(spec.venue.liquidation_fee_rate * qty * price, left), 0.0)
        self._liq_seq += 1
        self.liquidations += 1
        fill = Fill(self.now, spec.name, f"liq-{self._liq_seq}", side, qty, price, mark, fee, Liquidity.TAKER, True)
        a.trade(side.sign * qty, price, fee)
        self._sweep(self.accounts[spec.name])
        self._out.append(Alert(self.now, "liquidation", f"{spec.name} perp liquidated: {qty:.4f} "
                               f"{'contracts' if a.contract_size else 'BTC'} at {price:,.2f}", "critical"))
        self._out.append(fill)

    # --- orders -------------------------------------------------------------
    def _on_internal(self, item: tuple[str, Any]) -> None:
        what, payload = item
        if what == "arrive":
            self._arrive(payload)
        elif what == "cancel":
            self._cancel(payload)
        elif what == "expire":
            self._expire(payload)
        elif what == "transfer":
            self.accounts[payload.to_venue].acct.cash += payload.amount - payload.fee
            self._out.append(payload)

    def _update(self, w: _Working, status: OrderStatus, reason: str = "") -> None:
        self._out.append(OrderUpdate(self.now, w.order.venue, w.order.client_id, status.value, reason))

    def _arrive(self, w: _Working) -> None:
        w.arrived = True
        if w.canceled:
            return
        sim = self.accounts[w.order.venue]
        reason = self._reject_reason(sim, w.order)
        if reason:
            self._working.pop(w.order.client_id, None)
            self._update(w, OrderStatus.REJECTED, reason)
            return
        self._update(w, OrderStatus.ACCEPTED)
        self._fill_against_quote(sim, w, at_arrival=True)
        if w.remaining > 1e-12:
            sim.resting.append(w)
            self._queue.push(w.expires, q.P_EXPIRY, ("expire", w))

    def _reject_reason(self, sim: _SimAccount, order: Order) -> str:
        a, quote = sim.acct, sim.quote
        if quote is None:
            return "no market yet"
        sign = order.side.sign
        if order.reduce_only and (a.qty == 0 or (a.qty > 0) == (sign > 0)):
            return "reduce-only order would not reduce the position"
        price = quote.mid
        if sim.spec.kind is MarketKind.SPOT:
            v = sim.spec.venue
            if sign > 0 and spot_buy_short_of_cash(a.cash, order.qty, quote.ask, price, v.half_spread_bp_max,
                                                   v.impact_bp_per_btc, v.taker_fee, quote.ask > quote.bid):
                return f"insufficient balance: {a.cash:,.2f} for {order.qty} BTC"
            held = self.collateral.exit_btc(a, self._perp_acct()) if self._perp_of is not None else a.qty
            if sign < 0 and held - order.qty < -1e-12 and not sim.spec.allow_short:
                return f"insufficient balance: {held:.6f} BTC held"
            return ""
        new_qty = a.qty + sign * a.btc_of(order.qty, price)
        if a.contract_size or self.collateral is not OWN_COLLATERAL:
            equity = self.collateral.margin_equity(self._spot_acct(), attrs.evolve(a, price=price))
        else:
            equity = linear_equity(a.cash, a.qty, price, a.entry)
        if over_venue_leverage(a.qty, new_qty, price, equity, sim.spec.venue.max_venue_leverage):
            return "insufficient margin"
        return ""

    def _fill_against_quote(self, sim: _SimAccount, w: _Working, at_arrival: bool) -> None:
        quote = sim.quote
        assert quote is not None, "an order fills only against a quote"
        order = w.order
        sign = order.side.sign
        depth = sim.depth_buy if sign > 0 else sim.depth_sell
        inverse = sim.acct.contract_size > 0
        if inverse:  # depth and impact are BTC; the order is whole contracts
            per_btc = quote.mid / sim.acct.contract_size
            qty = min(w.remaining, math.floor(depth * per_btc + 1e-9))
            if order.reduce_only:
                qty = min(qty, abs(sim.acct.units))
            if qty <= 1e-12:
                return
            price = sim.slip.price(quote, sign, qty / per_btc)
        else:
            qty = min(w.remaining, depth)
            if order.reduce_only:
                qty = min(qty, abs(sim.acct.qty))
            if qty <= 1e-12:
                return
            price = sim.slip.price(quote, sign, qty)
        maker = False
        if order.limit_price is not None:
            if (sign > 0 and price > order.limit_price) or (sign < 0 and price < order.limit_price):
                if at_arrival:
                    return
                # a resting limit order fills at its own price when the market trades through it
                if (sign > 0 and quote.ask > order.limit_price) or (sign < 0 and quote.bid < order.limit_price):
                    return
                price, maker = order.limit_price, True
        btc = sim.acct.btc_of(qty, quote.mid) if inverse else qty
        if sign > 0:
            sim.depth_buy -= btc
        else:
            sim.depth_sell -= btc
        fee = sim.acct.fee_for(sim.fees.taker if not maker else sim.fees.maker, qty, price) if inverse else sim.fees.fee(qty, price, maker)
        sim.acct.trade(sign * qty, price, fee)
        self._sweep(sim)
        w.remaining -= qty
        self.filled_qty += btc
        if w.remaining <= 1e-12:
            w.remaining = 0.0
            self._working.pop(order.client_id, None)
        self._out.append(
            Fill(self.now, order.venue, order.client_id, order.side, qty, price, quote.mid, fee,
                 Liquidity.MAKER if maker else Liquidity.TAKER)
        )

    def _match_resting(self, sim: _SimAccount) -> None:
        still = []
        for w in sim.resting:
            if not w.canceled and w.remaining > 1e-12:
                self._fill_against_quote(sim, w, at_arrival=False)
                if w.remaining > 1e-12:
                    still.append(w)
        sim.resting = still

    def _cancel(self, w: _Working) -> None:
        if w.remaining <= 1e-12 or w.canceled:
            return
        if not w.arrived:
            w.canceled = True
            self._working.pop(w.order.client_id, None)
            self._update(w, OrderStatus.CANCELED, "canceled before it reached the venue")
            return
        w.canceled = True
        self._working.pop(w.order.client_id, None)
        self._update(w, OrderStatus.CANCELED)

    def _expire(self, w: _Working) -> None:
        if w.remaining <= 1e-12 or w.canceled:
            return
        w.canceled = True
        self._working.pop(w.order.client_id, None)
        self._update(w, OrderStatus.EXPIRED, f"{w.remaining:.6f} BTC unfilled at time-to-live")
