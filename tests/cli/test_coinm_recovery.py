"""`fundarb trade open` of a coin-margined carry as a separate process,
killed (SIGKILL) between its two legs against the in-test emulator: the spot
buy filled, the COIN-M short's request hanging, never seen by the venue. The
restart (`fundarb reconcile`) finds the short absent once the venue's receive
window has passed, sells the naked spot back, and leaves trade log and venue
in agreement with entries open again."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from fundarb.cli.main import app
from fundarb.config import dumps
from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.live import COINM, COINM_FLOAT, KEYS, SPOT, assert_agree, coinm_config, fund_coinm, placed_orders, said
from fundarb.testkit.runner import wait_for

pytestmark = pytest.mark.usefixtures("hang_guard")

WAIT_S = 30.0


def test_killed_between_the_legs_the_restart_unwinds_the_naked_spot(tmp_path):
    config = tmp_path / "coinm.toml"
    config.write_text(dumps(coinm_config()))
    journal = tmp_path / "t.sqlite"
    with running_emulator(start="2024-03-01T06:00") as server:
        fund_coinm(server)
        hang = server.faults.add("timeout", venue="binancecoinm", path="/dapi/v1/order", delay_s=60)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FUNDARB_")}
        env.update(KEYS, COLUMNS="160", NO_COLOR="1")
        child = subprocess.Popen([sys.executable, "-c", "from fundarb.cli.main import main; main()", "trade", "open",
                                  "--size", "0.05", "--yes", "--api-url", server.base_url, "--journal", str(journal),
                                  "--config", str(config)], env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: server.accounts.trade_list(*SPOT) and hang.hits == 1, "the spot fill and the hung short")
            child.kill()  # SIGKILL: no clean-up runs
            child.communicate(timeout=WAIT_S)
        finally:
            if child.poll() is None:
                child.kill()
        assert placed_orders(server, COINM) == [] and server.accounts.wallets["binance"].get("BTC") > 0  # naked
        server.faults.clear()

        restart = CliRunner().invoke(app, ["reconcile", "--api-url", server.base_url, "--journal", str(journal),
                                           "--config", str(config)], env={**KEYS, "COLUMNS": "160"})
        assert restart.exit_code == 0, restart.output
        assert "recovering operation 1 (open)" in said(restart)
        j = assert_agree(server, journal, coin_margined=True)
        orders = [(o["leg"], o["role"], o["side"], o["status"]) for o in j.rows("orders")]
        assert orders == [("spot", "entry", "buy", "filled"), ("perp", "entry", "sell", "rejected"),
                          ("spot", "unwind", "sell", "filled")]
        (op,) = j.operations()
        assert op["status"] == "unwound"
        assert placed_orders(server, COINM) == []  # the lost short was never re-sent
        # the spot BTC sold back (its fee dust left), nothing moved to the COIN-M wallet
        assert server.accounts.wallets["binance"].get("BTC") == pytest.approx(0.0, abs=1e-4)
        assert server.accounts.wallets["binancecoinm"].get("BTC") == pytest.approx(COINM_FLOAT)
        assert j.rows("transfers") == [] and j.blocked() is None
        j.close()
