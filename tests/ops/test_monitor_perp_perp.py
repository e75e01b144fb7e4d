"""The dashboard on a perp/perp carry (sims/perp_perp.toml: long the Bybit
BTCUSDT perp, short Binance USD-M's) against the emulator, driven by
Textual's pilot at 100x30: both perps as their venues hold them against the
trade log, each with its liquidation price and margin buffer by its venue,
each venue's funding rate and payments, the PnL of both, and no mismatch
where the venues agree. After `fundarb trade rotate` it watches the pair the
trade log holds, as the venue commands do."""

from __future__ import annotations

import asyncio
from pathlib import Path

import attrs
import pytest
from rich.console import Console

import fundarb.testkit.emulator.ws  # noqa: F401 (mounts the websockets)
from fundarb.cli.main import app as cli_app
from fundarb.cli.trade import MONITORED, _context
from fundarb.config import project_file
from fundarb.core.book import margin_buffer
from fundarb.live.ccxt.client import Target
from fundarb.live.journal import Journal
from fundarb.ops.monitor import MonitorApp, live_driver, render_position
from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.live import (
    KEYS,
    PERP_PERP_START,
    assert_agree_perp_perp,
    fund_perp_perp,
    perp_perp_config,
    venue_cli,
)

pytestmark = pytest.mark.usefixtures("hang_guard")
SIZE = (100, 30)
CONFIG = project_file(Path("sims") / "perp_perp.toml")


def panel(app, key: str) -> str:
    """The text a panel shows, rendered at its width on the screen."""
    w = app.query_one(f"#{key}")
    assert w.region.height >= 1 and w.region.bottom <= SIZE[1] and w.region.right <= SIZE[0], (key, w.region)
    console = Console(width=max(w.content_region.width, 10), record=True, file=open("/dev/null", "w"))
    console.print(w.content)
    return console.export_text()


def watched(server, journal: Path, cfg) -> dict[str, str]:
    """The dashboard on ``cfg``'s perp/perp carry once both perps stream and
    the venues have been polled and reconciled at least once: each panel's
    text, the live source (``"source"``) and its last snapshot to compare them with."""
    app = MonitorApp(None, live_driver(cfg, journal, Target(api_url=server.base_url), "emulator",
                                       env=KEYS, dotenv=None))
    shown: dict = {}

    async def drive():
        async with app.run_test(size=SIZE) as pilot:
            for _ in range(300):  # connect, first poll, first quotes, a periodic reconciliation (bounded: 30 s)
                await pilot.pause(0.1)
                src = app.source
                legs = src.session.legs if src is not None else ()
                if (src is not None and src.polled and all(leg.account in src.marks and leg.account in src.rates
                                                           for leg in legs)
                        and any(r["trigger"] == "periodic" for r in src.session.journal.rows("reconciliations"))):
                    break
            else:
                raise AssertionError(f"the live source never delivered: {app.source and app.source.poll_error}")
            server.advance(1_000_000_000)  # a clock move makes the websockets push again
            await pilot.pause(0.5)
            await app.source.poll()
            app.refresh_panels()
            await pilot.pause()
            shown.update({key: panel(app, key) for key in ("position", "funding", "pnl", "payments", "alerts",
                                                           "connections", "trades")})
            shown["source"], shown["snapshot"] = app.source, app.snapshot
            await app.action_quit()

    asyncio.run(drive())
    return shown


def row(text: str, first: str) -> list[str]:
    return next(line.split() for line in text.splitlines() if line.split()[:1] == [first])


def check_perp_perp(server, journal: Path, shown: dict, long: str, short: str) -> None:
    """Both perps (``long``, ``short``: account names) as the dashboard shows
    them are the trade log's and the venues', each venue's funding its own."""
    src = shown["source"]
    j = assert_agree_perp_perp(server, journal)
    try:
        position, payments = shown["position"], shown["payments"]
        for account, venue_position, sign in ((long, src.long_position, "+"), (short, src.position, "-")):
            venue = account.split(":")[0]
            qty = j.position(account)
            assert qty == pytest.approx(server.accounts.position(venue).qty) and f"{qty:+.5f}".startswith(sign)
            liq, mark = venue_position["liquidation"], src.marks[account]
            assert venue_position["qty"] == pytest.approx(qty) and liq == liq and liq > 0
            buffer = margin_buffer(liq, mark, qty)
            assert buffer > 0.2  # 3x isolated: about a third away, on the side that loses
            assert row(position, venue) == [venue, f"{qty:+.5f}", f"{liq:,.0f}", f"{buffer:.1%}"], position
            rate = src.rates[account]
            assert f"{rate.rate:.4%}/8h" in row(shown["funding"], venue)
            paid = [f["amount"] for f in j.rows("funding") if f["account"] == account]
            assert len(paid) == 1  # one settlement on this pair, learned from its own venue
            role = "long" if account == long else "short"
            assert f"{venue} {role}: 1, {sum(paid):+,.4f}" in payments, payments
        assert row(position, "venues")[1:] == ["agree"]
        assert row(position, "delta")[1:3] == ["+0.00000", "drift"]
        total = sum(f["amount"] for f in j.rows("funding"))
        assert f"{len(j.rows('funding'))} payments:" in payments and f"{total:+,.2f} USDT" in payments
        assert row(shown["pnl"], "funding")[1] == f"{total:+,.2f}"
        for account in (long, short):
            assert f"{account}: streaming" in shown["connections"]
        trades = [line.split() for line in shown["trades"].splitlines()[1:] if line.strip()]
        assert [long.split(":")[0], "buy"] in [t[2:4] for t in trades]  # each perp's trades by its venue
        assert [short.split(":")[0], "sell"] in [t[2:4] for t in trades]
        assert "reconciliation_mismatch" not in shown["alerts"], shown["alerts"]
        # a margin alert only for a buffer the panel shows under the floor (the short's or the long's)
        floor = src.cfg.risk.min_margin_buffer
        low = [b for b in (shown["snapshot"].long_buffer, shown["snapshot"].margin_buffer) if b < floor]
        assert ("margin_buffer" in shown["alerts"]) == bool(low), (shown["alerts"], low)
        if low:  # named by the leg whose buffer it is
            snap = shown["snapshot"]
            which = long if snap.long_buffer < snap.margin_buffer else short
            assert any(a["message"].startswith(f"{which}'s margin buffer") for a in j.rows("alerts")
                       if a["kind"] == "margin_buffer"), j.rows("alerts")
        reconciled = [r for r in j.rows("reconciliations") if r["trigger"] == "periodic"]
        assert reconciled and all(r["ok"] for r in reconciled)
        assert not [a for a in j.rows("alerts") if a["kind"] == "reconciliation_mismatch"] and j.blocked() is None
    finally:
        j.close()


def test_the_dashboard_watches_both_perps_each_venues_funding_and_sees_no_mismatch(tmp_path):
    journal = tmp_path / "trades.sqlite"
    with running_emulator(start=PERP_PERP_START) as server:
        fund_perp_perp(server)
        opened = venue_cli(cli_app, server, journal, CONFIG, "trade", "open", "--size", "0.01", "--yes")
        assert opened.exit_code == 0, opened.output
        server.advance_hours(8)  # across the 08:00 settlement: the long pays Bybit, the short is paid by Binance
        shown = watched(server, journal, perp_perp_config(reconcile_interval_seconds=1.0))
        src = shown["source"]
        assert (src.session.spot.account, src.session.perp.account) == ("bybit:long", "binanceusdm:perp")
        check_perp_perp(server, journal, shown, "bybit:long", "binanceusdm:perp")
    # a venue holding what the trade log does not: both venues' sizes, in red, and the word
    differ = attrs.evolve(shown["snapshot"], venue_qty=(0.02, -0.01))
    console = Console(width=36, record=True, file=open("/dev/null", "w"))
    console.print(render_position(differ))
    assert row(console.export_text(), "venues") == ["venues", "+0.02000", "-0.01000", "differ"]


def test_after_a_rotation_the_dashboard_watches_the_pair_the_trade_log_holds(tmp_path):
    from fundarb.config import LiveSettings

    journal = tmp_path / "trades.sqlite"
    with running_emulator(start=PERP_PERP_START) as server:
        fund_perp_perp(server)
        assert venue_cli(cli_app, server, journal, CONFIG, "trade", "open", "--size", "0.01", "--yes").exit_code == 0
        server.advance_hours(8)  # across the 08:00 settlement: by then Bybit pays more
        rotated = venue_cli(cli_app, server, journal, CONFIG, "trade", "rotate", "--long", "binanceusdm",
                            "--short", "bybit", "--yes")
        assert rotated.exit_code == 0, rotated.output
        server.advance_hours(8)  # across the 16:00 settlement, on the pair rotated to
        # the config as `fundarb monitor --config sims/perp_perp.toml` resolves it: the pair held
        cfg, path, _ = _context(CONFIG, journal, server.base_url, False, False, "fundarb monitor", MONITORED)
        assert (cfg.spot_account, cfg.perp_account) == ("binanceusdm:long", "bybit:perp") and path == journal
        cfg = attrs.evolve(cfg, live=LiveSettings(**{**attrs.asdict(cfg.live_settings),
                                                     "reconcile_interval_seconds": 1.0}))
        shown = watched(server, journal, cfg)
        check_perp_perp(server, journal, shown, "binanceusdm:long", "bybit:perp")
    j = Journal(journal)
    # each name's payments stay its own: the first pair's at 08:00, the pair held's at 16:00
    assert sorted(f["account"] for f in j.rows("funding")) == [
        "binanceusdm:long", "binanceusdm:perp", "bybit:long", "bybit:perp"]
    j.close()


def test_the_monitor_takes_its_config_as_the_venue_commands_name_it():
    from typer.testing import CliRunner

    named = CliRunner().invoke(cli_app, ["monitor", "--config", str(CONFIG)])
    assert named.exit_code == 2 and "the dashboard needs a terminal" in named.output  # past the option, to the screen
    both = CliRunner().invoke(cli_app, ["monitor", str(project_file(Path("sims") / "spot_perp.toml")),
                                        "--config", str(CONFIG)])
    assert both.exit_code == 2 and "two configs named" in both.output
