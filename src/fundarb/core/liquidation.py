"""Liquidation by each venue's own rule: tiered maintenance margin, and the
price at which a linear (USDT-margined) or inverse (coin-margined) perp
position is liquidated.

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
- ``hyperliquid`` (Hyperliquid USDC perpetual, as its docs "Liquidations" and
  "Margin tiers" state it): maintenance margin is half the initial margin at
  the tier's max leverage, mmr = l = 1 / maintenance_leverage = 1 / (2 *
  max_leverage) (BTC: 40x, so 1.25%), MM = n * l - maintenance_deduction;
  LP = price - side * margin_available / Q / (1 - l * side) with
  margin_available = WB - MM (isolated: the isolated margin; cross, one
  position: the account value), price = EP and MM valued there, l and the
  deduction of the tier holding the notional AT the liquidation price
  (Q * LP). It is the price where WB + side*Q*(P - EP) = MM(Q*P), the same
  root as the Binance-shaped formula, reached by the venue's own steps.

Unified margin (linear rules, cross mode only): ``collateral`` C is a BTC
quantity (after the venue's haircut, ``collateral_value``) counted as wallet
valued at the mark: WB + C*P + side*Q*(P - EP) = MM(Q*P), so per tier
LP = (WB + amount - side*Q*EP) / (Q*mmr - side*Q - C).

Inverse (coin-margined) rules: B = |qty| is the face value in USD (contracts
x contract size), qty = side*B, WB is in the coin (BTC), tiers' floor, cap
and amount are in the coin and the notional at a price P is B / P. Margin at
P: WB + side*B*(1/EP - 1/P); MM = (B/P)*mmr - amount.

- ``binance_coinm`` (Binance COIN-M, one position in one-way mode, isolated
  or cross): LP = (B*MMR + side*B) / (WB + cum + side*B/EP), MMR and cum of
  the bracket holding the coin notional AT the liquidation price (B / LP).
- ``bybit_inverse`` (Bybit inverse perpetual): isolated, MM valued at entry:
  MM = (B/EP)*MMR - deduction, LP_long = B / [B/EP + (PM - MM)],
  LP_short = B / [B/EP - (PM - MM)]; cross with one position: MM valued at
  the mark, so the Binance COIN-M formula with amount = the deduction.

A long's liquidation price is floored at 0; no position -> nan. A short no
rise of the mark can liquidate gets ``math.inf`` (its margin buffer is
infinite): an inverse short whose wallet covers it (mark-valued MM:
WB + amount >= B/EP, e.g. a 1x short margined by its own BTC; bybit_inverse
isolated: PM - MM >= B/EP, MM at entry), or a linear short whose unified
collateral grows at least as fast as its loss plus maintenance margin in
every tier of the table (Q*mmr + Q - C <= 0 in the last tier). An inverse
long whose margin is below maintenance even at an infinite price also gets
``math.inf`` (liquidated at every mark). A rule of a venue whose formula is
not modelled (``rule_for``) raises ``LiquidationRuleMissing`` when it is
used on a position, never before.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import attrs

from fundarb.core.errors import FundarbError

BINANCE_USDM = "binance_usdm"
BYBIT_LINEAR = "bybit_linear"
BINANCE_COINM = "binance_coinm"
BYBIT_INVERSE = "bybit_inverse"
HYPERLIQUID = "hyperliquid"
UNMODELLED = "unmodelled"
LINEAR_STYLES = (BINANCE_USDM, BYBIT_LINEAR, HYPERLIQUID)
INVERSE_STYLES = (BINANCE_COINM, BYBIT_INVERSE)
STYLES = LINEAR_STYLES + INVERSE_STYLES
ISOLATED, CROSS = "isolated", "cross"
MODES = (ISOLATED, CROSS)
# how far a tier table's maintenance amount may stray from the cum rule (rounding of published numbers)
AMOUNT_TOLERANCE = 1e-6


def is_inverse_symbol(symbol: str) -> bool:
    """Whether a ccxt symbol is of an inverse market: settled in its base coin (``BTC/USD:BTC``)."""
    pair, _, settle = symbol.partition(":")
    return bool(settle) and pair.partition("/")[0] == settle.partition("-")[0]


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
    [floor, cap) are held to MM = notional * mmr - amount (quote currency for
    a linear rule; the coin, e.g. BTC, for an inverse rule).
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
    formula ``style`` (``binance_usdm``, ``bybit_linear`` or ``hyperliquid``
    for a linear perp, ``binance_coinm`` or ``bybit_inverse`` for an inverse one), with the
    date (``as_of``) and origin (``source``) of the table."""

    venue: str
    symbol: str
    tiers: tuple[MarginTier, ...] = attrs.field(converter=_tier_tuple)
    style: str
    as_of: str = ""
    source: str = ""
    # the table as four columns (floor, cap, mmr, amount), for the scalar formulas below
    columns: tuple[tuple[float, ...], ...] = attrs.field(init=False, eq=False, repr=False)
    # the last liquidation price worked out, with what it was worked out from: a position's price is
    # asked for on every mark (by the risk monitor and the simulator) and changes only when the position does
    _last: list[tuple[tuple[float, float, float, str, float], float]] = attrs.field(
        init=False, eq=False, repr=False, factory=lambda: [((math.nan,) * 3 + ("", math.nan), math.nan)])

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(tuple(float(getattr(t, f)) for t in self.tiers)
                                                  for f in ("floor", "cap", "mmr", "amount")))
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

    @property
    def inverse(self) -> bool:
        """Whether the rule is of an inverse (coin-margined) perp: qty is USD face, wallet and tiers in the coin."""
        return self.style in INVERSE_STYLES

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
        """MM = Q * price * mmr - amount, with the tier of the notional Q * price
        (0 without a position); for an inverse rule, in the coin:
        MM = (|qty| / price) * mmr - amount, tier of the coin notional |qty| / price."""
        if qty == 0:
            return 0.0
        n = self._notional(abs(qty), price)
        mm = tiered_maintenance(n, self.columns[1], self.columns[2], self.columns[3]) if self.tiers and n >= 0 else math.nan
        return mm if mm == mm else self.tier(n).maintenance(n)  # beyond the table (or no table): tier() says why

    def _notional(self, size: float, price: float) -> float:
        """Q * price (linear), or the coin notional B / price (inverse)."""
        if not self.inverse:
            return size * price
        if not price > 0:
            raise ValueError(f"{self.venue} {self.symbol}: an inverse position's notional needs a price > 0, got {price}")
        return size / price

    def maintenance_for(self, qty: float, entry: float, mark: float, mode: str) -> float:
        """The maintenance margin the liquidation rule holds the position to now:
        valued at the entry for Bybit isolated, at the mark otherwise."""
        _check_mode(mode)
        return self.maintenance_margin(qty, entry if self._at_entry(mode) else mark)

    def _at_entry(self, mode: str) -> bool:
        """Bybit values an isolated position's maintenance margin at entry; every other rule at the mark."""
        return self.style in (BYBIT_LINEAR, BYBIT_INVERSE) and mode == ISOLATED

    def _position(self, qty: float, mode: str) -> tuple[float, float] | None:
        """(side, Q) of a position the rule is asked about; None without one."""
        _check_mode(mode)
        if qty == 0:
            return None
        self._modelled()
        return (1.0 if qty > 0 else -1.0), abs(qty)

    # --- liquidation -------------------------------------------------------------
    def liquidation_price(self, wallet: float, qty: float, entry: float, mode: str, *,
                          collateral: float = 0.0) -> float:
        """The mark at which the margin (linear: wallet + qty * (mark - entry);
        inverse: wallet + qty * (1/entry - 1/mark), in the coin) falls to the
        venue's maintenance margin; nan without a position, floored at 0 for a
        long, ``math.inf`` for a short no rise can liquidate.

        binance_usdm, and bybit_linear cross: LP = (WB + cum - side*Q*EP) / (Q*MMR - side*Q),
        tier of the notional at LP; bybit_linear isolated: LP = EP - side*(PM - MM)/Q,
        MM = Q*EP*MMR - deduction (tier of the notional at entry).
        binance_coinm, and bybit_inverse cross: LP = (B*MMR + side*B) / (WB + cum + side*B/EP),
        tier of the coin notional B/LP; bybit_inverse isolated: LP = B / (B/EP + side*(PM - MM)),
        MM = (B/EP)*MMR - deduction. A denominator of the wrong sign (side * it <= 0) is inf.
        hyperliquid (either mode, one position): LP = EP - side * (WB - MM(Q*EP)) / Q / (1 - l*side),
        l and the deduction of the tier of the notional at LP.

        ``collateral``: BTC (after the venue's haircut) counted at the mark as
        wallet, for a linear rule in cross mode only (a unified account):
        LP = (WB + amount - side*Q*EP) / (Q*mmr - side*Q - C); inf for a
        short when that denominator is <= 0 in every tier. ValueError in
        isolated mode or on an inverse rule unless it is 0."""
        args = (wallet, qty, entry, mode, collateral)
        last_args, last_price = self._last[0]
        if args == last_args:
            return last_price
        price = self._liquidation_price(wallet, qty, entry, mode, collateral)
        self._last[0] = (args, price)  # one store: a reader sees the pair whole
        return price

    def _liquidation_price(self, wallet: float, qty: float, entry: float, mode: str, collateral: float) -> float:
        self._check_collateral(collateral, mode)
        position = self._position(qty, mode)
        if position is None:
            return math.nan
        side, size = position
        if self.inverse:
            if not entry > 0:
                raise ValueError(f"{self.venue} {self.symbol}: an inverse position's entry price must be > 0, got {entry}")
            if self._at_entry(mode):
                mm = self.maintenance_margin(qty, entry)
                denom = size / entry + side * (wallet - mm)
                lp = size / denom if denom > 0 else math.inf
            else:
                lp = self._inverse_at_mark(wallet, side, size, entry)
        elif self.style == HYPERLIQUID:
            lp = self._hyperliquid(wallet, side, size, entry)
        elif self._at_entry(mode):
            mm = self.maintenance_margin(qty, entry)
            lp = entry - side * (wallet - mm) / size
        else:
            lp = self._at_mark(wallet, side, size, entry, collateral)
        return max(lp, 0.0) if side > 0 else lp

    def _check_collateral(self, collateral: float, mode: str) -> None:
        _check_mode(mode)
        if collateral == 0:
            return
        if not (math.isfinite(collateral) and collateral > 0):
            raise ValueError(f"collateral must be a finite BTC quantity >= 0, got {collateral}")
        if self.inverse or self.style == HYPERLIQUID:
            raise ValueError(f"{self.venue} {self.symbol}: collateral counts only for a linear perp of a unified "
                             f"account (an inverse rule's wallet is already the coin; Hyperliquid's perps are "
                             f"margined in USDC alone), got {collateral}")
        if mode != CROSS:
            raise ValueError(f"collateral counts only in a cross (unified) account, not in {mode} mode; got {collateral}")

    def _at_mark(self, wallet: float, side: float, size: float, entry: float, collateral: float = 0.0) -> float:
        """``linear_liquidation`` on this rule's table; its error beyond the last tier."""
        floors, caps, mmrs, amounts = self.columns
        lp = linear_liquidation(wallet, side, size, entry, collateral, floors, caps, mmrs, amounts)
        if lp != lp:
            last = self.tiers[-1]
            at_last = (wallet + last.amount - side * size * entry) / (size * last.mmr - side * size - collateral)
            raise NotionalBeyondTiers(f"{self.venue} {self.symbol}: the notional at the liquidation price, "
                                      f"{size * at_last:,.2f}, is beyond the last margin tier (cap {last.cap:,.0f}, "
                                      f"{self.as_of or 'undated'} table)")
        return lp

    def _hyperliquid(self, wallet: float, side: float, size: float, entry: float) -> float:
        """Hyperliquid's documented steps: for the tier holding the notional at
        the liquidation price, l = its mmr (1 / maintenance leverage),
        margin_available = WB - MM(Q * EP), LP = EP - side * margin_available /
        Q / (1 - l * side). Each tier gives a candidate; the one whose notional
        Q * LP lies in that tier is the answer (MM is continuous, so at most one
        root; a tie at a boundary is the same price). A long whose first-tier
        candidate is at or below 0 is floored at 0 by the caller."""
        for t in self.tiers:
            margin_available = wallet - t.maintenance(size * entry)
            lp = entry - side * margin_available / size / (1.0 - t.mmr * side)
            if side > 0 and t is self.tiers[0] and lp <= 0:
                return lp
            if t.floor <= size * lp <= t.cap:
                return lp
        last = self.tiers[-1]
        raise NotionalBeyondTiers(f"{self.venue} {self.symbol}: the notional at the liquidation price is beyond "
                                  f"the last margin tier (cap {last.cap:,.0f}, {self.as_of or 'undated'} table)")

    def _inverse_at_mark(self, wallet: float, side: float, size: float, entry: float) -> float:
        """Solve WB + side*B*(1/EP - 1/P) = (B/P)*mmr - amount with the tier of
        the coin notional n = B/P. In n, h(n) = side * (margin - MM) is
        continuous and falls (slope -(1 + side mmr) per unit of n), so the root
        is in the first tier whose cap has h <= 0; h <= 0 already at n = 0
        (P = inf) means no finite price: a covered short (never liquidated) or
        a long under water at any price, both inf."""

        def lp(t: MarginTier) -> float:
            denom = wallet + t.amount + side * size / entry
            return (size * t.mmr + side * size) / denom if side * denom > 0 else math.inf

        def h(t: MarginTier, notional: float) -> float:
            return side * (wallet + side * size / entry - side * notional - t.maintenance(notional))

        first = self.tiers[0]
        if h(first, 0.0) <= 0:
            return math.inf
        for t in self.tiers:
            if h(t, t.cap) <= 0:
                return lp(t)
        last = self.tiers[-1]
        at_last = lp(last)
        raise NotionalBeyondTiers(f"{self.venue} {self.symbol}: the coin notional at the liquidation price, "
                                  f"{size / at_last if at_last > 0 else math.inf:,.4f}, is beyond the last margin "
                                  f"tier (cap {last.cap:,.4f}, {self.as_of or 'undated'} table)")

    def wallet_for(self, liq: float, qty: float, entry: float, mode: str, *, collateral: float = 0.0) -> float:
        """The wallet (cross wallet balance, or isolated position margin) that
        puts the liquidation price at ``liq``; the inverse of ``liquidation_price``
        for liq > 0: WB = MM - side*Q*(liq - EP) - C*liq, MM valued at liq (at
        entry for bybit_linear isolated); inverse rules, in the coin:
        WB = MM - qty*(1/EP - 1/liq), MM valued at liq (at entry for
        bybit_inverse isolated). nan without a position."""
        self._check_collateral(collateral, mode)
        position = self._position(qty, mode)
        if position is None:
            return math.nan
        side, size = position
        if self.inverse and not (liq > 0 and entry > 0):
            raise ValueError(f"{self.venue} {self.symbol}: an inverse position needs liq and entry prices > 0, "
                             f"got {liq} and {entry}")
        mm = self.maintenance_margin(qty, entry if self._at_entry(mode) else liq)
        if self.inverse:
            return mm - qty * (1.0 / entry - 1.0 / liq)
        return linear_wallet_for(liq, side, size, entry, collateral, mm)


# The scalar formulas: plain floats and sequences in, a float out (nan where
# the root lies beyond the last tier), so that the rule above and the
# compiled Monte Carlo kernel (``fundarb.research.kernel``) run this one code.

def tiered_maintenance(notional: float, caps: Sequence[float], mmrs: Sequence[float], amounts: Sequence[float]) -> float:
    """MM = notional * mmr - amount of the tier holding ``notional`` (floor <=
    notional < cap, the last cap included); nan beyond the last tier."""
    for i in range(len(caps)):
        if notional < caps[i]:
            return notional * mmrs[i] - amounts[i]
    last = len(caps) - 1
    if notional == caps[last]:
        return notional * mmrs[last] - amounts[last]
    return math.nan


def linear_liquidation(wallet: float, side: float, size: float, entry: float, collateral: float,
                       floors: Sequence[float], caps: Sequence[float], mmrs: Sequence[float],
                       amounts: Sequence[float]) -> float:
    """Solve WB + C*P + side*Q*(P - EP) = Q*P*mmr - amount with the tier of Q*P.
    h(P) = side * (equity(P) - MM(Q P)) is continuous (MM is, by the cum
    rule) and linear in each tier, slope Q (1 - side mmr) + side C: without
    collateral it rises with P, so the root is in the first tier whose cap
    has h >= 0. With collateral a short's h may fall in the low tiers and
    rise in the high ones: the first tier whose cap has h >= 0 still holds
    the first root (h < 0 at its floor), and when none has, a last-tier
    slope <= 0 means no rise liquidates the short (inf). nan: the root is
    beyond the last tier."""
    price = 0.0 / size
    h = side * (wallet + collateral * price + side * size * (price - entry) - (0.0 * mmrs[0] - amounts[0]))
    if h >= 0:  # the root is at or below price 0 (a long's floor; a short already under water)
        d = size * mmrs[0] - side * size - collateral  # a long's is always < 0; a short under water whose collateral outgrows it: 0
        if (d < 0) if side > 0 else (d > 0):
            return (wallet + amounts[0] - side * size * entry) / d
        return 0.0
    for i in range(len(caps)):
        price = caps[i] / size
        h = side * (wallet + collateral * price + side * size * (price - entry) - (caps[i] * mmrs[i] - amounts[i]))
        if h >= 0:
            return (wallet + amounts[i] - side * size * entry) / (size * mmrs[i] - side * size - collateral)
    last = len(caps) - 1
    if side < 0 and size * mmrs[last] - side * size - collateral <= 0:  # collateral outgrows the loss and MM in every tier
        return math.inf
    return math.nan


def linear_wallet_for(liq: float, side: float, size: float, entry: float, collateral: float, mm: float) -> float:
    """The wallet that puts a linear position's liquidation price at ``liq``,
    ``mm`` its maintenance margin valued there: WB = MM - side*Q*(liq - EP) - C*liq."""
    return mm - side * size * (liq - entry) - (collateral * liq if collateral else 0.0)


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


def collateral_value(qty_btc: float, tiers: Sequence[tuple[float, float]]) -> float:
    """The BTC a unified account counts of ``qty_btc`` as collateral: each
    slice of the quantity inside a tier counts at that tier's ratio (Bybit's
    tiered collateral value ratio). ``tiers``: (up to BTC, ratio) pairs with
    ascending caps (the last may be ``math.inf``) and ratios in [0, 1]; a
    quantity beyond the last cap counts nothing. 0 for qty <= 0."""
    if not tiers:
        raise ValueError("collateral value tiers: none given")
    below = 0.0
    for i, (cap, ratio) in enumerate(tiers):
        label = f"collateral value tier {i + 1} (up to {cap}, ratio {ratio})"
        if not cap > below:
            raise ValueError(f"{label}: its cap must be above {below} (caps ascending from 0)")
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"{label}: the ratio must be in [0, 1]")
        if math.isinf(cap) and i != len(tiers) - 1:
            raise ValueError(f"{label}: only the last tier may be unbounded")
        below = cap
    if not math.isfinite(qty_btc):
        raise ValueError(f"collateral quantity must be a finite number of BTC, got {qty_btc}")
    if qty_btc <= 0:
        return 0.0
    value, floor = 0.0, 0.0
    for cap, ratio in tiers:
        if qty_btc <= floor:
            break
        value += (min(qty_btc, cap) - floor) * ratio
        floor = cap
    return value
