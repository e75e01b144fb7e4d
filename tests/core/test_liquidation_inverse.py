"""Inverse (coin-margined) liquidation rules and unified-margin collateral
(``fundarb.core.liquidation``): the margin equals the maintenance margin at
every liquidation price, the venues' published formulas worked by hand, the
infinite buffer of a covered short, and the tiered collateral value."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from fundarb.core.liquidation import (
    BINANCE_COINM,
    BYBIT_INVERSE,
    CROSS,
    ISOLATED,
    MarginRule,
    MarginTier,
    NotionalBeyondTiers,
    collateral_value,
)
from fundarb.data.margin_tiers import SHIPPED_FILE, rule_from_ccxt_tiers, shipped_rule

INVERSE = "BTC/USD:BTC"
PERP = "BTC/USDT:USDT"
COINM = shipped_rule("binancecoinm", INVERSE)
BYBIT_INV = shipped_rule("bybit", INVERSE)
BINANCE = shipped_rule("binanceusdm", PERP)
BYBIT = shipped_rule("bybit", PERP)


def _tiers(rows: list[tuple[float, float, float]]) -> list[MarginTier]:
    """Tiers (floor, cap, mmr) with the maintenance amount worked by the cum rule
    written out here: cum_n = floor_n * (mmr_n - mmr_n-1) + cum_n-1, cum_1 = 0."""
    out: list[MarginTier] = []
    for floor, cap, mmr in rows:
        cum = floor * (mmr - out[-1].mmr) + out[-1].amount if out else 0.0
        out.append(MarginTier(floor, cap, mmr, cum, 20.0))
    return out


# a coin-margined table of several brackets (BTC), to make the bracket search work
LADDER = _tiers([(0, 5, 0.004), (5, 10, 0.005), (10, 20, 0.01), (20, 50, 0.025)])
COINM_LADDER = MarginRule("binancecoinm", "XYZ/USD:XYZ", LADDER, BINANCE_COINM)
BYBIT_LADDER = MarginRule("bybit", "XYZ/USD:XYZ", LADDER, BYBIT_INVERSE)
INVERSE_RULES = [COINM, BYBIT_INV, COINM_LADDER, BYBIT_LADDER]


def margin(wallet: float, face: float, entry: float, price: float) -> float:
    """An inverse position's margin in the coin at ``price``: WB + face * (1/EP - 1/P)."""
    return wallet + face * (1.0 / entry - 1.0 / price)


def mm_inverse(rule: MarginRule, face: float, price: float) -> float:
    """(|face| / price) * mmr - amount, the tier found here by the coin notional."""
    n = abs(face) / price
    (t,) = [t for t in rule.tiers if t.floor <= n < t.cap]
    return n * t.mmr - t.amount


def inverse_positions():
    """(face, entry, wallet): a position of 0.001 .. 19 BTC at entry (so the coin notional at
    any liquidation price stays inside every table here) and a wallet of 2% .. 150% of it."""
    return st.tuples(st.floats(0.001, 19.0), st.floats(1_000.0, 200_000.0), st.sampled_from([-1.0, 1.0]),
                     st.floats(0.02, 1.5)).map(lambda t: (t[2] * t[0] * t[1], t[1], t[3] * t[0]))


# --- the shipped inverse tables ----------------------------------------------------------

def test_the_shipped_inverse_markets_are_the_transcribed_coin_tiers():
    assert (COINM.style, BYBIT_INV.style) == (BINANCE_COINM, BYBIT_INVERSE)
    assert COINM.inverse and BYBIT_INV.inverse and not BINANCE.inverse and not BYBIT.inverse
    # Binance API docs, GET /dapi/v2/leverageBracket, BTCUSD_PERP bracket 1
    assert [(t.floor, t.cap, t.mmr, t.amount, t.max_leverage) for t in COINM.tiers] == [(0, 50, 0.004, 0, 125)]
    # Bybit "Risk Limit (Inverse Contract)": base value 150 BTC, base maintenance margin rate 0.5%
    assert [(t.floor, t.cap, t.mmr, t.amount, t.max_leverage) for t in BYBIT_INV.tiers] == [(0, 150, 0.005, 0, 100)]
    doc = json.loads(SHIPPED_FILE.read_text())
    assert "not fetched" in doc["source"] and "/dapi/v2/leverageBracket" in doc["source"]
    assert "Risk Limit (Inverse Contract)" in doc["source"]
    notes = {(m["venue"], m["symbol"]): m for m in doc["markets"]}
    assert notes[("binancecoinm", INVERSE)]["venue_symbol"] == "BTCUSD_PERP"
    assert notes[("bybit", INVERSE)]["venue_symbol"] == "BTCUSD"
    assert "above 50 is an error" in notes[("binancecoinm", INVERSE)]["note"]
    # the linear markets are still there, unchanged in style
    assert BINANCE.style == "binance_usdm" and BYBIT.style == "bybit_linear"


def test_inverse_maintenance_margin_is_in_the_coin_by_the_coin_notional():
    # 60,000 USD face at 50,000 is 1.2 BTC: 0.5% of it on Bybit, 0.4% on Binance
    assert BYBIT_INV.maintenance_margin(-60_000.0, 50_000.0) == pytest.approx(1.2 * 0.005, rel=1e-15)
    assert COINM.maintenance_margin(60_000.0, 50_000.0) == pytest.approx(1.2 * 0.004, rel=1e-15)
    # Bybit isolated values it at entry, cross at the mark
    assert BYBIT_INV.maintenance_for(-60_000.0, 50_000.0, 40_000.0, ISOLATED) == pytest.approx(1.2 * 0.005)
    assert BYBIT_INV.maintenance_for(-60_000.0, 50_000.0, 40_000.0, CROSS) == pytest.approx(1.5 * 0.005)
    # 3,000,000 USD at 50,000 is 60 BTC: beyond Binance's shipped bracket 1 (cap 50 BTC)
    with pytest.raises(NotionalBeyondTiers, match=r"binancecoinm BTC/USD:BTC: notional 60\.00 is beyond"):
        COINM.maintenance_margin(-3_000_000.0, 50_000.0)
    with pytest.raises(ValueError, match="price > 0"):
        COINM.maintenance_margin(-1_000.0, 0.0)


# --- the venues' formulas worked by hand ---------------------------------------------------

def test_bybit_help_center_isolated_inverse_short_60000_usd_at_50000_10x():
    # Bybit help center, inverse isolated: a 60,000 USD short at 50,000 with 10x, MMR 0.5%, no extra margin.
    # Position Value = Q / EP, IM = PV / 10, MM = PV * 0.5% - 0; LP_short = Q / [PV - (IM - MM)]
    q, ep = 60_000.0, 50_000.0
    pv = q / ep
    im = pv / 10
    mm = pv * 0.005
    want = q / (pv - (im - mm))
    lp = BYBIT_INV.liquidation_price(im, -q, ep, ISOLATED)
    assert lp == pytest.approx(want, rel=1e-12)
    assert round(lp, 2) == 55_248.62  # 60,000 / (1.2 - 0.114) = 60,000 / 1.086
    # the long the same way: LP_long = Q / [PV + (IM - MM)] = 60,000 / 1.314
    assert BYBIT_INV.liquidation_price(im, q, ep, ISOLATED) == pytest.approx(q / (pv + (im - mm)), rel=1e-12)
    assert round(BYBIT_INV.liquidation_price(im, q, ep, ISOLATED), 2) == 45_662.10


def test_binance_coinm_formula_worked_by_hand():
    # Binance COIN-M, one position: LP = (B*MMR + side*B) / (WB + cum + side*B/EP).
    # A 1,000 USD short at 50,000 (0.02 BTC) with 0.01 BTC: (4 - 1,000) / (0.01 - 0.02) = 99,600;
    # by hand from the margin: 0.01 - 1,000 * (1/50,000 - 1/P) = 0.004 * 1,000 / P  <=>  P = 996 / 0.01
    assert COINM.liquidation_price(0.01, -1_000.0, 50_000.0, CROSS) == pytest.approx(99_600.0, rel=1e-12)
    # a 1,000 USD long at 50,000 with 0.01 BTC: (4 + 1,000) / (0.01 + 0.02) = 33,466.67
    assert COINM.liquidation_price(0.01, 1_000.0, 50_000.0, ISOLATED) == pytest.approx(1_004.0 / 0.03, rel=1e-12)
    # Bybit cross: the same shape, MM at the mark (0.5%)
    assert BYBIT_INV.liquidation_price(0.01, -1_000.0, 50_000.0, CROSS) == pytest.approx(995.0 / 0.01, rel=1e-12)


def test_the_coinm_bracket_is_the_one_at_the_liquidation_price():
    # LADDER: 0-5 BTC 0.4% cum 0; 5-10 0.5% cum 0.005; 10-20 1% cum 0.055. A 6 BTC short (300,000 USD at
    # 50,000) with 1 BTC: bracket 2's formula gives (1,500 - 300,000) / (1 + 0.005 - 6) = 59,759.76,
    # a coin notional of 5.02 BTC (bracket 2: consistent); bracket 1's would give 59,831.7 (wrong)
    right = (300_000 * 0.005 - 300_000) / (1.0 + 0.005 - 6.0)
    wrong = (300_000 * 0.004 - 300_000) / (1.0 + 0.0 - 6.0)
    assert 5 <= 300_000 / right < 10 and right != pytest.approx(wrong, rel=1e-6)
    assert COINM_LADDER.liquidation_price(1.0, -300_000.0, 50_000.0, CROSS) == pytest.approx(right, rel=1e-12)
    # a long the other way: 3 BTC (150,000 USD) at 50,000 with 3 BTC liquidates at a coin notional near
    # 5.98 BTC (bracket 2): (150,000 * 1.005) / (3 + 0.005 + 3)
    lp = COINM_LADDER.liquidation_price(3.0, 150_000.0, 50_000.0, CROSS)
    assert lp == pytest.approx(150_000 * 1.005 / 6.005, rel=1e-12) and 5 <= 150_000 / lp < 10


# --- invariants of the inverse rules ------------------------------------------------------

@given(inverse_positions(), st.sampled_from(INVERSE_RULES), st.sampled_from([CROSS, ISOLATED]))
def test_inverse_margin_at_the_liquidation_price_is_the_maintenance_margin(pos, rule, mode):
    face, entry, wallet = pos
    lp = rule.liquidation_price(wallet, face, entry, mode)
    assume(math.isfinite(lp) and lp < 100 * entry)  # a short's buffer not so thin in the coin that MM is rounding
    assert lp > 0
    at = entry if rule.style == BYBIT_INVERSE and mode == ISOLATED else lp
    mm = mm_inverse(rule, face, at)
    assert abs(margin(wallet, face, entry, lp) - mm) <= 1e-9 * mm
    # and the round trip: the wallet that puts the liquidation at lp is the wallet
    assert rule.wallet_for(lp, face, entry, mode) == pytest.approx(wallet, rel=1e-9)


@given(inverse_positions(), st.sampled_from(INVERSE_RULES), st.sampled_from([CROSS, ISOLATED]))
def test_an_inverse_liquidation_is_on_the_losing_side_and_inf_only_when_no_rise_liquidates(pos, rule, mode):
    face, entry, wallet = pos
    lp = rule.liquidation_price(wallet, face, entry, mode)
    if face > 0:
        assert 0 < lp < entry
        return
    assert lp > entry
    if math.isinf(lp):  # the margin stays above maintenance however high the mark goes
        at_entry = rule.style == BYBIT_INVERSE and mode == ISOLATED
        for k in (1.0, 2.0, 10.0, 1e3, 1e6, 1e12):
            price = entry * k
            assert margin(wallet, face, entry, price) >= mm_inverse(rule, face, entry if at_entry else price) - 1e-12


@pytest.mark.parametrize(("rule", "mode"), [(COINM, CROSS), (COINM, ISOLATED), (BYBIT_INV, CROSS)])
@given(btc=st.floats(0.001, 45.0), entry=st.floats(1_000.0, 200_000.0), short=st.floats(1e-6, 0.98))
def test_a_1x_short_covered_by_its_own_btc_has_no_liquidation_price(rule, mode, btc, entry, short):
    face = btc * entry  # up to 45 BTC at entry: the notional at any liquidation price is inside the tables
    covered = face / entry  # 1x: the BTC the face is worth at entry
    assert rule.liquidation_price(covered, -face, entry, mode) == math.inf
    assert rule.liquidation_price(covered * 1.5, -face, entry, mode) == math.inf
    # with less, a finite price above the entry
    lp = rule.liquidation_price(covered * (1 - short), -face, entry, mode)
    assert entry < lp < math.inf


@pytest.mark.parametrize("rule", [COINM, BYBIT_INV, COINM_LADDER, BYBIT_LADDER])
@pytest.mark.parametrize("mode", [CROSS, ISOLATED])
@given(pos=inverse_positions(), more=st.floats(0.0, 1.0))
def test_more_wallet_never_moves_an_inverse_short_down_nor_a_long_up(rule, mode, pos, more):
    face, entry, wallet = pos
    extra = wallet + more * max(1.5 * abs(face) / entry - wallet, 0.0)  # up to 150% of the position
    before = rule.liquidation_price(wallet, face, entry, mode)
    after = rule.liquidation_price(extra, face, entry, mode)
    if face < 0:
        assert after >= before  # the buffer (LP / mark - 1) grows with the wallet, up to inf
    else:
        assert after <= before


def test_an_inverse_long_whose_liquidation_notional_is_beyond_the_table_is_an_error():
    # 1,000,000 USD long at 50,000 (20 BTC) with 40 BTC: LP = 1,004,000 / 60 = 16,733, i.e. 59.8 BTC > 50
    with pytest.raises(NotionalBeyondTiers, match=r"binancecoinm BTC/USD:BTC: the coin notional at the "
                                                  r"liquidation price, 59\.7610, is beyond"):
        COINM.liquidation_price(40.0, 1_000_000.0, 50_000.0, CROSS)


def test_no_inverse_position_is_nan_and_collateral_is_refused_on_an_inverse_rule():
    for rule in (COINM, BYBIT_INV):
        for mode in (CROSS, ISOLATED):
            assert math.isnan(rule.liquidation_price(1.0, 0.0, 50_000.0, mode))
            assert math.isnan(rule.wallet_for(60_000.0, 0.0, 50_000.0, mode))
        with pytest.raises(ValueError, match="collateral counts only for a linear perp"):
            rule.liquidation_price(1.0, -1_000.0, 50_000.0, CROSS, collateral=0.5)
        with pytest.raises(ValueError, match="collateral counts only for a linear perp"):
            rule.wallet_for(60_000.0, -1_000.0, 50_000.0, CROSS, collateral=0.5)


# --- unified collateral on linear rules --------------------------------------------------------

def linear_positions():
    """(qty, entry, wallet): up to 50,000 USDT of BTC, a wallet of 2% .. 150% of it."""
    return st.tuples(st.floats(100.0, 50_000.0), st.floats(1_000.0, 200_000.0), st.sampled_from([-1.0, 1.0]),
                     st.floats(0.02, 1.5)).map(lambda t: (t[2] * t[0] / t[1], t[1], t[3] * t[0]))


def unified_equity(wallet: float, coll: float, qty: float, entry: float, price: float) -> float:
    return wallet + coll * price + qty * (price - entry)


@given(linear_positions(), st.floats(0.0, 0.9), st.sampled_from([BINANCE, BYBIT]))
def test_unified_equity_at_the_liquidation_price_is_the_maintenance_margin(pos, share, rule):
    qty, entry, wallet = pos
    coll = share * abs(qty)
    lp = rule.liquidation_price(wallet, qty, entry, CROSS, collateral=coll)
    assume(lp > 0.01 * entry)  # not within 1% of zero (a long floored there): MM is not lost in rounding
    n = abs(qty) * lp
    (t,) = [t for t in rule.tiers if t.floor <= n < t.cap]
    mm = n * t.mmr - t.amount
    assert abs(unified_equity(wallet, coll, qty, entry, lp) - mm) <= 1e-9 * mm
    assert rule.wallet_for(lp, qty, entry, CROSS, collateral=coll) == pytest.approx(wallet, rel=1e-9)


@given(linear_positions(), st.sampled_from([BINANCE, BYBIT]))
def test_zero_collateral_is_the_cross_rule_of_before(pos, rule):
    qty, entry, wallet = pos
    lp = rule.liquidation_price(wallet, qty, entry, CROSS, collateral=0.0)
    assert lp == rule.liquidation_price(wallet, qty, entry, CROSS)
    assume(lp > 0.01 * entry)
    # the venue's cross formula, the tier of the notional at lp: (WB + cum - side*Q*EP) / (Q*MMR - side*Q)
    t = rule.tier(abs(qty) * lp)
    side = 1.0 if qty > 0 else -1.0
    want = (wallet + t.amount - side * abs(qty) * entry) / (abs(qty) * t.mmr - side * abs(qty))
    assert lp == pytest.approx(want, rel=1e-12)
    assert rule.wallet_for(lp, qty, entry, CROSS, collateral=0.0) == rule.wallet_for(lp, qty, entry, CROSS)


@given(linear_positions(), st.floats(0.0, 0.9), st.floats(0.0, 0.9), st.sampled_from([BINANCE, BYBIT]))
def test_more_collateral_never_lowers_a_short_nor_raises_a_long(pos, a, b, rule):
    qty, entry, wallet = pos
    lo, hi = sorted((a, b))
    before = rule.liquidation_price(wallet, qty, entry, CROSS, collateral=lo * abs(qty))
    after = rule.liquidation_price(wallet, qty, entry, CROSS, collateral=hi * abs(qty))
    if qty < 0:
        assert after >= before
    else:
        assert after <= before


@given(qty=st.floats(0.001, 5.0), entry=st.floats(1_000.0, 200_000.0), wallet=st.floats(0.0, 1e5),
       over=st.floats(1e-6, 1.0), rule=st.sampled_from([BINANCE, BYBIT]))
def test_a_short_whose_collateral_outgrows_loss_and_maintenance_in_every_tier_is_never_liquidated(
        qty, entry, wallet, over, rule):
    top = max(t.mmr for t in rule.tiers)
    coll = qty * (1 + top) * (1 + over)  # denominator Q*mmr + Q - C <= 0 in every tier
    assert rule.liquidation_price(wallet, -qty, entry, CROSS, collateral=coll) == math.inf


def test_a_short_covered_in_the_low_tiers_but_not_the_high_ones_liquidates_in_the_high_one():
    # 0.1 BTC short at 60,000, 1,000 USDT wallet, 0.1008 BTC collateral: h = MM - equity falls while
    # mmr < 0.8% (tiers 1-3) and rises in tier 4 (1%, cum 11,450): equity = MM there at
    # P = (1,000 + 11,450 + 0.1 * 60,000) / (0.1 * 0.01 + 0.1 - 0.1008)
    want = (1_000.0 + 11_450.0 + 6_000.0) / (0.001 + 0.1 - 0.1008)
    assert 3_000_000 <= 0.1 * want < 12_000_000  # tier 4 holds it
    lp = BINANCE.liquidation_price(1_000.0, -0.1, 60_000.0, CROSS, collateral=0.1008)
    assert lp == pytest.approx(want, rel=1e-12)
    # and it is the first such price: equity above MM on the way up
    for k in range(1, 200):
        price = 60_000.0 + (lp - 60_000.0) * k / 200
        assert unified_equity(1_000.0, 0.1008, -0.1, 60_000.0, price) > BINANCE.maintenance_margin(-0.1, price)


def test_collateral_is_refused_outside_a_cross_account_and_when_negative():
    with pytest.raises(ValueError, match="collateral counts only in a cross"):
        BINANCE.liquidation_price(1_000.0, -0.1, 60_000.0, ISOLATED, collateral=0.1)
    with pytest.raises(ValueError, match="collateral counts only in a cross"):
        BYBIT.wallet_for(70_000.0, -0.1, 60_000.0, ISOLATED, collateral=0.1)
    with pytest.raises(ValueError, match="finite BTC quantity"):
        BYBIT.liquidation_price(1_000.0, -0.1, 60_000.0, CROSS, collateral=-0.1)
    # 0 is every mode's default
    assert BYBIT.liquidation_price(400.0, 1.0, 20_000.0, ISOLATED, collateral=0.0) == pytest.approx(19_700.0)


# --- tiered collateral value -------------------------------------------------------------------

# Bybit help center worked example: BTC 0-10: 0.98, 10-20: 0.95, 20-30: 0.90, 30-40: 0.85, 40-50: 0.80, above 50: 0
BYBIT_BTC = ((10.0, 0.98), (20.0, 0.95), (30.0, 0.90), (40.0, 0.85), (50.0, 0.80), (math.inf, 0.0))


def test_collateral_value_counts_each_slice_at_its_tiers_ratio():
    assert collateral_value(15.0, BYBIT_BTC) == pytest.approx(10 * 0.98 + 5 * 0.95, rel=1e-15)
    assert collateral_value(5.0, BYBIT_BTC) == pytest.approx(5 * 0.98, rel=1e-15)
    assert collateral_value(45.0, BYBIT_BTC) == pytest.approx(10 * (0.98 + 0.95 + 0.90 + 0.85) + 5 * 0.80, rel=1e-15)
    assert collateral_value(80.0, BYBIT_BTC) == collateral_value(50.0, BYBIT_BTC)  # nothing above 50
    assert collateral_value(0.0, BYBIT_BTC) == 0.0 and collateral_value(-3.0, BYBIT_BTC) == 0.0
    # beyond a finite last cap nothing counts either
    assert collateral_value(12.0, ((10.0, 0.5),)) == pytest.approx(5.0)


@given(a=st.floats(-5.0, 100.0), b=st.floats(-5.0, 100.0))
def test_collateral_value_is_monotone_and_never_more_than_the_quantity(a, b):
    lo, hi = sorted((a, b))
    assert collateral_value(lo, BYBIT_BTC) <= collateral_value(hi, BYBIT_BTC)
    assert 0.0 <= collateral_value(hi, BYBIT_BTC) <= max(hi, 0.0)


@given(q=st.floats(0.0, 60.0), d=st.floats(0.0, 1.0))
def test_collateral_value_grows_at_the_ratio_of_the_tier_it_is_in(q, d):
    caps = [0.0] + [c for c, _ in BYBIT_BTC]
    i = next(k for k in range(len(BYBIT_BTC)) if q < caps[k + 1])
    assume(q + d <= caps[i + 1])  # the step stays inside the tier
    step = collateral_value(q + d, BYBIT_BTC) - collateral_value(q, BYBIT_BTC)
    assert step == pytest.approx(d * BYBIT_BTC[i][1], abs=1e-12)


@pytest.mark.parametrize(("tiers", "message"), [
    (((10.0, 0.98), (5.0, 0.95)), r"tier 2 \(up to 5\.0, ratio 0\.95\): its cap must be above 10\.0"),
    (((10.0, 1.2),), r"tier 1 \(up to 10\.0, ratio 1\.2\): the ratio must be in \[0, 1\]"),
    (((10.0, 0.9), (20.0, -0.1)), r"tier 2 .*the ratio must be in \[0, 1\]"),
    (((math.inf, 0.9), (20.0, 0.5)), r"tier 1 .*only the last tier may be unbounded"),
    (((0.0, 0.9),), r"tier 1 .*its cap must be above 0"),
    ((), "none given"),
])
def test_bad_collateral_tiers_are_refused_naming_the_tier(tiers, message):
    with pytest.raises(ValueError, match=message):
        collateral_value(1.0, tiers)


# --- tiers from the venue at run time ---------------------------------------------------------

def test_rule_from_ccxt_tiers_gives_the_inverse_styles_for_coin_settled_symbols():
    # what ccxt makes of Bybit's /v5/market/risk-limit for BTCUSD: riskLimitValue in BTC, mmDeduction empty
    rows = [{"minNotional": 0.0, "maxNotional": 150.0, "maintenanceMarginRate": 0.005, "maxLeverage": 100.0,
             "info": {"id": 1, "mmDeduction": ""}},
            {"minNotional": 150.0, "maxNotional": 300.0, "maintenanceMarginRate": 0.01, "maxLeverage": 50.0,
             "info": {"id": 2, "mmDeduction": ""}}]
    rule = rule_from_ccxt_tiers("bybit", INVERSE, rows)
    assert rule.style == BYBIT_INVERSE and rule.inverse
    assert rule.tiers[1].amount == pytest.approx(150 * (0.01 - 0.005))
    assert rule_from_ccxt_tiers("bybit", PERP, rows).style == "bybit_linear"
    # Binance COIN-M brackets: qtyFloor/qtyCap (BTC) and cum, as ccxt passes them on
    brackets = [{"tier": 1, "minNotional": 0.0, "maxNotional": 50.0, "maintenanceMarginRate": 0.004,
                 "maxLeverage": 125.0, "info": {"bracket": 1, "qtyFloor": 0, "qtyCap": 50, "cum": 0.0}}]
    rule = rule_from_ccxt_tiers("binancecoinm", INVERSE, brackets)
    assert rule.style == BINANCE_COINM and rule.tiers == COINM.tiers
