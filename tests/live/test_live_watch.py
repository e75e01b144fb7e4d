"""The long-running live side against the emulator's websockets: a dropped
websocket reconnects and triggers a reconciliation; reconciliation also runs
on its interval; the journal stays in agreement with the venue."""

from __future__ import annotations

import asyncio

import attrs
import pytest

import fundarb.testkit.emulator.ws as emulator_ws
from fundarb.config import LiveSettings
from fundarb.core.model import FundingRate, MarkPrice, Quote
from fundarb.live.execution.paired import execute_pair
from fundarb.live.execution.watch import LiveWatch
from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.live import assert_agree, fund, session_on, spot_perp, until

pytestmark = pytest.mark.usefixtures("hang_guard")


def test_a_dropped_websocket_reconnects_and_reconciles_with_the_position_open(tmp_path):
    journal = tmp_path / "trades.sqlite"
    cfg = attrs.evolve(spot_perp(), live=LiveSettings(reconcile_interval_seconds=1.0))
    events: list = []
    with running_emulator() as server:
        fund(server)
        hub = emulator_ws.websockets(server)

        async def scenario():
            session = await session_on(server, journal, cfg=cfg)
            watch = LiveWatch(session, events.append, use_websocket=True)
            stop = asyncio.Event()
            runner = asyncio.create_task(watch.run(stop))
            try:
                await until(lambda: any(isinstance(e, Quote) and e.venue == "binanceusdm:perp" for e in events),
                            "perp quotes")
                outcome = await execute_pair(session, "open", 0.01, {})
                assert outcome.status == "done"
                hub.faults.add("dropped_websocket", venue="binanceusdm", mode="reset")
                await asyncio.to_thread(server.advance_hours, 1)  # frames flow, the fault drops the next one
                await until(lambda: any(f.reconnects for f in watch.feeds), "the reconnect")
                await until(lambda: watch.reconciliations, "the reconciliation after the reconnect")
                await until(lambda: any(r["trigger"] == "periodic" for r in session.journal.rows("reconciliations")),
                            "a periodic reconciliation")
                return watch
            finally:
                stop.set()
                await runner
                await session.close()

        watch = asyncio.run(scenario())
        (perp_feed,) = [f for f in watch.feeds if f.reconnects]
        assert perp_feed.reconnects == 1
        (after,) = watch.reconciliations
        assert after.trigger == "reconnect" and after.ok and after.journal_perp == pytest.approx(-0.01)
        assert any(isinstance(e, MarkPrice) for e in events) and any(isinstance(e, FundingRate) for e in events)
        j = assert_agree(server, journal)
        triggers = [r["trigger"] for r in j.rows("reconciliations")]
        assert "reconnect" in triggers and "periodic" in triggers
        assert all(r["ok"] for r in j.rows("reconciliations")) and j.blocked() is None
