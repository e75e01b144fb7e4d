"""An order fundarb declared absent that reaches the venue afterwards is
learned by reconciliation: its trades are journaled and entries blocked."""

from __future__ import annotations

import pytest

from fundarb.core.model import Side
from fundarb.core.orders import OrderStatus
from fundarb.live.execution.reconcile import reconcile
from fundarb.testkit.emulator.accounts import MARKET, SELL
from fundarb.testkit.live import fund, open_pair, run, session_on

pytestmark = pytest.mark.usefixtures("hang_guard")


def test_an_order_landing_after_it_was_declared_absent_is_learned_and_blocks(emulator, tmp_path):
    fund(emulator)
    journal = tmp_path / "trades.sqlite"
    assert open_pair(emulator, journal).status == "done"

    async def scenario():
        session = await session_on(emulator, journal)
        try:
            j, now = session.journal, session.now_ns()
            op_id = j.begin_operation(now, "open", session.config_hash, 0.01, {})
            order = j.reserve_order(now, op_id, session.config_hash, session.perp.account, session.perp.exchange.id,
                                    session.perp.symbol, "perp", "entry", Side.SELL, 0.01, False)
            order.transition(OrderStatus.SUBMITTED, now)
            order.transition(OrderStatus.REJECTED, now, "the venue has no order with this client id: it never "
                                                        "reached the venue")
            j.save_order(order, session.config_hash, "resolved: not on the venue")
            j.finish_operation(op_id, now, "failed", "")
            # the request lands after all
            emulator.accounts.place("binanceusdm", "perp", SELL, MARKET, 0.01, client_id=order.client_id)
            result = await reconcile(session, "periodic")
            return result, order.client_id, j.position(session.perp.account), j.blocked()
        finally:
            await session.close()

    result, cid, perp, blocked = run(scenario())
    assert not result.ok and any(cid in m and "declared absent" in m for m in result.mismatches), result
    assert perp == pytest.approx(-0.02)  # its fill is in the journal now
    assert blocked is not None
