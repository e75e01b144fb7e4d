"""Liquidation by each venue's own rule (``fundarb.core.liquidation``): the
venues' own worked examples to the cent, the bracket at the liquidation
price, the maintenance amount rule, and invariants of every rule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import attrs
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from fundarb import config
from fundarb.core.liquidation import (
    BINANCE_USDM,
    BYBIT_LINEAR,
    CROSS,
    ISOLATED,
    LiquidationRuleMissing,
    MarginRule,
    MarginTier,
    NotionalBeyondTiers,
    expected_amount,
    rule_for,
)
from fundarb.data.margin_tiers import (
    SHIPPED_FILE,
    MarginTableError,
    load_tables,
    rule_from_ccxt_tiers,
    shipped_rule,
    shipped_tables,
)

PERP = "BTC/USDT:USDT"
BINANCE = shipped_rule("binanceusdm", PERP)
BYBIT = shipped_rule("bybit", PERP)
MISSING = ("liquidation rule of bitmex BTC/USD:BTC is not modelled (modelled: binancecoinm BTC/USD:BTC, "
           "binanceusdm BTC/USDT:USDT, bybit BTC/USD:BTC, bybit BTC/USDT:USDT, hyperliquid BTC/USDC:USDC)")


def cents(x: float) -> float:
    return round(x, 2)


def equity(wallet: float, qty: float, entry: float, price: float) -> float:
    return wallet + qty * (price - entry)


# --- the shipped snapshot --------------------------------------------------------------

def test_the_shipped_snapshot_is_dated_says_where_it_comes_from_and_holds_the_published_tiers():
    doc = json.loads(SHIPPED_FILE.read_text())
    assert doc["as_of"] and "not fetched" in doc["source"] and "Transcribed" in doc["source"]
    assert (BINANCE.style, BYBIT.style) == (BINANCE_USDM, BYBIT_LINEAR)
    assert BINANCE.as_of == doc["as_of"] and BINANCE.source == doc["source"]
    assert [(t.floor, t.cap, t.mmr, t.amount, t.max_leverage) for t in BINANCE.tiers] == [
        (0, 50_000, 0.004, 0, 125), (50_000, 600_000, 0.005, 50, 100),
        (600_000, 3_000_000, 0.0065, 950, 75), (3_000_000, 12_000_000, 0.01, 11_450, 50)]
    assert [(t.floor, t.cap, t.mmr, t.amount, t.max_leverage) for t in BYBIT.tiers] == [(0, 2_000_000, 0.005, 0, 100)]
    assert sorted(shipped_tables()) == [("binancecoinm", "BTC/USD:BTC"), ("binanceusdm", PERP), ("bybit", "BTC/USD:BTC"),
                                        ("bybit", PERP), ("hyperliquid", "BTC/USDC:USDC")]


# --- Binance USD-M -------------------------------------------------------------------

def test_binance_faq_long_1000_usdt_at_50000_with_500_wallet_liquidates_at_25100_40():
    # Binance FAQ "How to Reduce Your Chances of Getting Liquidated": wallet balance 500 USDT, a long
    # BTCUSDT position worth 1,000 USDT entered at 50,000 with 20x: liquidation price 25,100.40
    qty = 1_000.0 / 50_000.0
    assert cents(BINANCE.liquidation_price(500.0, qty, 50_000.0, CROSS)) == 25_100.40
    # one position and isolated: the same formula with the isolated wallet
    assert cents(BINANCE.liquidation_price(500.0, qty, 50_000.0, ISOLATED)) == 25_100.40


def test_binance_maintenance_amount_rule_level_5_is_250000_times_1pct_less_0_5pct_plus_50():
    # Binance: maintenance amount on level n = floor of level n * (MMR n - MMR n-1) + amount on level n-1;
    # "Level 5 = 250,000 * (1% - 0.5%) + 50 = 1,300 USDT": a table with those levels (level 4 at
    # MMR 0.5% and amount 50, level 5 from 250,000 at MMR 1%)
    faq = (MarginTier(0, 50_000, 0.004, 0.0, 125), MarginTier(50_000, 100_000, 0.005, 50.0, 100),
           MarginTier(100_000, 150_000, 0.005, 50.0, 75), MarginTier(150_000, 250_000, 0.005, 50.0, 50),
           MarginTier(250_000, 1_000_000, 0.01, 1_300.0, 20))
    assert expected_amount(faq, 4) == pytest.approx(250_000 * (0.01 - 0.005) + 50) == pytest.approx(1_300.0)
    rule = MarginRule("binanceusdm", "XYZ/USDT:USDT", faq, BINANCE_USDM)
    assert rule.tier(300_000).amount == 1_300.0
    assert rule.maintenance_margin(10.0, 30_000.0) == pytest.approx(300_000 * 0.01 - 1_300)
    # the amount keeps the maintenance margin continuous where level 5 begins
    assert rule.maintenance_margin(1.0, 250_000.0) == pytest.approx(250_000 * 0.005 - 50)


def test_a_table_whose_amount_breaks_the_cum_rule_is_refused_naming_the_tier():
    faq = [MarginTier(0, 50_000, 0.004, 0.0, 125), MarginTier(50_000, 250_000, 0.005, 50.0, 100),
           MarginTier(250_000, 1_000_000, 0.01, 1_250.0, 50)]
    with pytest.raises(ValueError, match=r"binanceusdm XYZ: tier 3 \(250,000-1,000,000\): maintenance amount "
                                         r"1,250\.000000 breaks the rule .* = 1,300\.000000"):
        MarginRule("binanceusdm", "XYZ", faq, BINANCE_USDM)
    gap = [MarginTier(0, 50_000, 0.004, 0.0, 125), MarginTier(60_000, 250_000, 0.005, 50.0, 100)]
    with pytest.raises(ValueError, match="tier 2 .* does not start where tier 1 ends"):
        MarginRule("binanceusdm", "XYZ", gap, BINANCE_USDM)


def test_a_tier_file_whose_cum_breaks_the_rule_is_an_error_naming_the_file_and_tier(tmp_path):
    doc = json.loads(SHIPPED_FILE.read_text())
    doc["markets"][0]["tiers"][2]["amount"] = 900
    bad = tmp_path / "tiers.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(MarginTableError, match=r"tiers\.json: margin rule of binanceusdm BTC/USDT:USDT: tier 3 "
                                               r"\(600,000-3,000,000\): maintenance amount 900"):
        load_tables(bad)


def test_the_bracket_is_the_one_at_the_liquidation_price_not_at_entry():
    # short 0.9 BTC at 50,000: 45,000 notional, bracket 1 at entry. With 20,000 wallet, bracket 1's
    # formula puts the liquidation at 65,000 / (0.9 * 1.004) = 71,934.6, a notional of 64,741 (bracket 2),
    # so bracket 2's MMR 0.5% and maintenance amount 50 apply: (20,000 + 50 + 45,000) / (0.9 * 1.005)
    wrong = (20_000.0 + 45_000.0) / (0.9 * 1.004)
    right = (20_000.0 + 50.0 + 45_000.0) / (0.9 * 1.005)
    assert 0.9 * wrong > 50_000 and 0.9 * right > 50_000  # bracket 2 holds it, self-consistently
    lp = BINANCE.liquidation_price(20_000.0, -0.9, 50_000.0, CROSS)
    assert cents(lp) == cents(right) == 71_918.19 and cents(lp) != cents(wrong)
    assert equity(20_000.0, -0.9, 50_000.0, lp) == pytest.approx(0.9 * lp * 0.005 - 50, rel=1e-12)

    # a long the other way: 1.2 BTC at 50,000 (60,000, bracket 2 at entry) with 20,000 wallet
    # liquidates at a notional of 40,160 (bracket 1): (60,000 - 20,000) / (1.2 * 0.996)
    lp = BINANCE.liquidation_price(20_000.0, 1.2, 50_000.0, ISOLATED)
    assert cents(lp) == cents(40_000.0 / (1.2 * 0.996)) == 33_467.20
    assert cents(lp) != cents((60_000.0 - 20_000.0 - 50.0) / (1.2 * 0.995))


def test_the_baseline_short_is_held_to_bracket_2():
    # the backtest's position: 65,000 USDT short at 65,000 with 35,000 cash; the liquidation
    # notional ~99,552 is in bracket 2 (0.5%, amount 50), not the flat 0.4% once used
    lp = BINANCE.liquidation_price(35_000.0, -1.0, 65_000.0, CROSS)
    assert lp == pytest.approx((35_000.0 + 50.0 + 65_000.0) / 1.005, rel=1e-12)
    assert lp < (35_000.0 + 65_000.0) / 1.004


# --- Bybit linear ---------------------------------------------------------------------

def test_bybit_example_1_long_1_btc_at_20000_50x_liquidates_at_19700():
    # Bybit "Liquidation Price (USDT Contract)", isolated: IM = 20,000 / 50 = 400, MM = 20,000 * 0.5% = 100
    im = 20_000.0 / 50
    assert BYBIT.maintenance_for(1.0, 20_000.0, 21_000.0, ISOLATED) == pytest.approx(100.0)  # valued at entry
    assert cents(BYBIT.liquidation_price(im, 1.0, 20_000.0, ISOLATED)) == 19_700.00


def test_bybit_example_2_short_with_3000_extra_margin_liquidates_at_23300():
    # 20,000 + (400 - 100) + 3,000 = 23,300
    assert cents(BYBIT.liquidation_price(400.0 + 3_000.0, -1.0, 20_000.0, ISOLATED)) == 23_300.00


def test_bybit_example_3_a_200_funding_fee_from_the_position_margin_moves_the_long_to_19900():
    assert cents(BYBIT.liquidation_price(400.0 - 200.0, 1.0, 20_000.0, ISOLATED)) == 19_900.00


def test_bybit_cross_values_maintenance_at_the_mark():
    # one position, cross: Binance's shape with the deduction as the amount (0 in tier 1)
    lp = BYBIT.liquidation_price(400.0, 1.0, 20_000.0, CROSS)
    assert lp == pytest.approx((20_000.0 - 400.0) / (1 - 0.005), rel=1e-12)
    assert equity(400.0, 1.0, 20_000.0, lp) == pytest.approx(lp * 0.005, rel=1e-9)


# --- edges -----------------------------------------------------------------------------

def test_no_position_is_nan_and_a_long_floors_at_zero():
    for rule in (BINANCE, BYBIT):
        for mode in (CROSS, ISOLATED):
            assert math.isnan(rule.liquidation_price(1_000.0, 0.0, 60_000.0, mode))
            assert rule.liquidation_price(200_000.0, 1.0, 60_000.0, mode) == 0.0
    with pytest.raises(ValueError, match="margin mode must be one of isolated, cross"):
        BINANCE.liquidation_price(1.0, 1.0, 1.0, "portfolio")


def test_a_notional_beyond_the_last_tier_is_an_error_naming_venue_symbol_and_notional():
    with pytest.raises(NotionalBeyondTiers, match=r"binanceusdm BTC/USDT:USDT: notional 20,000,000\.00 is beyond "
                                                  r"the last margin tier \(cap 12,000,000"):
        BINANCE.maintenance_margin(-400.0, 50_000.0)
    with pytest.raises(NotionalBeyondTiers, match=r"bybit BTC/USDT:USDT: notional 2,500,000\.00 is beyond"):
        BYBIT.liquidation_price(100_000.0, -50.0, 50_000.0, ISOLATED)
    # the notional AT the liquidation price beyond the table: a small short on a huge wallet,
    # (13,000,000 + 11,450 + 0.1 * 60,000) / 1.01 by the last bracket's numbers
    with pytest.raises(NotionalBeyondTiers, match=r"binanceusdm BTC/USDT:USDT: the notional at the liquidation "
                                                  r"price, 12,888,564\.36, is beyond the last margin tier"):
        BINANCE.liquidation_price(13_000_000.0, -0.1, 60_000.0, CROSS)


def test_an_unmodelled_venue_raises_only_when_a_liquidation_price_is_asked_for():
    rule = rule_for("bitmex", "BTC/USD:BTC", shipped_tables())
    assert shipped_rule("bitmex", "BTC/USD:BTC") == rule  # made, kept, compared: no error
    assert math.isnan(rule.liquidation_price(1_000.0, 0.0, 30_000.0, CROSS))  # no position: nothing asked
    assert rule.maintenance_margin(0.0, 30_000.0) == 0.0
    for ask in (lambda: rule.liquidation_price(1_000.0, -1.0, 30_000.0, CROSS),
                lambda: rule.wallet_for(40_000.0, -1.0, 30_000.0, ISOLATED),
                lambda: rule.maintenance_margin(1.0, 30_000.0), lambda: rule.tier(1.0)):
        with pytest.raises(LiquidationRuleMissing) as exc:
            ask()
        assert str(exc.value) == MISSING
    assert issubclass(LiquidationRuleMissing, ValueError)


@given(qty=st.floats(-10.0, 10.0).filter(lambda q: abs(q) > 1e-3), wallet=st.floats(0.0, 1e6),
       mode=st.sampled_from([CROSS, ISOLATED]))
def test_an_unmodelled_venue_raises_for_every_position_and_never_another_formula(qty, wallet, mode):
    rule = shipped_rule("okx", PERP)
    with pytest.raises(LiquidationRuleMissing, match="liquidation rule of okx BTC/USDT:USDT is not modelled"):
        rule.liquidation_price(wallet, qty, 30_000.0, mode)


# --- invariants ----------------------------------------------------------------------------

def positions(most_notional: float):
    """(qty, entry, wallet): a position of up to ``most_notional`` USDT and a wallet of 2% .. 150% of it."""
    return st.tuples(st.floats(100.0, most_notional), st.floats(1_000.0, 200_000.0), st.sampled_from([-1.0, 1.0]),
                     st.floats(0.02, 1.5)).map(lambda t: (t[2] * t[0] / t[1], t[1], t[3] * t[0]))


@given(positions(2_000_000.0), st.sampled_from([CROSS, ISOLATED]))
def test_binance_equity_at_the_liquidation_price_is_the_maintenance_margin_there(pos, mode):
    qty, entry, wallet = pos
    lp = BINANCE.liquidation_price(wallet, qty, entry, mode)
    assume(lp > 0.01 * entry)  # a liquidation price not within 1% of zero: MM is not lost in rounding
    mm = BINANCE.maintenance_margin(qty, lp)
    assert abs(equity(wallet, qty, entry, lp) - mm) <= 1e-9 * mm


@given(positions(600_000.0))
def test_bybit_isolated_equity_at_the_liquidation_price_is_the_maintenance_margin_at_entry(pos):
    qty, entry, wallet = pos
    lp = BYBIT.liquidation_price(wallet, qty, entry, ISOLATED)
    assume(lp > 0.01 * entry)  # a liquidation price not within 1% of zero: MM is not lost in rounding
    mm = BYBIT.maintenance_margin(qty, entry)
    assert abs(equity(wallet, qty, entry, lp) - mm) <= 1e-9 * mm


@given(positions(600_000.0), st.sampled_from([(BINANCE, CROSS), (BINANCE, ISOLATED), (BYBIT, CROSS), (BYBIT, ISOLATED)]))
def test_wallet_for_inverts_the_liquidation_price(pos, rule_mode):
    rule, mode = rule_mode
    qty, entry, wallet = pos
    lp = rule.liquidation_price(wallet, qty, entry, mode)
    assume(lp > 0.01 * entry)  # a liquidation price not within 1% of zero: MM is not lost in rounding
    assert rule.wallet_for(lp, qty, entry, mode) == pytest.approx(wallet, rel=1e-9)


@given(positions(600_000.0), st.floats(0.0, 2.0), st.sampled_from([(BINANCE, CROSS), (BINANCE, ISOLATED),
                                                                    (BYBIT, CROSS), (BYBIT, ISOLATED)]))
def test_more_wallet_never_moves_a_short_liquidation_down_nor_a_long_one_up(pos, more, rule_mode):
    rule, mode = rule_mode
    qty, entry, wallet = pos
    extra = wallet + more * abs(qty) * entry * 0.1
    before, after = rule.liquidation_price(wallet, qty, entry, mode), rule.liquidation_price(extra, qty, entry, mode)
    if qty < 0:
        assert after >= before
    else:
        assert after <= before


# --- tiers from the venue at run time ------------------------------------------------------

def ccxt_binance_tiers() -> list[dict]:
    """What ccxt's fetch_market_leverage_tiers makes of Binance's /fapi/v1/leverageBracket rows."""
    return [{"tier": i + 1, "minNotional": t.floor, "maxNotional": t.cap, "maintenanceMarginRate": t.mmr,
             "maxLeverage": t.max_leverage, "info": {"bracket": i + 1, "cum": str(t.amount)}}
            for i, t in enumerate(BINANCE.tiers)]


def test_rule_from_ccxt_tiers_takes_binance_cum_and_derives_a_missing_bybit_deduction():
    rule = rule_from_ccxt_tiers("binanceusdm", PERP, list(reversed(ccxt_binance_tiers())), "2030-01-01")
    assert rule.tiers == BINANCE.tiers and rule.style == BINANCE_USDM and rule.as_of == "2030-01-01"
    assert "fetched from binanceusdm at run time" in rule.source
    bybit_rows = [{"minNotional": 0.0, "maxNotional": 2_000_000.0, "maintenanceMarginRate": 0.005, "maxLeverage": 100.0,
                   "info": {"id": 1, "mmDeduction": ""}},
                  {"minNotional": 2_000_000.0, "maxNotional": 2_600_000.0, "maintenanceMarginRate": 0.0056,
                   "maxLeverage": 90.0, "info": {"id": 2, "mmDeduction": ""}}]
    rule = rule_from_ccxt_tiers("bybit", PERP, bybit_rows)
    assert rule.style == BYBIT_LINEAR and rule.tiers[1].amount == pytest.approx(2_000_000 * 0.0006)
    bad = ccxt_binance_tiers()
    bad[1]["info"]["cum"] = "40"
    with pytest.raises(MarginTableError, match="margin tiers binanceusdm sent for BTC/USDT:USDT: .*tier 2"):
        rule_from_ccxt_tiers("binanceusdm", PERP, bad)
    with pytest.raises(LiquidationRuleMissing):  # not modelled: tiers alone do not make a formula
        rule_from_ccxt_tiers("kraken", PERP, bad).liquidation_price(1.0, -1.0, 1.0, CROSS)


# --- the config no longer sets a rate --------------------------------------------------------

def test_a_config_still_naming_maintenance_margin_rate_is_one_clear_error(tmp_path):
    path = tmp_path / "old.toml"
    text = (Path(__file__).resolve().parents[2] / "sims" / "spot_perp.toml").read_text()
    path.write_text(text.replace("liquidation_fee_rate = 0.0125", "maintenance_margin_rate = 0.004\nliquidation_fee_rate = 0.0125"))
    with pytest.raises(config.ConfigError) as exc:
        config.load(path)
    msg = str(exc.value)
    assert msg == (f"{path}: perp.maintenance_margin_rate is no longer a setting: the maintenance margin rate now "
                   "comes from the venue's margin tiers (docs/margin.md); remove the line")
    assert "\n" not in msg


_ask = st.tuples(st.sampled_from([5_000.0, 20_000.0, 1e6, 0.0, -100.0]), st.sampled_from([0.0, 1.0, -1.0, 2.5, -30.0]),
                 st.sampled_from([60_000.0, 30_000.0, 0.0]), st.sampled_from([CROSS, ISOLATED]))


@given(st.lists(_ask, min_size=1, max_size=30), st.sampled_from(["binanceusdm", "bybit"]))
def test_the_last_price_kept_is_the_price_worked_out_afresh(asks, venue):
    """A rule keeps its last liquidation price for the same question: any run
    of questions, repeated or not, gets what a rule that never keeps one says
    (the same price, or the same error)."""
    kept = attrs.evolve(shipped_rule(venue, "BTC/USDT:USDT"))
    for wallet, qty, entry, mode in asks:
        fresh = attrs.evolve(kept)  # a rule of the same table that has worked nothing out yet
        assert fresh is not kept and fresh._last is not kept._last
        try:
            want: float | str = fresh.liquidation_price(wallet, qty, entry, mode)
        except ValueError as exc:
            want = str(exc)
        try:
            got: float | str = kept.liquidation_price(wallet, qty, entry, mode)
        except ValueError as exc:
            got = str(exc)
        assert got == want or (got != got and want != want)
