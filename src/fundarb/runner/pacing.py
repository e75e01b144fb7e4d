"""Live market events -> the engine's time-ordered stream.

Two feeds (spot and perp, possibly two venues) deliver events whose venue
timestamps interleave out of order by a few milliseconds; the engine's clock
never goes back, so an event older than the last one is stamped at the last
one's time. Live feeds carry no settlements and no hourly timer, which the
history tape has: the pacer adds both.

- A ``Timer`` at each whole hour the stream crosses (the engine marks its
  equity curve on it; the simulator charges borrow interest).
- A ``FundingSettlement`` at each settlement instant of the perp, learned
  from the feed's ``FundingRate.next_funding_ts``, just before the first event
  at or after it. Its rate is the venue's settled rate for that instant
  (``settled_rate``, the venue's funding history); when the venue cannot say
  (unreachable, not published yet), the last rate the feed announced for it
  stands in and ``mark_source`` says so; with neither, no settlement is made
  up (the instant is listed in ``unknown`` and the runner alerts). The mark is
  the last mark before the instant.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from fundarb.core.funding import next_settlement
from fundarb.core.model import NS_PER_HOUR, FundingRate, FundingSettlement, MarkPrice, Quote, Timer
from fundarb.venues.sim import queue as q

PRIORITY = {Quote: q.P_QUOTE, MarkPrice: q.P_MARK, FundingSettlement: q.P_FUNDING, FundingRate: q.P_RATE,
            Timer: q.P_TIMER}
MAX_TIMERS = 48  # after a long outage: mark the curve at most two days of missed hours


SettledRate = Callable[[int], Awaitable[float | None]]


@attrs.define
class Pacer:
    perp_venue: str
    settled_rate: SettledRate
    now: int = 0
    next_settlement: int = 0  # 0: not announced yet
    interval_hours: float = 8.0
    announced_rate: float | None = None
    last_mark: float = 0.0
    last_timer: int = 0  # the last whole hour a Timer was given for
    settlements: list[FundingSettlement] = attrs.field(factory=list)
    unknown: list[int] = attrs.field(factory=list)  # settlement instants whose rate nobody could say

    async def pace(self, event: Any) -> list[tuple[int, int, Any]]:
        """``(ts, priority, event)`` for the engine, in order: due timers and
        settlements first, then ``event`` stamped no earlier than the last."""
        ts = max(event.ts, self.now)
        if ts != event.ts:
            event = attrs.evolve(event, ts=ts)
        out: list[tuple[int, int, Any]] = []
        while self.next_settlement and ts >= self.next_settlement:
            at = self.next_settlement
            s = await self._settlement(at)
            out += self._timers(at - 1)  # the hours before it; the instant's own timer comes after it
            if s is not None:
                out.append((at, q.P_FUNDING, s))
                self.settlements.append(s)
            self.now = max(self.now, at)
            self.next_settlement = next_settlement(at, self.interval_hours)
            self.announced_rate = None  # an announcement stands in for its own instant only
        out += self._timers(ts)
        if type(event) is MarkPrice and event.venue == self.perp_venue:
            self.last_mark = event.mark
        elif type(event) is FundingRate and event.venue == self.perp_venue:
            self.interval_hours = event.interval_hours
            if event.next_funding_ts > ts:
                self.next_settlement = event.next_funding_ts
                self.announced_rate = event.rate
        out.append((ts, PRIORITY.get(type(event), q.P_QUOTE), event))
        self.now = ts
        return out

    def _timers(self, upto: int) -> list[tuple[int, int, Any]]:
        """Timers at the whole hours after the last one given, up to ``upto``."""
        if not self.now:
            return []  # the first event: the clock starts here, no hour was crossed
        if not self.last_timer:
            self.last_timer = self.now // NS_PER_HOUR * NS_PER_HOUR
        start = self.last_timer + NS_PER_HOUR
        if start > upto:
            return []
        start = max(start, (upto // NS_PER_HOUR - MAX_TIMERS + 1) * NS_PER_HOUR)
        out = [(h, q.P_TIMER, Timer(h)) for h in range(start, upto + 1, NS_PER_HOUR)]
        self.last_timer = out[-1][0]
        self.now = max(self.now, self.last_timer)
        return out

    async def _settlement(self, at: int) -> FundingSettlement | None:
        rate = await self.settled_rate(at)
        if rate is not None:
            return FundingSettlement(at, self.perp_venue, rate, self.interval_hours, self.last_mark, "last_mark")
        if self.announced_rate is None:
            self.unknown.append(at)  # never a silent zero: the runner alerts, the venue's payment is still learned
            return None
        return FundingSettlement(at, self.perp_venue, self.announced_rate, self.interval_hours, self.last_mark,
                                 "announced_rate")
