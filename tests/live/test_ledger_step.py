"""A paper step whose order is sent and filled in the same step (the
simulator's latency is shorter than the gap to the next market event): the
trade log holds the order filled and the operation done, never an order
filled from ``new``."""

from __future__ import annotations

import pytest

from fundarb.live.journal import Journal
from fundarb.live.ledger import EngineLedger, LedgerLeg

H = "3ab5cde02510" + "0" * 52
LEGS = {"bybit:long": LedgerLeg("bybit:long", "spot", "bybit", "BTC/USDT:USDT", "paper-bybit", "USDT"),
        "binanceusdm:perp": LedgerLeg("binanceusdm:perp", "perp", "binanceusdm", "BTC/USDT:USDT", "paper-binanceusdm",
                                      "USDT")}
T = 1_709_600_400_000_000_000


def step(cid: str, venue: str, side: str, price: float, latency: int, reason: str = "exit_rotation") -> list:
    """What the engine records for one order of a step: its intent, the
    simulator's submitted, accepted and filled order rows, and the fill."""
    order = {"client_id": cid, "pair_id": 2, "qty": 1.057, "reason": reason, "side": side, "status_reason": "",
             "venue": venue, "avg_price": 0.0, "fees": 0.0, "filled_qty": 0.0}
    fee = 1.057 * price * 0.0005
    return [("intent", {"client_id": cid, "pair_id": 2, "qty": 1.057, "reason": reason, "reduce_only": True,
                        "side": side, "ts": T, "venue": venue}),
            ("order", {**order, "status": "submitted", "ts": T}),
            ("order", {**order, "status": "accepted", "ts": T + latency}),
            ("order", {**order, "status": "filled", "ts": T + latency, "avg_price": price, "fees": fee,
                       "filled_qty": 1.057}),
            ("fill", {"client_id": cid, "fee": fee, "liquidation": False, "liquidity": "taker", "mid": price,
                      "price": price, "qty": 1.057, "side": side, "ts": T + latency, "venue": venue})]


@pytest.mark.parametrize("interleave", [False, True])
def test_an_order_sent_and_filled_in_one_step_is_recorded_filled_and_its_operation_done(tmp_path, interleave):
    j = Journal(tmp_path / "paper.sqlite")
    ledger = EngineLedger(j, LEGS, H, "paper")
    a = step(f"fa{H[:12]}-3", "bybit:long", "sell", 68_294.13, 55_575_771)
    b = step(f"fa{H[:12]}-4", "binanceusdm:perp", "buy", 68_298.67, 47_831_629)
    rows = [x for pair in zip(a, b) for x in pair] if interleave else a + b
    ledger.rows = rows
    ledger.commit(T + 10**9)
    orders = {r["client_id"]: r for r in j.rows("orders")}
    assert {cid: (r["status"], r["filled_qty"]) for cid, r in orders.items()} == {
        f"fa{H[:12]}-3": ("filled", 1.057), f"fa{H[:12]}-4": ("filled", 1.057)}
    assert [(o["kind"], o["status"]) for o in j.rows("operations")] == [("close", "done")]
    assert j.position("bybit:long") == pytest.approx(-1.057) and j.position("binanceusdm:perp") == pytest.approx(1.057)
    # the order's history says it was sent before it filled
    events = [e["status"] for e in j.rows("order_events") if e["client_id"] == f"fa{H[:12]}-4"]
    assert events[0] == "new" and events[-1] == "filled" and "submitted" in events
    j.close()
