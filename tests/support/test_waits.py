"""Waits on a venue are shown while they last (``fundarb.support.waits``), and
`data fetch` against a venue that does not answer ends with one error line
after a bounded number of attempts instead of a silent minute and more."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import ccxt
import pytest
from rich.console import Console

from fundarb.data.fetch import Backoff, FetchError, FetchPlan, fetch_all
from fundarb.data.history import parse_time
from fundarb.support.waits import WaitReporter, error_reason

MS = 1_000_000
FUNDARB = Path(sys.executable).with_name("fundarb")


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeTime:
    """A clock that moves only when slept on."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def plain_reporter(clock: FakeTime) -> tuple[WaitReporter, io.StringIO]:
    out = io.StringIO()
    return WaitReporter(Console(file=out, width=300), live=False, monotonic=clock.monotonic), out


def test_data_fetch_from_a_closed_port_shows_each_retry_and_ends_with_one_error_line(tmp_path):
    port = closed_port()
    proc = subprocess.run(
        [str(FUNDARB), "data", "fetch", "--venue", "binanceusdm", "--symbol", "BTC/USDT:USDT", "--since", "2024-01-01",
         "--until", "2024-01-02", "--store", str(tmp_path / "store"), "--api-url", f"http://127.0.0.1:{port}",
         "--attempts", "5"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90,
        env={**os.environ, "COLUMNS": "300"}, cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    # the wait passes 2 s at the third attempt (0.5 + 1 + 2 s of back-off): from then on one line per retry
    assert lines[:-1] == [
        "waiting for binanceusdm markets: attempt 3 of 5 failed (NetworkError: connection refused); attempt 4 in 2.2 s",
        "waiting for binanceusdm markets: attempt 4 of 5 failed (NetworkError: connection refused); attempt 5 in 4.3 s",
    ]
    assert lines[-1] == (f"error: binanceusdm markets: gave up after 5 attempts: NetworkError: binanceusdm GET "
                         f"http://127.0.0.1:{port}/fapi/v1/exchangeInfo (connection refused)")
    assert not (tmp_path / "store").exists()


def test_the_default_bound_is_eight_attempts_and_under_forty_seconds_of_waiting(tmp_path, loopback_only):
    clock = FakeTime()
    waits, out = plain_reporter(clock)
    backoff = Backoff(sleep=clock.sleep, waits=waits)
    plan = FetchPlan("bybit", "BTC/USDT:USDT", parse_time("2024-01-01", "s") // MS, parse_time("2024-01-02", "u") // MS,
                     "1h", None, None)
    with pytest.raises(FetchError, match=r"^bybit markets: gave up after 8 attempts: NetworkError: .*\(connection refused\)$"):
        fetch_all(plan, tmp_path, f"http://127.0.0.1:{closed_port()}", backoff, rate_limit=False)
    assert len(backoff.waited) == 7 and 31.5 <= sum(backoff.waited) <= 31.5 * 1.25
    shown = out.getvalue().splitlines()
    assert [line.split(": attempt ")[1][:6] for line in shown] == ["3 of 8", "4 of 8", "5 of 8", "6 of 8", "7 of 8"]
    assert all(line.startswith("waiting for bybit markets: ") for line in shown)


def test_a_retry_after_beyond_the_budget_gives_up_at_once(tmp_path, emulator, loopback_only):
    emulator.set_time("2024-06-02T00:00")
    emulator.faults.add("rate_limit", path="/fapi/v1/fundingRate", times=None, retry_after_s=600)
    clock = FakeTime()
    waits, out = plain_reporter(clock)
    backoff = Backoff(sleep=clock.sleep, waits=waits)
    plan = FetchPlan("binanceusdm", "BTC/USDT:USDT", parse_time("2024-01-01", "s") // MS,
                     parse_time("2024-01-02", "u") // MS, "1h", None, None)
    with pytest.raises(FetchError, match=r"^binanceusdm BTC/USDT:USDT funding from 2023-12-31 23:59 UTC: gave up "
                                         r"after 1 attempt: the venue asks to wait 600 s \(Retry-After\), beyond the "
                                         r"120 s one request may wait in all: DDoSProtection: binanceusdm 429"):
        fetch_all(plan, tmp_path, emulator.base_url, backoff, rate_limit=False)
    assert backoff.waited == [] and out.getvalue() == ""


def test_a_long_wait_shows_at_once_a_blip_never_and_a_new_wait_starts_quiet():
    clock = FakeTime()
    waits, out = plain_reporter(clock)
    waits.on_retry("binance fetch_balance", 1, 0.4, ccxt.NetworkError("x"))
    clock.sleep(0.4)
    waits.on_retry("binance fetch_balance", 2, 0.9, ccxt.NetworkError("x"))
    clock.sleep(0.9)
    waits.done("binance fetch_balance")
    assert out.getvalue() == ""  # 1.3 s in all: not shown
    waits.on_retry("binanceusdm load_markets", 1, 30.0, ccxt.RateLimitExceeded("x"), attempts=5)
    assert out.getvalue() == ("waiting for binanceusdm load_markets: attempt 1 of 5 failed (RateLimitExceeded); "
                              "attempt 2 in 30.0 s\n")
    clock.sleep(30)
    waits.done("binanceusdm load_markets")
    waits.on_retry("binanceusdm load_markets", 1, 0.5, ccxt.NetworkError("x"))  # a new wait: quiet again
    assert out.getvalue().count("\n") == 1


def test_an_error_is_shown_by_its_type_and_socket_reason_never_its_text():
    signed = ccxt.NetworkError("binance GET https://api.binance.com/api/v3/account?timestamp=1&signature=deadbeef")
    try:
        try:
            raise ConnectionRefusedError(111, "Connect call failed ('1.2.3.4', 443)")
        except OSError as cause:
            raise signed from cause
    except ccxt.NetworkError as exc:
        assert error_reason(exc) == "NetworkError: connection refused"
    assert error_reason(ccxt.RequestTimeout("binance GET https://x/?signature=1")) == "RequestTimeout"
    assert error_reason("binanceusdm: unreachable") == "binanceusdm: unreachable"


def test_on_a_terminal_the_wait_is_a_status_line_that_goes_when_the_wait_ends():
    clock = FakeTime()
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200, color_system=None)
    with WaitReporter(console, monotonic=clock.monotonic) as waits:
        assert waits.live
        waits.on_retry("the venues", 1, 4.0, "binanceusdm: unreachable (NetworkError)")
        status = Console(width=200, record=True, file=io.StringIO())
        status.print(waits)
        assert "waiting for the venues: attempt 1 failed (binanceusdm: unreachable (NetworkError)); attempt 2 in 4 s" \
            in status.export_text()
        clock.sleep(5)
        status.print(waits)
        assert "attempt 2 under way" in status.export_text()
        waits.done("the venues")
        assert waits._status is None  # the line is gone
    assert "waiting for the venues" in out.getvalue()


def test_the_request_queue_tells_the_reporter_of_its_retries_and_venue_pauses():
    import asyncio
    import random

    from fundarb.live.ccxt.ratelimit import RequestQueue

    clock = FakeTime()
    waits, out = plain_reporter(clock)

    class Top(random.Random):  # back-off draws its upper bound: 3 s
        def uniform(self, a: float, b: float) -> float:
            return b

    async def sleep(seconds: float) -> None:
        clock.sleep(seconds)

    async def main() -> None:
        replies = iter([ccxt.ExchangeNotAvailable("GET https://x/?signature=1"), ccxt.RateLimitExceeded("429"), "ok"])

        async def fetch_balance() -> str:
            reply = next(replies)
            if isinstance(reply, Exception):
                raise reply
            return reply

        queue = RequestQueue("binance", rate_per_second=10, burst=10, base_delay_s=3.0, rng=Top(),
                             headers=lambda: {"Retry-After": "20"}, monotonic=clock.monotonic, sleep=sleep)
        queue.on_retry = waits.on_retry
        assert await queue.call(fetch_balance) == "ok"

    asyncio.run(main())
    first, second = out.getvalue().splitlines()
    assert first == "waiting for binance fetch_balance: attempt 1 failed (ExchangeNotAvailable); attempt 2 in 3.0 s"
    # the venue asked for 20 s: the whole venue pauses, and the line says how long
    assert second == "waiting for binance fetch_balance: attempt 2 failed (RateLimitExceeded); attempt 3 in 20.0 s"
    assert "signature" not in out.getvalue()


def test_stopped_within_says_whether_the_stop_came_before_the_time_ran_out():
    import asyncio

    from fundarb.support.waits import stopped_within

    async def go() -> tuple[bool, bool]:
        stop = asyncio.Event()
        quiet = await stopped_within(stop, 0.01)
        asyncio.get_running_loop().call_later(0.01, stop.set)
        return quiet, await stopped_within(stop, 30.0)

    assert asyncio.run(go()) == (False, True)
