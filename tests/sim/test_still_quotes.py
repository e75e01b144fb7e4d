"""A quote or a mark moves only a price and the time, so the engine does not
ask the strategy again before the instant its last answer promised to stay
nothing (``CarryStrategy.still_until``), unless the risk monitor acted on the
mark. The runs are the same as runs that ask on every event: the same
decision log and the same equity curve, on the shipped history and on
SYNTHETIC minute quotes that cross cooldowns, the holding-time exit, the
target and signal exits, and margin top-ups and cuts."""

from __future__ import annotations

import math

import attrs
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fundarb.config import Config, load
from fundarb.core.model import NS_PER_HOUR, FundingSettlement, MarkPrice, Quote, Timer
from fundarb.data.history import MarketHistory
from fundarb.sim import queue as q
from fundarb.sim.backtest import build_engine, build_simulation

BASELINE = load("sims/spot_perp.toml")
MINUTE = NS_PER_HOUR // 60


def _runs(make) -> list[tuple[list, dict]]:
    """The same run twice: as the engine runs it, and asking the strategy on every event."""
    out = []
    for every_event in (False, True):
        engine, sim = make()
        for event in sim.events():
            if every_event:
                engine.strategy.still_until = 0  # no promise: decide is asked
            engine.on_event(event)
        out.append((engine.recorder.rows, engine.curve))
    return out


def test_the_shipped_history_runs_as_when_the_strategy_is_asked_on_every_event(real_history: MarketHistory):
    cfg = attrs.evolve(BASELINE, strategy=attrs.evolve(BASELINE.strategy, cooldown_hours=2.0, max_holding_days=20.0))
    kept, asked = _runs(lambda: build_simulation(cfg, real_history))
    assert kept == asked
    kinds = [k for k, _ in kept[0]]
    assert kinds.count("intent") > 40  # many entries and exits, not a quiet run


def _minute_tape(cfg: Config, seed: int, days: int, rates: list[float], drift: float = 0.0):
    """SYNTHETIC: a spot and a perp quote every minute (a random walk near
    60,000 with a half spread, rising by ``drift`` of its log a minute), a
    mark every ten minutes, a settlement every 8 hours at the drawn rates, an
    hourly timer."""
    rng = np.random.default_rng(seed)
    n = days * 24 * 60
    mids = 60_000.0 * np.exp(np.cumsum(rng.normal(drift, 0.0008, n)))
    start = 1_700_000_000 * 10**9 // NS_PER_HOUR * NS_PER_HOUR
    spot, perp = cfg.spot_account, cfg.perp_account
    tape = []
    for i, mid in enumerate(mids.tolist()):
        ts = start + i * MINUTE
        half = 0.05 * (1 + i % 3)
        tape.append((ts, q.P_QUOTE, Quote(ts, spot, mid - half, mid + half, 5.0, 5.0)))
        tape.append((ts, q.P_QUOTE, Quote(ts, perp, mid * 1.0002 - half, mid * 1.0002 + half, 5.0, 5.0)))
        if i % 10 == 0:
            tape.append((ts, q.P_MARK, MarkPrice(ts, perp, mid * 1.0002)))
        if i % (8 * 60) == 0 and i:
            k = i // (8 * 60)
            tape.append((ts, q.P_FUNDING, FundingSettlement(ts, perp, rates[k % len(rates)], 8.0, mid * 1.0002)))
        if i % 60 == 0:
            tape.append((ts, q.P_TIMER, Timer(ts)))
    return tape, (start + 8 * NS_PER_HOUR, 8.0), start - 1, float(mids[0])


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**16), cooldown=st.sampled_from([0.0, 1.0, 5.0]),
       hold_days=st.sampled_from([0.3, 1.0, 120.0]), target=st.sampled_from([0.0003, 0.1]),
       rates=st.lists(st.sampled_from([0.0006, 0.0003, 0.0, -0.0002]), min_size=2, max_size=5))
def test_synthetic_minute_quotes_run_as_when_the_strategy_is_asked_on_every_event(seed, cooldown, hold_days, target,
                                                                                  rates):
    cfg = attrs.evolve(BASELINE, strategy=attrs.evolve(
        BASELINE.strategy, cooldown_hours=cooldown, max_holding_days=hold_days, target_profit=target,
        signal_settlements=1, entry_apr=0.05, exit_apr=0.0))
    tape, first, start, price = _minute_tape(cfg, seed, 4, rates)
    kept, asked = _runs(lambda: build_engine(cfg, iter(tape), first, start, price))
    assert kept == asked
    assert all(math.isfinite(e) for e in kept[1]["equity"])


def test_a_halt_a_flatten_and_a_resume_run_as_when_the_strategy_is_asked_on_every_event():
    """While the kill switch holds a flat book the strategy is not asked, so
    what it promised before the flatten no longer holds: after the resume it
    is asked on the first event, a quote included."""
    cfg = attrs.evolve(BASELINE, strategy=attrs.evolve(
        BASELINE.strategy, cooldown_hours=1.0, max_holding_days=120.0, signal_settlements=1, entry_apr=0.05))
    tape, first, start, price = _minute_tape(cfg, 3, 3, [0.0006])
    # both between two settlements (a settlement is asked about afresh anyway)
    halt_at, resume_at = start + 17 * NS_PER_HOUR, start + 18 * NS_PER_HOUR + 7 * MINUTE
    runs = []
    for every_event in (False, True):
        engine, sim = build_engine(cfg, iter(tape), first, start, price)
        halted = resumed = False
        for event in sim.events():
            if every_event:
                engine.strategy.still_until = 0
            if not halted and event.ts >= halt_at:
                assert not engine.book.is_flat  # in a carry when the switch trips
                engine.halt("test", event.ts, flatten=True)
                halted = True
            if not resumed and event.ts >= resume_at:
                assert engine.book.is_flat
                engine.monitor.kill.resume()
                resumed = True
            engine.on_event(event)
        runs.append(engine.recorder.rows)
    assert runs[0] == runs[1]
    assert any(k == "intent" and r["reason"] == "entry" and r["ts"] > resume_at for k, r in runs[0])


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**16), drift=st.sampled_from([0.0002, 0.0004]), auto_rebalance=st.booleans())
def test_marks_that_move_the_risk_monitor_run_as_when_the_strategy_is_asked_on_every_event(seed, drift,
                                                                                           auto_rebalance):
    """A rally of 30-80% over three days: the short's margin falls, and the
    risk monitor tops it up, cuts it or rebalances on the marks."""
    cfg = attrs.evolve(
        BASELINE,
        strategy=attrs.evolve(BASELINE.strategy, cooldown_hours=1.0, signal_settlements=1, entry_apr=0.05),
        risk=attrs.evolve(BASELINE.risk, max_drawdown=0.5, auto_rebalance=auto_rebalance))
    tape, first, start, price = _minute_tape(cfg, seed, 3, [0.0006], drift=drift)
    kept, asked = _runs(lambda: build_engine(cfg, iter(tape), first, start, price))
    assert kept == asked
    kinds = {k for k, _ in kept[0]}
    assert "transfer" in kinds or any(k == "intent" and r["reason"].startswith("risk") for k, r in kept[0]), kinds
