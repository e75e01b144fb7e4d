"""PositionBook: legs, cash per venue, fees, slippage, funding ledger, delta, PnL.

Accounting identity the book keeps (tests hold it to 1e-9 relative):

    equity - initial_equity == funding - fees - slippage + price_pnl

where ``price_pnl`` accrues as ``qty * (new_price - old_price)`` on every
revaluation, ``slippage`` is ``side * qty * (fill_price - valuation_price)``
and every other cash move (transfers in flight included) is internal.
Valuation price: the mid for spot, the mark for a perp.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from fundarb.core.liquidation import CROSS, MarginRule
from fundarb.core.model import Fill, FundingSettlement, MarketKind, TransferDone

INF = float("inf")
# The book's perp account is one wallet backing one position: the venue's
# cross-margin rule with that account's cash as the cross wallet balance.
BOOK_MARGIN_MODE = CROSS


def drift_of(spot_qty: float, perp_qty: float, floor: float = 1e-12) -> float:
    """|delta| / max(|spot|, |perp|); 0 when both legs are under ``floor``.
    (``PositionBook.drift`` inlines the same rule on its hot path.)"""
    size = max(abs(spot_qty), abs(perp_qty))
    return abs(spot_qty + perp_qty) / size if size > floor else 0.0


def margin_buffer(liq: float, mark: float, qty: float) -> float:
    """Distance from mark to liquidation as a fraction of mark, positive while
    safe: (liq - mark)/mark for a short, (mark - liq)/mark for a long."""
    if qty == 0 or math.isnan(liq):
        return INF
    return (liq - mark) / mark if qty < 0 else (mark - liq) / mark


@attrs.define(slots=True)
class VenueAccount:
    venue: str
    kind: MarketKind
    cash: float
    qty: float = 0.0
    entry: float = 0.0  # perp average entry price
    price: float = math.nan  # valuation price: spot mid or perp mark
    fees: float = 0.0
    funding: float = 0.0
    realized: float = 0.0

    @property
    def unrealized(self) -> float:
        if self.kind is MarketKind.PERP and self.qty != 0:
            return self.qty * (self.price - self.entry)
        return 0.0

    @property
    def equity(self) -> float:
        if self.kind is MarketKind.SPOT:
            return self.cash + (self.qty * self.price if self.qty != 0 else 0.0)
        return self.cash + self.unrealized

    @property
    def notional(self) -> float:
        return abs(self.qty) * self.price if self.qty != 0 else 0.0

    def trade(self, signed_qty: float, price: float, fee: float) -> None:
        """Book an execution; cash moves by fee and (spot) the paid price,
        (perp) realized PnL of the part that reduces the position."""
        self.fees += fee
        self.cash -= fee
        if self.kind is MarketKind.SPOT:
            self.cash -= signed_qty * price
            self.qty += signed_qty
            return
        q = self.qty
        if q == 0 or (q > 0) == (signed_qty > 0):
            new_q = q + signed_qty
            self.entry = (abs(q) * self.entry + abs(signed_qty) * price) / abs(new_q)
            self.qty = new_q
            return
        closed = min(abs(signed_qty), abs(q))
        pnl = closed * (price - self.entry) * (1.0 if q > 0 else -1.0)
        self.realized += pnl
        self.cash += pnl
        rest = abs(signed_qty) - closed
        if rest > 0:  # flipped through zero: the remainder opens at this price
            self.qty = math.copysign(rest, signed_qty)
            self.entry = price
        else:
            self.qty = q + signed_qty
            if abs(self.qty) < 1e-12:
                self.qty = 0.0
                self.entry = 0.0


@attrs.frozen(slots=True)
class FundingEntry:
    ts: int
    venue: str
    qty: float
    rate: float
    mark: float
    amount: float
    mark_source: str


@attrs.define(slots=True)
class PositionBook:
    """The core's view of both legs. ``spot_venue``/``perp_venue`` name the
    accounts (they may be two accounts of one exchange)."""

    spot_venue: str
    perp_venue: str
    accounts: dict[str, VenueAccount]
    initial_equity: float
    in_transit: float = 0.0
    fees: float = 0.0
    slippage: float = 0.0
    funding_received: float = 0.0
    funding_paid: float = 0.0
    price_pnl: float = 0.0
    traded_qty: float = 0.0
    funding_ledger: list[FundingEntry] = attrs.field(factory=list)
    # [opened, closed] instants of the perp leg (closed None while open): the
    # spans during which every settlement must appear in the funding ledger
    perp_spans: list[list[Any]] = attrs.field(factory=list)  # [opened ns, closed ns or None]
    # direct references to the two accounts: read on every tick
    spot: VenueAccount = attrs.field(init=False)
    perp: VenueAccount = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.spot = self.accounts[self.spot_venue]
        self.perp = self.accounts[self.perp_venue]

    @classmethod
    def open(cls, spot_venue: str, perp_venue: str, spot_cash: float, perp_cash: float) -> PositionBook:
        """A flat book with this cash on each account."""
        return cls.restore(VenueAccount(spot_venue, MarketKind.SPOT, spot_cash),
                           VenueAccount(perp_venue, MarketKind.PERP, perp_cash), 0, initial_equity=spot_cash + perp_cash)

    @classmethod
    def restore(cls, spot: VenueAccount, perp: VenueAccount, now: int, initial_equity: float | None = None,
                funding_received: float = 0.0, funding_paid: float = 0.0) -> PositionBook:
        """A book taken back from what is held: both accounts as they stand
        (cash, position, entry, valuation price and what they have paid), the
        book's fees theirs, a perp position's span open from ``now``. The
        initial equity is ``initial_equity`` (the capital the PnL counts
        from), else the equity now."""
        if spot.venue == perp.venue:
            raise ValueError("spot and perp accounts need distinct names")
        book = cls(spot.venue, perp.venue, {spot.venue: spot, perp.venue: perp}, 0.0,
                   fees=spot.fees + perp.fees, funding_received=funding_received, funding_paid=funding_paid)
        book.initial_equity = book.equity if initial_equity is None else initial_equity
        if perp.qty:
            book.perp_spans.append([now, None])
        return book

    # --- views ---------------------------------------------------------
    @property
    def funding(self) -> float:
        return self.funding_received + self.funding_paid

    @property
    def equity(self) -> float:
        # inlined VenueAccount.equity of both legs: this runs on every mark
        s, p = self.spot, self.perp
        eq = s.cash + p.cash + self.in_transit
        if s.qty != 0:
            eq += s.qty * s.price
        if p.qty != 0:
            eq += p.qty * (p.price - p.entry)
        return eq

    @property
    def pnl(self) -> float:
        return self.equity - self.initial_equity

    @property
    def delta(self) -> float:
        return self.spot.qty + self.perp.qty

    @property
    def drift(self) -> float:
        sq, pq = self.spot.qty, self.perp.qty
        size = max(abs(sq), abs(pq))
        return abs(sq + pq) / size if size > 1e-12 else 0.0

    @property
    def is_flat(self) -> bool:
        return -1e-12 < self.spot.qty < 1e-12 and -1e-12 < self.perp.qty < 1e-12

    def leverage(self) -> float:
        eq = self.perp.equity
        if self.perp.qty == 0:
            return 0.0
        return self.perp.notional / eq if eq > 0 else INF

    def liquidation_price(self, rule: MarginRule) -> float:
        """The perp's liquidation price by the venue's ``rule`` (cross: the
        account's cash is the wallet); nan while flat."""
        p = self.perp
        return rule.liquidation_price(p.cash, p.qty, p.entry, BOOK_MARGIN_MODE)

    def margin_buffer(self, rule: MarginRule) -> float:
        p = self.perp
        return margin_buffer(self.liquidation_price(rule), p.price, p.qty)

    # --- updates -------------------------------------------------------
    def revalue(self, venue: str, price: float) -> None:
        acct = self.accounts[venue]
        old = acct.price
        if acct.qty != 0 and old == old:  # old is not nan
            self.price_pnl += acct.qty * (price - old)
        acct.price = price

    def apply_fill(self, fill: Fill) -> None:
        # Value the leg at the fill's reference price first, so the trade's
        # cost splits exactly into slippage (vs that price) and the fee.
        self.revalue(fill.venue, fill.mid)
        acct = self.accounts[fill.venue]
        signed = fill.side.sign * fill.qty
        self.slippage += signed * (fill.price - acct.price)
        self.fees += fill.fee
        self.traded_qty += fill.qty
        was_flat = acct.qty == 0
        acct.trade(signed, fill.price, fill.fee)
        if fill.venue == self.perp_venue:
            if was_flat and acct.qty != 0:
                self.perp_spans.append([fill.ts, None])
            elif not was_flat and acct.qty == 0:
                self.perp_spans[-1][1] = fill.ts

    def apply_funding(self, s: FundingSettlement) -> FundingEntry | None:
        """Only a position open at the settlement instant accrues:
        a perp of signed size q receives -q * mark * rate."""
        acct = self.accounts[s.venue]
        if acct.qty == 0:
            return None
        amount = -acct.qty * s.mark * s.rate
        acct.cash += amount
        acct.funding += amount
        if amount >= 0:
            self.funding_received += amount
        else:
            self.funding_paid += amount
        entry = FundingEntry(s.ts, s.venue, acct.qty, s.rate, s.mark, amount, s.mark_source)
        self.funding_ledger.append(entry)
        return entry

    def charge(self, venue: str, amount: float) -> None:
        """A cost that is neither a trade nor funding (borrow interest)."""
        acct = self.accounts[venue]
        acct.cash -= amount
        acct.fees += amount
        self.fees += amount

    def transfer_out(self, venue: str, amount: float) -> None:
        self.accounts[venue].cash -= amount
        self.in_transit += amount

    def _out_of_transit(self, amount: float) -> None:
        self.in_transit -= amount
        if abs(self.in_transit) < 1e-9:
            self.in_transit = 0.0

    def transfer_back(self, venue: str, amount: float) -> None:
        """A refused transfer: the amount returns to where it left."""
        self._out_of_transit(amount)
        self.accounts[venue].cash += amount

    def transfer_in(self, done: TransferDone) -> None:
        self._out_of_transit(done.amount)
        self.accounts[done.to_venue].cash += done.amount - done.fee
        self.fees += done.fee
