"""A Monte Carlo study's outputs: montecarlo.json, paths.csv, the fan chart and
the distributions, all-or-nothing in one folder; and the terminal summary.

Nothing in them depends on the worker count, wall time or machine: the same
config, seed and study give the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from fundarb import __version__
from fundarb.config import config_hash, dumps, to_dict
from fundarb.data.history import fmt_time
from fundarb.output.report import _clean, publish_folder
from fundarb.research.bootstrap import Periods
from fundarb.research.study import StudyResult, StudySpec, summarize
from fundarb.research.sweep import MAXDD_LIMIT, MIN_P_MAXDD_OK, MIN_P_TRADED, SweepResult, eligible
from fundarb.sim.backtest import GATES

STUDY_FILE = "montecarlo.json"
PATHS_FILE = "paths.csv"
FAN_FILE = "equity_fan.png"
DIST_FILE = "distributions.png"
STUDY_FILES = (STUDY_FILE, PATHS_FILE, FAN_FILE, DIST_FILE)


def _study_block(spec: StudySpec, block: float, auto: bool, src: Periods) -> dict[str, Any]:
    return {
        "paths": spec.paths,
        "days": spec.days,
        "hours_per_path": spec.hours,
        "block_periods": block,
        "block_length": "Politis-White automatic" if auto else "given",
        "mean_block_days": block * float(src.period_hours.mean()) / 24.0,
        "source_window": f"{fmt_time(src.start)} .. {fmt_time(src.start + int(src.period_hours.sum()) * 3_600_000_000_000)} UTC",
        "source_periods": src.periods,
        "source_mean_funding_rate": float(src.rate.mean()),
    }


def study_dict(r: StudyResult) -> dict[str, Any]:
    return _clean({
        "fundarb_version": __version__,
        "config_name": r.config.name,
        "config_hash": config_hash(r.config),
        "seed": r.config.seed,
        "config": to_dict(r.config),
        "study": _study_block(r.spec, r.block_periods, r.block_auto, r.source),
        "summary": summarize(r.rows),
        "engine": engine_block(r),
        "notes": [
            "each path: a stationary block bootstrap of the real window (whole funding periods; spot returns, "
            "basis and funding resampled together), run through the simulator's rules with its own latency and "
            "slippage draws (on the compiled path kernel, held equal to the simulator, where the config lies in "
            "its scope; each row of paths.csv names the engine that ran it)",
            "path i draws from SeedSequence(seed, spawn_key=(i, 0)) for the market and (i, 1) for execution",
            "p_all_gates_pass: share of paths on which every success gate passes; the per-path table is paths.csv",
            "always_on_*: each path's always-on benchmark, the same structure held from the first hour to the "
            "last on the same market and draws; edge_over_always_on = net_apr - always_on_net_apr; "
            "p_beats_always_on: share of paths with a positive edge",
        ],
    })


def engine_block(r: StudyResult) -> dict[str, Any]:
    """Which engine ran the study and why, and the paths the kernel handed to the simulator."""
    return {"engine": r.engine, "why": r.engine_note, "paths_on_simulator": r.on_simulator}


def engine_line(engine: str, why: str, fallbacks: dict[str, int], paths: int) -> str:
    """One line for the terminal: the engine, why, and the paths the kernel handed on."""
    line = f"engine: {engine}; {why}"
    if fallbacks:
        n = sum(fallbacks.values())
        line += f"; {n:,} of {paths:,} paths ran on the simulator: " + ", ".join(
            f"{k} {v:,}" for k, v in fallbacks.items())
    return line


def render_study_json(r: StudyResult) -> str:
    return json.dumps(study_dict(r), sort_keys=True, indent=2) + "\n"


def paths_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, infer_schema_length=None)


def write_study(r: StudyResult, out: Path) -> dict[str, Path]:
    from fundarb.output.plots import plot_distributions, plot_fan

    def build(tmp: Path) -> None:
        (tmp / STUDY_FILE).write_text(render_study_json(r))
        paths_frame(r.rows).write_csv(tmp / PATHS_FILE)
        title = f"fundarb montecarlo: {r.config.name}  (config {config_hash(r.config)[:12]}, seed {r.config.seed}, {r.spec.paths} paths)"
        plot_fan(tmp / FAN_FILE, r.day_offsets, r.equity, r.config.capital, title)
        samples = {k: np.array([row[k] for row in r.rows], dtype=float) for k in ("net_apr", "sharpe", "max_drawdown")}
        thresholds = {key: threshold for _, key, _, threshold in GATES if key in samples}
        plot_distributions(tmp / DIST_FILE, samples, thresholds, title)

    publish_folder(out, STUDY_FILES, build)
    return {name: out / name for name in STUDY_FILES}


def _pct(v: Any) -> str:
    return "-" if v is None else f"{v:.2%}"


def print_study(r: StudyResult, console: Console, paths: dict[str, Path] | None = None) -> None:
    d = study_dict(r)
    s, st = d["summary"], d["study"]
    console.print(f"[bold]{r.config.name}[/]  config {d['config_hash'][:12]}  seed {r.config.seed}  "
                  f"{st['paths']} paths x {st['days']:g} days")
    console.print(f"bootstrap of {st['source_window']}, mean block {st['block_periods']:.1f} funding periods "
                  f"({st['mean_block_days']:.1f} days, {st['block_length']})", style="dim")
    console.print(engine_line(r.engine, r.engine_note, r.on_simulator, len(r.rows)))
    t = Table(title="distribution over paths")
    for col in ("metric", "p5", "p25", "median", "p75", "p95", "mean"):
        t.add_column(col, justify="right" if col != "metric" else "left")
    for key, label, pct in (("net_apr", "net APR", True), ("sharpe", "Sharpe", False),
                            ("max_drawdown", "MaxDD", True), ("fill_rate", "fill rate", True),
                            ("delta_drift_max", "max delta drift", True), ("time_in_position", "time in position", True),
                            ("always_on_net_apr", "always-on APR", True), ("edge_over_always_on", "edge", True)):
        dist = s["distributions"][key]
        fmt = _pct if pct else (lambda v: "-" if v is None else f"{v:.2f}")
        t.add_row(label, *(fmt(dist.get(k)) for k in ("p5", "p25", "p50", "p75", "p95", "mean")))
    console.print(t)
    g = Table(title="success gates: share of paths passing")
    g.add_column("gate")
    g.add_column("P(pass)", justify="right")
    for name, p in s["gate_pass_rates"].items():
        g.add_row(name, _pct(p))
    console.print(g)
    liq = s["liquidations"]
    console.print(f"liquidations: {liq['total']} on {liq['paths_with_liquidation']} of {s['paths']} paths; "
                  f"missed settlements: {s['missed_settlements_total']}")
    console.print(f"[bold]P(all gates pass) = {s['p_all_gates_pass']:.1%}[/]; P(beats always-on) = "
                  f"{s['p_beats_always_on']:.1%} (always-on: the same structure held from the first hour to the last)",
                  highlight=False)
    if paths:
        for p in paths.values():
            console.print(f"wrote {p}")


# --- sweeps --------------------------------------------------------------
SWEEP_FILE = "sweep.json"
RANKED_FILE = "ranked.csv"
RECOMMENDED_FILE = "recommended.toml"
HEATMAP_METRICS = (
    ("p5_net_apr", "5th-percentile net APR", "pct"),
    ("median_net_apr", "median net APR", "pct"),
    ("p_max_drawdown_ok", f"P(MaxDD < {MAXDD_LIMIT:.0%})", "pct"),
    ("p_all_gates", "P(all gates pass)", "pct"),
    ("median_sharpe", "median Sharpe", "num"),
)
SWEEP_FILES = (SWEEP_FILE, RANKED_FILE, RECOMMENDED_FILE, *(f"heatmap_{k}.png" for k, _, _ in HEATMAP_METRICS))
RULE = (f"best 5th-percentile net APR among configs with P(MaxDD < {MAXDD_LIMIT:.0%}) >= {MIN_P_MAXDD_OK:.0%} "
        f"that enter a position on at least {MIN_P_TRADED:.0%} of paths; ties by median net APR, then grid order")


def sweep_dict(r: SweepResult) -> dict[str, Any]:
    rec = None
    if r.recommended is not None:
        row = r.rows[r.recommended]
        rec = {"point": r.recommended, "params": row["params"], "config_hash": row["config_hash"], "file": RECOMMENDED_FILE}
    return _clean({
        "fundarb_version": __version__,
        "base_config_name": r.base.name,
        "base_config_hash": config_hash(r.base),
        "seed": r.base.seed,
        "grid": r.grid,
        "study": _study_block(r.spec, r.block_periods, r.block_auto, r.source),
        "rule": RULE,
        "recommended": rec,
        "ranked": [{"rank": i + 1, **row} for i, row in enumerate(r.ranked)],
        "notes": ["every grid point runs the same paths: path i meets the same bootstrapped market under every config"],
    })


def ranked_frame(r: SweepResult) -> pl.DataFrame:
    records = []
    for i, row in enumerate(r.ranked):
        rec: dict[str, Any] = {"rank": i + 1, "point": row["point"]}
        rec.update(row["params"])
        rec.update({k: v for k, v in row.items() if k not in ("point", "params")})
        rec["eligible"] = eligible(row)
        records.append(rec)
    return pl.DataFrame(records, infer_schema_length=None)


def recommended_toml(r: SweepResult) -> str:
    assert r.recommended is not None
    row = r.rows[r.recommended]
    cfg = attrs.evolve(r.configs[r.recommended], name=f"{r.base.name}-recommended")
    params = ", ".join(f"{k}={v:g}" for k, v in row["params"].items())
    header = (
        f"# Recommended by `fundarb sweep` from {r.base.name} (config {config_hash(r.base)[:12]}, seed {r.base.seed}),\n"
        f"# {r.spec.paths} paths x {r.spec.days:g} days per grid point. Grid point: {params}.\n"
        f"# Rule: {RULE}.\n"
        f"# 5th-percentile net APR {row['p5_net_apr']:.2%}, median {row['median_net_apr']:.2%}, "
        f"P(MaxDD < {MAXDD_LIMIT:.0%}) {row['p_max_drawdown_ok']:.1%}, P(all gates pass) {row['p_all_gates']:.1%}.\n"
    )
    return header + dumps(cfg)


def write_sweep(r: SweepResult, out: Path) -> dict[str, Path]:
    from fundarb.output.plots import plot_heatmaps

    written: dict[str, Path] = {}

    def build(tmp: Path) -> None:
        (tmp / SWEEP_FILE).write_text(json.dumps(sweep_dict(r), sort_keys=True, indent=2) + "\n")
        ranked_frame(r).write_csv(tmp / RANKED_FILE)
        names = [SWEEP_FILE, RANKED_FILE]
        if r.recommended is not None:
            (tmp / RECOMMENDED_FILE).write_text(recommended_toml(r))
            names.append(RECOMMENDED_FILE)
        pngs = plot_heatmaps(tmp, r.rows, list(r.grid), list(HEATMAP_METRICS), highlight=r.recommended)
        names += [p.name for p in pngs]
        written.update({n: out / n for n in names})

    publish_folder(out, SWEEP_FILES, build)
    return written


def print_sweep(r: SweepResult, console: Console, paths: dict[str, Path] | None = None, top: int = 15) -> None:
    st = sweep_dict(r)["study"]
    console.print(f"[bold]{r.base.name}[/] sweep  {len(r.rows)} configs x {st['paths']} paths x {st['days']:g} days  "
                  f"seed {r.base.seed}")
    console.print(f"bootstrap of {st['source_window']}, mean block {st['block_periods']:.1f} funding periods", style="dim")
    by_engine: dict[tuple[str, str], list[int]] = {}
    for row in r.rows:
        by_engine.setdefault((row["engine"], row["engine_note"]), []).append(row["point"])
    for (engine, why), points in by_engine.items():
        which = "every config" if len(points) == len(r.rows) else f"configs {', '.join(str(p) for p in points)}"
        console.print(f"engine: {engine} for {which}; {why}")
    handed = sum(row["paths_on_simulator"] for row in r.rows)
    if handed:
        console.print(f"{handed:,} of {len(r.rows) * st['paths']:,} paths ran on the simulator (the kernel met something "
                      "it does not model: each config's paths_on_simulator in ranked.csv)")
    t = Table(title=f"ranked (top {min(top, len(r.rows))} of {len(r.rows)})", box=None, pad_edge=False, padding=(0, 1), header_style="bold underline")
    t.add_column("#", justify="right", no_wrap=True, min_width=2)
    for name in r.grid:
        t.add_column(name, justify="right", no_wrap=True)
    for col in ("p5 APR", "med APR", f"P(DD<{MAXDD_LIMIT:.0%})", "P(gates)", "med SR", "liq"):
        t.add_column(col, justify="right", no_wrap=True)
    for i, row in enumerate(r.ranked[:top]):
        style = "bold green" if row["point"] == r.recommended else None
        t.add_row(str(i + 1), *(f"{row['params'][n]:g}" for n in r.grid), f"{row['p5_net_apr']:.2%}", f"{row['median_net_apr']:.2%}",
                  f"{row['p_max_drawdown_ok']:.0%}", f"{row['p_all_gates']:.0%}", f"{row['median_sharpe']:.2f}",
                  str(row["liquidations"]), style=style)
    console.print(t)
    console.print(f"rule: {RULE}", style="dim")
    if r.recommended is None:
        console.print(f"[red]no config qualifies[/] under the rule; no {RECOMMENDED_FILE} written")
    else:
        row = r.rows[r.recommended]
        params = ", ".join(f"{k}={v:g}" for k, v in row["params"].items())
        console.print(f"[bold green]recommended[/]: {params}  (p5 APR {row['p5_net_apr']:.2%}, median {row['median_net_apr']:.2%})")
    if paths:
        for p in paths.values():
            console.print(f"wrote {p}")
