"""The dashboard driven by Textual's pilot at 100x30: against a replay (the
engine stepping through a recorded day) and against the emulator through the
live backend. Panels are read as the screen shows them and compared with the
engine's or the venues' own numbers; the keys pause alerts, open the trade
log and fire the kill switch after a confirmation."""

from __future__ import annotations

import asyncio

import pytest
from rich.console import Console

import fundarb.testkit.emulator.ws  # noqa: F401 (mounts the websockets)
from fundarb.cli.trade import _engine_source
from fundarb.live.ccxt.client import Target
from fundarb.live.execution.paired import BLOCK_KEY
from fundarb.live.journal import Journal
from fundarb.ops.monitor import MonitorApp, engine_driver, live_driver
from fundarb.testkit.emulator.harness import running_emulator
from fundarb.testkit.live import KEYS, fund, open_pair, session_on, spot_perp

pytestmark = pytest.mark.usefixtures("hang_guard")
SIZE = (100, 30)


def panel(app, key: str) -> str:
    """The text a panel shows, rendered at its width on the screen."""
    w = app.query_one(f"#{key}")
    assert w.region.height >= 1 and w.region.bottom <= SIZE[1] and w.region.right <= SIZE[0], (key, w.region)
    console = Console(width=max(w.content_region.width, 10), record=True, file=open("/dev/null", "w"))
    console.print(w.content)
    return console.export_text()


def test_the_dashboard_on_a_replayed_day_shows_the_engine_and_its_keys_work():
    source = _engine_source(None, "binance_btcusdt_2024-08-08", False)
    app = MonitorApp(source, engine_driver(1e-9))  # the test moves the data, not the clock

    async def drive():
        async with app.run_test(size=SIZE) as pilot:
            while not source.finished:
                source.advance(600)
            app.refresh_panels()
            await pilot.pause()
            engine, book = source.engine, source.engine.book
            head = str(app.query_one("#head").content)
            assert "replay binance_btcusdt_2024-08-08" in head and "(end of data)" in head
            position = panel(app, "position")
            assert f"{book.spot.qty:+.5f}" in position and f"{book.perp.qty:+.5f}" in position
            fills = [r for kind, r in engine.recorder.rows if kind == "fill"]
            trades = panel(app, "trades")
            assert fills and all(f"{f['price']:,.2f}" in trades for f in fills)
            pnl = panel(app, "pnl")
            assert f"{book.pnl:+,.2f}" in pnl and f"{book.funding:+,.2f}" in pnl
            payments = panel(app, "payments")
            (entry,) = book.funding_ledger
            assert f"{entry.amount:+,.4f}" in payments and "1 payment: " in payments
            funding = panel(app, "funding")
            assert "binanceusdm" in funding and f"{engine.strategy.signal.current_apr():.2%}" in funding
            assert "replayed" in panel(app, "connections")

            await pilot.press("p")
            assert "ALERTS PAUSED" in str(app.query_one("#head").content) and source.alerter.paused
            await pilot.press("k")
            await pilot.press("n")  # said no: nothing halted
            assert not engine.monitor.kill.halted
            await pilot.press("k")
            await pilot.press("y")
            await pilot.pause()
            assert engine.monitor.kill.halted and "HALTED: fired from the monitor" in str(app.query_one("#head").content)
            assert "kill_switch" in panel(app, "alerts")
            await pilot.press("t")
            await pilot.pause()
            assert app.screen.__class__.__name__ == "TradeLog"
            await pilot.press("escape")
            assert app.screen.__class__.__name__ != "TradeLog"

    asyncio.run(drive())


def test_the_dashboard_on_the_emulator_shows_the_venues_and_the_kill_switch_blocks_entries(tmp_path):
    journal = tmp_path / "trades.sqlite"
    with running_emulator() as server:
        fund(server)

        assert open_pair(server, journal).status == "done"
        server.advance_hours(8)  # across a settlement: the short is paid
        app = MonitorApp(None, live_driver(spot_perp(), journal, Target(api_url=server.base_url), "emulator",
                                           env=KEYS, dotenv=None))

        async def drive():
            async with app.run_test(size=SIZE) as pilot:
                for _ in range(200):  # connect, first poll, first quotes (bounded: 20 s)
                    await pilot.pause(0.1)
                    src = app.source
                    if src is not None and src.mids and src.marks and src.rates and src.last_poll_ok:
                        break
                else:
                    raise AssertionError("the live source never delivered")
                server.advance(1_000_000_000)  # a clock move makes the websockets push again
                await pilot.pause(0.5)
                app.refresh_panels()
                await pilot.pause()
                position = panel(app, "position")
                j = app.source.session.journal
                assert f"{j.position('binance:spot'):+.5f}" in position and "-0.01000" in position
                assert "streaming" in panel(app, "connections")
                rate = app.source.rates["binanceusdm:perp"]
                assert f"{rate.rate:.4%}" in panel(app, "funding")
                trades = panel(app, "trades")
                assert trades.count("sell") == 1 and trades.count("buy") == 1
                assert "1 payment: " in panel(app, "payments")  # learned by the first poll
                await pilot.press("k")
                await pilot.press("y")
                await pilot.pause()
                assert "HALTED: kill switch: fired from the monitor" in str(app.query_one("#head").content)
                await app.action_quit()

        asyncio.run(drive())

        async def reconcile_again():  # a restart: the venues agree, but the kill switch holds
            from fundarb.live.execution.reconcile import reconcile

            session = await session_on(server, journal)
            try:
                return await reconcile(session, "start")
            finally:
                await session.close()

        assert asyncio.run(reconcile_again()).ok
        j = Journal(journal)
        assert j.get_state(BLOCK_KEY) == "kill switch: fired from the monitor"
        assert any(a["kind"] == "kill_switch" and a["severity"] == "critical" for a in j.rows("alerts"))
        j.close()
        from typer.testing import CliRunner

        from fundarb.cli.main import app as cli_app

        resumed = CliRunner().invoke(cli_app, ["resume", "checked the legs by hand", "--journal", str(journal)])
        assert resumed.exit_code == 0 and "kill switch lifted" in resumed.output
        j = Journal(journal)
        assert j.blocked() is None
        assert "checked the legs by hand" in j.rows("alerts")[-1]["message"]
        again = CliRunner().invoke(cli_app, ["resume", "twice", "--journal", str(journal)])
        assert again.exit_code == 1 and "not on" in again.output


def test_a_venue_that_stops_answering_raises_one_unreachable_alert(tmp_path):
    import attrs

    from fundarb.config import AlertSettings

    journal = tmp_path / "trades.sqlite"
    cfg = attrs.evolve(spot_perp(), alerts=AlertSettings(unreachable_seconds=1.0))
    with running_emulator() as server:
        fund(server)
        app = MonitorApp(None, live_driver(cfg, journal, Target(api_url=server.base_url, timeout_ms=1000), "emulator",
                                           env=KEYS, dotenv=None))

        async def drive():
            async with app.run_test(size=SIZE) as pilot:
                for _ in range(100):
                    await pilot.pause(0.1)
                    if app.source is not None and app.source.last_poll_ok:
                        break
                app.source.poll_seconds = 0.3
                server.faults.add("server_error", venue="binanceusdm", times=None)  # every perp request fails
                for _ in range(150):  # bounded: 15 s
                    await pilot.pause(0.1)
                    rows = app.source.session.journal.rows("alerts")
                    if any(r["kind"] == "venue_unreachable" for r in rows):
                        break
                app.refresh_panels()
                await pilot.pause()
                assert "failing" in panel(app, "connections")
                assert "venue_unreachable: REST has not answered" in panel(app, "alerts")
                server.faults.clear()
                await app.action_quit()

        asyncio.run(drive())
    rows = [r for r in Journal(journal).rows("alerts") if r["kind"] == "venue_unreachable"]
    assert len(rows) == 1 and rows[0]["severity"] == "critical" and rows[0]["key"] == "venue_unreachable:REST"
    assert rows[0]["outcome"] == "no_channel"  # stored; no channel configured in this test


def _scan_text(app) -> str:
    w = app.screen.query_one("#scan")
    console = Console(width=200, record=True, file=open("/dev/null", "w"))
    console.print(w.content)
    return " ".join(console.export_text().split())


async def _scanned(app, pilot) -> str:
    await pilot.press("s")
    for _ in range(200):  # the scan runs in a worker (bounded: 20 s)
        await pilot.pause(0.1)
        if app.screen.__class__.__name__ == "ScanScreen" and app.screen.doc is not None:
            break
    else:
        raise AssertionError("the scan screen never showed a scan")
    await pilot.pause()
    return _scan_text(app)


def test_the_scan_screen_of_a_replay_ranks_the_shipped_settlements_before_its_clock():
    from fundarb.cli.trade import SCAN_DAYS, _data_scanner

    source = _engine_source(None, "binance_btcusdt_2024-08-08", False)
    app = MonitorApp(source, engine_driver(1e-9), scanner=_data_scanner(source))

    async def drive():
        async with app.run_test(size=SIZE) as pilot:
            text = await _scanned(app, pilot)
            doc = app.screen.doc
            (window,) = doc["windows"]
            # the 30 days before the replay's clock: only Binance's two perps reach into 2024-08
            assert window["label"] == "2024-07-08..2024-08-07" and SCAN_DAYS == 30
            assert {r["short"] for r in window["rows"]} == {"binance BTCUSDT", "binance BTCUSD_PERP"}
            best = window["rows"][0]
            assert f"{best['net_apr_on_capital']:.2%}" in text and window['left_out'] == {}
            await pilot.press("escape")
            assert app.screen.__class__.__name__ != "ScanScreen"

    asyncio.run(drive())


def test_the_scan_screen_on_the_emulator_reads_the_venues_now(tmp_path):
    from fundarb.cli.trade import _live_scanner

    journal = tmp_path / "trades.sqlite"
    with running_emulator(start="2024-03-01T06:00") as server:
        target = Target(api_url=server.base_url)
        cfg = spot_perp()
        app = MonitorApp(None, live_driver(cfg, journal, target, "emulator", env=KEYS, dotenv=None),
                         scanner=_live_scanner(cfg, target))

        async def drive():
            async with app.run_test(size=SIZE) as pilot:
                text = await _scanned(app, pilot)
                doc = app.screen.doc
                assert doc["failed"] == {} and len(doc["markets"]) == 4
                assert "funding now, by market" in text and "binancecoinm BTC/USD:BTC" in text
                assert f"{doc['rows'][0]['net_apr_on_capital']:.2%}" in text
                server.faults.add("rate_limit", venue="bybit", times=None, retry_after_s=30)
                await pilot.press("r")  # scan again: Bybit now refuses, the rest is ranked
                for _ in range(200):
                    await pilot.pause(0.1)
                    if app.screen.doc is not doc:
                        break
                await pilot.pause()
                again = _scan_text(app)
                assert "rate-limited" in again and set(app.screen.doc["failed"]) == {"bybit BTC/USDT:USDT", "bybit BTC/USD:BTC"}
                await pilot.press("escape")

        asyncio.run(drive())
