"""Money moved between the spot wallet and a futures wallet of one venue.

``move`` makes one transfer through the venue's universal transfer type
between the two wallets (``fundarb.venues``: Binance spot to USD-M for USDT,
spot to COIN-M for BTC), through the client the venue module names.

In a coin-margined carry the carry's BTC margins the inverse short, so it
lives in the coin-margined wallet between entry and exit:

- ``restore_margin`` moves what an open bought there once the pair is done
  (the short goes out with the spot buy, on the initial margin already in
  that wallet, so no leg waits for a transfer), and on a start whatever a
  stopped process left behind (``margin_due``);
- ``margin_out`` moves back what a close is about to sell, before the pair.

A carry on BTC already held (``structure.capital_asset = "BTC"``) buys
little or nothing: the holding is the short's margin. ``hold_margin`` moves
what the coin-margined wallet lacks of the BTC the short hedges from the
spot wallet's free BTC, by the venues' balances: before an open (so the short
has its margin), after it (what it bought) and on a start. A close moves
nothing: the holding stays where it margined the short.

Where one wallet holds both legs (Bybit's unified account) nothing moves.

Each move is journaled (done or failed); a failed one is alerted with what
to move by hand. The hedge never depends on a move (the carry's BTC is
counted in both wallets alike), only the short's margin does.
"""

from __future__ import annotations

import math
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from fundarb.live.execution.orders import LiveLeg
from fundarb.live.execution.preflight import balance_of, perp_position
from fundarb.live.journal import Journal
from fundarb.support.scrub import describe
from fundarb.venues import quirks_or_plain

DONE, FAILED = "done", "failed"
BTC_PLACES = 8


class TransferFailed(Exception):
    """The venue refused or could not make a transfer; the message says why."""


def floor_amount(amount: float, places: int) -> float:
    """``amount`` rounded down to ``places`` decimals: never more than is there."""
    step = Decimal(1).scaleb(-places)
    return float((Decimal(str(amount)) / step).to_integral_value(ROUND_FLOOR) * step)


async def move(session: Any, src: LiveLeg, dst: LiveLeg, asset: str, amount: float) -> str:
    """Transfer ``amount`` of ``asset`` from ``src``'s wallet to ``dst``'s; the venue's transfer id."""
    venue = quirks_or_plain(src.exchange.id)
    kind = venue.transfer_type(dst.exchange.id)  # the venue's transfer type between the two wallets
    if kind is None:
        raise TransferFailed(f"there is no automatic transfer from {src.account} to {dst.account}")
    client = (session.clients.get(venue.transfer_client) if venue.transfer_client else None) or src.exchange
    try:
        reply = await src.queue.call(client.transfer, asset, amount, "spot", "future", {"type": kind})
    except Exception as exc:  # noqa: BLE001 - the venue's words go to the caller's alert
        raise TransferFailed(f"the transfer failed ({describe(exc, 200)})") from None
    return str(reply.get("id") or "")


def _journal(session: Any, transfer_id: str, src: LiveLeg, dst: LiveLeg, amount: float, status: str) -> None:
    session.journal.add_transfer(session.now_ns(), session.config_hash, transfer_id, src.account, dst.account,
                                 amount, 0.0, status)


async def _move_btc(session: Any, key: str, src: LiveLeg, dst: LiveLeg, amount: float, why: str) -> float:
    """Move ``amount`` BTC (rounded down to the satoshi) and journal it under
    ``key``; a failure is journaled and alerted. The BTC moved (0: none)."""
    amount = floor_amount(amount, BTC_PLACES)
    if amount <= 0:
        return 0.0
    try:
        venue_id = await move(session, src, dst, src.base, amount)
    except TransferFailed as exc:
        _journal(session, key, src, dst, amount, FAILED)
        session.alert("transfer_needed", f"move {amount:.8g} BTC from {src.account} to {dst.account} by hand "
                      f"({why}): {exc}", "critical")
        return 0.0
    _journal(session, f"{key}:{venue_id}", src, dst, amount, DONE)
    return amount


async def margin_out(session: Any, sell_btc: float) -> float:
    """Before a close that sells ``sell_btc``: move what the spot wallet lacks
    from the coin-margined wallet (at most what it lets go); the BTC moved."""
    spot, perp = session.spot, session.perp
    if session.one_wallet:
        return 0.0
    lacking = sell_btc - balance_of(await spot.call("fetch_balance"), spot.base, "free")
    if lacking <= 0 or not math.isfinite(lacking):
        return 0.0  # the spot wallet holds it: the coin-margined wallet is not asked
    movable = balance_of(await perp.call("fetch_balance"), perp.settle, "free")
    return await _move_btc(session, f"close:{session.now_ns()}:out", perp, spot, min(lacking, movable),
                           "a close sells the carry's BTC on the spot wallet")


def margin_due(journal: Journal, spot: LiveLeg, perp: LiveLeg) -> float:
    """BTC of the carry that belongs in the coin-margined wallet but is not
    there by the journal's transfers: while the short is open, all the spot
    leg's BTC (its fills) margins it; what the done transfers moved in, less
    what they moved out, is there. A stop between a pair and its move, or
    between a close's move and its pair, leaves a difference; 0 when flat."""
    if journal.units(perp.account) >= 0:
        return 0.0
    moved = sum((1.0 if r["to_account"] == perp.account else -1.0) * float(r["amount"])
                for r in journal.rows("transfers") if r["status"] == DONE
                and perp.account in (r["to_account"], r["from_account"]))
    return journal.position(spot.account, spot.base) - moved


async def restore_margin(session: Any) -> float:
    """Move the carry's BTC a stopped process left on the spot wallet back
    into the coin-margined wallet (``margin_due``, at most what the spot
    wallet has free, nothing under the spot lot); the BTC moved."""
    spot, perp = session.spot, session.perp
    if session.one_wallet:
        return 0.0
    if session.cfg.keeps_btc:  # the holding margins the short: the venues say what is where
        pos = await perp_position(perp)
        return await hold_margin(session, -pos["qty"], pos)
    return await _move_in(session, margin_due(session.journal, spot, perp), "restore",
                          "the carry's BTC margins the open short")


async def _move_in(session: Any, lacking: float, key: str, why: str) -> float:
    """Move ``lacking`` BTC from the spot wallet into the coin-margined one,
    at most what the spot wallet has free, nothing under the spot lot; the
    BTC moved."""
    spot = session.spot
    if spot.rules.floor_btc(max(lacking, 0.0)) <= 0:
        return 0.0
    free = balance_of(await spot.call("fetch_balance"), spot.base, "free")
    return await _move_btc(session, f"{key}:{session.now_ns()}:in", spot, session.perp, min(lacking, free), why)


async def coin_wallet(perp: LiveLeg, position: dict) -> float:
    """The coin-margined wallet's balance in its coin, unrealized PnL left out
    (ccxt's total is the margin balance, with it)."""
    return balance_of(await perp.call("fetch_balance"), perp.settle, "total") - float(position.get("unrealized") or 0.0)


async def venue_btc(session: Any, position: dict | None = None) -> float:
    """The BTC the venue holds for the carry's account: the spot wallet's and
    (two wallets) the coin-margined wallet's, unrealized PnL left out
    (``position``: the perp's, when already read)."""
    spot, perp = session.spot, session.perp
    btc = balance_of(await spot.call("fetch_balance"), spot.base, "total")
    if not session.one_wallet:
        btc += await coin_wallet(perp, position if position is not None else await perp_position(perp))
    return btc


async def covered_by_holding(session: Any, contracts: float) -> float:
    """A carry on BTC held: the BTC of the holding an open of ``contracts``
    puts under its short: their worth at the venue's mark, at most what the
    venue holds that no open short hedges yet (the rest is bought)."""
    perp = session.perp
    mark = float((await perp.call("fetch_funding_rate", perp.symbol)).get("markPrice") or 0.0)
    if not mark > 0:
        return 0.0
    pos = await perp_position(perp)
    unhedged = await venue_btc(session, pos) + min(pos["qty"], 0.0)
    return max(min(unhedged, perp.btc(contracts, mark)), 0.0)


async def hold_margin(session: Any, short_btc: float, position: dict) -> float:
    """A carry on BTC held: bring the coin-margined wallet up to
    ``short_btc`` (the BTC the short hedges, by the venue) from the spot
    wallet's free BTC (``position``: the perp's as just read); the BTC moved."""
    perp = session.perp
    if session.one_wallet or short_btc <= 0:
        return 0.0
    there = await coin_wallet(perp, position)
    return await _move_in(session, short_btc - there, "hold", "the BTC held margins the short")


async def hold_for_open(session: Any, covered: float) -> float:
    """Before an open of a carry on BTC held: the coin-margined wallet holds
    the BTC of the short after it (what is short now and ``covered``, the
    holding's share of the open); the BTC moved."""
    pos = await perp_position(session.perp)
    return await hold_margin(session, covered - min(pos["qty"], 0.0), pos)
