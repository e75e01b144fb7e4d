"""Monte Carlo and sweep plots on synthetic arrays: files are valid PNGs,
reproducible to the byte, and odd inputs (NaN, None, holes in a grid) are drawn
rather than raised; bad arguments are refused with a clear message."""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from fundarb.output import plots
from fundarb.sim.backtest import GATES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GATE_THRESHOLDS = {"net_apr": 0.10, "sharpe": 1.0, "max_drawdown": 0.05}
METRICS = [("net_apr", "net APR", "pct"), ("sharpe", "Sharpe", "num")]


def assert_png(path: Path) -> None:
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0


def synthetic_equity(n_paths: int = 30, n_days: int = 60, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic daily equity drifting up ~5%/yr with noise, from 100k."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.05 / 365, 0.002, size=(n_paths, n_days - 1))
    equity = 100_000.0 * np.concatenate([np.ones((n_paths, 1)), np.cumprod(1 + steps, axis=1)], axis=1)
    return np.arange(n_days, dtype=float), equity


def synthetic_samples(n: int = 50, seed: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"net_apr": rng.normal(0.11, 0.03, n), "sharpe": rng.normal(1.4, 0.5, n),
            "max_drawdown": np.abs(rng.normal(0.03, 0.015, n))}


def synthetic_rows(params: dict[str, tuple[float, ...]]) -> list[dict]:
    """A full synthetic grid over ``params``, metrics made up from the values."""
    rows = []
    for combo in itertools.product(*params.values()):
        p = dict(zip(params, combo))
        s = sum(combo)
        rows.append({"params": p, "net_apr": 0.05 + 0.1 * s, "sharpe": 1.0 + s, "max_drawdown": 0.01 * s})
    return rows


# ---------------------------------------------------------------- fan chart


def test_fan_chart_of_synthetic_paths_is_a_png_and_reproducible(tmp_path):
    days, equity = synthetic_equity()
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    plots.plot_fan(a, days, equity, 100_000.0, "synthetic fan")
    plots.plot_fan(b, days, equity, 100_000.0, "synthetic fan")
    assert_png(a)
    assert a.read_bytes() == b.read_bytes()


def test_fan_chart_with_synthetic_nan_marks_does_not_crash(tmp_path):
    days, equity = synthetic_equity(n_paths=5, n_days=20)
    equity[:, 10:] = np.nan  # no path has a mark after day 9: final-day stats are n/a
    equity[2, 3] = np.nan
    plots.plot_fan(tmp_path / "fan.png", days, equity, 100_000.0, "synthetic fan with gaps")
    assert_png(tmp_path / "fan.png")


def test_fan_chart_refuses_mismatched_shapes_and_bad_capital(tmp_path):
    days, equity = synthetic_equity(n_paths=3, n_days=10)
    with pytest.raises(ValueError, match="day_offsets has 9"):
        plots.plot_fan(tmp_path / "x.png", days[:-1], equity, 100_000.0, "t")
    with pytest.raises(ValueError, match="2-d"):
        plots.plot_fan(tmp_path / "x.png", days, equity[0], 100_000.0, "t")
    with pytest.raises(ValueError, match="capital"):
        plots.plot_fan(tmp_path / "x.png", days, equity, 0.0, "t")
    assert not (tmp_path / "x.png").exists()


# ------------------------------------------------------------ distributions


def test_distributions_of_synthetic_samples_are_a_png_and_reproducible(tmp_path):
    samples = synthetic_samples()
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    plots.plot_distributions(a, samples, GATE_THRESHOLDS, "synthetic distributions")
    plots.plot_distributions(b, samples, GATE_THRESHOLDS, "synthetic distributions")
    assert_png(a)
    assert a.read_bytes() == b.read_bytes()


def test_distributions_with_synthetic_nan_do_not_crash(tmp_path):
    samples = synthetic_samples(n=20)
    samples["net_apr"][:4] = np.nan
    samples["sharpe"] = np.full(20, np.nan)  # nothing left to draw
    samples["max_drawdown"] = np.full(20, 0.02)  # every value the same
    plots.plot_distributions(tmp_path / "d.png", samples, GATE_THRESHOLDS, "synthetic with NaN")
    assert_png(tmp_path / "d.png")


def test_distributions_refuse_missing_keys(tmp_path):
    samples = synthetic_samples(n=5)
    del samples["sharpe"]
    with pytest.raises(ValueError, match="samples lacks sharpe"):
        plots.plot_distributions(tmp_path / "d.png", samples, GATE_THRESHOLDS, "t")
    with pytest.raises(ValueError, match="thresholds lacks max_drawdown"):
        plots.plot_distributions(tmp_path / "d.png", synthetic_samples(n=5), {"net_apr": 0.1, "sharpe": 1.0}, "t")


def test_distribution_gate_sides_match_the_backtest_gates():
    sides = {key: op for _, key, op, _ in GATES}
    for key, (_, _, side) in plots.DISTRIBUTION_KEYS.items():
        assert sides[key] == side, key


# ----------------------------------------------------------------- heatmaps


@pytest.mark.parametrize("params", [
    {"entry": (0.04, 0.06, 0.08)},
    {"entry": (0.04, 0.06, 0.08), "exit": (0.0, 0.02)},
    {"entry": (0.04, 0.06, 0.08), "exit": (0.0, 0.02), "leverage": (2.0, 3.0)},
], ids=["1-param", "2-params", "3-params"])
def test_heatmaps_write_one_png_per_metric_in_metrics_order(tmp_path, params):
    rows = synthetic_rows(params)
    paths = plots.plot_heatmaps(tmp_path, rows, list(params), METRICS)
    assert paths == [tmp_path / "heatmap_net_apr.png", tmp_path / "heatmap_sharpe.png"]
    for p in paths:
        assert_png(p)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heatmap_net_apr.png", "heatmap_sharpe.png"]


def test_heatmaps_are_reproducible_and_take_a_highlight(tmp_path):
    rows = synthetic_rows({"entry": (0.04, 0.06, 0.08), "exit": (0.0, 0.02), "leverage": (2.0, 3.0)})
    metric = [("net_apr", "net APR", "pct")]
    (a,) = plots.plot_heatmaps(tmp_path / "a", rows, ["entry", "exit", "leverage"], metric, highlight=4)
    (b,) = plots.plot_heatmaps(tmp_path / "b", rows, ["entry", "exit", "leverage"], metric, highlight=4)
    (c,) = plots.plot_heatmaps(tmp_path / "c", rows, ["entry", "exit", "leverage"], metric)
    assert_png(a)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()  # the box and the "recommended" title are drawn


def test_heatmaps_draw_nan_none_and_missing_cells_of_a_synthetic_grid(tmp_path):
    rows = synthetic_rows({"entry": (0.04, 0.06, 0.08), "exit": (0.0, 0.02), "leverage": (2.0, 3.0)})
    rows[0]["net_apr"] = float("nan")
    rows[1]["net_apr"] = None
    del rows[2]["sharpe"]
    del rows[7]  # a hole in the grid
    for r in rows:
        r["max_drawdown"] = None  # a metric with no value anywhere
    metrics = [*METRICS, ("max_drawdown", "max drawdown", "pct")]
    paths = plots.plot_heatmaps(tmp_path, rows, ["entry", "exit", "leverage"], metrics, highlight=0)
    assert [p.name for p in paths] == ["heatmap_net_apr.png", "heatmap_sharpe.png", "heatmap_max_drawdown.png"]
    for p in paths:
        assert_png(p)


@pytest.mark.parametrize("highlight", [6, -1, 100])
def test_heatmaps_refuse_a_highlight_out_of_range(tmp_path, highlight):
    rows = synthetic_rows({"entry": (0.04, 0.06, 0.08), "exit": (0.0, 0.02)})
    with pytest.raises(ValueError, match=rf"highlight={highlight} is not a row index: rows has 6 entries"):
        plots.plot_heatmaps(tmp_path, rows, ["entry", "exit"], METRICS, highlight=highlight)
    assert list(tmp_path.iterdir()) == []


def test_heatmaps_refuse_empty_rows(tmp_path):
    with pytest.raises(ValueError, match="rows is empty"):
        plots.plot_heatmaps(tmp_path, [], ["entry"], METRICS)


def test_heatmaps_refuse_bad_rows_and_metrics(tmp_path):
    rows = synthetic_rows({"entry": (0.04, 0.06)})
    with pytest.raises(ValueError, match=r"rows\[0\]\['params'\] lacks 'exit'"):
        plots.plot_heatmaps(tmp_path, rows, ["entry", "exit"], METRICS)
    with pytest.raises(ValueError, match="same params"):
        plots.plot_heatmaps(tmp_path, rows + [rows[0]], ["entry"], METRICS)
    with pytest.raises(ValueError, match="fmt 'percent'"):
        plots.plot_heatmaps(tmp_path, rows, ["entry"], [("net_apr", "net APR", "percent")])
    with pytest.raises(ValueError, match="no row has metric 'cagr'"):
        plots.plot_heatmaps(tmp_path, rows, ["entry"], [("cagr", "CAGR", "pct")])
