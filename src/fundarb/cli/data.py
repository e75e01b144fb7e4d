"""`fundarb data ...`: fetch history through ccxt, and funding statistics."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from fundarb.cli.common import UserErrorGroup, fail

data_app = typer.Typer(cls=UserErrorGroup, no_args_is_help=True, help="Historical funding and prices: fetch through ccxt, statistics.")


@data_app.command("fetch")
def fetch_command(
    venue: str = typer.Option(..., "--venue", help="ccxt exchange id, e.g. binanceusdm, bybit, okx"),
    symbol: str = typer.Option(..., "--symbol", help="ccxt unified symbol, e.g. BTC/USDT:USDT"),
    since: str = typer.Option(..., "--since", help="first instant, UTC ISO date/time"),
    until: Optional[str] = typer.Option(None, "--until", help="last instant, UTC ISO date/time (default: now)"),
    timeframe: str = typer.Option("1h", "--timeframe", help="OHLCV bar size"),
    store: Path = typer.Option(Path("data/store"), "--store", help="parquet store folder"),
    spot_venue: Optional[str] = typer.Option(None, "--spot-venue", help="venue of the spot leg's OHLCV (default: the perp venue's spot counterpart)"),
    spot_symbol: Optional[str] = typer.Option(None, "--spot-symbol", help="spot symbol (default: the perp symbol without its settle currency)"),
    no_spot: bool = typer.Option(False, "--no-spot", help="skip the spot OHLCV"),
    api_url: Optional[str] = typer.Option(None, "--api-url", help="send every REST call to this base URL instead (e.g. a local emulator, http://127.0.0.1:8900)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar or summary"),
    attempts: int = typer.Option(8, "--attempts", min=1, help="tries of one request before giving up on a venue that "
                                 "does not answer (waits between them: 0.5, 1, 2, 4, 8, 8 ... s, or the venue's "
                                 "Retry-After; at most 120 s in all)"),
) -> None:
    """Fetch funding history and spot/perp OHLCV into a parquet store; resumes where a previous fetch stopped."""
    from fundarb.data.fetch import Backoff, FetchPlan, fetch_all, spot_counterpart
    from fundarb.data.history import DataError, fmt_time, parse_time
    from fundarb.support.waits import WaitReporter

    err = Console(stderr=True)
    try:
        since_ms = parse_time(since, "--since") // 1_000_000
        until_ms = (parse_time(until, "--until") if until else time.time_ns()) // 1_000_000
        if since_ms >= until_ms:
            raise DataError(f"--since {since} is not before --until {until or 'now'}")
        if no_spot:
            sv = ss = None
        else:
            dv, ds = spot_counterpart(venue, symbol)
            sv, ss = spot_venue or dv, spot_symbol or ds
        plan = FetchPlan(venue, symbol, since_ms, until_ms, timeframe, sv, ss)
        with Progress(TextColumn("[bold]fetch[/] {task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      console=err, transient=True, disable=quiet or not err.is_terminal) as bar, \
                WaitReporter(err) as waits:  # retries show even with --quiet: they explain a slow or failed fetch
            tasks: dict[str, TaskID] = {}

            def progress(what: str, ts: int) -> None:
                if what not in tasks:
                    tasks[what] = bar.add_task(what, total=until_ms - since_ms)
                bar.update(tasks[what], completed=max(0, ts - since_ms))

            reports = fetch_all(plan, store, api_url, Backoff(attempts=attempts, waits=waits), progress=progress)
    except OSError as exc:
        if exc.filename is None:
            raise
        fail(f"the store cannot be written: {exc}")  # full disk, permissions
    except KeyboardInterrupt:
        fail(f"interrupted; {store} keeps every page that arrived and the next fetch resumes after it", 130)
    if quiet:
        return
    out = Console()
    for r in reports:
        c = r.checks
        span = f"{fmt_time(c['first_ms'] * 1_000_000)} .. {fmt_time(c['last_ms'] * 1_000_000)}" if c.get("first_ms") else "empty"
        resumed = f", resumed after {fmt_time(r.resumed_from_ms * 1_000_000)}" if r.resumed_from_ms else ""
        out.print(f"[bold]{r.what}[/]: {c['rows']:,} rows {span} UTC in {r.path}; {r.added:,} new from {r.pages} pages, "
                  f"{r.duplicates:,} overlapping rows dropped{resumed}", highlight=False)
        problems = []
        if c.get("gaps"):
            problems.append(f"{len(c['gaps'])} gaps, first after {fmt_time(c['gaps'][0][0] * 1_000_000)}")
        if c.get("out_of_range"):
            problems.append(f"{len(c['out_of_range'])} rates beyond +-3% per settlement")
        if c.get("bad_bars"):
            problems.append(f"{len(c['bad_bars'])} bad bars")
        if c.get("duplicates"):
            problems.append(f"{c['duplicates']} settlements stored twice (identical ones are kept once at load)")
        if c.get("off_schedule"):
            problems.append(f"{c['off_schedule']} stamps over 1 s from their settlement instant")
        out.print("  checks: " + ("; ".join(problems) if problems else "no gaps, duplicates or out-of-range values"), style="dim")
        if "with_mark" in c:
            late = c.get("late_stamps", 0)
            out.print(f"  {late:,} stamps a few ms after the settlement instant (kept as the venue sent them; snapped when "
                      f"loaded); {c['with_mark']:,} of {c['rows']:,} settlements carry the venue's mark price", style="dim")
    out.print(f"backtest it: fundarb backtest --data-dir {store} --from {fmt_time(since_ms * 1_000_000)[:10]} "
              f"--to {fmt_time(until_ms * 1_000_000)[:10]}", highlight=False)


@data_app.command("stats", help="Funding statistics by venue, year and regime; persistence; the entry-threshold table. Writes CSV, JSON and PNGs.")
def stats_command(
    venue: Optional[list[str]] = typer.Option(None, "--venue", help="a venue (all its symbols) or venue:SYMBOL, e.g. binance:BTCUSDT; repeatable (default: every series)"),
    since: Optional[str] = typer.Option(None, "--since", help="first settlement instant, UTC ISO date/time (default: all)"),
    until: Optional[str] = typer.Option(None, "--until", help="end instant, exclusive (default: all)"),
    out: Path = typer.Option(Path("runs/funding-stats"), "--out", help="output folder"),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="folder with funding_settlements.parquet and prices_1h.parquet (default: shipped data)"),
    threshold_apr: Optional[list[float]] = typer.Option(None, "--threshold-apr", help="entry threshold on the signal APR, a fraction (0.10 = 10%); repeatable (default 0 0.05 0.10 0.15 0.20 0.30)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no table"),
) -> None:
    """Funding statistics by venue, year and BTC market regime, their persistence, and the entry-threshold table."""
    from rich.console import Console

    from fundarb.app.funding_stats import run_stats
    from fundarb.core.errors import FundarbError
    from fundarb.output.funding_stats import print_headline

    try:
        st, paths = run_stats(venue, since, until, out, data_dir, threshold_apr)
    except FundarbError as exc:  # the line `data_app` would print, for an app that mounts this command alone
        fail(str(exc))
    if not quiet:
        print_headline(st, Console(), paths)
