"""Backtest outputs: the JSON report, the PNG of the run, the summary table."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

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
from fundarb.backtest import BacktestResult  # noqa: E402
from fundarb.config import to_dict  # noqa: E402
from fundarb.store import write_trade_log  # noqa: E402

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


def report_dict(r: BacktestResult) -> dict[str, Any]:
    notes = [
        "net_apr = net PnL / capital * 365 / days; sharpe uses daily excess returns over collateral_rate",
        "frictionless_hold_*: every settlement in the window earned on the configured notional, no costs",
    ]
    d = r.history.describe()
    if d.get("funding_settlements_with_venue_mark", 0) < d["funding_settlements"]:
        notes.append("funding settled at the perp hourly close where the history carries no venue mark price "
                     "(metrics: settlements_at_venue_mark, settlements_at_perp_price)")
    return _clean({
        "fundarb_version": __version__,
        "config_name": r.config.name,
        "config_hash": r.config_hash,
        "seed": r.config.seed,
        "config": to_dict(r.config),
        "data": r.history.describe(),
        "metrics": r.metrics,
        "gates": r.gates,
        "all_gates_passed": r.passed,
        "notes": notes,
    })


def render_json(r: BacktestResult) -> str:
    return json.dumps(report_dict(r), sort_keys=True, indent=2) + "\n"


def plot(r: BacktestResult, path: Path) -> None:
    c = r.curve
    t = [datetime.fromtimestamp(ts / 1e9, tz=timezone.utc) for ts in c["ts"]]
    fig, axes = plt.subplots(4, 1, figsize=(11, 10), sharex=True, constrained_layout=True)
    what = "replay" if "replay" in r.history.describe() else "backtest"
    fig.suptitle(f"fundarb {what}: {r.config.name}  (config {r.config_hash[:12]}, seed {r.config.seed})")
    ax = axes[0]
    ax.plot(t, c["equity"], color="tab:blue", lw=1)
    ax.axhline(r.config.capital, color="grey", lw=0.6, ls="--")
    ax.set_ylabel("equity (USDT)")
    ax.set_title(f"net APR {r.metrics['net_apr']:.2%}, Sharpe {r.metrics['sharpe']:.2f}, "
                 f"MaxDD {r.metrics['max_drawdown']:.2%}", fontsize=9, loc="left")
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
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    for a in axes:
        a.grid(alpha=0.3)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


OUTPUT_FILES = (REPORT_FILE, PLOT_FILE, TRADE_LOG_FILE)


class OutputError(ValueError):
    """An output folder fundarb will not write into."""


def check_output_folder(out: Path, allowed: tuple[str, ...] = OUTPUT_FILES) -> None:
    """Refuse before any work is done: a path that is a file, or a folder
    holding files this command did not write (they would be mixed up with or
    lost among a run's outputs)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} exists and is not a folder")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in allowed)
        if foreign:
            raise OutputError(f"--out {out} holds files fundarb did not write ({', '.join(foreign[:5])}); choose another folder")


def publish_folder(out: Path, allowed: tuple[str, ...], build: Callable[[Path], None]) -> None:
    """Write a command's outputs into ``out`` all-or-nothing: ``build`` fills a
    temporary folder beside it, which then takes the place of ``out`` by
    rename, so ``out`` never holds a mix of two runs or a half-written file."""
    check_output_folder(out, allowed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    old = out.with_name(f".{out.name}.previous")
    try:
        build(tmp)
        os.chmod(tmp, 0o755)
        shutil.rmtree(old, ignore_errors=True)
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_outputs(r: BacktestResult, out: Path) -> dict[str, Path]:
    """Report, plot and trade log of one backtest, written all-or-nothing."""

    def build(tmp: Path) -> None:
        (tmp / REPORT_FILE).write_text(render_json(r))
        plot(r, tmp / PLOT_FILE)
        d = r.history.describe()
        meta = {"config_name": r.config.name, "seed": str(r.config.seed), "fundarb_version": __version__,
                "data_start": d["start"], "data_end": d["end"]}
        write_trade_log(tmp / TRADE_LOG_FILE, r.config_hash, meta, r.log, r.curve)

    publish_folder(out, OUTPUT_FILES, build)
    return {name: out / name for name in OUTPUT_FILES}


def _fmt(key: str, v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if key in {"net_apr", "net_apr_over_collateral", "cagr", "max_drawdown", "fill_rate", "delta_drift_max", "delta_drift_p99",
               "min_margin_buffer", "time_in_position", "frictionless_hold_funding_apr_on_notional",
               "frictionless_hold_funding_apr_on_capital", "mean_funding_apr_in_window"}:
        return f"{v:.2%}"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) >= 10 else f"{v:.4f}"
    return str(v)


SUMMARY_KEYS = (
    "net_pnl", "net_apr", "net_apr_over_collateral", "cagr", "sharpe", "max_drawdown", "funding_received", "funding_paid", "fees", "slippage",
    "price_pnl", "fill_rate", "entries", "orders", "fills", "liquidations", "delta_drift_max", "delta_drift_p99",
    "min_margin_buffer", "max_leverage", "time_in_position", "settlements_accrued", "settlements_at_venue_mark",
    "settlements_at_perp_price", "missed_settlements",
    "frictionless_hold_funding_apr_on_notional", "frictionless_hold_funding_apr_on_capital",
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
    m = Table(title="metrics", show_header=False, box=None, padding=(0, 2))
    for k in SUMMARY_KEYS:
        m.add_row(k, _fmt(k, r.metrics[k]))
    console.print(m)
    g = Table(title="success gates")
    g.add_column("gate")
    g.add_column("value", justify="right")
    g.add_column("result")
    for gate in r.gates:
        ok = "[green]PASS[/]" if gate["passed"] else "[red]FAIL[/]"
        g.add_row(gate["gate"], _fmt(gate["metric"], gate["value"]), ok)
    console.print(g)
    verdict = "[green]all gates pass[/]" if r.passed else f"[red]{sum(not x['passed'] for x in r.gates)} gate(s) fail[/]"
    console.print(verdict)
    if paths:
        for p in paths.values():
            console.print(f"wrote {p}")
