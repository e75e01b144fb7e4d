"""Funding: who pays whom, how much, and which settlements are owed."""

from __future__ import annotations

import pytest

from fundarb.core.book import PositionBook
from fundarb.core.funding import (
    annualize,
    funding_payment,
    missed_settlements,
    next_settlement,
    schedule_gaps,
)
from fundarb.core.model import NS_PER_HOUR, FundingSettlement, Side
from fundarb.testkit.builders import PERP, SPOT, T0, make_fill

H = NS_PER_HOUR


def settle(rate: float, mark: float = 50_000.0, ts: int = T0, source: str = "venue") -> FundingSettlement:
    return FundingSettlement(ts, PERP, rate, 8.0, mark, source)


@pytest.mark.parametrize(
    ("qty", "rate", "expected"),
    [
        (-2.0, 0.0001, 10.0),   # short, positive rate: longs pay shorts
        (2.0, 0.0001, -10.0),   # long pays
        (-2.0, -0.0001, -10.0),  # negative rate: shorts pay
        (2.0, -0.0001, 10.0),
        (0.0, 0.0001, 0.0),
    ],
)
def test_funding_payment_sign_and_amount(qty, rate, expected):
    # -q * P * r with P = 50,000: 2 * 50,000 * 0.0001 = 10
    assert funding_payment(qty, 50_000.0, rate) == pytest.approx(expected)


def test_book_short_receives_funding_and_ledger_records_it():
    b = PositionBook.open(SPOT, PERP, 0.0, 35_000.0)
    b.apply_fill(make_fill(PERP, Side.SELL, 2.0, 50_000.0))
    entry = b.apply_funding(settle(0.0001, source="perp_close"))
    assert entry is not None
    assert entry.amount == pytest.approx(10.0)
    assert (entry.qty, entry.rate, entry.mark, entry.mark_source, entry.ts) == (-2.0, 0.0001, 50_000.0, "perp_close", T0)
    assert b.perp.cash == pytest.approx(35_010.0)
    assert b.perp.funding == pytest.approx(10.0)
    assert b.funding_received == pytest.approx(10.0)
    assert b.funding_paid == 0.0
    assert b.funding == pytest.approx(10.0)
    assert b.funding_ledger == [entry]


def test_book_long_pays_and_negative_rate_reverses():
    b = PositionBook.open(SPOT, PERP, 0.0, 35_000.0)
    b.apply_fill(make_fill(PERP, Side.BUY, 2.0, 50_000.0))
    b.apply_funding(settle(0.0001))
    assert b.perp.cash == pytest.approx(34_990.0)
    assert b.funding_paid == pytest.approx(-10.0)
    b.apply_funding(settle(-0.0003, mark=40_000.0, ts=T0 + 8 * H))
    # long, negative rate: receives 2 * 40,000 * 0.0003 = 24
    assert b.funding_received == pytest.approx(24.0)
    assert b.funding == pytest.approx(14.0)
    assert b.perp.cash == pytest.approx(35_014.0)
    assert len(b.funding_ledger) == 2


def test_funding_uses_the_settlement_mark_not_the_valuation_price():
    b = PositionBook.open(SPOT, PERP, 0.0, 35_000.0)
    b.apply_fill(make_fill(PERP, Side.SELL, 1.0, 50_000.0))
    b.revalue(PERP, 51_000.0)
    entry = b.apply_funding(settle(0.001, mark=60_000.0))
    assert entry.amount == pytest.approx(60.0)


def test_flat_position_accrues_nothing():
    b = PositionBook.open(SPOT, PERP, 1_000.0, 35_000.0)
    assert b.apply_funding(settle(0.01)) is None
    assert b.funding_ledger == []
    assert b.perp.cash == 35_000.0
    assert b.funding == 0.0


def test_closed_position_accrues_nothing():
    b = PositionBook.open(SPOT, PERP, 0.0, 35_000.0)
    b.apply_fill(make_fill(PERP, Side.SELL, 1.0, 50_000.0))
    b.apply_fill(make_fill(PERP, Side.BUY, 1.0, 50_000.0))
    assert b.apply_funding(settle(0.01)) is None
    assert b.funding_ledger == []


def test_annualize():
    assert annualize(0.0001, 8) == pytest.approx(0.0001 * 8760 / 8)
    assert annualize(0.0001, 1) == pytest.approx(0.876)
    assert annualize(-0.0002, 4) == pytest.approx(-0.0002 * 2190)


def test_next_settlement():
    assert next_settlement(T0, 8) == T0 + 8 * H
    assert next_settlement(T0, 1) == T0 + H
    assert next_settlement(T0, 0.5) == T0 + H // 2


def test_schedule_gaps_finds_a_missing_8h_settlement():
    times = [T0, T0 + 8 * H, T0 + 24 * H, T0 + 32 * H]  # T0+16h missing
    gaps = schedule_gaps(times, [8.0] * 4)
    assert gaps == [(T0 + 8 * H, T0 + 16 * H)]


def test_schedule_gaps_regular_schedules_have_none():
    assert schedule_gaps([T0 + i * 8 * H for i in range(10)], [8.0] * 10) == []
    assert schedule_gaps([T0 + i * H for i in range(30)], [1.0] * 30) == []
    assert schedule_gaps([], []) == []


def test_schedule_gaps_uses_each_venues_own_interval():
    # hourly venue: a 2 h step is a gap; an 8h venue would not call it one
    times = [T0, T0 + H, T0 + 3 * H]
    assert schedule_gaps(times, [1.0] * 3) == [(T0 + H, T0 + 2 * H)]
    # an interval change 8h -> 4h: the step is judged by the earlier interval
    times = [T0, T0 + 8 * H, T0 + 12 * H, T0 + 16 * H]
    assert schedule_gaps(times, [8.0, 8.0, 4.0, 4.0]) == []


def test_missed_settlements_interval_semantics():
    expected = [T0, T0 + 8 * H, T0 + 16 * H, T0 + 24 * H]
    # position opened by a fill at T0 (does not accrue at T0),
    # closed by a fill at T0+16h (does accrue at T0+16h)
    open_intervals = [(T0, T0 + 16 * H)]
    assert missed_settlements(expected, [], open_intervals) == [T0 + 8 * H, T0 + 16 * H]
    assert missed_settlements(expected, [T0 + 8 * H], open_intervals) == [T0 + 16 * H]
    assert missed_settlements(expected, [T0 + 8 * H, T0 + 16 * H], open_intervals) == []
    assert missed_settlements(expected, [], []) == []
    assert missed_settlements(expected, [], [(T0, T0 + 8 * H), (T0 + 20 * H, T0 + 30 * H)]) == [
        T0 + 8 * H, T0 + 24 * H]


@pytest.mark.parametrize("interval", [0.0, -8.0, float("nan"), float("inf"), 1e-15])
def test_a_funding_interval_that_would_never_advance_is_refused(interval):
    """A schedule stepped by it would loop for ever (a negative interval once hung the simulator)."""
    from fundarb.core.funding import next_settlement

    with pytest.raises(ValueError, match="positive number of hours"):
        next_settlement(0, interval)
