"""A rotation backtest's outputs: ``report.json`` (the whole run's figures,
each pair's stretch and each move with the gain it beat its bar by),
``stretches.csv`` and ``rotation.png`` (equity, each stretch shaded by its
pair), written all-or-nothing like a backtest's."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from rich.console import Console
from rich.table import Table

from fundarb import __version__
from fundarb.config import to_dict
from fundarb.data.history import fmt_time
from fundarb.output.report import _clean, print_always_on, publish_folder, writing
from fundarb.sim.rotation import RotationResult

REPORT_FILE, STRETCHES_FILE, PLOT_FILE = "report.json", "stretches.csv", "rotation.png"
OUTPUT_FILES = (REPORT_FILE, STRETCHES_FILE, PLOT_FILE)
STRETCH_COLUMNS = ("pair", "long", "short", "start", "end", "capital", "entries", "funding_long", "funding_short",
                   "fees", "basis_pnl", "net_pnl", "withdrawals_after")


def stretch_rows(r: RotationResult) -> list[dict[str, Any]]:
    rows = []
    for s in r.stretches:
        m = s.result.metrics
        funding = {a.split(":")[0]: v for a, v in m["funding_by_account"].items()}
        rows.append({"pair": str(s.pair), "long": s.pair.long, "short": s.pair.short, "start": fmt_time(s.start),
                     "end": fmt_time(s.end), "capital": s.capital, "entries": m["entries"],
                     "funding_long": funding.get(s.pair.long, 0.0), "funding_short": funding.get(s.pair.short, 0.0),
                     "fees": m["fees"], "basis_pnl": m["price_pnl"], "net_pnl": m["net_pnl"],
                     "withdrawals_after": s.withdrawals})
    return rows


def report_dict(r: RotationResult) -> dict[str, Any]:
    return _clean({
        "fundarb_version": __version__,
        "config_name": r.config.name,
        "config_hash": r.config_hash,
        "always_on_config_hash": r.always_on.config_hash,
        "config": to_dict(r.config),
        "metrics": r.metrics,
        "moves": [{"at": fmt_time(t), "from": str(m.current) if m.current else None, "to": str(m.to),
                   "gain_apr": m.gain_apr, "bar_apr": m.bar_apr} for t, m in r.moves],
        "stretches": stretch_rows(r),
    })


def plot(r: RotationResult, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(11, 4.5))
    ts = [datetime.fromtimestamp(t / 1e9, UTC) for t in r.curve["ts"]]
    ax.plot(ts, r.curve["equity"], color="black", linewidth=1.0, label="equity")  # type: ignore[arg-type]  # datetimes
    b = r.always_on.curve
    ax.plot([datetime.fromtimestamp(t / 1e9, UTC) for t in b["ts"]], b["equity"], color="grey", linewidth=0.9,  # type: ignore[arg-type]
            linestyle="--", label="always-on: the first pair held throughout")
    colours: dict[str, Any] = {}
    palette = plt.get_cmap("tab10")
    for s in r.stretches:
        name = str(s.pair)
        first = name not in colours
        colour = colours.setdefault(name, palette(len(colours) % 10))
        ax.axvspan(datetime.fromtimestamp(s.start / 1e9, UTC), datetime.fromtimestamp(s.end / 1e9, UTC),  # type: ignore[arg-type]
                   color=colour, alpha=0.15, label=name if first else None)
    m = r.metrics
    edge = m.get("edge_over_always_on")
    ax.set_title(f"{r.config.name}: venue rotation, net APR {m['net_apr']:.2%}"
                 + (f" (always-on {m['always_on_net_apr']:.2%}, edge {edge:+.2%})" if edge is not None else "")
                 + f", {m['moves']} moves, {m['withdrawals']} withdrawals", fontsize=10)
    ax.set_ylabel("equity (USDT)")
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_rotation(r: RotationResult, out: Path) -> dict[str, Path]:
    def build(tmp: Path) -> None:
        with writing(out / REPORT_FILE):
            (tmp / REPORT_FILE).write_text(json.dumps(report_dict(r), indent=2, sort_keys=True, allow_nan=False) + "\n")
        with writing(out / STRETCHES_FILE), (tmp / STRETCHES_FILE).open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=STRETCH_COLUMNS)
            w.writeheader()
            w.writerows(stretch_rows(r))
        with writing(out / PLOT_FILE):
            plot(r, tmp / PLOT_FILE)

    publish_folder(out, OUTPUT_FILES, build)
    return {name: out / name for name in OUTPUT_FILES}


def print_rotation(r: RotationResult, console: Console, paths: dict[str, Path] | None = None) -> None:
    m = r.metrics
    t = Table(title=f"{r.config.name}: venue rotation, {m['days']:.0f} days, {m['moves']} moves")
    for col in ("pair", "from", "to", "entries", "net PnL"):
        t.add_column(col, justify="right" if col in ("entries", "net PnL") else "left")
    for row in stretch_rows(r):
        t.add_row(row["pair"], row["start"], row["end"], str(row["entries"]), f"{row['net_pnl']:,.2f}")
    console.print(t)
    funding = ", ".join(f"{v} {x:,.2f}" for v, x in sorted(m["funding_by_venue"].items()))
    fees = ", ".join(f"{v} {x:,.2f}" for v, x in sorted(m["fees_by_venue"].items()))
    console.print(f"net APR {m['net_apr']:.2%}  Sharpe {m['sharpe']:.2f}  MaxDD {m['max_drawdown']:.2%}  "
                  f"final equity {m['final_equity']:,.2f}")
    console.print(f"funding by venue: {funding}; fees by venue: {fees}; basis {m['basis_pnl']:,.2f}; "
                  f"withdrawals {m['withdrawals']} ({m['withdrawal_fees']:,.2f} USDT)")
    print_always_on(m, {}, console)
    if paths:
        console.print("wrote " + ", ".join(str(p) for p in paths.values()))
