"""Monte Carlo throughput: paths per second of the default config in this
process and on local Dask clusters of 1 and 2 workers.

    .venv/bin/python benchmarks/montecarlo.py [--paths 40] [--days 365] [--workers 1,2]

Each path is a block-bootstrapped year of the shipped real history run through
the full simulator (`fundarb.research.study.run_path`). The cluster numbers
include shipping the market source to the workers and gathering results, but
not starting the cluster (timed separately). Measures only; never asserts.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from results_file import write_results

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "montecarlo_results.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fundarb Monte Carlo paths/s")
    ap.add_argument("--config", type=Path, default=ROOT / "sims" / "baseline.toml")
    ap.add_argument("--paths", type=int, default=40, help="paths per measurement (default 40)")
    ap.add_argument("--days", type=float, default=365.0, help="days per path (default 365)")
    ap.add_argument("--workers", default="1,2", help="local Dask cluster sizes to measure (default 1,2)")
    ap.add_argument("--no-inprocess", action="store_true", help="skip the in-process measurement")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    from fundarb.config import load
    from fundarb.data.history import load_history
    from fundarb.research.cluster import InProcess, chunk_runner
    from fundarb.research.study import StudySpec, run_study

    cfg = load(args.config)
    history = load_history((cfg.spot.exchange, cfg.spot.symbol), (cfg.perp.exchange, cfg.perp.symbol),
                           cfg.data.start, cfg.data.end, cfg.data.max_price_gap_hours)
    spec = StudySpec(paths=args.paths, days=args.days)
    runs: list[dict] = []

    def measure(label: str, runner, startup_s: float, workers: int) -> None:
        t0 = time.perf_counter()
        result = run_study(cfg, history, spec, runner)
        wall = time.perf_counter() - t0
        runs.append({
            "runner": label, "workers": workers, "paths": spec.paths, "days": spec.days,
            "seconds": round(wall, 3), "startup_seconds": round(startup_s, 3),
            "paths_per_s": round(spec.paths / wall, 3),
            "path_hours_per_s": round(spec.paths * spec.hours / wall, 1),
            "median_net_apr": float(sorted(r["net_apr"] for r in result.rows)[spec.paths // 2]),
        })
        print(f"{label:>22}: {spec.paths} paths x {spec.days:g} days in {wall:6.1f} s = "
              f"{spec.paths / wall:6.2f} paths/s  ({spec.paths * spec.hours / wall:,.0f} path-hours/s)"
              + (f", cluster start {startup_s:.1f} s" if startup_s else ""), flush=True)

    if not args.no_inprocess:
        measure("in process", InProcess(), 0.0, 1)
    for k in (int(w) for w in args.workers.split(",") if w.strip()):
        t0 = time.perf_counter()
        with chunk_runner(workers=k) as runner:
            startup = time.perf_counter() - t0
            measure(f"local Dask, {k} worker{'s' if k > 1 else ''}", runner, startup, k)

    write_results(args.out, {
        "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
        "runs": runs,
        "note": "full simulator per path (no vectorised fast path); the design's 10M path-steps/s budget is for such a fast path",
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
