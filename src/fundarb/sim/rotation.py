"""A rotating perp/perp carry over real history: the venue rotation rule
(``fundarb.core.rotation``) decides which pair of venues holds the carry,
and the ordinary perp/perp backtest runs each stretch on its pair.

1. **Plan.** Every 8 hours of the window, each venue's signal is the mean of
   its last ``strategy.signal_settlements`` settled rates (as many of its own
   settlements as cover that many 8-hour ones on an hourly venue), annualised
   (``core.strategy.FundingSignal``: the rule the strategy enters on); a pair's
   is its short venue's less its long venue's. The rule keeps the carry where
   it is or moves it (``RotationRule.choose``), knowing only settlements made
   by then.
2. **Run.** Each stretch is the config's own perp/perp backtest on the pair
   (``load_pair_history``, ``build_simulation``) with the equity the last
   stretch ended with. At a move the strategy is told to leave
   (``CarryStrategy.leave``): it closes the pair through the simulator like any
   exit and enters no more; the stretch ends once both legs are flat.
3. **Move.** The capital then leaves each venue the new pair does not use: a
   withdrawal of ``transfer.fee`` USDT, arriving ``transfer.delay_minutes``
   later; the next stretch starts on the first bar after it arrives.

Every venue of a rotation needs a modelled liquidation rule (its margin is
checked like any perp leg's): a venue without one is refused by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs
import numpy as np

from fundarb.config import Config, VenueConfig, config_hash
from fundarb.core import metrics
from fundarb.core.errors import FundarbError
from fundarb.core.funding import schedule_gaps
from fundarb.core.liquidation import UNMODELLED
from fundarb.core.model import NS_PER_HOUR
from fundarb.core.rotation import Move, Pair, RotationRule, SwitchCost
from fundarb.core.strategy import FundingSignal, carry_of, settlements_covering
from fundarb.data.history import MarketHistory, fmt_time, load_pair_history, load_settlements, parse_time
from fundarb.data.margin_tiers import shipped_rule
from fundarb.sim.backtest import BacktestResult, beside_always_on, build_simulation, result_of, run_always_on
from fundarb.wiring import round_trip_cost

BAR_NS = 8 * NS_PER_HOUR
MIN_STRETCH_BARS = 2  # a pair is held for at least this many bars of data, or not at all
REFERENCE_INTERVAL_H = 8.0  # a venue's signal covers as many settlements as this many 8-hour ones


class RotationError(FundarbError, ValueError):
    """A rotation that cannot run: a venue without a liquidation rule, a window without data."""


Settlements = tuple[np.ndarray, np.ndarray, np.ndarray]  # ts (ns), rate, interval (h)


class HistorySource(Protocol):
    """Where a rotation reads its markets: each pair's history and each venue's settlements."""

    def pair_history(self, long: VenueConfig, short: VenueConfig, start: int, end: int) -> MarketHistory: ...

    def settlements(self, venue: VenueConfig, lo: int, hi: int) -> Settlements: ...


@attrs.frozen
class FileSource:
    """The stored history: the shipped files, another history folder or a fetch store."""

    data_dir: Path | None = None
    tolerance_s: float = 1.0

    def pair_history(self, long: VenueConfig, short: VenueConfig, start: int, end: int) -> MarketHistory:
        return load_pair_history((long.exchange, long.symbol), (short.exchange, short.symbol), fmt_time(start),
                                 fmt_time(end), self.data_dir, self.tolerance_s)

    def settlements(self, venue: VenueConfig, lo: int, hi: int) -> Settlements:
        f = load_settlements((venue.exchange, venue.symbol), self.tolerance_s, lo, hi, self.data_dir)
        return f["ts"].to_numpy(), f["rate"].to_numpy(), f["interval"].to_numpy()


@attrs.frozen
class VenueTape:
    """Several venues' linear perps on one bar grid (close instants ``bars``):
    each venue's closes and its settlements, by exchange id. A Monte Carlo
    path of a rotation is one (``research.bootstrap.bootstrap_venue_bars``);
    ``real_tape`` builds one from the stored history."""

    bars: np.ndarray
    bar_hours: int
    closes: Mapping[str, np.ndarray]
    funding: Mapping[str, Settlements]
    sources: tuple[str, ...]

    def pair_history(self, long: VenueConfig, short: VenueConfig, start: int, end: int) -> MarketHistory:
        keep = (self.bars >= start) & (self.bars < end)
        ts = self.bars[keep]
        if ts.size < 2:
            raise RotationError(f"no bars of both {long.exchange} and {short.exchange} between {fmt_time(start)} and "
                                f"{fmt_time(end)}")
        first, last = int(ts[0]), int(ts[-1])
        s_ts, s_rate, s_int = self.settlements(short, first + 1, last)
        l_ts, l_rate, l_int = self.settlements(long, first + 1, last)
        return MarketHistory(
            hours=ts, spot=self.closes[long.exchange][keep], perp=self.closes[short.exchange][keep],
            carried=np.zeros(ts.size, dtype=bool), funding_ts=s_ts, funding_rate=s_rate, funding_interval=s_int,
            funding_mark=np.full(s_ts.size, np.nan), sources=self.sources,
            funding_gaps=tuple(schedule_gaps(s_ts.tolist(), s_int.tolist())),
            long_funding_ts=l_ts, long_funding_rate=l_rate, long_funding_interval=l_int, bar_hours=self.bar_hours)

    def settlements(self, venue: VenueConfig, lo: int, hi: int) -> Settlements:
        ts, rate, interval = self.funding[venue.exchange]
        keep = (ts >= lo) & (ts <= hi)
        return ts[keep], rate[keep], interval[keep]


def real_tape(cfg: Config, data_dir: Path | None = None) -> VenueTape:
    """Every rotation venue's stored closes at the bar instants all of them
    printed, and its settlements, over the config's window."""
    source = FileSource(data_dir, cfg.data.settlement_tolerance_seconds)
    lo, hi = parse_time(cfg.data.start, "start"), parse_time(cfg.data.end, "end")
    ref, *others = cfg.rotation_venues()
    pairs = [source.pair_history(ref, other, lo, hi) for other in others]
    bars = pairs[0].hours
    for h in pairs[1:]:
        bars = np.intersect1d(bars, h.hours)
    if bars.size < 4:
        raise RotationError(f"fewer than 4 bars that every rotation venue printed in {cfg.data.start} .. {cfg.data.end}")
    closes = {ref.exchange: pairs[0].spot[np.isin(pairs[0].hours, bars)]}
    for other, h in zip(others, pairs):
        closes[other.exchange] = h.perp[np.isin(h.hours, bars)]
    funding = {v.exchange: source.settlements(v, int(bars[0]) + 1, int(bars[-1])) for v in cfg.rotation_venues()}
    sources = tuple(sorted({x for h in pairs for x in h.sources}))
    return VenueTape(bars, pairs[0].bar_hours, closes, funding, sources)


@attrs.frozen
class Stretch:
    """One pair's run: from ``start`` to ``end`` (the instant its legs were flat again)."""

    pair: Pair
    start: int
    end: int
    capital: float
    result: Any  # the stretch's BacktestResult
    withdrawals: int  # made after it, to reach the next pair
    move: Move | None  # the move that ended it
    told_to_leave: int = 0  # the instant the strategy was told to leave (0: it ran to the window's end)
    flat: bool = True  # both legs closed when it ended


@attrs.frozen
class RotationResult:
    config: Config
    config_hash: str
    metrics: dict[str, Any]
    stretches: tuple[Stretch, ...]
    moves: tuple[tuple[int, Move], ...]
    curve: dict[str, list[Any]]
    always_on: BacktestResult  # the first pair held from the first hour to the last


def rotation_rule(cfg: Config) -> RotationRule:
    assert cfg.rotation is not None
    return RotationRule(cfg.strategy.expected_holding_days, cfg.rotation.hysteresis_apr, cfg.rotation.min_hold_days)


def _venue_key(v: VenueConfig) -> str:
    return v.exchange


def pair_config(cfg: Config, pair: Pair, start: int, end: int, capital: float) -> Config:
    """``cfg`` on ``pair`` (long perp as [spot], short as [perp]) over [start, end) with ``capital``."""
    venues = {_venue_key(v): v for v in cfg.rotation_venues()}
    data = attrs.evolve(cfg.data, start=fmt_time(start), end=fmt_time(end))
    return attrs.evolve(cfg, spot=venues[pair.long], perp=venues[pair.short], data=data, capital=capital,
                        rotation=None)


def switch_cost(cfg: Config, current: Pair, to: Pair, price: float) -> SwitchCost:
    """Both pairs' round trips, a withdrawal for each venue the capital leaves, and their delay."""
    left = len(current.venues() - to.venues())
    lo, hi = parse_time(cfg.data.start, "start"), parse_time(cfg.data.end, "end")
    trips = sum(round_trip_cost(pair_config(cfg, p, lo, hi, cfg.capital), price) for p in (current, to))
    return SwitchCost(trips, left * cfg.transfer.fee / cfg.strategy.notional,
                      cfg.transfer.delay_minutes / 60 if left else 0.0)


def check_venues(cfg: Config) -> None:
    for v in cfg.rotation_venues():
        rule = shipped_rule(v.exchange, v.symbol)
        if rule.style == UNMODELLED:
            raise RotationError(f"rotation venue {v.exchange} {v.symbol}: its liquidation rule is not modelled "
                                f"(docs/margin.md lists those that are), so fundarb cannot check a leg's margin there; "
                                f"leave it out of [spot], [perp] and rotation.venues")


@attrs.define
class RotationSignals:
    """Each rotation venue's signal as its settlements arrive, and the rule's
    decision on the pairs' differentials: one place for a backtest's plan and
    a runner's watch. A settlement at or before the venue's last is ignored
    (a runner asks the venues again and again)."""

    cfg: Config
    price: float  # sizes the round trips of the switching cost
    signals: dict[str, FundingSignal] = attrs.field(init=False)
    last: dict[str, int] = attrs.field(init=False)
    pairs: list[Pair] = attrs.field(init=False)
    _costs: dict[tuple[Pair, Pair], SwitchCost] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        venues = [_venue_key(v) for v in self.cfg.rotation_venues()]
        self.signals = {v: FundingSignal(self.cfg.strategy.signal_settlements) for v in venues}
        self.last = dict.fromkeys(venues, 0)
        self.pairs = [Pair(a, b) for a in venues for b in venues if a != b]

    def settle(self, venue: str, ts: int, rate: float, interval_hours: float) -> None:
        if ts <= self.last[venue]:
            return
        self.last[venue] = ts
        sig = self.signals[venue]
        sig.window = settlements_covering(self.cfg.strategy.signal_settlements, REFERENCE_INTERVAL_H, interval_hours)
        sig.on_settlement(ts, rate, interval_hours)

    def known(self) -> dict[Pair, float]:
        """Each pair's signal APR (short less long), for the pairs whose venues both have one."""
        s = self.signals
        return {p: s[p.short].current_apr() - s[p.long].current_apr() for p in self.pairs
                if s[p.short].ready and s[p.long].ready}

    def decide(self, current: Pair | None, since: int, now: int) -> Move | None:
        costs = {}
        if current is not None:
            for p in self.pairs:
                if p != current:
                    if (current, p) not in self._costs:
                        self._costs[(current, p)] = switch_cost(self.cfg, current, p, self.price)
                    costs[p] = self._costs[(current, p)]
        return rotation_rule(self.cfg).choose(current, since, now, self.known(), costs)


def plan(cfg: Config, price: float, source: HistorySource) -> list[tuple[int, Move]]:
    """The rule's moves over the window, each at the 8-hour instant it was decided."""
    lo, hi = parse_time(cfg.data.start, "start"), parse_time(cfg.data.end, "end")
    series = {_venue_key(v): source.settlements(v, lo - 400 * BAR_NS, hi) for v in cfg.rotation_venues()}
    watch = RotationSignals(cfg, price)
    taken = dict.fromkeys(series, 0)
    current: Pair | None = None
    since = lo
    moves: list[tuple[int, Move]] = []
    for t in range(lo, hi, BAR_NS):
        for k, (ts, rate, interval) in series.items():
            i = taken[k]
            while i < ts.size and ts[i] <= t:
                watch.settle(k, int(ts[i]), float(rate[i]), float(interval[i]))
                i += 1
            taken[k] = i
        move = watch.decide(current, since, t)
        if move is not None:
            moves.append((t, move))
            current, since = move.to, t
    return moves


def run_rotation(cfg: Config, data_dir: Path | None = None, progress: Callable[[str], None] | None = None,
                 source: HistorySource | None = None, sim_seed: np.random.SeedSequence | None = None) -> RotationResult:
    """Plan the moves, then run each stretch on its pair (see the module
    docstring), on the stored history or on ``source`` (a Monte Carlo path;
    ``sim_seed`` its simulator's draws, one stream per stretch)."""
    if cfg.rotation is None:
        raise RotationError(f"config {cfg.name} has no [rotation] section")
    check_venues(cfg)
    source = source or FileSource(data_dir, cfg.data.settlement_tolerance_seconds)
    lo, hi = parse_time(cfg.data.start, "start"), parse_time(cfg.data.end, "end")
    first = source.pair_history(cfg.spot, cfg.perp, lo, hi)
    moves = plan(cfg, float(first.spot[0]), source)
    if not moves:
        raise RotationError(f"no pair's signal is known in {cfg.data.start} .. {cfg.data.end}: no settlements to rank")
    stretches: list[Stretch] = []
    capital = cfg.capital
    start = moves[0][0]
    withdrawal_fees = 0.0
    for i, (_, move) in enumerate(moves):
        leave_at = moves[i + 1][0] if i + 1 < len(moves) else hi
        if min(leave_at + 3 * BAR_NS, hi) - start < MIN_STRETCH_BARS * BAR_NS:
            continue  # the capital arrives too late to trade before the next move or the window's end: it waits
        if progress is not None:
            progress(f"{move.to} from {fmt_time(start)}")
        nxt = moves[i + 1][1] if i + 1 < len(moves) else None
        seed = sim_seed.spawn(1)[0] if sim_seed is not None else None
        stretch = _run_stretch(cfg, move.to, start, leave_at, hi, capital, source, nxt, seed)
        stretches.append(stretch)
        capital = stretch.result.metrics["final_equity"]
        if nxt is not None:
            fee = stretch.withdrawals * cfg.transfer.fee
            withdrawal_fees += fee
            capital -= fee
            arrive = stretch.end + (int(cfg.transfer.delay_minutes * 60e9) if stretch.withdrawals else 0)
            start = lo + math.ceil((arrive - lo) / BAR_NS) * BAR_NS
    # the benchmark: the first pair held from the first hour to the last, no move
    bench = run_always_on(cfg, first, sim_seed.spawn(1)[0] if sim_seed is not None else None)
    return _result(cfg, stretches, moves, withdrawal_fees, capital, lo, hi, bench)


def _run_stretch(cfg: Config, pair: Pair, start: int, leave_at: int, hi: int, capital: float,
                 source: HistorySource, nxt: Move | None, sim_seed: np.random.SeedSequence | None) -> Stretch:
    end = min(hi, leave_at + 3 * BAR_NS) if nxt is not None else hi
    scfg = pair_config(cfg, pair, start, end, capital)
    history = source.pair_history(scfg.spot, scfg.perp, start, end)
    engine, sim = build_simulation(scfg, history, sim_seed)
    stopped = end
    for event in sim.events():
        if nxt is not None and event.ts >= leave_at and not engine.strategy.leaving:
            engine.strategy.leave()
        engine.on_event(event)
        if engine.strategy.leaving and engine.book.is_flat and not engine.open_orders:
            stopped = event.ts
            break
    if nxt is not None and not engine.book.is_flat:  # never carry an open pair's value into the next as cash
        raise RotationError(f"{pair}: the legs were not closed by {fmt_time(end)}, three bars after the move at "
                            f"{fmt_time(leave_at)}; the rotation stops rather than move an open position's value")
    result = result_of(scfg, history, engine, sim)
    left = len(pair.venues() - nxt.to.venues()) if nxt is not None else 0
    return Stretch(pair, start, stopped, capital, result, left, nxt, leave_at if nxt is not None else 0,
                   engine.book.is_flat)


def _result(cfg: Config, stretches: list[Stretch], moves: list[tuple[int, Move]], withdrawal_fees: float,
            final: float, lo: int, hi: int, always_on: BacktestResult) -> RotationResult:
    curve: dict[str, list[Any]] = {"ts": [], "equity": [], "pair": []}
    funding: dict[str, float] = {}
    fees: dict[str, float] = {}
    for s in stretches:
        m = s.result.metrics
        c = s.result.curve
        for ts, eq in zip(c["ts"], c["equity"]):
            if ts <= s.end:
                curve["ts"].append(ts)
                curve["equity"].append(eq)
                curve["pair"].append(str(s.pair))
        for account, amount in m["funding_by_account"].items():
            venue = account.split(":")[0]
            funding[venue] = funding.get(venue, 0.0) + amount
        for account, amount in m["fees_by_account"].items():
            venue = account.split(":")[0]
            fees[venue] = fees.get(venue, 0.0) + amount
    days = (hi - lo) / (24 * NS_PER_HOUR)
    pnl = final - cfg.capital
    sums = {k: sum(s.result.metrics[k] for s in stretches) for k in (
        "funding_net", "fees", "slippage", "price_pnl", "entries", "liquidations", "transfers", "missed_settlements",
        "requested_qty", "filled_qty", "orders", "alerts", "hours_in_position", "settlements_in_window")}
    buffers = [b for s in stretches if (b := s.result.metrics.get("min_margin_buffer")) is not None]
    drifts = [s.result.metrics["delta_drift_max"] for s in stretches]
    bars = len(curve["ts"])
    out = {
        "structure": "perp_perp",
        "rotation": True,
        "capital": cfg.capital,
        "days": round(days, 6),
        "final_equity": final,
        "net_pnl": pnl,
        "net_apr": metrics.apr(pnl, cfg.capital, days),
        "sharpe": metrics.sharpe(curve["ts"], curve["equity"], cfg.collateral_rate),
        "max_drawdown": metrics.max_drawdown(curve["equity"]),
        "moves": len(moves) - 1,
        "pairs_held": len(stretches),
        "funding_by_venue": funding,
        "fees_by_venue": fees,
        "funding_net": sums["funding_net"],
        "fees": sums["fees"],
        "slippage": sums["slippage"],
        "basis_pnl": sums["price_pnl"],
        "withdrawals": sum(s.withdrawals for s in stretches),
        "withdrawal_fees": withdrawal_fees,
        "transfers_within_pairs": sums["transfers"],
        "entries": sums["entries"],
        "orders": sums["orders"],
        "liquidations": sums["liquidations"],
        "missed_settlements": sums["missed_settlements"],
        "settlements_in_window": sums["settlements_in_window"],
        "net_funding_after_fees": carry_of(sums["funding_net"], sums["fees"], sums["slippage"]),
        "fill_rate": metrics.fill_rate(sums["filled_qty"], sums["requested_qty"]),
        "delta_drift_max": max(drifts, default=0.0),
        "min_margin_buffer": min(buffers) if buffers else None,
        "time_in_position": sums["hours_in_position"] / max(bars, 1),
        "alerts": sums["alerts"],
    }
    out.update(beside_always_on(out, always_on.metrics))
    return RotationResult(cfg, config_hash(cfg), out, tuple(stretches), tuple(moves), curve, always_on)
