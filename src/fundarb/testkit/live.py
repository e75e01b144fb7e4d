"""Set-up of the live-trading tests: the emulator's funded wallets, keys in an
environment mapping (never the real environment), a session of the shipped
baseline config pointed at the emulator, and the check that the trade log,
the journal and the venue agree at the end of a test."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fundarb.config import Config, default_config_path, load
from fundarb.live.ccxt.client import Target
from fundarb.live.execution.paired import execute_pair
from fundarb.live.execution.session import open_session
from fundarb.live.journal import Journal
from fundarb.testkit.emulator.server import EmulatorServer

T = TypeVar("T")

KEYS = {f"FUNDARB_{venue}_{part}": value
        for venue in ("BINANCE", "BINANCEUSDM", "BYBIT")
        for part, value in (("API_KEY", "emulator-key"), ("SECRET", "emulator-secret-value"))}
USDT = 100_000.0
SPOT, PERP = ("binance", "spot"), ("binanceusdm", "perp")


def fund(server: EmulatorServer, usdt: float = USDT) -> None:
    for wallet in ("binance", "binanceusdm", "bybit"):
        server.accounts.fund(wallet, "USDT", usdt)


def baseline() -> Config:
    return load(default_config_path())


async def session_on(server: EmulatorServer, journal: Path, timeout_ms: int = 5000, cfg: Config | None = None,
                     paper: bool = False) -> Any:
    return await open_session(cfg or baseline(), journal, Target(api_url=server.base_url, timeout_ms=timeout_ms),
                              env=KEYS, dotenv=None, trading=not paper, paper=paper)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def open_pair(server: EmulatorServer, journal: Path, qty: float = 0.01, **session_options: Any) -> Any:
    """One paired open of ``qty`` BTC through a session of its own (closed
    afterwards); the operation's outcome."""
    async def scenario() -> Any:
        session = await session_on(server, journal, **session_options)
        try:
            return await execute_pair(session, "open", qty, {})
        finally:
            await session.close()
    return run(scenario())


async def until(condition: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
    """Wait (bounded) until ``condition()`` holds; a broken run fails, never hangs."""
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.05)
    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def placed_orders(server: EmulatorServer, market: tuple[str, str] | None = None) -> list:
    markets = [market] if market else [SPOT, PERP]
    return [o for m in markets for o in server.accounts.all_orders(*m)]


def assert_agree(server: EmulatorServer, journal_path: Path) -> Journal:
    """Trade log, journal and venue state agree: every venue trade is a fill
    in the log (and no other), positions match, nothing is left in flight."""
    j = Journal(journal_path)
    fills = j.rows("fills")
    for (venue, kind), account in ((SPOT, "binance:spot"), (PERP, "binanceusdm:perp")):
        venue_ids = sorted(t.id for t in server.accounts.trade_list(venue, kind))
        log_ids = sorted(f["trade_id"] for f in fills if f["account"] == account)
        assert venue_ids == log_ids, (account, venue_ids, log_ids)
        ours = {o["client_id"] for o in j.rows("orders") if o["account"] == account}
        assert {o.client_id for o in server.accounts.all_orders(venue, kind)} <= ours
    assert j.position("binanceusdm:perp") == pytest.approx(server.accounts.position("binanceusdm").qty, abs=1e-12)
    assert j.position("binance:spot") == pytest.approx(server.accounts.wallets["binance"].get("BTC"), abs=1e-12)
    assert j.orders(open_only=True) == []
    assert j.operations("executing") == []
    return j
