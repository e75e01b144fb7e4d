"""Paper trading recorded like live: the simulator's orders, fills and
funding in the trade log, under the live schema.

A paper run's venue is the discrete-event simulator fed by the venues' live
market data. Its word is what the simulator filled and paid, and the trade
log holds it as a live run's holds the venues': an operation per paired
decision, an order row per engine order (its client id, written the step it
is sent), each fill under the paper venue identity (``VenueIdentity.as_paper``)
with the simulator's order and trade ids, each funding payment keyed by its
settlement instant. Alerts and heartbeats go there through the session as
live.

Each engine step (one market event and what it caused) is written in one
transaction together with the simulator's accounts (cash, position, entry
price, fees, funding, transfers on their way), so a paper runner killed at
any instant restarts from the last step whole: its position is what the
trade log's fills hold, its cash what the accounts say. An order the
simulator was still working when the process stopped died with it; it is
ended in the trade log as canceled at the restart.
"""

from __future__ import annotations

import json
from typing import Any

from fundarb.core.book import VenueAccount
from fundarb.core.model import Side
from fundarb.core.orders import OrderStatus
from fundarb.live.execution.session import LiveSession
from fundarb.live.journal import PAPER_ACCOUNTS_KEY, Journal, JournalError, VenueTrade
from fundarb.sim import SimExchange

ACCOUNT_FIELDS = ("cash", "qty", "entry", "fees", "funding", "realized")
STOPPED = "the paper run stopped before the simulator ended it"
ADJUSTMENTS = ("rebalance", "unwind_naked_leg")  # one leg traded back toward the other: not a close
STEP_ORDER = {"intent": 0, "fill": 1, "order": 2, "funding": 3}


class PaperLedger:
    """Buffers the engine's decision log of one step and writes it to the
    trade log with the simulator's accounts, in one transaction."""

    def __init__(self, session: LiveSession, sim: SimExchange) -> None:
        self.session, self.sim = session, sim
        self.journal: Journal = session.journal
        self.h = session.config_hash
        self.rows: list[tuple[str, dict[str, Any]]] = []
        self.ops: dict[tuple[int, str], int] = {}  # (engine pair id, reason) -> operation of this run
        self.op_orders: dict[int, list[str]] = {}
        self.fills_of: dict[str, int] = {}  # client id -> fills recorded (the simulator's trade numbers)
        self.legs = {leg.account: leg for leg in session.legs}
        self.touched: set[int] = set()  # operations whose orders changed in the step in hand

    # --- the decision log ------------------------------------------------------------
    def record(self, kind: str, row: dict[str, Any]) -> None:
        if kind in ("intent", "order", "fill", "funding"):
            self.rows.append((kind, row))

    def commit(self, now_ns: int) -> None:
        """Write the step's rows and the simulator's accounts, all or nothing:
        new orders first, then fills (which bring their order rows along), then
        the other changes of state, then funding; an operation ends when its
        last order does."""
        rows, self.rows = sorted(self.rows, key=lambda r: STEP_ORDER[r[0]]), []
        self.touched = set()
        with self.journal.tx():
            for kind, row in rows:
                getattr(self, f"_{kind}")(row, now_ns)
            for op in sorted(self.touched):
                self._finish(op, now_ns)
            self.journal.set_state(PAPER_ACCOUNTS_KEY, json.dumps(self._accounts(), sort_keys=True), now_ns)

    def _intent(self, row: dict[str, Any], now_ns: int) -> None:
        key = (int(row["pair_id"]), row["reason"])
        op = self.ops.get(key)
        if op is None or all(not self._open(cid) for cid in self.op_orders[op]):
            kind = ("open" if row["reason"] == "entry" else
                    "adjust" if row["reason"] in ADJUSTMENTS or not row["reduce_only"] else "close")
            op = self.journal.begin_operation(now_ns, kind, self.h, float(row["qty"]),
                                              {"reason": row["reason"], "engine_pair": row["pair_id"], "paper": True})
            self.ops[key], self.op_orders[op] = op, []
        leg = self.legs[row["venue"]]
        seq = int(row["client_id"].rsplit("-", 1)[1])
        order = self.journal.add_order(now_ns, op, self.h, seq, leg.account, leg.exchange.id, leg.symbol,
                                       leg.leg, row["reason"], Side(row["side"]), float(row["qty"]),
                                       bool(row["reduce_only"]))
        if order.client_id != row["client_id"]:
            raise JournalError(f"{self.journal.path}: paper order {row['client_id']} does not match its trade log "
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
        self.journal.save_order(order, self.h, "paper")

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
            vid = f"paper-{cid}-{row['ts']}"
            trade = self._trade(row, leg, vid, vid, f"ext:{vid}", side)
            self.journal.record_external(trade, leg.leg, leg.symbol, now_ns, self.h)
            return
        n = self.fills_of.get(cid, len(self.journal.fills(cid))) + 1
        self.fills_of[cid] = n
        trade = self._trade(row, leg, f"paper-{cid}", f"{cid}-{n}", cid, side)
        stored = self.journal.order_row(cid)
        assert stored is not None, f"the order row of {cid} was written before its fills"
        self.journal.record_fill(Journal.order_of(stored), trade, now_ns, self.h)
        self.touched.add(int(stored["op_id"]))

    def _trade(self, row: dict[str, Any], leg: Any, order_id: str, trade_id: str, cid: str, side: Side) -> VenueTrade:
        return VenueTrade(int(row["ts"]), leg.venue_id, leg.exchange.id, order_id, trade_id, leg.account, cid, side,
                          float(row["qty"]), float(row["price"]), float(row["fee"]), leg.quote, float(row["fee"]),
                          row["liquidity"])

    def _funding(self, row: dict[str, Any], now_ns: int) -> None:
        leg = self.legs[row["venue"]]
        self.journal.add_funding(now_ns, int(row["ts"]), leg.account, leg.symbol, self.h, float(row["amount"]),
                                 float(row["rate"]), f"paper-{row['ts']}", leg.venue_id)

    # --- the simulator's accounts ----------------------------------------------------
    def _accounts(self) -> dict[str, Any]:
        out: dict[str, Any] = {"accounts": {}, "in_flight": []}
        for name, sim in self.sim.accounts.items():
            out["accounts"][name] = {f: getattr(sim.acct, f) for f in ACCOUNT_FIELDS}
        for t in self.sim.transfers_in_flight():  # transfers on their way land at the restart
            out["in_flight"].append({"to": t.to_venue, "amount": t.amount - t.fee})
        return out

    def restore(self, now_ns: int) -> dict[str, dict[str, float]] | None:
        """Put the last recorded step's accounts back into the simulator, end
        the orders that died with the last process, and give those accounts
        (``ACCOUNT_FIELDS`` by account name, transfers in flight landed) for
        the book. None for a new paper trade log."""
        text = self.journal.get_state(PAPER_ACCOUNTS_KEY)
        self._end_stopped_orders(now_ns)
        if text is None:
            if self.journal.count("fills"):
                raise JournalError(f"{self.journal.path}: the paper trade log has fills but not the simulator's "
                                   "accounts; it was not written by a paper run of this fundarb")
            return None
        saved = json.loads(text)
        accounts: dict[str, dict[str, float]] = {}
        for name, fields in saved["accounts"].items():
            if name not in self.sim.accounts:
                raise JournalError(f"{self.journal.path}: the paper trade log holds account {name}, this config "
                                   f"trades {sorted(self.sim.accounts)}; use another trade log (--journal)")
            accounts[name] = {f: float(fields[f]) for f in ACCOUNT_FIELDS}
        for t in saved.get("in_flight", []):
            accounts[t["to"]]["cash"] += t["amount"]
        for name, fields in accounts.items():
            _set(self.sim.accounts[name].acct, fields)
        for name, sim in self.sim.accounts.items():  # the position is what the trade log's fills hold
            held = self.journal.position(name)
            if abs(held - sim.acct.qty) > 1e-9:
                raise JournalError(f"{self.journal.path}: {name} holds {sim.acct.qty:+.8g} BTC by the paper accounts "
                                   f"and {held:+.8g} by the fills; the paper trade log was changed outside fundarb")
        return accounts

    def _end_stopped_orders(self, now_ns: int) -> None:
        self.touched = set()
        with self.journal.tx():
            for row in self.journal.orders(open_only=True):
                order = Journal.order_of(row)
                order.status, order.status_reason, order.ts_updated = OrderStatus.CANCELED, STOPPED, now_ns
                self.journal.save_order(order, self.h, "paper run restarted")
                self.touched.add(int(row["op_id"]))
            for op in sorted(self.touched):
                self._finish(op, now_ns)


def _set(acct: VenueAccount, fields: dict[str, float]) -> None:
    for f in ACCOUNT_FIELDS:
        setattr(acct, f, float(fields[f]))
