"""The carry's structures side by side: one base config run through each
structure (``[structure]``) over the same window, costs and seed, on the whole
window and on each calendar year in it.

Each structure is the base config with only what the structure changes:

- ``spot_linear``: the base as it is (its notional and perp allocation);
- ``coin_margined``: the perp becomes the spot exchange's inverse BTC perp
  (``COIN_PERPS``) with the base perp's fees, spread, impact and latency;
- ``coin_margined_btc``: the same coin-margined carry on a capital held in
  BTC from the start (``structure.capital_asset = "BTC"``): no spot trades,
  the BTC kept after each carry. Its APR is the carry's; what the BTC held
  outside a carry made or lost in USD is ``held_btc_pnl``;
- ``unified``: the base's two markets held in one account;
- ``perp_perp``: the base's perp against the other venue's (``PAIR_PERPS``),
  half the capital on each venue, the short on whichever pays more; its
  history is the shipped 8-hour bars (2023-01 .. 2024-06), so a window or
  year outside them leaves it out, saying why.

The one-account structures need no second account's collateral, so they put
``deploy`` of the capital to work: their notional is ``capital * deploy`` (the
rest pays fees and slippage), and ``risk.max_position_btc`` grows with it. Each
run starts flat with the same seed. A history without the series a structure
needs (no inverse perp of that exchange) leaves that structure out, saying why.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs

from fundarb.config import (
    COIN_MARGINED,
    PERP_PERP,
    SPOT_LINEAR,
    STRUCTURES,
    UNIFIED,
    Config,
    StructureConfig,
    config_hash,
)
from fundarb.data.history import DataError, fmt_time, history_for, parse_time
from fundarb.sim.backtest import run_backtest

# spot exchange -> (inverse perp exchange, symbol, USD per contract)
COIN_PERPS: dict[str, tuple[str, str, float]] = {
    "binance": ("binancecoinm", "BTC/USD:BTC", 100.0),
    "bybit": ("bybit", "BTC/USD:BTC", 1.0),
}
# perp exchange -> the other venue's linear BTC perp a perp/perp carry pairs it with
PAIR_PERPS: dict[str, tuple[str, str]] = {"binanceusdm": ("bybit", "BTC/USDT:USDT")}
# the shipped Binance COIN-M hourly series has day-long holes (the longest 48 h
# missing, 49 h between known closes): a coin-margined run carries over them
COIN_GAP_HOURS = 49.0
# the coin-margined carry on a capital held in BTC (``structure.capital_asset = "BTC"``)
COIN_BTC = "coin_margined_btc"
COLUMNS = ("structure", "window", "net_apr", "sharpe", "max_drawdown", "min_margin_buffer", "liquidations",
           "transfers", "capital_used", "notional", "funding_net", "fees", "entries", "held_btc_pnl", "net_apr_btc",
           "days")


@attrs.frozen
class Variant:
    structure: str
    config: Config
    changes: tuple[str, ...]  # what differs from the base, as the output says it


def variants(base: Config, deploy: float) -> tuple[list[Variant], dict[str, str]]:
    """Each structure's config from ``base`` (a spot_linear config), and the
    structures left out -> why."""
    if base.structure_kind != SPOT_LINEAR:
        raise DataError(f"compare starts from a spot_linear config; {base.name} is {base.structure_kind}")
    if not 0 < deploy <= 1:
        raise DataError(f"--deploy must be in (0, 1], got {deploy}")
    out = [Variant(SPOT_LINEAR, base, ())]
    skipped: dict[str, str] = {}
    notional = base.capital * deploy
    scale = notional / base.strategy.notional
    risk = attrs.evolve(base.risk, max_position_btc=base.risk.max_position_btc * scale,
                        max_notional=max(base.risk.max_notional, notional))
    sized = (f"strategy.notional {notional:,.0f} ({deploy:.0%} of capital)",
             f"risk.max_position_btc {risk.max_position_btc:g}")
    coin = COIN_PERPS.get(base.spot.exchange)
    if coin is None:
        skipped[COIN_MARGINED] = f"no inverse BTC perp known for spot exchange {base.spot.exchange}"
    else:
        exchange, symbol, size = coin
        gap = max(base.data.max_price_gap_hours, COIN_GAP_HOURS)
        cfg = attrs.evolve(base, name=f"{base.name}-coin_margined",
                           perp=attrs.evolve(base.perp, exchange=exchange, symbol=symbol),
                           data=attrs.evolve(base.data, max_price_gap_hours=gap),
                           strategy=attrs.evolve(base.strategy, notional=notional), risk=risk,
                           structure=StructureConfig(kind=COIN_MARGINED, contract_size=size))
        coin_changes = (f"perp {exchange} {symbol}, {size:g} USD a contract", *sized, f"data.max_price_gap_hours {gap:g}")
        out.append(Variant(COIN_MARGINED, cfg, coin_changes))
        held = attrs.evolve(cfg, name=f"{base.name}-{COIN_BTC}",
                            structure=attrs.evolve(cfg.structure_settings, capital_asset="BTC"))
        out.append(Variant(COIN_BTC, held, (*coin_changes, "the capital held in BTC from the start, kept after each carry")))
    if base.perp.exchange.removesuffix("usdm") != base.spot.exchange:
        skipped[UNIFIED] = f"spot on {base.spot.exchange} and perp on {base.perp.exchange}: not one account"
    else:
        cfg = attrs.evolve(base, name=f"{base.name}-unified", strategy=attrs.evolve(base.strategy, notional=notional),
                           risk=risk, structure=StructureConfig(kind=UNIFIED))
        tiers = ", ".join(f"{r:g} up to {c:g} BTC" for c, r in cfg.structure_settings.collateral_tiers)
        out.append(Variant(UNIFIED, cfg, (*sized, f"collateral ratio {tiers}")))
    other = PAIR_PERPS.get(base.perp.exchange)
    if other is None:
        skipped[PERP_PERP] = f"no second venue's perp known to pair with {base.perp.exchange}"
    else:
        # the long perp on the other venue at the base perp's costs; half the capital on each venue, the
        # short on whichever pays more
        cfg = attrs.evolve(base, name=f"{base.name}-perp_perp", perp_allocation=0.5,
                           spot=attrs.evolve(base.perp, exchange=other[0], symbol=other[1]),
                           data=attrs.evolve(base.data, max_price_gap_hours=max(base.data.max_price_gap_hours, 9.0)),
                           strategy=attrs.evolve(base.strategy, allow_reverse=True),
                           structure=StructureConfig(kind=PERP_PERP))
        out.append(Variant(PERP_PERP, cfg, (f"long perp {other[0]} {other[1]} at the perp's costs", "perp_allocation 0.5",
                                            "strategy.allow_reverse (short whichever venue pays more)",
                                            "8-hour bars (2023-01 .. 2024-06 shipped)")))
    return out, skipped


def windows(cfg: Config) -> list[tuple[str, str, str]]:
    """(label, start, end) of the whole window and each calendar year in it."""
    lo, hi = parse_time(cfg.data.start, "start"), parse_time(cfg.data.end, "end")
    out = [(f"{cfg.data.start}..{cfg.data.end}", cfg.data.start, cfg.data.end)]
    first, last = datetime.fromtimestamp(lo / 1e9, UTC).year, datetime.fromtimestamp((hi - 1) / 1e9, UTC).year
    if first == last:
        return out
    for year in range(first, last + 1):
        a = max(lo, parse_time(f"{year}-01-01", "start"))
        b = min(hi, parse_time(f"{year + 1}-01-01", "end"))
        out.append((str(year), fmt_time(a).replace(" ", "T"), fmt_time(b).replace(" ", "T")))
    return out


def row_of(structure: str, label: str, m: dict[str, Any]) -> dict[str, Any]:
    return {"structure": structure, "window": label, "net_apr": m.get("net_apr"), "sharpe": m.get("sharpe"),
            "max_drawdown": m["max_drawdown"], "min_margin_buffer": m["min_margin_buffer"],
            "liquidations": m["liquidations"], "transfers": m["transfers"], "capital_used": m["capital_used"],
            "notional": m["notional"], "funding_net": m["funding_net"], "fees": m["fees"], "entries": m["entries"],
            "held_btc_pnl": m["held_btc_pnl"], "net_apr_btc": m.get("net_apr_btc"), "days": m["days"]}


def compare(base: Config, deploy: float = 0.95, data_dir: Path | None = None,
            progress: Callable[[str], None] | None = None, years: bool = True) -> dict[str, Any]:
    """Every structure the history allows over the base's window and (with
    ``years``) each year in it: the rows (``COLUMNS``), each variant's config
    hash and changes, and the structures left out with why."""
    runs, skipped = variants(base, deploy)
    rows: list[dict[str, Any]] = []
    done: list[Variant] = []
    windows_left_out: dict[str, dict[str, str]] = {}
    for v in runs:
        ran = False
        for label, start, end in windows(v.config)[: None if years else 1]:
            cfg = attrs.evolve(v.config, data=attrs.evolve(v.config.data, start=start, end=end))
            try:
                h = history_for(cfg, data_dir)
                covered(h, start, end)
            except DataError as exc:
                windows_left_out.setdefault(v.structure, {})[label] = str(exc)
                continue
            if progress is not None:
                progress(f"{v.structure} {label}")
            result = run_backtest(cfg, h)
            rows.append(row_of(v.structure, label, result.metrics | {"transfers": _transfers(result.log)}))
            ran = True
        if ran:
            done.append(v)
        elif v.structure in windows_left_out:
            skipped[v.structure] = next(iter(windows_left_out.pop(v.structure).values()))
    return {
        "base": base.name, "base_config_hash": config_hash(base), "seed": base.seed, "deploy": deploy,
        "window": [base.data.start, base.data.end],
        "structures": {v.structure: {"config_hash": config_hash(v.config), "changes": list(v.changes)} for v in done},
        "skipped": {k: skipped[k] for k in (*STRUCTURES, COIN_BTC) if k in skipped},
        "windows_left_out": windows_left_out,
        "rows": rows,
    }


COVERAGE = 0.95  # the share of a window a structure's history must span for its row to stand for it


def covered(h: Any, start: str, end: str) -> None:
    """A DataError unless the history spans ``COVERAGE`` of [start, end): a
    row labelled with a window is that window's, not a part of it."""
    lo, hi = parse_time(start, "start"), parse_time(end, "end")
    if h.end - h.start < COVERAGE * (hi - lo) - 9 * 3_600_000_000_000:
        raise DataError(f"its history covers only {fmt_time(h.start)} .. {fmt_time(h.end)} UTC of the window")


def _transfers(log: list[tuple[str, dict[str, Any]]]) -> int:
    return sum(1 for kind, _ in log if kind == "transfer")
