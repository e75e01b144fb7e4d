"""The strategy runner: the one Engine on live market data, paper or live.

``paper``: the venues' live feeds drive the discrete-event simulator, which
fills the engine's orders with its fee, slippage and latency models (nothing
is sent). The trade log records it as it records live trading
(``fundarb.app.runner.paper``): orders, fills and funding under the paper venue
identity, alerts and heartbeats; a first run starts from the config's
capital, a restart from the trade log's last step. ``live``: the engine's orders go to the venues through the
journaled, paired execution of the live backend (``LiveVenue``), and the
book starts from what the venues and the trade log hold.

Either way the engine is the backtest's: the same strategy (entry and exit
thresholds, target profit, maximum holding time, the quiet window around
settlements) and the same risk monitor (delta drift, margin buffer and
top-ups, drawdown). The engine's clock is the venues' time of the latest
market event (``Pacer``), so a run against the emulator runs on its data
time. Around the engine the runner keeps, on the wall clock:

- the kill switch in the trade log (``fundarb kill``/``resume``), read every
  ``runner.kill_poll_seconds``: halts the engine and, with ``--flatten`` or
  ``risk.flatten_on_kill``, closes both legs paired. A halt from inside (the
  drawdown stop, a naked leg, a broken invariant, a reconciliation mismatch)
  is written there too, so it survives restarts until ``fundarb resume``;
- live: reconciliation at start (recovering any operation a killed process
  left), every ``live.reconcile_interval_seconds`` and after reconnects;
  every settlement passed while in position must show up as the venue's
  payment in the trade log, else a critical alert (``missed``);
- an alert when a venue stops answering within ``runner.unreachable_alert_minutes``
  of a settlement;
- a heartbeat log line (and ``runner_heartbeat`` in the trade log) every
  ``runner.heartbeat_seconds``.

Market prices pass the engine's guard (``core.market_guard``, the config's
``[market_data]``) before the book sees them, in paper before the simulator
too: an implausible one is held, alerted once (``implausible_price``), and
logged again when it is accepted or dropped.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import numpy as np

from fundarb.app.runner.pacing import Pacer
from fundarb.app.runner.paper import PaperLedger, sim_gaps
from fundarb.config import Config
from fundarb.core.book import COIN, Collateral, PositionBook, VenueAccount, drift_of, liquidation_of, margin_buffer
from fundarb.core.clock import SimClock
from fundarb.core.engine import Engine
from fundarb.core.errors import FundarbError
from fundarb.core.funding import scheduled_instant
from fundarb.core.liquidation import ISOLATED, MarginRule
from fundarb.core.model import NS_PER_HOUR, NS_PER_SECOND, FundingSettlement, MarketKind, Quote
from fundarb.core.strategy import CarryStrategy, settlements_covering
from fundarb.live.ccxt.feed import MarketFeed
from fundarb.live.execution.holdings import holdings
from fundarb.live.execution.orders import LiveLeg
from fundarb.live.execution.paired import BLOCK_KEY, FLATTEN_KEY
from fundarb.live.execution.preflight import balance_of, funding_interval_hours, perp_position, venue_margin_rule
from fundarb.live.execution.reconcile import KILL_SWITCH_PREFIX, learn_funding, reconcile
from fundarb.live.execution.session import LiveSession
from fundarb.live.execution.transfers import coin_wallet, venue_btc
from fundarb.live.execution.watch import LiveWatch
from fundarb.live.journal import HEARTBEAT_KEY, PAPER_HELD_KEY
from fundarb.live.venue import LiveVenue, dust_of
from fundarb.sim import SimExchange
from fundarb.sim.backtest import long_kind_of, simulator_of
from fundarb.support.waits import stopped_within
from fundarb.wiring import collateral_of, contract_size_of, venue_costs, venue_leverage, venue_margin_mode, wire_engine

PEAK_KEY = "runner_peak_equity"
PAYMENT_ASKS = 3  # a settlement not in the trade log after this many successful asks is missed



async def settled_rates(history: Callable[[int, int], Awaitable[list[dict[str, Any]]]], n: int, interval_h: float,
                        now: int, tolerance_ns: int) -> list[tuple[int, float]]:
    """A venue's last ``n`` settled rates up to ``now``, oldest first, each at
    its scheduled instant (a stamp a few ms late snapped within
    ``tolerance_ns``): ``history(since_ms, limit)`` is its ccxt funding history."""
    rows = await history((now - int((n + 3) * interval_h * NS_PER_HOUR)) // 1_000_000, n + 10)
    settled = sorted({at: float(r["fundingRate"]) for r in rows
                      if (at := scheduled_instant(int(r["timestamp"]) * 1_000_000, interval_h, tolerance_ns)) is not None
                      and at <= now}.items())
    return settled[-n:]


class RunnerError(FundarbError, RuntimeError):
    """The runner cannot start; the message says why."""


class SessionRecorder:
    """Engine rows -> JSON log lines; alerts also to the trade log and
    channels; paper, the orders, fills and funding to the trade log too."""

    def __init__(self, session: LiveSession, log: Any, paper: PaperLedger | None = None) -> None:
        self.session, self.log, self.paper = session, log, paper

    def record(self, kind: str, row: dict[str, Any]) -> None:
        self.log.info(kind, **row)
        if self.paper is not None:
            self.paper.record(kind, row)
        if kind == "alert":
            self.session.alert(row["kind"], row["message"], row["severity"])


@attrs.define
class RunStats:
    started: float = attrs.field(factory=time.time)
    events: int = 0
    heartbeats: int = 0
    operations: int = 0
    max_drift: float = 0.0  # after each operation settles, and at every heartbeat
    settlements: list[dict[str, Any]] = attrs.field(factory=list)  # instants passed while in position
    unreachable_alerts: int = 0
    stale_feeds: int = 0  # streams the watchdog on data age declared stale
    prices: dict[str, int] = attrs.field(factory=dict)  # the market guard's outcomes: held, accepted, dropped, ...


class Runner:
    def __init__(self, cfg: Config, mode: str, session: LiveSession, log: Any) -> None:
        if mode not in ("paper", "live"):
            raise ValueError(f"mode must be paper or live, got {mode!r}")
        if cfg.strategy.allow_reverse:
            raise RunnerError("strategy.allow_reverse: the reverse carry (short spot on margin) is backtest-only; "
                              "the runner trades long spot / short perp")
        self.cfg, self.mode, self.session, self.log = cfg, mode, session, log
        self._tolerance_ns = int(round(cfg.data.settlement_tolerance_seconds * NS_PER_SECOND))
        self.journal = session.journal
        self.stats = RunStats()
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.turn = asyncio.Lock()  # one engine step (event, orders, answers) at a time
        if cfg.long_perp and mode != "paper":
            raise RunnerError(f"config {cfg.name} is a perp/perp carry: the runner trades it on paper (--paper); "
                              "live, `fundarb trade open/close/rotate` trade it")
        # a perp/perp carry's long perp settles on its own venue's schedule
        long = (cfg.spot_account, lambda at: self._settled_rate(at, self.session.spot)) if cfg.long_perp else None
        self.pacer = Pacer(cfg.perp_account, lambda at: self._settled_rate(at, self.session.perp), self._tolerance_ns,
                           max_backstep_ns=int(cfg.runner_settings.max_clock_backstep_seconds * NS_PER_SECOND),
                           long_perp=long)
        self.engine: Engine | None = None
        self.sim: SimExchange | None = None
        self.venue: LiveVenue | None = None
        self.paper: PaperLedger | None = None  # paper: the simulator's word, written to the trade log
        self.feeds: list[MarketFeed] = []  # both legs', set when the runner runs
        self.halt_written = ""  # the kill-switch text this runner wrote (to see a resume)
        self.payments: dict[int, int] = {}  # settlement instant (in position) -> successful asks so far
        self._unreachable_warned: set[tuple[str, int]] = set()
        self._down_since: dict[str, float] = {}  # feed account -> monotonic time it was first seen down
        self._warm = False  # paper: both legs quoted in the simulator
        self.margin_setting: dict[str, Any] = {}  # live: the venue's leverage and margin mode as read back
        self.margin_view: dict[str, Any] = {}  # live: the heartbeat's margin figures by the venue's model

    # --- start --------------------------------------------------------------------
    @property
    def now(self) -> int:
        return self.pacer.now

    def _engine_now(self) -> int:
        return self.engine.clock.now_ns() if self.engine is not None else self.pacer.now

    async def start(self) -> None:
        """Reconcile (live), build the book, strategy and engine, read the kill switch."""
        s = self.session
        if self.mode == "live":
            rec = await reconcile(s, "start")
            self.log.info("reconciliation", ok=rec.ok, mismatches=list(rec.mismatches), notes=list(rec.notes))
        ticker, funding, venue_ms = await asyncio.gather(s.spot.call("fetch_ticker", s.spot.symbol),
                                                         s.perp.call("fetch_funding_rate", s.perp.symbol),
                                                         s.perp.call("fetch_time"))
        spot_px = float(ticker.get("last") or ticker.get("close") or 0.0) or 0.5 * (
            float(ticker["bid"]) + float(ticker["ask"]))
        mark = float(funding.get("markPrice") or 0.0) or spot_px
        start_ns = int(venue_ms) * 1_000_000  # the venue's clock: the emulator's runs on its data time
        self.pacer.now = start_ns
        if self.mode == "live":
            await self._set_venue_margin()  # before the first order, or not at all
            # the venue's answers are stamped at the event in hand (the engine's clock), not at the
            # pacer's clock, which has already moved past the timers of that event's step
            self.venue = LiveVenue(s, self._engine_now)
        margin, margin_note = await venue_margin_rule(s.perp, start_ns)
        if margin_note:
            self.log.warning("margin_tiers", note=margin_note)
        else:
            self.log.info("margin_tiers", venue=margin.venue, symbol=margin.symbol, tiers=len(margin.tiers),
                          as_of=margin.as_of)
        venue: Any = self.venue
        if self.mode == "paper":
            self.sim = venue = self._simulator(margin)
            self.paper = PaperLedger(s, self.sim)
        book, resumed = await self._book(spot_px, mark, start_ns)
        self.engine = wire_engine(self.cfg, venue, book, SimClock(start_ns), SessionRecorder(s, self.log, self.paper),
                                  costs=venue_costs(self.cfg, margin), spot_price=spot_px, config_hash=s.config_hash)
        strategy, monitor = self.engine.strategy, self.engine.monitor
        # client ids carry on from the trade log's: never one used before
        self.engine.intent_seq = self.journal.max_intent_seq(s.config_hash)
        await self._prime_signal(strategy, start_ns, funding_interval_hours(funding))
        if self.cfg.long_perp:  # the long perp's own settled rates feed its signal
            long_funding = await s.spot.call("fetch_funding_rate", s.spot.symbol)
            await self._prime_signal(strategy, start_ns, funding_interval_hours(long_funding), s.spot)
        if resumed:
            self._restore_carry(strategy, book, start_ns)
        peak = float(self.journal.get_state(PEAK_KEY) or 0.0) if resumed else 0.0
        monitor.peak_equity = max(peak, book.equity)
        self.log.info("started", equity=book.equity, spot_qty=book.spot.qty, perp_qty=book.perp.qty,
                      perp_entry=book.perp.entry, signal_apr=strategy.signal.current_apr(),
                      in_carry=strategy.direction != 0, entry_ts=strategy.entry_ts)
        await self._check_kill_switch()

    async def _book(self, spot_px: float, mark: float, now: int) -> tuple[PositionBook, bool]:
        """The book the engine starts from, and whether it carries on from
        before: live, what the venues hold (the spot leg as the trade log
        has it, less dust); paper, the paper trade log's last step, else the
        config's cash."""
        cfg, s = self.cfg, self.session
        if self.mode == "paper":
            assert self.paper is not None
            saved = self.paper.restore(now)
            size, collateral = contract_size_of(cfg), collateral_of(cfg)
            if saved is None:
                held = cfg.held_btc(spot_px)  # a carry on BTC held: the capital's worth in BTC now
                if held:
                    assert self.sim is not None
                    self.sim.accounts[cfg.spot_account].acct.qty = held
                    self.journal.set_state(PAPER_HELD_KEY, repr(held), now)
                spot = VenueAccount(cfg.spot_account, long_kind_of(cfg), cfg.spot_cash, qty=held, price=spot_px)
                perp = VenueAccount(cfg.perp_account, MarketKind.PERP, cfg.perp_cash, price=mark, contract_size=size)
                return PositionBook.restore(spot, perp, now, collateral=collateral), False
            spot = VenueAccount(cfg.spot_account, long_kind_of(cfg), price=spot_px, **saved[cfg.spot_account])
            perp = VenueAccount(cfg.perp_account, MarketKind.PERP, price=mark, contract_size=size,
                                **saved[cfg.perp_account])
            # the funding the book counts is in the quote (an inverse perp's BTC valued at its settlement's mark)
            paid = [f["amount"] * (f["mark"] if size and f["mark"] else 1.0) for f in self.journal.rows("funding")]
            # the capital stays the config's, so the PnL counts from the first run
            book = PositionBook.restore(spot, perp, now, initial_equity=cfg.capital,
                                        funding_received=sum(a for a in paid if a > 0),
                                        funding_paid=sum(a for a in paid if a < 0), collateral=collateral)
            self.log.info("paper_resumed", journal=str(self.journal.path), spot_qty=book.spot.qty,
                          perp_qty=book.perp.qty, perp_entry=book.perp.entry, equity=book.equity,
                          fills=self.journal.count("fills"), funding_payments=len(paid))
            return book, True
        spot_bal, perp_bal, pos = await asyncio.gather(s.spot.call("fetch_balance"), s.perp.call("fetch_balance"),
                                                       perp_position(s.perp))
        if s.perp.face:
            return await self._coin_book(spot_bal, pos, spot_px, mark, now), True
        spot_cash = balance_of(spot_bal, s.spot.quote, "total")
        perp_cash = balance_of(perp_bal, s.perp.quote, "total") - pos["qty"] * (mark - pos["entry"])
        if s.spot.exchange is s.perp.exchange:  # one account holds both legs' cash: split it as configured
            total = spot_cash
            spot_cash, perp_cash = total * (1 - cfg.perp_allocation), total * cfg.perp_allocation
        js = self.journal.position(s.spot.account, s.spot.base)
        assert self.venue is not None
        self.venue.dust = dust_of(s.spot.rules, js, pos["qty"], spot_px)
        spot = VenueAccount(cfg.spot_account, MarketKind.SPOT, spot_cash, qty=js - self.venue.dust, price=spot_px)
        perp = VenueAccount(cfg.perp_account, MarketKind.PERP, perp_cash, qty=pos["qty"], entry=pos["entry"], price=mark)
        return PositionBook.restore(spot, perp, now), True

    async def _coin_book(self, spot_bal: dict[str, Any], pos: dict[str, Any], spot_px: float, mark: float,
                         now: int) -> PositionBook:
        """A coin-margined carry's book from the venues and the trade log: the
        carry's BTC (with what the short settled in) on the spot leg less the
        dust closed carries left, the short as the venue holds it (BTC at its
        entry), the spot wallet's cash; the coin-margined wallet's BTC beyond
        the carry's is not the carry's capital. A carry on BTC held: the BTC
        both wallets hold is its spot leg."""
        cfg, s = self.cfg, self.session
        assert self.venue is not None
        held = holdings(self.journal, s.spot, s.perp)
        if cfg.keeps_btc:  # a carry on BTC held: the holding is what the venues hold
            btc = await venue_btc(s)
            self.venue.dust = held.spot_btc - btc  # negative: the BTC held that no fill of the trade log brought
        else:
            self.venue.dust = dust_of(s.spot.rules, held.spot_btc, pos["qty"], spot_px)
            btc = held.spot_btc - self.venue.dust
        spot = VenueAccount(cfg.spot_account, MarketKind.SPOT, balance_of(spot_bal, s.spot.quote, "total"),
                            qty=btc, price=spot_px)
        perp = VenueAccount(cfg.perp_account, MarketKind.PERP, 0.0, qty=pos["qty"], entry=pos["entry"], price=mark,
                            contract_size=s.perp.face)
        return PositionBook.restore(spot, perp, now, collateral=collateral_of(cfg))

    def _simulator(self, margin: MarginRule) -> SimExchange:
        seed, = np.random.SeedSequence(self.cfg.seed).spawn(1)
        return simulator_of(self.cfg, margin, iter(()), seed)

    async def _prime_signal(self, strategy: CarryStrategy, now: int, interval_h: float,
                            leg: LiveLeg | None = None) -> None:
        """The last settled rates, as the backtest's signal would hold them:
        the short perp's, or ``leg``'s (a perp/perp carry's long perp: as many
        of its own as cover the short's window)."""
        s, n = self.session, self.cfg.strategy.signal_settlements
        leg = leg or s.perp
        self.pacer.schedules[leg.account].interval_hours = interval_h
        if leg is not s.perp:
            n = settlements_covering(n, self.pacer.interval_hours, interval_h)
        try:
            settled = await settled_rates(lambda since, limit: leg.call("fetch_funding_rate_history", leg.symbol,
                                                                        since, limit),
                                          n, interval_h, now, self._tolerance_ns)
        except Exception as exc:  # noqa: BLE001 - the signal fills from the next settlements
            self.log.warning("signal_history_unavailable", error=f"{type(exc).__name__}: {exc}"[:300])
            return
        for at, rate in settled:
            strategy.on_settlement(leg.account, at, rate, interval_h)
        self.log.info("signal_primed", account=leg.account, settlements=len(settled),
                      signal_apr=strategy.signal.current_apr(), long_apr=strategy.long_apr())

    def _restore_carry(self, strategy: CarryStrategy, book: PositionBook, now: int) -> None:
        """A carry held before a restart is the strategy's again: its entry
        time and the funding and fees it made so far count toward the exits."""
        if book.is_flat:
            return
        strategy.direction = 1 if book.perp.qty < 0 else -1
        opens = [o for o in self.journal.operations() if o["kind"] == "open" and o["status"] in ("done", "rebalanced")]
        entry_ts = now
        if opens:
            fills = [f for r in self.journal.orders(opens[-1]["op_id"]) for f in self.journal.fills(r["client_id"])]
            entry_ts = min((int(f["venue_ts"]) for f in fills), default=now)
        # in the quote: an inverse perp's BTC payments at their settlement's mark (else the mark now)
        coin = book.perp.contract_size > 0
        funding = sum(f["amount"] * ((f["mark"] or book.perp.price) if coin else 1.0)
                      for f in self.journal.rows("funding") if f["venue_ts"] >= entry_ts)
        fees = sum(f["fee_quote"] or 0.0 for f in self.journal.rows("fills") if f["venue_ts"] >= entry_ts)
        strategy.entry_ts = min(entry_ts, now)
        strategy.entry_carry = -(funding - fees)

    # --- the loop -------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        s = self.session
        # both legs' feeds; live, the watch also reconciles on its interval and after reconnects
        watch = LiveWatch(s, self.inbox.put_nowait, unstamped_ns=_unstamped, reconciling=self.mode == "live",
                          max_silence_s=self._feed_silence_limit, on_stale=self._feed_stale)
        self.feeds = watch.feeds
        rs = self.cfg.runner_settings
        tasks = [asyncio.create_task(watch.run(stop)),
                 asyncio.create_task(self._every(rs.kill_poll_seconds, self._tick, stop)),
                 asyncio.create_task(self._every(rs.kill_poll_seconds, self._settlement_payments, stop)),
                 asyncio.create_task(self._every(rs.heartbeat_seconds, self._heartbeat, stop))]
        try:
            while not stop.is_set():
                try:
                    event = await asyncio.wait_for(self.inbox.get(), 0.5)
                except TimeoutError:
                    continue
                async with self.turn:
                    await self._handle(event)
        finally:
            stop.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._record_paper()
            await self._heartbeat()
            self.log.info("stopped", **self.summary())

    async def _every(self, seconds: float, fn: Any, stop: asyncio.Event) -> None:
        while not await stopped_within(stop, seconds):
            try:
                await fn()
            except Exception as exc:  # noqa: BLE001 - a failed tick is logged; the next one tries again
                self.log.warning("tick_failed", task=getattr(fn, "__name__", "?"),
                                 error=f"{type(exc).__name__}: {exc}"[:300])

    async def _handle(self, event: Any) -> None:
        engine = self.engine
        assert engine is not None
        self.stats.events += 1
        paced = await self.pacer.pace(event)
        for at, what in self.pacer.problems:  # never a silent zero: say what could not be settled
            self.session.alert("settlement_unknown", f"funding settlement at {_utc(at)}: {what}", "critical")
        self.pacer.problems.clear()
        for what in self.pacer.clock_problems:  # a venue clock that went back: its old prices are not fed
            self.session.alert("clock_backwards", what, "critical")
        self.pacer.clock_problems.clear()
        for ts, prio, ev in paced:
            if type(ev) is FundingSettlement and engine.book.perp.qty != 0:
                self._settlement_in_position(ev)
            if self.sim is not None:
                # the simulator stands in for the venue: a price the engine's guard holds never reaches it
                # (it would liquidate on it); a held price confirmed now is fed now
                for passed in engine.screen(ev):
                    self._paper(engine, ts, prio, passed if passed.ts == ts else attrs.evolve(passed, ts=ts))
            else:
                engine.on_event(ev)
                await self._execute()
        await self._after_step()

    def _paper(self, engine: Engine, ts: int, prio: int, ev: Any) -> None:
        assert self.sim is not None
        if type(ev) is Quote:  # the simulator's depth model, not the venue's touch sizes
            depth = (self.cfg.spot if ev.venue == self.cfg.spot_account else self.cfg.perp).depth_btc
            ev = attrs.evolve(ev, bid_size=depth, ask_size=depth)
        answers = self.sim.feed(ts, prio, ev)
        if not self._warm:  # the simulator fills against quotes: the engine waits for both legs'
            for _ in answers:
                pass
            self._warm = all(a.quote is not None for a in self.sim.accounts.values())
            return
        for out in answers:
            engine.on_event(out)

    async def _execute(self) -> None:
        """Live: send what the engine asked for, feed the answers back, until it asks nothing more."""
        venue, engine = self.venue, self.engine
        assert venue is not None and engine is not None
        for _ in range(10):  # an answer may make the engine ask again (a rebalance after a partial pair)
            if not venue.busy and not venue.waiting_transfers:
                return
            done = len(venue.outcomes)
            for answer in await venue.flush():
                engine.on_event(answer)
            for outcome in venue.outcomes[done:]:
                self.stats.operations += 1
                self.log.info("operation", op_id=outcome.op_id, kind=outcome.kind, status=outcome.status,
                              spot=outcome.spot_change, perp=outcome.perp_change, actions=list(outcome.actions))
                if outcome.status == "naked":
                    self._halt(f"naked leg after operation {outcome.op_id}")
            self._check_books()
            if not venue.busy:
                return

    def _check_books(self) -> None:
        """The engine's legs must be what the trade log's fills hold (less the
        spot dust closed carries left): anything else is a broken invariant
        (the kill switch)."""
        engine, s, venue = self.engine, self.session, self.venue
        assert engine is not None and venue is not None
        held = holdings(self.journal, s.spot, s.perp)
        js, jp = held.spot_btc - venue.dust, held.perp_units
        b = engine.book
        unit = s.perp.unit
        # coin-margined, the spot leg holds what the short settled in: the venue's BTC payments to its 8
        # decimals against the engine's exact ones; a lost fill is a lot (1e-5 BTC) or a contract
        tol_spot, tol_perp = (1e-6, 1e-6) if s.perp.face else (1e-8, 1e-8)
        if abs(b.spot.qty - js) > tol_spot or abs(b.perp.units - jp) > tol_perp:
            self._halt(f"broken invariant: the engine holds spot {b.spot.qty:+.8g} BTC / perp {b.perp.units:+.8g} "
                       f"{unit}, the trade log {js:+.8g} / {jp:+.8g}")

    def _record_paper(self) -> None:
        """Paper: the step's orders, fills and funding and the simulator's
        accounts to the trade log, in one transaction."""
        if self.paper is None or not self.paper.rows:
            return
        self.paper.commit(self.session.now_ns())
        assert self.sim is not None
        gaps = sim_gaps(self.journal, self.session, self.sim, 1e-8)  # the trade log holds what the simulator holds
        if gaps and not self.halt_written:
            self._halt(f"broken invariant: the paper simulator and the trade log differ: {'; '.join(gaps)}")

    async def _after_step(self) -> None:
        engine = self.engine
        assert engine is not None
        self._record_paper()
        self._price_notes()
        if not engine.open_orders:
            self.stats.max_drift = max(self.stats.max_drift, engine.book.drift)
        if engine.monitor.kill.halted and not self.halt_written:
            self._write_halt(engine.monitor.kill.reason)

    def _price_notes(self) -> None:
        """What the engine's guard did with implausible prices: a held one was
        alerted by the engine (``implausible_price``, through the session's
        alerter like every engine alert); here each outcome is logged and
        counted for the heartbeat."""
        engine = self.engine
        assert engine is not None
        for n in engine.price_notes:
            self.stats.prices[n.what] = self.stats.prices.get(n.what, 0) + 1
            log = self.log.warning if n.what in ("held", "refused", "replaced") else self.log.info
            log("price_guard", what=n.what, series=n.series, price=n.price, accepted_before=n.reference,
                data_ts=n.ts, message=n.message)
        engine.price_notes.clear()

    # --- kill switch ------------------------------------------------------------------
    def _halt(self, reason: str) -> None:
        engine = self.engine
        assert engine is not None
        engine.halt(reason, self.now, flatten=False)  # risk.flatten_on_kill decides, as in a backtest
        self._write_halt(reason)

    def _write_halt(self, reason: str) -> None:
        text = reason if reason.startswith(KILL_SWITCH_PREFIX) else f"{KILL_SWITCH_PREFIX}: {reason}"
        if (self.journal.blocked() or "") != text:
            self.journal.set_state(BLOCK_KEY, text, self.session.now_ns())
        self.halt_written = text
        self.log.warning("halted", reason=reason)

    async def _check_kill_switch(self) -> None:
        engine = self.engine
        assert engine is not None
        if self.venue is not None:  # what others traded on the account (a liquidation, a manual close)
            for fill in self.venue.external_fills():
                engine.on_event(fill)
                self.log.warning("external_fill", account=fill.venue, side=fill.side.value, qty=fill.qty,
                                 price=fill.price, client_id=fill.client_id)
        blocked = self.journal.blocked() or ""
        flatten = self.journal.get_state(FLATTEN_KEY)
        if blocked and not blocked.startswith(KILL_SWITCH_PREFIX):
            # a reconciliation mismatch or a naked leg: the kill switch, held until `fundarb resume`
            blocked = f"{KILL_SWITCH_PREFIX}: {blocked}"
            self.journal.set_state(BLOCK_KEY, blocked, self.session.now_ns())
        if blocked:
            if not engine.monitor.kill.halted:
                engine.halt(blocked[len(KILL_SWITCH_PREFIX) + 2:] or blocked, self.now, flatten=False)
                self.log.warning("halted", reason=blocked)
            self.halt_written = blocked
            # paper: the simulator fills against quotes, so its orders wait until both legs have one
            if flatten and not engine.book.is_flat and not engine.open_orders and (self.sim is None or self._warm):
                engine.halt(blocked, self.now, flatten=True)
        elif self.halt_written:  # lifted with `fundarb resume`
            engine.monitor.kill.resume()
            engine.monitor.peak_equity = engine.book.equity  # the drawdown stop counts from here again
            self.halt_written = ""
            self.log.warning("resumed")
        if flatten and engine.book.is_flat:
            self.journal.set_state(FLATTEN_KEY, None, self.session.now_ns())
            self.log.info("flattened")

    async def _tick(self) -> None:
        async with self.turn:
            await self._check_kill_switch()
            if self.venue is not None:
                await self._execute()
            self._record_paper()
        # paper orders complete on the next market event (the simulator's latency)
        self._unreachable_near_settlement()

    # --- settlements ---------------------------------------------------------------
    async def _settled_rate(self, at: int, leg: LiveLeg) -> float | None:
        """``leg``'s settled rate for the instant ``at``, by its venue's funding history."""
        try:
            rows = await asyncio.wait_for(
                leg.call("fetch_funding_rate_history", leg.symbol, at // 1_000_000 - 60_000, 5), 10)
        except Exception as exc:  # noqa: BLE001 - the announced rate stands in; the log says so
            self.log.warning("settled_rate_unavailable", account=leg.account, settlement=at,
                             error=f"{type(exc).__name__}: {exc}"[:300])
            return None
        interval = self.pacer.schedules[leg.account].interval_hours
        for r in rows:  # the venue stamps a few ms late: its row for ``at`` is the one that snaps to it
            if self._instant(int(r["timestamp"]) * 1_000_000, interval) == at:
                return float(r["fundingRate"])
        return None

    def _instant(self, stamp: int, interval_h: float) -> int | None:
        return scheduled_instant(stamp, interval_h, self._tolerance_ns)

    def _settlement_in_position(self, s: FundingSettlement) -> None:
        engine = self.engine
        assert engine is not None
        self.stats.settlements.append({"ts": s.ts, "rate": s.rate, "mark": s.mark, "mark_source": s.mark_source,
                                       "perp_qty": engine.book.perp.qty, "paid": self.mode == "paper"})
        if self.mode == "live":
            self.payments[s.ts] = 0

    async def _settlement_payments(self) -> None:
        """Live: every settlement passed in position must be in the trade log as
        the venue's payment; asked a few times, then a critical alert. (Its own
        task: it waits for the session lock, which a slow reconciliation may
        hold, and the kill switch must not wait with it.)"""
        if not self.payments:
            return
        await learn_funding(self.session)
        paid = {int(f["venue_ts"]) for f in self.journal.rows("funding")}
        for t in list(self.payments):
            row = next(x for x in self.stats.settlements if x["ts"] == t)
            if any(abs(p - t) <= 60 * NS_PER_SECOND for p in paid):
                row["paid"] = True
                del self.payments[t]
                continue
            self.payments[t] += 1
            if self.payments[t] >= PAYMENT_ASKS:
                del self.payments[t]
                row["paid"] = False
                self.session.alert("missed_settlement", f"no funding payment for the settlement at {_utc(t)} in the "
                                   "trade log after " f"{PAYMENT_ASKS} asks", "critical")

    def _near_settlement(self) -> bool:
        """Within ``runner.settlement_window_minutes`` of a settlement, before or after it."""
        nxt = self.pacer.next_settlement
        if not nxt:
            return False
        now = max(self.now, self.session.now_ns())  # the pacer's clock stops with a stalled feed
        window = self.cfg.runner_settings.settlement_window_minutes * 60 * NS_PER_SECOND
        prev = nxt - int(self.pacer.interval_hours * NS_PER_HOUR)
        return abs(nxt - now) <= window or abs(now - prev) <= window

    def _feed_silence_limit(self) -> float:
        """The watchdog on data age: how long a feed's stream may bring nothing."""
        rs = self.cfg.runner_settings
        if self._near_settlement():
            return min(rs.settlement_feed_silence_seconds, rs.max_feed_silence_seconds)
        return rs.max_feed_silence_seconds

    def _feed_stale(self, account: str, stream: str, seconds: float) -> None:
        near = self._near_settlement()
        self.stats.stale_feeds += 1
        self.log.warning("feed_stale", account=account, stream=stream, silent_s=seconds, near_settlement=near)
        self.session.alert("feed_stale", f"{account} {stream} websocket brought nothing for {seconds:g} s: declared "
                           "stale, resubscribing and polling REST meanwhile"
                           + (" (near a funding settlement)" if near else ""), "critical" if near else "warning")

    def _unreachable_near_settlement(self) -> None:
        wall, mono = time.time_ns(), time.monotonic()
        for f in self.feeds:  # how long each venue has been down (not merely quiet)
            if f.is_down(wall):
                self._down_since.setdefault(f.account, mono)
            else:
                self._down_since.pop(f.account, None)
        nxt = self.pacer.next_settlement
        window = self.cfg.runner_settings.unreachable_alert_minutes * 60 * NS_PER_SECOND
        if not nxt or nxt - self.now > window:
            return
        limit = self.cfg.alert_settings.unreachable_seconds
        for account, since in self._down_since.items():
            down_s = mono - since
            if down_s >= limit and (account, nxt) not in self._unreachable_warned:
                self._unreachable_warned.add((account, nxt))
                self.stats.unreachable_alerts += 1
                self.session.alert("venue_unreachable", f"{account} has not answered for {down_s:.0f} s, "
                                   f"{(nxt - self.now) / 60e9:.0f} min before the {_utc(nxt)} settlement", "critical")

    # --- the venue's leverage and margin mode ------------------------------------
    async def _venue_setting(self) -> tuple[float, str]:
        """The perp venue's leverage setting and margin mode for the symbol, as
        it reads them back (nan, '' where it does not say)."""
        leg = self.session.perp
        lev, mode = math.nan, ""
        try:
            got = await leg.call("fetch_leverage", leg.symbol)
            lev = float(got.get("shortLeverage") or got.get("longLeverage") or math.nan)
            mode = str(got.get("marginMode") or "")
        except Exception as exc:  # noqa: BLE001 - the position's own fields are asked next
            self.log.info("venue_leverage", note=f"fetch_leverage: {type(exc).__name__}: {str(exc)[:200]}")
        if lev != lev or not mode:
            pos = await perp_position(leg)
            lev = lev if lev == lev else pos["leverage"]
            mode = mode or pos["mode"]
        return lev, mode

    async def _set_venue_margin(self) -> None:
        """Set the perp venue's leverage (``wiring.venue_leverage``) and margin
        mode (``wiring.venue_margin_mode``: isolated for a linear short,
        cross for a coin-margined one: the collateral model the pre-flight
        and the heartbeat use), then read both back. Anything else refuses to
        trade, with one alert."""
        leg = self.session.perp
        cap, want = venue_leverage(self.cfg), venue_margin_mode(self.cfg)
        try:
            lev, mode = await self._venue_setting()
            if mode != want:
                await leg.call("set_margin_mode", want, leg.symbol)
            if lev != cap:
                await leg.call("set_leverage", cap, leg.symbol)
            lev, mode = await self._venue_setting()
        except Exception as exc:  # noqa: BLE001 - any failure: no trading on a margin setting not known
            lev, mode = math.nan, f"not read ({type(exc).__name__}: {str(exc)[:200]})"
        if lev != cap or mode != want:
            text = (f"{leg.account} {leg.symbol}: the venue's leverage/margin mode could not be set to {cap}x "
                    f"{want} (it reads {lev:g}x, {mode or 'mode not said'}); not trading")
            self.session.alert("venue_margin", text, "critical")
            raise RunnerError(text)
        self.margin_setting = {"venue_leverage": lev, "margin_mode": mode}
        self.log.info("venue_margin", account=leg.account, leverage=lev, margin_mode=mode)

    async def _venue_margin_view(self) -> None:
        """The heartbeat's margin figures by the venue's collateral model: the
        liquidation price by the venue's rule in its margin mode (isolated: the
        position's own margin is the wallet), beside the venue's own figure."""
        engine = self.engine
        assert engine is not None
        s = self.session
        pos = await perp_position(s.perp)
        mode = pos["mode"] or self.margin_setting.get("margin_mode") or venue_margin_mode(self.cfg)
        rule = engine.monitor.costs.margin
        if s.perp.face:  # coin-margined: the coin wallet's BTC margins the short, by the venue's inverse rule
            wallet = await coin_wallet(s.perp, pos)
            short = VenueAccount(s.perp.account, MarketKind.PERP, 0.0, qty=pos["qty"], entry=pos["entry"],
                                 price=engine.book.perp.price, contract_size=s.perp.face, coin=wallet)
            empty = VenueAccount(s.spot.account, MarketKind.SPOT, 0.0)
            liq = liquidation_of(rule, Collateral(COIN), empty, short) if pos["qty"] else math.nan
        else:
            if mode == ISOLATED:
                wallet = pos["collateral"] - pos["unrealized"]
            else:  # cross: the perp wallet backs the position
                wallet = engine.book.perp.cash
            liq = rule.liquidation_price(wallet, pos["qty"], pos["entry"], mode) if pos["qty"] else math.nan
        mark = engine.book.perp.price
        buf = margin_buffer(liq, mark, pos["qty"]) if pos["qty"] and mark == mark else math.inf
        self.margin_view = {
            "margin_mode": mode, "venue_leverage": pos["leverage"] if pos["leverage"] == pos["leverage"]
            else self.margin_setting.get("venue_leverage"),
            "margin_buffer": buf if math.isfinite(buf) else None,
            "liquidation": round(liq, 2) if liq == liq else None,
            "venue_liquidation": pos["liquidation"] if pos["liquidation"] == pos["liquidation"] else None,
        }

    # --- heartbeat and summary ----------------------------------------------------
    async def _heartbeat(self) -> None:
        engine = self.engine
        if engine is None:
            return
        self.stats.heartbeats += 1
        if self.mode == "live":
            try:
                await self._venue_margin_view()
            except Exception as exc:  # noqa: BLE001 - the heartbeat goes out; the figures say they are stale
                self.log.warning("venue_margin_view", error=f"{type(exc).__name__}: {exc}"[:300])
        beat = self.summary()
        self.log.info("heartbeat", **beat)
        self.journal.set_state(HEARTBEAT_KEY, json.dumps(beat, default=str), self.session.now_ns())
        self.journal.set_state(PEAK_KEY, repr(engine.monitor.peak_equity), self.session.now_ns())
        if self.mode == "live":
            s = self.session
            held = holdings(self.journal, s.spot, s.perp)
            js = held.spot_btc - (self.venue.dust if self.venue is not None else 0.0)
            self.stats.max_drift = max(self.stats.max_drift, drift_of(js, held.perp_btc, 1e-9))

    def summary(self) -> dict[str, Any]:
        engine = self.engine
        assert engine is not None
        b = engine.book
        buf = b.margin_buffer(engine.monitor.costs.margin)
        return {
            "venue_time": _utc(self.now) if self.now else None, "uptime_s": round(time.time() - self.stats.started, 1),
            "events": self.stats.events, "equity": round(b.equity, 4), "funding": round(b.funding, 4),
            "fees": round(b.fees, 4), "spot_qty": b.spot.qty, "perp_qty": b.perp.qty, "drift": b.drift,
            "max_drift": self.stats.max_drift, "margin_buffer": buf if math.isfinite(buf) else None,
            "leverage": b.leverage(), "halted": engine.monitor.kill.reason or None,
            "signal_apr": engine.strategy.signal.current_apr(), "operations": self.stats.operations,
            "settlements_in_position": len(self.stats.settlements),
            "settlements_paid": sum(1 for x in self.stats.settlements if x["paid"]),
            "feeds": {f.account: f.state.value for f in self.feeds},
            "stale_feeds": self.stats.stale_feeds, "refused_events": self.pacer.refused,
            "implausible_prices": dict(self.stats.prices),
            "requests": {leg.account: {"attempts": leg.queue.stats.attempts, "retries": leg.queue.stats.retries,
                                       "paused_s": round(leg.queue.stats.paused_s, 1),
                                       "last_error": leg.queue.stats.last_error[:120]}
                         for leg in self.session.legs},
            "reconciliations": self.journal.count("reconciliations"),
        } | ({"margin_buffer_book": buf if math.isfinite(buf) else None} | self.margin_view if self.margin_view
             else {})


def _unstamped() -> int:
    return 0  # an answer without the venue's time: the pacer stamps it at the latest venue time


def _utc(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ns / 1e9)) + " UTC"
