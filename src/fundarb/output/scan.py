"""The funding scan as tables, scan.json and scan.csv."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from fundarb.output.report import check_output_folder, writing
from fundarb.research.scan import COLUMNS, MIN_COVERAGE

SCAN_FILES = ("scan.json", "scan.csv")
_HEAD = {"gross_apr": "gross APR", "cost_apr": "cost APR", "capital_per_notional": "capital / notional",
         "net_apr_on_capital": "net APR on capital", "negative_buckets": "paid (8h)", "buckets": "buckets"}
_PERCENT = {"gross_apr", "cost_apr", "net_apr_on_capital", "negative_buckets", "current_apr"}


def cell(key: str, v: Any) -> str:
    if v is None:
        return "-"
    if key in _PERCENT:
        return f"{v:.2%}"
    if key == "capital_per_notional":
        return f"{v:.3f}"
    return str(v)


def write_scan(doc: dict[str, Any], out: Path) -> dict[str, Path]:
    """scan.json (everything) and, over stored data, scan.csv (a row per
    window and candidate), each written whole or not at all."""
    check_output_folder(out, SCAN_FILES)
    paths = {"json": out / "scan.json"}
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
        tmp = paths["json"].with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True, allow_nan=False) + "\n")
        tmp.replace(paths["json"])
        if "windows" not in doc:
            return paths
        paths["csv"] = out / "scan.csv"
        tmp = paths["csv"].with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["window", *COLUMNS], lineterminator="\n")
            w.writeheader()
            for win in doc["windows"]:
                w.writerows({"window": win["label"], **r} for r in win["rows"])
        tmp.replace(paths["csv"])
    return paths


def history_parts(doc: dict[str, Any], top: int = 10) -> list[Any]:
    """What the history scan shows, as rich renderables: a table per window, what was left out."""
    rt = ", ".join(f"{k} {v:.3%}" for k, v in doc["round_trip"].items())
    cap = ", ".join(f"{k} {v:.3f}" for k, v in doc["capital_per_notional"].items())
    parts: list[Any] = [Text.from_markup(
        f"[bold]funding scan[/] of {doc['data']} with {doc['config']}'s costs: round trip {rt} of notional, "
        f"amortised over {doc['hold_days']:g} days; capital per notional {cap}; impact sized at "
        f"{doc['price']:,.0f} USD ({doc['price_source']})")]
    for win in doc["windows"]:
        t = Table(title=f"{win['label']}: {len(win['rows'])} candidates, best {top} by net APR on capital")
        for c in COLUMNS:
            t.add_column(_HEAD.get(c, c), justify="left" if c in ("structure", "short", "long") else "right")
        for r in win["rows"][:top]:
            t.add_row(*(cell(c, r[c]) for c in COLUMNS))
        parts.append(t)
        if win["left_out"]:
            gone = ", ".join(f"{k} ({v:.0%})" for k, v in win["left_out"].items())
            parts.append(Text(f"  left out, settlements in under {MIN_COVERAGE:.0%} of the window's 8-hour buckets: "
                              f"{gone}", style="dim"))
    parts.append(Text("Hindsight: each pair shorts the perp that paid more over the window. gross: funding per "
                      "notional held all window; paid (8h): the share of 8-hour buckets in which the carry paid "
                      "funding.", style="dim"))
    return parts


def print_scan(doc: dict[str, Any], console: Console, top: int = 10) -> None:
    for part in history_parts(doc, top):
        console.print(part, highlight=False)


_LIVE = ("rank", "structure", "short", "long", "current_apr", "gross_apr", "cost_apr", "capital_per_notional",
         "capital_for_notional", "net_apr_on_capital")
_LIVE_HEAD = {"current_apr": "now APR", "gross_apr": "signal APR", "capital_for_notional": "capital (USD)"}


def print_live_scan(doc: dict[str, Any], console: Console, top: int = 10) -> None:
    for part in live_parts(doc, top):
        console.print(part, highlight=False)


def live_parts(doc: dict[str, Any], top: int = 10) -> list[Any]:
    """What the live scan shows, as rich renderables: the markets read (and
    those that failed, with why), the carries ranked."""
    m = Table(title="funding now, by market")
    for c in ("market", "rate", "predicted", "interval", "next settlement (UTC)", "signal APR", "30-day APR"):
        m.add_column(c, justify="left" if c == "market" else "right")
    for x in doc["markets"]:
        nxt = _ms(x["next_ts_ms"]) if x["next_ts_ms"] else "-"
        pred = f"{x['predicted']:.4%}" if x["predicted"] is not None else "not published"
        m.add_row(x["label"], f"{x['rate']:.4%}", pred, f"{x['interval_hours']:g} h", nxt, f"{x['signal_apr']:.2%}",
                  f"{x['trailing_apr']:.2%}")
    for label, why in doc["failed"].items():
        m.add_row(label, Text(why, style="yellow"), "", "", "", "", "")
    if not doc["rows"]:
        return [m, Text("no market answered: nothing to rank", style="yellow")]
    t = Table(title=f"carries by net APR on capital: signal = mean funding of the last {doc['signal_settlements']} "
              "8-hour periods; "
                    f"round trip over {doc['hold_days']:g} days; notional {doc['notional']:,.0f} USD")
    for c in _LIVE:
        t.add_column(_LIVE_HEAD.get(c, _HEAD.get(c, c)), justify="left" if c in ("structure", "short", "long") else "right")
    for r in doc["rows"][:top]:
        t.add_row(*(f"{r[c]:,.0f}" if c == "capital_for_notional" else cell(c, r[c]) for c in _LIVE))
    return [m, t]


def _ms(ms: int) -> str:
    from fundarb.research.funding_stats import fmt_ms

    return fmt_ms(ms)
