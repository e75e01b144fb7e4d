"""The runner's live venue sends at most one kill flatten per halt: when the
perp leg was closed outside fundarb, the paired close is refused on the perp
(reduce-only) and unwound, and the core's repeated flatten asks are held back
instead of trading the spot back and forth."""

from __future__ import annotations

import pytest

from fundarb.core.model import Side
from fundarb.core.orders import Order, OrderStatus
from fundarb.live.execution.paired import BLOCK_KEY
from fundarb.live.venue import LiveVenue
from fundarb.testkit.emulator.accounts import BUY, MARKET
from fundarb.testkit.live import fund, open_pair, placed_orders, run, session_on

pytestmark = pytest.mark.usefixtures("hang_guard")


def test_a_failed_kill_flatten_is_not_sent_again_in_the_same_halt(emulator, tmp_path):
    fund(emulator)
    journal = tmp_path / "trades.sqlite"
    assert open_pair(emulator, journal).status == "done"
    emulator.accounts.place("binanceusdm", "perp", BUY, MARKET, 0.01, reduce_only=True)  # closed outside fundarb
    before = len(placed_orders(emulator))

    async def scenario():
        session = await session_on(emulator, journal)
        try:
            session.journal.set_state(BLOCK_KEY, "reconciliation mismatch", session.now_ns())
            venue = LiveVenue(session, session.now_ns)
            answers = []
            for n in range(4):  # the core asks again on every market event
                spot_qty = session.journal.position(session.spot.account, session.spot.base)
                for cid, account, side, qty in ((f"k{n}s", session.spot.account, Side.SELL, spot_qty),
                                                (f"k{n}p", session.perp.account, Side.BUY, 0.01)):
                    o = Order(cid, account, side, qty, session.now_ns(), "kill_flatten", 99, reduce_only=True)
                    o.transition(OrderStatus.SUBMITTED, session.now_ns())
                    venue.submit(o)
                answers.append(await venue.flush())
            return venue, answers, session.journal.rows("alerts")
        finally:
            await session.close()

    venue, answers, alerts = run(scenario())
    (outcome,) = venue.outcomes  # one flatten operation, not one per ask
    assert outcome.status not in ("done", "rebalanced")
    sent = len(placed_orders(emulator)) - before
    assert sent <= 3  # the one attempt: spot sell, refused perp buy, spot bought back
    for later in answers[1:]:
        assert all(a.status == OrderStatus.REJECTED.value and "held back" in a.reason for a in later), later
    assert sum(a["kind"] == "flatten_failed" for a in alerts) == 1
