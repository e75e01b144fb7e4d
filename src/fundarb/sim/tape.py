"""Turn real hourly history into the simulator's time-ordered market tape."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from fundarb.core.funding import ANNOUNCED_BEFORE_NS
from fundarb.core.model import FundingRate, FundingSettlement, MarkPrice, Quote, Timer
from fundarb.data.history import MarketHistory
from fundarb.sim import queue as q


def history_tape(
    h: MarketHistory, spot: str, perp: str, spot_depth: float, perp_depth: float
) -> Iterator[tuple[int, int, Any]]:
    """Per hour: spot quote, perp quote, perp mark (the venue's mark kline
    where the history has one, else the perp close), the funding settlement
    if one falls on that hour, then the hourly timer. Bars carry only a
    close, so quotes have bid == ask (the simulator then draws the half
    spread). A settlement with no mark in the history settles at the perp close.
    Each settlement after the first bar is announced first: a ``FundingRate``
    with its rate as the predicted one, ``ANNOUNCED_BEFORE_NS`` before it."""
    hours, spots, perps = h.hours.tolist(), h.spot.tolist(), h.perp.tolist()
    marks = perps if h.mark is None else h.mark.tolist()
    short = _Settlements(perp, h.funding_ts.tolist(), h.funding_rate.tolist(), h.funding_interval.tolist(),
                         h.funding_mark.tolist())
    legs = [short]
    long_perp = h.long_funding_ts is not None  # a perp/perp carry: the long leg is a perp with its own settlements
    if long_perp:
        assert h.long_funding_rate is not None and h.long_funding_interval is not None
        n = int(h.long_funding_ts.size)  # type: ignore[union-attr]
        legs.append(_Settlements(spot, h.long_funding_ts.tolist(), h.long_funding_rate.tolist(),  # type: ignore[union-attr]
                                 h.long_funding_interval.tolist(), [math.nan] * n))
    last = {perp: perps[0], spot: spots[0]}
    prev = None
    for ts, s, p, m in zip(hours, spots, perps, marks):
        # since the last bar: each leg's settlements up to this bar announced (after a first bar), and the
        # off-grid ones settled at the leg's last close, in time order
        between = [ev for leg in legs for ev in leg.announce(ts, prev)] if prev is not None else []
        between += [ev for leg in legs for ev in leg.before(ts, last[leg.venue])]
        yield from sorted(between, key=lambda e: (e[0], e[1]))
        prev = ts
        yield ts, q.P_QUOTE, Quote(ts, spot, s, s, spot_depth, spot_depth)
        yield ts, q.P_QUOTE, Quote(ts, perp, p, p, perp_depth, perp_depth)
        yield ts, q.P_MARK, MarkPrice(ts, perp, m)
        if long_perp:
            yield ts, q.P_MARK, MarkPrice(ts, spot, s)
        for leg, close in zip(legs, (p, s)):
            yield from leg.at(ts, close)
        yield ts, q.P_TIMER, Timer(ts)
        last = {perp: p, spot: s}


class _Settlements:
    """One perp's settlements, handed out in time order as the bars pass."""

    def __init__(self, venue: str, ts: list[int], rate: list[float], interval: list[float], mark: list[float]) -> None:
        self.venue, self.ts, self.rate, self.interval, self.mark = venue, ts, rate, interval, mark
        self.i = 0
        self.announced = 0  # settlements announced so far

    def announce(self, ts: int, after: int) -> Iterator[tuple[int, int, Any]]:
        """The rate of each settlement at or before ``ts`` not yet announced,
        as the venue's word on the coming settlement: ``ANNOUNCED_BEFORE_NS``
        before its instant, and after ``after`` (the last bar handed out)."""
        self.announced = max(self.announced, self.i)  # settled ones go unannounced (the first bar's)
        while self.announced < len(self.ts) and self.ts[self.announced] <= ts:
            i = self.announced
            at = max(self.ts[i] - ANNOUNCED_BEFORE_NS, after + 1)
            yield at, q.P_RATE, FundingRate(at, self.venue, self.rate[i], self.interval[i], self.ts[i], self.rate[i])
            self.announced += 1

    def before(self, ts: int, close: float) -> Iterator[tuple[int, int, Any]]:
        while self.i < len(self.ts) and self.ts[self.i] < ts:
            i = self.i
            yield self.ts[i], q.P_FUNDING, _settlement(self.venue, self.ts[i], self.rate[i], self.interval[i],
                                                      self.mark[i], close)
            self.i += 1

    def at(self, ts: int, close: float) -> Iterator[tuple[int, int, Any]]:
        if self.i < len(self.ts) and self.ts[self.i] == ts:
            i = self.i
            yield ts, q.P_FUNDING, _settlement(self.venue, ts, self.rate[i], self.interval[i], self.mark[i], close)
            self.i += 1


def _settlement(venue: str, ts: int, rate: float, interval: float, mark: float, perp_close: float) -> FundingSettlement:
    if math.isnan(mark):
        return FundingSettlement(ts, venue, rate, interval, perp_close, "perp_close")
    return FundingSettlement(ts, venue, rate, interval, mark, "venue")
