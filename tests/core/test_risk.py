"""Risk: pre-trade vetoes, the pair rule, reduce-only clipping, limits
validation, and the post-trade monitors (drawdown, drift, naked leg, margin)."""

from __future__ import annotations

import attrs
import pytest

from fundarb.core.book import PositionBook
from fundarb.core.liquidation import BINANCE_USDM, MarginRule, MarginTier
from fundarb.core.model import OrderIntent, Side
from fundarb.core.risk import (
    NO_ACTION,
    KillSwitch,
    RiskLimits,
    RiskMonitor,
    VenueCosts,
    check,
    target_leverage,
    topup_needed,
)
from fundarb.data.margin_tiers import shipped_rule
from fundarb.testkit.builders import PERP, SPOT, make_fill

MID = 60_000.0
# Binance USD-M BTCUSDT brackets: a 1 BTC short's liquidation notional (60k..120k) is in
# bracket 2, MMR 0.5% and maintenance amount 50: liq = (cash + 50 + 60,000) / 1.005
BINANCE = shipped_rule("binanceusdm", "BTC/USDT:USDT")
COSTS = VenueCosts(spot_taker_fee=0.001, perp_taker_fee=0.0005, slippage_allowance=0.001,
                   margin=BINANCE, transfer_fee=1.0)
FREE = VenueCosts(0.0, 0.0, 0.0, BINANCE, 1.0)


def pair(qty: float = 1.0, pair_id: int = 1) -> list[OrderIntent]:
    return [OrderIntent(SPOT, Side.BUY, qty, "entry", pair_id), OrderIntent(PERP, Side.SELL, qty, "entry", pair_id)]


def hedged(spot_cash: float = 65_000.0, perp_cash: float = 35_000.0, spot_qty: float = 1.0,
           perp_qty: float = 1.0) -> PositionBook:
    b = PositionBook.open(SPOT, PERP, spot_cash, perp_cash)
    if spot_qty:
        b.apply_fill(make_fill(SPOT, Side.BUY, spot_qty, MID))
    if perp_qty:
        b.apply_fill(make_fill(PERP, Side.SELL, perp_qty, MID))
    return b


# --- limits ------------------------------------------------------------------

@pytest.mark.parametrize("lev", [3.01, 5.0, 0.0, -1.0])
def test_limits_reject_leverage_outside_0_3(lev):
    with pytest.raises(ValueError, match="max_leverage"):
        RiskLimits(max_leverage=lev)


def test_limits_accept_3_and_less():
    assert RiskLimits(max_leverage=3.0).max_leverage == 3.0
    assert RiskLimits(max_leverage=1.5).max_leverage == 1.5


def test_limits_reject_margin_buffer_below_30_percent():
    with pytest.raises(ValueError, match="min_margin_buffer"):
        RiskLimits(min_margin_buffer=0.2)


def test_kill_switch_halts_once_and_resumes():
    k = KillSwitch()
    assert k.halt("manual", 5) is True
    assert k.halt("again", 6) is False
    assert (k.halted, k.reason, k.ts) == (True, "manual", 5)
    k.resume()
    assert not k.halted and k.reason == ""


# --- pre-trade check ------------------------------------------------------------

def test_ordinary_entry_passes(book):
    # spot needs 60,000 * 1.002 = 60,120 <= 65,000; perp leverage 60,000 / (35,000 - 90) = 1.72
    approved, vetoes = check(pair(), book, MID, RiskLimits(), COSTS, KillSwitch())
    assert approved == pair() and vetoes == []


def test_veto_over_max_position(book):
    approved, vetoes = check(pair(0.6), book, MID, RiskLimits(max_position_btc=0.5), COSTS, KillSwitch())
    assert approved == []
    assert len(vetoes) == 2
    assert all("max_position_btc" in v.reason for v in vetoes)
    # exactly at the limit passes
    approved, _ = check(pair(0.5), book, MID, RiskLimits(max_position_btc=0.5), COSTS, KillSwitch())
    assert len(approved) == 2


def test_veto_over_max_notional(book):
    approved, vetoes = check(pair(1.0), book, MID, RiskLimits(max_notional=59_000.0), COSTS, KillSwitch())
    assert approved == [] and any("max_notional" in v.reason for v in vetoes)


def test_veto_over_max_leverage_vetoes_the_pair(book):
    # perp: fee 60,000 * 0.0015 = 90, equity 34,910, leverage 1.7187 > 1.5
    approved, vetoes = check(pair(), book, MID, RiskLimits(max_leverage=1.5), COSTS, KillSwitch())
    assert approved == []
    by_venue = {v.intent.venue: v.reason for v in vetoes}
    assert "leverage" in by_venue[PERP]
    assert by_venue[SPOT] == "other leg of the pair vetoed"
    approved, vetoes = check(pair(), book, MID, RiskLimits(max_leverage=1.75), COSTS, KillSwitch())
    assert len(approved) == 2 and vetoes == []


def test_veto_margin_buffer_after_trade_below_the_floor():
    # no fees; floor 35%; short 1 at 60,000 with 21,000 collateral: leverage 2.857 <= 3,
    # liq = (21,000 + 50 + 60,000) / 1.005 = 80,646.77, buffer 34.4% < 35%
    b = PositionBook.open(SPOT, PERP, 65_000.0, 21_000.0)
    limits = RiskLimits(min_margin_buffer=0.35)
    approved, vetoes = check(pair(), b, MID, limits, FREE, KillSwitch())
    assert approved == []
    assert "margin buffer after trade 34.4% below 35%" in {v.intent.venue: v.reason for v in vetoes}[PERP]
    # 22,000 collateral: liq = 82,050 / 1.005 = 81,641.79, buffer 36.1%
    b = PositionBook.open(SPOT, PERP, 65_000.0, 22_000.0)
    approved, vetoes = check(pair(), b, MID, limits, FREE, KillSwitch())
    assert len(approved) == 2 and vetoes == []


def test_veto_by_a_venue_table_with_a_higher_rate():
    # a venue whose one tier holds every size to 5%: short 1 at 60,000 with 21,000:
    # liq = 81,000 / 1.05 = 77,142.86, buffer 28.6% < 30%; 24,000: liq = 80,000, buffer 33.3%
    five = MarginRule("test", "BTC/USDT:USDT", (MarginTier(0.0, 1e9, 0.05, 0.0, 20.0),), BINANCE_USDM)
    costs = attrs.evolve(FREE, margin=five)
    b = PositionBook.open(SPOT, PERP, 65_000.0, 21_000.0)
    approved, vetoes = check(pair(), b, MID, RiskLimits(), costs, KillSwitch())
    assert approved == []
    assert "margin buffer after trade 28.6% below 30%" in {v.intent.venue: v.reason for v in vetoes}[PERP]
    b = PositionBook.open(SPOT, PERP, 65_000.0, 24_000.0)
    approved, vetoes = check(pair(), b, MID, RiskLimits(), costs, KillSwitch())
    assert len(approved) == 2 and vetoes == []


def test_veto_insufficient_spot_cash_vetoes_the_pair():
    b = PositionBook.open(SPOT, PERP, 60_100.0, 35_000.0)  # needs 60,120
    approved, vetoes = check(pair(), b, MID, RiskLimits(), COSTS, KillSwitch())
    assert approved == []
    by_venue = {v.intent.venue: v.reason for v in vetoes}
    assert "spot cash" in by_venue[SPOT]
    assert by_venue[PERP] == "other leg of the pair vetoed"
    b = PositionBook.open(SPOT, PERP, 60_120.5, 35_000.0)
    assert len(check(pair(), b, MID, RiskLimits(), COSTS, KillSwitch())[0]) == 2


def test_veto_of_one_pair_leaves_another_pair_alone(book):
    intents = pair(1.0, pair_id=1) + [OrderIntent(PERP, Side.SELL, 9.0, "entry", 2)]
    approved, vetoes = check(intents, book, MID, RiskLimits(), COSTS, KillSwitch())
    assert approved == pair(1.0, pair_id=1)
    assert [v.intent.pair_id for v in vetoes] == [2]


def test_kill_switch_vetoes_new_risk_but_not_reduce_only():
    b = hedged()
    kill = KillSwitch()
    kill.halt("drawdown", 1)
    closing = [OrderIntent(SPOT, Side.SELL, 1.0, "exit", 2, reduce_only=True),
               OrderIntent(PERP, Side.BUY, 1.0, "exit", 2, reduce_only=True)]
    approved, vetoes = check(pair(0.1) + closing, b, MID, RiskLimits(), COSTS, kill)
    assert approved == closing
    assert len(vetoes) == 2 and all("kill switch" in v.reason for v in vetoes)


def test_reduce_only_is_clipped_to_the_position():
    b = hedged(perp_qty=0.5)
    big = OrderIntent(PERP, Side.BUY, 0.8, "rebalance", 0, reduce_only=True)
    approved, vetoes = check([big], b, MID, RiskLimits(max_position_btc=0.1), COSTS, KillSwitch())
    assert vetoes == []
    assert len(approved) == 1 and approved[0].qty == pytest.approx(0.5)
    assert approved[0].side is Side.BUY and approved[0].reduce_only
    # nothing to reduce: dropped, not vetoed
    flat = PositionBook.open(SPOT, PERP, 1.0, 1.0)
    assert check([big], flat, MID, RiskLimits(), COSTS, KillSwitch()) == ([], [])


# --- monitors ------------------------------------------------------------------

def monitor(**limits) -> RiskMonitor:
    return RiskMonitor(RiskLimits(**limits), COSTS)


def test_drawdown_halts_at_5_percent_and_flattens():
    b = hedged()
    m = monitor()
    assert m.evaluate(b, 1, False, False) is NO_ACTION
    b.charge(SPOT, 4_900.0)  # 4.9% below the peak
    assert m.evaluate(b, 2, False, False) is NO_ACTION
    assert not m.kill.halted
    b.charge(SPOT, 100.0)  # 5.0%
    act = m.evaluate(b, 3, False, False)
    assert act.halted and m.kill.halted and m.kill.ts == 3
    assert m.drawdown == pytest.approx(0.05)
    assert [a.kind for a in act.alerts] == ["kill_switch"] and act.alerts[0].severity == "critical"
    assert {(i.venue, i.side, i.qty, i.reduce_only) for i in act.intents} == {
        (SPOT, Side.SELL, 1.0, True), (PERP, Side.BUY, 1.0, True)}


def test_drawdown_halt_without_flatten():
    b = hedged()
    m = monitor(flatten_on_kill=False)
    m.evaluate(b, 1, False, False)
    b.charge(SPOT, 6_000.0)
    act = m.evaluate(b, 2, False, False)
    assert act.halted and act.intents == ()


def test_drawdown_halts_even_while_busy():
    b = hedged()
    m = monitor()
    m.evaluate(b, 1, False, False)
    b.charge(SPOT, 5_500.0)
    assert m.evaluate(b, 2, True, False).halted


def test_halted_and_still_in_position_keeps_flattening():
    b = hedged()
    m = monitor()
    m.kill.halt("manual", 0)
    act = m.evaluate(b, 1, False, False)
    assert {i.reason for i in act.intents} == {"kill_flatten"} and len(act.intents) == 2


def test_drift_above_2_percent_alerts_once_and_rebalances():
    b = hedged(perp_qty=0.97)  # drift 3%
    m = monitor()
    act = m.evaluate(b, 1, False, False)
    assert [a.kind for a in act.alerts] == ["delta_drift"]
    assert [(i.venue, i.side, i.reduce_only, i.reason) for i in act.intents] == [
        (SPOT, Side.SELL, True, "rebalance")]
    assert act.intents[0].qty == pytest.approx(0.03)
    again = m.evaluate(b, 2, False, False)
    assert again.alerts == () and len(again.intents) == 1


def test_drift_on_the_perp_side_cuts_the_perp():
    b = hedged(perp_qty=1.05)
    act = monitor().evaluate(b, 1, False, False)
    assert [(i.venue, i.side) for i in act.intents] == [(PERP, Side.BUY)]
    assert act.intents[0].qty == pytest.approx(0.05)


def test_drift_alert_without_auto_rebalance():
    b = hedged(perp_qty=0.97)
    act = monitor(auto_rebalance=False).evaluate(b, 1, False, False)
    assert [a.kind for a in act.alerts] == ["delta_drift"] and act.intents == ()


def test_drift_within_2_percent_does_nothing():
    b = hedged(perp_qty=0.985)
    assert monitor().evaluate(b, 1, False, False) is NO_ACTION


@pytest.mark.parametrize(("spot_qty", "perp_qty", "venue", "side"), [
    (1.0, 0.0, SPOT, Side.SELL),
    (0.0, 1.0, PERP, Side.BUY),
])
def test_naked_leg_is_unwound(spot_qty, perp_qty, venue, side):
    b = hedged(spot_qty=spot_qty, perp_qty=perp_qty)
    act = monitor().evaluate(b, 1, False, False)
    assert [(i.venue, i.side, i.qty, i.reduce_only, i.reason) for i in act.intents] == [
        (venue, side, 1.0, True, "unwind_naked_leg")]


def test_busy_waits():
    b = hedged(spot_qty=1.0, perp_qty=0.0)
    assert monitor().evaluate(b, 1, True, False) is NO_ACTION


def test_margin_topup_restores_the_target_buffer():
    # short 1 at 60,000 with 35,000; mark 75,000: liq = 95,050 / 1.005 = 94,577.1,
    # buffer 26.1% (< 30%, >= 15%). To 50%: cash with (cash + 50 + 60,000) / 1.005 = 112,500
    # (bracket 2 at 112,500) -> 53,012.5: top up 18,012.5 plus the 1.0 transfer fee.
    b = hedged(spot_cash=100_000.0)
    b.revalue(PERP, 75_000.0)
    m = monitor()
    act = m.evaluate(b, 1, False, False)
    assert act.transfer_to_perp == pytest.approx(18_013.5)
    assert [a.kind for a in act.alerts] == ["margin_topup"]
    assert "margin buffer 26.1%" in act.alerts[0].message
    # the leverage target (0.75 * 3 = 2.25) needs less: 75,000 / 2.25 + 15,000 - 35,000
    assert target_leverage(RiskLimits()) == pytest.approx(2.25)
    assert topup_needed(b, BINANCE, 0.5, 2.25) == pytest.approx(18_012.5)
    b.perp.cash += 18_012.5
    assert b.margin_buffer(BINANCE) == pytest.approx(0.5)
    assert b.leverage() <= 2.25
    # a transfer on its way: wait for it
    b.perp.cash -= 18_012.5
    assert m.evaluate(b, 2, False, True) is NO_ACTION


def test_leverage_above_the_cap_alone_triggers_a_topup():
    # short 1 at 60,000 with 60,000 / 3.1 collateral: leverage 3.1 > 3 while the
    # buffer is ((1 / 3.1 + 1) 60,000 + 50) / 1.005 / 60,000 - 1 = 31.7% >= 30%. The buffer
    # target wants 90,000 * 0.005 - 50 + 30,000 = 30,400 on the venue; leverage 2.25 wants 26,666.67.
    cash = 60_000.0 / 3.1
    b = hedged(spot_cash=100_000.0, perp_cash=cash)
    assert b.margin_buffer(BINANCE) == pytest.approx(((1 / 3.1 + 1) * 60_000.0 + 50.0) / 1.005 / 60_000.0 - 1)
    act = monitor().evaluate(b, 1, False, False)
    assert act.transfer_to_perp == pytest.approx(30_400.0 - cash + 1.0)
    # at 2.9x nothing is wrong
    assert monitor().evaluate(hedged(perp_cash=60_000.0 / 2.9), 1, False, False) is NO_ACTION


def test_margin_topup_moves_what_there_is_when_short_of_cash():
    b = hedged()  # spot cash 5,000 after buying 1 BTC
    b.revalue(PERP, 75_000.0)
    act = monitor().evaluate(b, 1, False, False)
    assert act.transfer_to_perp == pytest.approx(5_000.0)
    assert act.intents == ()


def test_margin_below_hard_floor_reduces_both_legs():
    # mark 85,000: buffer 94,577.1 / 85,000 - 1 = 11.3% < 15%: cut now, on
    # the perp venue's own cash (a transfer would take too long). Cutting x
    # from both legs: perp cash 35,000 - 25,000 x; liq = (95,050 - 85,000 x)
    # / ((1 - x) 1.005) >= 1.15 * 85,000 (bracket 2) -> x >= 3,188.75 / 13,238.75
    # = 0.241: the 5% step that gets there is 0.25.
    b = hedged()
    b.revalue(PERP, 85_000.0)
    act = monitor().evaluate(b, 1, False, False)
    assert [a.kind for a in act.alerts] == ["margin_reduce"]
    assert act.alerts[0].severity == "critical"
    assert {(i.venue, i.side, i.reduce_only, i.reason) for i in act.intents} == {
        (SPOT, Side.SELL, True, "margin_reduce"), (PERP, Side.BUY, True, "margin_reduce")}
    assert all(i.qty == pytest.approx(0.25) for i in act.intents)


def test_cash_goes_back_to_the_split_while_flat():
    b = PositionBook.open(SPOT, PERP, 70_000.0, 30_000.0)
    act = monitor().evaluate(b, 1, False, False)
    assert act.transfer == (SPOT, PERP, pytest.approx(5_000.0))
    within = PositionBook.open(SPOT, PERP, 65_900.0, 34_100.0)  # 900 off, tolerance 1,000
    assert monitor().evaluate(within, 1, False, False) is NO_ACTION
    assert monitor().evaluate(b, 1, False, True) is NO_ACTION
