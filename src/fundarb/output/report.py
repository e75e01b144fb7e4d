"""Backtest outputs: the JSON report, the PNG of the run, the summary table."""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import matplotlib

if "matplotlib.pyplot" not in sys.modules:
    # files, not windows: but a notebook that already chose its backend
    # (inline) keeps it when it imports fundarb
    matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from fundarb import __version__  # noqa: E402
from fundarb.config import to_dict  # noqa: E402
from fundarb.core.errors import FundarbError  # noqa: E402
from fundarb.core.metrics import MIN_ANNUALISE_DAYS  # noqa: E402
from fundarb.live.journal import JournalError  # noqa: E402
from fundarb.output.trades import write_trade_log  # noqa: E402
from fundarb.sim.backtest import NO_ORDERS, BacktestResult, carry_curve  # noqa: E402

REPORT_FILE = "report.json"
PLOT_FILE = "backtest.png"
TRADE_LOG_FILE = "trades.sqlite"


def _clean(value: Any) -> Any:
    """JSON has no inf/nan: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def not_applicable_text(r: BacktestResult) -> dict[str, str]:
    """Each metric the run leaves out, with why, in words."""
    # a metric is left out for a short window only when the window has its note
    return {k: cast(str, r.window_note) if v != NO_ORDERS else "no orders" for k, v in sorted(r.not_applicable.items())}


def report_dict(r: BacktestResult) -> dict[str, Any]:
    if r.window_note:
        notes = [f"{r.window_note}; APR, CAGR and Sharpe need {MIN_ANNUALISE_DAYS:g} days of data, "
                 "so net_pnl, funding and fees are in USDT over the window"]
    else:
        notes = ["net_apr = net PnL / capital * 365 / days; sharpe uses daily excess returns over collateral_rate",
                 "frictionless_hold_*: every settlement in the window earned on the configured notional, no costs"]
    if r.always_on is not None:
        notes.append("always_on_*: the same structure, capital, costs, margin rules and data, the carry held from "
                     "the first hour to the last (config always_on_config_hash); edge_over_always_on = net_apr - "
                     "always_on_net_apr")
    if r.metrics["orders"] == 0:
        notes.append("no orders: the strategy did not trade in this window (fill rate n/a)")
    d = r.history.describe()
    if d.get("funding_settlements_with_venue_mark", 0) < d["funding_settlements"]:
        notes.append("funding settled at the perp hourly close where the history carries no venue mark price "
                     "(metrics: settlements_at_venue_mark, settlements_at_perp_price)")
    return _clean({
        "fundarb_version": __version__,
        "config_name": r.config.name,
        "config_hash": r.config_hash,
        "always_on_config_hash": r.always_on.config_hash if r.always_on is not None else None,
        "seed": r.config.seed,
        "config": to_dict(r.config),
        "data": r.history.describe(),
        "metrics": r.metrics,
        "not_applicable": not_applicable_text(r),
        "gates": r.gates,
        "all_gates_passed": r.passed,
        "notes": notes,
    })


def render_json(r: BacktestResult) -> str:
    return json.dumps(report_dict(r), sort_keys=True, indent=2) + "\n"


def _utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


def _figures_line(r: BacktestResult) -> str:
    """The headline over the equity panel: annualised figures where the
    window allows them, else the run's PnL, funding and fees in USDT."""
    m = r.metrics
    if r.window_note is None:
        bench = (f" (always-on {m['always_on_net_apr']:.2%}, edge {m['edge_over_always_on']:+.2%})"
                 if "edge_over_always_on" in m else "")
        return f"net APR {m['net_apr']:.2%}{bench}, Sharpe {m['sharpe']:.2f}, MaxDD {m['max_drawdown']:.2%}"
    return (f"net PnL {m['net_pnl']:+,.2f} USDT (funding {m['funding_net']:+,.2f}, fees {m['fees']:,.2f}), "
            f"MaxDD {m['max_drawdown']:.2%}; {r.window_note}")


def plot(r: BacktestResult, path: Path) -> None:
    """The run over its window: equity, funding and fees, delta drift and
    margin buffer; a run that sent no orders gets its window with a note
    instead of four empty panels."""
    c = r.curve
    t = [_utc(ts) for ts in c["ts"]]
    lo, hi = _utc(r.history.start), _utc(r.history.end)
    if hi <= lo:  # a one-instant window still gets an axis to show it on
        lo, hi = _utc(r.history.start - 30_000_000_000), _utc(r.history.start + 30_000_000_000)
    what = "replay" if "replay" in r.history.describe() else "backtest"
    title = f"fundarb {what}: {r.config.name}  (config {r.config_hash[:12]}, seed {r.config.seed})"
    if r.metrics["orders"] == 0:
        fig, ax = plt.subplots(1, 1, figsize=(11, 4), constrained_layout=True)
        axes = [ax]
        fig.suptitle(title)
        ax.plot(t, c["equity"], color="tab:blue", lw=1)  # type: ignore[arg-type]  # matplotlib plots datetimes
        ax.axhline(r.config.capital, color="grey", lw=0.6, ls="--")
        ax.set_ylabel("equity (USDT)")
        ax.set_title(_figures_line(r), fontsize=9, loc="left")
        ax.text(0.5, 0.55, "no orders", transform=ax.transAxes, ha="center", va="center", fontsize=18, color="dimgrey")
        detail = f"the strategy sent no orders from {lo:%Y-%m-%d %H:%M:%S} to {hi:%Y-%m-%d %H:%M:%S} UTC"
        if r.metrics["final_equity"] == r.config.capital:
            detail += f"; equity stayed at the capital, {r.config.capital:,.0f} USDT"
        ax.text(0.5, 0.38, detail, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="dimgrey")
    else:
        fig, axes = plt.subplots(4, 1, figsize=(11, 10), sharex=True, constrained_layout=True)
        fig.suptitle(title)
        ax = axes[0]
        if r.config.keeps_btc:  # the holding's value beside what the carry is judged on
            ax.plot(t, c["equity"], color="tab:grey", lw=0.8, label="equity, with the BTC held")  # type: ignore[arg-type]
            ax.plot(t, carry_curve(c), color="tab:blue", lw=1,  # type: ignore[arg-type]
                    label="the carry's equity (without the held BTC's price moves)")
            ax.legend(loc="upper left", fontsize=8)
        else:
            ax.plot(t, c["equity"], color="tab:blue", lw=1, label=r.config.name)  # type: ignore[arg-type]
        if r.always_on is not None:  # the benchmark's carry equity, as the run's is judged
            b = r.always_on.curve
            ax.plot([_utc(ts) for ts in b["ts"]], carry_curve(b), color="tab:grey", lw=0.9, ls="--",  # type: ignore[arg-type]
                    label="always-on (held from the first hour to the last)")
            ax.legend(loc="upper left", fontsize=8)
        ax.axhline(r.config.capital, color="grey", lw=0.6, ls=":")
        ax.set_ylabel("equity (USDT)")
        ax.set_title(_figures_line(r), fontsize=9, loc="left")
        ax = axes[1]
        ax.plot(t, c["funding"], color="tab:green", lw=1, label="cumulative funding")
        ax.plot(t, [-f for f in c["fees"]], color="tab:red", lw=1, label="cumulative fees (neg.)")
        ax.set_ylabel("USDT")
        ax.legend(loc="upper left", fontsize=8)
        ax = axes[2]
        ax.plot(t, [d * 100 for d in c["drift"]], color="tab:purple", lw=1)
        ax.axhline(r.config.risk.max_drift * 100, color="tab:red", lw=0.8, ls="--", label="alert threshold")
        ax.set_ylabel("delta drift (%)")
        ax.legend(loc="upper left", fontsize=8)
        ax = axes[3]
        ax.plot(t, [b * 100 if b == b else math.nan for b in c["margin_buffer"]], color="tab:orange", lw=1)
        ax.axhline(r.config.risk.min_margin_buffer * 100, color="tab:red", lw=0.8, ls="--", label="min buffer")
        ax.set_ylabel("margin buffer (%)")
        ax.legend(loc="upper left", fontsize=8)
        if any(c["in_position"]) and r.metrics.get("min_margin_buffer") is None:
            ax.text(0.5, 0.7, "no liquidation price while in position: the short is covered by the BTC it holds",
                    transform=ax.transAxes, ha="center", va="center", fontsize=9, color="dimgray")
    ax = axes[-1]
    ax.set_xlim(lo, hi)  # type: ignore[arg-type]  # matplotlib takes datetimes as limits
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    for a in axes:
        a.grid(alpha=0.3)
    try:
        fig.savefig(path, dpi=110, metadata={"Software": None})
    finally:
        plt.close(fig)


OUTPUT_FILES = (REPORT_FILE, PLOT_FILE, TRADE_LOG_FILE)


class OutputError(FundarbError, ValueError):
    """An output folder fundarb will not write into, or outputs it could not
    write (the message names the path and the system's reason)."""


def _cause(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


@contextmanager
def writing(shown: Path) -> Iterator[None]:
    """Turn a failed write (full disk, read-only or denied folder, file-size
    limit, SQLite's own I/O errors) into one OutputError naming ``shown``, the
    path the user asked for rather than the temporary one being written."""
    try:
        yield
    except (OSError, sqlite3.Error) as exc:
        raise OutputError(f"cannot write {shown}: {_cause(exc)}") from exc
    except JournalError as exc:  # a trade log's write that SQLite refused
        if exc.write_failure is None:
            raise
        raise OutputError(f"cannot write {shown}: {exc.write_failure}") from exc


def check_output_folder(out: Path, allowed: tuple[str, ...] = OUTPUT_FILES) -> None:
    """Refuse before any work is done: a path that is a file, or a folder
    holding files this command did not write (they would be mixed up with or
    lost among a run's outputs)."""
    with writing(out):
        if out.exists() and not out.is_dir():
            raise OutputError(f"--out {out} exists and is not a folder")
        foreign = sorted(p.name for p in out.iterdir() if p.name not in allowed) if out.is_dir() else []
    if foreign:
        raise OutputError(f"--out {out} holds files fundarb did not write ({', '.join(foreign[:5])}); choose another folder")


def publish_folder(out: Path, allowed: tuple[str, ...], build: Callable[[Path], None]) -> None:
    """Write a command's outputs into ``out`` all-or-nothing: ``build`` fills a
    temporary folder beside it, which then takes the place of ``out`` by
    rename, so ``out`` never holds a mix of two runs or a half-written file."""
    check_output_folder(out, allowed)
    with writing(out):
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    old = out.with_name(f".{out.name}.previous")
    try:
        with writing(out):  # what build() does not name itself is named by the folder
            build(tmp)
            os.chmod(tmp, 0o755)
            shutil.rmtree(old, ignore_errors=True)
            if out.exists():
                os.replace(out, old)
            try:
                os.replace(tmp, out)
            except OSError:
                if old.exists() and not out.exists():
                    os.replace(old, out)  # the previous outputs go back in place
                raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_outputs(r: BacktestResult, out: Path) -> dict[str, Path]:
    """Report, plot and trade log of one backtest, written all-or-nothing."""

    def build(tmp: Path) -> None:
        with writing(out / REPORT_FILE):
            (tmp / REPORT_FILE).write_text(render_json(r))
        with writing(out / PLOT_FILE):
            plot(r, tmp / PLOT_FILE)
        d = r.history.describe()
        what = "replay" if "replay" in d else "backtest"
        meta = {"config_name": r.config.name, "seed": str(r.config.seed), "fundarb_version": __version__,
                "data_start": d["start"], "data_end": d["end"]}
        with writing(out / TRADE_LOG_FILE):
            write_trade_log(tmp / TRADE_LOG_FILE, r.config, r.config_hash, what, meta, r.log, r.curve)

    publish_folder(out, OUTPUT_FILES, build)
    return {name: out / name for name in OUTPUT_FILES}


def _fmt(key: str, v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, dict):  # per account
        return ", ".join(f"{k} {_fmt(key, x)}" for k, x in v.items())
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if key in {"net_apr", "net_apr_over_collateral", "net_apr_btc", "cagr", "max_drawdown", "fill_rate", "delta_drift_max", "delta_drift_p99",
               "min_margin_buffer", "time_in_position", "frictionless_hold_funding_apr_on_notional",
               "frictionless_hold_funding_apr_on_capital", "mean_funding_apr_in_window", "always_on_net_apr",
               "always_on_max_drawdown", "always_on_time_in_position", "edge_over_always_on"}:
        return f"{v:.2%}"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) >= 10 else f"{v:.4f}"
    return str(v)


SUMMARY_KEYS = (
    "net_pnl", "net_apr", "net_apr_over_collateral", "cagr", "sharpe", "max_drawdown", "funding_received", "funding_paid", "fees", "slippage",
    "price_pnl", "funding_by_account", "fees_by_account", "transfers", "fill_rate", "entries", "orders", "fills",
    "liquidations", "delta_drift_max", "delta_drift_p99",
    "min_margin_buffer", "max_leverage", "time_in_position", "settlements_accrued", "settlements_at_venue_mark",
    "settlements_at_perp_price", "missed_settlements",
    "frictionless_hold_funding_apr_on_notional", "frictionless_hold_funding_apr_on_capital", "funding_btc", "fees_btc",
    "net_apr_btc",
)


def print_summary(r: BacktestResult, console: Console, paths: dict[str, Path] | None = None) -> None:
    d = r.history.describe()
    console.print(f"[bold]{r.config.name}[/]  config {r.config_hash[:12]}  seed {r.config.seed}")
    replay = d.get("replay")
    if replay is None:
        console.print(f"data {d['start']} .. {d['end']} UTC, {r.metrics['days']:.0f} days")
        console.print(f"{d['price_hours_carried_forward']} price hours carried over gaps; {d['mark_price']}",
                      style="dim")
    else:
        console.print(f"replay of {replay['recording']}: {d['start']} .. {d['end']} UTC, {r.metrics['days'] * 1440:.1f} minutes")
        for role, feed in replay["feeds"].items():
            events = ", ".join(f"{n:,} {k}s" for k, n in feed["events"].items())
            console.print(f"  {role}: {feed['exchange']} {feed['symbol']}, {feed['messages'].get('messages', 0):,} messages -> {events}",
                          style="dim", highlight=False)
        console.print(f"funding settlements from {replay['funding_settlements_from']}; {d['mark_price']}", style="dim")
    apr = r.metrics.get("net_apr")
    on_capital = f", net APR on capital {apr:.2%}" if apr is not None else ""
    console.print(f"structure {r.metrics['structure']}: capital used {r.metrics['capital_used']:,.0f} USDT, "
                  f"notional {r.metrics['notional']:,.0f}{on_capital}; final equity {r.metrics['final_equity']:,.2f} USDT = "
                  f"{r.metrics['final_equity_btc']:.6f} BTC", highlight=False)
    if r.metrics.get("capital_asset") == "BTC":
        console.print(f"capital held in BTC: {r.metrics['held_btc']:.8f} BTC at the start, kept after each carry; "
                      f"the carry made {r.metrics['carry_pnl']:+,.2f} USDT (its APR, Sharpe and MaxDD), the BTC no "
                      f"short hedged {r.metrics['held_btc_pnl']:+,.2f} USDT (the holder's price exposure)",
                      highlight=False)
    if r.window_note:
        console.print(f"{r.window_note}; APR, CAGR and Sharpe need {MIN_ANNUALISE_DAYS:g} days of data, "
                      "so PnL, funding and fees are in USDT", highlight=False)
    if r.metrics["orders"] == 0:
        console.print("no orders: the strategy did not trade in this window (fill rate n/a)", highlight=False)
    m = Table(title="metrics", show_header=False, box=None, padding=(0, 2))
    for k in SUMMARY_KEYS:
        if k in r.metrics:
            m.add_row(k, _fmt(k, r.metrics[k]))
        elif r.not_applicable.get(k) == NO_ORDERS:
            m.add_row(k, f"n/a ({NO_ORDERS})")
    console.print(m)
    if r.always_on is not None:
        print_always_on(r.metrics, r.not_applicable, console)
    g = Table(title="success gates")
    g.add_column("gate")
    g.add_column("value", justify="right")
    g.add_column("result")
    for gate in r.gates:
        result = {True: "[green]PASS[/]", False: "[red]FAIL[/]"}.get(gate["passed"], gate["result"])
        g.add_row(gate["gate"], _fmt(gate["metric"], gate["value"]), result)
    console.print(g)
    console.print(gates_verdict(r))
    if paths:
        for p in paths.values():
            console.print(f"wrote {p}")


ALWAYS_ON_ROWS = (("net APR", "net_apr"), ("Sharpe", "sharpe"), ("MaxDD", "max_drawdown"), ("net PnL", "net_pnl"),
                  ("fees", "fees"), ("time in position", "time_in_position"), ("entries", "entries"))


def print_always_on(m: dict[str, Any], na: dict[str, str], console: Console) -> None:
    """The run beside its always-on benchmark, and the edge over it."""
    t = Table(title="against always-on", caption="always-on: held from the first hour to the last",
              box=None, padding=(0, 2))
    t.add_column("")
    t.add_column("this config", justify="right")
    t.add_column("always-on", justify="right")
    for label, key in ALWAYS_ON_ROWS:
        if key in m or f"always_on_{key}" in m:
            t.add_row(label, _fmt(key, m.get(key)), _fmt(key, m.get(f"always_on_{key}")))
    console.print(t)
    edge = m.get("edge_over_always_on")
    if edge is not None:
        verdict = "[green]beats always-on[/]" if edge > 0 else "[red]does not beat always-on[/]"
        console.print(f"edge over always-on: {edge:+.2%} net APR ({verdict})", highlight=False)
    elif "edge_over_always_on" in na:
        console.print("edge over always-on: n/a (window too short to annualise)", highlight=False)


def gates_verdict(r: BacktestResult) -> str:
    """One line over the gates: how many fail and how many cannot be judged."""
    failed = sum(g["passed"] is False for g in r.gates)
    unjudged = [g for g in r.gates if g["passed"] is None]
    parts = [f"[red]{failed} gate(s) fail[/]"] if failed else []
    if unjudged:
        reasons = [g["result"] for g in unjudged]
        parts += [f"{reasons.count(why)} {why}" for why in sorted(set(reasons), key=reasons.index)]
        if not failed:
            parts.insert(0, f"[green]the other {len(r.gates) - len(unjudged)} pass[/]")
    return "; ".join(parts) if parts else "[green]all gates pass[/]"
