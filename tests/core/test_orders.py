"""Order state machine: the transition table is the whole truth."""

from __future__ import annotations

import itertools

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fundarb.core.model import Fill, OrderIntent, Side
from fundarb.core.orders import (
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    Order,
    OrderStatus,
    client_order_id,
)

S = OrderStatus
ALL = list(OrderStatus)
LEGAL = [(a, b) for a in ALL for b in sorted(TRANSITIONS[a], key=lambda s: s.value)]
ILLEGAL = [(a, b) for a, b in itertools.product(ALL, ALL) if b not in TRANSITIONS[a]]


def order_in(status: OrderStatus, qty: float = 2.0, side: Side = Side.BUY) -> Order:
    o = Order("cid", "ex:spot", side, qty, ts_created=1, reason="entry")
    o.status = status
    return o


def fill(qty: float, price: float, fee: float = 0.0, side: Side = Side.BUY, ts: int = 5, cid: str = "cid") -> Fill:
    return Fill(ts, "ex:spot", cid, side, qty, price, price, fee)


def test_table_covers_every_status_and_terminals_are_dead_ends():
    assert set(TRANSITIONS) == set(OrderStatus)
    assert TERMINAL == {S.FILLED, S.CANCELED, S.REJECTED, S.EXPIRED}
    for s in TERMINAL:
        assert TRANSITIONS[s] == frozenset()
        assert s.terminal
    for s in set(OrderStatus) - TERMINAL:
        assert not s.terminal


def test_table_has_the_documented_edges():
    # a venue may skip the ack, and a fill may race a cancel
    assert S.FILLED in TRANSITIONS[S.SUBMITTED] and S.PARTIALLY_FILLED in TRANSITIONS[S.SUBMITTED]
    assert S.FILLED in TRANSITIONS[S.CANCEL_PENDING]
    assert S.NEW not in set().union(*TRANSITIONS.values())  # nothing goes back to NEW
    # guards the parametrisations below against an empty list
    assert len(LEGAL) >= 10 and len(ILLEGAL) >= 40
    assert len(LEGAL) + len(ILLEGAL) == len(ALL) ** 2


@pytest.mark.parametrize(("src", "dst"), LEGAL, ids=lambda s: s.value)
def test_every_legal_transition_works(src, dst):
    o = order_in(src)
    o.transition(dst, ts=42, reason="why")
    assert o.status is dst
    assert o.ts_updated == 42
    assert o.status_reason == "why"
    assert o.is_open is (dst not in TERMINAL)


@pytest.mark.parametrize(("src", "dst"), ILLEGAL, ids=lambda s: s.value)
def test_every_illegal_transition_raises_and_changes_nothing(src, dst):
    o = order_in(src)
    before = attrs.asdict(o)
    with pytest.raises(IllegalTransition):
        o.transition(dst, ts=42)
    assert attrs.asdict(o) == before


@pytest.mark.parametrize("terminal", sorted(TERMINAL, key=lambda s: s.value), ids=lambda s: s.value)
def test_nothing_leaves_a_terminal_state(terminal):
    o = order_in(terminal)
    for dst in ALL:
        with pytest.raises(IllegalTransition):
            o.transition(dst, ts=9)
    assert o.status is terminal


def test_partial_then_full_fill_and_average_price():
    o = order_in(S.ACCEPTED, qty=2.0)
    o.apply_fill(fill(0.5, 100.0, fee=0.05, ts=10))
    assert o.status is S.PARTIALLY_FILLED
    assert o.filled_qty == pytest.approx(0.5)
    assert o.remaining == pytest.approx(1.5)
    o.apply_fill(fill(1.5, 104.0, fee=0.156, ts=11))
    assert o.status is S.FILLED
    assert not o.is_open
    # (0.5 * 100 + 1.5 * 104) / 2 = 103
    assert o.avg_price == pytest.approx(103.0)
    assert o.fees == pytest.approx(0.206)
    assert o.remaining == 0.0
    assert o.ts_updated == 11


def test_fill_straight_from_submitted_is_allowed():
    o = order_in(S.SUBMITTED, qty=1.0)
    o.apply_fill(fill(1.0, 50.0))
    assert o.status is S.FILLED
    assert o.avg_price == 50.0


def test_fill_racing_a_cancel_is_allowed():
    o = order_in(S.CANCEL_PENDING, qty=1.0)
    o.apply_fill(fill(0.25, 50.0))
    assert o.status is S.PARTIALLY_FILLED


def test_overfill_raises():
    o = order_in(S.ACCEPTED, qty=1.0)
    o.apply_fill(fill(0.6, 10.0))
    with pytest.raises(IllegalTransition):
        o.apply_fill(fill(0.5, 10.0))
    with pytest.raises(IllegalTransition):
        order_in(S.ACCEPTED, qty=1.0).apply_fill(fill(1.01, 10.0))


@pytest.mark.parametrize("qty", [0.0, -0.1])
def test_non_positive_fill_raises(qty):
    with pytest.raises(IllegalTransition):
        order_in(S.ACCEPTED).apply_fill(fill(qty, 10.0))


def test_fill_for_another_order_or_side_is_refused():
    o = order_in(S.ACCEPTED)
    with pytest.raises(ValueError):
        o.apply_fill(fill(0.1, 10.0, cid="other"))
    with pytest.raises(ValueError):
        o.apply_fill(fill(0.1, 10.0, side=Side.SELL))
    assert o.filled_qty == 0.0


@pytest.mark.parametrize("status", [S.NEW, *sorted(TERMINAL, key=lambda s: s.value)], ids=lambda s: s.value)
def test_refused_fill_leaves_the_order_untouched(status):
    """A fill the state machine refuses (an order never sent, or already
    finished) must not be half-booked: filled quantity, notional and fees
    stay what they were."""
    o = order_in(status, qty=2.0)
    before = attrs.asdict(o)
    with pytest.raises(IllegalTransition):
        o.apply_fill(fill(0.5, 100.0, fee=0.1))
    assert attrs.asdict(o) == before


def test_from_intent_copies_the_intent():
    intent = OrderIntent("ex:perp", Side.SELL, 0.7, "entry", pair_id=3, reduce_only=True, limit_price=99.0)
    o = Order.from_intent(intent, "fa-1", ts=77)
    assert (o.venue, o.side, o.qty, o.reason, o.pair_id, o.reduce_only, o.limit_price) == (
        "ex:perp", Side.SELL, 0.7, "entry", 3, True, 99.0)
    assert o.status is S.NEW and o.ts_created == 77 and o.ts_updated == 77
    assert o.filled_qty == 0.0 and o.avg_price == 0.0


def test_client_order_id_is_deterministic_and_unique_per_sequence():
    h = "ab" * 32
    assert client_order_id(h, 1) == client_order_id(h, 1)
    ids = {client_order_id(h, i) for i in range(1, 1000)}
    assert len(ids) == 999
    assert client_order_id(h, 1) != client_order_id("cd" * 32, 1)
    assert h[:12] in client_order_id(h, 5)


# --- property: random attempted transitions and fills -------------------------

actions = st.lists(
    st.one_of(
        st.tuples(st.just("transition"), st.sampled_from(ALL)),
        st.tuples(st.just("fill"), st.floats(min_value=-0.5, max_value=3.0, allow_nan=False)),
    ),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(qty=st.floats(min_value=0.001, max_value=5.0), steps=actions)
def test_random_sequences_keep_the_order_consistent(qty, steps):
    o = Order("cid", "ex:spot", Side.BUY, qty, ts_created=0, reason="entry")
    for ts, (kind, arg) in enumerate(steps, start=1):
        before = o.status
        try:
            if kind == "transition":
                o.transition(arg, ts)
            else:
                o.apply_fill(fill(arg, 100.0 + ts, fee=0.01))
        except IllegalTransition:
            assert o.status is before
        else:
            if kind == "transition":
                assert arg in TRANSITIONS[before]
                assert o.status is arg
            else:
                assert o.status in (S.PARTIALLY_FILLED, S.FILLED)
        assert isinstance(o.status, OrderStatus)
        if before.terminal:
            assert o.status is before
        assert o.filled_qty <= qty * (1 + 1e-9) + 1e-12
        assert o.filled_qty >= 0.0
        if o.filled_qty > 0:
            assert 100.0 < o.avg_price <= 100.0 + ts + 1e-9
