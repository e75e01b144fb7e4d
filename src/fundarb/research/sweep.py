"""Parameter sweeps: every grid point runs the same bootstrapped paths (path i
meets the same market under every config), and a robust rule picks the
recommended config.

Grid syntax: ``name=v1,v2,...`` or ``name=start:stop:step`` (inclusive), with
several names in one ``--grid`` separated by commas
(``entry=0.04,0.06,exit=0,0.02,leverage=2,3``) or in repeated ``--grid``s.
Names are short aliases (see ALIASES) or a config field's dotted path
(``strategy.cooldown_hours``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import numpy as np

from fundarb.config import Config, ConfigError, config_hash, from_dict, to_dict
from fundarb.core.errors import FundarbError
from fundarb.data.history import MarketHistory
from fundarb.research.bootstrap import Periods, cut_periods
from fundarb.research.cluster import ChunkRunner
from fundarb.research.study import (
    StudySpec,
    choose_engine,
    chunk_size,
    chunks,
    column,
    engine_fallbacks,
    resolve_block,
    run_chunk,
)

LEVERAGE = "leverage"
ALIASES = {
    "entry": "strategy.entry_apr",
    "exit": "strategy.exit_apr",
    "notional": "strategy.notional",
    "signal": "strategy.signal_settlements",
    "holding": "strategy.expected_holding_days",
    "cooldown": "strategy.cooldown_hours",
    "buffer": "risk.min_margin_buffer",
    LEVERAGE: LEVERAGE,
}
MAX_GRID_POINTS = 10_000
MAX_VALUES_PER_NAME = 1_000
# the robust rule: among configs whose MaxDD stays under the gate on at least
# this share of paths, and that trade at all on at least half of them (a
# config that never enters has a perfect MaxDD and says nothing), the best
# 5th-percentile net APR
MAXDD_LIMIT = 0.05
MIN_P_MAXDD_OK = 0.95
MIN_P_TRADED = 0.5


class GridError(FundarbError, ValueError):
    """A --grid that cannot be read; the message quotes the offending part."""


def _number(text: str, name: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise GridError(f"--grid {name}: {text!r} is not a number") from None
    if not math.isfinite(v):
        raise GridError(f"--grid {name}: {text!r} is not a finite number")
    return v


def _range(text: str, name: str) -> list[float]:
    parts = text.split(":")
    if len(parts) != 3:
        raise GridError(f"--grid {name}: range {text!r} must be start:stop:step")
    a, b, step = (_number(p, name) for p in parts)
    if step <= 0 or b < a:
        raise GridError(f"--grid {name}: range {text!r} needs start <= stop and step > 0")
    count = int(math.floor((b - a) / step + 1e-9)) + 1
    if count > MAX_VALUES_PER_NAME:
        raise GridError(f"--grid {name}: range {text!r} has {count} values, more than {MAX_VALUES_PER_NAME}")
    return [round(a + k * step, 12) for k in range(count)]


def _field_path(name: str, base: Config) -> str:
    path = ALIASES.get(name, name)
    if path == LEVERAGE:
        return path
    node: Any = to_dict(base)
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            known = ", ".join(sorted(ALIASES))
            raise GridError(f"--grid: unknown parameter {name!r} (use one of {known}, or a config field like strategy.cooldown_hours)")
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        raise GridError(f"--grid: {name!r} is not a numeric config field")
    return path


def parse_grid(specs: Sequence[str], base: Config) -> dict[str, list[float]]:
    """``["entry=0.04,0.06,exit=0:0.02:0.01"]`` -> {"entry": [...], "exit": [...]}."""
    grid: dict[str, list[float]] = {}
    for spec in specs:
        current = None
        for raw in spec.split(","):
            token = raw.strip()
            if "=" in token:
                current, token = (s.strip() for s in token.split("=", 1))
                if not current:
                    raise GridError(f"--grid {spec!r}: a parameter name is missing before '='")
                _field_path(current, base)
                if current in grid:
                    raise GridError(f"--grid: {current!r} is given twice")
                grid[current] = []
            if current is None:
                raise GridError(f"--grid {spec!r} must start with name=value, e.g. entry=0.04,0.06")
            if not token:
                raise GridError(f"--grid {spec!r}: empty value for {current!r}")
            values = _range(token, current) if ":" in token else [_number(token, current)]
            for v in values:
                if v in grid[current]:
                    raise GridError(f"--grid {current}: value {v:g} is given twice")
                grid[current].append(v)
    if not grid:
        raise GridError("--grid is empty: give at least one name=value list")
    points = math.prod(len(v) for v in grid.values())
    if points > MAX_GRID_POINTS:
        raise GridError(f"--grid has {points:,} points, more than {MAX_GRID_POINTS:,}")
    return grid


def grid_points(grid: dict[str, list[float]]) -> list[dict[str, float]]:
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


def _set(d: dict[str, Any], path: str, value: float) -> None:
    *parents, leaf = path.split(".")
    for p in parents:
        d = d[p]
    d[leaf] = int(value) if isinstance(d[leaf], int) and float(value).is_integer() else value


def apply_params(base: Config, params: dict[str, float]) -> Config:
    """A config at one grid point. ``leverage=L`` sizes the accounts so the
    short opens at L x perp leverage while the spot leg uses the same share of
    its account as in the base config (so capital stays fully allotted)."""
    d = to_dict(base)
    for name, value in params.items():
        path = _field_path(name, base)
        if path != LEVERAGE:
            _set(d, path, value)
    where = ", ".join(f"{k}={v:g}" for k, v in params.items())
    cfg = from_dict(d, f"grid point {where}")
    if LEVERAGE in params:
        cfg = _with_leverage(cfg, params[LEVERAGE], where)
    return cfg


def _with_leverage(cfg: Config, lev: float, where: str) -> Config:
    if not 0 < lev <= cfg.risk.max_leverage:
        raise ConfigError(f"grid point {where}: leverage must be > 0 and <= risk.max_leverage {cfg.risk.max_leverage:g}")
    if cfg.one_account:
        raise ConfigError(f"grid point {where}: leverage splits the capital between the spot and the perp account of "
                          f"a spot_linear carry; structure.kind {cfg.structure_kind} holds both legs on one account")
    spot_share = cfg.strategy.notional / cfg.spot_cash  # notional per unit of spot cash
    spot_cash = cfg.capital / (1.0 + spot_share / lev)
    strategy = attrs.evolve(cfg.strategy, notional=round(spot_share * spot_cash, 2))
    d = to_dict(attrs.evolve(cfg, strategy=strategy))
    d["perp_allocation"] = round(1.0 - spot_cash / cfg.capital, 6)
    return from_dict(d, f"grid point {where}")


def summarize_config(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    apr, dd = column(rows, "net_apr"), column(rows, "max_drawdown")
    n = len(rows)
    return {
        "p5_net_apr": float(np.percentile(apr, 5)),
        "median_net_apr": float(np.median(apr)),
        "mean_net_apr": float(apr.mean()),
        "median_sharpe": float(np.median(column(rows, "sharpe"))),
        "p95_max_drawdown": float(np.percentile(dd, 95)),
        "p_max_drawdown_ok": float((dd < MAXDD_LIMIT).sum() / n),
        "p_all_gates": sum(r["all_gates_passed"] for r in rows) / n,
        "mean_fill_rate": float(column(rows, "fill_rate").mean()),
        "liquidations": int(column(rows, "liquidations").sum()),
        "p_traded": float((column(rows, "entries") > 0).sum() / n),
    }


@attrs.frozen
class SweepResult:
    base: Config
    spec: StudySpec
    grid: dict[str, list[float]]
    block_periods: float
    block_auto: bool
    source: Periods
    rows: list[dict[str, Any]]  # one per grid point, in grid order
    configs: list[Config]
    recommended: int | None  # index into rows

    @property
    def ranked(self) -> list[dict[str, Any]]:
        return sorted(self.rows, key=_rank_key)


def eligible(row: dict[str, Any]) -> bool:
    return row["p_max_drawdown_ok"] >= MIN_P_MAXDD_OK and row["p_traded"] >= MIN_P_TRADED


def _rank_key(row: dict[str, Any]) -> tuple:
    return (not eligible(row), -row["p5_net_apr"], -row["median_net_apr"], row["point"])


def recommend(rows: Sequence[dict[str, Any]]) -> int | None:
    eligible_rows = [r for r in rows if eligible(r)]
    if not eligible_rows:
        return None
    return min(eligible_rows, key=_rank_key)["point"]


def run_sweep(
    base: Config, history: MarketHistory, spec: StudySpec, grid: dict[str, list[float]], runner: ChunkRunner,
    progress: Callable[[int], None] | None = None, engine: str | None = None,
) -> SweepResult:
    """Every grid point over the same paths, each on the engine ``choose_engine`` gives it (``engine`` forces one)."""
    points = grid_points(grid)
    configs = [apply_params(base, p) for p in points]  # every point checked before any work
    src = cut_periods(history)
    engines = [choose_engine(cfg, src, engine) for cfg in configs]
    block, auto = resolve_block(spec, src)
    size = chunk_size(spec.paths * len(configs), runner.workers)
    parts = chunks(spec.paths, size)
    tasks = [(cfg, spec.hours, block, list(r), False, used, False) for cfg, (used, _) in zip(configs, engines)
             for r in parts]  # the rule ranks the configs' own figures: no benchmark run per path
    done: dict[int, list] = {}
    for task_no, result in runner.run(run_chunk, src, tasks):
        done[task_no] = result
        if progress is not None:
            progress(len(result))
    rows = []
    for j, (cfg, params) in enumerate(zip(configs, points)):
        path_rows = [row for t in range(len(parts)) for row, _ in done[j * len(parts) + t]]
        rows.append({"point": j, "params": params, "config_hash": config_hash(cfg), **summarize_config(path_rows),
                     "engine": engines[j][0], "engine_note": engines[j][1],
                     "paths_on_simulator": sum(engine_fallbacks(path_rows).values())})
    return SweepResult(base, spec, grid, block, auto, src, rows, configs, recommend(rows))
