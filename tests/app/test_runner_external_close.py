"""`run --live` when the perp leg is closed by someone else: the venue
liquidates it, or a human closes it by hand. Against the emulator on real
Binance prices (2024-03), with the runner's own clock and reconciliation.

Before, the reconciliation mismatch fired the kill switch and the flatten was
re-sent on every market event: each sold the spot, had its reduce-only perp
buy refused, and bought the spot back (150 operations in 46 s). Now the
trade log learns the venue's trade and the runner's book takes it (the
position is the venue's), it is alerted once and entries are blocked (the
kill switch); what is left, the spot, is sold in one operation sized from
what is held, with no perp order; nothing more is traded while the halt
stands, and the fees after the event are one spot sell.
"""

from __future__ import annotations

import asyncio
import io
import time

import pytest

from fundarb.testkit.emulator.accounts import BUY, MARKET
from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.live import fund, until
from fundarb.testkit.runner import START, finish, runner_config, start_runner, venue_clock

TAKER = 0.001  # Binance spot taker fee in the emulator's cost model (asserted below from the fills)


def _drain_margin(server) -> None:
    """The perp's isolated collateral cut to almost nothing (as a margin
    withdrawal or a run of losses would): the venue liquidates at its next
    hourly mark, on the real price."""
    acc = server.accounts
    with acc._lock:
        pos = acc.positions["binanceusdm"]
        pos.margin = round(abs(pos.qty) * acc.mark("binanceusdm") * 0.002, 2)


def _close_by_hand(server) -> None:
    qty = abs(server.accounts.position("binanceusdm").qty)
    server.accounts.place("binanceusdm", "perp", BUY, MARKET, qty, reduce_only=True)


@pytest.mark.parametrize("event", ["liquidation", "closed_by_hand"])
def test_perp_leg_closed_outside_fundarb_ends_in_one_flatten_one_alert_and_a_block(tmp_path, event):
    journal, cfg, lines = tmp_path / "live.sqlite", runner_config(), io.StringIO()

    async def scenario(server, pause):
        runner, stop, task = await start_runner(server, journal, cfg, "live", lines)
        session = runner.session
        try:
            j = runner.journal
            await until(lambda: j.position(session.perp.account) < 0 and not runner.engine.open_orders,
                        "the entry", timeout=40.0)
            ops_before = len(j.operations())
            fills_before = len(j.fills())
            held_spot = j.position(session.spot.account, session.spot.base)
            pause.set()
            (_drain_margin if event == "liquidation" else _close_by_hand)(server)
            pause.clear()
            await until(lambda: server.accounts.position("binanceusdm").qty == 0, "the venue's close", timeout=30.0)
            await until(lambda: j.position(session.perp.account) == 0, "the trade log learning it", timeout=30.0)
            await until(lambda: (j.blocked() or "").startswith("kill switch"), "the halt", timeout=30.0)
            await until(lambda: j.position(session.spot.account, session.spot.base) < 1e-4, "the spot sold",
                        timeout=30.0)
            settle = time.monotonic() + 4.0  # about 400 venue minutes of market events with the halt standing
            while time.monotonic() < settle:
                await asyncio.sleep(0.2)
            return (j.operations()[ops_before:], j.fills()[fills_before:], j.rows("alerts"), j.blocked(), held_spot,
                    runner.engine.monitor.kill.halted)
        finally:
            await finish(runner, stop, task)

    with running_emulator(START) as server, venue_clock(server) as pause:
        fund(server)
        ops, fills, alerts, blocked, held_spot, halted = asyncio.run(scenario(server, pause))
        perp_orders = server.accounts.all_orders("binanceusdm", "perp")
    ours = [o for o in ops if o["kind"] != "external"]
    assert len(ours) <= 1, ours  # at most one flatten attempt
    # the engine's book learned the venue's trade: what it holds is the spot alone, sold in one operation
    # (the kill switch's paired close, or the rebalance of the naked leg, whichever acts first)
    assert [o["kind"] for o in ours] in (["close"], ["adjust"]) and ours[0]["status"] == "done", ours
    assert "flatten_failed" not in [a["kind"] for a in alerts], alerts
    assert len([o for o in ops if o["kind"] == "external"]) == 1
    external = [a for a in alerts if a["kind"] == "external_trade"]
    assert len(external) == 1 and external[0]["severity"] == "critical", alerts
    assert blocked is not None and blocked.startswith("kill switch") and halted
    # fundarb sent no perp order after the venue's close (no refused reduce-only buys), one spot sell
    assert not [o for o in perp_orders if o.client_id.startswith("fa") and o.side == BUY]
    mine = [f for f in fills if not f["client_id"].startswith("ext:")]
    assert {f["side"] for f in mine} == {"sell"} and all(f["account"] == "binance:spot" for f in mine)
    assert sum(f["qty"] for f in mine) == pytest.approx(held_spot, abs=1e-5)
    fees = sum(f["fee_quote"] or 0.0 for f in mine)
    one_sell = sum(f["qty"] * f["price"] for f in mine) * TAKER
    assert fees <= one_sell * 1.0001 + 1e-6, (fees, one_sell)
    print(f"\n{event}: {len(ours)} flatten operation ({ours[0]['status']}), fees after the event {fees:,.2f} USDT "
          f"on a spot sell of {held_spot:g} BTC; alerts {[a['kind'] for a in alerts]}")
