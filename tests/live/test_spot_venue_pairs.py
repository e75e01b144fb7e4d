"""The recommended venue pairs through fundarb's live backend and the real
ccxt clients against the loopback emulator: Coinbase spot with a Binance
USD-M short (``sims/coinbase_binance.toml``) and Kraken spot with a Bybit
linear short (``sims/kraken_bybit.toml``). A paired open, a settlement paid
to the short, a close; then the faults of the spot venue the carry must
survive without a naked leg. Every test ends with the trade log, the journal
and both venues agreeing (``assert_pair_agrees``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fundarb.cli.main import app
from fundarb.live.ccxt.client import Target, connect
from fundarb.live.ccxt.credentials import Credentials
from fundarb.live.execution.paired import execute_pair
from fundarb.live.execution.reconcile import reconcile
from fundarb.live.journal import Journal
from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.emulator.server import ORDER_PLACEMENT
from fundarb.testkit.live import (
    KEYS,
    SPOT_VENUE_PAIRS,
    assert_pair_agrees,
    fund_pair,
    open_pair,
    pair_config,
    run,
    session_on,
)

pytestmark = pytest.mark.usefixtures("hang_guard")

# real data: Binance USD-M paid about 58% APR, Bybit about 43%: both pairs clear their entry threshold
START = "2024-03-01T06:00"
PAIRS = list(SPOT_VENUE_PAIRS)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def venue():
    with running_emulator(start=START) as server:
        yield server


def cli(server, journal, name, *args, env=KEYS):
    return CliRunner().invoke(app, [*args, "--api-url", server.base_url, "--journal", str(journal),
                                    "--config", str(ROOT / "sims" / f"{name}.toml")], env={**env, "COLUMNS": "160"})


def spot_orders(server, name):
    return server.accounts.all_orders(SPOT_VENUE_PAIRS[name][0], "spot")


def placements(server, name) -> int:
    """Order placements the spot venue answered (the request log: whatever the emulator's own record says)."""
    spot = SPOT_VENUE_PAIRS[name][0]
    return sum(1 for e in server.log.entries if e.venue == spot and (e.method, e.path) in ORDER_PLACEMENT)


@pytest.mark.parametrize("spot", [spot for spot, _ in SPOT_VENUE_PAIRS.values()])
def test_api_url_points_the_spot_venues_rest_and_websockets_at_it(spot):
    """Coinbase's ccxt.pro names one websocket URL (a string, not a table): it is pointed too."""
    ex = connect(spot, Credentials(spot, "", ""), Target(api_url="http://127.0.0.1:8765"))
    urls = [u for u in ex.urls["api"].values() if isinstance(u, str)]
    sockets = ex.urls["api"].get("ws")
    urls += [u for u in sockets.values() if isinstance(u, str)] if isinstance(sockets, dict) else []
    assert urls and all(u.startswith(("http://127.0.0.1:8765", "ws://127.0.0.1:8765")) for u in urls), urls
    assert any(u.startswith("ws://") for u in urls)


@pytest.mark.parametrize("name", PAIRS)
def test_a_pair_opens_is_paid_a_settlement_and_closes_with_log_journal_and_venues_agreeing(venue, tmp_path, name):
    spot, perp = SPOT_VENUE_PAIRS[name]
    fund_pair(venue, spot, perp)
    journal = tmp_path / "trades.sqlite"
    opened = cli(venue, journal, name, "trade", "open", "--size", "0.01", "--yes")
    assert opened.exit_code == 0, opened.output
    text = " ".join(opened.output.split())
    assert "operation 1: open -> done" in text and "venues and trade log agree" in text
    assert f"{spot}:spot" in text and f"{perp}:perp" in text
    j = assert_pair_agrees(venue, journal, spot, perp)
    assert j.position(f"{spot}:spot") == 0.01 and j.position(f"{perp}:perp") == pytest.approx(-0.01)
    (buy,) = [f for f in j.rows("fills") if f["account"] == f"{spot}:spot"]
    # the venue's fee, in USDT: the carry holds every BTC it bought
    rate = {"coinbase": 0.006, "kraken": 0.004}[spot]
    assert buy["fee_currency"] == "USDT" and buy["fee"] == pytest.approx(rate * 0.01 * buy["price"], abs=1e-8)
    assert buy["fee_quote"] == pytest.approx(buy["fee"])
    assert j.rows("funding") == []
    j.close()

    venue.advance_hours(8)  # across the 08:00 settlement: the short is paid
    closed = cli(venue, journal, name, "trade", "close", "--yes")
    assert closed.exit_code == 0, closed.output
    assert "operation 2: close -> done" in " ".join(closed.output.split())
    j = assert_pair_agrees(venue, journal, spot, perp)
    assert j.position(f"{spot}:spot") == 0 and j.position(f"{perp}:perp") == 0
    assert venue.accounts.wallets[spot].get("BTC") == 0  # no dust: the fees were in USDT
    (paid,) = j.rows("funding")
    (venue_paid,) = venue.accounts.funding_list(perp)
    assert paid["account"] == f"{perp}:perp" and paid["amount"] == pytest.approx(venue_paid.amount) and paid["amount"] > 0
    assert [(o["account"], o["side"], o["status"]) for o in j.rows("orders") if o["account"] == f"{spot}:spot"] == [
        (f"{spot}:spot", "buy", "filled"), (f"{spot}:spot", "sell", "filled")]
    assert placements(venue, name) == 2
    # every call the spot venue was asked is one it serves
    assert {e.status for e in venue.log.entries if e.venue == spot} == {200}


@pytest.mark.parametrize("name", PAIRS)
def test_a_timeout_after_the_spot_venue_placed_the_order_finds_it_and_sends_no_second(venue, tmp_path, name):
    spot, perp = SPOT_VENUE_PAIRS[name]
    fund_pair(venue, spot, perp)
    journal = tmp_path / "trades.sqlite"
    venue.faults.add("timeout_after_place", venue=spot, delay_s=1.5)

    outcome = open_pair(venue, journal, timeout_ms=500, cfg=pair_config(name))
    assert outcome.status == "done" and outcome.spot_change == pytest.approx(0.01), outcome
    (order,) = spot_orders(venue, name)  # the placement that timed out is the one order: found, not sent again
    assert placements(venue, name) == 1
    j = assert_pair_agrees(venue, journal, spot, perp)
    events = [e["detail"] for e in j.rows("order_events") if e["client_id"] == order.client_id]
    assert "found after a failed placement" in events


@pytest.mark.parametrize("name", PAIRS)
def test_a_partial_fill_of_the_spot_buy_is_completed_to_an_equal_pair(venue, tmp_path, name):
    spot, perp = SPOT_VENUE_PAIRS[name]
    fund_pair(venue, spot, perp)
    journal = tmp_path / "trades.sqlite"
    venue.faults.add("partial_fill", venue=spot, fill_ratio=0.4)

    outcome = open_pair(venue, journal, cfg=pair_config(name))
    assert outcome.status == "rebalanced", outcome
    j = assert_pair_agrees(venue, journal, spot, perp)
    legs = [(o["role"], o["qty"], o["filled_qty"]) for o in j.rows("orders") if o["leg"] == "spot"]
    assert legs == [("entry", 0.01, pytest.approx(0.004)), ("hedge", pytest.approx(0.006), pytest.approx(0.006))]
    assert venue.accounts.wallets[spot].get("BTC") == pytest.approx(0.01)


@pytest.mark.parametrize("name", PAIRS)
def test_a_spot_buy_the_venue_refuses_for_funds_unwinds_the_short(venue, tmp_path, name):
    spot, perp = SPOT_VENUE_PAIRS[name]
    venue.accounts.fund(spot, "USDT", 20)  # far under 0.01 BTC
    venue.accounts.fund(perp, "USDT", 100_000)
    journal = tmp_path / "trades.sqlite"

    async def scenario():
        session = await session_on(venue, journal, cfg=pair_config(name))
        try:
            outcome = await execute_pair(session, "open", 0.01, {})
            return outcome, await reconcile(session, "after open")
        finally:
            await session.close()

    outcome, rec = run(scenario())
    assert outcome.status == "unwound", outcome
    j = assert_pair_agrees(venue, journal, spot, perp)
    roles = [(o["leg"], o["role"], o["side"], o["status"]) for o in j.rows("orders")]
    assert sorted(roles) == sorted([("spot", "entry", "buy", "rejected"), ("perp", "entry", "sell", "filled"),
                                    ("perp", "unwind", "buy", "filled")])
    refusal = next(o["status_reason"] for o in j.rows("orders") if o["leg"] == "spot")
    assert {"coinbase": "INSUFFICIENT_FUND", "kraken": "EOrder:Insufficient funds"}[spot] in refusal
    assert spot_orders(venue, name) == [] and venue.accounts.position(perp).qty == 0
    assert rec.ok and j.blocked() is None


@pytest.mark.parametrize("name", PAIRS)
def test_a_rate_limit_storm_on_the_spot_venue_is_waited_out_and_each_leg_is_placed_once(venue, tmp_path, name):
    spot, perp = SPOT_VENUE_PAIRS[name]
    fund_pair(venue, spot, perp)
    journal = tmp_path / "trades.sqlite"
    venue.faults.add("rate_limit", venue=spot, times=3)
    result = cli(venue, journal, name, "trade", "open", "--size", "0.01", "--yes")
    assert result.exit_code == 0, result.output
    assert sum(e.fault == "rate_limit" for e in venue.log.entries) == 3
    # Coinbase answers HTTP 429; Kraken an HTTP 200 whose error is "EAPI:Rate limit exceeded"
    assert {e.status for e in venue.log.entries if e.fault} == {429 if spot == "coinbase" else 200}
    assert len(spot_orders(venue, name)) == 1 and len(venue.accounts.all_orders(perp, "perp")) == 1
    assert_pair_agrees(venue, journal, spot, perp)


@pytest.mark.parametrize("name", PAIRS)
def test_a_spot_key_the_venue_refuses_is_one_clear_error_and_nothing_is_sent(venue, tmp_path, name):
    spot, perp = SPOT_VENUE_PAIRS[name]
    fund_pair(venue, spot, perp)
    venue.accounts.api_keys = {"the-right-key"}
    journal = tmp_path / "trades.sqlite"
    env = {**KEYS, f"FUNDARB_{perp.upper()}_API_KEY": "the-right-key"}  # only the spot venue's key is wrong
    result = cli(venue, journal, name, "trade", "open", "--size", "0.01", "--yes", env=env)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert spot in text and "API key" in text and "Traceback" not in text
    assert "emulator-secret-value" not in text and KEYS[f"FUNDARB_{spot.upper()}_SECRET"] not in text
    assert spot_orders(venue, name) == [] and venue.accounts.all_orders(perp, "perp") == []
    assert Journal(journal).rows("orders") == []
