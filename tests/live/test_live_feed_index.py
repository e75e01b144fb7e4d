"""The live feed's index price: a perp's funding stream emits
``IndexPrice`` when the venue's message carries one (Binance
``markPriceUpdate`` ``i``, Bybit linear ``tickers`` ``indexPrice``, REST
``fetch_funding_rate`` ``indexPrice``), just before the mark of the same
message, checked finite and positive as marks are. Through real ccxt.pro
clients on the loopback emulator (whose index is the Binance spot close it
also serves at ``premiumIndex``); tests named ``synthetic`` use made-up
values and a stub exchange."""

from __future__ import annotations

import asyncio
import math

import ccxt
import pytest
from test_live_feed import INSTRUMENTS, PERPS, STEP, move, pro_client, run, running

from fundarb.core.model import FundingRate, IndexPrice, MarketKind, MarkPrice
from fundarb.live.ccxt.feed import MarketFeed
from fundarb.testkit.emulator.harness import SPOT_SYM, close_at
from fundarb.testkit.emulator.ws import websockets

pytestmark = pytest.mark.usefixtures("hang_guard")

NS_PER_MS = 1_000_000


def at(events: list, kind: type, ts: int) -> list:
    return [e for e in events if type(e) is kind and e.ts == ts]


@pytest.mark.parametrize("websocket", [True, False], ids=["websocket", "rest"])
@pytest.mark.parametrize("name", PERPS)
def test_a_perp_feed_emits_the_venue_index_with_its_mark(emulator, closes, name, websocket):
    exchange_id, symbol, kind = INSTRUMENTS[name]

    async def main():
        ex = pro_client(emulator, exchange_id)
        try:
            async with running(ex, emulator, f"{exchange_id}:perp", symbol, kind, use_websocket=websocket,
                               poll_interval_s=0.05) as r:
                for hours in (0, 1, 9):  # the first frames, an hour later, across a settlement
                    now = await move(emulator, hours) if hours else emulator.now_ns
                    mark = await r.event(MarkPrice, now)
                    index = await r.event(IndexPrice, now)
                    rest = await asyncio.wait_for(ex.fetch_funding_rate(symbol), STEP)
                    assert index.venue == mark.venue == f"{exchange_id}:perp"
                    # the emulator's index is the Binance spot close, as its REST premiumIndex/tickers say
                    assert index.index == pytest.approx(close_at(closes, SPOT_SYM, now // NS_PER_MS), abs=0.005)
                    assert index.index == float(rest["indexPrice"])
                    # one message: the index first, then its mark, then the rate
                    first = [type(e) for e in r.events if e.ts == now and type(e) in (IndexPrice, MarkPrice, FundingRate)]
                    assert first[:3] == [IndexPrice, MarkPrice, FundingRate]
                assert r.feed.errors == []
        finally:
            await ex.close()

    run(main())


@pytest.mark.parametrize("name", PERPS)
def test_a_bad_index_frame_from_the_emulator_reaches_the_feed_once(emulator, closes, name):
    """The emulator's ``bad_index`` fault: one frame whose index is ten times
    the real one (finite and positive: the feed passes it on; judging it is
    the market guard's job), the real index in the next frame."""
    exchange_id, symbol, kind = INSTRUMENTS[name]

    async def main():
        ex = pro_client(emulator, exchange_id)
        try:
            async with running(ex, emulator, "p", symbol, kind) as r:
                first = await r.event(IndexPrice, emulator.now_ns)
                hub = websockets(emulator)
                hub.faults.add("bad_index", venue=exchange_id, factor=10.0)
                bad_at = await move(emulator)
                bad = await r.event(IndexPrice, bad_at)
                mark = await r.event(MarkPrice, bad_at)
                good_at = await move(emulator)
                good = await r.event(IndexPrice, good_at)
                return first, bad, mark, good, [e.detail for e in hub.events if e.what == "bad_index"]
        finally:
            await ex.close()

    first, bad, mark, good, hits = run(main())
    assert len(hits) == 1
    assert 5 * first.index < bad.index < 20 * first.index  # a tenfold index
    assert 0.5 * first.index < mark.mark < 2 * first.index  # the mark of that frame is the real one
    assert 0.5 * first.index < good.index < 2 * first.index


# ----------------------------------------------------------------- synthetic: parsing

class StubPerp:
    """A stub ccxt.pro client: only what a perp feed is built from."""

    id = "synthetic"
    has = {"watchTicker": True}
    markets: dict = {}

    async def watch_ticker(self, symbol):
        raise ccxt.NotSupported("not used")

    fetch_ticker = fetch_funding_rate = watch_ticker


def handled(*answers: dict) -> tuple[list, list[str]]:
    events: list = []
    feed = MarketFeed(StubPerp(), account="s:perp", symbol="SYN/USDT:USDT", kind=MarketKind.PERP,
                      on_event=events.append, now_ns=lambda: 7)
    for answer in answers:
        feed._handle_funding(answer, False)
    return events, feed.errors


def binance(index, ticker_index=True) -> dict:
    """What ccxt.pro 4.5.90 returns for a Binance ``markPriceUpdate``."""
    info = {"e": "markPriceUpdate", "E": 1_000, "s": "SYNUSDT", "p": "100.5", "i": index, "P": "100.4",
            "r": "0.0001", "T": 28_800_000}
    return {"symbol": "SYN/USDT:USDT", "timestamp": 1_000, "markPrice": 100.5,
            "indexPrice": (None if index is None else _num(index)) if ticker_index else None, "info": info}


def _num(text):
    try:
        return float(text)
    except ValueError:
        return None  # ccxt's safe_number gives None for what it cannot read


def test_synthetic_binance_mark_price_update_carries_the_index():
    events, errors = handled(binance("100.25"))
    assert events == [IndexPrice(1_000 * NS_PER_MS, "s:perp", 100.25), MarkPrice(1_000 * NS_PER_MS, "s:perp", 100.5),
                      FundingRate(1_000 * NS_PER_MS, "s:perp", 0.0001, 8.0, 28_800_000 * NS_PER_MS, 0.0001)]
    assert errors == []
    events, _ = handled(binance("100.25", ticker_index=False))  # ccxt without the unified field: the raw "i"
    assert IndexPrice(1_000 * NS_PER_MS, "s:perp", 100.25) in events


def test_synthetic_bybit_ticker_and_rest_funding_rate_carry_the_index():
    bybit = {"symbol": "SYN/USDT:USDT", "timestamp": 2_000, "markPrice": 100.5, "indexPrice": 100.3,
             "info": {"symbol": "SYNUSDT", "markPrice": "100.5", "indexPrice": "100.3", "fundingRate": "0.0001",
                      "nextFundingTime": "28800000"}}
    rest = {"symbol": "SYN/USDT:USDT", "timestamp": 3_000, "markPrice": 100.6, "indexPrice": None,
            "fundingRate": 0.0002, "fundingTimestamp": 28_800_000,
            "info": {"symbol": "SYNUSDT", "markPrice": "100.6", "indexPrice": "100.4"}}
    events, errors = handled(bybit, rest)
    assert [e for e in events if type(e) is IndexPrice] == [IndexPrice(2_000 * NS_PER_MS, "s:perp", 100.3),
                                                           IndexPrice(3_000 * NS_PER_MS, "s:perp", 100.4)]
    assert errors == []


@pytest.mark.parametrize("bad", ["0", "-3", "nan", "inf", "abc"])
def test_synthetic_an_index_that_is_not_a_finite_positive_price_is_dropped_and_the_mark_still_comes(bad):
    events, errors = handled(binance(bad, ticker_index=False))
    assert [type(e) for e in events] == [MarkPrice, FundingRate]
    assert len(errors) == 1 and errors[0].startswith("index price dropped")
    assert not [e for e in events if type(e) is IndexPrice and not (math.isfinite(e.index) and e.index > 0)]


def test_synthetic_a_message_without_an_index_emits_none_and_is_no_error():
    events, errors = handled(binance(None))
    assert [type(e) for e in events] == [MarkPrice, FundingRate] and errors == []
