"""Replay throughput: recorded messages per second, cold (parsing the capture
files through cryptofeed) and cached (reading the parsed-event parquet), for
the parse alone and for the whole replay through the engine.

    .venv/bin/python benchmarks/replay.py [--repeat 3] [--out benchmarks/replay_results.json]

Measures only; never asserts.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from results_file import write_results

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "replay_results.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fundarb replay messages/s, cold and cached")
    ap.add_argument("--repeat", type=int, default=3, help="runs to take the best of (default 3)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("recordings", nargs="*", help="recording folders (default: every one in recordings/)")
    args = ap.parse_args(argv)

    from fundarb.app.replay import run_replay
    from fundarb.config import load
    from fundarb.replay.parse import load_recording, parse_feed

    folders = [Path(p) for p in args.recordings] or sorted(p.parent for p in (ROOT / "recordings").glob("*/recording.toml"))
    results = []
    for folder in folders:
        rec = load_recording(folder)
        cfg = load(ROOT / "sims" / rec.config)
        best: dict[str, float] = {}
        messages = 0
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as cache:
                t0 = time.perf_counter()
                parsed = [parse_feed(rec, f, Path(cache)) for f in rec.feeds]
                t1 = time.perf_counter()
                [parse_feed(rec, f, Path(cache)) for f in rec.feeds]
                t2 = time.perf_counter()
                run_replay(rec, cfg, Path(cache))
                t3 = time.perf_counter()
            with tempfile.TemporaryDirectory() as cache:
                t4 = time.perf_counter()
                run_replay(rec, cfg, Path(cache))
                t5 = time.perf_counter()
            messages = sum(p.counts.get("messages", 0) for p in parsed)
            for key, dt in (("parse_cold", t1 - t0), ("parse_cached", t2 - t1), ("replay_cached", t3 - t2), ("replay_cold", t5 - t4)):
                best[key] = min(best.get(key, float("inf")), dt)
        events = sum(p.events.height for p in parsed)
        row = {"recording": rec.name, "messages": messages, "events": events}
        for key, dt in best.items():
            row[f"{key}_s"] = round(dt, 4)
            row[f"{key}_messages_per_s"] = round(messages / dt, 1)
        results.append(row)
        print(f"{rec.name}: {messages:,} messages -> {events:,} events")
        for key in ("parse_cold", "parse_cached", "replay_cold", "replay_cached"):
            print(f"  {key:<14} {best[key]:8.3f} s  {messages / best[key]:>12,.0f} messages/s")
    write_results(args.out, {
        "repeat": args.repeat,
        "recordings": results,
        "note": "parse = captures -> event table; replay = parse + tape + engine + simulator + metrics",
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
