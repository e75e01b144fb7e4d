"""The market guard: an implausible price is held (never applied to the
book, so it never moves the drawdown the kill switch measures), reported
once, accepted only when it persists or another source moves the same way,
and dropped when a plausible price comes back."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fundarb.core.book import PositionBook
from fundarb.core.engine import Engine
from fundarb.core.market_guard import GuardLimits, MarketGuard
from fundarb.core.model import NS_PER_SECOND, FundingSettlement, MarkPrice, Quote, Side
from fundarb.core.risk import RiskLimits, RiskMonitor, VenueCosts
from fundarb.data.margin_tiers import shipped_rule
from fundarb.testkit.builders import PERP, SPOT, T0, QuietStrategy, make_fill

S = NS_PER_SECOND
MID = 60_000.0
COSTS = VenueCosts(spot_taker_fee=0.001, perp_taker_fee=0.0005, slippage_allowance=0.001,
                   margin=shipped_rule("binanceusdm", "BTC/USDT:USDT"), transfer_fee=1.0)


def whats(g: MarketGuard) -> list[tuple[str, str]]:
    out = [(n.what, n.series) for n in g.notes]
    g.notes.clear()
    return out


# --- the guard alone -------------------------------------------------------------

def test_a_single_ten_times_spike_is_held_reported_once_and_dropped_when_the_real_price_returns():
    g = MarketGuard()
    assert g.observe("mark", T0, MID, "a") == ("a",)
    assert g.observe("mark", T0 + S, 10 * MID, "spike") == ()
    assert whats(g) == [("held", "mark")]
    assert g.last("mark") == MID and g.is_held("mark")
    assert g.observe("mark", T0 + 2 * S, MID * 1.001, "b") == ("b",)
    assert whats(g) == [("dropped", "mark")]
    assert g.last("mark") == MID * 1.001 and not g.is_held("mark")


def test_garbage_of_one_episode_is_reported_once():
    g = MarketGuard()
    g.observe("mark", T0, MID)
    for k, bad in enumerate((10 * MID, 0.01 * MID, 7 * MID), 1):  # different wrong values, never the same level
        assert g.observe("mark", T0 + k * S, bad) == ()
    assert whats(g) == [("held", "mark")]
    assert g.held_total == 1


def test_a_move_that_persists_is_accepted_after_confirm_count_observations():
    g = MarketGuard(GuardLimits(max_jump=0.2, confirm_count=3, confirm_seconds=3600))
    g.observe("spot", T0, MID)
    assert g.observe("spot", T0 + S, 0.5 * MID, 1) == ()
    assert g.observe("spot", T0 + 2 * S, 0.51 * MID, 2) == ()
    assert g.observe("spot", T0 + 3 * S, 0.505 * MID, 3) == (3,)
    assert whats(g) == [("held", "spot"), ("accepted", "spot")]
    assert g.last("spot") == 0.505 * MID
    assert g.observe("spot", T0 + 4 * S, 0.50 * MID, 4) == (4,)  # the new level is the reference now


def test_a_move_that_persists_for_confirm_seconds_is_accepted_on_its_second_observation():
    g = MarketGuard(GuardLimits(max_jump=0.2, confirm_count=10, confirm_seconds=30))
    g.observe("spot", T0, MID)
    assert g.observe("spot", T0 + S, 0.5 * MID) == ()
    assert g.observe("spot", T0 + 20 * S, 0.5 * MID) == ()
    assert g.observe("spot", T0 + 31 * S, 0.5 * MID, "x") == ("x",)
    assert [w for w, _ in whats(g)] == ["held", "accepted"]


def test_two_sources_moving_the_same_way_confirm_each_other_at_once():
    g = MarketGuard(GuardLimits(max_jump=0.2))
    g.observe("spot", T0, MID, "s0")
    g.observe("mark", T0, MID * 1.001, "m0")
    assert g.observe("spot", T0 + S, 0.6 * MID, "s1") == ()  # a crash seen first on spot: held
    assert g.observe("mark", T0 + S, 0.6 * MID * 1.001, "m1") == ("s1", "m1")  # the mark too: both accepted
    assert whats(g) == [("held", "spot"), ("accepted", "spot")]
    assert g.last("spot") == 0.6 * MID and g.last("mark") == 0.6 * MID * 1.001


def test_two_sources_moving_opposite_ways_confirm_nothing():
    g = MarketGuard(GuardLimits(max_jump=0.2, max_gap=10.0))
    g.observe("spot", T0, MID)
    g.observe("mark", T0, 3 * MID)  # far apart already (a wide gap allowed)
    assert g.observe("spot", T0 + S, 2 * MID) == ()  # up
    assert g.observe("mark", T0 + S, 2 * MID) == ()  # down to the same level: not the same move
    assert whats(g) == [("held", "spot"), ("held", "mark")]


def test_a_series_catching_up_with_the_others_is_accepted():
    g = MarketGuard(GuardLimits(max_jump=0.2, confirm_count=50, confirm_seconds=3600))
    g.observe("spot", T0, MID)
    g.observe("perp", T0, MID)
    g.observe("mark", T0, MID)
    assert g.observe("spot", T0 + S, 0.6 * MID, "s") == ()
    assert g.observe("perp", T0 + S, 0.6 * MID, "p") == ("s", "p")  # the perp confirms the held spot
    assert g.last("spot") == 0.6 * MID
    # the mark, last seen before the move: both others are there already
    assert g.observe("mark", T0 + 2 * S, 0.6 * MID, "m") == ("m",)


def test_a_mark_far_from_a_recent_spot_is_held_but_an_old_reference_says_nothing():
    g = MarketGuard(GuardLimits(max_gap=0.05, reference_seconds=60))
    g.observe("spot", T0, MID)
    g.observe("mark", T0, MID)
    assert g.observe("mark", T0 + S, 1.2 * MID) == ()  # within max_jump, 20% from spot a second ago
    assert whats(g)[0] == ("held", "mark")
    g2 = MarketGuard(GuardLimits(max_gap=0.05, reference_seconds=60))
    g2.observe("spot", T0, MID)
    g2.observe("mark", T0, MID)
    assert g2.observe("mark", T0 + 120 * S, 1.2 * MID, "m") == ("m",)  # spot is two minutes old: not a reference


def test_a_price_that_is_not_a_positive_number_is_refused():
    g = MarketGuard()
    g.observe("spot", T0, MID)
    for bad in (0.0, -1.0, math.nan, math.inf):
        assert g.observe("spot", T0 + S, bad) == ()
    assert [w for w, _ in whats(g)] == ["refused"] * 4
    assert g.last("spot") == MID


def test_a_settlement_at_an_implausible_mark_takes_the_last_accepted_mark():
    g = MarketGuard()
    assert g.settlement_price("mark", T0, 10 * MID) == 10 * MID  # nothing to judge against yet
    g.observe("mark", T0, MID)
    assert g.settlement_price("mark", T0 + S, MID * 1.01) == MID * 1.01
    assert g.settlement_price("mark", T0 + S, 10 * MID) == MID
    assert whats(g) == [("replaced", "mark")]


def test_limits_are_checked():
    with pytest.raises(ValueError, match="max_jump"):
        GuardLimits(max_jump=0)
    with pytest.raises(ValueError, match="confirm_count"):
        GuardLimits(confirm_count=1)


# --- in the engine ---------------------------------------------------------------

class Venue:
    """Takes orders and answers nothing (the kill switch's flatten stays in flight)."""

    def __init__(self) -> None:
        self.sent: list = []

    def submit(self, order) -> None:
        self.sent.append(order)

    def cancel(self, client_id: str) -> None:
        pass

    def request_transfer(self, request) -> None:
        pass


def carry_engine(limits: GuardLimits | None = None) -> tuple[Engine, Venue]:
    """A 1 BTC carry (long spot, short perp) at MID; the book holds MID as its prices."""
    b = PositionBook.open(SPOT, PERP, 65_000.0, 35_000.0)
    b.apply_fill(make_fill(SPOT, Side.BUY, 1.0, MID))
    b.apply_fill(make_fill(PERP, Side.SELL, 1.0, MID))
    venue = Venue()
    monitor = RiskMonitor(RiskLimits(), COSTS)
    monitor.peak_equity = b.equity
    return Engine(venue, b, QuietStrategy(), monitor, "cfghash", guard=MarketGuard(limits) if limits else None), venue


def test_engine_a_ten_times_mark_never_reaches_the_book_or_the_kill_switch():
    engine, venue = carry_engine()
    equity = engine.book.equity
    engine.on_event(MarkPrice(T0 + S, PERP, 10 * MID))
    assert engine.book.perp.price == MID and engine.book.equity == equity
    assert not engine.monitor.kill.halted and venue.sent == []
    assert [(a.kind, a.severity) for a in engine.alerts] == [("implausible_price", "warning")]
    engine.on_event(MarkPrice(T0 + 2 * S, PERP, 10 * MID))  # the same wrong level again: no second alert
    engine.on_event(MarkPrice(T0 + 3 * S, PERP, MID * 1.0001))
    assert len(engine.alerts) == 1 and not engine.monitor.kill.halted
    assert [n.what for n in engine.price_notes] == ["held", "dropped"]


def test_engine_a_crash_both_legs_make_is_applied_and_a_lone_opposite_mark_is_not():
    """The guard holds single prices, not the market: a move both legs make is real."""
    engine, venue = carry_engine(GuardLimits(max_jump=0.2))
    engine.on_event(Quote(T0 + S, SPOT, 0.7 * MID, 0.7 * MID, 1.0, 1.0))  # held for a moment
    assert not engine.monitor.kill.halted
    engine.on_event(MarkPrice(T0 + S, PERP, 1.6 * MID))  # a short squeeze would halt; not the same move
    assert engine.book.perp.price == MID and not engine.monitor.kill.halted
    engine.on_event(MarkPrice(T0 + 2 * S, PERP, 0.7 * MID * 1.001))  # the perp moved with spot: both real
    assert engine.book.spot.price == 0.7 * MID and engine.book.perp.price == 0.7 * MID * 1.001
    assert not engine.monitor.kill.halted  # hedged: the real crash moves the carry's equity little


def test_engine_a_genuine_move_confirmed_over_time_is_accepted_and_can_halt():
    engine, venue = carry_engine(GuardLimits(max_jump=0.2, confirm_count=3))
    for k in range(1, 4):  # the perp alone (spot quiet), far up, three times: it is the price now
        engine.on_event(MarkPrice(T0 + k * S, PERP, 1.5 * MID))
    assert engine.book.perp.price == 1.5 * MID
    assert engine.monitor.kill.halted  # a 30k loss on the short is a real drawdown
    assert [n.what for n in engine.price_notes] == ["held", "accepted"]


def test_engine_settles_funding_at_the_last_accepted_mark_when_the_settlement_mark_is_wrong():
    engine, _ = carry_engine()
    engine.on_event(MarkPrice(T0 + S, PERP, MID))
    engine.on_event(FundingSettlement(T0 + 2 * S, PERP, 0.0001, 8.0, 10 * MID, "last_mark"))
    entry = engine.book.funding_ledger[-1]
    assert entry.mark == MID and entry.mark_source == "last_accepted_mark"
    assert entry.amount == pytest.approx(1.0 * MID * 0.0001)
    assert [a.kind for a in engine.alerts] == ["implausible_price"]


def test_engine_screen_passes_an_accepted_event_once_more_unchanged():
    """The paper runner screens an event before its simulator, which hands the
    same event to the engine: the second look accepts it at once."""
    engine, _ = carry_engine()
    m = MarkPrice(T0 + S, PERP, MID * 1.01)
    assert engine.screen(m) == (m,)
    engine.on_event(m)
    assert engine.book.perp.price == MID * 1.01 and engine.price_notes == []


# --- property: spikes alone never fire the kill switch ----------------------------------

def _real_path(steps: list[tuple[float, float]]) -> list:
    """Rounds 10 s apart: a spot quote and the mark, a random walk with a small basis."""
    out, px = [], MID
    for k, (ret, basis) in enumerate(steps):
        px *= 1 + ret
        ts = T0 + (k + 1) * 10 * S
        out.append(Quote(ts, SPOT, px, px, 1.0, 1.0))
        out.append(MarkPrice(ts, PERP, px * (1 + basis)))
    return out


def _run(events: list[tuple[object, bool]]) -> list[tuple[float, bool, float]]:
    """(equity, halted, drawdown) after every real sample; ``events`` are (event, is a spike)."""
    engine, _ = carry_engine()
    seen = []
    for ev, spike in events:
        engine.on_event(ev)
        if not spike:
            seen.append((engine.book.equity, engine.monitor.kill.halted, engine.monitor.drawdown))
    return seen


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.tuples(st.floats(-0.03, 0.03), st.floats(-0.003, 0.003)), min_size=4, max_size=60),
       spikes=st.lists(st.tuples(st.integers(0, 10_000), st.booleans(), st.booleans(),
                                 st.floats(2.5, 1000.0)), max_size=12))
def test_single_sample_spikes_never_move_equity_or_fire_the_kill_switch(steps, spikes):
    """Any real path with isolated one-sample spikes (any series, up or down,
    x2.5 to x1000) inserted: the book's equity, the drawdown and the kill
    switch after every real sample are what they are without the spikes."""
    real = _real_path(steps)
    rounds = len(steps)
    spiked, taken = [(ev, False) for ev in real], set()
    for k, on_mark, up, factor in sorted(((at % rounds, *rest) for at, *rest in spikes), reverse=True):
        if any(abs(k - j) < 2 for j in taken):  # isolated: a full real round between two spikes
            continue
        taken.add(k)
        q, m = real[2 * k], real[2 * k + 1]
        f = factor if up else 1 / factor
        spike = MarkPrice(m.ts, PERP, m.mark * f) if on_mark else Quote(q.ts, SPOT, q.bid * f, q.ask * f, 1.0, 1.0)
        spiked.insert(2 * k + (1 if on_mark else 0), (spike, True))  # just before its series' real sample
    assert _run(spiked) == _run([(ev, False) for ev in real])


class _FullJudgement(MarketGuard):
    """The guard with its cheap first test switched off: every observation judged in full."""

    def accept_plain(self, key: str, ts: int, price: float) -> bool:
        return False


_observation = st.tuples(
    st.sampled_from(["quote spot", "quote perp", "mark perp"]),
    st.integers(0, 90 * S),  # time to the previous observation
    st.one_of(st.floats(0.5, 2.5), st.sampled_from([1.0, 1.1, 1 / 1.1, 2.0, 0.5, 10.0, 0.1, math.nan, 0.0])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_observation, min_size=1, max_size=60), st.floats(0.01, 1.5), st.floats(0.01, 0.3))
def test_the_cheap_acceptance_gives_the_verdicts_of_the_full_judgement(obs, max_jump, max_gap):
    """``accept_plain`` takes only prices the full rules accept: a guard that
    judges every observation in full returns the same payloads, notes and
    accepted prices, observation by observation."""
    limits = GuardLimits(max_jump=max_jump, max_gap=max_gap)
    fast, full = MarketGuard(limits), _FullJudgement(limits)
    ts, price = T0, MID
    for n, (key, dt, factor) in enumerate(obs):
        ts += dt
        price = MID * factor if n % 3 else price * factor  # some near the others, some moving on
        assert fast.observe(key, ts, price, n) == full.observe(key, ts, price, n)
        assert whats(fast) == whats(full)
        assert {k: (s.price, s.ts, s.held) for k, s in fast.series.items()} == \
            {k: (s.price, s.ts, s.held) for k, s in full.series.items()}
