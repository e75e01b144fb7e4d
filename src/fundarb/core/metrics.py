"""Performance metrics over the hourly equity curve (docs/design.md, "Metrics and success gates").

Sharpe = mean daily excess return over the collateral rate / std * sqrt(365);
MaxDD = largest fall from a running peak; APR = net PnL / capital * 365 / days;
fill rate = filled / requested quantity.

A window shorter than ``MIN_ANNUALISE_DAYS`` is not annualised: scaling
minutes or a few days of PnL to a year gives figures like -8,988% APR that
say nothing about the strategy, and a Sharpe ratio needs daily returns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fundarb.core.model import NS_PER_HOUR

NS_PER_DAY = 24 * NS_PER_HOUR
# the least data (in days) an APR, CAGR or Sharpe ratio is given for
MIN_ANNUALISE_DAYS = 7.0


def can_annualise(days: float) -> bool:
    return days >= MIN_ANNUALISE_DAYS


def span_text(days: float) -> str:
    """A window's length the way a person says it: 28 s, 11 min, 36 h, 6.5 days."""
    seconds = days * 86_400.0
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    if seconds < 3_570.0:
        return f"{seconds / 60:.0f} min"
    if days < 2.0:
        return f"{seconds / 3_600:.0f} h"
    return f"{days:.1f} days"


def daily_closes(ts: Sequence[int] | np.ndarray, equity: Sequence[float] | np.ndarray) -> np.ndarray:
    """Last equity of each UTC day: of one curve, or of each row of a 2-D
    array of curves over the same ``ts`` (the last axis is time)."""
    t = np.asarray(ts, dtype=np.int64)
    e = np.asarray(equity, dtype=np.float64)
    if t.size == 0:
        return e
    day = t // NS_PER_DAY
    last = np.flatnonzero(np.diff(day, append=day[-1] + 1))
    return e[..., last]


def sharpe(ts: Sequence[int], equity: Sequence[float], collateral_rate: float) -> float:
    return float(sharpe_rows(daily_closes(ts, equity), collateral_rate))


def sharpe_rows(closes: np.ndarray, collateral_rate: float) -> np.ndarray:
    """The Sharpe ratio of daily ``closes`` (``daily_closes``), of each row
    of a 2-D array at once: the last axis is time."""
    c = np.ascontiguousarray(closes, dtype=np.float64)  # each row's sums in the order of one curve's
    if c.shape[-1] < 3:
        return np.zeros(c.shape[:-1])
    rets = c[..., 1:] / c[..., :-1] - 1.0 - collateral_rate / 365.0
    sd = rets.std(axis=-1, ddof=1)
    # an idle book has (numerically) constant returns: no risk taken, no ratio
    ratio: np.ndarray = np.divide(rets.mean(axis=-1), sd, out=np.zeros(sd.shape), where=sd > 1e-12) * np.sqrt(365.0)
    return ratio


def max_drawdown(equity: Sequence[float]) -> float:
    return float(max_drawdown_rows(np.asarray(equity, dtype=np.float64)))


def max_drawdown_rows(equity: np.ndarray, scratch: np.ndarray | None = None) -> np.ndarray:
    """The largest fall from a running peak of ``equity``, of each row of a
    2-D array at once: the last axis is time. ``scratch``: a float array of
    the equity's shape to work in (else one is allocated)."""
    e = np.asarray(equity, dtype=np.float64)
    if e.shape[-1] == 0:
        return np.zeros(e.shape[:-1])
    peak = np.maximum.accumulate(e, axis=-1, out=scratch)
    fall = np.divide(e, peak, out=peak)
    worst: np.ndarray = np.max(np.subtract(1.0, fall, out=fall), axis=-1)  # in place: no temporaries of a study's size
    return worst


def apr(pnl: float, capital: float, days: float) -> float:
    return pnl / capital * 365.0 / days if days > 0 else 0.0


def cagr(start_equity: float, end_equity: float, days: float) -> float:
    if days <= 0 or start_equity <= 0 or end_equity <= 0:
        return 0.0
    return float((end_equity / start_equity) ** (365.0 / days)) - 1.0


def fill_rate(filled: float, requested: float) -> float:
    return filled / requested if requested > 0 else 1.0


def drift_stats(drift: Sequence[float], in_position: Sequence[bool]) -> tuple[float, float]:
    """(max, p99) of delta drift over the hours a position was held."""
    d = np.asarray(drift, dtype=np.float64)[np.asarray(in_position, dtype=bool)]
    if d.size == 0:
        return 0.0, 0.0
    return float(d.max()), float(np.percentile(d, 99))
