"""Monte Carlo throughput of the two engines, in one run: the compiled path
kernel and the event simulator, on the default config's study.

    .venv/bin/python benchmarks/montecarlo.py [--sim-paths 40] [--kernel-paths 2000] [--days 365] [--workers 1,2]

Each path is a block-bootstrapped year of the shipped real history
(``fundarb.research.study``). Measured, in this process:

1. the simulator: ``run_study(..., engine="simulator")`` over --sim-paths;
2. the kernel: ``run_study(..., engine="kernel")`` over --kernel-paths (the
   whole study as `fundarb montecarlo` runs it: bootstrap, draws, kernel,
   metrics, equity), after one warm-up path that loads (or compiles) it, on
   one thread and then on a thread per usable core (the CLI's default);
3. the kernel's loop alone: ``kernel.run_path`` over the same paths'
   prepared arrays, without the Python around it;

then the kernel's study on local Dask clusters of --workers (cluster start
timed apart). Path-hours/s for each, and the ratio kernel / simulator.
Measures only; never asserts.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from results_file import write_results

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "montecarlo_results.json"
KERNEL_TARGET = 10_000_000  # path-hours/s per core


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fundarb Monte Carlo path-hours/s: kernel and simulator")
    ap.add_argument("--config", type=Path, default=ROOT / "sims" / "spot_perp.toml")
    ap.add_argument("--sim-paths", type=int, default=40, help="paths on the simulator (default 40)")
    ap.add_argument("--kernel-paths", type=int, default=2000, help="paths on the kernel (default 2000)")
    ap.add_argument("--days", type=float, default=365.0, help="days per path (default 365)")
    ap.add_argument("--workers", default="1,2", help="local Dask cluster sizes for the kernel (default 1,2; '' none)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    import numpy as np

    from fundarb.config import load
    from fundarb.data.history import load_history
    from fundarb.research import kernel as K
    from fundarb.research.bootstrap import cut_periods
    from fundarb.research.cluster import InProcess, chunk_runner, usable_cores
    from fundarb.research.study import KERNEL, SIMULATOR, StudySpec, path_history, path_seeds, resolve_block, run_study

    cfg = load(args.config)
    history = load_history((cfg.spot.exchange, cfg.spot.symbol), (cfg.perp.exchange, cfg.perp.symbol),
                           cfg.data.start, cfg.data.end, cfg.data.max_price_gap_hours)
    runs: list[dict] = []

    def measure(label: str, engine: str, paths: int, runner, startup_s: float = 0.0) -> dict:
        spec = StudySpec(paths=paths, days=args.days)
        t0 = time.perf_counter()
        result = run_study(cfg, history, spec, runner, engine=engine)
        wall = time.perf_counter() - t0
        run = {
            "engine": engine, "runner": label, "workers": runner.workers, "paths": paths, "days": spec.days,
            "seconds": round(wall, 3), "startup_seconds": round(startup_s, 3),
            "path_hours_per_s": round(paths * spec.hours / wall, 1),
            "paths_on_simulator": result.on_simulator,
            "median_net_apr": float(np.median([r["net_apr"] for r in result.rows])),
        }
        runs.append(run)
        print(f"{engine:>9} {label:>20}: {paths:>6} paths x {spec.days:g} days in {wall:7.2f} s = "
              f"{run['path_hours_per_s']:>13,.0f} path-hours/s"
              + (f"  (cluster start {startup_s:.1f} s)" if startup_s else "")
              + (f"  on the simulator: {result.on_simulator}" if result.on_simulator else ""), flush=True)
        return run

    sim = measure("in process", SIMULATOR, args.sim_paths, InProcess())
    t0 = time.perf_counter()
    run_study(cfg, history, StudySpec(paths=1, days=1), InProcess(), engine=KERNEL)
    load_s = time.perf_counter() - t0
    print(f"kernel load (compiled once per machine, then read from {K.CACHE_DIR}): {load_s:.1f} s", flush=True)
    ker = measure("in process", KERNEL, args.kernel_paths, InProcess())
    cores = usable_cores()
    if cores > 1:  # `fundarb montecarlo`'s default: a thread per usable core, no worker processes to start
        measure(f"in process, {cores} threads", KERNEL, args.kernel_paths, InProcess(cores))

    # the loop alone: the same paths' arrays prepared first
    spec = StudySpec(paths=args.kernel_paths, days=args.days)
    src = cut_periods(history)
    block, _ = resolve_block(spec, src)
    n_loop = min(args.kernel_paths, 500)
    prepared = []
    for i in range(n_loop):
        h = path_history(cfg, src, spec.hours, block, i)
        tape = K.path_tape(h, cfg)
        if isinstance(tape, int):
            continue
        params, columns = K.kernel_params(cfg, float(h.spot[0]))
        prepared.append((tape, tuple(params.tolist()), tuple(tuple(c.tolist()) for c in columns),
                         K.path_draws(cfg, path_seeds(cfg.seed, i)[1], K.DRAWS)))
    ws = K.Workspace()
    hours = 0
    t0 = time.perf_counter()
    for tape, P, rule, draws in prepared:
        curve = np.empty(tape.hours.size)
        K.run_path(tape.hours, tape.spot, tape.perp, tape.mark, tape.fund_at, tape.fund_rate, tape.fund_interval,
                   tape.fund_step, tape.fund_mark, P, rule, *draws, ws.F, ws.N, curve, ws.TF, ws.TI, ws.no_trace)
        hours += tape.hours.size
    loop_s = time.perf_counter() - t0
    loop = {"engine": "kernel loop alone", "paths": len(prepared), "seconds": round(loop_s, 4),
            "path_hours_per_s": round(hours / loop_s, 1)}
    runs.append(loop)
    print(f"kernel loop alone (kernel.run_path, arrays prepared): {len(prepared)} paths in {loop_s:.3f} s = "
          f"{hours / loop_s:,.0f} path-hours/s per core (target {KERNEL_TARGET:,})", flush=True)

    for k in (int(w) for w in args.workers.split(",") if w.strip()):
        t0 = time.perf_counter()
        with chunk_runner(workers=k) as runner:
            startup = time.perf_counter() - t0
            measure(f"local Dask, {k} worker{'s' if k > 1 else ''}", KERNEL, args.kernel_paths, runner, startup)

    ratio = ker["path_hours_per_s"] / sim["path_hours_per_s"]
    print(f"kernel / simulator, whole study in process: {ratio:,.0f}x; "
          f"kernel loop / simulator: {loop['path_hours_per_s'] / sim['path_hours_per_s']:,.0f}x")
    write_results(args.out, {
        "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
        "cpus": os.cpu_count(),
        "kernel_load_seconds": round(load_s, 3),
        "runs": runs,
        "ratio_kernel_to_simulator": round(ratio, 1),
        "ratio_kernel_loop_to_simulator": round(loop["path_hours_per_s"] / sim["path_hours_per_s"], 1),
        "kernel_target_path_hours_per_s_per_core": KERNEL_TARGET,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
