"""The strategy decides on the rate known before a settlement: a history's
settled rate is announced ``ANNOUNCED_BEFORE_NS`` before its instant, never
earlier, and an entry decided on the announcement accrues the settlement."""

from __future__ import annotations

import attrs
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fundarb.config import load
from fundarb.core.funding import ANNOUNCED_BEFORE_NS
from fundarb.core.model import NS_PER_HOUR, FundingRate, FundingSettlement
from fundarb.core.strategy import CarryStrategy
from fundarb.data.history import MarketHistory
from fundarb.sim.backtest import build_simulation, run_backtest
from fundarb.sim.tape import history_tape
from fundarb.testkit.builders import T0, synthetic_history

BASELINE = load("sims/spot_perp.toml")
MID = 60_000.0


def _history(rates: list[float], hours: int = 24 * 6, offset: int = 1) -> MarketHistory:
    """SYNTHETIC: flat prices, a settlement every 8 hours at the given rates."""
    n = hours
    return synthetic_history(np.full(n, MID), np.full(n, MID * 1.0002), np.array(rates * (n // 8 + 1)), T0,
                             first_offset_hours=offset)


@settings(max_examples=100, deadline=None)
@given(rates=st.lists(st.floats(-0.002, 0.002), min_size=1, max_size=6), offset=st.integers(0, 7))
def test_each_settlement_is_announced_before_it_and_never_earlier_than_the_announcement_time(rates, offset):
    h = _history(rates, offset=offset)
    tape = list(history_tape(h, BASELINE.spot_account, BASELINE.perp_account, 5.0, 10.0))
    assert [(t, p) for t, p, _ in tape] == sorted((t, p) for t, p, _ in tape)  # in time order
    settled = {e.ts: e.rate for _, _, e in tape if isinstance(e, FundingSettlement)}
    announced = [(t, e) for t, _, e in tape if isinstance(e, FundingRate)]
    first_bar = int(h.hours[0])
    assert {e.next_funding_ts for _, e in announced} == {ts for ts in settled if ts > first_bar}
    for t, e in announced:
        assert e.ts == t and e.next_funding_ts - ANNOUNCED_BEFORE_NS == t < e.next_funding_ts
        assert e.predicted_rate == settled[e.next_funding_ts] == e.rate


@attrs.define(slots=True)
class Recording(CarryStrategy):
    """The carry, noting what it is told about funding and when."""

    told: list[tuple[int, int, float]] = attrs.field(factory=list)  # (told at, the settlement's instant, rate)
    clock: list[int] = attrs.field(factory=lambda: [0])

    def on_rate(self, venue, predicted, interval_hours, next_settlement_ts=0):
        self.told.append((self.clock[0], next_settlement_ts, predicted))
        CarryStrategy.on_rate(self, venue, predicted, interval_hours, next_settlement_ts)

    def on_settlement(self, venue, ts, rate, interval_hours):
        self.told.append((self.clock[0], ts, rate))
        CarryStrategy.on_settlement(self, venue, ts, rate, interval_hours)


def test_the_strategy_is_never_told_a_rate_before_its_announcement():
    from fundarb.data.history import history_for

    cfg = attrs.evolve(BASELINE, data=attrs.evolve(BASELINE.data, start="2023-01-01", end="2023-03-01"))
    engine, sim = build_simulation(cfg, history_for(cfg))
    s = engine.strategy
    rec = Recording(s.params, s.round_trip_cost, s.spot_venue, s.perp_venue, quiet_ns=s.quiet_ns)
    engine.strategy = rec
    for event in sim.events():
        rec.clock[0] = event.ts
        engine.on_event(event)
    assert len(rec.told) > 300 and rec.entries > 0
    for at, settles, _ in rec.told:
        assert settles - ANNOUNCED_BEFORE_NS <= at, (at, settles)


def test_a_changed_rate_changes_nothing_decided_before_it_is_announced():
    rates = [0.0003, 0.0004, 0.0005]
    h = _history(rates, hours=24 * 20)
    k = 30  # the settlement whose rate changes
    changed = attrs.evolve(h, funding_rate=np.where(np.arange(h.funding_rate.size) == k, -0.01, h.funding_rate))
    cut = int(h.funding_ts[k]) - ANNOUNCED_BEFORE_NS
    a, b = (run_backtest(BASELINE, x, always_on=False).log for x in (h, changed))
    assert [r for r in a if r[1].get("ts", 0) < cut] == [r for r in b if r[1].get("ts", 0) < cut]
    assert a != b  # the change is seen once announced


def test_an_entry_decided_on_the_announcement_accrues_the_settlement():
    """The signal clears the bar once the announced rate is known: the
    carry enters five minutes before the settlement and is paid it."""
    cfg = attrs.evolve(BASELINE, strategy=attrs.evolve(BASELINE.strategy, signal_settlements=1, cooldown_hours=0.0))
    r = run_backtest(cfg, _history([0.0004], hours=24 * 3), always_on=False)
    intents = [row for kind, row in r.log if kind == "intent" and row["reason"] == "entry"]
    first = intents[0]["ts"]
    funded = [row["ts"] for kind, row in r.log if kind == "funding"]
    nxt = min(ts for ts in (int(t) for t in r.history.funding_ts) if ts > first)
    assert nxt - first == ANNOUNCED_BEFORE_NS  # decided on the announcement
    assert nxt in funded  # and in the position when it settled


def test_the_quiet_window_still_holds_entries_back(tmp_path):
    """A quiet window longer than the announcement's lead keeps the entry
    for after the settlement (``runner.settlement_quiet_minutes``)."""
    cfg = attrs.evolve(BASELINE, strategy=attrs.evolve(BASELINE.strategy, signal_settlements=1, cooldown_hours=0.0),
                       runner=attrs.evolve(BASELINE.runner_settings, settlement_quiet_minutes=10.0))
    r = run_backtest(cfg, _history([0.0004], hours=24 * 3), always_on=False)
    first = next(row["ts"] for kind, row in r.log if kind == "intent" and row["reason"] == "entry")
    settlements = [int(t) for t in r.history.funding_ts]
    assert all(abs(first - ts) >= 10 * 60 * 10**9 for ts in settlements)
    assert (first - T0) % NS_PER_HOUR == 0  # on a bar, not on an announcement
