"""Walk-forward validation: a config's parameters chosen on the past, judged
on the future they did not see; and what to run now, the rule's choice on
the last training window (the one ending where the data ends).

The window from the config's start to its end is cut into rolling pairs: a
training window of ``train_days``, then the test window of ``test_days``
right after it, the pair moved on by ``step_days``. On each training window
the sweep (``research.sweep``) runs the grid over paths bootstrapped from
that window alone and its rule picks a config (none: no grid point is
eligible, and the carry stays out for the test window). That config then
runs on the test window's real history, its signal started with the
settlements known before the window (``run_backtest(prior=...)``), beside
its always-on benchmark over the same window. The test windows' equity
curves are chained into one out-of-sample curve (each window starts from
the capital, its returns compounded onto where the last one ended), and
always-on's the same way.

With other configs beside the base (``others``: other structures or
venues over the same window and capital), every training window runs the
grid on each of them, each over paths bootstrapped from its own history,
and the rule ranks all their grid points together: the choice is a config
and its grid point. A test window is then judged against the always-on of
the structure chosen for it (the base's when the carry stays out), and each
candidate's own always-on over the same windows is reported beside it.

Nothing of a test window is read before its training window's choice is
made, and a training window ends where its test window starts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from fundarb.config import Config, config_hash
from fundarb.core import metrics
from fundarb.core.errors import FundarbError
from fundarb.core.model import NS_PER_HOUR
from fundarb.data.history import MarketHistory, fmt_time, history_for, parse_time
from fundarb.research.cluster import ChunkRunner
from fundarb.research.study import StudySpec
from fundarb.research.sweep import SweepResult, apply_params, eligible, grid_points, run_sweep
from fundarb.sim.backtest import BacktestResult, carry_curve, run_always_on, run_backtest

NS_PER_DAY = 24 * NS_PER_HOUR
_SPAN = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([dw]?)\s*")


class WalkForwardError(FundarbError, ValueError):
    """Walk-forward settings that cannot run; the message names which."""


def parse_span(text: str, option: str) -> float:
    """``365d``, ``13w`` or a plain number of days -> days."""
    m = _SPAN.fullmatch(text)
    if not m:
        raise WalkForwardError(f"{option} {text!r} is not a span like 365d, 13w or 90")
    days = float(m.group(1)) * (7 if m.group(2) == "w" else 1)
    if not 1 <= days <= 3650:
        raise WalkForwardError(f"{option} {text!r} must be between 1 and 3650 days")
    return days


@attrs.frozen
class WalkSpec:
    train_days: float
    test_days: float
    step_days: float
    paths: int = 100  # bootstrapped paths per grid point on each training window
    path_days: float | None = None  # each path's length (default: the training window's)

    def __attrs_post_init__(self) -> None:
        if self.test_days < 7:
            raise WalkForwardError(f"--test {self.test_days:g} days is too short: a test window needs at least 7 days "
                                   "to have an APR")
        if self.train_days < 7:
            raise WalkForwardError(f"--train {self.train_days:g} days is too short to bootstrap paths from")

    @property
    def study(self) -> StudySpec:
        return StudySpec(paths=self.paths, days=self.path_days or self.train_days)


@attrs.frozen
class Window:
    index: int
    train_start: int
    train_end: int  # = test_start
    test_end: int

    @property
    def test_start(self) -> int:
        return self.train_end


def windows(start: int, end: int, spec: WalkSpec) -> list[Window]:
    """The rolling (train, test) pairs of whole windows inside [start, end)."""
    train, test, step = (int(round(d * NS_PER_DAY)) for d in (spec.train_days, spec.test_days, spec.step_days))
    out: list[Window] = []
    k = 0
    while start + k * step + train + test <= end:
        lo = start + k * step
        out.append(Window(k, lo, lo + train, lo + train + test))
        k += 1
    if not out:
        raise WalkForwardError(
            f"the window {fmt_time(start)} .. {fmt_time(end)} UTC ({(end - start) / NS_PER_DAY:.0f} days) holds no "
            f"training window of {spec.train_days:g} days followed by a test window of {spec.test_days:g} days")
    return out


def own_grid(cfg: Config) -> dict[str, list[float]]:
    """A grid of one point, the config's own parameters: its walk-forward
    judges the config as it is (the rule still keeps it out of a test window
    its training window finds it unfit for)."""
    return {"entry": [cfg.strategy.entry_apr]}


def within(cfg: Config, lo: int, hi: int) -> Config:
    return attrs.evolve(cfg, data=attrs.evolve(cfg.data, start=fmt_time(lo), end=fmt_time(hi)))


def prior_settlements(cfg: Config, before: int, data_dir: Path | None,
                      load: Callable[[Config, Path | None], MarketHistory] = history_for) -> list[tuple[int, float, float]]:
    """The last ``strategy.signal_settlements`` settlements of the perp before
    ``before``: what a carry running then knew."""
    n = cfg.strategy.signal_settlements
    if n == 0:
        return []
    hours = max(2 * n * 8, 48)
    h = load(within(cfg, before - hours * NS_PER_HOUR, before), data_dir)
    keep = h.funding_ts < before
    rows = list(zip(h.funding_ts[keep].tolist(), h.funding_rate[keep].tolist(), h.funding_interval[keep].tolist()))
    return rows[-n:]


def check_candidates(base: Config, others: Sequence[Config]) -> None:
    """Configs the rule can choose among: distinct, and of the same capital
    in the same asset, so that their APRs are of one money."""
    seen = {base.name}
    for cfg in others:
        if cfg.name in seen:
            raise WalkForwardError(f"config {cfg.name!r} is named twice; each config to choose among is named once")
        seen.add(cfg.name)
        if cfg.capital != base.capital or cfg.structure_settings.capital_asset != base.structure_settings.capital_asset:
            raise WalkForwardError(
                f"config {cfg.name!r} has capital {cfg.capital:g} {cfg.structure_settings.capital_asset}, {base.name!r} "
                f"{base.capital:g} {base.structure_settings.capital_asset}: configs to choose among need the same capital in "
                "the same asset, so that their APRs compare")


@attrs.frozen
class Choice:
    """The rule's pick over every candidate's sweep of one training window."""

    sweeps: list[SweepResult]  # one per candidate, in candidate order
    candidate: int | None  # None: no grid point of any candidate is eligible
    point: int | None

    @property
    def params(self) -> dict[str, float] | None:
        return None if self.candidate is None else self.sweeps[self.candidate].rows[self.point]["params"]  # type: ignore[index]

    @property
    def config(self) -> Config | None:
        return None if self.candidate is None else self.sweeps[self.candidate].configs[self.point]  # type: ignore[index]


def choose(sweeps: Sequence[SweepResult]) -> Choice:
    """The sweep's rule over the grid points of every candidate together:
    the eligible point with the best 5th-percentile net APR, then the best
    median; a tie goes to the earlier candidate, then the earlier point."""
    ranked = [(-row["p5_net_apr"], -row["median_net_apr"], c, row["point"])
              for c, sweep in enumerate(sweeps) for row in sweep.rows if eligible(row)]
    if not ranked:
        return Choice(list(sweeps), None, None)
    *_, c, point = min(ranked)
    return Choice(list(sweeps), c, point)


@attrs.frozen
class WindowRun:
    window: Window
    params: dict[str, float] | None  # the grid point chosen (None: none was eligible, the carry stayed out)
    config: Config | None
    sweep: SweepResult  # the chosen candidate's (the base's when the carry stayed out)
    test: BacktestResult  # the chosen config (or, with none, its benchmark alone) over the test window
    curve: tuple[np.ndarray, np.ndarray]  # (ts, the carry's equity) over the test window
    always_on_curve: tuple[np.ndarray, np.ndarray]  # the chosen structure's always-on (the base's when out)
    candidate: str | None = None  # the chosen config's name (None: the carry stayed out)
    sweeps: tuple[SweepResult, ...] = ()  # every candidate's sweep of the training window, in candidate order
    candidates_always_on: tuple[tuple[np.ndarray, np.ndarray], ...] = ()  # each candidate's always-on, in order

    def figures(self, capital: float, collateral_rate: float) -> dict[str, Any]:
        ts, eq = self.curve
        bts, beq = self.always_on_curve
        days = (self.window.test_end - self.window.test_start) / NS_PER_DAY
        apr = metrics.apr(float(eq[-1]) - capital, capital, days)
        bench = metrics.apr(float(beq[-1]) - capital, capital, days)
        return {
            "net_apr": apr, "always_on_net_apr": bench, "edge_over_always_on": apr - bench,
            "sharpe": metrics.sharpe(ts.tolist(), eq.tolist(), collateral_rate),
            "max_drawdown": metrics.max_drawdown(eq.tolist()),
            "always_on_sharpe": metrics.sharpe(bts.tolist(), beq.tolist(), collateral_rate),
            "always_on_max_drawdown": metrics.max_drawdown(beq.tolist()),
            "entries": self.test.metrics["entries"] if self.config is not None else 0,
        }


@attrs.frozen
class WalkResult:
    base: Config
    spec: WalkSpec
    grid: dict[str, list[float]]
    runs: list[WindowRun]
    stitched: tuple[np.ndarray, np.ndarray]  # (ts, equity) of the test windows chained
    always_on: tuple[np.ndarray, np.ndarray]
    # what to run now: the rule's choice on the last training window, the one that ends where the data ends
    latest: Choice | None = None
    others: tuple[Config, ...] = ()  # the configs chosen among beside the base (other structures, venues)

    @property
    def candidates(self) -> list[Config]:
        return [self.base, *self.others]

    @property
    def recommended(self) -> tuple[dict[str, float], Config] | None:
        if self.latest is None or self.latest.candidate is None:
            return None
        assert self.latest.params is not None and self.latest.config is not None
        return self.latest.params, self.latest.config

    @property
    def latest_window(self) -> tuple[str, str] | None:
        """The last training window's dates (what ``recommended`` was chosen on)."""
        if self.latest is None:
            return None
        data = self.latest.sweeps[0].base.data
        return data.start, data.end

    def summary(self) -> dict[str, Any]:
        cfg = self.base
        ts, eq = self.stitched
        bts, beq = self.always_on
        days = sum((r.window.test_end - r.window.test_start) / NS_PER_DAY for r in self.runs)
        apr = metrics.apr(float(eq[-1]) - cfg.capital, cfg.capital, days)
        bench = metrics.apr(float(beq[-1]) - cfg.capital, cfg.capital, days)
        per = [r.figures(cfg.capital, cfg.collateral_rate) for r in self.runs]
        return {
            "windows": len(self.runs),
            "out_of_sample_days": days,
            "net_apr": apr,
            "always_on_net_apr": bench,
            "edge_over_always_on": apr - bench,
            "sharpe": metrics.sharpe(ts.tolist(), eq.tolist(), cfg.collateral_rate),
            "max_drawdown": metrics.max_drawdown(eq.tolist()),
            "always_on_sharpe": metrics.sharpe(bts.tolist(), beq.tolist(), cfg.collateral_rate),
            "always_on_max_drawdown": metrics.max_drawdown(beq.tolist()),
            "windows_beating_always_on": sum(p["edge_over_always_on"] > 0 for p in per),
            "windows_out": sum(r.params is None for r in self.runs),
            "parameter_stability": stability(self.grid, [r.params for r in self.runs]),
            **({"structure_stability": steadiness([r.candidate for r in self.runs], [c.name for c in self.candidates]),
                "always_on_by_config": self._always_on_by_config(days)} if self.others else {}),
        }

    def _always_on_by_config(self, days: float) -> dict[str, dict[str, float]]:
        """Each candidate held from the first hour to the last of every test
        window, chained the same way: what holding it all the time earned."""
        capital = self.base.capital
        out = {}
        for i, cfg in enumerate(self.candidates):
            ts, eq = chain([r.candidates_always_on[i] for r in self.runs], capital)
            out[cfg.name] = {"net_apr": metrics.apr(float(eq[-1]) - capital, capital, days),
                             "sharpe": metrics.sharpe(ts.tolist(), eq.tolist(), cfg.collateral_rate),
                             "max_drawdown": metrics.max_drawdown(eq.tolist())}
        return out


def stability(grid: dict[str, list[float]], chosen: Sequence[dict[str, float] | None]) -> dict[str, Any]:
    """How steady the choice was from window to window, per grid name: the
    values chosen in order (None: none eligible), how often it changed, and
    the share of windows that chose the most common value."""
    return {name: steadiness([None if p is None else p[name] for p in chosen], sorted(grid[name])) for name in grid}


def steadiness(values: Sequence[Any], order: Sequence[Any]) -> dict[str, Any]:
    """The values chosen window by window (None: none), how often the choice
    changed, the most chosen one (a tie: the first in ``order``) and its share."""
    values = list(values)
    changes = sum(1 for a, b in zip(values, values[1:]) if a != b)
    picked = [v for v in values if v is not None]
    if not picked:
        return {"chosen": values, "changes": changes, "modal": None, "modal_share": 0.0}
    rank = {v: i for i, v in enumerate(order)}
    modal = max(set(picked), key=lambda v: (picked.count(v), -rank.get(v, len(rank))))
    return {"chosen": values, "changes": changes, "modal": modal, "modal_share": picked.count(modal) / len(values)}


def chain(curves: Sequence[tuple[np.ndarray, np.ndarray]], capital: float) -> tuple[np.ndarray, np.ndarray]:
    """Curves that each start from ``capital``, one after the other: each
    window's returns compounded onto where the last one ended."""
    ts_out: list[np.ndarray] = []
    eq_out: list[np.ndarray] = []
    level = capital
    for ts, eq in curves:
        scaled = eq * (level / capital)
        ts_out.append(ts)
        eq_out.append(scaled)
        level = float(scaled[-1])
    return np.concatenate(ts_out), np.concatenate(eq_out)


def _carry(r: BacktestResult) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(r.curve["ts"], dtype=np.int64), np.asarray(carry_curve(r.curve), dtype=np.float64)


def run_walkforward(
    base: Config, grid: dict[str, list[float]], spec: WalkSpec, runner: ChunkRunner, data_dir: Path | None = None,
    engine: str | None = None, progress: Callable[[int, str], None] | None = None,
    load: Callable[[Config, Path | None], MarketHistory] = history_for, others: Sequence[Config] = (),
) -> WalkResult:
    """Every window: the rule's choice on the training window, over the grid
    of the base and of each of ``others``, run on the test window (``load``:
    the history of a config's window, the one place data is read;
    ``progress``: told each window's number and what it does)."""
    start, end = parse_time(base.data.start, "start"), parse_time(base.data.end, "end")
    check_candidates(base, others)
    candidates = [base, *others]
    for cfg in candidates:
        for p in grid_points(grid):  # every grid point of every config checked before any work (as the sweep does)
            apply_params(cfg, p)

    def pick(lo: int, hi: int) -> Choice:
        sweeps = []
        for cfg in candidates:
            train = within(cfg, lo, hi)
            sweeps.append(run_sweep(train, load(train, data_dir), spec.study, grid, runner, engine=engine))
        return choose(sweeps)

    def carried(cfg: Config, w: Window) -> BacktestResult:
        """``cfg`` over the test window, its always-on beside it."""
        test_cfg = within(cfg, w.test_start, w.test_end)
        return run_backtest(test_cfg, load(test_cfg, data_dir),
                            prior=prior_settlements(test_cfg, w.test_start, data_dir, load))

    def held(cfg: Config, w: Window) -> tuple[np.ndarray, np.ndarray]:
        """``cfg``'s always-on alone over the test window (a config not chosen for it)."""
        test_cfg = within(cfg, w.test_start, w.test_end)
        return _carry(run_always_on(test_cfg, load(test_cfg, data_dir)))

    runs: list[WindowRun] = []
    for w in windows(start, end, spec):
        if progress is not None:
            progress(w.index, f"window {w.index + 1}: train {fmt_time(w.train_start)[:10]} .. {fmt_time(w.train_end)[:10]}")
        choice = pick(w.train_start, w.train_end)
        c = 0 if choice.candidate is None else choice.candidate
        test = carried(choice.config if choice.config is not None else base, w)
        assert test.always_on is not None
        # every candidate's always-on over the test window: the chosen one's beside its carry, the others' alone
        benches = [_carry(test.always_on) if i == c else held(cfg, w) for i, cfg in enumerate(candidates)]
        if choice.candidate is None:  # stayed out: the capital, untouched, at the base's benchmark's instants
            curve = (benches[0][0], np.full(benches[0][1].shape, base.capital))
        else:
            curve = _carry(test)
        runs.append(WindowRun(w, choice.params, choice.config, choice.sweeps[c], test, curve, benches[c],
                              None if choice.candidate is None else candidates[c].name, tuple(choice.sweeps),
                              tuple(benches)))
    stitched = chain([r.curve for r in runs], base.capital)
    always_on = chain([r.always_on_curve for r in runs], base.capital)
    if progress is not None:
        progress(len(runs), f"the last {spec.train_days:g} days, for what to run now")
    latest = pick(end - int(round(spec.train_days * NS_PER_DAY)), end)
    return WalkResult(base, spec, grid, runs, stitched, always_on, latest, tuple(others))


def window_rows(r: WalkResult) -> list[dict[str, Any]]:
    """One row per window: its dates, the parameters chosen and how it did out of sample."""
    rows = []
    for run in r.runs:
        w = run.window
        f = run.figures(r.base.capital, r.base.collateral_rate)
        rows.append({
            "window": w.index + 1,
            "train_start": fmt_time(w.train_start), "train_end": fmt_time(w.train_end),
            "test_start": fmt_time(w.test_start), "test_end": fmt_time(w.test_end),
            **({"config": run.candidate} if r.others else {}),
            **{f"param_{k}": (None if run.params is None else run.params[k]) for k in r.grid},
            "config_hash": config_hash(run.config) if run.config is not None else None,
            "out": run.params is None,
            **f,
        })
    return rows
