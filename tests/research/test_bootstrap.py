"""Stationary block bootstrap: cutting, block structure, joint resampling,
and that paths keep the real series' statistics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fundarb.core.model import NS_PER_HOUR
from fundarb.data.history import DataError, MarketHistory
from fundarb.research.bootstrap import (
    SourcePeriods,
    auto_block_periods,
    block_indices,
    bootstrap_history,
    bootstrap_paths,
    cut_periods,
    optimal_block_length,
    period_series,
)
from fundarb.testkit.builders import synthetic_history


def coded_history(periods: int = 40) -> MarketHistory:
    """Synthetic: every value encodes its funding period, so a path shows
    which source period each of its hours and settlements came from."""
    hours = periods * 8 + 1
    k = np.arange(hours)
    period = np.maximum(k - 1, 0) // 8  # hour k (k >= 1) belongs to period (k-1)//8
    spot = 100.0 * np.exp(np.cumsum(np.where(k > 0, 0.001 * (period + 1), 0.0)))
    perp = spot * (1.0 + 1e-4 * (period + 1))
    rates = 1e-5 * (np.arange(periods + 1))  # settlement j ends period j-1
    return synthetic_history(spot, perp, rates, first_offset_hours=0)


def test_cut_periods_on_synthetic_history():
    src = cut_periods(coded_history(40))
    assert src.periods == 40
    assert (src.period_hours == 8).all()
    assert src.period_start[0] == 1 and src.period_start[-1] == 1 + 39 * 8
    np.testing.assert_allclose(src.rate, 1e-5 * np.arange(1, 41))


def test_settlement_off_the_hour_grid_is_an_error():
    h = coded_history(10)
    bad = h.funding_ts.copy()
    bad[3] += NS_PER_HOUR // 2
    import attrs

    with pytest.raises(DataError, match="on the hourly price grid"):
        cut_periods(attrs.evolve(h, funding_ts=bad))


def test_too_few_settlements_is_an_error():
    h = synthetic_history(np.full(10, 100.0), np.full(10, 100.0), np.zeros(2), first_offset_hours=0, interval_hours=8)
    with pytest.raises(DataError, match="at least 3 funding settlements"):
        cut_periods(h)


def test_block_indices_continue_blocks_and_wrap():
    rng = np.random.default_rng(1)
    idx = block_indices(50, 5000, 10.0, rng)
    step = np.diff(idx) % 50
    continued = step == 1
    # a block continues with probability 1 - 1/L (a new block may also start
    # at the next index by chance, 1/50 of the time)
    assert 0.88 < continued.mean() < 0.93
    assert idx.min() >= 0 and idx.max() < 50
    assert (np.diff(idx) == -49).any()  # wrapped from the last period to the first


def test_block_length_one_draws_independent_periods():
    idx = block_indices(1000, 2000, 1.0, np.random.default_rng(2))
    assert (np.diff(idx) % 1000 == 1).mean() < 0.01


def test_path_resamples_price_basis_and_funding_jointly():
    h = coded_history(40)
    src = cut_periods(h)
    path = bootstrap_history(src, 24 * 30, 3.0, np.random.default_rng(5))
    ret = np.diff(np.log(path.spot))
    basis = path.perp / path.spot - 1
    hour_period = np.rint(ret / 0.001).astype(int) - 1
    np.testing.assert_allclose(np.rint(basis[1:] / 1e-4) - 1, hour_period)
    settle = np.searchsorted(path.hours, path.funding_ts)
    # the rate settled at the end of a period is that same source period's rate
    np.testing.assert_allclose(path.funding_rate / 1e-5 - 1, hour_period[settle - 1], atol=1e-9)
    # all eight hours of a period come from one source period
    assert (hour_period.reshape(-1, 8) == hour_period.reshape(-1, 8)[:, :1]).all()


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), hours=st.integers(1, 2000), block=st.floats(1.0, 60.0))
def test_paths_are_valid_histories(seed, hours, block):
    src = cut_periods(coded_history(30))
    p = bootstrap_history(src, hours, block, np.random.default_rng(seed))
    assert p.hours.size == hours + 1
    assert (np.diff(p.hours) == NS_PER_HOUR).all()
    assert (p.spot > 0).all() and (p.perp > 0).all()
    assert np.isin(p.funding_ts, p.hours).all()
    assert (np.diff(p.funding_ts) == 8 * NS_PER_HOUR).all()
    assert p.funding_ts.size == hours // 8
    assert p.funding_rate.size == p.funding_interval.size == p.funding_mark.size == p.funding_ts.size


def test_same_seed_same_path_other_seed_other_path():
    src = cut_periods(coded_history(40))
    a = bootstrap_history(src, 500, 4.0, np.random.default_rng(np.random.SeedSequence(9, spawn_key=(3, 0))))
    b = bootstrap_history(src, 500, 4.0, np.random.default_rng(np.random.SeedSequence(9, spawn_key=(3, 0))))
    c = bootstrap_history(src, 500, 4.0, np.random.default_rng(np.random.SeedSequence(9, spawn_key=(4, 0))))
    assert a.spot.tobytes() == b.spot.tobytes() and a.funding_rate.tobytes() == b.funding_rate.tobytes()
    assert a.spot.tobytes() != c.spot.tobytes()


def path_by_definition(src: SourcePeriods, hours: int, block: float, rng: np.random.Generator) -> MarketHistory:
    """One path written out in numpy as the module defines it: whole
    periods in blocks, the spot the first price times exp of the summed log
    returns, the perp spot times (1 + basis), a settlement ending each period."""
    n_periods = -(-hours // int(src.period_hours.min())) + 1
    starts = rng.integers(0, src.periods, size=n_periods)
    new_block = rng.random(n_periods) < 1.0 / block
    new_block[0] = True
    pos = np.arange(n_periods)
    begin = np.maximum.accumulate(np.where(new_block, pos, 0))
    chosen = (starts[begin] + pos - begin) % src.periods
    lengths = src.period_hours[chosen]
    rows = np.concatenate([src.period_start[c] + np.arange(n) for c, n in zip(chosen, lengths)])[:hours]
    spot = src.spot0 * np.exp(np.concatenate(([0.0], np.cumsum(src.log_ret[rows]))))
    grid = src.start + np.arange(hours + 1, dtype=np.int64) * NS_PER_HOUR
    settle = np.cumsum(lengths)
    k = int((settle <= hours).sum())
    return MarketHistory(hours=grid, spot=spot, perp=spot * (1.0 + np.concatenate(([src.basis0], src.basis[rows]))),
                         carried=np.concatenate(([False], src.carried[rows])), funding_ts=grid[settle[:k]],
                         funding_rate=src.rate[chosen[:k]], funding_interval=src.interval[chosen[:k]],
                         funding_mark=np.full(k, np.nan), sources=())


def same_bytes(a: MarketHistory, b: MarketHistory) -> bool:
    fields = ("hours", "spot", "perp", "carried", "funding_ts", "funding_rate", "funding_interval", "funding_mark")
    return all(getattr(a, f).dtype == getattr(b, f).dtype and getattr(a, f).tobytes() == getattr(b, f).tobytes()
               for f in fields)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), hours=st.integers(1, 3000), block=st.floats(1.0, 60.0))
def test_paths_drawn_together_are_each_the_path_drawn_alone(real_history, seed, hours, block):
    """Bit for bit: a batch (and a batch written into the last one's arrays)
    against the definition, one path at a time."""
    src = cut_periods(real_history)
    together = bootstrap_paths(src, hours, block, [np.random.default_rng(seed + j) for j in range(3)])
    for j in range(3):
        assert same_bytes(together.history(j), path_by_definition(src, hours, block, np.random.default_rng(seed + j)))
    assert same_bytes(bootstrap_history(src, hours, block, np.random.default_rng(seed)),
                      path_by_definition(src, hours, block, np.random.default_rng(seed)))
    again = bootstrap_paths(src, hours, block, [np.random.default_rng(seed + 7 + j) for j in range(3)], reuse=together)
    assert again.spot is together.spot  # written into the same arrays
    for j in range(3):
        assert same_bytes(again.history(j), path_by_definition(src, hours, block, np.random.default_rng(seed + 7 + j)))
    assert again.days == path_by_definition(src, hours, block, np.random.default_rng(seed + 7)).days


def ar1(phi: float, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.standard_normal(n)
    x = np.zeros(n)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return x


def test_block_length_grows_with_persistence():
    white = optimal_block_length(np.random.default_rng(0).standard_normal(3000))
    mild, strong = optimal_block_length(ar1(0.5, 3000, 1)), optimal_block_length(ar1(0.9, 3000, 1))
    assert white < 3 < mild < strong
    assert strong <= np.ceil(min(3 * np.sqrt(3000), 1000))


def test_block_length_edge_cases():
    assert optimal_block_length(np.ones(100)) == 1.0
    with pytest.raises(ValueError, match="at least 8"):
        optimal_block_length(np.arange(5.0))


# --- on the shipped real history -----------------------------------------

def test_real_series_block_length_is_the_most_persistent_series(real_history):
    src = cut_periods(real_history)
    lengths = {k: optimal_block_length(v) for k, v in period_series(src).items()}
    assert auto_block_periods(src) == max(lengths.values())
    # funding and basis are persistent (weeks), spot returns barely
    assert lengths["funding_rate"] > 10 * lengths["spot_return"] / 2
    assert lengths["spot_return"] < lengths["basis"]


def test_bootstrapped_paths_keep_the_real_mean_funding(real_history):
    src = cut_periods(real_history)
    block = auto_block_periods(src)
    means = np.array([
        bootstrap_history(src, 365 * 24, block, np.random.default_rng(np.random.SeedSequence(11, spawn_key=(i, 0)))).funding_rate.mean()
        for i in range(300)
    ])
    real = src.rate.mean()
    se = means.std(ddof=1) / np.sqrt(means.size)
    assert abs(means.mean() - real) < 4 * se
    # single paths scatter around the real mean, not far off it
    assert np.mean(np.abs(means - real) < 3 * means.std(ddof=1)) > 0.95


def test_bootstrapped_paths_keep_autocorrelation_and_cross_correlation(real_history):
    src = cut_periods(real_history)
    real = period_series(src)

    def lag1(x):
        return np.corrcoef(x[:-1], x[1:])[0, 1]

    def cross(series):
        return np.corrcoef(series["funding_rate"], series["basis"])[0, 1]

    block = auto_block_periods(src)
    lag1s, crosses = [], []
    for i in range(60):
        p = bootstrap_history(src, 365 * 24, block, np.random.default_rng(np.random.SeedSequence(3, spawn_key=(i, 0))))
        ps = period_series(cut_periods(p))
        lag1s.append(lag1(ps["funding_rate"]))
        crosses.append(cross(ps))
    assert abs(np.median(lag1s) - lag1(real["funding_rate"])) < 0.1
    assert abs(np.median(crosses) - cross(real)) < 0.2
    # an i.i.d. resample of the same periods (block length 1) loses it
    iid = bootstrap_history(src, 365 * 24, 1.0, np.random.default_rng(1))
    assert lag1(period_series(cut_periods(iid))["funding_rate"]) < 0.3 < lag1(real["funding_rate"])


def test_path_starts_at_the_first_settlement_of_the_window(real_history):
    src = cut_periods(real_history)
    p = bootstrap_history(src, 48, 10.0, np.random.default_rng(0))
    assert p.hours[0] == real_history.funding_ts[0]
    assert p.spot[0] == real_history.spot[np.searchsorted(real_history.hours, real_history.funding_ts[0])]
