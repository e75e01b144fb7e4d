"""Market rules: lot size, limits and contract size of one market, in BTC."""

from __future__ import annotations

import math
from decimal import Decimal

import ccxt
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from fundarb.live.ccxt.client import MarketRules, VenueSetupError, common_lot

SPOT_ACCOUNT, PERP_ACCOUNT = "binance:spot", "binanceusdm:perp"


def spot_market(**over):
    """A ccxt-shaped Binance spot market (as ccxt's binance.parse_market builds it)."""
    m = {
        "id": "BTCUSDT", "symbol": "BTC/USDT", "base": "BTC", "quote": "USDT", "settle": None,
        "baseId": "BTC", "quoteId": "USDT", "settleId": None, "type": "spot", "spot": True, "margin": True,
        "swap": False, "future": False, "option": False, "active": True, "contract": False,
        "linear": None, "inverse": None, "contractSize": None, "taker": 0.001, "maker": 0.001,
        "precision": {"amount": 0.00001, "price": 0.01, "base": 1e-08, "quote": 1e-08},
        "limits": {"leverage": {"min": None, "max": None}, "amount": {"min": 0.00001, "max": 9000.0},
                   "price": {"min": 0.01, "max": 1000000.0}, "cost": {"min": 5.0, "max": 9000000.0},
                   "market": {"min": 0.0, "max": 86.5}},
        "info": {},
    }
    m.update(over)
    return m


def perp_market(**over):
    """A ccxt-shaped Binance USD-M perpetual (contract size 1 BTC, lot 0.001)."""
    m = {
        "id": "BTCUSDT", "symbol": "BTC/USDT:USDT", "base": "BTC", "quote": "USDT", "settle": "USDT",
        "baseId": "BTC", "quoteId": "USDT", "settleId": "USDT", "type": "swap", "spot": False, "margin": False,
        "swap": True, "future": False, "option": False, "active": True, "contract": True,
        "linear": True, "inverse": False, "contractSize": 1.0, "taker": 0.0005, "maker": 0.0002,
        "precision": {"amount": 0.001, "price": 0.1, "base": 1e-08, "quote": 1e-08},
        "limits": {"leverage": {"min": None, "max": None}, "amount": {"min": 0.001, "max": 1000.0},
                   "price": {"min": 556.8, "max": 4529764.0}, "cost": {"min": 100.0, "max": None},
                   "market": {"min": 0.001, "max": 120.0}},
        "info": {},
    }
    m.update(over)
    return m


def offline(exchange_cls, *markets):
    ex = exchange_cls()
    ex.set_markets(list(markets))  # no load_markets: nothing goes to the network
    return ex


def rules(step="0.001", min_amount=0.001, max_market=120.0, min_cost=100.0, contract_size=1.0,
          account=PERP_ACCOUNT):
    return MarketRules(account, "BTC/USDT:USDT", None if step is None else Decimal(step), min_amount,
                       max_market, min_cost, contract_size)


# --- MarketRules.of from a real (offline) ccxt client -------------------------------

def test_binance_is_tick_size_precision_mode():
    assert ccxt.binance().precisionMode == ccxt.TICK_SIZE == 4


def test_of_reads_binance_spot_market():
    ex = offline(ccxt.binance, spot_market())
    r = MarketRules.of(ex, SPOT_ACCOUNT, "BTC/USDT")
    assert r.amount_step == Decimal("0.00001")
    assert (r.min_amount, r.max_market_amount, r.min_cost, r.contract_size) == (0.00001, 86.5, 5.0, 1.0)
    assert r.step_btc == Decimal("0.00001")


def test_of_reads_binanceusdm_perp_market():
    ex = offline(ccxt.binanceusdm, perp_market())
    r = MarketRules.of(ex, PERP_ACCOUNT, "BTC/USDT:USDT")
    assert r.amount_step == Decimal("0.001")
    assert (r.min_amount, r.max_market_amount, r.min_cost, r.contract_size) == (0.001, 120.0, 100.0, 1.0)
    assert r.floor_btc(0.0129) == 0.012


def test_of_falls_back_to_amount_max_without_a_market_limit():
    m = perp_market(limits={"amount": {"min": 0.001, "max": 1000.0}, "cost": {"min": 100.0, "max": None}})
    r = MarketRules.of(offline(ccxt.binanceusdm, m), PERP_ACCOUNT, "BTC/USDT:USDT")
    assert r.max_market_amount == 1000.0


def test_of_without_limits_has_no_minimums_and_no_maximum():
    m = perp_market(limits={"amount": {"min": None, "max": None}, "cost": {"min": None, "max": None},
                            "market": {"min": None, "max": None}})
    r = MarketRules.of(offline(ccxt.binanceusdm, m), PERP_ACCOUNT, "BTC/USDT:USDT")
    assert (r.min_amount, r.min_cost) == (0.0, 0.0)
    assert r.max_market_amount == math.inf
    assert r.problems(500.0, 60_000.0) == []


def test_of_unknown_symbol_names_account_and_symbol():
    ex = offline(ccxt.binance, spot_market())
    with pytest.raises(VenueSetupError) as err:
        MarketRules.of(ex, SPOT_ACCOUNT, "ETH/USDT")
    assert SPOT_ACCOUNT in str(err.value) and "ETH/USDT" in str(err.value)


def test_of_reads_contract_size_of_an_okx_swap():
    # OKX BTC-USDT-SWAP: one contract is 0.01 BTC, lot 0.01 contracts
    m = perp_market(id="BTC-USDT-SWAP", contractSize=0.01, precision={"amount": 0.01, "price": 0.1},
                    limits={"amount": {"min": 0.01, "max": None}, "cost": {"min": None, "max": None},
                            "market": {"min": None, "max": 10000.0}})
    r = MarketRules.of(offline(ccxt.okx, m), "okx:perp", "BTC/USDT:USDT")
    assert r.contract_size == 0.01
    assert r.step_btc == Decimal("0.0001")  # 0.01 contracts of 0.01 BTC
    assert r.amount(0.5) == pytest.approx(50.0)


def test_okx_amount_of_a_lot_multiple_survives_ccxt_precision():
    m = perp_market(id="BTC-USDT-SWAP", contractSize=0.01, precision={"amount": 0.01, "price": 0.1},
                    limits={"amount": {"min": 0.01, "max": None}, "cost": {"min": None, "max": None}})
    ex = offline(ccxt.okx, m)
    r = MarketRules.of(ex, "okx:perp", "BTC/USDT:USDT")
    assert r.floor_btc(0.29) == 0.29  # a whole lot: 29 contracts of 0.01 BTC
    # what create_order sends: ccxt truncates the amount to the market's precision
    assert float(ex.amount_to_precision("BTC/USDT:USDT", r.amount(0.29))) == 29.0


@given(st.integers(min_value=0, max_value=8))
def test_decimal_places_mode_turns_digits_into_a_step(digits):
    ex = ccxt.binance()
    ex.precisionMode = ccxt.DECIMAL_PLACES
    ex.set_markets([spot_market(precision={"amount": digits, "price": 2})])
    r = MarketRules.of(ex, SPOT_ACCOUNT, "BTC/USDT")
    assert r.amount_step == Decimal(1).scaleb(-digits)


def test_decimal_places_three_digits_floors_to_thousandths():
    ex = ccxt.binance()
    ex.precisionMode = ccxt.DECIMAL_PLACES
    ex.set_markets([spot_market(precision={"amount": 3, "price": 2})])
    r = MarketRules.of(ex, SPOT_ACCOUNT, "BTC/USDT")
    assert r.floor_btc(1.23456) == 1.234


# --- problems -----------------------------------------------------------------------

def test_a_clean_order_has_no_problems():
    assert rules().problems(0.01, 60_000.0) == []


def test_lot_size_problem_names_account_quantity_and_lot():
    (msg,) = rules().problems(0.0125, 60_000.0)
    assert PERP_ACCOUNT in msg and "0.0125" in msg and "0.001" in msg and "lot" in msg


def test_min_amount_problem_names_account_quantity_and_minimum():
    (msg,) = rules(step="0.0001", min_amount=0.002, min_cost=0.0).problems(0.0015, 60_000.0)
    assert PERP_ACCOUNT in msg and "0.0015" in msg and "0.002" in msg and "minimum order" in msg


def test_max_market_amount_problem_names_account_quantity_and_maximum():
    (msg,) = rules(max_market=120.0).problems(121.0, 60_000.0)
    assert PERP_ACCOUNT in msg and "121" in msg and "120" in msg and "largest market order" in msg


def test_min_notional_problem_names_account_notional_and_minimum():
    (msg,) = rules(min_cost=100.0).problems(0.001, 60_000.0)  # 60 USDT
    assert PERP_ACCOUNT in msg and "60.00" in msg and "100.00" in msg and "notional" in msg


def test_problems_accumulate():
    msgs = rules(step="0.001", min_amount=0.002, min_cost=100.0).problems(0.0015, 60_000.0)
    assert len(msgs) == 3  # lot, minimum order, minimum notional


def test_no_step_means_no_lot_problem_and_floor_is_identity():
    r = rules(step=None, min_amount=0.0, min_cost=0.0)
    assert r.floor_btc(0.0123456) == 0.0123456
    assert r.problems(0.0123456, 60_000.0) == []


# --- contract size ------------------------------------------------------------------

def test_contract_size_converts_btc_to_contracts():
    r = rules(step="1", min_amount=1.0, max_market=500.0, min_cost=0.0, contract_size=0.01)
    assert r.amount(0.05) == pytest.approx(5.0)
    assert r.step_btc == Decimal("0.01")
    assert r.floor_btc(0.057) == 0.05


def test_contract_size_limits_are_reported_in_btc():
    r = rules(step="1", min_amount=2.0, max_market=500.0, min_cost=0.0, contract_size=0.01)
    (low,) = r.problems(0.01, 60_000.0)  # 1 contract, minimum 2 = 0.02 BTC
    assert "0.02 BTC" in low
    (high,) = r.problems(5.01, 60_000.0)  # 501 contracts, largest 500 = 5 BTC
    assert "5 BTC" in high


@given(st.sampled_from([0.1, 0.01, 0.001, 0.0001]), st.integers(min_value=1, max_value=2000))
def test_the_minimum_order_in_btc_is_not_under_the_minimum(contract_size, contracts):
    r = rules(step="1", min_amount=float(contracts), max_market=1e9, min_cost=0.0, contract_size=contract_size)
    qty = float(Decimal(contracts) * Decimal(str(contract_size)))  # exactly `contracts` contracts, in BTC
    assert r.floor_btc(qty) == qty
    assert r.problems(qty, 60_000.0) == []


@given(st.sampled_from([0.1, 0.01, 0.001, 0.0001]), st.integers(min_value=1, max_value=2000))
def test_a_whole_lot_in_btc_is_a_whole_number_of_contracts(contract_size, contracts):
    r = rules(step="1", min_amount=1.0, max_market=1e9, min_cost=0.0, contract_size=contract_size)
    qty = float(Decimal(contracts) * Decimal(str(contract_size)))
    # ccxt truncates the amount to the lot: 2.9999999999999996 contracts would go out as 2
    assert r.amount(qty) >= contracts


# --- floor_btc and common_lot invariants ---------------------------------------------

steps = st.sampled_from(["0.00001", "0.0001", "0.001", "0.01", "0.1", "1", "0.005", "0.0025"])
contract_sizes = st.sampled_from([1.0, 0.1, 0.01, 0.001, 0.0001])
quantities = st.floats(min_value=0.0, max_value=10_000.0, allow_nan=False, allow_infinity=False)


@given(steps, contract_sizes, quantities)
def test_floor_btc_is_the_largest_lot_multiple_not_above_qty(step, contract_size, qty):
    r = rules(step=step, contract_size=contract_size)
    lot = Decimal(step) * Decimal(str(contract_size))
    floored = r.floor_btc(qty)
    assert floored <= qty
    assert Decimal(str(floored)) % lot == 0
    assert Decimal(str(qty)) - Decimal(str(floored)) < lot
    assert r.floor_btc(floored) == floored  # a floored quantity has no lot problem


def _exact_lot(step: str) -> MarketRules:
    return rules(step=step, min_amount=0.0, min_cost=0.0)


NESTED = ["0.00001", "0.0001", "0.001", "0.01", "0.1", "1"]  # every step divides the coarser ones


@given(st.sampled_from(NESTED), st.sampled_from(NESTED), quantities)
def test_common_lot_of_nested_steps_is_accepted_by_both(step_a, step_b, qty):
    a, b = _exact_lot(step_a), _exact_lot(step_b)
    lot = common_lot(a, b, qty)
    assert lot <= qty
    assert a.floor_btc(lot) == lot and b.floor_btc(lot) == lot
    coarse = max(Decimal(step_a), Decimal(step_b))
    assert Decimal(str(qty)) - Decimal(str(lot)) < coarse  # nothing larger that both accept


@given(st.sampled_from(["0.001", "0.002", "0.003", "0.005", "0.0025", "0.01"]),
       st.sampled_from(["0.001", "0.002", "0.003", "0.005", "0.0025", "0.01"]),
       st.floats(min_value=0.0, max_value=10.0, allow_nan=False))
def test_common_lot_is_accepted_by_both_markets_for_any_steps(step_a, step_b, qty):
    a, b = _exact_lot(step_a), _exact_lot(step_b)
    lot = common_lot(a, b, qty)
    assert lot <= qty
    assert a.floor_btc(lot) == lot and b.floor_btc(lot) == lot


def test_common_lot_of_steps_0_003_and_0_002_is_a_multiple_of_both():
    # the largest common multiple of 0.003 and 0.002 not above 0.01 is 0.006
    assert common_lot(_exact_lot("0.003"), _exact_lot("0.002"), 0.01) == 0.006


@given(quantities)
def test_common_lot_of_spot_and_perp_is_a_perp_lot(qty):
    spot, perp = rules(step="0.00001", account=SPOT_ACCOUNT), rules(step="0.001")
    lot = common_lot(spot, perp, qty)
    assume(qty >= 0.001)
    assert lot == perp.floor_btc(qty)
