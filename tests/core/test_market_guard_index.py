"""The perp venue's index price in the market guard: a series of its own,
judged like any price (a jump from its own last, a gap from the others) and,
once accepted, one more reference for the others. A mark that agrees with the
spot quote but not with the venue's own index is held; an index that moved
with a held mark confirms it. The index never reaches the book."""

from __future__ import annotations

import asyncio

from test_market_guard import carry_engine

from fundarb.app.runner.pacing import Pacer
from fundarb.core.market_guard import MarketGuard
from fundarb.core.model import NS_PER_SECOND, Fill, IndexPrice, MarkPrice, OrderUpdate, Quote
from fundarb.sim import queue as q
from fundarb.testkit.builders import PERP, SIM_SPOT, SPOT, T0, bare_sim, push, sim_buy, sim_quote

S = NS_PER_SECOND
MID = 60_000.0
INDEX, MARK, QUOTE = f"index {PERP}", f"mark {PERP}", f"quote {SPOT}"


def spot(ts: int, px: float) -> Quote:
    return Quote(ts, SPOT, px, px, 1.0, 1.0)


def notes(engine) -> list[tuple[str, str]]:
    out = [(n.what, n.series) for n in engine.price_notes]
    engine.price_notes.clear()
    return out


# --- a reference for the mark ----------------------------------------------------

def test_a_mark_that_agrees_with_spot_but_is_15pct_off_a_recent_index_is_held():
    engine, venue = carry_engine()
    engine.on_event(spot(T0, MID))
    engine.on_event(IndexPrice(T0, PERP, 0.92 * MID))  # 8% under spot: within max_gap (10%)
    assert engine.guard.last(INDEX) == 0.92 * MID and not engine.guard.is_held(INDEX)
    mark = 0.92 * MID * 1.15  # 5.8% over spot, 15% over the venue's own index
    engine.on_event(MarkPrice(T0 + S, PERP, mark))
    assert engine.book.perp.price == MID  # never applied
    assert engine.guard.is_held(MARK)
    assert notes(engine) == [("held", MARK)]
    (alert,) = engine.alerts
    assert alert.kind == "implausible_price" and f"away from {INDEX}" in alert.message and "+15%" in alert.message
    assert venue.sent == [] and not engine.monitor.kill.halted


def test_without_the_index_the_same_mark_is_accepted():
    """The control of the test above: the spot quote alone lets that mark through."""
    engine, _ = carry_engine()
    engine.on_event(spot(T0, MID))
    engine.on_event(MarkPrice(T0 + S, PERP, 0.92 * MID * 1.15))
    assert engine.book.perp.price == 0.92 * MID * 1.15 and engine.price_notes == []


def test_an_old_index_says_nothing_about_now():
    engine, _ = carry_engine()
    engine.on_event(IndexPrice(T0, PERP, 0.92 * MID))
    later = T0 + 61 * S  # past market_data.reference_seconds (60 s)
    engine.on_event(spot(later, MID))
    engine.on_event(MarkPrice(later, PERP, 0.92 * MID * 1.15))
    assert engine.book.perp.price == 0.92 * MID * 1.15 and engine.price_notes == []


# --- the index judged itself ------------------------------------------------------

def test_an_index_at_ten_times_is_held_alerted_once_never_a_reference_and_dropped():
    engine, venue = carry_engine()
    engine.on_event(spot(T0, MID))
    engine.on_event(IndexPrice(T0, PERP, MID))
    equity = engine.book.equity
    engine.on_event(IndexPrice(T0 + S, PERP, 10 * MID))
    engine.on_event(IndexPrice(T0 + 2 * S, PERP, 10 * MID))  # the same wrong level again: no second alert
    assert engine.guard.is_held(INDEX) and engine.guard.last(INDEX) == MID
    assert engine.book.equity == equity and not engine.monitor.kill.halted and venue.sent == []
    (alert,) = engine.alerts
    assert alert.kind == "implausible_price" and alert.severity == "warning"
    assert alert.message.startswith(f"{INDEX}: price 600,000.00") and "+900%" in alert.message
    engine.on_event(MarkPrice(T0 + 3 * S, PERP, MID * 1.001))  # judged against the accepted index, not the held one
    assert engine.book.perp.price == MID * 1.001
    engine.on_event(IndexPrice(T0 + 4 * S, PERP, MID * 1.0005))
    assert notes(engine) == [("held", INDEX), ("dropped", INDEX)]
    assert not engine.guard.is_held(INDEX) and engine.guard.last(INDEX) == MID * 1.0005


def test_an_index_far_from_spot_and_mark_is_held():
    engine, _ = carry_engine()
    engine.on_event(spot(T0, MID))
    engine.on_event(MarkPrice(T0, PERP, MID))
    engine.on_event(IndexPrice(T0 + S, PERP, 0.5 * MID))  # its first value: no jump, but a gap
    assert engine.guard.is_held(INDEX) and notes(engine) == [("held", INDEX)]


# --- confirmation across sources, by the guard's rules ---------------------------------

def _all_at(engine, px: float) -> None:
    engine.on_event(spot(T0, px))
    engine.on_event(MarkPrice(T0, PERP, px))
    engine.on_event(IndexPrice(T0, PERP, px))


def test_a_held_index_and_a_mark_moving_the_same_way_confirm_each_other():
    engine, _ = carry_engine()
    _all_at(engine, MID)
    engine.on_event(IndexPrice(T0 + S, PERP, 1.15 * MID))  # 15% from spot and mark: held
    assert engine.guard.is_held(INDEX)
    mark = 1.15 * MID * 1.001
    engine.on_event(MarkPrice(T0 + 2 * S, PERP, mark))  # 15% from spot too, but the index went there
    assert engine.book.perp.price == mark
    assert engine.guard.last(INDEX) == 1.15 * MID and not engine.guard.is_held(INDEX)
    assert f"confirmed across sources by {MARK}" in engine.price_notes[-1].message
    assert notes(engine) == [("held", INDEX), ("accepted", INDEX)]
    # the hold only: an acceptance is no alarm (the risk monitor's own word on the new mark aside)
    assert [a.kind for a in engine.alerts if a.kind == "implausible_price"] == ["implausible_price"]


def test_a_held_mark_is_applied_when_the_index_moves_there_too():
    engine, _ = carry_engine()
    _all_at(engine, MID)
    mark = 1.15 * MID
    engine.on_event(MarkPrice(T0 + S, PERP, mark))
    assert engine.book.perp.price == MID and engine.guard.is_held(MARK)
    engine.on_event(IndexPrice(T0 + 2 * S, PERP, mark * 0.999))  # the index releases the held mark to the book
    assert engine.book.perp.price == mark and not engine.guard.is_held(MARK)
    assert notes(engine) == [("held", MARK), ("accepted", MARK)]


def test_a_held_mark_is_not_applied_when_the_index_moves_the_other_way():
    engine, _ = carry_engine()
    _all_at(engine, MID)
    engine.on_event(MarkPrice(T0 + S, PERP, 1.15 * MID))
    engine.on_event(IndexPrice(T0 + 2 * S, PERP, 0.85 * MID))
    assert engine.book.perp.price == MID and engine.guard.is_held(MARK) and engine.guard.is_held(INDEX)


def test_an_accepted_index_lets_a_mark_catch_up_past_max_jump():
    """The rule for a series catching up: the mark jumps more than max_jump
    (100%), and the only recent reference, the venue's index, is already there."""
    engine, _ = carry_engine()
    engine.on_event(spot(T0, MID))
    engine.on_event(MarkPrice(T0, PERP, MID))
    later = T0 + 120 * S  # spot and mark are no longer references
    engine.on_event(IndexPrice(later, PERP, 2.5 * MID))
    assert engine.guard.last(INDEX) == 2.5 * MID
    engine.on_event(MarkPrice(later + S, PERP, 2.5 * MID * 1.001))
    assert engine.book.perp.price == 2.5 * MID * 1.001 and engine.price_notes == []


def test_without_an_index_the_mark_past_max_jump_is_held():
    engine, _ = carry_engine()
    engine.on_event(spot(T0, MID))
    engine.on_event(MarkPrice(T0, PERP, MID))
    engine.on_event(MarkPrice(T0 + 121 * S, PERP, 2.5 * MID * 1.001))
    assert engine.book.perp.price == MID and engine.guard.is_held(MARK)


# --- the index values nothing -------------------------------------------------------

def test_an_accepted_index_leaves_the_book_and_the_risk_monitor_alone():
    engine, _ = carry_engine()
    before = (engine.book.equity, engine.book.perp.price, engine.book.spot.price, engine.spot_mid)
    idx = IndexPrice(T0 + S, PERP, MID * 1.05)
    assert engine.screen(idx) == (idx,)  # what the paper runner asks first; accepted again at once below
    engine.on_event(idx)
    assert (engine.book.equity, engine.book.perp.price, engine.book.spot.price, engine.spot_mid) == before
    assert engine.guard.last(INDEX) == MID * 1.05 and engine.price_notes == [] and engine.alerts == []


def test_the_guard_series_are_named_by_kind_and_venue():
    engine, _ = carry_engine()
    _all_at(engine, MID)
    assert {INDEX, MARK, QUOTE} <= set(engine.guard.series)
    assert isinstance(engine.guard, MarketGuard)


# --- the runner's pacer and the paper simulator -------------------------------------------

def test_the_pacer_sorts_an_index_like_a_mark():
    pacer = Pacer(PERP, settled_rate=lambda at: asyncio.sleep(0, None))

    async def go():
        return await pacer.pace(IndexPrice(T0, PERP, MID))
    assert asyncio.run(go()) == [(T0, q.P_MARK, IndexPrice(T0, PERP, MID))]


def test_the_paper_simulator_passes_an_index_through_after_what_fell_due():
    """The paper runner feeds an accepted index through the simulator like any
    market event: what fell due before it comes first (so the engine's clock
    never passes an order's arrival), the index itself after, unchanged, and
    the simulator's prices do not move."""
    sim = bare_sim(100.0)
    push(sim, sim_quote(T0, MID))
    sim.submit(sim_buy(T0))
    idx = IndexPrice(T0 + S, PERP, 2 * MID)
    got = push(sim, idx, q.P_MARK)
    assert [type(x) for x in got] == [OrderUpdate, Fill, IndexPrice]
    assert got[-1] is idx and got[1].price == MID
    assert sim.accounts[SIM_SPOT].acct.price == MID
