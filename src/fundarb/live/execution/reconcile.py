"""Reconciliation: the journal against what the venues say.

On start (``trigger="start"``) it first finishes what a stopped process left
behind: operations still ``executing`` (``paired.recover``) and orders whose
fate the journal does not know. Every run then compares:

- open orders on the venues carrying a fundarb client id the journal does
  not hold open (an order we lost track of);
- the venues' recent trades of our orders (fills the journal missed are
  added, each once, by the venue's trade id) and the perp's funding payments
  (added to the trade log, each once);
- positions: the perp position against the journal's fills (the perp account
  is the carry's alone, so they must agree), and the spot BTC balance: what
  is not the carry's is recorded on the first run and must not change
  afterwards (``accept`` records a new value, with a reason, when the user
  moved BTC on purpose); a perp/perp carry's long leg is a perp position on
  its own venue (``LiveLeg.is_perp``), held to the journal like the short's,
  and its funding payments are learned like the short's;
- the carry's delta drift against ``risk.max_drift``.

A venue account may have held another pair of a rotating perp/perp carry
(``fundarb trade rotate``) under another account name of the trade log (one
venue identity, two names: ``bybit:long`` then ``bybit:perp``): the trades
and payments of that name are its own, never learned again under the new
one, and the venue's position is the sum of both names' fills.

Any mismatch is journaled, alerted and blocks new entries; a later run that
finds everything in agreement lifts the block and says so.
"""

from __future__ import annotations

import asyncio
import logging

import attrs

from fundarb.core.book import drift_of, uncovered_of
from fundarb.core.orders import OrderStatus
from fundarb.live.execution.holdings import holdings, outside_key
from fundarb.live.execution.orders import LiveLeg, VenueDisagrees
from fundarb.live.execution.paired import BLOCK_KEY, NEEDS_RECOVERY, naked_gap, recover, resolve_unknown
from fundarb.live.execution.preflight import balance_of, perp_position
from fundarb.live.execution.rotation import recover_rotations
from fundarb.live.execution.session import LiveSession
from fundarb.live.execution.transfers import coin_wallet, restore_margin
from fundarb.live.journal import KILL_SWITCH_PREFIX, Journal
from fundarb.support.scrub import describe, scrub, scrub_logger
from fundarb.support.waits import stopped_within
from fundarb.venues import quirks_or_plain

log = logging.getLogger(__name__)  # the runner's JSON log when it runs (app.runner.logs)
scrub_logger(log)  # whatever handler takes its records gets them scrubbed
CLIENT_PREFIX = "fa"  # core.orders.client_order_id: "fa<config hash[:12]>-<seq>"
QTY_TOL = 1e-8


@attrs.frozen
class Reconciliation:
    ts: int
    trigger: str
    mismatches: tuple[str, ...]
    notes: tuple[str, ...]
    venue_spot_btc: float
    venue_perp_qty: float
    journal_spot: float
    journal_perp: float
    fills_added: int
    funding_added: int
    venue_perp_units: float = 0.0  # the venue's perp in its unit (contracts of an inverse perp)
    journal_perp_units: float = 0.0
    keeps_btc: bool = False  # a carry on BTC held: the venue's BTC is its spot leg

    @property
    def ok(self) -> bool:
        return not self.mismatches

    @property
    def drift(self) -> float:
        """The carry's delta drift: between the legs by the journal; on BTC
        held, the share of the short the BTC on the venue does not cover."""
        if self.keeps_btc:
            return uncovered_of(self.venue_spot_btc, self.journal_perp if self.journal_perp < -QTY_TOL else 0.0)
        return drift_of(self.journal_spot, self.journal_perp, QTY_TOL)


async def reconcile(session: LiveSession, trigger: str, accept: str | None = None) -> Reconciliation:
    """Compare (and on ``start``/``manual`` first recover); waits for a paired
    operation in flight to end, so the venue is never ahead of the journal."""
    async with session.lock:
        return await _reconcile(session, trigger, accept)


async def _reconcile(session: LiveSession, trigger: str, accept: str | None) -> Reconciliation:
    notes: list[str] = []
    mismatches: list[str] = []
    journal = session.journal
    if trigger in ("start", "manual"):
        for outcome in await recover(session):
            notes.append(f"operation {outcome.op_id}: {outcome.status}; " + "; ".join(outcome.actions))
            if outcome.status == NEEDS_RECOVERY:
                mismatches.append(f"operation {outcome.op_id} is not finished: {outcome.actions[-1]}")
        notes += recover_rotations(session)  # once its paired operations are
        for op_id in sorted({r["op_id"] for r in journal.orders(open_only=True)}):
            try:
                await resolve_unknown(session, op_id, notes)
            except VenueDisagrees as exc:
                mismatches.append(scrub(str(exc)))
    for leg in session.legs:
        mismatches += await _stray_orders(leg, journal)
    fills = sum([await _missed_fills(session, leg, mismatches) for leg in session.legs])
    funding = sum([await _funding(session, leg) for leg in session.legs if leg.is_perp])
    if session.perp.face and trigger in ("start", "manual"):
        moved = await restore_margin(session)  # what a stopped process left on the spot wallet
        if moved:
            notes.append(f"moved {moved:.8g} BTC of the carry to {session.perp.account}, the open short's margin")
    spot_bal, perp_pos = await asyncio.gather(session.spot.call("fetch_balance"), perp_position(session.perp))
    venue_spot = balance_of(spot_bal, session.spot.base, "total")
    held = holdings(journal, session.spot, session.perp)
    js, jp = held.spot_btc, held.perp_btc
    _check_perp(session, session.perp, perp_pos["units"], held.perp_units, mismatches)
    if session.spot.is_perp:  # a perp/perp carry's long perp: a position on its venue, the carry's alone
        venue_spot = (await perp_position(session.spot))["qty"]
        _check_perp(session, session.spot, venue_spot, js, mismatches)
        if accept is not None:
            notes.append(f"nothing to accept: {session.spot.account} is a perp account, the carry's alone (no BTC "
                         "outside the carry is recorded)")
    else:
        if session.perp.face and not session.one_wallet:  # the carry's BTC is in both wallets (unrealized PnL left out)
            venue_spot += await coin_wallet(session.perp, perp_pos)
        _check_spot(session, venue_spot, js, accept, notes, mismatches)
    keep = session.cfg.keeps_btc
    result = Reconciliation(session.now_ns(), trigger, tuple(mismatches), tuple(notes), venue_spot,
                            perp_pos["qty"], js, jp, fills, funding, perp_pos["units"], held.perp_units, keep)
    fills_seen = journal.fills()
    price = float(perp_pos.get("entry") or 0.0) or (float(fills_seen[-1]["price"]) if fills_seen else 0.0)
    # a carry on BTC held: the BTC on the venue is the spot leg; only a short it does not cover is exposure
    gap = min(venue_spot + jp, 0.0) if keep else js + jp
    if result.drift > session.cfg.risk.max_drift and naked_gap(session, gap, price, held.perp_units == 0):
        what = (f"the short is {-jp:.8g} BTC and the venue holds {venue_spot:.8g} BTC" if keep
                else f"spot {js:+.8g} BTC, perp {jp:+.8g} BTC")
        mismatches.append(f"naked leg: {what}, drift {result.drift:.2%} (limit {session.cfg.risk.max_drift:.0%})")
        result = attrs.evolve(result, mismatches=tuple(mismatches))
    _record(session, result)
    return result


def _record(session: LiveSession, result: Reconciliation) -> None:
    journal, now = session.journal, result.ts
    detail = "; ".join(result.mismatches) or "venues and journal agree"
    journal.add_reconciliation(now, result.trigger, session.config_hash, result.ok,
                               detail + ("; " + "; ".join(result.notes) if result.notes else ""))
    blocked = journal.blocked() or ""
    if blocked.startswith(KILL_SWITCH_PREFIX):
        return  # the kill switch holds until resumed on purpose; agreement does not lift it
    if not result.ok:
        session.alert("reconciliation_mismatch", detail, "critical")
        journal.set_state(BLOCK_KEY, f"reconciliation mismatch: {detail}", now)
    elif blocked:
        session.alert("entries_unblocked", f"was blocked ({blocked}); venues and journal now agree", "info")
        journal.set_state(BLOCK_KEY, None, now)


def _check_perp(session: LiveSession, leg: LiveLeg, venue_units: float, journal_units: float,
                mismatches: list[str]) -> None:
    """A perp leg (the short, or a perp/perp carry's long) against the
    journal's fills: the account is the carry's alone, so they agree; on a
    venue account another pair of a rotation held, the venue's position is
    the sum of the names' fills, and an earlier name still holding something
    is a leg left behind."""
    others = {a: session.journal.units(a) for a in same_market_accounts(session.journal, leg)}
    left = {a: q for a, q in others.items() if abs(q) > QTY_TOL}
    side = "long" if leg.leg == "spot" else "perp"
    if abs(venue_units - journal_units - sum(left.values())) > QTY_TOL:
        mismatches.append(f"{leg.account}: the venue holds {venue_units:+.8g} {leg.unit} {side}, the journal's fills "
                          f"{journal_units:+.8g}" + "".join(f", {a} {q:+.8g}" for a, q in left.items()))
    for account, qty in left.items():
        mismatches.append(f"{account}: a pair held before on this venue account still holds {qty:+.8g} {leg.unit} "
                          f"by the trade log ({leg.account} trades there now); close it on the venue by hand, then "
                          "`fundarb reconcile`")


def same_market_accounts(journal: Journal, leg: LiveLeg) -> list[str]:
    """The trade log's other names of ``leg``'s venue account that traded its
    market: the pairs a rotating perp/perp carry held there before (one venue
    identity, another account name). None for an unbound leg."""
    if not leg.venue_id:
        return []
    names = {a for a, ident in journal.venues().items() if ident.key == leg.venue_id and a != leg.account}
    return sorted({r["account"] for r in journal.orders() if r["account"] in names and r["symbol"] == leg.symbol})


def _check_spot(session: LiveSession, venue_spot: float, js: float, accept: str | None,
                notes: list[str], mismatches: list[str]) -> None:
    key = outside_key(session.spot.account)
    other = venue_spot - js
    known = session.journal.get_state(key)
    now = session.now_ns()
    if known is None or accept is not None:
        session.journal.set_state(key, repr(other), now)
        why = f" (accepted: {accept})" if accept is not None else " (first reconciliation)"
        where = "the spot and coin-margined wallets" if session.perp.face else "the spot account"
        whose = "the BTC held the carry shorts against" if session.cfg.keeps_btc else "not the carry's"
        notes.append(f"{session.spot.account}: {other:.8g} BTC on {where} is {whose}{why}")
        if accept is not None:
            session.alert("reconciliation_accepted", f"spot BTC outside the carry set to {other:.8g}: {accept}", "info")
        return
    if other < -QTY_TOL:
        mismatches.append(f"{session.spot.account}: the venue holds {venue_spot:.8g} BTC, less than the carry's "
                          f"{js:.8g} in the journal")
    elif abs(other - float(known)) > QTY_TOL:
        mismatches.append(f"{session.spot.account}: BTC outside the carry went from {float(known):.8g} to "
                          f"{other:.8g}; if you moved it, run `fundarb reconcile --accept \"why\"`")


async def _stray_orders(leg: LiveLeg, journal: Journal) -> list[str]:
    out = []
    for o in await leg.call("fetch_open_orders", leg.symbol):
        cid = str(o.get("clientOrderId") or "")
        if not cid.startswith(CLIENT_PREFIX):
            if leg.is_perp:  # a perp account is the carry's alone: nobody else's order belongs there
                out.append(f"{leg.account}: open order {o.get('id')} ({cid or 'no client id'}, {o.get('side')} "
                           f"{o.get('amount')}) on the venue was not sent by fundarb")
            continue
        row = journal.order_row(cid)
        if row is None:
            out.append(f"{leg.account}: open order {cid} on the venue is not in the journal")
        elif OrderStatus(row["status"]).terminal:
            out.append(f"{leg.account}: order {cid} is open on the venue but {row['status']} in the journal")
    return out


OVERLAP_MS = 60_000  # re-read a minute before the last row seen: venue ids de-duplicate


def _cursor(session: LiveSession, key: str) -> int | None:
    since = session.journal.get_state(key)
    return int(since) if since else None


def _advance(session: LiveSession, key: str, rows: list[dict]) -> None:
    last = max((int(r.get("timestamp") or 0) for r in rows), default=0)
    if last:
        session.journal.set_state(key, str(last - OVERLAP_MS), session.now_ns())


LATE_ARRIVAL_NS = 86_400 * 1_000_000_000  # orders declared absent this recently are asked for again


async def _late_arrivals(session: LiveSession, leg: LiveLeg, mismatches: list[str]) -> None:
    """Orders of fundarb declared absent (never on the venue) that the venue
    has after all: their venue id is journaled, so their trades are learned,
    and each is a mismatch (a leg the executor did not balance)."""
    journal, now = session.journal, session.now_ns()
    for row in journal.orders():
        if (row["account"] != leg.account or row["venue_order_id"] or row["filled_qty"] > 0
                or row["status"] not in (OrderStatus.REJECTED.value, OrderStatus.EXPIRED.value)
                or "-20" in str(row["status_reason"] or "") or now - int(row["ts_created"]) > LATE_ARRIVAL_NS):
            continue  # a venue refusal (Binance -20xx) has an answer: it is not a late arrival
        found = await session.trader.lookup(leg, row["client_id"])
        if found is None:
            continue
        order = Journal.order_of(row)
        journal.save_order(order, session.config_hash, "on the venue after it was declared absent",
                           venue_order_id=str(found["id"]))
        mismatches.append(f"{leg.account}: order {row['client_id']} reached the venue after it was declared absent "
                          f"({found.get('status')}, {float(found.get('filled') or 0):g} BTC)")


async def _missed_fills(session: LiveSession, leg: LiveLeg, mismatches: list[str]) -> int:
    """Add the venue's trades of our orders the journal does not have; a trade
    of an order id the journal does not know is a mismatch. While an order of
    ours on the account has no venue answer yet (its placement unknown: a
    timeout cut its operation short), a trade of an unknown order may be
    its: it is not learned as someone else's until recovery has asked the
    venue for that order (the next start, `fundarb reconcile`)."""
    journal = session.journal
    await _late_arrivals(session, leg, mismatches)
    names = {leg.account, *same_market_accounts(journal, leg)}  # a pair a rotation held there before: its own
    ours = {r["venue_order_id"]: r for r in journal.orders() if r["account"] in names and r["venue_order_id"]}
    if not ours:
        return 0
    unanswered = [r["client_id"] for r in journal.orders(open_only=True)
                  if r["account"] == leg.account and not r["venue_order_id"]]
    key = f"trades_since:{leg.account}"
    trades = await leg.call("fetch_my_trades", leg.symbol, _cursor(session, key))
    added, deferred = 0, []
    for t in trades:
        row = ours.get(str(t.get("order")))
        if row is None and unanswered and leg.is_perp:
            deferred.append(str(t.get("id")))
            continue
        if (row is None or row["role"] == "external") and leg.is_perp:
            _external(session, leg, t, mismatches)
            continue
        if row is None:
            continue
        # a terminal order that missed a fill keeps its state with corrected totals (Journal.record_fill)
        stored = journal.order_row(row["client_id"])
        assert stored is not None  # the row found above
        order = Journal.order_of(stored)
        named = leg if row["account"] == leg.account else attrs.evolve(leg, account=row["account"])
        added += session.trader.record_fill(named, order, t)
    if deferred:  # read again from here once recovery knows those orders
        mismatches.append(f"{leg.account}: the venue lists trades {', '.join(deferred)} of orders the trade log does "
                          f"not know while order(s) {', '.join(unanswered)} of fundarb have no answer from the venue "
                          "yet; they are learned once recovery has asked the venue (`fundarb reconcile`)")
        return added
    _advance(session, key, trades)
    return added


def _external(session: LiveSession, leg: LiveLeg, t: dict, mismatches: list[str]) -> None:
    """A perp trade of an order fundarb did not send (a liquidation, an
    auto-deleveraging, a manual trade): the perp account is the carry's
    alone, so the trade log learns it (the position becomes the venue's, so
    a flatten is sized from what is really held), and it is alerted once and
    blocks entries until a human has looked (``fundarb resume`` after the
    kill switch it sets in a runner, or the next agreeing reconciliation)."""
    trade = session.trader.venue_trade(leg, f"ext:{t.get('order') or ''}", t)
    if not session.journal.record_external(trade, leg.leg, leg.symbol, session.now_ns(), session.config_hash):
        return
    what = (f"{leg.account}: trade {t.get('id')} of order {t.get('order')} ({trade.side.value} {trade.qty:g} BTC "
            f"at {trade.price:,.2f}) was not sent by fundarb (a liquidation, auto-deleveraging or manual trade); "
            "learned into the trade log")
    session.alert("external_trade", what, "critical")
    mismatches.append(what)


async def _funding(session: LiveSession, leg: LiveLeg) -> int:
    """Funding payments of a perp account (the short; a perp/perp carry's
    long too) into the trade log, each once. On a venue account another pair
    of a rotation held, a payment already journaled under that name is not
    learned again, and a new one goes to the name that held the position at
    the settlement (by the journal's fills)."""
    journal = session.journal
    if not journal.orders():
        return 0
    key = f"funding_since:{leg.account}"
    rows = await leg.call("fetch_funding_history", leg.symbol, _cursor(session, key))
    sign = quirks_or_plain(leg.exchange.id).funding_sign  # received: positive, whatever the venue's sign
    others = same_market_accounts(journal, leg)
    known = {r["payment_id"] for r in journal.rows("funding")
             if r["account"] in others and r["venue_id"] == leg.venue_id} if others else set()
    added = 0
    for f in rows:
        ts_ms = int(f.get("timestamp") or 0)
        payment = str(f.get("id") or ts_ms)
        if payment in known:
            continue
        account = _holder_at(journal, [leg.account, *others], ts_ms * 1_000_000) if others else leg.account
        added += journal.add_funding(session.now_ns(), ts_ms * 1_000_000, account, leg.symbol,
                                     session.config_hash, sign * float(f.get("amount") or 0.0) + 0.0, None,
                                     payment, leg.venue_id)
    _advance(session, key, rows)
    return added


def _holder_at(journal: Journal, accounts: list[str], ts: int) -> str:
    """Of ``accounts`` (the first is the leg's own), the one whose fills
    before ``ts`` leave it holding a position (the one a settlement then paid);
    the first when none or several do."""
    held = {a: 0.0 for a in accounts}
    for f in journal.fills():
        if f["account"] in held and f["venue_ts"] < ts:
            held[f["account"]] += float(f["qty"]) if f["side"] == "buy" else -float(f["qty"])
    holding = [a for a, q in held.items() if abs(q) > QTY_TOL]
    return holding[0] if len(holding) == 1 else accounts[0]


async def learn_funding(session: LiveSession) -> int:
    """Only the perps' new funding payments into the trade log (the dashboard
    asks this often; a full reconciliation runs on its own interval)."""
    async with session.lock:
        return sum([await _funding(session, leg) for leg in session.legs if leg.is_perp])


async def reconcile_if_alone(session: LiveSession, trigger: str) -> Reconciliation | None:
    """Reconcile, unless the session is not its account's actor
    (``session.alone``) and another process is: then nothing (None)."""
    if session.alone is None:
        return await reconcile(session, trigger)
    with session.alone() as alone:
        return await reconcile(session, trigger) if alone else None


async def reconcile_every(session: LiveSession, stop: asyncio.Event) -> None:
    """Reconcile every ``live.reconcile_interval_seconds`` until ``stop`` is set."""
    interval = session.cfg.live_settings.reconcile_interval_seconds
    while not await stopped_within(stop, interval):
        try:
            await reconcile_if_alone(session, "periodic")
        except Exception as exc:  # noqa: BLE001 - a failed round must not end the periodic check
            log.warning("periodic reconciliation failed: %s", describe(exc))
            session.alert("reconciliation_failed", f"could not reconcile: {describe(exc)}")

