"""A walk-forward's outputs: walkforward.json, windows.csv and the stitched
out-of-sample equity against always-on (walkforward.png), all-or-nothing in
one folder; and the terminal summary. The same config, grid, seed and
windows give the same bytes on any number of workers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import polars as pl
from rich.console import Console
from rich.table import Table

from fundarb import __version__
from fundarb.config import config_hash, dumps, to_dict
from fundarb.output.montecarlo import RULE
from fundarb.output.report import _clean, mdates, plt, publish_folder  # the report module picks the backend
from fundarb.research.walkforward import WalkResult, window_rows

WALK_FILE = "walkforward.json"
WINDOWS_FILE = "windows.csv"
WALK_PLOT = "walkforward.png"
RECOMMENDED_FILE = "recommended.toml"
WALK_FILES = (WALK_FILE, WINDOWS_FILE, WALK_PLOT, RECOMMENDED_FILE)


def walk_dict(r: WalkResult) -> dict[str, Any]:
    s = r.spec
    return _clean({
        "fundarb_version": __version__,
        "config_name": r.base.name,
        "config_hash": config_hash(r.base),
        "seed": r.base.seed,
        "config": to_dict(r.base),
        **({"chosen_among": [{"name": c.name, "config_hash": config_hash(c), "structure": c.structure_kind,
                              "spot": c.spot.exchange, "perp": c.perp.exchange} for c in r.candidates]}
           if r.others else {}),
        "grid": r.grid,
        "windows_spec": {"train_days": s.train_days, "test_days": s.test_days, "step_days": s.step_days,
                         "paths_per_grid_point": s.paths, "path_days": s.study.days,
                         "window": [r.base.data.start, r.base.data.end]},
        "rule": RULE,
        "summary": r.summary(),
        "windows": window_rows(r),
        "recommended_now": _recommended(r),
        "notes": [
            "each training window: the sweep's rule over paths bootstrapped from that window alone picks a grid point "
            "(none eligible: the carry stays out of the test window); the choice runs on the next test window's real "
            "history, its signal started with the settlements known before it",
            "out of sample: the test windows' equity chained, each window's returns compounded onto the last; "
            "always-on (the same structure held from the first hour to the last of each test window) the same way",
            "edge_over_always_on = net_apr - always_on_net_apr",
            *(["with several configs to choose among, the rule ranks every config's grid points together; a window "
               "is judged against the always-on of the config chosen for it (the first config's when it stayed "
               "out); always_on_by_config: each config held through every test window"] if r.others else []),
        ],
    })


def _recommended(r: WalkResult) -> dict[str, Any] | None:
    rec = r.recommended
    if rec is None:
        return None
    params, cfg = rec
    assert r.latest_window is not None
    return {"trained_on": list(r.latest_window), "params": params, "config_name": cfg.name,
            "config_hash": config_hash(cfg), "file": RECOMMENDED_FILE}


def recommended_toml(r: WalkResult) -> str:
    rec = r.recommended
    assert rec is not None and r.latest_window is not None
    params, cfg = rec
    s = r.summary()
    among = (f"# Chosen among {', '.join(c.name for c in r.candidates)}: {cfg.name}.\n" if r.others else "")
    cfg = attrs.evolve(cfg, name=f"{cfg.name}-walkforward",  # the chosen config's, over the whole window
                       data=attrs.evolve(cfg.data, start=r.base.data.start, end=r.base.data.end))
    where = ", ".join(f"{k}={v:g}" for k, v in params.items())
    header = (
        f"# Recommended by `fundarb walkforward` from {r.base.name} (config {config_hash(r.base)[:12]}, seed "
        f"{r.base.seed}): the rule's choice on the last {r.spec.train_days:g} days,\n"
        f"# {r.latest_window[0]} .. {r.latest_window[1]} UTC, {r.spec.paths} paths per grid point. "
        f"Grid point: {where}.\n{among}"
        f"# Rule: {RULE}.\n"
        f"# Out of sample, the rule walked forward over {s['windows']} windows of {r.spec.test_days:g} days earned "
        f"{s['net_apr']:.2%} APR against always-on {s['always_on_net_apr']:.2%} (edge {s['edge_over_always_on']:+.2%}).\n"
    )
    return header + dumps(cfg)


def plot_walk(r: WalkResult, path: Path) -> None:
    def dates(ts: Any) -> list[datetime]:
        return [datetime.fromtimestamp(int(t) / 1e9, UTC) for t in ts]

    s = r.summary()
    fig, ax = plt.subplots(figsize=(11, 5), constrained_layout=True)
    ts, eq = r.stitched
    bts, beq = r.always_on
    ax.plot(dates(ts), eq, color="tab:blue", lw=1.1, label=f"walk-forward, out of sample: net APR {s['net_apr']:.2%}")  # type: ignore[arg-type]
    ax.plot(dates(bts), beq, color="tab:grey", lw=1.0, ls="--",  # type: ignore[arg-type]
            label=f"always-on over the same windows: net APR {s['always_on_net_apr']:.2%}")
    ax.axhline(r.base.capital, color="grey", lw=0.6, ls=":")
    names = list(r.grid)
    for run in r.runs:
        w = run.window
        ax.axvline(datetime.fromtimestamp(w.test_start / 1e9, UTC), color="lightgrey", lw=0.8)  # type: ignore[arg-type]
        label = "out" if run.params is None else ", ".join(
            ([run.candidate or ""] if r.others else []) + [f"{run.params[n]:g}" for n in names])
        ax.annotate(label, (datetime.fromtimestamp(w.test_start / 1e9, UTC), 0.02), xycoords=("data", "axes fraction"),  # type: ignore[arg-type]
                    fontsize=7, color="dimgrey", rotation=90, va="bottom", ha="right")
    among = f" among {', '.join(c.name for c in r.candidates)}" if r.others else ""
    ax.set_title(f"fundarb walkforward: {r.base.name} (config {config_hash(r.base)[:12]}, seed {r.base.seed}){among}; "
                 f"train {r.spec.train_days:g} d, test {r.spec.test_days:g} d, step {r.spec.step_days:g} d\n"
                 f"edge over always-on {s['edge_over_always_on']:+.2%}; {s['windows_beating_always_on']} of "
                 f"{s['windows']} windows beat it; chosen ({', '.join((['config'] if r.others else []) + names)}) marked at each test window's start",
                 fontsize=9, loc="left")
    ax.set_ylabel("equity (USDT)")
    ax.legend(loc="upper left", fontsize=8)
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.grid(alpha=0.3)
    try:
        fig.savefig(path, dpi=110, metadata={"Software": None})
    finally:
        plt.close(fig)


def write_walkforward(r: WalkResult, out: Path) -> dict[str, Path]:
    def build(tmp: Path) -> None:
        (tmp / WALK_FILE).write_text(json.dumps(walk_dict(r), sort_keys=True, indent=2) + "\n")
        pl.DataFrame(window_rows(r), infer_schema_length=None).write_csv(tmp / WINDOWS_FILE)
        plot_walk(r, tmp / WALK_PLOT)
        if r.recommended is not None:
            (tmp / RECOMMENDED_FILE).write_text(recommended_toml(r))

    publish_folder(out, WALK_FILES, build)
    return {name: out / name for name in WALK_FILES if r.recommended is not None or name != RECOMMENDED_FILE}


def print_walkforward(r: WalkResult, console: Console, paths: dict[str, Path] | None = None) -> None:
    s = r.summary()
    spec = r.spec
    console.print(f"[bold]{r.base.name}[/] walk-forward  config {config_hash(r.base)[:12]}  seed {r.base.seed}  "
                  f"{s['windows']} windows: train {spec.train_days:g} d, test {spec.test_days:g} d, step "
                  f"{spec.step_days:g} d; {spec.paths} paths x {spec.study.days:g} days per grid point", highlight=False)
    console.print(f"rule on each training window: {RULE}", style="dim")
    t = Table(title=f"out of sample, window by window ({spec.test_days:g}-day test windows)", box=None,
              padding=(0, 1), header_style="bold underline")
    t.add_column("#", justify="right", no_wrap=True)
    t.add_column("test from", no_wrap=True)
    if r.others:
        t.add_column("config", no_wrap=True)
    for name in r.grid:
        t.add_column(name, justify="right", no_wrap=True)
    for col in ("net APR", "always-on", "edge", "Sharpe", "MaxDD"):
        t.add_column(col, justify="right", no_wrap=True)
    for row in window_rows(r):
        params = ["out" if row["out"] else f"{row[f'param_{n}']:g}" for n in r.grid]
        edge = row["edge_over_always_on"]
        chosen = [row["config"] or "out"] if r.others else []
        t.add_row(str(row["window"]), row["test_start"][:10], *chosen, *params,
                  f"{row['net_apr']:.2%}", f"{row['always_on_net_apr']:.2%}",
                  f"[green]{edge:+.2%}[/]" if edge > 0 else f"[red]{edge:+.2%}[/]" if edge < 0 else f"{edge:+.2%}",
                  f"{row['sharpe']:.2f}", f"{row['max_drawdown']:.2%}")
    console.print(t)
    if r.others:
        p = s["structure_stability"]
        console.print(f"config: changed {p['changes']} times in {s['windows']} windows; "
                      f"{p['modal']} chosen in {p['modal_share']:.0%} of them" if p["modal"] is not None
                      else "config: none chosen (no grid point of any config eligible)", highlight=False)
    stab = s["parameter_stability"]
    for name in r.grid:
        p = stab[name]
        console.print(f"{name}: changed {p['changes']} times in {s['windows']} windows; "
                      f"{p['modal']:g} chosen in {p['modal_share']:.0%} of them" if p["modal"] is not None
                      else f"{name}: never chosen (no grid point eligible)", highlight=False)
    edge = s["edge_over_always_on"]
    verdict = "[green]beats always-on[/]" if edge > 0 else "[red]does not beat always-on[/]"
    console.print(f"[bold]stitched out of sample ({s['out_of_sample_days']:.0f} days): net APR {s['net_apr']:.2%}, "
                  f"Sharpe {s['sharpe']:.2f}, MaxDD {s['max_drawdown']:.2%}; always-on {s['always_on_net_apr']:.2%}, "
                  f"Sharpe {s['always_on_sharpe']:.2f}, MaxDD {s['always_on_max_drawdown']:.2%}; edge {edge:+.2%} "
                  f"({verdict}; {s['windows_beating_always_on']} of {s['windows']} windows beat it)[/]", highlight=False)
    if r.others:
        held = "; ".join(f"{name} {v['net_apr']:.2%}" for name, v in s["always_on_by_config"].items())
        console.print(f"each config held through the same test windows: {held}", highlight=False)
    if s["windows_out"]:
        console.print(f"{s['windows_out']} window(s) stayed out: no grid point was eligible on their training window")
    rec = _recommended(r)
    if rec is None:
        console.print(f"to run now: none (no grid point is eligible on the last {spec.train_days:g} days)")
    else:
        where = ", ".join(([rec["config_name"]] if r.others else []) + [f"{k}={v:g}" for k, v in rec["params"].items()])
        console.print(f"to run now: {where}, the rule's choice on {rec['trained_on'][0][:10]} .. "
                      f"{rec['trained_on'][1][:10]} ({RECOMMENDED_FILE})", highlight=False)
    if paths:
        for p in paths.values():
            console.print(f"wrote {p}")

