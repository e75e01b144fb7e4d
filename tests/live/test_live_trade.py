"""The live backend against the loopback emulator, through the real ccxt
client: paired open and close, and each fault the issue of a live venue can
throw at it. Every test ends by checking that the trade log, the journal and
the emulator's accounts agree."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from fundarb.cli.main import app
from fundarb.live.execution.paired import execute_pair
from fundarb.live.execution.reconcile import reconcile
from fundarb.testkit.emulator.accounts import BUY, MARKET, MARKETS, SELL
from fundarb.testkit.live import (
    KEYS,
    PERP,
    SPOT,
    assert_agree,
    fund,
    on_spot_perp,
    open_pair,
    placed_orders,
    run,
    session_on,
)

pytestmark = pytest.mark.usefixtures("hang_guard")


def cli(server, journal, *args, env=KEYS, input=None):
    result = CliRunner().invoke(app, [*on_spot_perp(args), "--api-url", server.base_url, "--journal", str(journal)],
                                env={**env, "COLUMNS": "160"}, input=input)
    return result


def test_open_then_close_through_the_cli_leaves_log_and_venue_in_agreement(emulator, tmp_path):
    fund(emulator)
    journal = tmp_path / "trades.sqlite"
    opened = cli(emulator, journal, "trade", "open", "--size", "0.01", "--yes")
    assert opened.exit_code == 0, opened.output
    assert "operation 1: open -> done" in opened.output and "venues and trade log agree" in opened.output
    j = assert_agree(emulator, journal)
    assert j.position("binanceusdm:perp") == pytest.approx(-0.01)
    spot_fill = next(f for f in j.rows("fills") if f["account"] == "binance:spot")
    # Binance charges a spot buy's fee in BTC: the carry holds the rest
    assert j.position("binance:spot") == pytest.approx(0.01 - spot_fill["fee"])
    assert spot_fill["fee_currency"] == "BTC" and spot_fill["fee_quote"] == pytest.approx(spot_fill["fee"] * spot_fill["price"])
    assert {r["config_hash"][:12] for t in ("orders", "fills") for r in j.rows(t)} == {"dfe6e84d4374"}
    assert [o["client_id"] for o in j.rows("orders")] == ["fadfe6e84d4374-1", "fadfe6e84d4374-2"]
    j.close()

    emulator.advance_hours(8)  # across the 16:00 settlement: the short is paid funding
    closed = cli(emulator, journal, "trade", "close", "--yes")
    assert closed.exit_code == 0, closed.output
    j = assert_agree(emulator, journal)
    assert j.position("binanceusdm:perp") == 0 and abs(j.position("binance:spot")) < 1e-5
    (paid,) = j.rows("funding")
    (venue_paid,) = emulator.accounts.funding_list("binanceusdm")
    assert paid["amount"] == pytest.approx(venue_paid.amount) and paid["amount"] > 0
    assert [o["client_id"][-2:] for o in j.rows("orders")] == ["-1", "-2", "-3", "-4"]


def test_dry_run_and_failed_preflight_send_nothing(emulator, tmp_path):
    fund(emulator)
    journal = tmp_path / "trades.sqlite"
    dry = cli(emulator, journal, "trade", "open", "--size", "0.01", "--dry-run")
    assert dry.exit_code == 0 and "dry run: nothing was sent" in dry.output
    too_small = cli(emulator, journal, "trade", "open", "--size", "0.001", "--yes")  # 0.001 BTC perp < 100 USDT
    assert too_small.exit_code == 2
    assert "minimum notional 100.00 USDT" in too_small.output and "nothing was sent" in too_small.output
    odd = cli(emulator, journal, "trade", "open", "--size", "0.0123", "--yes")
    assert odd.exit_code == 2 and "use 0.012" in odd.output
    assert placed_orders(emulator) == []


def test_the_preflight_and_positions_use_the_venues_tiers_and_say_when_they_fall_back(emulator, tmp_path):
    fund(emulator)
    journal = tmp_path / "trades.sqlite"
    dry = cli(emulator, journal, "trade", "open", "--size", "0.01", "--dry-run")
    assert dry.exit_code == 0, dry.output
    # asked of the venue (ccxt's own fetch_positions loads the brackets too, once per client)
    assert {e.status for e in emulator.log.entries if e.path == "/fapi/v1/leverageBracket"} == {200}
    assert "note:" not in dry.output and "shipped snapshot" not in dry.output
    # the venue does not answer its brackets: the shipped snapshot stands in, and the plan says so
    emulator.faults.add("non_json", venue="binanceusdm", path="/fapi/v1/leverageBracket", times=None)
    dry = cli(emulator, journal, "trade", "open", "--size", "0.01", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "binanceusdm margin tiers could not be fetched" in dry.output
    assert "using the shipped snapshot of 2026-11-25" in " ".join(dry.output.split())
    emulator.faults.clear()

    opened = cli(emulator, journal, "trade", "open", "--size", "0.01", "--yes")
    assert opened.exit_code == 0, opened.output
    pos = cli(emulator, journal, "positions")
    assert pos.exit_code == 0, pos.output
    short = emulator.accounts.position("binanceusdm")
    liq = MARKETS[("binanceusdm", "perp")].margin.liquidation_price(short.margin, short.qty, short.entry, "isolated")
    text = " ".join(pos.output.split())
    assert f"liquidation by its rule {liq:,.2f}" in text and "binanceusdm's tiers (isolated" in text
    assert f"liquidation {liq:,.2f}," in text  # what the venue (the emulator) says: the same rule
    assert "note:" not in text


def test_a_429_storm_is_waited_out_and_each_leg_is_placed_once(emulator, tmp_path):
    fund(emulator)
    journal = tmp_path / "trades.sqlite"
    emulator.faults.add("rate_limit", venue="binanceusdm", times=4, retry_after_s=1)
    emulator.faults.add("rate_limit", venue="binance", times=2, retry_after_s=1)
    result = cli(emulator, journal, "trade", "open", "--size", "0.01", "--yes")
    assert result.exit_code == 0, result.output
    assert sum(e.status == 429 for e in emulator.log.entries) == 6
    assert len(placed_orders(emulator, SPOT)) == 1 and len(placed_orders(emulator, PERP)) == 1
    assert_agree(emulator, journal)


def test_server_errors_are_retried(emulator, tmp_path):
    fund(emulator)
    journal = tmp_path / "trades.sqlite"
    emulator.faults.add("server_error", venue="binance", times=3)
    emulator.faults.add("server_error", venue="binanceusdm", path="/fapi/v1/order", times=1)
    result = cli(emulator, journal, "trade", "open", "--size", "0.01", "--yes")
    assert result.exit_code == 0, result.output
    assert sum(e.status is not None and e.status >= 500 for e in emulator.log.entries) == 4
    assert len(placed_orders(emulator, PERP)) == 1
    assert_agree(emulator, journal)


def test_a_timeout_after_the_venue_placed_the_order_finds_it_and_sends_no_duplicate(emulator, tmp_path):
    fund(emulator)
    journal = tmp_path / "trades.sqlite"
    emulator.faults.add("timeout_after_place", venue="binanceusdm", delay_s=1.5)

    outcome = open_pair(emulator, journal, timeout_ms=500)
    assert outcome.status == "done" and outcome.perp_change == pytest.approx(-0.01)
    (perp_order,) = placed_orders(emulator, PERP)
    j = assert_agree(emulator, journal)
    events = [e["detail"] for e in j.rows("order_events") if e["client_id"] == perp_order.client_id]
    assert "found after a failed placement" in events


def test_one_leg_refused_unwinds_the_other(emulator, tmp_path):
    emulator.accounts.fund("binance", "USDT", 100_000)
    emulator.accounts.fund("binanceusdm", "USDT", 20)  # not enough margin for 0.01 BTC short
    journal = tmp_path / "trades.sqlite"

    async def scenario():
        session = await session_on(emulator, journal)
        try:
            outcome = await execute_pair(session, "open", 0.01, {})
            return outcome, await reconcile(session, "after open")
        finally:
            await session.close()

    outcome, rec = run(scenario())
    assert outcome.status == "unwound", outcome
    j = assert_agree(emulator, journal)
    roles = [(o["leg"], o["role"], o["side"], o["status"]) for o in j.rows("orders")]
    assert roles == [("spot", "entry", "buy", "filled"), ("perp", "entry", "sell", "rejected"),
                     ("spot", "unwind", "sell", "filled")]
    assert "-2019" in j.rows("orders")[1]["status_reason"]
    # the spot bought and sold back: what is left is the buy's fee dust, under the lot
    assert emulator.accounts.wallets["binance"].get("BTC") == pytest.approx(0.0, abs=1e-5)
    assert rec.ok and j.blocked() is None


def test_a_partial_fill_is_completed_to_an_equal_pair(emulator, tmp_path):
    fund(emulator)
    journal = tmp_path / "trades.sqlite"
    emulator.faults.add("partial_fill", venue="binanceusdm", fill_ratio=0.4)

    outcome = open_pair(emulator, journal)
    assert outcome.status == "rebalanced"
    j = assert_agree(emulator, journal)
    perp = [(o["role"], o["qty"], o["filled_qty"], o["status"]) for o in j.rows("orders") if o["leg"] == "perp"]
    assert perp == [("entry", 0.01, pytest.approx(0.004), "expired"), ("hedge", pytest.approx(0.006),
                                                                        pytest.approx(0.006), "filled")]
    assert emulator.accounts.position("binanceusdm").qty == pytest.approx(-0.01)


def test_a_wrong_api_key_is_one_clear_error_and_nothing_is_sent(emulator, tmp_path):
    fund(emulator)
    emulator.accounts.api_keys = {"the-right-key"}
    journal = tmp_path / "trades.sqlite"
    result = cli(emulator, journal, "trade", "open", "--size", "0.01", "--yes")
    assert result.exit_code == 2
    assert "refused the API key" in result.output and "FUNDARB_" in result.output
    assert "emulator-secret-value" not in result.output and "emulator-key" not in result.output
    missing = cli(emulator, journal, "trade", "open", "--size", "0.01", "--yes", env={})
    assert missing.exit_code == 2 and "FUNDARB_BINANCE_API_KEY and FUNDARB_BINANCE_SECRET" in missing.output
    assert placed_orders(emulator) == []


def test_saying_no_at_the_confirmation_sends_nothing(emulator, tmp_path):
    fund(emulator)
    journal = tmp_path / "trades.sqlite"
    result = cli(emulator, journal, "trade", "open", "--size", "0.01", input="n\n")
    assert result.exit_code == 1 and "nothing was sent" in result.output
    assert placed_orders(emulator) == []


def test_trade_log_filters_by_venue_date_and_exports_csv(emulator, tmp_path):
    fund(emulator)
    journal = tmp_path / "trades.sqlite"
    assert cli(emulator, journal, "trade", "open", "--size", "0.01", "--yes").exit_code == 0
    emulator.advance_hours(30)
    assert cli(emulator, journal, "trade", "close", "--yes").exit_code == 0
    runner = CliRunner()
    csv = tmp_path / "fills.csv"
    args = ["trade", "log", "--journal", str(journal)]
    later = runner.invoke(app, [*args, "--since", "2024-01-11", "--csv", str(csv)])
    assert later.exit_code == 0, later.output
    lines = csv.read_text().splitlines()
    # every column, and an ISO 8601 UTC column beside each time in ns
    assert lines[0].startswith("seq,ts,ts_utc,venue_ts,venue_ts_utc,exchange,trade_id") and len(lines) == 1 + 2
    everything = runner.invoke(app, [*args, "--csv", str(csv)])
    assert everything.exit_code == 0 and len(csv.read_text().splitlines()) == 1 + 4
    bad = runner.invoke(app, [*args, "--since", "yesterday-ish"])
    assert bad.exit_code == 2 and "--since" in bad.output


def test_one_venue_for_both_legs_bybit_spot_and_linear_share_one_client(emulator, tmp_path):
    import attrs

    from fundarb.testkit.live import spot_perp

    fund(emulator)
    base = spot_perp()
    cfg = attrs.evolve(base, spot=attrs.evolve(base.spot, exchange="bybit", symbol="BTC/USDT"),
                       perp=attrs.evolve(base.perp, exchange="bybit", symbol="BTC/USDT:USDT"))
    journal = tmp_path / "trades.sqlite"
    emulator.faults.add("partial_fill", venue="bybit", fill_ratio=0.5)  # hits the first order: completed after

    async def scenario():
        session = await session_on(emulator, journal, cfg=cfg)
        try:
            assert session.spot.exchange is session.perp.exchange and session.spot.queue is session.perp.queue
            outcome = await execute_pair(session, "open", 0.01, {})
            return outcome, await reconcile(session, "after open")
        finally:
            await session.close()

    outcome, rec = run(scenario())
    assert outcome.status == "rebalanced" and rec.ok, (outcome, rec)
    from fundarb.live.journal import Journal

    j = Journal(journal)
    assert j.position("bybit:perp") == pytest.approx(emulator.accounts.position("bybit").qty) == pytest.approx(-0.01)
    assert j.position("bybit:spot") == pytest.approx(emulator.accounts.wallets["bybit"].get("BTC"), abs=1e-12)
    venue_ids = sorted(t.id for kind in ("spot", "perp") for t in emulator.accounts.trade_list("bybit", kind))
    assert sorted(f["trade_id"] for f in j.rows("fills")) == venue_ids
    j.close()

    # across a settlement: Bybit lists the payment as a fee (execFee, negative when received); the
    # trade log keeps it as received, as the venue's wallet moved
    wallet = emulator.accounts.wallets["bybit"].get("USDT")
    emulator.advance_hours(8)

    async def learn():
        session = await session_on(emulator, journal, cfg=cfg)
        try:
            return await reconcile(session, "periodic")
        finally:
            await session.close()

    assert run(learn()).funding_added == 1
    (paid,) = Journal(journal).rows("funding")
    (venue_paid,) = emulator.accounts.funding_list("bybit")
    assert paid["amount"] == pytest.approx(venue_paid.amount)
    assert paid["amount"] == pytest.approx(emulator.accounts.wallets["bybit"].get("USDT") - wallet)


def test_a_reconciliation_mismatch_blocks_entries_until_the_venues_agree_again(emulator, tmp_path):
    fund(emulator)
    journal = tmp_path / "trades.sqlite"
    assert cli(emulator, journal, "trade", "open", "--size", "0.01", "--yes").exit_code == 0
    # someone sells 0.01 BTC perp on the carry's account outside fundarb
    emulator.accounts.place("binanceusdm", "perp", SELL, MARKET, 0.01)
    found = cli(emulator, journal, "reconcile")
    assert found.exit_code == 1, found.output
    # the venue's trade is learned into the trade log (the position is the venue's), and it blocks
    assert "was not sent by fundarb" in found.output and "learned into the trade log" in found.output
    assert "naked leg: spot +0.00999 BTC, perp -0.02 BTC" in found.output
    assert "blocked" in found.output
    refused = cli(emulator, journal, "trade", "open", "--size", "0.01", "--yes")
    assert refused.exit_code == 2 and "new entries are blocked" in refused.output
    assert len(placed_orders(emulator, PERP)) == 2  # the carry's and the stray one: nothing new sent
    # closing is still allowed while entries are blocked (it only reduces), but first undo the stray order
    emulator.accounts.place("binanceusdm", "perp", BUY, MARKET, 0.01, reduce_only=True)
    undone = cli(emulator, journal, "reconcile")  # that trade is learned and reported too
    assert undone.exit_code == 1 and "was not sent by fundarb" in undone.output, undone.output
    again = cli(emulator, journal, "reconcile")
    assert again.exit_code == 0, again.output
    assert "new entries: allowed" in again.output

    # BTC moved into the spot account by hand: a mismatch until accepted with a reason
    emulator.accounts.fund("binance", "BTC", 0.5)
    moved = cli(emulator, journal, "reconcile")
    assert moved.exit_code == 1 and "BTC outside the carry went from 0 to 0.5" in moved.output
    accepted = cli(emulator, journal, "reconcile", "--accept", "deposit from cold storage")
    assert accepted.exit_code == 0 and "new entries: allowed" in accepted.output
    from fundarb.live.journal import Journal

    kinds = [a["kind"] for a in Journal(journal).rows("alerts")]
    # reconcile, the refused open's own start reconciliation, the undoing trade, and the moved BTC
    assert kinds.count("reconciliation_mismatch") == 4 and "reconciliation_accepted" in kinds
    assert kinds.count("external_trade") == 2


def test_two_venues_binance_spot_with_a_bybit_perp(emulator, tmp_path):
    import attrs

    from fundarb.testkit.live import spot_perp

    fund(emulator)
    base = spot_perp()
    cfg = attrs.evolve(base, perp=attrs.evolve(base.perp, exchange="bybit", symbol="BTC/USDT:USDT"))
    journal = tmp_path / "trades.sqlite"

    async def scenario():
        session = await session_on(emulator, journal, cfg=cfg)
        try:
            opened = await execute_pair(session, "open", 0.02, {})
            closed = await execute_pair(session, "close", 0.02, {}, spot_qty=session.journal.position("binance:spot"))
            return opened, closed, await reconcile(session, "after close")
        finally:
            await session.close()

    opened, closed, rec = run(scenario())
    assert (opened.status, closed.status, rec.ok) == ("done", "done", True), (opened, closed, rec)
    assert emulator.accounts.position("bybit").qty == 0 and emulator.accounts.wallets["binance"].get("BTC") == 0
    from fundarb.live.journal import Journal

    j = Journal(journal)
    assert [(o["account"], o["side"]) for o in j.rows("orders")] == [
        ("binance:spot", "buy"), ("bybit:perp", "sell"), ("binance:spot", "sell"), ("bybit:perp", "buy")]
    assert all(o["status"] == "filled" for o in j.rows("orders"))
