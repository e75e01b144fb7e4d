"""The strategy runner against the emulator playing real Binance data forward:
paper and live, the kill switch from another process, a restart that takes
the carry back, crash recovery under SIGKILL, and the refusal to trade an
unpromoted config live."""

from __future__ import annotations

import asyncio
import io
import signal

import attrs
import pytest
from typer.testing import CliRunner

import fundarb.testkit.emulator.ws as emulator_ws
from fundarb.cli.main import app
from fundarb.config import AlertSettings, config_hash
from fundarb.live.journal import Journal
from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.live import KEYS, PERP, SPOT, assert_agree, fund, until
from fundarb.testkit.runner import (
    START,
    finish,
    logged,
    paper_carry_then_flatten,
    promote_for_test,
    runner_config,
    spawn_runner,
    start_runner,
    stop_runner,
    venue_clock,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.usefixtures("hang_guard")


def test_paper_run_enters_on_real_funding_collects_settlements_and_flattens_on_kill(tmp_path):
    journal, cfg, lines = tmp_path / "paper.sqlite", runner_config(), io.StringIO()

    with running_emulator(START) as server, venue_clock(server):
        runner = asyncio.run(paper_carry_then_flatten(server, journal, cfg, lines))
        assert server.accounts.all_orders(*SPOT) == [] and server.accounts.all_orders(*PERP) == []  # paper sends nothing
    engine = runner.engine
    intents = [r for r in logged(lines, "intent")]
    assert [i["reason"] for i in intents][:2] == ["entry", "entry"]
    assert {i["reason"] for i in intents[2:]} == {"kill_flatten"}
    entry = engine.book.funding_ledger[0]
    # the settlement is the venue's real rate at the real instant (8h grid), paid on the short
    assert entry.ts % (8 * 3600 * 10**9) == 0 and entry.amount == pytest.approx(-entry.qty * entry.mark * entry.rate)
    assert entry.qty < 0 and entry.rate > 0 and entry.amount > 0
    assert engine.monitor.kill.halted and Journal(journal).blocked() == "kill switch: test"
    beats = logged(lines, "heartbeat")
    assert beats and all(b["config_hash"] == config_hash(cfg)[:12] for b in beats)


def test_live_run_trades_through_the_journal_and_a_restart_takes_the_carry_back(tmp_path):
    journal, cfg = tmp_path / "live.sqlite", runner_config()

    async def first(server, lines):
        runner, stop, task = await start_runner(server, journal, cfg, "live", lines)
        try:
            await until(lambda: len(runner.stats.settlements) >= 2 and all(x["paid"] for x in runner.stats.settlements),
                        "two settlements in position, paid by the venue and in the trade log", timeout=40.0)
            return runner
        finally:
            await finish(runner, stop, task)

    async def second(server, lines):
        runner, stop, task = await start_runner(server, journal, cfg, "live", lines)
        try:
            restored = (runner.engine.strategy.direction, runner.engine.strategy.entry_ts, runner.engine.book.perp.qty)
            await until(lambda: runner.stats.settlements and runner.stats.settlements[-1]["paid"], "a settlement after the restart", timeout=40.0)
            return runner, restored
        finally:
            await finish(runner, stop, task)

    with running_emulator(START) as server:
        fund(server)
        with venue_clock(server):
            one = asyncio.run(first(server, io.StringIO()))
            ops_before = len(Journal(journal).operations())
            lines = io.StringIO()
            two, (direction, entry_ts, perp_qty) = asyncio.run(second(server, lines))
        j = assert_agree(server, journal)
        venue_perp = server.accounts.position("binanceusdm").qty
        paid = {f.time_ms * 10**6 for f in server.accounts.funding_list("binanceusdm")}
    ops = j.operations()
    assert [o["kind"] for o in ops[:1]] == ["open"] and ops[0]["status"] in ("done", "rebalanced")
    assert len(ops) == ops_before  # the restarted runner did not open again: the carry was its own
    assert direction == 1 and perp_qty == pytest.approx(venue_perp) and perp_qty < 0
    first_fill = min(f["venue_ts"] for f in j.rows("fills"))
    assert entry_ts == first_fill  # the holding time counts from the real entry, not the restart
    # every payment the venue made is in the trade log, and both runs saw their settlements paid
    assert paid and paid <= {f["venue_ts"] for f in j.rows("funding")}
    assert all(x["paid"] for x in one.stats.settlements + two.stats.settlements)
    started = logged(lines, "started")[0]
    assert started["in_carry"] is True and started["perp_qty"] == pytest.approx(venue_perp)


def test_run_live_refuses_a_config_without_a_passing_promotion(tmp_path):
    cfg = runner_config()
    config, store = write_config(cfg, tmp_path), tmp_path / "promotions.sqlite"
    env = {**KEYS, "FUNDARB_PROMOTIONS": str(store), "COLUMNS": "200"}
    args = ["run", str(config), "--live", "--api-url", "http://127.0.0.1:9", "--journal", str(tmp_path / "j.sqlite")]
    res = CliRunner().invoke(app, args, env=env)
    assert res.exit_code == 2 and config_hash(cfg)[:12] in res.output and "fundarb promote" in res.output
    assert "never promoted" in res.output and not (tmp_path / "j.sqlite").exists()
    promote_for_test(runner_config(entry_apr=0.07), store)  # another config's record does not count
    res = CliRunner().invoke(app, args, env=env)
    assert res.exit_code == 2 and "no promotion record" in res.output
    for bad, why in ((["--paper", "--live"], "exactly one"), ([], "exactly one")):
        res = CliRunner().invoke(app, ["run", str(config), *bad], env=env)
        assert res.exit_code == 2 and why in res.output


def test_sigkill_between_the_legs_then_restart_leaves_no_naked_leg_and_no_duplicate(tmp_path):
    """The runner is killed -9 while its perp entry order hangs (the spot leg
    filled); the restarted runner recovers the operation from the journal:
    the lost order is looked up, never re-sent, the spot leg is unwound, and
    the carry then enters again cleanly."""
    cfg = runner_config()
    config, store, journal = write_config(cfg, tmp_path), tmp_path / "promotions.sqlite", tmp_path / "live.sqlite"
    promote_for_test(cfg, store)
    with running_emulator(START) as server:
        fund(server)
        hang = server.faults.add("timeout", venue="binanceusdm", path="/fapi/v1/order", delay_s=120)
        child = spawn_runner(server, journal, config, store, log=tmp_path / "first.log")
        try:
            wait_for(lambda: server.accounts.trade_list(*SPOT) and hang.hits == 1, "the spot fill and the hung perp order")
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        finally:
            stop_runner(child)
        server.faults.clear()
        assert server.accounts.all_orders(*PERP) == []  # naked until the restart
        restart = spawn_runner(server, journal, config, store, log=tmp_path / "second.log")
        try:
            with venue_clock(server):
                wait_for(lambda: server.accounts.position("binanceusdm").qty < 0 and abs(
                    server.accounts.wallets["binance"].get("BTC") + server.accounts.position("binanceusdm").qty) < 0.01,
                    "the carry entered again, hedged")
                wait_for(lambda: server.accounts.funding_list("binanceusdm"), "a funding payment")
        finally:
            assert stop_runner(restart) == 0
        j = assert_agree(server, journal)
        client_ids = [o.client_id for m in (SPOT, PERP) for o in server.accounts.all_orders(*m)]
    assert len(client_ids) == len(set(client_ids))  # no client id reached the venue twice
    ops = j.operations()
    assert ops[0]["kind"] == "open" and ops[0]["status"] == "unwound"
    lost = [o for o in j.rows("orders") if o["op_id"] == ops[0]["op_id"] and o["leg"] == "perp"]
    assert lost and all(o["status"] == "rejected" for o in lost)
    assert any(a["kind"] == "recovery" for a in j.rows("alerts"))
    assert j.blocked() is None


def test_a_venue_silent_near_a_settlement_raises_a_critical_alert(tmp_path):
    """The perp venue stops answering (websocket reset on every frame, every
    REST call past the client's timeout) two hours before a settlement; the
    spot venue, quiet between its hourly prices, is not reported."""
    base = runner_config()
    cfg = attrs.evolve(base, alerts=AlertSettings(unreachable_seconds=1.0),
                       runner=attrs.evolve(base.runner, unreachable_alert_minutes=180.0))
    journal = tmp_path / "live.sqlite"

    async def scenario(server, hub):
        runner, stop, task = await start_runner(server, journal, cfg, "live", io.StringIO())
        try:
            await until(lambda: runner.pacer.next_settlement, "the next settlement announced")
            hub.faults.add("dropped_websocket", venue="binanceusdm", times=None, mode="reset")
            server.faults.add("timeout", venue="binanceusdm", times=None, delay_s=5)
            await until(lambda: any(a["kind"] == "venue_unreachable" for a in runner.journal.rows("alerts")),
                        "the unreachable alert")
            return runner, [a for a in runner.journal.rows("alerts") if a["kind"] == "venue_unreachable"]
        finally:
            server.faults.clear()
            hub.faults.clear()
            await finish(runner, stop, task)

    with running_emulator(START) as server, venue_clock(server, minutes_per_step=0.5):  # 08:00 is 2 h (24 s) away
        fund(server)
        runner, alerts = asyncio.run(scenario(server, emulator_ws.websockets(server)))
    assert [a["severity"] for a in alerts] == ["critical"], [a["message"] for a in alerts]
    assert "binanceusdm:perp has not answered" in alerts[0]["message"]
    assert "before the 2024-03-01 08:00:00 UTC settlement" in alerts[0]["message"]
    assert runner.stats.unreachable_alerts == 1


def _operations(journal) -> list:
    if not journal.exists():
        return []
    j = Journal(journal)
    try:
        return j.operations()
    finally:
        j.close()


def test_sigkill_in_the_middle_of_a_close_then_restart_ends_flat(tmp_path):
    """The runner is killed -9 while its exit's perp buy hangs (the spot leg
    already sold); the restarted runner recovers the close from the journal
    (the lost order never re-sent; the spot sale traded back, so the carry is
    whole again), takes the carry back, and closes it: flat, no naked leg."""
    cfg = runner_config(max_holding_days=0.25)  # exits six venue hours after entry
    config, store, journal = write_config(cfg, tmp_path), tmp_path / "promotions.sqlite", tmp_path / "live.sqlite"
    promote_for_test(cfg, store)
    with running_emulator(START) as server:
        fund(server)
        child = spawn_runner(server, journal, config, store, log=tmp_path / "first.log")
        try:
            # the entry finished (its orders no longer followed): the hang meets the exit's perp order
            wait_for(lambda: [o["status"] for o in _operations(journal)] == ["done"], "the entry")
            hang = server.faults.add("timeout", venue="binanceusdm", path="/fapi/v1/order", delay_s=120)
            with venue_clock(server):
                wait_for(lambda: len(server.accounts.trade_list(*SPOT)) == 2 and hang.hits == 1,
                         "the exit's spot sale and the hung perp buy")
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        finally:
            stop_runner(child)
        server.faults.clear()
        assert server.accounts.position("binanceusdm").qty < 0  # the short is still open: half a close
        restart = spawn_runner(server, journal, config, store, log=tmp_path / "second.log")
        try:
            wait_for(lambda: server.accounts.position("binanceusdm").qty == 0
                     and len(server.accounts.trade_list(*PERP)) == 2, "the close, finished after the restart")
        finally:
            assert stop_runner(restart) == 0
        j = assert_agree(server, journal)
        spot_left = server.accounts.wallets["binance"].get("BTC")
        client_ids = [o.client_id for m in (SPOT, PERP) for o in server.accounts.all_orders(*m)]
    assert len(client_ids) == len(set(client_ids))
    ops = j.operations()
    assert [o["kind"] for o in ops] == ["open", "close", "close"]
    assert ops[1]["status"] == "unwound" and ops[2]["status"] == "done"  # recovered, then closed again
    lost = [o for o in j.rows("orders") if o["op_id"] == ops[1]["op_id"] and o["leg"] == "perp"]
    assert [o["status"] for o in lost] == ["rejected"]
    assert spot_left < 1e-4 and j.blocked() is None  # only the entry fee's remainder (dust) is left
