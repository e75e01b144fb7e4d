"""``fundarb run CONFIG --paper|--live``: the strategy runner's command."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Optional

import typer

from fundarb.app.promote import DEFAULT_STORE, STORE_ENV
from fundarb.cli.trade import RUNS, ApiUrlOpt, RemoteOpt, SandboxOpt, _context, _fail, _run, actor_lock

PAPER_JOURNAL = Path("state") / "paper.sqlite"


def run_command(
    config: Path = typer.Argument(..., help="the TOML config to run (its exact hash must be promoted for --live)"),
    paper: bool = typer.Option(False, "--paper", help="live market data, the simulator's fills: nothing is sent"),
    live: bool = typer.Option(False, "--live", help="trade for real (needs a passing `fundarb promote` record)"),
    journal: Optional[Path] = typer.Option(
        None, "--journal", help=f"the SQLite trade log (default: $FUNDARB_JOURNAL or state/fundarb.sqlite live, "
        f"{PAPER_JOURNAL} paper)"),
    promotions: Optional[Path] = typer.Option(
        None, "--promotions", help=f"the promotion store (default: ${STORE_ENV} or {DEFAULT_STORE})"),
    log_file: Optional[Path] = typer.Option(None, "--log-file", help="also append the JSON log lines to this file"),
    duration: Optional[float] = typer.Option(None, "--duration", help="stop after this many seconds (default: run until stopped)"),
    api_url: Optional[str] = ApiUrlOpt, sandbox: bool = SandboxOpt, remote: bool = RemoteOpt,
) -> None:
    """Run the strategy: open when funding crosses the entry threshold, close at
    the exit threshold, target profit or maximum holding time, keep the legs
    neutral and the margin buffer up. JSON log lines on stdout; SIGTERM or
    Ctrl-C stops it after the step in hand."""
    if paper == live:
        _fail("say --paper or --live (exactly one)")
    if duration is not None and not duration > 0:
        _fail(f"--duration must be a number of seconds > 0, got {duration}")
    if journal is None and paper:
        journal = PAPER_JOURNAL
    cfg, path, target = _context(config, journal, api_url, sandbox, remote, "fundarb run", RUNS)
    if live and cfg.long_perp:
        _fail(f"config {cfg.name} is a perp/perp carry: the runner trades it on paper (--paper); live, "
              "`fundarb trade open/close/rotate` trade it")
    if live:
        from fundarb.app.promote import live_clearance, store_path

        refusal = live_clearance(cfg, store_path(promotions))
        if refusal:
            _fail(refusal)
    from fundarb.app.runner.registry import registration

    mode = "live" if live else "paper"
    # the whole run holds the trade log, and live the venue accounts: no second actor on them
    lock = actor_lock(cfg, path, target, f"fundarb run --{mode}", venues=live)
    listed = registration(path, mode).acquire()  # how `kill`, `resume` and `monitor` find this runner
    try:
        _run(_serve(cfg, mode, path, target, log_file, duration))
    finally:
        listed.release()
        lock.release()


async def _serve(cfg, mode: str, path: Path, target, log_file: Optional[Path], duration: Optional[float]) -> None:
    from fundarb.app.runner.logs import run_logger
    from fundarb.config import config_hash

    log = run_logger(config_hash(cfg), mode, log_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if duration is not None:  # bounds the whole run, the wait for an unreachable venue included
        loop.call_later(duration, stop.set)
    from fundarb.support.waits import WaitReporter

    waits = WaitReporter(live=False)  # plain lines on stderr; the JSON log stays on stdout
    try:
        if cfg.rotation is not None:  # one pair at a time, moved by the rotation rule (paper)
            from fundarb.app.runner.rotation import run_rotating

            await run_rotating(cfg, path, target, log, stop, waits)
            return
        session = await _connect(cfg, path, target, mode, log, stop, waits)
        if session is None:
            log.info("stopped", reason="stopped before the venues answered")
            return
        await _run_session(cfg, mode, session, target, path, log, stop)
    finally:
        waits.close()


async def _run_session(cfg, mode: str, session, target, path: Path, log, stop: asyncio.Event) -> None:
    from fundarb.app.runner.loop import Runner

    try:
        runner = Runner(cfg, mode, session, log)
        log.info("starting", config=cfg.name, journal=str(path), spot=cfg.spot_account, perp=cfg.perp_account,
                 target=target.api_url or ("sandbox" if target.sandbox else "live venues"))
        await _until(runner.start(), stop)
        if not stop.is_set():
            await runner.run(stop)
    finally:
        await session.close()


async def _until(coro, stop: asyncio.Event):
    """``coro``, abandoned (cancelled) if ``stop`` is set first; its result or None."""
    task = asyncio.ensure_future(coro)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return None
    return task.result()


async def _connect(cfg, path: Path, target, mode: str, log, stop: asyncio.Event, waits):
    """Open the session, waiting out a venue that does not answer (a restart
    during an outage keeps trying, with back-off, until stopped); a bad key
    or config fails at once. Each attempt and each pause ends when ``stop``
    is set (Ctrl-C, SIGTERM, ``--duration``)."""
    from fundarb.live.ccxt.client import VenueUnreachable
    from fundarb.live.execution.session import open_session
    from fundarb.support.waits import stopped_within

    delay, attempt = 1.0, 0
    while not stop.is_set():
        attempt += 1
        try:
            session = await _until(open_session(cfg, path, target, trading=mode == "live", paper=mode == "paper",
                                                waits=waits), stop)
            if session is not None and stop.is_set():
                await session.close()
                return None
            return session
        except VenueUnreachable as exc:
            log.warning("venue_unreachable_at_start", error=str(exc)[:300], attempt=attempt, retry_in_s=delay)
            waits.on_retry("the venues to answer", attempt, delay, str(exc)[:300])
        if await stopped_within(stop, delay):
            return None
        delay = min(delay * 2, 60.0)
    return None
