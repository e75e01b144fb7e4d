"""Backtest: a config + real history -> simulator + engine -> metrics and gates."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs
import numpy as np

from fundarb.config import PERP_PERP, Config, config_hash
from fundarb.core import metrics
from fundarb.core.book import PositionBook
from fundarb.core.clock import SimClock
from fundarb.core.engine import Engine
from fundarb.core.funding import PERP_PRICE_SOURCES, VENUE_MARK_SOURCES, annualize, missed_settlements
from fundarb.core.liquidation import MarginRule
from fundarb.core.model import NS_PER_HOUR, MarketKind
from fundarb.core.strategy import carry as carry_income
from fundarb.data.history import MarketHistory
from fundarb.sim import SimExchange, SimVenueSpec
from fundarb.sim.tape import history_tape
from fundarb.wiring import collateral_of, contract_size_of, venue_costs, wire_engine

# the success gates (docs/design.md): name -> (metric, comparison, threshold)
GATES: tuple[tuple[str, str, str, float], ...] = (
    ("net funding after fees > 0", "net_funding_after_fees", ">", 0.0),
    ("Sharpe > 1", "sharpe", ">", 1.0),
    ("MaxDD < 5%", "max_drawdown", "<", 0.05),
    ("APR > 10%", "net_apr", ">", 0.10),
    ("fill rate > 95%", "fill_rate", ">", 0.95),
    ("delta drift < 2%", "delta_drift_max", "<", 0.02),
    ("zero missed funding", "missed_settlements", "==", 0),
)


# metrics that scale the window to a year: not given for a window shorter
# than metrics.MIN_ANNUALISE_DAYS
ANNUALISED_METRICS = (
    "net_apr", "net_apr_over_collateral", "net_apr_btc", "cagr", "sharpe", "frictionless_hold_funding_apr_on_notional",
    "frictionless_hold_funding_apr_on_capital", "mean_funding_apr_in_window", "always_on_net_apr", "always_on_sharpe",
    "edge_over_always_on",
)
# the always-on benchmark's figures a run shows beside its own (``always_on_<key>``), each measured the same way
ALWAYS_ON_KEYS = ("net_apr", "sharpe", "max_drawdown", "net_pnl", "time_in_position", "entries", "fees")
TOO_SHORT = "window too short"
NO_ORDERS = "no orders"


class MemoryRecorder:
    """Keeps the decision log in order, for the trade log and golden files."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, dict[str, Any]]] = []

    def record(self, kind: str, row: dict[str, Any]) -> None:
        self.rows.append((kind, row))


@attrs.frozen
class BacktestResult:
    config: Config
    config_hash: str
    history: MarketHistory
    metrics: dict[str, Any]
    gates: list[dict[str, Any]]
    curve: dict[str, list[Any]]
    log: list[tuple[str, dict[str, Any]]]
    # metrics left out of ``metrics`` because they mean nothing for this run
    # -> why (TOO_SHORT, NO_ORDERS)
    not_applicable: dict[str, str] = attrs.field(factory=dict)
    # the always-on benchmark's own run over the same data (``run_always_on``), when the run has one
    always_on: BacktestResult | None = None

    @property
    def passed(self) -> bool | None:
        """True if every gate passes, False if any fails, None if none fails
        but some cannot be judged on this run."""
        if any(g["passed"] is False for g in self.gates):
            return False
        return None if any(g["passed"] is None for g in self.gates) else True

    @property
    def window_note(self) -> str | None:
        """Why the annualised figures are missing, or None when they are given."""
        return short_window_note(self.metrics["days"]) if TOO_SHORT in self.not_applicable.values() else None


def short_window_note(days: float) -> str:
    return f"window {metrics.span_text(days)}: too short to annualise"


def result_of(cfg: Config, history: MarketHistory, engine: Engine, sim: SimExchange,
              always_on: BacktestResult | None = None) -> BacktestResult:
    """A finished run as the backtest and replay outputs show it: the metrics
    that apply to it, and gates judged on those (the others read n/a); with
    ``always_on``, the benchmark's figures beside them and the edge over it."""
    m = compute_metrics(cfg, history, engine, sim)
    if always_on is not None:
        m.update(beside_always_on(m, always_on.metrics))
    na = not_applicable(m)
    shown = {k: v for k, v in m.items() if k not in na}
    return BacktestResult(cfg, engine.config_hash, history, shown, evaluate_gates(shown, na), engine.curve,
                          recorded(engine), na, always_on)


def beside_always_on(m: dict[str, Any], bench: dict[str, Any]) -> dict[str, Any]:
    """The always-on benchmark's figures (``bench``, its metrics) as a run
    shows them beside its own (``m``): ``always_on_<key>``, and
    ``edge_over_always_on``, the run's net APR less the benchmark's. A figure
    the benchmark's window leaves out is None here (and left out the same way)."""
    out = {f"always_on_{k}": bench.get(k) for k in ALWAYS_ON_KEYS}
    apr = bench.get("net_apr")
    out["edge_over_always_on"] = m["net_apr"] - apr if apr is not None else None
    return out


def run_always_on(cfg: Config, history: MarketHistory, sim_seed: np.random.SeedSequence | None = None) -> BacktestResult:
    """The always-on benchmark of ``cfg`` (``Config.always_on``) over
    ``history`` (``sim_seed``: as ``build_simulation``)."""
    bench = cfg.always_on()
    engine, sim = build_simulation(bench, history, sim_seed)
    engine.run()
    return result_of(bench, history, engine, sim)


def recorded(engine: Engine) -> list[tuple[str, dict[str, Any]]]:
    """The decision log of an engine built here (its recorder keeps it in memory)."""
    assert isinstance(engine.recorder, MemoryRecorder)
    return engine.recorder.rows


def not_applicable(m: dict[str, Any]) -> dict[str, str]:
    """Metrics with no meaning for this run: the annualised ones on a window
    too short to annualise, the fill rate when no order was sent."""
    out = {}
    if not metrics.can_annualise(m["days"]):
        out.update(dict.fromkeys(ANNUALISED_METRICS, TOO_SHORT))
    if m["orders"] == 0:
        out["fill_rate"] = NO_ORDERS
    return out


def build_simulation(
    cfg: Config, history: MarketHistory, sim_seed: np.random.SeedSequence | None = None
) -> tuple[Engine, SimExchange]:
    """Wire the simulator, book, strategy, risk and engine for one run over a
    history. The simulator's draws come from ``sim_seed`` (a Monte Carlo
    path's own seed), else from the config's seed."""
    first_funding = (int(history.funding_ts[0]), float(history.funding_interval[0]))
    tape = history_tape(history, cfg.spot_account, cfg.perp_account, cfg.spot.depth_btc, cfg.perp.depth_btc)
    long_first = None
    if history.long_funding_ts is not None and history.long_funding_interval is not None:
        long_first = (int(history.long_funding_ts[0]), float(history.long_funding_interval[0]))
    return build_engine(cfg, tape, first_funding, history.start - NS_PER_HOUR, float(history.spot[0]), sim_seed,
                        long_first)


def build_engine(
    cfg: Config, tape: Iterable[tuple[int, int, Any]], first_funding: tuple[int, float] | None, start_ns: int,
    spot_price: float, sim_seed: np.random.SeedSequence | None = None,
    long_first_funding: tuple[int, float] | None = None,
) -> tuple[Engine, SimExchange]:
    """The engine on a simulator fed by any market tape (history bars or a
    replayed capture): ``first_funding`` is the perp's first expected
    settlement (ts, interval hours), ``spot_price`` sizes the strategy's
    round-trip cost estimate."""
    chash = config_hash(cfg)
    spot_name, perp_name = cfg.spot_account, cfg.perp_account
    if sim_seed is None:
        sim_seed, = np.random.SeedSequence(cfg.seed).spawn(1)
    costs = venue_costs(cfg)
    schedule = {perp_name: first_funding} if first_funding is not None else {}
    if long_first_funding is not None:  # a perp/perp carry's long leg settles on its own schedule
        schedule[spot_name] = long_first_funding
    held = cfg.held_btc(spot_price)
    sim = simulator_of(cfg, costs.margin, tape, sim_seed, schedule, held_btc=held)
    book = PositionBook.open(spot_name, perp_name, cfg.spot_cash, cfg.perp_cash, contract_size=contract_size_of(cfg),
                             collateral=collateral_of(cfg), held_btc=held, spot_price=spot_price if held else math.nan,
                             long_kind=long_kind_of(cfg))
    engine = wire_engine(cfg, sim, book, SimClock(start_ns), MemoryRecorder(), costs=costs, spot_price=spot_price,
                         config_hash=chash)
    return engine, sim


def simulator_of(cfg: Config, margin: MarginRule, tape: Iterable[tuple[int, int, Any]], seed: np.random.SeedSequence,
                 schedule: dict[str, tuple[int, float]] | None = None, held_btc: float = 0.0) -> SimExchange:
    """The simulated venues of ``cfg`` (a backtest's, a replay's, a paper
    run's): its spot and perp accounts with their cash (and ``held_btc``, the
    BTC a capital held in BTC starts with), cost models and
    structure (an inverse perp's contract size, what margins the perp), the
    perp liquidated by ``margin``, fed by ``tape``."""
    specs = [
        SimVenueSpec(cfg.spot_account, long_kind_of(cfg), cfg.spot_cash, cfg.spot, allow_short=cfg.strategy.allow_reverse,
                     btc=held_btc),
        SimVenueSpec(cfg.perp_account, MarketKind.PERP, cfg.perp_cash, cfg.perp, margin=margin,
                     contract_size=contract_size_of(cfg)),
    ]
    return SimExchange(specs, tape, seed, cfg.transfer.delay_minutes * 60, cfg.transfer.fee, schedule or {},
                       collateral=collateral_of(cfg))


def run_backtest(
    cfg: Config, history: MarketHistory, progress: Callable[[int], None] | None = None, always_on: bool = True,
    prior: Sequence[tuple[int, float, float]] = (),
) -> BacktestResult:
    """``cfg`` over ``history``, with its always-on benchmark beside it
    (``always_on``: run it too). ``prior``: the perp's settlements (ts, rate,
    interval hours) before the window, known at its start, that the signal
    starts with, as a carry already running would have them."""
    engine, sim = build_simulation(cfg, history)
    for ts, rate, interval in prior:
        engine.strategy.on_settlement(cfg.perp_account, ts, rate, interval)
    if progress is not None:
        engine.on_timer = progress
    engine.run()
    return result_of(cfg, history, engine, sim, run_always_on(cfg, history) if always_on else None)


def long_kind_of(cfg: Config) -> MarketKind:
    """The long leg's market: spot, or a perp on its own venue (perp/perp)."""
    return MarketKind.PERP if cfg.structure_kind == PERP_PERP else MarketKind.SPOT


def carry_curve(curve: dict[str, list[Any]]) -> list[float]:
    """The carry's equity at each snapshot: the equity less the price PnL of
    BTC held outside a carry (``PositionBook.held_pnl``; 0 unless the capital
    is BTC held, when this is the equity itself)."""
    return [e - h for e, h in zip(curve["equity"], curve["held_pnl"])]


def compute_metrics(cfg: Config, h: MarketHistory, engine: Engine, sim: SimExchange) -> dict[str, Any]:
    book, curve = engine.book, engine.curve
    days = h.days
    drift_max, drift_p99 = metrics.drift_stats(curve["drift"], curve["in_position"])
    drift_max = max(drift_max, engine.settled_drift_max)
    # a short no rise can liquidate (coin-margined, covered) has no buffer to count: the curve holds nan
    buffers = [b for b, pos in zip(curve["margin_buffer"], curve["in_position"]) if pos and b == b]
    now = engine.clock.now_ns()
    open_intervals = [(a, now if b is None else b) for a, b in book.perp_spans]
    expected = [int(t) for t in h.funding_ts.tolist()]
    missed = missed_settlements(expected, [e.ts for e in book.funding_ledger], open_intervals)
    rate_sum = float(h.funding_rate.sum())
    mean_interval = float(h.funding_interval.mean()) if h.funding_interval.size else 8.0
    frictionless = rate_sum * 365.0 / days if days > 0 else 0.0
    hours_in_position = int(sum(curve["in_position"]))
    # a capital held in BTC: the price moves of the BTC no short hedged are
    # the holder's; the carry is judged without them (0 otherwise)
    carry_pnl = book.pnl - book.held_pnl
    held = sim.accounts[cfg.spot_account].spec.btc
    # valued at the first spot price (a perp-only recording: the first mark)
    first_px = next((px for px in (*curve["spot"], *curve["mark"]) if px == px), math.nan)
    start_btc = held if held else book.initial_equity / first_px
    net_apr = metrics.apr(carry_pnl, cfg.capital, days)
    carry = carry_curve(curve)
    perp = book.perp
    return {
        "structure": cfg.structure_kind,
        "capital_asset": cfg.structure_settings.capital_asset,
        "capital": cfg.capital,
        # the BTC a capital held in BTC started with, and what the BTC outside a carry made or lost
        "held_btc": held,
        "held_btc_pnl": book.held_pnl,
        "carry_pnl": carry_pnl,
        # what the structure ties up: the whole capital (both accounts, or the one)
        "capital_used": cfg.capital,
        "notional": cfg.strategy.notional,
        "final_equity_btc": book.equity_btc,
        # an inverse perp's funding and fees as the venue paid them, in BTC (0 for a linear perp)
        "funding_btc": perp.funding_coin,
        "fees_btc": perp.fees_coin,
        "days": round(days, 6),
        "final_equity": book.equity,
        "net_pnl": book.pnl,
        "net_apr": net_apr,
        # what the same capital would have earned at collateral_rate (not
        # deducted from PnL: it is the hurdle, and Sharpe is measured over it)
        "collateral_cost": cfg.capital * cfg.collateral_rate * days / 365.0,
        "net_apr_over_collateral": net_apr - cfg.collateral_rate,
        "cagr": metrics.cagr(book.initial_equity, book.initial_equity + carry_pnl, days),
        # the same run counted in BTC: equity at the start and the end at the prices then
        "start_equity_btc": start_btc,
        "net_apr_btc": metrics.apr(book.equity_btc - start_btc, start_btc, days),
        "sharpe": metrics.sharpe(curve["ts"], carry, cfg.collateral_rate),
        "max_drawdown": metrics.max_drawdown(carry),
        # each leg's own: its venue's funding received (+) or paid (-), its fees; and the
        # collateral moves between the venues (a withdrawal for two exchanges)
        "funding_by_account": {a.venue: a.funding for a in (book.spot, book.perp)},
        "fees_by_account": {a.venue: a.fees for a in (book.spot, book.perp)},
        "transfers": sum(1 for kind, r in recorded(engine) if kind == "transfer" and r["status"] == "requested"),
        "funding_received": book.funding_received,
        "funding_paid": book.funding_paid,
        "funding_net": book.funding,
        "fees": book.fees,
        "slippage": book.slippage,
        "price_pnl": book.price_pnl,
        "net_funding_after_fees": carry_income(book),
        "fill_rate": metrics.fill_rate(sim.filled_qty, sim.requested_qty),
        "requested_qty": sim.requested_qty,
        "filled_qty": sim.filled_qty,
        "orders": len(engine.orders),
        "fills": sum(1 for kind, _ in recorded(engine) if kind == "fill"),
        "entries": engine.strategy.entries,
        "liquidations": sim.liquidations,
        "delta_drift_max": drift_max,
        "delta_drift_p99": drift_p99,
        "min_margin_buffer": min(buffers) if buffers else None,
        "max_leverage": max(curve["leverage"]) if curve["leverage"] else 0.0,
        "settlements_in_window": len(expected),
        "settlements_accrued": len(book.funding_ledger),
        "settlements_at_venue_mark": sum(1 for e in book.funding_ledger if e.mark_source in VENUE_MARK_SOURCES),
        "settlements_at_perp_price": sum(1 for e in book.funding_ledger if e.mark_source in PERP_PRICE_SOURCES),
        "missed_settlements": len(missed),
        "hours_in_position": hours_in_position,
        "time_in_position": hours_in_position / max(len(curve["ts"]), 1),
        "alerts": len(engine.alerts),
        "vetoes": engine.vetoes,
        "kill_switch": engine.monitor.kill.reason or None,
        "frictionless_hold_funding_apr_on_notional": frictionless,
        "frictionless_hold_funding_apr_on_capital": frictionless * cfg.strategy.notional / cfg.capital,
        "mean_funding_apr_in_window": annualize(float(h.funding_rate.mean()), mean_interval) if h.funding_rate.size else None,
    }


def evaluate_gates(m: dict[str, Any], not_applicable: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Each gate judged on ``m``; a gate whose metric is in
    ``not_applicable`` is neither passed nor failed: passed None, and
    ``result`` says why (``n/a (window too short)``)."""
    out = []
    na = not_applicable or {}
    for name, key, op, threshold in GATES:
        gate = {"gate": name, "metric": key, "threshold": threshold, "op": op}
        if key in na:
            out.append({**gate, "value": None, "passed": None, "result": f"n/a ({na[key]})"})
            continue
        value = m[key]
        passed = bool({">": value > threshold, "<": value < threshold, "==": value == threshold}[op])
        out.append({**gate, "value": value, "passed": passed, "result": "PASS" if passed else "FAIL"})
    return out
