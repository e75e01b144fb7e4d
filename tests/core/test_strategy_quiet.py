"""The settlement quiet window: no entry or exit within ``quiet_ns`` of a
funding settlement (before or after it), the same decisions outside it; the
``[runner]`` config section that sets it, and the backtest that honours it."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import attrs
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from fundarb.config import (
    ConfigError,
    RunnerSettings,
    config_hash,
    dumps,
    from_dict,
    load,
    to_dict,
)
from fundarb.core.book import PositionBook
from fundarb.core.funding import ANNOUNCED_BEFORE_NS
from fundarb.core.model import NS_PER_HOUR
from fundarb.core.strategy import CarryParams, CarryStrategy, FundingSignal
from fundarb.data.history import load_history
from fundarb.sim.backtest import build_simulation, run_backtest
from fundarb.testkit.builders import PERP, SPOT, T0, make_fill

H = NS_PER_HOUR
MIN = 60_000_000_000
W = 90 * MIN
MID = 60_000.0
BASELINE_PATH = Path(__file__).parents[2] / "sims" / "spot_perp.toml"
BASELINE = load(BASELINE_PATH)
RICH, POOR = 0.0003, -0.0001  # 8h rates well above the entry bar / below the exit bar


def make(quiet_ns: int | None = None, **kw) -> CarryStrategy:
    params = {"notional": 60_000.0, "entry_apr": 0.10, "exit_apr": 0.0, "signal_settlements": 3,
              "expected_holding_days": 14.6, "max_holding_days": 30.0, "target_profit": 0.05,
              "cooldown_hours": 24.0, "lot_size": 0.001}
    params.update(kw)
    if quiet_ns is None:
        return CarryStrategy(CarryParams(**params), 0.002, SPOT, PERP)
    return CarryStrategy(CarryParams(**params), 0.002, SPOT, PERP, quiet_ns=quiet_ns)


def settle(s: CarryStrategy, rates, last: int) -> None:
    """Settlements every 8h, the last one at ``last``."""
    for i, r in enumerate(rates):
        s.signal.on_settlement(last - (len(rates) - 1 - i) * 8 * H, r, 8.0)


def flat_book() -> PositionBook:
    b = PositionBook.open(SPOT, PERP, 65_000.0, 35_000.0)
    b.revalue(PERP, MID)
    return b


def in_carry(s: CarryStrategy, at: int) -> PositionBook:
    """Enter at ``at`` (outside any window) and book the fills."""
    b = flat_book()
    intents = s.decide(b, MID, at)
    assert [i.reason for i in intents] == ["entry", "entry"]
    for i in intents:
        b.apply_fill(make_fill(i.venue, i.side, i.qty, MID, ts=at))
    return b


# --- FundingSignal.near_settlement ------------------------------------------------------

def test_nothing_settled_nothing_announced_is_never_near():
    sig = FundingSignal(3)
    assert not any(sig.near_settlement(T0 + k * MIN, W) for k in range(-600, 600, 7))


def test_near_the_last_settlement_after_it_and_the_next_one_before_it():
    sig = FundingSignal(3)
    L = T0
    sig.on_settlement(L, 0.0001, 8.0)
    assert sig.near_settlement(L, W)
    assert sig.near_settlement(L + W - 1, W)
    assert not sig.near_settlement(L + W, W)
    assert not sig.near_settlement(L - 1, W)  # before it (a stamp behind the settlement) is not "after" it
    nxt = L + 8 * H  # no announcement: the last plus the interval
    assert not sig.near_settlement(nxt - W, W)
    assert sig.near_settlement(nxt - W + 1, W)
    assert sig.near_settlement(nxt, W)
    assert not sig.near_settlement(L + 4 * H, W)
    assert not sig.near_settlement(L + 4 * H, 0) and not sig.near_settlement(L, 0)


def test_the_announced_instant_replaces_last_plus_interval():
    sig = FundingSignal(3)
    sig.on_settlement(T0, 0.0001, 8.0)
    sig.on_rate(0.0002, 4.0, T0 + 4 * H)  # the venue moved to 4h settlements
    assert sig.near_settlement(T0 + 4 * H - MIN, W)
    assert not sig.near_settlement(T0 + 8 * H - MIN, W)  # the old 8h instant is not a settlement
    only_announced = FundingSignal(3)
    only_announced.on_rate(0.0002, 8.0, T0)
    assert only_announced.near_settlement(T0 - W + 1, W) and not only_announced.near_settlement(T0 - W, W)


@settings(max_examples=200, deadline=None)
@given(last=st.integers(0, 48), announced=st.one_of(st.just(0), st.integers(1, 48)),
       now=st.integers(-30 * 60, 60 * 60), w1=st.integers(0, 600), extra=st.integers(0, 600))
def test_a_wider_window_is_near_wherever_a_narrower_one_is(last, announced, now, w1, extra):
    # times in minutes from T0; last == 0 means nothing settled yet
    sig = FundingSignal(3)
    if last:
        sig.on_settlement(T0 + last * 60 * MIN, 0.0001, 8.0)
    if announced:
        sig.on_rate(None, 8.0, T0 + announced * 60 * MIN)
    t = T0 + now * MIN
    narrow, wide = sig.near_settlement(t, w1 * MIN), sig.near_settlement(t, (w1 + extra) * MIN)
    assert not narrow or wide
    assert not sig.near_settlement(t, 0)
    if narrow:  # near means some settlement instant is less than the window away
        instants = [T0 + last * 60 * MIN] if last else []
        instants += [T0 + announced * 60 * MIN] if announced else []
        instants += [T0 + (last + 8) * 60 * MIN] if last else []
        assert any(abs(t - i) < w1 * MIN for i in instants)


# --- CarryStrategy(quiet_ns=...) ----------------------------------------------------------

@pytest.mark.parametrize("offset, quiet", [
    (0, True), (W - MIN, True), (W, False), (4 * H, False),
    (8 * H - W, False), (8 * H - W + MIN, True), (8 * H - 1, True),
])
def test_no_entry_within_the_window_before_or_after_a_settlement(offset, quiet):
    L = T0 + 10 * 8 * H
    q, free = make(W), make()
    settle(q, [RICH] * 3, L)
    settle(free, [RICH] * 3, L)
    now = L + offset
    want = free.decide(flat_book(), MID, now)
    assert [i.reason for i in want] == ["entry", "entry"]  # the decision without a window
    got = q.decide(flat_book(), MID, now)
    if quiet:
        assert got == []
        assert (q.direction, q.entries, q.pair_seq) == (0, 0, 0)  # nothing started, nothing counted
        assert q.decide(flat_book(), MID, L + 4 * H) == want  # and it enters once outside
    else:
        assert got == want


@pytest.mark.parametrize("offset, quiet", [(MIN, True), (W, False), (8 * H - 30 * MIN, True), (8 * H - W, False)])
def test_no_exit_within_the_window(offset, quiet):
    L0 = T0 + 10 * 8 * H
    q, free = make(W), make()
    for s in (q, free):
        settle(s, [RICH] * 3, L0)
    bq, bf = in_carry(q, L0 + 4 * H), in_carry(free, L0 + 4 * H)
    L = L0 + 3 * 8 * H
    for s in (q, free):
        for k in (1, 2, 3):  # the signal turns: three poor settlements, the last at L
            s.signal.on_settlement(L0 + k * 8 * H, POOR, 8.0)
    now = L + offset
    want = free.decide(bf, MID, now)
    assert want and {i.reason for i in want} == {"exit_signal"}
    got = q.decide(bq, MID, now)
    if quiet:
        assert got == [] and q.direction == 1
        assert q.decide(bq, MID, L + 4 * H) == want
    else:
        assert got == want


def strategy_state(draw, quiet_ns):
    """A random strategy state (rates, prediction, announced instant, in carry
    or not, cooldown) built identically for each call with the same draws."""
    rates, last = draw["rates"], draw["last"]
    s = make(quiet_ns, allow_reverse=draw["reverse"])
    book = flat_book()
    if draw["in_carry"]:  # entered on rich rates before the drawn ones, away from any settlement
        entered_at = last - len(rates) * 8 * H - 4 * H
        settle(s, [RICH] * 3, entered_at - 4 * H)
        s.quiet_ns = 0
        book = in_carry(s, entered_at)
        s.quiet_ns = quiet_ns or 0
    settle(s, rates, last)
    if draw["predicted"] is not None or draw["announced"]:
        s.signal.on_rate(draw["predicted"], 8.0, draw["announced"])
    s.cooldown_until = max(s.cooldown_until, draw["cooldown"])
    return s, book


STATES = st.fixed_dictionaries({
    "rates": st.lists(st.floats(-0.0008, 0.0008), min_size=3, max_size=5),
    "predicted": st.one_of(st.none(), st.floats(-0.0008, 0.0008)),
    "last": st.integers(20, 40).map(lambda k: T0 + k * 8 * H),
    "announced": st.one_of(st.just(0), st.integers(20, 48).map(lambda k: T0 + k * 8 * H)),
    "cooldown": st.one_of(st.just(0), st.integers(0, 400).map(lambda h: T0 + h * H)),
    "in_carry": st.booleans(),
    "reverse": st.booleans(),
    "now_min": st.integers(-10 * 60, 20 * 60),
    "quiet_min": st.integers(1, 240),
})


@settings(max_examples=200, deadline=None)
@given(d=STATES)
def test_quiet_zero_is_the_strategy_without_the_field(d):
    now = d["last"] + d["now_min"] * MIN
    a, book_a = strategy_state(d, None)
    b, book_b = strategy_state(d, 0)
    assert a.decide(book_a, MID, now) == b.decide(book_b, MID, now)
    assert a == b  # and the same state after


@settings(max_examples=200, deadline=None)
@given(d=STATES)
def test_outside_the_window_the_same_decision_inside_none_and_no_state_change(d):
    now = d["last"] + d["now_min"] * MIN
    window = d["quiet_min"] * MIN
    free, book_f = strategy_state(d, 0)
    q, book_q = strategy_state(d, window)
    before = copy.deepcopy(q)
    got = q.decide(book_q, MID, now)
    want = free.decide(book_f, MID, now)
    event(f"near={q.signal.near_settlement(now, window)} would_act={bool(want)}")
    if q.signal.near_settlement(now, window):
        assert got == []
        assert q == before
    else:
        assert got == want
        assert (q.direction, q.entries, q.pair_seq, q.cooldown_until) == \
            (free.direction, free.entries, free.pair_seq, free.cooldown_until)


# --- the [runner] section ----------------------------------------------------------------

def baseline_raw() -> dict:
    return tomllib.loads(BASELINE_PATH.read_text())


def test_a_config_without_the_section_keeps_its_hash():
    assert BASELINE.runner is None
    assert config_hash(BASELINE).startswith("dfe6e84d4374")
    assert "runner" not in to_dict(BASELINE)
    assert BASELINE.runner_settings == RunnerSettings()
    assert BASELINE.runner_settings.settlement_quiet_minutes == 0


def test_the_section_loads_round_trips_and_is_part_of_the_identity(tmp_path):
    raw = baseline_raw()
    raw["runner"] = {"settlement_quiet_minutes": 90, "heartbeat_seconds": 15}
    cfg = from_dict(raw, "with_runner.toml")
    assert cfg.runner == RunnerSettings(settlement_quiet_minutes=90.0, heartbeat_seconds=15.0)
    assert cfg.runner_settings.unreachable_alert_minutes == 30.0  # the rest at defaults
    assert not config_hash(cfg).startswith("dfe6e84d4374")
    path = tmp_path / "c.toml"
    path.write_text(dumps(cfg))
    again = load(path)
    assert again == cfg and config_hash(again) == config_hash(cfg)


@pytest.mark.parametrize("field, value, says", [
    ("settlement_quiet_minutes", -1, "runner.settlement_quiet_minutes must be >= 0"),
    ("settlement_quiet_minutes", -0.5, "runner.settlement_quiet_minutes must be >= 0"),
    ("heartbeat_seconds", 0, "runner.heartbeat_seconds must be > 0"),
    ("kill_poll_seconds", -1, "runner.kill_poll_seconds must be > 0"),
    ("unreachable_alert_minutes", 0, "runner.unreachable_alert_minutes must be > 0"),
])
def test_bad_values_are_a_config_error_naming_the_field(field, value, says):
    raw = baseline_raw()
    raw["runner"] = {field: value}
    with pytest.raises(ConfigError) as err:
        from_dict(raw, "bad.toml")
    assert str(err.value).startswith("bad.toml: ")
    assert says in str(err.value)


def test_not_finite_and_unknown_keys_are_errors_too():
    for section, words in (({"settlement_quiet_minutes": float("inf")}, ("settlement_quiet_minutes", "runner")),
                           ({"heartbeat_seconds": float("nan")}, ("heartbeat_seconds", "runner")),
                           ({"quiet_minutes": 5}, ("quiet_minutes", "runner"))):
        raw = baseline_raw()
        raw["runner"] = section
        with pytest.raises(ConfigError) as err:
            from_dict(raw, "bad.toml")
        assert all(w in str(err.value) for w in words), str(err.value)
    raw = baseline_raw()
    raw["runner"] = 90
    with pytest.raises(ConfigError, match=r"runner must be a \[runner\] section"):
        from_dict(raw, "bad.toml")


@settings(max_examples=50, deadline=None)
@given(minutes=st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6))
def test_quiet_minutes_valid_exactly_when_not_negative(minutes):
    raw = baseline_raw()
    raw["runner"] = {"settlement_quiet_minutes": minutes}
    if minutes >= 0:
        assert from_dict(raw).runner_settings.settlement_quiet_minutes == minutes
    else:
        with pytest.raises(ConfigError, match="runner.settlement_quiet_minutes"):
            from_dict(raw)


# --- the backtest honours it -----------------------------------------------------------------

def real_window(start: str, end: str, quiet_minutes: float | None):
    # the strategy of a trading config that leaves at a weak signal (the default's exit bar keeps it in)
    strategy = attrs.evolve(BASELINE.strategy, entry_apr=0.06, exit_apr=0.0, signal_settlements=9)
    cfg = attrs.evolve(BASELINE, data=attrs.evolve(BASELINE.data, start=start, end=end), strategy=strategy,
                       runner=None if quiet_minutes is None else RunnerSettings(settlement_quiet_minutes=quiet_minutes))
    h = load_history((cfg.spot.exchange, cfg.spot.symbol), (cfg.perp.exchange, cfg.perp.symbol),
                     cfg.data.start, cfg.data.end, cfg.data.max_price_gap_hours)
    return cfg, h


def strategy_intents(log):
    return [r for k, r in log if k == "intent" and (r["reason"] == "entry" or r["reason"].startswith("exit_"))]


def test_build_engine_passes_the_window_to_the_strategy():
    cfg, h = real_window("2022-01-01", "2022-01-10", 90)
    engine, _ = build_simulation(cfg, h)
    assert engine.strategy.quiet_ns == 90 * MIN
    cfg0, _ = real_window("2022-01-01", "2022-01-10", None)
    assert build_simulation(cfg0, h)[0].strategy.quiet_ns == 0


def test_a_backtest_with_a_quiet_window_trades_nowhere_near_a_settlement():
    # real Binance history, January 2022: without the window the strategy enters
    # and exits on a settlement's announcement, minutes before it; with 90 minutes it
    # still trades, away from them
    cfg0, h = real_window("2022-01-01", "2022-02-01", None)
    cfg90, _ = real_window("2022-01-01", "2022-02-01", 90)
    settlements = [int(t) for t in h.funding_ts.tolist()]

    def distance(ts: int) -> int:
        return min(abs(ts - s) for s in settlements)

    plain = strategy_intents(run_backtest(cfg0, h).log)
    assert any(distance(r["ts"]) <= ANNOUNCED_BEFORE_NS for r in plain)  # the window has something to hold back
    quiet = strategy_intents(run_backtest(cfg90, h).log)
    reasons = {r["reason"] for r in quiet}
    assert "entry" in reasons and any(x.startswith("exit_") for x in reasons)
    assert all(distance(r["ts"]) >= 90 * MIN for r in quiet), [(r["ts"], r["reason"]) for r in quiet]


def test_risk_actions_are_not_held_back_by_the_window():
    # real history, July-August 2021 with a 90 minute window: the margin cut
    # still goes out at a settlement instant
    cfg, h = real_window("2021-07-01", "2021-09-01", 90)
    log = run_backtest(cfg, h).log
    settlements = {int(t) for t in h.funding_ts.tolist()}
    risk = [r for k, r in log if k == "intent" and r["reason"] not in ("entry",) and not r["reason"].startswith("exit_")]
    assert any(r["ts"] in settlements for r in risk), [(r["ts"], r["reason"]) for r in risk]
    assert all(min(abs(r["ts"] - s) for s in settlements) >= 90 * MIN for r in strategy_intents(log))
