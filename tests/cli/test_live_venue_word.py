"""The venue's word decides, and one actor per venue account, against the
loopback emulator as a user drives it (the CLI):

- a second emulator session on the default trade log (the README followed
  top to bottom twice) never leaves the venue with more than the size asked,
  whether the new venue numbers its ids on or re-uses the old ones;
- a trade log made on one venue or account refuses another in one line;
- a second actor on the same venue account is refused whatever trade log it
  names, in one line naming the holder, before any request is sent.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fundarb.cli.main import app
from fundarb.live.journal import Journal
from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.live import KEYS, PERP, SPOT, fund, on_spot_perp, placed_orders

pytestmark = pytest.mark.usefixtures("hang_guard")


def cli(url: str, journal: Path, *args: str, env=KEYS):
    return CliRunner().invoke(app, [*on_spot_perp(args), "--api-url", url, "--journal", str(journal)],
                              env={**env, "COLUMNS": "160"})


def test_a_second_emulator_session_on_the_same_trade_log_records_its_own_fills(tmp_path):
    """Open and close on one emulator, then open on a new one at the same
    address: the new venue's fills are its own (its ids go on), the journal
    and the venue agree at exactly the size asked."""
    journal = tmp_path / "fundarb.sqlite"
    with running_emulator() as first:
        port = first.port
        fund(first)
        assert cli(first.base_url, journal, "trade", "open", "--size", "0.01", "--yes").exit_code == 0
        closed = cli(first.base_url, journal, "trade", "close", "--yes")
        assert closed.exit_code == 0, closed.output
    with running_emulator(port=port) as second:
        fund(second)
        opened = cli(second.base_url, journal, "trade", "open", "--size", "0.01", "--yes")
        assert opened.exit_code == 0, opened.output
        assert second.accounts.position("binanceusdm").qty == pytest.approx(-0.01)
        assert len(placed_orders(second, SPOT)) == len(placed_orders(second, PERP)) == 1  # no "hedge"
        j = Journal(journal)
        try:
            fills = j.rows("fills")
            assert len(fills) == 6  # two per trade, none taken for another's
            for (venue, kind), account in ((SPOT, "binance:spot"), (PERP, "binanceusdm:perp")):
                venue_trades = {(t.order_id, t.id) for t in second.accounts.trade_list(venue, kind)}
                assert venue_trades == {(f["venue_order_id"], f["trade_id"]) for f in fills[4:]
                                        if f["account"] == account}
            assert j.position("binanceusdm:perp") == pytest.approx(-0.01, abs=1e-12)
            assert j.orders(open_only=True) == [] and j.blocked() is None
        finally:
            j.close()


def test_a_new_venue_that_reuses_the_old_ids_is_never_hedged_on_a_guess(tmp_path):
    """The new venue numbers orders and trades exactly as the old one did (a
    testnet reset does): its trades look known. The executor does not take
    the missing fills for an unfilled leg and "hedge" it: the venue holds the
    size asked, the operation waits for recovery, entries are blocked with
    one alert, and the command says so."""
    journal = tmp_path / "fundarb.sqlite"
    with running_emulator() as first:
        port = first.port
        seq = first.accounts._seq
        fund(first)
        assert cli(first.base_url, journal, "trade", "open", "--size", "0.01", "--yes").exit_code == 0
        assert cli(first.base_url, journal, "trade", "close", "--yes").exit_code == 0
    with running_emulator(port=port) as second:
        second.accounts._seq = seq  # the ids of the first session, again
        fund(second)
        opened = cli(second.base_url, journal, "trade", "open", "--size", "0.01", "--yes")
        assert opened.exit_code != 0, opened.output
        assert second.accounts.position("binanceusdm").qty == pytest.approx(-0.01)  # never -0.02
        assert len(placed_orders(second, SPOT)) == len(placed_orders(second, PERP)) == 1
        assert "the venue says 0.01 BTC filled" in opened.output and "nothing is traded on a guess" in opened.output
    j = Journal(journal)
    try:
        assert j.blocked() is not None
        assert [a["kind"] for a in j.rows("alerts")].count("pair_interrupted") == 1
        assert [op["status"] for op in j.operations()][-1] == "needs_recovery"
    finally:
        j.close()


def test_a_trade_log_of_another_venue_is_refused_in_one_line_before_any_request(tmp_path):
    journal = tmp_path / "fundarb.sqlite"
    with running_emulator() as first:
        fund(first)
        assert cli(first.base_url, journal, "trade", "open", "--size", "0.01", "--yes").exit_code == 0
        first_url = first.base_url
    with running_emulator() as other:  # another address: another venue
        assert other.base_url != first_url
        requests = len(other.log.entries)
        for args in (("trade", "open", "--size", "0.01", "--yes"), ("reconcile",), ("positions",)):
            refused = cli(other.base_url, journal, *args)
            assert refused.exit_code == 2, refused.output
            lines = refused.output.strip().splitlines()
            assert len(lines) == 1 and "another venue or account" in lines[0], refused.output
            assert first_url.split("//")[1] in lines[0] and other.base_url.split("//")[1] in lines[0]
        another_key = {**KEYS, "FUNDARB_BINANCEUSDM_API_KEY": "another-account-key"}
        refused = cli(first_url, journal, "reconcile", env=another_key)  # the same host, another account
        assert refused.exit_code == 2 and "another venue or account" in refused.output, refused.output
        assert len(other.log.entries) == requests  # not one request reached the other venue
        assert other.accounts.position("binanceusdm").qty == 0


HOLD = """
import os, sys, time
from pathlib import Path
from fundarb.config import load
from fundarb.config import spot_perp_config_path
from fundarb.live.identity import session_identities
from fundarb.live.runlock import ActorLock
ids = session_identities(load(spot_perp_config_path()), sys.argv[2], False, env=dict(os.environ), dotenv=None)
lock = ActorLock(Path(sys.argv[1]), ids.values(), "fundarb trade open").acquire()
print("held", flush=True)
time.sleep(120)
"""


def test_a_second_actor_on_the_venue_account_is_refused_whatever_its_trade_log(tmp_path):
    """Another process trades the same venue account through another trade
    log: every command that sends, recovers or reconciles is refused in one
    line naming the account and the holder, and sends nothing."""
    with running_emulator() as server:
        fund(server)
        child = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "theirs.sqlite"), server.base_url],
                                 stdout=subprocess.PIPE, text=True, env={**KEYS, "PATH": "/usr/bin:/bin",
                                                                         **_lock_env()})
        try:
            assert child.stdout.readline().strip() == "held"
            mine = tmp_path / "mine.sqlite"
            Journal(mine).close()
            requests = len(server.log.entries)
            for args in (("trade", "open", "--size", "0.01", "--yes"), ("trade", "close", "--yes"),
                         ("reconcile",), ("kill", "stop", "--flatten", "--yes")):
                refused = cli(server.base_url, mine, *args)
                assert refused.exit_code == 2, refused.output
                last = refused.output.strip().splitlines()[-1]
                assert "the venue account binance" in last and f"in use by process {child.pid}" in last, last
                assert "fundarb trade open" in last and "theirs.sqlite" in last
            assert len(server.log.entries) == requests
            assert server.accounts.position("binanceusdm").qty == 0
        finally:
            child.kill()
            child.wait(10)
        assert CliRunner().invoke(app, [*on_spot_perp(["resume", "the other actor ended"]), "--journal", str(mine)]).exit_code == 0
        opened = cli(server.base_url, tmp_path / "mine.sqlite", "trade", "open", "--size", "0.01", "--yes")
        assert opened.exit_code == 0, opened.output  # the lock died with its holder


def _lock_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k in ("FUNDARB_LOCK_DIR", "PYTHONPATH", "HOME")}


def test_the_dashboard_reconciles_only_while_no_other_actor_is_on_the_account(tmp_path):
    """The monitor is not the account's actor: each of its reconciliations
    takes the lock if it can, and is skipped (writing nothing) while a trade
    or another reconcile holds it."""
    import asyncio

    from fundarb.live.execution.reconcile import reconcile_if_alone
    from fundarb.live.identity import session_identities
    from fundarb.live.runlock import ActorLock, try_actor
    from fundarb.testkit.live import session_on

    journal = tmp_path / "fundarb.sqlite"
    with running_emulator() as server:
        fund(server)
        assert cli(server.base_url, journal, "trade", "open", "--size", "0.01", "--yes").exit_code == 0

        async def scenario():
            session = await session_on(server, journal)
            try:
                ids = list(session_identities(session.cfg, server.base_url, False, env=KEYS, dotenv=None).values())
                dashboard = ActorLock(journal, ids, "fundarb monitor")
                session.alone = lambda: try_actor(dashboard)
                before = session.journal.count("reconciliations")
                with ActorLock(tmp_path / "other.sqlite", ids, "fundarb trade close"):
                    skipped = await reconcile_if_alone(session, "periodic")
                    during = session.journal.count("reconciliations")
                done = await reconcile_if_alone(session, "periodic")
                return skipped, before, during, done, session.journal.count("reconciliations")
            finally:
                await session.close()

        skipped, before, during, done, after = asyncio.run(scenario())
    assert skipped is None and during == before  # nothing written while another actor held the account
    assert done is not None and done.ok and after == before + 1
