"""The ``fundarb data stats`` outputs: stats.json, the CSVs and the PNGs
of ``fundarb.research.funding_stats``, written all-or-nothing."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import polars as pl

from fundarb.research.funding_stats import (
    DEFAULT_HOLDING_DAYS,
    DEFAULT_THRESHOLDS,
    MAIN_SERIES,
    MS_PER_DAY,
    NO_PRICE,
    REGIME_BAND,
    REGIME_LOOKBACK_DAYS,
    REGIMES,
    RULES,
    RUN_THRESHOLD_APR,
    SIGNAL_SETTLEMENTS,
    FundingStats,
    acf_curve,
    build_stats,
    fmt_ms,
    series_label,
)

STATS_FILE = "stats.json"
BY_VENUE_FILE = "by_venue.csv"
BY_YEAR_FILE = "by_year.csv"
BY_REGIME_FILE = "by_regime.csv"
THRESHOLDS_FILE = "thresholds.csv"
VENUE_PNG = "funding_by_venue.png"
YEAR_PNG = "funding_by_year.png"
THRESHOLDS_PNG = "thresholds.png"
PERSISTENCE_PNG = "persistence.png"
STATS_FILES = (STATS_FILE, BY_VENUE_FILE, BY_YEAR_FILE, BY_REGIME_FILE, THRESHOLDS_FILE,
               VENUE_PNG, YEAR_PNG, THRESHOLDS_PNG, PERSISTENCE_PNG)


def _rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return frame.rows(named=True)


def series_block(st: FundingStats) -> list[dict[str, Any]]:
    out = []
    for r in st.spans.rows(named=True):
        one = st.frame.filter((pl.col("venue") == r["venue"]) & (pl.col("symbol") == r["symbol"]))
        out.append({
            "venue": r["venue"], "symbol": r["symbol"], "first": fmt_ms(r["first_ms"]), "last": fmt_ms(r["last_ms"]),
            "settlements": r["settlements"], "gaps": r["gaps"],
            "interval_hours": sorted(set(one["interval_hours"].to_list())),
            "sources": sorted({s for s in one["source"].to_list() if s is not None}),
        })
    return out


def headline(st: FundingStats) -> dict[str, Any]:
    ref = series_label(*st.reference)
    best = st.common_stats.row(0, named=True)
    by_regime = st.by_regime.filter((pl.col("venue") == st.reference[0]) & (pl.col("symbol") == st.reference[1]))
    return {
        "reference_series": ref,
        "min_profitable_threshold": st.min_profitable[ref],
        "round_trip_cost": st.cost["round_trip_cost"],
        "best_venue_in_common_window": {"venue": best["venue"], "symbol": best["symbol"], "mean_apr": best["mean_apr"]},
        "reference_mean_apr_by_regime": {r["regime"]: r["mean_apr"] for r in by_regime.rows(named=True)},
    }


def stats_dict(st: FundingStats, inputs: dict[str, Any] | None = None, selection: dict[str, Any] | None = None) -> dict[str, Any]:
    from fundarb import __version__
    from fundarb.output.report import _clean

    sp = st.spans
    common = st.common
    members = set(common["series"])
    closes_range = None
    regime_rows = st.frame.filter(pl.col("regime") != NO_PRICE)
    if regime_rows.height:
        closes_range = [fmt_ms(int(cast(int, regime_rows["ts_ms"].min()))), fmt_ms(int(cast(int, regime_rows["ts_ms"].max())))]
    return _clean({
        "fundarb_version": __version__,
        "rules": RULES,
        "data": {"inputs": inputs or {}, "selection": selection or {}, "series": series_block(st),
                 "regime_labelled_settlements": closes_range},
        "cost": st.cost,
        "by_venue": _rows(st.by_venue),
        "by_year": _rows(st.by_year),
        "by_regime": _rows(st.by_regime),
        "persistence": {k: {kk: vv for kk, vv in v.items() if not kk.startswith("_")} for k, v in sorted(st.persistence.items())},
        "thresholds": {
            "reference_series": series_label(*st.reference),
            "min_profitable": dict(sorted(st.min_profitable.items())),
            "rows": _rows(st.thresholds),
        },
        "common_window": {
            "start": fmt_ms(common["start_ms"]), "end": fmt_ms(common["end_ms"]),
            "days": (common["end_ms"] - common["start_ms"]) / MS_PER_DAY,
            "series": [series_label(v, s) for v, s in common["series"]],
            "left_out": [series_label(v, s) for v, s in zip(sp["venue"], sp["symbol"]) if (v, s) not in members],
            "ranking": _rows(st.common_stats),
        },
        "headline": headline(st),
    })


def render_stats_json(st: FundingStats, inputs: dict[str, Any] | None = None, selection: dict[str, Any] | None = None) -> str:
    return json.dumps(stats_dict(st, inputs, selection), sort_keys=True, indent=2) + "\n"


# --- pictures ------------------------------------------------------------------

DPI = 110


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    plt = _plt()
    try:
        fig.savefig(path, dpi=DPI, metadata={"Software": None})
    finally:
        plt.close(fig)


def _num(v: float) -> str:
    """One decimal, and never "-0.0"."""
    text = f"{v:.1f}"
    return "0.0" if text == "-0.0" else text


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def daily_apr(frame: pl.DataFrame) -> pl.DataFrame:
    """Mean APR per series and UTC day: puts 1h and 8h venues on one footing."""
    return frame.with_columns((pl.col("ts_ms") // MS_PER_DAY).alias("day")).group_by(
        "venue", "symbol", "day").agg(pl.col("apr").mean()).sort("venue", "symbol", "day")


def plot_by_venue(st: FundingStats, path: Path) -> None:
    plt = _plt()
    import matplotlib.dates as mdates

    common = st.common
    order = [(r["venue"], r["symbol"]) for r in st.common_stats.rows(named=True)]
    inside = st.frame.filter((pl.col("ts_ms") >= common["start_ms"]) & (pl.col("ts_ms") <= common["end_ms"]))
    days = daily_apr(inside)
    data = [days.filter((pl.col("venue") == v) & (pl.col("symbol") == s))["apr"].to_numpy() * 100 for v, s in order]
    n_all = st.spans.height
    fig, (ax, cov) = plt.subplots(2, 1, figsize=(12, 6.5 + 0.28 * n_all), constrained_layout=True,
                                  gridspec_kw={"height_ratios": [3, 0.6 + 0.22 * n_all]})
    fig.suptitle(f"Funding APR by venue over their common window {fmt_ms(common['start_ms'])[:10]} .. "
                 f"{fmt_ms(common['end_ms'])[:10]} UTC", fontsize=12)
    ax.boxplot(data, whis=(5, 95), showfliers=False, widths=0.55, patch_artist=True,
               boxprops={"facecolor": "#cfe2f3", "edgecolor": "#3d6a99"}, medianprops={"color": "#3d6a99", "lw": 1.5})
    means = [r["mean_apr"] * 100 for r in st.common_stats.rows(named=True)]
    ax.plot(range(1, len(order) + 1), means, "D", color="tab:red", ms=6, label="mean (per settlement)", zorder=3)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(1, len(order) + 1), [f"{v}\n{s}\nmean {_num(m)}%" for (v, s), m in zip(order, means)], fontsize=8)
    ax.set_ylabel("daily mean funding APR (%)")
    ax.set_title("box 25-75%, whiskers 5-95% of daily mean APR (outliers not drawn), line median; "
                 "ordered by mean", fontsize=9, loc="left")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    _coverage(cov, st, mdates)
    _save(fig, path)


def _coverage(ax: Any, st: FundingStats, mdates: Any) -> None:
    rows = st.spans.rows(named=True)
    members = set(st.common["series"])
    for y, r in enumerate(reversed(rows)):
        inside = (r["venue"], r["symbol"]) in members
        a, b = _dt(r["first_ms"]), _dt(r["last_ms"])
        ax.plot([a, b], [y, y], lw=6, color="#3d6a99" if inside else "#b0b0b0", solid_capstyle="butt")
        gaps = f", {r['gaps']} gap{'s' if r['gaps'] != 1 else ''}" if r["gaps"] else ""
        ax.annotate(f"{r['settlements']:,} settlements{gaps}", (b, y), xytext=(5, 0), textcoords="offset points",
                    fontsize=7, va="center")
    ax.axvspan(_dt(st.common["start_ms"]), _dt(st.common["end_ms"]), color="tab:orange", alpha=0.15, label="common window")
    ax.set_yticks(range(len(rows)), [series_label(r["venue"], r["symbol"]) for r in reversed(rows)], fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    lo = min(r["first_ms"] for r in rows)
    hi = max(r["last_ms"] for r in rows)
    ax.set_xlim(_dt(lo), _dt(hi + (hi - lo) // 6))  # room for the labels
    loc = mdates.YearLocator()
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y"))
    ax.set_title("coverage of each series (grey: outside the common window, not in the boxes above)", fontsize=9, loc="left")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)


def _heat(ax: Any, values: np.ndarray, notes: list[list[str]], xlabels: list[str], ylabels: list[str], norm: Any) -> Any:
    im = ax.imshow(np.ma.masked_invalid(values), cmap="RdYlGn", norm=norm, aspect="auto")
    ax.set_facecolor("#eeeeee")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if notes[i][j]:
                v = values[i, j]
                dark = abs(v) > 0.75 * norm.vmax if np.isfinite(v) else False
                ax.text(j, i, notes[i][j], ha="center", va="center", fontsize=7.5, color="white" if dark else "black")
    ax.set_xticks(range(len(xlabels)), xlabels, fontsize=8)
    ax.set_yticks(range(len(ylabels)), ylabels, fontsize=8)
    ax.tick_params(length=0)
    return im


def plot_by_year(st: FundingStats, path: Path) -> None:
    plt = _plt()
    from matplotlib.colors import TwoSlopeNorm

    labels = [series_label(v, s) for v, s in zip(st.spans["venue"], st.spans["symbol"])]
    years = sorted(set(st.by_year["year"].to_list()))
    regimes = [r for r in REGIMES if r in set(st.by_regime["regime"].to_list())]
    yv = np.full((len(labels), len(years)), np.nan)
    yn = [["" for _ in years] for _ in labels]
    for r in st.by_year.rows(named=True):
        i, j = labels.index(series_label(r["venue"], r["symbol"])), years.index(r["year"])
        yv[i, j] = r["mean_apr"] * 100
        yn[i][j] = _num(yv[i, j]) + ("*" if r["coverage"] < 0.95 else "")
    rv = np.full((len(labels), len(regimes)), np.nan)
    rn = [["" for _ in regimes] for _ in labels]
    for r in st.by_regime.rows(named=True):
        i, j = labels.index(series_label(r["venue"], r["symbol"])), regimes.index(r["regime"])
        rv[i, j] = r["mean_apr"] * 100
        rn[i][j] = f"{_num(rv[i, j])}\nn={r['count']:,}"
    lim = float(np.nanpercentile(np.abs(np.concatenate([yv.ravel(), rv.ravel()])), 95))
    lim = max(5.0, math.ceil(lim / 5) * 5)
    norm = TwoSlopeNorm(vmin=-lim, vcenter=0.0, vmax=lim)
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 2.2 + 0.42 * len(labels)), constrained_layout=True,
                               gridspec_kw={"width_ratios": [max(len(years), 1), max(len(regimes), 1) * 1.3]})
    fig.suptitle("Mean funding APR (%) by calendar year and by BTC market regime", fontsize=12)
    _heat(a, yv, yn, [str(y) for y in years], labels, norm)
    a.set_title("by UTC year (* = data cover < 95% of the year)", fontsize=9, loc="left")
    im = _heat(b, rv, rn, regimes, labels, norm)
    b.set_title(f"by regime: trailing {REGIME_LOOKBACK_DAYS}d Binance spot BTC return > +{REGIME_BAND:.0%} bull,\n"
                f"< -{REGIME_BAND:.0%} bear, else sideways; no price data outside the price file + {REGIME_LOOKBACK_DAYS}d",
                fontsize=9, loc="left")
    b.set_yticklabels([])
    cb = fig.colorbar(im, ax=b, shrink=0.8, extend="both")
    cb.set_label("mean APR (%)")
    _save(fig, path)


HOLD_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:olive")


def plot_thresholds(st: FundingStats, path: Path) -> None:
    plt = _plt()
    v, s = st.reference
    ref = series_label(v, s)
    t = st.thresholds.filter((pl.col("venue") == v) & (pl.col("symbol") == s))
    holds = sorted(set(t["holding_days"].to_list()))
    fig, (gross, net, share) = plt.subplots(1, 3, figsize=(16, 5.4), constrained_layout=True,
                                            gridspec_kw={"width_ratios": [1.5, 1.5, 1]})
    fig.suptitle(f"Entry threshold on the {SIGNAL_SETTLEMENTS}-settlement signal: enter when it is above, hold H days "
                 f"({ref}; round trip {st.cost['round_trip_cost'] * 1e4:.1f} bp, {st.cost['config_name']} config)", fontsize=11)
    for k, h in enumerate(holds):
        c = HOLD_COLOURS[k % len(HOLD_COLOURS)]
        part = t.filter(pl.col("holding_days") == h)
        x = part["threshold_apr"].to_numpy() * 100
        fwd = np.array([math.nan if e is None else e * 100 for e in part["mean_forward_apr"].to_list()])
        y = np.array([math.nan if e is None else e * 100 for e in part["expected_net_apr"].to_list()])
        cost = st.cost["amortised_apr"][f"{h:g}"] * 100
        gross.plot(x, fwd, "o-", color=c, lw=1.8, label=f"hold {h:g} d")
        gross.axhline(cost, color=c, ls="--", lw=1.2)
        gross.annotate(f"cost {h:g} d: {cost:.1f}%", (1.0, cost), xycoords=("axes fraction", "data"), xytext=(-4, 3),
                       textcoords="offset points", ha="right", fontsize=8, color=c)
        net.plot(x, y, "o-", color=c, lw=1.8, label=f"hold {h:g} d")
        mp = st.min_profitable[ref].get(f"{h:g}")
        if mp is not None:
            net.plot([mp["threshold_apr"] * 100], [mp["expected_net_apr"] * 100], "o", ms=13, mfc="none", mec=c, mew=1.8)
    xs = t["threshold_apr"].to_numpy() * 100
    pad = max(1.0, 0.05 * float(xs.max() - xs.min()))
    for ax, col in ((gross, "mean_forward_apr"), (net, "expected_net_apr")):
        ax.set_xlim(float(xs.min()) - pad, float(xs.max()) + pad)
        if t[col].is_null().all():
            ax.text(0.5, 0.5, "no entry with a full signal and a complete\nholding window in this selection",
                    transform=ax.transAxes, ha="center", va="center", fontsize=10, color="grey")
    gross.set_ylim(bottom=0)
    gross.set_ylabel("APR (%)")
    gross.set_title("mean funding APR over the next H days (solid)\nvs round-trip cost x 365 / H (dashed)", fontsize=9, loc="left")
    net.axhline(0, color="black", lw=0.9)
    net.set_ylabel("expected net APR (%)")
    net.set_title("expected net APR = funding - cost\ncircled: minimum profitable threshold", fontsize=9, loc="left")
    for ax in (gross, net):
        ax.set_xlabel("entry threshold: signal APR above (%)")
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
    first = t.filter(pl.col("holding_days") == holds[0])
    thresholds = first["threshold_apr"].to_list()
    sh = first["share_above"].fill_null(0.0).to_numpy() * 100
    pos = np.arange(len(thresholds))
    share.bar(pos, sh, width=0.6, color="#9fb8d4", edgecolor="#3d6a99")
    for xi, si in zip(pos, sh) if not first["share_above"].is_null().all() else ():
        share.annotate(f"{si:.0f}%", (xi, si), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=8)
    share.set_xticks(pos, [f"{th * 100:g}" for th in thresholds])
    if first["share_above"].is_null().all():
        share.text(0.5, 0.5, f"fewer than {SIGNAL_SETTLEMENTS} settlements:\nno signal", transform=share.transAxes,
                   ha="center", va="center", fontsize=10, color="grey")
    share.set_ylim(0, 108)
    share.set_xlabel("entry threshold: signal APR above (%)")
    share.set_ylabel("share of settlements (%)")
    share.set_title("time the signal is above the threshold", fontsize=9, loc="left")
    share.grid(axis="y", alpha=0.3)
    _save(fig, path)


def main_series(st: FundingStats, n: int = MAIN_SERIES) -> list[tuple[str, str]]:
    rows = sorted(st.spans.rows(named=True), key=lambda r: (-(r["last_ms"] - r["first_ms"]), r["venue"], r["symbol"]))
    return [(r["venue"], r["symbol"]) for r in rows[:n]]


SERIES_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def plot_persistence(st: FundingStats, path: Path) -> None:
    plt = _plt()
    chosen = main_series(st)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), constrained_layout=True)
    fig.suptitle(f"Persistence of funding: autocorrelation and run lengths ({len(chosen)} longest-running series)", fontsize=12)
    acf_ax, up_ax, down_ax = axes
    for k, (v, s) in enumerate(chosen):
        c = SERIES_COLOURS[k % len(SERIES_COLOURS)]
        one = st.frame.filter((pl.col("venue") == v) & (pl.col("symbol") == s))
        lag_days, acf = acf_curve(one)
        acf_ax.plot(lag_days, acf, color=c, lw=1.3, label=series_label(v, s))
        runs_days = st.persistence[series_label(v, s)]["_run_days"]
        for ax, key in ((up_ax, "above"), (down_ax, "negative")):
            d = np.asarray(runs_days[key], dtype=np.float64)
            if d.size:
                u = np.unique(d)
                surv = np.array([(d >= x).mean() for x in u])  # share of runs lasting >= x; holds on (prev, x]
                ax.step(u, surv * 100, where="pre", color=c, lw=1.3, label=series_label(v, s))
    acf_ax.axhline(0, color="black", lw=0.8)
    acf_ax.set_xlabel("lag (days; settlements x interval)")
    acf_ax.set_ylabel("autocorrelation of settlement APR")
    acf_ax.set_title("autocorrelation by lag", fontsize=9, loc="left")
    acf_ax.set_ylim(-0.2, 1.0)
    for ax, what in ((up_ax, f"runs with APR > {RUN_THRESHOLD_APR:.0%}"), (down_ax, "runs of negative funding")):
        ax.set_xscale("log")
        lo, hi = ax.get_xlim()
        ticks = [t for t in (1 / 24, 1 / 3, 1, 3, 10, 30, 100, 300) if lo <= t <= hi]
        ax.set_xticks(ticks, [{1 / 24: "1 h", 1 / 3: "8 h"}.get(t, f"{t:g} d") for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("run length (log scale)")
        ax.set_ylabel("share of runs lasting at least that long (%)")
        ax.set_title(what, fontsize=9, loc="left")
        ax.set_ylim(0, 102)
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7.5)
    _save(fig, path)


# --- output folder and command ---------------------------------------------------

def csv_text(frame: pl.DataFrame) -> str:
    return frame.write_csv(float_precision=None)


def write_stats(frame: pl.DataFrame, out: Path, venues: Sequence[str] | None = None, *,
                prices: pl.DataFrame | None = None, since: str | None = None, until: str | None = None,
                thresholds: Sequence[float] = DEFAULT_THRESHOLDS, holding_days: Sequence[float] = DEFAULT_HOLDING_DAYS,
                cfg: Any = None, cost_price: float | None = None,
                inputs: dict[str, Any] | None = None) -> tuple[FundingStats, dict[str, Path]]:
    """Compute everything on the raw settlements ``frame`` and write
    stats.json, the CSVs and the PNGs into ``out``, all-or-nothing: any error
    is raised before ``out`` changes."""
    from fundarb.output.report import check_output_folder, publish_folder

    check_output_folder(out, STATS_FILES)
    st = build_stats(frame, venues, prices=prices, since=since, until=until, thresholds=thresholds,
                     holding_days=holding_days, cfg=cfg, cost_price=cost_price)
    selection = {"venues": sorted(venues) if venues else "all", "since": since, "until": until,
                 "thresholds_apr": list(thresholds), "holding_days": list(holding_days)}

    def build(tmp: Path) -> None:
        (tmp / STATS_FILE).write_text(render_stats_json(st, inputs, selection))
        (tmp / BY_VENUE_FILE).write_text(csv_text(st.by_venue))
        (tmp / BY_YEAR_FILE).write_text(csv_text(st.by_year))
        (tmp / BY_REGIME_FILE).write_text(csv_text(st.by_regime))
        (tmp / THRESHOLDS_FILE).write_text(csv_text(st.thresholds))
        plot_by_venue(st, tmp / VENUE_PNG)
        plot_by_year(st, tmp / YEAR_PNG)
        plot_thresholds(st, tmp / THRESHOLDS_PNG)
        plot_persistence(st, tmp / PERSISTENCE_PNG)

    publish_folder(out, STATS_FILES, build)
    return st, {name: out / name for name in STATS_FILES}


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _pct(v: float | None, digits: int = 1) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v * 100:.{digits}f}%"


def print_headline(st: FundingStats, console: Any, paths: dict[str, Path]) -> None:
    from rich.table import Table

    t = Table(title="funding APR by venue (neg. = share of settlements < 0)")
    columns: tuple[tuple[str, Literal["left", "right"]], ...] = (
        ("series", "left"), ("span", "left"), ("n", "right"), ("mean", "right"), ("median", "right"), ("neg.", "right"))
    for col, just in columns:
        t.add_column(col, justify=just, no_wrap=col in ("series", "span"))
    for r in st.by_venue.rows(named=True):
        t.add_row(series_label(r["venue"], r["symbol"]), f"{r['first'][:7]}..{r['last'][:7]}", f"{r['count']:,}",
                  _pct(r["mean_apr"], 2), _pct(r["median_apr"], 2), _pct(r["share_negative"]))
    console.print(t)
    common, best = st.common, st.common_stats.row(0, named=True)
    console.print(f"common window {fmt_ms(common['start_ms'])[:10]} .. {fmt_ms(common['end_ms'])[:10]} "
                  f"({len(common['series'])} series): best {series_label(best['venue'], best['symbol'])} "
                  f"mean {_pct(best['mean_apr'])}", highlight=False)
    ref = series_label(*st.reference)
    m = Table(title=f"minimum profitable entry threshold, {ref}")
    for col in ("hold", "cost APR", "min threshold", "share of time", "expected net APR"):
        m.add_column(col, justify="right")
    ref_rows = st.thresholds.filter((pl.col("venue") == st.reference[0]) & (pl.col("symbol") == st.reference[1]))
    for h, row in st.min_profitable[ref].items():
        cost = st.cost["amortised_apr"][h]
        if row is None:
            entries = ref_rows.filter(pl.col("holding_days") == float(h))["entries"].sum()
            m.add_row(f"{h} d", _pct(cost), "none" if entries else "no data", "-", "-")
        else:
            m.add_row(f"{h} d", _pct(cost), _pct(row["threshold_apr"], 0), _pct(row["share_above"]), _pct(row["expected_net_apr"]))
    console.print(m)
    console.print(f"round-trip cost {st.cost['round_trip_cost'] * 1e4:.1f} bp of notional ({st.cost['config_name']} config, "
                  f"BTC at {st.cost['price']:,.0f})", highlight=False)
    for p in paths.values():
        console.print(f"wrote {p}", highlight=False)


