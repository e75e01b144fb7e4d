"""Hyperliquid's liquidation rule (style ``hyperliquid`` of ``fundarb.core.liquidation``),
as the venue's docs state it: maintenance margin is half the initial margin at
the tier's max leverage (BTC 40x: l = 1.25%), and

    liq_price = price - side * margin_available / position_size / (1 - l * side),
    margin_available = isolated margin (cross: account value) - maintenance margin.

Checked against cases worked by hand, against its definition (the margin plus
the PnL at the liquidation price is the maintenance margin there), against the
Binance-shaped formula solving the same equation, and for its shape."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from fundarb.core.liquidation import (
    BINANCE_USDM,
    CROSS,
    HYPERLIQUID,
    ISOLATED,
    MarginRule,
    MarginTier,
    NotionalBeyondTiers,
)
from fundarb.data.margin_tiers import SHIPPED_FILE, is_modelled, shipped_rule, style_for

SYM = "BTC/USDC:USDC"
RULE = shipped_rule("hyperliquid", SYM)
L1, L2 = 1 / (2 * 40), 1 / (2 * 20)
# the venue's mainnet BTC table written out: 0-150M at 40x, above at 20x (deduction by its rule: 150M * (l2 - l1));
# the second tier's cap is made up for the test (the venue's has none)
TIERED = MarginRule("hyperliquid", SYM, (MarginTier(0, 150e6, L1, 0, 40),
                                         MarginTier(150e6, 600e6, L2, 150e6 * (L2 - L1), 20)), HYPERLIQUID)


def equity(wallet: float, qty: float, entry: float, price: float) -> float:
    return wallet + qty * (price - entry)


def test_the_shipped_rule_is_btcs_first_tier_from_the_venues_docs():
    assert (RULE.style, is_modelled("hyperliquid"), style_for("hyperliquid", SYM)) == (HYPERLIQUID, True, HYPERLIQUID)
    assert [(t.floor, t.cap, t.mmr, t.amount, t.max_leverage) for t in RULE.tiers] == [(0, 150_000_000, 0.0125, 0, 40)]
    (market,) = [m for m in json.loads(SHIPPED_FILE.read_text())["markets"] if m["venue"] == "hyperliquid"]
    assert "Margin tiers" in market["note"] and "Liquidations" in market["note"]


def test_a_long_and_a_short_worked_by_hand():
    # 0.1 BTC at 30,000 at 10x isolated: margin 300; maintenance 0.1 * 30,000 * 1.25% = 37.5; available 262.5
    # long:  30,000 - 262.5 / 0.1 / (1 - 0.0125) = 30,000 - 2,658.2278... = 27,341.7722
    # short: 30,000 + 262.5 / 0.1 / (1 + 0.0125) = 30,000 + 2,592.5926... = 32,592.5926
    assert RULE.liquidation_price(300.0, 0.1, 30_000.0, ISOLATED) == pytest.approx(27_341.7722, abs=1e-4)
    assert RULE.liquidation_price(300.0, -0.1, 30_000.0, ISOLATED) == pytest.approx(32_592.5926, abs=1e-4)
    # at 40x the margin is 75: available 37.5, a move of 375 / 0.9875 = 379.75 (1.27%) down for the long
    assert RULE.liquidation_price(75.0, 0.1, 30_000.0, ISOLATED) == pytest.approx(29_620.2532, abs=1e-4)
    # cross with this one position: the same formula with the account value
    assert RULE.liquidation_price(300.0, 0.1, 30_000.0, CROSS) == RULE.liquidation_price(300.0, 0.1, 30_000.0, ISOLATED)
    # the maintenance margin it holds the position to: 1.25% of the notional at the mark
    assert RULE.maintenance_for(0.1, 30_000.0, 28_000.0, ISOLATED) == pytest.approx(0.1 * 28_000 * 0.0125)


def test_a_margin_under_maintenance_liquidates_at_once_and_a_long_never_below_zero():
    assert RULE.liquidation_price(10.0, 0.1, 30_000.0, ISOLATED) > 30_000.0  # 10 < 37.5: already past it
    assert RULE.liquidation_price(10.0, -0.1, 30_000.0, ISOLATED) < 30_000.0
    assert RULE.liquidation_price(5_000.0, 0.1, 30_000.0, ISOLATED) == 0.0  # more margin than the notional
    assert math.isnan(RULE.liquidation_price(300.0, 0.0, 30_000.0, ISOLATED))
    with pytest.raises(ValueError, match="USDC alone"):
        RULE.liquidation_price(300.0, 0.1, 30_000.0, CROSS, collateral=0.5)


def test_the_tier_is_the_one_holding_the_notional_at_the_liquidation_price():
    # a 0.2B long at 20x: entry notional 200M is in tier 2; the price at which it is liquidated, too
    qty, entry = 4_000.0, 50_000.0
    wallet = qty * entry / 20
    lp = TIERED.liquidation_price(wallet, qty, entry, ISOLATED)
    assert qty * lp > 150e6
    d2 = 150e6 * (L2 - L1)
    assert lp == pytest.approx(entry - (wallet - (qty * entry * L2 - d2)) / qty / (1 - L2), rel=1e-12)
    # a 0.16B long with a large margin falls into tier 1 at its liquidation price
    qty = 3_200.0
    lp1 = TIERED.liquidation_price(qty * entry / 5, qty, entry, ISOLATED)
    assert qty * lp1 < 150e6
    assert lp1 == pytest.approx(entry - (qty * entry / 5 - qty * entry * L1) / qty / (1 - L1), rel=1e-12)
    with pytest.raises(NotionalBeyondTiers):
        RULE.liquidation_price(1e6, -4_000.0, 50_000.0, ISOLATED)  # a short's notional at LP beyond 150M


positions = st.tuples(
    st.floats(0.001, 5_000.0),  # |qty| BTC
    st.sampled_from([1.0, -1.0]),
    st.floats(1_000.0, 150_000.0),  # entry
    st.floats(1.0, 40.0),  # leverage: the isolated margin is the notional over it
)


@given(positions)
def test_at_the_liquidation_price_the_margin_plus_pnl_is_the_maintenance_margin(case):
    size, side, entry, leverage = case
    qty, wallet = side * size, size * entry / leverage
    for rule in (RULE, TIERED):
        try:
            lp = rule.liquidation_price(wallet, qty, entry, ISOLATED)
        except NotionalBeyondTiers:
            continue
        if lp == 0.0:  # a long the margin covers to zero
            assert equity(wallet, qty, entry, 0.0) >= -1e-9 * wallet
            continue
        mm = rule.maintenance_margin(qty, lp)
        assert equity(wallet, qty, entry, lp) == pytest.approx(mm, rel=1e-9, abs=1e-6 * wallet)
        # the Binance-shaped formula solves the same equation: the same price by other steps
        binance = MarginRule("x", SYM, rule.tiers, BINANCE_USDM)
        assert lp == pytest.approx(binance.liquidation_price(wallet, qty, entry, ISOLATED), rel=1e-9, abs=1e-9 * entry)


@given(positions, st.floats(1.01, 3.0))
def test_more_margin_moves_the_price_away_and_a_long_liquidates_below_entry_a_short_above(case, more):
    size, side, entry, leverage = case
    assume(size * entry * 4.5 < 150e6)  # inside the shipped tier at both prices (a short: up to ~4x entry)
    wallet = size * entry / leverage
    lp = RULE.liquidation_price(wallet, side * size, entry, ISOLATED)
    further = RULE.liquidation_price(wallet * more, side * size, entry, ISOLATED)
    if side > 0:
        assert lp < entry and (further < lp or further == lp == 0.0)
    else:
        assert lp > entry and further > lp
    # the distance is what the docs' formula says: the available margin over (1 - l * side), per BTC
    if lp > 0:
        assert abs(entry - lp) == pytest.approx((wallet / size - entry * L1) / (1 - L1 * side), rel=1e-9)


@given(positions)
def test_the_wallet_that_puts_the_price_there_is_the_wallet_it_came_from(case):
    size, side, entry, leverage = case
    assume(size * entry * 2 < 150e6)
    wallet = size * entry / leverage
    lp = RULE.liquidation_price(wallet, side * size, entry, ISOLATED)
    if lp > 0:
        assert RULE.wallet_for(lp, side * size, entry, ISOLATED) == pytest.approx(wallet, rel=1e-9)
