"""Threshold carry strategy: entry net of amortised cost, exits, reverse, prediction."""

from __future__ import annotations

import pytest

from fundarb.core.book import PositionBook
from fundarb.core.model import NS_PER_HOUR, FundingSettlement, Side
from fundarb.core.strategy import CarryParams, CarryStrategy, FundingSignal, close_intents
from fundarb.testkit.builders import PERP, SPOT, T0, make_fill

H = NS_PER_HOUR
DAY = 24 * H
MID = 60_000.0

# round trip 0.2% amortised over 14.6 days = 0.002 * 365 / 14.6 = 5% a year;
# an 8h rate r is r * 1095 a year, so with entry_apr 10% the bar is
# r * 1095 - 0.05 > 0.10, i.e. r > 0.000136986...
RTC = 0.002
ABOVE = 0.00014   # 15.33% - 5% = 10.33% > 10%
BELOW = 0.00013   # 14.235% - 5% = 9.235% < 10%


def make(rtc: float = RTC, **kw) -> CarryStrategy:
    params = dict(notional=60_000.0, entry_apr=0.10, exit_apr=0.0, signal_settlements=3,
                  expected_holding_days=14.6, max_holding_days=30.0, target_profit=0.05,
                  cooldown_hours=24.0, allow_reverse=False, lot_size=0.001)
    params.update(kw)
    return CarryStrategy(CarryParams(**params), rtc, SPOT, PERP)


def feed(s: CarryStrategy, rates, start: int = T0) -> int:
    ts = start
    for i, r in enumerate(rates):
        ts = start + i * 8 * H
        s.signal.on_settlement(ts, r, 8.0)
    return ts


def flat_book(perp_mark: float = 61_234.0) -> PositionBook:
    """Flat, with the perp market seen (its mark known)."""
    b = PositionBook.open(SPOT, PERP, 65_000.0, 35_000.0)
    b.revalue(PERP, perp_mark)
    return b


def entered(s: CarryStrategy, rates=(ABOVE,) * 3):
    """A strategy that has entered and a book holding the entry fills."""
    now = feed(s, rates)
    b = flat_book()
    intents = s.decide(b, MID, now)
    assert len(intents) == 2
    for i in intents:
        b.apply_fill(make_fill(i.venue, i.side, i.qty, MID, ts=now))
    return b, now


def test_amortised_cost():
    assert make().amortised_cost_apr == pytest.approx(0.05)
    assert make(rtc=0.004, expected_holding_days=36.5).amortised_cost_apr == pytest.approx(0.04)


def test_no_entry_before_the_perp_market_is_seen():
    s = make()
    now = feed(s, [ABOVE] * 3)
    assert s.decide(PositionBook.open(SPOT, PERP, 65_000.0, 35_000.0), 61_234.0, now) == []
    assert s.entries == 0
    assert s.decide(flat_book(), 61_234.0, now)  # once the perp has a mark, it enters


def test_enters_when_signal_net_of_cost_clears_the_bar():
    s = make()
    now = feed(s, [ABOVE] * 3)
    intents = s.decide(flat_book(), 61_234.0, now)
    assert [(i.venue, i.side, i.reason, i.reduce_only) for i in intents] == [
        (SPOT, Side.BUY, "entry", False), (PERP, Side.SELL, "entry", False)]
    # floor(60,000 / 61,234 / 0.001) * 0.001 = 0.979
    assert intents[0].qty == pytest.approx(0.979) and intents[1].qty == intents[0].qty
    assert intents[0].pair_id == intents[1].pair_id == 1
    assert s.direction == 1 and s.entry_ts == now


def test_no_entry_just_below_the_bar():
    s = make()
    now = feed(s, [BELOW] * 3)
    assert s.decide(flat_book(), MID, now) == []
    assert s.direction == 0


def test_cost_is_what_keeps_it_out():
    s = make(rtc=0.0)
    now = feed(s, [BELOW] * 3)  # 14.2% > 10% with no cost
    assert len(s.decide(flat_book(), MID, now)) == 2


def test_signal_is_the_mean_of_the_window():
    s = make()
    # mean of the last three: the first (huge) rate has rolled out
    now = feed(s, [0.01, BELOW, BELOW, BELOW])
    assert s.signal.current_apr() == pytest.approx(BELOW * 1095)
    assert s.decide(flat_book(), MID, now) == []
    s2 = make()
    now = feed(s2, [0.0001, 0.0001, 0.00022])  # mean 0.00014 clears it
    assert len(s2.decide(flat_book(), MID, now)) == 2


def test_waits_for_a_full_window():
    s = make()
    now = feed(s, [0.01, 0.01])
    assert not s.signal.ready
    assert s.decide(flat_book(), MID, now) == []


def test_no_entry_without_a_price():
    s = make()
    now = feed(s, [ABOVE] * 3)
    assert s.decide(flat_book(), float("nan"), now) == []


def test_the_announced_rate_counts_in_the_window_as_its_newest():
    """Once the coming settlement's rate is announced, the signal is the
    window's mean with it as the newest rate: an entry can be decided
    before the settlement, on what it will pay."""
    s = make()
    now = feed(s, [BELOW] * 3)
    assert s.decide(flat_book(), MID, now) == []
    s.signal.on_rate(0.00016, 8.0)  # known: (BELOW, BELOW, 0.00016) -> 15.33% - 5% > 10%
    assert s.signal.known_apr() == pytest.approx((BELOW * 2 + 0.00016) / 3 * 1095)
    assert len(s.decide(flat_book(), MID, now + 7 * H)) == 2
    # a weak announced rate holds back a signal that cleared the bar on the settled rates alone
    s2 = make()
    now = feed(s2, [ABOVE] * 3)
    s2.signal.on_rate(0.0001, 8.0)  # (ABOVE, ABOVE, 0.0001): 13.87% - 5% < 10%
    assert s2.decide(flat_book(), MID, now + 7 * H) == []


def test_an_announced_rate_makes_a_short_window_ready():
    s = make()
    now = feed(s, [ABOVE] * 2)
    assert not s.signal.ready
    s.signal.on_rate(ABOVE, 8.0)  # the third rate is known, if not yet paid
    assert s.signal.ready and len(s.decide(flat_book(), MID, now + 7 * H)) == 2


def test_settlement_clears_the_prediction():
    sig = FundingSignal(1)
    sig.on_rate(0.0005, 8.0)
    assert sig.predicted_apr() == pytest.approx(0.0005 * 1095)
    sig.on_settlement(T0, 0.0001, 8.0)
    assert sig.predicted is None and sig.predicted_apr() is None
    assert sig.current_apr() == pytest.approx(0.1095)


def test_interval_comes_from_the_settlement():
    sig = FundingSignal(1)
    sig.on_settlement(T0, 0.0001, 1.0)  # hourly venue
    assert sig.current_apr() == pytest.approx(0.876)


def test_exit_on_signal_below_exit_apr():
    s = make()
    b, now = entered(s)
    assert s.decide(b, MID, now + H) == []
    # mean of (ABOVE, -0.0002, -0.0002) < 0
    for k in (1, 2):
        s.signal.on_settlement(now + k * 8 * H, -0.0002, 8.0)
    intents = s.decide(b, MID, now + 16 * H)
    assert {(i.venue, i.side, i.reduce_only, i.reason) for i in intents} == {
        (SPOT, Side.SELL, True, "exit_signal"), (PERP, Side.BUY, True, "exit_signal")}
    assert all(i.qty == pytest.approx(1.0) for i in intents)
    assert s.direction == 0
    assert s.cooldown_until == now + 16 * H + 24 * H


def test_exit_apr_threshold_is_respected():
    s = make(exit_apr=0.05)
    b, now = entered(s)
    s.signal.on_settlement(now + 8 * H, 0.00003, 8.0)
    s.signal.on_settlement(now + 16 * H, 0.00003, 8.0)
    s.signal.on_settlement(now + 24 * H, 0.00003, 8.0)  # 3.285% < 5%
    assert s.exit_reason(b, now + 24 * H) == "exit_signal"
    s2 = make(exit_apr=0.03)
    b2, now2 = entered(s2)
    for k in (1, 2, 3):
        s2.signal.on_settlement(now2 + k * 8 * H, 0.00003, 8.0)  # 3.285% >= 3%
    assert s2.exit_reason(b2, now2 + 24 * H) is None


def test_exit_reads_the_window_with_the_announced_rate():
    s = make()
    b, now = entered(s, rates=(0.0005,) * 3)
    s.signal.on_rate(-0.0001, 8.0)  # (0.0005, 0.0005, -0.0001): still 32.85% a year
    assert s.exit_reason(b, now + H) is None
    s.signal.on_rate(-0.0011, 8.0)  # (0.0005, 0.0005, -0.0011): below 0
    assert s.exit_reason(b, now + H) == "exit_signal"


def test_exit_after_max_holding():
    s = make(max_holding_days=30.0)
    b, now = entered(s)
    assert s.exit_reason(b, now + 30 * DAY - 1) is None
    assert s.exit_reason(b, now + 30 * DAY) == "exit_max_hold"
    intents = s.decide(b, MID, now + 30 * DAY)
    assert {i.reason for i in intents} == {"exit_max_hold"}


def test_exit_at_target_profit():
    s = make(target_profit=0.01)  # 1% of 60,000 = 600
    b, now = entered(s)
    b.apply_funding(FundingSettlement(now + 8 * H, PERP, 0.00998, 8.0, MID))  # +598.8
    assert s.exit_reason(b, now + 8 * H) is None
    b.apply_funding(FundingSettlement(now + 16 * H, PERP, 0.0001, 8.0, MID))  # +6 more: 604.8
    assert s.exit_reason(b, now + 16 * H) == "exit_target"


def test_target_profit_counts_from_entry_not_from_start():
    s = make(target_profit=0.01)
    now = feed(s, [ABOVE] * 3)
    b = flat_book()
    b.charge(SPOT, -1_000.0)  # a +1,000 windfall before entry (a negative charge)
    for i in s.decide(b, MID, now):
        b.apply_fill(make_fill(i.venue, i.side, i.qty, MID, ts=now))
    assert s.entry_carry == pytest.approx(1_000.0)
    assert s.exit_reason(b, now + H) is None


def test_cooldown_after_exit():
    s = make(cooldown_hours=24.0)
    b, now = entered(s)
    s.signal.on_rate(-0.001, 8.0)  # the window's mean with it: below 0
    exit_at = now + H
    for i in s.decide(b, MID, exit_at):
        b.apply_fill(make_fill(i.venue, i.side, i.qty, MID, ts=exit_at))
    assert b.is_flat
    s.signal.on_rate(None, 8.0)
    assert s.decide(b, MID, exit_at + 24 * H - 1) == []
    assert len(s.decide(b, MID, exit_at + 24 * H)) == 2


def test_abandon_returns_to_flat_with_cooldown():
    s = make()
    now = feed(s, [ABOVE] * 3)
    s.decide(flat_book(), MID, now)
    s.abandon(now)
    assert s.direction == 0
    assert s.decide(flat_book(), MID, now + H) == []


def test_position_it_did_not_open_is_left_alone():
    s = make()
    now = feed(s, [ABOVE] * 3)
    b = flat_book()
    b.apply_fill(make_fill(SPOT, Side.BUY, 0.5, MID))
    assert s.decide(b, MID, now) == []


@pytest.mark.parametrize("allow", [False, True])
def test_reverse_only_when_allowed(allow):
    s = make(allow_reverse=allow)
    now = feed(s, [-0.0003] * 3)  # -32.85%: shorts pay longs
    intents = s.decide(flat_book(), MID, now)
    if not allow:
        assert intents == [] and s.direction == 0
    else:
        assert [(i.venue, i.side) for i in intents] == [(SPOT, Side.SELL), (PERP, Side.BUY)]
        assert s.direction == -1


def test_reverse_needs_the_bar_too():
    s = make(allow_reverse=True)
    now = feed(s, [-BELOW] * 3)
    assert s.decide(flat_book(), MID, now) == []
    s.signal.on_settlement(now + 8 * H, -0.0003, 8.0)
    s.signal.on_settlement(now + 16 * H, -0.0003, 8.0)
    s.signal.on_settlement(now + 24 * H, -0.0003, 8.0)
    s.signal.on_rate(0.0002, 8.0)  # known: (-0.0003, -0.0003, 0.0002) -> -14.6%: 9.6% < 10% each way
    assert s.decide(flat_book(), MID, now + 24 * H) == []
    s.signal.on_rate(-0.0001, 8.0)  # known: -25.55%: the reverse clears it
    assert [i.side for i in s.decide(flat_book(), MID, now + 24 * H)] == [Side.SELL, Side.BUY]


def test_close_intents_take_both_legs_to_zero():
    b = flat_book()
    b.apply_fill(make_fill(SPOT, Side.SELL, 0.3, MID))
    b.apply_fill(make_fill(PERP, Side.BUY, 0.4, MID))
    out = close_intents(b, "why", 9)
    assert [(i.venue, i.side, i.qty, i.reduce_only, i.pair_id) for i in out] == [
        (SPOT, Side.BUY, 0.3, True, 9), (PERP, Side.SELL, 0.4, True, 9)]
    assert close_intents(flat_book(), "why", 1) == []


def test_params_validation():
    with pytest.raises(ValueError, match="exit_apr"):
        CarryParams(entry_apr=0.05, exit_apr=0.06)
    with pytest.raises(ValueError, match="notional"):
        CarryParams(notional=0.0)
