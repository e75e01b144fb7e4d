"""A coin-margined carry on BTC already held (``structure.capital_asset =
"BTC"``) traded live against the loopback emulator through the real ccxt
clients: the BTC sits on the Binance spot wallet; an open moves what the
short needs into the COIN-M wallet and shorts BTCUSD_PERP against it, buying
only what the holding lacks; a close buys the short back and sells nothing.

The emulator runs on the shipped real hourly closes and settlements from
2024-03-01 06:00. Expected BTC amounts are computed here from the venue's own
trades and payments by the inverse rules, not read back from fundarb.
"""

from __future__ import annotations

import pytest

from fundarb.cli.main import app
from fundarb.config import dumps
from fundarb.live.journal import Journal
from fundarb.testkit.live import COINM, SPOT, coinm_config, placed_orders, run, said, venue_cli

pytestmark = pytest.mark.usefixtures("hang_guard")

FACE = 100.0
SIZE = 0.1
HELD = 0.15  # BTC on the spot wallet before the carry


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "held.toml"
    path.write_text(dumps(coinm_config(held=True)))
    return path




def btc_on_venue(server) -> float:
    return server.accounts.wallets["binance"].get("BTC") + server.accounts.wallets["binancecoinm"].get("BTC")


def settled_btc(server) -> float:
    """What the venue's own short trades and payments left in BTC: each
    closing buy of a short realizes face x (1/price - 1/entry), less every fee, plus funding."""
    trades = server.accounts.trade_list(*COINM)
    sold = [t for t in trades if t.side == "sell"]
    bought = [t for t in trades if t.side == "buy"]
    entry = sum(t.qty for t in sold) / sum(t.qty / t.price for t in sold)  # the harmonic mean the venue keeps
    pnl = sum(t.qty * FACE * (1 / t.price - 1 / entry) for t in bought)
    fees = sum(t.fee for t in trades)
    paid = sum(p.amount for p in server.accounts.funding_list(*COINM))
    return pnl - fees + paid


def test_open_then_close_a_carry_on_btc_held_sells_nothing(coinm_venue, config, tmp_path):
    coinm_venue.accounts.fund("binance", "BTC", HELD)
    journal = tmp_path / "t.sqlite"
    opened = venue_cli(app, coinm_venue, journal, config, "trade", "open", "--size", str(SIZE), "--yes")
    assert opened.exit_code == 0, opened.output
    assert "operation 1: open -> done" in said(opened) and "venues and trade log agree" in said(opened)
    assert coinm_venue.accounts.trade_list(*SPOT) == []  # the holding covers the short: nothing is bought
    (short,) = coinm_venue.accounts.trade_list(*COINM)
    hedged = short.qty * FACE / short.price
    assert hedged == pytest.approx(SIZE, abs=FACE / short.price)  # whole contracts nearest the size
    # the short's BTC went into the COIN-M wallet before it was placed; the rest stays on the spot wallet
    moved = coinm_venue.accounts.wallets["binancecoinm"].get("BTC")
    assert moved == pytest.approx(hedged, abs=1e-6) and "the short's margin" in said(opened)
    assert btc_on_venue(coinm_venue) == pytest.approx(HELD - short.fee, abs=1e-12)
    assert "no liquidation price" in said(opened)

    coinm_venue.advance_hours(12)  # across two settlements: the short is paid in BTC
    shown = venue_cli(app, coinm_venue, journal, config, "positions")
    assert shown.exit_code == 0, shown.output
    assert f"-{short.qty:g} contracts" in said(shown)
    assert "uncovered 0.000%" in said(shown) and "a close keeps the BTC" in said(shown)
    desk = run(_desk(coinm_venue, journal, config))
    # the dashboard's view: the holding against the short, no drift (and so no drift alert)
    assert desk.drift == 0.0 and desk.spot_qty == pytest.approx(btc_on_venue(coinm_venue), abs=1e-8)
    assert desk.perp_qty < 0 and desk.keeps_btc
    closed = venue_cli(app, coinm_venue, journal, config, "trade", "close", "--yes")
    assert closed.exit_code == 0, closed.output
    assert "operation 2: close -> done" in said(closed)
    assert coinm_venue.accounts.trade_list(*SPOT) == []  # not one satoshi sold
    assert coinm_venue.accounts.position("binancecoinm", "inverse").qty == 0
    assert btc_on_venue(coinm_venue) == pytest.approx(HELD + settled_btc(coinm_venue), abs=1e-8)  # wallets keep satoshis
    j = Journal(journal)
    paid = j.rows("funding")
    assert len(paid) == 2 and all(p["amount"] > 0 for p in paid)
    assert j.units("binancecoinm:perp") == 0 and j.blocked() is None
    ok = [r for r in j.rows("reconciliations") if r["trigger"] == "after close"]
    assert ok and ok[-1]["ok"] == 1, ok
    j.close()


async def _desk(server, journal, config):
    from fundarb.config import load
    from fundarb.ops.sources import LiveSource
    from fundarb.testkit.live import session_on

    session = await session_on(server, journal, cfg=load(config))
    try:
        source = LiveSource(session, "emulator", reconciling=False)
        await source.poll()
        source.marks[session.perp.account] = server.accounts.mark("binancecoinm", "inverse")
        return source.snapshot()
    finally:
        await session.close()


def test_a_holding_short_of_the_size_buys_only_what_it_lacks(coinm_venue, config, tmp_path):
    coinm_venue.accounts.fund("binance", "BTC", 0.06)
    coinm_venue.accounts.fund("binance", "USDT", 10_000.0)
    journal = tmp_path / "t.sqlite"
    opened = venue_cli(app, coinm_venue, journal, config, "trade", "open", "--size", str(SIZE), "--yes")
    assert opened.exit_code == 0, opened.output
    (short,) = coinm_venue.accounts.trade_list(*COINM)
    (buy,) = coinm_venue.accounts.trade_list(*SPOT)
    hedged = short.qty * FACE / short.price
    # whole spot lots (1e-5 BTC), just enough at the plan's mark: within a lot and the mark's move of the short's worth
    assert buy.qty == pytest.approx(hedged - 0.06, abs=2e-4)
    assert coinm_venue.accounts.wallets["binancecoinm"].get("BTC") == pytest.approx(hedged, abs=2e-4)
    assert "operation 1: open -> done" in said(opened)


def test_a_holding_too_small_for_the_margin_is_refused_before_anything_is_sent(coinm_venue, config, tmp_path):
    journal = tmp_path / "t.sqlite"
    result = venue_cli(app, coinm_venue, journal, config, "trade", "open", "--size", str(SIZE), "--yes")
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "FAIL perp balance" in text and "nothing was sent" in text
    assert placed_orders(coinm_venue, SPOT) == [] and placed_orders(coinm_venue, COINM) == []


def test_the_short_refused_leaves_the_holding_as_it_was(coinm_venue, config, tmp_path):
    coinm_venue.accounts.fund("binance", "BTC", HELD)
    journal = tmp_path / "t.sqlite"
    coinm_venue.faults.add("refuse", venue="binancecoinm", path="/dapi/v1/order")
    result = venue_cli(app, coinm_venue, journal, config, "trade", "open", "--size", str(SIZE), "--yes")
    assert result.exit_code == 1, result.output
    assert placed_orders(coinm_venue, SPOT) == []  # nothing bought, nothing to unwind
    assert btc_on_venue(coinm_venue) == pytest.approx(HELD, abs=1e-12)
    j = Journal(journal)
    (op,) = j.operations()
    assert op["status"] == "failed"
    assert j.blocked() is None  # no leg was left: nothing to block
    j.close()


def test_a_timeout_after_the_venue_placed_the_short_finds_it_and_sends_no_duplicate(coinm_venue, config, tmp_path):
    coinm_venue.accounts.fund("binance", "BTC", HELD)
    journal = tmp_path / "t.sqlite"
    coinm_venue.faults.add("timeout_after_place", venue="binancecoinm", delay_s=3.0)  # past the 2 s request timeout
    result = venue_cli(app, coinm_venue, journal, config, "trade", "open", "--size", str(SIZE), "--yes")
    assert result.exit_code == 0, result.output
    (short,) = placed_orders(coinm_venue, COINM)
    j = Journal(journal)
    events = [e["detail"] for e in j.rows("order_events") if e["client_id"] == short.client_id]
    assert "found after a failed placement" in events
    (op,) = j.operations()
    assert op["status"] == "done"
    assert j.units("binancecoinm:perp") == -short.qty
    j.close()
