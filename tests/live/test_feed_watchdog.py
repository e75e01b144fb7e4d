"""The watchdog on data age (``MarketFeed(max_silence_s=...)``) against the
loopback emulator through real ccxt.pro clients: a websocket that stays open
but brings nothing (the emulator's ``dropped_websocket`` fault, mode
"silent", with ccxt's keep-alive left at its default so it does not notice)
is declared stale within the limit: alerted through ``on_stale``, polled over
REST meanwhile (no longer "streaming"), and resubscribed on a new connection.
Every wait is bounded; loopback only."""

from __future__ import annotations

import asyncio

import pytest
from test_live_feed import check_events_at, move, pro_client, run, running

from fundarb.core.model import MarketKind, Quote
from fundarb.live.ccxt.feed import FeedState
from fundarb.testkit.emulator.harness import SPOT_SYM
from fundarb.testkit.emulator.ws import websockets

pytestmark = pytest.mark.usefixtures("hang_guard")


def test_a_silent_websocket_is_declared_stale_polled_alerted_and_resubscribed(emulator, closes):
    stale: list[tuple[str, str, float]] = []
    reconciled: list[str] = []

    async def main():
        ex = pro_client(emulator, "binance")  # default keep-alive: it would not notice in time
        hub = websockets(emulator)
        try:
            async with running(ex, emulator, "binance:spot", SPOT_SYM, MarketKind.SPOT,
                               on_reconnect=reconciled.append, poll_interval_s=0.05, ws_retry_s=0.5,
                               max_silence_s=lambda: 1.0,
                               on_stale=lambda *a: stale.append(a)) as r:
                await check_events_at(r, ex, closes, SPOT_SYM, MarketKind.SPOT, emulator.now_ns)
                assert r.feed.stale == 0
                hub.faults.add("dropped_websocket", venue="binance", mode="silent")
                now = await move(emulator)  # the next frame is swallowed, and every one after it
                await r.until(lambda: r.feed.stale >= 1, "the stream declared stale")
                assert stale and stale[0][:2] == ("binance:spot", "quote") and stale[0][2] == 1.0
                assert any("stale, no data for 1.0 s" in e for e in r.feed.errors)
                # REST answers while the websocket is silent: the price at the new time arrives anyway
                await check_events_at(r, ex, closes, SPOT_SYM, MarketKind.SPOT, now)
                polled = [e for e in emulator.log.entries if e.path == "/api/v3/ticker/bookTicker"]
                assert polled and polled[-1].now_ns == now
                # resubscribed on a new connection: streaming again, one recovery
                await r.until(lambda: r.feed.state is FeedState.STREAMING, "the resubscription")
                assert r.feed.reconnects == 1 and reconciled == ["binance:spot"]
                later = await move(emulator)
                await check_events_at(r, ex, closes, SPOT_SYM, MarketKind.SPOT, later)
                assert any(isinstance(e, Quote) and e.ts == later for e in r.events)
        finally:
            await ex.close()
        assert [e.detail for e in hub.events if e.what == "drop"] == ["silent"]

    run(main())


def test_without_a_limit_the_watchdog_is_off():
    """A quiet websocket is not stale by itself: the limit is the caller's (the runner's config)."""
    from fundarb.live.ccxt.feed import MarketFeed

    class Ex:
        id = "stub"
        has = {"watchBidsAsks": True, "fetchBidsAsks": True}

        async def watch_bids_asks(self, symbols):
            await asyncio.sleep(3600)

        async def fetch_bids_asks(self, symbols):
            raise AssertionError("not polled")

    async def main():
        feed = MarketFeed(Ex(), account="stub:spot", symbol="X/Y", kind="spot", on_event=lambda e: None)
        task = asyncio.create_task(feed.run())
        await asyncio.sleep(0.2)
        assert feed.stale == 0 and feed.state is FeedState.CONNECTING
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
