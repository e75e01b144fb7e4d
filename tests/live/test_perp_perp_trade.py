"""A perp/perp carry on the venues (sims/perp_perp.toml: long the Bybit
BTCUSDT perp, short Binance USD-M's, each on its own venue's USDT) against
the loopback emulator through the real ccxt clients: paired open and close
with each leg's funding journaled per account, and the faults of the
spot/perp carry's tests, each leg in turn. Every test ends with the trade
log, the journal and both venues in agreement (trade ids, both positions,
funding rows per venue)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fundarb.cli.main import app
from fundarb.config import project_file
from fundarb.live.execution.paired import execute_pair
from fundarb.live.execution.reconcile import reconcile
from fundarb.testkit.emulator.accounts import BUY, MARKET
from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.live import (
    PERP_PERP_START,
    assert_agree_perp_perp,
    fund_perp_perp,
    perp_perp_config,
    run,
    said,
    session_on,
    venue_cli,
)

pytestmark = pytest.mark.usefixtures("hang_guard")
CONFIG = project_file(Path("sims") / "perp_perp.toml")
LONG, SHORT = ("bybit", "perp"), ("binanceusdm", "perp")


@pytest.fixture
def venues():
    """The emulator where Binance USD-M pays Bybit's funding and about 11% APR more."""
    with running_emulator(start=PERP_PERP_START) as server:
        yield server


def orders_on(server, market):
    return server.accounts.all_orders(*market)


def pair(server, journal, kind="open", qty=0.01, spot_qty=None, **options):
    """One paired operation of the perp/perp config through a session of its own, then a reconciliation."""
    async def scenario():
        session = await session_on(server, journal, cfg=perp_perp_config(), **options)
        try:
            outcome = await execute_pair(session, kind, qty, {}, spot_qty=spot_qty)
            return outcome, await reconcile(session, f"after {kind}")
        finally:
            await session.close()
    return run(scenario())


def test_open_a_settlement_and_close_through_the_cli_journal_each_venues_funding(venues, tmp_path):
    fund_perp_perp(venues)
    journal = tmp_path / "trades.sqlite"
    opened = venue_cli(app, venues, journal, CONFIG, "trade", "open", "--size", "0.01", "--yes")
    assert opened.exit_code == 0, opened.output
    text = said(opened)
    assert "open: long 0.01 BTC, perp 0.01 BTC" in text and "operation 1: open -> done" in text
    assert "ok long balance:" in text and "ok short balance:" in text
    assert "ok long margin buffer:" in text and "ok short margin buffer:" in text
    assert "bybit:long venue leverage set to 3x" in text and "perp venue leverage set to 3x" in text
    assert "long bybit:long: venue +0.01 BTC, trade log +0.01" in text
    j = assert_agree_perp_perp(venues, journal)
    assert [(o["account"], o["side"], o["reduce_only"]) for o in j.rows("orders")] == [
        ("bybit:long", "buy", 0), ("binanceusdm:perp", "sell", 0)]
    j.close()
    assert venues.accounts.position("bybit").qty == pytest.approx(0.01)

    venues.advance_hours(8)  # across the 08:00 settlement of both venues
    reconciled = venue_cli(app, venues, journal, CONFIG, "reconcile")
    assert reconciled.exit_code == 0, reconciled.output
    assert "funding payments learned: 2" in said(reconciled)
    shown = venue_cli(app, venues, journal, CONFIG, "positions")
    assert shown.exit_code == 0, shown.output
    text = said(shown)
    (long_paid,) = venues.accounts.funding_list("bybit")
    (short_paid,) = venues.accounts.funding_list("binanceusdm")
    assert long_paid.amount < 0 < short_paid.amount  # the long pays its venue, the short is paid by its own
    assert "bybit:long funding: now" in text and f"1 payments, {long_paid.amount:+,.4f} USDT" in text
    assert "binanceusdm:perp funding: now" in text and f"1 payments, {short_paid.amount:+,.4f} USDT" in text
    assert "long bybit:long +0.01 +0.01" in text and "short binanceusdm:perp -0.01 -0.01" in text

    closed = venue_cli(app, venues, journal, CONFIG, "trade", "close", "--yes")
    assert closed.exit_code == 0, closed.output
    assert "ok long perp: the venue shows 0.01 BTC long (journal 0.01); selling 0.01" in said(closed)
    j = assert_agree_perp_perp(venues, journal)
    # a close of the long perp is reduce-only like the short's
    assert [(o["account"], o["side"], o["reduce_only"]) for o in j.rows("orders")][2:] == [
        ("bybit:long", "sell", 1), ("binanceusdm:perp", "buy", 1)]
    assert all(o.reduce_only for o in venues.accounts.all_orders(*LONG) if o.side == "sell")
    by_account = {f["account"]: f["amount"] for f in j.rows("funding")}
    assert by_account == {"bybit:long": pytest.approx(long_paid.amount),
                          "binanceusdm:perp": pytest.approx(short_paid.amount)}
    assert j.position("bybit:long") == 0 and j.position("binanceusdm:perp") == 0
    j.close()
    statement = said(venue_cli_statement(journal))  # a column per venue paid (its heading cut on a narrow terminal)
    assert f"{long_paid.amount:+,.4f}" in statement and f"{short_paid.amount:+,.4f}" in statement, statement


def venue_cli_statement(journal):
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["statement", "--journal", str(journal), "--config", str(CONFIG)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("venue", ["bybit", "binanceusdm"])
def test_a_timeout_after_the_venue_placed_a_leg_finds_it_and_sends_no_duplicate(venues, tmp_path, venue):
    fund_perp_perp(venues)
    journal = tmp_path / "trades.sqlite"
    venues.faults.add("timeout_after_place", venue=venue, delay_s=1.5)
    outcome, rec = pair(venues, journal, timeout_ms=500)
    assert outcome.status == "done" and rec.ok, (outcome, rec.mismatches)
    assert len(orders_on(venues, LONG)) == 1 and len(orders_on(venues, SHORT)) == 1
    j = assert_agree_perp_perp(venues, journal)
    account = "bybit:long" if venue == "bybit" else "binanceusdm:perp"
    (cid,) = [o["client_id"] for o in j.rows("orders") if o["account"] == account]
    assert "found after a failed placement" in [e["detail"] for e in j.rows("order_events") if e["client_id"] == cid]


@pytest.mark.parametrize("venue", ["bybit", "binanceusdm"])
def test_a_partial_fill_of_one_leg_is_completed_to_an_equal_pair(venues, tmp_path, venue):
    fund_perp_perp(venues)
    journal = tmp_path / "trades.sqlite"
    venues.faults.add("partial_fill", venue=venue, fill_ratio=0.4)
    outcome, rec = pair(venues, journal)
    assert outcome.status == "rebalanced" and rec.ok, (outcome, rec.mismatches)
    j = assert_agree_perp_perp(venues, journal)
    leg = "spot" if venue == "bybit" else "perp"
    done = [(o["role"], o["qty"], o["filled_qty"], o["status"]) for o in j.rows("orders") if o["leg"] == leg]
    assert done == [("entry", 0.01, pytest.approx(0.004), "expired"),
                    ("hedge", pytest.approx(0.006), pytest.approx(0.006), "filled")]
    assert venues.accounts.position("bybit").qty == pytest.approx(0.01)
    assert venues.accounts.position("binanceusdm").qty == pytest.approx(-0.01)


def test_the_short_refused_the_long_is_traded_back_reduce_only_and_nothing_is_naked(venues, tmp_path):
    venues.accounts.fund("bybit", "USDT", 50_000)
    venues.accounts.fund("binanceusdm", "USDT", 20)  # no margin for a 0.01 BTC short
    journal = tmp_path / "trades.sqlite"
    outcome, rec = pair(venues, journal)
    assert outcome.status == "unwound" and rec.ok, (outcome, rec.mismatches)
    j = assert_agree_perp_perp(venues, journal)
    assert [(o["account"], o["role"], o["side"], o["status"], o["reduce_only"]) for o in j.rows("orders")] == [
        ("bybit:long", "entry", "buy", "filled", 0), ("binanceusdm:perp", "entry", "sell", "rejected", 0),
        ("bybit:long", "unwind", "sell", "filled", 1)]
    assert "-2019" in j.rows("orders")[1]["status_reason"]
    assert venues.accounts.position("bybit").qty == 0 and j.blocked() is None


def test_the_long_refused_the_short_is_bought_back_and_nothing_is_naked(venues, tmp_path):
    fund_perp_perp(venues)
    venues.faults.add("refuse", venue="bybit")
    journal = tmp_path / "trades.sqlite"
    outcome, rec = pair(venues, journal)
    assert outcome.status == "unwound" and rec.ok, (outcome, rec.mismatches)
    j = assert_agree_perp_perp(venues, journal)
    assert [(o["account"], o["role"], o["side"], o["status"], o["reduce_only"]) for o in j.rows("orders")] == [
        ("bybit:long", "entry", "buy", "rejected", 0), ("binanceusdm:perp", "entry", "sell", "filled", 0),
        ("binanceusdm:perp", "unwind", "buy", "filled", 1)]
    assert venues.accounts.position("binanceusdm").qty == 0 and j.blocked() is None


def test_a_429_storm_on_both_venues_is_waited_out_and_each_leg_is_placed_once(venues, tmp_path):
    fund_perp_perp(venues)
    journal = tmp_path / "trades.sqlite"
    venues.faults.add("rate_limit", venue="bybit", times=2, retry_after_s=1)
    venues.faults.add("rate_limit", venue="binanceusdm", times=4, retry_after_s=1)
    result = venue_cli(app, venues, journal, CONFIG, "trade", "open", "--size", "0.01", "--yes")
    assert result.exit_code == 0, result.output
    assert sum(e.status == 429 for e in venues.log.entries) == 6
    assert len(orders_on(venues, LONG)) == 1 and len(orders_on(venues, SHORT)) == 1
    assert_agree_perp_perp(venues, journal)


def test_a_trade_on_the_long_perp_fundarb_did_not_send_is_learned_blocks_entries_and_alerts(venues, tmp_path):
    fund_perp_perp(venues)
    journal = tmp_path / "trades.sqlite"
    assert venue_cli(app, venues, journal, CONFIG, "trade", "open", "--size", "0.01", "--yes").exit_code == 0
    venues.accounts.place("bybit", "perp", BUY, MARKET, 0.01)  # someone buys more of the long perp by hand
    found = venue_cli(app, venues, journal, CONFIG, "reconcile")
    assert found.exit_code == 1, found.output
    text = said(found)
    assert "bybit:long: trade" in text and "was not sent by fundarb" in text
    assert "naked leg: spot +0.02 BTC, perp -0.01 BTC" in text and "new entries: blocked" in text
    refused = venue_cli(app, venues, journal, CONFIG, "trade", "open", "--size", "0.01", "--yes")
    assert refused.exit_code == 2 and "new entries are blocked" in said(refused)
    j = assert_agree_perp_perp(venues, journal)
    kinds = [a["kind"] for a in j.rows("alerts")]
    assert "external_trade" in kinds and "reconciliation_mismatch" in kinds
    assert j.position("bybit:long") == pytest.approx(0.02)


def test_a_long_leg_that_is_not_a_linear_perp_on_its_venue_is_refused_before_anything_is_sent(venues, tmp_path):
    import attrs

    from fundarb.live.ccxt.client import VenueSetupError

    cfg = perp_perp_config()
    # past the config's own check (a frozen config made by hand): Bybit's spot market as the long leg
    object.__setattr__(cfg, "spot", attrs.evolve(cfg.spot, symbol="BTC/USDT"))

    async def scenario():
        session = await session_on(venues, tmp_path / "trades.sqlite", cfg=cfg)
        await session.close()

    with pytest.raises(VenueSetupError, match="bybit:long: BTC/USDT on bybit is not a linear perpetual"):
        run(scenario())
    assert venues.accounts.all_orders("bybit", "spot") == [] and orders_on(venues, SHORT) == []
