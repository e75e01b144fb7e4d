"""The structure comparison as a table, compare.json and compare.csv."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fundarb.research.compare import COLUMNS

_HEAD = {"net_apr": "APR", "sharpe": "Sharpe", "max_drawdown": "MaxDD", "min_margin_buffer": "min buffer",
         "liquidations": "liq", "transfers": "xfers", "capital_used": "capital", "entries": "entries",
         "held_btc_pnl": "held BTC PnL", "net_apr_btc": "APR in BTC"}
_PERCENT = {"net_apr", "max_drawdown", "min_margin_buffer", "net_apr_btc"}


def cell(key: str, v: Any) -> str:
    if v is None:
        return "-" if key != "min_margin_buffer" else "none"
    if key in _PERCENT:
        return f"{v:.2%}"
    if key == "sharpe":
        return f"{v:.2f}"
    if isinstance(v, float):
        return f"{v:,.0f}"
    return str(v)


def write_compare(doc: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "compare.json", "csv": out / "compare.csv"}
    tmp = paths["json"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True, allow_nan=False) + "\n")
    tmp.replace(paths["json"])
    tmp = paths["csv"].with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS), lineterminator="\n")
        w.writeheader()
        w.writerows(doc["rows"])
    tmp.replace(paths["csv"])
    return paths


def print_compare(doc: dict[str, Any], console: Console) -> None:
    console.print(f"[bold]{doc['base']}[/] by structure: seed {doc['seed']}, window {doc['window'][0]} .. {doc['window'][1]}, "
                  "each run from flat", highlight=False)
    for name, s in doc["structures"].items():
        changes = "; ".join(s["changes"]) or "the base config as it is"
        console.print(f"  {name} (config {s['config_hash'][:12]}): {changes}", style="dim", highlight=False)
    for name, why in doc["skipped"].items():
        console.print(f"  {name} left out: {why}", style="yellow", highlight=False)
    for name, gone in doc.get("windows_left_out", {}).items():
        for label, why in gone.items():
            console.print(f"  {name} {label} left out: {why}", style="dim", highlight=False)
    t = Table(title="net APR on capital used, per structure and window")
    shown = [c for c in COLUMNS if c not in ("funding_net", "days", "notional")]
    for c in shown:
        t.add_column(_HEAD.get(c, c), justify="left" if c in ("structure", "window") else "right")
    for r in doc["rows"]:
        t.add_row(*(cell(c, r[c]) for c in shown))
    console.print(t)
    console.print("min buffer: lowest distance to liquidation while in position; none: the short had no liquidation "
                  "price (coin-margined, covered by its BTC). held BTC PnL: the USD the BTC held outside a carry "
                  "made or lost (coin_margined_btc; not in its APR). APR in BTC: the equity counted in BTC. "
                  "A year shorter than 12 months is annualised.",
                  style="dim", highlight=False)
