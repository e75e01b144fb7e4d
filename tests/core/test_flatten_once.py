"""A flatten is one attempt: when the venue refuses the perp leg's close (it
already liquidated the perp, or it was closed outside fundarb), the monitor
alerts once and waits instead of re-sending a paired close on every event."""

from __future__ import annotations

from fundarb.core.book import PositionBook
from fundarb.core.engine import Engine
from fundarb.core.model import Fill, MarkPrice, OrderUpdate, Quote, Side
from fundarb.core.risk import NO_ACTION, RiskLimits, RiskMonitor, VenueCosts
from fundarb.data.margin_tiers import shipped_rule
from fundarb.testkit.builders import PERP, SPOT, QuietStrategy, make_fill

MID = 60_000.0
COSTS = VenueCosts(spot_taker_fee=0.001, perp_taker_fee=0.0005, slippage_allowance=0.001,
                   margin=shipped_rule("binanceusdm", "BTC/USDT:USDT"), transfer_fee=1.0)


def hedged() -> PositionBook:
    b = PositionBook.open(SPOT, PERP, 65_000.0, 35_000.0)
    b.apply_fill(make_fill(SPOT, Side.BUY, 1.0, MID))
    b.apply_fill(make_fill(PERP, Side.SELL, 1.0, MID))
    return b


def test_monitor_makes_one_attempt_then_alerts_once_and_waits():
    b = hedged()
    m = RiskMonitor(RiskLimits(), COSTS)
    m.kill.halt("reconciliation mismatch", 0)
    first = m.evaluate(b, 1, False, False)
    assert {(i.venue, i.qty) for i in first.intents} == {(SPOT, 1.0), (PERP, 1.0)}
    assert m.evaluate(b, 2, True, False) is NO_ACTION  # orders out
    b.apply_fill(make_fill(SPOT, Side.SELL, 1.0, MID))  # the spot sold, the perp buy refused
    ended = m.evaluate(b, 3, False, False)
    assert ended.intents == () and [a.kind for a in ended.alerts] == ["flatten_failed"]
    assert ended.alerts[0].severity == "critical" and "resume" in ended.alerts[0].message
    for t in range(4, 200):
        assert m.evaluate(b, t, False, False) is NO_ACTION
    # reconciliation corrects the book from the venue (perp liquidated): the book is flat
    b.apply_fill(make_fill(PERP, Side.BUY, 1.0, MID))
    assert m.evaluate(b, 300, False, False).intents == ()


def test_a_change_of_position_allows_one_new_attempt_on_what_is_held():
    b = hedged()
    m = RiskMonitor(RiskLimits(), COSTS)
    m.kill.halt("manual", 0)
    m.evaluate(b, 1, False, False)
    m.evaluate(b, 2, False, False)  # nothing filled: stuck on spot +1, perp -1
    assert m.evaluate(b, 3, False, False) is NO_ACTION
    b.apply_fill(make_fill(PERP, Side.BUY, 1.0, MID))  # the venue's position learned: perp gone
    again = m.evaluate(b, 4, False, False)
    assert [(i.venue, i.side, i.qty) for i in again.intents] == [(SPOT, Side.SELL, 1.0)]  # no pair
    assert m.evaluate(b, 5, False, False).alerts  # that attempt failed too: one alert
    assert m.evaluate(b, 6, False, False) is NO_ACTION


def test_resume_allows_a_new_attempt():
    b = hedged()
    m = RiskMonitor(RiskLimits(), COSTS)
    m.kill.halt("manual", 0)
    m.evaluate(b, 1, False, False)
    m.evaluate(b, 2, False, False)
    m.kill.resume()
    m.evaluate(b, 3, False, False)
    m.kill.halt("again", 4)
    assert len(m.evaluate(b, 5, False, False).intents) == 2


class RefusingPerpVenue:
    """Fills spot orders at once at MID with a 0.1% fee; refuses every perp
    reduce-only order (-2022: the venue holds no position to reduce)."""

    def __init__(self) -> None:
        self.queue: list = []
        self.sent: list = []
        self.engine: Engine | None = None

    def submit(self, order) -> None:
        self.sent.append(order)
        ts = order.ts_updated
        if order.venue == PERP:
            self.queue.append(OrderUpdate(ts, PERP, order.client_id, "rejected", "-2022 ReduceOnly Order is rejected"))
        else:
            self.queue.append(Fill(ts, SPOT, order.client_id, order.side, order.qty, MID, MID, order.qty * MID * 0.001))

    def cancel(self, client_id: str) -> None:
        pass

    def request_transfer(self, request) -> None:
        pass

    def feed(self, event=None) -> None:
        if event is not None:
            self.engine.on_event(event)
        while self.queue:
            self.engine.on_event(self.queue.pop(0))


def test_engine_refused_perp_close_sends_one_flatten_and_one_alert_over_many_events():
    venue = RefusingPerpVenue()
    book = hedged()
    engine = Engine(venue, book, QuietStrategy(), RiskMonitor(RiskLimits(), COSTS), "cfghash")
    venue.engine = engine
    engine.halt("reconciliation mismatch: perp leg", 10, flatten=False)
    for k in range(2, 300):
        ts = 10 * k
        venue.feed(MarkPrice(ts, PERP, MID) if k % 2 else Quote(ts, SPOT, MID, MID, 1.0, 1.0))
        engine.halt("reconciliation mismatch: perp leg", ts + 1, flatten=True)  # the runner asks again each pass
        venue.feed()
    kinds = [a.kind for a in engine.alerts]
    assert kinds.count("flatten_failed") == 1 and kinds.count("kill_switch") == 1
    assert len([o for o in venue.sent if o.venue == SPOT]) == 1  # the spot sold once, never bought back
    assert len([o for o in venue.sent if o.venue == PERP]) == 1
    assert book.fees <= 1.0 * MID * 0.001 + 1e-6
