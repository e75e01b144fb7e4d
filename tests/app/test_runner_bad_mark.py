"""The runner against the emulator when one websocket frame carries a mark
price ten times the real one (finite and positive, so the feed takes it):
the price is held by the engine's market guard, alerted once
(``implausible_price``, warning), dropped when the real mark comes back, and
never reaches the book, the paper simulator or the kill switch: the carry
stays on, nothing is flattened, the trade log is not blocked."""

from __future__ import annotations

import asyncio
import io

import pytest

import fundarb.testkit.emulator.ws as emulator_ws
from fundarb.core.model import NS_PER_SECOND
from fundarb.live.journal import Journal
from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.live import PERP, fund, until
from fundarb.testkit.runner import START, finish, logged, runner_config, start_runner, venue_clock

pytestmark = pytest.mark.usefixtures("hang_guard")


@pytest.mark.parametrize("mode", ["paper", "live"])
def test_one_mark_frame_at_ten_times_the_price_is_held_alerted_once_and_never_halts(tmp_path, mode):
    journal, cfg, lines = tmp_path / f"{mode}.sqlite", runner_config(), io.StringIO()

    async def scenario(server, pause):
        runner, stop, task = await start_runner(server, journal, cfg, mode, lines)
        hub = emulator_ws.websockets(server)
        engine = runner.engine
        try:
            await until(lambda: not engine.book.is_flat and not engine.open_orders, "the entry")
            pause.set()  # one step at a time from here: the bad frame, then the real ones
            await asyncio.sleep(0.2)
            held_qty, mark = engine.book.perp.qty, engine.book.perp.price
            hub.faults.add("bad_mark", venue="binanceusdm", factor=10.0)
            server.advance(60 * NS_PER_SECOND)
            await until(lambda: runner.stats.prices.get("held"), "the bad mark held")
            assert [e.detail for e in hub.events if e.what == "bad_mark"]
            assert engine.book.perp.price < 2 * mark  # the book never took it
            if runner.sim is not None:  # nor the simulator standing in for the venue
                assert runner.sim.accounts[cfg.perp_account].acct.price < 2 * mark
            for _ in range(4):  # the real marks come back
                server.advance(60 * NS_PER_SECOND)
                await asyncio.sleep(0.2)
            await until(lambda: runner.stats.prices.get("dropped"), "the bad mark dropped")
            pause.clear()
            end = runner.now + 3600 * NS_PER_SECOND
            await until(lambda: runner.now >= end, "an hour of data time after it", timeout=40.0)
            return runner, held_qty
        finally:
            await finish(runner, stop, task)

    with running_emulator(START) as server, venue_clock(server) as pause:
        if mode == "live":
            fund(server)
        runner, held_qty = asyncio.run(scenario(server, pause))
        if mode == "live":  # the venue saw the entry and nothing after it
            assert server.accounts.position("binanceusdm").qty == pytest.approx(held_qty)
            assert {o.reduce_only for o in server.accounts.all_orders(*PERP)} == {False}
    engine = runner.engine
    assert not engine.monitor.kill.halted and engine.monitor.drawdown < 0.01
    assert engine.book.perp.qty == pytest.approx(held_qty) and held_qty < 0  # the carry is on: nothing flattened
    assert runner.sim is None or runner.sim.liquidations == 0
    rows = Journal(journal).rows("alerts")
    implausible = [r for r in rows if r["kind"] == "implausible_price"]
    assert len(implausible) == 1 and implausible[0]["severity"] == "warning"
    assert "mark binanceusdm:perp" in implausible[0]["message"] and "+900%" in implausible[0]["message"]
    assert not [r for r in rows if r["kind"] in ("kill_switch", "flatten_failed", "liquidation")]
    assert Journal(journal).blocked() is None
    assert not [i for i in logged(lines, "intent") if i["reason"] != "entry"]
    guard = [(r["what"], r["series"]) for r in logged(lines, "price_guard")]
    assert guard == [("held", "mark binanceusdm:perp"), ("dropped", "mark binanceusdm:perp")]
    beat = logged(lines, "heartbeat")[-1]
    assert beat["implausible_prices"] == {"held": 1, "dropped": 1} and beat["halted"] is None
