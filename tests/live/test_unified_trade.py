"""A unified carry traded live against the loopback emulator through the real
ccxt client: Bybit spot BTC/USDT and the linear BTCUSDT short in one UNIFIED
account. The pre-flight and `positions` read the account's margin and BTC's
collateral ratio from the venue (``/v5/account/wallet-balance``,
``/v5/spot-margin-trade/collateral``) rather than computing them from the
config: the emulator's ratio is set apart from the config's to tell them
apart, and the figures are read back here through ccxt independently."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest
from typer.testing import CliRunner

from fundarb.cli.main import app
from fundarb.config import LiveSettings, dumps, load, project_file
from fundarb.core.liquidation import collateral_value
from fundarb.testkit.emulator.harness import running_emulator, trading_client
from fundarb.testkit.live import KEYS, said

pytestmark = pytest.mark.usefixtures("hang_guard")

VENUE_TIERS = ((1_000_000.0, 0.5),)  # the venue's ratio here; the config keeps Bybit's documented 0.85


@pytest.fixture
def venue():
    with running_emulator(start="2024-03-01T06:00") as server:
        server.accounts.collateral_tiers = VENUE_TIERS
        server.accounts.fund("bybit", "USDT", 100_000.0)
        yield server


def config(tmp_path, exchange: str = "bybit", perp: str = "bybit"):
    cfg = load(project_file(Path("sims") / "unified.toml"))
    cfg = attrs.evolve(cfg, name=f"unified-{exchange}", spot=attrs.evolve(cfg.spot, exchange=exchange),
                       perp=attrs.evolve(cfg.perp, exchange=perp),
                       live=LiveSettings(hedge_timeout_seconds=20.0, order_timeout_seconds=5.0, request_timeout_seconds=2.0))
    path = tmp_path / f"{cfg.name}.toml"
    path.write_text(dumps(cfg))
    return cfg, path


def cli(server, journal, path, *args):
    return CliRunner().invoke(app, [*args, "--api-url", server.base_url, "--journal", str(journal), "--config", str(path)],
                              env={**KEYS, "COLUMNS": "200"})


def wallet_row(server) -> dict:
    ex = trading_client(server, "bybit")
    return ex.privateGetV5AccountWalletBalance({"accountType": "UNIFIED"})["result"]["list"][0]


def test_a_unified_carry_is_planned_on_the_venues_own_margin_figures_and_traded(venue, tmp_path):
    cfg, path = config(tmp_path)
    assert cfg.structure_settings.collateral_tiers != VENUE_TIERS
    journal = tmp_path / "t.sqlite"
    available = float(wallet_row(venue)["totalAvailableBalance"])
    dry = cli(venue, journal, path, "trade", "open", "--size", "0.5", "--dry-run")
    assert dry.exit_code == 0, dry.output
    text = " ".join(dry.output.split())
    assert f"the venue says {available:,.2f} USD available" in text
    counted = re.search(r"the BTC bought counts ([\d,.]+) at the venue's collateral ratio", text)
    assert counted is not None, text
    mark = venue.accounts.mark("bybit")
    # 0.5 BTC at the venue's 0.5, not the config's 0.85
    assert float(counted.group(1).replace(",", "")) == pytest.approx(collateral_value(0.5, VENUE_TIERS) * mark, rel=1e-3)

    opened = cli(venue, journal, path, "trade", "open", "--size", "0.5", "--yes")
    assert opened.exit_code == 0, opened.output
    assert "operation 1: open -> done" in said(opened) and "venues and trade log agree" in said(opened)
    assert venue.accounts.position("bybit").qty == pytest.approx(-0.5)

    shown = cli(venue, journal, path, "positions")
    assert shown.exit_code == 0, shown.output
    row = wallet_row(venue)
    text = " ".join(shown.output.split())
    assert f"maintenance rate {float(row['accountMMRate']):.2%} (liquidation at 100%)" in text
    assert f"margin balance {float(row['totalMarginBalance']):,.2f}" in text
    assert "BTC counts at the venue's collateral ratio 0.5 up to 1e+06 BTC" in text

    closed = cli(venue, journal, path, "trade", "close", "--yes")
    assert closed.exit_code == 0, closed.output
    assert venue.accounts.position("bybit").qty == 0


def test_a_unified_config_on_a_venue_whose_figures_fundarb_cannot_read_is_refused_in_one_line(venue, tmp_path):
    _, path = config(tmp_path, "binance", "binanceusdm")
    venue.accounts.fund("binance", "USDT", 100_000.0)
    result = cli(venue, tmp_path / "t.sqlite", path, "trade", "open", "--size", "0.5", "--yes")
    assert result.exit_code == 2
    assert "cannot on binanceusdm (it can on bybit's unified trading account)" in " ".join(result.output.split())
    assert venue.accounts.all_orders("binance", "spot") == []


def test_the_strategy_runner_refuses_a_unified_config(tmp_path):
    _, path = config(tmp_path)
    result = CliRunner().invoke(app, ["run", str(path), "--paper", "--journal", str(tmp_path / "p.sqlite"),
                                      "--api-url", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "structure.kind unified" in said(result)
