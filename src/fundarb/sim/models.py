"""Pluggable cost models of the simulator, each with its formula.

Fee:      fee = rate * qty * price, rate = taker (crosses) or maker (rests).
Slippage: buy price  = ref * (1 + (hs + impact_bp_per_btc * qty) / 1e4),
          sell price = ref * (1 - (hs + impact_bp_per_btc * qty) / 1e4);
          ref is the mid and hs ~ U(half_spread_bp_min, half_spread_bp_max)
          when the feed gives only a mid; with a real book ref is the touch
          (ask for buys, bid for sells) and hs = 0.
Latency:  decision -> arrival delay = median_ms * exp(sigma * N(0, 1)),
          i.e. lognormal with the given median.
Margin:   the venue's rule, ``fundarb.core.liquidation.MarginRule`` (cross:
          the account's cash backs its one position); when the mark reaches
          its liquidation price, liquidation closes the whole perp at the liquidation price with
          a penalty = liquidation_fee_rate * notional, capped at what is left.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from fundarb.core.model import NS_PER_SECOND, Quote

# The models' formulas as scalar functions (plain floats in, a float out), so
# that the simulator and the compiled Monte Carlo kernel
# (``fundarb.research.kernel``) run this one code.

def fee_of(rate: float, qty: float, price: float) -> float:
    return rate * qty * price


def slipped_price(ref: float, sign: float, half_spread_bp: float, impact_bp_per_btc: float, qty: float) -> float:
    return ref * (1.0 + sign * (half_spread_bp + impact_bp_per_btc * qty) / 1e4)


def lognormal_delay_ns(median_ns: float, sigma: float, z: float) -> int:
    """A delay of median ``median_ns`` for the standard normal draw ``z`` (none is drawn when sigma is 0)."""
    if sigma == 0:
        return int(median_ns)
    return int(median_ns * math.exp(sigma * z))


def spot_buy_short_of_cash(cash: float, qty: float, ask: float, mid: float, spread_bp_max: float,
                           impact_bp_per_btc: float, taker_fee: float, quoted_spread: bool) -> bool:
    """A spot buy the account's cash does not cover at the worst fill it can
    get: the far touch (``quoted_spread``: the book has one) or the widest
    drawn spread, plus impact, plus the taker fee."""
    worst_bp = (0.0 if quoted_spread else spread_bp_max) + impact_bp_per_btc * qty
    worst = max(ask, mid) * (1 + worst_bp / 1e4)
    return cash < qty * worst * (1 + taker_fee)


def over_venue_leverage(qty: float, new_qty: float, price: float, equity: float, max_venue_leverage: float) -> bool:
    """An order that adds to a perp position past the venue's leverage limit (or with no equity)."""
    return abs(new_qty) > abs(qty) and (equity <= 0 or abs(new_qty) * price / equity > max_venue_leverage)


class FeeModel:
    __slots__ = ("maker", "taker")

    def __init__(self, maker: float, taker: float) -> None:
        self.maker, self.taker = maker, taker

    def fee(self, qty: float, price: float, maker: bool) -> float:
        return fee_of(self.maker if maker else self.taker, qty, price)


BATCH = 256


class Draws:
    """Random numbers drawn from a Generator in batches. numpy gives the same
    sequence for one call of size n as for n calls of size one, so batching
    changes no result; it only keeps a numpy call off each order's path."""

    __slots__ = ("_draw", "_buf", "_i")

    def __init__(self, draw: Callable[[int], np.ndarray]) -> None:  # draw(n) -> ndarray of the next n values
        self._draw = draw
        self._buf: list[float] = []
        self._i = 0

    def next(self) -> float:
        if self._i >= len(self._buf):
            self._buf = self._draw(BATCH).tolist()
            self._i = 0
        x = self._buf[self._i]
        self._i += 1
        return x


class SlippageModel:
    __slots__ = ("lo", "hi", "impact", "spreads")

    def __init__(self, lo_bp: float, hi_bp: float, impact_bp_per_btc: float, rng: np.random.Generator) -> None:
        self.lo, self.hi, self.impact = lo_bp, hi_bp, impact_bp_per_btc
        self.spreads = Draws(lambda n: rng.uniform(lo_bp, hi_bp, n))

    def price(self, quote: Quote, sign: int, qty: float) -> float:
        if quote.ask > quote.bid:
            ref, hs = (quote.ask if sign > 0 else quote.bid), 0.0
        else:
            ref = quote.bid
            hs = self.lo if self.hi == self.lo else self.spreads.next()
        return slipped_price(ref, sign, hs, self.impact, qty)


class LatencyModel:
    __slots__ = ("median_ns", "sigma", "normals")

    def __init__(self, median_ms: float, sigma: float, rng: np.random.Generator) -> None:
        self.median_ns, self.sigma = median_ms * 1e6, sigma
        self.normals = Draws(rng.standard_normal)

    def delay_ns(self) -> int:
        if self.sigma == 0:
            return int(self.median_ns)
        return lognormal_delay_ns(self.median_ns, self.sigma, self.normals.next())


def seconds(s: float) -> int:
    return int(round(s * NS_PER_SECOND))
