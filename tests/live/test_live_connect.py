"""Building the live clients: sandbox, emulator pointing, refusals. Offline:
clients are built and closed, never asked anything."""

from __future__ import annotations

import asyncio

import pytest

from fundarb.live.ccxt.client import Target, VenueSetupError, connect
from fundarb.live.ccxt.credentials import Credentials


def built(exchange_id: str, target: Target, creds: Credentials | None = None):
    ex = connect(exchange_id, creds or Credentials(exchange_id, "key", "secret"), target)
    asyncio.run(ex.close())
    return ex


def rest_urls(ex) -> list[str]:
    return [u for u in ex.urls["api"].values() if isinstance(u, str)]


@pytest.mark.parametrize("exchange_id", ["binance", "binanceusdm", "bybit"])
def test_sandbox_switches_every_rest_url_to_the_testnet(exchange_id):
    real, test = built(exchange_id, Target()), built(exchange_id, Target(sandbox=True))
    assert rest_urls(real) != rest_urls(test)
    assert all("test" in u for u in rest_urls(test)), rest_urls(test)
    assert not test.enableRateLimit  # our queue does the limiting


def test_a_venue_without_a_testnet_is_refused_with_its_name():
    with pytest.raises(VenueSetupError, match="kraken has no sandbox"):
        built("kraken", Target(sandbox=True))


def test_api_url_points_rest_and_websockets_at_loopback_keeping_paths():
    ex = built("binanceusdm", Target(api_url="http://127.0.0.1:8765"))
    assert all(u.startswith("http://127.0.0.1:8765/") for u in rest_urls(ex) if u.startswith("http"))
    ws = ex.urls["api"]["ws"]
    flat = [v for v in (ws.values() if isinstance(ws, dict) else [ws]) if isinstance(v, str)]
    assert flat and all(u.startswith("ws://127.0.0.1:8765/") for u in flat)


def test_refusals_name_the_problem():
    with pytest.raises(VenueSetupError, match="not a ccxt exchange id"):
        built("notanexchange", Target())
    with pytest.raises(VenueSetupError, match="exclude each other"):
        Target(api_url="http://127.0.0.1:1", sandbox=True)
    with pytest.raises(VenueSetupError, match="'okx' is not one of them"):
        built("okx", Target(api_url="http://127.0.0.1:1"))


def test_keys_reach_the_client_and_public_use_needs_none():
    keyed = built("binance", Target(), Credentials("binance", "the-key", "the-secret"))
    assert (keyed.apiKey, keyed.secret) == ("the-key", "the-secret")
    public = built("binance", Target(), Credentials("binance"))
    assert not public.apiKey and not public.secret
