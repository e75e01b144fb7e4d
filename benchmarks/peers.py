"""fundarb's simulator next to its peers, on the SYNTHETIC reference workload.

    python benchmarks/peers.py [--quick] [--quotes N] [--seed N] [--repeat N] [--out benchmarks/peers.json]

One process, one run, the same seeded tape (benchmarks/run.py ``build_tape``,
benchmarks/README.md section 2) through:

1. fundarb: ``Engine`` + ``SimExchange`` + the carry strategy, one order
   decision per 10,000 quotes (run.py ``bench_synthetic``);
2. the bare Python heap loop over the same tape tuples (run.py ``heap_loop``,
   measured inside ``bench_synthetic``);
3. NautilusTrader: a ``BacktestEngine`` with one venue and the BTCUSDT spot
   instrument, the tape's spot quotes as ``QuoteTick`` objects, and a Python
   ``Strategy`` that tracks the mid and submits a market order every 10,000
   quotes; ``engine.run()`` is timed;
4. hftbacktest: the tape's spot quotes as L2 depth events, and a numba-jitted
   loop that ``elapse``-s one quote interval at a time, reads the best bid and
   ask, and submits a market order every 10,000 quotes.

Inputs are built first and not timed. Then each round runs every runner once,
back to back, and each runner keeps its best round (``--repeat``). The peers
are optional (``pip install -e '.[bench]'``); one that is not installed is
skipped with a line saying so. Nothing here asserts anything and the script
always exits 0. See benchmarks/README.md, "Peers".
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as fb  # noqa: E402 (benchmarks/run.py, found through the line above)
from results_file import write_results  # noqa: E402

from fundarb.config import load  # noqa: E402
from fundarb.core.model import Quote  # noqa: E402

DEFAULT_OUT = fb.ROOT / "benchmarks" / "peers.json"
INSTALL_HINT = "pip install -e '.[bench]'"
SPOT_VENUE = "bench:spot"  # the spot venue's name on run.py's synthetic tape
QUOTES_PER_ORDER = 10_000
PERP_EVERY = 10
ORDER_QTY = 1.0  # BTC per peer market order (fundarb's legs are ~1 BTC too)
NT_START_BALANCE_USDT = 10_000_000
NT_START_BALANCE_BTC = 10

# a runner: (what it runs, set up once and not timed; one timed run -> its numbers)
Runner = tuple[dict[str, Any], Callable[[], dict[str, Any]]]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------
# the shared input: the spot quotes of run.py's tape, as plain arrays
# --------------------------------------------------------------------------
def spot_quotes(st: fb.SyntheticTape) -> dict[str, np.ndarray]:
    """The tape's spot ``Quote`` events in tape order (perp quotes, marks,
    funding and timers are fundarb-only: the peers get one instrument)."""
    qs = [ev for _, _, ev in st.tape if type(ev) is Quote and ev.venue == SPOT_VENUE]
    if len(qs) != st.quotes:
        raise RuntimeError(f"expected {st.quotes} spot quotes on the tape, found {len(qs)}")
    return {
        "ts": np.fromiter((x.ts for x in qs), np.int64, len(qs)),
        "bid": np.fromiter((x.bid for x in qs), np.float64, len(qs)),
        "ask": np.fromiter((x.ask for x in qs), np.float64, len(qs)),
        "bid_size": np.fromiter((x.bid_size for x in qs), np.float64, len(qs)),
        "ask_size": np.fromiter((x.ask_size for x in qs), np.float64, len(qs)),
    }


# --------------------------------------------------------------------------
# 1 + 2. fundarb and the bare heap loop (run.py, unchanged)
# --------------------------------------------------------------------------
def fundarb_runner(st: fb.SyntheticTape, seed: int) -> Runner:
    """run.py's ``bench_synthetic`` once per round: the simulator on a fresh
    engine, then the bare heap loop (and the streaming one) over the very
    same tuples."""
    scfg = fb.synthetic_config(load(fb.DEFAULT_CONFIG))
    period_ns = QUOTES_PER_ORDER * fb.QUOTE_STEP_NS
    return {}, lambda: fb.bench_synthetic(scfg, st, seed, period_ns, fb.SYNTHETIC_FUNDING_RATE, 1)


def fundarb_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    s = min(runs, key=lambda r: r["sim_s"])
    h = min(runs, key=lambda r: r["heap_s"])
    return {
        "fundarb": {
            "version": version("fundarb"),
            "runs": "Engine + SimExchange + PositionBook + RiskMonitor + CarryStrategy (run.py ScheduledCarry)",
            "timed": "Engine.run (run.py CountingEngine.loop_seconds), best of repeat; tape build not timed",
            "quotes": s["quotes"], "events": s["events"], "order_decisions": s["order_decisions"],
            "orders": s["orders"], "fills": s["fills"], "vetoes": s["vetoes"], "kill_switch": s["kill_switch"],
            "seconds": s["sim_s"], "runs_s": [r["sim_s"] for r in runs],
            "quotes_per_s": s["quotes_per_s"], "events_per_s": s["events_per_s"],
        },
        "heap_loop": {
            "version": platform.python_version(),
            "runs": "run.py heap_loop: every tape tuple pushed on one heapq with a sequence number, then all popped, reading event.ts",
            "timed": "the whole push + pop loop, best of repeat",
            "tuples": h["tape_events"], "seconds": h["heap_s"], "runs_s": [r["heap_s"] for r in runs],
            "quotes_per_s": h["heap_quotes_per_s"], "tuples_per_s": h["heap_tuples_per_s"],
            "streaming_tuples_per_s": max(r["streaming_heap_tuples_per_s"] for r in runs),
        },
    }


# --------------------------------------------------------------------------
# 3. NautilusTrader
# --------------------------------------------------------------------------
def nautilus_runner(q: dict[str, np.ndarray], start_ns: int) -> Runner | None:
    try:
        from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
        from nautilus_trader.config import LoggingConfig, StrategyConfig
        from nautilus_trader.model.currencies import BTC, USDT
        from nautilus_trader.model.data import QuoteTick
        from nautilus_trader.model.enums import AccountType, OmsType, OrderSide
        from nautilus_trader.model.identifiers import InstrumentId, Venue
        from nautilus_trader.model.objects import Money, Price, Quantity
        from nautilus_trader.test_kit.providers import TestInstrumentProvider
        from nautilus_trader.trading.strategy import Strategy
    except ImportError as e:
        log(f"NautilusTrader: not installed ({e.name}), skipped; to include it: {INSTALL_HINT}")
        return None

    class MidTrackerConfig(StrategyConfig, frozen=True):
        instrument_id: InstrumentId
        first_order_ns: int
        period_ns: int
        qty: float

    class MidTracker(Strategy):
        """Per quote: count it and track the mid. Every ``period_ns`` of
        simulated time (10,000 quotes, as fundarb's ScheduledCarry): one
        market order, alternating buy and sell."""

        def __init__(self, config: MidTrackerConfig) -> None:
            super().__init__(config)
            self.iid = config.instrument_id
            self.next_order_ns = config.first_order_ns
            self.period_ns = config.period_ns
            self.qty = Quantity(config.qty, 6)
            self.quotes = 0
            self.orders = 0
            self.fills = 0
            self.mid = 0.0

        def on_start(self) -> None:
            self.subscribe_quote_ticks(self.iid)

        def on_quote_tick(self, tick: QuoteTick) -> None:
            self.quotes += 1
            self.mid = 0.5 * (tick.bid_price.as_double() + tick.ask_price.as_double())
            if tick.ts_event >= self.next_order_ns:
                self.next_order_ns += self.period_ns
                side = OrderSide.BUY if self.orders % 2 == 0 else OrderSide.SELL
                self.submit_order(self.order_factory.market(self.iid, side, self.qty))
                self.orders += 1

        def on_order_filled(self, event: Any) -> None:
            self.fills += 1

    instrument = TestInstrumentProvider.btcusdt_binance()
    iid, pp, sp = instrument.id, instrument.price_precision, instrument.size_precision
    log(f"NautilusTrader: building {len(q['ts']):,} QuoteTick objects (not timed) ...")
    t0 = time.perf_counter()
    ticks = [
        QuoteTick(iid, Price(b, pp), Price(a, pp), Quantity(bs, sp), Quantity(az, sp), t, t)
        for t, b, a, bs, az in zip(q["ts"].tolist(), q["bid"].tolist(), q["ask"].tolist(),
                                   q["bid_size"].tolist(), q["ask_size"].tolist())
    ]
    build_s = time.perf_counter() - t0
    gc.collect()
    gc.freeze()  # as run.py does for fundarb's tape: inputs held by this harness only
    period_ns = QUOTES_PER_ORDER * fb.QUOTE_STEP_NS

    def once() -> dict[str, Any]:
        engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(log_level="ERROR")))
        engine.add_venue(Venue("BINANCE"), OmsType.NETTING, AccountType.CASH,
                         [Money(NT_START_BALANCE_USDT, USDT), Money(NT_START_BALANCE_BTC, BTC)])
        engine.add_instrument(instrument)
        engine.add_data(ticks)
        strategy = MidTracker(MidTrackerConfig(instrument_id=iid, first_order_ns=start_ns + period_ns,
                                               period_ns=period_ns, qty=ORDER_QTY))
        engine.add_strategy(strategy)
        gc.collect()
        t0 = time.perf_counter()
        engine.run()
        seconds = time.perf_counter() - t0
        engine.dispose()
        if strategy.quotes != len(ticks):
            log(f"NautilusTrader: the strategy saw {strategy.quotes:,} of {len(ticks):,} quotes")
        return {"seconds": seconds, "quotes_seen_by_strategy": strategy.quotes, "orders": strategy.orders,
                "fills": strategy.fills, "quotes_per_s": len(ticks) / seconds}

    info = {
        "version": version("nautilus_trader"),
        "runs": ("BacktestEngine, venue BINANCE (NETTING, CASH account, default L1 book and fill model), "
                 "instrument BTCUSDT spot (TestInstrumentProvider.btcusdt_binance), Python Strategy: mid per quote, "
                 f"one market order per {QUOTES_PER_ORDER:,} quotes alternating buy/sell {ORDER_QTY:g} BTC"),
        "timed": "engine.run(), best of repeat; QuoteTick construction, add_data and engine set-up not timed",
        "quotes": len(ticks), "tick_build_s": build_s,
    }
    return info, once


# --------------------------------------------------------------------------
# 4. hftbacktest
# --------------------------------------------------------------------------
def hftbacktest_rows(q: dict[str, np.ndarray], tick: float, event_dtype: Any, flags: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """The spot quotes as L2 market-by-price depth events, the form
    hftbacktest replays: per quote, a level whose price moved is removed
    (qty 0) and the new best level is set, bid then ask; a level whose price
    did not move gets one row with the new size. Every row is both an
    exchange and a local event at the quote's timestamp (no feed latency).
    Returns the rows and each quote's first row index."""
    bid_t = np.rint(q["bid"] / tick).astype(np.int64)
    ask_t = np.rint(q["ask"] / tick).astype(np.int64)
    n = bid_t.size
    del_bid = np.zeros(n, bool)
    del_ask = np.zeros(n, bool)
    del_bid[1:] = bid_t[1:] != bid_t[:-1]
    del_ask[1:] = ask_t[1:] != ask_t[:-1]
    per_quote = 2 + del_bid.astype(np.int64) + del_ask.astype(np.int64)
    first = np.zeros(n, np.int64)
    first[1:] = np.cumsum(per_quote)[:-1]
    rows = np.zeros(int(per_quote.sum()), event_dtype)
    rows["exch_ts"] = np.repeat(q["ts"], per_quote)
    rows["local_ts"] = rows["exch_ts"]
    base = flags["EXCH_EVENT"] | flags["LOCAL_EVENT"] | flags["DEPTH_EVENT"]
    buy, sell = base | flags["BUY_EVENT"], base | flags["SELL_EVENT"]
    at = first.copy()
    for mask, side, prev in ((del_bid, buy, bid_t), (del_ask, sell, ask_t)):
        i = np.nonzero(mask)[0]
        rows["ev"][at[i]] = side
        rows["px"][at[i]] = prev[i - 1] * tick
        at[i] += 1
    rows["ev"][at] = buy
    rows["px"][at] = bid_t * tick
    rows["qty"][at] = q["bid_size"]
    at += 1
    rows["ev"][at] = sell
    rows["px"][at] = ask_t * tick
    rows["qty"][at] = q["ask_size"]
    return rows, first


def hftbacktest_runner(q: dict[str, np.ndarray], start_ns: int) -> Runner | None:
    try:
        import hftbacktest as hbt_mod
        from hftbacktest import BacktestAsset, HashMapMarketDepthBacktest
        from hftbacktest.types import event_dtype
        from numba import njit
    except ImportError as e:
        log(f"hftbacktest: not installed ({e.name}), skipped; to include it: {INSTALL_HINT}")
        return None

    @njit
    def strategy_loop(hbt: Any, step_ns: int, first_order_ns: int, period_ns: int, qty: float,
                      tif: int, market: int) -> tuple[int, int, float]:
        """One ``elapse`` per quote interval; per step read the best bid and
        ask and track the mid; every ``period_ns`` one market order,
        alternating buy and sell."""
        steps = 0
        orders = 0
        mid = 0.0
        next_order_ns = first_order_ns
        while hbt.elapse(step_ns) == 0:
            steps += 1
            depth = hbt.depth(0)
            bid, ask = depth.best_bid, depth.best_ask
            mid = 0.5 * (bid + ask)
            if hbt.current_timestamp >= next_order_ns:
                next_order_ns += period_ns
                orders += 1
                if orders % 2 == 1:
                    hbt.submit_buy_order(0, orders, ask, qty, tif, market, False)
                else:
                    hbt.submit_sell_order(0, orders, bid, qty, tif, market, False)
                hbt.clear_inactive_orders(0)
        return steps, orders, mid

    log(f"hftbacktest: building the event rows for {len(q['ts']):,} quotes, numba warm-up (not timed) ...")
    tick = fb.TICK
    flags = {k: getattr(hbt_mod, k) for k in ("EXCH_EVENT", "LOCAL_EVENT", "DEPTH_EVENT", "BUY_EVENT", "SELL_EVENT")}
    t0 = time.perf_counter()
    rows, first = hftbacktest_rows(q, tick, event_dtype, flags)
    build_s = time.perf_counter() - t0

    def backtest(data: np.ndarray) -> Any:
        # BacktestAsset.data() keeps a raw pointer into ``data``: the caller
        # keeps the array alive until the backtest is closed.
        asset = (BacktestAsset().data(data).linear_asset(1.0).constant_order_latency(1_000_000, 1_000_000)
                 .risk_adverse_queue_model().no_partial_fill_exchange().trading_value_fee_model(0.0002, 0.0005)
                 .tick_size(tick).lot_size(0.000001))
        return HashMapMarketDepthBacktest([asset])

    period_ns = QUOTES_PER_ORDER * fb.QUOTE_STEP_NS
    args = (fb.QUOTE_STEP_NS, start_ns + period_ns, period_ns, ORDER_QTY, int(hbt_mod.GTC), int(hbt_mod.MARKET))

    # numba compiles on the first call: warm up on the first 2,000 quotes
    warm_rows = rows[: int(first[min(2_000, first.size - 1)])]
    t0 = time.perf_counter()
    warm = backtest(warm_rows)
    strategy_loop(warm, *args)
    warm.close()
    compile_s = time.perf_counter() - t0
    n = int(first.size)

    def once() -> dict[str, Any]:
        hbt = backtest(rows)
        gc.collect()
        t0 = time.perf_counter()
        steps, orders, _ = strategy_loop(hbt, *args)
        seconds = time.perf_counter() - t0
        trades = int(hbt.state_values(0).num_trades)
        hbt.close()
        return {"seconds": seconds, "elapse_steps": steps, "orders": orders, "trades": trades,
                "quotes_per_s": n / seconds, "rows_per_s": rows.size / seconds}

    info = {
        "version": version("hftbacktest"),
        "numba": version("numba"),
        "runs": ("HashMapMarketDepthBacktest, one linear asset (tick 0.1, lot 1e-6, 1 ms constant order latency, "
                 "risk-averse queue model, no-partial-fill exchange), numba-jitted loop: elapse(100 ms) per quote, "
                 f"best bid/ask and mid per step, one market order per {QUOTES_PER_ORDER:,} quotes alternating buy/sell "
                 f"{ORDER_QTY:g} BTC"),
        "timed": "the jitted loop over all rows, best of repeat; numba compile (warm-up run) and event-array build not timed",
        "quotes": n, "rows": int(rows.size), "rows_per_quote": rows.size / n,
        "rows_build_s": build_s, "warmup_with_compile_s": compile_s,
    }
    return info, once


def peer_summary(info: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    best = min(runs, key=lambda r: r["seconds"])
    return {**info, **best, "runs_s": [r["seconds"] for r in runs]}


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------
def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    if a is None or b is None:
        return None
    return a["quotes_per_s"] / b["quotes_per_s"]


def per_round_ratios(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The same ratios within each round (runners back to back), and their
    median: steadier than best-of ratios when the machine's load drifts."""
    f = [r["sim_s"] for r in runs["fundarb"]]
    out: dict[str, Any] = {"fundarb_to_heap_loop": [r["heap_s"] / s for r, s in zip(runs["fundarb"], f)]}
    if "nautilus_trader" in runs:
        out["fundarb_to_nautilus"] = [r["seconds"] / s for r, s in zip(runs["nautilus_trader"], f)]
    if "hftbacktest" in runs:
        out["hftbacktest_to_fundarb"] = [s / r["seconds"] for r, s in zip(runs["hftbacktest"], f)]
    out["median"] = {k: float(np.median(v)) for k, v in out.items()}
    return out


def print_report(res: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 118)
    m, w, p = res["meta"], res["workload"], res["peers"]
    t = Table(title=f"fundarb and peers: SYNTHETIC {w['spot_quotes']:,} quotes, seed {w['seed']}, best of {m['repeat']}",
              caption=f"{m['implementation']} {m['python']}, {m['cpu']} x{m['cpus']}, {m['platform']}")
    t.add_column("runner", style="bold")
    t.add_column("version")
    t.add_column("quotes/s", justify="right")
    t.add_column("other", justify="right")
    t.add_column("timed (best)", justify="right")
    f, h = p["fundarb"], p["heap_loop"]
    t.add_row("fundarb simulator", f["version"], f"{f['quotes_per_s']:,.0f}",
              f"{f['events_per_s']:,.0f} events/s", f"{f['seconds']:.2f} s")
    t.add_row("bare Python heap loop", h["version"], f"{h['quotes_per_s']:,.0f}",
              f"{h['tuples_per_s']:,.0f} tuples/s", f"{h['seconds']:.2f} s")
    for key, name in (("nautilus_trader", "NautilusTrader"), ("hftbacktest", "hftbacktest")):
        r = p[key]
        if r is None:
            t.add_row(name, "not installed", "skipped", "", "")
        else:
            other = f"{r['rows_per_s']:,.0f} rows/s" if "rows_per_s" in r else ""
            t.add_row(name, r["version"], f"{r['quotes_per_s']:,.0f}", other, f"{r['seconds']:.2f} s")
    t.rows[-1].end_section = True
    for label, key in (("fundarb / NautilusTrader", "fundarb_to_nautilus"), ("fundarb / heap loop", "fundarb_to_heap_loop"),
                       ("hftbacktest / fundarb", "hftbacktest_to_fundarb")):
        v = res["ratios"][key]
        med = res["ratios_per_round"]["median"].get(key)
        t.add_row(f"ratio {label}", "", "skipped" if v is None else f"{v:.2f}x",
                  "" if med is None else f"{med:.2f}x per-round median", "")
    lat = res.get("fundarb_latency")
    if lat:
        o, d = lat["tick_to_order_submitted"], lat["tick_to_decision"]
        t.rows[-1].end_section = True
        t.add_row("fundarb tick-to-order-submitted", f"n = {o['n']}", f"p99 {o['p99_us']:.1f} us",
                  f"p50 {o['p50_us']:.1f} us", f"budget p99 <= {fb.BUDGET_ORDER_P99_US:g} us")
        t.add_row("fundarb tick-to-decision", f"n = {d['n']:,}", f"p99 {d['p99_us']:.2f} us",
                  f"p50 {d['p50_us']:.2f} us", f"budget {fb.BUDGET_DECISION_P50_US:g} / {fb.BUDGET_DECISION_P99_US:g} us")
    console.print(t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fundarb's simulator next to NautilusTrader and hftbacktest on the synthetic workload")
    ap.add_argument("--quick", action="store_true", help="100,000 quotes instead of 1,000,000")
    ap.add_argument("--quotes", type=int, default=None, help=f"spot quotes (default {fb.REFERENCE_QUOTES:,}, quick /10)")
    ap.add_argument("--seed", type=int, default=20240101, help="seed of the synthetic tape and fundarb's simulator")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; each runner keeps its best (default 3)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default: {DEFAULT_OUT.relative_to(fb.ROOT)})")
    args = ap.parse_args(argv)
    n_quotes = args.quotes or (fb.REFERENCE_QUOTES // 10 if args.quick else fb.REFERENCE_QUOTES)

    meta = fb.meta(argparse.Namespace(quick=args.quick, seed=args.seed, config=fb.DEFAULT_CONFIG))
    meta["repeat"] = args.repeat
    meta["versions"] = {d: version(d) for d in ("fundarb", "nautilus_trader", "hftbacktest", "numba", "numpy", "attrs")}

    log(f"building the {n_quotes:,}-quote synthetic tape (run.py build_tape) ...")
    st = fb.build_tape(n_quotes, args.seed, PERP_EVERY, fb.SYNTHETIC_FUNDING_RATE)
    gc.collect()
    gc.freeze()  # as run.py: the tape is held by this harness, not by fundarb
    q = spot_quotes(st)
    res: dict[str, Any] = {
        "meta": meta,
        "workload": {
            "label": "SYNTHETIC (not market data): benchmarks/run.py build_tape, README section 2",
            "seed": args.seed, "spot_quotes": st.quotes, "quote_step_ms": fb.QUOTE_STEP_NS // 1_000_000,
            "quotes_per_order_decision": QUOTES_PER_ORDER,
            "fundarb_tape": {"tuples": len(st.tape), "perp_quotes": st.perp_quotes, "perp_marks": st.marks,
                             "funding_settlements": st.settlements, "timers": st.timers},
            "peers_get": "the spot quotes only (ts, bid, ask, bid size, ask size), one instrument",
        },
        "peers": {},
    }

    # Inputs first (none of this is timed), then each round runs every
    # runner once, back to back, so that a busy spell on a shared machine
    # lands on all of them rather than on one; each keeps its best round.
    runners: dict[str, Runner] = {"fundarb": fundarb_runner(st, args.seed)}
    nt = nautilus_runner(q, st.start)
    hb = hftbacktest_runner(q, st.start)
    for key, r in (("nautilus_trader", nt), ("hftbacktest", hb)):
        if r is not None:
            runners[key] = r
    runs: dict[str, list[dict[str, Any]]] = {key: [] for key in runners}
    for i in range(args.repeat):
        for key, (_, once) in runners.items():
            log(f"round {i + 1}/{args.repeat}: {key} ...")
            runs[key].append(once())

    p = res["peers"]
    p.update(fundarb_summary(runs["fundarb"]))
    for key, r in (("nautilus_trader", nt), ("hftbacktest", hb)):
        p[key] = None if r is None else peer_summary(r[0], runs[key])
    res["ratios"] = {
        "fundarb_to_nautilus": ratio(p["fundarb"], p["nautilus_trader"]),
        "fundarb_to_heap_loop": ratio(p["fundarb"], p["heap_loop"]),
        "hftbacktest_to_fundarb": ratio(p["hftbacktest"], p["fundarb"]),
    }
    res["ratios_per_round"] = per_round_ratios(runs)
    # fundarb's order path on the same tape, timed per event after the rounds (run.py's latency pass)
    log("fundarb: tick-to-order-submitted on the same tape ...")
    lat = fb.bench_latency(fb.synthetic_config(load(fb.DEFAULT_CONFIG)), st, args.seed,
                           QUOTES_PER_ORDER * fb.QUOTE_STEP_NS, fb.SYNTHETIC_FUNDING_RATE)
    res["fundarb_latency"] = {k: lat[k] for k in ("tick_to_decision", "tick_to_order_submitted", "order_stages")}
    print_report(res)
    write_results(args.out, json.loads(json.dumps(res, default=str)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
