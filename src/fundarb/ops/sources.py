"""What the dashboard shows, from any backend: ``DeskSnapshot`` is the one
picture; ``EngineSource`` builds it from an engine stepping through a
simulation or a replay, ``LiveSource`` from live venues (or the emulator)
through the live backend. The alert conditions of ``fundarb.live.alerts`` run on
every snapshot, so the dashboard and the channels see the same alerts.

Watching funding needs no API key: without keys on a venue (``keys_needed``)
the live source shows the public side only (funding, marks, books, the next
settlement) and names the variables that would show the positions."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from fundarb.config import Config, config_hash
from fundarb.core.book import drift_of, margin_buffer, uncovered_of
from fundarb.core.funding import scheduled_instant
from fundarb.core.model import NS_PER_SECOND, FundingRate
from fundarb.live.alerts import AlertConditions, Alerter, AlertThresholds, DeskState, channel_from_env
from fundarb.live.execution.holdings import holdings, outside_btc

RECENT = 8  # rows kept for the trades and alerts panels
HISTORY = 48  # funding payments kept for the chart


@attrs.frozen
class FundingLine:
    venue: str
    rate: float | None  # per interval
    predicted: float | None
    interval_hours: float
    next_ts: int  # 0: unknown

    @property
    def apr(self) -> float | None:
        return None if self.rate is None else self.rate * 8760.0 / self.interval_hours


@attrs.frozen
class DeskSnapshot:
    ts: int
    source: str
    config: str
    funding: tuple[FundingLine, ...]
    spot_account: str
    perp_account: str
    spot_qty: float
    perp_qty: float
    spot_price: float
    mark: float
    margin_buffer: float  # inf when flat
    liquidation: float  # nan when flat
    pnl_funding: float
    pnl_fees: float  # paid: positive is a cost
    pnl_price: float
    funding_history: tuple[tuple[int, float], ...]
    trades: tuple[tuple[int, str, str, float, float, float], ...]  # ts, account, side, qty, price, fee
    alerts: tuple[tuple[int, str, str, str], ...]  # ts, severity, outcome, text
    connections: tuple[tuple[str, str], ...]  # venue, state
    halted: str | None
    alerts_paused: bool
    finished: bool = False
    signal_apr: float | None = None  # the strategy's signal (mean of settled rates), where an engine runs
    entry_apr: float = math.nan
    exit_apr: float = math.nan
    funding_count: int = 0  # all payments so far (funding_history keeps the latest HISTORY)
    books: tuple[tuple[str, float, float], ...] = ()  # (account, bid, ask): the top of each leg's book, where known
    keys_needed: tuple[str, ...] = ()  # public data only: the variables to set to see positions and PnL
    keeps_btc: bool = False  # a carry on BTC held: ``spot_qty`` is the holding; only an uncovered short drifts
    # a perp/perp carry: the long leg is a perp on its own venue (``spot_*`` are its account, size and mark)
    long_perp: bool = False
    long_buffer: float = math.inf  # the long perp's margin buffer (the fall to its liquidation); inf when flat
    long_liquidation: float = math.nan
    # (long, short) BTC as the venues hold them; (): not read yet; None: no venue to ask (an engine, paper, no keys)
    venue_qty: tuple[float, ...] | None = None
    funding_by_account: tuple[tuple[str, int, float], ...] = ()  # (account, payments, amount): each leg's own

    @property
    def delta(self) -> float:
        return self.spot_qty + self.perp_qty

    @property
    def drift(self) -> float:
        return uncovered_of(self.spot_qty, self.perp_qty) if self.keeps_btc else drift_of(self.spot_qty, self.perp_qty)

    @property
    def pnl_total(self) -> float:
        return self.pnl_funding - self.pnl_fees + self.pnl_price


class MemoryAlertLog:
    """The alert store of a simulation or replay: nothing of it is durable."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add_alert(self, ts: int, kind: str, severity: str, config_hash: str, message: str,
                  key: str = "", outcome: str = "recorded") -> None:
        self.rows.append(dict(ts=ts, kind=kind, severity=severity, message=message, key=key, outcome=outcome))


def _alert_rows(rows: list[dict]) -> tuple[tuple[int, str, str, str], ...]:
    return tuple((r["ts"], r["severity"], r["outcome"], f"{r['kind']}: {r['message']}") for r in rows[-RECENT:])


def _by_account(accounts: tuple[str, ...], paid: list[tuple[str, float]]) -> tuple[tuple[str, int, float], ...]:
    """(account, payments, amount) of each of ``accounts`` from (account, amount) payments."""
    return tuple((a, sum(1 for p, _ in paid if p == a), sum(x for p, x in paid if p == a)) for a in accounts)


# ------------------------------------------------------------------------------------ simulation and replay

class EngineSource:
    """An engine (simulation or replay) stepped forward by the dashboard:
    ``advance(seconds)`` feeds it the events of the next ``seconds`` of data."""

    def __init__(self, cfg: Config, engine: Any, label: str, env: dict[str, str] | None = None) -> None:
        self.cfg, self.engine, self.label = cfg, engine, label
        self._events: Iterator[Any] = iter(engine.venue.events())
        self._pending: Any = None
        self.finished = False
        self.rates: dict[str, FundingRate] = {}
        self.log = MemoryAlertLog()
        h = config_hash(cfg)
        self.alerter = Alerter(channel_from_env(env or {}, None), self.log, h, cfg.alert_settings)
        self.conditions = AlertConditions(AlertThresholds.of(cfg), label=f"{cfg.name} {h[:12]}")
        self._alerts_seen = 0
        self._peak = engine.book.equity

    def advance(self, seconds: float) -> None:
        """Run the engine until its clock has moved ``seconds`` of data time."""
        if self.finished:
            return
        start = self.engine.clock.now_ns() if self._pending is None else self._pending.ts
        until = start + int(seconds * NS_PER_SECOND)
        while True:
            ev = self._pending if self._pending is not None else next(self._events, None)
            self._pending = None
            if ev is None:
                self.finished = True
                break
            if ev.ts > until:
                self._pending = ev
                break
            if isinstance(ev, FundingRate):
                self.rates[ev.venue] = ev
            self.engine.on_event(ev)
        self._check_alerts()

    def kill(self, reason: str) -> None:
        self.engine.monitor.kill.halt(reason, self.engine.clock.now_ns())
        self._check_alerts()  # the kill switch alert goes out now, not at the next step

    def _check_alerts(self) -> None:
        e, b = self.engine, self.engine.book
        for a in e.alerts[self._alerts_seen:]:  # the engine's own alerts (risk, transfers)
            self.log.add_alert(a.ts, a.kind, a.severity, e.config_hash, a.message, a.kind, "recorded")
        self._alerts_seen = len(e.alerts)
        self._peak = max(self._peak, b.carry_equity)
        sig = e.strategy.signal
        rule = e.monitor.costs.margin
        state = DeskState(e.clock.now_ns(), not b.is_flat, sig.current_apr() if sig.rates else None,
                          sig.predicted_apr(), b.drift, b.margin_buffer(rule) if not b.is_flat else math.inf,
                          1 - b.carry_equity / self._peak if self._peak > 0 else 0.0,
                          halted=e.monitor.kill.reason if e.monitor.kill.halted else None)
        for n in self.conditions.check(state):
            self.alerter.raise_notice(n)

    def snapshot(self) -> DeskSnapshot:
        e, b, cfg = self.engine, self.engine.book, self.cfg
        sig = e.strategy.signal
        rule = e.monitor.costs.margin
        seen = self.rates.get(cfg.perp_account)
        if seen is not None:
            line = FundingLine(cfg.perp_account, seen.rate, seen.predicted_rate, seen.interval_hours, seen.next_funding_ts)
        else:
            last = sig.rates[-1] if sig.rates else None
            nxt = sig.last_settlement_ts + int(sig.interval_hours * 3600 * NS_PER_SECOND) if sig.last_settlement_ts else 0
            line = FundingLine(cfg.perp_account, last, sig.predicted, sig.interval_hours, nxt)
        fills = [r for kind, r in e.recorder.rows if kind == "fill"][-RECENT:]
        flat = b.is_flat
        long_rule = e.monitor.costs.long_margin if b.long_perp else None  # a perp/perp carry's long: its venue's rule
        long_margin = (b.long_margin_buffer(long_rule), b.long_liquidation_price(long_rule)) if long_rule else (
            math.inf, math.nan)
        return DeskSnapshot(
            e.clock.now_ns(), self.label, f"{cfg.name} {e.config_hash[:12]}", (line,),
            cfg.spot_account, cfg.perp_account, b.spot.qty, b.perp.qty, b.spot.price, b.perp.price,
            math.inf if flat else b.margin_buffer(rule), math.nan if flat else b.liquidation_price(rule),
            b.funding, b.fees + b.slippage, b.pnl - b.held_pnl - b.funding + b.fees + b.slippage,
            tuple((f.ts, f.amount) for f in b.funding_ledger[-HISTORY:]),
            tuple((r["ts"], r["venue"], r["side"], r["qty"], r["price"], r["fee"]) for r in fills),
            _alert_rows(self.log.rows),
            tuple((v, "replayed" if "replay" in self.label else "simulated") for v in (cfg.spot_account, cfg.perp_account)),
            e.monitor.kill.reason if e.monitor.kill.halted else None, self.alerter.paused, self.finished,
            sig.current_apr() if sig.rates else None, cfg.strategy.entry_apr, cfg.strategy.exit_apr,
            len(b.funding_ledger), keeps_btc=cfg.keeps_btc, long_perp=b.long_perp, long_buffer=long_margin[0],
            long_liquidation=long_margin[1],
            funding_by_account=_by_account((cfg.spot_account, cfg.perp_account),
                                           [(f.venue, f.amount) for f in b.funding_ledger]) if b.long_perp else ())


# ------------------------------------------------------------------------------------ live venues

def keys_needed(cfg: Config, env: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")) -> tuple[str, ...]:
    """The API key and secret variables of each of the config's venues that has
    no key (``FUNDARB_<EXCHANGE>_API_KEY``, ``_SECRET``); empty when all have
    keys. A half-set pair is a ``CredentialsError`` naming the missing half."""
    from fundarb.live.ccxt.credentials import env_names, load_credentials

    names: list[str] = []
    for exchange in dict.fromkeys((cfg.spot.exchange, cfg.perp.exchange)):
        if not load_credentials(exchange, env, dotenv).present:
            names += env_names(exchange)[:2]
    return tuple(names)


@attrs.define
class SettlementWatch:
    """Missed funding on live venues: every settlement instant the venue
    announced (``next_funding_ts``) that passes while the carry holds a perp
    position must show up as a payment in the trade log within ``grace_ns``
    of venue time (the trade log learns payments on each poll)."""

    grace_ns: int = 15 * 60 * NS_PER_SECOND
    announced: set[int] = attrs.field(factory=set)
    pending: set[int] = attrs.field(factory=set)
    missed: set[int] = attrs.field(factory=set)

    def announce(self, settlement_ts: int) -> None:
        if settlement_ts:
            self.announced.add(settlement_ts)

    def update(self, venue_ts: int, in_position: bool, paid: set[int]) -> int:
        for t in [t for t in self.announced if t <= venue_ts]:
            self.announced.discard(t)
            if in_position:
                self.pending.add(t)
        for t in list(self.pending):
            if any(abs(p - t) <= 60 * NS_PER_SECOND for p in paid):
                self.pending.discard(t)
            elif venue_ts - t > self.grace_ns:
                self.pending.discard(t)
                self.missed.add(t)
        return len(self.missed)


class LiveSource:
    """Live venues (or the emulator) through the live backend: the feeds for
    prices and funding, the venues' own balances and positions polled every
    ``poll_seconds``, the trade log for fills, funding payments and alerts.

    ``keys_needed`` (the variables ``keys_needed()`` names): a session
    without keys. Only public data then: the feeds, and as the REST check the
    venues' public funding and ticker; no reconciliation, no account polls."""

    def __init__(self, session: Any, label: str, poll_seconds: float = 5.0, reconciling: bool = True,
                 keys_needed: tuple[str, ...] = ()) -> None:
        from fundarb.live.execution.watch import LiveWatch

        self.session, self.label, self.poll_seconds = session, label, poll_seconds
        self.cfg = session.cfg
        self.keys_needed = tuple(keys_needed)
        # a runner trading the same trade log reconciles it; a second process must only watch; without keys nobody can
        self.watch = LiveWatch(session, self._on_event, reconciling=reconciling and not self.keys_needed)
        self.rates: dict[str, FundingRate] = {}
        self.books: dict[str, tuple[float, float]] = {}
        self.mids: dict[str, float] = {}
        self.marks: dict[str, float] = {}
        self.position: dict[str, float] = {"qty": 0.0, "liquidation": math.nan, "entry": 0.0}
        # a perp/perp carry's long perp as its venue holds it (``LiveLeg.is_perp``); unused with a spot leg
        self.long_position: dict[str, float] = {"qty": 0.0, "liquidation": math.nan, "entry": 0.0}
        self.polled = False  # the venues' positions have been read (not on public data, nor on paper)
        self.venue_ts = 0  # the perp venue's latest event time: "now" on the venue's clock (the emulator's runs on data time)
        self.last_poll_ok: float = 0.0
        self.poll_error = ""
        h = session.config_hash
        if session.alerter is None:
            session.alerter = Alerter(None, session.journal, h, self.cfg.alert_settings)
        self.conditions = AlertConditions(AlertThresholds.of(self.cfg), label=f"{self.cfg.name} {h[:12]}")
        self.settlements = SettlementWatch()
        self._down_since: dict[str, float] = {}  # venue -> monotonic time it was first seen down
        self._peak = 0.0

    def _on_event(self, ev: Any) -> None:
        from fundarb.core.model import MarkPrice, Quote

        if isinstance(ev, Quote):
            self.mids[ev.venue] = ev.mid
            self.books[ev.venue] = (ev.bid, ev.ask)
        elif isinstance(ev, MarkPrice):
            self.marks[ev.venue] = ev.mark
            self.venue_ts = max(self.venue_ts, ev.ts)
        elif isinstance(ev, FundingRate):
            self.rates[ev.venue] = ev
            self.venue_ts = max(self.venue_ts, ev.ts)
            # the venue's announced instant, snapped by the data layer's rule (None: off schedule, not believed)
            tolerance = int(self.cfg.data.settlement_tolerance_seconds * NS_PER_SECOND)
            self.settlements.announce(scheduled_instant(ev.next_funding_ts, ev.interval_hours, tolerance) or 0)

    async def poll(self) -> None:
        """Positions and balances from the venues; a failure is shown, not raised."""
        from fundarb.live.execution.preflight import perp_position
        from fundarb.live.execution.reconcile import learn_funding

        s = self.session
        try:
            if self.keys_needed or s.paper:  # public data: both venues' REST must answer (their health, not their numbers)
                await s.perp.call("fetch_funding_rate", s.perp.symbol)
                await s.spot.call("fetch_ticker", s.spot.symbol)
                if s.paper:  # the paper venue is the runner's simulator: its word is the trade log
                    self.position = self._paper_position()
                    if s.spot.is_perp:
                        self.long_position = self._paper_position(s.spot)
            else:
                await learn_funding(s)
                self.position = await perp_position(s.perp)
                if s.spot.is_perp:  # a perp/perp carry's long: a position on its venue, read as the short's is
                    self.long_position = await perp_position(s.spot)
                else:
                    await s.spot.call("fetch_balance")  # the spot venue's REST must answer too (its health, not its numbers)
                self.polled = True
            self.last_poll_ok, self.poll_error = time.monotonic(), ""
        except Exception as exc:  # shown on the connections panel
            self.poll_error = f"{type(exc).__name__}"
        self._check_alerts()

    def _paper_position(self, long: Any = None) -> dict[str, float]:
        """A paper trade log's perp: the simulator's account at the runner's
        last step, and the liquidation price its last heartbeat's margin
        buffer gives at the mark streamed now. ``long``: a perp/perp carry's
        long perp, its size by the trade log (the heartbeat's buffer is the
        short's: no liquidation price is told)."""
        from fundarb.live.journal import last_step

        j, s = self.session.journal, self.session
        accounts, beat = last_step(j)
        held = holdings(j, s.spot, s.perp)
        if long is not None:
            return {"qty": held.spot_btc, "entry": float(accounts.get(long.account, {}).get("entry", 0.0)),
                    "liquidation": math.nan}
        acct = accounts.get(s.perp.account, {})
        mark = self.marks.get(s.perp.account, math.nan)
        buf = beat.get("margin_buffer")
        qty = held.perp_btc
        liq = mark * (1 + buf) if qty and buf is not None and mark == mark else math.nan
        return {"qty": qty, "entry": float(acct.get("entry", 0.0)), "liquidation": liq}

    def kill(self, reason: str) -> None:
        from fundarb.live.execution.paired import BLOCK_KEY

        s = self.session
        s.journal.set_state(BLOCK_KEY, f"kill switch: {reason}", s.now_ns())
        s.alert("kill_switch", f"new orders halted: {reason}", "critical")

    def _mark(self, leg: Any) -> float:
        """A perp leg's streamed mark (else its mid); nan before either."""
        return self.marks.get(leg.account) or self.mids.get(leg.account, math.nan)

    def _pnl(self) -> tuple[float, float, float]:
        """(funding, fees, price PnL) in the quote. An inverse perp's: its BTC
        payments at their settlement's mark (else the mark now), and its
        price PnL as the core's inverse account keeps it (face / entry BTC
        valued in USD), replayed from the trade log. A perp/perp carry's long
        perp: its position at its own mark, its payments its venue's."""
        j, s = self.session.journal, self.session
        fills, paid = j.rows("fills"), j.rows("funding")
        fees = sum(f["fee_quote"] or 0.0 for f in fills)
        spot_px = self._mark(s.spot) if s.spot.is_perp else self.mids.get(s.spot.account, math.nan)
        mark = self._mark(s.perp)
        inverse = bool(s.perp.face)
        linear = [f for f in fills if not (inverse and f["account"] == s.perp.account)]
        cash = sum((-1 if f["side"] == "buy" else 1) * f["qty"] * f["price"] for f in linear)
        held = j.position(s.spot.account, s.spot.base) * spot_px
        price = cash + held + sum(f["fee"] * f["price"] for f in linear  # a spot fee in BTC: BTC not held
                                  if f["account"] == s.spot.account and f["fee_currency"] == s.spot.base
                                  and not s.spot.is_perp)
        if inverse:
            acct = holdings(j, s.spot, s.perp).perp_account
            assert acct is not None
            if self.cfg.keeps_btc:
                # a carry on BTC held: the open short against the BTC it hedges (their basis); the holding's own
                # price moves are the holder's, and a closed carry's short and holding moved together
                price = acct.qty * (mark - spot_px) if acct.qty else 0.0
            else:
                price += acct.realized + (acct.qty * (mark - acct.entry) if acct.qty else 0.0)
            funding = sum(f["amount"] * (f["mark"] or mark) for f in paid)
        else:
            price += j.position(s.perp.account) * mark
            funding = sum(f["amount"] for f in paid)
        return (funding if math.isfinite(funding) else 0.0), fees, price if math.isfinite(price) else 0.0

    def _check_alerts(self) -> None:
        s = self.session
        funding, fees, price = self._pnl()
        equity = funding - fees + price
        self._peak = max(self._peak, equity)
        capital = self.cfg.capital
        js, jp = self._legs()
        blocked = s.journal.blocked() or ""
        paid = {f["venue_ts"] for f in s.journal.rows("funding")}
        # without keys no payment is learned from the venue: a settlement cannot be told missed
        missed = self.settlements.update(self.venue_ts, jp != 0 and not self.keys_needed, paid)
        long_buffer, short_buffer = self._buffers(js, jp)
        # a perp/perp carry: the lower of its perps' buffers, named by its account
        leg = (s.spot.account if long_buffer < short_buffer else s.perp.account) if s.spot.is_perp else ""
        state = DeskState(s.now_ns(), max(abs(js), abs(jp)) > 0, self._funding_apr(),
                          None, uncovered_of(js, jp) if self.cfg.keeps_btc else drift_of(js, jp),
                          min(long_buffer, short_buffer), (self._peak - equity) / capital,
                          blocked if blocked.startswith("reconciliation") else None, self.unreachable(), missed,
                          halted=blocked if blocked.startswith("kill switch") else None, margin_leg=leg)
        for n in self.conditions.check(state):
            s.alerter.raise_notice(n)

    def _legs(self) -> tuple[float, float]:
        """(spot BTC, perp BTC) by the trade log; a carry on BTC held: the
        spot leg is the holding, with the BTC reconciliation recorded as held."""
        s = self.session
        held = holdings(s.journal, s.spot, s.perp)
        extra = outside_btc(s.journal, s.spot.account) if self.cfg.keeps_btc else 0.0
        return held.spot_btc + extra, held.perp_btc

    def _funding_apr(self) -> float | None:
        """The carry's funding now, annualised: the short's rate; a perp/perp
        carry's, the short's less what the long pays (None until both are seen)."""
        s = self.session
        legs = (s.perp, s.spot) if s.spot.is_perp else (s.perp,)
        rates = [self.rates.get(leg.account) for leg in legs]
        if any(r is None for r in rates):
            return None
        aprs = [r.rate * 8760 / r.interval_hours for r in rates if r is not None]
        return aprs[0] - sum(aprs[1:])

    def _buffers(self, spot_qty: float, perp_qty: float) -> tuple[float, float]:
        """([spot] leg, [perp] leg) margin buffers from each venue's liquidation
        price and the streamed mark (``core.book.margin_buffer``, as `fundarb
        positions` gives them): the short's, and both perps' of a perp/perp
        carry (a long's is the fall to its liquidation); inf without the leg
        (a spot leg has none) or either number."""
        s = self.session

        def buffer(leg: Any, position: dict[str, float], qty: float) -> float:
            mark, liq = self.marks.get(leg.account, math.nan), position.get("liquidation", math.nan)
            return margin_buffer(liq, mark, qty) if qty and mark == mark and liq == liq else math.inf

        return (buffer(s.spot, self.long_position, spot_qty) if s.spot.is_perp else math.inf,
                buffer(s.perp, self.position, perp_qty) if perp_qty < 0 or s.spot.is_perp else math.inf)

    def unreachable(self) -> tuple[tuple[str, float], ...]:
        """(venue, seconds down) of each feed that cannot (re)connect and of
        the venues' REST while its polls fail (``MarketFeed.is_down``)."""
        now = time.monotonic()
        wall = time.time_ns()
        down = {f.account for f in self.watch.feeds if f.is_down(wall)}
        if self.poll_error:
            down.add("REST")
        for name in down:
            self._down_since.setdefault(name, now)
        for name in list(self._down_since):
            if name not in down:
                del self._down_since[name]
        return tuple((name, now - since) for name, since in sorted(self._down_since.items()))

    def snapshot(self) -> DeskSnapshot:
        s, cfg = self.session, self.cfg
        j = s.journal
        lines = tuple(FundingLine(v, r.rate, r.predicted_rate, r.interval_hours, r.next_funding_ts)
                      for v, r in sorted(self.rates.items())) or (FundingLine(s.perp.account, None, None, 8.0, 0),)
        funding, fees, price = self._pnl()
        js, jp = self._legs()
        mark = self.marks.get(s.perp.account, math.nan)
        # payments in the quote: an inverse perp's BTC at its settlement's mark (else the mark now)
        worth = (lambda f: f["amount"] * (f["mark"] or mark)) if s.perp.face else (lambda f: f["amount"])
        liq = self.position.get("liquidation", math.nan)
        buffers = self._buffers(js, jp)
        long_perp = s.spot.is_perp  # a perp/perp carry: the long a position on its venue, with its own funding
        paid = j.rows("funding")
        fills = j.rows("fills")[-RECENT:]
        conns = [(f.account, f.state.value) for f in self.watch.feeds] or [(leg.account, "connecting") for leg in s.legs]
        conns.append(("REST", "ok" if not self.poll_error else f"failing: {self.poll_error}"))
        blocked = j.blocked()
        return DeskSnapshot(
            self.venue_ts or s.now_ns(), self.label, f"{cfg.name} {s.config_hash[:12]}", lines, s.spot.account,
            s.perp.account,
            js, jp, self._mark(s.spot) if long_perp else self.mids.get(s.spot.account, math.nan), mark,
            buffers[1], liq if jp else math.nan,
            funding, fees, price,
            tuple((f["venue_ts"], worth(f)) for f in paid[-HISTORY:]),
            tuple((f["venue_ts"], f["account"], f["side"], f["qty"], f["price"], f["fee_quote"] or 0.0) for f in fills),
            _alert_rows(j.rows("alerts")), tuple(conns),
            blocked if blocked and blocked.startswith("kill switch") else None, s.alerter.paused,
            entry_apr=cfg.strategy.entry_apr, exit_apr=cfg.strategy.exit_apr, funding_count=len(paid),
            books=tuple((leg.account, *self.books[leg.account]) for leg in s.legs if leg.account in self.books),
            keys_needed=self.keys_needed, keeps_btc=cfg.keeps_btc, long_perp=long_perp, long_buffer=buffers[0],
            long_liquidation=self.long_position.get("liquidation", math.nan) if long_perp and js else math.nan,
            venue_qty=None if not long_perp or s.paper or self.keys_needed else (
                (self.long_position["qty"], self.position["qty"]) if self.polled else ()),
            funding_by_account=_by_account((s.spot.account, s.perp.account),
                                           [(f["account"], f["amount"]) for f in paid]) if long_perp else ())
