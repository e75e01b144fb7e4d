"""Walk-forward validation on the shipped history: the windows, that nothing
of the future is read, the same bytes on any number of threads, and the
command as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fundarb.cli.main import app
from fundarb.config import Config, load
from fundarb.data.history import MarketHistory, fmt_time, history_for, parse_time
from fundarb.output.walkforward import WALK_FILES, walk_dict, write_walkforward
from fundarb.research.cluster import InProcess, chunk_runner
from fundarb.research.sweep import eligible, parse_grid
from fundarb.research.walkforward import (
    NS_PER_DAY,
    WalkForwardError,
    WalkSpec,
    chain,
    check_candidates,
    choose,
    parse_span,
    run_walkforward,
    windows,
)

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "sims" / "spot_perp.toml"
SPEC = WalkSpec(train_days=60, test_days=30, step_days=30, paths=8)
runner = CliRunner()


@pytest.fixture(scope="module")
def cfg() -> Config:
    c = load(BASELINE)
    return attrs.evolve(c, data=attrs.evolve(c.data, start="2023-01-01", end="2023-07-01"))


@pytest.fixture(scope="module")
def grid(cfg):
    return parse_grid(["entry=0.02,0.08,exit=0"], cfg)


@pytest.fixture(scope="module")
def walked(cfg, grid):
    return run_walkforward(cfg, grid, SPEC, InProcess(1))


@settings(max_examples=200, deadline=None)
@given(days=st.integers(30, 2000), train=st.integers(7, 400), test=st.integers(7, 200), step=st.integers(1, 200))
def test_windows_roll_inside_the_span_and_a_test_window_follows_its_training_window(days, train, test, step):
    start = parse_time("2021-07-01", "start")
    end = start + days * NS_PER_DAY
    spec = WalkSpec(train, test, step)
    try:
        ws = windows(start, end, spec)
    except WalkForwardError:
        assert train + test > days
        return
    for k, w in enumerate(ws):
        assert w.train_start == start + k * step * NS_PER_DAY
        assert w.train_end - w.train_start == train * NS_PER_DAY  # the training window, whole
        assert w.test_start == w.train_end  # the test window starts where its training ended: no overlap
        assert w.test_end - w.test_start == test * NS_PER_DAY and w.test_end <= end
    assert ws[-1].test_end + step * NS_PER_DAY > end  # no whole pair left out at the end


def test_each_window_is_chosen_on_its_past_and_judged_on_its_future(walked, grid):
    assert len(walked.runs) == 4
    for run in walked.runs:
        w = run.window
        # the sweep ran on the training window alone
        assert run.sweep.base.data.start == fmt_time(w.train_start) and run.sweep.base.data.end == fmt_time(w.train_end)
        # the test run covers the test window only
        assert run.test.history.start >= w.test_start and run.test.history.end < w.test_end
        assert run.params in grid_points_of(grid) or run.params is None


def grid_points_of(grid):
    from fundarb.research.sweep import grid_points

    return grid_points(grid)


def test_no_row_after_a_window_is_read_before_it_ends(cfg, grid):
    """Every read of the history goes through ``load``: the training reads of
    window k end at its test window's start, and no read of window k reaches
    past its test window's end."""
    reads: list[tuple[int, int, int]] = []  # (window, start, end)
    current = [-1]

    def loader(c: Config, data_dir):
        reads.append((current[0], parse_time(c.data.start, "start"), parse_time(c.data.end, "end")))
        return history_for(c, data_dir)

    def progress(k, _):
        current[0] = k

    r = run_walkforward(cfg, grid, SPEC, InProcess(1), progress=progress, load=loader)
    by_window = {run.window.index: run.window for run in r.runs}
    end = parse_time(cfg.data.end, "end")
    for k, lo, hi in reads:
        if k == len(r.runs):  # after the windows: what to run now, on the last training window's days
            assert (lo, hi) == (end - SPEC.train_days * NS_PER_DAY, end)
            continue
        w = by_window[k]
        assert hi <= w.test_end, (k, fmt_time(hi))
    for run in r.runs:  # the sweep's read, the first of its window, ends where the test starts
        k = run.window.index
        first = next((lo, hi) for j, lo, hi in reads if j == k)
        assert first == (run.window.train_start, run.window.test_start)


def _garbled_after(cut: int):
    """A loader whose history after ``cut`` is changed: prices 30% higher and
    every rate turned negative (what a leak of the future would carry over)."""
    def loader(c: Config, data_dir) -> MarketHistory:
        h = history_for(c, data_dir)
        late = h.hours >= cut
        fl = h.funding_ts >= cut
        return attrs.evolve(h, spot=np.where(late, h.spot * 1.3, h.spot), perp=np.where(late, h.perp * 1.3, h.perp),
                            funding_rate=np.where(fl, -np.abs(h.funding_rate) * 5, h.funding_rate))
    return loader


def test_a_changed_future_changes_nothing_before_it(cfg, grid, walked):
    cut = walked.runs[1].window.test_end  # after the second test window
    other = run_walkforward(cfg, grid, SPEC, InProcess(1), load=_garbled_after(cut))
    for a, b in zip(walked.runs, other.runs):
        if a.window.test_end <= cut:
            assert a.params == b.params
            assert a.test.metrics == b.test.metrics
            assert np.array_equal(a.curve[1], b.curve[1]) and np.array_equal(a.always_on_curve[1], b.always_on_curve[1])
    assert any(a.test.metrics != b.test.metrics for a, b in zip(walked.runs, other.runs) if a.window.test_end > cut)


def test_the_same_bytes_on_one_and_two_threads_and_on_two_dask_workers(cfg, grid, walked, tmp_path):
    write_walkforward(walked, tmp_path / "one")
    write_walkforward(run_walkforward(cfg, grid, SPEC, InProcess(2)), tmp_path / "two")
    with chunk_runner(workers=2) as dask:  # a cluster on 127.0.0.1, one market source scattered per window
        write_walkforward(run_walkforward(cfg, grid, SPEC, dask), tmp_path / "dask")
    for name in WALK_FILES:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "dask" / name).read_bytes(), name


def test_the_stitched_curve_compounds_the_windows_and_its_figures_add_up(walked, cfg):
    s = walked.summary()
    ts, eq = walked.stitched
    growth = 1.0
    for run in walked.runs:
        growth *= run.curve[1][-1] / cfg.capital
    assert eq[-1] == pytest.approx(cfg.capital * growth, rel=1e-12)
    assert s["edge_over_always_on"] == s["net_apr"] - s["always_on_net_apr"]
    assert s["windows_beating_always_on"] == sum(
        run.figures(cfg.capital, cfg.collateral_rate)["edge_over_always_on"] > 0 for run in walked.runs)
    assert np.all(np.diff(ts) > 0)
    d = walk_dict(walked)
    assert [w["param_entry"] for w in d["windows"]] == s["parameter_stability"]["entry"]["chosen"]


def test_what_to_run_now_is_the_rules_choice_on_the_last_training_window(cfg, grid, walked, tmp_path):
    from fundarb.config import load as load_config
    from fundarb.research.study import StudySpec
    from fundarb.research.sweep import run_sweep
    from fundarb.research.walkforward import within

    end = parse_time(cfg.data.end, "end")
    last = within(cfg, end - int(SPEC.train_days * NS_PER_DAY), end)
    sweep = run_sweep(last, history_for(last), StudySpec(paths=SPEC.paths, days=SPEC.train_days), grid, InProcess(1))
    assert walked.latest is not None and walked.latest.sweeps[0].rows == sweep.rows
    if sweep.recommended is None:
        assert walked.recommended is None
        return
    params, chosen = walked.recommended
    assert params == sweep.rows[sweep.recommended]["params"]
    write_walkforward(walked, tmp_path / "wf")
    again = load_config(tmp_path / "wf" / "recommended.toml")
    assert again.strategy == chosen.strategy and again.data == cfg.data  # the chosen parameters, the base's window


def test_chain_starts_each_curve_where_the_last_ended():
    a = (np.array([1, 2]), np.array([100.0, 110.0]))
    b = (np.array([3, 4]), np.array([100.0, 90.0]))
    ts, eq = chain([a, b], 100.0)
    assert ts.tolist() == [1, 2, 3, 4]
    assert eq.tolist() == pytest.approx([100.0, 110.0, 110.0, 99.0], rel=1e-15)


@pytest.mark.parametrize(("text", "days"), [("365d", 365.0), ("13w", 91.0), ("90", 90.0)])
def test_spans(text, days):
    assert parse_span(text, "--train") == days


def test_the_command_writes_its_outputs_and_reads_correctly(tmp_path):
    out = tmp_path / "wf"
    res = runner.invoke(app, ["walkforward", str(BASELINE), "--grid", "entry=0.02,0.08", "--train", "60d", "--test",
                              "30d", "--paths", "6", "--from", "2023-01-01", "--to", "2023-05-01", "--out", str(out)])
    assert res.exit_code == 0, res.output
    written = {p.name for p in out.iterdir()}
    assert written - {"recommended.toml"} == set(WALK_FILES) - {"recommended.toml"}
    d = json.loads((out / "walkforward.json").read_text())
    assert d["summary"]["windows"] == 2 and len(d["windows"]) == 2
    assert "stitched out of sample" in res.output and "always-on" in res.output


@pytest.mark.parametrize(("args", "message"), [
    (["--train", "a year"], "--train 'a year' is not a span like 365d"),
    (["--test", "3d"], "a test window needs at least 7 days"),
    (["--from", "2023-01-01", "--to", "2023-02-01"], "holds no training window of 365 days"),
    (["--also", str(ROOT / "sims" / "coin_margined_btc.toml")],
     "config 'coin_margined_btc' has capital 100000 BTC, 'spot_perp' 100000 USDT: configs to choose among need the "
     "same capital in the same asset"),
    (["--also", str(BASELINE)], "config 'spot_perp' is named twice"),
    (["--also", str(ROOT / "sims" / "kraken_bybit.toml")], "no prices for exchange 'kraken' symbol 'BTC/USDT'"),
])
def test_bad_settings_get_one_clear_error_and_write_nothing(tmp_path, args, message):
    out = tmp_path / "wf"
    res = runner.invoke(app, ["walkforward", str(BASELINE), "--grid", "entry=0.02,0.08", "--out", str(out), *args])
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split())
    assert res.output.count("error:") == 1
    assert not out.exists()


# --- choosing among structures and venues ----------------------------------------------------------


@pytest.fixture(scope="module")
def unified(cfg) -> Config:
    u = load(ROOT / "sims" / "unified.toml")
    return attrs.evolve(u, data=attrs.evolve(u.data, start=cfg.data.start, end=cfg.data.end))


@pytest.fixture(scope="module")
def walked_among(cfg, grid, unified):
    return run_walkforward(cfg, grid, SPEC, InProcess(1), others=[unified])


def test_among_configs_each_window_takes_the_best_eligible_point_of_any_of_them(walked_among, cfg, unified):
    names = [cfg.name, unified.name]
    for run in walked_among.runs:
        w = run.window
        assert [sw.base.name for sw in run.sweeps] == names  # every config swept on the training window alone
        assert all((sw.base.data.start, sw.base.data.end) == (fmt_time(w.train_start), fmt_time(w.train_end))
                   for sw in run.sweeps)
        scores = [(row["p5_net_apr"], row["median_net_apr"]) for sw in run.sweeps for row in sw.rows if eligible(row)]
        if not scores:
            assert run.candidate is None and run.params is None
            continue
        i = names.index(run.candidate)
        row = next(r for r in run.sweeps[i].rows if r["params"] == run.params)
        assert eligible(row) and (row["p5_net_apr"], row["median_net_apr"]) == max(scores)
        assert run.config.structure_kind == [cfg, unified][i].structure_kind  # the chosen structure ran the test
        assert run.test.history.start >= w.test_start and run.test.history.end < w.test_end
        # the window is judged against the chosen structure held through it
        assert np.array_equal(run.always_on_curve[1], run.candidates_always_on[i][1])
    assert unified.name in {run.candidate for run in walked_among.runs}  # the rule does leave the base config


def test_each_config_held_is_what_its_own_walk_forward_calls_always_on(walked_among, walked, cfg):
    """The base held through the test windows of a walk among configs is
    the always-on of the base's own walk-forward (the grid moves only the
    entry bar, which always-on does not use)."""
    for among, alone in zip(walked_among.runs, walked.runs):
        assert np.array_equal(among.candidates_always_on[0][1], alone.always_on_curve[1])
    held = walked_among.summary()["always_on_by_config"]
    assert held[cfg.name]["net_apr"] == walked.summary()["always_on_net_apr"]
    assert set(held) == {"spot_perp", "unified"}


def test_among_configs_a_changed_future_changes_nothing_before_it(cfg, grid, unified, walked_among):
    cut = walked_among.runs[1].window.test_end
    other = run_walkforward(cfg, grid, SPEC, InProcess(1), load=_garbled_after(cut), others=[unified])
    for a, b in zip(walked_among.runs, other.runs):
        if a.window.test_end <= cut:
            assert (a.candidate, a.params) == (b.candidate, b.params)
            assert all(np.array_equal(x[1], y[1]) for x, y in zip(a.candidates_always_on, b.candidates_always_on))
            assert np.array_equal(a.curve[1], b.curve[1])


def test_among_configs_the_same_bytes_on_two_threads(cfg, grid, unified, walked_among, tmp_path):
    write_walkforward(walked_among, tmp_path / "one")
    write_walkforward(run_walkforward(cfg, grid, SPEC, InProcess(2), others=[unified]), tmp_path / "two")
    for name in WALK_FILES:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


class _Sweep:
    def __init__(self, rows):
        self.rows = rows


_row = st.builds(lambda p5, med, dd, traded: {"p5_net_apr": p5, "median_net_apr": med, "p_max_drawdown_ok": dd,
                                              "p_traded": traded},
                 st.sampled_from([-0.02, 0.0, 0.01, 0.03]), st.sampled_from([0.0, 0.02, 0.05]),
                 st.sampled_from([0.9, 0.95, 1.0]), st.sampled_from([0.0, 0.5, 1.0]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_row, min_size=1, max_size=5), min_size=1, max_size=4))
def test_the_choice_among_configs_is_the_best_eligible_point_first_come_on_a_tie(sweeps):
    for rows in sweeps:
        for k, row in enumerate(rows):
            row["point"] = k
    choice = choose([_Sweep(rows) for rows in sweeps])  # type: ignore[list-item]
    ranked = [(-r["p5_net_apr"], -r["median_net_apr"], c, r["point"])
              for c, rows in enumerate(sweeps) for r in rows if eligible(r)]
    if not ranked:
        assert choice.candidate is None and choice.point is None
        return
    row = sweeps[choice.candidate][choice.point]
    assert eligible(row)
    assert all((row["p5_net_apr"], row["median_net_apr"]) >= (-a, -b) for a, b, _, _ in ranked)
    first = min((c, p) for a, b, c, p in ranked if (-a, -b) == (row["p5_net_apr"], row["median_net_apr"]))
    assert (choice.candidate, choice.point) == first


def test_configs_to_choose_among_must_share_capital_and_be_named_once(cfg, unified):
    check_candidates(cfg, [unified])
    with pytest.raises(WalkForwardError, match="capital 50000 USDT"):
        check_candidates(cfg, [attrs.evolve(unified, capital=50000.0)])
    with pytest.raises(WalkForwardError, match="named twice"):
        check_candidates(cfg, [unified, unified])


def test_the_command_chooses_among_configs_and_says_which(tmp_path):
    out = tmp_path / "wf"
    res = runner.invoke(app, ["walkforward", str(BASELINE), "--also", str(ROOT / "sims" / "unified.toml"), "--grid",
                              "entry=0.04", "--train", "60d", "--test", "30d", "--paths", "6", "--from", "2023-01-01",
                              "--to", "2023-07-01", "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "each config held through the same test windows: spot_perp" in text and "; unified" in text
    d = json.loads((out / "walkforward.json").read_text())
    assert [c["name"] for c in d["chosen_among"]] == ["spot_perp", "unified"]
    assert all(w["config"] in ("spot_perp", "unified", None) for w in d["windows"])
    import polars as pl

    csv = pl.read_csv(out / "windows.csv")
    assert csv["config"].to_list() == [w["config"] for w in d["windows"]]
    rec = d["recommended_now"]
    if rec is not None:  # the recommended file is the chosen structure, over the base's window
        again = load(out / "recommended.toml")
        assert again.structure_kind == ("unified" if rec["config_name"] == "unified" else "spot_linear")
        assert again.name == f"{rec['config_name']}-walkforward"
        assert (again.data.start, again.data.end) == ("2023-01-01", "2023-07-01")
