"""A paper run is recorded like a live one: its orders, fills and funding in
the trade log under the paper venue identity, and a restart takes its
position, cash and carry back from there (the emulator plays real Binance
data forward; its accounts are never touched by a paper run)."""

from __future__ import annotations

import asyncio
import io

import pytest

from fundarb.live.execution.paired import BLOCK_KEY, FLATTEN_KEY
from fundarb.live.journal import PAPER_ACCOUNTS_KEY, Journal, JournalError
from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.live import PERP, SPOT, session_on, until
from fundarb.testkit.runner import START, finish, logged, runner_config, start_runner, venue_clock

pytestmark = pytest.mark.usefixtures("hang_guard")


def test_a_paper_run_is_recorded_and_a_restart_resumes_it(tmp_path):
    journal, cfg = tmp_path / "paper.sqlite", runner_config()
    first_lines, second_lines = io.StringIO(), io.StringIO()

    async def first(server):
        runner, stop, task = await start_runner(server, journal, cfg, "paper", first_lines)
        try:
            engine = runner.engine
            await until(lambda: not engine.book.is_flat and not engine.open_orders, "the paper entry")
            await until(lambda: engine.book.funding_ledger, "a funding settlement in position")
            return runner, {"spot": engine.book.spot.qty, "perp": engine.book.perp.qty,
                            "cash": {n: a.cash for n, a in engine.book.accounts.items()},
                            "entry": engine.book.perp.entry, "entry_ts": engine.strategy.entry_ts,
                            "ledger": [(e.ts, e.amount) for e in engine.book.funding_ledger],
                            "seq": engine.intent_seq}
        finally:
            await finish(runner, stop, task)

    async def second(server):
        runner, stop, task = await start_runner(server, journal, cfg, "paper", second_lines)
        try:
            engine = runner.engine
            held = {"spot": engine.book.spot.qty, "perp": engine.book.perp.qty, "entry": engine.book.perp.entry,
                    "cash": {n: a.cash for n, a in engine.book.accounts.items()},
                    "in_carry": engine.strategy.direction, "entry_ts": engine.strategy.entry_ts,
                    "seq": engine.intent_seq, "funding": engine.book.funding}
            # the kill switch with --flatten, as `fundarb kill --flatten` writes it
            runner.journal.set_state(BLOCK_KEY, "kill switch: test", 0)
            runner.journal.set_state(FLATTEN_KEY, "test", 0)
            await until(lambda: engine.book.is_flat and not engine.open_orders, "the flatten")
            return held
        finally:
            await finish(runner, stop, task)

    with running_emulator(START) as server, venue_clock(server):
        _, before = asyncio.run(first(server))
        j = Journal(journal)
        try:
            fills, funding, orders, ops = j.rows("fills"), j.rows("funding"), j.rows("orders"), j.operations()
            assert len(fills) >= 2 and len(orders) >= 2
            assert j.position("binance:spot") == pytest.approx(before["spot"])
            assert j.position("binanceusdm:perp") == pytest.approx(before["perp"])
            assert {f["venue_id"].split("|")[1] for f in fills} == {"paper"}
            assert len({(f["venue_id"], f["venue_order_id"], f["trade_id"]) for f in fills}) == len(fills)
            assert [r["venue_ts"] for r in funding] == [t for t, _ in before["ledger"]]
            assert [r["amount"] for r in funding] == pytest.approx([a for _, a in before["ledger"]])
            assert [(o["kind"], o["status"]) for o in ops][:1] == [("open", "done")]
            assert {o["client_id"] for o in orders} == {f["client_id"] for f in fills}
            assert all(o["status"] == "filled" and o["filled_qty"] == pytest.approx(o["qty"]) for o in orders)
            assert j.get_state(PAPER_ACCOUNTS_KEY) is not None
        finally:
            j.close()
        held = asyncio.run(second(server))
        assert server.accounts.all_orders(*SPOT) == [] and server.accounts.all_orders(*PERP) == []  # nothing sent

    assert held["spot"] == pytest.approx(before["spot"]) and held["perp"] == pytest.approx(before["perp"])
    assert held["entry"] == pytest.approx(before["entry"])
    assert held["cash"] == pytest.approx(before["cash"])
    assert held["in_carry"] == 1 and held["entry_ts"] <= before["entry_ts"] + 10**9
    assert held["seq"] >= before["seq"]
    assert held["funding"] == pytest.approx(sum(a for _, a in before["ledger"]))
    [resumed] = logged(second_lines, "paper_resumed")
    assert resumed["perp_qty"] == pytest.approx(before["perp"])
    j = Journal(journal)
    try:
        orders = j.rows("orders")
        assert len({o["client_id"] for o in orders}) == len(orders)  # no client id used twice across runs
        closes = [o for o in j.operations() if o["kind"] == "close"]
        assert closes and closes[-1]["status"] == "done"
        assert j.position("binance:spot") == pytest.approx(0.0, abs=1e-9)
        assert j.position("binanceusdm:perp") == pytest.approx(0.0, abs=1e-9)
    finally:
        j.close()


def test_the_dashboard_shows_a_paper_run_from_its_trade_log(tmp_path):
    """The dashboard's source on a paper trade log (opened without keys, as
    `fundarb monitor` opens it): the legs, funding and trades are the paper
    run's, not the venue account's (which is flat: paper sends nothing)."""
    from fundarb.live.ccxt.client import Target
    from fundarb.live.execution.session import open_session
    from fundarb.ops.sources import LiveSource

    journal, cfg, lines = tmp_path / "paper.sqlite", runner_config(), io.StringIO()

    async def scenario(server):
        runner, stop, task = await start_runner(server, journal, cfg, "paper", lines)
        try:
            await until(lambda: not runner.engine.book.is_flat and runner.engine.book.funding_ledger, "a paid carry")
            await runner._heartbeat()
            held = (runner.engine.book.spot.qty, runner.engine.book.perp.qty)
            session = await open_session(cfg, journal, Target(api_url=server.base_url, timeout_ms=5000), trading=False,
                                         env={}, dotenv=None)
            try:
                source = LiveSource(session, "paper", reconciling=False)
                await source.poll()
                return held, source.snapshot(), session.paper
            finally:
                await session.close()
        finally:
            await finish(runner, stop, task)

    with running_emulator(START) as server, venue_clock(server):
        (spot, perp), snap, paper = asyncio.run(scenario(server))
    assert paper and snap.keys_needed == ()
    assert (snap.spot_qty, snap.perp_qty) == (pytest.approx(spot), pytest.approx(perp)) and perp < 0
    assert snap.funding_count >= 1 and snap.pnl_funding > 0 and len(snap.trades) >= 2


def test_a_paper_trade_log_refuses_live_trading_and_a_live_one_refuses_paper(tmp_path):
    paper, live = tmp_path / "paper.sqlite", tmp_path / "live.sqlite"

    async def scenario(server):
        for path, is_paper in ((paper, True), (live, False)):
            session = await session_on(server, path, paper=is_paper)
            await session.close()
        for path, is_paper, other in ((paper, False, "paper trading"), (live, True, "loopback")):
            with pytest.raises(JournalError, match=f"trade log of .*{other}.*another venue or account"):
                await session_on(server, path, paper=is_paper)

    with running_emulator(START) as server:
        asyncio.run(scenario(server))
