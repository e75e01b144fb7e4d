"""The book's inverse (coin-margined) perp and its collateral modes: an
inverse short's PnL, fees and funding in BTC (worked by hand from contracts x
size), the book's accounting identity under random coin-margined and unified
sequences, the USD-flat delta of a covered coin-margined carry, and
``Collateral.sweep`` / ``Collateral.exit_btc``."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fundarb.core.book import COIN, EXIT_MARGIN, OWN, OWN_COLLATERAL, UNIFIED, Collateral, PositionBook, VenueAccount
from fundarb.core.model import NS_PER_HOUR, Fill, FundingSettlement, MarketKind, Side
from fundarb.testkit.builders import PERP, SPOT, T0

SIZE = 100.0  # USD per contract (Binance COIN-M BTCUSD_PERP)
TIERS = ((1e6, 0.85),)


def identity_gap(b: PositionBook) -> float:
    return b.equity - b.initial_equity - (b.funding - b.fees - b.slippage + b.price_pnl)


def fill(venue: str, side: Side, qty: float, price: float, mid: float | None = None, fee: float = 0.0,
         ts: int = T0) -> Fill:
    return Fill(ts, venue, "c", side, qty, price, price if mid is None else mid, fee)


def inverse_account(size: float = SIZE) -> VenueAccount:
    return VenueAccount(PERP, MarketKind.PERP, 0.0, contract_size=size)


# --- one inverse short, worked by hand ---------------------------------------------------------

@pytest.mark.parametrize(("n", "size", "p0", "p"), [
    (951, 100.0, 50_000.0, 43_500.0),   # price falls: the short gains BTC
    (951, 100.0, 50_000.0, 61_250.0),   # price rises: it loses BTC
    (12_345, 1.0, 30_000.0, 29_999.5),  # Bybit / BitMEX: 1 USD contracts
    (1, 10.0, 20_000.0, 80_000.0),
])
def test_inverse_short_pnl_fees_and_funding_in_btc_on_the_account(n, size, p0, p):
    a = inverse_account(size)
    rate = 0.0005
    fee_open = a.fee_for(rate, n, p0)
    assert fee_open == pytest.approx(rate * n * size / p0, rel=1e-12)
    a.trade(-n, p0, fee_open)
    assert a.qty == pytest.approx(-n * size / p0, rel=1e-12)  # BTC-equivalent of the face at entry
    assert a.entry == pytest.approx(p0, rel=1e-12)
    assert a.face == pytest.approx(-n * size, rel=1e-12)
    assert a.units == pytest.approx(-n, rel=1e-12)
    assert a.coin == pytest.approx(-fee_open, rel=1e-12)
    assert a.cash == 0.0  # nothing of an inverse account moves in USD

    # funding at a positive rate: the short receives contracts x size / mark x rate BTC
    mark, fr = 0.5 * (p0 + p), 0.0001
    due = a.funding_due(mark, fr)
    assert due == pytest.approx(n * size / mark * fr, rel=1e-12) and due > 0
    usd = a.settle_funding(mark, fr)
    assert usd == pytest.approx(n * size * fr, rel=1e-12)  # BTC valued at the settlement's mark
    assert a.funding_coin == pytest.approx(n * size / mark * fr, rel=1e-12)
    assert a.funding == pytest.approx(n * size * fr, rel=1e-12)
    # a negative rate: the short pays
    assert a.funding_due(mark, -fr) == pytest.approx(-n * size / mark * fr, rel=1e-12)

    fee_close = a.fee_for(rate, n, p)
    assert fee_close == pytest.approx(rate * n * size / p, rel=1e-12)
    a.trade(n, p, fee_close)
    assert a.qty == 0.0 and a.entry == 0.0
    pnl_btc = n * size * (1 / p - 1 / p0)
    assert (pnl_btc > 0) == (p < p0)
    assert a.coin == pytest.approx(pnl_btc + n * size / mark * fr - fee_open - fee_close, rel=1e-9, abs=1e-15)
    assert a.fees_coin == pytest.approx(fee_open + fee_close, rel=1e-12)
    assert a.realized == pytest.approx(pnl_btc * p, rel=1e-9)  # USD at the closing price


def test_inverse_long_gains_when_price_rises_and_partial_close_keeps_the_entry():
    a = inverse_account()
    a.trade(500, 40_000.0, 0.0)
    a.trade(-200, 50_000.0, 0.0)  # close 200 of 500 contracts
    assert a.units == pytest.approx(300, rel=1e-12)
    assert a.entry == pytest.approx(40_000.0, rel=1e-12)
    assert a.coin == pytest.approx(200 * SIZE * (1 / 40_000 - 1 / 50_000), rel=1e-12)
    a.trade(-300, 50_000.0, 0.0)
    assert a.qty == 0.0
    assert a.coin == pytest.approx(500 * SIZE * (1 / 40_000 - 1 / 50_000), rel=1e-12)


def test_inverse_entry_is_the_harmonic_mean_of_the_faces():
    a = inverse_account()
    a.trade(-300, 40_000.0, 0.0)
    a.trade(-100, 60_000.0, 0.0)
    face = 400 * SIZE
    assert a.face == pytest.approx(-face, rel=1e-12)
    assert a.entry == pytest.approx(face / (300 * SIZE / 40_000 + 100 * SIZE / 60_000), rel=1e-12)
    a.trade(400, 50_000.0, 0.0)
    assert a.qty == 0.0
    assert a.coin == pytest.approx(300 * SIZE * (1 / 50_000 - 1 / 40_000) + 100 * SIZE * (1 / 50_000 - 1 / 60_000),
                                   rel=1e-9)


def test_inverse_flip_through_zero_opens_the_rest_at_the_fill_price():
    a = inverse_account()
    a.trade(-100, 40_000.0, 0.0)
    a.trade(150, 50_000.0, 0.0)
    assert a.units == pytest.approx(50, rel=1e-9)
    assert a.entry == pytest.approx(50_000.0, rel=1e-12)
    assert a.qty == pytest.approx(50 * SIZE / 50_000, rel=1e-12)
    assert a.coin == pytest.approx(100 * SIZE * (1 / 50_000 - 1 / 40_000), rel=1e-12)


def test_inverse_short_through_the_book_fill_and_funding():
    """Own collateral: the BTC stays on the perp account, where it can be read."""
    b = PositionBook.open(SPOT, PERP, 100_000.0, 0.0, contract_size=SIZE)
    n, p0, mid0, p, mid = 951, 50_030.0, 50_034.0, 43_552.0, 43_548.0
    fee0 = b.perp.fee_for(0.0005, n, p0)
    b.apply_fill(fill(PERP, Side.SELL, n, p0, mid0, fee0))
    assert b.perp.qty == pytest.approx(-n * SIZE / p0, rel=1e-12)
    assert b.perp.coin == pytest.approx(-0.0005 * n * SIZE / p0, rel=1e-12)
    assert b.fees == pytest.approx(0.0005 * n * SIZE / p0 * mid0, rel=1e-12)  # the BTC fee valued at the mid
    # a short sold below the mid: slippage = -(BTC) * (price - mid) > 0
    assert b.slippage == pytest.approx(-(n * SIZE / p0) * (p0 - mid0), rel=1e-12)
    assert b.traded_qty == pytest.approx(n * SIZE / p0, rel=1e-12)
    assert b.perp_spans == [[T0, None]]

    mark, rate = 47_000.0, 0.0003
    entry = b.apply_funding(FundingSettlement(T0 + 8 * NS_PER_HOUR, PERP, rate, 8.0, mark))
    assert entry is not None
    assert b.perp.price == mark  # revalued at the settlement's mark
    assert b.perp.funding_coin == pytest.approx(n * SIZE / mark * rate, rel=1e-12)
    assert entry.amount == pytest.approx(n * SIZE * rate, rel=1e-12) and entry.amount > 0
    assert entry.qty == pytest.approx(-n * SIZE / p0, rel=1e-12)
    assert b.funding_received == pytest.approx(n * SIZE * rate, rel=1e-12) and b.funding_paid == 0.0
    assert b.apply_funding(FundingSettlement(T0 + 16 * NS_PER_HOUR, PERP, -rate, 8.0, mark)).amount < 0

    fee1 = b.perp.fee_for(0.0005, n, p)
    b.apply_fill(fill(PERP, Side.BUY, n, p, mid, fee1, ts=T0 + 20 * NS_PER_HOUR))
    assert b.perp.qty == 0.0
    expected_btc = n * SIZE * (1 / p - 1 / p0) - fee0 - fee1 + n * SIZE / mark * rate - n * SIZE / mark * rate
    assert b.perp.coin == pytest.approx(expected_btc, rel=1e-9)
    assert b.perp_spans == [[T0, T0 + 20 * NS_PER_HOUR]]
    assert identity_gap(b) == pytest.approx(0.0, abs=1e-7)


def test_inverse_short_through_the_book_coin_collateral_sweeps_the_btc_to_spot():
    b = PositionBook.open(SPOT, PERP, 100_000.0, 0.0, contract_size=SIZE, collateral=Collateral(COIN))
    b.apply_fill(fill(SPOT, Side.BUY, 2.0, 50_000.0))
    b.apply_fill(fill(PERP, Side.SELL, 1_000, 50_000.0, fee=0.001))
    assert b.perp.coin == 0.0
    assert b.spot.qty == pytest.approx(2.0 - 0.001, rel=1e-12)
    b.apply_funding(FundingSettlement(T0 + NS_PER_HOUR, PERP, 0.0001, 8.0, 40_000.0))
    assert b.spot.qty == pytest.approx(2.0 - 0.001 + 1_000 * SIZE / 40_000.0 * 0.0001, rel=1e-12)
    assert b.perp.funding_coin == pytest.approx(1_000 * SIZE / 40_000.0 * 0.0001, rel=1e-12)
    b.apply_fill(fill(PERP, Side.BUY, 1_000, 40_000.0, ts=T0 + 2 * NS_PER_HOUR))
    assert b.spot.qty == pytest.approx(2.0 - 0.001 + 1_000 * SIZE * (0.0001 / 40_000 + 1 / 40_000 - 1 / 50_000), rel=1e-12)
    assert b.perp.coin == 0.0 and b.perp.qty == 0.0
    assert b.hedged_btc == pytest.approx(1_000 * SIZE / 50_000.0, rel=1e-12)
    assert identity_gap(b) == pytest.approx(0.0, abs=1e-7)


# --- the accounting identity under random sequences -------------------------------------------

steps = st.lists(st.one_of(
    # spot: buy a fraction of 4 BTC, or sell a fraction of what is held
    st.tuples(st.just("spot"), st.sampled_from([Side.BUY, Side.SELL]), st.floats(0.01, 1.0),
              st.floats(-0.002, 0.002), st.floats(0.0, 0.001)),
    # perp: whole contracts (inverse) or 0.001 BTC lots (linear)
    st.tuples(st.just("perp"), st.sampled_from([Side.BUY, Side.SELL]), st.integers(1, 2_000),
              st.floats(-0.002, 0.002), st.floats(0.0, 0.001)),
    st.tuples(st.just("revalue"), st.sampled_from([SPOT, PERP]), st.floats(-0.2, 0.2)),
    st.tuples(st.just("funding"), st.floats(-0.003, 0.003), st.floats(-0.01, 0.01)),
), max_size=40)


def _run_identity(b: PositionBook, seq: list, start_price: float) -> None:
    prices = {SPOT: start_price, PERP: start_price * 1.0005}
    inverse = b.perp.contract_size > 0
    for venue, price in prices.items():  # both legs priced before anything trades, as the engine's feeds do
        b.revalue(venue, price)
    ts, notional = T0, b.initial_equity
    for step in seq:
        ts += NS_PER_HOUR
        kind = step[0]
        if kind == "spot":
            _, side, frac, slip, rate = step
            qty = frac * 4.0 if side is Side.BUY else frac * b.spot.qty
            if qty <= 1e-9:
                continue
            mid = prices[SPOT]
            price = mid * (1 + slip)
            b.apply_fill(Fill(ts, SPOT, "s", side, qty, price, mid, rate * qty * price))
            notional += qty * price
        elif kind == "perp":
            _, side, units, slip, rate = step
            mid = prices[PERP]
            price = mid * (1 + slip)
            qty = float(units) if inverse else units * 0.001
            fee = b.perp.fee_for(rate, qty, price)
            b.apply_fill(Fill(ts, PERP, "p", side, qty, price, mid, fee))
            notional += b.perp.btc_of(qty, price) * price
        elif kind == "revalue":
            _, venue, move = step
            prices[venue] = max(1_000.0, prices[venue] * (1 + move))
            b.revalue(venue, prices[venue])
        else:
            _, rate, basis = step
            mark = prices[PERP] * (1 + basis)
            b.apply_funding(FundingSettlement(ts, PERP, rate, 8.0, mark))
            prices[PERP] = mark if inverse else prices[PERP]  # an inverse settlement revalues the perp at its mark
        assert abs(identity_gap(b)) <= 1e-9 * notional, (step, identity_gap(b), notional)
    assert b.funding == pytest.approx(sum(e.amount for e in b.funding_ledger), rel=1e-9, abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(seq=steps, start=st.floats(10_000.0, 120_000.0), size=st.sampled_from([1.0, 10.0, 100.0]))
def test_identity_holds_coin_margined(seq, start, size):
    b = PositionBook.open(SPOT, PERP, 300_000.0, 0.0, contract_size=size, collateral=Collateral(COIN))
    _run_identity(b, seq, start)
    assert b.perp.coin == 0.0  # every BTC the perp settled has joined the spot leg


@settings(max_examples=200, deadline=None)
@given(seq=steps, start=st.floats(10_000.0, 120_000.0))
def test_identity_holds_unified_linear(seq, start):
    b = PositionBook.open(SPOT, PERP, 300_000.0, 0.0, collateral=Collateral(UNIFIED, TIERS))
    _run_identity(b, seq, start)
    assert b.perp.cash == 0.0  # the perp's settled USDT is the one account's cash
    assert b.perp.coin == 0.0


# --- delta of a covered coin-margined carry ------------------------------------------------------

@pytest.mark.parametrize(("q", "p0", "size"), [(1.9, 50_000.0, 100.0), (2.253, 42_147.35, 100.0),
                                               (0.37, 61_234.5, 100.0), (5.0, 33_333.0, 10.0), (1.234567, 45_678.9, 1.0)])
def test_covered_coin_margined_carry_is_flat_in_usd(q, p0, size):
    b = PositionBook.open(SPOT, PERP, 400_000.0, 0.0, contract_size=size, collateral=Collateral(COIN))
    n = round(q * p0 / size)
    b.apply_fill(fill(SPOT, Side.BUY, q, p0))
    b.apply_fill(fill(PERP, Side.SELL, n, p0))
    e0 = b.equity
    residual = abs(q - n * size / p0)  # BTC the whole contracts leave unhedged
    assert residual <= 0.5 * size / p0 + 1e-12
    assert b.drift == pytest.approx(residual / max(q, n * size / p0), rel=1e-9, abs=1e-12)
    for k in range(-40, 41):
        p = p0 * (1 + k / 50)  # -80% .. +80%
        if p <= 0:
            continue
        b.revalue(SPOT, p)
        b.revalue(PERP, p)
        move = abs(b.equity - e0)
        assert move <= residual * abs(p - p0) + 1e-6, (p, move)
        if k:
            assert move < 0.01 * q * abs(p - p0)  # an unhedged q would move q * |dP|
    assert abs(identity_gap(b)) < 1e-6


# --- sweep and exit_btc ----------------------------------------------------------------------------

def _legs(spot_qty: float = 2.0, spot_cash: float = 1_000.0, perp_cash: float = 250.0,
          coin: float = 0.0123) -> tuple[VenueAccount, VenueAccount]:
    spot = VenueAccount(SPOT, MarketKind.SPOT, spot_cash, qty=spot_qty, price=50_000.0)
    perp = VenueAccount(PERP, MarketKind.PERP, perp_cash, qty=-1.9, entry=50_000.0, price=49_900.0, coin=coin)
    return spot, perp


def test_coin_sweep_moves_the_perps_btc_into_the_spot_leg():
    spot, perp = _legs()
    moved = Collateral(COIN).sweep(spot, perp)
    assert spot.qty == pytest.approx(2.0123, rel=1e-12) and perp.coin == 0.0
    assert spot.cash == 1_000.0 and perp.cash == 250.0
    # the BTC is now valued at the spot mid rather than the perp's mark
    assert moved == pytest.approx(0.0123 * (50_000.0 - 49_900.0), rel=1e-12)
    assert Collateral(COIN).sweep(spot, perp) == 0.0 and spot.qty == pytest.approx(2.0123, rel=1e-12)


def test_unified_sweep_moves_the_perps_cash_into_the_spot_leg():
    spot, perp = _legs()
    assert Collateral(UNIFIED, TIERS).sweep(spot, perp) == 0.0
    assert spot.cash == 1_250.0 and perp.cash == 0.0
    assert spot.qty == 2.0 and perp.coin == 0.0123


@pytest.mark.parametrize("collateral", [OWN_COLLATERAL, Collateral(OWN)])
def test_own_sweep_moves_nothing(collateral):
    spot, perp = _legs()
    assert collateral.sweep(spot, perp) == 0.0
    assert (spot.qty, spot.cash, perp.cash, perp.coin) == (2.0, 1_000.0, 250.0, 0.0123)


@pytest.mark.parametrize("price", [30_000.0, 49_900.0, 50_000.0, 75_000.0])
def test_exit_btc_coin_counts_the_shorts_settlement_less_the_margin(price):
    spot, perp = _legs(coin=0.0)
    perp.price = price
    unrealized = -1.9 * (price - 50_000.0)
    expected = 2.0 + unrealized / price - EXIT_MARGIN * 1.9  # a linear short: its BTC is its size
    assert Collateral(COIN).exit_btc(spot, perp) == pytest.approx(expected, rel=1e-12)
    assert EXIT_MARGIN == 0.001
    for other in (OWN_COLLATERAL, Collateral(UNIFIED, TIERS)):
        assert other.exit_btc(spot, perp) == 2.0


@settings(max_examples=300, deadline=None)
@given(entry=st.floats(10_000.0, 100_000.0), move=st.floats(0.3, 3.0), contracts=st.integers(1, 5_000),
       spot_btc=st.floats(0.0, 10.0), slip=st.floats(0.0, 4e-4), fee_rate=st.floats(0.0, 5e-4))
def test_an_inverse_shorts_exit_sale_is_covered_by_what_its_close_settles(entry, move, contracts, spot_btc, slip,
                                                                        fee_rate):
    # the short is closed by buying back at up to 4 bp over the mark and a taker fee of up
    # to Binance COIN-M's 0.05%, both on the BTC it is worth at the close: the spot sale
    # sized before it never asks for more BTC than the account holds once it has settled,
    # and leaves at most twice the margin behind
    spot = VenueAccount(SPOT, MarketKind.SPOT, 0.0, qty=spot_btc, price=entry)
    perp = inverse_account()
    perp.trade(-contracts, entry, 0.0)
    mark = entry * move
    perp.price, spot.price = mark, mark
    sale = Collateral(COIN).exit_btc(spot, perp)
    close_px = mark * (1 + slip)
    face = contracts * SIZE
    settled = face / close_px - face / entry - fee_rate * face / close_px  # the short's BTC PnL less the fee
    held = spot_btc + settled
    assert sale <= held + 1e-12
    assert held - sale <= 2 * EXIT_MARGIN * face / mark + 1e-12


def test_exit_btc_coin_flat_or_unpriced_perp_is_the_spot():
    spot, perp = _legs(coin=0.0)
    perp.qty = 0.0
    assert Collateral(COIN).exit_btc(spot, perp) == 2.0
    spot, perp = _legs(coin=0.0)
    perp.price = math.nan
    assert Collateral(COIN).exit_btc(spot, perp) == 2.0


def test_coin_sweep_into_a_spot_leg_not_yet_priced_keeps_the_equity_a_number():
    """A perp fill (its fee in BTC) on a coin-margined book whose spot leg has
    seen no price yet: the sweep values the BTC it moves at the perp's price
    (``Collateral.sweep``), so the book's equity should stay a number and
    keep the identity."""
    b = PositionBook.open(SPOT, PERP, 100_000.0, 0.0, contract_size=SIZE, collateral=Collateral(COIN))
    fee = b.perp.fee_for(0.0005, 10, 50_000.0)
    b.apply_fill(fill(PERP, Side.SELL, 10, 50_000.0, fee=fee))
    assert b.spot.qty == pytest.approx(-fee, rel=1e-12)
    assert math.isfinite(b.equity), (b.spot, b.perp)
    assert identity_gap(b) == pytest.approx(0.0, abs=1e-9)
