"""Liquidation by each venue's own rule: tiered maintenance margin, and the
price at which a linear (USDT-margined) perp position is liquidated.

One implementation for every caller (the simulator, the risk monitor, the
emulator, the pre-flight checks, the engine's curve and the dashboards).
Pure: the tier tables come in as arguments (``fundarb.data.margin_tiers``
reads the shipped snapshot and turns a venue's run-time tiers into a rule).

Notation: Q = |qty| (BTC), side = +1 long / -1 short, EP = entry price,
WB = the wallet backing the position (cross: the cross wallet balance of an
account holding this one position; isolated: the position's isolated margin),
n = notional = Q * price, and a tier's (mmr, amount) where
maintenance margin MM(n) = n * mmr - amount.

- ``binance_usdm`` (Binance USD-M, one-way mode, isolated or cross with one
  position): LP = (WB + cum - side*Q*EP) / (Q*MMR - side*Q), with MMR and cum
  of the bracket holding the notional AT the liquidation price (Q * LP).
- ``bybit_linear`` (Bybit USDT perpetual): isolated, MM valued at entry:
  MM = Q*EP*MMR - deduction, LP_long = EP - (PM - MM)/Q,
  LP_short = EP + (PM - MM)/Q, PM = the isolated position margin; cross with
  one position: MM valued at the mark, so the Binance-shaped formula with
  amount = the deduction.

A long's liquidation price is floored at 0; no position -> nan. A rule of a
venue whose formula is not modelled (``rule_for``) raises
``LiquidationRuleMissing`` when it is used on a position, never before.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import attrs

from fundarb.core.errors import FundarbError

BINANCE_USDM = "binance_usdm"
BYBIT_LINEAR = "bybit_linear"
UNMODELLED = "unmodelled"
STYLES = (BINANCE_USDM, BYBIT_LINEAR)
ISOLATED, CROSS = "isolated", "cross"
MODES = (ISOLATED, CROSS)
# how far a tier table's maintenance amount may stray from the cum rule (rounding of published numbers)
AMOUNT_TOLERANCE = 1e-6


class LiquidationRuleMissing(FundarbError, ValueError):
    """A liquidation price or maintenance margin asked of a venue whose rule is not modelled."""


class NotionalBeyondTiers(FundarbError, ValueError):
    """A notional above the last tier of a venue's table."""


def _finite_nonneg(inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"margin tier {attr.name} must be a finite number >= 0, got {value}")


@attrs.frozen(slots=True)
class MarginTier:
    """One tier (Binance "bracket", Bybit "risk limit"): notionals in
    [floor, cap) (quote currency) are held to MM = notional * mmr - amount.
    ``amount`` is Binance's maintenance amount ``cum``, Bybit's maintenance
    margin deduction; ``max_leverage`` the tier's highest leverage."""

    floor: float = attrs.field(validator=_finite_nonneg)
    cap: float = attrs.field(validator=_finite_nonneg)
    mmr: float = attrs.field(validator=_finite_nonneg)
    amount: float = attrs.field(validator=_finite_nonneg)
    max_leverage: float = attrs.field(validator=_finite_nonneg)

    def __attrs_post_init__(self) -> None:
        if not self.cap > self.floor:
            raise ValueError(f"margin tier cap {self.cap} must be above its floor {self.floor}")
        if not self.mmr < 1:
            raise ValueError(f"margin tier mmr must be a fraction below 1, got {self.mmr}")

    def maintenance(self, notional: float) -> float:
        """MM = notional * mmr - amount."""
        return notional * self.mmr - self.amount


def _tier_tuple(tiers: Iterable[MarginTier]) -> tuple[MarginTier, ...]:
    return tuple(tiers)


def expected_amount(tiers: tuple[MarginTier, ...], i: int) -> float:
    """The maintenance amount rule: cum_n = floor_n * (mmr_n - mmr_(n-1)) + cum_(n-1),
    cum_1 = floor_1 * mmr_1 (0 for a first tier from 0): it keeps MM continuous
    where one tier ends and the next begins."""
    if i == 0:
        return tiers[0].floor * tiers[0].mmr
    return tiers[i].floor * (tiers[i].mmr - tiers[i - 1].mmr) + tiers[i - 1].amount


@attrs.frozen
class MarginRule:
    """A venue's liquidation rule for one symbol: its tier table and the
    formula ``style`` (``binance_usdm`` or ``bybit_linear``), with the date
    (``as_of``) and origin (``source``) of the table."""

    venue: str
    symbol: str
    tiers: tuple[MarginTier, ...] = attrs.field(converter=_tier_tuple)
    style: str
    as_of: str = ""
    source: str = ""

    def __attrs_post_init__(self) -> None:
        if self.style == UNMODELLED:
            return
        name = f"{self.venue} {self.symbol}"
        if self.style not in STYLES:
            raise ValueError(f"margin rule of {name}: style {self.style!r} is not one of {', '.join(STYLES)}")
        if not self.tiers:
            raise ValueError(f"margin rule of {name} has no tiers")
        if self.tiers[0].floor != 0:
            raise ValueError(f"margin rule of {name}: tier 1 starts at {self.tiers[0].floor:,.2f}, not 0")
        for i, t in enumerate(self.tiers):
            label = f"margin rule of {name}: tier {i + 1} ({t.floor:,.0f}-{t.cap:,.0f})"
            if i and t.floor != self.tiers[i - 1].cap:
                raise ValueError(f"{label} does not start where tier {i} ends ({self.tiers[i - 1].cap:,.0f})")
            if i and t.mmr < self.tiers[i - 1].mmr:
                raise ValueError(f"{label}: maintenance margin rate {t.mmr} is below tier {i}'s {self.tiers[i - 1].mmr}")
            want = expected_amount(self.tiers, i)
            if abs(t.amount - want) > AMOUNT_TOLERANCE * max(1.0, abs(want)):
                raise ValueError(f"{label}: maintenance amount {t.amount:,.6f} breaks the rule "
                                 f"cum_n = floor_n * (mmr_n - mmr_n-1) + cum_n-1 = {want:,.6f}")

    # --- the table -------------------------------------------------------------
    def _modelled(self) -> None:
        if self.style == UNMODELLED:
            raise LiquidationRuleMissing(f"liquidation rule of {self.venue} {self.symbol} is not modelled ({self.source})")

    def tier(self, notional: float) -> MarginTier:
        """The tier holding ``notional``: floor <= notional < cap (the last tier's cap included)."""
        self._modelled()
        if not notional >= 0:
            raise ValueError(f"notional must be >= 0, got {notional}")
        for t in self.tiers:
            if notional < t.cap:
                return t
        last = self.tiers[-1]
        if notional == last.cap:
            return last
        raise NotionalBeyondTiers(f"{self.venue} {self.symbol}: notional {notional:,.2f} is beyond the last margin tier "
                                  f"(cap {last.cap:,.0f}, {self.as_of or 'undated'} table)")

    def maintenance_margin(self, qty: float, price: float) -> float:
        """MM = Q * price * mmr - amount, with the tier of the notional Q * price (0 without a position)."""
        if qty == 0:
            return 0.0
        n = abs(qty) * price
        return self.tier(n).maintenance(n)

    def maintenance_for(self, qty: float, entry: float, mark: float, mode: str) -> float:
        """The maintenance margin the liquidation rule holds the position to now:
        valued at the entry for Bybit isolated, at the mark otherwise."""
        _check_mode(mode)
        return self.maintenance_margin(qty, entry if self._at_entry(mode) else mark)

    def _at_entry(self, mode: str) -> bool:
        """Bybit values an isolated position's maintenance margin at entry; every other rule at the mark."""
        return self.style == BYBIT_LINEAR and mode == ISOLATED

    def _position(self, qty: float, mode: str) -> tuple[float, float] | None:
        """(side, Q) of a position the rule is asked about; None without one."""
        _check_mode(mode)
        if qty == 0:
            return None
        self._modelled()
        return (1.0 if qty > 0 else -1.0), abs(qty)

    # --- liquidation -------------------------------------------------------------
    def liquidation_price(self, wallet: float, qty: float, entry: float, mode: str) -> float:
        """The mark at which equity (wallet + qty * (mark - entry)) falls to the
        venue's maintenance margin; nan without a position, floored at 0 for a long.

        binance_usdm, and bybit_linear cross: LP = (WB + cum - side*Q*EP) / (Q*MMR - side*Q),
        tier of the notional at LP; bybit_linear isolated: LP = EP - side*(PM - MM)/Q,
        MM = Q*EP*MMR - deduction (tier of the notional at entry)."""
        position = self._position(qty, mode)
        if position is None:
            return math.nan
        side, size = position
        if self._at_entry(mode):
            mm = self.maintenance_margin(qty, entry)
            lp = entry - side * (wallet - mm) / size
        else:
            lp = self._at_mark(wallet, side, size, entry)
        return max(lp, 0.0) if side > 0 else lp

    def _at_mark(self, wallet: float, side: float, size: float, entry: float) -> float:
        """Solve WB + side*Q*(P - EP) = Q*P*mmr - amount with the tier of Q*P.
        h(P) = side * (equity(P) - MM(Q P)) rises with P (slope Q (1 - side mmr) > 0)
        and MM is continuous across tiers (the cum rule), so the root is in the
        first tier whose cap has h >= 0."""

        def lp(t: MarginTier) -> float:
            return (wallet + t.amount - side * size * entry) / (size * t.mmr - side * size)

        def h(t: MarginTier, notional: float) -> float:
            price = notional / size
            return side * (wallet + side * size * (price - entry) - t.maintenance(notional))

        first = self.tiers[0]
        if h(first, 0.0) >= 0:  # the root is at or below price 0 (a long's floor; a short already under water)
            return lp(first)
        for t in self.tiers:
            if h(t, t.cap) >= 0:
                return lp(t)
        last = self.tiers[-1]
        raise NotionalBeyondTiers(f"{self.venue} {self.symbol}: the notional at the liquidation price, "
                                  f"{size * lp(last):,.2f}, is beyond the last margin tier (cap {last.cap:,.0f}, "
                                  f"{self.as_of or 'undated'} table)")

    def wallet_for(self, liq: float, qty: float, entry: float, mode: str) -> float:
        """The wallet (cross wallet balance, or isolated position margin) that
        puts the liquidation price at ``liq``; the inverse of ``liquidation_price``
        for liq > 0: WB = MM - side*Q*(liq - EP), MM valued at liq (at entry for
        bybit_linear isolated). nan without a position."""
        position = self._position(qty, mode)
        if position is None:
            return math.nan
        side, size = position
        mm = self.maintenance_margin(qty, entry if self._at_entry(mode) else liq)
        return mm - side * size * (liq - entry)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"margin mode must be one of {', '.join(MODES)}, got {mode!r}")


def rule_for(venue: str, symbol: str, tables: Mapping[tuple[str, str], MarginRule]) -> MarginRule:
    """The rule of (venue, symbol) in ``tables``; for any other market a rule
    that raises ``LiquidationRuleMissing`` when used (never another venue's
    formula in its place)."""
    rule = tables.get((venue, symbol))
    if rule is not None:
        return rule
    modelled = ", ".join(f"{v} {s}" for v, s in sorted(tables))
    return MarginRule(venue, symbol, (), UNMODELLED, source=f"modelled: {modelled or 'none'}")
