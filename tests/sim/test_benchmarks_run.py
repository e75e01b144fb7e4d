"""The benchmark script still runs (a smoke test on a tiny workload; it
asserts what was measured, never how fast)."""

import json
import subprocess
import sys
from pathlib import Path

from fundarb.research.cluster import usable_cores

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_script_runs_and_writes_its_json(tmp_path):
    out = tmp_path / "bench.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quotes", "20000", "--quotes-per-order", "2000",
         "--repeat", "1", "--no-backtest", "--out", str(out)],
        check=True, cwd=ROOT, timeout=300, capture_output=True,
    )
    res = json.loads(out.read_text())
    syn = res["synthetic"]
    assert syn["quotes"] == 20000 and syn["events"] >= syn["tape_events"]
    assert syn["order_decisions"] == 9 and syn["fills"] >= syn["orders"] > 0  # one decision per 2,000 quotes
    assert syn["quotes_per_s"] > 0 and syn["heap_tuples_per_s"] > 0
    lat = res["latency"]
    assert lat["tick_to_decision"]["n"] > 20000
    assert lat["tick_to_order_submitted"]["n"] >= 5


def test_montecarlo_benchmark_runs_and_writes_its_json(tmp_path):
    out = tmp_path / "mc.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "montecarlo.py"), "--sim-paths", "2", "--kernel-paths", "3",
         "--days", "3", "--workers", "1", "--out", str(out)],
        check=True, cwd=ROOT, timeout=300, capture_output=True,
    )
    res = json.loads(out.read_text())
    runs = res["runs"]
    cores = usable_cores()
    threaded = [("kernel", f"in process, {cores} threads")] if cores > 1 else []
    assert [(r["engine"], r.get("runner")) for r in runs] == [
        ("simulator", "in process"), ("kernel", "in process"), *threaded, ("kernel loop alone", None),
        ("kernel", "local Dask, 1 worker")]
    assert [r["paths"] for r in runs] == [2, 3, *[3] * len(threaded), 3, 3]
    assert all(r["path_hours_per_s"] > 0 for r in runs)
    # the same paths give the same result wherever and on whichever engine they run
    kernel_runs = [r for r in runs if r["engine"] == "kernel"]
    assert len({r["median_net_apr"] for r in kernel_runs}) == 1
    assert res["ratio_kernel_to_simulator"] > 0


def test_replay_benchmark_runs_and_writes_its_json(tmp_path):
    out = tmp_path / "replay.json"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "replay.py"), "--repeat", "1", "--out", str(out),
         str(ROOT / "recordings" / "bitmex_xbtusd_2021-07-22")],
        check=True, cwd=ROOT, timeout=300, capture_output=True,
    )
    (row,) = json.loads(out.read_text())["recordings"]
    assert row["recording"] == "bitmex_xbtusd_2021-07-22" and row["messages"] == 2120 and row["events"] == 302
    assert all(row[f"{k}_messages_per_s"] > 0 for k in ("parse_cold", "parse_cached", "replay_cold", "replay_cached"))
