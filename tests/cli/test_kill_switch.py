"""`fundarb kill` against the loopback emulator: the halt is written to the
trade log and holds across restarts until `fundarb resume`; `--flatten`
closes both legs paired when no strategy runner trades the log, and leaves
it to the runner when one holds the log's lock; the manual trade commands
keep off a log a runner trades."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fundarb.cli.main import app
from fundarb.live.execution.paired import FLATTEN_KEY
from fundarb.live.journal import Journal
from fundarb.live.runlock import RunnerLock
from fundarb.testkit.live import KEYS, PERP, SPOT, assert_agree, fund, on_spot_perp, placed_orders

pytestmark = pytest.mark.usefixtures("hang_guard")

HOLD = """
import sys, time
from pathlib import Path
from fundarb.live.runlock import RunnerLock
lock = RunnerLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(120)
"""


def cli(url: str | None, journal: Path, *args: str, env=KEYS, input=None):
    where = ["--api-url", url] if url else []
    return CliRunner().invoke(app, [*on_spot_perp(args), *where, "--journal", str(journal)], env={**env, "COLUMNS": "160"},
                              input=input)


def open_carry(server, journal: Path) -> None:
    fund(server)
    opened = cli(server.base_url, journal, "trade", "open", "--size", "0.01", "--yes")
    assert opened.exit_code == 0, opened.output
    assert server.accounts.position("binanceusdm").qty == pytest.approx(-0.01)


def closed_port_url() -> str:
    """A loopback URL nobody listens on: a command that contacts it fails."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def state(journal: Path) -> tuple[str | None, str | None, list[dict]]:
    j = Journal(journal)
    try:
        return j.blocked(), j.get_state(FLATTEN_KEY), [a for a in j.rows("alerts") if a["kind"] == "kill_switch"]
    finally:
        j.close()


def test_kill_flatten_closes_both_legs_paired_and_the_halt_holds_until_resumed(emulator, tmp_path):
    journal = tmp_path / "trades.sqlite"
    open_carry(emulator, journal)

    killed = cli(emulator.base_url, journal, "kill", "test", "--flatten", "--yes")
    assert killed.exit_code == 0, killed.output
    assert "kill switch on" in killed.output and "operation 2: close -> done" in killed.output
    assert "venues and trade log agree" in killed.output and "flat:" in killed.output
    j = assert_agree(emulator, journal)
    close = [(o["leg"], o["role"], o["side"], o["status"], o["reduce_only"]) for o in j.orders(2)]
    assert close == [("spot", "exit", "sell", "filled", 0), ("perp", "exit", "buy", "filled", 1)]
    assert emulator.accounts.position("binanceusdm").qty == 0
    # Binance took the buy's fee in BTC: the dust left is under the spot lot, nothing the carry can sell
    assert emulator.accounts.wallets["binance"].get("BTC") == pytest.approx(0.0, abs=1e-5)
    j.close()
    blocked, flatten, alerts = state(journal)
    assert blocked == "kill switch: test" and flatten is None
    assert [(a["severity"], "test" in a["message"]) for a in alerts] == [("critical", True)]
    assert RunnerLock.holder(journal) is None  # kill held the lock only while it flattened

    sent = len(placed_orders(emulator))
    refused = cli(emulator.base_url, journal, "trade", "open", "--size", "0.01", "--yes")
    assert refused.exit_code == 2 and "new entries are blocked: kill switch: test" in refused.output
    # a reconciliation that finds everything in agreement does not lift it, nor does a new process
    assert cli(emulator.base_url, journal, "reconcile").exit_code == 0
    assert state(journal)[0] == "kill switch: test"
    assert len(placed_orders(emulator)) == sent == 4

    again = cli(emulator.base_url, journal, "kill", "test", "--flatten", "--yes")  # nothing left to close
    assert again.exit_code == 0 and "already flat" in again.output, again.output
    assert state(journal)[:2] == ("kill switch: test", None) and len(placed_orders(emulator)) == 4

    resumed = cli(None, journal, "resume", "ok")
    assert resumed.exit_code == 0 and "kill switch lifted: ok" in resumed.output
    assert state(journal)[:2] == (None, None)
    reopened = cli(emulator.base_url, journal, "trade", "open", "--size", "0.01", "--yes")
    assert reopened.exit_code == 0, reopened.output
    assert_agree(emulator, journal).close()


def test_kill_without_flatten_contacts_no_venue(emulator, tmp_path):
    journal = tmp_path / "trades.sqlite"
    open_carry(emulator, journal)
    requests = len(emulator.log.entries)

    # no keys, and the venues' URL refuses connections: the kill switch does not need them
    offline = cli(closed_port_url(), journal, "kill", env={})
    assert offline.exit_code == 0, offline.output
    assert "new orders are halted (manual)" in offline.output and 'fundarb resume "reason"' in offline.output
    assert "left as they are" in offline.output
    pointed = cli(emulator.base_url, journal, "kill", "a second look")
    assert pointed.exit_code == 0, pointed.output
    assert len(emulator.log.entries) == requests  # not one request reached the venue
    blocked, flatten, alerts = state(journal)
    assert blocked == "kill switch: a second look" and flatten is None
    assert [a["message"] for a in alerts] == ["new orders halted: manual", "new orders halted: a second look"]
    assert emulator.accounts.position("binanceusdm").qty == pytest.approx(-0.01)  # the carry is left open

    # flattening on another host than the trade log's venue: refused before any request, the request stays
    elsewhere = cli(closed_port_url(), journal, "kill", "venue elsewhere", "--flatten", "--yes")
    assert elsewhere.exit_code == 2, elsewhere.output
    assert "another venue or account" in elsewhere.output and "the flatten request stays" in elsewhere.output
    assert state(journal)[:2] == ("kill switch: venue elsewhere", "venue elsewhere")

    # flattening with the venue out of reach (every request a 503): the halt and the request stay
    outage = emulator.faults.add("server_error", times=None, status=503)
    unreachable = cli(emulator.base_url, journal, "kill", "venue down", "--flatten", "--yes")
    emulator.faults.remove(outage)
    assert unreachable.exit_code == 2, unreachable.output
    assert "unreachable" in unreachable.output and "the flatten request stays" in unreachable.output
    assert state(journal)[:2] == ("kill switch: venue down", "venue down")
    assert RunnerLock.holder(journal) is None

    # flattening asks first: a "no" sends nothing and withdraws the flatten request, the halt stays
    declined = cli(emulator.base_url, journal, "kill", "no after all", "--flatten", input="n\n")
    assert declined.exit_code == 1, declined.output
    assert "nothing was sent" in declined.output and "withdrawn" in declined.output
    assert state(journal)[:2] == ("kill switch: no after all", None)
    assert len(placed_orders(emulator)) == 2
    assert_agree(emulator, journal).close()


def test_a_runner_holding_the_lock_flattens_itself_and_trade_commands_keep_off(emulator, tmp_path):
    journal = tmp_path / "trades.sqlite"
    open_carry(emulator, journal)
    runner = subprocess.Popen([sys.executable, "-c", HOLD, str(journal)], stdout=subprocess.PIPE, text=True)
    try:
        assert runner.stdout.readline().strip() == "held"
        requests = len(emulator.log.entries)

        killed = cli(emulator.base_url, journal, "kill", "runner test", "--flatten", "--yes")
        assert killed.exit_code == 0, killed.output
        assert f"strategy runner (pid {runner.pid}) halts new orders and flattens both legs itself" in killed.output
        blocked, flatten, alerts = state(journal)
        assert (blocked, flatten) == ("kill switch: runner test", "runner test") and len(alerts) == 1

        message = f"error: the trade log {journal} is in use by process {runner.pid}; it holds {journal}.lock"
        for args in (("trade", "open", "--size", "0.01", "--yes"), ("trade", "close", "--yes"), ("reconcile",)):
            refused = cli(emulator.base_url, journal, *args)
            assert refused.exit_code == 2, refused.output
            assert refused.output.startswith(message) and len(refused.output.strip().splitlines()) == 1
        assert len(emulator.log.entries) == requests  # neither kill nor the refused commands asked a venue
        assert emulator.accounts.position("binanceusdm").qty == pytest.approx(-0.01)  # the runner's job
        assert RunnerLock.holder(journal) == runner.pid
    finally:
        runner.kill()
        runner.wait(10)

    resumed = cli(None, journal, "resume", "ok")
    assert resumed.exit_code == 0, resumed.output
    assert state(journal)[:2] == (None, None)  # the flatten request went with the halt
    closed = cli(emulator.base_url, journal, "trade", "close", "--yes")  # the lock died with the runner
    assert closed.exit_code == 0, closed.output
    assert emulator.accounts.position("binanceusdm").qty == 0
    assert_agree(emulator, journal).close()


def test_bad_input_is_one_line_and_writes_nothing(emulator, tmp_path):
    journal = tmp_path / "trades.sqlite"
    open_carry(emulator, journal)
    before = Journal(journal)
    snapshot = {t: before.rows(t) for t in ("state", "alerts")}
    before.close()

    empty = cli(None, journal, "kill", "  ")
    assert empty.exit_code == 2 and empty.output.strip() == 'error: kill needs a reason (leave it out for "manual")'
    j = Journal(journal)
    assert {t: j.rows(t) for t in ("state", "alerts")} == snapshot
    j.close()

    other = tmp_path / "prices.csv"
    other.write_text("ts,price\n1,60000\n")
    for url, args in ((None, ("kill", "x")), (emulator.base_url, ("kill", "x", "--flatten", "--yes")),
                      (None, ("resume", "x"))):
        refused = cli(url, other, *args)
        assert refused.exit_code == 2, refused.output
        lines = refused.output.strip().splitlines()
        assert len(lines) == 1 and "not a fundarb trade log" in lines[0] and str(other) in lines[0]
    assert other.read_text() == "ts,price\n1,60000\n"
    missing = cli(None, tmp_path / "nowhere" / "trades.sqlite", "kill", "x")
    assert missing.exit_code == 2 and "no trade log at" in missing.output
    # no lock file, no folder, no SQLite side files were made for the bad paths (the trade's own lock stays)
    assert {p.name for p in tmp_path.iterdir()} - {"trades.sqlite-wal", "trades.sqlite-shm"} == {
        "prices.csv", "trades.sqlite", "trades.sqlite.lock"}
    assert len(placed_orders(emulator, SPOT)) == len(placed_orders(emulator, PERP)) == 1
