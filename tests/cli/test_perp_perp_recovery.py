"""A perp/perp `fundarb trade open` as a separate process against the in-test
emulator, killed between its two legs (the long perp filled on Bybit, the
short's order to Binance USD-M never answered) and recovered by the next
start: the long is traded back reduce-only, nothing is left naked, and the
trade log and both venues agree."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fundarb.cli.main import app
from fundarb.config import project_file
from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.live import KEYS, PERP_PERP_START, assert_agree_perp_perp, fund_perp_perp, said

pytestmark = pytest.mark.usefixtures("hang_guard")
WAIT_S = 30.0  # bound on every wait for the child; a broken run fails, never hangs
CONFIG = project_file(Path("sims") / "perp_perp.toml")


def spawn(server, journal, *args) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNDARB_")}
    env.update(KEYS, COLUMNS="160", NO_COLOR="1")
    cmd = [sys.executable, "-c", "from fundarb.cli.main import main; main()", *args,
           "--api-url", server.base_url, "--journal", str(journal), "--config", str(CONFIG)]
    return subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for(condition, what: str) -> None:
    end = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_killed_between_the_legs_the_next_start_trades_the_long_perp_back(tmp_path):
    journal = tmp_path / "trades.sqlite"
    with running_emulator(start=PERP_PERP_START) as server:
        fund_perp_perp(server)
        hang = server.faults.add("timeout", venue="binanceusdm", path="/fapi/v1/order", delay_s=60)
        child = spawn(server, journal, "trade", "open", "--size", "0.01", "--yes")
        try:
            wait_for(lambda: server.accounts.trade_list("bybit", "perp") and hang.hits == 1,
                     "the long's fill and the hung short order")
            child.kill()  # SIGKILL: no clean-up runs
            child.communicate(timeout=WAIT_S)
        finally:
            if child.poll() is None:
                child.kill()
        assert server.accounts.position("bybit").qty == pytest.approx(0.01)  # naked: the long alone
        assert server.accounts.all_orders("binanceusdm", "perp") == []
        server.faults.clear()

        restart = CliRunner().invoke(app, ["reconcile", "--api-url", server.base_url, "--journal", str(journal),
                                           "--config", str(CONFIG)], env={**KEYS, "COLUMNS": "160"})
        assert restart.exit_code == 0, restart.output
        assert "recovering operation 1 (open)" in said(restart)
        j = assert_agree_perp_perp(server, journal)
        assert [(o["account"], o["role"], o["side"], o["status"], o["reduce_only"]) for o in j.rows("orders")] == [
            ("bybit:long", "entry", "buy", "filled", 0), ("binanceusdm:perp", "entry", "sell", "rejected", 0),
            ("bybit:long", "unwind", "sell", "filled", 1)]
        assert "never reached the venue" in j.rows("orders")[1]["status_reason"]
        (op,) = j.operations()
        assert op["status"] == "unwound" and j.blocked() is None
        assert server.accounts.position("bybit").qty == 0
        assert server.accounts.all_orders("binanceusdm", "perp") == []  # the lost short was never re-sent
        assert any(a["kind"] == "recovery" for a in j.rows("alerts"))
        j.close()
