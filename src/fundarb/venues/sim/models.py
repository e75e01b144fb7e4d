"""Pluggable cost models of the simulator, each with its formula.

Fee:      fee = rate * qty * price, rate = taker (crosses) or maker (rests).
Slippage: buy price  = ref * (1 + (hs + impact_bp_per_btc * qty) / 1e4),
          sell price = ref * (1 - (hs + impact_bp_per_btc * qty) / 1e4);
          ref is the mid and hs ~ U(half_spread_bp_min, half_spread_bp_max)
          when the feed gives only a mid; with a real book ref is the touch
          (ask for buys, bid for sells) and hs = 0.
Latency:  decision -> arrival delay = median_ms * exp(sigma * N(0, 1)),
          i.e. lognormal with the given median.
Margin:   see ``fundarb.core.book.liquidation_price``; when the mark reaches
          it, liquidation closes the whole perp at the liquidation price with
          a penalty = liquidation_fee_rate * notional, capped at what is left.
"""

from __future__ import annotations

import math

import numpy as np

from fundarb.core.model import NS_PER_SECOND, Quote


class FeeModel:
    __slots__ = ("maker", "taker")

    def __init__(self, maker: float, taker: float) -> None:
        self.maker, self.taker = maker, taker

    def fee(self, qty: float, price: float, maker: bool) -> float:
        return (self.maker if maker else self.taker) * qty * price


class SlippageModel:
    __slots__ = ("lo", "hi", "impact", "rng")

    def __init__(self, lo_bp: float, hi_bp: float, impact_bp_per_btc: float, rng: np.random.Generator) -> None:
        self.lo, self.hi, self.impact, self.rng = lo_bp, hi_bp, impact_bp_per_btc, rng

    def price(self, quote: Quote, sign: int, qty: float) -> float:
        if quote.ask > quote.bid:
            ref, hs = (quote.ask if sign > 0 else quote.bid), 0.0
        else:
            ref = quote.bid
            hs = self.lo if self.hi == self.lo else float(self.rng.uniform(self.lo, self.hi))
        return ref * (1.0 + sign * (hs + self.impact * qty) / 1e4)


class LatencyModel:
    __slots__ = ("median_ns", "sigma", "rng")

    def __init__(self, median_ms: float, sigma: float, rng: np.random.Generator) -> None:
        self.median_ns, self.sigma, self.rng = median_ms * 1e6, sigma, rng

    def delay_ns(self) -> int:
        if self.sigma == 0:
            return int(self.median_ns)
        return int(self.median_ns * math.exp(self.sigma * float(self.rng.standard_normal())))


def seconds(s: float) -> int:
    return int(round(s * NS_PER_SECOND))
