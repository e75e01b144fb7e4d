"""Metrics on constructed series, expected values computed by hand."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from fundarb.core import metrics
from fundarb.core.model import NS_PER_HOUR

DAY = 24 * NS_PER_HOUR
D0 = 19_700 * DAY  # a UTC midnight


def hourly_curve(closes: list[float]) -> tuple[list[int], list[float]]:
    """24 hourly marks a day; intraday values wander, the last one is the close."""
    ts, eq = [], []
    for d, close in enumerate(closes):
        for h in range(24):
            ts.append(D0 + d * DAY + h * NS_PER_HOUR)
            eq.append(close if h == 23 else close * (1 + 0.003 * math.sin(h + d)))
    return ts, eq


def test_daily_closes_take_the_last_mark_of_each_utc_day():
    ts, eq = hourly_curve([100.0, 101.0, 99.0])
    assert metrics.daily_closes(ts, eq).tolist() == [100.0, 101.0, 99.0]
    # a curve that starts mid-day
    assert metrics.daily_closes([D0 + 20 * NS_PER_HOUR, D0 + 23 * NS_PER_HOUR, D0 + DAY], [1.0, 2.0, 3.0]).tolist() == [2.0, 3.0]


def test_sharpe_by_hand():
    closes = [100_000.0, 100_100.0, 100_050.0, 100_300.0, 100_280.0, 100_500.0]
    ts, eq = hourly_curve(closes)
    rate = 0.03
    rets = [closes[i] / closes[i - 1] - 1 - rate / 365 for i in range(1, len(closes))]
    expected = statistics.mean(rets) / statistics.stdev(rets) * math.sqrt(365)
    assert metrics.sharpe(ts, eq, rate) == pytest.approx(expected, rel=1e-9)
    # the hurdle matters: a zero collateral rate gives a higher ratio
    assert metrics.sharpe(ts, eq, 0.0) > metrics.sharpe(ts, eq, rate)


def test_sharpe_of_a_too_short_or_constant_curve_is_zero():
    ts, eq = hourly_curve([100.0, 101.0])
    assert metrics.sharpe(ts, eq, 0.0) == 0.0
    ts, eq = hourly_curve([100.0] * 5)
    assert metrics.sharpe(ts, [100.0] * len(ts), 0.0) == 0.0


def test_max_drawdown_by_hand():
    # peaks 100, 120, 120, 130, 130: falls 0, 0, 30/120, 0, 13/130
    assert metrics.max_drawdown([100, 120, 90, 130, 117]) == pytest.approx(0.25)
    assert metrics.max_drawdown([1, 2, 3]) == 0.0
    assert metrics.max_drawdown([]) == 0.0
    assert metrics.max_drawdown([100, 95, 96, 94.05]) == pytest.approx(0.0595)


def test_apr_and_cagr():
    assert metrics.apr(5_000.0, 100_000.0, 73.0) == pytest.approx(0.25)  # 5% in a fifth of a year
    assert metrics.apr(-1_000.0, 100_000.0, 365.0) == pytest.approx(-0.01)
    assert metrics.apr(1.0, 1.0, 0.0) == 0.0
    assert metrics.cagr(100.0, 121.0, 730.0) == pytest.approx(0.10)
    assert metrics.cagr(100.0, 50.0, 0.0) == 0.0


def test_fill_rate():
    assert metrics.fill_rate(9.5, 10.0) == pytest.approx(0.95)
    assert metrics.fill_rate(0.0, 2.0) == 0.0
    assert metrics.fill_rate(0.0, 0.0) == 1.0


def test_drift_stats_only_count_hours_in_position():
    drift = [i / 1000 for i in range(101)] + [0.9, 0.5]
    held = [True] * 101 + [False, False]
    mx, p99 = metrics.drift_stats(drift, held)
    assert mx == pytest.approx(0.1)
    # 101 sorted values 0 .. 0.1: the 99th percentile sits on index 99 -> 0.099
    assert p99 == pytest.approx(0.099)
    assert metrics.drift_stats([0.3, 0.4], [False, False]) == (0.0, 0.0)


def test_drift_stats_p99_interpolates():
    d = np.zeros(200)
    d[-1] = 1.0  # index 0.99 * 199 = 197.01 -> between 0 and 0 -> 0
    assert metrics.drift_stats(d, np.ones(200, dtype=bool)) == (1.0, 0.0)
    d[-2] = 1.0  # now between index 197 (0) and 198 (1): 0.01
    assert metrics.drift_stats(d, np.ones(200, dtype=bool))[1] == pytest.approx(0.01)
