"""The engine's decision log in the trade log: one mapping for every run
that has no venue of its own to ask (a backtest, a replay, paper trading).

The engine records intents, order changes, fills, funding payments,
transfers, charges, vetoes and alerts; ``EngineLedger.commit`` writes one
step's rows (one market event and what it caused) as a live run's trade log
holds the venues' word: an operation per paired decision, an order row per
engine order under its client id, each fill under the run's venue identity
with the simulator's order and trade ids (``<tag>-<client id>``,
``<client id>-<n>``; a simulated liquidation is an ``ext:`` order, as a
venue's would be), each funding payment keyed by its settlement instant.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from fundarb.core.model import Side
from fundarb.core.orders import OrderStatus
from fundarb.live.journal import Journal, JournalError, VenueTrade

ADJUSTMENTS = ("rebalance", "unwind_naked_leg")  # one leg traded back toward the other: not a close
# within a step: new orders first, then fills (which bring their order rows along), then the other changes
STEP_ORDER = {"intent": 0, "fill": 1, "order": 2, "funding": 3, "transfer": 4, "charge": 5, "veto": 6, "alert": 7}


@attrs.frozen
class LedgerLeg:
    """What the trade log says of one account the engine trades."""

    account: str
    leg: str  # spot | perp
    exchange_id: str
    symbol: str
    venue_id: str  # the venue identity's key
    quote: str
    coin: str = ""  # an inverse perp's settlement coin (BTC): its fees and funding are in it; "" otherwise


class EngineLedger:
    """Writes the engine's decision log to a trade log, a step at a time."""

    def __init__(self, journal: Journal, legs: dict[str, LedgerLeg], config_hash: str, tag: str) -> None:
        self.journal, self.legs, self.h, self.tag = journal, legs, config_hash, tag
        self.rows: list[tuple[str, dict[str, Any]]] = []
        self.ops: dict[tuple[int, str], int] = {}  # (engine pair id, reason) -> operation of this run
        self.op_orders: dict[int, list[str]] = {}
        self.fills_of: dict[str, int] = {}  # client id -> fills recorded (the simulator's trade numbers)
        self.touched: set[int] = set()  # operations whose orders changed in the step in hand

    def record(self, kind: str, row: dict[str, Any]) -> None:
        self.rows.append((kind, row))

    def commit(self, now_ns: int) -> None:
        """Write the step's rows in one transaction; an operation ends when its last order does."""
        rows, self.rows = sorted(self.rows, key=lambda r: STEP_ORDER[r[0]]), []
        self.touched = set()
        with self.journal.tx():
            for kind, row in rows:
                getattr(self, f"_{kind}")(row, now_ns)
            for op in sorted(self.touched):
                self._finish(op, now_ns)
            self.after_step(now_ns)

    def after_step(self, now_ns: int) -> None:
        """What a run keeps with each step (in the step's transaction); nothing here."""

    def _intent(self, row: dict[str, Any], now_ns: int) -> None:
        key = (int(row["pair_id"]), row["reason"])
        op = self.ops.get(key)
        if op is None or all(not self._open(cid) for cid in self.op_orders[op]):
            kind = ("open" if row["reason"] == "entry" else
                    "adjust" if row["reason"] in ADJUSTMENTS or not row["reduce_only"] else "close")
            op = self.journal.begin_operation(now_ns, kind, self.h, float(row["qty"]),
                                              {"reason": row["reason"], "engine_pair": row["pair_id"], self.tag: True})
            self.ops[key], self.op_orders[op] = op, []
        leg = self.legs[row["venue"]]
        seq = int(row["client_id"].rsplit("-", 1)[1])
        order = self.journal.add_order(now_ns, op, self.h, seq, leg.account, leg.exchange_id, leg.symbol,
                                       leg.leg, row["reason"], Side(row["side"]), float(row["qty"]),
                                       bool(row["reduce_only"]))
        if order.client_id != row["client_id"]:
            raise JournalError(f"{self.journal.path}: {self.tag} order {row['client_id']} does not match its trade log "
                               f"row {order.client_id}")
        self.op_orders[op].append(order.client_id)

    def _open(self, cid: str) -> bool:
        row = self.journal.order_row(cid)
        return row is not None and not OrderStatus(row["status"]).terminal

    def _order(self, row: dict[str, Any], now_ns: int) -> None:
        stored = self.journal.order_row(row["client_id"])
        if stored is None:
            return
        self.touched.add(int(stored["op_id"]))
        if stored["status"] == row["status"]:
            return
        order = Journal.order_of(stored)
        order.status, order.status_reason = OrderStatus(row["status"]), row["status_reason"] or ""
        order.ts_updated = max(order.ts_updated, now_ns)  # the trade log's times are its own clock's, as live
        self.journal.save_order(order, self.h, self.tag)

    def _finish(self, op: int, now_ns: int) -> None:
        rows = self.journal.orders(op)
        done = [o for o in self.journal.operations("executing") if o["op_id"] == op]
        if not done or any(not OrderStatus(r["status"]).terminal for r in rows):
            return
        filled = [r["filled_qty"] >= r["qty"] - 1e-12 for r in rows]
        status = "done" if all(filled) else "failed" if not any(r["filled_qty"] for r in rows) else "partial"
        result = "; ".join(f"{r['leg']} {r['side']} {r['filled_qty']:g}/{r['qty']:g} {r['status']}" for r in rows)
        self.journal.finish_operation(op, now_ns, status, result)

    def _fill(self, row: dict[str, Any], now_ns: int) -> None:
        leg = self.legs[row["venue"]]
        cid = row["client_id"]
        side = Side(row["side"])
        if row["liquidation"] or self.journal.order_row(cid) is None:  # the simulator's own (a liquidation)
            vid = f"{self.tag}-{cid}-{row['ts']}"
            trade = self._trade(row, leg, vid, vid, f"ext:{vid}", side)
            self.journal.record_external(trade, leg.leg, leg.symbol, now_ns, self.h)
            return
        n = self.fills_of.get(cid, len(self.journal.fills(cid))) + 1
        self.fills_of[cid] = n
        trade = self._trade(row, leg, f"{self.tag}-{cid}", f"{cid}-{n}", cid, side)
        stored = self.journal.order_row(cid)
        assert stored is not None, f"the order row of {cid} was written before its fills"
        order = Journal.order_of(stored)
        if order.status is OrderStatus.NEW:  # sent and filled within this step: it was sent before it filled
            order.transition(OrderStatus.SUBMITTED, int(row["ts"]))
        self.journal.record_fill(order, trade, now_ns, self.h)
        self.touched.add(int(stored["op_id"]))

    def _trade(self, row: dict[str, Any], leg: LedgerLeg, order_id: str, trade_id: str, cid: str,
               side: Side) -> VenueTrade:
        """The fills row of an engine fill: an inverse perp's in contracts with
        its fee in the coin (valued at the fill's price), as a venue lists it."""
        fee, price = float(row["fee"]), float(row["price"])
        currency, fee_quote = (leg.coin, fee * price) if leg.coin else (leg.quote, fee)
        return VenueTrade(int(row["ts"]), leg.venue_id, leg.exchange_id, order_id, trade_id, leg.account, cid, side,
                          float(row["qty"]), price, fee, currency, fee_quote,
                          row["liquidity"], mid=float(row["mid"]) if "mid" in row else None)

    def _funding(self, row: dict[str, Any], now_ns: int) -> None:
        """A settlement paid, in what it was paid in: an inverse perp's in the coin
        (the engine values it at the settlement's mark)."""
        leg = self.legs[row["venue"]]
        amount = float(row["amount"]) / float(row["mark"]) if leg.coin else float(row["amount"])
        self.journal.add_funding(now_ns, int(row["ts"]), leg.account, leg.symbol, self.h, amount,
                                 float(row["rate"]), f"{self.tag}-{row['ts']}", leg.venue_id, qty=_num(row.get("qty")),
                                 mark=_num(row.get("mark")), mark_source=row.get("mark_source"))

    def _transfer(self, row: dict[str, Any], now_ns: int) -> None:
        self.journal.add_transfer(now_ns, self.h, str(row["transfer_id"]), row["from_venue"], row["to_venue"],
                                  float(row["amount"]), float(row["fee"]), row["status"])

    def _charge(self, row: dict[str, Any], now_ns: int) -> None:
        self.journal.add_charge(now_ns, self.h, row["venue"], float(row["amount"]), row["kind"])

    def _veto(self, row: dict[str, Any], now_ns: int) -> None:
        self.journal.add_veto(now_ns, self.h, row["venue"], row["side"], float(row["qty"]), row["reason"], row["why"])

    def _alert(self, row: dict[str, Any], now_ns: int) -> None:
        self.journal.add_alert(now_ns, row["kind"], row["severity"], self.h, row["message"])


def _num(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
