"""`run --live` sets and reads back the perp venue's leverage (the config's
cap) and margin mode before its first order, refuses to trade when it
cannot, and its heartbeat values the margin by the venue's collateral model
(isolated: the position's own margin) beside the venue's own liquidation
price. Against the loopback emulator, whose perps default to 20x isolated."""

from __future__ import annotations

import asyncio
import io
import json
import math

import ccxt
import pytest

from fundarb.app.runner.logs import run_logger
from fundarb.app.runner.loop import Runner, RunnerError
from fundarb.core.book import margin_buffer
from fundarb.live.journal import Journal
from fundarb.testkit.emulator.accounts import DEFAULT_LEVERAGE
from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.live import PERP, SPOT, fund, session_on, until
from fundarb.testkit.runner import START, runner_config, venue_clock

pytestmark = pytest.mark.usefixtures("hang_guard")


def test_live_run_caps_the_venue_leverage_and_values_margin_as_the_venue_does(tmp_path):
    journal, cfg, lines = tmp_path / "live.sqlite", runner_config(), io.StringIO()
    cap = math.floor(cfg.risk.max_leverage)
    assert DEFAULT_LEVERAGE["binanceusdm"] > cap  # the venue's default is not the config's

    async def scenario(server):
        session = await session_on(server, journal, cfg=cfg)
        runner = Runner(cfg, "live", session, run_logger(session.config_hash, "live", stream=lines))
        await runner.start()
        assert server.accounts.position("binanceusdm").leverage == cap  # set before any order
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        try:
            await until(lambda: runner.engine.book.perp.qty < 0 and not runner.engine.open_orders, "the live entry")
            n = runner.stats.heartbeats
            await until(lambda: runner.stats.heartbeats > n + 1, "heartbeats in position")
            return runner
        finally:
            stop.set()
            await task
            await runner.session.close()

    with running_emulator(START) as server:
        fund(server)
        with venue_clock(server, minutes_per_step=1.0):
            runner = asyncio.run(scenario(server))
        pos = server.accounts.position("binanceusdm")
        venue_liq = server.accounts.liquidation("binanceusdm")
    assert pos.leverage == cap and pos.qty < 0
    beats = [json.loads(x) for x in lines.getvalue().splitlines() if json.loads(x)["event"] == "heartbeat"]
    beat = [b for b in beats if b.get("venue_liquidation")][-1]
    assert beat["margin_mode"] == "isolated" and beat["venue_leverage"] == cap
    # the computed liquidation is the venue's (same rule, same collateral), not the whole wallet's
    assert beat["liquidation"] == pytest.approx(beat["venue_liquidation"], rel=2e-3)
    assert beat["venue_liquidation"] == pytest.approx(venue_liq, rel=5e-3)
    mark = runner.engine.book.perp.price
    assert beat["margin_buffer"] == pytest.approx(margin_buffer(beat["liquidation"], mark, pos.qty), abs=0.02)
    # isolated at the cap: about 1/cap above entry, far tighter than the whole perp wallet would say
    assert beat["margin_buffer"] < 1.0 / cap + 0.05
    assert beat["margin_buffer_book"] is None or beat["margin_buffer_book"] > beat["margin_buffer"]


def test_live_run_refuses_to_trade_when_the_leverage_cannot_be_set(tmp_path, monkeypatch):
    journal, cfg = tmp_path / "live.sqlite", runner_config()

    async def scenario(server):
        session = await session_on(server, journal, cfg=cfg)
        call = type(session.perp).call

        async def refusing(leg, method, *args, **kwargs):  # the venue refuses the change (e.g. an open order)
            if method == "set_leverage":
                raise ccxt.ExchangeError('binanceusdm {"code":-4161,"msg":"Leverage reduction is not supported"}')
            return await call(leg, method, *args, **kwargs)

        monkeypatch.setattr(type(session.perp), "call", refusing)
        runner = Runner(cfg, "live", session, run_logger(session.config_hash, "live", stream=io.StringIO()))
        try:
            with pytest.raises(RunnerError, match="leverage/margin mode could not be set"):
                await runner.start()
        finally:
            await session.close()
        return runner

    with running_emulator(START) as server:
        fund(server)
        runner = asyncio.run(scenario(server))
        assert server.accounts.position("binanceusdm").leverage == DEFAULT_LEVERAGE["binanceusdm"]
        assert server.accounts.all_orders(*SPOT) == [] and server.accounts.all_orders(*PERP) == []
    assert runner.engine is None
    alerts = [r for r in Journal(journal).rows("alerts") if r["kind"] == "venue_margin"]
    assert len(alerts) == 1 and alerts[0]["severity"] == "critical"
