"""Risk: pre-trade checks, post-trade monitors and the kill switch state.

Pre-trade (``check``): kill switch, max position (BTC and notional), perp
leverage <= ``max_leverage`` (never above 3), margin buffer after the trade
>= ``min_margin_buffer``, and cash on each venue. A veto on one leg of a pair
vetoes the whole pair: an entry is never sent one-legged. Reduce-only intents
always pass (clipped to the position) because they only take risk off.

Monitors (``RiskMonitor.evaluate``): drawdown from peak equity (halts at
``max_drawdown``), delta drift (alert and, if enabled, rebalance above
``max_drift``), margin buffer (top up collateral below ``min_margin_buffer``,
reduce size at once below ``hard_margin_buffer``).

A flatten (kill switch with ``flatten_on_kill``, or asked for from outside) is
one attempt: once its orders have ended (filled, refused or vetoed) and the
book is still not flat, the monitor alerts once (critical: what is left, and
that it waits) and sends nothing more. Only a change of the book's positions
not made by that attempt (reconciliation learning the venue's position, a
liquidation fill) or a resume of the kill switch allows one new attempt. A
refused reduce-only close never turns into a loop of paired trades.

A book whose equity is not a finite number (an inf or nan price, rate or
amount reached it) halts the kill switch once; after that the monitor sends
only the flatten attempt (sized by the positions, not by the bad number) and
never a transfer, a top-up or a rebalance computed from it.
"""

from __future__ import annotations

import math

import attrs

from fundarb.core.book import (
    BOOK_MARGIN_MODE,
    OWN_COLLATERAL,
    PositionBook,
    VenueAccount,
    liquidation_of,
    margin_buffer,
    perp_leverage,
)
from fundarb.core.liquidation import MarginRule, NotionalBeyondTiers
from fundarb.core.model import Alert, OrderIntent, Side, require
from fundarb.core.strategy import close_intents

HARD_MAX_LEVERAGE = 3.0


@attrs.frozen
class RiskLimits:
    max_position_btc: float = 5.0
    max_notional: float = 250_000.0
    max_leverage: float = 3.0
    min_margin_buffer: float = 0.30
    topup_target_buffer: float = 0.50
    hard_margin_buffer: float = 0.15
    max_drawdown: float = 0.05
    max_drift: float = 0.02
    auto_rebalance: bool = True
    flatten_on_kill: bool = True

    def __attrs_post_init__(self) -> None:
        checks = {
            "max_position_btc": self.max_position_btc > 0,
            "max_notional": self.max_notional > 0,
            "max_leverage (0 < x <= 3)": 0 < self.max_leverage <= HARD_MAX_LEVERAGE,
            "min_margin_buffer (>= 0.30)": self.min_margin_buffer >= 0.30,
            "topup_target_buffer (> min_margin_buffer)": self.topup_target_buffer > self.min_margin_buffer,
            "hard_margin_buffer (0 < x < min_margin_buffer)": 0 < self.hard_margin_buffer < self.min_margin_buffer,
            "max_drawdown (0 < x < 1)": 0 < self.max_drawdown < 1,
            "max_drift (0 < x < 1)": 0 < self.max_drift < 1,
        }
        require("risk", checks)


@attrs.define(slots=True)
class KillSwitch:
    halted: bool = False
    reason: str = ""
    ts: int = 0

    def halt(self, reason: str, ts: int) -> bool:
        """Returns True when this call is what halted it."""
        if self.halted:
            return False
        self.halted, self.reason, self.ts = True, reason, ts
        return True

    def resume(self) -> None:
        self.halted, self.reason, self.ts = False, "", 0


@attrs.frozen(slots=True)
class Veto:
    intent: OrderIntent
    reason: str


@attrs.frozen
class VenueCosts:
    """What a pre-trade check needs to know of the venues."""

    spot_taker_fee: float
    perp_taker_fee: float
    slippage_allowance: float  # fraction of price kept back for spread + impact
    margin: MarginRule  # the perp venue's liquidation rule and tiers
    transfer_fee: float
    perp_allocation: float = 0.35  # share of equity the perp venue holds while flat
    rebalance_tolerance: float = 0.01  # of equity, before cash is moved back to that split
    long_margin: MarginRule | None = None  # perp/perp: the long leg's venue rule


def check(
    intents: list[OrderIntent],
    book: PositionBook,
    spot_mid: float,
    limits: RiskLimits,
    costs: VenueCosts,
    kill: KillSwitch,
) -> tuple[list[OrderIntent], list[Veto]]:
    vetoes: list[Veto] = []
    approved: list[OrderIntent] = []
    for intent in intents:
        if intent.reduce_only:
            acct = book.accounts[intent.venue]
            held = book.collateral.exit_btc(acct, book.perp) if acct is book.spot else acct.units
            qty = min(intent.qty, abs(held))
            if qty > 1e-12:
                approved.append(attrs.evolve(intent, qty=qty) if qty != intent.qty else intent)
            continue
        reason = _entry_veto(intent, book, spot_mid, limits, costs, kill, _pair_spot(intents, intent, book))
        if reason:
            vetoes.append(Veto(intent, reason))
        else:
            approved.append(intent)
    if vetoes:  # never leave a pair one-legged
        vetoed_pairs = {v.intent.pair_id for v in vetoes if v.intent.pair_id}
        for intent in [i for i in approved if i.pair_id in vetoed_pairs and not i.reduce_only]:
            approved.remove(intent)
            vetoes.append(Veto(intent, "other leg of the pair vetoed"))
    return approved, vetoes


def _pair_spot(intents: list[OrderIntent], intent: OrderIntent, book: PositionBook) -> float:
    """BTC the spot leg of ``intent``'s pair adds (signed): where the spot BTC
    margins the perp, the perp leg is judged with its pair's spot leg done."""
    if intent.venue != book.perp_venue or not intent.pair_id or book.collateral.transfers:
        return 0.0
    return sum(i.side.sign * i.qty for i in intents
               if i.pair_id == intent.pair_id and i.venue == book.spot_venue and not i.reduce_only)


def _entry_veto(
    intent: OrderIntent,
    book: PositionBook,
    spot_mid: float,
    limits: RiskLimits,
    costs: VenueCosts,
    kill: KillSwitch,
    pair_spot: float = 0.0,
) -> str:
    if kill.halted:
        return f"kill switch halted: {kill.reason}"
    acct = book.accounts[intent.venue]
    price = acct.price if acct.price == acct.price else spot_mid
    new_qty = acct.qty + intent.side.sign * acct.btc_of(intent.qty, price)
    why = position_veto(new_qty, limits) or notional_veto(new_qty, price, limits)
    if why:
        return why
    if intent.venue == book.perp_venue and (book.collateral is not OWN_COLLATERAL or acct.contract_size):
        return _collateral_veto(intent, book, price, spot_mid, limits, costs, pair_spot)
    long_perp = intent.venue == book.spot_venue and book.long_perp
    if intent.venue == book.spot_venue and not long_perp:
        need = spot_cash_need(intent.qty, price, costs.spot_taker_fee, costs.slippage_allowance)
        if acct.cash < need:  # buys pay cash; a margin short is held fully collateralised
            return f"spot cash {acct.cash:,.2f} below the {need:,.2f} the order needs"
        return ""
    # a perp leg on its own cash: the short, or a perp/perp carry's long leg (its venue's fee and rule)
    rule = costs.long_margin if long_perp else costs.margin
    if rule is None:
        return "the long perp's venue has no liquidation rule to check the order against"
    fee_rate = (costs.spot_taker_fee if long_perp else costs.perp_taker_fee) + costs.slippage_allowance
    cash, entry, equity = own_perp_after(acct.qty, acct.entry, acct.cash, new_qty, intent.qty, price, fee_rate)
    if equity <= 0:
        return f"{'long' if long_perp else 'perp'} venue equity is not positive"
    why = leverage_veto(perp_leverage(new_qty, price, equity), limits)
    if why:
        return why
    try:
        liq = rule.liquidation_price(cash, new_qty, entry, BOOK_MARGIN_MODE)
    except NotionalBeyondTiers as exc:
        return f"liquidation outside the venue's margin tiers: {exc}"
    return buffer_veto(margin_buffer(liq, price, new_qty), limits)


def spot_cash_need(qty: float, price: float, taker_fee: float, slippage_allowance: float) -> float:
    """The cash a spot buy of ``qty`` at ``price`` must find on the account: the
    price, the taker fee and the slippage allowance."""
    return qty * price * (1 + taker_fee + slippage_allowance)


def own_perp_after(qty: float, entry: float, cash: float, new_qty: float, units: float, price: float,
                   fee_rate: float) -> tuple[float, float, float]:
    """A perp on its own cash after an order of ``units`` at ``price`` takes it
    from ``qty`` to ``new_qty``: (cash less the fee at ``fee_rate``, the entry
    of what is held, the equity at ``price``)."""
    cash_after = cash - units * price * fee_rate
    if qty == 0 or (qty > 0) != (new_qty > 0):
        entry_after = price  # opens, or flips through zero: the rest opens at this price
    elif abs(new_qty) > abs(qty):
        entry_after = (abs(qty) * entry + units * price) / abs(new_qty)
    else:
        entry_after = entry  # reduces: the entry of what is left is unchanged
    return cash_after, entry_after, cash_after + qty * (price - entry)


def _collateral_veto(intent: OrderIntent, book: PositionBook, price: float, spot_mid: float, limits: RiskLimits,
                     costs: VenueCosts, pair_spot: float) -> str:
    """The perp leg of a book whose perp is inverse or margined by more than
    its own cash (``Collateral``): the trade is made on copies of both
    accounts (the pair's spot leg included, at the spot mid) with a fee and
    the slippage allowance, then judged by leverage and the buffer to the
    venue's liquidation price."""
    spot, perp = attrs.evolve(book.spot), attrs.evolve(book.perp)
    if pair_spot:
        spot_price = spot_mid if spot_mid == spot_mid else price
        spot.trade(pair_spot, spot_price * (1 + costs.slippage_allowance), 0.0)
        spot.price = spot_price
    rate = costs.perp_taker_fee + costs.slippage_allowance
    perp.trade(intent.side.sign * intent.qty, price, perp.fee_for(rate, intent.qty, price))
    perp.price = price
    equity = book.collateral.margin_equity(spot, perp)
    if equity <= 0:
        return "perp margin equity is not positive"
    why = leverage_veto(perp.notional / equity, limits)
    if why:
        return why
    try:
        liq = liquidation_of(costs.margin, book.collateral, spot, perp)
    except NotionalBeyondTiers as exc:
        return f"liquidation outside the venue's margin tiers: {exc}"
    return buffer_veto(margin_buffer(liq, price, perp.qty), limits)


# The pre-trade limits, one function each: the engine's check above and the
# live pre-flight of a paired trade both judge a trade by these. Each gives
# the reason a trade is refused, or "" when the limit holds.

def position_over(qty_after: float, max_position_btc: float) -> bool:
    return abs(qty_after) > max_position_btc + 1e-12


def notional_over(qty_after: float, price: float, max_notional: float) -> bool:
    return abs(qty_after) * price > max_notional


def leverage_over(leverage_after: float, max_leverage: float) -> bool:
    return leverage_after > max_leverage + 1e-12


def buffer_under(buffer_after: float, min_margin_buffer: float) -> bool:
    return buffer_after < min_margin_buffer


def position_veto(qty_after: float, limits: RiskLimits) -> str:
    if position_over(qty_after, limits.max_position_btc):
        return f"position {abs(qty_after):.4f} BTC above max_position_btc {limits.max_position_btc}"
    return ""


def notional_veto(qty_after: float, price: float, limits: RiskLimits) -> str:
    if notional_over(qty_after, price, limits.max_notional):
        return f"notional {abs(qty_after) * price:,.0f} above max_notional {limits.max_notional:,.0f}"
    return ""


def leverage_veto(leverage_after: float, limits: RiskLimits) -> str:
    if leverage_over(leverage_after, limits.max_leverage):
        return f"leverage after trade {leverage_after:.2f} above max {limits.max_leverage}"
    return ""


def buffer_veto(buffer_after: float, limits: RiskLimits) -> str:
    if buffer_under(buffer_after, limits.min_margin_buffer):
        return f"margin buffer after trade {buffer_after:.1%} below {limits.min_margin_buffer:.0%}"
    return ""


@attrs.frozen(slots=True)
class RiskActions:
    alerts: tuple[Alert, ...] = ()
    intents: tuple[OrderIntent, ...] = ()
    transfer_to_perp: float = 0.0
    transfer: tuple[str, str, float] | None = None
    halted: bool = False


NO_ACTION = RiskActions()


# a top-up aims for a quarter under the leverage cap, so one hour's move does not trigger the next one
TOPUP_LEVERAGE_SHARE = 0.75
# a top-up the spot venue's cash cannot cover in full moves what there is while that is above this many fees
PARTIAL_TOPUP_FEES = 10


def target_leverage(limits: RiskLimits) -> float:
    """Leverage a top-up aims for (``TOPUP_LEVERAGE_SHARE`` of the cap)."""
    return TOPUP_LEVERAGE_SHARE * limits.max_leverage


# The margin monitor's decisions as scalar rules (plain floats in, a code out),
# so that ``RiskMonitor`` and the compiled Monte Carlo kernel
# (``fundarb.research.kernel``) run this one code.
MARGIN_OK, MARGIN_HARD_CUT, MARGIN_WAIT, MARGIN_ACT = 0, 1, 2, 3
TOPUP_FULL, TOPUP_PARTIAL, TOPUP_CUT = 0, 1, 2


def margin_state(buf: float, lev: float, min_buffer: float, hard_buffer: float, max_leverage: float,
                 transfer_pending: bool) -> int:
    """Within limits (OK); under the hard floor: cut at once (HARD_CUT); a
    top-up already on its way (WAIT); else act (ACT: top up or cut)."""
    if buf >= min_buffer and lev <= max_leverage:
        return MARGIN_OK
    if buf < hard_buffer:
        return MARGIN_HARD_CUT
    return MARGIN_WAIT if transfer_pending else MARGIN_ACT


def topup_step(spot_cash: float, need: float, transfer_fee: float) -> int:
    """Move ``need`` when the spot venue's cash covers it; else move what
    there is while that is worth it; else cut."""
    if spot_cash >= need:
        return TOPUP_FULL
    if spot_cash > transfer_fee * PARTIAL_TOPUP_FEES:
        return TOPUP_PARTIAL
    return TOPUP_CUT


def drawdown_of(equity: float, peak: float) -> float:
    return 1.0 - equity / peak if peak > 0 else 0.0


def allocation_excess(perp_cash: float, equity: float, share: float, tolerance: float) -> float:
    """Cash the perp venue holds above (+) or below (-) ``share`` of the
    equity, or 0 while within ``tolerance`` of the equity (or not finite)."""
    excess = perp_cash - share * equity
    if not math.isfinite(excess) or abs(excess) <= tolerance * equity:
        return 0.0
    return excess


def _liq(rule: MarginRule, wallet: float, qty: float, entry: float) -> float:
    return rule.liquidation_price(wallet, qty, entry, BOOK_MARGIN_MODE)


def _wallet_for(rule: MarginRule, liq: float, qty: float, entry: float) -> float:
    return rule.wallet_for(liq, qty, entry, BOOK_MARGIN_MODE)


def topup_cash(qty: float, mark: float, entry: float, cash: float, unrealized: float, target_buffer: float,
               target_lev: float, rule: MarginRule) -> float:
    """Cash to add to a perp on its own cash (``qty`` != 0) so that its
    liquidation price sits ``target_buffer`` from the mark and its leverage
    is ``target_lev``."""
    size = abs(qty)
    target_liq = (1 + target_buffer) * mark if qty < 0 else (1 - target_buffer) * mark
    wallet = _wallet_for(rule, target_liq, qty, entry)
    by_leverage = size * mark / target_lev - unrealized  # equity = cash + unrealized
    return max(wallet - cash, by_leverage - cash, 0.0)


def cut_size(qty: float, entry: float, cash: float, mark: float, target_buffer: float, target_lev: float,
             freed_cash: float, fee: float, with_freed: bool, rule: MarginRule) -> float:
    """Smallest size (BTC, in 5% steps of the position) to cut from a perp
    of ``qty`` on its own ``cash`` so that its buffer and leverage meet the
    targets; ``with_freed``: a cut of x also brings it max(freed_cash + x *
    mark - fee, 0) (the spot leg's cash and sale, less a transfer's fee)."""
    size = abs(qty)
    sign = 1.0 if qty > 0 else -1.0
    for step in range(1, 20):
        x = size * step / 20
        cash_x = cash + x * (mark - entry) * sign + (max(freed_cash + x * mark - fee, 0.0) if with_freed else 0.0)
        q = sign * (size - x)
        equity = cash_x + q * (mark - entry)
        ok_lev = equity > 0 and abs(q) * mark / equity <= target_lev
        if ok_lev and margin_buffer(_liq(rule, cash_x, q, entry), mark, q) >= target_buffer:
            return x
    return size


def topup_needed(book: PositionBook, rule: MarginRule, target_buffer: float, target_lev: float) -> float:
    """Collateral to add on the perp venue so its buffer reaches
    ``target_buffer`` and its leverage falls to ``target_lev``: the cash that
    puts the liquidation price (venue ``rule``) at (1 + target) mark for a
    short, (1 - target) mark for a long (``MarginRule.wallet_for``)."""
    p = book.perp
    if p.qty == 0:
        return 0.0
    return topup_cash(p.qty, p.price, p.entry, p.cash, p.unrealized, target_buffer, target_lev, rule)


def reduction_needed(book: PositionBook, rule: MarginRule, target_buffer: float, target_lev: float, fee: float,
                     move_spot_cash: bool = True) -> float:
    """Smallest size (BTC, in 5% steps of the position) to cut from both legs
    so that the perp venue meets the targets: with the freed spot cash moved
    to it (``move_spot_cash``), or on its own cash alone (what holds until a
    transfer arrives)."""
    p = book.perp
    return cut_size(p.qty, p.entry, p.cash, p.price, target_buffer, target_lev, book.spot.cash, fee, move_spot_cash, rule)


def own_cash_reduction(p: VenueAccount, rule: MarginRule, target_buffer: float, target_lev: float) -> float:
    """Smallest size (BTC, in 5% steps of the position) to cut from the perp
    account ``p`` margined by its own cash so that its buffer and leverage
    meet the targets; a short or a long (a perp/perp carry's long leg)."""
    return cut_size(p.qty, p.entry, p.cash, p.price, target_buffer, target_lev, 0.0, 0.0, False, rule)


def collateral_reduction(book: PositionBook, rule: MarginRule, target_buffer: float, target_lev: float) -> float:
    """Smallest size (BTC, in 5% steps of the perp) to cut from both legs of
    a book whose perp is margined by what the carry holds (``Collateral``)
    so that the buffer and leverage meet the targets: the cut is made on
    copies of both accounts at their prices, without fees."""
    p = book.perp
    size = abs(p.qty)
    for step in range(1, 20):
        x = size * step / 20
        spot, perp = attrs.evolve(book.spot), attrs.evolve(p)
        spot.trade(-min(x, max(spot.qty, 0.0)), spot.price, 0.0)
        perp.trade(math.copysign(perp.units_of(x), -p.qty), perp.price, 0.0)
        if perp.qty == 0:
            return x
        equity = book.collateral.margin_equity(spot, perp)
        ok_lev = equity > 0 and perp.notional / equity <= target_lev
        if ok_lev and margin_buffer(liquidation_of(rule, book.collateral, spot, perp), perp.price, perp.qty) >= target_buffer:
            return x
    return size


@attrs.define(slots=True)
class RiskMonitor:
    limits: RiskLimits
    costs: VenueCosts
    kill: KillSwitch = attrs.field(factory=KillSwitch)
    peak_equity: float = 0.0
    drawdown: float = 0.0
    drift_alerted: bool = False
    # the flatten in progress: "" none, "sent" its orders are out, "stuck" it
    # ended with the book not flat (positions in ``flatten_left``)
    flatten_state: str = ""
    flatten_left: tuple[float, float] = (0.0, 0.0)

    def begin_flatten(self, book: PositionBook) -> list[OrderIntent]:
        """The closing orders of one flatten attempt, or none while an attempt
        is out or has failed on the positions the book holds now. Each leg is
        closed by what it holds: a leg already at zero is not traded."""
        if book.is_flat:
            self.flatten_state = ""
            return []
        if self.flatten_state == "sent":
            return []
        if self.flatten_state == "stuck" and _same_positions(self.flatten_left, book):
            return []
        self.flatten_state = "sent"
        return close_intents(book, "kill_flatten", 0)

    def _flatten_step(self, book: PositionBook, now: int) -> RiskActions:
        """Halted with ``flatten_on_kill``, not flat and no order in flight."""
        if self.flatten_state == "sent":  # the attempt has ended and left a position
            self.flatten_state = "stuck"
            self.flatten_left = (book.spot.qty, book.perp.qty)
            alert = Alert(now, "flatten_failed",
                          f"flatten ended with spot {book.spot.qty:+.6f} BTC and perp {book.perp.qty:+.6f} BTC "
                          "still held; no further attempt: waiting for `fundarb resume` or for the venue's "
                          "position to change", "critical")
            return RiskActions(alerts=(alert,))
        intents = self.begin_flatten(book)
        return RiskActions(intents=tuple(intents)) if intents else NO_ACTION

    def evaluate(self, book: PositionBook, now: int, busy: bool, transfer_pending: bool) -> RiskActions:
        """``busy``: orders in flight; no new corrective orders until they end.
        The drawdown is the carry's (``PositionBook.carry_equity``): the price
        moves of BTC held outside a carry are its holder's, not a loss of the carry."""
        eq = book.carry_equity
        if not math.isfinite(eq):
            return self._not_finite(book, now, busy, eq)
        if eq > self.peak_equity:
            self.peak_equity = eq
        self.drawdown = drawdown_of(eq, self.peak_equity)
        if not self.kill.halted:
            self.flatten_state = ""  # resumed: a later halt makes a new attempt
        if self.drawdown >= self.limits.max_drawdown and not self.kill.halted:
            return self._halt(book, now, f"drawdown {self.drawdown:.2%} >= {self.limits.max_drawdown:.2%}")
        if busy:
            return NO_ACTION
        if book.is_flat:
            self.flatten_state = ""
            return NO_ACTION if transfer_pending else self._allocation(book, now)
        if self.kill.halted and (self.limits.flatten_on_kill or self.flatten_state):
            return self._flatten_step(book, now)
        drift_actions = self._drift(book, now)
        if drift_actions is not None:
            return drift_actions
        long_actions = self._long_margin(book, now)
        if long_actions is not None:
            return long_actions
        return self._margin(book, now, transfer_pending)

    def _long_margin(self, book: PositionBook, now: int) -> RiskActions | None:
        """A perp/perp carry's long leg against its own venue's rule: under
        ``min_margin_buffer``, both legs are cut to what its own cash holds at
        ``topup_target_buffer`` (collateral between venues is a withdrawal:
        too slow to save a leg)."""
        rule = self.costs.long_margin
        if rule is None or not book.long_perp or book.spot.qty <= 0:
            return None
        buf = book.long_margin_buffer(rule)
        if buf >= self.limits.min_margin_buffer:
            return None
        x = own_cash_reduction(book.spot, rule, self.limits.topup_target_buffer, target_leverage(self.limits))
        return _cut(book, now, x, f"long leg's margin buffer {buf:.1%}")

    def _not_finite(self, book: PositionBook, now: int, busy: bool, eq: float) -> RiskActions:
        """Nothing computed from a non-finite equity is acted on: halt once,
        then only the one flatten attempt (``flatten_on_kill``)."""
        if not self.kill.halted:
            return self._halt(book, now, f"book equity is {eq}: a price, rate or amount in it is not a finite number")
        if busy or book.is_flat:
            return NO_ACTION
        if self.limits.flatten_on_kill or self.flatten_state:
            return self._flatten_step(book, now)
        return NO_ACTION

    def _allocation(self, book: PositionBook, now: int) -> RiskActions:
        """While flat, move cash back to the configured split between venues:
        a closed carry leaves the spot venue's and perp venue's cash apart by
        the price move, and the next entry needs it back where it belongs."""
        if not book.collateral.transfers:
            return NO_ACTION  # one account, or the BTC held margins the perp: nothing to move
        excess_perp = allocation_excess(book.perp.cash, book.equity, self.costs.perp_allocation,
                                        self.costs.rebalance_tolerance)
        if excess_perp == 0.0:
            return NO_ACTION
        src, dst = (book.perp_venue, book.spot_venue) if excess_perp > 0 else (book.spot_venue, book.perp_venue)
        alert = Alert(now, "cash_rebalance", f"moving {abs(excess_perp):,.2f} from {src} to {dst}", "info")
        return RiskActions(alerts=(alert,), transfer=(src, dst, abs(excess_perp)))

    def _halt(self, book: PositionBook, now: int, reason: str) -> RiskActions:
        self.kill.halt(reason, now)
        alert = Alert(now, "kill_switch", f"halted: {reason}", "critical")
        self.flatten_state = ""
        intents = self.begin_flatten(book) if self.limits.flatten_on_kill and not book.is_flat else []
        return RiskActions(alerts=(alert,), intents=tuple(intents), halted=True)

    def _drift(self, book: PositionBook, now: int) -> RiskActions | None:
        drift = book.drift
        if drift <= self.limits.max_drift:
            self.drift_alerted = False
            return None
        alert = Alert(now, "delta_drift", f"delta drift {drift:.2%} above {self.limits.max_drift:.0%} (delta {book.delta:+.6f} BTC)")
        alerts = () if self.drift_alerted else (alert,)
        self.drift_alerted = True
        if not self.limits.auto_rebalance:
            return RiskActions(alerts=alerts)
        return RiskActions(alerts=alerts, intents=tuple(rebalance_intents(book)))

    def _margin(self, book: PositionBook, now: int, transfer_pending: bool) -> RiskActions:
        if book.perp.qty == 0:
            return NO_ACTION
        rule = self.costs.margin
        buf = book.margin_buffer(rule)
        lev = book.leverage()
        lim = self.limits
        state = margin_state(buf, lev, lim.min_margin_buffer, lim.hard_margin_buffer, lim.max_leverage, transfer_pending)
        if state == MARGIN_OK:
            return NO_ACTION
        if state == MARGIN_HARD_CUT:
            # a transfer takes too long: cut at once, in one order per leg, to
            # what the perp venue's own cash holds above the hard floor; a
            # top-up (pending or next) then restores the buffer target and the
            # leverage cap (cutting alone cannot lower leverage much: equity
            # stays put while the size shrinks)
            x = (reduction_needed(book, rule, self.limits.hard_margin_buffer, math.inf,
                                  self.costs.transfer_fee, move_spot_cash=False) if book.collateral.transfers
                 else collateral_reduction(book, rule, self.limits.hard_margin_buffer, math.inf))
            return _cut(book, now, x, f"margin buffer {buf:.1%} under the hard floor, leverage {lev:.2f}", "critical")
        if state == MARGIN_WAIT:
            return NO_ACTION  # a top-up is on its way
        target, target_lev = self.limits.topup_target_buffer, target_leverage(self.limits)
        if book.long_perp or not book.collateral.transfers:
            # perp/perp: the other venue's cash margins the long leg, and moving it is a withdrawal; the BTC
            # held (or the unified account) is the margin: nothing to move. Either way, reduce
            x = (own_cash_reduction(book.perp, rule, target, target_lev) if book.long_perp
                 else collateral_reduction(book, rule, target, target_lev))
            return _cut(book, now, x, f"margin buffer {buf:.1%}, leverage {lev:.2f}")
        need = topup_needed(book, rule, target, target_lev) + self.costs.transfer_fee
        spot_cash = book.spot.cash
        step = topup_step(spot_cash, need, self.costs.transfer_fee)
        if step == TOPUP_FULL:
            return RiskActions(
                alerts=(Alert(now, "margin_topup", f"margin buffer {buf:.1%}, leverage {lev:.2f}: moving {need:,.2f} to the perp venue"),),
                transfer_to_perp=need,
            )
        if step == TOPUP_PARTIAL:
            # not enough for the whole top-up: move what there is, reduce the rest next
            return RiskActions(transfer_to_perp=spot_cash)
        x = reduction_needed(book, rule, target, target_lev, self.costs.transfer_fee)
        return _cut(book, now, x, f"margin buffer {buf:.1%}, leverage {lev:.2f}")


def _cut(book: PositionBook, now: int, x: float, why: str, severity: str = "warning") -> RiskActions:
    """Reduce both legs by ``x`` BTC (``reduce_intents``), alerting ``why``."""
    alert = Alert(now, "margin_reduce", f"{why}: reducing both legs by {x:.4f} BTC", severity)
    return RiskActions(alerts=(alert,), intents=tuple(reduce_intents(book, x, "margin_reduce")))


def _same_positions(left: tuple[float, float], book: PositionBook) -> bool:
    return abs(left[0] - book.spot.qty) <= 1e-12 and abs(left[1] - book.perp.qty) <= 1e-12


def rebalance_intents(book: PositionBook) -> list[OrderIntent]:
    """Bring delta back to zero without adding exposure: if a leg is gone,
    unwind the other; else cut the larger leg down to the smaller."""
    s, p = book.spot, book.perp
    if abs(s.qty) < 1e-12 or abs(p.qty) < 1e-12:
        return close_intents(book, "unwind_naked_leg", 0)
    larger = s if abs(s.qty + p.coin) > abs(p.qty) else p
    qty = larger.units_of(abs(book.delta))
    if qty <= 0:
        return []  # less than one contract apart: nothing a venue can trade
    side = Side.SELL if larger.qty > 0 else Side.BUY
    return [OrderIntent(larger.venue, side, qty, "rebalance", 0, reduce_only=True)]


def reduce_intents(book: PositionBook, qty: float, reason: str) -> list[OrderIntent]:
    out = []
    # BTC held for its owner (``Collateral.keep_btc``) is not sold: cutting the short alone is the reduction
    for acct in (book.perp,) if book.collateral.keep_btc else (book.spot, book.perp):
        q = acct.units_of(min(qty, abs(acct.qty)))
        if q > 1e-12:
            side = Side.SELL if acct.qty > 0 else Side.BUY
            out.append(OrderIntent(acct.venue, side, q, reason, 0, reduce_only=True))
    return out
