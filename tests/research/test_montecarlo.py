"""Monte Carlo studies through the real simulator: determinism across worker
counts and clusters, seed sensitivity, and the command's outputs and errors."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import attrs
import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from fundarb.cli.main import app
from fundarb.config import load
from fundarb.output.montecarlo import STUDY_FILES, render_study_json, write_study
from fundarb.research.bootstrap import cut_periods
from fundarb.research.cluster import ClusterError, InProcess, chunk_runner, usable_cores
from fundarb.research.study import StudySpec, run_path, run_study

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "sims" / "spot_perp.toml"
SMALL = StudySpec(paths=6, days=20)
runner = CliRunner()


@pytest.fixture(scope="module")
def cfg():
    return load(BASELINE)


@pytest.fixture(scope="module")
def in_process(cfg, real_history):
    return run_study(cfg, real_history, SMALL, InProcess())


def test_study_rows_are_in_path_order_with_the_distribution(in_process):
    r = in_process
    assert [row["path"] for row in r.rows] == list(range(SMALL.paths))
    assert r.equity.shape[0] == SMALL.paths
    summary = json.loads(render_study_json(r))["summary"]
    apr = np.array([row["net_apr"] for row in r.rows])
    assert summary["distributions"]["net_apr"]["p50"] == pytest.approx(float(np.median(apr)))
    assert summary["p_all_gates_pass"] == sum(row["all_gates_passed"] for row in r.rows) / SMALL.paths
    # equity starts at capital on every path and the last close is the path's PnL
    np.testing.assert_allclose(r.equity[:, 0], r.config.capital, rtol=1e-3)
    np.testing.assert_allclose(r.equity[:, -1] - r.config.capital, [row["net_pnl"] for row in r.rows], atol=1e-6)


def test_a_path_is_the_same_alone_or_inside_a_study(cfg, real_history, in_process):
    src = cut_periods(real_history)
    row, equity = run_path(cfg, src, SMALL.hours, in_process.block_periods, 4)  # on the simulator
    inside = dict(in_process.rows[4])
    assert inside.pop("engine") == "kernel"  # the study's default within the kernel's scope
    assert row == inside
    assert equity.tobytes() == in_process.equity[4].tobytes()


def test_same_seed_same_bytes_other_seed_other_results(cfg, real_history, in_process):
    again = run_study(cfg, real_history, SMALL, InProcess())
    assert render_study_json(again) == render_study_json(in_process)
    other = run_study(attrs.evolve(cfg, seed=cfg.seed + 1), real_history, SMALL, InProcess())
    assert [r["net_pnl"] for r in other.rows] != [r["net_pnl"] for r in in_process.rows]


def _study_bytes(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in STUDY_FILES}


def test_outputs_are_byte_identical_for_1_and_2_local_workers(cfg, real_history, in_process, tmp_path):
    write_study(in_process, tmp_path / "inproc")
    expected = _study_bytes(tmp_path / "inproc")
    for workers in (1, 2):
        with chunk_runner(workers=workers) as r:
            assert r.workers == workers
            first = run_study(cfg, real_history, SMALL, r)
            result = run_study(cfg, real_history, SMALL, r)  # one cluster, a second study on the same source
        assert render_study_json(first) == render_study_json(result)
        write_study(result, tmp_path / f"w{workers}")
        assert _study_bytes(tmp_path / f"w{workers}") == expected, f"{workers} workers differ"


@pytest.mark.parametrize("engine", ["kernel", "simulator"])
def test_outputs_are_byte_identical_on_one_and_on_several_threads(cfg, real_history, tmp_path, engine):
    study = StudySpec(paths=12, days=20)  # more chunks than threads, so they finish out of order
    write_study(run_study(cfg, real_history, study, InProcess(1), engine=engine), tmp_path / "one")
    for threads in (2, 3):
        result = run_study(cfg, real_history, study, InProcess(threads), engine=engine)
        assert {r["engine"].split()[0] for r in result.rows} == {engine}
        write_study(result, tmp_path / f"t{threads}")
        assert _study_bytes(tmp_path / f"t{threads}") == _study_bytes(tmp_path / "one"), f"{threads} threads differ"


def test_threaded_chunks_come_back_keyed_and_an_error_in_one_stops_the_run():
    before = sys.getswitchinterval()

    def chunk(shared, n):
        if n == 5:
            raise ValueError("chunk 5 failed")
        return shared * n

    got = dict(InProcess(3).run(chunk, 10, [(n,) for n in range(5)]))
    assert got == {n: 10 * n for n in range(5)}
    assert sys.getswitchinterval() == before
    with pytest.raises(ValueError, match="chunk 5 failed"):
        dict(InProcess(2).run(chunk, 10, [(n,) for n in range(8)]))
    assert sys.getswitchinterval() == before  # the interpreter's own setting is given back
    with pytest.raises(ClusterError, match="threads must be between 1 and"):
        InProcess(0)


def test_the_default_runner_uses_a_thread_per_usable_core():
    with chunk_runner() as r:
        assert isinstance(r, InProcess)
        assert r.workers == usable_cores() >= 1


def test_existing_cluster_through_the_cli_gives_the_same_files(in_process, tmp_path):
    from distributed import LocalCluster

    write_study(in_process, tmp_path / "inproc")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster:
        res = runner.invoke(app, [
            "montecarlo", str(BASELINE), "--paths", "6", "--days", "20", "--scheduler", cluster.scheduler_address,
            "--out", str(tmp_path / "remote"), "-q",
        ])
    assert res.exit_code == 0, res.output
    assert _study_bytes(tmp_path / "remote") == _study_bytes(tmp_path / "inproc")


def test_cli_writes_readable_outputs(tmp_path):
    out = tmp_path / "mc"
    res = runner.invoke(app, ["montecarlo", str(BASELINE), "--paths", "3", "--days", "10", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "P(all gates pass)" in res.output
    doc = json.loads((out / "montecarlo.json").read_text())
    assert doc["study"]["paths"] == 3 and doc["study"]["block_length"] == "Politis-White automatic"
    table = pl.read_csv(out / "paths.csv")
    assert table["path"].to_list() == [0, 1, 2]
    assert doc["summary"]["distributions"]["net_apr"]["max"] == pytest.approx(table["net_apr"].max())
    for png in ("equity_fan.png", "distributions.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args, message", [
    (["--paths", "0"], "--paths must be a whole number from 1"),
    (["--paths", "-5"], "--paths must be a whole number from 1"),
    (["--days", "0"], "--days must be between 1 and 3650"),
    (["--block-periods", "0.5"], "--block-periods must be"),
    (["--workers", "0"], "--workers must be between 1 and 64"),
    (["--scheduler", "not-an-address"], "is not an address like tcp://"),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"], "not both"),
])
def test_bad_study_input_is_one_clear_error(args, message, tmp_path):
    out = tmp_path / "mc"
    res = runner.invoke(app, ["montecarlo", str(BASELINE), *args, "--out", str(out)])
    assert res.exit_code == 2
    assert message in res.output
    assert res.output.count("error:") == 1
    assert not out.exists()


def test_unreachable_scheduler_is_a_clear_error(tmp_path):
    address = f"tcp://127.0.0.1:{_free_port()}"
    out = tmp_path / "mc"
    res = runner.invoke(app, ["montecarlo", str(BASELINE), "--paths", "2", "--scheduler", address, "--out", str(out)])
    assert res.exit_code == 2
    assert f"cannot reach the Dask scheduler at {address}" in res.output
    assert not out.exists()


def test_unreachable_scheduler_raises_cluster_error():
    with pytest.raises(ClusterError, match="cannot reach"):
        with chunk_runner(scheduler=f"tcp://127.0.0.1:{_free_port()}"):
            pass
