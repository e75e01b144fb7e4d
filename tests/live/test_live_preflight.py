"""Pre-flight: the plan and checks of a paired trade against a snapshot of the venues."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import attrs
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from fundarb import config
from fundarb.core.book import PositionBook
from fundarb.core.liquidation import ISOLATED
from fundarb.core.model import NS_PER_HOUR, Side
from fundarb.core.strategy import CarryStrategy
from fundarb.data.margin_tiers import shipped_rule
from fundarb.live.ccxt.client import MarketRules
from fundarb.live.execution.preflight import Snapshot, plan_trade, walk
from fundarb.wiring import round_trip_cost

ROOT = Path(__file__).resolve().parents[2]
CFG = config.load(ROOT / "sims" / "spot_perp.toml")
SPOT_ACC, PERP_ACC = CFG.spot_account, CFG.perp_account
SPOT_RULES = MarketRules(SPOT_ACC, CFG.spot.symbol, Decimal("0.00001"), 0.00001, 86.5, 5.0)
PERP_RULES = MarketRules(PERP_ACC, CFG.perp.symbol, Decimal("0.001"), 0.001, 120.0, 100.0)
MARK = 60_010.0
RULE = shipped_rule(CFG.perp.exchange, CFG.perp.symbol)  # Binance USD-M BTCUSDT brackets


def liquidation_price(collateral: float, qty: float, entry: float) -> float:
    """Binance USD-M, isolated: LP = (WB + cum - side Q EP) / (Q MMR - side Q), written out here
    for a short (side -1) with the bracket of the notional at LP: under 50,000 bracket 1 (0.4%,
    cum 0), else bracket 2 (0.5%, cum 50)."""
    q = abs(qty)
    lp = (collateral + q * entry) / (q * 1.004)
    if q * lp >= 50_000:
        lp = (collateral + 50.0 + q * entry) / (q * 1.005)
    return lp

# A SYNTHETIC snapshot (made up here, not read from any venue): tight deep books,
# plenty of cash on both venues, no position, funding 0.03% per 8 h (about 33% APR).
HEALTHY = Snapshot(
    ts=1,
    spot_bids=((59_999.0, 2.0), (59_998.0, 5.0), (59_990.0, 10.0)),
    spot_asks=((60_001.0, 2.0), (60_002.0, 5.0), (60_010.0, 10.0)),
    perp_bids=((60_009.0, 3.0), (60_008.0, 5.0), (60_000.0, 10.0)),
    perp_asks=((60_011.0, 3.0), (60_012.0, 5.0), (60_020.0, 10.0)),
    spot_quote_free=50_000.0, spot_base_free=0.0,
    perp_quote_free=30_000.0, perp_equity=30_000.0,
    perp_qty=0.0, perp_entry=0.0, perp_collateral=0.0, perp_leverage=3.0,
    mark=MARK, funding_rate=0.0003, predicted_rate=0.0003, interval_hours=8.0, next_funding_ts=99,
    spot_taker_fee=0.001, perp_taker_fee=0.0005, journal_spot=0.0, journal_perp=0.0,
    margin=RULE,
)
OPEN_CHECKS = {f"{SPOT_ACC} book", f"{SPOT_ACC} spread", f"{SPOT_ACC} slippage", f"{PERP_ACC} book",
               f"{PERP_ACC} spread", f"{PERP_ACC} slippage", f"{SPOT_ACC} lot and notional",
               f"{PERP_ACC} lot and notional", "spot balance", "perp balance", "position size", "notional",
               "leverage", "margin buffer", "funding"}


def snap(**over) -> Snapshot:
    return attrs.evolve(HEALTHY, **over)


def plan(s: Snapshot = HEALTHY, kind: str = "open", qty: float = 0.01, cfg=CFG, **kw):
    return plan_trade(cfg, s, kind, qty, SPOT_RULES, PERP_RULES, **kw)


def failed(p) -> set[str]:
    return {c.name for c in p.failed}


def with_risk(**over):
    return attrs.evolve(CFG, risk=attrs.evolve(CFG.risk, **over))


def test_baseline_config_is_what_these_tests_assume():
    assert CFG.live is None  # so the defaults apply: 10 bp spread, 15 bp slippage
    assert (CFG.live_settings.max_spread_bp, CFG.live_settings.max_slippage_bp) == (10.0, 15.0)
    assert CFG.risk.max_leverage == 3.0 and CFG.risk.max_position_btc == 5.0


# --- the healthy case and one failure at a time -----------------------------------------

def test_healthy_snapshot_passes_every_check_for_an_open_of_0_01():
    p = plan()
    assert {c.name for c in p.checks} == OPEN_CHECKS
    assert p.ok and failed(p) == set()
    assert (p.spot.side, p.perp.side) == (Side.BUY, Side.SELL)
    assert (p.spot.price, p.perp.price) == (60_001.0, 60_009.0)  # top of book covers 0.01


def test_same_snapshot_gives_the_same_plan():
    assert plan() == plan()


def test_thin_perp_book_fails_the_perp_book_check():
    p = plan(snap(perp_bids=((60_009.0, 0.004), (60_008.0, 0.004))))
    assert f"{PERP_ACC} book" in failed(p)
    assert "does NOT fill" in {c.name: c.detail for c in p.checks}[f"{PERP_ACC} book"]
    assert not any(name.startswith(SPOT_ACC) for name in failed(p))


def test_thin_spot_book_fails_the_spot_book_check():
    p = plan(snap(spot_asks=((60_001.0, 0.005),)))
    assert f"{SPOT_ACC} book" in failed(p)
    assert not any(name.startswith(PERP_ACC) for name in failed(p))


def test_wide_spread_fails_only_the_spread_check():
    # 20 bp wide: over the 10 bp limit, but half of it (10 bp) is under the 15 bp slippage limit
    p = plan(snap(spot_bids=((59_940.0, 5.0),), spot_asks=((60_060.0, 5.0),)))
    assert failed(p) == {f"{SPOT_ACC} spread"}


def test_slippage_over_the_limit_fails_only_the_slippage_check():
    # 0.001 BTC at the top, the rest 200 USDT higher: avg 60180.1, 30 bp over the mid
    p = plan(snap(spot_asks=((60_001.0, 0.001), (60_200.0, 5.0))))
    assert p.spot.slippage_bp > CFG.live_settings.max_slippage_bp
    assert failed(p) == {f"{SPOT_ACC} slippage"}


def test_spot_usdt_too_low_fails_only_the_spot_balance_check():
    assert failed(plan(snap(spot_quote_free=500.0))) == {"spot balance"}  # the buy costs about 600


def test_perp_free_too_low_fails_only_the_perp_balance_check():
    assert failed(plan(snap(perp_quote_free=150.0))) == {"perp balance"}  # margin 600 / 3x = 200


def test_size_above_max_position_fails_only_the_position_size_check():
    assert failed(plan(cfg=with_risk(max_position_btc=0.005))) == {"position size"}


def test_existing_short_counts_towards_max_position():
    s = snap(perp_qty=-0.995, perp_entry=60_000.0, perp_collateral=20_000.0, journal_perp=-0.995)
    assert "position size" in failed(plan(s, cfg=with_risk(max_position_btc=1.0)))
    assert "position size" not in failed(plan(s, qty=0.005, cfg=with_risk(max_position_btc=1.0)))


def test_notional_above_the_limit_fails_only_the_notional_check():
    assert failed(plan(cfg=with_risk(max_notional=500.0))) == {"notional"}  # 0.01 * 60010 = 600


def test_margin_buffer_under_the_floor_fails_only_the_margin_buffer_check():
    # at 3x the buffer is about 33%: a 40% floor refuses it
    assert failed(plan(cfg=with_risk(min_margin_buffer=0.40, topup_target_buffer=0.50))) == {"margin buffer"}


def test_funding_below_the_entry_threshold_fails_only_the_funding_check():
    p = plan(snap(funding_rate=0.00003, predicted_rate=0.00003))  # 3.3% APR < 6%
    assert failed(p) == {"funding"}


def test_negative_funding_fails_the_funding_check():
    assert failed(plan(snap(funding_rate=-0.0003, predicted_rate=-0.0003))) == {"funding"}


def test_a_negative_prediction_can_pull_a_high_current_rate_under_the_bar():
    assert failed(plan(snap(funding_rate=0.0003, predicted_rate=-0.0008))) == {"funding"}
    assert "funding" not in failed(plan(snap(funding_rate=0.0003, predicted_rate=0.00001)))  # one weak rate of three


def test_a_low_current_rate_fails_funding_unless_the_prediction_lifts_the_window():
    """The prediction is one rate of the strategy's window, the newest: a
    low current rate with a modest prediction still fails, a high enough
    prediction carries the window's mean over the bar."""
    assert failed(plan(snap(funding_rate=0.00001, predicted_rate=0.00005))) == {"funding"}
    assert "funding" not in failed(plan(snap(funding_rate=0.00001, predicted_rate=0.001)))


def test_without_a_predicted_rate_the_current_rate_decides():
    p = plan(snap(funding_rate=0.0003, predicted_rate=None))
    assert p.ok and p.predicted_apr is None


@given(st.floats(-0.001, 0.002), st.floats(-0.001, 0.002))
def test_the_prediction_counts_as_the_windows_newest_rate(current, predicted):
    both = plan(snap(funding_rate=current, predicted_rate=predicted))
    n = CFG.strategy.signal_settlements
    mean = (current * (n - 1) + predicted) / n
    alone = plan(snap(funding_rate=mean, predicted_rate=None))
    assert both.net_apr == pytest.approx(alone.net_apr, abs=1e-9)


# the 8-hourly rate at which the baseline's entry rule is on the edge, at the healthy snapshot's spot mid
EDGE_RATE = (CFG.strategy.entry_apr + round_trip_cost(CFG, 60_000.0) * 365.0 / CFG.strategy.expected_holding_days) * 8 / 8760


@given(st.one_of(st.floats(-0.001, 0.002), st.floats(0.7, 1.3).map(lambda f: f * EDGE_RATE)),
       st.one_of(st.none(), st.floats(-0.001, 0.002), st.floats(0.7, 1.3).map(lambda f: f * EDGE_RATE)))
def test_the_funding_check_is_the_backtest_strategys_entry_decision(rate, predicted):
    """Both sides fed the same funding (the rate settled over the signal's
    whole window, and the same prediction), also close to the entry edge:
    the pre-flight passes the funding check exactly when the strategy the
    backtest runs would enter."""
    p = plan(snap(funding_rate=rate, predicted_rate=predicted))
    price = p.spot.mid
    strategy = CarryStrategy(CFG.strategy, round_trip_cost(CFG, price), SPOT_ACC, PERP_ACC)
    for i in range(CFG.strategy.signal_settlements):
        strategy.signal.on_settlement((i + 1) * 8 * NS_PER_HOUR, rate, 8.0)
    strategy.signal.on_rate(predicted, 8.0)
    book = PositionBook.open(SPOT_ACC, PERP_ACC, 50_000.0, 30_000.0)
    book.spot.price, book.perp.price = price, MARK
    enters = bool(strategy.decide(book, price, 100 * 8 * NS_PER_HOUR))
    funding = {c.name: c.ok for c in p.checks}["funding"]
    assume(abs(p.net_apr - CFG.strategy.entry_apr) > 1e-12)  # on the edge itself the mean's rounding decides
    assert funding == enters


@pytest.mark.parametrize("factor", [0.999, 1.001])
def test_the_funding_checks_edge_is_the_backtests_round_trip_amortised(factor):
    """Just under the edge of the backtest's entry rule (its round trip:
    fees, half spread, impact and transfers) the check fails, just over it
    passes."""
    p = plan(snap(funding_rate=EDGE_RATE * factor, predicted_rate=None))
    assert {c.name: c.ok for c in p.checks}["funding"] is (factor > 1)


def test_funding_apr_is_the_rate_annualised_over_the_interval():
    p = plan(snap(funding_rate=0.0001, predicted_rate=0.0002, interval_hours=4.0))
    assert p.funding_apr == pytest.approx(0.0001 * 365 * 24 / 4)
    assert p.predicted_apr == pytest.approx(0.0002 * 365 * 24 / 4)


def test_qty_under_the_minimum_notional_fails_only_lot_and_notional():
    p = plan(qty=0.001)  # 60 USDT on the perp, minimum 100; the spot minimum is 5
    assert failed(p) == {f"{PERP_ACC} lot and notional"}
    detail = {c.name: c.detail for c in p.checks}[f"{PERP_ACC} lot and notional"]
    assert "100.00" in detail


def test_qty_off_the_lot_fails_lot_and_notional_of_the_coarser_market():
    assert failed(plan(qty=0.0105)) == {f"{PERP_ACC} lot and notional"}


def test_blocked_entries_fail_an_open():
    p = plan(blocked="naked leg")
    assert failed(p) == {"entries"}
    assert "naked leg" in p.failed[0].detail and "`fundarb reconcile`" in p.failed[0].detail


def test_an_entry_refused_under_the_kill_switch_names_resume_which_lifts_it():
    p = plan(blocked="kill switch: manual")
    assert failed(p) == {"entries"}
    assert "`fundarb resume" in p.failed[0].detail and "reconcile" not in p.failed[0].detail


# --- margin, leverage and funding numbers --------------------------------------------------

@pytest.mark.parametrize("venue_leverage, used", [(2.0, 2.0), (3.0, 3.0), (10.0, 3.0)])
def test_margin_buffer_matches_liquidation_price_with_notional_over_venue_leverage(venue_leverage, used):
    p = plan(snap(perp_leverage=venue_leverage))
    price = HEALTHY.perp_bids[0][0]  # 0.01 BTC fills at the best bid
    liq = liquidation_price(0.01 * price / used, -0.01, price)
    assert liq == RULE.liquidation_price(0.01 * price / used, -0.01, price, ISOLATED)
    assert p.venue_leverage == used
    assert p.liquidation_after == pytest.approx(liq, rel=1e-12)
    assert p.buffer_after == pytest.approx((liq - MARK) / MARK, rel=1e-12)


def test_margin_buffer_of_an_addition_to_an_existing_short():
    s = snap(perp_qty=-0.5, perp_entry=58_000.0, perp_collateral=10_000.0, journal_perp=-0.5)
    p = plan(s)
    price = 60_009.0
    entry = (0.5 * 58_000.0 + 0.01 * price) / 0.51
    liq = liquidation_price(10_000.0 + 0.01 * price / 3.0, -0.51, entry)
    assert 0.51 * liq < 50_000  # bracket 1 at the liquidation price as at entry
    assert p.liquidation_after == pytest.approx(liq, rel=1e-12)
    assert p.buffer_after == pytest.approx((liq - MARK) / MARK, rel=1e-12)


def test_the_liquidation_after_the_trade_takes_the_bracket_at_the_liquidation_price():
    # 0.81 BTC short after the trade: 48,600 at entry (bracket 1), but its liquidation notional is
    # over 50,000, so bracket 2's 0.5% and maintenance amount 50 set the price
    s = snap(perp_qty=-0.8, perp_entry=60_000.0, perp_collateral=20_000.0, journal_perp=-0.8)
    p = plan(s)
    price = 60_009.0
    entry = (0.8 * 60_000.0 + 0.01 * price) / 0.81
    collateral = 20_000.0 + 0.01 * price / 3.0
    assert 0.81 * entry < 50_000 <= 0.81 * p.liquidation_after
    assert p.liquidation_after == pytest.approx((collateral + 50.0 + 0.81 * entry) / (0.81 * 1.005), rel=1e-12)
    assert p.liquidation_after != pytest.approx((collateral + 0.81 * entry) / (0.81 * 1.004), rel=1e-6)


def test_an_unmodelled_perp_venue_fails_the_margin_check_of_an_open_and_not_a_close():
    s = snap(margin=shipped_rule("bitmex", "BTC/USD:BTC"), perp_qty=-0.5, perp_entry=60_000.0,
             perp_collateral=10_000.0, journal_perp=-0.5, journal_spot=0.5, spot_base_free=0.5)
    opening = plan(s)
    (check,) = [c for c in opening.checks if c.name == "margin buffer"]
    assert not check.ok and check.detail == ("no liquidation price: liquidation rule of bitmex BTC/USD:BTC is not "
                                             "modelled (modelled: binancecoinm BTC/USD:BTC, binanceusdm BTC/USDT:USDT, "
                                             "bybit BTC/USD:BTC, bybit BTC/USDT:USDT, hyperliquid BTC/USDC:USDC)")
    closing = plan(s, kind="close", qty=0.2)  # 0.3 BTC left short: a close is never held back by it
    assert closing.ok and math.isnan(closing.liquidation_after)


def test_leverage_after_is_the_short_notional_over_equity_less_the_fee():
    s = snap(perp_qty=-0.5, perp_entry=58_000.0, perp_collateral=10_000.0, perp_equity=12_000.0)
    p = plan(s)
    fee = 0.0005 * 0.01 * 60_009.0
    assert p.leverage_after == pytest.approx(0.51 * MARK / (12_000.0 - fee), rel=1e-12)


def test_leverage_over_the_limit_fails_the_leverage_check():
    s = snap(perp_qty=-0.5, perp_entry=60_000.0, perp_collateral=15_000.0, perp_equity=9_000.0)
    assert "leverage" in failed(plan(s))  # 0.51 * 60010 / 9000 = 3.4x


@given(st.floats(-0.003, 0.003), st.floats(-2.0, 0.0), st.integers(1, 100))
def test_expected_funding_per_settlement_is_minus_position_times_mark_times_rate(rate, held, lots):
    qty = lots / 1000
    p = plan(snap(funding_rate=rate, predicted_rate=None, perp_qty=held, perp_entry=60_000.0,
                  perp_collateral=abs(held) * 20_000.0, journal_perp=held), qty=qty)
    assert p.funding_per_settlement == pytest.approx(-(held - qty) * MARK * rate, rel=1e-9, abs=1e-12)


def test_a_short_receives_positive_funding():
    assert plan().funding_per_settlement == pytest.approx(0.01 * MARK * 0.0003)


# --- closing ----------------------------------------------------------------------------

HELD = snap(perp_qty=-0.01, perp_entry=60_000.0, perp_collateral=200.0, journal_perp=-0.01,
            journal_spot=0.01, spot_base_free=0.01)


def test_close_checks_holdings_and_not_funding_or_balances():
    p = plan(HELD, kind="close")
    names = {c.name for c in p.checks}
    assert {"spot holding", "perp short"} <= names
    assert names.isdisjoint({"funding", "spot balance", "perp balance", "position size", "entries"})
    assert p.ok
    assert (p.spot.side, p.perp.side) == (Side.SELL, Side.BUY)
    assert (p.spot.price, p.perp.price) == (59_999.0, 60_011.0)


def test_close_is_not_stopped_by_blocked_entries():
    p = plan(HELD, kind="close", blocked="naked leg")
    assert p.ok and "entries" not in {c.name for c in p.checks}


def test_close_more_spot_than_the_journal_holds_fails_spot_holding():
    assert failed(plan(attrs.evolve(HELD, journal_spot=0.005), kind="close")) == {"spot holding"}


def test_close_more_spot_than_the_venue_has_free_fails_spot_holding():
    assert failed(plan(attrs.evolve(HELD, spot_base_free=0.005), kind="close")) == {"spot holding"}


def test_close_more_than_the_venue_short_fails_perp_short():
    assert failed(plan(attrs.evolve(HELD, perp_qty=-0.005), kind="close")) == {"perp short"}


def test_close_more_than_the_journal_short_fails_perp_short():
    assert failed(plan(attrs.evolve(HELD, journal_perp=-0.005), kind="close")) == {"perp short"}


def test_close_with_a_smaller_spot_leg_sells_that_amount():
    p = plan(attrs.evolve(HELD, journal_spot=0.00999, spot_base_free=0.00999), kind="close", spot_qty=0.00999)
    assert (p.spot.qty, p.perp.qty) == (0.00999, 0.01)
    assert "spot holding" not in failed(p)


def test_closing_everything_leaves_no_funding_and_no_liquidation():
    p = plan(HELD, kind="close")
    assert p.funding_per_settlement == 0.0
    assert p.buffer_after == math.inf


def test_close_of_a_lone_spot_leg_plans_the_spot_sale():
    # the perp short is already gone (a naked spot leg): closing everything sells the spot only
    s = attrs.evolve(HELD, perp_qty=0.0, perp_entry=0.0, perp_collateral=0.0, journal_perp=0.0)
    p = plan(s, kind="close", qty=0.0, spot_qty=0.01)
    assert p.spot.qty == 0.01 and p.spot.price == 59_999.0
    assert "spot holding" not in failed(p)


# --- walk -------------------------------------------------------------------------------

LEVELS = ((100.0, 1.0), (101.0, 1.0), (102.0, 2.0))


def test_walk_within_the_first_level_is_its_price():
    assert walk(LEVELS, 0.5) == 100.0


def test_walk_averages_across_levels():
    assert walk(LEVELS, 1.5) == pytest.approx((1.0 * 100 + 0.5 * 101) / 1.5)
    assert walk(LEVELS, 4.0) == pytest.approx((100 + 101 + 2 * 102) / 4.0)


def test_walk_returns_nan_when_the_book_is_too_thin():
    assert math.isnan(walk(LEVELS, 4.01))
    assert math.isnan(walk((), 1.0))


level_lists = st.lists(st.tuples(st.floats(1.0, 1e5), st.floats(0.001, 10.0)), min_size=1, max_size=10)


@given(level_lists, st.floats(0.001, 20.0))
def test_walk_is_between_the_best_and_worst_price_taken_or_nan(levels, qty):
    asks = tuple(sorted(levels))
    avg = walk(asks, qty)
    depth = sum(s for _, s in asks)
    if qty > depth + 1e-9:
        assert math.isnan(avg)
    elif qty < depth - 1e-9:
        assert asks[0][0] * (1 - 1e-12) <= avg <= asks[-1][0] * (1 + 1e-12)


@given(level_lists, st.floats(0.001, 10.0), st.floats(0.001, 10.0))
def test_walk_of_asks_never_improves_with_size(levels, q1, q2):
    asks = tuple(sorted(levels))
    small, large = walk(asks, min(q1, q2)), walk(asks, max(q1, q2))
    if not math.isnan(large):
        assert small <= large * (1 + 1e-12)
