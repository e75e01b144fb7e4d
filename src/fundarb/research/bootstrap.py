"""Stationary block bootstrap of the real history, one funding period a unit.

The real window is cut at its funding settlements: period k is the hours after
settlement k-1 up to and including settlement k. A path is a sequence of whole
periods drawn in blocks (Politis & Romano's stationary bootstrap: each next
period continues the current block with probability 1 - 1/L, else a new block
starts at a uniformly drawn period; the source wraps around). Within a period
the hourly spot log returns, the perp-spot basis and the settlement's rate
travel together, so their cross-correlation and, within blocks, their
autocorrelation survive. Spot prices are rebuilt from the returns; the perp is
spot times (1 + basis). Settlements fall at period ends, so the venue's
schedule (8h on the shipped Binance data) is kept. Paths are drawn many at
once (``bootstrap_paths``, a row each, the loops over their hours compiled by
numba); one path (``bootstrap_history``) is a batch of one.

A perp/perp carry's history is cut at its bars instead (``PairPeriods``):
each bar's long return, basis and both venues' settlements are drawn
together, each settlement at its place before the bar's close.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from fundarb.core.model import NS_PER_HOUR
from fundarb.data.history import DataError, MarketHistory
from fundarb.sim.rotation import VenueTape


@attrs.frozen
class SourcePeriods:
    """The real window cut into funding periods."""

    start: int  # ns of the first settlement: a path starts here
    spot0: float
    basis0: float
    log_ret: np.ndarray  # per hour after start: log(spot_t / spot_t-1)
    basis: np.ndarray  # per hour after start: perp / spot - 1
    carried: np.ndarray  # per hour after start: price carried over a gap
    period_start: np.ndarray  # index into the hourly arrays of each period's first hour
    period_hours: np.ndarray  # hours in each period
    rate: np.ndarray  # the settlement ending each period
    interval: np.ndarray
    window: tuple[str, ...]

    @property
    def periods(self) -> int:
        return int(self.rate.size)


@attrs.frozen
class PairPeriods:
    """A perp/perp carry's real window cut into its bars (one period a bar):
    the long perp's log return and the short's basis to it at each bar's
    close, and each venue's settlement in the bar, its rate, interval and
    how long before the bar's close it fell. They are drawn together, so the
    two venues' correlation survives."""

    start: int  # ns of the first bar's close: a path starts here
    bar_hours: int
    long0: float
    basis0: float
    log_ret: np.ndarray  # per bar after start
    basis: np.ndarray  # short / long - 1 at each bar's close
    rate: np.ndarray  # the short's settlement in each bar
    interval: np.ndarray
    offset: np.ndarray  # ns from the short's settlement to the bar's close
    long_rate: np.ndarray
    long_interval: np.ndarray
    long_offset: np.ndarray
    window: tuple[str, ...]

    @property
    def periods(self) -> int:
        return int(self.rate.size)

    @property
    def period_hours(self) -> np.ndarray:
        return np.full(self.periods, self.bar_hours, dtype=np.int64)


def _one_per_bar(bars: np.ndarray, ts: np.ndarray, rate: np.ndarray, interval: np.ndarray,
                 what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rate, interval, ns before the close) of the one settlement in each bar
    after the first; a bar with none or several is an error naming it."""
    from fundarb.data.history import fmt_time

    j = np.searchsorted(bars, ts)  # the bar whose close is at or after the settlement
    keep = (j >= 1) & (j < bars.size)
    j, ts, rate, interval = j[keep], ts[keep], rate[keep], interval[keep]
    counts = np.bincount(j, minlength=bars.size)[1:]
    if (counts != 1).any():
        k = int(np.argmax(counts != 1)) + 1
        raise DataError(f"a perp/perp bootstrap draws one settlement of each venue per bar; {what} has "
                        f"{int(counts[k - 1])} in the bar closing {fmt_time(int(bars[k]))}")
    return rate.astype(np.float64), interval.astype(np.float64), (bars[j] - ts).astype(np.int64)


def cut_pair_periods(h: MarketHistory) -> PairPeriods:
    """Cut a perp/perp history at its bars."""
    assert h.long_funding_ts is not None and h.long_funding_rate is not None and h.long_funding_interval is not None
    if h.hours.size < 4:
        raise DataError(f"bootstrap needs at least 3 bars after the first, found {h.hours.size - 1}")
    rate, interval, offset = _one_per_bar(h.hours, h.funding_ts, h.funding_rate, h.funding_interval, "the short perp")
    long_rate, long_interval, long_offset = _one_per_bar(h.hours, h.long_funding_ts, h.long_funding_rate,
                                                         h.long_funding_interval, "the long perp")
    basis = h.perp / h.spot - 1.0
    return PairPeriods(int(h.hours[0]), h.bar_hours, float(h.spot[0]), float(basis[0]), np.diff(np.log(h.spot)),
                       basis[1:], rate, interval, offset, long_rate, long_interval, long_offset, tuple(h.sources))


def bootstrap_pair_history(src: PairPeriods, hours: int, mean_block: float, rng: np.random.Generator) -> MarketHistory:
    """One perp/perp path of ``hours`` hours (whole bars) after ``src.start``:
    bars drawn in blocks, each with both venues' settlements at their place in it."""
    n = hours // src.bar_hours
    if n < 1:
        raise ValueError(f"a path needs at least one bar of {src.bar_hours} h, got {hours} h")
    chosen = block_indices(src.periods, n, mean_block, rng)
    long = src.long0 * np.exp(np.concatenate(([0.0], np.cumsum(src.log_ret[chosen]))))
    basis = np.concatenate(([src.basis0], src.basis[chosen]))
    grid = src.start + np.arange(n + 1, dtype=np.int64) * src.bar_hours * NS_PER_HOUR
    return MarketHistory(
        hours=grid, spot=long, perp=long * (1.0 + basis), carried=np.zeros(n + 1, dtype=bool),
        funding_ts=grid[1:] - src.offset[chosen], funding_rate=src.rate[chosen], funding_interval=src.interval[chosen],
        funding_mark=np.full(n, np.nan), sources=("stationary block bootstrap of: " + "; ".join(src.window),),
        long_funding_ts=grid[1:] - src.long_offset[chosen], long_funding_rate=src.long_rate[chosen],
        long_funding_interval=src.long_interval[chosen], bar_hours=src.bar_hours)


@attrs.frozen
class VenueBars:
    """A rotation's real window cut into bars: the first venue's log return,
    each venue's basis to it at the bar's close, and each venue's settlement
    in the bar (rate, interval, ns before the close). A bar is drawn whole,
    every venue with it, so the venues' correlation survives."""

    start: int
    bar_hours: int
    venues: tuple[str, ...]
    ref0: float
    basis0: np.ndarray  # per venue, at the first close
    log_ret: np.ndarray  # per bar after start
    basis: np.ndarray  # (venues, bars)
    rates: np.ndarray  # (venues, bars)
    intervals: np.ndarray
    offsets: np.ndarray
    window: tuple[str, ...]

    @property
    def periods(self) -> int:
        return int(self.log_ret.size)

    @property
    def period_hours(self) -> np.ndarray:
        return np.full(self.periods, self.bar_hours, dtype=np.int64)

    @property
    def rate(self) -> np.ndarray:
        """The first venue's settlements (the study's summary of its source)."""
        return self.rates[0]


def cut_venue_bars(tape: VenueTape) -> VenueBars:
    """Cut a rotation's venues at their common bars."""
    bars = tape.bars
    if bars.size < 4:
        raise DataError(f"bootstrap needs at least 3 bars after the first, found {bars.size - 1}")
    venues = tuple(tape.closes)
    ref = tape.closes[venues[0]]
    per = [_one_per_bar(bars, *tape.funding[v], f"venue {v}") for v in venues]
    basis = np.vstack([tape.closes[v] / ref - 1.0 for v in venues])
    return VenueBars(int(bars[0]), tape.bar_hours, venues, float(ref[0]), basis[:, 0].copy(), np.diff(np.log(ref)),
                     basis[:, 1:], np.vstack([x[0] for x in per]), np.vstack([x[1] for x in per]),
                     np.vstack([x[2] for x in per]), tuple(tape.sources))


def bootstrap_venue_bars(src: VenueBars, hours: int, mean_block: float, rng: np.random.Generator) -> VenueTape:
    """One rotation path of ``hours`` hours (whole bars) after ``src.start``:
    bars drawn in blocks, every venue's price and settlement from the same bar."""
    n = hours // src.bar_hours
    if n < 1:
        raise ValueError(f"a path needs at least one bar of {src.bar_hours} h, got {hours} h")
    chosen = block_indices(src.periods, n, mean_block, rng)
    ref = src.ref0 * np.exp(np.concatenate(([0.0], np.cumsum(src.log_ret[chosen]))))
    grid = src.start + np.arange(n + 1, dtype=np.int64) * src.bar_hours * NS_PER_HOUR
    closes = {v: ref * (1.0 + np.concatenate(([src.basis0[i]], src.basis[i, chosen]))) for i, v in enumerate(src.venues)}
    funding = {v: (grid[1:] - src.offsets[i, chosen], src.rates[i, chosen], src.intervals[i, chosen])
               for i, v in enumerate(src.venues)}
    return VenueTape(grid, src.bar_hours, closes, funding, ("stationary block bootstrap of: " + "; ".join(src.window),))


# what the studies resample: a carry's funding periods, a perp/perp carry's bars, or a rotation's venues' bars
Periods = SourcePeriods | PairPeriods | VenueBars


def cut_periods(h: MarketHistory) -> Periods:
    """Cut a loaded history at its settlements; they must sit on the hour
    grid. A perp/perp history is cut at its bars (``cut_pair_periods``)."""
    if h.long_funding_ts is not None:
        return cut_pair_periods(h)
    pos = np.searchsorted(h.hours, h.funding_ts)
    on_grid = (pos < h.hours.size) & (h.hours[np.minimum(pos, h.hours.size - 1)] == h.funding_ts)
    if not on_grid.all():
        bad = int(h.funding_ts[int(np.argmin(on_grid))])
        from fundarb.data.history import fmt_time

        raise DataError(f"bootstrap needs settlements on the hourly price grid; {fmt_time(bad)} is not")
    if pos.size < 3:
        raise DataError(f"bootstrap needs at least 3 funding settlements in the window, found {pos.size}")
    first = int(pos[0])
    spot, perp = h.spot[first:], h.perp[first:]
    basis = perp / spot - 1.0
    ends = pos[1:] - first  # hour index (from first) of each period's settlement
    starts = np.concatenate(([1], ends[:-1] + 1))
    return SourcePeriods(
        start=int(h.hours[first]),
        spot0=float(spot[0]),
        basis0=float(basis[0]),
        log_ret=np.concatenate(([0.0], np.diff(np.log(spot)))),
        basis=basis,
        carried=h.carried[first:].copy(),
        period_start=starts.astype(np.int64),
        period_hours=(ends - starts + 1).astype(np.int64),
        rate=h.funding_rate[1:].astype(np.float64),
        interval=h.funding_interval[1:].astype(np.float64),
        window=tuple(h.sources),
    )


def period_series(src: Periods) -> dict[str, np.ndarray]:
    """One value per period of each resampled series: the settlement rate, the
    basis at the settlement, and the spot log return over the period (a
    perp/perp carry's: the funding differential, the basis and the long's
    return at each bar)."""
    if isinstance(src, PairPeriods):
        return {"funding_differential": src.rate - src.long_rate, "basis": src.basis, "long_return": src.log_ret}
    if isinstance(src, VenueBars):
        out = {f"funding_{v}": src.rates[i] for i, v in enumerate(src.venues)}
        return {**out, "return": src.log_ret}
    ends = src.period_start + src.period_hours - 1
    csum = np.cumsum(src.log_ret)
    ret = csum[ends] - np.concatenate(([0.0], csum[ends[:-1]]))
    return {"funding_rate": src.rate, "basis": src.basis[ends], "spot_return": ret}


def optimal_block_length(x: np.ndarray) -> float:
    """Politis & White (2004) automatic mean block length for the stationary
    bootstrap, with the Patton, Politis & White (2009) correction: flat-top lag
    window over the autocovariances up to twice the last significant lag."""
    x = np.asarray(x, dtype=np.float64)
    n = x.size
    if n < 8:
        raise ValueError(f"need at least 8 observations for a block length, got {n}")
    d = x - x.mean()
    kn = max(5, math.ceil(math.sqrt(math.log10(n))))
    mmax = math.ceil(math.sqrt(n)) + kn
    bmax = math.ceil(min(3 * math.sqrt(n), n / 3))
    acov = np.array([d[: n - k] @ d[k:] / n for k in range(mmax + 1)])
    if acov[0] <= 0:
        return 1.0
    rho = acov[1:] / acov[0]
    small = np.abs(rho) < 2.0 * math.sqrt(math.log10(n) / n)
    m_hat = None
    for lag in range(1, mmax - kn + 2):  # first run of kn negligible lags starting at `lag`
        if small[lag - 1 : lag - 1 + kn].all():
            m_hat = lag - 1
            break
    if m_hat is None:
        significant = np.flatnonzero(~small)
        m_hat = int(significant[-1]) + 1 if significant.size else 0
    m = min(2 * max(m_hat, 1), mmax)
    lags = np.arange(-m, m + 1)
    t = np.abs(lags) / m
    window = np.where(t <= 0.5, 1.0, np.where(t <= 1.0, 2.0 * (1.0 - t), 0.0))
    r = acov[np.abs(lags)]
    g = float(np.sum(window * np.abs(lags) * r))
    d_sb = 2.0 * float(np.sum(window * r)) ** 2
    if d_sb <= 0 or g == 0:
        return 1.0
    b = (2.0 * g * g / d_sb) ** (1.0 / 3.0) * n ** (1.0 / 3.0)
    return float(min(max(b, 1.0), bmax))


def auto_block_periods(src: Periods) -> float:
    """The longest of the three series' optimal mean block lengths (periods):
    blocks long enough for the most persistent series (usually funding)."""
    return max(optimal_block_length(v) for v in period_series(src).values())


def block_draws(n_source: int, n_out: int, mean_block: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The stationary bootstrap's draws for one path, in the order ``rng``
    gives them: each slot's uniform block start, then whether a new block
    starts at the slot (probability 1 / ``mean_block``)."""
    starts = rng.integers(0, n_source, size=n_out)
    new_block = rng.random(n_out) < 1.0 / mean_block
    return starts, new_block


def chained_blocks(n_source: int, starts: np.ndarray, new_block: np.ndarray) -> np.ndarray:
    """Stationary bootstrap indices of ``block_draws`` (of one path, or of a
    path per row: the last axis is the path's slots): a block runs on from
    its start, wrapping around the source, until the next slot that starts one."""
    out = np.empty(starts.shape, dtype=np.int64)
    _compiled(_chain_blocks)(n_source, np.atleast_2d(starts), np.atleast_2d(new_block), np.atleast_2d(out))
    return out


def _chain_blocks(n_source: int, starts: Any, new_block: Any, out: Any) -> None:
    """``chained_blocks`` of each row: the first slot and every slot drawn to
    start a block takes its own start; any other continues the block."""
    for j in range(starts.shape[0]):
        begin = 0
        for i in range(starts.shape[1]):
            if i == 0 or new_block[j, i]:
                begin = i
            out[j, i] = (starts[j, begin] + i - begin) % n_source


def block_indices(n_source: int, n_out: int, mean_block: float, rng: np.random.Generator) -> np.ndarray:
    """Stationary bootstrap indices: geometric block lengths of mean
    ``mean_block``, uniform block starts, wrapping around the source."""
    return chained_blocks(n_source, *block_draws(n_source, n_out, mean_block, rng))


@attrs.frozen
class HourlyPaths:
    """Paths drawn from one ``SourcePeriods`` together (``bootstrap_paths``),
    a row each: the simulator runs one as the MarketHistory ``history`` gives,
    the path kernel reads the arrays."""

    src: SourcePeriods
    grid: np.ndarray  # (hours + 1,) the hours of every path, ns
    rows: np.ndarray  # (paths, hours) the source hour behind each hour after the first
    chosen: np.ndarray  # (paths, periods) the source periods drawn, in order
    settle_at: np.ndarray  # (paths, periods) index into ``grid`` of each drawn period's settlement
    settled: np.ndarray  # (paths,) how many of them fall within the path
    spot: np.ndarray  # (paths, hours + 1)
    perp: np.ndarray  # (paths, hours + 1)

    @property
    def days(self) -> float:
        """Each path's length in days (``MarketHistory.days``)."""
        return (int(self.grid[-1]) - int(self.grid[0])) / (24 * NS_PER_HOUR)

    def history(self, j: int) -> MarketHistory:
        """Path ``j`` as a MarketHistory of its own (no array shared with the
        batch) the simulator runs on like the real one."""
        src, k = self.src, int(self.settled[j])
        chosen = self.chosen[j, :k]
        return MarketHistory(
            hours=self.grid.copy(),
            spot=self.spot[j].copy(),
            perp=self.perp[j].copy(),
            carried=np.concatenate(([False], src.carried[self.rows[j]])),
            funding_ts=self.grid[self.settle_at[j, :k]],
            funding_rate=src.rate[chosen],
            funding_interval=src.interval[chosen],
            funding_mark=np.full(k, np.nan),
            sources=("stationary block bootstrap of: " + "; ".join(src.window),),
        )


def bootstrap_paths(src: SourcePeriods, hours: int, mean_block: float, rngs: Sequence[np.random.Generator],
                    reuse: HourlyPaths | None = None) -> HourlyPaths:
    """A path of ``hours`` hours after ``src.start`` from each of ``rngs``,
    all at once: path j is what ``bootstrap_history`` gives with ``rngs[j]``.
    ``reuse``: paths of the same shape done with, whose arrays these paths
    are written into (no fresh memory for each batch of paths)."""
    if hours < 1:
        raise ValueError(f"a path needs at least one hour, got {hours}")
    n_periods = -(-hours // int(src.period_hours.min())) + 1
    draws = [block_draws(src.periods, n_periods, mean_block, rng) for rng in rngs]
    chosen = chained_blocks(src.periods, np.array([d[0] for d in draws]), np.array([d[1] for d in draws]))
    paths = chosen.shape[0]
    if reuse is not None and reuse.rows.shape == (paths, hours) and reuse.settle_at.shape == chosen.shape:
        rows, settle_at, spot, perp = reuse.rows, reuse.settle_at, reuse.spot, reuse.perp
    else:
        rows = np.empty((paths, hours), dtype=np.int64)
        settle_at = np.empty((paths, n_periods), dtype=np.int64)
        spot = np.empty((paths, hours + 1), dtype=np.float64)
        perp = np.empty((paths, hours + 1), dtype=np.float64)
    # spot: the log price, then the first price times exp of it; perp: 1 + basis, then spot times that
    _compiled(_hours_of_paths)(chosen, src.period_start, src.period_hours, src.log_ret, src.basis, src.basis0, rows,
                               settle_at, spot, perp)
    np.exp(spot, out=spot)
    spot *= src.spot0
    perp *= spot
    grid = src.start + np.arange(hours + 1, dtype=np.int64) * NS_PER_HOUR
    settled = np.count_nonzero(settle_at <= hours, axis=1)
    return HourlyPaths(src, grid, rows, chosen, settle_at, settled, spot, perp)


def _hours_of_paths(chosen: Any, period_start: Any, period_hours: Any, log_ret: Any, basis: Any, basis0: float,
                    rows: Any, settle_at: Any, log_price: Any, one_plus_basis: Any) -> None:
    """Per path (a row of ``chosen``, its periods in order): the source hour
    of each of its hours after the first (``rows``: each period's hours in
    turn, cut at the path's end), the hour index of each period's settlement
    (``settle_at``: the running total of their hours), the log price from
    the start (``log_price``: 0, then the log returns summed in order, as
    np.cumsum adds them) and 1 + the basis (``basis0`` first, then each
    hour's)."""
    hours = rows.shape[1]
    for j in range(chosen.shape[0]):
        r = 0
        end = 0
        for p in range(chosen.shape[1]):
            c = chosen[j, p]
            first, size = period_start[c], period_hours[c]
            for o in range(min(size, hours - r)):
                rows[j, r + o] = first + o
            r = min(r + size, hours)
            end += size
            settle_at[j, p] = end
        log_price[j, 0] = 0.0
        one_plus_basis[j, 0] = 1.0 + basis0
        total = 0.0
        for r in range(hours):
            h = rows[j, r]
            total = log_ret[h] if r == 0 else total + log_ret[h]
            log_price[j, r + 1] = total
            one_plus_basis[j, r + 1] = 1.0 + basis[h]


@functools.cache
def _compiled(func: Any) -> Any:
    """``func`` compiled by numba (imported on first use), kept between runs
    as the path kernel keeps its own: in a folder named by a digest of
    numba's version and this file (a change to either compiles afresh),
    under $FUNDARB_CACHE (default ~/.cache/fundarb)."""
    import numba

    digest = hashlib.sha256(numba.__version__.encode())
    with open(__file__, "rb") as f:
        digest.update(f.read())
    base = os.environ.get("FUNDARB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "fundarb")
    config: Any = numba.config
    previous = config.CACHE_DIR
    config.CACHE_DIR = os.path.join(base, "bootstrap", digest.hexdigest()[:16])
    try:
        return numba.njit(cache=True, nogil=True)(func)
    finally:
        config.CACHE_DIR = previous  # others' caches are theirs


def bootstrap_history(src: SourcePeriods | PairPeriods, hours: int, mean_block: float,
                      rng: np.random.Generator) -> MarketHistory:
    """One path of ``hours`` hours after ``src.start``, as a MarketHistory the
    simulator runs on like the real one."""
    if isinstance(src, PairPeriods):
        return bootstrap_pair_history(src, hours, mean_block, rng)
    return bootstrap_paths(src, hours, mean_block, [rng]).history(0)
