"""A placement whose answer timed out is sent again only once the venue's
receive window has passed since it was sent, and then under a new client id:
a late original is found instead of being doubled."""

from __future__ import annotations

import pytest

from fundarb.live.ccxt.client import RECV_WINDOW_MS, Target, VenueSetupError, recv_window_ms
from fundarb.live.execution.paired import execute_pair
from fundarb.testkit.live import PERP, assert_agree, fund, placed_orders, run, session_on

pytestmark = pytest.mark.usefixtures("hang_guard")


def _open(emulator, journal, window_ms: int):
    async def scenario():
        session = await session_on(emulator, journal, timeout_ms=400)
        try:
            for leg in session.legs:
                leg.exchange.options["recvWindow"] = window_ms  # short, to keep the test short
            return await execute_pair(session, "open", 0.01, {})
        finally:
            await session.close()
    return run(scenario())


def test_a_late_original_inside_the_receive_window_is_found_not_doubled(emulator, tmp_path):
    fund(emulator)
    journal = tmp_path / "trades.sqlite"
    # the perp order reaches the venue 1.2 s after it was sent, its answer lost: the client timed out at 0.4 s
    emulator.faults.add("timeout", venue="binanceusdm", path="/fapi/v1/order", delay_s=1.2)
    outcome = _open(emulator, journal, window_ms=1600)
    assert outcome.status == "done", outcome
    (perp_order,) = placed_orders(emulator, PERP)
    assert perp_order.qty == pytest.approx(0.01)
    j = assert_agree(emulator, journal)
    assert j.position("binanceusdm:perp") == pytest.approx(-0.01)


def test_a_placement_unknown_past_the_window_is_sent_again_under_a_new_client_id(emulator, tmp_path):
    fund(emulator)
    journal = tmp_path / "trades.sqlite"
    # refused before it was read (as a venue refuses a request older than its window): nothing lands
    emulator.faults.add("server_error", venue="binanceusdm", path="/fapi/v1/order")
    outcome = _open(emulator, journal, window_ms=800)
    assert outcome.status == "done", outcome
    j = assert_agree(emulator, journal)
    perp_rows = [o for o in j.rows("orders") if o["leg"] == "perp"]
    assert [o["status"] for o in perp_rows] == ["rejected", "filled"]
    assert perp_rows[0]["client_id"] != perp_rows[1]["client_id"]
    (placed,) = placed_orders(emulator, PERP)
    assert placed.client_id == perp_rows[1]["client_id"]


def test_the_request_timeout_stays_below_the_receive_window():
    assert recv_window_ms(400) == RECV_WINDOW_MS
    assert recv_window_ms(10_000) > 10_000
    with pytest.raises(VenueSetupError):
        Target(timeout_ms=60_000)
