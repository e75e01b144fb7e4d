"""One rule for a naked leg: the executor that ends an operation naked and
the reconciliation after it judge the same gap the same way (a gap some leg
can trade, by its own lot and minimum order), so a reconciliation never
lifts the block a naked operation set while the gap stands."""

from __future__ import annotations

import pytest

from fundarb.live.execution.orders import LegTrader
from fundarb.live.execution.paired import execute_pair
from fundarb.live.execution.reconcile import reconcile
from fundarb.testkit.live import fund, open_pair, run, session_on

pytestmark = pytest.mark.usefixtures("hang_guard")


def test_a_gap_under_the_perp_lot_but_tradeable_on_spot_stays_blocked_after_reconciliation(emulator, tmp_path,
                                                                                         monkeypatch):
    fund(emulator)
    journal = tmp_path / "trades.sqlite"
    assert open_pair(emulator, journal).status == "done"

    async def scenario():
        session = await session_on(emulator, journal)
        try:
            # a close whose perp leg is lost leaves spot 0.00949 against perp -0.01: a gap of about
            # 0.0005 BTC, under the perp's 0.001 lot but a lot and a minimum order on spot; the venue
            # then refuses the spot buy that would trade it back
            send = LegTrader.send

            async def then_refuse(self, *args, **kwargs):
                order = await send(self, *args, **kwargs)
                emulator.faults.add("refuse", venue="binance", times=None)
                return order

            monkeypatch.setattr(LegTrader, "send", then_refuse)
            outcome = await execute_pair(session, "close", 0.0, {"prices": {}}, spot_qty=0.0005)
            emulator.faults.clear()
            monkeypatch.undo()
            first = session.journal.blocked()
            rec = await reconcile(session, "manual")
            return outcome, first, rec, session.journal.blocked()
        finally:
            await session.close()

    outcome, first, rec, after = run(scenario())
    assert session_lots(emulator) == (0.00001, 0.001)
    assert outcome.status == "naked" and first is not None, outcome
    assert not rec.ok and any("naked leg" in m for m in rec.mismatches), rec.mismatches
    assert after is not None  # the reconciliation keeps the block the executor set
    assert emulator.accounts.position("binanceusdm").qty == pytest.approx(-0.01)


def session_lots(server) -> tuple[float, float]:
    from fundarb.testkit.emulator.accounts import MARKETS

    return (float(MARKETS[("binance", "spot")].step), float(MARKETS[("binanceusdm", "perp")].step))
