"""A rotating perp/perp carry on paper (``fundarb run --paper`` with a
[rotation] config): the runner holds one pair of venues at a time, and a
watch moves it by the rotation rule the backtest uses.

- **The watch.** Every 8 hours of venue time (the runner's clock) it asks
  every rotation venue for its settled rates (public calls, no keys) and
  feeds them to ``sim.rotation.RotationSignals``, the backtest's plan's own
  signals and decision (``core.rotation``).
- **A move.** The strategy is told to leave (``CarryStrategy.leave``): the
  pair is closed through the paper simulator like any exit, and no entry
  follows. Once both legs are flat the runner stops; the capital leaves each
  venue the new pair does not use (a withdrawal of ``transfer.fee``, arriving
  ``transfer.delay_minutes`` of venue time later), and a runner on the new pair
  starts on the same trade log with the equity the last one ended with.
- **The trade log** keeps the pair held and when (state ``pair_held``, the
  key and the ``long``/``short`` fields the venue commands' rotation keeps,
  ``live.execution.rotation``; here with ``since`` and a move under way), and each
  move as a ``rotation`` alert line, so a restart carries on with the pair it
  held, and a move that was under way (the old pair flat, the new one not
  started) is finished, never started twice.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import attrs

from fundarb.app.runner.loop import Runner, settled_rates
from fundarb.app.runner.paper import ACCOUNT_FIELDS
from fundarb.config import Config
from fundarb.core.model import NS_PER_SECOND
from fundarb.core.rotation import Move, Pair
from fundarb.core.strategy import settlements_covering
from fundarb.live.ccxt.client import Target, connect
from fundarb.live.ccxt.credentials import Credentials
from fundarb.live.ccxt.ratelimit import RequestQueue
from fundarb.live.execution.preflight import funding_interval_hours
from fundarb.live.execution.rotation import HELD_KEY
from fundarb.live.execution.session import open_session
from fundarb.live.journal import PAPER_ACCOUNTS_KEY, Journal
from fundarb.sim.rotation import BAR_NS, REFERENCE_INTERVAL_H, RotationSignals, check_venues, pair_config
from fundarb.support.waits import stopped_within


@attrs.define
class VenueRates:
    """Public clients of every rotation venue, asked for their settled rates."""

    cfg: Config
    target: Target
    clients: dict[str, tuple[Any, RequestQueue, str, float]] = attrs.field(factory=dict)

    async def open(self) -> None:
        for v in self.cfg.rotation_venues():
            client = connect(v.exchange, Credentials(v.exchange), self.target)
            queue = RequestQueue.for_exchange(client)
            await queue.call(client.load_markets)
            funding = await queue.call(client.fetch_funding_rate, v.symbol)
            self.clients[v.exchange] = (client, queue, v.symbol, funding_interval_hours(funding))

    async def close(self) -> None:
        for client, *_ in self.clients.values():
            await client.close()

    async def feed(self, watch: RotationSignals, now: int, tolerance_ns: int) -> None:
        """Each venue's settlements up to ``now`` into ``watch`` (one venue that
        cannot answer keeps its last signal)."""
        for venue, (client, queue, symbol, interval) in self.clients.items():
            n = settlements_covering(self.cfg.strategy.signal_settlements, REFERENCE_INTERVAL_H, interval)

            async def history(since: int, limit: int, client: Any = client, queue: RequestQueue = queue,
                              symbol: str = symbol) -> Any:
                return await queue.call(client.fetch_funding_rate_history, symbol, since, limit)

            try:
                settled = await settled_rates(history, n, interval, now, tolerance_ns)
            except Exception:  # noqa: BLE001 - its signal stays as it was; the next bar asks again
                continue
            for at, rate in settled:
                watch.settle(venue, at, rate, interval)

    async def venue_time(self) -> int:
        client, queue, _, _ = next(iter(self.clients.values()))
        return int(await queue.call(client.fetch_time)) * 1_000_000


def held_state(journal: Journal) -> dict[str, Any] | None:
    text = journal.get_state(HELD_KEY)
    return json.loads(text) if text else None


def _save(journal: Journal, state: dict[str, Any], now: int) -> None:
    # {"long", "short"} as the venue commands keep it, with "since", and "moving_to" and "closed_at" during a move
    journal.set_state(HELD_KEY, json.dumps(state, sort_keys=True), now)


def move_paper_capital(journal: Journal, cfg: Config, old: Pair, new: Pair, now: int) -> tuple[float, int]:
    """The paper accounts after a move: the flat old pair's cash, less a
    withdrawal fee for each venue the capital leaves, split over the new pair's
    accounts as ``perp_allocation`` says. (equity moved, withdrawals)."""
    saved = json.loads(journal.get_state(PAPER_ACCOUNTS_KEY) or "{}")
    accounts = saved.get("accounts", {})
    total = sum(float(a.get("cash", 0.0)) for a in accounts.values())
    total += sum(float(t["amount"]) for t in saved.get("in_flight", []))
    left = len(old.venues() - new.venues())
    total -= left * cfg.transfer.fee
    pcfg = pair_config(cfg, new, 0, 1, total)
    fresh = dict.fromkeys(ACCOUNT_FIELDS, 0.0)
    moved = {"accounts": {pcfg.spot_account: {**fresh, "cash": pcfg.spot_cash},
                          pcfg.perp_account: {**fresh, "cash": pcfg.perp_cash}}, "in_flight": []}
    journal.set_state(PAPER_ACCOUNTS_KEY, json.dumps(moved, sort_keys=True), now)
    return total, left


async def run_rotating(cfg: Config, path: Path, target: Target, log: Any, stop: asyncio.Event,
                       waits: Any = None) -> None:
    """Hold one pair at a time and move it by the rotation rule until ``stop``."""
    check_venues(cfg)  # every venue's liquidation rule is modelled, as a backtest of the rotation needs
    rates = VenueRates(cfg, target)
    await rates.open()
    tolerance = int(round(cfg.data.settlement_tolerance_seconds * NS_PER_SECOND))
    try:
        journal = Journal(path)
        try:
            state = held_state(journal)
        finally:
            journal.close()
        now = await rates.venue_time()
        watch = RotationSignals(cfg, 0.0)
        await rates.feed(watch, now, tolerance)
        if state is None:
            first = watch.decide(None, now, now)
            pair = first.to if first is not None else Pair(cfg.spot.exchange, cfg.perp.exchange)
            state = {"long": pair.long, "short": pair.short, "since": now}
            log.info("rotation_start", pair=str(pair), signals={str(p): a for p, a in watch.known().items()})
        while not stop.is_set():
            state = await _hold(cfg, path, target, log, stop, waits, rates, watch, state, tolerance)
    finally:
        await rates.close()


async def _hold(cfg: Config, path: Path, target: Target, log: Any, stop: asyncio.Event, waits: Any,
                rates: VenueRates, watch: RotationSignals, state: dict[str, Any], tolerance: int) -> dict[str, Any]:
    """Run the held pair until a move has closed it (or ``stop``); the state after."""
    pair = Pair(state["long"], state["short"])
    if "moving_to" in state:  # a move under way when the last process stopped: finish it first
        return await _arrive(cfg, path, log, stop, rates, state)
    pcfg = pair_config(cfg, pair, 0, 1, cfg.capital)
    pcfg = attrs.evolve(pcfg, data=cfg.data)
    session = await open_session(pcfg, path, target, trading=False, paper=True, waits=waits)
    _save(session.journal, state, session.now_ns())
    runner = Runner(pcfg, "paper", session, log)
    pair_stop = asyncio.Event()
    try:
        await runner.start()
        watch.price = runner.engine.book.spot.price if runner.engine is not None else 0.0
        log.info("rotation_holding", pair=str(pair), since=state["since"])
        task = asyncio.create_task(runner.run(pair_stop))
        move = await _watch(cfg, runner, rates, watch, pair, state, stop, pair_stop, log, tolerance)
        pair_stop.set()
        await task
        if runner.paper is not None:  # the simulator's accounts as the pair ends (a pair that never traded too)
            runner.paper.after_step(session.now_ns())
        if move is None:
            return state
        closed_at = runner.now
        state = {**state, "moving_to": {"long": move.to.long, "short": move.to.short}, "closed_at": closed_at}
        _save(session.journal, state, session.now_ns())
    finally:
        await session.close()
    return await _arrive(cfg, path, log, stop, rates, state)


async def _watch(cfg: Config, runner: Runner, rates: VenueRates, watch: RotationSignals, pair: Pair,
                 state: dict[str, Any], stop: asyncio.Event, pair_stop: asyncio.Event, log: Any,
                 tolerance: int) -> Move | None:
    """Every 8 hours of venue time, the rule; after a move, until the pair is flat."""
    checked = runner.now // BAR_NS
    move: Move | None = None
    poll = cfg.runner_settings.kill_poll_seconds
    while not stop.is_set():
        await stopped_within(stop, poll)
        engine = runner.engine
        assert engine is not None
        if move is not None:
            if engine.book.is_flat and not engine.open_orders:
                return move
            continue
        if runner.now // BAR_NS <= checked:
            continue
        checked = runner.now // BAR_NS
        await rates.feed(watch, runner.now, tolerance)
        move = watch.decide(pair, int(state["since"]), runner.now)
        if move is not None:
            log.info("rotation_move", current=str(pair), to=str(move.to), gain_apr=move.gain_apr, bar_apr=move.bar_apr,
                     venue_ts=runner.now)
            runner.session.alert("rotation", f"moving the carry from {pair} to {move.to}: the differential "
                                 f"{move.gain_apr:.2%} beats the bar {move.bar_apr:.2%}", "info")
            async with runner.turn:
                engine.strategy.leave()
    return None


async def _arrive(cfg: Config, path: Path, log: Any, stop: asyncio.Event, rates: VenueRates,
                  state: dict[str, Any]) -> dict[str, Any]:
    """The capital of a closed pair on its way to the next: withdrawals, their delay, the new pair's accounts."""
    old = Pair(state["long"], state["short"])
    new = Pair(state["moving_to"]["long"], state["moving_to"]["short"])
    if old.venues() - new.venues():  # the withdrawals take their time on the venues' clock
        due = int(state["closed_at"]) + int(cfg.transfer.delay_minutes * 60 * NS_PER_SECOND)
        while not stop.is_set() and await rates.venue_time() < due:
            await stopped_within(stop, cfg.runner_settings.kill_poll_seconds)
        if stop.is_set():
            return state
    journal = Journal(path)
    try:
        now = await rates.venue_time()
        equity, withdrawals = move_paper_capital(journal, cfg, old, new, now)
        state = {"long": new.long, "short": new.short, "since": now}
        _save(journal, state, now)
        journal.add_alert(now, "rotation", "info", "", f"moved the carry from {old} to {new}: {withdrawals} "
                          f"withdrawal(s), {equity:,.2f} USDT on the new pair")
    finally:
        journal.close()
    log.info("rotation_arrived", pair=str(new), equity=equity, withdrawals=withdrawals, venue_ts=now)
    return state
