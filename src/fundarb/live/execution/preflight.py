"""Pre-flight of a paired trade: what the venues say now (``Snapshot``), and
the plan and checks a trade of a given size gets against it (``plan_trade``,
pure: the same snapshot always gives the same plan).

The rules are the ones the engine trades by, applied to the venues' numbers:
size, notional, leverage and margin-buffer limits are ``fundarb.core.risk``'s
(``position_veto``, ``notional_veto``, ``leverage_veto``, ``buffer_veto``),
and the funding check is the strategy's entry rule
(``FundingSignal.known_apr`` of a window settled at the current rate with
the predicted rate as its newest, ``known_signal``, less
the backtest's round trip, ``fundarb.wiring.round_trip_cost``, amortised over
``strategy.expected_holding_days``, against ``strategy.entry_apr``). What
only the venue can say is checked here: depth (the size fills within the top
levels), spread and expected slippage (walking the book) against
``live.max_spread_bp`` / ``live.max_slippage_bp``, lot size and minimum
notional of both markets, free balances, and, for a close, what the venue
and the trade log hold. The margin buffer is the venue's: the liquidation
price by its own rule and tiers in isolated mode (``Snapshot.margin``,
fetched at run time by ``venue_margin_rule``, the shipped snapshot only with
a note), the collateral the notional over the venue's leverage setting.

A perp/perp carry's long leg is a linear perp on its own venue
(``Snapshot.long``, read when the leg is a perp: ``LiveLeg.is_perp``): an
open needs its initial margin and fee free in that venue's futures wallet,
and each leg's liquidation price, leverage and margin buffer are checked by
its own venue's rule and tiers; a close checks each leg's position on its
venue; the funding check is the strategy's differential (the short's signal
less what the long pays, ``CarryStrategy.long_apr``).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import attrs

from fundarb.config import Config
from fundarb.core.book import COIN, UNIFIED, Collateral, VenueAccount, btc_worth, liquidation_of
from fundarb.core.funding import annualize
from fundarb.core.liquidation import ISOLATED, LiquidationRuleMissing, MarginRule, NotionalBeyondTiers, collateral_value
from fundarb.core.model import MarketKind, Side
from fundarb.core.risk import buffer_veto, leverage_veto, notional_veto, position_veto
from fundarb.core.strategy import FundingSignal, amortised_cost_apr, clears_entry
from fundarb.data.margin_tiers import is_modelled, rule_from_ccxt_tiers, shipped_rule
from fundarb.live.ccxt.client import MarketRules, VenueSetupError
from fundarb.live.execution.orders import LiveLeg
from fundarb.live.journal import lift_hint
from fundarb.support.scrub import describe
from fundarb.venues import quirks_or_plain
from fundarb.venues.base import UnifiedFigures
from fundarb.wiring import round_trip_cost, venue_leverage

BOOK_LEVELS = 20
Levels = tuple[tuple[float, float], ...]  # (price, BTC) best first


@attrs.frozen
class Snapshot:
    ts: int
    spot_bids: Levels
    spot_asks: Levels
    perp_bids: Levels
    perp_asks: Levels
    spot_quote_free: float
    spot_base_free: float
    perp_quote_free: float
    perp_equity: float
    perp_qty: float  # signed BTC
    perp_entry: float
    perp_collateral: float  # the isolated wallet of the position (its margin, unrealised PnL not included)
    perp_leverage: float  # the venue's leverage setting for the symbol
    mark: float
    funding_rate: float
    predicted_rate: float | None
    interval_hours: float
    next_funding_ts: int
    spot_taker_fee: float
    perp_taker_fee: float
    journal_spot: float
    journal_perp: float
    margin: MarginRule  # the perp venue's liquidation rule and tiers
    margin_note: str = ""  # set when the tiers are not the venue's own of now (the shipped snapshot)
    perp_face: float = 0.0  # an inverse perp's USD per contract (its unit is the contract); 0: it trades BTC
    perp_units: float = 0.0  # the venue's signed position in the perp's unit
    journal_perp_units: float = 0.0
    perp_settle: str = "USDT"  # the asset the perp margins and settles in (BTC for an inverse perp)
    perp_wallet: float = 0.0  # an inverse perp's wallet balance in its coin, unrealized PnL not included
    one_wallet: bool = False  # both legs in one wallet (a unified account): its balances are the spot's too
    unified: UnifiedFigures | None = None  # a unified account's margin as the venue states it
    # a perp/perp carry's long perp on its own venue (``spot_quote_free``: its futures wallet's free USDT)
    long: LongPerp | None = None


@attrs.frozen
class LongPerp:
    """A perp/perp carry's long perp as its own venue says it now."""

    qty: float  # signed BTC
    entry: float
    collateral: float  # the isolated wallet of the position (its margin, unrealised PnL not included)
    leverage: float  # the venue's leverage setting for the symbol
    equity: float  # the futures wallet's total USDT
    mark: float
    funding_rate: float
    predicted_rate: float | None
    interval_hours: float
    next_funding_ts: int
    margin: MarginRule  # the long venue's liquidation rule and tiers
    margin_note: str = ""


@attrs.frozen
class LongAfter:
    """A perp/perp carry's long perp after the trade, by its own venue's rule."""

    account: str
    funding_per_settlement: float  # USDT the long receives (+) or pays (-) at its next settlement at today's rate
    funding_apr: float
    next_funding_ts: int
    leverage_after: float
    buffer_after: float
    liquidation_after: float
    venue_leverage: float
    margin_note: str = ""


@attrs.frozen
class LegPlan:
    account: str
    symbol: str
    side: Side
    qty: float  # BTC (an inverse perp's: its contracts' worth at ``price``)
    mid: float
    price: float  # expected average fill, walking the book
    fee: float  # USDT
    spread_bp: float
    units: float = -1.0  # the order in the leg's unit (contracts of an inverse perp); -1: ``qty``

    @property
    def order(self) -> float:
        """What is sent, in the leg's unit."""
        return self.qty if self.units < 0 else self.units

    @property
    def notional(self) -> float:
        return self.qty * self.price

    @property
    def slippage(self) -> float:
        """USDT lost to the spread and depth against the mid."""
        return self.side.sign * self.qty * (self.price - self.mid)

    @property
    def slippage_bp(self) -> float:
        return abs(self.price - self.mid) / self.mid * 1e4 if self.mid > 0 else math.inf


@attrs.frozen
class Check:
    name: str
    ok: bool
    detail: str


@attrs.frozen
class TradePlan:
    kind: str  # "open" | "close"
    qty: float
    spot: LegPlan
    perp: LegPlan
    checks: tuple[Check, ...]
    funding_per_settlement: float  # USDT the short receives at the next settlement at today's rate
    funding_apr: float
    predicted_apr: float | None
    net_apr: float
    next_funding_ts: int
    leverage_after: float
    buffer_after: float
    liquidation_after: float
    venue_leverage: float
    margin_note: str = ""
    long: LongAfter | None = None  # a perp/perp carry's long perp after the trade

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    @property
    def fees(self) -> float:
        return self.spot.fee + self.perp.fee

    @property
    def slippage(self) -> float:
        return self.spot.slippage + self.perp.slippage


def walk(levels: Levels, qty: float) -> float:
    """Average price of taking ``qty`` BTC from ``levels``; nan if the book is too thin."""
    if qty <= 0:  # a leg with nothing to trade: its price is the touch
        return levels[0][0] if levels else math.nan
    left, cost = qty, 0.0
    for price, size in levels:
        take = min(left, size)
        cost += take * price
        left -= take
        if left <= 1e-12:
            return cost / qty
    return math.nan


def _leg(account: str, symbol: str, side: Side, qty: float, bids: Levels, asks: Levels, fee_rate: float,
         face: float = 0.0) -> LegPlan:
    """The plan of ``qty`` in the leg's unit: BTC, or (``face`` > 0) contracts
    of an inverse perp, whose BTC worth is taken at the price the book gives."""
    mid = 0.5 * (bids[0][0] + asks[0][0]) if bids and asks else math.nan
    levels = asks if side is Side.BUY else bids
    units = -1.0
    if face:
        units = qty
        price = walk(levels, btc_worth(units, face, mid))
        qty = btc_worth(units, face, price if price == price else mid)
    else:
        price = walk(levels, qty)
    spread = (asks[0][0] - bids[0][0]) / mid * 1e4 if bids and asks else math.inf
    return LegPlan(account, symbol, side, qty, mid, price, fee_rate * qty * (price if price == price else mid), spread,
                   units)


def plan_trade(cfg: Config, snap: Snapshot, kind: str, qty: float, spot_rules: MarketRules,
               perp_rules: MarketRules, blocked: str | None = None, spot_qty: float | None = None) -> TradePlan:
    """``qty`` on the perp leg (its unit: BTC, or an inverse perp's contracts),
    and ``spot_qty`` BTC on the spot leg (default ``qty``; closing
    everything: the spot leg holds the buy's fee less)."""
    opening = kind == "open"
    spot_qty = qty if spot_qty is None else spot_qty
    spot = _leg(cfg.spot_account, cfg.spot.symbol, Side.BUY if opening else Side.SELL, spot_qty,
                snap.spot_bids, snap.spot_asks, snap.spot_taker_fee)
    perp = _leg(cfg.perp_account, cfg.perp.symbol, Side.SELL if opening else Side.BUY, qty,
                snap.perp_bids, snap.perp_asks, snap.perp_taker_fee, snap.perp_face)
    coin = bool(snap.perp_face)  # an inverse perp margined by the carry's BTC
    live, limits = cfg.live_settings, cfg.risk
    # isolated (linear): the leverage setting sizes the position's collateral, so it is kept at the
    # config's limit; cross (coin-margined): it sizes only the initial margin, and an open sets it to
    # the venue leverage the config models before it sends (``wiring.venue_leverage``)
    venue_lev = float(venue_leverage(cfg)) if snap.perp_face else (
        min(snap.perp_leverage, float(math.floor(limits.max_leverage))) or 1.0)
    checks: list[Check] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append(Check(name, bool(ok), detail))

    if opening and blocked:
        check("entries", False, f"new entries are blocked: {blocked} ({lift_hint(blocked)})")
    traded = [leg for leg in (spot, perp) if leg.qty > 0]  # closing a lone leg trades one market only
    for leg in traded:
        many = leg.units >= 0  # contracts, or an amount of BTC
        size = f"{leg.order:g} contracts" if many else f"{leg.qty:g} BTC"
        fills = ("fill" if many else "fills") if leg.price == leg.price else ("do NOT fill" if many else "does NOT fill")
        check(f"{leg.account} book", leg.price == leg.price, f"{size} {fills} within the top {BOOK_LEVELS} levels")
        check(f"{leg.account} spread", leg.spread_bp <= live.max_spread_bp,
              f"spread {leg.spread_bp:.2f} bp (limit {live.max_spread_bp:g} bp)")
        check(f"{leg.account} slippage", leg.slippage_bp <= live.max_slippage_bp,
              f"expected slippage {leg.slippage_bp:.2f} bp vs mid (limit {live.max_slippage_bp:g} bp)")
    for rules, leg in ((spot_rules, spot), (perp_rules, perp)):
        if leg.qty <= 0:
            continue
        problems = rules.problems(leg.order, leg.price if leg.price == leg.price else leg.mid)
        check(f"{leg.account} lot and notional", not problems,
              "; ".join(problems) or f"lot {float(rules.step_btc):g} {rules.unit}, minimum notional {rules.min_cost:,.2f} USDT")

    long_after: LongAfter | None = None
    if coin:
        perp_after, leverage, buffer, liq = _coin_margined(snap, opening, spot, perp, venue_lev, limits, check,
                                                           keeps_btc=cfg.keeps_btc)
    elif snap.long is not None:
        long_lev = min(snap.long.leverage, float(math.floor(limits.max_leverage))) or 1.0
        perp_after, leverage, buffer, liq, long_after = _perp_perp(snap, snap.long, opening, spot, perp, venue_lev,
                                                                   long_lev, limits, check)
    else:
        margin_of = _unified if snap.unified is not None else _linear
        perp_after, leverage, buffer, liq = margin_of(snap, opening, spot, perp, venue_lev, limits, check)

    funding_apr = annualize(snap.funding_rate, snap.interval_hours)
    predicted_apr = annualize(snap.predicted_rate, snap.interval_hours) if snap.predicted_rate is not None else None
    # the backtest's entry rule: its signal, its round-trip cost (fees, half spread, impact and transfers at
    # the configured size), amortised over the expected holding period
    cost_apr = amortised_cost_apr(round_trip_cost(cfg, spot.mid), cfg.strategy.expected_holding_days)
    signal = known_signal(cfg.strategy.signal_settlements, snap.funding_rate, snap.predicted_rate, snap.interval_hours)
    long_pays = long_apr(snap.long)  # perp/perp: what the long leg pays, as the strategy counts it
    net = signal - long_pays - cost_apr
    if opening:
        pred = f", predicted {predicted_apr:.2%}" if predicted_apr is not None else ", no predicted rate published"
        what = "funding" if snap.long is None else (
            f"the long pays {long_pays:.2%} APR, the short's funding")
        check("funding", clears_entry(signal - long_pays, cost_apr, cfg.strategy.entry_apr),
              f"{what} {funding_apr:.2%} APR{pred}; net of the round trip over "
              f"{cfg.strategy.expected_holding_days:g} days {net:.2%} (entry threshold {cfg.strategy.entry_apr:.2%})")
    per_settlement = -perp_after * snap.mark * snap.funding_rate + 0.0  # + 0.0: no "-0.0000" when flat
    return TradePlan(kind, qty, spot, perp, tuple(checks), per_settlement, funding_apr, predicted_apr, net,
                     snap.next_funding_ts, leverage, buffer, liq, venue_lev, snap.margin_note, long_after)


def known_signal(window: int, rate: float, predicted: float | None, interval_hours: float) -> float:
    """The strategy's signal (``FundingSignal.known_apr``) for a venue that
    says only its current rate and its prediction: the window settled at the
    current rate, the predicted rate its newest where the venue gives one."""
    sig = FundingSignal(window)
    for _ in range(window):
        sig.on_settlement(0, rate, interval_hours)
    sig.on_rate(predicted, interval_hours)
    return sig.known_apr()


def long_apr(long: LongPerp | None) -> float:
    """What a perp/perp carry's long leg pays, annualised (0 without one): its
    rate now, or the predicted next one where that is higher (the strategy's
    ``CarryStrategy.long_apr``)."""
    if long is None:
        return 0.0
    now = annualize(long.funding_rate, long.interval_hours)
    if long.predicted_rate is None:
        return now
    return max(now, annualize(long.predicted_rate, long.interval_hours))


Checker = Any  # check(name, ok, detail)


def _linear(snap: Snapshot, opening: bool, spot: LegPlan, perp: LegPlan, venue_lev: float, limits: Any,
            check: Checker) -> tuple[float, float, float, float]:
    """Balances, limits and the margin of a linear short in its own isolated
    wallet: (perp BTC after, leverage, margin buffer, liquidation price)."""
    qty = perp.qty
    perp_after = snap.perp_qty + perp.side.sign * qty
    if opening:
        need = spot.qty * spot.price * 1.002  # 0.2%: the price may move between plan and fill
        check("spot balance", snap.spot_quote_free >= need,
              f"{snap.spot_quote_free:,.2f} USDT free, the buy needs about {need:,.2f}")
        margin = perp.notional / venue_lev + perp.fee
        check("perp balance", snap.perp_quote_free >= margin,
              f"{snap.perp_quote_free:,.2f} USDT free, the short needs {margin:,.2f} margin and fee at {venue_lev:g}x")
        _size_checks(perp_after, snap.mark, limits, check)
    else:
        _close_checks(snap, spot.qty, qty, check)

    liq, unmodelled = _isolated_liquidation(snap.margin, snap.perp_qty, snap.perp_entry, snap.perp_collateral, perp,
                                            perp_after, venue_lev, opening)
    equity = snap.perp_equity - perp.fee
    leverage = abs(perp_after) * snap.mark / equity if equity > 0 else math.inf
    buffer = _margin_checks(opening, perp_after, leverage, liq, unmodelled, snap.mark, limits, check)
    return perp_after, leverage, buffer, liq


def _coin_margined(snap: Snapshot, opening: bool, spot: LegPlan, perp: LegPlan, venue_lev: float, limits: Any,
                   check: Checker, keeps_btc: bool = False) -> tuple[float, float, float, float]:
    """Balances, limits and the margin of an inverse short margined by the
    carry's BTC: the coin-margined wallet holds the carry's BTC (the BTC a
    buy brings is moved in after the pair), so the short is checked against
    that wallet with the bought BTC in it, by the venue's inverse rule through
    the core's own accounts (``Collateral.wallet``, ``liquidation_of``). The
    wallet must hold the short's initial margin at the venue's leverage
    before the pair, since both legs go out at once.

    ``keeps_btc`` (a carry on BTC already held): the spot wallet's free BTC
    is moved in before the pair (``transfers.hold_margin``) and counts for
    the initial margin; the BTC held on both wallets, with what the open
    buys, must cover the short after it; a close sells nothing."""
    coin, face, mark = snap.perp_settle, snap.perp_face, snap.mark
    account = VenueAccount("", MarketKind.PERP, 0.0, qty=snap.perp_qty, entry=snap.perp_entry, price=mark,
                           contract_size=face, coin=snap.perp_wallet)
    fee_coin = perp.fee / perp.price if perp.price == perp.price and perp.price > 0 else 0.0
    account.trade(perp.side.sign * perp.order, perp.price if perp.price == perp.price else perp.mid, fee_coin)
    account.price = mark
    perp_after = account.qty
    bought = spot.qty if opening else 0.0
    moved_in = snap.spot_base_free if keeps_btc and not snap.one_wallet else 0.0
    carry = VenueAccount("", MarketKind.SPOT, 0.0, qty=bought + moved_in, price=mark)
    if opening:
        need = spot.qty * spot.price * 1.002  # 0.2%: the price may move between plan and fill
        check("spot balance", snap.spot_quote_free >= need,
              f"{snap.spot_quote_free:,.2f} USDT free, the buy needs about {need:,.2f}")
        initial = perp.qty / venue_lev + fee_coin
        if keeps_btc:
            held = snap.perp_wallet + (0.0 if snap.one_wallet else snap.spot_base_free)
            check("perp balance", snap.perp_quote_free + moved_in >= initial,
                  f"{snap.perp_quote_free:.8g} {coin} free in the coin-margined wallet and {moved_in:.8g} to move "
                  f"in from the spot wallet; the short needs {initial:.8g} initial margin and fee at {venue_lev:g}x")
            # the short's BTC less what a contract's rounding may add: the holding and the buy cover the rest
            short = abs(perp_after) - (perp.qty / perp.order if perp.order else 0.0)
            check("BTC held", held + bought >= short - 1e-12,
                  f"{held:.8g} BTC held on the venue, {bought:.8g} bought; the short hedges {abs(perp_after):.8g}")
        else:
            check("perp balance", snap.perp_quote_free >= initial,
                  f"{snap.perp_quote_free:.8g} {coin} free in the coin-margined wallet; the short needs {initial:.8g} "
                  f"initial margin and fee at {venue_lev:g}x there before the bought BTC is moved in")
        _size_checks(perp_after, mark, limits, check)
    else:
        if not keeps_btc:  # a carry on BTC held sells nothing: the holding stays
            movable = snap.spot_base_free + (0.0 if snap.one_wallet else snap.perp_quote_free)
            check("spot holding", snap.journal_spot >= spot.qty - 1e-12 and movable >= spot.qty - 1e-12,
                  f"the carry holds {snap.journal_spot:g} BTC ({snap.spot_base_free:g} free on the spot wallet, "
                  f"{snap.perp_quote_free:.8g} movable from the coin-margined wallet); selling {spot.qty:g}")
        check("perp short", -snap.perp_units >= perp.order - 1e-12 and -snap.journal_perp_units >= perp.order - 1e-12,
              f"the venue shows {snap.perp_units:g} contracts (journal {snap.journal_perp_units:g}); "
              f"buying back {perp.order:g}" + ("; the BTC held stays" if keeps_btc else ""))
    unmodelled = ""
    try:
        liq = liquidation_of(snap.margin, Collateral(COIN), carry, account) if perp_after else math.nan
    except (LiquidationRuleMissing, NotionalBeyondTiers) as exc:
        liq, unmodelled = math.nan, str(exc)
    equity = Collateral(COIN).margin_equity(carry, account)
    leverage = abs(perp_after) * mark / equity if equity > 0 else math.inf
    buffer = _margin_checks(opening, perp_after, leverage, liq, unmodelled, mark, limits, check)
    return perp_after, leverage, buffer, liq


def _unified(snap: Snapshot, opening: bool, spot: LegPlan, perp: LegPlan, venue_lev: float, limits: Any,
             check: Checker) -> tuple[float, float, float, float]:
    """Balances, limits and the margin of a linear short in a unified
    account, by the venue's own figures (``Snapshot.unified``): what it says
    is available now, less the spot buy's cash, plus the BTC bought at the
    venue's collateral ratio, less the short's initial margin and the fees,
    must stay above 0; the liquidation price is the core's
    (``Collateral(UNIFIED)``) with the venue's tiers, the account's USDT and
    BTC after the trade."""
    u = snap.unified
    assert u is not None
    mark, qty = snap.mark, perp.qty
    perp_after = snap.perp_qty + perp.side.sign * qty
    held_btc = snap.spot_base_free
    btc_after = held_btc + (spot.qty if opening else -spot.qty)
    cash_after = snap.spot_quote_free - spot.side.sign * spot.notional - spot.fee - perp.fee
    collateral = Collateral(UNIFIED, u.btc_tiers)
    gained = (collateral_value(max(btc_after, 0.0), u.btc_tiers) - collateral_value(held_btc, u.btc_tiers)) * mark
    initial = perp.notional / venue_lev if opening else 0.0
    available = u.available - spot.side.sign * spot.notional + gained - initial - spot.fee - perp.fee
    if opening:
        need = spot.qty * spot.price * 1.002  # 0.2%: the price may move between plan and fill
        check("spot balance", snap.spot_quote_free >= need,
              f"{snap.spot_quote_free:,.2f} USDT free, the buy needs about {need:,.2f}")
        check("account margin", available >= 0,
              f"the venue says {u.available:,.2f} USD available (margin balance {u.margin_balance:,.2f}, "
              f"maintenance rate {u.mm_rate:.2%}); after the trade about {available:,.2f}: the BTC bought counts "
              f"{gained:,.2f} at the venue's collateral ratio, the short takes {initial:,.2f} at {venue_lev:g}x")
        _size_checks(perp_after, mark, limits, check)
    else:
        _close_checks(snap, spot.qty, qty, check)
    short = VenueAccount("", MarketKind.PERP, 0.0, qty=perp_after, entry=_entry_after(snap, perp, perp_after),
                         price=mark)
    account = VenueAccount("", MarketKind.SPOT, cash_after, qty=max(btc_after, 0.0), price=mark)
    unmodelled = ""
    try:
        liq = liquidation_of(snap.margin, collateral, account, short) if perp_after else math.nan
    except (LiquidationRuleMissing, NotionalBeyondTiers, ValueError) as exc:
        liq, unmodelled = math.nan, str(exc)
    equity = collateral.margin_equity(account, short)
    leverage = abs(perp_after) * mark / equity if equity > 0 else math.inf
    buffer = _margin_checks(opening, perp_after, leverage, liq, unmodelled, mark, limits, check)
    return perp_after, leverage, buffer, liq


def _close_checks(snap: Snapshot, spot_qty: float, qty: float, check: Checker) -> None:
    """A close of a BTC-unit short: what the carry and the venues hold covers it."""
    check("spot holding", snap.journal_spot >= spot_qty - 1e-12 and snap.spot_base_free >= spot_qty - 1e-12,
          f"the carry holds {snap.journal_spot:g} BTC spot ({snap.spot_base_free:g} free on the venue); "
          f"selling {spot_qty:g}")
    check("perp short", -snap.perp_qty >= qty - 1e-12 and -snap.journal_perp >= qty - 1e-12,
          f"the venue shows {snap.perp_qty:g} BTC perp (journal {snap.journal_perp:g}); buying back {qty:g}")


def _size_checks(perp_after: float, mark: float, limits: Any, check: Checker) -> None:
    check("position size", not position_veto(perp_after, limits),
          f"{abs(perp_after):g} BTC short after the trade (limit {limits.max_position_btc:g})")
    check("notional", not notional_veto(perp_after, mark, limits),
          f"{abs(perp_after) * mark:,.0f} USDT after the trade (limit {limits.max_notional:,.0f})")


def _margin_checks(opening: bool, perp_after: float, leverage: float, liq: float, unmodelled: str, mark: float,
                   limits: Any, check: Checker, name: str = "") -> float:
    """The leverage and margin-buffer checks of an open; the buffer after the
    trade. ``perp_after``: the short's signed BTC, or (``name`` "long ") a
    perp/perp carry's long perp's, whose buffer is the fall to its liquidation."""
    held = perp_after > 0 if name == "long " else perp_after < 0
    buffer = ((mark - liq) if name == "long " else (liq - mark)) / mark if held and not unmodelled else math.inf
    if opening:
        check(f"{name}leverage", not leverage_veto(leverage, limits),
              f"{name or 'perp '}leverage {leverage:.2f}x after the trade (limit {limits.max_leverage:g}x)")
        if unmodelled:
            check(f"{name}margin buffer", False, f"no liquidation price: {unmodelled}")
        elif math.isinf(liq):
            check(f"{name}margin buffer", True, "no liquidation price after the trade: the short is covered, no rise "
                  f"liquidates it (floor {limits.min_margin_buffer:.0%})")
        else:
            check(f"{name}margin buffer", not buffer_veto(buffer, limits),
                  f"margin buffer {buffer:.1%} after the trade, liquidation at {liq:,.1f} "
                  f"(floor {limits.min_margin_buffer:.0%})")
    return buffer


def _entry_after(snap: Snapshot, perp: LegPlan, perp_after: float) -> float:
    return _entry_of(snap.perp_qty, snap.perp_entry, perp, perp_after)


def _entry_of(qty: float, entry: float, leg: LegPlan, after: float) -> float:
    """The entry of a position of ``qty`` BTC at ``entry`` once ``leg`` traded it to ``after``."""
    if after == 0:
        return 0.0
    if qty == 0 or (qty < 0) != (leg.side is Side.SELL):
        return leg.price if qty == 0 else entry
    size = abs(qty) + leg.qty
    return (abs(qty) * entry + leg.qty * leg.price) / size


def _isolated_liquidation(rule: MarginRule, qty: float, entry: float, collateral: float, leg: LegPlan, after: float,
                          venue_lev: float, opening: bool) -> tuple[float, str]:
    """The liquidation price by ``rule`` (a venue's, isolated) of a linear
    position of ``qty`` BTC at ``entry`` with ``collateral`` once ``leg``
    traded it to ``after``: an open adds the notional over the venue's
    leverage, a reduction releases collateral pro rata. (nan, why) when the
    rule cannot give one."""
    collateral += leg.notional / venue_lev if opening else -collateral * leg.qty / abs(qty) if qty else 0.0
    try:
        return rule.liquidation_price(collateral, after, _entry_of(qty, entry, leg, after), ISOLATED), ""
    except (LiquidationRuleMissing, NotionalBeyondTiers) as exc:
        return math.nan, str(exc)


def _perp_perp(snap: Snapshot, long: LongPerp, opening: bool, spot: LegPlan, perp: LegPlan, venue_lev: float,
               long_lev: float, limits: Any, check: Checker) -> tuple[float, float, float, float, LongAfter]:
    """Balances, limits and the margins of a perp/perp carry: each leg an
    isolated linear perp on its own venue's USDT, checked by that venue's
    rule and tiers: (short BTC after, its leverage, margin buffer and
    liquidation price, the long after the trade)."""
    perp_after = snap.perp_qty + perp.side.sign * perp.qty
    long_after = long.qty + spot.side.sign * spot.qty
    if opening:
        need = spot.notional / long_lev + spot.fee
        check("long balance", snap.spot_quote_free >= need,
              f"{snap.spot_quote_free:,.2f} USDT free on {spot.account}, the long needs {need:,.2f} margin and fee "
              f"at {long_lev:g}x")
        margin = perp.notional / venue_lev + perp.fee
        check("short balance", snap.perp_quote_free >= margin,
              f"{snap.perp_quote_free:,.2f} USDT free on {perp.account}, the short needs {margin:,.2f} margin and "
              f"fee at {venue_lev:g}x")
        _size_checks(perp_after, snap.mark, limits, check)
    else:
        check("long perp", long.qty >= spot.qty - 1e-12 and snap.journal_spot >= spot.qty - 1e-12,
              f"the venue shows {long.qty:g} BTC long (journal {snap.journal_spot:g}); selling {spot.qty:g}")
        check("short perp", -snap.perp_qty >= perp.qty - 1e-12 and -snap.journal_perp >= perp.qty - 1e-12,
              f"the venue shows {snap.perp_qty:g} BTC short (journal {snap.journal_perp:g}); buying back {perp.qty:g}")
    liq, unmodelled = _isolated_liquidation(snap.margin, snap.perp_qty, snap.perp_entry, snap.perp_collateral, perp,
                                            perp_after, venue_lev, opening)
    equity = snap.perp_equity - perp.fee
    leverage = abs(perp_after) * snap.mark / equity if equity > 0 else math.inf
    buffer = _margin_checks(opening, perp_after, leverage, liq, unmodelled, snap.mark, limits, check, "short ")
    long_liq, long_unmodelled = _isolated_liquidation(long.margin, long.qty, long.entry, long.collateral, spot,
                                                      long_after, long_lev, opening)
    long_equity = long.equity - spot.fee
    long_leverage = abs(long_after) * long.mark / long_equity if long_equity > 0 else math.inf
    long_buffer = _margin_checks(opening, long_after, long_leverage, long_liq, long_unmodelled, long.mark, limits,
                                 check, "long ")
    after = LongAfter(spot.account, -long_after * long.mark * long.funding_rate + 0.0,
                      annualize(long.funding_rate, long.interval_hours), long.next_funding_ts, long_leverage,
                      long_buffer, long_liq, long_lev, long.margin_note)
    return perp_after, leverage, buffer, liq, after


# ---------------------------------------------------------------------- reading the venues

def _levels(side: list, leg: LiveLeg) -> Levels:
    """A book side in (price, BTC): a linear perp's contracts of ``contract_size``
    BTC, an inverse perp's contracts worth face / price at their level."""
    size = leg.rules.contract_size
    return tuple((float(p), leg.btc(float(q) * size, float(p))) for p, q, *_ in side)


async def perp_position(leg: LiveLeg) -> dict[str, Any]:
    """The venue's own view of the perp position: signed BTC (an inverse
    perp's: face / entry), its signed size in the leg's unit (``units``:
    contracts of an inverse perp), entry, collateral (ccxt's: the position's
    margin with its unrealised PnL), unrealised PnL (in the settlement
    asset), leverage setting, liquidation price, margin mode ('' when not
    said). ``collateral - unrealized`` is the isolated wallet a liquidation
    formula takes."""
    rows = await leg.call("fetch_positions", [leg.symbol])
    out: dict[str, Any] = {"qty": 0.0, "units": 0.0, "entry": 0.0, "collateral": 0.0, "unrealized": 0.0,
                           "leverage": math.nan, "liquidation": math.nan, "mode": ""}
    for p in rows:
        if p.get("symbol") != leg.symbol:
            continue
        units = float(p.get("contracts") or 0.0) * leg.rules.contract_size
        sign = -1.0 if p.get("side") == "short" else 1.0
        out["leverage"] = float(p.get("leverage") or math.nan)
        if units:
            entry = float(p.get("entryPrice") or 0.0)
            btc = units if not leg.face else leg.btc(units, entry) if entry > 0 else 0.0
            out.update(qty=sign * btc, units=sign * units, entry=entry,
                       collateral=float(p.get("collateral") or p.get("initialMargin") or 0.0),
                       unrealized=float(p.get("unrealizedPnl") or 0.0) if p.get("collateral") or leg.face else 0.0,
                       liquidation=float(p.get("liquidationPrice") or math.nan), mode=str(p.get("marginMode") or ""))
    return out


async def venue_margin_rule(leg: LiveLeg, now_ns: int) -> tuple[MarginRule, str]:
    """The perp venue's liquidation rule with its tiers as the venue publishes
    them now (ccxt ``fetch_market_leverage_tiers``: Binance USD-M
    ``/fapi/v1/leverageBracket``, Bybit ``/v5/market/risk-limit``), and a
    note: empty when the tiers are the venue's own, else why the shipped
    snapshot (with its date) stands in. A venue whose formula is not modelled
    gets the rule that raises when used."""
    venue, symbol = leg.exchange.id, leg.symbol
    fallback = shipped_rule(venue, symbol)
    if not is_modelled(venue):
        return fallback, f"the liquidation rule of {venue} is not modelled"
    try:
        tiers = await leg.call("fetch_market_leverage_tiers", symbol)
        as_of = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now_ns / 1e9))
        return rule_from_ccxt_tiers(venue, symbol, tiers, as_of), ""
    except Exception as exc:  # noqa: BLE001 - any failure: the shipped snapshot, said out loud
        why = describe(exc, 200)
        return fallback, (f"{venue} margin tiers could not be fetched ({why}); using the shipped snapshot "
                          f"of {fallback.as_of or 'no date'} (docs/margin.md)")


def balance_of(reply: dict, asset: str, field: str) -> float:
    """``field`` (free, total) of ``asset`` in a ccxt fetch_balance reply; 0 when absent."""
    return float((reply.get(asset) or {}).get(field) or 0.0)


async def snapshot(spot: LiveLeg, perp: LiveLeg, journal_spot: float, journal_perp: float, ts: int,
                   default_leverage: float, journal_perp_units: float | None = None,
                   unified: bool = False) -> Snapshot:
    """Read both venues at once (books, balances, the perp position, funding;
    ``unified``: the account's margin figures as the venue states them; a
    long leg that is a perp: its position, funding and margin rule too).
    ``journal_perp_units``: the journal's perp in its unit (default ``journal_perp``)."""
    journal_perp_units = journal_perp if journal_perp_units is None else journal_perp_units
    figures = await unified_figures(perp) if unified else None
    settle = perp.settle  # what the perp margins in: USDT, or BTC (inverse)
    spot_book, perp_book, spot_bal, perp_bal, pos, funding, (margin, margin_note), long = await asyncio.gather(
        spot.call("fetch_order_book", spot.symbol, BOOK_LEVELS),
        perp.call("fetch_order_book", perp.symbol, BOOK_LEVELS),
        spot.call("fetch_balance"), perp.call("fetch_balance"),
        perp_position(perp), perp.call("fetch_funding_rate", perp.symbol), venue_margin_rule(perp, ts),
        long_perp(spot, ts, default_leverage))
    interval = funding_interval_hours(funding)
    mark = float(funding.get("markPrice") or 0.0) or 0.5 * (perp_book["bids"][0][0] + perp_book["asks"][0][0])
    predicted = funding.get("nextFundingRate")
    lev = pos["leverage"] if pos["leverage"] == pos["leverage"] else default_leverage
    return Snapshot(
        ts, _levels(spot_book["bids"], spot), _levels(spot_book["asks"], spot),
        _levels(perp_book["bids"], perp), _levels(perp_book["asks"], perp),
        balance_of(spot_bal, spot.quote, "free"), balance_of(spot_bal, spot.base, "free"),
        balance_of(perp_bal, settle, "free"), balance_of(perp_bal, settle, "total"),
        pos["qty"], pos["entry"], pos["collateral"] - pos["unrealized"], lev, mark,
        float(funding.get("fundingRate") or 0.0), float(predicted) if predicted is not None else None, interval,
        int(funding.get("fundingTimestamp") or funding.get("nextFundingTimestamp") or 0) * 1_000_000,
        float(spot.market.get("taker") or 0.0), float(perp.market.get("taker") or 0.0),
        journal_spot, journal_perp, margin, margin_note, perp.face, pos["units"], journal_perp_units, settle,
        balance_of(perp_bal, settle, "total") - pos["unrealized"] if perp.face else 0.0,
        spot.exchange.id == perp.exchange.id, figures,
        attrs.evolve(long, equity=balance_of(spot_bal, spot.quote, "total"),
                     mark=long.mark or 0.5 * (spot_book["bids"][0][0] + spot_book["asks"][0][0]))
        if long is not None else None)


def as_closed(snap: Snapshot, legs: tuple[str, str], venues: tuple[str, ...]) -> Snapshot:
    """``snap`` of a perp/perp pair on ``legs`` (the long's and the short's
    venue, ccxt ids) as the venues will be once the pair held on ``venues``
    (a rotation's) is closed: a leg on one of those venues holds nothing
    there, and its futures wallet's whole balance is free (an estimate: the
    close's fees and PnL are not in it)."""
    if snap.long is None:
        return snap
    long_venue, short_venue = legs
    if short_venue in venues:
        snap = attrs.evolve(snap, perp_qty=0.0, perp_entry=0.0, perp_collateral=0.0, perp_units=0.0,
                            perp_quote_free=max(snap.perp_quote_free, snap.perp_equity))
    if long_venue in venues:
        assert snap.long is not None
        snap = attrs.evolve(snap, spot_quote_free=max(snap.spot_quote_free, snap.long.equity),
                            long=attrs.evolve(snap.long, qty=0.0, entry=0.0, collateral=0.0))
    return snap


async def long_perp(leg: LiveLeg, ts: int, default_leverage: float) -> LongPerp | None:
    """The long leg's position, funding and liquidation rule on its own venue
    when it is a perp (a perp/perp carry); None for a spot market."""
    if not leg.is_perp:
        return None
    pos, funding, (margin, note) = await asyncio.gather(
        perp_position(leg), leg.call("fetch_funding_rate", leg.symbol), venue_margin_rule(leg, ts))
    predicted = funding.get("nextFundingRate")
    return LongPerp(pos["qty"], pos["entry"], pos["collateral"] - pos["unrealized"],
                    pos["leverage"] if pos["leverage"] == pos["leverage"] else default_leverage, 0.0,
                    float(funding.get("markPrice") or 0.0), float(funding.get("fundingRate") or 0.0),
                    float(predicted) if predicted is not None else None, funding_interval_hours(funding),
                    int(funding.get("fundingTimestamp") or funding.get("nextFundingTimestamp") or 0) * 1_000_000,
                    margin, note)


async def unified_figures(leg: LiveLeg) -> UnifiedFigures:
    """The unified account's margin figures and BTC collateral tiers as the
    venue states them (``fundarb.venues``); one error naming the venue when
    fundarb cannot read them there."""
    read = quirks_or_plain(leg.exchange.id).unified
    if read is None:
        raise VenueSetupError(f"{leg.account}: fundarb reads a unified account's margin from the venue, and it "
                              f"cannot on {leg.exchange.id} (it can on bybit's unified trading account)")
    return await read(leg)


def funding_interval_hours(funding: dict[str, Any]) -> float:
    """The settlement interval of a ccxt funding-rate answer (``interval`` like "8h"; 8 when absent)."""
    text = str(funding.get("interval") or "8h")
    try:
        return float(text.rstrip("h")) if text.endswith("h") else 8.0
    except ValueError:
        return 8.0
