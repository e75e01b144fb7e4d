"""Timeouts inside a paired operation: the pair handles them itself, records
what was sent, blocks entries and alerts once; recovery then finishes it."""

from __future__ import annotations

import pytest

from fundarb.live.execution.paired import execute_pair, recover
from fundarb.testkit.live import PERP, SPOT, assert_agree, fund, placed_orders, run, session_on

pytestmark = pytest.mark.usefixtures("hang_guard")


def test_lookups_timing_out_on_every_retry_end_the_pair_needs_recovery_blocked_and_alerted(emulator, tmp_path):
    fund(emulator)
    journal = tmp_path / "trades.sqlite"
    # the perp order is placed but its answer never comes, and every look-up of it times out
    emulator.faults.add("timeout_after_place", venue="binanceusdm", delay_s=1.0)
    emulator.faults.add("timeout", venue="binanceusdm", path="/fapi/v1/order", times=None, delay_s=0.8)

    async def scenario():
        session = await session_on(emulator, journal, timeout_ms=400)
        try:
            outcome = await execute_pair(session, "open", 0.01, {})
            return outcome
        finally:
            await session.close()

    outcome = run(scenario())
    assert outcome.status == "needs_recovery", outcome
    message = outcome.actions[0]
    spot_cid, perp_cid = outcome.orders
    assert spot_cid in message and perp_cid in message and "nothing more was sent" not in message
    assert len(placed_orders(emulator, SPOT)) == 1 and len(placed_orders(emulator, PERP)) == 1
    emulator.faults.clear()  # the network is back

    async def recovery():
        session = await session_on(emulator, journal)
        try:
            assert session.journal.blocked() is not None
            alerts = [a for a in session.journal.rows("alerts") if a["kind"] == "pair_interrupted"]
            assert len(alerts) == 1
            (op,) = session.journal.operations("needs_recovery")
            return await recover(session)
        finally:
            await session.close()

    (recovered,) = run(recovery())
    assert recovered.op_id == outcome.op_id and recovered.status != "naked", recovered
    assert len(placed_orders(emulator, PERP)) == 1  # found by its client id, never sent twice
    assert_agree(emulator, journal)
