"""The compiled path kernel equals the event simulator.

Every comparison runs the same history with the same simulator draws through
both: the simulator as ``fundarb backtest`` and ``fundarb montecarlo`` run it
(``build_simulation``, ``compute_metrics``), the kernel as the study runs it
(``run_kernel``, ``kernel_metrics``, ``kernel_chunk``). Equal means: the same
trades (time, leg, side, quantity, price, fee), the same settlements, the
same hourly equity and the same path metrics, within 1e-9 relative.

Histories: the shipped real window, bootstrapped paths of it (SYNTHETIC:
resampled from the real data by the study's own bootstrap) from several
seeds, the shipped stress scenarios, and configs made to hit the margin
monitor's top-up and cut.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fundarb.config import Config, Scenario, load
from fundarb.data.history import MarketHistory
from fundarb.data.scenario import apply_scenario
from fundarb.research import kernel as K
from fundarb.research.bootstrap import cut_periods
from fundarb.research.cluster import InProcess
from fundarb.research.study import (
    KERNEL,
    PATH_METRICS,
    SIMULATOR,
    StudyError,
    StudySpec,
    choose_engine,
    path_history,
    path_seeds,
    run_chunk,
    run_study,
)
from fundarb.sim.backtest import build_simulation, compute_metrics, recorded

REL = 1e-9


def shipped_history(cfg: Config) -> MarketHistory:
    """The shipped real history over ``cfg``'s window, as the CLI loads it."""
    from fundarb.data.history import load_history

    return load_history((cfg.spot.exchange, cfg.spot.symbol), (cfg.perp.exchange, cfg.perp.symbol),
                        cfg.data.start, cfg.data.end, cfg.data.max_price_gap_hours)


def close(a: Any, b: Any) -> bool:
    if a is None or b is None or isinstance(a, (bool, int, np.integer)) and isinstance(b, (bool, int, np.integer)):
        return a == b
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or abs(a - b) <= REL * max(abs(a), abs(b))


@attrs.frozen
class SimRun:
    fills: list[tuple[Any, ...]]
    fundings: list[tuple[Any, ...]]
    curve: np.ndarray
    metrics: dict[str, Any]
    alert_kinds: list[str]


def simulate(cfg: Config, h: MarketHistory, seed: np.random.SeedSequence) -> SimRun:
    engine, sim = build_simulation(cfg, h, seed)
    engine.run()
    rows = recorded(engine)
    fills = [(r["ts"], 0 if r["venue"] == cfg.spot_account else 1, 1 if r["side"] == "buy" else -1, r["qty"], r["price"],
              r["fee"]) for k, r in rows if k == "fill"]
    fundings = [(r["ts"], r["qty"], r["rate"], r["mark"], r["amount"]) for k, r in rows if k == "funding"]
    m = compute_metrics(cfg, h, engine, sim)
    return SimRun(fills, fundings, np.asarray(engine.curve["equity"], dtype=float), {k: m[k] for k in PATH_METRICS},
                  [a.kind for a in engine.alerts])


def backtest_seed(cfg: Config) -> np.random.SeedSequence:
    seed, = np.random.SeedSequence(cfg.seed).spawn(1)  # what run_backtest gives the simulator
    return seed


def assert_equal_runs(cfg: Config, h: MarketHistory, seed_of: Any) -> SimRun:
    """Kernel and simulator on ``h``; the simulator's run (for what it met)."""
    sim = simulate(cfg, h, seed_of())
    run = K.run_kernel(cfg, h, seed_of(), trace=True)
    assert run.flag == 0, f"kernel flagged the path: {run.reason}"
    assert len(run.fills) == len(sim.fills)
    for k, s in zip(run.fills, sim.fills):
        assert k[:3] == s[:3], (k, s)
        assert all(close(a, b) for a, b in zip(k[3:], s[3:])), (k, s)
    assert len(run.fundings) == len(sim.fundings)
    for k, s in zip(run.fundings, sim.fundings):
        assert k[0] == s[0] and all(close(a, b) for a, b in zip(k[1:], s[1:])), (k, s)
    assert run.curve.shape == sim.curve.shape
    assert all(close(a, b) for a, b in zip(run.curve, sim.curve))
    km = K.kernel_metrics(cfg, h, run)
    for key in PATH_METRICS:
        assert close(km[key], sim.metrics[key]), (key, km[key], sim.metrics[key])
    return sim


@pytest.fixture(scope="module")
def baseline() -> Config:
    return load("sims/spot_perp.toml")


@pytest.fixture(scope="module")
def history(real_history: MarketHistory) -> MarketHistory:
    return real_history


def test_the_kernel_compiles_the_cores_own_functions() -> None:
    for name, (compiled, core) in K.COMPILED_CORE.items():
        assert compiled.py_func.__code__ is core.__code__, name


def test_shipped_history_trade_by_trade(baseline: Config, history: MarketHistory) -> None:
    sim = assert_equal_runs(baseline, history, lambda: backtest_seed(baseline))
    assert len(sim.fills) > 20 and len(sim.fundings) > 1000
    assert "margin_reduce" in sim.alert_kinds  # the real window's rally makes the monitor cut


@pytest.mark.parametrize("seed", [7, 11, 2024, 99991])
def test_bootstrapped_paths(baseline: Config, history: MarketHistory, seed: int) -> None:
    """30 bootstrapped 120-day paths per seed, 120 in all."""
    cfg = attrs.evolve(baseline, seed=seed)
    src = cut_periods(history)
    traded = 0
    for i in range(30):
        h = path_history(cfg, src, 120 * 24, 40.0, i)
        sim = assert_equal_runs(cfg, h, lambda i=i: path_seeds(cfg.seed, i)[1])
        traded += bool(sim.fills)
    assert traded >= 20  # most paths trade: the comparison is not of idle books


def test_the_always_on_benchmark_trade_by_trade(baseline: Config, history: MarketHistory) -> None:
    """The benchmark every report sets beside a carry runs on the kernel as on the simulator: on the shipped
    history (in from the first hours, cut and topped up by the risk rules) and on bootstrapped paths."""
    cfg = baseline.always_on()
    sim = assert_equal_runs(cfg, history, lambda: backtest_seed(cfg))
    assert sim.fills and sim.fills[0][0] <= int(history.hours[1])  # entered within its first hour
    assert sim.metrics["time_in_position"] > 0.99
    src = cut_periods(history)
    for i in range(10):
        assert_equal_runs(cfg, path_history(cfg, src, 120 * 24, 40.0, i), lambda i=i: path_seeds(cfg.seed, i)[1])


@pytest.mark.parametrize("name", ["stress_shock", "stress_bear", "stress_bull"])
def test_stress_scenarios(name: str) -> None:
    cfg = load(f"sims/{name}.toml")
    h = apply_scenario(shipped_history(cfg), cfg.scenario)
    sim = assert_equal_runs(cfg, h, lambda: backtest_seed(cfg))
    assert sim.fills


def margin_config(baseline: Config, notional: float, transfer_fee: float) -> Config:
    """A jump up 8 days in: the short's buffer falls under the floor. What
    the entry leaves on the spot venue (70,000 less ``notional`` and costs)
    decides between a top-up and a cut (less than 10 transfer fees)."""
    return attrs.evolve(
        baseline,
        perp_allocation=0.3,
        data=attrs.evolve(baseline.data, start="2022-01-01", end="2022-05-01"),
        strategy=attrs.evolve(baseline.strategy, notional=notional, entry_apr=0.0),
        transfer=attrs.evolve(baseline.transfer, fee=transfer_fee),
        scenario=Scenario(description="SYNTHETIC: the real window with a +25% jump 8 days in", shock_return=0.25,
                          shock_after_days=8.0),
    )


@pytest.mark.parametrize(("notional", "fee", "kind"), [(49_000.0, 1.0, "margin_topup"),
                                                       (69_800.0, 20.0, "margin_reduce")])
def test_margin_topup_and_cut(baseline: Config, notional: float, fee: float, kind: str) -> None:
    cfg = margin_config(baseline, notional, fee)
    h = apply_scenario(shipped_history(cfg), cfg.scenario)
    sim = assert_equal_runs(cfg, h, lambda: backtest_seed(cfg))
    assert kind in sim.alert_kinds, sim.alert_kinds


def test_study_rows_equal_on_either_engine(baseline: Config, history: MarketHistory) -> None:
    src = cut_periods(history)
    k_rows = run_chunk(src, baseline, 60 * 24, 30.0, range(12), True, KERNEL)
    s_rows = run_chunk(src, baseline, 60 * 24, 30.0, range(12), True, SIMULATOR)
    for (kr, ke), (sr, se) in zip(k_rows, s_rows):
        assert kr["engine"] == KERNEL and sr["engine"] == SIMULATOR
        assert kr.keys() == sr.keys()
        for key in kr:
            if key != "engine":
                assert close(kr[key], sr[key]), (key, kr[key], sr[key])
        assert ke is not None and se is not None and all(close(a, b) for a, b in zip(ke, se))


def test_a_path_the_kernel_does_not_model_runs_on_the_simulator(baseline: Config, history: MarketHistory) -> None:
    # depth below the entry's size: the simulator fills it in part and waits for later quotes
    thin = attrs.evolve(baseline, spot=attrs.evolve(baseline.spot, depth_btc=1.9))
    src = cut_periods(history)
    k_rows = run_chunk(src, thin, 90 * 24, 30.0, range(3), True, KERNEL)
    s_rows = run_chunk(src, thin, 90 * 24, 30.0, range(3), True, SIMULATOR)
    assert any(r["engine"] == f"{SIMULATOR} ({K.PATH_FLAGS[K.F_PARTIAL]})" for r, _ in k_rows)
    for (kr, _), (sr, _) in zip(k_rows, s_rows):
        assert {k: v for k, v in kr.items() if k != "engine"} == {k: v for k, v in sr.items() if k != "engine"}


def test_engine_choice_names_the_feature(baseline: Config, history: MarketHistory) -> None:
    src = cut_periods(history)
    assert choose_engine(baseline, src) == (KERNEL, "the config lies within the kernel's scope")
    assert choose_engine(baseline, src, SIMULATOR)[0] == SIMULATOR
    reverse = attrs.evolve(baseline, strategy=attrs.evolve(baseline.strategy, allow_reverse=True))
    engine, why = choose_engine(reverse, src)
    assert engine == SIMULATOR and "strategy.allow_reverse" in why
    with pytest.raises(StudyError, match="strategy.allow_reverse"):
        choose_engine(reverse, src, KERNEL)
    with pytest.raises(StudyError, match="--engine must be one of"):
        choose_engine(baseline, src, "fast")
    for name, feature in (("coin_margined", "structure.kind"), ("unified", "structure.kind")):
        assert feature in (K.out_of_scope(load(f"sims/{name}.toml")) or "")


def test_study_defaults_to_the_kernel_and_says_so(baseline: Config, history: MarketHistory) -> None:
    r = run_study(baseline, history, StudySpec(paths=4, days=30), InProcess())
    assert r.engine == KERNEL and all(row["engine"] == KERNEL for row in r.rows)
    s = run_study(baseline, history, StudySpec(paths=4, days=30), InProcess(), engine=SIMULATOR)
    assert [{k: v for k, v in a.items() if k != "engine"} for a in r.rows] == \
        [{k: v for k, v in b.items() if k != "engine"} for b in s.rows]
    assert np.array_equal(r.equity, s.equity)


in_scope_configs = st.builds(
    dict,
    entry_apr=st.floats(0.0, 0.3),
    exit_apr=st.floats(-0.1, 0.0),
    notional=st.floats(20_000.0, 90_000.0),
    signal=st.integers(1, 12),
    cooldown=st.floats(0.0, 72.0),
    holding=st.floats(5.0, 200.0),
    target=st.floats(0.005, 0.3),
    allocation=st.floats(0.2, 0.6),
    max_drawdown=st.floats(0.005, 0.2),
    min_buffer=st.floats(0.3, 0.6),
    delay=st.floats(0.0, 240.0),
    transfer_fee=st.floats(0.0, 20.0),
    latency=st.floats(0.0, 2000.0),
    sigma=st.sampled_from([0.0, 0.6, 1.5]),
    spread=st.tuples(st.floats(0.0, 2.0), st.floats(0.0, 2.0)),
    shock=st.sampled_from([0.0, 0.2, -0.2, 0.35]),
    path=st.integers(0, 10_000),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(p=in_scope_configs)
def test_hypothesis_in_scope_configs(baseline: Config, history: MarketHistory, p: dict[str, Any]) -> None:
    lo, hi = sorted(p["spread"])
    risk = attrs.evolve(baseline.risk, max_drawdown=p["max_drawdown"], min_margin_buffer=p["min_buffer"],
                        topup_target_buffer=p["min_buffer"] + 0.2)
    cfg = attrs.evolve(
        baseline,
        perp_allocation=p["allocation"],
        strategy=attrs.evolve(baseline.strategy, entry_apr=p["entry_apr"], exit_apr=p["exit_apr"],
                              notional=p["notional"], signal_settlements=p["signal"], cooldown_hours=p["cooldown"],
                              max_holding_days=p["holding"], target_profit=p["target"]),
        risk=risk,
        transfer=attrs.evolve(baseline.transfer, delay_minutes=p["delay"], fee=p["transfer_fee"]),
        spot=attrs.evolve(baseline.spot, latency_ms_median=p["latency"], latency_sigma=p["sigma"],
                          half_spread_bp_min=lo, half_spread_bp_max=hi, depth_btc=50.0),
        perp=attrs.evolve(baseline.perp, latency_ms_median=p["latency"] / 2, latency_sigma=p["sigma"],
                          half_spread_bp_min=lo, half_spread_bp_max=hi, depth_btc=50.0),
    )
    assert K.out_of_scope(cfg) is None
    h = path_history(cfg, cut_periods(history), 90 * 24, 20.0, p["path"])
    if p["shock"]:
        h = apply_scenario(h, Scenario(description="SYNTHETIC shock", shock_return=p["shock"], shock_after_days=30.0))
    sim = simulate(cfg, h, path_seeds(cfg.seed, p["path"])[1])
    run = K.run_kernel(cfg, h, path_seeds(cfg.seed, p["path"])[1], trace=True)
    event(f"kernel: {run.reason or 'ran the path'}; {'traded' if sim.fills else 'idle'}")
    if run.flag:
        # handed to the simulator: only for what the kernel does not model, and the simulator met it
        assert run.flag in (K.F_LIQUIDATION, K.F_DRIFT, K.F_FLATTEN, K.F_PARTIAL, K.F_REJECTED), run.reason
        if run.flag == K.F_LIQUIDATION:
            assert sim.metrics["liquidations"] > 0
        return
    assert_equal_runs(cfg, h, lambda: path_seeds(cfg.seed, p["path"])[1])


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(st.floats(-0.7, 0.7), st.floats(-0.1, 0.1), st.floats(-0.1, 0.1),
                                st.floats(-0.7, 0.7)), min_size=2, max_size=8))
def test_a_path_the_guard_check_passes_is_one_the_guard_accepts_as_it_comes(steps: list[tuple[float, ...]]) -> None:
    """The kernel's precheck (SYNTHETIC prices) against the market guard itself, fed as the engine feeds it."""
    from fundarb.core.market_guard import MarketGuard

    cfg = load("sims/spot_perp.toml")
    spot = 30_000.0 * np.exp(np.cumsum([s[0] for s in steps]))
    perp = spot * np.exp([s[1] for s in steps])
    mark = spot * np.exp([s[2] for s in steps])
    fmark = mark * np.exp([s[3] for s in steps])  # a settlement every hour
    accepted = K._guard_accepts(spot, perp, mark, fmark, mark, cfg)
    event(f"precheck {'passes' if accepted else 'refuses'}")
    if not accepted:
        return
    guard = MarketGuard(cfg.market_data_settings.limits())
    for k in range(len(steps)):
        ts = k * 3_600_000_000_000
        for key, price in (("quote s", spot[k]), ("quote p", perp[k]), ("mark p", mark[k])):
            assert guard.observe(key, ts, float(price), price) == (price,)
        assert guard.settlement_price("mark p", ts, float(fmark[k])) == fmark[k]
        assert not guard.notes


def test_a_price_the_guard_would_hold_sends_the_path_to_the_simulator(baseline: Config, history: MarketHistory) -> None:
    h = path_history(baseline, cut_periods(history), 60 * 24, 30.0, 0)
    spot = h.spot.copy()
    spot[300] *= 3.0  # SYNTHETIC: a misprint, one hour
    bad = attrs.evolve(h, spot=spot)
    assert K.run_kernel(baseline, bad, path_seeds(baseline.seed, 0)[1]).flag == K.F_GUARD


def test_cli_says_which_engine_ran_and_refuses_what_it_cannot_run(tmp_path: Any) -> None:
    import json

    from typer.testing import CliRunner

    from fundarb.cli.main import app

    cli = CliRunner()
    res = cli.invoke(app, ["montecarlo", "sims/spot_perp.toml", "--paths", "3", "--days", "10", "--out",
                           str(tmp_path / "k")])
    assert res.exit_code == 0, res.output
    assert "engine: kernel; the config lies within the kernel's scope" in " ".join(res.output.split())
    assert json.loads((tmp_path / "k" / "montecarlo.json").read_text())["engine"]["engine"] == KERNEL
    res = cli.invoke(app, ["montecarlo", "sims/spot_perp.toml", "--paths", "3", "--days", "10", "--engine", "simulator",
                           "--out", str(tmp_path / "s")])
    assert res.exit_code == 0 and "engine: simulator; asked for with --engine simulator" in " ".join(res.output.split())
    res = cli.invoke(app, ["montecarlo", "--engine", "fast", "--paths", "3", "--out", str(tmp_path / "f")])
    assert res.exit_code == 2 and "--engine must be one of kernel, simulator, got 'fast'" in res.output
    res = cli.invoke(app, ["montecarlo", "sims/coin_margined.toml", "--engine", "kernel", "--paths", "3", "--out",
                           str(tmp_path / "c")])
    assert res.exit_code == 2 and "structure.kind = 'coin_margined'" in res.output
    assert not (tmp_path / "c").exists() and not (tmp_path / "f").exists()


def test_a_path_that_needs_more_draws_gets_them(baseline: Config, history: MarketHistory, monkeypatch: Any) -> None:
    """Fewer draws prepared than the path takes: the second try, with more, equals the simulator."""
    h = path_history(baseline, cut_periods(history), 120 * 24, 30.0, 5)
    seed_of = lambda: path_seeds(baseline.seed, 5)[1]  # noqa: E731
    monkeypatch.setattr(K, "DRAWS", 2)
    assert K.run_kernel(baseline, h, seed_of()).flag == K.F_DRAWS  # no second try without a fresh seed
    run = K.run_kernel(baseline, h, seed_of(), seed_of=seed_of)
    assert run.flag == 0 and run.N[K.N_ORDERS] > 2
    monkeypatch.undo()
    assert_equal_runs(baseline, h, seed_of)
    again = K.run_kernel(baseline, h, seed_of())
    assert np.array_equal(again.curve, run.curve) and np.array_equal(again.F, run.F)


@settings(max_examples=60, deadline=None)
@given(paths=st.integers(1, 12), days=st.integers(0, 40), start_hour=st.integers(0, 23), seed=st.integers(0, 2**32 - 1),
       scale=st.sampled_from([0.0, 1e-7, 1e-4, 1e-2]))
def test_curves_measured_together_equal_each_measured_alone(paths: int, days: int, start_hour: int, seed: int,
                                                           scale: float) -> None:
    """SYNTHETIC curves: the metrics of a batch, a row each, bit for bit those of each curve alone."""
    from fundarb.core import metrics
    from fundarb.core.model import NS_PER_HOUR

    n = days * 24 + 1
    ts = (19_000 * 24 + start_hour) * NS_PER_HOUR + np.arange(n, dtype=np.int64) * NS_PER_HOUR
    curves = 1e5 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0.0, scale, (paths, n)), axis=1))
    closes = metrics.daily_closes(ts, curves)
    sharpe, drawdown = metrics.sharpe_rows(closes, 0.03), metrics.max_drawdown_rows(curves, np.empty(curves.shape))
    for j in range(paths):
        assert closes[j].tobytes() == metrics.daily_closes(ts, curves[j]).tobytes()
        assert float(sharpe[j]) == metrics.sharpe(ts, curves[j], 0.03)
        assert float(drawdown[j]) == metrics.max_drawdown(curves[j])


def test_a_chunk_run_in_batches_equals_its_paths_run_one_by_one(baseline: Config, history: MarketHistory) -> None:
    """Bit for bit, row and equity: the study's batches (the kernel's
    arrays, reused batch after batch) against each path's history through
    ``run_kernel``; thin spot depth sends some paths of a batch to the simulator."""
    from fundarb.core.metrics import daily_closes
    from fundarb.research.study import path_row, simulated_always_on

    cfg = attrs.evolve(baseline, spot=attrs.evolve(baseline.spot, depth_btc=1.9))
    src = cut_periods(history)
    rows = run_chunk(src, cfg, 120 * 24, 20.0, range(24), True, KERNEL)
    again = run_chunk(src, cfg, 120 * 24, 20.0, range(24), True, KERNEL)
    engines = set()
    for i, ((row, equity), (row2, equity2)) in enumerate(zip(rows, again)):
        assert row == row2 and equity is not None and equity2 is not None and equity.tobytes() == equity2.tobytes()
        h = path_history(cfg, src, 120 * 24, 20.0, i)
        run = K.run_kernel(cfg, h, path_seeds(cfg.seed, i)[1])
        engines.add(row["engine"])
        if run.flag:
            assert row["engine"] == f"{SIMULATOR} ({run.reason})"
            continue
        bench = cfg.always_on()
        b = K.run_kernel(bench, h, path_seeds(cfg.seed, i)[1])
        always_on = K.kernel_metrics(bench, h, b) if not b.flag else simulated_always_on(cfg, h, i)
        assert row == {**path_row(i, K.kernel_metrics(cfg, h, run), always_on), "engine": KERNEL}
        assert equity.tobytes() == daily_closes(run.hours, run.curve).tobytes()
    assert engines == {KERNEL, f"{SIMULATOR} ({K.PATH_FLAGS[K.F_PARTIAL]})"}


def test_path_draws_are_the_simulators_spawned_streams(baseline: Config) -> None:
    """The streams ``SimExchange`` seeds (each account's child of the path's
    seed, then the child's latency and spread children), built directly."""
    got = K.path_draws(baseline, path_seeds(baseline.seed, 3)[1], 64)
    spawned = path_seeds(baseline.seed, 3)[1].spawn(2)
    for account, (child, venue) in enumerate(zip(spawned, (baseline.spot, baseline.perp))):
        latency, spread = child.spawn(2)
        assert got[2 * account].tobytes() == np.random.default_rng(latency).standard_normal(64).tobytes()
        assert got[2 * account + 1].tobytes() == np.random.default_rng(spread).uniform(
            venue.half_spread_bp_min, venue.half_spread_bp_max, 64).tobytes()
    flat = attrs.evolve(baseline, spot=attrs.evolve(baseline.spot, latency_sigma=0.0, half_spread_bp_max=0.05))
    assert [d.size for d in K.path_draws(flat, path_seeds(baseline.seed, 3)[1], 64)] == [0, 0, 64, 64]


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(st.floats(-0.7, 0.7), st.floats(-0.12, 0.12)), min_size=1, max_size=8),
       mark_jump=st.floats(-0.7, 0.7))
def test_the_precheck_of_a_tape_marked_at_the_perp_is_the_full_precheck(steps: list[tuple[float, float]],
                                                                         mark_jump: float) -> None:
    """SYNTHETIC prices: where the perp's close stands in for the mark, the
    precheck skips the mark's own checks (the perp's) and gives the same answer."""
    cfg = load("sims/spot_perp.toml")
    spot = 30_000.0 * np.exp(np.cumsum([s[0] for s in steps]))
    perp = spot * np.exp([s[1] for s in steps])
    fmark = perp[-1:] * np.exp(mark_jump)
    ratios = K.guard_ratios(cfg)
    full = K._plausible(spot, perp, perp.copy(), fmark, perp[-1:], *ratios, False)
    assert K._plausible(spot, perp, perp, fmark, perp[-1:], *ratios, True) == full
    assert K._guard_accepts(spot, perp, perp, fmark, perp[-1:], cfg) == full
