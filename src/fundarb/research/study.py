"""A Monte Carlo study: N bootstrapped market paths, each run through the real
simulator with its own execution randomness, summarised as distributions.

A path runs on the compiled path kernel (``fundarb.research.kernel``) when
the config lies within its scope, else on the simulator (``choose_engine``
says which and why); the kernel hands any path it meets something it does
not model to the simulator, and each row names the engine that ran it.

Path i's market draws and simulator draws come from
``SeedSequence(seed, spawn_key=(i, 0))`` and ``(i, 1)``: a path is the same
whatever chunk or worker runs it, and path i of one config meets the same
market as path i of another (common random numbers in sweeps).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import attrs
import numpy as np

from fundarb.config import Config
from fundarb.core.errors import FundarbError
from fundarb.core.metrics import daily_closes
from fundarb.data.history import MarketHistory, fmt_time
from fundarb.research.bootstrap import (
    PairPeriods,
    Periods,
    SourcePeriods,
    VenueBars,
    auto_block_periods,
    bootstrap_history,
    bootstrap_paths,
    bootstrap_venue_bars,
    cut_periods,
)
from fundarb.research.cluster import ChunkRunner
from fundarb.sim.backtest import (
    GATES,
    beside_always_on,
    build_simulation,
    carry_curve,
    compute_metrics,
    evaluate_gates,
    run_always_on,
)
from fundarb.sim.rotation import BAR_NS, run_rotation

MAX_PATHS = 1_000_000
MAX_CHUNK = 50
KERNEL_BATCH = 25  # a chunk's paths drawn and run on the kernel this many at a time
# per-path metrics kept in the study's table (all from compute_metrics)
PATH_METRICS = (
    "net_apr", "sharpe", "max_drawdown", "fill_rate", "liquidations", "net_pnl", "funding_net", "fees",
    "slippage", "net_funding_after_fees", "entries", "orders", "delta_drift_max", "missed_settlements",
    "min_margin_buffer", "time_in_position", "alerts",
)
# each path's always-on benchmark (the same market and draws, the carry held throughout) and the edge over it
ALWAYS_ON_PATH_METRICS = ("always_on_net_apr", "always_on_sharpe", "always_on_max_drawdown", "edge_over_always_on")
DISTRIBUTION_METRICS = ("net_apr", "sharpe", "max_drawdown", "fill_rate", "liquidations", "delta_drift_max", "time_in_position",
                        "always_on_net_apr", "edge_over_always_on")
PERCENTILES = (5, 25, 50, 75, 95)


class StudyError(FundarbError, ValueError):
    """A study that cannot run as asked; the message names the input."""


def _positive(inst: Any, attr: attrs.Attribute, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise StudyError(f"{attr.name} must be a positive number, got {value}")


@attrs.frozen
class StudySpec:
    """What to simulate: how many paths, how long, and the bootstrap's mean
    block length in funding periods (None: Politis-White automatic)."""

    paths: int
    days: float = attrs.field(default=365.0, converter=float)
    block_periods: float | None = attrs.field(default=None, converter=attrs.converters.optional(float), validator=_positive)

    def __attrs_post_init__(self) -> None:
        if isinstance(self.paths, bool) or not isinstance(self.paths, int) or not 1 <= self.paths <= MAX_PATHS:
            raise StudyError(f"--paths must be a whole number from 1 to {MAX_PATHS:,}, got {self.paths}")
        if not (math.isfinite(self.days) and 1 <= self.days <= 3650):
            raise StudyError(f"--days must be between 1 and 3650, got {self.days}")
        if self.block_periods is not None and self.block_periods < 1:
            raise StudyError(f"--block-periods must be >= 1 funding period, got {self.block_periods}")

    @property
    def hours(self) -> int:
        return int(round(self.days * 24))


def path_seeds(seed: int, index: int) -> tuple[np.random.SeedSequence, np.random.SeedSequence]:
    """(market draws, simulator draws) of path ``index``."""
    return np.random.SeedSequence(seed, spawn_key=(index, 0)), np.random.SeedSequence(seed, spawn_key=(index, 1))


def path_history(cfg: Config, src: SourcePeriods | PairPeriods, hours: int, block: float, index: int) -> MarketHistory:
    market_seed, _ = path_seeds(cfg.seed, index)
    h = bootstrap_history(src, hours, block, np.random.default_rng(market_seed))
    return _with_scenario(h, cfg)


def _with_scenario(h: MarketHistory, cfg: Config) -> MarketHistory:
    scenario = getattr(cfg, "scenario", None)
    if scenario is None:
        return h
    from fundarb.data.scenario import apply_scenario

    return apply_scenario(h, scenario)


SIMULATOR, KERNEL = "simulator", "kernel"
ENGINES = (KERNEL, SIMULATOR)


def path_row(index: int, m: dict[str, Any], always_on: dict[str, Any] | None = None) -> dict[str, Any]:
    """A path's row of the study's table: its metrics and gates, and beside
    them its always-on benchmark's (``always_on``, that run's metrics; None:
    ``m`` holds them already, as a rotation's does)."""
    gates = evaluate_gates(m)
    row: dict[str, Any] = {"path": index}
    row.update({k: m[k] for k in PATH_METRICS})
    bench = m if always_on is None else beside_always_on(m, always_on)
    row.update({k: bench.get(k) for k in ALWAYS_ON_PATH_METRICS})  # None: run without it (a sweep's paths)
    row.update({f"gate_{g['metric']}": g["passed"] for g in gates})
    row["all_gates_passed"] = all(g["passed"] for g in gates)
    return row


def run_path(cfg: Config, src: Periods, hours: int, block: float, index: int,
             always_on: bool = True) -> tuple[dict[str, Any], np.ndarray]:
    """One path through the simulator: its metrics row and daily equity
    (``always_on``: with its benchmark's figures)."""
    if isinstance(src, VenueBars):
        return run_rotation_path(cfg, src, hours, block, index)
    h = path_history(cfg, src, hours, block, index)
    engine, sim = build_simulation(cfg, h, _sim_seed(cfg.seed, index))
    engine.run()
    row = path_row(index, compute_metrics(cfg, h, engine, sim), simulated_always_on(cfg, h, index) if always_on else {})
    equity = daily_closes(engine.curve["ts"], carry_curve(engine.curve))  # the carry's (a capital in BTC: without the holding's moves)
    return row, equity


def simulated_always_on(cfg: Config, h: MarketHistory, index: int) -> dict[str, Any]:
    """Path ``index``'s always-on benchmark on the simulator: its metrics."""
    return run_always_on(cfg, h, _sim_seed(cfg.seed, index)).metrics


def kernel_scope(cfg: Config, src: Periods) -> str | None:
    """What keeps ``cfg`` on ``src`` outside the path kernel's scope (None: inside)."""
    if isinstance(src, PairPeriods):
        return "a perp/perp carry's bars"
    if isinstance(src, VenueBars):
        return "a rotation across venues ([rotation])"
    from fundarb.research.kernel import out_of_scope

    return out_of_scope(cfg)


def check_engine(asked: str | None) -> None:
    if asked is not None and asked not in ENGINES:
        raise StudyError(f"--engine must be one of {', '.join(ENGINES)}, got {asked!r}")


def choose_engine(cfg: Config, src: Periods, asked: str | None = None) -> tuple[str, str]:
    """(engine, why): the kernel where the config lies within its scope, else
    the simulator, naming the feature; ``asked`` forces either (the kernel
    only within its scope: outside it, a StudyError names the feature)."""
    check_engine(asked)
    if asked == SIMULATOR:
        return SIMULATOR, "asked for with --engine simulator"
    why = kernel_scope(cfg, src)
    if why is None:
        return KERNEL, "asked for with --engine kernel" if asked else "the config lies within the kernel's scope"
    if asked == KERNEL:
        raise StudyError(f"--engine kernel: config {cfg.name} has {why}, which the path kernel does not model; "
                         "run it with --engine simulator (the default picks it)")
    return SIMULATOR, f"the path kernel does not model {why}"


def run_rotation_path(cfg: Config, src: VenueBars, hours: int, block: float,
                      index: int) -> tuple[dict[str, Any], np.ndarray]:
    """One path of a rotating carry: every venue's bars drawn together, the
    rotation (``sim.rotation``) run on them."""
    market_seed, sim_seed = path_seeds(cfg.seed, index)
    tape = bootstrap_venue_bars(src, hours, block, np.random.default_rng(market_seed))
    data = attrs.evolve(cfg.data, start=fmt_time(int(tape.bars[0])), end=fmt_time(int(tape.bars[-1]) + BAR_NS))
    r = run_rotation(attrs.evolve(cfg, data=data), source=tape, sim_seed=sim_seed)
    m = r.metrics
    row = path_row(index, m)
    row["moves"] = m["moves"]
    row["withdrawals"] = m["withdrawals"]
    return row, daily_closes(r.curve["ts"], r.curve["equity"])


def run_chunk(
    src: Periods, cfg: Config, hours: int, block: float, indices: Sequence[int], keep_equity: bool = True,
    engine: str = SIMULATOR, always_on: bool = True,
) -> list[tuple[dict[str, Any], np.ndarray | None]]:
    """The unit of work shipped to a worker: several paths of one config, on
    ``engine``; ``always_on``: each with its benchmark (a sweep ranks configs
    without it)."""
    if engine == KERNEL:
        return kernel_chunk(src, cfg, hours, block, indices, keep_equity, always_on)
    out = []
    for i in indices:
        row, equity = run_path(cfg, src, hours, block, i, always_on)
        row["engine"] = SIMULATOR
        out.append((row, equity if keep_equity else None))
    return out


def kernel_chunk(src: Periods, cfg: Config, hours: int, block: float, indices: Sequence[int],
                 keep_equity: bool = True, always_on: bool = True) -> list[tuple[dict[str, Any], np.ndarray | None]]:
    """``run_chunk`` on the path kernel: each path's row and daily equity as
    the simulator's run gives them; a path the kernel flags runs on the
    simulator, its row's ``engine`` saying why. The paths are drawn, run and
    measured KERNEL_BATCH at a time, as arrays (with a scenario: one by one,
    each history changed by it)."""
    from fundarb.research import kernel

    assert not isinstance(src, VenueBars), "a rotation runs on the simulator (choose_engine)"
    out: list[tuple[dict[str, Any], np.ndarray | None]] = []
    bench = cfg.always_on()
    if isinstance(src, PairPeriods) or getattr(cfg, "scenario", None) is not None:
        ws = kernel.Workspace()
        for i in indices:
            h = path_history(cfg, src, hours, block, i)
            run = kernel.run_kernel(cfg, h, _sim_seed(cfg.seed, i), ws=ws, seed_of=partial(_sim_seed, cfg.seed, i))
            out.append(_kernel_row(cfg, src, hours, block, i, h, run, keep_equity, ws, always_on))
        return out
    ws, paths = getattr(_kept, "arrays", None) or (kernel.Workspace(), None)
    for a in range(0, len(indices), KERNEL_BATCH):
        part = indices[a:a + KERNEL_BATCH]
        paths = bootstrap_paths(src, hours, block, [np.random.default_rng(path_seeds(cfg.seed, i)[0]) for i in part],
                                reuse=paths)
        # each path's always-on benchmark first, on the same market and draws: its metrics are kept, and the
        # workspace is then the carry's
        seeds = [_sim_seed(cfg.seed, i) for i in part]  # read, never spawned from: one set serves both runs
        draws = kernel.paths_draws(cfg, seeds, kernel.DRAWS)  # the venues' own: both
        bench_runs = _measured_tapes(bench, src, paths, seeds, ws, draws) if always_on else {}
        runs = kernel.run_tapes(cfg, paths.grid, paths.spot, paths.perp, paths.settle_at, paths.settled,
                                src.rate[paths.chosen], src.interval[paths.chosen], seeds, ws, draws)
        by_path = _by_path(cfg, paths, runs, ws)
        for j, i in enumerate(part):
            if j in by_path:
                m, equity = by_path[j]
                b = (bench_runs[j][0] if j in bench_runs else simulated_always_on(cfg, paths.history(j), i)) \
                    if always_on else {}
                row = path_row(i, m, b)
                row["engine"] = KERNEL
                out.append((row, equity if keep_equity else None))
            elif runs.flags[j] == kernel.F_DRAWS:  # more draws than prepared: the path alone, with more
                h = paths.history(j)
                run = kernel.run_kernel(cfg, h, _sim_seed(cfg.seed, i), ws=ws, seed_of=partial(_sim_seed, cfg.seed, i))
                out.append(_kernel_row(cfg, src, hours, block, i, h, run, keep_equity, ws, always_on))
            else:
                out.append(_simulator_row(cfg, src, hours, block, i, kernel.PATH_FLAGS[runs.flags[j]], keep_equity,
                                          always_on))
    _kept.arrays = ws, paths
    return out


def _by_path(cfg: Config, paths: Any, runs: Any, ws: Any) -> dict[int, tuple[dict[str, Any], np.ndarray]]:
    """The metrics and daily equity of each path of ``runs`` the kernel ran to
    the end, by its row (the equity is ``ws``'s, valid until its next use)."""
    from fundarb.research import kernel

    ran = np.flatnonzero(runs.flags == 0)
    if ran.size == runs.flags.size:
        measured = kernel.paths_metrics(cfg, paths.days, paths.grid, runs.F, runs.N, runs.curve, ws.scratch())
    else:
        measured = kernel.paths_metrics(cfg, paths.days, paths.grid, runs.F[ran], runs.N[ran], runs.curve[ran])
    return dict(zip(ran.tolist(), zip(*measured)))


def _measured_tapes(cfg: Config, src: SourcePeriods, paths: Any, seeds: Sequence[np.random.SeedSequence], ws: Any,
                    draws: tuple[np.ndarray, ...]) -> dict[int, tuple[dict[str, Any], np.ndarray]]:
    """``_by_path`` of ``cfg`` over ``paths`` (with their simulator ``seeds``
    and ``draws``) on the kernel; a path it flags is not among them."""
    from fundarb.research import kernel

    runs = kernel.run_tapes(cfg, paths.grid, paths.spot, paths.perp, paths.settle_at, paths.settled,
                            src.rate[paths.chosen], src.interval[paths.chosen], seeds, ws, draws)
    return _by_path(cfg, paths, runs, ws)


# a thread's kernel workspace and last paths, kept from chunk to chunk: their arrays are written again, not
# allocated afresh (a Dask worker gives freed memory back to the system at once, then takes it again page by page)
_kept = threading.local()


def _kernel_row(cfg: Config, src: Periods, hours: int, block: float, i: int, h: MarketHistory, run: Any,
                keep_equity: bool, ws: Any, always_on: bool = True) -> tuple[dict[str, Any], np.ndarray | None]:
    """Path ``i``'s row and daily equity from its kernel ``run`` on ``h``,
    or from the simulator where the kernel flagged it; its always-on
    benchmark run on ``h`` after it (in ``ws``), on the simulator if the
    kernel flags that."""
    from fundarb.research import kernel

    if run.flag:
        return _simulator_row(cfg, src, hours, block, i, run.reason, keep_equity, always_on)
    metrics, closes = kernel.paths_metrics(cfg, h.days, run.hours, run.F[None, :], run.N[None, :], run.curve[None, :])
    bench_metrics: dict[str, Any] = {}
    if always_on:
        bench = cfg.always_on()
        b = kernel.run_kernel(bench, h, _sim_seed(cfg.seed, i), ws=ws, seed_of=partial(_sim_seed, cfg.seed, i))
        bench_metrics = kernel.kernel_metrics(bench, h, b) if not b.flag else simulated_always_on(cfg, h, i)
    row = path_row(i, metrics[0], bench_metrics)
    row["engine"] = KERNEL
    return row, closes[0] if keep_equity else None


def _simulator_row(cfg: Config, src: Periods, hours: int, block: float, i: int, reason: str,
                   keep_equity: bool, always_on: bool = True) -> tuple[dict[str, Any], np.ndarray | None]:
    """Path ``i`` on the simulator, the kernel having met ``reason`` on it."""
    row, equity = run_path(cfg, src, hours, block, i, always_on)
    row["engine"] = f"{SIMULATOR} ({reason})"
    return row, equity if keep_equity else None


def _sim_seed(seed: int, index: int) -> np.random.SeedSequence:
    return path_seeds(seed, index)[1]


def chunk_size(paths: int, workers: int) -> int:
    """About eight chunks per worker (for balance), at most MAX_CHUNK paths
    each, so a 10,000-path study is a few hundred tasks, not 10,000."""
    return max(1, min(MAX_CHUNK, math.ceil(paths / (8 * max(workers, 1)))))


def chunks(paths: int, size: int) -> list[range]:
    return [range(a, min(a + size, paths)) for a in range(0, paths, size)]


@attrs.frozen
class StudyResult:
    config: Config
    spec: StudySpec
    block_periods: float
    block_auto: bool
    source: Periods
    rows: list[dict[str, Any]]
    equity: np.ndarray  # (paths, days + 1) daily closes
    day_offsets: np.ndarray
    engine: str = SIMULATOR
    engine_note: str = ""

    @property
    def on_simulator(self) -> dict[str, int]:
        """Paths the kernel handed to the simulator, by why (a kernel study)."""
        return engine_fallbacks(self.rows)


def engine_fallbacks(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """The rows a kernel run handed to the simulator, counted by why (its ``engine`` says)."""
    out: dict[str, int] = {}
    for r in rows:
        e = r.get("engine", SIMULATOR)
        if e.startswith(SIMULATOR + " ("):
            why = e[len(SIMULATOR) + 2:-1]
            out[why] = out.get(why, 0) + 1
    return dict(sorted(out.items()))


def resolve_block(spec: StudySpec, src: Periods) -> tuple[float, bool]:
    if spec.block_periods is not None:
        return float(spec.block_periods), False
    return auto_block_periods(src), True


def run_study(
    cfg: Config, history: MarketHistory | Periods, spec: StudySpec, runner: ChunkRunner,
    progress: Callable[[int], None] | None = None, engine: str | None = None,
) -> StudyResult:
    """``history``: the real window to cut, or a source already cut (a
    rotation's ``VenueBars``); ``engine``: force the kernel or the simulator
    (default: ``choose_engine``)."""
    src = history if isinstance(history, (SourcePeriods, PairPeriods, VenueBars)) else cut_periods(history)
    used, note = choose_engine(cfg, src, engine)
    block, auto = resolve_block(spec, src)
    parts = chunks(spec.paths, chunk_size(spec.paths, runner.workers))
    tasks = [(cfg, spec.hours, block, list(r), True, used) for r in parts]
    done: dict[int, list] = {}
    for task_no, result in runner.run(run_chunk, src, tasks):
        done[task_no] = result
        if progress is not None:
            progress(len(result))
    pairs = [pair for t in range(len(parts)) for pair in done[t]]
    rows = [r for r, _ in pairs]
    equity = np.vstack([e for _, e in pairs])
    day_offsets = np.arange(equity.shape[1], dtype=np.float64)
    return StudyResult(cfg, spec, block, auto, src, rows, equity, day_offsets, used, note)


def distribution(values: np.ndarray) -> dict[str, Any]:
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    out: dict[str, Any] = {"n": int(finite.size), "missing": int(v.size - finite.size)}
    if finite.size == 0:
        return out
    out.update({"mean": float(finite.mean()), "std": float(finite.std()), "min": float(finite.min()), "max": float(finite.max())})
    for p, q in zip(PERCENTILES, np.percentile(finite, PERCENTILES)):
        out[f"p{p}"] = float(q)
    return out


def column(rows: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([np.nan if r[key] is None else float(r[key]) for r in rows], dtype=np.float64)


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Distributions of the path metrics and the gate pass probabilities."""
    n = len(rows)
    liq = column(rows, "liquidations")
    return {
        "paths": n,
        "distributions": {k: distribution(column(rows, k)) for k in DISTRIBUTION_METRICS},
        "p_all_gates_pass": sum(r["all_gates_passed"] for r in rows) / n,
        # paths on which the config earned more than its always-on benchmark on the same market
        "p_beats_always_on": float((column(rows, "edge_over_always_on") > 0).sum() / n),
        "gate_pass_rates": {name: sum(r[f"gate_{key}"] for r in rows) / n for name, key, _, _ in GATES},
        "liquidations": {"total": int(liq.sum()), "paths_with_liquidation": int((liq > 0).sum())},
        "missed_settlements_total": int(column(rows, "missed_settlements").sum()),
    }

