"""Live market events -> the engine's time-ordered stream.

Two feeds (spot and perp, possibly two venues) deliver events whose venue
timestamps interleave out of order by a few milliseconds; the engine's clock
never goes back, so an event older than the last one is stamped at the last
one's time. That is for jitter only: an event whose venue time is more than
``max_backstep_ns`` (``runner.max_clock_backstep_seconds``) behind the
pacer's clock is refused, never fed as current (a venue clock that jumped
back would otherwise replay old prices as today's). The first refusal from a
venue goes to ``clock_problems`` for the runner to alert on, once until that
venue's events are back in step. Live feeds carry no settlements and no hourly timer, which the
history tape has: the pacer adds both.

- A ``Timer`` at each whole hour the stream crosses (the engine marks its
  equity curve on it; the simulator charges borrow interest).
- A ``FundingSettlement`` at each settlement instant of the perp, learned
  from the feed's ``FundingRate.next_funding_ts`` (snapped to the schedule by
  the data layer's rule, ``core.funding.scheduled_instant``, within
  ``data.settlement_tolerance_seconds``; an announcement further off is not
  believed and is reported), just before the first event at or after it. Its
  rate is the venue's settled rate for that instant (``settled_rate``, the
  venue's funding history); when the venue cannot say (unreachable, not
  published yet), the last rate the feed announced for it stands in and
  ``mark_source`` says so. The mark is the last perp mark before the instant;
  when no mark has arrived yet, the settlement waits for the first one
  (``mark_source`` "first_mark_after") for up to ``mark_wait_ns``. With no
  rate, or no mark in time, no settlement is made up: never a silent zero.
  Each such case is in ``problems`` for the runner to alert on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from fundarb.core.funding import next_settlement, scheduled_instant
from fundarb.core.model import NS_PER_HOUR, NS_PER_SECOND, FundingRate, FundingSettlement, IndexPrice, MarkPrice, Quote, Timer
from fundarb.sim import queue as q

# an index sorts like the mark it comes with: market data before the settlement of the instant
PRIORITY = {Quote: q.P_QUOTE, MarkPrice: q.P_MARK, IndexPrice: q.P_MARK, FundingSettlement: q.P_FUNDING,
            FundingRate: q.P_RATE, Timer: q.P_TIMER}
MAX_TIMERS = 48  # after a long outage: mark the curve at most two days of missed hours


SettledRate = Callable[[int], Awaitable[float | None]]


@attrs.define
class PerpSchedule:
    """One perp's settlement instants, as its feed announces them, and the
    settlements made at them (see the module docstring)."""

    venue: str
    settled_rate: SettledRate
    tolerance_ns: int = NS_PER_SECOND
    label: str = "perp"  # how the alerts name it: "perp", a perp/perp carry's "long perp"
    next_settlement: int = 0  # 0: not announced yet
    interval_hours: float = 8.0
    announced_rate: float | None = None
    last_mark: float = 0.0  # 0: no mark of this perp has arrived yet
    # settlements waiting for a first mark: (instant, rate, interval, what the rate is)
    waiting: list[tuple[int, float, float, str]] = attrs.field(factory=list)

    def announced(self, event: FundingRate, ts: int, problems: list[tuple[int, str]]) -> None:
        self.interval_hours = event.interval_hours
        at = scheduled_instant(event.next_funding_ts, event.interval_hours, self.tolerance_ns)
        if at is None:
            problems.append((event.next_funding_ts, f"the {self.label}'s venue announced a next funding time off "
                             "its settlement schedule; not believed"))
            return
        step = int(event.interval_hours * NS_PER_HOUR)
        # further ahead than two intervals (and than 8 h: a venue moving from 8-hour to 4-hour settlements
        # announces the old schedule's next) is not the venue's next instant but a client's that counts from
        # this machine's clock (ccxt's Hyperliquid): the venue's schedule after its own now
        if at > ts + max(2 * step, 8 * NS_PER_HOUR):
            at = (ts // step + 1) * step
        if at > ts:
            self.next_settlement = at
            self.announced_rate = event.rate

    def marked(self, mark: float, ts: int) -> list[FundingSettlement]:
        """A mark of this perp: the settlements waiting for one are made at it."""
        self.last_mark = mark
        out = [FundingSettlement(at, self.venue, rate, interval, mark, "first_mark_after")
               for at, rate, interval, _ in self.waiting]
        self.waiting.clear()
        return out

    async def settle(self, at: int, unknown: list[int], problems: list[tuple[int, str]]) -> FundingSettlement | None:
        rate = await self.settled_rate(at)
        source = "last_mark"
        if rate is None:
            if self.announced_rate is None:
                unknown.append(at)  # never a silent zero: the runner alerts, the venue's payment is still learned
                problems.append((at, f"neither the {self.label}'s venue funding history nor its feed gave the rate"))
                return None
            rate, source = self.announced_rate, "announced_rate"
        if self.last_mark <= 0:  # no mark yet: never a settlement at mark 0
            self.waiting.append((at, rate, self.interval_hours, source))
            return None
        return FundingSettlement(at, self.venue, rate, self.interval_hours, self.last_mark, source)


@attrs.define
class Pacer:
    perp_venue: str
    settled_rate: SettledRate
    tolerance_ns: int = NS_PER_SECOND  # data.settlement_tolerance_seconds
    mark_wait_ns: int = 10 * 60 * NS_PER_SECOND
    now: int = 0
    last_timer: int = 0  # the last whole hour a Timer was given for
    settlements: list[FundingSettlement] = attrs.field(factory=list)
    unknown: list[int] = attrs.field(factory=list)  # settlement instants that could not be settled
    problems: list[tuple[int, str]] = attrs.field(factory=list)  # (instant, what): the runner alerts and clears
    max_backstep_ns: int = 5 * NS_PER_SECOND  # runner.max_clock_backstep_seconds
    refused: int = 0  # events refused for a venue time too far behind the clock
    behind: set[str] = attrs.field(factory=set)  # venues whose time is behind now (alerted once)
    clock_problems: list[str] = attrs.field(factory=list)  # the runner alerts and clears
    # a perp/perp carry's long perp settles on its own venue's schedule: (account, its settled rates)
    long_perp: tuple[str, SettledRate] | None = None
    schedules: dict[str, PerpSchedule] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        legs = [(self.perp_venue, self.settled_rate), *([self.long_perp] if self.long_perp else [])]
        self.schedules = {v: PerpSchedule(v, rate, self.tolerance_ns, "perp" if v == self.perp_venue else "long perp")
                          for v, rate in legs}

    # the short perp's schedule, as the runner reads and primes it
    @property
    def next_settlement(self) -> int:
        return self.schedules[self.perp_venue].next_settlement

    @next_settlement.setter
    def next_settlement(self, at: int) -> None:
        self.schedules[self.perp_venue].next_settlement = at

    @property
    def interval_hours(self) -> float:
        return self.schedules[self.perp_venue].interval_hours

    @interval_hours.setter
    def interval_hours(self, hours: float) -> None:
        self.schedules[self.perp_venue].interval_hours = hours

    @property
    def last_mark(self) -> float:
        return self.schedules[self.perp_venue].last_mark

    def _due(self) -> PerpSchedule | None:
        due = [s for s in self.schedules.values() if s.next_settlement]
        return min(due, key=lambda s: (s.next_settlement, s.venue != self.perp_venue)) if due else None

    async def pace(self, event: Any) -> list[tuple[int, int, Any]]:
        """``(ts, priority, event)`` for the engine, in order: due timers and
        settlements first, then ``event`` stamped no earlier than the last;
        nothing for an event further behind the clock than ``max_backstep_ns``."""
        venue = getattr(event, "venue", "")
        if self.now and 0 < event.ts < self.now - self.max_backstep_ns:  # ts 0: unstamped, at the last time
            self.refused += 1
            if venue not in self.behind:
                self.behind.add(venue)
                self.clock_problems.append(
                    f"{venue} sent an event stamped {(self.now - event.ts) / NS_PER_SECOND:,.1f} s behind the "
                    f"clock (limit {self.max_backstep_ns / NS_PER_SECOND:g} s): its clock went back; its events "
                    "are refused, not fed as current, until they are back in step")
            return []
        self.behind.discard(venue)
        ts = max(event.ts, self.now)
        if ts != event.ts:
            event = attrs.evolve(event, ts=ts)
        out: list[tuple[int, int, Any]] = []
        while (due := self._due()) is not None and ts >= due.next_settlement:
            at = due.next_settlement
            out += self._timers(at - 1)  # the hours before it; the instant's own timer comes after it
            s = await due.settle(at, self.unknown, self.problems)
            if s is not None:
                out.append((at, q.P_FUNDING, s))
                self.settlements.append(s)
            self.now = max(self.now, at)
            due.next_settlement = next_settlement(at, due.interval_hours)
            due.announced_rate = None  # an announcement stands in for its own instant only
        self._give_up_waiting(ts)
        out += self._timers(ts)
        out.append((ts, PRIORITY.get(type(event), q.P_QUOTE), event))
        schedule = self.schedules.get(venue)
        if schedule is not None and type(event) is MarkPrice:
            for s in schedule.marked(event.mark, ts):  # settled at the first mark after the instant
                out.append((ts, q.P_FUNDING, s))
                self.settlements.append(s)
        elif schedule is not None and type(event) is FundingRate:
            schedule.announced(event, ts, self.problems)
        self.now = ts
        return out

    def _give_up_waiting(self, ts: int) -> None:
        for schedule in self.schedules.values():
            while schedule.waiting and ts - schedule.waiting[0][0] > self.mark_wait_ns:
                at = schedule.waiting.pop(0)[0]
                self.unknown.append(at)
                self.problems.append((at, f"no {schedule.label} mark price arrived within "
                                      f"{self.mark_wait_ns // (60 * NS_PER_SECOND)} minutes of the settlement: not "
                                      "settled in the book (the venue's payment is still learned)"))

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
