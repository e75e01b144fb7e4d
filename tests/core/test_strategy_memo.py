"""The strategy keeps what it works out (the entry direction per signal, an
exit check that found no reason) only while its inputs stay the same: over
any run of settlements, predictions, fills, funding and time it decides what
a strategy that works everything out afresh on every call decides."""

from __future__ import annotations

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from fundarb.core.book import PositionBook
from fundarb.core.model import NS_PER_HOUR, FundingSettlement, Side
from fundarb.core.strategy import NEVER, CarryParams, CarryStrategy, max_hold_reached
from fundarb.testkit.builders import PERP, SPOT, T0, make_fill

H = NS_PER_HOUR
MID = 60_000.0


@attrs.define(slots=True)
class Afresh(CarryStrategy):
    """Forgets what it worked out before every decision."""

    def decide(self, book: PositionBook, spot_mid: float, now: int) -> list:
        self._entry_key = -1
        self._stay_key = -1
        return CarryStrategy.decide(self, book, spot_mid, now)


def _pair(cls: type[CarryStrategy], reverse: bool) -> tuple[CarryStrategy, PositionBook]:
    params = CarryParams(notional=30_000.0, entry_apr=0.08, exit_apr=0.01, signal_settlements=2,
                         expected_holding_days=10.0, max_holding_days=3.0, target_profit=0.002,
                         cooldown_hours=4.0, allow_reverse=reverse, lot_size=0.001)
    book = PositionBook.open(SPOT, PERP, 65_000.0, 35_000.0)
    book.revalue(SPOT, MID)
    book.revalue(PERP, MID)
    return cls(params, 0.002, SPOT, PERP), book


def _state(s: CarryStrategy) -> dict:
    """What a strategy holds, its kept verdicts aside."""
    return attrs.asdict(s, filter=lambda a, _: a.eq)


_step = st.one_of(
    st.tuples(st.just("settle"), st.sampled_from([0.0004, 0.0002, 0.00005, 0.0, -0.0002, -0.0005])),
    st.tuples(st.just("predict"), st.sampled_from([None, 0.0003, 0.0, -0.0003])),
    st.tuples(st.just("hours"), st.integers(0, 30)),
    st.tuples(st.just("funding"), st.floats(-20.0, 60.0)),
    st.tuples(st.just("decide"), st.just(0)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_step, min_size=1, max_size=80), st.booleans())
def test_kept_verdicts_decide_as_a_strategy_that_works_everything_out_afresh(steps, reverse):
    kept, kept_book = _pair(CarryStrategy, reverse)
    fresh, fresh_book = _pair(Afresh, reverse)
    now = T0
    for kind, value in steps:
        if kind == "settle":
            for s in (kept, fresh):
                s.on_settlement(PERP, now, value, 8.0)
        elif kind == "predict":
            for s in (kept, fresh):
                s.on_rate(PERP, value, 8.0)
        elif kind == "hours":
            now += value * H
        elif kind == "funding":  # the carry moves without a trade
            for book in (kept_book, fresh_book):
                if book.perp.qty:
                    book.apply_funding(FundingSettlement(now, PERP, value / (book.perp.qty * -MID), 8.0, MID))
        got = kept.decide(kept_book, MID, now)
        assert got == fresh.decide(fresh_book, MID, now)
        for book in (kept_book, fresh_book):  # the orders fill in full at the mid
            for intent in got:
                book.apply_fill(make_fill(intent.venue, intent.side, intent.qty, MID, ts=now))
        assert _state(kept) == _state(fresh)
    assert kept.pair_seq == fresh.pair_seq


def test_an_exit_check_that_found_nothing_still_exits_at_the_maximum_holding_time():
    s, book = _pair(CarryStrategy, False)
    for k in range(2):
        s.on_settlement(PERP, T0 + k * 8 * H, 0.0004, 8.0)
    now = T0 + 16 * H
    entry = s.decide(book, MID, now)
    assert [i.side for i in entry] == [Side.BUY, Side.SELL]
    for intent in entry:
        book.apply_fill(make_fill(intent.venue, intent.side, intent.qty, MID, ts=now))
    assert s.decide(book, MID, now + H) == []  # nothing to exit for: kept
    out = s.decide(book, MID, now + 3 * 24 * H)
    assert {i.reason for i in out} == {"exit_max_hold"}


@given(st.one_of(st.floats(0.001, 5_000.0), st.just(float("inf")), st.just(1e12)), st.integers(0, 2**60))
def test_the_holding_time_exit_instant_is_the_first_the_rule_says_yes(days, entry_ts):
    """``hold_end`` is the first instant ``max_hold_reached`` gives an exit
    (NEVER for a holding time no run reaches)."""
    params = attrs.evolve(_pair(CarryStrategy, False)[0].params, max_holding_days=days)
    s = CarryStrategy(params, 0.002, SPOT, PERP)
    s.entry_ts = entry_ts
    end = s.hold_end()
    if end == NEVER:
        assert not max_hold_reached(NEVER - entry_ts, days)
    else:
        assert max_hold_reached(end - entry_ts, days) and not max_hold_reached(end - 1 - entry_ts, days)
