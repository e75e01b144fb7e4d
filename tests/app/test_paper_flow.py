"""The README's paper flow, end to end, as a user runs it: `fundarb run
--paper` in the background (no API keys: nothing is sent), then the trade
log, positions, `fundarb kill --flatten` and `fundarb resume` without
--journal, which find the running paper runner through its lock and act on
its trade log and nothing else (the emulator plays real Binance data)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fundarb.live.journal import Journal, JournalError
from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.runner import KEEP_ENV, START, die_with_parent, runner_config, stop_runner, venue_clock, wait_for, write_config

pytestmark = pytest.mark.usefixtures("hang_guard")
CLI = [sys.executable, "-c", "from fundarb.cli.main import main; main()"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNDARB_") or k in KEEP_ENV}
    env["COLUMNS"] = "100"
    return env


def fundarb(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, env=_env(), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=120)


def _rows(path: Path, table: str) -> list[dict]:
    try:
        j = Journal(path)
    except JournalError:
        return []
    try:
        return j.rows(table)
    finally:
        j.close()


def _position(path: Path, account: str) -> float:
    j = Journal(path)
    try:
        return j.position(account)
    finally:
        j.close()


# about a dozen CLI processes in turn beside the runner: on a loaded two-core machine each start takes seconds
@pytest.mark.hang_guard_seconds(240)
def test_the_readme_paper_flow(tmp_path):
    config = write_config(runner_config(), tmp_path)
    paper = tmp_path / "state" / "paper.sqlite"
    with running_emulator(START) as server, venue_clock(server):
        runner = subprocess.Popen([*CLI, "run", str(config), "--paper", "--api-url", server.base_url,
                                   "--log-file", "run.log"], cwd=tmp_path, env=_env(), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=die_with_parent)
        try:
            wait_for(lambda: paper.is_file() and len({f["account"] for f in _rows(paper, "fills")}) == 2,
                     "the paper entry in the trade log")
            wait_for(lambda: _rows(paper, "funding"), "a funding payment in the trade log")

            log = fundarb(tmp_path, "trade", "log", "--journal", "state/paper.sqlite")
            assert log.returncode == 0, log.stderr
            assert "fills: 2 rows" in log.stdout and "#1" in log.stdout
            for table in ("orders", "funding", "operations", "alerts"):
                shown = fundarb(tmp_path, "trade", "log", "--journal", "state/paper.sqlite", "--table", table)
                assert shown.returncode == 0, shown.stderr
                assert max(map(len, shown.stdout.splitlines())) <= 100, shown.stdout
            csv = fundarb(tmp_path, "trade", "log", "--journal", "state/paper.sqlite", "--csv", "fills.csv")
            assert csv.returncode == 0
            head = (tmp_path / "fills.csv").read_text().splitlines()[0].split(",")
            assert head[:4] == ["seq", "ts", "ts_utc", "venue_ts"] and "venue_ts_utc" in head

            pos = fundarb(tmp_path, "positions", "-c", str(config))  # finds the running runner's trade log
            assert pos.returncode == 0, pos.stderr
            assert "paper trade log" in pos.stdout and "runner pid" in pos.stdout
            assert f"{_position(paper, 'binanceusdm:perp'):+.8g}" in pos.stdout

            statement = fundarb(tmp_path, "statement", "-c", str(config))  # the running runner's trade log too
            assert statement.returncode == 0, statement.stderr
            assert "paper trade log" in statement.stdout and "total" in statement.stdout
            paid = sum(r["amount"] for r in _rows(paper, "funding"))
            assert max(map(len, statement.stdout.splitlines())) <= 100 and paid > 0

            kill = fundarb(tmp_path, "kill", "test", "--flatten", "--yes", "-c", str(config))
            assert kill.returncode == 0, kill.stderr
            assert f"pid {runner.pid}" in kill.stdout and "paper runner" in kill.stderr
            assert not (tmp_path / "state" / "fundarb.sqlite").exists()  # the live trade log was not touched
            wait_for(lambda: any(o["kind"] == "close" and o["status"] == "done" for o in _rows(paper, "operations")),
                     "the runner's flatten")
            assert _position(paper, "binance:spot") == pytest.approx(0.0, abs=1e-9)
            assert _position(paper, "binanceusdm:perp") == pytest.approx(0.0, abs=1e-9)
            assert runner.poll() is None  # halted, not dead

            resume = fundarb(tmp_path, "resume", "checked", "-c", str(config))
            assert resume.returncode == 0, resume.stderr
            alerts = _rows(paper, "alerts")
            # the command's and the runner's own (it halted): both critical
            assert {a["severity"] for a in alerts if a["kind"] == "kill_switch"} == {"critical"}
            assert [a["kind"] for a in alerts if a["kind"] == "kill_switch_resumed"] == ["kill_switch_resumed"]
        finally:
            code = stop_runner(runner)
        assert code == 0, runner.stderr.read() if runner.stderr else ""
        assert server.accounts.all_orders("binance", "spot") == []  # paper sends nothing
