"""`fundarb monitor`: the terminal dashboard (Textual). The same panels for
live venues, the emulator, a replay and a running simulation: the source
(``monitor_sources``) gives one ``DeskSnapshot`` a second.

Panels: funding (per venue: rate per interval, annualised, predicted, the
next settlement and the time to it), position (both legs, delta, drift,
margin buffer, liquidation price; a perp/perp carry's: each perp with its
own liquidation price and buffer, and whether its venues agree with the
trade log), PnL (funding, fees, price, total), the funding payments (a chart
and the last few; a perp/perp carry's per leg), recent trades, alerts (with what
became of each: sent, held back, paused ...) and the connection state of each
venue. Keys: p pauses alerts (critical ones still go out), t shows the trade
log, k the kill switch (after a confirmation), q quits. Live venues without
API keys show their public side: the position panel names the variables to
set, and the PnL panel gives way to the market (both books and the mark).

It needs a terminal on stdin, stdout and stderr (Textual reads keys from
stdin, sizes the screen from stdout and draws on stderr). Without one (output
to a file or a pipe, input from /dev/null) it refuses in one line
(``require_terminal``) rather than write escape codes into a file, draw at a
guessed size, or spin on an input that is always at its end.
"""

from __future__ import annotations

import asyncio
import math
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Label, Sparkline, Static

from fundarb.core.errors import FundarbError
from fundarb.ops.sources import DeskSnapshot
from fundarb.support.scrub import describe

NS = 1_000_000_000
SEVERITY_STYLE = {"info": "cyan", "warning": "yellow", "critical": "bold red"}


def _t(ns: int, seconds: bool = False) -> str:
    fmt = "%Y-%m-%d %H:%M:%S" if seconds else "%m-%d %H:%M"
    return datetime.fromtimestamp(ns / NS, tz=UTC).strftime(fmt) if ns else "-"


def _countdown(now: int, then: int) -> str:
    if not then:
        return "unknown"
    s = max((then - now) // NS, 0)
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"


def _pct(x: float | None, places: int = 2) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:.{places}%}"


def _num(x: float, places: int = 2, sign: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:+,.{places}f}" if sign else f"{x:,.{places}f}"


def _grid(*cols: str) -> Table:
    t = Table(box=None, pad_edge=False, show_header=True, header_style="bold", expand=True, padding=(0, 1),
              collapse_padding=True)
    for c in cols:
        t.add_column(c, no_wrap=True, overflow="ellipsis")
    return t


# ------------------------------------------------------------------------------------ panels (pure renders)

def render_funding(s: DeskSnapshot) -> Group:
    t = _grid("venue", "rate", "APR", "pred.", "next", "in")
    for f in s.funding:
        pred = None if f.predicted is None else f.predicted * 8760 / f.interval_hours
        nxt = datetime.fromtimestamp(f.next_ts / NS, tz=UTC).strftime("%H:%M") if f.next_ts else "-"
        t.add_row(f.venue.split(":")[0], _pct(f.rate, 4) + f"/{f.interval_hours:g}h", _pct(f.apr), _pct(pred),
                  nxt, _countdown(s.ts, f.next_ts))
    signal = f"signal {_pct(s.signal_apr)} APR · " if s.signal_apr is not None else ""
    return Group(t, Text(f"\n{signal}entry {_pct(s.entry_apr)} · exit {_pct(s.exit_apr)}", style="dim"))


def render_position(s: DeskSnapshot) -> Table | Text:
    if s.keys_needed:  # public data only: the venues tell positions to their account's keys
        return Text("positions need API keys: set\n" + "\n".join(s.keys_needed)
                    + ("\n(environment or .env)" if len(s.keys_needed) < 4 else ""))
    if s.long_perp:
        return _render_perp_perp(s)
    t = _grid("leg", "BTC", "price", "USDT")
    t.add_row("spot", f"{s.spot_qty:+.5f}", _num(s.spot_price), _num(s.spot_qty * s.spot_price, 0))
    t.add_row("perp", f"{s.perp_qty:+.5f}", _num(s.mark), _num(s.perp_qty * s.mark, 0))
    t.add_row("delta", f"{s.delta:+.5f}", "drift", _pct(s.drift, 3))
    t.add_row("buffer", _pct(s.margin_buffer, 1), "liq.", _num(s.liquidation, 1))
    return t


def _render_perp_perp(s: DeskSnapshot) -> Table:
    """A perp/perp carry: each perp on its venue (the long first) by the
    trade log, its liquidation price and margin buffer by its venue, and
    whether the venues' own positions are the trade log's."""
    t = _grid("leg", "BTC", "liq.", "buffer")
    for account, qty, liq, buf in ((s.spot_account, s.spot_qty, s.long_liquidation, s.long_buffer),
                                   (s.perp_account, s.perp_qty, s.liquidation, s.margin_buffer)):
        t.add_row(account.split(":")[0], f"{qty:+.5f}", _num(liq, 0), _pct(buf, 1))
    t.add_row("delta", f"{s.delta:+.5f}", "drift", _pct(s.drift, 3))
    if s.venue_qty == ():
        t.add_row("venues", Text("not read yet", style="dim"), "", "")
    elif s.venue_qty is None:  # no venue to ask: a simulation, a replay, a paper trade log
        pass
    elif all(abs(v - q) <= 1e-9 for v, q in zip(s.venue_qty, (s.spot_qty, s.perp_qty))):
        t.add_row("venues", Text("agree", style="green"), "", "")
    else:  # the venues' sizes, the [spot] leg's then the [perp] leg's: not what the trade log holds
        t.add_row("venues", *(Text(f"{v:+.5f}", style="bold red") for v in s.venue_qty), Text("differ", style="bold red"))
    return t


def render_market(s: DeskSnapshot) -> Table:
    """The top of each leg's book and the perp's mark (in place of the PnL
    when there are no keys to know it)."""
    t = _grid("", "bid", "ask", "mark")
    for account, bid, ask in s.books:
        mark = s.mark if account == s.perp_account else s.spot_price if s.long_perp else None  # a long perp's mark too
        t.add_row(account.split(":")[-1], _num(bid), _num(ask), "" if mark is None else _num(mark))
    if not s.books:
        t.add_row("waiting for the books", "", "", _num(s.mark))
    return t


def render_pnl(s: DeskSnapshot) -> Table:
    if s.keys_needed:
        return render_market(s)
    t = _grid("", "")
    t.show_header = False
    t.add_row("funding", _num(s.pnl_funding, 2, True))
    t.add_row("fees and slippage", _num(-s.pnl_fees, 2, True))
    t.add_row("price", _num(s.pnl_price, 2, True))
    t.add_row(Text("total", style="bold"), Text(_num(s.pnl_total, 2, True), style="bold"))
    return t


def render_payments(s: DeskSnapshot) -> Text:
    if not s.funding_history:
        return Text("no funding payment yet", style="dim")
    last = s.funding_history[-3:]
    shown = len(s.funding_history)
    total = sum(a for _, a in s.funding_history)
    count = max(s.funding_count, shown)
    lines = [f"{count} payment{'s' if count != 1 else ''}" + (f"; the last {shown}:" if count > shown else ":")
             + f" {total:+,.2f} USDT"]
    if s.funding_by_account:  # a perp/perp carry: each venue pays or charges its own leg; then the latest
        roles = {s.spot_account: "short" if s.spot_qty < 0 else "long",  # a reversed carry: the spot leg short
                 s.perp_account: "long" if s.perp_qty > 0 else "short"}
        lines += [f"{account.split(':')[0]} {roles[account]}: {n}, {amount:+,.4f}"
                  for account, n, amount in s.funding_by_account]
        last = last[-1:]
    lines += [f"{_t(ts)}  {a:+,.4f}" for ts, a in reversed(last)]
    return Text("\n".join(lines))


def render_trades(s: DeskSnapshot) -> Table | Text:
    if not s.trades:
        return Text("no trades yet", style="dim")
    t = _grid("time", "leg", "side", "BTC", "price", "fee")
    for ts, account, side, qty, price, fee in reversed(s.trades):  # a perp/perp carry's legs: by their venue
        t.add_row(_t(ts), account.split(":")[0 if s.long_perp else -1], side, f"{qty:g}", _num(price), _num(fee, 4))
    return t


def render_alerts(s: DeskSnapshot) -> Text:
    if not s.alerts:
        return Text("no alerts", style="dim")
    out = Text()
    for ts, severity, outcome, text in reversed(s.alerts):
        out.append(f"{_t(ts)} ", style="dim")
        out.append(f"{severity:<8}", style=SEVERITY_STYLE.get(severity, ""))
        out.append(f" [{outcome}] {text}\n")
    return out


def render_connections(s: DeskSnapshot) -> Text:
    out = Text()
    for venue, state in s.connections:
        good = state in ("streaming", "ok", "simulated", "replayed", "polling")
        out.append("● ", style="green" if good else "yellow")
        out.append(f"{venue}: {state}\n")
    return out


def render_header(s: DeskSnapshot) -> Text:
    """The states that matter most come first, so a narrow terminal keeps them."""
    out = Text()
    out.append(f"{_t(s.ts, seconds=True)} UTC ", style="bold")
    if s.halted:
        out.append(f" HALTED: {s.halted} ", style="bold white on red")
        out.append(" ")
    if s.alerts_paused:
        out.append(" ALERTS PAUSED ", style="bold black on yellow")
        out.append(" ")
    out.append(f" {s.source}  {s.config}")
    if s.keys_needed:
        out.append("  public data only (no API keys)", style="yellow")
    if s.finished:
        out.append("  (end of data)", style="dim")
    return out


PANELS = {
    "funding": ("Funding", render_funding),
    "position": ("Position", render_position),
    "pnl": ("PnL (USDT)", render_pnl),
    "payments": ("Funding payments", render_payments),
    "trades": ("Recent trades", render_trades),
    "connections": ("Venues", render_connections),
    "alerts": ("Alerts", render_alerts),
}


def terminal_refusal(stdin: Any = None, stdout: Any = None, stderr: Any = None) -> str | None:
    """Why the dashboard cannot run here, or None. Textual reads keys from
    stdin, sizes the screen from stdout and draws on stderr: without a
    terminal on each it would spin on an input always at its end, draw at a
    guessed 80x24, or write escape codes into a file."""
    streams = {"stdin": sys.__stdin__ if stdin is None else stdin,
               "stdout": sys.__stdout__ if stdout is None else stdout,
               "stderr": sys.__stderr__ if stderr is None else stderr}
    lacking = [name for name, stream in streams.items() if not _is_tty(stream)]
    if not lacking:
        return None
    which = (f"{lacking[0]} is not one" if len(lacking) == 1 else
             f"{lacking[0]} and {lacking[1]} are not" if len(lacking) == 2 else "none of them is one")
    return (f"the dashboard needs a terminal on stdin, stdout and stderr; {which} (run it in a "
            "terminal, or in tmux or screen to keep it running; `fundarb positions` prints the desk once, as text)")


class NoTerminal(FundarbError):
    """There is no terminal to draw the dashboard on."""


def require_terminal() -> None:
    """Refuse (one ``error:`` line, exit 2, at the command line) when there is no terminal to draw on."""
    why = terminal_refusal()
    if why is not None:
        raise NoTerminal(why)


def _is_tty(stream: Any) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


# ------------------------------------------------------------------------------------ screens

class ConfirmKill(ModalScreen[bool]):
    BINDINGS = [Binding("y", "answer(True)", "yes"), Binding("n,escape", "answer(False)", "no")]

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm"):
            yield Label(Text("Fire the kill switch? New orders stop until resumed.\ny: halt   n: cancel"))
            with Horizontal():
                yield Button("Halt", variant="error", id="yes")
                yield Button("Cancel", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class TradeLog(Screen):
    BINDINGS = [Binding("escape,t,q", "app.pop_screen", "back")]

    def __init__(self, rows: Table | Text) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        yield Static(Text("Trade log (newest first)  [esc] back", style="bold"))
        yield Static(self.rows, id="log")
        yield Footer()


class ScanScreen(Screen):
    """Where the money is (``fundarb scan``): the carries ranked, read when
    the screen opens and again on [r]; the venues' words for a market that
    fails stay in its row."""

    BINDINGS = [Binding("escape", "app.pop_screen", "back"), Binding("r", "rescan", "scan again")]

    def __init__(self, scanner: Any) -> None:
        super().__init__()
        self.scanner = scanner
        self.doc: dict[str, Any] | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text("Where the money is  [r] scan again  [esc] back", style="bold"))
        yield Static(Text("scanning ...", style="dim"), id="scan")
        yield Footer()

    def on_mount(self) -> None:
        self.action_rescan()

    def action_rescan(self) -> None:
        self.query_one("#scan", Static).update(Text("scanning ...", style="dim"))
        self.run_worker(self._scan(), exclusive=True)

    async def _scan(self) -> None:
        from fundarb.output.scan import history_parts, live_parts

        try:
            self.doc = await self.scanner()
        except Exception as exc:  # noqa: BLE001 - shown on the screen, the dashboard goes on
            self.query_one("#scan", Static).update(Text(f"the scan failed: {describe(exc, 300)}", style="red"))
            return
        parts = history_parts(self.doc) if "windows" in self.doc else live_parts(self.doc)
        self.query_one("#scan", Static).update(Group(*parts))


class MonitorApp(App):
    CSS = """
    #head { height: 1; padding: 0 1; }
    Grid { grid-size: 2 4; grid-rows: 7 6 8 1fr; grid-columns: 3fr 2fr; }
    .panel { border: round $accent; padding: 0 1; height: 100%; }
    #alerts { column-span: 2; }
    #chart { height: 2; }
    #confirm { width: 60; height: 9; border: thick $error; background: $surface; padding: 1 2; align: center middle; }
    ConfirmKill { align: center middle; }
    """
    BINDINGS = [Binding("p", "pause_alerts", "pause alerts"), Binding("t", "trade_log", "trade log"),
                Binding("s", "scan", "where the money is"), Binding("k", "kill", "kill switch"),
                Binding("q", "quit", "quit")]

    def __init__(self, source: Any, driver: Any, refresh_seconds: float = 1.0, scanner: Any = None) -> None:
        super().__init__()
        self.source, self.driver, self.refresh_seconds = source, driver, refresh_seconds
        # a coroutine function giving a scan document (``fundarb scan``): the live venues', or the data's
        self.scanner = scanner
        self.snapshot: DeskSnapshot | None = None
        self.closers: list[Any] = []  # coroutines functions the driver registers: run on the way out

    def compose(self) -> ComposeResult:
        yield Static(id="head")
        with Grid():
            for key in ("funding", "position", "pnl", "connections", "trades"):
                yield Static(classes="panel", id=key)
            with Vertical(classes="panel", id="payments-box"):
                yield Sparkline([], id="chart")
                yield Static(id="payments")
            yield Static(classes="panel", id="alerts")
        yield Footer()

    def on_mount(self) -> None:
        for key, (title, _) in PANELS.items():
            target = "#payments-box" if key == "payments" else f"#{key}"
            self.query_one(target).border_title = title
        self.run_worker(self.driver(self), exclusive=True)
        self.set_interval(self.refresh_seconds, self.refresh_panels)
        self.refresh_panels()

    def run(self, *args: Any, **kwargs: Any) -> Any:
        require_terminal()
        return super().run(*args, **kwargs)

    async def on_unmount(self) -> None:
        for close in self.closers:
            await close()

    def refresh_panels(self) -> None:
        if len(self.screen_stack) > 1:
            return  # a screen over the panels (the trade log, the scan): they refresh when it closes
        if self.source is None:  # the live driver is still connecting
            self.query_one("#head", Static).update(Text("fundarb monitor  connecting to the venues ...", style="bold"))
            return
        s = self.snapshot = self.source.snapshot()
        self.query_one("#head", Static).update(render_header(s))
        for key, (_, render) in PANELS.items():
            self.query_one(f"#{key}", Static).update(render(s))
        self.query_one("#pnl").border_title = "Market" if s.keys_needed else PANELS["pnl"][0]
        self.query_one("#chart", Sparkline).data = [a for _, a in s.funding_history]  # none yet: an empty chart

    def action_pause_alerts(self) -> None:
        if self.source is None:
            return
        alerter = getattr(self.source, "alerter", None) or self.source.session.alerter
        alerter.paused = not alerter.paused
        self.notify("alerts paused: only critical alerts go out" if alerter.paused else "alerts resumed")
        self.refresh_panels()

    def action_trade_log(self) -> None:
        if self.source is None:
            return
        self.push_screen(TradeLog(render_trades(self.source.snapshot()) if not hasattr(self.source, "session")
                                  else _journal_table(self.source.session.journal)))

    def action_scan(self) -> None:
        if self.scanner is None:
            self.notify("no scan for this source", severity="warning")
            return
        self.push_screen(ScanScreen(self.scanner))

    def action_kill(self) -> None:
        if self.source is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.source.kill("fired from the monitor")
                self.notify("kill switch fired: new orders halted", severity="error")
                self.refresh_panels()

        self.push_screen(ConfirmKill(), answered)


def _journal_table(journal: Any) -> Table | Text:
    rows = journal.rows("fills")
    if not rows:
        return Text("the trade log has no fills yet", style="dim")
    t = _grid("venue time", "client id", "account", "side", "BTC", "price", "fee USDT")
    for r in reversed(rows[-200:]):
        t.add_row(_t(r["venue_ts"], True), r["client_id"], r["account"], r["side"], f"{r['qty']:g}",
                  _num(r["price"]), _num(r["fee_quote"] or 0.0, 4))
    return t


# ------------------------------------------------------------------------------------ drivers

def engine_driver(data_seconds_per_second: float, tick_seconds: float = 0.25):
    """Step a simulation or replay forward in data time as wall time passes."""
    async def drive(app: MonitorApp) -> None:
        while not app.source.finished:
            app.source.advance(data_seconds_per_second * tick_seconds)
            await asyncio.sleep(tick_seconds)
    return drive


def live_driver(cfg: Any, journal_path: Any, target: Any, label: str, reconciling: bool = True,
                **session_options: Any):
    """Open the live session in the dashboard's event loop, then run the
    feeds and reconciliation and poll the venues' positions and funding
    payments. The start-up reconciliation (and any recovery) is the caller's:
    ``fundarb monitor`` runs it before the screen opens, where it can print.
    Without API keys on a venue it watches the public side only: funding,
    marks and books, no reconciliation (``monitor_sources.keys_needed``)."""
    async def drive(app: MonitorApp) -> None:
        from fundarb.live.execution.session import open_session
        from fundarb.ops.sources import LiveSource, keys_needed

        missing = keys_needed(cfg, session_options.get("env"), session_options.get("dotenv", Path(".env")))
        paper = session_options.pop("paper", False)  # a paper trade log: its positions are the trade log's
        options = {**session_options, "trading": False} if missing or paper else session_options
        session = await open_session(cfg, journal_path, target, **options)
        app.closers.append(session.close)
        missing = () if session.paper else missing
        reconciling_now = reconciling and not missing and not session.paper
        if reconciling_now:  # only while no other actor (a trade, a reconcile) is on the account
            from fundarb.live.runlock import ActorLock, try_actor

            lock = ActorLock.of_config(Path(journal_path), cfg, target, "fundarb monitor (a reconciliation)",
                                       env=session_options.get("env"),
                                       dotenv=session_options.get("dotenv", Path(".env")))
            session.alone = lambda: try_actor(lock)
        src = app.source = LiveSource(session, label, reconciling=reconciling_now, keys_needed=missing)
        stop = asyncio.Event()
        watching = asyncio.create_task(src.watch.run(stop))
        app.closers.insert(0, lambda: _stop(stop, watching))
        while True:
            await src.poll()
            app.refresh_panels()
            await asyncio.sleep(src.poll_seconds)
    return drive


async def _stop(stop: asyncio.Event, task: asyncio.Task) -> None:
    stop.set()
    await asyncio.gather(task, return_exceptions=True)
