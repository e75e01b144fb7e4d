"""The runner against the emulator when the venue's market data goes wrong in
time: a venue clock set back 3 hours is refused and alerted once, never fed
as current prices; a websocket that stays open and silent is declared stale,
alerted, polled over REST and resubscribed."""

from __future__ import annotations

import asyncio
import io

import attrs
import pytest

import fundarb.testkit.emulator.ws as emulator_ws
from fundarb.app.runner.logs import run_logger
from fundarb.app.runner.loop import Runner
from fundarb.core.model import NS_PER_HOUR, NS_PER_SECOND
from fundarb.live.ccxt.feed import FeedState
from fundarb.live.journal import Journal
from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.live import session_on, until
from fundarb.testkit.runner import START, runner_config

pytestmark = pytest.mark.usefixtures("hang_guard")


async def _runner(server, journal, cfg):
    session = await session_on(server, journal, cfg=cfg)
    runner = Runner(cfg, "paper", session, run_logger(session.config_hash, "paper", stream=io.StringIO()))
    await runner.start()
    stop = asyncio.Event()
    return runner, stop, asyncio.create_task(runner.run(stop))


async def _finish(runner, stop, task):
    stop.set()
    await task
    await runner.session.close()


def test_a_venue_clock_set_back_three_hours_is_refused_and_alerted_once(tmp_path):
    journal, cfg = tmp_path / "paper.sqlite", runner_config()

    async def scenario(server):
        runner, stop, task = await _runner(server, journal, cfg)
        try:
            for _ in range(3):
                server.advance(60 * NS_PER_SECOND)
                await asyncio.sleep(0.1)
            await until(lambda: runner.now >= server.now_ns - 5 * NS_PER_SECOND, "the runner on the venue's time")
            now = runner.now
            server.set_time(server.now_ns - 3 * NS_PER_HOUR)  # the venue's clock jumps back
            for _ in range(5):
                server.advance(NS_PER_SECOND)
                await asyncio.sleep(0.1)
            await until(lambda: runner.pacer.refused > 0, "an event refused")
            return runner, now
        finally:
            await _finish(runner, stop, task)

    with running_emulator(START) as server:
        runner, before = asyncio.run(scenario(server))
    assert runner.now >= before  # the clock never went back with the venue's
    alerts = [r for r in Journal(journal).rows("alerts") if r["kind"] == "clock_backwards"]
    assert 1 <= len(alerts) <= 2 and all(a["severity"] == "critical" for a in alerts)  # once per venue at most
    assert all("went back" in a["message"] for a in alerts)


def test_a_silent_websocket_is_declared_stale_and_alerted_by_the_runner(tmp_path):
    journal = tmp_path / "paper.sqlite"
    cfg = runner_config()
    cfg = attrs.evolve(cfg, runner=attrs.evolve(cfg.runner, max_feed_silence_seconds=1.0,
                                                 settlement_feed_silence_seconds=0.5))

    async def scenario(server):
        runner, stop, task = await _runner(server, journal, cfg)
        hub = emulator_ws.websockets(server)
        try:
            await until(lambda: runner.feeds and all(f.state is FeedState.STREAMING for f in runner.feeds),
                        "the feeds streaming")
            hub.faults.add("dropped_websocket", venue="binanceusdm", mode="silent", times=None)
            for _ in range(40):  # the data goes on; the perp's sockets swallow it
                server.advance(15 * NS_PER_SECOND)
                await asyncio.sleep(0.05)
                if runner.stats.stale_feeds:
                    break
            await until(lambda: runner.stats.stale_feeds > 0, "a stale feed declared")
            return runner
        finally:
            await _finish(runner, stop, task)

    with running_emulator(START) as server:
        runner = asyncio.run(scenario(server))
    alerts = [r for r in Journal(journal).rows("alerts") if r["kind"] == "feed_stale"]
    assert alerts and "binanceusdm:perp" in alerts[0]["message"]
    assert runner.stats.stale_feeds >= 1
