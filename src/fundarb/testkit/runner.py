"""Set-up of the strategy-runner tests: the emulator's clock played forward
from a thread, a runner config written to disk, a passing promotion record
for it (what `fundarb promote` would leave), `fundarb run` as a separate
process with the emulator's keys, and a runner in the test's own process."""

from __future__ import annotations

import asyncio
import ctypes
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from fundarb.config import Config, LiveSettings, RunnerSettings, config_hash, dumps
from fundarb.testkit.emulator.server import EmulatorServer
from fundarb.testkit.live import KEYS, session_on, spot_perp

START = "2024-03-01T06:00"  # real Binance data: funding ~55% APR, the carry enters at once
WAIT_S = 60.0
KEEP_ENV = ("FUNDARB_LOCK_DIR", "FUNDARB_PROMOTION_KEY_FILE")  # the test's own lock folder and promotion key


def runner_config(base: Config | None = None, **strategy: Any) -> Config:
    """``base`` (default the spot/perp carry) with short live timings (a test's
    seconds are the venue's minutes), and a quiet window around settlements."""
    cfg = base or spot_perp()
    return attrs.evolve(
        cfg, name="runner-test" if base is None else f"{base.name}-runner-test",
        strategy=attrs.evolve(cfg.strategy, **strategy),
        live=LiveSettings(reconcile_interval_seconds=2.0, hedge_timeout_seconds=20.0, order_timeout_seconds=5.0,
                          request_timeout_seconds=2.0),
        runner=RunnerSettings(settlement_quiet_minutes=10.0, heartbeat_seconds=1.0, kill_poll_seconds=0.2,
                              unreachable_alert_minutes=60.0))


def write_config(cfg: Config, folder: Path) -> Path:
    path = folder / f"{cfg.name}.toml"
    path.write_text(dumps(cfg))
    return path


def promote_for_test(cfg: Config, store: Path) -> None:
    """A passing promotion record for ``cfg``'s exact hash, so `run --live`
    starts (what promotion checks is tested with `fundarb promote` itself)."""
    from fundarb.app.promote import save_record

    save_record(store, {"created_ns": time.time_ns(), "config_hash": config_hash(cfg), "config_name": cfg.name,
                        "passed": True, "note": "written by the runner tests, not by fundarb promote"})


@contextmanager
def venue_clock(server: EmulatorServer, minutes_per_step: float = 5.0, every_s: float = 0.05) -> Iterator[threading.Event]:
    """Play the emulator's data time forward (5 venue minutes every 50 ms:
    about 100 minutes a second) until the block ends; set the yielded event
    to pause it."""
    stop, pause = threading.Event(), threading.Event()

    def play() -> None:
        while not stop.wait(every_s):
            if not pause.is_set():
                server.advance(int(minutes_per_step * 60e9))

    thread = threading.Thread(target=play, daemon=True)
    thread.start()
    try:
        yield pause
    finally:
        stop.set()
        thread.join()


def spawn_runner(server: EmulatorServer, journal: Path, config: Path, store: Path, mode: str = "--live",
                 log: Path | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNDARB_") or k in KEEP_ENV}
    env.update(KEYS, FUNDARB_PROMOTIONS=str(store))
    cmd = [sys.executable, "-c", "from fundarb.cli.main import main; main()", "run", str(config), mode,
           "--api-url", server.base_url, "--journal", str(journal)]
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            preexec_fn=die_with_parent)


def die_with_parent() -> None:
    """Linux: the runner gets SIGKILL when the test process dies, so a test
    killed by its hang guard leaves no runner behind."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT_S) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def stop_runner(child: subprocess.Popen) -> int:
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return child.returncode


async def start_runner(server: EmulatorServer, journal: Path, cfg: Config, mode: str,
                       log_lines: io.StringIO) -> tuple[Any, asyncio.Event, asyncio.Task]:
    """A runner in this process on ``server``: started (reconciled, book
    built) and running until ``finish``; (runner, stop event, task)."""
    from fundarb.app.runner.logs import run_logger
    from fundarb.app.runner.loop import Runner

    session = await session_on(server, journal, cfg=cfg, paper=mode == "paper")
    runner = Runner(cfg, mode, session, run_logger(session.config_hash, mode, stream=log_lines))
    await runner.start()
    stop = asyncio.Event()
    return runner, stop, asyncio.create_task(runner.run(stop))


async def paper_carry_then_flatten(server: EmulatorServer, journal: Path, cfg: Config, lines: io.StringIO) -> Any:
    """A paper runner in this process that enters, is paid a settlement in
    position, and is then flattened by the kill switch (what `fundarb kill
    --flatten` writes while a runner holds the trade log); the runner."""
    from fundarb.live.execution.paired import BLOCK_KEY, FLATTEN_KEY
    from fundarb.testkit.live import until

    runner, stop, task = await start_runner(server, journal, cfg, "paper", lines)
    try:
        engine = runner.engine
        await until(lambda: not engine.book.is_flat and not engine.open_orders, "the paper entry")
        await until(lambda: engine.book.funding_ledger, "a funding settlement in position")
        runner.journal.set_state(BLOCK_KEY, "kill switch: test", 0)
        runner.journal.set_state(FLATTEN_KEY, "test", 0)
        await until(lambda: engine.book.perp.qty == 0 and not engine.open_orders, "the flatten")
        await until(lambda: runner.journal.get_state(FLATTEN_KEY) is None, "the flatten request cleared")
        return runner
    finally:
        await finish(runner, stop, task)


def live_carry_then_restart_flatten(server: EmulatorServer, journal: Path, cfg: Config,
                                    between: Callable[[], dict[str, Any]], lines: io.StringIO | None = None
                                    ) -> tuple[dict[str, Any], Any, tuple[int, float]]:
    """A live runner that enters and is paid a settlement in position (paid
    by the venue and in the trade log), stops; ``between()`` reads the venue
    then; a second runner takes the carry back and is flattened by the kill
    switch. (what ``between`` read, the second runner, (its strategy's
    direction, its perp units) as it started)."""
    from fundarb.live.execution.paired import BLOCK_KEY, FLATTEN_KEY
    from fundarb.testkit.live import until

    async def first() -> None:
        runner, stop, task = await start_runner(server, journal, cfg, "live", io.StringIO())
        try:
            await until(lambda: runner.stats.settlements and all(x["paid"] for x in runner.stats.settlements),
                        "a settlement in position, paid by the venue and in the trade log", timeout=40.0)
        finally:
            await finish(runner, stop, task)

    async def second() -> tuple[Any, tuple[int, float]]:
        runner, stop, task = await start_runner(server, journal, cfg, "live", lines or io.StringIO())
        try:
            restored = (runner.engine.strategy.direction, runner.engine.book.perp.units)
            runner.journal.set_state(BLOCK_KEY, "kill switch: test", 0)
            runner.journal.set_state(FLATTEN_KEY, "test", 0)
            await until(lambda: runner.engine.book.perp.qty == 0 and not runner.engine.open_orders, "the flatten",
                        timeout=40.0)
            return runner, restored
        finally:
            await finish(runner, stop, task)

    asyncio.run(first())
    seen = between()
    runner, restored = asyncio.run(second())
    return seen, runner, restored


async def finish(runner: Any, stop: asyncio.Event, task: asyncio.Task) -> None:
    stop.set()
    await task
    await runner.session.close()


def logged(lines: io.StringIO, event: str) -> list[dict]:
    """The runner's JSON log lines of ``event``."""
    return [r for r in map(json.loads, lines.getvalue().splitlines()) if r["event"] == event]
