"""``fundarb run --paper`` on a rotation config, against the emulator's real
Binance and Bybit data: the carry enters on the best pair, is paid by both
venues, is moved by the rotation rule (closed, then opened on the other
pair) and the trade log holds every step."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import attrs
import pytest

from fundarb.app.runner.logs import run_logger
from fundarb.app.runner.rotation import run_rotating
from fundarb.config import VenueConfig, load, project_file
from fundarb.live.ccxt.client import Target
from fundarb.live.execution.rotation import HELD_KEY
from fundarb.live.journal import PAPER_ACCOUNTS_KEY, Journal
from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.runner import logged, runner_config, venue_clock

pytestmark = pytest.mark.usefixtures("hang_guard")
START = "2024-03-01T00:00"  # Binance and Bybit's differential swings by 5-10% APR within days


def rotating_config():
    base = load(project_file(Path("sims/rotation.toml")))
    cfg = runner_config(base, entry_apr=-0.5, exit_apr=-0.9, expected_holding_days=3650.0)
    # the kill switch's drawdown is measured on legs quoted at different instants: wide enough for 2024-03's swings
    risk = attrs.evolve(cfg.risk, max_drawdown=0.5)
    return attrs.evolve(cfg, risk=risk, rotation=attrs.evolve(cfg.rotation, min_hold_days=0.0, hysteresis_apr=0.0))


def rotate_until(cfg, path: Path, start: str, done, seconds: float = 60.0) -> io.StringIO:
    """A rotating paper run on the emulator (its clock 20 venue minutes every
    50 ms) until ``done(log lines)`` or ``seconds``; the JSON log lines."""
    lines = io.StringIO()

    async def go(server) -> None:
        stop = asyncio.Event()
        log = run_logger("test", "paper", stream=lines)
        task = asyncio.create_task(run_rotating(cfg, path, Target(api_url=server.base_url, timeout_ms=2000), log, stop))
        for _ in range(int(seconds * 10)):
            await asyncio.sleep(0.1)
            if done(lines):
                break
        stop.set()
        await asyncio.wait_for(task, 30)

    with running_emulator(start) as server, venue_clock(server, minutes_per_step=20.0):
        asyncio.run(go(server))
    return lines


def test_a_paper_rotation_enters_is_paid_moves_and_enters_again_on_the_other_pair(tmp_path):
    cfg = rotating_config()
    path = tmp_path / "paper.sqlite"
    # moved, and entered again on the new pair
    lines = rotate_until(cfg, path, START, lambda out: logged(out, "rotation_arrived") and len(logged(out, "fill")) >= 6)

    moves, arrived = logged(lines, "rotation_move"), logged(lines, "rotation_arrived")
    assert moves and arrived, "no move within the bounded run"
    first = moves[0]
    assert first["gain_apr"] > first["bar_apr"] and first["to"] == arrived[0]["pair"]
    j = Journal(path)
    try:
        state = json.loads(j.get_state(HELD_KEY))
        fills = j.rows("fills")
        by_account: dict[str, float] = {}
        for f in fills:
            by_account[f["account"]] = by_account.get(f["account"], 0.0) + (1 if f["side"] == "buy" else -1) * f["qty"]
        ops = [(o["kind"], json.loads(o["plan"])["reason"]) for o in j.rows("operations")]
        funding_accounts = {f["account"] for f in j.rows("funding")}
        alerts = [a for a in j.rows("alerts") if a["kind"] == "rotation"]
    finally:
        j.close()
    # the pair left was closed flat on both venues, by the rotation's exit
    old_long, old_short = first["current"].split(" / ")
    long_account = f"{old_long.removeprefix('long ')}:long"
    short_account = f"{old_short.removeprefix('short ')}:perp"
    assert by_account[long_account] == pytest.approx(0.0, abs=1e-9)
    assert by_account[short_account] == pytest.approx(0.0, abs=1e-9)
    assert ("close", "exit_rotation") in ops and ops[0] == ("open", "entry") and ops.count(("open", "entry")) >= 2
    # both venues paid the first pair's legs
    assert {long_account, short_account} <= funding_accounts
    # the trade log holds the pair now held, and the move as an alert line
    assert f"long {state['long']} / short {state['short']}" == arrived[-1]["pair"]
    assert alerts and any("moved the carry" in a["message"] for a in alerts)
    # the capital moved whole (a flip leaves no venue: no withdrawal), from the old pair's flat accounts
    assert arrived[0]["withdrawals"] == 0
    # less the fee of a collateral move between the old pair's venues still on its way (charged as it lands)
    stopped = logged(lines, "stopped")
    diff = stopped[0]["equity"] - arrived[0]["equity"]  # the log's equity is rounded to 4 decimals
    assert any(abs(diff - k * cfg.transfer.fee) < 1e-3 for k in (0, 1)), diff


def test_the_rotation_moves_capital_less_a_withdrawal_per_venue_left(tmp_path):
    from fundarb.app.runner.rotation import move_paper_capital
    from fundarb.core.rotation import Pair

    cfg = rotating_config()
    okx = VenueConfig("okx", "BTC/USDT:USDT", taker_fee=0.0005, maker_fee=0.0002)
    cfg = attrs.evolve(cfg, rotation=attrs.evolve(cfg.rotation, venues=(okx,)))
    j = Journal(tmp_path / "paper.sqlite")
    try:
        j.set_state(PAPER_ACCOUNTS_KEY, json.dumps({"accounts": {"bybit:long": {"cash": 50_000.0},
                                                                 "binanceusdm:perp": {"cash": 49_000.0}},
                                                    "in_flight": [{"to": "bybit:long", "amount": 999.0}]}), 0)
        total, left = move_paper_capital(j, cfg, Pair("bybit", "binanceusdm"), Pair("okx", "binanceusdm"), 1)
        accounts = json.loads(j.get_state(PAPER_ACCOUNTS_KEY))["accounts"]
    finally:
        j.close()
    assert left == 1 and total == pytest.approx(99_999.0 - cfg.transfer.fee)
    assert set(accounts) == {"okx:long", "binanceusdm:perp"}
    assert accounts["binanceusdm:perp"]["cash"] == pytest.approx(total * cfg.perp_allocation)
    assert accounts["okx:long"]["cash"] + accounts["binanceusdm:perp"]["cash"] == pytest.approx(total)


def test_a_rotation_to_an_hourly_venue_pays_a_withdrawal_and_settles_hourly_there(tmp_path):
    """Binance, Bybit and the emulator's Hyperliquid (hourly; dYdX's real
    hourly settlements as its stand-in) in 2023-06: a move that leaves a
    venue costs a withdrawal fee, and the Hyperliquid leg is paid every hour."""
    from fundarb.config import RunnerSettings

    cfg = rotating_config()
    hl = VenueConfig("hyperliquid", "BTC/USDC:USDC", taker_fee=0.00045, maker_fee=0.00015)
    runner = RunnerSettings(settlement_quiet_minutes=10.0, heartbeat_seconds=1.0, kill_poll_seconds=0.2,
                            unreachable_alert_minutes=60.0, max_feed_silence_seconds=2.0,
                            settlement_feed_silence_seconds=2.0)  # the emulator serves Hyperliquid no websockets
    cfg = attrs.evolve(cfg, rotation=attrs.evolve(cfg.rotation, venues=(hl,)), runner=runner)
    path = tmp_path / "paper.sqlite"
    lines = rotate_until(cfg, path, "2023-06-01T00:00", lambda out: any(
        a["withdrawals"] for a in logged(out, "rotation_arrived")) and sum(
        f["venue"].startswith("hyperliquid") for f in logged(out, "funding")) >= 2, seconds=90)  # two, to see the hour

    arrived = [a for a in logged(lines, "rotation_arrived") if a["withdrawals"]]
    assert arrived, "no move left a venue within the bounded run"
    j = Journal(path)
    try:
        paid = [f for f in j.rows("funding") if f["account"].startswith("hyperliquid")]
    finally:
        j.close()
    assert len(paid) >= 2
    instants = sorted(int(f["venue_ts"]) for f in paid)
    assert all(t % (3600 * 10**9) == 0 for t in instants)  # on the hour
    assert min(b - a for a, b in zip(instants, instants[1:])) == 3600 * 10**9  # hourly, not every 8 hours
