"""A coin-margined carry traded live against the loopback emulator through
the real ccxt clients: Binance spot BTC/USDT bought, and a Binance COIN-M
BTCUSD_PERP short (contracts of 100 USD, settled in BTC) of the same USD
value, the bought BTC moved into the COIN-M wallet as the short's margin;
and on Bybit, spot and the inverse BTCUSD (contracts of 1 USD) in one
unified wallet, where nothing moves.

The emulator runs on the shipped real hourly closes and settlements from
2024-03-01 06:00 (COIN-M funding about 60% APR). Expected BTC amounts are
computed here from the venue's fills by the inverse rules (a contract is
worth 100 / price BTC), not read back from fundarb. Each test ends with the
trade log, journal and venue in agreement (``assert_agree``): every venue
trade a fill, contracts equal, funding payments equal, and the carry's BTC
equal to what the two wallets hold beyond the float the test funded.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from fundarb.cli.main import app
from fundarb.config import dumps
from fundarb.testkit.live import COINM, COINM_FLOAT, SPOT, assert_agree, coinm_config, fund_coinm, placed_orders, said, venue_cli

pytestmark = pytest.mark.usefixtures("hang_guard")

FACE = 100.0
SIZE = 0.1  # BTC asked: the contracts nearest its worth are shorted (README's example)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "coinm.toml"
    path.write_text(dumps(coinm_config()))
    return path




def worth(trades) -> float:
    """BTC the inverse trades are worth at their own prices."""
    return sum(t.qty * FACE / t.price for t in trades)


def test_open_then_close_a_coin_margined_carry_through_the_cli(coinm_venue, config, tmp_path):
    fund_coinm(coinm_venue)
    journal = tmp_path / "t.sqlite"
    opened = venue_cli(app, coinm_venue, journal, config, "trade", "open", "--size", str(SIZE), "--yes")
    assert opened.exit_code == 0, opened.output
    assert "operation 1: open -> done" in said(opened) and "venues and trade log agree" in said(opened)
    (short,) = coinm_venue.accounts.trade_list(*COINM)
    (buy,) = coinm_venue.accounts.trade_list(*SPOT)
    mark = coinm_venue.accounts.mark("binancecoinm", "inverse")
    assert short.qty == round(SIZE * mark / FACE) or abs(short.qty - SIZE * mark / FACE) <= 1  # whole contracts
    # the spot buy is the BTC the contracts are worth, to the spot lot (1e-5 BTC)
    assert buy.qty == pytest.approx(worth([short]), abs=1e-4)
    # the bought BTC (less its BTC fee) is now the short's margin in the COIN-M wallet
    assert coinm_venue.accounts.wallets["binance"].get("BTC") == pytest.approx(0.0, abs=1e-8)
    assert "the short's margin" in said(opened)
    assert "no liquidation price (no rise liquidates the short)" in said(opened)
    j = assert_agree(coinm_venue, journal, coin_margined=True)
    # README's example is this run: its figures are these
    moved = sum(t["amount"] for t in j.rows("transfers"))
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert (f"The short is {short.qty:.0f} whole contracts of 100 USD ({worth([short]):.4g} BTC at its entry), the "
            f"{buy.qty:.4g} BTC bought ({moved:.4g} BTC after its fee) moves into the COIN-M wallet") in readme
    j.close()

    coinm_venue.advance_hours(12)  # across the 08:00 and 16:00 settlements: the short is paid in BTC
    shown = venue_cli(app, coinm_venue, journal, config, "positions")
    assert shown.exit_code == 0, shown.output
    assert f"-{short.qty:g} contracts" in said(shown) and "drift" in said(shown)

    closed = venue_cli(app, coinm_venue, journal, config, "trade", "close", "--yes")
    assert closed.exit_code == 0, closed.output
    assert "operation 2: close -> done" in said(closed)
    assert coinm_venue.accounts.position("binancecoinm", "inverse").qty == 0
    j = assert_agree(coinm_venue, journal, coin_margined=True)
    paid = j.rows("funding")
    assert len(paid) == 2 and all(p["amount"] > 0 for p in paid)  # positive rates: the short is paid, in BTC
    # the venue's BTC payments, learned from its income history, each once
    venue_paid = coinm_venue.accounts.funding_list("binancecoinm", "inverse")
    assert sorted(p.amount for p in venue_paid) == pytest.approx(sorted(p["amount"] for p in paid))
    # what is left of the carry is dust: BTC under the spot market's lot or minimum order
    left = coinm_venue.accounts.wallets["binance"].get("BTC") + coinm_venue.accounts.wallets["binancecoinm"].get("BTC") - COINM_FLOAT
    assert abs(left) * mark < 5.0
    j.close()


def test_a_size_under_one_contract_is_refused_and_nothing_is_sent(coinm_venue, config, tmp_path):
    fund_coinm(coinm_venue)
    result = venue_cli(app, coinm_venue, tmp_path / "t.sqlite", config, "trade", "open", "--size", "0.0005", "--yes")
    assert result.exit_code == 2
    assert "under one BTC/USD:BTC contract (100 USD" in " ".join(result.output.split())
    assert placed_orders(coinm_venue, SPOT) == [] and placed_orders(coinm_venue, COINM) == []


def test_without_the_initial_margin_in_the_coin_wallet_the_preflight_fails(coinm_venue, config, tmp_path):
    fund_coinm(coinm_venue, btc=0.0)
    result = venue_cli(app, coinm_venue, tmp_path / "t.sqlite", config, "trade", "open", "--size", str(SIZE), "--yes")
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "FAIL perp balance: 0 BTC free in the coin-margined wallet" in text and "nothing was sent" in text
    assert placed_orders(coinm_venue, SPOT) == [] and placed_orders(coinm_venue, COINM) == []


def test_a_429_storm_is_waited_out_and_each_leg_is_placed_once(coinm_venue, config, tmp_path):
    fund_coinm(coinm_venue)
    journal = tmp_path / "t.sqlite"
    coinm_venue.faults.add("rate_limit", venue="binancecoinm", times=4, retry_after_s=1)
    coinm_venue.faults.add("rate_limit", venue="binance", times=2, retry_after_s=1)
    result = venue_cli(app, coinm_venue, journal, config, "trade", "open", "--size", str(SIZE), "--yes")
    assert result.exit_code == 0, result.output
    assert sum(e.status == 429 for e in coinm_venue.log.entries) == 6
    assert len(placed_orders(coinm_venue, SPOT)) == 1 and len(placed_orders(coinm_venue, COINM)) == 1
    assert_agree(coinm_venue, journal, coin_margined=True).close()


def test_a_timeout_after_the_venue_placed_the_short_finds_it_and_sends_no_duplicate(coinm_venue, config, tmp_path):
    fund_coinm(coinm_venue)
    journal = tmp_path / "t.sqlite"
    coinm_venue.faults.add("timeout_after_place", venue="binancecoinm", delay_s=3.0)  # past the 2 s request timeout
    result = venue_cli(app, coinm_venue, journal, config, "trade", "open", "--size", str(SIZE), "--yes")
    assert result.exit_code == 0, result.output
    (short,) = placed_orders(coinm_venue, COINM)
    j = assert_agree(coinm_venue, journal, coin_margined=True)
    events = [e["detail"] for e in j.rows("order_events") if e["client_id"] == short.client_id]
    assert "found after a failed placement" in events
    (op,) = j.operations()
    assert op["status"] == "done"
    j.close()


def test_the_short_refused_unwinds_the_spot_buy(coinm_venue, config, tmp_path):
    fund_coinm(coinm_venue)
    journal = tmp_path / "t.sqlite"
    coinm_venue.faults.add("refuse", venue="binancecoinm", path="/dapi/v1/order")
    result = venue_cli(app, coinm_venue, journal, config, "trade", "open", "--size", str(SIZE), "--yes")
    assert result.exit_code == 1, result.output
    j = assert_agree(coinm_venue, journal, coin_margined=True)
    roles = [(o["leg"], o["role"], o["side"], o["status"]) for o in j.rows("orders")]
    assert roles == [("spot", "entry", "buy", "filled"), ("perp", "entry", "sell", "rejected"),
                     ("spot", "unwind", "sell", "filled")]
    (op,) = j.operations()
    assert op["status"] == "unwound"
    # nothing moved to the COIN-M wallet: no carry was made
    assert coinm_venue.accounts.wallets["binancecoinm"].get("BTC") == pytest.approx(COINM_FLOAT)
    assert j.rows("transfers") == [] and j.blocked() is None
    j.close()


def test_a_bybit_inverse_carry_in_one_unified_wallet_moves_nothing(coinm_venue, tmp_path):
    cfg = coinm_config()
    cfg = attrs.evolve(cfg, name="bybit-inverse", spot=attrs.evolve(cfg.spot, exchange="bybit"),
                       perp=attrs.evolve(cfg.perp, exchange="bybit", symbol="BTC/USD:BTC"),
                       structure=attrs.evolve(cfg.structure, contract_size=1.0))
    config = tmp_path / "bybit.toml"
    config.write_text(dumps(cfg))
    fund_coinm(coinm_venue, venue="bybit")
    journal = tmp_path / "t.sqlite"
    opened = venue_cli(app, coinm_venue, journal, config, "trade", "open", "--size", str(SIZE), "--yes")
    assert opened.exit_code == 0, opened.output
    (short,) = coinm_venue.accounts.trade_list("bybit", "inverse")
    (buy,) = coinm_venue.accounts.trade_list("bybit", "spot")
    assert buy.qty == pytest.approx(short.qty / short.price, abs=1e-5)  # 1 USD contracts: the BTC they are worth
    assert_agree(coinm_venue, journal, coin_margined=True, inverse_venue="bybit").close()
    coinm_venue.advance_hours(12)
    closed = venue_cli(app, coinm_venue, journal, config, "trade", "close", "--yes")
    assert closed.exit_code == 0, closed.output
    assert "operation 2: close -> done" in said(closed)  # the exit's BTC left over is not hedged by a new short
    assert coinm_venue.accounts.position("bybit", "inverse").qty == 0
    j = assert_agree(coinm_venue, journal, coin_margined=True, inverse_venue="bybit")
    paid = j.rows("funding")
    assert len(paid) == 2 and all(p["amount"] > 0 for p in paid)  # received, though Bybit lists them as fees
    assert j.rows("transfers") == []
    j.close()
