"""Funding: payment, annualisation, settlement schedules and missing-settlement checks.

A perp position of signed size q held at a settlement instant with rate r and
mark P receives ``-q * P * r`` (positive r: longs pay shorts). Schedules come
from the data (each venue's settlement times and interval), never a constant.
"""

from __future__ import annotations

from collections.abc import Sequence

from fundarb.core.model import HOURS_PER_YEAR, NS_PER_HOUR


class MissingFundingSettlement(RuntimeError):
    """A settlement that should exist while a position was open does not."""


def funding_payment(qty: float, mark: float, rate: float) -> float:
    return -qty * mark * rate


def annualize(rate: float, interval_hours: float) -> float:
    """Simple (non-compounded) APR of a per-interval rate."""
    return rate * HOURS_PER_YEAR / interval_hours


def next_settlement(last_ts: int, interval_hours: float) -> int:
    return last_ts + int(round(interval_hours * NS_PER_HOUR))


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
