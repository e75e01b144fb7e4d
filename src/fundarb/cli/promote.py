"""`fundarb promote CONFIG`: the gate a config passes before live trading.
Replays every recording against its golden file, backtests the config on the
shipped history, runs its Monte Carlo study, and records the verdict in the
promotions store and ``promotion.json`` (``fundarb.app.promote`` has the rules)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fundarb.app.promote import DEFAULT_MIN_SHARE, DEFAULT_STORE, RECORD_FILE, STORE_ENV

out = Console(highlight=False)


def promote_command(
    config: Path = typer.Argument(..., help="the TOML config to promote"),
    paths: int = typer.Option(200, "--paths", help="Monte Carlo paths (bootstrapped from the config's window)"),
    days: float = typer.Option(365.0, "--days", help="length of each Monte Carlo path in days"),
    workers: Optional[int] = typer.Option(None, "--workers", help="start a local Dask cluster with this many worker processes"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="use a running Dask cluster, e.g. tcp://10.0.0.5:8786"),
    min_path_share: float = typer.Option(DEFAULT_MIN_SHARE, "--min-path-share", help="a gate must also pass on at least this share of the paths, in (0, 1]"),
    store: Optional[Path] = typer.Option(None, "--store", help=f"the promotions store (default: ${STORE_ENV} or {DEFAULT_STORE})"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help=f"folder for {RECORD_FILE} (default: runs/<config name>-promotion)"),
    recordings: Optional[Path] = typer.Option(None, "--recordings", help="folder of recordings to replay (default: recordings/)"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="parsed-capture cache (default: $FUNDARB_CACHE or ~/.cache/fundarb)"),
    walk_grid: Optional[list[str]] = typer.Option(None, "--walk-grid", help="the walk-forward's grid, as `fundarb walkforward --grid` (default: the config's own parameters alone)"),
    train: str = typer.Option("365d", "--train", help="walk-forward training windows"),
    test: str = typer.Option("90d", "--test", help="walk-forward test windows"),
    walk_paths: int = typer.Option(50, "--walk-paths", help="bootstrapped paths per grid point on each training window"),
) -> None:
    """Validate a config for live trading: replay regressions, backtest and Monte Carlo against the success gates; record the verdict."""
    from fundarb.app.promote import (
        MonteCarloSettings,
        build_record,
        check_min_share,
        check_out_folder,
        check_store,
        data_file_hashes,
        promotion_key,
        publish,
        recording_folders,
        run_regressions,
        store_path,
    )
    from fundarb.cli.common import fail
    from fundarb.config import load, project_file
    from fundarb.data.history import SHIPPED_DIR, history_for, parse_time
    from fundarb.data.scenario import apply_scenario
    from fundarb.research.cluster import chunk_runner
    from fundarb.research.study import StudySpec, run_study
    from fundarb.research.sweep import apply_params, grid_points, parse_grid
    from fundarb.research.walkforward import WalkSpec, own_grid, parse_span, run_walkforward, windows
    from fundarb.sim.backtest import run_backtest
    from fundarb.support.scrub import describe

    try:  # every input is checked before any work, and nothing is written on bad input
        check_min_share(min_path_share)
        spec = StudySpec(paths=paths, days=days)
        test_days = parse_span(test, "--test")
        walk = WalkSpec(parse_span(train, "--train"), test_days, test_days, walk_paths)
        StudySpec(paths=walk_paths)  # the path count checked before any work
        cfg = load(config)
        grid = parse_grid(walk_grid, cfg) if walk_grid else own_grid(cfg)
        for point in grid_points(grid):
            apply_params(cfg, point)
        windows(parse_time(cfg.data.start, "start"), parse_time(cfg.data.end, "end"), walk)
        store = store_path(store)
        check_store(store)
        promotion_key()  # an existing key others can read, or not a key, is refused now (a missing one is made at the end)
        out_dir = out_dir or Path("runs") / f"{cfg.name}-promotion"
        check_out_folder(out_dir)
        folders = recording_folders(recordings or project_file(Path("recordings")))
        history = history_for(cfg, None)
        data_files = data_file_hashes(SHIPPED_DIR)
        with chunk_runner(workers, scheduler) as runner, _progress() as bar:
            step = bar.add_task("replay regressions", total=len(folders))
            regressions = run_regressions(folders, project_file(Path("sims")), cache_dir,
                                          progress=lambda name: bar.update(step, description=f"replay {name}"))
            bar.update(step, completed=len(folders))
            bar.add_task("backtest", total=None)
            backtest = run_backtest(cfg, apply_scenario(history, cfg.scenario))
            step = bar.add_task("montecarlo", total=spec.paths)
            study = run_study(cfg, history, spec, runner, progress=lambda n: bar.advance(step, n))
            step = bar.add_task("walk-forward", total=None)
            walked = run_walkforward(cfg, grid, walk, runner,
                                     progress=lambda _, what: bar.update(step, description=f"walk-forward {what}"))
        settings = MonteCarloSettings(spec.paths, spec.days, cfg.seed, min_path_share)
        record = build_record(cfg, backtest, study, regressions, data_files, settings, time.time_ns(), walked)
        row_id, json_path = publish(record, store, out_dir)
    except OSError as exc:
        fail(f"cannot write the promotion record: {describe(exc)}")
    print_promotion(record, out, store, row_id, json_path)
    if not record["passed"]:
        raise typer.Exit(1)


def _progress() -> Progress:
    from fundarb.cli.common import err

    return Progress(TextColumn("[bold]promote[/] {task.description}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                    console=err, transient=True, disable=not err.is_terminal)


def always_on_line(metrics: dict[str, Any]) -> str:
    """The config against always-on (the same structure held from the first
    hour to the last): on the backtest, and over the Monte Carlo paths."""
    bt, mc = metrics["backtest"], metrics["montecarlo"]
    parts = []
    if bt.get("edge_over_always_on") is not None:
        parts.append(f"backtest net APR {bt['net_apr']:.2%} against {bt['always_on_net_apr']:.2%} "
                     f"(edge {bt['edge_over_always_on']:+.2%})")
    edge = mc["distributions"].get("edge_over_always_on", {})
    if "p50" in edge:
        parts.append(f"Monte Carlo median edge {edge['p50']:+.2%}, beats it on {mc['p_beats_always_on']:.1%} of paths")
    return "against always-on (held from the first hour to the last): " + ("; ".join(parts) or "n/a")


def print_promotion(record: dict[str, Any], console: Console, store: Path, row_id: int, json_path: Path) -> None:
    from fundarb.app.promote import share_text
    from fundarb.output.report import _fmt

    mc = record["montecarlo"]
    bt = record["backtest_data"]
    console.print(f"[bold]promote {escape(record['config_name'])}[/]  config {record['config_hash'][:12]}  "
                  f"seed {mc['seed']}  fundarb {record['fundarb_version']}")
    console.print(f"backtest {bt['start']} .. {bt['end']} UTC; Monte Carlo {mc['paths']} paths x {mc['days']:g} days; "
                  f"a gate passes on the backtest and on >= {share_text(mc['min_path_share'])} of the paths", style="dim")
    t = Table(title="success gates")
    columns: tuple[tuple[str, Literal["left", "right"]], ...] = (
        ("gate", "left"), ("backtest", "right"), ("paths passing", "right"), ("result", "left"))
    for col, justify in columns:
        t.add_column(col, justify=justify)
    for g in record["gates"]:
        value = _fmt(g["metric"], g["backtest_value"]) + ("" if g["backtest_passed"] else " [red](fail)[/]")
        t.add_row(g["gate"], value, f"{share_text(g['path_share'])} ({round(g['path_share'] * mc['paths'])}/{mc['paths']})", "[green]PASS[/]" if g["passed"] else "[red]FAIL[/]")
    console.print(t)
    console.print(always_on_line(record["metrics"]), highlight=False)
    wf = record["walkforward"]
    g = wf["gate"]
    verdict = "[green]PASS[/]" if g["passed"] else "[red]FAIL[/]"
    console.print(f"walk-forward ({wf['windows']} windows: train {wf['train_days']:g} d, test {wf['test_days']:g} d; "
                  f"grid {escape(wf['grid_text'])}): out-of-sample net APR {wf['net_apr']:.2%} against always-on "
                  f"{wf['always_on_net_apr']:.2%}, edge {g['value']:+.2%} ({wf['windows_beating_always_on']} of "
                  f"{wf['windows']} windows beat it); gate {escape(g['gate'])}: {verdict}", highlight=False)
    console.print("replay regressions")
    for r in record["recordings"]:
        state = "[green]match[/]" if r["matched"] else f"[red]FAIL[/] ({escape(r['detail'])})"
        console.print(f"  {escape(r['name'])}  sha256 {r['sha256'][:12] or '-'}  {state}")
    if record["passed"]:
        console.print(f"[bold green]PROMOTED[/]: config {record['config_hash'][:12]} is cleared for live trading")
    else:
        console.print(f"[bold red]NOT PROMOTED[/]: {escape(record['reason'])}", soft_wrap=True)
    from fundarb.app.promote import key_path

    console.print(f"recorded in {store} (promotion {row_id}, its HMAC under the promotion key {key_path()})")
    console.print(f"wrote {json_path}")
