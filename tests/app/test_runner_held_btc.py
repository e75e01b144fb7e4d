"""The strategy runner on a coin-margined carry on BTC already held
(``structure.capital_asset = "BTC"``) against the emulator playing the real
data forward from 2024-03-01 06:00: paper (the simulator starts holding the
capital's worth in BTC, recorded like live) and live (the holding on the
Binance spot wallet is moved under the short, nothing is bought or sold, a
restart takes the carry back and the kill switch's flatten buys the short
back and keeps the BTC)."""

from __future__ import annotations

import asyncio
import io

import attrs
import pytest

from fundarb.live.execution.holdings import holdings_of
from fundarb.live.journal import PAPER_HELD_KEY, Journal
from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.live import COINM, SPOT, coinm_config
from fundarb.testkit.runner import (
    START,
    live_carry_then_restart_flatten,
    paper_carry_then_flatten,
    runner_config,
    venue_clock,
)

pytestmark = pytest.mark.usefixtures("hang_guard")

FACE = 100.0
HELD = 0.2  # BTC on the live spot wallet: more than the 5,000 USD notional is worth


def config():
    base = coinm_config()
    return runner_config(attrs.evolve(base, strategy=attrs.evolve(base.strategy, notional=5_000.0),
                                      structure=attrs.evolve(base.structure, capital_asset="BTC")))


def test_a_paper_run_on_btc_held_shorts_against_it_and_keeps_it(tmp_path):
    journal, cfg = tmp_path / "paper.sqlite", config()
    with running_emulator(START) as server, venue_clock(server):
        runner = asyncio.run(paper_carry_then_flatten(server, journal, cfg, io.StringIO()))
        assert server.accounts.all_orders(*SPOT) == [] and server.accounts.all_orders(*COINM) == []  # nothing sent
    book = runner.engine.book
    j = Journal(journal)
    held = float(j.get_state(PAPER_HELD_KEY))
    # the capital's worth in BTC at the first spot price the runner saw
    assert held * book.spot.price == pytest.approx(cfg.capital, rel=0.05)
    assert [f for f in j.rows("fills") if f["account"] == cfg.spot_account] == []  # the holding covered the short
    perp_fills = [f for f in j.rows("fills") if f["account"] == cfg.perp_account]
    assert {f["side"] for f in perp_fills} == {"sell", "buy"} and j.units(cfg.perp_account) == 0
    # every BTC is still held: the start, plus what the short settled in by the trade log (PnL, fees, funding)
    settled = holdings_of(j, cfg.spot_account, cfg.perp_account, FACE).settled_btc
    assert j.rows("funding") and settled != 0
    assert book.is_flat and book.spot.qty == pytest.approx(held + settled, abs=1e-12)
    assert runner.sim.accounts[cfg.spot_account].acct.qty == pytest.approx(held + settled, abs=1e-12)
    j.close()


def test_a_live_run_on_btc_held_moves_it_under_the_short_and_a_flatten_keeps_it(tmp_path):
    journal, cfg = tmp_path / "live.sqlite", config()

    with running_emulator(START) as server:
        server.accounts.fund("binance", "BTC", HELD)
        with venue_clock(server):
            seen, _, (direction, units) = live_carry_then_restart_flatten(server, journal, cfg, lambda: {
                "short": server.accounts.position(*COINM).qty,
                "margin": server.accounts.wallets["binancecoinm"].get("BTC"),
                "paid": sum(p.amount for p in server.accounts.funding_list(*COINM))})
        flat = server.accounts.position(*COINM).qty
        spot_trades = server.accounts.trade_list(*SPOT)
        trades = server.accounts.trade_list(*COINM)
        paid = sum(p.amount for p in server.accounts.funding_list(*COINM))
        total = server.accounts.wallets["binance"].get("BTC") + server.accounts.wallets["binancecoinm"].get("BTC")
    short, margin, paid_then = seen["short"], seen["margin"], seen["paid"]
    assert spot_trades == []  # not a satoshi bought or sold
    assert short < 0 and abs(short) == pytest.approx(cfg.strategy.notional / FACE, abs=1)
    sold = [t for t in trades if t.side == "sell"]
    hedged = sum(t.qty * FACE / t.price for t in sold)
    # the holding under the short (moved before it was placed, at the mark then; its fee made good after), and
    # the funding it was paid: at least the short's BTC, at most a price move's worth more
    assert paid_then > 0 and hedged + paid_then - 1e-7 <= margin <= hedged * 1.01 + paid_then
    assert direction == 1 and units == pytest.approx(short)  # the restart took the carry back
    assert flat == 0
    entry = sum(t.qty for t in sold) / hedged * FACE
    pnl = sum(t.qty * FACE * (1 / t.price - 1 / entry) for t in trades if t.side == "buy")
    assert paid > 0 and total == pytest.approx(HELD + pnl + paid - sum(t.fee for t in trades), abs=1e-8)
    j = Journal(journal)
    assert [o["kind"] for o in j.operations()].count("open") == 1
    assert j.rows("reconciliations")[-1]["ok"] == 1, j.rows("reconciliations")[-1]
    j.close()
