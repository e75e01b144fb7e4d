"""The strategy runner on a coin-margined carry (Binance spot with a Binance
COIN-M BTCUSD_PERP short, 100 USD a contract) against the emulator playing
the real data forward from 2024-03-01 06:00, when COIN-M funding paid about
60% APR: paper (the simulator's inverse account, recorded like live) and
live (the engine's contracts through the journaled pairs, the bought BTC
moved into the COIN-M wallet, a restart that takes the carry back, and the
kill switch's flatten)."""

from __future__ import annotations

import asyncio
import io

import attrs
import pytest
from typer.testing import CliRunner

from fundarb.cli.main import app
from fundarb.live.journal import Journal
from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.live import COINM, SPOT, assert_agree, coinm_config, fund_coinm, said
from fundarb.testkit.runner import (
    START,
    live_carry_then_restart_flatten,
    logged,
    paper_carry_then_flatten,
    runner_config,
    venue_clock,
    write_config,
)

pytestmark = pytest.mark.usefixtures("hang_guard")

FACE = 100.0


def config():
    """The shipped coin-margined config at a 5,000 USD notional: the COIN-M
    float the test funds (0.01 BTC) covers the short's initial margin at the
    venue's 20x until the bought BTC is moved in."""
    base = coinm_config()
    return runner_config(attrs.evolve(base, strategy=attrs.evolve(base.strategy, notional=5_000.0)))


def test_a_paper_coin_margined_run_is_recorded_in_contracts_and_btc(tmp_path):
    journal, cfg, lines = tmp_path / "paper.sqlite", config(), io.StringIO()

    with running_emulator(START) as server, venue_clock(server):
        runner = asyncio.run(paper_carry_then_flatten(server, journal, cfg, lines))
        assert server.accounts.all_orders(*SPOT) == [] and server.accounts.all_orders(*COINM) == []  # nothing sent
    book = runner.engine.book
    j = Journal(journal)
    perp_fills = [f for f in j.rows("fills") if f["account"] == cfg.perp_account]
    # the short in whole contracts of 100 USD, its fees in BTC: the trade log as a venue would write it
    assert perp_fills and all(f["qty"] == round(f["qty"]) and f["fee_currency"] == "BTC" for f in perp_fills)
    assert all(f["fee_quote"] == pytest.approx(f["fee"] * f["price"]) for f in perp_fills)
    # the settlement paid the short in BTC: contracts x 100 / mark x rate, at the engine's mark and rate
    entry = book.funding_ledger[0]
    (paid, *_) = j.rows("funding")
    contracts = sum(f["qty"] for f in perp_fills if f["side"] == "sell" and f["venue_ts"] < entry.ts)
    assert entry.rate > 0 and paid["amount"] > 0
    assert paid["amount"] == pytest.approx(contracts * FACE / entry.mark * entry.rate)
    assert paid["amount"] == pytest.approx(entry.amount / entry.mark)
    assert j.units(cfg.perp_account) == 0
    # `fundarb positions` on the paper trade log: the short in contracts, its funding in BTC
    shown = CliRunner().invoke(app, ["positions", "--config", str(write_config(cfg, tmp_path)), "--journal", str(journal)],
                               env={"COLUMNS": "160"})
    assert shown.exit_code == 0, shown.output
    assert "(+0 contracts)" in said(shown)
    assert f"{len(j.rows('funding'))} funding payments, {sum(f['amount'] for f in j.rows('funding')):+.8g} BTC" in said(shown)
    assert [h["reason"] for h in logged(lines, "halted")] == ["kill switch: test"], logged(lines, "halted")
    j.close()


def test_a_live_coin_margined_run_trades_contracts_moves_the_btc_and_a_restart_takes_it_back(tmp_path):
    journal, cfg = tmp_path / "live.sqlite", config()

    with running_emulator(START) as server:
        fund_coinm(server)
        lines = io.StringIO()
        with venue_clock(server):
            seen, _, (direction, units) = live_carry_then_restart_flatten(server, journal, cfg, lambda: {
                "short": server.accounts.position(*COINM).qty,
                "margin": server.accounts.wallets["binancecoinm"].get("BTC"),
                "spot_left": server.accounts.wallets["binance"].get("BTC"),
                "paid": [p.amount for p in server.accounts.funding_list(*COINM)]}, lines)
        j = assert_agree(server, journal, coin_margined=True)
        flat = server.accounts.position(*COINM).qty
    short, margin, spot_left = seen["short"], seen["margin"], seen["spot_left"]
    ops = j.operations()
    assert ops[0]["kind"] == "open" and ops[0]["status"] in ("done", "rebalanced")
    # the short the engine sized: whole contracts worth the notional at the entry
    assert short < 0 and abs(short) == pytest.approx(cfg.strategy.notional / FACE, abs=1)
    # the bought BTC margined it in the COIN-M wallet, none left on the spot wallet
    assert margin > 0.05 and spot_left < 1e-5
    assert direction == 1 and units == pytest.approx(short)  # the restart took the carry back
    assert flat == 0 and [o["kind"] for o in ops].count("open") == 1
    assert seen["paid"] and all(p > 0 for p in seen["paid"])  # the settlement in position, paid by the venue
    started = logged(lines, "started")[0]
    assert started["in_carry"] is True
    j.close()
