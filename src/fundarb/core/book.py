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

from fundarb.core.liquidation import CROSS, MarginRule, collateral_value
from fundarb.core.model import Fill, FundingSettlement, MarketKind, TransferDone

INF = float("inf")
# what margins the perp leg (``Collateral.mode``)
OWN, COIN, UNIFIED = "own", "coin", "unified"
COLLATERAL_MODES = (OWN, COIN, UNIFIED)
# The book's perp account is one wallet backing one position: the venue's
# cross-margin rule with that account's cash as the cross wallet balance.
BOOK_MARGIN_MODE = CROSS
# BTC below any venue's smallest order (Binance spot: 5 USDT, 1e-4 BTC at 50,000):
# what a coin-margined exit leaves when the short's settled PnL differs from
# the estimate its spot sale was sized by. It cannot be sold, so it is no drift.
DUST_BTC = 1e-4
# what a coin-margined exit keeps back of the short's BTC for the close's fee
# and slippage (taker fees of COIN-M BTC are 0.05% and less)
EXIT_MARGIN = 0.001


def drift_of(spot_qty: float, perp_qty: float, floor: float = 1e-12) -> float:
    """|delta| / max(|spot|, |perp|); 0 when both legs are under ``floor``.
    (``PositionBook.drift`` inlines the same rule on its hot path.)"""
    size = max(abs(spot_qty), abs(perp_qty))
    return abs(spot_qty + perp_qty) / size if size > floor else 0.0


def uncovered_of(held_btc: float, perp_qty: float) -> float:
    """A carry on BTC held (``Collateral.keep_btc``): the share of the short
    ``perp_qty`` (BTC, signed) that ``held_btc`` does not cover; BTC beyond
    the short is the holder's, no exposure of the carry. 0 while flat, 1 for
    a long perp (the carry is never long)."""
    if perp_qty >= 0:
        return 0.0 if perp_qty == 0 else 1.0
    return max(-perp_qty - max(held_btc, 0.0), 0.0) / -perp_qty


def btc_worth(units: float, contract_size: float, price: float) -> float:
    """BTC of ``units`` of a market at ``price``: contracts x size / price for
    an inverse perp (``contract_size`` USD a contract), the units (BTC) else."""
    return units * contract_size / price if contract_size > 0 else units


def units_worth(btc: float, contract_size: float, price: float) -> float:
    """The inverse of ``btc_worth``: unrounded contracts worth ``btc`` at ``price``, or the BTC."""
    return btc * price / contract_size if contract_size > 0 else btc


def linear_perp_trade(qty: float, entry: float, signed: float, price: float) -> tuple[float, float, float]:
    """A linear perp's (qty, entry, realized PnL) after trading ``signed`` BTC
    at ``price``: an opening part moves the entry to the size-weighted mean,
    a reducing part realizes ``closed * (price - entry)`` (the opposite for a
    short); past zero the rest opens at this price."""
    if qty == 0 or (qty > 0) == (signed > 0):
        new_q = qty + signed
        return new_q, (abs(qty) * entry + abs(signed) * price) / abs(new_q), 0.0
    closed = min(abs(signed), abs(qty))
    pnl = closed * (price - entry) * (1.0 if qty > 0 else -1.0)
    rest = abs(signed) - closed
    if rest > 0:  # flipped through zero: the remainder opens at this price
        return math.copysign(rest, signed), price, pnl
    new_q = qty + signed
    if abs(new_q) < 1e-12:
        return 0.0, 0.0, pnl
    return new_q, entry, pnl


def flat_legs(spot_qty: float, perp_qty: float) -> bool:
    """Both legs at zero (within 1e-12): no carry held (a book of the usual
    kind; ``PositionBook.is_flat`` adds the rules of coin margin and BTC held)."""
    return -1e-12 < spot_qty < 1e-12 and -1e-12 < perp_qty < 1e-12


def linear_equity(cash: float, qty: float, price: float, entry: float) -> float:
    """A linear perp account's equity: its cash and the unrealized PnL of ``qty`` held from ``entry``."""
    return cash + qty * (price - entry) if qty != 0 else cash


def perp_leverage(qty: float, price: float, equity: float) -> float:
    """The perp's notional at ``price`` over the ``equity`` that margins it
    (0 while flat, inf without equity)."""
    if qty == 0:
        return 0.0
    return abs(qty) * price / equity if equity > 0 else INF


def slippage_cost(sign: float, btc: float, price: float, reference: float) -> float:
    """What a fill of ``btc`` at ``price`` cost against the ``reference``
    price it is valued at (``sign``: +1 a buy, -1 a sell)."""
    return sign * btc * (price - reference)


def spot_trade(cash: float, qty: float, signed: float, price: float, fee: float) -> tuple[float, float]:
    """A spot account's (cash, BTC) after trading ``signed`` BTC at ``price`` with ``fee``."""
    return cash - fee - signed * price, qty + signed


def linear_perp_fill(cash: float, qty: float, entry: float, signed: float, price: float,
                     fee: float) -> tuple[float, float, float, float]:
    """A linear perp account's (cash, qty, entry, realized PnL) after trading
    ``signed`` BTC at ``price`` with ``fee``: the fee and the realized PnL
    move the cash (``linear_perp_trade``)."""
    cash = cash - fee
    qty, entry, pnl = linear_perp_trade(qty, entry, signed, price)
    if pnl:
        cash += pnl
    return cash, qty, entry, pnl


def book_equity(spot_cash: float, perp_cash: float, in_transit: float, spot_qty: float, spot_price: float,
                spot_entry: float, perp_qty: float, perp_price: float, perp_entry: float, perp_coin: float) -> float:
    """Both accounts' cash and what is in transit, the long leg at its price
    (a spot leg's entry is 0; a long perp's counts its unrealized PnL), the
    perp's unrealized PnL and the BTC an inverse perp has settled in."""
    eq = spot_cash + perp_cash + in_transit
    if spot_qty != 0:
        eq += spot_qty * (spot_price - spot_entry)
    if perp_qty != 0:
        eq += perp_qty * (perp_price - perp_entry)
    if perp_coin != 0:
        eq += perp_coin * perp_price
    return eq


def margin_buffer(liq: float, mark: float, qty: float) -> float:
    """Distance from mark to liquidation as a fraction of mark, positive while
    safe: (liq - mark)/mark for a short, (mark - liq)/mark for a long."""
    if qty == 0 or math.isnan(liq):
        return INF
    return (liq - mark) / mark if qty < 0 else (mark - liq) / mark


@attrs.define(slots=True)
class VenueAccount:
    """One account's cash, position and what it has paid.

    A linear perp's ``qty`` is BTC and its PnL settles in the quote currency
    (``cash``). An inverse (coin-margined) perp (``contract_size`` > 0, USD per
    contract) is traded in contracts of a USD face value and settles its PnL,
    funding and fees in BTC (``coin``). Its ``qty`` is the BTC-equivalent of
    its face at the entry price, ``face / entry``: valued in USD at a price P,
    the short's BTC PnL ``face * (1/entry - 1/P)`` is worth exactly
    ``qty * (P - entry)``, so equity, delta and every USD figure keep the
    linear formulas while the BTC amounts stay exact. ``fees`` and
    ``funding`` are in USD (BTC amounts valued when they were paid);
    ``fees_coin`` and ``funding_coin`` keep an inverse account's BTC figures.
    """

    venue: str
    kind: MarketKind
    cash: float
    qty: float = 0.0
    entry: float = 0.0  # perp average entry price (an inverse perp's: the harmonic mean, as the venues keep it)
    price: float = math.nan  # valuation price: spot mid or perp mark
    fees: float = 0.0
    funding: float = 0.0
    realized: float = 0.0
    contract_size: float = 0.0  # inverse perp: USD face of one contract; 0: a linear market traded in BTC
    coin: float = 0.0  # inverse perp: the BTC its PnL, funding and fees have settled in
    fees_coin: float = 0.0
    funding_coin: float = 0.0

    @property
    def inverse(self) -> bool:
        return self.contract_size > 0

    @property
    def face(self) -> float:
        """Signed USD face value of an inverse position (contracts x size)."""
        return self.qty * self.entry

    @property
    def units(self) -> float:
        """The position in the venue's order unit, signed: contracts of an
        inverse perp, BTC otherwise."""
        if self.contract_size > 0:
            return self.qty * self.entry / self.contract_size if self.qty != 0 else 0.0
        return self.qty

    def btc_of(self, units: float, price: float) -> float:
        """BTC of ``units`` traded at ``price``: contracts x size / price for an
        inverse perp (what an opening trade adds), the units otherwise."""
        return btc_worth(units, self.contract_size, price)

    def units_of(self, btc: float) -> float:
        """Order units that take ``btc`` off the position: for an inverse perp
        whole contracts at the entry price (a contract closes face / entry BTC),
        rounded down; otherwise the BTC itself."""
        if self.contract_size > 0:
            return math.floor(btc * self.entry / self.contract_size + 1e-9) if self.entry > 0 else 0.0
        return btc

    @property
    def unrealized(self) -> float:
        if self.kind is MarketKind.PERP and self.qty != 0:
            return self.qty * (self.price - self.entry)
        return 0.0

    @property
    def equity(self) -> float:
        if self.kind is MarketKind.SPOT:
            return self.cash + (self.qty * self.price if self.qty != 0 else 0.0)
        return self.cash + self.unrealized + (self.coin * self.price if self.coin != 0 else 0.0)

    @property
    def notional(self) -> float:
        return abs(self.qty) * self.price if self.qty != 0 else 0.0

    def fee_for(self, rate: float, units: float, price: float) -> float:
        """A trade's fee in the account's settlement currency: rate x qty x
        price (quote), or rate x contracts x size / price (BTC, inverse)."""
        if self.contract_size > 0:
            return rate * units * self.contract_size / price
        return rate * units * price

    def trade(self, signed_units: float, price: float, fee: float) -> float:
        """Book an execution of ``signed_units`` (the venue's order unit) with
        ``fee`` in the settlement currency; cash moves by the fee and (spot)
        the paid price, (perp) realized PnL of the part that reduces the
        position. Returns the fee in the quote currency."""
        if self.contract_size > 0:
            return self._trade_inverse(signed_units, price, fee)
        self.fees += fee
        if self.kind is MarketKind.SPOT:
            self.cash, self.qty = spot_trade(self.cash, self.qty, signed_units, price, fee)
            return fee
        self.cash, self.qty, self.entry, pnl = linear_perp_fill(self.cash, self.qty, self.entry, signed_units, price, fee)
        if pnl:
            self.realized += pnl
        return fee

    def _trade_inverse(self, signed_contracts: float, price: float, fee_btc: float) -> float:
        """Contracts of an inverse perp. An opening part adds face / price BTC
        at this price (the entry becomes the harmonic mean of the faces); a
        reducing part takes face / entry BTC off and realizes
        face * (1/entry - 1/price) BTC for a long (the opposite for a short):
        the linear PnL of those BTC divided by the price. The fee is BTC;
        returned in the quote currency at the account's valuation price."""
        face = signed_contracts * self.contract_size
        q = self.qty
        pnl = 0.0
        if q == 0 or (q > 0) == (face > 0):
            add = face / price
            self.entry = (abs(q) * self.entry + abs(face)) / abs(q + add)
            self.qty = q + add
        else:
            held = abs(q) * self.entry  # |face| of the position
            closed_face = min(abs(face), held)
            closed = closed_face / self.entry
            pnl = closed * (price - self.entry) * (1.0 if q > 0 else -1.0)
            rest = abs(face) - held
            if rest > 1e-9 * self.contract_size:  # flipped through zero: the rest opens at this price
                self.qty = math.copysign(rest / price, face)
                self.entry = price
            elif held - closed_face < 1e-9 * self.contract_size:
                self.qty = 0.0
                self.entry = 0.0
            else:
                self.qty = q + math.copysign(closed, face)
        self.realized += pnl
        self.coin += pnl / price - fee_btc
        self.fees_coin += fee_btc
        fee = fee_btc * (self.price if self.price == self.price else price)
        self.fees += fee
        return fee

    def funding_due(self, mark: float, rate: float) -> float:
        """What a settlement pays this position, in its settlement currency:
        -qty * mark * rate (quote) for a linear perp, -face / mark * rate
        (BTC) for an inverse one; positive r: longs pay shorts."""
        if self.contract_size > 0:
            return -self.face / mark * rate
        return -self.qty * mark * rate

    def settle_funding(self, mark: float, rate: float) -> float:
        """Book a settlement; returns its value in the quote currency (an
        inverse perp's BTC valued at the settlement's mark)."""
        amount = self.funding_due(mark, rate)
        if self.contract_size > 0:
            self.coin += amount
            self.funding_coin += amount
            amount *= mark
        else:
            self.cash += amount
        self.funding += amount
        return amount


@attrs.frozen(slots=True)
class FundingEntry:
    ts: int
    venue: str
    qty: float
    rate: float
    mark: float
    amount: float
    mark_source: str


def _tier_pairs(tiers: Any) -> tuple[tuple[float, float], ...]:
    return tuple((float(a), float(b)) for a, b in tiers)


@attrs.frozen
class Collateral:
    """What margins the perp leg.

    - ``own``: its own account's cash (spot and a linear perp in two accounts:
      the perp venue's wallet is topped up by transfers);
    - ``coin``: an inverse perp margined by the BTC the carry holds (the spot
      leg's BTC sits in the coin-margined wallet, so it is the short's margin
      at its full value; the perp's own BTC adds to it);
    - ``unified``: one account whose spot BTC counts as collateral after the
      venue's tiered haircut (``tiers``: (up to BTC, collateral value ratio)
      pairs), beside the account's cash.

    ``keep_btc`` (coin-margined only): the BTC is the owner's, held before the
    carry and kept after it. An entry buys only the BTC the holding lacks and
    shorts the rest against it; an exit closes the short and sells nothing.
    Out of a carry the BTC held is no position of the carry: it is flat, and
    the price moves of the BTC no short hedges are the holder's
    (``PositionBook.held_pnl``), not the carry's.
    """

    mode: str = OWN
    tiers: tuple[tuple[float, float], ...] = attrs.field(default=(), converter=_tier_pairs)
    keep_btc: bool = False

    def __attrs_post_init__(self) -> None:
        if self.mode not in COLLATERAL_MODES:
            raise ValueError(f"collateral mode must be one of {', '.join(COLLATERAL_MODES)}, got {self.mode!r}")
        if self.keep_btc and self.mode != COIN:
            raise ValueError(f"keep_btc needs the coin-margined collateral mode, got {self.mode!r}")
        if self.mode == UNIFIED:
            collateral_value(1.0, self.tiers)  # checks the tiers

    @property
    def transfers(self) -> bool:
        """Whether the perp's margin is kept up by moving cash between accounts."""
        return self.mode == OWN

    def wallet(self, spot: VenueAccount, perp: VenueAccount) -> tuple[float, float]:
        """(wallet, collateral) the perp venue's liquidation rule is given: the
        wallet in the rule's settlement currency (quote, or BTC for an inverse
        perp), and the BTC counted at the mark beside it (unified: after the
        haircut; else 0)."""
        if perp.contract_size > 0:
            wallet = perp.coin + (perp.cash / perp.price if perp.cash else 0.0)
            if self.mode != COIN:
                return wallet, 0.0
            # the carry's USDT becomes BTC in this wallet as its spot buy lands:
            # an entry is one step (buy, move, short), so the cash not yet
            # spent counts at its BTC value beside the BTC
            cash = spot.cash / perp.price if spot.cash > 0 and perp.price == perp.price else 0.0
            return wallet + spot.qty + cash, 0.0
        if self.mode == UNIFIED:
            return perp.cash + spot.cash, collateral_value(spot.qty, self.tiers)
        return perp.cash, 0.0

    def sweep(self, spot: VenueAccount, perp: VenueAccount) -> float:
        """Coin-margined: the BTC an inverse perp has settled in (realized
        PnL, funding, fees) joins the spot leg's BTC, the one balance that
        margins the short and that an exit sells: the carry holds one BTC
        amount, hedged by the short, and nothing is left behind unhedged
        when it closes. Returns the USD the move changes the book's value by
        (the BTC valued at the spot mid rather than the perp's mark).

        Unified: one account, so the perp's settled USDT (PnL, funding,
        fees) is the cash the spot leg buys with; it moves across (the
        wallet the margin counts is the same sum). Own: nothing moves."""
        if self.mode == UNIFIED:
            spot.cash += perp.cash
            perp.cash = 0.0
            return 0.0
        c = perp.coin
        if self.mode != COIN or c == 0:
            return 0.0
        if spot.price != spot.price:  # not priced yet: the BTC is valued at the perp's price
            spot.price = perp.price
        spot_px = spot.price
        perp.coin = 0.0
        spot.qty += c
        if abs(spot.qty) < 1e-12:
            spot.qty = 0.0
        return c * (spot_px - perp.price) if perp.price == perp.price else 0.0

    def exit_btc(self, spot: VenueAccount, perp: VenueAccount) -> float:
        """The BTC an exit sells: the spot leg's, and (coin-margined) the BTC
        the open short's close will settle into the same balance at the mark
        (less when it closes at a loss), less ``EXIT_MARGIN`` of what the
        short is worth in BTC at the mark for the close's fee and slippage
        (both charged on that value: after BTC halves, twice the BTC the
        short opened at): the sale is covered whichever of the two orders
        lands first. What it leaves is a few thousandths of the position,
        BTC the next carry hedges (``PositionBook.drift``). With
        ``keep_btc`` nothing: the BTC is the holder's and stays."""
        if self.keep_btc:
            return 0.0
        btc = spot.qty
        if self.mode == COIN and perp.qty and perp.price == perp.price:
            btc += perp.unrealized / perp.price - EXIT_MARGIN * abs(perp.btc_of(perp.units, perp.price))
        return btc

    def margin_equity(self, spot: VenueAccount, perp: VenueAccount) -> float:
        """The equity (quote) that margins the perp: the wallet and collateral
        valued at the mark, plus the position's unrealized PnL."""
        wallet, coll = self.wallet(spot, perp)
        if perp.contract_size > 0:
            return wallet * perp.price + perp.unrealized
        return wallet + coll * perp.price + perp.unrealized


OWN_COLLATERAL = Collateral()


def liquidation_of(rule: MarginRule, collateral: Collateral, spot: VenueAccount, perp: VenueAccount) -> float:
    """The perp's liquidation price by the venue's ``rule`` with what margins
    it (cross: one account backs one position); nan while flat, inf for a
    short no rise can liquidate."""
    wallet, coll = collateral.wallet(spot, perp)
    if perp.contract_size > 0:
        return rule.liquidation_price(wallet, perp.face, perp.entry, BOOK_MARGIN_MODE)
    if coll:
        return rule.liquidation_price(wallet, perp.qty, perp.entry, BOOK_MARGIN_MODE, collateral=coll)
    return rule.liquidation_price(wallet, perp.qty, perp.entry, BOOK_MARGIN_MODE)


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
    collateral: Collateral = OWN_COLLATERAL
    # coin-margined: the BTC the short hedged when it last closed; what an exit
    # leaves (``Collateral.exit_btc``) is drift measured against it
    hedged_btc: float = 0.0
    # ``Collateral.keep_btc``: the price PnL of the BTC held that no short
    # hedges (the holder's, out of a carry); 0 otherwise
    held_pnl: float = 0.0
    # direct references to the two accounts: read on every tick
    spot: VenueAccount = attrs.field(init=False)
    perp: VenueAccount = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.spot = self.accounts[self.spot_venue]
        self.perp = self.accounts[self.perp_venue]

    @classmethod
    def open(cls, spot_venue: str, perp_venue: str, spot_cash: float, perp_cash: float, *,
             contract_size: float = 0.0, collateral: Collateral = OWN_COLLATERAL,
             held_btc: float = 0.0, spot_price: float = math.nan,
             long_kind: MarketKind = MarketKind.SPOT) -> PositionBook:
        """A flat book with this cash on each account (``contract_size``: an
        inverse perp's USD per contract; ``collateral``: what margins it).
        ``held_btc``: BTC the spot leg holds from the start (a capital held in
        BTC), valued at ``spot_price``, which it needs. ``long_kind`` PERP:
        the long leg is a perp on its own venue (perp/perp)."""
        if held_btc and not spot_price > 0:
            raise ValueError(f"BTC held from the start needs its price, got {spot_price}")
        spot = VenueAccount(spot_venue, long_kind, spot_cash, qty=held_btc, price=spot_price)
        return cls.restore(spot, VenueAccount(perp_venue, MarketKind.PERP, perp_cash, contract_size=contract_size), 0,
                           initial_equity=spot_cash + perp_cash + (held_btc * spot_price if held_btc else 0.0),
                           collateral=collateral)

    @classmethod
    def restore(cls, spot: VenueAccount, perp: VenueAccount, now: int, initial_equity: float | None = None,
                funding_received: float = 0.0, funding_paid: float = 0.0,
                collateral: Collateral = OWN_COLLATERAL) -> PositionBook:
        """A book taken back from what is held: both accounts as they stand
        (cash, position, entry, valuation price and what they have paid), the
        book's fees theirs, a perp position's span open from ``now``, the
        perp margined by ``collateral``. The initial equity is
        ``initial_equity`` (the capital the PnL counts from), else the
        equity now."""
        if spot.venue == perp.venue:
            raise ValueError("spot and perp accounts need distinct names")
        book = cls(spot.venue, perp.venue, {spot.venue: spot, perp.venue: perp}, 0.0,
                   fees=spot.fees + perp.fees, funding_received=funding_received, funding_paid=funding_paid,
                   collateral=collateral)
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
        s, p = self.spot, self.perp
        return book_equity(s.cash, p.cash, self.in_transit, s.qty, s.price, s.entry, p.qty, p.price, p.entry, p.coin)

    @property
    def equity_btc(self) -> float:
        """Equity in BTC at the perp's mark (the spot mid while the mark is unknown)."""
        price = self.perp.price if self.perp.price == self.perp.price else self.spot.price
        return self.equity / price

    @property
    def pnl(self) -> float:
        return self.equity - self.initial_equity

    @property
    def carry_equity(self) -> float:
        """Equity less the price PnL of BTC held outside a carry
        (``Collateral.keep_btc``): what the carry is judged on (drawdown,
        Sharpe); the equity itself otherwise."""
        return self.equity - self.held_pnl

    @property
    def unhedged_btc(self) -> float:
        """``keep_btc``: the BTC held beyond what the short hedges (all of it
        out of a carry)."""
        return max(self.spot.qty + self.perp.coin + self.perp.qty, 0.0)

    @property
    def delta(self) -> float:
        """BTC the book's USD value moves with: the spot leg, the perp's
        BTC-equivalent and the BTC an inverse perp has settled in."""
        return self.spot.qty + self.perp.qty + self.perp.coin

    @property
    def drift(self) -> float:
        sq, pq = self.spot.qty + self.perp.coin, self.perp.qty
        if self.collateral.keep_btc:
            return uncovered_of(sq, pq)
        if self.collateral.mode == COIN:
            size = max(abs(sq), abs(pq), self.hedged_btc if pq == 0 else 0.0)
            return abs(sq + pq) / size if size > DUST_BTC else 0.0
        size = max(abs(sq), abs(pq))
        return abs(sq + pq) / size if size > 1e-12 else 0.0

    @property
    def is_flat(self) -> bool:
        if self.collateral is OWN_COLLATERAL:  # the usual book, asked on every event
            return flat_legs(self.spot.qty, self.perp.qty)
        if self.collateral.keep_btc:  # the BTC held is the holder's: no short, no carry
            return -1e-12 < self.perp.qty < 1e-12 and self.spot.qty > -1e-12
        if self.collateral.mode == COIN and self.perp.qty == 0:
            # what a coin-margined exit leaves is BTC the next carry hedges, no position
            return abs(self.spot.qty + self.perp.coin) <= 2 * EXIT_MARGIN * self.hedged_btc + DUST_BTC
        return flat_legs(self.spot.qty, self.perp.qty)

    def leverage(self) -> float:
        """Perp notional over the equity that margins it (``Collateral``)."""
        p = self.perp
        if p.qty == 0:
            return 0.0
        eq = p.equity if self.collateral is OWN_COLLATERAL else self.collateral.margin_equity(self.spot, p)
        return perp_leverage(p.qty, p.price, eq)

    def liquidation_price(self, rule: MarginRule) -> float:
        """The perp's liquidation price by the venue's ``rule`` (cross: the
        account's cash is the wallet; see ``Collateral``); nan while flat."""
        p = self.perp
        if self.collateral is OWN_COLLATERAL and not p.contract_size:
            return rule.liquidation_price(p.cash, p.qty, p.entry, BOOK_MARGIN_MODE)
        return liquidation_of(rule, self.collateral, self.spot, p)

    def margin_buffer(self, rule: MarginRule) -> float:
        p = self.perp
        return margin_buffer(self.liquidation_price(rule), p.price, p.qty)

    @property
    def long_perp(self) -> bool:
        """Whether the long leg is a perp on its own venue (a perp/perp carry)."""
        return self.spot.kind is MarketKind.PERP

    def long_liquidation_price(self, rule: MarginRule) -> float:
        """A perp/perp carry's long leg: its liquidation price by its venue's
        ``rule``, its own account's cash the wallet; nan while flat or when
        the long leg is spot."""
        s = self.spot
        if not self.long_perp or s.qty == 0:
            return math.nan
        return rule.liquidation_price(s.cash, s.qty, s.entry, BOOK_MARGIN_MODE)

    def long_margin_buffer(self, rule: MarginRule) -> float:
        """(mark - liquidation) / mark of a perp/perp carry's long leg; inf without one."""
        s = self.spot
        return margin_buffer(self.long_liquidation_price(rule), s.price, s.qty)

    # --- updates -------------------------------------------------------
    def revalue(self, venue: str, price: float) -> None:
        acct = self.accounts[venue]
        old = acct.price
        if self.collateral.keep_btc and acct is self.spot and old == old:
            self.held_pnl += self.unhedged_btc * (price - old)
        if acct.qty != 0 and old == old:  # old is not nan
            self.price_pnl += acct.qty * (price - old)
        if acct.coin != 0 and old == old:
            self.price_pnl += acct.coin * (price - old)
        acct.price = price

    def apply_fill(self, fill: Fill) -> None:
        # Value the leg at the fill's reference price first, so the trade's
        # cost splits exactly into slippage (vs that price) and the fee.
        self.revalue(fill.venue, fill.mid)
        acct = self.accounts[fill.venue]
        signed = fill.side.sign * fill.qty  # the venue's unit: BTC, or an inverse perp's contracts
        btc = acct.btc_of(fill.qty, fill.price)
        self.slippage += slippage_cost(fill.side.sign, btc, fill.price, acct.price)
        self.traded_qty += btc
        was_flat, before = acct.qty == 0, abs(acct.qty)
        self.fees += acct.trade(signed, fill.price, fill.fee)
        if fill.venue == self.perp_venue:
            self.price_pnl += self.collateral.sweep(self.spot, acct)
            if was_flat and acct.qty != 0:
                self.perp_spans.append([fill.ts, None])
            elif not was_flat and acct.qty == 0:
                self.perp_spans[-1][1] = fill.ts
                self.hedged_btc = before

    def apply_funding(self, s: FundingSettlement) -> FundingEntry | None:
        """Only a position open at the settlement instant accrues:
        a perp of signed size q receives -q * mark * rate."""
        acct = self.accounts[s.venue]
        if acct.qty == 0:
            return None
        if acct.contract_size:  # paid in BTC: valued at the mark it settles at
            self.revalue(s.venue, s.mark)
        amount = acct.settle_funding(s.mark, s.rate)
        if s.venue == self.perp_venue:
            self.price_pnl += self.collateral.sweep(self.spot, acct)
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
