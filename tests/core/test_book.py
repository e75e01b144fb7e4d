"""PositionBook: cash, fees, slippage, perp entry/realized PnL, transfers,
delta, drift, liquidation price, margin buffer and leverage."""

from __future__ import annotations

import math

import pytest

from fundarb.core.book import PositionBook, VenueAccount, margin_buffer
from fundarb.core.liquidation import BINANCE_USDM, CROSS, MarginRule, MarginTier
from fundarb.core.model import MarketKind, Side, TransferDone
from fundarb.data.margin_tiers import shipped_rule
from fundarb.testkit.builders import PERP, SPOT, T0, make_fill


def flat(mmr: float) -> MarginRule:
    """A one-tier table (no maintenance amount): maintenance margin mmr * notional at every size."""
    return MarginRule("test", "BTC/USDT:USDT", (MarginTier(0.0, 1e12, mmr, 0.0, 100.0),), BINANCE_USDM)


def liquidation_price(cash: float, qty: float, entry: float, mmr: float) -> float:
    return flat(mmr).liquidation_price(cash, qty, entry, CROSS)


def identity_gap(b: PositionBook) -> float:
    return b.equity - b.initial_equity - (b.funding - b.fees - b.slippage + b.price_pnl)


def test_open_book_and_distinct_names():
    b = PositionBook.open(SPOT, PERP, 65_000.0, 35_000.0)
    assert b.initial_equity == 100_000.0
    assert b.equity == 100_000.0
    assert b.spot.kind is MarketKind.SPOT and b.perp.kind is MarketKind.PERP
    assert b.is_flat and b.delta == 0.0 and b.drift == 0.0 and b.leverage() == 0.0
    with pytest.raises(ValueError):
        PositionBook.open("x", "x", 1.0, 1.0)


def test_spot_buy_then_sell_cash_fee_and_slippage(book):
    # buy 1 at 60,010 against mid 60,000 with 0.1% fee = 60.01
    book.apply_fill(make_fill(SPOT, Side.BUY, 1.0, 60_010.0, mid=60_000.0, fee=60.01))
    assert book.spot.cash == pytest.approx(65_000.0 - 60_010.0 - 60.01)
    assert book.spot.qty == 1.0
    assert book.spot.price == 60_000.0
    assert book.fees == pytest.approx(60.01)
    assert book.spot.fees == pytest.approx(60.01)
    assert book.slippage == pytest.approx(10.0)
    assert book.equity == pytest.approx(100_000.0 - 60.01 - 10.0)
    # sell 1 at 61,990 against mid 62,000, fee 61.99
    book.apply_fill(make_fill(SPOT, Side.SELL, 1.0, 61_990.0, mid=62_000.0, fee=61.99))
    assert book.spot.qty == 0.0
    assert book.spot.cash == pytest.approx(4_929.99 + 61_990.0 - 61.99)
    assert book.slippage == pytest.approx(20.0)  # -1 * (61,990 - 62,000) = +10 more
    assert book.fees == pytest.approx(122.0)
    assert book.price_pnl == pytest.approx(2_000.0)  # 1 BTC revalued 60,000 -> 62,000
    assert book.equity == pytest.approx(100_000.0 - 122.0 - 20.0 + 2_000.0)
    assert book.traded_qty == pytest.approx(2.0)
    assert identity_gap(book) == pytest.approx(0.0, abs=1e-9)


def test_slippage_can_be_negative_when_filled_better_than_mid(book):
    book.apply_fill(make_fill(SPOT, Side.BUY, 2.0, 59_990.0, mid=60_000.0))
    assert book.slippage == pytest.approx(-20.0)  # +1 * 2 * (59,990 - 60,000)
    book.apply_fill(make_fill(PERP, Side.SELL, 2.0, 60_020.0, mid=60_000.0))
    assert book.slippage == pytest.approx(-60.0)  # -1 * 2 * (60,020 - 60,000) = -40 more


def test_perp_open_increase_reduce_and_flip(book):
    p = book.perp
    book.apply_fill(make_fill(PERP, Side.SELL, 1.0, 50_000.0, fee=25.0))
    assert (p.qty, p.entry, p.cash) == (-1.0, 50_000.0, 34_975.0)
    assert p.fees == 25.0
    # increase: weighted entry (1 * 50,000 + 1 * 52,000) / 2
    book.apply_fill(make_fill(PERP, Side.SELL, 1.0, 52_000.0))
    assert p.qty == -2.0
    assert p.entry == pytest.approx(51_000.0)
    assert p.cash == pytest.approx(34_975.0)  # opening a perp moves no cash but the fee
    # reduce 0.5 at 49,000: short gains 0.5 * (51,000 - 49,000) = 1,000
    book.apply_fill(make_fill(PERP, Side.BUY, 0.5, 49_000.0))
    assert p.qty == pytest.approx(-1.5)
    assert p.entry == pytest.approx(51_000.0)
    assert p.realized == pytest.approx(1_000.0)
    assert p.cash == pytest.approx(35_975.0)
    # buy 3 at 48,000: close 1.5 (+4,500), open 1.5 long at 48,000
    book.apply_fill(make_fill(PERP, Side.BUY, 3.0, 48_000.0))
    assert p.qty == pytest.approx(1.5)
    assert p.entry == pytest.approx(48_000.0)
    assert p.realized == pytest.approx(5_500.0)
    assert p.cash == pytest.approx(40_475.0)
    # then close the long at a loss: 1.5 * (47,000 - 48,000) = -1,500
    book.apply_fill(make_fill(PERP, Side.SELL, 1.5, 47_000.0))
    assert p.qty == 0.0 and p.entry == 0.0
    assert p.cash == pytest.approx(38_975.0)
    assert identity_gap(book) == pytest.approx(0.0, abs=1e-8)


def test_perp_unrealized_and_equity(book):
    book.apply_fill(make_fill(PERP, Side.SELL, 2.0, 60_000.0))
    book.revalue(PERP, 63_000.0)
    assert book.perp.unrealized == pytest.approx(-6_000.0)  # -2 * (63,000 - 60,000)
    assert book.perp.equity == pytest.approx(29_000.0)
    assert book.price_pnl == pytest.approx(-6_000.0)
    assert book.perp.notional == pytest.approx(126_000.0)


def test_revalue_accrues_price_pnl_only_for_held_qty(book):
    book.revalue(SPOT, 60_000.0)
    book.revalue(SPOT, 61_000.0)
    assert book.price_pnl == 0.0
    book.apply_fill(make_fill(SPOT, Side.BUY, 0.5, 61_000.0))
    book.revalue(SPOT, 60_000.0)
    assert book.price_pnl == pytest.approx(-500.0)


def test_charge_is_a_fee(book):
    book.charge(SPOT, 3.5)
    assert book.spot.cash == 65_000.0 - 3.5
    assert book.fees == 3.5 and book.spot.fees == 3.5
    assert book.equity == 100_000.0 - 3.5


def test_transfer_out_and_in_with_fee(book):
    book.transfer_out(SPOT, 1_000.0)
    assert book.spot.cash == 64_000.0
    assert book.in_transit == 1_000.0
    assert book.equity == 100_000.0  # money in flight is still ours
    book.transfer_in(TransferDone(T0, "x1", SPOT, PERP, 1_000.0, 1.5))
    assert book.in_transit == 0.0
    assert book.perp.cash == 35_998.5
    assert book.fees == 1.5
    assert book.equity == pytest.approx(100_000.0 - 1.5)
    assert identity_gap(book) == pytest.approx(0.0, abs=1e-9)


def test_delta_and_drift(book):
    book.apply_fill(make_fill(SPOT, Side.BUY, 1.0, 60_000.0))
    assert book.delta == 1.0
    assert book.drift == 1.0  # naked spot leg: |1| / max(1, 0)
    book.apply_fill(make_fill(PERP, Side.SELL, 0.98, 60_000.0))
    assert book.delta == pytest.approx(0.02)
    assert book.drift == pytest.approx(0.02)  # 0.02 / max(1.0, 0.98)
    book.apply_fill(make_fill(PERP, Side.SELL, 0.07, 60_000.0))
    assert book.delta == pytest.approx(-0.05)
    assert book.drift == pytest.approx(0.05 / 1.05)
    assert not book.is_flat


def test_liquidation_price_short_by_hand():
    # cash + q (P - entry) = mmr |q| P with q = -1, cash 20,000, entry 60,000, mmr 0.5%:
    # 20,000 - P + 60,000 = 0.005 P  ->  P = 80,000 / 1.005
    liq = liquidation_price(20_000.0, -1.0, 60_000.0, 0.005)
    assert liq == pytest.approx(79_601.99, abs=0.01)
    assert 20_000.0 - (liq - 60_000.0) == pytest.approx(0.005 * liq)
    # two BTC short with 30,000 cash at entry 50,000, mmr 0.4%:
    # 30,000 - 2 (P - 50,000) = 0.008 P -> P = 130,000 / 2.008
    assert liquidation_price(30_000.0, -2.0, 50_000.0, 0.004) == pytest.approx(130_000.0 / 2.008)


def test_liquidation_price_long_by_hand():
    # 20,000 + 2 (P - 60,000) = 0.01 P  ->  P = 100,000 / 1.99
    liq = liquidation_price(20_000.0, 2.0, 60_000.0, 0.005)
    assert liq == pytest.approx(50_251.26, abs=0.01)
    # over-collateralised long never liquidates: floored at 0
    assert liquidation_price(200_000.0, 1.0, 60_000.0, 0.005) == 0.0
    assert math.isnan(liquidation_price(1_000.0, 0.0, 60_000.0, 0.005))


def test_margin_buffer_sign():
    assert margin_buffer(79_200.0, 60_000.0, -1.0) == pytest.approx(0.32)
    assert margin_buffer(57_000.0, 60_000.0, -1.0) == pytest.approx(-0.05)  # short past liquidation
    assert margin_buffer(45_000.0, 60_000.0, 1.0) == pytest.approx(0.25)
    assert margin_buffer(63_000.0, 60_000.0, 1.0) == pytest.approx(-0.05)   # long past liquidation
    assert margin_buffer(float("nan"), 60_000.0, 0.0) == math.inf


def test_book_liquidation_price_margin_buffer_and_leverage():
    rule = flat(0.005)
    b = PositionBook.open(SPOT, PERP, 0.0, 20_000.0)
    assert b.margin_buffer(rule) == math.inf
    b.apply_fill(make_fill(PERP, Side.SELL, 1.0, 60_000.0))
    assert b.liquidation_price(rule) == pytest.approx(80_000.0 / 1.005)
    assert b.margin_buffer(rule) == pytest.approx((80_000.0 / 1.005 - 60_000.0) / 60_000.0)
    assert b.leverage() == pytest.approx(3.0)  # 60,000 notional / 20,000 equity
    b.revalue(PERP, 66_000.0)
    assert b.leverage() == pytest.approx(66_000.0 / 14_000.0)
    assert b.margin_buffer(rule) == pytest.approx((80_000.0 / 1.005 - 66_000.0) / 66_000.0)
    b.revalue(PERP, 81_000.0)  # equity -1,000
    assert b.leverage() == math.inf
    assert b.margin_buffer(rule) < 0


def test_book_liquidation_price_is_the_venues_cross_rule_on_the_perp_cash():
    # Binance USD-M: short 1 at 60,000 on 20,000 cash liquidates at a notional of ~79.7k, in bracket 2
    # (0.5%, maintenance amount 50): (20,000 + 50 + 60,000) / 1.005
    rule = shipped_rule("binanceusdm", "BTC/USDT:USDT")
    b = PositionBook.open(SPOT, PERP, 0.0, 20_000.0)
    b.apply_fill(make_fill(PERP, Side.SELL, 1.0, 60_000.0))
    assert b.liquidation_price(rule) == pytest.approx(80_050.0 / 1.005, rel=1e-12)
    assert b.margin_buffer(rule) == pytest.approx((80_050.0 / 1.005 - 60_000.0) / 60_000.0, rel=1e-12)
    assert b.liquidation_price(rule) == rule.liquidation_price(b.perp.cash, -1.0, 60_000.0, CROSS)


def test_venue_account_spot_equity():
    a = VenueAccount("s", MarketKind.SPOT, 1_000.0)
    assert a.equity == 1_000.0  # nan price, no qty: just cash
    a.trade(0.01, 50_000.0, 0.5)
    a.price = 51_000.0
    assert a.cash == pytest.approx(499.5)
    assert a.equity == pytest.approx(499.5 + 510.0)
    assert a.unrealized == 0.0


def test_refused_transfer_returns_to_its_account(book):
    book.transfer_out(SPOT, 1_000.0)
    assert book.spot.cash == 64_000.0 and book.in_transit == 1_000.0
    before = book.equity
    book.transfer_back(SPOT, 1_000.0)
    assert book.spot.cash == 65_000.0 and book.in_transit == 0.0 and book.equity == before
