"""A perp/perp carry in the pure core: a long perp on one venue against the
short on another, each on its own cash. Its equity and accounting identity
under random fills, marks and both venues' settlements; the strategy's
signal as the short's funding less the long's (an hourly long leg read over
the short's window); each leg checked against its own venue's rule.
Prices and rates here are synthetic."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fundarb.core import risk
from fundarb.core.book import PositionBook, VenueAccount
from fundarb.core.model import NS_PER_HOUR, Fill, FundingSettlement, MarketKind, OrderIntent, Side
from fundarb.core.strategy import CarryParams, CarryStrategy
from fundarb.data.margin_tiers import shipped_rule

LONG, SHORT = "bybit:long", "binanceusdm:perp"
T0 = 1_700_000_000 * 1_000_000_000 // NS_PER_HOUR * NS_PER_HOUR
BINANCE = shipped_rule("binanceusdm", "BTC/USDT:USDT")
BYBIT = shipped_rule("bybit", "BTC/USDT:USDT")


def book(cash: float = 50_000.0) -> PositionBook:
    b = PositionBook.restore(VenueAccount(LONG, MarketKind.PERP, cash), VenueAccount(SHORT, MarketKind.PERP, cash), 0,
                             initial_equity=2 * cash)
    for venue in (LONG, SHORT):
        b.revalue(venue, 40_000.0)
    return b


def test_the_long_leg_counts_its_unrealized_pnl_and_pays_positive_funding():
    b = book()
    assert b.long_perp
    b.apply_fill(Fill(T0, LONG, "l", Side.BUY, 1.0, 40_000.0, 40_000.0, 20.0))
    b.apply_fill(Fill(T0, SHORT, "s", Side.SELL, 1.0, 40_000.0, 40_000.0, 20.0))
    assert b.spot.cash == 50_000.0 - 20.0  # a perp buy moves no notional, only the fee
    b.revalue(LONG, 42_000.0)
    b.revalue(SHORT, 42_010.0)
    assert b.equity == pytest.approx(100_000.0 - 40.0 + 2_000.0 - 2_010.0)
    paid = b.apply_funding(FundingSettlement(T0 + 8 * NS_PER_HOUR, LONG, 0.0001, 8.0, 42_000.0))
    received = b.apply_funding(FundingSettlement(T0 + 8 * NS_PER_HOUR, SHORT, 0.0003, 8.0, 42_010.0))
    assert paid is not None and received is not None
    assert paid.amount == pytest.approx(-4.2) and received.amount == pytest.approx(12.603)
    assert b.funding == pytest.approx(12.603 - 4.2) and b.delta == 0.0 and b.drift == 0.0
    # the long's liquidation below the mark by its venue's rule, on its own cash
    liq = b.long_liquidation_price(BYBIT)
    assert liq < 42_000.0 and b.long_margin_buffer(BYBIT) == pytest.approx((42_000.0 - liq) / 42_000.0)


steps = st.lists(st.one_of(
    st.tuples(st.just("fill"), st.sampled_from([LONG, SHORT]), st.sampled_from([Side.BUY, Side.SELL]),
              st.floats(0.001, 2.0), st.floats(-0.002, 0.002)),
    st.tuples(st.just("mark"), st.sampled_from([LONG, SHORT]), st.floats(-0.1, 0.1)),
    st.tuples(st.just("funding"), st.sampled_from([LONG, SHORT]), st.floats(-0.003, 0.003)),
), max_size=40)


@settings(max_examples=200, deadline=None)
@given(seq=steps)
def test_identity_holds_with_a_long_perp_leg(seq):
    b = book()
    prices = {LONG: 40_000.0, SHORT: 40_000.0}
    ts, traded = T0, 1.0
    for step in seq:
        ts += NS_PER_HOUR
        if step[0] == "fill":
            _, venue, side, qty, slip = step
            price = prices[venue] * (1 + slip)
            b.apply_fill(Fill(ts, venue, "c", side, qty, price, prices[venue], 0.0005 * qty * price))
            traded += qty * price
        elif step[0] == "mark":
            _, venue, move = step
            prices[venue] = max(1_000.0, prices[venue] * (1 + move))
            b.revalue(venue, prices[venue])
        else:
            _, venue, rate = step
            b.apply_funding(FundingSettlement(ts, venue, rate, 8.0, prices[venue]))
        gap = b.equity - b.initial_equity - (b.funding - b.fees - b.slippage + b.price_pnl)
        assert abs(gap) <= 1e-9 * traded, (step, gap)
        expected = sum(a.cash + a.qty * (a.price - a.entry) for a in (b.spot, b.perp))
        assert b.equity == pytest.approx(expected, rel=1e-12, abs=1e-6)


def _strategy() -> CarryStrategy:
    return CarryStrategy(CarryParams(notional=40_000.0, entry_apr=0.05, signal_settlements=3, cooldown_hours=0),
                         0.002, LONG, SHORT, differential=True)


def test_the_signal_is_the_shorts_funding_less_the_longs():
    s = _strategy()
    for k in range(3):
        s.on_settlement(SHORT, T0 + k * 8 * NS_PER_HOUR, 0.0002, 8.0)  # 21.9% APR
    b = book()
    assert s.decide(b, 40_000.0, T0 + 30 * NS_PER_HOUR) == []  # the long leg's signal is not ready yet
    for k in range(3):
        s.on_settlement(LONG, T0 + k * 8 * NS_PER_HOUR, 0.00015, 8.0)  # 16.425%: a 5.475% differential
    assert s.entry_edge() == pytest.approx(0.219 - 0.16425)
    assert s.decide(b, 40_000.0, T0 + 30 * NS_PER_HOUR) == []  # 5.475% - 2.2% cost APR is under 5%
    for k in range(3, 6):
        s.on_settlement(LONG, T0 + k * 8 * NS_PER_HOUR, 0.00005, 8.0)  # 5.475%: the differential widens
    intents = s.decide(b, 40_000.0, T0 + 60 * NS_PER_HOUR)
    assert [(i.venue, i.side, i.qty) for i in intents] == [(LONG, Side.BUY, 1.0), (SHORT, Side.SELL, 1.0)]


def test_an_hourly_long_leg_is_read_over_the_shorts_window():
    s = _strategy()
    for k in range(3):
        s.on_settlement(SHORT, T0 + k * 8 * NS_PER_HOUR, 0.0002, 8.0)
    for h in range(48):  # two days of hourly settlements: the last 24 (three 8-hour periods) count
        s.on_settlement(LONG, T0 + h * NS_PER_HOUR, 0.00002 if h < 24 else 0.00001, 1.0)
    assert s.long_signal is not None and s.long_signal.window == 24
    assert s.long_apr() == pytest.approx(0.00001 * 8760)


def test_each_leg_is_checked_against_its_own_venue():
    b = book(cash=5_000.0)
    costs = risk.VenueCosts(0.00055, 0.0005, 0.001, BINANCE, 1.0, 0.5, long_margin=BYBIT)
    limits = risk.RiskLimits(max_leverage=3.0)
    ok, vetoes = risk.check([OrderIntent(LONG, Side.BUY, 0.25, "entry", 1), OrderIntent(SHORT, Side.SELL, 0.25, "entry", 1)],
                            b, 40_000.0, limits, costs, risk.KillSwitch())
    assert vetoes == [] and len(ok) == 2  # 10,000 on 5,000 each side: 2x
    ok, vetoes = risk.check([OrderIntent(LONG, Side.BUY, 1.0, "entry", 2), OrderIntent(SHORT, Side.SELL, 1.0, "entry", 2)],
                            b, 40_000.0, limits, costs, risk.KillSwitch())
    assert ok == [] and "leverage" in vetoes[0].reason  # 8x on the long venue's own cash
    # in position, a fall takes the long leg toward its liquidation: both legs are cut, nothing is moved
    b.apply_fill(Fill(T0, LONG, "l", Side.BUY, 0.3, 40_000.0, 40_000.0, 0.0))
    b.apply_fill(Fill(T0, SHORT, "s", Side.SELL, 0.3, 40_000.0, 40_000.0, 0.0))
    b.revalue(LONG, 32_000.0)
    b.revalue(SHORT, 32_000.0)
    mon = risk.RiskMonitor(limits, costs)
    mon.peak_equity = b.equity
    actions = mon.evaluate(b, T0 + NS_PER_HOUR, busy=False, transfer_pending=False)
    assert actions.transfer is None and actions.transfer_to_perp == 0
    assert {(i.venue, i.side) for i in actions.intents} == {(LONG, Side.SELL), (SHORT, Side.BUY)}
    assert all(i.reduce_only and i.reason == "margin_reduce" for i in actions.intents)
