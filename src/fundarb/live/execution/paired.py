"""Paired execution: both legs out together, then made equal again.

``execute_pair`` journals an operation, sends the spot and the perp order at
the same moment, and then ``balance_pair`` brings the two legs' fills back to
equal (delta neutral) within ``live.hedge_timeout_seconds``:

- an order whose placement is unknown is looked up by its client id first;
- each leg that filled short of its size (a partial fill, a rest that
  expired or was cancelled) is COMPLETED with an order for the rest
  (``hedge``), unless the venue refused that leg outright;
- whatever difference is left (a refused leg, a completion that failed) is
  UNWOUND: traded back on the leading leg (``unwind``), or, if that leg
  cannot trade it (under its lot), completed on the other.

An inverse perp trades whole contracts: the legs of a coin-margined carry
may differ by a contract's worth (``contract_rounding``), which the sizing
allows and nothing trades away.

The first leg is the carry's long: a spot market, or a perp/perp carry's
long perp on its own venue. What it is is its market's (``LiveLeg.is_perp``):
an order against a perp leg's side (a close of the long perp, as of the
short) goes out reduce-only (``LiveLeg.reduces``).

A carry on BTC already held (``structure.capital_asset = "BTC"``) buys
only what the holding lacks: its open's plan says how much of the holding the
short covers (``covered``), which counts as the spot leg's BTC. Only the
short is traded to balance it (the holding is never sold), and a close is
done once the short is bought back: the BTC stays held.

A close is balanced on the carry's two legs when that gap is the smaller:
the spot the carry holds is short of the perp by the BTC fees its buys paid,
so a close that leaves both legs flat is done even though its fills differ.
A difference under the smaller market's lot or minimum order cannot be
traded and is reported as residual drift. If the time runs out with a gap
left, the operation ends ``naked``: an alert is journaled and new entries are
blocked; it is never left silently. ``recover`` does the same on start for an
operation a stopped process left ``executing`` or a network error left
``needs_recovery`` (a timeout inside a pair never escapes it), always unwinding (the intent
to open may no longer hold after a restart). ``execute_adjust`` sends lone
reduce-only orders (the runner's rebalance of one leg) as an ``adjust``
operation, which recovery only resolves.
"""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
import ccxt

from fundarb.core.model import NS_PER_SECOND, Side
from fundarb.core.orders import Order, OrderStatus
from fundarb.live.execution.holdings import holdings
from fundarb.live.execution.orders import LiveLeg, VenueDisagrees, recv_window_s, superseded
from fundarb.live.execution.session import LiveSession
from fundarb.live.journal import Journal
from fundarb.support.scrub import describe

S = OrderStatus
BLOCK_KEY = "entries_blocked"
FLATTEN_KEY = "flatten_requested"  # journal state: the kill switch asked for both legs to be closed (value: the reason)
NEEDS_RECOVERY = "needs_recovery"  # an operation a network error cut short: ``recover`` finishes it
# what cuts a pair short without a word from the venue (timeouts, dropped connections,
# 5xx), or with two words (an order's size and its trades disagree): nothing more is
# sized until recovery learns what the venue holds
INTERRUPTIONS = (ccxt.NetworkError, TimeoutError, ConnectionError, VenueDisagrees)


@attrs.frozen
class PairOutcome:
    op_id: int
    kind: str
    # done | rebalanced (a leg completed) | unwound (a leg traded back) | naked | failed (nothing traded)
    # | needs_recovery (a timeout or network error cut it short: entries blocked until ``recover``)
    status: str
    spot_change: float  # BTC bought (+) or sold (-) on the spot leg by this operation, gross of fees
    perp_change: float  # signed BTC on the perp leg
    residual: float  # spot_change + perp_change
    actions: tuple[str, ...]
    orders: tuple[str, ...]  # client ids, in order


def _net(journal: Journal, op_id: int, leg: str) -> float:
    """Signed size ``op_id`` traded on ``leg``, in the leg's unit (BTC, or an inverse perp's contracts)."""
    total = 0.0
    for row in journal.orders(op_id):
        if row["leg"] == leg:
            total += (1 if row["side"] == "buy" else -1) * row["filled_qty"]
    return round(total, 12) + 0.0  # sums of decimal lots: -0.005 + 0.003 must be -0.002, not -0.0019999999999999996


def _net_btc(session: LiveSession, op_id: int, name: str) -> float:
    """Signed BTC ``op_id`` traded on leg ``name``: an inverse perp's
    contracts are worth face / price at each fill's price (what an opening
    short hedges, and what a closing buy-back settles against)."""
    leg = session.spot if name == "spot" else session.perp
    journal = session.journal
    if not leg.face:
        return _net(journal, op_id, name)
    total = 0.0
    for row in journal.orders(op_id):
        if row["leg"] == name:
            for f in journal.fills(row["client_id"]):
                total += (1 if f["side"] == "buy" else -1) * leg.btc(float(f["qty"]), float(f["price"]))
    return round(total, 12) + 0.0


def _covered(session: LiveSession, op_id: int) -> float:
    """BTC of the holding an open of a carry on BTC held puts under the
    short (its plan's ``covered``); 0 for every other operation."""
    return float(session.journal.plan_of(op_id).get("covered") or 0.0) if session.cfg.keeps_btc else 0.0


def contract_rounding(session: LiveSession, price: float) -> float:
    """BTC the legs may differ by when the perp trades whole contracts of a
    USD face: a contract's worth at ``price``. A carry's short is the whole
    contracts nearest the spot's value at the mark the engine last saw
    (``core.strategy.hedge_units``), so the legs differ by up to half a
    contract and what the price moved since; the simulator keeps that
    difference, and so does the venue. 0 for a perp that trades BTC."""
    return session.perp.btc(1.0, price) if session.perp.face and price > 0 else 0.0


def _tradeable(leg: LiveLeg, qty: float, price: float) -> float:
    """``qty`` (the leg's unit) floored to the leg's lot; 0 when that is under its minimum order."""
    q = leg.rules.floor_btc(qty)
    return q if q > 0 and not leg.rules.problems(q, price) else 0.0


def naked_gap(session: LiveSession, gap: float, price: float, perp_flat: bool = False) -> bool:
    """The one rule for a naked leg, for the executor and reconciliation
    alike: a gap of ``gap`` BTC between the legs that some leg can trade (its
    lot and its minimum order at ``price``; by the lot alone when no price is
    known, where an inverse perp, whose lot is worth a price, is not asked).
    ``perp_flat``: the perp holds nothing, so only the spot leg can close the
    gap (what a closed carry leaves on the spot leg is not made a new short)."""
    legs = [session.spot] if perp_flat else list(session.legs)
    if price <= 0:
        return any(leg.rules.floor_btc(abs(gap)) > 0 for leg in legs if not leg.face)
    return any(_tradeable(leg, leg.units_for(abs(gap), price), price) > 0 for leg in legs)


async def execute_pair(session: LiveSession, kind: str, qty: float, plan: dict[str, Any],
                       spot_qty: float | None = None) -> PairOutcome:
    """Trade ``qty`` on the perp leg (its unit: BTC, or an inverse perp's
    contracts) and ``spot_qty`` BTC (default ``qty``) on the spot leg, both at
    once, then balance them in BTC."""
    async with session.lock:
        return await _run_pair(session, kind, qty, qty if spot_qty is None else spot_qty, plan)


async def _run_pair(session: LiveSession, kind: str, qty: float, spot_qty: float,
                    plan: dict[str, Any]) -> PairOutcome:
    opening = kind == "open"
    journal, now = session.journal, session.now_ns()
    op_id = journal.begin_operation(now, kind, session.config_hash, qty, plan)
    deadline = now + int(session.cfg.live_settings.order_timeout_seconds * NS_PER_SECOND)
    role = "entry" if opening else "exit"
    legs = []
    long_side, short_side = (Side.BUY, Side.SELL) if opening else (Side.SELL, Side.BUY)
    if spot_qty > 0:  # a close of a perp/perp carry's long perp is reduce-only like the short's
        legs.append(session.trader.send(session.spot, op_id, role, long_side, spot_qty, deadline,
                                        reduce_only=session.spot.reduces(long_side)))
    if qty > 0:  # closing a lone leg (the other already gone) sends one order
        legs.append(session.trader.send(session.perp, op_id, role, short_side, qty, deadline,
                                        reduce_only=session.perp.reduces(short_side)))
    try:
        # both legs run to their end even when one of them fails: what was sent must be known
        for result in await asyncio.gather(*legs, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result
        return await balance_pair(session, op_id, kind, plan.get("prices", {}), unwind_only=False)
    except INTERRUPTIONS as exc:
        return _interrupted(session, op_id, kind, exc)


def _interrupted(session: LiveSession, op_id: int, kind: str, exc: BaseException) -> PairOutcome:
    """A timeout or network error cut operation ``op_id`` short: record it as
    ``needs_recovery`` with exactly what was sent, block entries and alert once."""
    journal = session.journal
    units = {"spot": session.spot.unit, "perp": session.perp.unit}
    sent = [f"{r['client_id']} {r['leg']} {r['role']} {r['side']} {float(r['qty']):g} {units[r['leg']]}: "
            f"{r['status']} {float(r['filled_qty']):g}" for r in journal.orders(op_id)]
    spot, perp = _net_btc(session, op_id, "spot"), _net_btc(session, op_id, "perp")
    what = "; ".join(sent) if sent else "no order was sent"
    message = (f"operation {op_id} ({kind}) was cut short by {describe(exc, 200)}; "
               f"sent: {what}; as journaled: spot {spot:+g} BTC, perp {perp:+g} BTC (orders still open may "
               "fill): new entries blocked; run `fundarb reconcile`")
    return _park(session, op_id, kind, "pair_interrupted", message,
                 f"operation {op_id} interrupted ({type(exc).__name__})")


def _park(session: LiveSession, op_id: int, kind: str, alert: str, message: str, block: str) -> PairOutcome:
    """Leave operation ``op_id`` ``needs_recovery``: alert once, block entries, nothing more sent."""
    journal, now = session.journal, session.now_ns()
    session.alert(alert, message, "critical")
    journal.set_state(BLOCK_KEY, block, now)
    journal.finish_operation(op_id, now, NEEDS_RECOVERY, message)
    spot, perp = _net_btc(session, op_id, "spot"), _net_btc(session, op_id, "perp")
    orders = tuple(r["client_id"] for r in journal.orders(op_id))
    return PairOutcome(op_id, kind, NEEDS_RECOVERY, spot, perp, spot + perp, (message,), orders)


async def execute_adjust(session: LiveSession, orders: list[tuple[str, Side, float]], plan: dict[str, Any]) -> PairOutcome:
    """Reduce-only orders on single legs (a rebalance of the larger leg, the
    unwind of a naked one): one journaled ``adjust`` operation, nothing paired."""
    async with session.lock:
        journal, now = session.journal, session.now_ns()
        op_id = journal.begin_operation(now, "adjust", session.config_hash, sum(q for _, _, q in orders), plan)
        deadline = now + int(session.cfg.live_settings.order_timeout_seconds * NS_PER_SECOND)
        for name, side, qty in orders:
            leg = session.spot if name == "spot" else session.perp
            if name == "spot" and side is Side.SELL:
                qty = min(qty, journal.position(leg.account, leg.base))
            if qty > 0:
                await session.trader.send(leg, op_id, "exit", side, qty, deadline,
                                          reduce_only=name == "perp" or leg.reduces(side))
        actions: list[str] = []
        await resolve_unknown(session, op_id, actions)
        return _finish_adjust(session, op_id, actions)


def _finish_adjust(session: LiveSession, op_id: int, actions: list[str]) -> PairOutcome:
    journal = session.journal
    spot, perp = _net_btc(session, op_id, "spot"), _net_btc(session, op_id, "perp")
    status = "done" if spot or perp else "failed"
    journal.finish_operation(op_id, session.now_ns(), status, "; ".join(actions))
    orders = tuple(r["client_id"] for r in journal.orders(op_id))
    return PairOutcome(op_id, "adjust", status, spot, perp, spot + perp, tuple(actions), orders)


async def balance_pair(session: LiveSession, op_id: int, kind: str, prices: dict[str, float],
                       unwind_only: bool) -> PairOutcome:
    live = session.cfg.live_settings
    actions: list[str] = []
    try:
        await asyncio.wait_for(_equalise(session, op_id, kind, prices, unwind_only, actions),
                               live.hedge_timeout_seconds)
        timed_out = False
    except TimeoutError:
        timed_out = True
    return _conclude(session, op_id, kind, actions, timed_out)


async def _equalise(session: LiveSession, op_id: int, kind: str, prices: dict[str, float], unwind_only: bool,
                    actions: list[str]) -> None:
    """Complete each leg that filled short (unless refused or recovering),
    then trade back whatever difference is left, on the leading leg first."""
    await resolve_unknown(session, op_id, actions)
    if not unwind_only:
        await asyncio.gather(*(_complete(session, op_id, name, prices, actions) for name in ("spot", "perp")))
    journal = session.journal
    keep = session.cfg.keeps_btc
    if keep and kind != "open":
        return  # the short is bought back (completed above); the BTC held stays
    covered = _covered(session, op_id)
    for _ in range(3):
        await resolve_unknown(session, op_id, actions)
        spot, perp = _net_btc(session, op_id, "spot") + covered, _net_btc(session, op_id, "perp")
        gap = round(spot + perp, 12)  # > 0: more spot bought (or less sold) than perp sold
        if kind == "close":
            # a close ends with both legs flat, not with equal fills: the spot the
            # carry holds is short of the perp by the BTC fees its buys paid, so
            # the fills of a full close differ by them while the legs are equal
            gap = min(gap, holdings(journal, session.spot, session.perp).delta, key=abs)
        if gap == 0 or abs(gap) <= contract_rounding(session, _price(session, op_id, "perp", prices)):
            return
        lead, lag = ("spot", "perp") if abs(spot) > abs(perp) else ("perp", "spot")
        side = Side.SELL if gap > 0 else Side.BUY
        choices = [(lead, "unwind")] + ([] if unwind_only or _refused(journal, op_id, lag) else [(lag, "hedge")])
        if kind == "close" and journal.units(session.perp.account) == 0:
            # the short is closed: what the spot leg holds beyond it is sold, never hedged by a new short
            choices = [(name, role) for name, role in choices if name == "spot"]
        if keep:  # the holding is never sold: the short is made to fit it, or what this open bought sold back
            hedge = [] if unwind_only or _refused(journal, op_id, "perp") else [("perp", "hedge")]
            choices = [("perp", "unwind")] if gap < 0 else hedge + [("spot", "unwind")]
        for name, role in choices:
            leg = session.spot if name == "spot" else session.perp
            units = leg.units_for(abs(gap), _price(session, op_id, name, prices))
            if keep and name == "spot":
                units = min(units, max(_net(journal, op_id, "spot"), 0.0))  # no more than this open bought
            qty = _sized(session, op_id, name, side, units, prices)
            if qty > 0:
                await _send(session, op_id, name, role, side, qty, actions, "the legs differ")
                break
        else:
            actions.append(f"{abs(gap):g} BTC left between the legs is under the lot / minimum order: not traded")
            return


async def _complete(session: LiveSession, op_id: int, name: str, prices: dict[str, float],
                    actions: list[str]) -> None:
    journal = session.journal
    rows = [r for r in journal.orders(op_id) if r["leg"] == name and r["role"] in ("entry", "exit")
            and not superseded(r)]
    target = sum((1 if r["side"] == "buy" else -1) * r["qty"] for r in rows)
    short = round(target - _net(journal, op_id, name), 12)
    if not rows or _refused(journal, op_id, name) or short * target <= 0:
        return
    side = Side.BUY if short > 0 else Side.SELL
    qty = _sized(session, op_id, name, side, abs(short), prices)
    if qty > 0:
        await _send(session, op_id, name, "hedge", side, qty, actions, "the leg filled short")


def _price(session: LiveSession, op_id: int, name: str, prices: dict[str, float]) -> float:
    """The price leg ``name`` is sized at: the plan's, else its last fill's (0: none known)."""
    return prices.get(name) or _last_price(session.journal, op_id, name)


def _sized(session: LiveSession, op_id: int, name: str, side: Side, qty: float, prices: dict[str, float]) -> float:
    """What of ``qty`` (the leg's unit) the leg can trade: a spot sell no more
    than is held (a buy's fee was taken in BTC), floored to the lot, 0 under
    the minimum."""
    leg = session.spot if name == "spot" else session.perp
    if name == "spot" and side is Side.SELL:
        qty = min(qty, session.journal.position(leg.account, leg.base))
    price = _price(session, op_id, name, prices)
    if leg.face and not price > 0:
        return 0.0  # contracts are worth a price: none known, nothing sized
    return _tradeable(leg, qty, price)


async def _send(session: LiveSession, op_id: int, name: str, role: str, side: Side, qty: float,
                actions: list[str], why: str) -> None:
    leg = session.spot if name == "spot" else session.perp
    deadline = session.now_ns() + int(session.cfg.live_settings.order_timeout_seconds * NS_PER_SECOND)
    # the carry is short the perp and long the other leg: on a perp, trading against its side only reduces
    order = await session.trader.send(leg, op_id, role, side, qty, deadline, reduce_only=leg.reduces(side))
    actions.append(f"{role} {leg.account}: {side.value} {qty:g} {leg.unit} ({why}) -> {order.status.value} "
                   f"{order.filled_qty:g}" + (f" ({order.status_reason[:120]})" if order.status_reason else ""))


def _base_fees(session: LiveSession, op_id: int) -> float:
    """BTC the venue kept as fees on the spot leg's fills of ``op_id``."""
    journal, base = session.journal, session.spot.base
    return sum(f["fee"] for r in journal.orders(op_id) if r["leg"] == "spot"
               for f in journal.fills(r["client_id"]) if f["fee_currency"] == base)


def _refused(journal: Journal, op_id: int, leg: str) -> bool:
    rows = [r for r in journal.orders(op_id) if r["leg"] == leg]
    return bool(rows) and all(r["status"] == S.REJECTED.value for r in rows)


def _last_price(journal: Journal, op_id: int, leg: str) -> float:
    rows = [r for r in journal.orders(op_id) if r["leg"] == leg and r["filled_qty"] > 0]
    if rows:
        return float(rows[-1]["avg_price"])
    other = [r for r in journal.orders(op_id) if r["filled_qty"] > 0]
    return float(other[-1]["avg_price"]) if other else 0.0


async def resolve_unknown(session: LiveSession, op_id: int, actions: list[str]) -> None:
    """Orders of ``op_id`` the journal cannot place in a terminal state: ask
    the venue by client id; one it has never seen is REJECTED."""
    journal, trader = session.journal, session.trader
    legs = {"spot": session.spot, "perp": session.perp}
    for row in journal.orders(op_id, open_only=True):
        leg = legs[row["leg"]]
        order = Journal.order_of(row)
        found = await trader.lookup(leg, order.client_id, patient=True)
        if found is None:  # it may still land until the venue's receive window has passed since it was sent
            window = recv_window_s(leg)
            wait = min(window, (order.ts_created - session.now_ns()) / NS_PER_SECOND + window + trader.window_margin_s)
            if wait > 0:
                await asyncio.sleep(wait)
                found = await trader.lookup(leg, order.client_id)
        now = session.now_ns()
        if found is None:
            reason = "the venue has no order with this client id: it never reached the venue"
            order.transition(S.REJECTED if order.status in (S.NEW, S.SUBMITTED) else S.EXPIRED, now, reason)
            session.journal.save_order(order, session.config_hash, "resolved: not on the venue")
            actions.append(f"{order.client_id} on {leg.account}: not on the venue")
            continue
        if order.status is S.NEW:
            order.transition(S.SUBMITTED, now)
        deadline = now + int(session.cfg.live_settings.order_timeout_seconds * NS_PER_SECOND)
        await trader.follow(leg, order, str(found["id"]), deadline)
        actions.append(f"{order.client_id} on {leg.account}: found on the venue, {order.status.value} "
                       f"{order.filled_qty:g} {leg.unit}")


def _conclude(session: LiveSession, op_id: int, kind: str, actions: list[str], timed_out: bool) -> PairOutcome:
    journal = session.journal
    spot, perp = _net_btc(session, op_id, "spot"), _net_btc(session, op_id, "perp")
    if session.cfg.keeps_btc:
        return _conclude_held(session, op_id, kind, actions, timed_out, spot, perp)
    residual = spot + perp
    # a spot fee taken in BTC is bought but never held, so the fills can
    # differ by it while the legs are equal: after an unwind (it sells what is
    # held) and after a close (it sells what the carry holds, short of what
    # the perp buys back by the entry's fee). The gap that counts is the
    # smallest of: by the fills, by what this operation left held, and
    # between the carry's two legs as a whole.
    held = residual - _base_fees(session, op_id)
    carry = holdings(journal, session.spot, session.perp).delta
    gap = min(residual, held, carry, key=abs)
    price = _last_price(journal, op_id, "spot") or _last_price(journal, op_id, "perp")
    tradeable = (price > 0 and abs(gap) > contract_rounding(session, _last_price(journal, op_id, "perp"))
                 and naked_gap(session, gap, price, journal.units(session.perp.account) == 0))
    unresolved = bool(journal.orders(op_id, open_only=True))
    naked = timed_out or unresolved or tradeable
    return _finish(session, op_id, kind, _status(session, op_id, kind, naked, spot, perp, timed_out), actions, spot, perp)


def _status(session: LiveSession, op_id: int, kind: str, naked: bool, spot: float, perp: float,
            timed_out: bool) -> str:
    """How an operation ended: naked (alerted, entries blocked), else by the
    roles of the orders that filled."""
    if naked:
        return _naked(session, op_id, kind, spot, perp, timed_out)
    roles = {r["role"] for r in session.journal.orders(op_id) if r["filled_qty"] > 0}
    return ("unwound" if "unwind" in roles else "rebalanced" if "hedge" in roles
            else "done" if spot or perp else "failed")


def _naked(session: LiveSession, op_id: int, kind: str, spot: float, perp: float, timed_out: bool) -> str:
    message = (f"operation {op_id} ({kind}) ended with the legs unequal: spot {spot:+g} BTC, perp {perp:+g} BTC"
               + (" (out of time)" if timed_out else "") + ": new entries blocked; run `fundarb reconcile`")
    session.alert("naked_leg", message, "critical")
    session.journal.set_state(BLOCK_KEY, f"naked leg after operation {op_id}", session.now_ns())
    return "naked"


def _finish(session: LiveSession, op_id: int, kind: str, status: str, actions: list[str], spot: float,
            perp: float) -> PairOutcome:
    journal = session.journal
    journal.finish_operation(op_id, session.now_ns(), status, "; ".join(actions))
    orders = tuple(r["client_id"] for r in journal.orders(op_id))
    return PairOutcome(op_id, kind, status, spot, perp, spot + perp, tuple(actions), orders)


def _conclude_held(session: LiveSession, op_id: int, kind: str, actions: list[str], timed_out: bool, spot: float,
                   perp: float) -> PairOutcome:
    """The end of an operation of a carry on BTC held: an open is balanced
    when the short and what it covers (bought and held) differ by less than
    the short can trade; a close when the short it asked for is bought back
    (nothing is sold). ``spot``: what the operation bought, the holding's
    share (``covered``) added for the gap."""
    journal = session.journal
    if kind == "open":
        # a short the BTC does not cover, or BTC this open bought that no short hedges: the holding
        # itself unhedged is no exposure the open made
        gap = spot + _covered(session, op_id) + perp
        exposed = -gap if gap < 0 else min(gap, max(spot, 0.0))
        price = _last_price(journal, op_id, "perp")
        uneven = price > 0 and exposed > contract_rounding(session, price) and naked_gap(session, exposed, price)
    else:
        asked = sum(r["qty"] for r in journal.orders(op_id) if r["leg"] == "perp" and r["role"] == "exit")
        uneven = _net(journal, op_id, "perp") < asked - 1e-9 and journal.units(session.perp.account) < 0
    naked = timed_out or bool(journal.orders(op_id, open_only=True)) or uneven
    return _finish(session, op_id, kind, _status(session, op_id, kind, naked, spot, perp, timed_out), actions, spot, perp)


async def recover(session: LiveSession) -> list[PairOutcome]:
    """Finish every operation a stopped process left ``executing``: learn
    each order's fate from the venue, then unwind any difference."""
    outcomes = []
    ops = session.journal.operations("executing") + session.journal.operations(NEEDS_RECOVERY)
    ops = [o for o in ops if o["kind"] != "rotate"]  # a rotation's own row: ``rotation.recover_rotations`` ends it
    for op in sorted(ops, key=lambda o: o["op_id"]):
        actions: list[str] = [f"recovering operation {op['op_id']} ({op['kind']}) left executing"]
        try:
            await resolve_unknown(session, op["op_id"], actions)
            session.alert("recovery", f"operation {op['op_id']} ({op['kind']}) was left executing by a stopped "
                          "process; finishing it", "warning")
            if op["kind"] == "adjust":  # single reduce-only orders: nothing to pair, nothing to trade back
                outcomes.append(_finish_adjust(session, op["op_id"], actions))
                continue
            outcome = await balance_pair(session, op["op_id"], op["kind"], {}, unwind_only=True)
        except VenueDisagrees as exc:  # still two sizes: it waits, blocked, for the venue's trades to agree
            outcome = _still_disagreeing(session, op["op_id"], op["kind"], exc)
        outcomes.append(attrs.evolve(outcome, actions=tuple(actions) + outcome.actions))
    return outcomes


def _still_disagreeing(session: LiveSession, op_id: int, kind: str, exc: VenueDisagrees) -> PairOutcome:
    return _park(session, op_id, kind, "venue_disagrees", f"operation {op_id} ({kind}) cannot be finished yet: {describe(exc)}",
                 f"operation {op_id}: the venue's order and trades disagree")


def order_summary(order: Order) -> str:
    return f"{order.client_id} {order.side.value} {order.filled_qty:g}/{order.qty:g} {order.status.value}"
