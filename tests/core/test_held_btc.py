"""A coin-margined carry on BTC already held (``Collateral.keep_btc``): the
entry buys only what the holding lacks and shorts against it, the exit closes
the short and sells nothing, the holding out of a carry is flat and no drift,
its price moves are the holder's (``held_pnl``), and the accounting identity
and the carry's equity hold under random sequences. Prices are synthetic."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fundarb.core import risk
from fundarb.core.book import COIN, Collateral, PositionBook
from fundarb.core.model import NS_PER_HOUR, Fill, FundingSettlement, Side
from fundarb.core.strategy import CarryParams, CarryStrategy, btc_to_buy, close_intents, hedge_units
from fundarb.testkit.builders import PERP, SPOT, T0

SIZE = 100.0
HELD = Collateral(COIN, keep_btc=True)


def held_book(btc: float = 2.0, price: float = 50_000.0, size: float = SIZE) -> PositionBook:
    b = PositionBook.open(SPOT, PERP, 0.0, 0.0, contract_size=size, collateral=HELD, held_btc=btc, spot_price=price)
    b.revalue(PERP, price)
    return b


def ready_strategy(notional: float) -> CarryStrategy:
    s = CarryStrategy(CarryParams(notional=notional, entry_apr=0.05, signal_settlements=1, cooldown_hours=0),
                      0.001, SPOT, PERP)
    s.signal.on_settlement(T0, 0.001, 8.0)  # 109.5% APR: clears any bar
    return s


def test_keep_btc_needs_coin_margined_collateral():
    with pytest.raises(ValueError, match="coin-margined"):
        Collateral("own", keep_btc=True)


def test_a_book_opened_on_btc_is_worth_the_btc_and_is_flat():
    b = held_book(2.0, 50_000.0)
    assert b.initial_equity == 100_000.0 and b.equity == 100_000.0
    assert b.is_flat and b.drift == 0.0 and b.unhedged_btc == 2.0
    with pytest.raises(ValueError, match="price"):
        PositionBook.open(SPOT, PERP, 0.0, 0.0, contract_size=SIZE, collateral=HELD, held_btc=1.0)


@pytest.mark.parametrize(("held", "notional", "buys"), [
    (2.0, 95_000.0, 0.0),      # the holding covers the notional: no spot order
    (2.0, 100_000.0, 0.0),     # exactly
    (1.5, 95_000.0, 0.4),      # 1.9 BTC hedged, 0.4 of it bought
    (0.0, 50_000.0, 1.0),
])
def test_entry_buys_only_what_the_holding_lacks_and_shorts_the_notional(held, notional, buys):
    b = held_book(held, 50_000.0) if held else PositionBook.open(SPOT, PERP, 60_000.0, 0.0, contract_size=SIZE,
                                                                 collateral=HELD)
    b.revalue(SPOT, 50_000.0)
    b.revalue(PERP, 50_000.0)
    intents = ready_strategy(notional).decide(b, 50_000.0, T0 + NS_PER_HOUR)
    spot = [i for i in intents if i.venue == SPOT]
    perp = [i for i in intents if i.venue == PERP]
    assert len(perp) == 1 and perp[0].side is Side.SELL
    hedged = math.floor(notional / 50_000.0 / 0.001) * 0.001
    assert perp[0].qty == round(hedged * 50_000.0 / SIZE)
    if buys:
        assert len(spot) == 1 and spot[0].side is Side.BUY and spot[0].qty == pytest.approx(buys, abs=0.0011)
        # whole lots, just enough: the holding and the buy cover the hedge, one lot less would not
        assert held + spot[0].qty >= hedged - 1e-12 and held + spot[0].qty - 0.001 < hedged
    else:
        assert spot == []


def test_exit_closes_the_short_and_keeps_every_btc():
    b = held_book(2.0, 50_000.0)
    b.apply_fill(Fill(T0, PERP, "p", Side.SELL, 950, 50_000.0, 50_000.0, 0.0))
    assert not b.is_flat and b.drift == 0.0  # 1.9 BTC hedged, 0.1 held beyond it: no exposure of the carry
    b.apply_funding(FundingSettlement(T0 + 8 * NS_PER_HOUR, PERP, 0.0001, 8.0, 50_000.0))
    exits = close_intents(b, "exit_signal", 2)
    assert [(i.venue, i.side, i.qty) for i in exits] == [(PERP, Side.BUY, 950.0)]
    b.apply_fill(Fill(T0 + 9 * NS_PER_HOUR, PERP, "p", Side.BUY, 950, 55_000.0, 55_000.0, 0.0))
    assert b.is_flat and b.drift == 0.0
    # the short lost 95,000 x (1/50,000 - 1/55,000) BTC on the rise and earned the funding: all settled into the holding
    expected = 2.0 + 950 * SIZE / 50_000.0 * 0.0001 - 95_000.0 * (1 / 50_000.0 - 1 / 55_000.0)
    assert b.spot.qty == pytest.approx(expected, rel=1e-12)


def test_a_short_larger_than_the_holding_is_drift_and_rebalance_cuts_the_short_only():
    b = held_book(1.0, 50_000.0)
    b.apply_fill(Fill(T0, PERP, "p", Side.SELL, 600, 50_000.0, 50_000.0, 0.0))  # 1.2 BTC short on 1.0 held
    assert b.drift == pytest.approx(0.2 / 1.2, rel=1e-12)
    cuts = risk.rebalance_intents(b)
    assert [(i.venue, i.side) for i in cuts] == [(PERP, Side.BUY)] and cuts[0].qty == 100
    reduce = risk.reduce_intents(b, 0.5, "margin_reduce")
    assert [i.venue for i in reduce] == [PERP]  # the holding is never sold


def test_held_btc_price_moves_are_the_holders_not_the_carrys():
    b = held_book(2.0, 50_000.0)
    for px in (40_000.0, 61_000.0, 30_000.0):
        b.revalue(SPOT, px)
        b.revalue(PERP, px)
    assert b.held_pnl == pytest.approx(2.0 * (30_000.0 - 50_000.0), rel=1e-12)
    assert b.carry_equity == pytest.approx(100_000.0, rel=1e-12)  # flat: the carry neither made nor lost
    mon = risk.RiskMonitor(risk.RiskLimits(max_drawdown=0.05), None)  # type: ignore[arg-type]
    mon.peak_equity = b.carry_equity
    mon.evaluate(b, T0, busy=True, transfer_pending=False)
    assert not mon.kill.halted  # a 40% fall of the holding is no drawdown of the carry


def test_helpers_price_the_hedge_and_the_shortfall():
    b = held_book(1.0, 40_000.0)
    assert hedge_units(b, 0.5) == 200.0
    assert btc_to_buy(b, 0.5, 0.001) == 0.0
    assert btc_to_buy(b, 1.2345, 0.001) == pytest.approx(0.235, abs=1e-12)


steps = st.lists(st.one_of(
    st.tuples(st.just("short"), st.integers(1, 1_500), st.floats(-0.002, 0.002), st.floats(0.0, 0.0005)),
    st.tuples(st.just("cover"), st.floats(0.0, 1.0), st.floats(-0.002, 0.002), st.floats(0.0, 0.0005)),
    st.tuples(st.just("move"), st.floats(-0.15, 0.15), st.floats(-0.003, 0.003)),
    st.tuples(st.just("funding"), st.floats(-0.003, 0.003)),
), max_size=40)


@settings(max_examples=200, deadline=None)
@given(seq=steps, held=st.floats(0.01, 20.0), start=st.floats(10_000.0, 120_000.0))
def test_identity_and_carry_equity_hold_on_a_held_btc_carry(seq, held, start):
    """Whatever the short does and the prices do: equity - initial = funding -
    fees - slippage + price PnL; the held BTC's PnL accrues only on BTC no
    short hedges; every BTC stays in the holding (no spot order exists)."""
    b = held_book(held, start)
    spot_px, mark = start, start
    ts = T0
    for step in seq:
        ts += NS_PER_HOUR
        kind = step[0]
        if kind == "short":
            _, n, slip, rate = step
            price = mark * (1 + slip)
            b.apply_fill(Fill(ts, PERP, "p", Side.SELL, float(n), price, mark, b.perp.fee_for(rate, n, price)))
        elif kind == "cover":
            _, frac, slip, rate = step
            n = math.floor(-b.perp.units * frac)
            if n <= 0:
                continue
            price = mark * (1 + slip)
            b.apply_fill(Fill(ts, PERP, "p", Side.BUY, float(n), price, mark, b.perp.fee_for(rate, n, price)))
        elif kind == "move":
            _, move, basis = step
            before, unhedged = b.held_pnl, b.unhedged_btc
            new = max(1_000.0, spot_px * (1 + move))
            b.revalue(SPOT, new)
            assert b.held_pnl - before == pytest.approx(unhedged * (new - spot_px), rel=1e-9, abs=1e-9)
            spot_px, mark = new, new * (1 + basis)
            b.revalue(PERP, mark)
        else:
            b.apply_funding(FundingSettlement(ts, PERP, step[1], 8.0, mark))
        gap = b.equity - b.initial_equity - (b.funding - b.fees - b.slippage + b.price_pnl)
        assert abs(gap) <= 1e-9 * held * start * 10, (step, gap)
        assert b.perp.coin == 0.0  # the short's BTC joins the holding
        assert b.is_flat == (b.perp.qty == 0)
    if b.perp.qty == 0:
        assert b.drift == 0.0
