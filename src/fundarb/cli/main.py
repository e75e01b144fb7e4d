"""`fundarb ...` subcommands."""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import attrs
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from fundarb import __version__
from fundarb.cli.common import UserErrorGroup, err, error_line, fail
from fundarb.config import Config, default_config_path, load, project_file, spot_perp_config_path
from fundarb.core.errors import FundarbError
from fundarb.data.history import DataError, fmt_time, history_for, parse_time

app = typer.Typer(cls=UserErrorGroup, add_completion=False, no_args_is_help=True, help="BTC funding-rate carry: backtest, simulate, trade.")

def effective_config(path: Path, start: str | None, end: str | None, seed: int | None) -> Config:
    cfg = load(path)
    data = cfg.data
    if start is not None:
        parse_time(start, "--from")
        data = attrs.evolve(data, start=start)
    if end is not None:
        parse_time(end, "--to")
        data = attrs.evolve(data, end=end)
    if parse_time(data.start, "start") >= parse_time(data.end, "end"):
        raise DataError(f"--from {data.start} is not before --to {data.end}")
    cfg = attrs.evolve(cfg, data=data)
    return cfg if seed is None else attrs.evolve(cfg, seed=seed)


@app.command()
def backtest(
    config: Optional[Path] = typer.Argument(None, help="TOML config (default: sims/baseline.toml)"),
    start: Optional[str] = typer.Option(None, "--from", help="first instant, UTC ISO date/time (default: config)"),
    end: Optional[str] = typer.Option(None, "--to", help="end instant, exclusive (default: config)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="override the config's seed"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default: runs/<config name>)"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="folder with prices_1h.parquet and funding_settlements.parquet, or a `fundarb data fetch` store (default: shipped data)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar or table"),
) -> None:
    """Run the carry strategy in the simulator over real history and write report.json, backtest.png and trades.sqlite."""
    from fundarb.data.scenario import apply_scenario
    from fundarb.output.report import check_output_folder, print_summary, write_outputs
    from fundarb.sim.backtest import run_backtest

    cfg = effective_config(config or default_config_path(), start, end, seed)
    out = out or Path("runs") / cfg.name
    if cfg.rotation is not None:
        _rotation_backtest(cfg, out, data_dir, quiet)
        return
    check_output_folder(out)
    history = apply_scenario(history_for(cfg, data_dir), cfg.scenario)
    console = Console()
    with Progress(TextColumn("[bold]backtest[/] {task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeRemainingColumn(), console=err, transient=True, disable=quiet or not err.is_terminal) as bar:
        task = bar.add_task(cfg.name, total=int(history.hours.size))
        t0 = history.start
        step = 500 * 3_600_000_000_000

        def tick(ts: int) -> None:
            if (ts - t0) % step == 0:
                bar.update(task, completed=(ts - t0) // 3_600_000_000_000, description=fmt_time(ts))

        result = run_backtest(cfg, history, progress=tick)
    paths = write_outputs(result, out)
    if not quiet:
        print_summary(result, console, paths)


def _rotation_backtest(cfg: Config, out: Path, data_dir: Optional[Path], quiet: bool) -> None:
    """A config with [rotation]: the carry moves between pairs of venues (``fundarb.sim.rotation``)."""
    from fundarb.output.report import check_output_folder
    from fundarb.output.rotation import OUTPUT_FILES, print_rotation, write_rotation
    from fundarb.sim.rotation import run_rotation

    check_output_folder(out, OUTPUT_FILES)
    with Progress(TextColumn("[bold]rotation[/] {task.description}"), console=err, transient=True,
                  disable=quiet or not err.is_terminal) as bar:
        task = bar.add_task(cfg.name)
        result = run_rotation(cfg, data_dir, progress=lambda what: bar.update(task, description=what))
    paths = write_rotation(result, out)
    if not quiet:
        print_rotation(result, Console(), paths)


@app.command()
def compare(
    config: Optional[Path] = typer.Argument(None, help="base spot_linear TOML config (default: sims/spot_perp.toml)"),
    start: Optional[str] = typer.Option(None, "--from", help="first instant, UTC ISO date/time (default: config)"),
    end: Optional[str] = typer.Option(None, "--to", help="end instant, exclusive (default: config)"),
    seed: Optional[int] = typer.Option(None, "--seed", help="override the config's seed"),
    deploy: float = typer.Option(0.95, "--deploy", help="share of capital the one-account structures trade as notional"),
    years: bool = typer.Option(True, "--years/--no-years", help="also run each calendar year in the window"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default: runs/<config name>-compare)"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="history folder or store (default: shipped data)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no table"),
) -> None:
    """Run the same window, costs and seed through each structure (spot_linear, coin_margined, coin_margined on BTC
    already held, unified), on the whole window and each year in it, and write compare.json and compare.csv."""
    from fundarb.output.compare import print_compare, write_compare
    from fundarb.research.compare import compare as run_compare

    cfg = effective_config(config or spot_perp_config_path(), start, end, seed)
    out = out or Path("runs") / f"{cfg.name}-compare"
    with Progress(TextColumn("[bold]compare[/] {task.description}"), console=err, transient=True,
                  disable=quiet or not err.is_terminal) as bar:
        task = bar.add_task(cfg.name)
        doc = run_compare(cfg, deploy, data_dir, progress=lambda what: bar.update(task, description=what), years=years)
    paths = write_compare(doc, out)
    if not quiet:
        print_compare(doc, Console())
        for p in paths.values():
            Console().print(f"wrote {p}", highlight=False)


@app.command()
def scan(
    config: Optional[Path] = typer.Argument(None, help="TOML config whose costs and capital the scan uses "
                                                       "(default: sims/spot_perp.toml)"),
    history: Optional[str] = typer.Option(None, "--history", help="rank over stored data instead of the venues now: "
                                                                  "a folder of it, or 'shipped' for the data fundarb ships"),
    since: str = typer.Option("2023-01-01", "--since", help="--history: first instant, UTC ISO date/time"),
    until: str = typer.Option("2024-07-01", "--until", help="--history: end instant, exclusive"),
    years: bool = typer.Option(True, "--years/--no-years", help="--history: also rank each calendar year in the window"),
    market: Optional[list[str]] = typer.Option(None, "--market", help="live: a perpetual to read, EXCHANGE:SYMBOL "
                                                                      "(repeatable; default: Binance and Bybit's "
                                                                      "linear and inverse BTC perps)"),
    api_url: Optional[str] = typer.Option(None, "--api-url", help="live: read the venues at this base URL "
                                                                  "(the emulator, e.g. http://127.0.0.1:8765)"),
    timeout: float = typer.Option(10.0, "--timeout", help="live: seconds each market may take before it is shown "
                                                          "as unreachable"),
    hold: Optional[float] = typer.Option(None, "--hold", help="holding period in days the round trip is amortised "
                                                              "over (default: strategy.expected_holding_days)"),
    price: Optional[float] = typer.Option(None, "--price", help="--history: BTC price the round trip's impact is "
                                                                "sized at (default: the median Binance spot close)"),
    top: int = typer.Option(10, "--top", help="rows shown per window (the files hold all)"),
    out: Path = typer.Option(Path("runs/scan"), "--out", help="output folder"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no table"),
) -> None:
    """Where the money is: every spot/linear, coin-margined and cross-venue perp/perp carry ranked by net APR on
    capital after the round trip. Live (no keys): the venues' funding now; --history: the stored settlements over
    a window and each year in it. Writes scan.json (and scan.csv with --history)."""
    from fundarb.output.scan import print_live_scan, print_scan, write_scan

    if hold is not None and not hold > 0:
        fail(f"--hold must be a number of days above 0, got {hold:g}")
    if price is not None and not price > 0:
        fail(f"--price must be above 0, got {price:g}")
    if top < 1:
        fail(f"--top must be 1 or more, got {top}")
    cfg = load(config or spot_perp_config_path())
    if history is not None:
        from fundarb.app.scan import run_scan

        doc = run_scan(cfg, history, since, until, years, hold, price)
    else:
        from fundarb.app.scan_live import LIVE_MARKETS, run_live_scan
        from fundarb.live.ccxt.client import Target, check_api_url

        if not 0 < timeout <= 120:
            fail(f"--timeout must be in (0, 120] seconds, got {timeout:g}")
        if api_url is not None:
            check_api_url(api_url, False)
        markets = tuple(_market(m) for m in market) if market else LIVE_MARKETS
        doc = run_live_scan(cfg, markets, Target(api_url=api_url, timeout_ms=int(min(timeout, 50) * 1000)), hold,
                            timeout)
    paths = write_scan(doc, out)
    if not quiet:
        (print_scan if history is not None else print_live_scan)(doc, Console(), top)
        for p in paths.values():
            Console().print(f"wrote {p}", highlight=False)


def _market(text: str) -> tuple[str, str]:
    exchange, _, symbol = text.partition(":")
    if not exchange or not symbol:
        fail(f"--market {text!r}: give EXCHANGE:SYMBOL, e.g. binanceusdm:BTC/USDT:USDT")
    return exchange.strip(), symbol.strip()


def _path_progress(quiet: bool, label: str) -> Progress:
    return Progress(TextColumn(f"[bold]{label}[/] {{task.description}}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total} paths"), TimeRemainingColumn(),
                    console=err, transient=True, disable=quiet or not err.is_terminal)


# options the study commands share
Days = Annotated[float, typer.Option("--days", help="length of each path in days")]
BlockPeriods = Annotated[Optional[float], typer.Option(
    "--block-periods", help="mean bootstrap block length in funding periods (default: Politis-White automatic)")]
StudySeed = Annotated[Optional[int], typer.Option("--seed", help="study seed (default: the config's)")]
Workers = Annotated[Optional[int], typer.Option("--workers", help="start a local Dask cluster with this many worker processes")]
Scheduler = Annotated[Optional[str], typer.Option("--scheduler", help="use a running Dask cluster, e.g. tcp://10.0.0.5:8786")]
DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="folder with the history parquet files (default: shipped data)")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar or table")]
EngineOpt = Annotated[Optional[str], typer.Option(
    "--engine", help="kernel (the compiled path kernel) or simulator; default: the kernel where the config lies "
    "within its scope, else the simulator (the output says which and why)")]


@app.command()
def montecarlo(
    config: Optional[Path] = typer.Argument(None, help="TOML config (default: sims/baseline.toml)"),
    paths: int = typer.Option(1000, "--paths", help="number of bootstrapped paths"),
    days: Days = 365.0,
    block_periods: BlockPeriods = None,
    start: Optional[str] = typer.Option(None, "--from", help="first instant of the real window to resample (default: config)"),
    end: Optional[str] = typer.Option(None, "--to", help="end of the real window to resample (default: config)"),
    seed: StudySeed = None,
    workers: Workers = None,
    scheduler: Scheduler = None,
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default: runs/<config name>-montecarlo)"),
    data_dir: DataDir = None,
    quiet: Quiet = False,
    engine: EngineOpt = None,
) -> None:
    """Bootstrap paths from the real history and run each through the path kernel (or the simulator, for a config outside its scope): distributions of APR, Sharpe, MaxDD, fill rate, liquidations and P(all gates pass)."""
    from fundarb.output.montecarlo import STUDY_FILES, print_study, write_study
    from fundarb.output.report import check_output_folder
    from fundarb.research.cluster import chunk_runner
    from fundarb.research.study import StudySpec, check_engine, run_study

    check_engine(engine)
    spec = StudySpec(paths=paths, days=days, block_periods=block_periods)
    cfg = effective_config(config or default_config_path(), start, end, seed)
    out = out or Path("runs") / f"{cfg.name}-montecarlo"
    check_output_folder(out, STUDY_FILES)
    if cfg.rotation is not None:  # every rotation venue's bars, drawn together
        from fundarb.research.bootstrap import cut_venue_bars
        from fundarb.sim.rotation import real_tape

        history: Any = cut_venue_bars(real_tape(cfg, data_dir))
    else:
        history = history_for(cfg, data_dir)
    with chunk_runner(workers, scheduler) as runner, _path_progress(quiet, "montecarlo") as bar:
        task = bar.add_task(cfg.name, total=spec.paths)
        result = run_study(cfg, history, spec, runner, progress=lambda n: bar.advance(task, n), engine=engine)
    written = write_study(result, out)
    if not quiet:
        print_study(result, Console(), written)


@app.command()
def sweep(
    config: Optional[Path] = typer.Argument(None, help="base TOML config (default: sims/baseline.toml)"),
    grid: list[str] = typer.Option(..., "--grid", help="name=v1,v2,... or name=start:stop:step; several names comma-separated or --grid repeated. Names: entry, exit, leverage, notional, signal, holding, cooldown, buffer, or a config field like strategy.cooldown_hours"),
    paths: int = typer.Option(100, "--paths", help="bootstrapped paths per grid point"),
    days: Days = 365.0,
    block_periods: BlockPeriods = None,
    seed: StudySeed = None,
    workers: Workers = None,
    scheduler: Scheduler = None,
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default: runs/<config name>-sweep)"),
    data_dir: DataDir = None,
    quiet: Quiet = False,
    engine: EngineOpt = None,
) -> None:
    """Run every grid point over the same bootstrapped paths; rank them, draw a heatmap per metric and write the recommended config as TOML."""
    from fundarb.output.montecarlo import SWEEP_FILES, print_sweep, write_sweep
    from fundarb.output.report import check_output_folder
    from fundarb.research.cluster import chunk_runner
    from fundarb.research.study import StudySpec, check_engine
    from fundarb.research.sweep import apply_params, grid_points, parse_grid, run_sweep

    check_engine(engine)
    spec = StudySpec(paths=paths, days=days, block_periods=block_periods)
    cfg = effective_config(config or default_config_path(), None, None, seed)
    parsed = parse_grid(grid, cfg)
    points = grid_points(parsed)
    for p in points:
        apply_params(cfg, p)
    out = out or Path("runs") / f"{cfg.name}-sweep"
    check_output_folder(out, SWEEP_FILES)
    history = history_for(cfg, data_dir)
    with chunk_runner(workers, scheduler) as runner, _path_progress(quiet, "sweep") as bar:
        task = bar.add_task(f"{cfg.name}: {len(points)} configs", total=spec.paths * len(points))
        result = run_sweep(cfg, history, spec, parsed, runner, progress=lambda n: bar.advance(task, n), engine=engine)
    written = write_sweep(result, out)
    if not quiet:
        print_sweep(result, Console(), written)


@app.command()
def walkforward(
    config: Optional[Path] = typer.Argument(None, help="base TOML config (default: sims/baseline.toml)"),
    grid: list[str] = typer.Option(..., "--grid", help="the sweep's grid: name=v1,v2,... (as `fundarb sweep --grid`)"),
    also: list[Path] = typer.Option([], "--also", help="another config to choose among (another structure or venue, "
                                     "same capital); repeat it for more: the rule ranks every config's grid points together"),
    train: str = typer.Option("365d", "--train", help="each training window: days (365d), weeks (52w) or a number of days"),
    test: str = typer.Option("90d", "--test", help="each test window, right after its training window"),
    step: Optional[str] = typer.Option(None, "--step", help="how far each pair of windows moves on (default: --test)"),
    paths: int = typer.Option(100, "--paths", help="bootstrapped paths per grid point on each training window"),
    days: Optional[float] = typer.Option(None, "--days", help="length of each path in days (default: the training window's)"),
    start: Optional[str] = typer.Option(None, "--from", help="first instant of the whole window (default: config)"),
    end: Optional[str] = typer.Option(None, "--to", help="end of the whole window (default: config)"),
    seed: StudySeed = None,
    workers: Workers = None,
    scheduler: Scheduler = None,
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default: runs/<config name>-walkforward)"),
    data_dir: DataDir = None,
    quiet: Quiet = False,
    engine: EngineOpt = None,
) -> None:
    """Choose parameters on each rolling training window with the sweep's rule, run the choice on the unseen test window after it, and stitch the test windows into one out-of-sample curve against always-on."""
    from fundarb.output.report import check_output_folder
    from fundarb.output.walkforward import WALK_FILES, print_walkforward, write_walkforward
    from fundarb.research.cluster import chunk_runner
    from fundarb.research.study import StudySpec, check_engine
    from fundarb.research.sweep import parse_grid
    from fundarb.research.walkforward import WalkSpec, check_candidates, parse_span, run_walkforward, windows

    check_engine(engine)
    test_days = parse_span(test, "--test")
    spec = WalkSpec(parse_span(train, "--train"), test_days, parse_span(step, "--step") if step else test_days, paths,
                    days)
    StudySpec(paths=paths, days=days or 365.0)  # the path count and length checked before any work
    cfg = effective_config(config or default_config_path(), start, end, seed)
    others = [attrs.evolve(o, data=attrs.evolve(o.data, start=cfg.data.start, end=cfg.data.end))  # the base's window
              for o in (effective_config(p, start, end, seed) for p in also)]
    check_candidates(cfg, others)
    for other in others:  # each config's history is there before any work (one line naming what is missing)
        history_for(other, data_dir)
    parsed = parse_grid(grid, cfg)
    planned = windows(parse_time(cfg.data.start, "start"), parse_time(cfg.data.end, "end"), spec)
    out = out or Path("runs") / f"{cfg.name}-walkforward"
    check_output_folder(out, WALK_FILES)
    with chunk_runner(workers, scheduler) as runner, Progress(
            TextColumn("[bold]walkforward[/] {task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TimeRemainingColumn(), console=err, transient=True, disable=quiet or not err.is_terminal) as bar:
        task = bar.add_task(cfg.name, total=len(planned))

        result = run_walkforward(cfg, parsed, spec, runner, data_dir, engine,
                                 progress=lambda done, what: bar.update(task, description=what, completed=done),
                                 others=others)
    written = write_walkforward(result, out)
    if not quiet:
        print_walkforward(result, Console(), written)


@app.command()
def replay(
    recording: str = typer.Argument(..., help="a recording name under recordings/, or a recording folder"),
    config: Optional[Path] = typer.Argument(None, help="TOML config (default: the recording's own, in sims/)"),
    out: Optional[Path] = typer.Option(None, "--out", help="output folder (default: runs/replay-<recording>)"),
    update_golden: bool = typer.Option(False, "--update-golden", help="rewrite the recording's golden file with this replay and print what changed"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="parsed-capture cache (default: $FUNDARB_CACHE or ~/.cache/fundarb)"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="folder with funding_settlements.parquet (default: shipped data)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no summary table"),
) -> None:
    """Replay a recorded feed through the engine and simulator: same summary, report and PNG as backtest; checks the recording's golden file."""
    from fundarb.app.replay import GOLDEN_FILE, compare_golden, golden_diff, golden_text, read_golden, run_replay
    from fundarb.output.report import check_output_folder, print_summary, write_outputs, writing
    from fundarb.replay.parse import ReplayError, load_recording

    folder = Path(recording) if Path(recording).is_dir() else project_file(Path("recordings") / recording)
    if not folder.is_dir():
        raise ReplayError(f"no recording {recording!r} (not a folder, and no recordings/{recording})")
    rec = load_recording(folder)
    own_config = config is None
    cfg = load(config or project_file(Path("sims") / rec.config))
    if update_golden and not own_config:
        raise ReplayError(f"--update-golden uses the recording's own config ({rec.config}); drop the CONFIG argument")
    golden = folder / GOLDEN_FILE
    # checked before the replay runs: a replay with no golden to compare is no regression test
    expected = read_golden(golden) if own_config and not update_golden else None
    out = out or Path("runs") / f"replay-{rec.name}"
    check_output_folder(out)
    result, cached = run_replay(rec, cfg, cache_dir, data_dir)
    paths = write_outputs(result, out)
    console = Console()
    if not quiet:
        print_summary(result, console, paths)
        console.print(f"parsed captures {'from cache' if all(cached.values()) else 'from the capture files'}", style="dim")
    actual = golden_text(result)
    if update_golden:
        try:
            previous = golden.read_text()
        except (OSError, UnicodeDecodeError):
            previous = ""
        with writing(golden):
            tmp = golden.with_name(f".{GOLDEN_FILE}.tmp")
            try:
                tmp.write_text(actual)
                tmp.replace(golden)
            finally:
                tmp.unlink(missing_ok=True)
        console.print(f"golden {golden}: " + ("unchanged" if actual == previous else "rewritten; what changed:"), highlight=False)
        if actual != previous:
            console.print(escape(golden_diff(previous, actual)), highlight=False, soft_wrap=True)
    elif expected is not None:
        same, ignored = compare_golden(expected, result)
        verdict = "matches" if same else "[red]differs[/] (replay with --update-golden to accept)"
        console.print(f"golden {golden}: {verdict}", highlight=False)
        if ignored:
            console.print(f"  ignored what the golden file holds of {', '.join(ignored)}: n/a on this run; "
                          "--update-golden drops them", style="dim", highlight=False)
        if not same:  # a regression test that fails: a script or CI must see it in the exit code
            raise typer.Exit(1)
    else:
        console.print(f"golden {golden}: not checked (CONFIG given; the golden file is for the recording's own, {rec.config})",
                      style="dim", highlight=False)


def _record_command() -> None:
    # the command lives beside the recorder; cryptofeed is imported only when a recording starts
    from fundarb.cli.record import record_command

    app.command("record", help="Record raw BTC feed messages with cryptofeed's own capture, until Ctrl-C or --duration.")(record_command)


_record_command()


def _data_commands() -> None:
    from fundarb.cli.data import data_app

    app.add_typer(data_app, name="data")


_data_commands()


def _trade_commands() -> None:
    from fundarb.cli.trade import (
        kill_command,
        monitor_command,
        positions_command,
        reconcile_command,
        resume_command,
        statement_command,
        trade_app,
    )

    app.add_typer(trade_app, name="trade")
    app.command("positions")(positions_command)
    app.command("reconcile")(reconcile_command)
    app.command("monitor")(monitor_command)
    app.command("resume")(resume_command)
    app.command("kill")(kill_command)
    app.command("statement")(statement_command)


_trade_commands()


def _promote_command() -> None:
    from fundarb.cli.promote import promote_command

    app.command("promote")(promote_command)


_promote_command()


def _run_command() -> None:
    from fundarb.cli.run import run_command

    app.command("run")(run_command)


_run_command()


def _emulator_command() -> None:
    # the one command that reaches the test kit (the import contracts hold every other module to that)
    from fundarb.cli.emulator import emulator

    app.command("emulator")(emulator)


_emulator_command()


@app.callback()
def _root() -> None:
    """fundarb: funding-rate carry, simulation first."""


def _save_traceback(exc: BaseException) -> str:
    """Write the traceback of an internal error to a file under the system
    temp folder; its path, or why it could not be written."""
    import tempfile
    import traceback

    try:
        fd, name = tempfile.mkstemp(prefix="fundarb-internal-error-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(f"fundarb {__version__}: {' '.join(sys.argv)}\n")
            fh.write("".join(traceback.format_exception(exc)))
        return f"the traceback is in {name}"
    except OSError as write_exc:
        return f"the traceback could not be saved ({write_exc.strerror or write_exc})"


def main() -> None:
    """The one error boundary: an error meant for the user is one line and
    exit 2, a failed read or write names the path, and anything else is an
    internal error whose traceback goes to a file, never to the terminal.

    A ``FundarbError`` from a command does not get here: ``app``'s group
    (``UserErrorGroup``) has already made it that line and exit 2, so typer's
    ``CliRunner`` sees the same; the clause below covers one raised outside a
    command."""
    if hasattr(signal, "SIGXFSZ"):
        # past a file-size limit a write then fails with EFBIG (an OSError
        # named with its path) instead of the signal killing the process
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted; nothing was written")
        sys.exit(130)
    except FundarbError as exc:
        error_line(str(exc))
        sys.exit(2)
    except OSError as exc:
        cause = exc.strerror or str(exc) or type(exc).__name__
        error_line(cause if exc.filename is None else f"{exc.filename}: {cause}")
        sys.exit(2)
    except sqlite3.Error as exc:
        error_line(f"SQLite: {exc}")
        sys.exit(2)
    except Exception as exc:
        where = _save_traceback(exc)
        what = f": {exc}" if str(exc) else ""
        error_line(f"internal error ({type(exc).__name__}){what}; {where}")
        sys.exit(1)
