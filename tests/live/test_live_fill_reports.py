"""Fill reports as a venue may send them: lost, duplicated, delayed and
re-numbered trades, against the loopback emulator.

The venue's trade list (``fetch_my_trades``, what the executor and
reconciliation learn fills from) is perturbed call by call, per leg, by a
plan hypothesis draws; after the plan runs out the venue answers truly. A
paired open is executed and then reconciled. Whatever the plan, the venue
never holds more than the size asked on either leg, and when the trade log
and the venue do not agree, new entries are blocked (never a silent
difference).
"""

from __future__ import annotations

import asyncio
import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fundarb.live.execution.paired import execute_pair
from fundarb.live.execution.reconcile import reconcile
from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.live import fund, session_on

SIZE = 0.01
REPORTS = ("true", "lost", "lost_all", "duplicated", "delayed", "renumbered", "renumbered_extra")


def _perturbed(trades: list[dict], report: str, held: list[dict]) -> list[dict]:
    """One answer of the trade list under ``report``; ``held`` keeps what a
    delay holds back for the next answer."""
    if report == "lost":  # the newest trade is missing from this answer
        return trades[:-1]
    if report == "lost_all":
        return []
    if report == "duplicated":  # every trade twice, the same id
        return [t for t in trades for _ in range(2)]
    if report == "delayed":  # nothing now; the next answer has them
        held.extend(trades)
        return []
    if report == "renumbered":  # the same trades under other ids
        return [{**copy.deepcopy(t), "id": f"{t['id']}0"} for t in trades]
    if report == "renumbered_extra":  # the trades, and again under other ids
        return trades + [{**copy.deepcopy(t), "id": f"{t['id']}0"} for t in trades]
    return trades


def _perturb(client, plan: list[str]) -> None:
    real = client.fetch_my_trades
    calls = {"n": 0}
    held: list[dict] = []

    async def fetch_my_trades(*args, **kwargs):
        trades = await real(*args, **kwargs)
        n = calls["n"]
        calls["n"] += 1
        if n >= len(plan):
            return trades
        return _perturbed(trades, plan[n], held)

    client.fetch_my_trades = fetch_my_trades


# a report held for up to 30 answers in a row: longer than the executor waits for trades to show
plans = st.lists(st.tuples(st.sampled_from(REPORTS), st.integers(1, 30)), max_size=3).map(
    lambda runs: [report for report, times in runs for _ in range(times)])


@settings(max_examples=14, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spot_plan=plans, perp_plan=plans)
def test_no_fill_report_sequence_leaves_the_venue_holding_more_than_asked(spot_plan, perp_plan, tmp_path_factory):
    journal = tmp_path_factory.mktemp("reports") / "fundarb.sqlite"
    with running_emulator() as server:
        fund(server)

        async def scenario():
            session = await session_on(server, journal, timeout_ms=2000)
            session.trader.poll_s = 0.05  # the executor's re-reads of a short trade list come quicker
            try:
                _perturb(session.spot.exchange, spot_plan)
                _perturb(session.perp.exchange, perp_plan)
                outcome = await execute_pair(session, "open", SIZE, {})
                rec = await reconcile(session, "manual")
                j = session.journal
                return (outcome, rec, j.position(session.perp.account), j.position(session.spot.account),
                        j.blocked())
            finally:
                await session.close()

        outcome, rec, journal_perp, journal_spot, blocked = asyncio.run(scenario())
        venue_perp = server.accounts.position("binanceusdm").qty
        venue_spot = server.accounts.wallets["binance"].get("BTC")
        context = (spot_plan, perp_plan, outcome.status, outcome.actions, venue_perp, venue_spot)
        assert -SIZE - 1e-12 <= venue_perp <= 1e-12, context
        assert 0 <= venue_spot <= SIZE + 1e-12, context
        perp_orders = [o for o in server.accounts.all_orders("binanceusdm", "perp")]
        assert sum(o.filled for o in perp_orders if o.side == "sell") <= SIZE + 1e-12, context
        agree = abs(journal_perp - venue_perp) < 1e-9 and rec.ok
        assert agree or blocked is not None, (context, journal_perp, rec.mismatches)
        if not spot_plan and not perp_plan:  # the truth: a plain, agreeing open
            assert outcome.status == "done" and agree and blocked is None, context


def test_a_renumbered_report_of_a_filled_order_stops_the_pair_instead_of_doubling(tmp_path):
    """One case written out: the perp's trade comes back under a second id
    as well. It cannot be a second fill of a filled order: the pair stops,
    blocked and alerted, and nothing more is sent."""
    journal = tmp_path / "fundarb.sqlite"
    with running_emulator() as server:
        fund(server)

        async def scenario():
            session = await session_on(server, journal)
            try:
                _perturb(session.perp.exchange, ["renumbered_extra"] * 3)
                return await execute_pair(session, "open", SIZE, {}), session.journal.blocked()
            finally:
                await session.close()

        outcome, blocked = asyncio.run(scenario())
        assert outcome.status == "needs_recovery", outcome
        assert "the venue says 0.01 BTC filled" in outcome.actions[0] and blocked is not None
        assert len(server.accounts.all_orders("binanceusdm", "perp")) == 1
        assert server.accounts.position("binanceusdm").qty == pytest.approx(-SIZE)
