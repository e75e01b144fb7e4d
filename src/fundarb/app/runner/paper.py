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
from fundarb.core.orders import OrderStatus
from fundarb.live.execution.holdings import holdings
from fundarb.live.execution.session import LiveSession
from fundarb.live.journal import PAPER_ACCOUNTS_KEY, PAPER_HELD_KEY, Journal, JournalError
from fundarb.live.ledger import EngineLedger, LedgerLeg
from fundarb.sim import SimExchange

ACCOUNT_FIELDS = ("cash", "qty", "entry", "fees", "funding", "realized", "coin", "fees_coin", "funding_coin")
STOPPED = "the paper run stopped before the simulator ended it"
PAPER_KINDS = ("intent", "order", "fill", "funding")  # what a paper step writes (alerts go through the session)


class PaperLedger(EngineLedger):
    """Buffers the engine's decision log of one step and writes it to the
    trade log with the simulator's accounts, in one transaction."""

    def __init__(self, session: LiveSession, sim: SimExchange) -> None:
        legs = {leg.account: LedgerLeg(leg.account, leg.leg, leg.exchange.id, leg.symbol, leg.venue_id, leg.quote,
                                       leg.settle if leg.face else "")
                for leg in session.legs}
        super().__init__(session.journal, legs, session.config_hash, "paper")
        self.session, self.sim = session, sim

    # --- the decision log ------------------------------------------------------------
    def record(self, kind: str, row: dict[str, Any]) -> None:
        if kind in PAPER_KINDS:
            self.rows.append((kind, row))

    def after_step(self, now_ns: int) -> None:
        self.journal.set_state(PAPER_ACCOUNTS_KEY, json.dumps(self._accounts(), sort_keys=True), now_ns)

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
            accounts[name] = {f: float(fields.get(f, 0.0)) for f in ACCOUNT_FIELDS}  # older runs: no coin fields
        for t in saved.get("in_flight", []):
            accounts[t["to"]]["cash"] += t["amount"]
        for name, fields in accounts.items():
            _set(self.sim.accounts[name].acct, fields)
        gaps = sim_gaps(self.journal, self.session, self.sim)  # the position is what the trade log's fills hold
        if gaps:
            raise JournalError(f"{self.journal.path}: the paper accounts and the fills disagree ({'; '.join(gaps)}); "
                               "the paper trade log was changed outside fundarb")
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


def sim_gaps(journal: Journal, session: LiveSession, sim: SimExchange, tol_btc: float = 1e-9) -> list[str]:
    """Where the simulator's accounts and the trade log disagree (none: they
    hold the same): the spot leg's BTC (coin-margined, with what the short
    settled in, as the simulator sweeps it there) and the perp in its unit
    (an inverse perp's whole contracts, up to float dust). A carry on BTC
    held started with BTC no fill brought (``PAPER_HELD_KEY``): it counts."""
    held = holdings(journal, session.spot, session.perp)
    spot, perp = sim.accounts[session.spot.account].acct, sim.accounts[session.perp.account].acct
    out = []
    btc = held.spot_btc + float(journal.get_state(PAPER_HELD_KEY) or 0.0)
    if abs(btc - spot.qty) > tol_btc:
        out.append(f"{spot.venue}: {spot.qty:+.8g} BTC by the simulator, {btc:+.8g} by the trade log")
    unit, tol = ("contracts", 1e-6) if perp.contract_size else ("BTC", tol_btc)
    if abs(held.perp_units - perp.units) > tol:
        out.append(f"{perp.venue}: {perp.units:+.8g} {unit} by the simulator, {held.perp_units:+.8g} by the trade log")
    return out


def _set(acct: VenueAccount, fields: dict[str, float]) -> None:
    for f in ACCOUNT_FIELDS:
        setattr(acct, f, float(fields[f]))
