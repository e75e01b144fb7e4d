"""The trade CLI as a separate process against the in-test emulator: killed
between the two legs and restarted, and interrupted at the confirmation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from typer.testing import CliRunner

from fundarb.cli.main import app
from fundarb.testkit.live import KEYS, PERP, SPOT, assert_agree, fund, on_spot_perp, placed_orders

pytestmark = pytest.mark.usefixtures("hang_guard")
WAIT_S = 30.0  # bound on every wait for the child; a broken run fails, never hangs


def spawn(server, journal, *args) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNDARB_")}
    env.update(KEYS, COLUMNS="160", NO_COLOR="1")
    cmd = [sys.executable, "-c", "from fundarb.cli.main import main; main()", *on_spot_perp(args),
           "--api-url", server.base_url, "--journal", str(journal)]
    return subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for(condition, what: str) -> None:
    end = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def interrupt_between_the_legs(server, journal, stop) -> tuple[int, bytes]:
    """A child `fundarb trade open` whose perp order request hangs (the venue
    never sees it) while the spot leg fills; ``stop(child)`` interrupts it
    there. Returns the child's exit code and what it printed."""
    fund(server)
    hang = server.faults.add("timeout", venue="binanceusdm", path="/fapi/v1/order", delay_s=60)
    child = spawn(server, journal, "trade", "open", "--size", "0.01", "--yes")
    try:
        wait_for(lambda: server.accounts.trade_list(*SPOT) and hang.hits == 1, "the spot fill and the hung perp order")
        stop(child)
        shown, _ = child.communicate(timeout=WAIT_S)
    finally:
        if child.poll() is None:
            child.kill()
    assert placed_orders(server, PERP) == [] and server.accounts.wallets["binance"].get("BTC") > 0  # naked
    return child.returncode, shown


def restart_with_reconcile(server, journal):
    restart = CliRunner().invoke(app, [*on_spot_perp(["reconcile"]), "--api-url", server.base_url, "--journal", str(journal)],
                                 env={**KEYS, "COLUMNS": "160"})
    assert restart.exit_code == 0, restart.output
    return restart


def test_killed_between_the_legs_the_restart_unwinds_the_naked_leg(emulator, tmp_path):
    journal = tmp_path / "trades.sqlite"
    interrupt_between_the_legs(emulator, journal, lambda child: child.kill())  # SIGKILL: no clean-up runs
    restart = restart_with_reconcile(emulator, journal)
    assert "recovering operation 1 (open)" in restart.output
    j = assert_agree(emulator, journal)
    orders = [(o["leg"], o["role"], o["side"], o["status"]) for o in j.rows("orders")]
    assert orders == [("spot", "entry", "buy", "filled"), ("perp", "entry", "sell", "rejected"),
                      ("spot", "unwind", "sell", "filled")]
    assert "never reached the venue" in j.rows("orders")[1]["status_reason"]
    (op,) = j.operations()
    assert op["status"] == "unwound"
    assert placed_orders(emulator, PERP) == []  # the lost perp order was never re-sent
    assert emulator.accounts.wallets["binance"].get("BTC") == pytest.approx(0.0, abs=1e-5)
    assert j.blocked() is None
    assert any(a["kind"] == "recovery" for a in j.rows("alerts"))


def read_until(stream, text: str) -> str:
    """Bytes from ``stream`` until ``text`` shows (a prompt has no newline)."""
    seen = bytearray()
    done = threading.Event()

    def pump():
        while text.encode() not in seen:
            b = stream.read(1)
            if not b:
                break
            seen.extend(b)
        done.set()

    threading.Thread(target=pump, daemon=True).start()
    assert done.wait(WAIT_S), f"no {text!r} in {seen.decode(errors='replace')!r}"
    return seen.decode(errors="replace")


def test_ctrl_c_at_the_confirmation_sends_nothing(emulator, tmp_path):
    fund(emulator)
    journal = tmp_path / "trades.sqlite"
    child = spawn(emulator, journal, "trade", "open", "--size", "0.01")
    try:
        shown = read_until(child.stdout, "Send these two orders")
        assert "pre-flight:" in shown
        child.send_signal(signal.SIGINT)
        rest, _ = child.communicate(timeout=WAIT_S)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, rest
    assert "aborted at the confirmation: nothing was sent" in rest.decode()
    assert placed_orders(emulator) == []
    j = assert_agree(emulator, journal)
    assert j.operations() == [] and j.rows("orders") == []


def test_ctrl_c_while_trading_says_what_to_do_and_reconcile_finishes_it(emulator, tmp_path):
    journal = tmp_path / "trades.sqlite"
    code, shown = interrupt_between_the_legs(emulator, journal, lambda child: child.send_signal(signal.SIGINT))
    assert code == 130, shown
    assert "orders may have been sent; run `fundarb reconcile`" in shown.decode()
    restart_with_reconcile(emulator, journal)
    j = assert_agree(emulator, journal)
    assert [op["status"] for op in j.operations()] == ["unwound"]
    assert placed_orders(emulator, PERP) == []
