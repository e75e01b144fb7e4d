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


class FeeModel:
    __slots__ = ("maker", "taker")

    def __init__(self, maker: float, taker: float) -> None:
        self.maker, self.taker = maker, taker

    def fee(self, qty: float, price: float, maker: bool) -> float:
        return (self.maker if maker else self.taker) * qty * price


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
        return ref * (1.0 + sign * (hs + self.impact * qty) / 1e4)


class LatencyModel:
    __slots__ = ("median_ns", "sigma", "normals")

    def __init__(self, median_ms: float, sigma: float, rng: np.random.Generator) -> None:
        self.median_ns, self.sigma = median_ms * 1e6, sigma
        self.normals = Draws(rng.standard_normal)

    def delay_ns(self) -> int:
        if self.sigma == 0:
            return int(self.median_ns)
        return int(self.median_ns * math.exp(self.sigma * self.normals.next()))


def seconds(s: float) -> int:
    return int(round(s * NS_PER_SECOND))
