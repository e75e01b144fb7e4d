"""The venue rotation rule: when a carry moves to another pair of venues."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fundarb.core.model import NS_PER_HOUR
from fundarb.core.rotation import Pair, RotationRule, SwitchCost

A, B, C = "binanceusdm", "bybit", "okx"
PAIRS = [Pair(x, y) for x in (A, B, C) for y in (A, B, C) if x != y]
DAY = 24 * NS_PER_HOUR
COST = SwitchCost(round_trips=0.004, withdrawals=2 / 65_000, delay_hours=1.0)


def rule(hysteresis: float = 0.02, min_hold: float = 7.0, hold: float = 30.0) -> RotationRule:
    return RotationRule(hold, hysteresis, min_hold)


def test_the_bar_is_the_amortised_cost_the_carry_forgone_in_transit_and_the_hysteresis():
    r = rule()
    # (0.004 + 2/65000) * 365 / 30, plus 10% APR over 1 h of a 720 h hold, plus 2%
    expected = (0.004 + 2 / 65_000) * 365 / 30 + 0.10 * 1 / 720 + 0.02
    assert r.bar_apr(COST, 0.10) == pytest.approx(expected)
    assert r.bar_apr(COST, -0.5) == pytest.approx(expected - 0.10 / 720)  # nothing forgone on a pair that pays


def test_with_no_pair_held_the_best_known_pair_is_taken_and_unknown_pairs_are_none():
    r = rule()
    assert r.choose(None, 0, 0, {}, {}) is None
    move = r.choose(None, 0, 0, {Pair(A, B): 0.05, Pair(B, A): -0.05}, {})
    assert move is not None and move.to == Pair(A, B) and move.current is None


def test_it_moves_only_when_the_gain_beats_the_bar_after_the_minimum_hold():
    r = rule()
    cur, new = Pair(A, B), Pair(C, B)
    bar = r.bar_apr(COST, 0.30)
    signals = {cur: 0.30 - bar + 1e-6, new: 0.30}
    assert r.choose(cur, 0, 30 * DAY, signals, {new: COST, Pair(B, A): COST}) is None  # just short of the bar
    signals[cur] = 0.30 - bar - 0.01
    assert r.choose(cur, 0, 6 * DAY, signals, {new: COST}) is None  # held 6 days of the 7
    move = r.choose(cur, 0, 7 * DAY, signals, {new: COST})
    assert move is not None and move.to == new and move.gain_apr == pytest.approx(bar + 0.01)
    assert move.bar_apr == pytest.approx(bar)


signal = st.floats(-0.5, 0.5, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(signal, min_size=6, max_size=6), min_size=2, max_size=60),
       st.floats(0, 0.1), st.floats(0, 20), st.floats(1, 90))
def test_every_move_gains_more_than_its_bar_and_is_never_sooner_than_the_minimum_hold(rows, hysteresis, min_hold, hold):
    r = rule(hysteresis, min_hold, hold)
    current, since = None, 0
    for step, row in enumerate(rows):
        now = step * 8 * NS_PER_HOUR
        signals = dict(zip(PAIRS, row))
        move = r.choose(current, since, now, signals, dict.fromkeys(PAIRS, COST))
        if move is None:
            continue
        if current is not None:
            assert now - since >= min_hold * DAY
            assert signals[move.to] - signals[current] > r.bar_apr(COST, signals[move.to])
            assert move.to != current
        assert signals[move.to] == max(signals.values())
        current, since = move.to, now


@settings(max_examples=200, deadline=None)
@given(st.floats(-0.3, 0.3), st.floats(0, 0.1))
def test_no_flapping_two_pairs_that_trade_places_by_less_than_twice_the_bar_move_at_most_once(level, wobble):
    """Two pairs whose signals swap back and forth by ``wobble``: the carry
    moves at most once unless the swing beats the bar each way."""
    r = rule(hysteresis=0.02, min_hold=0.0)
    p, q = Pair(A, B), Pair(B, A)
    current, moves = p, 0
    for step in range(200):
        sign = 1 if step % 2 else -1
        signals = {p: level + sign * wobble / 2, q: level - sign * wobble / 2}
        move = r.choose(current, 0, step * 8 * NS_PER_HOUR, signals, {p: COST, q: COST})
        if move is not None:
            current, moves = move.to, moves + 1
    # each swap offers the gain of the pair on top, judged by the bar of that pair's signal
    high, low = level + wobble / 2, level - wobble / 2
    if high - low <= r.bar_apr(COST, high):
        assert moves == 0
    else:
        assert moves > 0


def test_a_rule_refuses_a_non_positive_hold_and_a_negative_hysteresis():
    with pytest.raises(ValueError, match="expected_holding_days"):
        RotationRule(0, 0.02, 7)
    with pytest.raises(ValueError, match="hysteresis_apr"):
        RotationRule(30, -0.01, 7)
    assert math.isfinite(rule().bar_apr(SwitchCost(0, 0, 1e9), 0.1))
