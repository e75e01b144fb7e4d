"""The dashboard without API keys and without a terminal.

Without keys it watches the public side of the venues (funding, the
predicted rate, the countdown to the settlement, marks, both books) and its
position panel names the variables that would show the positions; it asks
the venues nothing private and reconciles nothing. Without a terminal it
refuses in one line instead of writing escape codes into a file."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import select
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

import fundarb.testkit.emulator.ws  # noqa: F401 (mounts the websockets)
from fundarb.live.ccxt.client import Target
from fundarb.live.ccxt.credentials import CredentialsError
from fundarb.ops.monitor import MonitorApp, _countdown, live_driver, terminal_refusal
from fundarb.ops.sources import keys_needed
from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.live import spot_perp

SIZE = (100, 30)
FUNDARB = Path(sys.executable).with_name("fundarb")
NAMES = ("FUNDARB_BINANCE_API_KEY", "FUNDARB_BINANCE_SECRET", "FUNDARB_BINANCEUSDM_API_KEY", "FUNDARB_BINANCEUSDM_SECRET")


def panel(app, key: str) -> str:
    """The text a panel shows, rendered at its width on the screen."""
    w = app.query_one(f"#{key}")
    assert w.region.height >= 1 and w.region.bottom <= SIZE[1] and w.region.right <= SIZE[0], (key, w.region)
    console = Console(width=max(w.content_region.width, 10), record=True, file=open(os.devnull, "w"))
    console.print(w.content)
    return console.export_text()


@pytest.mark.usefixtures("hang_guard")
def test_without_keys_the_dashboard_shows_funding_marks_and_books_and_names_the_keys(tmp_path):
    journal = tmp_path / "trades.sqlite"
    with running_emulator("2024-03-01T07:00") as server:
        app = MonitorApp(None, live_driver(spot_perp(), journal, Target(api_url=server.base_url), "emulator",
                                           env={}, dotenv=None))

        async def drive():
            async with app.run_test(size=SIZE) as pilot:
                for _ in range(200):  # connect, first poll, first quotes (bounded: 20 s)
                    await pilot.pause(0.1)
                    src = app.source
                    if src is not None and len(src.books) == 2 and src.marks and src.rates and src.last_poll_ok:
                        break
                else:
                    raise AssertionError(f"the public source never delivered: {app.source and app.source.poll_error}")
                app.refresh_panels()
                await pilot.pause()
                src = app.source
                assert not src.watch.reconciling and src.poll_error == ""
                head = str(app.query_one("#head").content)
                assert "public data only (no API keys)" in head
                rate = src.rates["binanceusdm:perp"]
                funding = panel(app, "funding")
                apr = rate.predicted_rate * 8760 / rate.interval_hours
                assert f"{rate.rate:.4%}/8h" in funding and f"{apr:.2%}" in funding
                # the next settlement (the venue's announced instant) and the time to it on the venue's clock
                (line,) = app.snapshot.funding
                nxt = datetime.fromtimestamp(line.next_ts / 1e9, tz=UTC).strftime("%H:%M")
                countdown = _countdown(app.snapshot.ts, line.next_ts)
                assert line.next_ts > app.snapshot.ts and f"{nxt} {countdown}" in funding
                position = panel(app, "position")
                assert position.split() == ["positions", "need", "API", "keys:", "set", *NAMES]
                assert app.query_one("#pnl").border_title == "Market"
                market = panel(app, "pnl")
                for account, price in (("binance:spot", None), ("binanceusdm:perp", src.marks["binanceusdm:perp"])):
                    bid, ask = src.books[account]
                    row = next(line for line in market.splitlines() if line.split()[:1] == [account.split(":")[1]])
                    assert row.split()[1:] == [f"{bid:,.2f}", f"{ask:,.2f}"] + ([f"{price:,.2f}"] if price else [])
                connections = panel(app, "connections")
                assert "binance:spot: streaming" in connections and "binanceusdm:perp: streaming" in connections
                assert "REST: ok" in connections
                await app.action_quit()

        asyncio.run(drive())
        signed = [e.path for e in server.log.entries if "signature" in (e.query or {})]
        assert signed == []  # nothing private was asked


def test_keys_needed_names_the_variables_of_each_venue_without_keys():
    cfg = spot_perp()
    assert keys_needed(cfg, {}, None) == NAMES
    half = {"FUNDARB_BINANCE_API_KEY": "k", "FUNDARB_BINANCE_SECRET": "s"}
    assert keys_needed(cfg, half, None) == NAMES[2:]
    assert keys_needed(cfg, {**half, "FUNDARB_BINANCEUSDM_API_KEY": "k", "FUNDARB_BINANCEUSDM_SECRET": "s"}, None) == ()
    with pytest.raises(CredentialsError, match="FUNDARB_BINANCEUSDM_SECRET is not set"):
        keys_needed(cfg, {**half, "FUNDARB_BINANCEUSDM_API_KEY": "k"}, None)


def test_without_a_terminal_the_dashboard_refuses_in_one_line(tmp_path):
    out = tmp_path / "out"
    with out.open("w") as sink:
        proc = subprocess.run([str(FUNDARB), "monitor", "--simulate", "--speed", "500000"], stdin=subprocess.DEVNULL,
                              stdout=sink, stderr=subprocess.STDOUT, timeout=120, cwd=tmp_path,
                              env={**os.environ, "COLUMNS": "400"})
    text = out.read_text()
    assert proc.returncode == 2
    assert text.splitlines() == [
        "error: the dashboard needs a terminal on stdin, stdout and stderr; none of them is one (run it in a terminal, "
        "or in tmux or screen to keep it running; `fundarb positions` prints the desk once, as text)"]


def test_on_a_terminal_without_keyboard_input_the_dashboard_refuses_naming_stdin(tmp_path):
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen([str(FUNDARB), "monitor", "--simulate", "--speed", "500000"], stdin=subprocess.DEVNULL,
                                stdout=follower, stderr=follower, cwd=tmp_path, env={**os.environ, "COLUMNS": "400"})
        os.close(follower)
        follower = -1
        seen = b""
        while True:  # read until the child has gone (EIO once the pty has no writer); bounded by the wait below
            ready, _, _ = select.select([leader], [], [], 120)
            if not ready:
                break
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(timeout=120) == 2
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    raw = seen.decode(errors="replace")
    assert "\x1b[?1049h" not in raw  # no screen was drawn
    text = re.sub(r"\x1b\[[0-9;]*m", "", raw).replace("\r\n", "\n")  # the error line is coloured on a terminal
    assert "error: the dashboard needs a terminal on stdin, stdout and stderr; stdin is not one (" in text
    assert text.count("error:") == 1


def test_a_terminal_on_all_three_streams_is_enough():
    class Tty:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    assert terminal_refusal(Tty(True), Tty(True), Tty(True)) is None
    assert "stdout and stderr are not (" in terminal_refusal(Tty(True), Tty(False), Tty(False))
