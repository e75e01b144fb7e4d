"""Each venue module (``fundarb.venues``) against the loopback emulator,
through the real ccxt clients fundarb builds: what the module claims about
its venue holds for every ccxt id it covers and every market type it trades.

- a pointed client loads only the module's market types and asks nothing
  the venue does not serve (Bybit: no account-type probe);
- an order placed with a client id is found by that id (open or done) through
  the module's look-up; an id never sent gives None, not an error;
- ``fetch_order`` by venue id works with the module's params; an unknown
  venue id is an error the module calls "order unknown";
- a client id sent twice is refused with what the module calls a duplicate,
  and a refusal for want of funds is not one;
- the module's page limits are served whole by the history endpoints, and its
  spot counterpart lists the spot market;
- Binance: each transfer type moves USDT between the spot and USD-M wallets.

Only 127.0.0.1; clients time out after 3 s; each test is killed after 20 s.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import ccxt
import pytest

from fundarb.core.errors import FundarbError
from fundarb.data.fetch import make_exchange, spot_counterpart
from fundarb.live.ccxt.client import Target, connect
from fundarb.live.ccxt.credentials import Credentials
from fundarb.testkit.emulator.harness import KRAKEN_SECRET, TEST_WALLET
from fundarb.testkit.emulator.server import EmulatorServer
from fundarb.testkit.guards import guarded
from fundarb.venues import MODULES, SUPPORTED, UnknownVenue, ccxt_config, quirks, quirks_or_plain

SYMBOL_OF_TYPE = {"spot": "BTC/USDT", "linear": "BTC/USDT:USDT", "inverse": "BTC/USD:BTC",
                  "swap": "BTC/USDC:USDC"}  # ccxt's "swap" type: Hyperliquid's perps (USDC)
KINDS = ("spot", "linear", "inverse")  # the ccxt market flags a loaded market has
KIND_OF_TYPE = {"swap": "linear"}  # Hyperliquid's perps are all linear
# fundarb's client ids (core.orders.client_order_id: fa<config hash[:12]>-<seq>), as the live layer sends them
CID = "fac0417ac7c0de-{}".format
CID_DONE, CID_OPEN, CID_NEVER, CID_FETCH, CID_TWICE, CID_TOO_BIG = (CID(n) for n in range(1, 7))
FUNDS_USDT = 10_000.0
FUNDS_BTC = 0.05  # an inverse perp's margin: far under what a "too big" order needs
QTY = 0.01
# an inverse perp is traded in whole contracts (Binance COIN-M 100 USD each, Bybit BTCUSD 1 USD)
QTY_OF_SYMBOL = {"BTC/USD:BTC": 2.0}
TOO_BIG_OF_SYMBOL = {"BTC/USD:BTC": 1_000_000.0}


def qty_of(symbol: str) -> float:
    return QTY_OF_SYMBOL.get(symbol, QTY)
HISTORY_NOW, HISTORY_SINCE = "2024-06-02T00:00", "2022-01-01T00:00"


def _name(module: Any) -> str:
    return str(module.__name__).rsplit(".", 1)[-1]


# (venue module, ccxt id) of every id a module covers, and with each market type the id trades
ID_CASES = [(m, i) for m in MODULES for i in m.IDS]
MARKET_CASES = [(m, i, t) for m, i in ID_CASES for t in quirks(i).market_types]
TRANSFER_CASES = [(i, to) for _, i in ID_CASES for to in quirks(i).transfer_types]


def id_case(case: tuple[Any, ...]) -> str:
    return ":".join([_name(case[0]), *case[1:]])


@pytest.fixture(autouse=True)
def bounded(loopback_only):
    with guarded(loopback_only, 20):
        yield


class Leg:
    """The duck-typed leg the look-ups take: one market on one client, calls made directly."""

    def __init__(self, exchange: Any, symbol: str) -> None:
        self.exchange, self.symbol = exchange, symbol

    @property
    def market(self) -> dict[str, Any]:
        return self.exchange.market(self.symbol)

    async def call(self, method: str, *args: Any) -> Any:
        return await getattr(self.exchange, method)(*args)


@asynccontextmanager
async def client(server: EmulatorServer, exchange_id: str) -> AsyncIterator[Any]:
    """The client live trading builds for ``exchange_id`` pointed at ``server`` (markets loaded)."""
    secret = KRAKEN_SECRET if exchange_id == "kraken" else "emulator-secret"  # Kraken's secrets are base64
    ex = connect(exchange_id, Credentials(exchange_id, "emulator-key", secret),
                 Target(api_url=server.base_url, timeout_ms=3000))
    if exchange_id == "hyperliquid":  # its keys are a wallet, which fundarb's Credentials do not hold yet
        ex.walletAddress, ex.privateKey = TEST_WALLET
    try:
        await ex.load_markets()
        yield ex
    finally:
        await ex.close()


def on_market(server: EmulatorServer, exchange_id: str, symbol: str,
              scenario: Callable[[Any, Leg], Awaitable[None]]) -> None:
    for wallet in ("binance", "binanceusdm", "bybit", "coinbase", "kraken"):
        server.accounts.fund(wallet, "USDT", FUNDS_USDT)
    for wallet in ("binancecoinm", "bybit"):
        server.accounts.fund(wallet, "BTC", FUNDS_BTC)
    server.accounts.fund("hyperliquid", "USDC", FUNDS_USDT)

    async def run() -> None:
        async with client(server, exchange_id) as ex:
            await scenario(ex, Leg(ex, symbol))

    asyncio.run(run())


async def resting_bid(ex: Any, symbol: str, client_id: str) -> dict[str, Any]:
    """A limit buy a tenth under the last price: it rests."""
    last = float((await ex.fetch_ticker(symbol))["last"])
    return await ex.create_order(symbol, "limit", "buy", qty_of(symbol), float(ex.price_to_precision(symbol, last * 0.9)),
                                 sent(ex, symbol, "limit", "buy", client_id))


def sent(ex: Any, symbol: str, order_type: str, side: str, client_id: str, amount: float | None = None) -> dict[str, Any]:
    """create_order's params for ``client_id``, as the live layer builds them (the module's ``order_params``)."""
    return quirks(ex.id).order_params(ex, symbol, order_type, side, qty_of(symbol) if amount is None else amount,
                                      client_id)


def venue_client_id(ex: Any, symbol: str, client_id: str) -> str:
    """The client id the venue reports back: what ``order_params`` sent as ccxt's clientOrderId (Hyperliquid: the cloid)."""
    return str(sent(ex, symbol, "limit", "buy", client_id).get("clientOrderId", client_id))


async def market_price(ex: Any, symbol: str) -> float | None:
    """The price of a market order: none, as the live layer sends it, except where ccxt cannot place one
    without a price to bound its slippage (Hyperliquid; see fundarb.venues.hyperliquid)."""
    return float((await ex.fetch_ticker(symbol))["last"]) if ex.id == "hyperliquid" else None


# ----------------------------------------------------------------- the modules and the registry

@pytest.mark.parametrize("module, exchange_id", ID_CASES, ids=map(id_case, ID_CASES))
def test_each_id_answers_its_modules_quirks_and_config(module, exchange_id):
    q = quirks(exchange_id)
    assert (q.exchange_id, q.venue, q.find_order) == (exchange_id, _name(module), module.find_order)
    assert q.market_types and set(q.market_types) <= set(SYMBOL_OF_TYPE)
    if isinstance(getattr(ccxt, exchange_id)().options.get("fetchMarkets"), dict):  # ccxt loads the types it lists
        assert ccxt_config(exchange_id, timeout=1)["options"]["fetchMarkets"]["types"] == list(q.market_types)
    else:  # it names a method (Coinbase's fetchMarketsV3) or is absent (Kraken loads one type): left as ccxt has it
        assert "fetchMarkets" not in ccxt_config(exchange_id, timeout=1)["options"]
    # a perp-only venue (Hyperliquid) has no spot counterpart: ""
    assert not q.spot_id or (q.spot_id in SUPPORTED and "spot" in quirks(q.spot_id).market_types)
    assert quirks_or_plain(exchange_id) is q


def test_an_unknown_venue_is_refused_in_one_line_naming_the_venues():
    with pytest.raises(UnknownVenue) as caught:
        quirks("bitstamp")
    text = str(caught.value)
    assert isinstance(caught.value, FundarbError) and "\n" not in text and "'bitstamp'" in text
    assert all(i in text for i in SUPPORTED) and set(SUPPORTED) == {i for _, i in ID_CASES}
    with pytest.raises(ValueError, match="serves"):
        ccxt_config("bitstamp")
    plain = quirks_or_plain("bitstamp")  # served with ccxt's unified calls as they are
    assert (plain.spot_id, plain.market_types, plain.fetch_params(), plain.transfer_type("bitstamp")) == (
        "bitstamp", (), {}, None)
    assert spot_counterpart("bitstamp", "BTC/USD:USD") == ("bitstamp", "BTC/USD")


# ----------------------------------------------------------------- clients

@pytest.mark.parametrize("module, exchange_id", ID_CASES, ids=map(id_case, ID_CASES))
def test_a_pointed_client_loads_only_the_market_types_and_asks_only_what_is_served(emulator, module, exchange_id):
    q = quirks(exchange_id)

    async def scenario(ex: Any, leg: Leg) -> None:
        assert {t for m in ex.markets.values() for t in KINDS if m.get(t)} == {KIND_OF_TYPE.get(t, t)
                                                                               for t in q.market_types}
        await ex.fetch_balance()  # Bybit's first private call would probe the account type

    on_market(emulator, exchange_id, SYMBOL_OF_TYPE[q.market_types[0]], scenario)
    assert {e.status for e in emulator.log.entries} == {200}, [(e.path, e.status) for e in emulator.log.entries]


# ----------------------------------------------------------------- orders

@pytest.mark.parametrize("module, exchange_id, market_type", MARKET_CASES, ids=map(id_case, MARKET_CASES))
def test_an_order_is_found_by_its_client_id_open_or_done(emulator, module, exchange_id, market_type):
    symbol = SYMBOL_OF_TYPE[market_type]
    q = quirks(exchange_id)

    async def scenario(ex: Any, leg: Leg) -> None:
        done = await ex.create_order(symbol, "market", "buy", qty_of(symbol), await market_price(ex, symbol),
                                     sent(ex, symbol, "market", "buy", CID_DONE))
        resting = await resting_bid(ex, symbol, CID_OPEN)
        for placed, client_id, status in ((done, CID_DONE, "closed"), (resting, CID_OPEN, "open")):
            found = await q.find_order(leg, client_id)
            assert found is not None, client_id
            assert (found["id"], found["clientOrderId"], found["status"]) == (
                placed["id"], venue_client_id(ex, symbol, client_id), status)
            assert found["symbol"] == symbol and found["amount"] == pytest.approx(qty_of(symbol))

    on_market(emulator, exchange_id, symbol, scenario)


@pytest.mark.parametrize("module, exchange_id, market_type", MARKET_CASES, ids=map(id_case, MARKET_CASES))
def test_an_unknown_client_id_gives_none_and_an_unknown_order_id_is_order_unknown(emulator, module, exchange_id,
                                                                                   market_type):
    q = quirks(exchange_id)

    async def scenario(ex: Any, leg: Leg) -> None:
        assert await q.find_order(leg, CID_NEVER) is None
        assert await q.find_order(leg, "contract-never-sent") is None  # not even a client id fundarb makes
        with pytest.raises(ccxt.ExchangeError) as caught:
            await ex.fetch_order("987654321", leg.symbol, q.fetch_params())
        assert q.order_unknown(caught.value), caught.value
        assert not q.order_unknown(ccxt.ExchangeError(f"{exchange_id} {{\"code\":-1021,\"msg\":\"Timestamp outside recvWindow\"}}"))

    on_market(emulator, exchange_id, SYMBOL_OF_TYPE[market_type], scenario)


def test_binance_order_unknown_reads_the_code_from_another_hosts_plain_error():
    # ccxt maps Binance's codes to its classes by hostname: from another host -2013 can arrive as a plain ExchangeError
    plain = ccxt.ExchangeError('binanceusdm {"code":-2013,"msg":"Order does not exist."}')
    assert quirks("binanceusdm").order_unknown(plain) and quirks("binance").order_unknown(plain)
    assert not quirks("binance").order_unknown(ccxt.ExchangeError('binance {"code":-2010,"msg":"Duplicate order sent."}'))


@pytest.mark.parametrize("module, exchange_id, market_type", MARKET_CASES, ids=map(id_case, MARKET_CASES))
def test_fetch_order_by_venue_id_works_with_the_modules_params(emulator, module, exchange_id, market_type):
    q = quirks(exchange_id)

    async def scenario(ex: Any, leg: Leg) -> None:
        side = "sell" if market_type in ("linear", "swap") else "buy"
        placed = await ex.create_order(leg.symbol, "market", side, qty_of(leg.symbol), await market_price(ex, leg.symbol),
                                       sent(ex, leg.symbol, "market", side, CID_FETCH))
        fetched = await ex.fetch_order(placed["id"], leg.symbol, q.fetch_params())
        assert (fetched["id"], fetched["clientOrderId"], fetched["status"]) == (
            placed["id"], venue_client_id(ex, leg.symbol, CID_FETCH), "closed")
        assert fetched["filled"] == pytest.approx(qty_of(leg.symbol))
        if q.fetch_params():  # the params are what makes ccxt ask
            with pytest.raises(ccxt.ArgumentsRequired):
                await ex.fetch_order(placed["id"], leg.symbol, {})

    on_market(emulator, exchange_id, SYMBOL_OF_TYPE[market_type], scenario)


@pytest.mark.parametrize("module, exchange_id, market_type", MARKET_CASES, ids=map(id_case, MARKET_CASES))
def test_a_client_id_sent_twice_is_a_duplicate_and_a_refusal_for_funds_is_not(emulator, module, exchange_id,
                                                                               market_type):
    q = quirks(exchange_id)

    async def scenario(ex: Any, leg: Leg) -> None:
        first = await resting_bid(ex, leg.symbol, CID_TWICE)
        if q.idempotent_client_id:  # the venue answers the order the id already names (Coinbase): no second one
            again = await resting_bid(ex, leg.symbol, CID_TWICE)
            assert again["id"] == first["id"]
            assert len([o for o in await ex.fetch_open_orders(leg.symbol) if o["id"] == first["id"]]) == 1
        else:
            with pytest.raises(ccxt.ExchangeError) as caught:
                await resting_bid(ex, leg.symbol, CID_TWICE)
            assert q.duplicate_order(caught.value), caught.value
        too_big = TOO_BIG_OF_SYMBOL.get(leg.symbol, 1000.0)
        with pytest.raises(ccxt.ExchangeError) as broke:  # far more than the funds
            await ex.create_order(leg.symbol, "market", "buy", too_big, await market_price(ex, leg.symbol),
                                  sent(ex, leg.symbol, "market", "buy", CID_TOO_BIG, too_big))
        assert not q.duplicate_order(broke.value), broke.value

    on_market(emulator, exchange_id, SYMBOL_OF_TYPE[market_type], scenario)


# ----------------------------------------------------------------- history

def ask(server: EmulatorServer, path: str, query: dict[str, str]) -> tuple[int, Any]:
    """A plain GET of a public endpoint of ``server`` (no proxy)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{server.base_url}{path}?{urllib.parse.urlencode(query)}", timeout=3) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def rows_of(body: Any) -> list[Any]:
    """The rows of a history answer: Binance answers a list, Bybit v5 ``result.list``."""
    return body if isinstance(body, list) else body["result"]["list"]


@pytest.mark.parametrize("module, exchange_id", ID_CASES, ids=map(id_case, ID_CASES))
def test_the_page_limits_are_served_whole_by_the_history_endpoints(emulator, module, exchange_id):
    from fundarb.data.history import parse_time

    emulator.set_time(HISTORY_NOW)
    q = quirks(exchange_id)
    funding_limit, ohlcv_limit = q.page_limits
    since, until = parse_time(HISTORY_SINCE, "since") // 1_000_000, parse_time(HISTORY_NOW, "until") // 1_000_000
    ex = make_exchange(exchange_id, emulator.base_url, rate_limit=False)  # the data fetcher's client
    ex.timeout = 3000
    ex.load_markets()
    if exchange_id == "hyperliquid":  # its history requests carry no limit: the venue's page is the module's
        perp = SYMBOL_OF_TYPE["swap"]
        rows = ex.fetch_funding_rate_history(perp, since=since, limit=funding_limit + 1, params={"until": until})
        candles = ex.fetch_ohlcv(perp, "1h", since=since, limit=ohlcv_limit + 1, params={"until": until})
        assert (len(rows), len(candles)) == (funding_limit, ohlcv_limit)
        assert {e.status for e in emulator.log.entries} == {200} and all("limit" not in e.query for e in emulator.log.entries)
        return
    if exchange_id in ("coinbase", "kraken"):  # spot venues whose candle requests carry no limit either
        spot, hour = SYMBOL_OF_TYPE["spot"], 3_600_000
        if exchange_id == "coinbase":  # a start/end window: the module's page fits in one, a wider one is refused
            candles = ex.fetch_ohlcv(spot, "1h", since=since, limit=ohlcv_limit + 1,
                                     params={"until": since + (ohlcv_limit - 1) * hour})
            with pytest.raises(ccxt.BadRequest, match="less than 350"):
                ex.fetch_ohlcv(spot, "1h", since=since, params={"until": since + 351 * hour})
        else:  # the venue's most recent 720, whatever since asks: older history is not there
            candles = ex.fetch_ohlcv(spot, "1h", since=since, limit=ohlcv_limit + 1, params={"until": until})
            assert candles[0][0] == until - ohlcv_limit * hour
        assert len(candles) == ohlcv_limit and all("limit" not in e.query for e in emulator.log.entries)
        return
    pages: list[tuple[Any, int]] = []  # (the history call, the module's limit for it)
    if "linear" in q.market_types:
        ex.fetch_funding_rate_history(SYMBOL_OF_TYPE["linear"], since=since, limit=funding_limit, params={"until": until})
        pages.append((emulator.log.entries[-1], funding_limit))
    for market_type in q.market_types:
        ex.fetch_ohlcv(SYMBOL_OF_TYPE[market_type], "1h", since=since, limit=ohlcv_limit, params={"until": until})
        pages.append((emulator.log.entries[-1], ohlcv_limit))
    for entry, limit in pages:
        # ccxt may send less (it caps Binance klines at 1000): the endpoint it asked serves the module's limit whole
        assert entry.status == 200 and 0 < int(entry.query["limit"]) <= limit, entry
        status, body = ask(emulator, entry.path, {**entry.query, "limit": str(limit)})
        assert status == 200 and len(rows_of(body)) == limit, (entry.path, status)
        # and it is the most a page holds: the fetcher's pages are as large as the venue allows
        status, body = ask(emulator, entry.path, {**entry.query, "limit": str(limit + 1)})
        assert status != 200 or len(rows_of(body)) == limit, f"{entry.path} serves more than {limit} rows a page"


@pytest.mark.parametrize("module, exchange_id", ID_CASES, ids=map(id_case, ID_CASES))
def test_the_spot_counterpart_lists_the_spot_market(emulator, module, exchange_id):
    spot_id, spot_symbol = spot_counterpart(exchange_id, SYMBOL_OF_TYPE["linear"])
    assert spot_id == quirks(exchange_id).spot_id
    if not spot_id:  # a perp-only venue (Hyperliquid): the data fetcher fetches the perp's history alone
        return
    ex = make_exchange(spot_id, emulator.base_url, rate_limit=False)
    ex.timeout = 3000
    assert ex.load_markets()[spot_symbol]["spot"]


# ----------------------------------------------------------------- transfers

@pytest.mark.parametrize("from_id, to_id", TRANSFER_CASES, ids=[f"{a}->{b}" for a, b in TRANSFER_CASES])
def test_the_transfer_type_moves_the_margin_coin_between_the_two_wallets(emulator, from_id, to_id):
    q = quirks(from_id)
    kind = q.transfer_type(to_id)
    assert kind is not None and q.transfer_client in SUPPORTED
    # USD-M is margined in USDT, COIN-M in BTC: what the carry moves is the futures wallet's coin
    coin = "BTC" if "binancecoinm" in (from_id, to_id) else "USDT"
    emulator.accounts.fund(from_id, coin, 1000)

    async def run() -> Any:
        async with client(emulator, q.transfer_client) as ex:
            # as the live venue asks: ccxt reads the wallets from the type, not from the account names
            return await ex.transfer(coin, 250, "spot", "future", {"type": kind})

    reply = asyncio.run(run())
    assert reply["id"]
    wallets = emulator.accounts.wallets
    assert (wallets[from_id].get(coin), wallets[to_id].get(coin)) == (750, 250)


def test_binance_has_both_transfer_directions_and_bybit_none():
    assert {(a, b) for a, b in TRANSFER_CASES} == {("binance", "binanceusdm"), ("binanceusdm", "binance"),
                                                   ("binance", "binancecoinm"), ("binancecoinm", "binance")}
    assert quirks("bybit").transfer_type("bybit") is None  # spot and perp share the unified wallet
    assert quirks("binance").transfer_type("bybit") is None
