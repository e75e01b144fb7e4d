"""The pure parts of the runner's live venue: which engine orders go out as
one paired operation, how a journal fill is booked, and the final state an
engine order is given from its journal row."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fundarb.core.book import PositionBook
from fundarb.core.model import Fill, Liquidity, Side
from fundarb.core.orders import TRANSITIONS, Order, OrderStatus
from fundarb.live.venue import _fill, _final, _groups
from fundarb.testkit.builders import T0

SPOT, PERP = "binance:spot", "binanceusdm:perp"
S = OrderStatus
NOW = T0 + 123


def order(cid: str, venue: str, side: Side = Side.BUY, qty: float = 1.0, reason: str = "entry",
          pair_id: int = 1) -> Order:
    """An engine order as the engine hands it to the venue: SUBMITTED."""
    o = Order(cid, venue, side, qty, T0, reason, pair_id, reduce_only=reason != "entry")
    o.transition(S.SUBMITTED, T0)
    return o


def ids(groups) -> list[list[str]]:
    return [[o.client_id for o in g] for g in groups]


# --- _groups -------------------------------------------------------------------------

def test_the_two_legs_of_one_decision_are_one_group():
    spot, perp = order("a", SPOT), order("b", PERP, Side.SELL)
    assert ids(_groups([spot, perp], SPOT, PERP)) == [["a", "b"]]
    assert ids(_groups([perp, spot], SPOT, PERP)) == [["b", "a"]]  # the order they came in


def test_lone_orders_stay_alone_and_the_order_is_kept():
    orders = [
        order("rebalance", SPOT, Side.SELL, 0.01, "rebalance", 3),
        order("x1", SPOT, Side.SELL, 1.0, "exit_signal", 4),
        order("kill", PERP, Side.BUY, 1.0, "kill_flatten", 4),   # same pair id, another reason: not its mate
        order("x2", PERP, Side.BUY, 1.0, "exit_signal", 4),
        order("unwind", PERP, Side.BUY, 0.5, "unwind", 5),
        order("s7", SPOT, Side.BUY, 1.0, "entry", 7),
        order("s8", SPOT, Side.BUY, 1.0, "entry", 8),              # two spot orders never pair
    ]
    assert ids(_groups(orders, SPOT, PERP)) == [["rebalance"], ["x1", "x2"], ["kill"], ["unwind"], ["s7"], ["s8"]]


def test_same_venue_same_pair_is_not_a_pair():
    a, b = order("a", PERP, pair_id=2), order("b", PERP, pair_id=2)
    assert ids(_groups([a, b], SPOT, PERP)) == [["a"], ["b"]]


ORDERS = st.lists(
    st.tuples(st.sampled_from([SPOT, PERP]), st.integers(0, 3),
              st.sampled_from(["entry", "exit_signal", "margin_reduce", "rebalance"])),
    max_size=12,
).map(lambda xs: [order(f"o{i}", v, pair_id=p, reason=r) for i, (v, p, r) in enumerate(xs)])


@settings(max_examples=300, deadline=None)
@given(orders=ORDERS)
def test_grouping_invariants(orders):
    groups = _groups(list(orders), SPOT, PERP)
    flat = [o for g in groups for o in g]
    # every order in exactly one group
    assert sorted(map(id, flat)) == sorted(map(id, orders)) and len(flat) == len(orders)
    pos = {id(o): i for i, o in enumerate(orders)}
    for g in groups:
        assert len(g) in (1, 2)
        if len(g) == 2:
            a, b = g
            assert {a.venue, b.venue} == {SPOT, PERP}
            assert a.pair_id == b.pair_id and a.reason == b.reason
            assert pos[id(a)] < pos[id(b)]
    # groups come in the order of their first order
    firsts = [pos[id(g[0])] for g in groups]
    assert firsts == sorted(firsts)
    # nothing left unpaired that could have paired
    lone = [g[0] for g in groups if len(g) == 1]
    for a, b in itertools.combinations(lone, 2):
        assert not (a.venue != b.venue and a.pair_id == b.pair_id and a.reason == b.reason)


def test_the_caller_list_is_left_alone():
    orders = [order("a", SPOT), order("b", PERP)]
    _groups(orders, SPOT, PERP)
    assert ids([orders]) == [["a", "b"]]


# --- _fill ------------------------------------------------------------------------------

LEG = SimpleNamespace(base="BTC", face=0.0)  # a leg that trades BTC
INVERSE = SimpleNamespace(base="BTC", face=100.0)  # an inverse perp: contracts of 100 USD, fees in BTC


def row(qty=0.5, price=60_000.0, fee=0.0005, fee_currency="BTC", fee_quote=30.0, side="buy", account=SPOT,
        liquidity="taker") -> dict:
    """A journal ``fills`` row (its column names)."""
    return {"qty": qty, "price": price, "fee": fee, "fee_currency": fee_currency, "fee_quote": fee_quote,
            "side": side, "account": account, "liquidity": liquidity}


def test_a_spot_buy_with_the_fee_in_btc_is_booked_net_of_it():
    f = _fill(row(), "cid-1", NOW, LEG)
    assert f == Fill(NOW, SPOT, "cid-1", Side.BUY, 0.5 - 0.0005, 60_000.0, 60_000.0, 30.0, Liquidity.TAKER)


def test_a_quote_fee_fill_is_unchanged():
    f = _fill(row(fee=30.0, fee_currency="USDT", fee_quote=30.0), "cid-2", NOW, LEG)
    assert (f.qty, f.price, f.mid, f.fee, f.side) == (0.5, 60_000.0, 60_000.0, 30.0, Side.BUY)


@pytest.mark.parametrize("r, qty, fee, liquidity", [
    (row(side="sell", fee=30.0, fee_currency="USDT"), 0.5, 30.0, Liquidity.TAKER),
    (row(fee=0.02, fee_currency="BNB", fee_quote=12.0, liquidity="maker"), 0.5, 12.0, Liquidity.MAKER),
    (row(fee=0.1, fee_currency="BNB", fee_quote=None), 0.5, 0.0, Liquidity.TAKER),  # no price for it: no quote value
    (row(account=PERP, side="sell", fee=15.0, fee_currency="USDT", fee_quote=15.0), 0.5, 15.0, Liquidity.TAKER),
])
def test_other_fills_keep_their_quantity(r, qty, fee, liquidity):
    f = _fill(r, "cid", NOW, LEG)
    assert (f.qty, f.fee, f.liquidity, f.venue, f.ts, f.client_id) == (qty, fee, liquidity, r["account"], NOW, "cid")


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_an_inverse_perp_fill_keeps_its_contracts_and_its_fee_in_btc(side):
    # the core's inverse account takes contracts and the fee in BTC, whichever side
    r = row(qty=61.0, price=61_391.4, fee=4.968e-05, fee_currency="BTC", fee_quote=3.0499, side=side, account=PERP)
    f = _fill(r, "cid", NOW, INVERSE)
    assert (f.qty, f.fee, f.side) == (61.0, 4.968e-05, Side(side))
    book = PositionBook.open(SPOT, PERP, 0.0, 0.0, contract_size=100.0)
    book.apply_fill(f)
    assert book.perp.units == pytest.approx(61.0 * Side(side).sign) and book.perp.fees_coin == pytest.approx(4.968e-05)


@settings(max_examples=200, deadline=None)
@given(qty=st.floats(0.001, 5.0), price=st.floats(1_000.0, 200_000.0), fee_rate=st.floats(0.0, 0.002))
def test_the_book_holds_what_the_venue_holds_after_a_btc_fee_buy(qty, price, fee_rate):
    # the venue: takes qty * price USDT, gives qty - fee BTC; the fee valued at the fill price
    fee_btc = qty * fee_rate
    f = _fill(row(qty=qty, price=price, fee=fee_btc, fee_quote=fee_btc * price), "c", NOW, LEG)
    cash0 = 1_000_000.0
    book = PositionBook.open(SPOT, PERP, cash0, 1e5)
    book.apply_fill(f)
    assert book.spot.qty == pytest.approx(qty - fee_btc, rel=1e-12, abs=1e-15)
    assert book.spot.cash == pytest.approx(cash0 - qty * price, rel=1e-12, abs=1e-6)
    assert book.fees == pytest.approx(fee_btc * price, rel=1e-12, abs=1e-12)


# --- _final -------------------------------------------------------------------------------

def jrow(status: OrderStatus, filled_qty: float, reason: str = "venue said so") -> dict:
    return {"status": status.value, "filled_qty": filled_qty, "status_reason": reason}


def test_no_row_is_rejected_as_not_sent():
    u = _final(order("a", PERP), None, NOW)
    assert (u.ts, u.venue, u.client_id, u.status) == (NOW, PERP, "a", S.REJECTED.value)
    assert u.reason.startswith("not sent")


@pytest.mark.parametrize("status, filled, want", [
    (S.CANCELED, 0.0, S.EXPIRED),
    (S.CANCELED, 0.4, S.EXPIRED),           # a market order cancelled: the rest did not fill
    (S.FILLED, 1.0, S.FILLED),
    (S.FILLED, 0.0, S.EXPIRED),
    (S.EXPIRED, 0.3, S.EXPIRED),
    (S.REJECTED, 0.0, S.REJECTED),
    (S.SUBMITTED, 0.0, S.EXPIRED),          # left open past the hedge timeout
    (S.ACCEPTED, 0.0, S.EXPIRED),
    (S.PARTIALLY_FILLED, 0.6, S.EXPIRED),
    (S.CANCEL_PENDING, 0.2, S.EXPIRED),
])
def test_terminal_status_mapping(status, filled, want):
    u = _final(order("a", SPOT), jrow(status, filled, "why"), NOW)
    assert u.status == want.value and u.reason == "why" and u.client_id == "a" and u.ts == NOW
    assert S(u.status).terminal


def consistent_cases():
    """(engine order status, journal row) an answer can meet: an engine order
    with no fills booked is SUBMITTED (its row absent, unfilled, or filled with
    no fill rows journaled); one with fills booked is PARTIALLY_FILLED and its
    row has filled something (a journaled order never goes from a fill to
    rejected: a refusal after a fill is recorded as expired)."""
    out = [(S.SUBMITTED, None)]
    for st_ in OrderStatus:
        if st_ is S.NEW:
            continue
        out.append((S.SUBMITTED, jrow(st_, 0.0)))
        out.append((S.SUBMITTED, jrow(st_, 0.5)))
        if st_ is not S.REJECTED:
            out.append((S.PARTIALLY_FILLED, jrow(st_, 0.5)))
    return out


@pytest.mark.parametrize("engine_status, r", consistent_cases())
def test_the_final_state_is_a_legal_transition_for_the_engine_order(engine_status, r):
    o = order("a", SPOT, qty=1.0)
    if engine_status is S.PARTIALLY_FILLED:
        o.apply_fill(Fill(T0, SPOT, "a", Side.BUY, 0.5, 60_000.0, 60_000.0, 0.0))
    assert o.status is engine_status
    u = _final(o, r, NOW)
    assert S(u.status) in TRANSITIONS[engine_status]
    o.transition(S(u.status), u.ts, u.reason)  # raises on an illegal one
    assert not o.is_open and o.ts_updated == NOW
