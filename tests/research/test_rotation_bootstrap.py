"""The rotation's Monte Carlo: every venue's bars drawn together."""

from __future__ import annotations

from pathlib import Path

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fundarb.config import load, project_file
from fundarb.data.history import parse_time
from fundarb.research.bootstrap import auto_block_periods, bootstrap_venue_bars, cut_venue_bars
from fundarb.research.cluster import chunk_runner
from fundarb.research.study import StudySpec, run_study
from fundarb.sim.rotation import FileSource, real_tape

SHIPPED = project_file(Path("sims/rotation.toml"))


@pytest.fixture(scope="module")
def cfg():
    c = load(SHIPPED)
    return attrs.evolve(c, data=attrs.evolve(c.data, start="2023-01-01", end="2023-07-01"))


@pytest.fixture(scope="module")
def tape(cfg):
    return real_tape(cfg)


def test_the_real_tape_holds_each_venue_s_stored_closes_and_settlements(cfg, tape):
    files = FileSource()
    lo, hi = int(tape.bars[0]), int(tape.bars[-1]) + 60_000_000_000  # the stored reader ends on a whole minute
    h = files.pair_history(cfg.spot, cfg.perp, lo, hi)
    same = np.isin(h.hours, tape.bars)
    assert np.array_equal(h.spot[same], tape.closes[cfg.spot.exchange])
    assert np.array_equal(h.perp[same], tape.closes[cfg.perp.exchange])
    again = tape.pair_history(cfg.spot, cfg.perp, lo, hi)
    assert np.array_equal(again.funding_ts, h.funding_ts[(h.funding_ts > lo) & (h.funding_ts <= int(tape.bars[-1]))])
    assert np.array_equal(again.long_funding_rate, h.long_funding_rate[(h.long_funding_ts > lo)
                                                                       & (h.long_funding_ts <= int(tape.bars[-1]))])


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(1, 40))
def test_a_path_draws_every_venue_from_the_same_source_bar(tape, seed, block):
    src = cut_venue_bars(tape)
    path = bootstrap_venue_bars(src, 30 * 24, block, np.random.default_rng(seed))
    real = {(float(a), float(b)) for a, b in zip(src.rates[0], src.rates[1])}
    a, b = (path.funding[v][1] for v in src.venues)
    assert {(float(x), float(y)) for x, y in zip(a, b)} <= real  # both venues' rates come as a real bar's pair
    ref = path.closes[src.venues[0]]
    for i, v in enumerate(src.venues):  # each venue's basis to the first is a real bar's
        basis = path.closes[v][1:] / ref[1:] - 1.0
        assert np.all(np.isin(np.round(basis, 12), np.round(src.basis[i], 12)))
    assert np.all(np.diff(path.bars) == 8 * 3_600_000_000_000)
    for v in src.venues:  # each settlement inside its bar, before its close
        ts = path.funding[v][0]
        assert np.all((ts > path.bars[:-1]) & (ts <= path.bars[1:]))


def test_the_joint_draw_keeps_the_venues_correlation(tape):
    src = cut_venue_bars(tape)
    real = np.corrcoef(src.rates[0], src.rates[1])[0, 1]
    path = bootstrap_venue_bars(src, src.periods * 8 * 4, auto_block_periods(src), np.random.default_rng(3))
    a, b = path.funding[src.venues[0]][1], path.funding[src.venues[1]][1]
    drawn = np.corrcoef(a, b)[0, 1]
    apart = np.corrcoef(a, np.random.default_rng(4).permutation(b))[0, 1]  # what drawing them apart would keep
    assert real > 0.1 and abs(drawn - real) < 0.06 and abs(apart) < real / 2


def test_a_rotation_study_is_the_same_whatever_the_workers(cfg, tape):
    src = cut_venue_bars(tape)
    spec = StudySpec(paths=4, days=60, block_periods=10)
    with chunk_runner(1, None) as one:
        a = run_study(cfg, src, spec, one)
    with chunk_runner(2, None) as two:
        b = run_study(cfg, src, spec, two)
    assert [r["net_pnl"] for r in a.rows] == [r["net_pnl"] for r in b.rows]
    assert all(r["moves"] >= 0 and r["withdrawals"] == 0 for r in a.rows)  # two venues: nothing leaves
    assert parse_time(cfg.data.start, "s") < int(src.start) + 8 * 3_600_000_000_000
