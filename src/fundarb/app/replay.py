"""Run the engine over a recording: the replayed tape, the window it spans,
and the golden file that makes a recorded day a regression test."""

from __future__ import annotations

import difflib
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import attrs
import numpy as np
import polars as pl

from fundarb.config import COIN_MARGINED, SPOT_LINEAR, UNIFIED, Config
from fundarb.core.engine import Engine
from fundarb.core.model import FundingRate, FundingSettlement, MarkPrice, Quote, Side, Timer, Trade
from fundarb.data.history import MarketHistory, NoFundingSeries, load_settlements
from fundarb.replay.parse import MARK_SAMPLE_NS, NS, ParsedFeed, Recording, ReplayError, parse_feed
from fundarb.sim import queue as q
from fundarb.sim.backtest import BacktestResult, build_engine, result_of
from fundarb.sim.exchange import SimExchange
from fundarb.wiring import require_structure

TIMER_NS = 60 * NS  # equity is marked every minute on a replay
GOLDEN_FILE = "golden.json"
NS_PER_MS = 1_000_000


def fmt_ns(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@attrs.frozen
class ReplayWindow(MarketHistory):
    """The span of a replay, shaped like a history so metrics and reports
    read it the same way; ``capture`` describes what was replayed."""

    capture: dict[str, Any] = attrs.field(factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "start": fmt_ns(self.start),
            "end": fmt_ns(self.end),
            "hours": round((self.end - self.start) / 3_600e9, 6),
            "price_hours_carried_forward": 0,
            "funding_settlements": int(self.funding_ts.size),
            "funding_gaps": [],
            "mark_price": self.capture.get("mark_price", ""),
            "sources": list(self.sources),
            "replay": self.capture,
        }


def _funding_history(cfg: Config, lo: int, hi: int, before: int, data_dir: Path | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Real settlements of the config's perp inside [lo, hi], and the
    ``before`` latest ones ahead of lo (they seed the strategy's signal),
    snapped to the schedule by the data layer's one rule."""
    empty = pl.DataFrame(schema={"ts": pl.Int64, "rate": pl.Float64, "interval": pl.Float64, "mark": pl.Float64})
    reach = lo - (before + 3) * 24 * 3_600 * NS  # wide enough for the slowest (24 h) schedule
    try:
        f = load_settlements((cfg.perp.exchange, cfg.perp.symbol), cfg.data.settlement_tolerance_seconds,
                             reach, hi, data_dir).select("ts", "rate", "interval", "mark")
    except NoFundingSeries:
        return empty, empty
    inside = f.filter((pl.col("ts") >= lo) & (pl.col("ts") <= hi))
    prior = f.filter(pl.col("ts") < lo).tail(before)
    return inside, prior


def _capture_settlements(perp: ParsedFeed, lo: int, hi: int) -> list[tuple[int, float, float, float]]:
    """Settlements a capture's own funding messages imply: the last rate
    published before each next-funding time inside the window, at the
    venue's last mark before it where the messages carry one (else nan:
    the perp mid stands in)."""
    f = perp.events.filter((pl.col("kind") == "funding") & pl.col("next_funding_ts").is_not_null())
    out: dict[int, tuple[float, float]] = {}
    for ts, rate, nxt, mark in zip(f["ts"], f["rate"], f["next_funding_ts"], f["mark"]):
        if ts < nxt and lo <= nxt <= hi:
            out[nxt] = (rate, mark if mark is not None else out.get(nxt, (0.0, math.nan))[1])
    return [(t, r, 8.0, m) for t, (r, m) in sorted(out.items())]


def replay_tape(cfg: Config, spot: ParsedFeed | None, perp: ParsedFeed | None, settlements: list[Any], prior: list[Any],
                timers: np.ndarray) -> list[tuple[int, int, Any]]:
    """Every replayed event as the simulator's market tape, in (time,
    priority) order; within one instant spot before perp, file order kept."""
    tape: list[tuple[int, int, Any]] = []
    for ts, rate, interval in prior:
        tape.append((ts, q.P_FUNDING, FundingSettlement(ts, cfg.perp_account, rate, interval, float("nan"), "none_before_window")))
    last_mid = {}
    for parsed, venue in ((spot, cfg.spot_account), (perp, cfg.perp_account)):
        if parsed is None:
            continue
        depth = cfg.spot.depth_btc if parsed.feed.role == "spot" else cfg.perp.depth_btc
        has_mark = bool((parsed.events["kind"] == "funding").any() and parsed.events["mark"].is_not_null().any())
        next_mark = 0
        for row in parsed.events.iter_rows(named=True):
            ts, kind = row["ts"], row["kind"]
            if kind == "quote":
                bs, as_ = row["bid_size"], row["ask_size"]
                quote = Quote(ts, venue, row["bid"], row["ask"], depth if bs is None else bs, depth if as_ is None else as_)
                tape.append((ts, q.P_QUOTE, quote))
                last_mid[venue] = quote.mid
                if venue == cfg.perp_account and not has_mark and ts >= next_mark:
                    tape.append((ts, q.P_MARK, MarkPrice(ts, venue, quote.mid)))
                    next_mark = ts + MARK_SAMPLE_NS
            elif kind == "trade":
                tape.append((ts, q.P_QUOTE, Trade(ts, venue, Side(row["side"]), row["qty"], row["price"])))
            elif kind == "funding" and venue == cfg.perp_account:
                if row["mark"] is not None:
                    tape.append((ts, q.P_MARK, MarkPrice(ts, venue, row["mark"])))
                if row["next_funding_ts"] is not None and row["rate"] is not None:
                    tape.append((ts, q.P_RATE, FundingRate(ts, venue, row["rate"], 8.0, row["next_funding_ts"], row["predicted_rate"])))
    tape.sort(key=lambda e: (e[0], e[1]))
    # settlements go in at their instant, at the venue's mark where the
    # history has it, else with the perp mid then standing
    for ts, rate, interval, mark in settlements:
        if mark != mark:
            settle = FundingSettlement(ts, cfg.perp_account, rate, interval, _mid_at(tape, cfg.perp_account, ts), "perp_mid")
        else:
            settle = FundingSettlement(ts, cfg.perp_account, rate, interval, mark, "venue")
        tape.append((ts, q.P_FUNDING, settle))
    tape.extend((int(t), q.P_TIMER, Timer(int(t))) for t in timers)
    tape.sort(key=lambda e: (e[0], e[1]))
    return tape


def _mid_at(tape: list[Any], venue: str, ts: int) -> float:
    mid = float("nan")
    for t, _, ev in tape:
        if t > ts:
            break
        if type(ev) is Quote and ev.venue == venue:
            mid = ev.mid
    if mid != mid:
        raise ReplayError(f"no {venue} quote before the settlement at {fmt_ns(ts)} UTC: cannot settle funding")
    return mid


def run_replay(rec: Recording, cfg: Config, cache_dir: Path | None = None, data_dir: Path | None = None) -> tuple[BacktestResult, dict[str, Any]]:
    """``cfg`` over the recording, with its always-on benchmark over the same capture beside it."""
    bench = replay_always_on(rec, cfg, cache_dir, data_dir)
    engine, sim, window, cached = prepare_replay(rec, cfg, cache_dir, data_dir)
    engine.run()
    return result_of(cfg, window, engine, sim, bench), cached


def replay_always_on(rec: Recording, cfg: Config, cache_dir: Path | None = None,
                     data_dir: Path | None = None) -> BacktestResult:
    """The always-on benchmark of ``cfg`` (``Config.always_on``) over the recording."""
    bench = cfg.always_on()
    engine, sim, window, _ = prepare_replay(rec, bench, cache_dir, data_dir)
    engine.run()
    return result_of(bench, window, engine, sim)


def prepare_replay(rec: Recording, cfg: Config, cache_dir: Path | None = None,
                   data_dir: Path | None = None) -> tuple[Engine, SimExchange, ReplayWindow, dict[str, Any]]:
    """The engine and simulator wired to a recording's events, not yet run
    (``run_replay`` runs it; the monitor steps through it)."""
    # a recording holds one perp's feed and settlements: a perp/perp carry would need two
    require_structure(cfg, "fundarb replay", (SPOT_LINEAR, COIN_MARGINED, UNIFIED))
    parsed = {f.role: parse_feed(rec, f, cache_dir) for f in rec.feeds}
    spot, perp = parsed.get("spot"), parsed.get("perp")
    lo = min(int(cast(int, p.events["ts"].min())) for p in parsed.values())
    hi = max(int(cast(int, p.events["ts"].max())) for p in parsed.values())
    own = _capture_settlements(perp, lo, hi) if perp is not None else []
    inside, prior_df = _funding_history(cfg, lo, hi, cfg.strategy.signal_settlements, data_dir)
    if own:
        settlements, source = own, "the capture's own funding messages"
    else:
        settlements = list(zip(inside["ts"].to_list(), inside["rate"].to_list(), inside["interval"].to_list(),
                               inside["mark"].fill_null(math.nan).to_list()))
        source = "the real funding history (the capture has no funding messages)" if settlements else "none: no settlement falls in the window"
    prior = list(zip(prior_df["ts"].to_list(), prior_df["rate"].to_list(), prior_df["interval"].to_list()))
    timers = np.arange(-(-lo // TIMER_NS) * TIMER_NS, hi + 1, TIMER_NS, dtype=np.int64)
    tape = replay_tape(cfg, spot, perp, settlements, prior, timers)
    window = _window(cfg, rec, parsed, lo, hi, timers, settlements, prior, source)
    first = (prior[0][0], prior[0][2]) if prior else ((settlements[0][0], settlements[0][2]) if settlements else None)
    quoted = spot or perp
    assert quoted is not None, "a recording has a spot or a perp feed"
    spot_mid = float((quoted.events.filter(pl.col("kind") == "quote")[0].select((pl.col("bid") + pl.col("ask")) / 2)).item())
    engine, sim = build_engine(cfg, tape, first, min(lo, prior[0][0] if prior else lo) - NS, spot_mid)
    return engine, sim, window, {role: p.cached for role, p in parsed.items()}


def _window(cfg: Config, rec: Recording, parsed: dict[str, ParsedFeed], lo: int, hi: int, timers: np.ndarray,
            settlements: list[Any], prior: list[Any], source: str) -> ReplayWindow:
    def at(role: str) -> np.ndarray:
        p = parsed.get(role)
        if p is None:
            return np.full(timers.size, np.nan)
        qt = p.events.filter(pl.col("kind") == "quote")
        ts, mid = qt["ts"].to_numpy(), ((qt["bid"] + qt["ask"]) * 0.5).to_numpy()
        idx = np.searchsorted(ts, timers, side="right") - 1
        return np.where(idx >= 0, mid[np.maximum(idx, 0)], np.nan)

    feeds = {}
    for role, p in parsed.items():
        kinds = p.events.group_by("kind").len().sort("kind")
        feeds[role] = {
            "exchange": p.feed.exchange, "symbol": p.feed.symbol, "format": p.feed.format, "files": list(p.feed.files),
            "capture_key": p.key, "messages": p.counts, "events": dict(zip(kinds["kind"].to_list(), kinds["len"].to_list())),
        }
    has_mark = any(bool(p.events["mark"].is_not_null().any()) for p in parsed.values())
    capture = {
        "recording": rec.name,
        "description": rec.description,
        "feeds": feeds,
        "funding_settlements_from": source,
        "signal_seeded_with": f"{len(prior)} settlements before the window, from the real funding history",
        "mark_price": "venue mark price" if has_mark else "perp mid stands in for the mark (no mark in the capture), sampled once a second",
        "equity_marked_every_seconds": TIMER_NS // NS,
    }
    return ReplayWindow(
        hours=np.array([lo, hi], dtype=np.int64),
        spot=np.zeros(0), perp=np.zeros(0), carried=np.zeros(0, dtype=bool),
        funding_ts=np.array([s[0] for s in settlements], dtype=np.int64),
        funding_rate=np.array([s[1] for s in settlements], dtype=np.float64),
        funding_interval=np.array([s[2] for s in settlements], dtype=np.float64),
        funding_mark=np.array([s[3] for s in settlements], dtype=np.float64),
        sources=(f"recording {rec.name}",),
        capture=capture,
    )


# --- golden files -------------------------------------------------------------

def read_golden(path: Path) -> str:
    """A recording's golden file as text, checked to be one: a missing,
    empty, non-UTF-8 or non-JSON file is a ReplayError naming the way out."""
    again = "replay with --update-golden to write it from this replay"
    if not path.is_file():
        raise ReplayError(f"no golden file {path}: {again}")
    raw = path.read_bytes()
    if not raw.strip():
        raise ReplayError(f"golden file {path} is empty: {again}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReplayError(f"golden file {path} is not UTF-8 text (byte {exc.start}): restore it, or {again}") from None
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReplayError(f"golden file {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}): "
                          f"restore it, or {again}") from None
    return text


def compare_golden(expected: str, result: BacktestResult) -> tuple[bool, list[str]]:
    """(whether the replay matches the golden text, the metrics the golden
    holds that this run leaves out as not applicable). A golden written
    before short windows stopped being annualised still holds their APR,
    CAGR and Sharpe: those are ignored, everything else must be equal."""
    actual = golden_text(result)
    if expected == actual:
        return True, []
    try:
        old, new = json.loads(expected), json.loads(actual)
    except ValueError:
        return False, []
    if not (isinstance(old, dict) and isinstance(old.get("metrics"), dict)):
        return False, []
    ignored = sorted(k for k in old["metrics"] if k in result.not_applicable and k not in new["metrics"])
    old["metrics"] = {k: v for k, v in old["metrics"].items() if k not in ignored}
    return old == new, ignored


def golden_text(result: BacktestResult) -> str:
    """The decision log and metrics, one log row per line so a change reads
    as a short diff. Metrics that do not apply to the run (the annualised
    ones on a short window, the fill rate with no orders) are left out, as
    in report.json."""
    d = result.history.describe()
    parsed = {role: {"messages": f["messages"], "events": f["events"]} for role, f in d["replay"]["feeds"].items()}
    lines = ["{", f' "config_hash": {json.dumps(result.config_hash)},',
             f' "window": {json.dumps([d["start"], d["end"]])},',
             f' "parsed": {json.dumps(parsed, sort_keys=True)},', ' "metrics": {']
    items = sorted(result.metrics.items())
    for i, (k, v) in enumerate(items):
        lines.append(f"  {json.dumps(k)}: {json.dumps(_clean(v))}{',' if i < len(items) - 1 else ''}")
    lines += [" },", ' "log": [']
    for i, (kind, row) in enumerate(result.log):
        lines.append(f"  {json.dumps([kind, _clean(row)], sort_keys=True)}{',' if i < len(result.log) - 1 else ''}")
    lines += [" ]", "}"]
    return "\n".join(lines) + "\n"


def _clean(v: Any) -> Any:
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    return v


def golden_diff(expected: str, actual: str, limit: int = 80) -> str:
    diff = list(difflib.unified_diff(expected.splitlines(), actual.splitlines(), "golden", "replay", lineterm="", n=1))
    if len(diff) > limit:
        diff = diff[:limit] + [f"... {len(diff) - limit} more diff lines"]
    return "\n".join(diff)
