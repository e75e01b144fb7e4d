"""`fundarb trade open|close|log`, `fundarb positions`, `fundarb reconcile`,
`fundarb kill|resume`:
the manual paired-trade tool on live venues (or their sandbox, or the
loopback emulator with ``--api-url``), logged to the SQLite trade log."""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fundarb.cli.common import UserErrorGroup, error_line, fail
from fundarb.live.journal import DEFAULT_JOURNAL

trade_app = typer.Typer(cls=UserErrorGroup, no_args_is_help=True, help="Paired trades on live venues: open, close, rotate, the trade log.")
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

ConfigOpt = typer.Option(None, "--config", "-c", help="TOML config naming the venues (default: sims/baseline.toml)")
JournalOpt = typer.Option(None, "--journal", help=f"the SQLite trade log (default: $FUNDARB_JOURNAL or {DEFAULT_JOURNAL})")
ApiUrlOpt = typer.Option(None, "--api-url", help="send every REST and websocket call to this base URL (the emulator, e.g. http://127.0.0.1:8765)")
SandboxOpt = typer.Option(False, "--sandbox", help="use the venues' testnets (ccxt sandbox mode)")
RemoteOpt = typer.Option(False, "--i-know-remote-api-url",
                         help="allow an https --api-url on another machine (a server of yours trusted with the keys)")


class Stop(Exception):
    """A reason to stop with exit code ``code`` after printing ``message``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def _fail(message: str, code: int = 2) -> NoReturn:
    fail(message, code)


# the structures the venue commands trade (perp_perp: a long perp on one venue, the short on another)
TRADED = ("spot_linear", "coin_margined", "unified", "perp_perp")
# the structures the live dashboard watches (perp_perp: on the pair its trade log holds, as the venue commands)
MONITORED = ("spot_linear", "coin_margined", "unified", "perp_perp")
RUNS = ("spot_linear", "coin_margined", "perp_perp")  # the structures the strategy runner trades (perp_perp on paper)


def _context(config: Optional[Path], journal: Optional[Path], api_url: Optional[str], sandbox: bool,
             remote: bool = False, what: str = "this command", kinds: tuple[str, ...] = ("spot_linear",)):
    from fundarb.config import default_config_path, load
    from fundarb.live.ccxt.client import Target, check_api_url

    if api_url is not None:  # signed requests never go over plain http, nor elsewhere unasked
        check_api_url(api_url, remote)
    cfg = load(config or default_config_path())
    from fundarb.wiring import require_structure

    require_structure(cfg, what, kinds)
    target = Target(api_url=api_url, sandbox=sandbox, timeout_ms=int(cfg.live_settings.request_timeout_seconds * 1000))
    path = journal_for(journal)
    return (pair_held_config(cfg, path) if cfg.long_perp else cfg), path, target


def pair_held_config(cfg, path: Path):
    """A perp/perp config on the pair of venues its trade log holds (a
    rotation moved it there: `fundarb trade rotate`); the config itself while
    the trade log holds the config's own pair, or there is no trade log yet."""
    from fundarb.live.execution.rotation import held_pair, pair_text
    from fundarb.live.journal import Journal

    if not path.is_file():
        return cfg
    j = Journal(path)
    try:
        held = held_pair(j)
    finally:
        j.close()
    if held is None:
        return cfg
    names = [v.exchange for v in cfg.rotation_venues()]
    if not set(held) <= set(names):
        _fail(f"the trade log {path} holds the pair {pair_text(held)}, which config {cfg.name} does not name (its "
              f"venues: {', '.join(names)}); use the config it was traded with")
    return pair_of(cfg, *held)


def pair_of(cfg, long: str, short: str):
    """``cfg`` on the pair long ``long`` / short ``short`` (ccxt ids among its
    [spot], [perp] and rotation.venues: ``fundarb.sim.rotation.pair_config``,
    the config of a pair as a rotating backtest runs it); the config itself
    on its own pair."""
    if (long, short) == (cfg.spot.exchange, cfg.perp.exchange):
        return cfg
    from fundarb.core.rotation import Pair
    from fundarb.data.history import parse_time
    from fundarb.sim.rotation import pair_config

    return pair_config(cfg, Pair(long, short), parse_time(cfg.data.start, "data.start"),
                       parse_time(cfg.data.end, "data.end"), cfg.capital)


def journal_for(journal: Optional[Path]) -> Path:
    """The trade log a command acts on: the one the user names (--journal,
    $FUNDARB_JOURNAL); else the trade log of the strategy runner running on
    this machine, found through its lock (and said on stderr); else the
    default. Two runners and no name: one error line, never a guess."""
    if journal is not None:
        return journal
    if os.environ.get("FUNDARB_JOURNAL"):
        return Path(os.environ["FUNDARB_JOURNAL"])
    from fundarb.app.runner.registry import running

    found = running()
    if len(found) > 1:
        _fail("several strategy runners are running: " + "; ".join(r.describe() for r in found)
              + "; name the trade log with --journal")
    if found:
        err.print(f"[dim]acting on {escape(found[0].describe())}; --journal names another[/]")
        return found[0].journal
    return DEFAULT_JOURNAL


def is_paper(path: Path) -> bool:
    """Whether ``path`` is a paper run's trade log (bound to paper identities)."""
    from fundarb.live.journal import Journal

    if not path.is_file():
        return False
    j = Journal(path)
    try:
        return any(i.paper for i in j.venues().values())
    finally:
        j.close()


_WAITS: list[Any] = []  # the command's one WaitReporter, made when a session first needs it


def _waits() -> Any:
    """What the command waits for on a venue, shown once a wait passes 2 s
    (a status line on a terminal, a plain line per retry otherwise)."""
    if not _WAITS:
        from fundarb.support.waits import WaitReporter

        _WAITS.append(WaitReporter())
    return _WAITS[0]


def _run(coro: Any) -> Any:
    """Run a live coroutine; every expected failure becomes one error line
    (a ``FundarbError`` by the command group, the venue's errors here)."""
    try:
        return _run_live(coro)
    finally:
        while _WAITS:
            _WAITS.pop().close()


def _run_live(coro: Any) -> Any:
    import ccxt

    from fundarb.live.execution.orders import VenueDisagrees

    try:
        return asyncio.run(coro)
    except Stop as stop:
        if stop.code:
            _fail(str(stop), stop.code)
        out.print(escape(str(stop)))
    except VenueDisagrees as exc:
        _fail(f"{exc}; new entries stay blocked until `fundarb reconcile` finds the venue and the trade log agree")
    except ccxt.AuthenticationError as exc:
        _fail(f"the venue refused the API key: {str(exc)[:200]}; check the FUNDARB_<EXCHANGE>_API_KEY / _SECRET variables")
    except ccxt.NetworkError as exc:
        _fail(f"a venue is unreachable ({type(exc).__name__}: {str(exc)[:200]}); nothing more was sent")
    except ccxt.ExchangeError as exc:
        _fail(f"a venue answered with an error: {type(exc).__name__}: {str(exc)[:300]}")
    return None


def _time(ns: int) -> str:
    from fundarb.data.history import fmt_time

    return fmt_time(ns) if ns else "-"


# ---------------------------------------------------------------------------------- open / close

StructureOpt = typer.Option(None, "--structure", help="the structure you mean to trade (spot_linear, coin_margined, "
                                                     "unified, perp_perp): refused when the config's is another")


def _check_size(size: float | None) -> None:
    """``--size``, when given: a positive number of BTC."""
    if size is not None and not (math.isfinite(size) and size > 0):
        _fail(f"--size must be a positive number of BTC, got {size}")


def _expect_structure(config: Optional[Path], expected: Optional[str]) -> None:
    """``--structure``: the config must be of that structure (one line naming both otherwise)."""
    if expected is None:
        return
    from fundarb.config import STRUCTURES, default_config_path, load

    if expected not in STRUCTURES:
        _fail(f"--structure must be one of {', '.join(STRUCTURES)}, got {expected!r}")
    cfg = load(config or default_config_path())
    if cfg.structure_kind != expected:
        example = {"spot_linear": "spot_perp"}.get(expected, expected)
        _fail(f"--structure {expected}: config {cfg.name} is structure.kind {cfg.structure_kind} (choose a "
              f"{expected} config, such as sims/{example}.toml)")


@trade_app.command("open")
def open_command(
    size: float = typer.Option(..., "--size", help="BTC per leg: buy this much spot (a perp/perp carry: the long perp), "
                                                  "sell this much perp"),
    dry_run: bool = typer.Option(False, "--dry-run", help="run the pre-flight and print the plan; send nothing"),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation (for scripts)"),
    config: Optional[Path] = ConfigOpt, journal: Optional[Path] = JournalOpt,
    api_url: Optional[str] = ApiUrlOpt, sandbox: bool = SandboxOpt, remote: bool = RemoteOpt,
    structure: Optional[str] = StructureOpt,
) -> None:
    """Open the carry: buy spot (a perp/perp carry: the long perp) and sell the perp, the same size, after pre-flight checks."""
    _expect_structure(config, structure)
    _trade("open", size, dry_run, yes, config, journal, api_url, sandbox, remote)


@trade_app.command("close")
def close_command(
    size: Optional[float] = typer.Option(None, "--size", help="BTC per leg to close (default: the whole carry)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="run the pre-flight and print the plan; send nothing"),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation (for scripts)"),
    config: Optional[Path] = ConfigOpt, journal: Optional[Path] = JournalOpt,
    api_url: Optional[str] = ApiUrlOpt, sandbox: bool = SandboxOpt, remote: bool = RemoteOpt,
    structure: Optional[str] = StructureOpt,
) -> None:
    """Close the carry: sell spot (a perp/perp carry: the long perp, reduce-only) and buy back the perp (reduce-only), the same size."""
    _expect_structure(config, structure)
    _trade("close", size, dry_run, yes, config, journal, api_url, sandbox, remote)


@trade_app.command("rotate")
def rotate_command(
    long: str = typer.Option(..., "--long", help="the venue (ccxt id) of the new long perp: one of the config's [spot], "
                                                 "[perp] and [[rotation.venues]]"),
    short: str = typer.Option(..., "--short", help="the venue (ccxt id) of the new short perp"),
    size: Optional[float] = typer.Option(None, "--size", help="BTC per leg of the new pair (default: what the venues "
                                                              "hold of the pair held)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="run both pre-flights and print the plans; send nothing"),
    yes: bool = typer.Option(False, "--yes", "-y", help="do not ask for confirmation (for scripts)"),
    config: Optional[Path] = ConfigOpt, journal: Optional[Path] = JournalOpt,
    api_url: Optional[str] = ApiUrlOpt, sandbox: bool = SandboxOpt, remote: bool = RemoteOpt,
) -> None:
    """Move a perp/perp carry to another pair of venues: close the pair held (paired), then open the new pair."""
    from fundarb.config import default_config_path, load

    _check_size(size)
    held_cfg, path, target = _context(config, journal, api_url, sandbox, remote, "fundarb trade rotate", ("perp_perp",))
    base = load(config or default_config_path())
    names = [v.exchange for v in base.rotation_venues()]
    for flag, name in (("--long", long), ("--short", short)):
        if name not in names:
            _fail(f"{flag} {name} is not a venue of config {base.name} (its venues: {', '.join(names)})")
    if long == short:
        _fail(f"--long and --short name one venue ({long}): a perp/perp carry is long on one venue, short on another")
    new_cfg = pair_of(base, long, short)
    lock = _rotation_lock(path, (held_cfg, new_cfg), target)  # both pairs' accounts, from reconcile to the last order
    try:
        plans = _run(_prepare_rotation(held_cfg, new_cfg, path, target, size))
        if plans is None:
            return
        if dry_run:
            out.print("dry run: nothing was sent")
            return
        _confirm_rotation(held_cfg, new_cfg, plans, yes)
        code = _send_rotation(held_cfg, new_cfg, path, target, plans)
    finally:
        lock.release()
    if code:
        raise typer.Exit(code)


def _rotation_lock(path: Path, cfgs, target):
    """The one-actor lock of the trade log and of every account of both pairs."""
    from fundarb.live.identity import session_identities
    from fundarb.live.runlock import ActorLock

    ids = [i for c in cfgs for i in session_identities(c, target.api_url, target.sandbox).values()]
    path.parent.mkdir(parents=True, exist_ok=True)
    return ActorLock(path, ids, "fundarb trade rotate").acquire()


def _pair(cfg) -> tuple[str, str]:
    return cfg.spot.exchange, cfg.perp.exchange


async def _prepare_rotation(held_cfg, new_cfg, path: Path, target, size: float | None):
    """Reconcile the pair held, size and plan its close and the new pair's
    open (the open as the venues will be once the close is done); (close
    plan or None when the pair held is flat, open plan)."""
    from fundarb.live.ccxt.client import common_lot
    from fundarb.live.execution.holdings import holdings
    from fundarb.live.execution.preflight import as_closed, perp_position, plan_trade, snapshot
    from fundarb.live.execution.rotation import pair_text
    from fundarb.live.execution.session import open_session
    from fundarb.live.journal import lift_hint
    from fundarb.wiring import venue_leverage

    held, to = _pair(held_cfg), _pair(new_cfg)
    old = await open_session(held_cfg, path, target, waits=_waits())
    try:
        rec = await _start(old)
        blocked = old.journal.blocked()
        if blocked:
            raise Stop(f"new entries are blocked ({blocked}): a rotation opens a pair, so nothing was sent "
                       f"({lift_hint(blocked)})")
        if not rec.ok:
            raise Stop("the venues and the trade log disagree on the pair held: nothing was sent")
        long_pos, short_pos = await asyncio.gather(perp_position(old.spot), perp_position(old.perp))
        venue_qty = max(min(long_pos["qty"], -short_pos["qty"]), 0.0)  # what the venues hold a leg
        flat = old.journal.position(old.spot.account) == 0 and old.journal.position(old.perp.account) == 0
        if held == to:
            raise Stop(f"the carry is already {pair_text(to)} ({venue_qty:g} BTC a leg): nothing to rotate" if not flat
                       else f"the carry is on {pair_text(to)} already and holds nothing: nothing to rotate; "
                       "`fundarb trade open --size` opens it", 0)
        close = None
        if not flat:
            perp_q, long_q = await _size(old, "close", None)
            close = await _plan(old, "close", perp_q, long_q)
            out.print(f"\n[bold]rotation: {pair_text(held)} to {pair_text(to)}[/]; first the close of the pair held:")
            _print_plan(old, close)
            if not close.ok:
                raise Stop(f"the close's pre-flight failed ({', '.join(c.name for c in close.failed)}): nothing was sent")
        elif size is None:
            raise Stop(f"the pair held ({pair_text(held)}) holds nothing on the venues: nothing to move; --size opens "
                       f"{pair_text(to)} at that size", 0)
    finally:
        await old.close()
    new = await open_session(new_cfg, path, target, waits=_waits())
    try:
        want = size if size is not None else venue_qty
        qty = common_lot(new.spot.rules, new.perp.rules, want)
        if not qty > 0:
            raise Stop(f"{want:g} BTC is under the lot both legs of {pair_text(to)} accept: nothing was sent")
        j = new.journal
        mine = holdings(j, new.spot, new.perp)
        snap = await snapshot(new.spot, new.perp, mine.spot_btc, mine.perp_btc, new.now_ns(), venue_leverage(new_cfg),
                              mine.perp_units)
        opening = plan_trade(new_cfg, as_closed(snap, to, held) if close is not None else snap, "open", qty,
                             new.spot.rules, new.perp.rules, j.blocked(), qty)
        out.print(f"\nthen the open of {pair_text(to)}, {qty:g} BTC a leg"
                  + (f" (the venues hold {venue_qty:g} of the pair held)" if size is None else "")
                  + (", as the venues will be once the close is done:" if close is not None else ":"))
        _print_plan(new, opening)
        if not opening.ok:
            raise Stop(f"the new pair's pre-flight failed ({', '.join(c.name for c in opening.failed)}): nothing was "
                       "sent")
        return close, opening
    finally:
        await new.close()


def _confirm_rotation(held_cfg, new_cfg, plans, yes: bool) -> None:
    """Ask before sending (unless ``yes``); a no or Ctrl-C exits having sent nothing."""
    from fundarb.live.execution.rotation import pair_text

    if yes:
        return
    close, opening = plans
    what = (f"close {pair_text(_pair(held_cfg))} ({close.spot.qty:g} / {close.perp.qty:g} BTC), then "
            if close is not None else "")
    try:
        go = typer.confirm(f"Rotate: {what}open {pair_text(_pair(new_cfg))} ({opening.qty:g} BTC a leg)?",
                           default=False)
    except (KeyboardInterrupt, EOFError, typer.Abort):
        out.print("\naborted at the confirmation: nothing was sent")
        raise typer.Exit(130 if not sys.stdin.closed else 1) from None
    if not go:
        out.print("not confirmed: nothing was sent")
        raise typer.Exit(1)


def _send_rotation(held_cfg, new_cfg, path: Path, target, plans) -> int:
    """The rotation, journaled: its ``rotate`` operation, the paired close of
    the pair held, the pair held made the new one, the paired open; 0 when
    both were done and the venues agree."""
    from fundarb.config import config_hash
    from fundarb.live.execution.rotation import MOVED, begin_rotation, pair_text, parts, set_held
    from fundarb.live.journal import Journal

    close, opening = plans
    held, to = _pair(held_cfg), _pair(new_cfg)
    j = Journal(path)
    try:
        rotation = begin_rotation(j, time.time_ns(), config_hash(new_cfg), opening.qty, held, to,
                                  {"close": [close.qty, close.spot.qty] if close is not None else None})
    finally:
        j.close()
    part = {"rotation": rotation}
    code = _send_part(held_cfg, path, target, "close", close.qty, close.spot.qty, part) if close is not None else 0
    j = Journal(path)
    try:
        closed = parts(j, rotation).get("close")
        if _recovering(rotation, closed):
            return code or 1
        if close is not None and (code or closed is None or closed["status"] not in MOVED):
            why = f"operation {closed['op_id']} ended {closed['status']}" if closed is not None else "it was not sent"
            _end_rotation(j, rotation, "failed", f"the close of {pair_text(held)} did not finish ({why}): the pair "
                          f"held stays {pair_text(held)}; nothing of {pair_text(to)} was opened")
            return code or 1
        set_held(j, *to, time.time_ns())  # from here the trade log holds the new pair, flat until the open
    finally:
        j.close()
    out.print(f"the pair held is now {pair_text(to)}; opening it")
    code = _send_part(new_cfg, path, target, "open", opening.qty, opening.spot.qty, part)
    j = Journal(path)
    try:
        row = next(r for r in j.operations() if r["op_id"] == rotation)
        if row["status"] != "executing":
            return code
        opened = parts(j, rotation).get("open")
        if _recovering(rotation, opened):
            return code or 1
        before = f"{pair_text(held)} closed" if close is not None else f"{pair_text(held)} held nothing"
        if opened is not None and opened["status"] in MOVED:
            _end_rotation(j, rotation, "done", f"{before}, {pair_text(to)} opened by operation {opened['op_id']}")
        else:
            why = f"operation {opened['op_id']} ended {opened['status']}" if opened is not None else "it was not sent"
            _end_rotation(j, rotation, "interrupted", f"{before}; the open of {pair_text(to)} did not finish ({why})")
            code = code or 1
    finally:
        j.close()
    return code


def _recovering(rotation: int, op) -> bool:
    """Whether the rotation's paired operation ``op`` was cut short (a timeout
    or a network error): then the rotation stays open, and the recovery that
    finishes ``op`` (`fundarb reconcile`, or any next start) ends it too."""
    if op is None or op["status"] not in ("executing", "needs_recovery"):
        return False
    err.print(f"[yellow]rotation {rotation} waits for operation {op['op_id']} ({op['kind']}):[/] `fundarb reconcile` "
              "finishes both (it opens nothing more)")
    return True


def _send_part(cfg, path: Path, target, kind: str, qty: float, spot_qty: float, part: dict) -> int:
    """One paired operation of a rotation; its exit code (a refused plan is one error line and 2)."""
    try:
        return _run(_execute(cfg, path, target, kind, qty, spot_qty, part)) or 0
    except typer.Exit as stop:  # said in its line; the rotation is ended by what the journal holds
        return stop.exit_code or 1
    except KeyboardInterrupt:
        err.print("\n[yellow]interrupted while rotating:[/] orders may have been sent; run `fundarb reconcile` to "
                  "finish the operation and the rotation (it opens nothing more)")
        raise typer.Exit(130) from None


def _end_rotation(j, rotation: int, status: str, text: str) -> None:
    j.finish_operation(rotation, time.time_ns(), status, text)
    out.print(f"[bold]rotation {rotation}: {status}[/] ({escape(text)})")


def _trade(kind: str, size: float | None, dry_run: bool, yes: bool, config, journal, api_url, sandbox,
           remote: bool = False) -> None:
    _check_size(size)
    cfg, path, target = _context(config, journal, api_url, sandbox, remote, "fundarb trade", TRADED)
    lock = actor_lock(cfg, path, target, f"fundarb trade {kind}", venues=True)  # from reconcile to the last order
    try:
        plan = _run(_prepare(cfg, path, target, kind, size))
        if plan is None:
            return
        if dry_run:
            out.print("dry run: nothing was sent")
            return
        _confirm(kind, plan, yes)
        code = _send_plan(cfg, path, target, kind, plan)
    finally:
        lock.release()
    if code:
        raise typer.Exit(code)


def actor_lock(cfg, path: Path, target, doing: str, venues: bool):
    """Take the one-actor lock of the trade log and (``venues``) of each
    venue account the config trades, before any venue is contacted; one
    error line naming the holder when another process has it."""
    from fundarb.live.runlock import ActorLock

    lock = ActorLock.of_config(path, cfg, target, doing, venues)
    path.parent.mkdir(parents=True, exist_ok=True)
    return lock.acquire()


def _confirm(kind: str, plan, yes: bool) -> None:
    """Ask before sending (unless ``yes``); a no or Ctrl-C exits having sent nothing."""
    if yes:
        return
    try:
        go = typer.confirm(f"Send these two orders ({kind}: {_leg(plan.spot.account)} {plan.spot.qty:g} BTC, perp "
                           f"{_order_text(plan.perp)})?", default=False)
    except (KeyboardInterrupt, EOFError, typer.Abort):
        out.print("\naborted at the confirmation: nothing was sent")
        raise typer.Exit(130 if not sys.stdin.closed else 1) from None
    if not go:
        out.print("not confirmed: nothing was sent")
        raise typer.Exit(1)


def _order_text(leg) -> str:
    """A leg plan's order in its unit: BTC, or an inverse perp's contracts with their BTC worth."""
    return f"{leg.order:g} contracts ({leg.qty:.6g} BTC)" if leg.units >= 0 else f"{leg.qty:g} BTC"


def _send_plan(cfg, path, target, kind: str, plan) -> int:
    """Send the confirmed plan's two orders; 0 when both legs traded and the venues agree."""
    try:
        return _run(_execute(cfg, path, target, kind, plan.qty, plan.spot.qty)) or 0
    except KeyboardInterrupt:
        # orders may be out: the journal has them, and the next start finishes the operation
        err.print("\n[yellow]interrupted while trading:[/] orders may have been sent; "
                  "run `fundarb reconcile` to finish the operation (it unwinds a leg left alone)")
        raise typer.Exit(130) from None


async def _prepare(cfg, path, target, kind: str, size: float | None):
    from fundarb.live.execution.session import open_session

    session = await open_session(cfg, path, target, waits=_waits())
    try:
        await _start(session)
        qty, spot_qty = await _size(session, kind, size)
        plan = await _plan(session, kind, qty, spot_qty)
        _print_plan(session, plan)
        if not plan.ok:
            raise Stop(f"pre-flight failed ({', '.join(c.name for c in plan.failed)}): nothing was sent")
        return plan
    finally:
        await session.close()


async def _start(session):
    """What every trading command does first: finish what a stopped process
    left, and reconcile the journal with the venues; the reconciliation."""
    from fundarb.live.execution.reconcile import reconcile

    rec = await reconcile(session, "start")
    for note in rec.notes:
        out.print(f"[dim]reconcile:[/] {escape(note)}")
    for m in rec.mismatches:
        err.print(f"[yellow]reconciliation mismatch:[/] {escape(m)}")
    return rec


async def _size(session, kind: str, size: float | None) -> tuple[float, float]:
    """(perp, spot BTC) of the trade; the perp in its unit (BTC, or an inverse
    perp's contracts). Closing everything: the whole short, and all the spot
    the carry holds (the buy's fee in BTC makes it a little less), each
    rounded to its own market's lot."""
    from fundarb.live.ccxt.client import common_lot

    if session.perp.face:
        return await _size_contracts(session, kind, size)
    if size is None:
        perp = session.perp.rules.floor_btc(max(-session.journal.position(session.perp.account), 0.0))
        spot = session.spot.rules.floor_btc(max(session.journal.position(session.spot.account, session.spot.base), 0.0))
        if perp <= 0 and spot <= 0:
            raise Stop("the trade log shows no carry position to close", 0)
        return perp, spot
    qty = common_lot(session.spot.rules, session.perp.rules, size)
    if abs(qty - size) > 1e-12:
        lot = max(session.spot.rules.step_btc, session.perp.rules.step_btc)
        raise Stop(f"--size {size:g} is not a multiple of the lot {float(lot):g} BTC that both legs accept "
                   f"(the legs must be equal); use {qty:g}")
    return qty, qty


async def _size_contracts(session, kind: str, size: float | None) -> tuple[float, float]:
    """(contracts, spot BTC) of a coin-margined trade, at the perp's mark: an
    open of ``size`` BTC shorts the whole contracts nearest to that worth and
    buys the BTC those contracts are worth; a close buys back the whole short
    (or the contracts worth ``size``) and sells all the carry's BTC (or
    ``size``), with what the short has settled in, as the core's exit does."""
    from fundarb.live.execution.holdings import holdings
    from fundarb.live.execution.transfers import covered_by_holding

    perp, spot = session.perp, session.spot
    mark = float((await perp.call("fetch_funding_rate", perp.symbol)).get("markPrice") or 0.0)
    if not mark > 0:
        raise Stop(f"{perp.account}: the venue gives no mark price for {perp.symbol}; nothing was sent")
    held = holdings(session.journal, spot, perp)
    keep = session.cfg.keeps_btc  # a carry on BTC held: an open buys what the holding lacks, a close sells nothing
    if size is None:
        contracts = max(-held.perp_units, 0.0)
        btc = 0.0 if keep else spot.rules.floor_btc(max(held.exit_btc(mark), 0.0))
        if contracts <= 0 and btc <= 0:
            raise Stop("the trade log shows no carry position to close", 0)
        return contracts, btc
    contracts = float(round(perp.units_for(size, mark)))
    if kind == "close":
        contracts = min(contracts, max(-held.perp_units, 0.0))
    if contracts < 1:
        raise Stop(f"--size {size:g} BTC is under one {perp.symbol} contract ({perp.face:g} USD, "
                   f"{perp.btc(1, mark):.6g} BTC at the mark {mark:,.1f})")
    if keep:
        return contracts, 0.0 if kind == "close" else spot.rules.ceil_btc(
            perp.btc(contracts, mark) - await covered_by_holding(session, contracts))
    btc = size if kind == "close" else spot.rules.floor_btc(perp.btc(contracts, mark))
    return contracts, spot.rules.floor_btc(btc)


async def _plan(session, kind: str, qty: float, spot_qty: float):
    from fundarb.live.execution.holdings import holdings
    from fundarb.live.execution.preflight import plan_trade, snapshot
    from fundarb.wiring import venue_leverage

    j = session.journal
    held = holdings(j, session.spot, session.perp)
    snap = await snapshot(session.spot, session.perp, held.spot_btc, held.perp_btc, session.now_ns(),
                          venue_leverage(session.cfg), held.perp_units, session.cfg.structure_kind == "unified")
    return plan_trade(session.cfg, snap, kind, qty, session.spot.rules, session.perp.rules, j.blocked(), spot_qty)


def _print_plan(session, plan) -> None:
    cfg = session.cfg
    out.print(f"\n[bold]{plan.kind}: {_leg(plan.spot.account)} {plan.spot.qty:g} BTC, perp {_order_text(plan.perp)}[/]  "
              f"config {cfg.name} "
              f"({session.config_hash[:12]}), trade log {session.journal.path}")
    t = Table(box=None, pad_edge=False, header_style="bold")
    t.add_column("")
    for leg in (plan.spot, plan.perp):
        t.add_column(leg.account, justify="right", no_wrap=True)
    rows = (("market", lambda leg: leg.symbol), ("side", lambda leg: leg.side.value),
            ("order", _order_text), ("BTC", lambda leg: f"{leg.qty:.8g}"), ("mid", lambda leg: f"{leg.mid:,.2f}"),
            ("expected price", lambda leg: f"{leg.price:,.2f}"), ("notional USDT", lambda leg: f"{leg.notional:,.2f}"),
            ("fee USDT", lambda leg: f"{leg.fee:,.4f}"), ("slippage USDT (vs mid)", lambda leg: f"{leg.slippage:,.4f}"))
    for name, cell in rows:
        t.add_row(name, *(cell(leg) for leg in (plan.spot, plan.perp)))
    out.print(t)
    nxt = (f"next settlement {_time(plan.next_funding_ts)} UTC" if plan.next_funding_ts else "next settlement unknown")
    pred = f", predicted {plan.predicted_apr:.2%}" if plan.predicted_apr is not None else ""
    out.print(f"expected costs: fees {plan.fees:,.4f} USDT, slippage {plan.slippage:,.4f} USDT")
    long = plan.long  # a perp/perp carry's long perp, on its own venue
    short = f"{plan.perp.account} " if long is not None else ""
    out.print(f"funding: {short}{plan.funding_apr:.2%} APR{pred}; about {plan.funding_per_settlement:+,.4f} USDT per "
              f"settlement on the position after the trade; {nxt}")
    if long is not None:
        out.print(f"funding: {long.account} {long.funding_apr:.2%} APR; about {long.funding_per_settlement:+,.4f} USDT "
                  f"per settlement on the position after the trade; next settlement {_time(long.next_funding_ts)} UTC")
    if plan.kind == "open":
        liq = (f"margin buffer {plan.buffer_after:.1%}, liquidation {plan.liquidation_after:,.1f}"
               if math.isfinite(plan.liquidation_after) else "no liquidation price (no rise liquidates the short)")
        out.print(f"after the trade: {short or 'perp '}leverage {plan.leverage_after:.2f}x, {liq} "
                  f"(venue leverage {plan.venue_leverage:g}x)")
        if long is not None:
            out.print(f"after the trade: {long.account} leverage {long.leverage_after:.2f}x, margin buffer "
                      f"{long.buffer_after:.1%}, liquidation {long.liquidation_after:,.1f} (venue leverage "
                      f"{long.venue_leverage:g}x)")
    for note in dict.fromkeys((plan.margin_note, long.margin_note if long is not None else "")):
        if note:
            out.print(f"[yellow]note:[/] {escape(note)}")
    out.print("pre-flight:")
    for c in plan.checks:
        mark = "[green]ok  [/]" if c.ok else "[red]FAIL[/]"
        out.print(f"  {mark} {escape(c.name)}: {escape(c.detail)}")


async def _execute(cfg, path, target, kind: str, qty: float, spot_qty: float, part_of: dict | None = None) -> int:
    from fundarb.live.execution.paired import execute_pair
    from fundarb.live.execution.reconcile import reconcile
    from fundarb.live.execution.session import open_session
    from fundarb.live.execution.transfers import covered_by_holding, hold_for_open, margin_out, restore_margin

    session = await open_session(cfg, path, target, waits=_waits())
    try:
        plan = await _plan(session, kind, qty, spot_qty)  # the prompt may have waited: check again before sending
        if not plan.ok:
            _print_plan(session, plan)
            raise Stop(f"conditions changed since the plan ({', '.join(c.name for c in plan.failed)}): nothing was sent")
        covered = 0.0
        if kind == "open":
            await _set_venue_leverage(session)
            if cfg.keeps_btc:  # the holding is the short's margin: in its wallet before the short goes out
                covered = await covered_by_holding(session, qty)
                await _moved(session, await hold_for_open(session, covered), "the short's margin")
        elif session.perp.face:  # coin-margined: the BTC sold comes back from the short's wallet first
            moved = await margin_out(session, spot_qty)
            if moved:
                out.print(f"moved {moved:.8g} BTC from {session.perp.account} to {session.spot.account} to sell")
        prices = {"spot": plan.spot.price, "perp": plan.perp.price}
        outcome = await execute_pair(session, kind, qty, {"qty": qty, "spot_qty": spot_qty, "prices": prices, "checks": [
            [c.name, c.ok, c.detail] for c in plan.checks], "fees": plan.fees, "slippage": plan.slippage,
            "covered": covered, **(part_of or {})}, spot_qty)
        _print_outcome(session, outcome)
        if kind == "open" and session.perp.face:
            # the bought BTC becomes the short's margin
            await _moved(session, await restore_margin(session), "the short's margin")
        rec = await reconcile(session, f"after {kind}")
        _print_position(rec, session)
        if outcome.status == "naked":
            err.print(f"[red]NAKED LEG:[/] the legs differ by {outcome.residual:+g} BTC after "
                      f"{cfg.live_settings.hedge_timeout_seconds:g} s; new entries are blocked. "
                      "Run `fundarb reconcile`, and close the difference by hand if it stays.")
            return 1
        if not rec.ok:
            err.print("[yellow]the venues and the trade log disagree after the trade; new entries are blocked "
                      "until `fundarb reconcile` finds them in agreement[/]")
            return 1
        return 0 if outcome.status in ("done", "rebalanced") else 1
    finally:
        await session.close()


async def _moved(session, btc: float, why: str) -> None:
    if btc:
        out.print(f"moved {btc:.8g} BTC from {session.spot.account} to {session.perp.account} ({why})")


async def _set_venue_leverage(session) -> None:
    """Bring each perp venue's leverage setting (the short's; a perp/perp
    carry's long too) to what the pre-flight assumed
    (``fundarb.wiring.venue_leverage``): the margin it promised depends on it."""
    from fundarb.live.execution.preflight import perp_position
    from fundarb.wiring import venue_leverage

    want = venue_leverage(session.cfg)
    for leg in session.legs:
        if not leg.is_perp:
            continue
        pos = await perp_position(leg)
        if not pos["leverage"] == pos["leverage"] or pos["leverage"] > want or (leg.face and pos["leverage"] != want):
            await leg.call("set_leverage", want, leg.symbol)
            out.print(f"{'perp' if leg is session.perp else leg.account} venue leverage set to {want}x")


def _print_outcome(session, outcome) -> None:
    out.print(f"[bold]operation {outcome.op_id}: {outcome.kind} -> {outcome.status}[/]")
    t = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("client id", "leg", "order", "filled/BTC", "avg price", "fee USDT", "status"):
        t.add_column(col, no_wrap=col != "status", justify="right" if col in ("avg price", "fee USDT") else "left")
    for row in session.journal.orders(outcome.op_id):
        t.add_row(row["client_id"], _leg(row["account"]), f"{row['role']} {row['side']}",
                  f"{row['filled_qty']:g}/{row['qty']:g}" + (" contracts" if row["leg"] == "perp" and session.perp.face else ""),
                  f"{row['avg_price']:,.2f}", f"{row['fees']:,.4f}",
                  row["status"] + (f" ({escape(row['status_reason'][:60])})" if row["status_reason"] else ""))
    out.print(t)
    for a in outcome.actions:
        out.print(f"  {escape(a)}")


def _drift_line(session, spot_btc: float, perp_btc: float) -> str:
    """The carry's delta and drift; with the perp flat, BTC the venue would
    not trade (the executor's naked-leg rule at the last fill's price) is
    said to be dust, not a drift of 100%."""
    from fundarb.core.book import drift_of
    from fundarb.live.execution.paired import naked_gap

    fills = session.journal.fills()
    price = float(fills[-1]["price"]) if fills else 0.0
    if perp_btc == 0 and spot_btc and not naked_gap(session, spot_btc, price, True):
        return (f"flat: the {spot_btc:+.8g} BTC left is under the spot market's lot or minimum order "
                "(dust a closed carry leaves, not a leg)")
    return (f"delta {spot_btc + perp_btc:+.8g} BTC, drift {drift_of(spot_btc, perp_btc, 0.0):.3%} "
            f"(limit {session.cfg.risk.max_drift:.0%})")


def _print_position(rec, session) -> None:
    state = "[green]agree[/]" if rec.ok else "[red]DISAGREE[/]"
    out.print(f"position check ({rec.trigger}): venues and trade log {state}")
    if rec.keeps_btc:
        out.print(f"  spot {session.spot.account}: {rec.venue_spot_btc:.8g} BTC held on the venue "
                  f"({rec.journal_spot:+.8g} of it bought or settled by the carry)")
    elif session.spot.is_perp:  # a perp/perp carry's long perp: a position on its venue
        out.print(f"  long {session.spot.account}: venue {rec.venue_spot_btc:+.8g} BTC, trade log {rec.journal_spot:+.8g}")
    else:
        out.print(f"  spot {session.spot.account}: carry {rec.journal_spot:+.8g} BTC (venue balance {rec.venue_spot_btc:.8g})")
    if session.perp.face:
        out.print(f"  perp {session.perp.account}: venue {rec.venue_perp_units:+g} contracts, trade log "
                  f"{rec.journal_perp_units:+g} ({rec.journal_perp:+.8g} BTC at the entry)")
    else:
        out.print(f"  perp {session.perp.account}: venue {rec.venue_perp_qty:+.8g} BTC, trade log {rec.journal_perp:+.8g}")
    if rec.keeps_btc:
        short = (f"the short's {-rec.journal_perp:.8g} BTC" if rec.journal_perp < 0 else "no short: the BTC is the holder's")
        out.print(f"  BTC held {rec.venue_spot_btc:.8g} against {short}; uncovered {rec.drift:.3%} "
                  f"(limit {session.cfg.risk.max_drift:.0%})")
    else:
        out.print("  " + _drift_line(session, rec.journal_spot, rec.journal_perp))
    for m in rec.mismatches:
        out.print(f"  [red]mismatch:[/] {escape(m)}")


# ---------------------------------------------------------------------------------- positions / reconcile

def positions_command(
    config: Optional[Path] = ConfigOpt, journal: Optional[Path] = JournalOpt,
    api_url: Optional[str] = ApiUrlOpt, sandbox: bool = SandboxOpt, remote: bool = RemoteOpt,
) -> None:
    """Both legs as the venues report them, next to the trade log: position, delta, margin, funding."""
    cfg, path, target = _context(config, journal, api_url, sandbox, remote, "fundarb positions", TRADED)
    if is_paper(path):
        _paper_positions(cfg, path)
        return
    _run(_positions(cfg, path, target))


def _paper_positions(cfg, path: Path) -> None:
    """A paper trade log's positions: the paper venue is the runner's
    simulator, so its word is the trade log (fills, funding, the simulator's
    accounts at the last step) and the runner's last heartbeat; the venues'
    own accounts are not asked."""
    from fundarb.app.runner.registry import running
    from fundarb.live.execution.holdings import holdings_of
    from fundarb.live.journal import last_step
    from fundarb.wiring import contract_size_of

    face = contract_size_of(cfg)  # coin-margined: the short in contracts, its fees and funding in BTC
    j = _open_trade_log(path)
    try:
        venues = j.venues()
        accounts, beat = last_step(j)
        spot, perp = cfg.spot_account, cfg.perp_account
        held = holdings_of(j, spot, perp, face)
        fills, paid = j.rows("fills"), j.rows("funding")
        blocked = j.blocked()
    finally:
        j.close()
    runner = next((r for r in running() if r.journal.resolve() == path.resolve()), None)
    watched = next(iter(venues.values())).host if venues else "?"
    out.print(f"[bold]{cfg.name}[/], paper trade log {path}")
    out.print(f"paper trading on the market data of {watched}; "
              + (f"runner pid {runner.pid} running" if runner else "no runner running"))
    t = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("leg", "trade log BTC", "cash USDT", "entry"):
        t.add_column(col, justify="right" if col != "leg" else "left", no_wrap=True)
    short = f"{held.perp_btc:+.8g}" + (f" ({held.perp_units:+g} contracts)" if face else "")
    for leg, name, qty in (("spot", spot, f"{held.spot_btc:+.8g}"), ("perp", perp, short)):
        a = accounts.get(name, {})
        t.add_row(f"{leg} {name}", qty, f"{a.get('cash', math.nan):,.2f}",
                  f"{a['entry']:,.2f}" if a.get("entry") else "-")
    out.print(t)
    out.print(f"delta {held.delta:+.8g} BTC, drift {held.drift:.3%} (limit {cfg.risk.max_drift:.0%})"
              + ("; the spot leg holds what the short settled in" if face else ""))
    if beat:
        buf = beat.get("margin_buffer")
        out.print(f"last heartbeat {escape(str(beat.get('venue_time')))}: equity {beat.get('equity', math.nan):,.2f} "
                  f"USDT, margin buffer {'-' if buf is None else f'{buf:.1%}'}, leverage {beat.get('leverage', 0):.2f}")
    fees = sum(f["fee_quote"] or 0.0 for f in fills)
    received = f"{sum(f['amount'] for f in paid):+.8g} BTC" if face else f"{sum(f['amount'] for f in paid):+,.4f} USDT"
    out.print(f"trade log: {len(fills)} fills, fees {fees:,.4f} USDT; {len(paid)} funding payments, {received}")
    if blocked:
        err.print(f"[red]new entries blocked:[/] {escape(blocked)}")


async def _positions(cfg, path, target) -> None:
    from fundarb.live.execution.preflight import balance_of, perp_position, venue_margin_rule
    from fundarb.live.execution.session import open_session

    session = await open_session(cfg, path, target, waits=_waits())
    try:
        if session.spot.is_perp:
            await _perp_perp_positions(session)
            return
        j = session.journal
        spot_bal, perp_bal, pos, funding, (rule, rule_note) = await asyncio.gather(
            session.spot.call("fetch_balance"), session.perp.call("fetch_balance"), perp_position(session.perp),
            session.perp.call("fetch_funding_rate", session.perp.symbol), venue_margin_rule(session.perp, session.now_ns()))
        js, jp = j.position(session.spot.account, session.spot.base), j.position(session.perp.account)
        mark = float(funding.get("markPrice") or 0.0)
        out.print(f"[bold]{cfg.name}[/] ({session.config_hash[:12]}), trade log {session.journal.path}")
        if session.perp.face:
            await _coin_positions(session, spot_bal, perp_bal, pos, funding, rule, rule_note, mark)
            return
        t = Table(box=None, pad_edge=False, header_style="bold")
        for col in ("leg", "venue BTC", "trade log BTC", "value USDT", "free USDT"):
            t.add_column(col, justify="right" if col != "leg" else "left", no_wrap=True)
        t.add_row(f"spot {session.spot.account}", f"{balance_of(spot_bal, session.spot.base, 'total'):.8g}",
                  f"{js:+.8g}", f"{js * mark:,.2f}", f"{balance_of(spot_bal, session.spot.quote, 'free'):,.2f}")
        t.add_row(f"perp {session.perp.account}", f"{pos['qty']:+.8g}", f"{jp:+.8g}", f"{pos['qty'] * mark:,.2f}",
                  f"{balance_of(perp_bal, session.perp.quote, 'free'):,.2f}")
        out.print(t)
        out.print(_drift_line(session, js, jp))
        if pos["qty"]:
            buffer = (pos["liquidation"] - mark) / mark if mark else math.nan
            out.print(f"perp: entry {pos['entry']:,.2f}, mark {mark:,.2f}, liquidation {pos['liquidation']:,.2f}, "
                      f"margin buffer {buffer:.1%} (floor {cfg.risk.min_margin_buffer:.0%}), collateral "
                      f"{pos['collateral']:,.2f} USDT" + (f", venue leverage {pos['leverage']:g}x" if pos["leverage"] == pos["leverage"] else ""))
            out.print(_margin_line(rule, pos, mark))
        if rule_note:
            out.print(f"[yellow]note:[/] {escape(rule_note)}")
        if cfg.structure_kind == "unified":
            out.print(await _unified_lines(session))
        rate = float(funding.get("fundingRate") or 0.0)
        paid = j.rows("funding")
        _funding_lines(j, funding, f"{-pos['qty'] * mark * rate:+,.4f} USDT",
                       f"{sum(f['amount'] for f in paid):+,.4f} USDT", "USDT")
    finally:
        await session.close()


async def _perp_perp_positions(session) -> None:
    """A perp/perp carry's positions: each perp as its own venue holds it
    against the trade log, its margin by its venue's rule and tiers, its
    funding now and the payments the trade log holds, per venue."""
    from fundarb.core.book import margin_buffer
    from fundarb.live.execution.preflight import balance_of, perp_position, venue_margin_rule

    cfg, j = session.cfg, session.journal
    legs = session.legs
    read = await asyncio.gather(*(asyncio.gather(
        leg.call("fetch_balance"), perp_position(leg), leg.call("fetch_funding_rate", leg.symbol),
        venue_margin_rule(leg, session.now_ns())) for leg in legs))
    out.print(f"[bold]{cfg.name}[/] ({session.config_hash[:12]}), trade log {j.path}: long {session.spot.account}, "
              f"short {session.perp.account}")
    t = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("leg", "venue BTC", "trade log BTC", "value USDT", "free USDT"):
        t.add_column(col, justify="right" if col != "leg" else "left", no_wrap=True)
    held = [j.position(leg.account) for leg in legs]
    for leg, (bal, pos, funding, _), qty in zip(legs, read, held):
        mark = float(funding.get("markPrice") or 0.0)
        t.add_row(f"{'long' if leg is session.spot else 'short'} {leg.account}", f"{pos['qty']:+.8g}", f"{qty:+.8g}",
                  f"{pos['qty'] * mark:,.2f}", f"{balance_of(bal, leg.quote, 'free'):,.2f}")
    out.print(t)
    out.print(_drift_line(session, held[0], held[1]))
    paid_rows = j.rows("funding")
    for leg, (_, pos, funding, (rule, note)) in zip(legs, read):
        mark = float(funding.get("markPrice") or 0.0)
        if pos["qty"]:
            buffer = margin_buffer(pos["liquidation"], mark, pos["qty"]) if mark else math.nan
            out.print(f"{leg.account}: entry {pos['entry']:,.2f}, mark {mark:,.2f}, liquidation {pos['liquidation']:,.2f}, "
                      f"margin buffer {buffer:.1%} (floor {cfg.risk.min_margin_buffer:.0%}), collateral "
                      f"{pos['collateral']:,.2f} USDT" + (f", venue leverage {pos['leverage']:g}x"
                                                          if pos["leverage"] == pos["leverage"] else ""))
            out.print("  " + _margin_line(rule, pos, mark))
        if note:
            out.print(f"[yellow]note:[/] {escape(note)}")
        rate = float(funding.get("fundingRate") or 0.0)
        nxt = int(funding.get("fundingTimestamp") or 0) * 1_000_000
        paid = [f["amount"] for f in paid_rows if f["account"] == leg.account]
        out.print(f"{leg.account} funding: now {rate:.6%} per settlement, next {_time(nxt)} UTC, expected "
                  f"{-pos['qty'] * mark * rate + 0.0:+,.4f} USDT; the trade log holds {len(paid)} payments, "
                  f"{sum(paid):+,.4f} USDT")
    fills = j.rows("fills")
    out.print(f"trade log: {len(fills)} fills, fees {sum(f['fee_quote'] or 0.0 for f in fills):,.4f} USDT; "
              f"{len(paid_rows)} funding payments, {sum(f['amount'] for f in paid_rows):+,.4f} USDT")
    _print_blocks(j)


async def _coin_positions(session, spot_bal: dict, perp_bal: dict, pos: dict, funding: dict, rule, rule_note: str,
                          mark: float) -> None:
    """A coin-margined carry's positions: the carry's BTC across the spot and
    coin-margined wallets against the trade log's (with what the short has
    settled in), the short in contracts and in BTC, its liquidation by the
    venue's inverse rule with the wallet's BTC as margin, funding in BTC."""
    from fundarb.core.book import COIN, Collateral, VenueAccount, liquidation_of, uncovered_of
    from fundarb.core.errors import FundarbError
    from fundarb.core.model import MarketKind
    from fundarb.live.execution.holdings import holdings
    from fundarb.live.execution.preflight import balance_of
    from fundarb.live.execution.transfers import coin_wallet

    cfg, j, spot, perp = session.cfg, session.journal, session.spot, session.perp
    held = holdings(j, spot, perp)
    settle = perp.settle
    wallet = await coin_wallet(perp, pos)
    t = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("leg", "venue", "trade log", "value USD", "free"):
        t.add_column(col, justify="right" if col != "leg" else "left", no_wrap=True)
    t.add_row(f"spot {spot.account}", f"{balance_of(spot_bal, spot.base, 'total'):.8g} BTC",
              f"carry {held.spot_btc:+.8g} BTC", f"{held.spot_btc * mark:,.2f}",
              f"{balance_of(spot_bal, spot.quote, 'free'):,.2f} {spot.quote}")
    if not session.one_wallet:  # the coin-margined wallet beside the spot one
        t.add_row(f"wallet {perp.account}", f"{wallet:.8g} {settle}", f"settled {held.settled_btc:+.8g} {settle}",
                  f"{wallet * mark:,.2f}", f"{balance_of(perp_bal, settle, 'free'):.8g} {settle}")
    t.add_row(f"perp {perp.account}", f"{pos['units']:+g} contracts ({pos['qty']:+.8g} BTC)",
              f"{held.perp_units:+g} contracts ({held.perp_btc:+.8g} BTC)", f"{pos['units'] * perp.face:,.2f}", "")
    out.print(t)
    where = "its one wallet" if session.one_wallet else "both wallets"
    if cfg.keeps_btc:  # a carry on BTC held: the venue's BTC is the spot leg, and only an uncovered short is drift
        btc = balance_of(spot_bal, spot.base, "total") + (0.0 if session.one_wallet else wallet)
        out.print(f"BTC held {btc:.8g} on {where}, the short {-held.perp_btc:.8g} BTC: uncovered "
                  f"{uncovered_of(btc, held.perp_btc):.3%} (limit {cfg.risk.max_drift:.0%}); a close keeps the BTC")
    else:
        out.print(f"{_drift_line(session, held.spot_btc, held.perp_btc)}; the carry's BTC is in {where}, with "
                  f"what the short settled in ({held.settled_btc:+.8g} {settle})")
    if pos["units"]:
        short = VenueAccount(perp.account, MarketKind.PERP, 0.0, qty=pos["qty"], entry=pos["entry"], price=mark,
                             contract_size=perp.face, coin=wallet)
        try:
            liq = liquidation_of(rule, Collateral(COIN), VenueAccount("", MarketKind.SPOT, 0.0), short)
            text = (f"liquidation {liq:,.1f} by {rule.venue}'s rule, margin buffer {(liq - mark) / mark:.1%}"
                    if math.isfinite(liq) else f"no liquidation price by {rule.venue}'s rule (the wallet covers the short)")
        except FundarbError as exc:
            text = f"[yellow]{escape(str(exc))}[/]"
        venue_liq = pos["liquidation"]
        out.print(f"perp: entry {pos['entry']:,.2f}, mark {mark:,.2f}, {text}; the venue says "
                  + (f"{venue_liq:,.1f}" if venue_liq == venue_liq and venue_liq > 0 else "none")
                  + (f"; venue leverage {pos['leverage']:g}x" if pos["leverage"] == pos["leverage"] else "")
                  + f" (floor {cfg.risk.min_margin_buffer:.0%}; tiers {rule.as_of or 'undated'})")
    if rule_note:
        out.print(f"[yellow]note:[/] {escape(rule_note)}")
    rate = float(funding.get("fundingRate") or 0.0)
    due = short.funding_due(mark, rate) if pos["units"] else 0.0
    paid = sum(f["amount"] for f in j.rows("funding") if f["account"] == perp.account)
    _funding_lines(j, funding, f"{due:+.8g} {settle} ({due * mark:+,.4f} USD)", f"{paid:+.8g} {settle}", "USD")


async def _unified_lines(session) -> str:
    """A unified account's margin as the venue states it (not computed here)."""
    from fundarb.live.execution.preflight import unified_figures

    u = await unified_figures(session.perp)
    tiers = ", ".join(f"{r:g} up to {c:g} BTC" if math.isfinite(c) else f"{r:g} beyond" for c, r in u.btc_tiers)
    return escape(f"unified account, as the venue states it: equity {u.equity:,.2f} USD, margin balance "
                  f"{u.margin_balance:,.2f}, initial margin {u.initial:,.2f}, maintenance margin {u.maintenance:,.2f}, "
                  f"available {u.available:,.2f}, maintenance rate {u.mm_rate:.2%} (liquidation at 100%); BTC "
                  f"counts at the venue's collateral ratio {tiers}")


def _funding_lines(j, funding: dict, expected: str, paid: str, fee_unit: str) -> None:
    """The funding now and next, what the position is expected to get, what
    the trade log holds (fills, fees, payments), and any entries block."""
    rate = float(funding.get("fundingRate") or 0.0)
    nxt = int(funding.get("fundingTimestamp") or 0) * 1_000_000
    out.print(f"funding now {rate:.6%} per settlement ({rate * 3 * 365:.2%} APR at 8 h), next {_time(nxt)} UTC; "
              f"expected {expected}")
    fills = j.rows("fills")
    fees = sum(f["fee_quote"] or 0.0 for f in fills)
    out.print(f"trade log: {len(fills)} fills, fees {fees:,.4f} {fee_unit}; {len(j.rows('funding'))} funding "
              f"payments, {paid}")
    _print_blocks(j)


def _print_blocks(j) -> None:
    blocked = j.blocked()
    if blocked:
        err.print(f"[red]new entries blocked:[/] {escape(blocked)}")
    for op in j.operations("executing"):
        err.print(f"[yellow]operation {op['op_id']} ({op['kind']}) was left unfinished: run `fundarb reconcile`[/]")


def _margin_line(rule, pos: dict, mark: float) -> str:
    """The maintenance margin of the venue's position by the venue's tiers, and
    the liquidation price the venue's rule gives (isolated: the collateral is
    the wallet; a cross position's wallet is the whole account's, not shown)."""
    from fundarb.core.errors import FundarbError
    from fundarb.core.liquidation import ISOLATED, MODES

    mode = pos["mode"] if pos["mode"] in MODES else ISOLATED
    try:
        mm = rule.maintenance_for(pos["qty"], pos["entry"], mark, mode)
        text = f"maintenance margin {mm:,.2f} USDT by {rule.venue}'s tiers ({mode}"
        if mode == ISOLATED:  # the isolated wallet: ccxt's collateral less the unrealised PnL in it
            liq = rule.liquidation_price(pos["collateral"] - pos["unrealized"], pos["qty"], pos["entry"], ISOLATED)
            text += f"; liquidation by its rule {liq:,.2f}"
        return escape(text + f"; tiers {rule.as_of or 'undated'})")
    except FundarbError as exc:  # an unmodelled rule, a notional past the tiers: said in the line, the rest still shown
        return f"[yellow]{escape(str(exc))}[/]"


def reconcile_command(
    accept: Optional[str] = typer.Option(None, "--accept", help="record the spot BTC outside the carry as it is now, giving the reason (after you moved BTC yourself)"),
    config: Optional[Path] = ConfigOpt, journal: Optional[Path] = JournalOpt,
    api_url: Optional[str] = ApiUrlOpt, sandbox: bool = SandboxOpt, remote: bool = RemoteOpt,
) -> None:
    """Finish interrupted operations and compare the trade log with the venues; a mismatch blocks new entries."""
    cfg, path, target = _context(config, journal, api_url, sandbox, remote, "fundarb reconcile", TRADED)
    if accept is not None and not accept.strip():
        _fail("--accept needs a reason")
    lock = actor_lock(cfg, path, target, "fundarb reconcile", venues=True)  # a runner reconciles its own
    try:
        code = _run(_reconcile(cfg, path, target, accept))
    finally:
        lock.release()
    if code:
        raise typer.Exit(1)


async def _reconcile(cfg, path, target, accept: str | None) -> int:
    from fundarb.live.execution.reconcile import reconcile
    from fundarb.live.execution.session import open_session

    session = await open_session(cfg, path, target, waits=_waits())
    try:
        rec = await reconcile(session, "manual", accept)
        for note in rec.notes:
            out.print(f"[dim]note:[/] {escape(note)}")
        out.print(f"fills learned: {rec.fills_added}, funding payments learned: {rec.funding_added}")
        _print_position(rec, session)
        blocked = session.journal.blocked()
        out.print(f"new entries: {'[red]blocked[/] (' + escape(blocked) + ')' if blocked else 'allowed'}")
        return 0 if rec.ok else 1
    finally:
        await session.close()


# ---------------------------------------------------------------------------------- the trade log

LOG_TABLES = ("fills", "orders", "funding", "operations", "alerts", "reconciliations")


@trade_app.command("log")
def log_command(
    table: str = typer.Option("fills", "--table", help=f"what to list: {', '.join(LOG_TABLES)}"),
    since: Optional[str] = typer.Option(None, "--since", help="from this UTC date/time (fills and funding: the venue's time)"),
    until: Optional[str] = typer.Option(None, "--until", help="before this UTC date/time"),
    csv: Optional[Path] = typer.Option(None, "--csv", help="write the rows, every column, to this CSV file"),
    journal: Optional[Path] = JournalOpt,
) -> None:
    """List the trade log (fills by default), filtered by date; --csv exports it."""
    from fundarb.data.history import parse_time
    from fundarb.live.journal import Journal

    if table not in LOG_TABLES:
        _fail(f"--table must be one of {', '.join(LOG_TABLES)}, got {table!r}")
    path = journal_for(journal)
    if not path.is_file():
        _fail(f"no trade log at {path} (trades write it; --journal names another)")
    lo = parse_time(since, "--since") if since else None
    hi = parse_time(until, "--until") if until else None
    j = Journal(path)
    try:
        rows = _filtered(j.rows(table), table, lo, hi)
    finally:
        j.close()
    if csv is not None:
        _write_csv(csv, rows, table)
        out.print(f"{len(rows)} {table} rows written to {csv}")
        return
    _print_rows(rows, table)


def _filtered(rows: list[dict], table: str, lo: int | None, hi: int | None) -> list[dict]:
    key = "venue_ts" if table in ("fills", "funding") else "ts"
    return [r for r in rows if (lo is None or r[key] >= lo) and (hi is None or r[key] < hi)]


TIME_COLUMNS = ("ts", "venue_ts", "ts_created", "ts_updated", "ts_done")


def _write_csv(path: Path, rows: list[dict], table: str) -> None:
    """Every column, and beside each time in ns its ISO 8601 UTC form (``<column>_utc``)."""
    import polars as pl

    from fundarb.live.journal import schema_columns

    columns = schema_columns(table)
    wide = []
    for col in columns:
        wide.append(col)
        if col in TIME_COLUMNS:
            wide.append(f"{col}_utc")
    records = [{c: (_iso(r[c[:-4]]) if c.endswith("_utc") and c[:-4] in TIME_COLUMNS else r[c]) for c in wide}
               for r in rows]
    frame = pl.DataFrame(records, infer_schema_length=None) if records else pl.DataFrame({c: [] for c in wide})
    tmp = path.with_name(path.name + ".partial")
    try:
        frame.select(wide).write_csv(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        _fail(f"cannot write {path}: {exc.strerror or exc}")


def _iso(ns: Any) -> str | None:
    """ns since the epoch -> ISO 8601 UTC with microseconds (None stays None)."""
    from datetime import UTC, datetime

    if ns is None:
        return None
    sec, rest = divmod(int(ns), 1_000_000_000)
    return datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{rest // 1000:06d}Z"


def short_id(client_id: str) -> str:
    """A client id as a person reads it: fundarb's ``fa<config hash>-<n>`` is
    ``#n`` (the config hash is in the heading); a trade fundarb did not send
    keeps ``ext:`` and the end of the venue's order id."""
    if client_id.startswith("ext:"):
        return "ext:" + client_id[4:][-10:]
    head, _, n = client_id.rpartition("-")
    return f"#{n}" if head.startswith("fa") and n.isdigit() else client_id[-12:]


def _leg(account: str) -> str:
    return account.split(":")[-1]


def _num(x: Any, fmt: str = ",.2f") -> str:
    return "-" if x is None else format(x, fmt)


# each table as columns that fit 100 terminal columns: (heading, cell of a row, right-aligned, max width)
LOG_VIEWS: dict[str, tuple[tuple[str, Any, bool, int | None], ...]] = {
    "fills": (("venue time UTC", lambda r: _time(r["venue_ts"]), False, None),
              ("order", lambda r: short_id(r["client_id"]), False, 14), ("leg", lambda r: _leg(r["account"]), False, None),
              ("side", lambda r: r["side"], False, None), ("BTC", lambda r: f"{r['qty']:g}", True, None),
              ("price", lambda r: _num(r["price"]), True, None),
              ("fee", lambda r: _num(r["fee_quote"], ",.4f") if r["fee_quote"] is not None
               else f"{r['fee']:.8g} {r['fee_currency']}", True, None)),
    "orders": (("updated UTC", lambda r: _time(r["ts_updated"]), False, None),
               ("order", lambda r: short_id(r["client_id"]), False, 14), ("op", lambda r: str(r["op_id"]), True, None),
               ("leg", lambda r: r["leg"], False, None), ("role", lambda r: r["role"], False, 12),
               ("side", lambda r: r["side"], False, None), ("BTC", lambda r: f"{r['qty']:g}", True, None),
               ("filled", lambda r: f"{r['filled_qty']:g}", True, None),
               ("avg price", lambda r: _num(r["avg_price"]) if r["filled_qty"] else "-", True, None),
               ("status", lambda r: r["status"], False, 16)),
    "funding": (("venue time UTC", lambda r: _time(r["venue_ts"]), False, None),
                ("leg", lambda r: _leg(r["account"]), False, None), ("symbol", lambda r: r["symbol"], False, 16),
                ("rate", lambda r: "-" if r["rate"] is None else f"{r['rate']:.6%}", True, None),
                ("amount USDT", lambda r: f"{r['amount']:+,.4f}", True, None)),
    "operations": (("op", lambda r: str(r["op_id"]), True, None), ("started UTC", lambda r: _time(r["ts"]), False, None),
                   ("kind", lambda r: r["kind"], False, None), ("BTC", lambda r: f"{r['qty']:g}", True, None),
                   ("status", lambda r: r["status"], False, 14), ("result", lambda r: r["result"], False, 36)),
    "alerts": (("time UTC", lambda r: _time(r["ts"]), False, None), ("severity", lambda r: r["severity"], False, None),
               ("kind", lambda r: r["kind"], False, 18), ("outcome", lambda r: r["outcome"], False, 12),
               ("message", lambda r: r["message"], False, 36)),
    "reconciliations": (("time UTC", lambda r: _time(r["ts"]), False, None),
                        ("trigger", lambda r: r["trigger"], False, 10), ("ok", lambda r: "yes" if r["ok"] else "NO", False, None),
                        ("detail", lambda r: r["detail"], False, 56)),
}


def _print_rows(rows: list[dict], table: str) -> None:
    """The table in at most 100 columns: short ids, UTC times, long texts cut
    (``--csv`` has every column whole)."""
    if not rows:
        out.print(f"no {table} in that window")
        return
    accounts = sorted({r["account"] for r in rows if "account" in r})
    hashes = sorted({r["config_hash"][:12] for r in rows if r.get("config_hash")})
    out.print(f"[bold]{table}: {len(rows)} rows[/]" + (f" ({', '.join(accounts)})" if accounts else "")
              + (f"; config {', '.join(hashes)}" if hashes else ""))
    t = Table(box=None, pad_edge=False, header_style="bold")
    view = LOG_VIEWS[table]
    for heading, _, right, width in view:
        t.add_column(heading, no_wrap=True, justify="right" if right else "left", max_width=width,
                     overflow="ellipsis")
    for r in rows:
        t.add_row(*(escape(str(cell(r))) for _, cell, _, _ in view))
    out.print(t)
    if table == "fills":
        out.print(f"fees {sum(r['fee_quote'] or 0 for r in rows):,.4f} USDT (as charged, in BTC or USDT: --csv); bought "
                  f"{sum(r['qty'] for r in rows if r['side'] == 'buy'):g} BTC, sold "
                  f"{sum(r['qty'] for r in rows if r['side'] == 'sell'):g} BTC")


# ---------------------------------------------------------------------------------- the statement

def statement_command(
    by: str = typer.Option("day", "--by", help="one row per day or month (UTC)"),
    config: Optional[Path] = ConfigOpt, journal: Optional[Path] = JournalOpt,
) -> None:
    """What a trade log (live or paper) traded, paid and was paid, by day or month: fills, BTC bought and sold,
    traded notional, fees, funding, and the positions it holds now."""
    from collections import defaultdict
    from datetime import UTC, datetime

    if by not in ("day", "month"):
        _fail(f"--by must be day or month, got {by!r}")
    cfg, path, _ = _context(config, journal, None, False, False, "fundarb statement", TRADED)
    from fundarb.core.book import btc_worth
    from fundarb.wiring import contract_size_of

    face = contract_size_of(cfg)  # coin-margined: the perp's fills count contracts, its funding is BTC
    j = _open_trade_log(path)
    try:
        fills, paid, venues = j.rows("fills"), j.rows("funding"), j.venues()
        held = {cfg.spot_account: f"{j.position(cfg.spot_account):+.8g} BTC",
                cfg.perp_account: f"{j.units(cfg.perp_account):+g} contracts" if face
                else f"{j.position(cfg.perp_account):+.8g} BTC"}
    finally:
        j.close()
    width = 10 if by == "day" else 7

    def period(ns: int) -> str:
        return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d")[:width]

    rows: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for f in fills:
        r = rows[period(f["venue_ts"])]
        contracts = face if f["account"] == cfg.perp_account else 0.0
        r["fills"] += 1
        r["bought" if f["side"] == "buy" else "sold"] += btc_worth(f["qty"], contracts, f["price"])
        r["notional"] += f["qty"] * contracts if contracts else f["qty"] * f["price"]
        r["fees"] += f["fee_quote"] or 0.0
    for f in paid:
        rows[period(f["venue_ts"])]["funding"] += f["amount"]
        if cfg.long_perp:  # a perp/perp carry: each leg is paid by its own venue
            rows[period(f["venue_ts"])]["funding:" + f["account"].split(":")[0]] += f["amount"]
    kind = next((i.run for i in venues.values() if i.run != "live"), "live")
    out.print(f"[bold]statement[/] of the {kind} trade log {escape(str(path))}, by {by} (UTC)")
    if not rows:
        out.print("no fills and no funding payments yet")
        return
    t = Table(box=None, pad_edge=False, header_style="bold", show_footer=True)
    totals: defaultdict[str, float] = defaultdict(float)
    for r in rows.values():
        for k, v in r.items():
            totals[k] += v
    cols: tuple[tuple[str, str | None, str | None], ...] = (
        ("period", "total", None), ("fills", "fills", "{:.0f}"), ("BTC bought", "bought", "{:.8g}"),
        ("BTC sold", "sold", "{:.8g}"), ("notional USDT", "notional", "{:,.2f}"), ("fees USDT", "fees", "{:,.4f}"))
    if face:  # paid in BTC: not netted against fees in USD
        cols += (("funding BTC", "funding", "{:+.8g}"),)
    elif cfg.long_perp:
        paid_by = dict.fromkeys(f["account"].split(":")[0] for f in paid)
        cols += tuple((f"{venue} funding", f"funding:{venue}", "{:+,.4f}") for venue in paid_by)
        cols += (("funding USDT", "funding", "{:+,.4f}"), ("funding - fees", None, "{:+,.4f}"))
    else:
        cols += (("funding USDT", "funding", "{:+,.4f}"), ("funding - fees", None, "{:+,.4f}"))
    for heading, key, fmt in cols:
        foot = "total" if fmt is None else fmt.format(totals[key] if key else totals["funding"] - totals["fees"])
        t.add_column(heading, footer=foot, justify="left" if fmt is None else "right", no_wrap=True)
    for name in sorted(rows):
        r = rows[name]
        t.add_row(name, *(str(fmt).format(r[key] if key else r["funding"] - r["fees"]) for _, key, fmt in cols[1:]))
    out.print(t)
    out.print("held now: " + ", ".join(f"{a} {q}" for a, q in held.items())
              + " (price PnL of what is held is not in this statement: `fundarb positions`)")


# ---------------------------------------------------------------------------------- the dashboard

def monitor_command(
    config: Optional[Path] = typer.Argument(None, help="TOML config (default: sims/baseline.toml; a replay: the recording's own)"),
    replay: Optional[str] = typer.Option(None, "--replay", help="watch a recording replayed (a name under recordings/ or a folder)"),
    simulate: bool = typer.Option(False, "--simulate", help="watch a simulation of the config over its history"),
    speed: Optional[float] = typer.Option(None, "--speed", help="replay / simulation: data seconds per second (default: 60 replay, 86400 simulation)"),
    journal: Optional[Path] = JournalOpt, api_url: Optional[str] = ApiUrlOpt, sandbox: bool = SandboxOpt, remote: bool = RemoteOpt,
    config_option: Optional[Path] = typer.Option(None, "--config", "-c", help="the config, as the venue commands name it (the same as the argument)"),
) -> None:
    """The terminal dashboard: funding, both legs, delta, margin, PnL, payments, trades, alerts, connections."""
    from fundarb.ops.monitor import MonitorApp, engine_driver, live_driver, require_terminal

    if config is not None and config_option is not None and config != config_option:
        _fail(f"two configs named: {config} and --config {config_option}; name one")
    config = config or config_option
    require_terminal()  # before a simulation is built or a venue asked
    if replay and simulate:
        _fail("--replay and --simulate exclude each other")
    if speed is not None and not (math.isfinite(speed) and speed > 0):
        _fail(f"--speed must be a positive number of data seconds per second, got {speed}")
    if replay or simulate:
        source = _engine_source(config, replay, simulate)
        app = MonitorApp(source, engine_driver(speed or (60.0 if replay else 86_400.0)),
                         scanner=_data_scanner(source))
        app.run()
        return
    cfg, path, target = _context(config, journal, api_url, sandbox, remote, "fundarb monitor", MONITORED)
    from fundarb.live.runlock import RunnerLock

    runner = RunnerLock.holder(path)  # a runner reconciles its trade log itself: watch only
    paper = is_paper(path)  # a paper run's trade log: nothing to reconcile with the venues
    if not _run(_monitor_check(cfg, path, target, reconciling=runner is None and not paper)):
        return
    label = f"emulator {api_url}" if api_url else ("sandbox" if sandbox else "live")
    if paper:
        label = f"paper on {label} market data"
    if runner is not None:
        label += f", runner pid {runner}"
    MonitorApp(None, live_driver(cfg, path, target, label, reconciling=runner is None and not paper,
                                 paper=paper), scanner=_live_scanner(cfg, target)).run()


SCAN_DAYS = 30  # a simulation's or replay's scan: the shipped settlements of the 30 days before its clock


def _live_scanner(cfg, target):
    """The dashboard's [s] screen on live venues: `fundarb scan` of the venues' public funding now."""
    from fundarb.app.scan_live import LIVE_MARKETS, live_scan

    timeout = max(cfg.live_settings.request_timeout_seconds, 1.0)
    return lambda: live_scan(cfg, LIVE_MARKETS, target, None, timeout)


def _data_scanner(source):
    """The dashboard's [s] screen on a simulation or replay: `fundarb scan --history shipped` over the
    ``SCAN_DAYS`` days before its data clock."""
    from fundarb.app.scan import scan_doc
    from fundarb.data.history import SHIPPED_DIR

    async def scan():
        hi = source.engine.clock.now_ns() // 1_000_000
        px = source.engine.book.spot.price  # the impact sized at the price the engine sees, where it has one
        return scan_doc(source.cfg, SHIPPED_DIR, hi - SCAN_DAYS * 86_400_000, hi, False, None,
                        px if px == px and px > 0 else None, "the spot price the dashboard shows")
    return scan


async def _monitor_check(cfg, path, target, reconciling: bool = True) -> bool:
    """Connect and reconcile once before the screen opens, so a bad key or an
    unreachable venue is one plain error line; the dashboard then opens its
    own clients inside its event loop."""
    from fundarb.live.execution.session import open_session
    from fundarb.live.runlock import ActorLock, RunnerBusy
    from fundarb.ops.sources import keys_needed

    if keys_needed(cfg) or not reconciling:  # public data (or a paper log): the venues answer; nothing to reconcile
        session = await open_session(cfg, path, target, trading=False, waits=_waits())
        await session.close()
        return True
    lock = None
    if reconciling:  # reconciling may recover an operation: only while no other actor is on the account
        try:
            lock = ActorLock.of_config(path, cfg, target, "fundarb monitor (its first reconciliation)").acquire()
        except RunnerBusy as busy:
            err.print(f"[yellow]not reconciling now:[/] {escape(str(busy))}")
    try:
        session = await open_session(cfg, path, target, waits=_waits())
        try:
            if lock is not None:
                await _start(session)
        finally:
            await session.close()
    finally:
        if lock is not None:
            lock.release()
    return True


def _engine_source(config: Optional[Path], replay: Optional[str], simulate: bool):
    from fundarb.config import default_config_path, load, project_file
    from fundarb.core.errors import FundarbError
    from fundarb.data.history import history_for
    from fundarb.ops.sources import EngineSource
    from fundarb.replay.parse import ReplayError, load_recording

    try:
        if replay:
            from fundarb.app.replay import prepare_replay

            folder = Path(replay) if Path(replay).is_dir() else project_file(Path("recordings") / replay)
            if not folder.is_dir():
                raise ReplayError(f"no recording {replay!r} (not a folder, and no recordings/{replay})")
            rec = load_recording(folder)
            cfg = load(config or project_file(Path("sims") / rec.config))
            engine, _, _, _ = prepare_replay(rec, cfg)
            return EngineSource(cfg, engine, f"replay {rec.name}")
        from fundarb.data.scenario import apply_scenario
        from fundarb.sim.backtest import build_simulation

        cfg = load(config or default_config_path())
        engine, _ = build_simulation(cfg, apply_scenario(history_for(cfg, None), cfg.scenario))
        return EngineSource(cfg, engine, "simulation")
    except FundarbError:
        raise
    except ValueError as exc:  # the engine's own checks (a margin tier, a margin mode) refuse bad input with a plain ValueError
        _fail(str(exc))


# ---------------------------------------------------------------------------------- the kill switch

def kill_command(
    reason: str = typer.Argument("manual", help="why trading stops (kept in the trade log)"),
    flatten: bool = typer.Option(False, "--flatten", help="also close both legs, paired: now, or by the strategy runner when one is trading"),
    yes: bool = typer.Option(False, "--yes", "-y", help="flatten without asking for confirmation (for scripts)"),
    config: Optional[Path] = ConfigOpt, journal: Optional[Path] = JournalOpt,
    api_url: Optional[str] = ApiUrlOpt, sandbox: bool = SandboxOpt, remote: bool = RemoteOpt,
) -> None:
    """Kill switch: halt new orders (across restarts, until `fundarb resume`); --flatten also closes both legs."""
    from fundarb.config import config_hash
    from fundarb.core.errors import FundarbError
    from fundarb.live.execution.paired import BLOCK_KEY, FLATTEN_KEY
    from fundarb.live.execution.reconcile import KILL_SWITCH_PREFIX
    from fundarb.live.runlock import ActorLock, RunnerBusy, RunnerLock

    reason = reason.strip()
    if not reason:
        _fail('kill needs a reason (leave it out for "manual")')
    cfg, path, target = _context(config, journal, api_url, sandbox, remote, "fundarb kill", TRADED)
    j = _open_trade_log(path)
    try:  # the halt is written first: whatever happens after, no new order goes out
        was = j.blocked() or ""
        now = time.time_ns()
        j.set_state(BLOCK_KEY, f"{KILL_SWITCH_PREFIX}: {reason}", now)
        if flatten:
            j.set_state(FLATTEN_KEY, reason, now)
        _journal_alert(j, cfg, config_hash(cfg), "kill_switch",
                       f"new orders halted: {reason}" + ("; both legs to be flattened" if flatten else ""), "critical")
    finally:
        j.close()
    out.print(f"[bold red]kill switch on:[/] new orders are halted ({escape(reason)})"
              + (f"; was blocked: {escape(was)}" if was else ""))
    out.print('It holds across restarts and reconciliations until `fundarb resume "reason"`.')
    if not flatten:
        runner = RunnerLock.holder(path)
        if runner is not None:
            out.print(f"The strategy runner (pid {runner}) sends no new orders from now on.")
        out.print("Open positions are left as they are (`fundarb kill --flatten` closes both legs).")
        return
    runner = RunnerLock.holder(path)
    if runner is not None and runner != os.getpid():
        out.print(f"The strategy runner (pid {runner}) halts new orders and flattens both legs itself; "
                  "follow it with `fundarb positions`.")
        return
    if is_paper(path):  # the paper venue is a runner's simulator: nothing to send orders to now
        out.print("This is a paper trade log and no runner is running on it: the flatten request stays in it, and "
                  "the next `fundarb run --paper` on it flattens both legs first.")
        return
    try:
        lock = ActorLock.of_config(path, cfg, target, "fundarb kill --flatten").acquire()
    except RunnerBusy as busy:
        _fail(f"the halt is on, but nothing was flattened: {busy}; `fundarb kill --flatten` again once it has "
              "ended (a runner on the trade log flattens by itself)")
    try:
        _flatten_now(cfg, path, target, yes)
    except FundarbError as exc:  # its line first, then what the failed flatten leaves in the trade log
        error_line(str(exc))
        _say_if_not_flat(path)
        raise typer.Exit(2) from exc
    except typer.Exit as stop:
        if stop.exit_code:
            _say_if_not_flat(path)
        raise
    finally:
        lock.release()


def _say_if_not_flat(path: Path) -> None:
    from fundarb.live.execution.paired import FLATTEN_KEY

    if _state(path, FLATTEN_KEY) is not None:
        err.print("[yellow]not flat:[/] the flatten request stays in the trade log (a strategy runner started on it "
                  "flattens); `fundarb kill --flatten` tries again")


def _flatten_now(cfg, path: Path, target, yes: bool) -> None:
    """Close both legs as `trade close` does (reconcile, size, plan, confirm,
    paired orders, position check), then withdraw the flatten request."""
    from fundarb.live.execution.paired import FLATTEN_KEY

    plan = _run(_prepare(cfg, path, target, "close", None))
    if plan is None:  # the trade log holds no carry
        if not _last_reconciliation_ok(path):
            err.print("[red]the venues disagree with the trade log[/] (see the mismatches above): nothing was sent; "
                      "close what the venues hold by hand, then `fundarb reconcile`")
            raise typer.Exit(1)
        _set_state(path, FLATTEN_KEY, None)
        out.print("already flat: nothing to close; the flatten request is cleared")
        return
    try:
        _confirm("close", plan, yes)
    except typer.Exit:
        _set_state(path, FLATTEN_KEY, None)
        out.print("the flatten request is withdrawn; the kill switch stays on")
        raise
    code = _send_plan(cfg, path, target, "close", plan)
    if code:
        raise typer.Exit(code)
    _set_state(path, FLATTEN_KEY, None)
    out.print("[bold]flat:[/] both legs closed; the flatten request is cleared, the kill switch stays on")


def _open_trade_log(path: Path):
    """An existing trade log, or one error line (nothing is created or written)."""
    from fundarb.live.journal import Journal

    if not path.is_file():
        _fail(f"no trade log at {path} (--journal names another)")
    return Journal(path)


def _state(path: Path, key: str) -> str | None:
    j = _open_trade_log(path)
    try:
        return j.get_state(key)
    finally:
        j.close()


def _set_state(path: Path, key: str, value: str | None) -> None:
    j = _open_trade_log(path)
    try:
        j.set_state(key, value, time.time_ns())
    finally:
        j.close()


def _last_reconciliation_ok(path: Path) -> bool:
    j = _open_trade_log(path)
    try:
        rows = j.rows("reconciliations")
        return bool(rows[-1]["ok"]) if rows else True
    finally:
        j.close()


def _journal_alert(j, cfg, h: str, kind: str, message: str, severity: str) -> None:
    """What ``LiveSession.alert`` does, without a session (no venue is
    contacted): journal the alert, and send it when alert channels are configured."""
    from fundarb.live.alerts import Alerter, Notice, channel_from_env

    now = time.time_ns()
    try:
        channel = channel_from_env()
    except ValueError as exc:  # a malformed alert URL must not stop the kill switch
        err.print(f"[yellow]alert not sent:[/] {escape(str(exc))}")
        channel = None
    if channel is None:
        j.add_alert(now, kind, severity, h, message)
        return
    title = f"[{cfg.name} {h[:12]}] {kind.replace('_', ' ')}"
    Alerter(channel, j, h, cfg.alert_settings).raise_notice(Notice(now, kind, kind, severity, title, message))


def resume_command(
    reason: str = typer.Argument(..., help="why trading may go on (kept in the trade log)"),
    config: Optional[Path] = ConfigOpt, journal: Optional[Path] = JournalOpt,
) -> None:
    """Lift the kill switch (it holds across restarts until this), giving the reason."""
    from fundarb.config import config_hash
    from fundarb.live.execution.paired import BLOCK_KEY, FLATTEN_KEY
    from fundarb.live.execution.reconcile import KILL_SWITCH_PREFIX

    if not reason.strip():
        _fail("resume needs a reason")
    cfg, path, _ = _context(config, journal, None, False, False, "fundarb resume", TRADED)
    j = _open_trade_log(path)
    try:
        blocked = j.blocked() or ""
        now = time.time_ns()
        if not blocked.startswith(KILL_SWITCH_PREFIX):
            out.print(f"the kill switch is not on ({'entries blocked: ' + blocked if blocked else 'nothing is blocked'})")
            if j.get_state(FLATTEN_KEY) is not None:
                j.set_state(FLATTEN_KEY, None, now)
                out.print("a leftover flatten request is cleared")
            raise typer.Exit(1)
        with j.tx():  # lifted and said together
            j.set_state(BLOCK_KEY, None, now)
            j.set_state(FLATTEN_KEY, None, now)
        # said like the kill switch: journaled, and sent when alert channels are set
        _journal_alert(j, cfg, config_hash(cfg), "kill_switch_resumed", f"resumed: {reason} (was: {blocked})", "warning")
        out.print(f"kill switch lifted: {escape(reason)}")
    finally:
        j.close()
