"""Turn real hourly history into the simulator's time-ordered market tape."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from fundarb.core.model import FundingSettlement, MarkPrice, Quote, Timer
from fundarb.data.history import MarketHistory
from fundarb.sim import queue as q


def history_tape(
    h: MarketHistory, spot: str, perp: str, spot_depth: float, perp_depth: float
) -> Iterator[tuple[int, int, Any]]:
    """Per hour: spot quote, perp quote, perp mark (the venue's mark kline
    where the history has one, else the perp close), the funding settlement
    if one falls on that hour, then the hourly timer. Bars carry only a
    close, so quotes have bid == ask (the simulator then draws the half
    spread). A settlement with no mark in the history settles at the perp close."""
    hours, spots, perps = h.hours.tolist(), h.spot.tolist(), h.perp.tolist()
    marks = perps if h.mark is None else h.mark.tolist()
    fts, frate = h.funding_ts.tolist(), h.funding_rate.tolist()
    fint, fmark = h.funding_interval.tolist(), h.funding_mark.tolist()
    fi, nf = 0, len(fts)
    last_perp = perps[0]
    for ts, s, p, m in zip(hours, spots, perps, marks):
        while fi < nf and fts[fi] < ts:  # an off-grid settlement: settle at the last perp close
            yield fts[fi], q.P_FUNDING, _settlement(perp, fts[fi], frate[fi], fint[fi], fmark[fi], last_perp)
            fi += 1
        yield ts, q.P_QUOTE, Quote(ts, spot, s, s, spot_depth, spot_depth)
        yield ts, q.P_QUOTE, Quote(ts, perp, p, p, perp_depth, perp_depth)
        yield ts, q.P_MARK, MarkPrice(ts, perp, m)
        if fi < nf and fts[fi] == ts:
            yield ts, q.P_FUNDING, _settlement(perp, ts, frate[fi], fint[fi], fmark[fi], p)
            fi += 1
        yield ts, q.P_TIMER, Timer(ts)
        last_perp = p


def _settlement(venue: str, ts: int, rate: float, interval: float, mark: float, perp_close: float) -> FundingSettlement:
    if math.isnan(mark):
        return FundingSettlement(ts, venue, rate, interval, perp_close, "perp_close")
    return FundingSettlement(ts, venue, rate, interval, mark, "venue")
