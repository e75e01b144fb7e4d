"""Property: whatever share of each leg the venue fills, a paired open ends
with equal legs (to under one lot) and the trade log, journal and venue in
agreement. Each example runs a fresh emulator; the number of examples is
bounded so the run stays short."""

from __future__ import annotations

import pytest
from emulator_fixtures import hang_guard, loopback_only, running_emulator  # noqa: F401 (fixtures)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from live_fixtures import assert_agree, fund, run, session_on

from fundarb.venues.live.paired import execute_pair

pytestmark = pytest.mark.usefixtures("hang_guard")

ratios = st.one_of(st.none(), st.floats(min_value=0.1, max_value=0.9))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lots=st.integers(min_value=5, max_value=40), spot_ratio=ratios, perp_ratio=ratios)
def test_partial_fills_on_either_leg_end_in_an_equal_pair(tmp_path_factory, lots, spot_ratio, perp_ratio):
    qty = lots / 1000  # a multiple of the perp's 0.001 lot
    journal = tmp_path_factory.mktemp("pairs") / "trades.sqlite"
    with running_emulator() as server:
        fund(server)
        if spot_ratio is not None:
            server.faults.add("partial_fill", venue="binance", fill_ratio=spot_ratio)
        if perp_ratio is not None:
            server.faults.add("partial_fill", venue="binanceusdm", fill_ratio=perp_ratio)

        async def scenario():
            session = await session_on(server, journal)
            try:
                return await execute_pair(session, "open", qty, {})
            finally:
                await session.close()

        outcome = run(scenario())
        assert outcome.status in ("done", "rebalanced"), outcome
        j = assert_agree(server, journal)
        spot, perp = j.position("binance:spot"), j.position("binanceusdm:perp")
        assert perp == pytest.approx(-qty, abs=1e-12)  # completed to the size asked
        # the spot leg holds the perp's size less the buy's fee in BTC and under one spot lot (1e-5)
        assert abs(spot + perp) <= 0.001 * qty + 1e-5 + 1e-12
