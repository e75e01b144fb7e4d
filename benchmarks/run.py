"""fundarb benchmarks: simulator throughput and tick-to-decision latency.

    python benchmarks/run.py [--quick] [--out benchmarks/results.json]

Measures, in one process and one run (see benchmarks/README.md):

1. the real-data backtest (``fundarb.sim.backtest.run_backtest`` on
   sims/spot_perp.toml over the shipped history, and over its last 365 days):
   events/s through the engine loop and wall time;
2. the design's reference workload (SYNTHETIC): 1,000,000 seeded BTC quotes
   through Engine + SimExchange driving the carry strategy, one order decision
   per 10,000 quotes; quotes/s, plus a bare Python heap loop over the very
   same tape tuples and the ratio between the two;
3. tick-to-decision latency (p50/p99 of ``Engine.on_event`` per market event)
   and tick-to-order-submitted latency on sparse orders, on the same tape.

Nothing here asserts anything: it measures and reports. Budgets come from
docs/design.md, "Performance budget" and are shown next to each number.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import math
import os
import platform
import sys
import time
from array import array
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import numpy as np

import fundarb
import fundarb.wiring as wiring_mod
from fundarb.config import Config, config_hash, load
from fundarb.core.book import PositionBook
from fundarb.core.clock import SimClock
from fundarb.core.engine import Engine
from fundarb.core.model import (
    NS_PER_HOUR,
    NS_PER_SECOND,
    FundingSettlement,
    MarketKind,
    MarkPrice,
    OrderIntent,
    Quote,
    Side,
    Timer,
)
from fundarb.core.risk import RiskMonitor
from fundarb.core.strategy import CarryStrategy, carry, close_intents
from fundarb.data.history import fmt_time, load_history
from fundarb.sim import SimExchange, SimVenueSpec
from fundarb.sim import queue as q
from fundarb.sim.backtest import MemoryRecorder, run_backtest
from fundarb.wiring import round_trip_cost, venue_costs

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "sims" / "spot_perp.toml"  # the spot/perp carry: the workload every result here was measured on
DEFAULT_OUT = ROOT / "benchmarks" / "results.json"

REFERENCE_QUOTES = 1_000_000
QUOTE_STEP_NS = 100_000_000  # one spot quote per 100 ms
TICK = 0.1
NS_PER_US = 1_000
NS_PER_DAY = 24 * NS_PER_HOUR

# docs/design.md, "Performance budget"
BUDGET_QUOTES_PER_S = 300_000
BUDGET_DECISION_P50_US = 2.0
BUDGET_DECISION_P99_US = 10.0
BUDGET_ORDER_P99_US = 50.0
LEGS = {"entry": "entries", "exit": "exits"}
DESIGN_HEAP_LOOP_PER_S = 1_200_000  # "a bare Python heap loop does ~1.2M/s on these machines"
SYNTHETIC_FUNDING_RATE = 0.00005  # 5.5%/yr: below the entry bar after costs, above the exit bar


# --------------------------------------------------------------------------
# instrumentation that leaves the measured code path as it is
# --------------------------------------------------------------------------
class CountingEngine(Engine):
    """``Engine.run`` with an event count and the loop's own wall time.

    The loop body is the same ``self.on_event(event)`` call; ``enumerate``
    and two clock reads per run are the only additions."""

    instances: list[CountingEngine] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events_handled = 0
        self.loop_seconds = 0.0
        CountingEngine.instances.append(self)

    def run(self) -> None:
        n = 0
        t0 = time.perf_counter()
        for n, event in enumerate(self.venue.events(), 1):  # noqa: B007 (n: the count, read after the loop)
            self.on_event(event)
        self.loop_seconds = time.perf_counter() - t0
        self.events_handled = n


class TimedSimExchange(SimExchange):
    """Stamps the first ``submit`` since ``first_submit_ns`` was last zeroed:
    'order submitted' is the instant the engine hands the order to the venue."""

    first_submit_ns = 0

    def submit(self, order: Any) -> None:
        if not self.first_submit_ns:
            self.first_submit_ns = time.perf_counter_ns()
        SimExchange.submit(self, order)


class StagedEngine(Engine):
    """The engine, stamping where an event that sends orders spends its time
    before the first hand-off: ``decided`` when the strategy's intents reach
    the risk check, ``checked`` when the first approved intent starts being
    logged and booked. The venue stamps the hand-off itself
    (``TimedSimExchange``). Both stamps only read the clock and call the
    engine's own method."""

    decided_ns = 0
    checked_ns = 0

    def _submit_checked(self, intents: list[OrderIntent], now: int) -> None:
        if not self.decided_ns:
            self.decided_ns = time.perf_counter_ns()
        Engine._submit_checked(self, intents, now)

    def _send(self, intent: OrderIntent, now: int) -> None:
        if not self.checked_ns:
            self.checked_ns = time.perf_counter_ns()
        Engine._send(self, intent, now)


@attrs.define(slots=True)
class ScheduledCarry(CarryStrategy):
    """SYNTHETIC-workload driver: the carry strategy, plus one forced order
    decision every ``period_ns`` of simulated time (10,000 quotes x 100 ms).

    Between decisions every call runs the real ``CarryStrategy.decide`` (entry
    edge while flat, exit checks while in position). A decision alternates a
    paired entry (buy spot + sell perp, the carry's own two market orders) and
    a paired reduce-only exit; both go through the engine's risk check,
    order-id, state machine and ``venue.submit`` like any strategy intent."""

    period_ns: int = 0
    next_decision_ts: int = 0
    decisions: int = 0

    def decide(self, book: PositionBook, spot_mid: float, now: int) -> list[OrderIntent]:
        if now >= self.next_decision_ts:
            self.still_until = 0  # a decision now, whatever the carry's rules say
            self.next_decision_ts += self.period_ns
            self.decisions += 1
            if book.is_flat:
                lot = self.params.lot_size
                qty = math.floor(self.params.notional / spot_mid / lot) * lot
                self.pair_seq += 1
                self.direction = 1
                self.entry_ts = now
                self.entry_carry = carry(book)
                return [
                    OrderIntent(self.spot_venue, Side.BUY, qty, "entry", self.pair_seq),
                    OrderIntent(self.perp_venue, Side.SELL, qty, "entry", self.pair_seq),
                ]
            self.pair_seq += 1
            intents = close_intents(book, "exit_scheduled", self.pair_seq)
            self._closed(now)
            return intents
        intents = CarryStrategy.decide(self, book, spot_mid, now)
        self.still_until = min(self.still_until, self.next_decision_ts)  # the next forced decision is asked for
        return intents


# --------------------------------------------------------------------------
# 1. real data: run_backtest over the shipped history
# --------------------------------------------------------------------------
def load_real(cfg: Config) -> tuple[Any, float]:
    t0 = time.perf_counter()
    h = load_history(
        (cfg.spot.exchange, cfg.spot.symbol), (cfg.perp.exchange, cfg.perp.symbol),
        cfg.data.start, cfg.data.end, cfg.data.max_price_gap_hours,
    )
    return h, time.perf_counter() - t0


def bench_backtest(cfg: Config, label: str, repeat: int) -> dict[str, Any]:
    history, load_s = load_real(cfg)
    runs = []
    for _ in range(repeat):
        CountingEngine.instances.clear()
        saved = wiring_mod.Engine
        wiring_mod.Engine = CountingEngine  # run_backtest's engine comes from the one factory, wiring.wire_engine
        try:
            t0 = time.perf_counter()
            result = run_backtest(cfg, history)
            wall = time.perf_counter() - t0
        finally:
            wiring_mod.Engine = saved
        eng = CountingEngine.instances[-1]
        runs.append((eng.loop_seconds, wall, eng.events_handled, result))
    loop_s, wall, events, result = min(runs, key=lambda r: r[0])
    m = result.metrics
    return {
        "label": label,
        "config": cfg.name,
        "window": f"{fmt_time(history.start)} .. {fmt_time(history.end)}",
        "days": round(history.days, 2),
        "hours": int(history.hours.size),
        "events": events,
        "history_load_s": load_s,
        "loop_s": loop_s,
        "wall_s": wall,
        "events_per_s": events / loop_s if loop_s > 0 else math.nan,
        "hours_per_s": history.hours.size / loop_s if loop_s > 0 else math.nan,
        "repeat": repeat,
        "orders": m["orders"],
        "net_apr": m["net_apr"],
        "gates_passed": result.passed,
    }


def last_days(cfg: Config, days: int) -> Config:
    """The config's window cut to its last ``days`` days of history."""
    full, _ = load_real(cfg)
    start = full.end + NS_PER_HOUR - days * NS_PER_DAY
    iso = datetime.fromtimestamp(start / 1e9, tz=UTC).strftime("%Y-%m-%dT%H:%M")
    return attrs.evolve(cfg, data=attrs.evolve(cfg.data, start=iso))


# --------------------------------------------------------------------------
# 2. the design's reference workload (synthetic)
# --------------------------------------------------------------------------
@attrs.frozen
class SyntheticTape:
    tape: list[tuple[int, int, Any]]
    quotes: int  # spot quotes, the design's "quotes"
    perp_quotes: int
    marks: int
    settlements: int
    timers: int
    start: int
    end: int
    build_s: float


def build_tape(n_quotes: int, seed: int, perp_every: int, funding_rate: float) -> SyntheticTape:
    """SYNTHETIC (not market data). Spot: one quote per 100 ms, random-walk mid
    near 60,000 on a 0.1 tick grid (per-step sd 1.7 USD, ~50%/yr volatility),
    half spread 1-3 ticks, bid/ask sizes uniform 0.5-20 BTC. Perp: one quote
    and one mark price every ``perp_every`` spot quotes (mid = spot mid + a
    small random-walk basis). Funding settles on the 00/08/16 UTC grid at a
    constant rate; an hourly Timer marks equity like the real tape does.
    Arrays are drawn with numpy per batch; the tape is plain tuples."""
    t_start = time.perf_counter()
    rng = np.random.default_rng(seed)
    n = n_quotes
    mid_ticks = np.rint(60_000.0 / TICK + np.cumsum(rng.normal(0.0, 17.0, n))).astype(np.int64)
    half = rng.integers(1, 4, n)  # 1..3 ticks
    sizes = rng.uniform(0.5, 20.0, (n, 2))
    n_perp = (n + perp_every - 1) // perp_every
    basis_ticks = np.rint(np.cumsum(rng.normal(0.0, 1.0, n_perp))).astype(np.int64) + 50
    perp_half = rng.integers(1, 4, n_perp)
    perp_sizes = rng.uniform(0.5, 20.0, (n_perp, 2))

    bid = ((mid_ticks - half) * TICK).tolist()
    ask = ((mid_ticks + half) * TICK).tolist()
    bsz, asz = sizes[:, 0].tolist(), sizes[:, 1].tolist()
    pmid = mid_ticks[::perp_every] + basis_ticks
    pbid = ((pmid - perp_half) * TICK).tolist()
    pask = ((pmid + perp_half) * TICK).tolist()
    pmark = (pmid * TICK).tolist()
    pbsz, pasz = perp_sizes[:, 0].tolist(), perp_sizes[:, 1].tolist()

    start = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp()) * NS_PER_SECOND + QUOTE_STEP_NS
    tape: list[tuple[int, int, Any]] = []
    append = tape.append
    spot, perp = "bench:spot", "bench:perp"
    P_QUOTE, P_MARK, P_FUNDING, P_TIMER = q.P_QUOTE, q.P_MARK, q.P_FUNDING, q.P_TIMER
    marks = settlements = timers = 0
    last_mark = pmark[0]
    for i in range(n):
        ts = start + i * QUOTE_STEP_NS
        append((ts, P_QUOTE, Quote(ts, spot, bid[i], ask[i], bsz[i], asz[i])))
        if i % perp_every == 0:
            j = i // perp_every
            append((ts, P_QUOTE, Quote(ts, perp, pbid[j], pask[j], pbsz[j], pasz[j])))
            last_mark = pmark[j]
            append((ts, P_MARK, MarkPrice(ts, perp, last_mark)))
            marks += 1
        if ts % NS_PER_HOUR == 0:
            if ts % (8 * NS_PER_HOUR) == 0:
                append((ts, P_FUNDING, FundingSettlement(ts, perp, funding_rate, 8.0, last_mark, "venue")))
                settlements += 1
            append((ts, P_TIMER, Timer(ts)))
            timers += 1
    end = start + (n - 1) * QUOTE_STEP_NS
    return SyntheticTape(tape, n, marks, marks, settlements, timers, start, end, time.perf_counter() - t_start)


def synthetic_config(cfg: Config) -> Config:
    """The config (the spot/perp carry) with the few changes the synthetic run needs, so
    that the workload stays the same from first to last quote:
    capital x10 (fees of ~100 round trips must not reach the 5% drawdown
    kill switch, and the cash split stays inside its rebalance tolerance) and
    no entry cooldown (so every flat tick evaluates the entry edge)."""
    return attrs.evolve(
        cfg,
        name="bench-synthetic",
        capital=1_000_000.0,
        strategy=attrs.evolve(cfg.strategy, cooldown_hours=0.0),
    )


def build_engine(cfg: Config, st: SyntheticTape, seed: int, period_ns: int, funding_rate: float,
                 engine_cls: type[Engine] = CountingEngine, sim_cls: type[SimExchange] = SimExchange) -> Engine:
    spot, perp = "bench:spot", "bench:perp"
    specs = [
        SimVenueSpec(spot, MarketKind.SPOT, cfg.spot_cash, cfg.spot),
        SimVenueSpec(perp, MarketKind.PERP, cfg.perp_cash, cfg.perp),
    ]
    first_funding = (st.start // (8 * NS_PER_HOUR) + 1) * 8 * NS_PER_HOUR
    sim = sim_cls(specs, st.tape, np.random.SeedSequence(seed), cfg.transfer.delay_minutes * 60, cfg.transfer.fee,
                  {perp: (first_funding, 8.0)})
    book = PositionBook.open(spot, perp, cfg.spot_cash, cfg.perp_cash)
    strategy = ScheduledCarry(cfg.strategy, round_trip_cost(cfg, 60_000.0), spot, perp, period_ns=period_ns,
                              next_decision_ts=st.start + period_ns)
    for k in range(cfg.strategy.signal_settlements, 0, -1):  # a settled history, so the signal is ready
        strategy.signal.on_settlement(first_funding - k * 8 * NS_PER_HOUR, funding_rate, 8.0)
    monitor = RiskMonitor(cfg.risk, venue_costs(cfg))
    return engine_cls(sim, book, strategy, monitor, config_hash(cfg), SimClock(st.start - 1), MemoryRecorder())


def heap_loop(tape: list[tuple[int, int, Any]]) -> float:
    """The bare Python heap loop the design compares against: every tape tuple
    pushed on one heapq with a sequence number, then all popped in (ts,
    priority, seq) order, reading each event's ts. No book, strategy, risk or
    venue: what any heap-ordered Python event loop pays at least."""
    gc.collect()
    t0 = time.perf_counter()
    heap: list = []
    push, pop = heapq.heappush, heapq.heappop
    seq = 0
    for ts, prio, ev in tape:
        seq += 1
        push(heap, (ts, prio, seq, ev))
    while heap:
        pop(heap)[3].ts  # noqa: B018 (the attribute read is part of the measured work)
    return time.perf_counter() - t0


def streaming_heap_loop(tape: list[tuple[int, int, Any]]) -> float:
    """The same tuples streamed through a heapq one at a time (push, then pop
    at once, as the simulator merges its already-ordered tape with a nearly
    empty order queue). An upper bound: the heap never holds more than one."""
    gc.collect()
    t0 = time.perf_counter()
    heap: list = []
    push, pop = heapq.heappush, heapq.heappop
    seq = 0
    for ts, prio, ev in tape:
        seq += 1
        push(heap, (ts, prio, seq, ev))
        pop(heap)[3].ts  # noqa: B018 (the attribute read is part of the measured work)
    return time.perf_counter() - t0


def bench_synthetic(cfg: Config, st: SyntheticTape, seed: int, period_ns: int, funding_rate: float,
                    repeat: int) -> dict[str, Any]:
    sims, heaps, streams = [], [], []
    for _ in range(repeat):
        eng = build_engine(cfg, st, seed, period_ns, funding_rate)
        gc.collect()
        eng.run()
        sims.append(eng)
        heaps.append(heap_loop(st.tape))
        streams.append(streaming_heap_loop(st.tape))
    best = min(sims, key=lambda e: e.loop_seconds)
    sim_s, heap_s, stream_s = best.loop_seconds, min(heaps), min(streams)
    strat = best.strategy
    return {
        "label": "SYNTHETIC reference workload",
        "quotes": st.quotes,
        "tape_events": len(st.tape),
        "tape": {"spot_quotes": st.quotes, "perp_quotes": st.perp_quotes, "perp_marks": st.marks,
                 "funding_settlements": st.settlements, "timers": st.timers,
                 "simulated_hours": round((st.end - st.start) / NS_PER_HOUR, 2)},
        "tape_build_s": st.build_s,
        "events": best.events_handled,
        "order_decisions": strat.decisions,
        "orders": len(best.orders),
        "fills": sum(1 for k, _ in best.recorder.rows if k == "fill"),
        "vetoes": best.vetoes,
        "kill_switch": best.monitor.kill.reason or None,
        "sim_s": sim_s,
        "sim_runs_s": [e.loop_seconds for e in sims],
        "quotes_per_s": st.quotes / sim_s,
        "events_per_s": best.events_handled / sim_s,
        "heap_s": heap_s,
        "heap_runs_s": heaps,
        "heap_tuples_per_s": len(st.tape) / heap_s,
        "heap_quotes_per_s": st.quotes / heap_s,
        "ratio_sim_to_heap": heap_s / sim_s,  # throughput ratio: 1.0 = as fast as the bare heap loop
        "streaming_heap_s": stream_s,
        "streaming_heap_runs_s": streams,
        "streaming_heap_tuples_per_s": len(st.tape) / stream_s,
        "ratio_sim_to_streaming_heap": stream_s / sim_s,
        "slowdown_vs_heap": sim_s / heap_s,
        "repeat": repeat,
    }


# --------------------------------------------------------------------------
# 3. latency: per-event perf_counter_ns around Engine.on_event
# --------------------------------------------------------------------------
def pct(values: array | list, ps: tuple[float, ...] = (50, 99, 99.9)) -> dict[str, float]:
    if len(values) == 0:
        return {"n": 0}
    a = np.frombuffer(values, dtype=np.int64) if isinstance(values, array) else np.asarray(values, dtype=np.int64)
    out = {"n": int(a.size)}
    for p in ps:
        out[f"p{p:g}_us"] = float(np.percentile(a, p)) / NS_PER_US
    out["mean_us"] = float(a.mean()) / NS_PER_US
    out["max_us"] = float(a.max()) / NS_PER_US
    return out


def timer_overhead(n: int = 200_000) -> dict[str, float]:
    pc = time.perf_counter_ns
    d = array("q", bytes(8 * n))
    for i in range(n):
        t0 = pc()
        t1 = pc()
        d[i] = t1 - t0
    return pct(d, (50, 99))


def bench_latency(cfg: Config, st: SyntheticTape, seed: int, period_ns: int, funding_rate: float) -> dict[str, Any]:
    eng = build_engine(cfg, st, seed, period_ns, funding_rate, engine_cls=StagedEngine, sim_cls=TimedSimExchange)
    assert isinstance(eng, StagedEngine)
    sim = eng.venue
    spot = eng.book.spot_venue
    pc = time.perf_counter_ns
    on_event = eng.on_event
    dec_spot, dec_perp, dec_mark = array("q"), array("q"), array("q")
    order_submit, order_event, other = array("q"), array("q"), array("q")
    stages: dict[str, dict[str, array]] = {leg: {k: array("q") for k in ("decide", "check", "log_book")}
                                           for leg in ("entry", "exit")}
    other_orders = 0
    gc.collect()
    for ev in sim.events():
        seq0 = eng.intent_seq
        flat = eng.book.is_flat
        sim.first_submit_ns = eng.decided_ns = eng.checked_ns = 0
        t0 = pc()
        on_event(ev)
        t1 = pc()
        kind = type(ev)
        market = kind is Quote or kind is MarkPrice
        if eng.intent_seq != seq0:
            if market:
                order_submit.append(sim.first_submit_ns - t0)
                order_event.append(t1 - t0)
                st_ = stages["entry" if flat else "exit"]
                st_["decide"].append(eng.decided_ns - t0)
                st_["check"].append(eng.checked_ns - eng.decided_ns)
                st_["log_book"].append(sim.first_submit_ns - eng.checked_ns)
            else:
                other_orders += 1
        elif kind is Quote:
            (dec_spot if ev.venue == spot else dec_perp).append(t1 - t0)
        elif kind is MarkPrice:
            dec_mark.append(t1 - t0)
        else:
            other.append(t1 - t0)
    decision = dec_spot + dec_perp + dec_mark
    return {
        "label": "SYNTHETIC reference workload, per-event perf_counter_ns",
        "tick_to_decision": pct(decision),
        "tick_to_decision_by_event": {
            "spot_quote": pct(dec_spot), "perp_quote": pct(dec_perp), "perp_mark": pct(dec_mark),
        },
        "tick_to_order_submitted": pct(order_submit),
        "tick_to_orders_sent_event": pct(order_event),
        # where the time to the first hand-off goes, entries (a pair through the full check) and
        # reduce-only exits apart: the event up to the strategy's intents, the risk check, the
        # first order's intent and SUBMITTED rows and its booking up to venue.submit
        "order_stages": {leg: {k: pct(v) for k, v in st_.items()} for leg, st_ in stages.items()},
        "non_market_events": pct(other),
        "orders_from_non_market_events": other_orders,
        "order_decisions": eng.strategy.decisions,
        "orders": len(eng.orders),
        "vetoes": eng.vetoes,
        "kill_switch": eng.monitor.kill.reason or None,
        "timer_overhead": timer_overhead(),
    }


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------
def meta(args: argparse.Namespace) -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "fundarb": getattr(fundarb, "__version__", "?"),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "quick": args.quick,
        "seed": args.seed,
        "config": str(args.config),
        "gc": "enabled; synthetic tape frozen with gc.freeze() once built",
    }


def status(ok: bool | None) -> str:
    if ok is None:
        return ""
    return "[green]within[/]" if ok else "[red]over[/]"


def print_report(res: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 118)
    m = res["meta"]
    t = Table(title=f"fundarb benchmarks: {m['implementation']} {m['python']}, {m['cpu']} x{m['cpus']}"
                    f"{', QUICK (synthetic /10)' if m['quick'] else ''}")
    t.add_column("benchmark", style="bold", max_width=34)
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_column("design budget", justify="right")
    t.add_column("", justify="left")

    for b in res["backtests"]:
        t.add_row(f"real data: {b['label']}", "events / hours", f"{b['events']:,} / {b['hours']:,}", "", "")
        t.add_row(b["window"], "engine loop events/s", f"{b['events_per_s']:,.0f}", "", "")
        t.add_row("", "engine loop; run_backtest wall", f"{b['loop_s']:.3f} s; {b['wall_s']:.3f} s", "", "")
        t.add_row("", "history load (parquet)", f"{b['history_load_s']:.3f} s", "", "", end_section=True)

    s = res["synthetic"]
    tp = s["tape"]
    ratio_budget = BUDGET_QUOTES_PER_S / DESIGN_HEAP_LOOP_PER_S
    t.add_row(f"SYNTHETIC {s['quotes']:,} spot quotes", "simulator quotes/s", f"{s['quotes_per_s']:,.0f}",
              f">= {BUDGET_QUOTES_PER_S:,}", status(s["quotes_per_s"] >= BUDGET_QUOTES_PER_S))
    t.add_row(f"+ {tp['perp_quotes']:,} perp quotes + marks", "simulator events/s",
              f"{s['events_per_s']:,.0f}", "", "")
    t.add_row(f"{s['order_decisions']} order decisions", "bare heap loop tuples/s (all in heap)",
              f"{s['heap_tuples_per_s']:,.0f}", f"~{DESIGN_HEAP_LOOP_PER_S:,}", "")
    t.add_row(f"{s['orders']} orders, {s['fills']} fills", "ratio sim / heap loop",
              f"{s['ratio_sim_to_heap']:.3f}", f">= {ratio_budget:.2f} (implied)", status(s["ratio_sim_to_heap"] >= ratio_budget))
    t.add_row("", "streaming heap loop tuples/s", f"{s['streaming_heap_tuples_per_s']:,.0f}", "", "")
    t.add_row("", "ratio sim / streaming heap loop", f"{s['ratio_sim_to_streaming_heap']:.3f}", "", "")
    t.add_row("", "sim; heap; streaming wall (best)",
              f"{s['sim_s']:.2f}; {s['heap_s']:.2f}; {s['streaming_heap_s']:.2f} s", "", "", end_section=True)

    lat = res["latency"]
    d = lat["tick_to_decision"]
    t.add_row("tick-to-decision", "p50", f"{d['p50_us']:.2f} us",
              f"<= {BUDGET_DECISION_P50_US:g} us", status(d["p50_us"] <= BUDGET_DECISION_P50_US))
    t.add_row("Engine.on_event, market events", "p99", f"{d['p99_us']:.2f} us", f"<= {BUDGET_DECISION_P99_US:g} us",
              status(d["p99_us"] <= BUDGET_DECISION_P99_US))
    t.add_row("that sent no order", "p99.9; max", f"{d['p99.9_us']:.1f}; {d['max_us']:.0f} us", "", "")
    t.add_row(f"n = {d['n']:,}", "", "", "", "")
    for k, v in lat["tick_to_decision_by_event"].items():
        if v["n"]:
            t.add_row("", f"{k.replace('_', ' ')} p50; p99", f"{v['p50_us']:.2f}; {v['p99_us']:.2f} us", "", "")
    t.rows[-1].end_section = True
    o = lat["tick_to_order_submitted"]
    if o["n"]:
        oe = lat["tick_to_orders_sent_event"]
        t.add_row("tick-to-order-submitted", "p50", f"{o['p50_us']:.1f} us", "", "")
        t.add_row("sparse: first order after", "p99", f"{o['p99_us']:.1f} us", f"<= {BUDGET_ORDER_P99_US:g} us",
                  status(o["p99_us"] <= BUDGET_ORDER_P99_US))
        t.add_row(f"{res['synthetic']['quotes_per_order_decision']:,} quotes, n = {o['n']}", "max",
                  f"{o['max_us']:.1f} us", "", "")
        t.add_row("", "whole event, both legs sent, p50; p99", f"{oe['p50_us']:.1f}; {oe['p99_us']:.1f} us", "", "")
        for leg, st_ in lat.get("order_stages", {}).items():
            if st_["decide"]["n"]:
                t.add_row("", f"{LEGS[leg]} (n = {st_['decide']['n']}) p50: event + decide; risk check; log + book",
                          "; ".join(f"{v['p50_us']:.1f}" for v in st_.values()) + " us", "", "")
        dn = lat.get("dense_orders", {}).get("tick_to_order_submitted", {"n": 0})
        if dn["n"]:
            t.add_row("", f"warm contrast: dense orders p50; p99 (n = {dn['n']})",
                      f"{dn['p50_us']:.1f}; {dn['p99_us']:.1f} us", "", "")
            for leg, st_ in lat["dense_orders"].get("order_stages", {}).items():
                if st_["decide"]["n"]:
                    t.add_row("", f"dense {LEGS[leg]} p50: event + decide; risk check; log + book",
                              "; ".join(f"{v['p50_us']:.1f}" for v in st_.values()) + " us", "", "")
        t.rows[-1].end_section = True
    to = lat["timer_overhead"]
    t.add_row("perf_counter_ns pair", "p50; p99 (inside every sample)",
              f"{to['p50_us'] * 1000:.0f}; {to['p99_us'] * 1000:.0f} ns", "", "")
    console.print(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fundarb simulator throughput and tick-to-decision latency")
    ap.add_argument("--quick", action="store_true", help="synthetic workload 10x smaller (100,000 quotes)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default: {DEFAULT_OUT.relative_to(ROOT)})")
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="config for the real-data runs and the synthetic costs")
    ap.add_argument("--quotes", type=int, default=None, help=f"synthetic spot quotes (default {REFERENCE_QUOTES:,}, quick /10)")
    ap.add_argument("--quotes-per-order", type=int, default=10_000, help="quotes between order decisions (default 10,000)")
    ap.add_argument("--perp-every", type=int, default=10, help="one perp quote + mark per this many spot quotes (default 10 = 1/s)")
    ap.add_argument("--seed", type=int, default=20240101, help="seed of the synthetic tape and simulator")
    ap.add_argument("--repeat", type=int, default=3, help="throughput runs to take the best of (default 3)")
    ap.add_argument("--no-backtest", action="store_true", help="skip the real-data runs")
    args = ap.parse_args(argv)

    n_quotes = args.quotes or (REFERENCE_QUOTES // 10 if args.quick else REFERENCE_QUOTES)
    period_ns = args.quotes_per_order * QUOTE_STEP_NS
    funding_rate = SYNTHETIC_FUNDING_RATE
    cfg = load(args.config)
    res: dict[str, Any] = {"meta": meta(args), "backtests": []}
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    if not args.no_backtest:
        log(f"real data: run_backtest {cfg.name} over the shipped history ...")
        res["backtests"].append(bench_backtest(cfg, f"{cfg.name}, shipped history", args.repeat))
        log("real data: last 365 days ...")
        res["backtests"].append(bench_backtest(last_days(cfg, 365), f"{cfg.name}, last 365 days", args.repeat))

    log(f"synthetic: building {n_quotes:,}-quote tape ...")
    st = build_tape(n_quotes, args.seed, args.perp_every, funding_rate)
    # The tape is built in memory up front (a real backtest streams it from a
    # generator); freeze it so the collector's full passes do not rescan its
    # ~1M long-lived objects, a cost of this harness and not of fundarb.
    gc.collect()
    gc.freeze()
    scfg = synthetic_config(cfg)
    log("synthetic: simulator + heap loop ...")
    res["synthetic"] = bench_synthetic(scfg, st, args.seed, period_ns, funding_rate, args.repeat)
    res["synthetic"]["config_changes"] = f"{Path(args.config).name} with capital=1,000,000 and strategy.cooldown_hours=0"
    res["synthetic"]["quotes_per_order_decision"] = args.quotes_per_order
    log("latency: per-event timing ...")
    res["latency"] = bench_latency(scfg, st, args.seed, period_ns, funding_rate)
    log("latency: the same order path kept warm (dense orders) ...")
    dense_quotes, dense_every = min(n_quotes, 50_000), 200
    dense = build_tape(dense_quotes, args.seed + 1, args.perp_every, funding_rate)
    dl = bench_latency(scfg, dense, args.seed + 1, dense_every * QUOTE_STEP_NS, funding_rate)
    res["latency"]["dense_orders"] = {
        "label": f"context, no budget: {dense_quotes:,} quotes, one order decision per {dense_every} quotes",
        "tick_to_order_submitted": dl["tick_to_order_submitted"],
        "tick_to_orders_sent_event": dl["tick_to_orders_sent_event"],
        "order_stages": dl["order_stages"],
        "orders": dl["orders"], "vetoes": dl["vetoes"], "kill_switch": dl["kill_switch"],
    }

    s, lat = res["synthetic"], res["latency"]
    res["budgets"] = [
        {"budget": "simulator quotes/s", "value": s["quotes_per_s"], "limit": BUDGET_QUOTES_PER_S, "op": ">=",
         "within": s["quotes_per_s"] >= BUDGET_QUOTES_PER_S},
        {"budget": "tick-to-decision p50 us", "value": lat["tick_to_decision"]["p50_us"], "limit": BUDGET_DECISION_P50_US,
         "op": "<=", "within": lat["tick_to_decision"]["p50_us"] <= BUDGET_DECISION_P50_US},
        {"budget": "tick-to-decision p99 us", "value": lat["tick_to_decision"]["p99_us"], "limit": BUDGET_DECISION_P99_US,
         "op": "<=", "within": lat["tick_to_decision"]["p99_us"] <= BUDGET_DECISION_P99_US},
    ]
    o = lat["tick_to_order_submitted"]
    if o["n"]:
        res["budgets"].append({"budget": "tick-to-order-submitted p99 us", "value": o["p99_us"], "limit": BUDGET_ORDER_P99_US,
                               "op": "<=", "within": o["p99_us"] <= BUDGET_ORDER_P99_US})

    print_report(res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text(json.dumps(res, indent=2, default=str) + "\n")
    tmp.replace(args.out)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
