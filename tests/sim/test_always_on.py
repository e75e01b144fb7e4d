"""The always-on benchmark every report sets beside a carry: the same
structure held from the first hour to the last, run by the carry's own rules
(``core.strategy.always_on``), and the edge over it."""

from __future__ import annotations

import json
import math

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from fundarb.config import config_hash, load
from fundarb.core.book import PositionBook
from fundarb.core.model import NS_PER_HOUR, Side
from fundarb.core.strategy import UNREACHABLE, CarryParams, CarryStrategy, always_on
from fundarb.data.history import MarketHistory
from fundarb.output.report import print_summary, render_json
from fundarb.sim.backtest import ALWAYS_ON_KEYS, run_always_on, run_backtest
from fundarb.testkit.builders import PERP, SPOT, T0, make_fill, synthetic_history

BASELINE = load("sims/spot_perp.toml")
MID = 60_000.0


def _strategy() -> tuple[CarryStrategy, PositionBook]:
    params = always_on(CarryParams(notional=30_000.0, entry_apr=0.08, exit_apr=0.01, signal_settlements=9,
                                   max_holding_days=3.0, target_profit=0.002, cooldown_hours=4.0))
    book = PositionBook.open(SPOT, PERP, 65_000.0, 35_000.0)
    book.revalue(SPOT, MID)
    book.revalue(PERP, MID)
    return CarryStrategy(params, 0.002, SPOT, PERP), book


def test_it_enters_at_the_first_prices_without_a_signal():
    s, book = _strategy()
    assert s.ready and s.signal.current_apr() == 0.0  # no settlement seen: nothing to wait for
    intents = s.decide(book, MID, T0)
    assert [(i.venue, i.side, i.reason) for i in intents] == [(SPOT, Side.BUY, "entry"), (PERP, Side.SELL, "entry")]


@settings(max_examples=200, deadline=None)
@given(rates=st.lists(st.floats(-0.01, 0.01), min_size=0, max_size=40), hours=st.integers(1, 24 * 3650),
       funding=st.floats(-1e4, 1e6))
def test_held_it_never_exits_on_its_own_rules(rates, hours, funding):
    """Whatever the rates (negative ones included), however long it is held
    and whatever carry it earns, only risk closes it."""
    s, book = _strategy()
    intents = s.decide(book, MID, T0)
    for i in intents:
        book.apply_fill(make_fill(i.venue, i.side, i.qty, MID, ts=T0, client_id=f"c{i.venue}"))
    for k, r in enumerate(rates):
        s.on_settlement(PERP, T0 + (k + 1) * 8 * NS_PER_HOUR, r, 8.0)
        assert s.signal.current_apr() == 0.0  # it keeps no rates
    book.perp.funding += funding
    assert s.decide(book, MID, T0 + hours * NS_PER_HOUR) == []


def test_its_bars_are_finite_so_the_config_has_a_hash():
    bench = BASELINE.always_on()
    assert bench.strategy.entry_apr == -UNREACHABLE and bench.strategy.signal_settlements == 0
    assert config_hash(bench) != config_hash(BASELINE)
    assert attrs.evolve(bench, strategy=BASELINE.strategy) == BASELINE  # nothing else changes
    assert bench.always_on() == bench


def _rising_then_negative(days: int = 120) -> MarketHistory:
    """SYNTHETIC: flat prices; funding strongly positive, then negative for the last third."""
    n = days * 24
    third = n // 3 * 2 // 8
    rates = np.array([0.0003] * third + [-0.0002] * (n // 8 - third))
    return synthetic_history(np.full(n, MID), np.full(n, MID * 1.0002), rates)


def test_a_backtest_shows_the_benchmark_and_the_edge_over_it():
    h = _rising_then_negative()
    cfg = attrs.evolve(BASELINE, strategy=attrs.evolve(BASELINE.strategy, signal_settlements=3, cooldown_hours=1.0,
                                                       exit_apr=0.0))  # a carry that leaves when the signal turns
    r = run_backtest(cfg, h)
    bench = run_always_on(cfg, h)
    assert r.always_on is not None and r.always_on.metrics == bench.metrics
    for key in ALWAYS_ON_KEYS:
        assert r.metrics[f"always_on_{key}"] == bench.metrics[key]
    assert r.metrics["edge_over_always_on"] == r.metrics["net_apr"] - bench.metrics["net_apr"]
    # the benchmark kept paying the negative third; the carry left when the signal turned
    assert bench.metrics["entries"] == 1 and bench.metrics["time_in_position"] > 0.99
    assert r.metrics["edge_over_always_on"] > 0
    report = json.loads(render_json(r))
    assert report["always_on_config_hash"] == config_hash(cfg.always_on())
    assert report["metrics"]["edge_over_always_on"] == pytest.approx(r.metrics["edge_over_always_on"])
    console = Console(width=120, record=True)
    print_summary(r, console)
    text = console.export_text()
    assert "against always-on" in text
    assert f"edge over always-on: {r.metrics['edge_over_always_on']:+.2%} net APR (beats always-on)" in text


def test_a_window_too_short_to_annualise_leaves_the_edge_out_and_says_why():
    h = _rising_then_negative(days=5)
    r = run_backtest(BASELINE, h)
    assert "edge_over_always_on" not in r.metrics and "always_on_net_apr" not in r.metrics
    assert r.not_applicable["edge_over_always_on"] == r.not_applicable["net_apr"]
    assert r.metrics["always_on_net_pnl"] == r.always_on.metrics["net_pnl"]
    console = Console(width=120, record=True)
    print_summary(r, console)
    assert "edge over always-on: n/a (window too short to annualise)" in console.export_text()
    assert math.isfinite(r.metrics["always_on_net_pnl"])
