"""Pictures of a Monte Carlo study and of a parameter sweep.

Pure functions: arrays or rows in, PNG files out. Each one opens its own
figure and closes it; nothing is kept between calls. PNGs are written without
the matplotlib version stamp, so the same inputs give the same bytes.
"""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path
from typing import Any

import matplotlib

if "matplotlib.pyplot" not in sys.modules:
    # files, not windows: but a notebook that already chose its backend
    # (inline) keeps it when it imports fundarb
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

DPI = 110
SAMPLE_PATHS = 20
MISSING_COLOUR = "#d9d9d9"
HIGHLIGHT_COLOUR = "red"

# The three per-path metrics plot_distributions draws, in panel order:
# key -> (axis label, shown in percent, which side of the gate passes).
# The sides are those of backtest.GATES (a test keeps them in step).
DISTRIBUTION_KEYS: dict[str, tuple[str, bool, str]] = {
    "net_apr": ("net APR", True, ">"),
    "sharpe": ("Sharpe", False, ">"),
    "max_drawdown": ("max drawdown", True, "<"),
}

HEATMAP_FORMATS = ("pct", "num")


def _save(fig: Any, path: Path) -> None:
    try:
        fig.savefig(path, dpi=DPI, metadata={"Software": None})
    finally:
        plt.close(fig)


def _nan_percentiles(a: np.ndarray, qs: list[float]) -> np.ndarray:
    """Percentiles of each column over its finite values; a column with none
    gives NaN (without numpy's all-NaN warning). Returns shape (len(qs), n_cols)."""
    out = np.full((len(qs), a.shape[1]), np.nan)
    finite = np.isfinite(a)
    has = finite.any(axis=0)
    if has.any():
        sub = np.where(finite[:, has], a[:, has], np.nan)
        out[:, has] = np.nanpercentile(sub, qs, axis=0)
    return out


def _signed_pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:+.1%}"


# ---------------------------------------------------------------- fan chart


def plot_fan(path: Path, day_offsets: np.ndarray, equity: np.ndarray, capital: float, title: str) -> None:
    """Fan chart of equity across Monte Carlo paths.

    ``day_offsets``: shape (n_days,), days since the path start;
    ``equity``: shape (n_paths, n_days), USDT marked to market each day.
    Draws the 5-95% and 25-75% bands across paths, the median, the first
    ``SAMPLE_PATHS`` paths faintly, and a dashed line at ``capital``; the
    subtitle gives the last day's median and 5th percentile as return on capital.
    NaN marks (a path with no value that day) are left out of that day's bands.
    """
    days = np.asarray(day_offsets, dtype=float)
    eq = np.asarray(equity, dtype=float)
    if days.ndim != 1 or days.size == 0:
        raise ValueError(f"day_offsets must be a non-empty 1-d array, got shape {days.shape}")
    if eq.ndim != 2 or eq.shape[0] == 0:
        raise ValueError(f"equity must be a 2-d array (n_paths, n_days) with at least one path, got shape {eq.shape}")
    if eq.shape[1] != days.size:
        raise ValueError(f"equity has {eq.shape[1]} days per path but day_offsets has {days.size}")
    if not (math.isfinite(capital) and capital > 0):
        raise ValueError(f"capital must be a positive number, got {capital!r}")

    p5, p25, p50, p75, p95 = _nan_percentiles(eq, [5, 25, 50, 75, 95])
    n_paths = eq.shape[0]

    fig, ax = plt.subplots(figsize=(10, 5.5), constrained_layout=True)
    fig.suptitle(title)
    for i in range(min(SAMPLE_PATHS, n_paths)):
        ax.plot(days, eq[i], color="tab:grey", lw=0.5, alpha=0.35,
                label=f"first {min(SAMPLE_PATHS, n_paths)} paths" if i == 0 else None, zorder=1)
    ax.fill_between(days, p5, p95, color="tab:blue", alpha=0.18, lw=0, label="5-95%", zorder=2)
    ax.fill_between(days, p25, p75, color="tab:blue", alpha=0.35, lw=0, label="25-75%", zorder=3)
    ax.plot(days, p50, color="tab:blue", lw=1.8, label="median", zorder=4)
    ax.axhline(capital, color="black", lw=0.7, ls="--", label=f"capital {capital:,.0f}", zorder=5)

    final_median, final_p5 = p50[-1] / capital - 1, p5[-1] / capital - 1
    ax.set_title(f"{n_paths:,} paths; day {days[-1]:.0f}: median {_signed_pct(final_median)}, "
                 f"p5 {_signed_pct(final_p5)} on capital", fontsize=9, loc="left")
    ax.set_xlabel("days")
    ax.set_ylabel("equity (USDT)")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    if days.size > 1:
        ax.set_xlim(days[0], days[-1])
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    _save(fig, path)


# ------------------------------------------------------------ distributions


def _gate_text(value: float, pct: bool) -> str:
    if not pct:
        return f"{value:g}"
    return f"{value:.0%}" if float(value * 100).is_integer() else f"{value:.1%}"


def plot_distributions(path: Path, samples: dict[str, np.ndarray], thresholds: dict[str, float], title: str) -> None:
    """Histograms of net APR, Sharpe and max drawdown across paths, side by side.

    ``samples[key]`` holds one value per path for each key of
    ``DISTRIBUTION_KEYS``; ``thresholds[key]`` is that key's success gate.
    Non-finite values are dropped from the histogram and counted in the
    panel title; they count as not passing the gate (the pass share is over
    all paths). APR and drawdown axes are in percent.
    """
    missing = [k for k in DISTRIBUTION_KEYS if k not in samples]
    if missing:
        raise ValueError(f"samples lacks {', '.join(missing)} (needs {', '.join(DISTRIBUTION_KEYS)})")
    missing = [k for k in DISTRIBUTION_KEYS if k not in thresholds]
    if missing:
        raise ValueError(f"thresholds lacks {', '.join(missing)} (needs {', '.join(DISTRIBUTION_KEYS)})")

    fig, axes = plt.subplots(1, len(DISTRIBUTION_KEYS), figsize=(14, 4.6), constrained_layout=True)
    fig.suptitle(title)
    for ax, (key, (label, pct, side)) in zip(axes, DISTRIBUTION_KEYS.items()):
        values = np.asarray(samples[key], dtype=float).ravel()
        gate = float(thresholds[key])
        finite = values[np.isfinite(values)]
        dropped = values.size - finite.size
        scale = 100.0 if pct else 1.0
        show = (lambda v: f"{v:.1%}") if pct else (lambda v: f"{v:.2f}")

        passed = int(np.count_nonzero(finite > gate if side == ">" else finite < gate))
        if finite.size:
            if finite.min() == finite.max():  # one bar, centred on the value
                half = max(abs(finite[0]) * 0.01, 1e-4) * scale
                bins: Any = [finite[0] * scale - half, finite[0] * scale + half]
            else:
                bins = int(np.clip(round(math.sqrt(finite.size)), 10, 50))
            ax.hist(finite * scale, bins=bins, color="tab:blue", alpha=0.75, edgecolor="white", lw=0.4)
            med, lo, hi = np.percentile(finite, [50, 5, 95])
            ax.axvline(med * scale, color="black", lw=1.4, label=f"median {show(med)}")
            stats = f"median {show(med)}, p5 {show(lo)}, p95 {show(hi)}"
        else:
            ax.text(0.5, 0.5, "no finite values", transform=ax.transAxes, ha="center", va="center", color="grey")
            stats = "no finite values"
            ax.set_xlim(gate * scale - abs(gate * scale) - 1, gate * scale + abs(gate * scale) + 1)
        ax.axvline(gate * scale, color="tab:red", lw=1.4, ls="--", label=f"gate {side} {_gate_text(gate, pct)}")

        note = f"{passed / values.size:.0%} of {values.size:,} pass the gate" if values.size else "no paths"
        if dropped:
            note += f"; {dropped:,} non-finite dropped (count as fail)"
        ax.set_title(f"{label}\n{stats}\n{note}", fontsize=9)
        ax.set_xlabel(f"{label} (%)" if pct else label)
        ax.set_ylabel("paths")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    _save(fig, path)


# ----------------------------------------------------------------- heatmaps


def _as_float(value: Any) -> float:
    """A metric value as a float: None and non-numbers become NaN."""
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _tick(v: float) -> str:
    return f"{v:g}"


def _format_cell(v: float, fmt: str) -> str:
    return f"{v:.1%}" if fmt == "pct" else f"{v:.2f}"


def plot_heatmaps(out_dir: Path, rows: list[dict], params: list[str], metrics: list[tuple[str, str, str]],
                  highlight: int | None = None) -> list[Path]:
    """One heatmap PNG per metric of a parameter sweep, ``out_dir / f"heatmap_{key}.png"``.

    ``rows``: one dict per swept config, ``row["params"][name]`` a number for
    every name in ``params``, metric values at top-level keys (NaN or None
    allowed). ``metrics``: (key, label, fmt), fmt "pct" or "num".
    One param gives a single row of cells; two put ``params[0]`` across and
    ``params[1]`` up; with more, one panel per combination of the others, all
    on one colour scale. Each cell is annotated with its value; no value
    ("n/a") and combinations never run (blank) are grey. ``highlight`` is a
    row index whose cell gets a box, called "recommended" in the title.
    Returns the paths in ``metrics`` order.
    """
    if not rows:
        raise ValueError("rows is empty: a sweep with no configs has nothing to plot")
    if not params:
        raise ValueError("params is empty: name at least one swept parameter")
    if len(set(params)) != len(params):
        raise ValueError(f"params names a parameter twice: {params}")
    if not metrics:
        raise ValueError("metrics is empty: name at least one metric to plot")
    for key, _, fmt in metrics:
        if fmt not in HEATMAP_FORMATS:
            raise ValueError(f"metric {key!r} has fmt {fmt!r}; use one of {', '.join(HEATMAP_FORMATS)}")
        if not any(key in row for row in rows):
            raise ValueError(f"no row has metric {key!r}")
    if highlight is not None and (isinstance(highlight, bool) or not isinstance(highlight, (int, np.integer))
                                  or not 0 <= highlight < len(rows)):
        raise ValueError(f"highlight={highlight!r} is not a row index: rows has {len(rows)} entries (0..{len(rows) - 1})")

    # each row's coordinates, and the sorted values of each parameter
    coords: list[tuple[float, ...]] = []
    for i, row in enumerate(rows):
        p = row.get("params")
        if not isinstance(p, dict):
            raise ValueError(f"rows[{i}] has no 'params' dict")
        point: list[float] = []
        for name in params:
            if name not in p:
                raise ValueError(f"rows[{i}]['params'] lacks {name!r}")
            v = _as_float(p[name])
            if not math.isfinite(v):
                raise ValueError(f"rows[{i}]['params'][{name!r}] = {p[name]!r} is not a finite number")
            point.append(v)
        coords.append(tuple(point))
    seen: dict[tuple[float, ...], int] = {}
    for i, c in enumerate(coords):
        if c in seen:
            raise ValueError(f"rows[{seen[c]}] and rows[{i}] have the same params {dict(zip(params, c))}")
        seen[c] = i
    levels = [sorted({c[j] for c in coords}) for j in range(len(params))]

    x_vals = levels[0]
    y_vals: list[float | None] = list(levels[1]) if len(params) > 1 else [None]
    panels = list(itertools.product(*levels[2:]))  # [()] with fewer than 3 params
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)

    cell_w, cell_h = 0.85, 0.55
    panel_w = max(2.6, cell_w * len(x_vals) + 1.3)
    panel_h = 1.3 if len(params) == 1 else max(2.2, cell_h * len(y_vals) + 1.2)
    figsize = (panel_w * ncols + 1.4, panel_h * nrows + 1.3)

    cmap = matplotlib.colormaps["viridis"].with_extremes(bad=MISSING_COLOUR)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for key, label, fmt in metrics:
        values = [_as_float(row.get(key)) for row in rows]
        finite = [v for v in values if math.isfinite(v)]
        vmin, vmax = (min(finite), max(finite)) if finite else (0.0, 1.0)
        if vmin == vmax:
            pad = abs(vmin) * 0.05 or 0.01
            vmin, vmax = vmin - pad, vmax + pad
        norm = Normalize(vmin, vmax)
        # cells are a fixed size in inches: shrink the text only for long labels
        widest = max((len(_format_cell(v, fmt)) for v in finite), default=3)
        fontsize = 9 if widest <= 6 else 8 if widest <= 8 else 6

        fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, constrained_layout=True)
        flat = axes.ravel()
        for ax in flat[len(panels):]:
            ax.set_visible(False)
        image = None
        for ax, rest in zip(flat, panels):
            grid = np.full((len(y_vals), len(x_vals)), np.nan)
            present = np.zeros(grid.shape, dtype=bool)
            index = np.full(grid.shape, -1)
            for yi, y in enumerate(y_vals):
                for xi, x in enumerate(x_vals):
                    c = (x,) + ((y,) if y is not None else ()) + tuple(rest)
                    found = seen.get(c)
                    if found is not None:
                        grid[yi, xi], present[yi, xi], index[yi, xi] = values[found], True, found
            image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, origin="lower", aspect="auto",
                              interpolation="nearest")
            for yi in range(len(y_vals)):
                for xi in range(len(x_vals)):
                    v = grid[yi, xi]
                    if not present[yi, xi]:
                        continue
                    if math.isfinite(v):
                        r, g, b, _ = cmap(norm(v))
                        colour = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                        ax.text(xi, yi, _format_cell(v, fmt), ha="center", va="center", fontsize=fontsize, color=colour)
                    else:
                        ax.text(xi, yi, "n/a", ha="center", va="center", fontsize=fontsize, color="dimgrey")
                    if highlight is not None and index[yi, xi] == highlight:
                        ax.add_patch(Rectangle((xi - 0.5, yi - 0.5), 1, 1, fill=False, edgecolor=HIGHLIGHT_COLOUR,
                                               lw=2.5, zorder=5, clip_on=False))
            ax.set_xticks(range(len(x_vals)), [_tick(v) for v in x_vals])
            ax.set_xlabel(params[0])
            if len(params) > 1:
                ax.set_yticks(range(len(y_vals)), [_tick(v) for v in levels[1]])
                ax.set_ylabel(params[1])
            else:
                ax.set_yticks([])
            if rest:
                ax.set_title(", ".join(f"{n}={_tick(v)}" for n, v in zip(params[2:], rest)), fontsize=9)
            ax.tick_params(length=0)
            for spine in ax.spines.values():
                spine.set_visible(False)

        assert image is not None  # at least one panel is drawn
        cbar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.9 if nrows > 1 else 1.0, pad=0.02)
        cbar.ax.yaxis.set_major_formatter(FuncFormatter(
            (lambda v, _: f"{v:.1%}") if fmt == "pct" else (lambda v, _: f"{v:.2f}")))
        cbar.set_label(label)
        if not finite:
            cbar.set_ticks([])
            cbar.set_label(f"{label} (no values)")

        head = f"{label} by {' × '.join(params)}"
        if highlight is not None:
            best = ", ".join(f"{n}={_tick(v)}" for n, v in zip(params, coords[highlight]))
            head += f"\nrecommended (boxed): {best}"
        fig.suptitle(head, fontsize=11)
        legend = [Patch(facecolor=MISSING_COLOUR, label="n/a: no value; blank grey: not run")]
        if highlight is not None:
            legend.append(Patch(facecolor="none", edgecolor=HIGHLIGHT_COLOUR, lw=2, label="recommended"))
        fig.legend(handles=legend, loc="outside lower center", ncols=len(legend), fontsize=8, frameon=False)

        path = out_dir / f"heatmap_{key}.png"
        _save(fig, path)
        written.append(path)
    return written
