"""The engine's orders on real venues: the `Venue` interface over a live session.

The engine submits orders while it handles an event; ``flush`` then executes
them and returns the venue's answers (fills, order updates, transfers) as
core events for the engine, in order. Orders go out only through the paired
execution of ``fundarb.live.execution.paired`` (journal first, client ids from
the journal's sequence, legs completed or unwound within the hedge timeout):

- a spot order and a perp order of one decision (entry, exit, margin cut,
  kill-switch flatten) are ONE paired operation (``open`` or ``close``);
- a lone order (a rebalance of the larger leg, the unwind of a naked leg)
  is an ``adjust`` operation of one order; one the venue refused is not
  sent again for a minute (the engine asks on every tick while it stands).

The engine's own client ids never reach a venue: each engine order is
answered from the operation's first order on its leg (its fills carry the
engine's id), and completions or unwinds the pair logic added come as fills
under their journal ids, which the engine books without an order of its own.
A spot buy whose fee the venue took in BTC is booked net of it (the BTC it
left) with the fee valued in USDT, so the book holds what the venue holds;
the remainder a close leaves under the venue's lot is booked as sold with it
(``dust``: it stays on the account, the carry is flat).

Transfers: between two wallets of one venue that has a transfer type for them
(``fundarb.venues``: Binance spot and USD-M) through the venue's transfer
call (they arrive at once); between other venues there is no
safe automatic path (a withdrawal), so the runner raises a critical alert
asking for the transfer and answers the engine, after the configured transfer
delay, that it was not made, so it asks again while the need stands.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs

from fundarb.core.model import NS_PER_SECOND, Fill, Liquidity, OrderUpdate, Side, TransferDone, TransferRejected, TransferRequest
from fundarb.core.orders import Order, OrderStatus
from fundarb.live.execution.holdings import holdings
from fundarb.live.execution.orders import superseded
from fundarb.live.execution.paired import PairOutcome, execute_adjust, execute_pair
from fundarb.live.execution.session import LiveSession
from fundarb.live.execution.transfers import (
    TransferFailed,
    covered_by_holding,
    hold_for_open,
    margin_out,
    move,
    restore_margin,
)

S = OrderStatus
RETRY_FAILED_ADJUST_S = 60.0


@attrs.define
class LiveVenue:
    session: LiveSession
    now: Callable[[], int]  # the runner's clock (venue time of the last event)
    pending: list[Order] = attrs.field(factory=list)
    transfers: list[TransferRequest] = attrs.field(factory=list)
    waiting_transfers: list[tuple[int, TransferRejected]] = attrs.field(factory=list)
    outcomes: list[PairOutcome] = attrs.field(factory=list)
    held_back: dict[tuple, float] = attrs.field(factory=dict)  # a failed lone order -> not again before (monotonic s)
    failed_flatten: tuple[float, float] | None = None  # positions when a kill flatten failed: none again until they move
    # spot BTC closed carries left under what the venue trades (in the trade log, not the book); a carry on
    # BTC held: minus the holding no fill brought (in the book, not the trade log)
    dust: float = 0.0
    # the last trade log fill the book has: external trades learned later are booked from here
    fills_seen: int = attrs.field(default=-1)

    def __attrs_post_init__(self) -> None:
        if self.fills_seen < 0:  # the book is built from the trade log as it is now
            self.fills_seen = self.session.journal.last_fill_seq()

    def external_fills(self) -> list[Fill]:
        """Trades on the accounts that fundarb did not send and the trade log
        has learned since (``ext:`` orders: a liquidation, auto-deleveraging,
        a manual trade), as fills for the engine's book: the book holds what
        the venue holds."""
        j = self.session.journal
        rows = j.external_fills_after(self.fills_seen)
        self.fills_seen = max(self.fills_seen, j.last_fill_seq())
        return [_fill(r, r["client_id"], self.now(), self._leg(r["account"])) for r in rows]

    def _leg(self, account: str) -> Any:
        return self.session.spot if account == self.session.spot.account else self.session.perp

    # --- Venue interface ----------------------------------------------------------
    def events(self) -> Iterator[Any]:
        return iter(())  # the runner pushes live events into the engine itself

    def submit(self, order: Order) -> None:
        self.pending.append(order)

    def cancel(self, client_id: str) -> None:
        pass  # market orders: the leg trader cancels what is left at the order timeout

    def request_transfer(self, request: TransferRequest) -> None:
        self.transfers.append(request)

    @property
    def busy(self) -> bool:
        return bool(self.pending or self.transfers)

    # --- execution ----------------------------------------------------------------
    async def flush(self) -> list[Any]:
        """Execute what the engine asked for; the answers, in order."""
        out: list[Any] = []
        orders, self.pending = self.pending, []
        for group in _groups(orders, self.session.spot.account, self.session.perp.account):
            out += await self._execute(group)
        requests, self.transfers = self.transfers, []
        for r in requests:
            out += await self._transfer(r)
        out += self.due_transfers()
        return out

    def due_transfers(self) -> list[Any]:
        now = self.now()
        due = [r for t, r in self.waiting_transfers if t <= now]
        self.waiting_transfers = [(t, r) for t, r in self.waiting_transfers if t > now]
        return [attrs.evolve(r, ts=now) for r in due]

    async def _execute(self, group: list[Order]) -> list[Any]:
        s = self.session
        spot = next((o for o in group if o.venue == s.spot.account), None)
        perp = next((o for o in group if o.venue == s.perp.account), None)
        opening = spot is not None and spot.side is Side.BUY and not spot.reduce_only
        kind = ("open" if opening else "close") if spot is not None and perp is not None else "adjust"
        if s.cfg.keeps_btc and perp is not None and perp.side is Side.SELL and not perp.reduce_only:
            return await self._open_on_holding(spot, perp, group)
        plan = {"engine_orders": [o.client_id for o in group], "reason": group[0].reason,
                "prices": {}}
        if kind == "adjust":
            key = tuple((o.venue, o.side) for o in group)
            if self.held_back.get(key, 0.0) > time.monotonic():
                return [OrderUpdate(self.now(), o.venue, o.client_id, S.REJECTED.value,
                                    "held back: the same order failed less than a minute ago") for o in group]
            outcome = await execute_adjust(s, [("spot" if o is spot else "perp", o.side, o.qty) for o in group], plan)
            if outcome.status == "failed":  # the engine asks again on every tick: not the venue
                self.held_back[key] = time.monotonic() + RETRY_FAILED_ADJUST_S
        else:
            flatten = group[0].reason == "kill_flatten"
            if flatten and self._flatten_held_back():
                return [OrderUpdate(self.now(), o.venue, o.client_id, S.REJECTED.value,
                                    "held back: a flatten failed in this halt; waiting for the venue's position "
                                    "to change or for a human to resume") for o in group]
            assert spot is not None and perp is not None  # a pair: not an adjust
            perp_qty, spot_qty = perp.qty, spot.qty
            if kind == "close":  # sized from what the venue holds (the trade log learns what others traded)
                perp_qty, spot_qty = self._held(perp_qty, spot_qty)
                if perp_qty <= 0 and spot_qty <= 0:
                    return [OrderUpdate(self.now(), o.venue, o.client_id, S.REJECTED.value,
                                        "nothing of it is held on the venue") for o in group]
                if s.perp.face:  # coin-margined: what the spot leg sells comes back from the short's wallet
                    await margin_out(s, spot_qty)
            outcome = await execute_pair(s, kind, perp_qty, plan, spot_qty=spot_qty)
            if kind == "open" and s.perp.face:
                await restore_margin(s)  # the bought BTC becomes the short's margin
            if flatten and outcome.status not in ("done", "rebalanced"):
                self.failed_flatten = self._positions()
                s.alert("flatten_failed", f"the kill switch's flatten (operation {outcome.op_id}) ended "
                        f"{outcome.status}: no other flatten is sent in this halt until the venue's position "
                        "changes or a human resumes", "critical")
        self.outcomes.append(outcome)
        return self._answers(outcome, {"spot": spot, "perp": perp})

    async def _open_on_holding(self, spot: Order | None, perp: Order, group: list[Order]) -> list[Any]:
        """An entry of a carry on BTC held: the short of ``perp``, on the
        holding (moved into its wallet first) and whatever ``spot`` buys of
        what it lacks, as one ``open`` operation; the bought BTC joins the
        short's margin after it."""
        s = self.session
        covered = await covered_by_holding(s, perp.qty)
        await hold_for_open(s, covered)
        plan = {"engine_orders": [o.client_id for o in group], "reason": perp.reason, "prices": {},
                "covered": covered}
        outcome = await execute_pair(s, "open", perp.qty, plan, spot_qty=spot.qty if spot is not None else 0.0)
        await restore_margin(s)
        self.outcomes.append(outcome)
        return self._answers(outcome, {"spot": spot, "perp": perp})

    def _held(self, perp_qty: float, spot_qty: float) -> tuple[float, float]:
        """A close's (perp, spot) sizes no larger than what the venue holds by
        the trade log: a perp short closed outside fundarb (a liquidation, a
        manual trade) is not bought back, only the spot is sold."""
        s = self.session
        spot_held, perp_held = self._positions()
        perp = min(perp_qty, s.perp.rules.floor_btc(max(-perp_held, 0.0)))
        spot = min(spot_qty, max(spot_held - self.dust, 0.0))
        return perp, spot

    def _positions(self) -> tuple[float, float]:
        """(the carry's spot BTC, the perp in its unit) by the trade log."""
        held = holdings(self.session.journal, self.session.spot, self.session.perp)
        return held.spot_btc, held.perp_units

    def _flatten_held_back(self) -> bool:
        """At most one flatten attempt per halt: after one failed, another only
        once the position changed (the venue or a human moved it) or the block
        was lifted (a human resumed)."""
        if self.failed_flatten is None:
            return False
        if self.session.journal.blocked() is None or self._positions() != self.failed_flatten:
            self.failed_flatten = None
            return False
        return True

    def _answers(self, outcome: PairOutcome, engine: dict[str, Order | None]) -> list[Any]:
        """Fills of the operation (the engine's id on its own orders), then
        each engine order's final state."""
        s, journal, now = self.session, self.session.journal, self.now()
        rows = journal.orders(outcome.op_id)
        first = {}
        for r in rows:
            if r["role"] in ("entry", "exit") and r["leg"] not in first and not superseded(r):
                first[r["leg"]] = r["client_id"]
        out: list[Any] = []
        for r in rows:
            leg = s.spot if r["leg"] == "spot" else s.perp
            mine = engine.get(r["leg"])
            cid = mine.client_id if mine is not None and first.get(r["leg"]) == r["client_id"] else r["client_id"]
            for f in journal.fills(r["client_id"]):
                out.append(_fill(f, cid, now, leg))
        self._write_off_dust(out, journal)
        for name, order in engine.items():
            if order is None:
                continue
            row = next((r for r in rows if r["client_id"] == first.get(name)), None)
            filled = sum(e.qty for e in out if type(e) is Fill and e.client_id == order.client_id)
            if filled < order.qty - 1e-9 * order.qty - 1e-12:  # else its fills already made it FILLED
                out.append(_final(order, row, now))
        return out

    def _write_off_dust(self, fills: list[Any], journal: Any) -> None:
        """A close that leaves the spot leg a remainder the venue will not
        trade (under its lot or minimum order; a BTC fee leaves one) ends the
        carry all the same: the remainder is booked as sold with the last
        spot sell, so the engine sees a flat carry, not a naked leg; it stays
        on the account and is counted in ``dust``."""
        s = self.session
        if s.perp.face:  # coin-margined: the core's exit leaves its margin of BTC on purpose (the next carry's)
            return
        held = holdings(journal, s.spot, s.perp)
        left = held.spot_btc - self.dust
        sells = [i for i, f in enumerate(fills) if type(f) is Fill and f.venue == s.spot.account and f.side is Side.SELL]
        remainder = dust_of(s.spot.rules, left, held.perp_units, fills[sells[-1]].price if sells else 0.0)
        if remainder and sells:
            i = sells[-1]
            fills[i] = attrs.evolve(fills[i], qty=fills[i].qty + remainder)
            self.dust += remainder

    async def _transfer(self, r: TransferRequest) -> list[Any]:
        s = self.session
        src = s.spot if r.from_venue == s.spot.account else s.perp
        dst = s.perp if src is s.spot else s.spot
        now = self.now()
        try:
            venue_id = await move(s, src, dst, src.quote, round(r.amount, 2))
            return [TransferDone(now, venue_id, r.from_venue, r.to_venue, r.amount, 0.0)]
        except TransferFailed as exc:
            why = str(exc)
        # one alert, then the engine hears "not made" after the transfer delay and
        # asks again if the need still stands (not on every tick meanwhile)
        s.alert("transfer_needed", f"move {r.amount:,.2f} {src.quote} from {r.from_venue} to {r.to_venue} by hand: "
                f"{why}", "critical")
        delay = int(s.cfg.transfer.delay_minutes * 60 * NS_PER_SECOND)
        self.waiting_transfers.append((now + delay, TransferRejected(now, r.from_venue, r.to_venue, r.amount, why)))
        return []


def dust_of(rules: Any, spot_qty: float, perp_qty: float, price: float) -> float:
    """``spot_qty`` when the perp leg is flat and the venue would not trade
    that much spot (under its lot or minimum order): what a closed carry
    leaves behind, not a leg. Else 0."""
    if abs(perp_qty) > 1e-12 or abs(spot_qty) < 1e-12 or not price > 0:
        return 0.0
    sellable = rules.floor_btc(abs(spot_qty))
    return spot_qty if sellable == 0 or rules.problems(sellable, price) else 0.0


def _groups(orders: list[Order], spot: str, perp: str) -> list[list[Order]]:
    """One spot and one perp order of one decision form a pair; the rest go alone."""
    out: list[list[Order]] = []
    rest = list(orders)
    while rest:
        o = rest.pop(0)
        other = spot if o.venue == perp else perp
        mate = next((m for m in rest if m.venue == other and m.pair_id == o.pair_id and m.reason == o.reason), None)
        if mate is not None:
            rest.remove(mate)
            out.append([o, mate])
        else:
            out.append([o])
    return out


def _fill(row: Any, client_id: str, now: int, leg: Any) -> Fill:
    """A trade log fill as the engine books it: a spot buy net of a fee the
    venue kept in BTC (fee in the quote); an inverse perp's contracts with
    its fee in the coin it settles in, as the core's inverse account takes it."""
    qty, price = float(row["qty"]), float(row["price"])
    fee = float(row["fee_quote"]) if row["fee_quote"] is not None else 0.0
    side = Side(row["side"])
    if leg.face:
        fee = float(row["fee"]) if row["fee_currency"] == leg.base else 0.0
    elif row["fee_currency"] == leg.base and side is Side.BUY:
        qty -= float(row["fee"])  # the venue kept that much of the BTC bought
    return Fill(now, row["account"], client_id, side, qty, price, price, fee,
                Liquidity.MAKER if row["liquidity"] == "maker" else Liquidity.TAKER)


def _final(order: Order, row: Any, now: int) -> OrderUpdate:
    if row is None:
        return OrderUpdate(now, order.venue, order.client_id, S.REJECTED.value, "not sent: nothing to trade on this leg")
    status = S(row["status"])
    if status is S.CANCELED:
        status = S.EXPIRED  # market orders: what was cancelled is what did not fill
    if status in (S.FILLED, S.EXPIRED) and row["filled_qty"] == 0:
        status = S.EXPIRED
    if not status.terminal:
        status = S.EXPIRED  # left open past the hedge timeout: the pair logic reported it
    return OrderUpdate(now, order.venue, order.client_id, status.value, row["status_reason"] or "")
