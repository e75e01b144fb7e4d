"""Funding: payment, annualisation, settlement schedules and missing-settlement checks.

A perp position of signed size q held at a settlement instant with rate r and
mark P receives ``-q * P * r`` (positive r: longs pay shorts). Schedules come
from the data (each venue's settlement times and interval), never a constant.
"""

from __future__ import annotations

from collections.abc import Sequence

from fundarb.core.errors import FundarbError
from fundarb.core.model import HOURS_PER_YEAR, NS_PER_HOUR

# ``FundingSettlement.mark_source``: the venue's own mark (history, mark
# klines, the live mark feed) or the perp's price standing in for it
VENUE_MARK_SOURCES = frozenset({"venue", "last_mark", "first_mark_after", "announced_rate"})
PERP_PRICE_SOURCES = frozenset({"perp_close", "perp_mid"})


# A history holds each settlement's rate, not what the venue said before it. The rate is taken as announced
# this long before its instant (Binance publishes the coming rate through the interval; in its last minutes
# that is the rate that settles), so a strategy decides on it before the settlement, never after it, and an
# entry decided then is in the position when it settles
ANNOUNCED_BEFORE_NS = 5 * 60 * 1_000_000_000


class MissingFundingSettlement(FundarbError, RuntimeError):
    """A settlement that should exist while a position was open does not."""


def funding_payment(qty: float, mark: float, rate: float) -> float:
    return -qty * mark * rate


def annualize(rate: float, interval_hours: float) -> float:
    """Simple (non-compounded) APR of a per-interval rate."""
    return rate * HOURS_PER_YEAR / interval_hours


def next_settlement(last_ts: int, interval_hours: float) -> int:
    """The settlement after ``last_ts``; an interval that is not a positive
    finite number of hours is refused (a loop stepping by it would never end)."""
    step = int(round(interval_hours * NS_PER_HOUR)) if interval_hours == interval_hours and abs(interval_hours) < 1e6 else 0
    if step <= 0:
        raise ValueError(f"a funding interval must be a positive number of hours, got {interval_hours}")
    return last_ts + step


def schedule_unit(interval_hours: float) -> int:
    """The grid a venue's settlements sit on: whole UTC hours (every venue
    fundarb reads settles on the hour, at 8 h, 4 h, 1 h or 24 h intervals,
    at 00/08/16 or 04/12/20 ...), or the interval itself where it is shorter."""
    return min(int(round(interval_hours * NS_PER_HOUR)), NS_PER_HOUR)


def scheduled_instant(stamp: int, interval_hours: float, tolerance_ns: int) -> int | None:
    """The settlement instant a venue's stamp stands for, or None when the
    stamp is further than ``tolerance_ns`` from every instant of the schedule.

    Venues stamp settlements a few milliseconds late (Binance's funding history
    says ``16:00:00.002`` for the 16:00 settlement): the stamp is snapped to
    the nearest instant of the grid (``schedule_unit``). One rule for history
    at load and for the next funding time a live venue announces."""
    unit = schedule_unit(interval_hours)
    instant = (stamp + unit // 2) // unit * unit
    return instant if abs(stamp - instant) <= tolerance_ns else None


def schedule_gaps(times: Sequence[int], intervals: Sequence[float], slack: float = 1.5) -> list[tuple[int, int]]:
    """(previous settlement, first expected-but-missing settlement) for every
    spacing longer than ``slack`` times the venue's own interval."""
    gaps = []
    for i in range(1, len(times)):
        step = int(round(intervals[i - 1] * NS_PER_HOUR))
        if times[i] - times[i - 1] > slack * step:
            gaps.append((times[i - 1], times[i - 1] + step))
    return gaps


def missed_settlements(
    expected: Sequence[int], ledger_times: Sequence[int], open_intervals: Sequence[tuple[int, int]]
) -> list[int]:
    """Expected settlement instants that fall while a position was open
    and have no entry in the funding ledger. Settlements are applied before
    orders arriving at the same instant, so a position accrues at t when
    ``start < t <= end`` (opened by a fill at t: no; closed by a fill at t: yes)."""
    booked = set(ledger_times)
    missed = []
    for t in expected:
        if t in booked:
            continue
        if any(start < t <= end for start, end in open_intervals):
            missed.append(t)
    return missed
