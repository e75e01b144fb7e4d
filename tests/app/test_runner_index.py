"""The runner against the emulator with the venue's index price: the perp
feed's ``IndexPrice`` events reach the engine (paper: through the simulator,
which passes them on untouched, after what fell due), the market guard keeps
an index series beside the mark and the quotes, and one websocket frame with
an index ten times the real one is held, alerted once
(``implausible_price``), dropped when the real index comes back, and moves
neither the book, the simulator nor the kill switch."""

from __future__ import annotations

import asyncio
import io

import pytest

import fundarb.testkit.emulator.ws as emulator_ws
from fundarb.core.model import NS_PER_SECOND
from fundarb.live.journal import Journal
from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.live import fund, until
from fundarb.testkit.runner import START, finish, logged, runner_config, start_runner, venue_clock

pytestmark = pytest.mark.usefixtures("hang_guard")

INDEX = "index binanceusdm:perp"


@pytest.mark.parametrize("mode", ["paper", "live"])
def test_the_runner_keeps_the_venue_index_and_holds_one_index_frame_at_ten_times(tmp_path, mode):
    journal, cfg, lines = tmp_path / f"{mode}.sqlite", runner_config(), io.StringIO()

    async def scenario(server, pause):
        runner, stop, task = await start_runner(server, journal, cfg, mode, lines)
        hub = emulator_ws.websockets(server)
        engine = runner.engine
        try:
            await until(lambda: not engine.book.is_flat and not engine.open_orders, "the entry")
            pause.set()  # one step at a time from here: the bad frame, then the real ones
            await asyncio.sleep(0.2)
            guard = engine.guard
            index, mark = guard.last(INDEX), engine.book.perp.price
            assert index == index and abs(index / mark - 1) < 0.01  # the venue's index is a series, near the mark
            equity, held_qty = engine.book.equity, engine.book.perp.qty
            hub.faults.add("bad_index", venue="binanceusdm", factor=10.0)
            server.advance(60 * NS_PER_SECOND)
            await until(lambda: runner.stats.prices.get("held"), "the bad index held")
            assert [e.detail for e in hub.events if e.what == "bad_index"]
            assert guard.is_held(INDEX) and guard.last(INDEX) < 2 * index
            assert engine.book.perp.price < 2 * mark and abs(engine.book.equity / equity - 1) < 0.01
            for _ in range(4):  # the real index comes back
                server.advance(60 * NS_PER_SECOND)
                await asyncio.sleep(0.2)
            await until(lambda: runner.stats.prices.get("dropped"), "the bad index dropped")
            assert not guard.is_held(INDEX) and guard.last(INDEX) < 2 * index
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
    engine = runner.engine
    assert not engine.monitor.kill.halted and engine.monitor.drawdown < 0.01
    assert engine.book.perp.qty == pytest.approx(held_qty) and held_qty < 0  # the carry is on
    assert runner.sim is None or runner.sim.liquidations == 0
    rows = Journal(journal).rows("alerts")
    implausible = [r for r in rows if r["kind"] == "implausible_price"]
    assert len(implausible) == 1 and implausible[0]["severity"] == "warning"
    assert implausible[0]["message"].startswith(f"{INDEX}: price ") and "+900%" in implausible[0]["message"]
    assert not [r for r in rows if r["kind"] in ("kill_switch", "flatten_failed", "liquidation")]
    assert Journal(journal).blocked() is None
    guard = [(r["what"], r["series"]) for r in logged(lines, "price_guard")]
    assert guard == [("held", INDEX), ("dropped", INDEX)]
    beat = logged(lines, "heartbeat")[-1]
    assert beat["implausible_prices"] == {"held": 1, "dropped": 1} and beat["halted"] is None
