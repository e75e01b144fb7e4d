"""The scrubber every error text goes through before it is printed, logged,
stored or sent (``fundarb.support.scrub``), the live clients that raise their errors
scrubbed, and the rule for where ``--api-url`` may send signed requests."""

from __future__ import annotations

import asyncio
import logging

import ccxt
import pytest

from fundarb.live.ccxt.client import Target, VenueSetupError, check_api_url, connect, scrubbed_errors
from fundarb.live.ccxt.credentials import Credentials
from fundarb.support.scrub import MASK, describe, scrub, scrub_exception

KEY = "PLANTEDKEY4f1c9a7e3b5d"
SECRET = "PLANTEDSECRET0a2c4e6f8b"


@pytest.fixture(autouse=True)
def _no_configured_secrets(monkeypatch, tmp_path):
    """Only what a test plants: no FUNDARB_* of the machine, no .env."""
    import os

    for name in [n for n in os.environ if n.startswith("FUNDARB_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


# ------------------------------------------------------------------ URLs and credential pairs

@pytest.mark.parametrize("text, expected", [
    ("binance GET https://api.binance.com/api/v3/account?timestamp=1700000000000&recvWindow=5000&signature=9f86d0 "
     "500 Internal Server Error",
     "binance GET https://api.binance.com/api/v3/account?*** 500 Internal Server Error"),
    ("bybit POST http://127.0.0.1:8765/v5/order/create?api_key=abc&sign=def timeout",
     "bybit POST http://127.0.0.1:8765/v5/order/create?*** timeout"),
    ("ws://127.0.0.1:1/ws/stream?listenKey=abc#frag and wss://x.example.com/ws", "ws://127.0.0.1:1/ws/stream?***#frag and wss://x.example.com/ws"),
    ("mailto://alerts:hunter2@smtp.example.com:587?to=desk@example.com failed",
     "mailto://***@smtp.example.com:587?*** failed"),
    ("see https://docs.example.com/errors for help", "see https://docs.example.com/errors for help"),
])
def test_a_url_keeps_scheme_host_and_path_and_loses_query_and_userinfo(text, expected):
    assert scrub(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("signature=abc&timestamp=17&apiKey=k1 api_key=k2 sign=k3",
     "signature=***&timestamp=17&apiKey=*** api_key=*** sign=***"),
    ("X-MBX-APIKEY: zzzzzz\nAuthorization: Bearer abc.def.ghi\nContent-Type: text/plain",
     "X-MBX-APIKEY: ***\nAuthorization: ***\nContent-Type: text/plain"),
    ("{'X-BAPI-API-KEY': 'k', 'X-BAPI-SIGN': 's', 'Accept': 'x'}", "{'X-BAPI-API-KEY': '***', 'X-BAPI-SIGN': '***', 'Accept': 'x'}"),
    ('{"apiKey": "k", "secret": "s", "OK-ACCESS-PASSPHRASE": "p", "code": -2015, "msg": "Invalid API-key"}',
     '{"apiKey": "***", "secret": "***", "OK-ACCESS-PASSPHRASE": "***", "code": -2015, "msg": "Invalid API-key"}'),
    ("bot 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw refused", f"bot {MASK} refused"),
])
def test_credential_pairs_are_masked_in_queries_headers_reprs_and_json(text, expected):
    assert scrub(text) == expected


@pytest.mark.parametrize("text", [
    "the venue refused the API key: -2015 Invalid API-key, IP, or permissions for action.",
    "design: fine; signal: 0.5; tokens: 3 of 20; Credentials(binance, api_key=***, secret=***)",
    "binance:spot: 0.01 BTC at 45,757.98 (ts 1704875400000, client id fa42e4dd2a4dd5-1)",
    "",
])
def test_text_without_credentials_is_left_as_it_is(text):
    assert scrub(text) == text


# ------------------------------------------------------------------ configured secret values

def test_keys_and_secrets_of_the_environment_and_dotenv_are_masked_wherever_they_appear(monkeypatch, tmp_path):
    monkeypatch.setenv("FUNDARB_BINANCE_API_KEY", KEY)
    monkeypatch.setenv("FUNDARB_OKX_PASSWORD", "PLANTEDpass")
    (tmp_path / ".env").write_text(f"FUNDARB_BINANCE_SECRET={SECRET}\nOTHER=not-a-secret-value\n")
    text = f"500 body: key {KEY}, secret {SECRET} (quoted {SECRET.lower()!r}), pass PLANTEDpass, other not-a-secret-value"
    assert scrub(text) == f"500 body: key ***, secret *** (quoted {SECRET.lower()!r}), pass ***, other not-a-secret-value"
    (tmp_path / ".env").write_text("FUNDARB_BINANCE_SECRET=PLANTEDnewsecret\n")  # a changed .env is read again
    assert scrub("PLANTEDnewsecret and " + SECRET) == "*** and " + SECRET


def test_alert_urls_parts_are_masked_but_not_their_hosts_ports_and_numbers(monkeypatch):
    monkeypatch.setenv("FUNDARB_ALERT_URLS", "tgram://PLANTEDTOKEN/123, "
                       "mailto://alerts:PLANTEDPASS@127.0.0.1:2525?to=desk@example.com "
                       "json://hooks.example.com/PLANTEDHOOK")
    text = ("tgram token PLANTEDTOKEN for chat 123 failed; smtp user alerts pass PLANTEDPASS on 127.0.0.1:2525; "
            "hook hooks.example.com/PLANTEDHOOK, path PLANTEDHOOK")
    assert scrub(text) == ("tgram token *** for chat 123 failed; smtp user *** pass *** on 127.0.0.1:2525; "
                           "hook ***, path ***")


def test_extra_secrets_are_masked_and_short_values_are_not_treated_as_secrets():
    assert scrub(f"k={KEY}! {KEY}", extra_secrets=[KEY]) == "k=***! ***"
    assert scrub("a b abc", extra_secrets=["a", "abc", ""]) == "a b abc"  # under MIN_SECRET_LEN


# ------------------------------------------------------------------ describe and exceptions

def test_describe_is_type_and_scrubbed_text_on_one_bounded_line(monkeypatch):
    monkeypatch.setenv("FUNDARB_BINANCE_API_KEY", KEY)
    exc = ccxt.ExchangeNotAvailable(f"binance GET https://h/api?signature=abc 500\n<html>\n  {KEY}\n</html>")
    assert describe(exc) == "ExchangeNotAvailable: binance GET https://h/api?*** 500 <html> *** </html>"
    assert describe(TimeoutError()) == "TimeoutError"
    long = describe(RuntimeError("x" * 1000), limit=120)
    assert len(long) == 120 and long.startswith("RuntimeError: xxx") and long.endswith("…")


def test_describe_scrubs_before_it_cuts_so_no_half_secret_is_left(monkeypatch):
    monkeypatch.setenv("FUNDARB_BINANCE_API_KEY", KEY)
    for at in range(270, 300):  # the key straddles the cut at every offset
        out = describe(RuntimeError("y" * at + KEY + " tail"), limit=300)
        assert len(out) <= 300 and "PLANTED"[:3] not in out.replace("***", "")


def test_an_exception_is_scrubbed_in_place_keeping_its_type_and_its_chain_clean():
    try:
        try:
            raise OSError(f"connect to https://h/x?apiKey={KEY} failed")
        except OSError as inner:
            raise ccxt.RequestTimeout(f"binance GET https://h/x?apiKey={KEY}") from inner
    except ccxt.RequestTimeout as exc:
        caught = exc
    assert scrub_exception(caught) is caught and type(caught) is ccxt.RequestTimeout
    assert str(caught) == "binance GET https://h/x?***"
    assert KEY not in repr(caught.__cause__) and "https://h/x?***" in str(caught.__cause__)


# ------------------------------------------------------------------ live clients

class FakeExchange:
    logger = logging.getLogger("fundarb.tests.fake_exchange")

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def fetch(self, url, method="GET", headers=None, body=None):
        raise self.error


def test_a_client_raises_its_rest_errors_scrubbed_and_of_the_same_type():
    error = ccxt.ExchangeNotAvailable(f"binance GET https://api.binance.com/api/v3/account?timestamp=1&signature=9f "
                                      f"500 upstream: X-MBX-APIKEY: {KEY}; body {SECRET}")
    ex = scrubbed_errors(FakeExchange(error), (KEY, SECRET))
    with pytest.raises(ccxt.NetworkError) as raised:
        asyncio.run(ex.fetch("https://api.binance.com/api/v3/account?signature=9f"))
    assert raised.value is error
    assert str(error) == "binance GET https://api.binance.com/api/v3/account?*** 500 upstream: X-MBX-APIKEY: ***; body ***"


def test_connect_builds_clients_that_scrub_their_errors():
    for target in (Target(), Target(api_url="http://127.0.0.1:8765")):
        ex = connect("binanceusdm", Credentials("binanceusdm", KEY, SECRET), target)
        try:
            assert ex.fetch.__name__ == "fetch_scrubbed"
        finally:
            asyncio.run(ex.close())


# ------------------------------------------------------------------ where --api-url may send signed requests

@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8765", "http://127.3.4.5:1/api", "https://localhost", "ws://[::1]:9000/ws",
    "wss://LOCALHOST:443", "http://[::ffff:127.0.0.1]:80", "http://emulator.localhost:8765",
])
def test_loopback_api_urls_are_accepted_on_any_scheme(url):
    check_api_url(url, confirmed=False)


def test_a_remote_https_api_url_needs_confirmation():
    with pytest.raises(VenueSetupError, match="signed requests would go to venue.example.com, not this machine; "
                                              "pass --i-know-remote-api-url"):
        check_api_url("https://venue.example.com/api", confirmed=False)
    check_api_url("https://venue.example.com/api", confirmed=True)


@pytest.mark.parametrize("url, says", [
    ("http://10.0.0.5:8765", "over plain http"),
    ("ws://venue.example.com/ws", "over plain ws"),
    ("https://user:PLANTEDPASS@venue.example.com", "must not carry a user or password"),
    ("http://PLANTEDUSER@127.0.0.1:8765", "must not carry a user or password"),
    ("https:///api?k=PLANTED", "has no host"),
    ("127.0.0.1:8765", "must be an http, https, ws or wss URL"),
    ("ftp://127.0.0.1/", "must be an http, https, ws or wss URL"),
    ("http://127.0.0.1:PLANTED/", "is not a URL"),
    ("", "must be an http, https, ws or wss URL"),
])
def test_other_api_urls_are_refused_in_one_line_that_never_repeats_the_url(url, says):
    for confirmed in (False, True):
        with pytest.raises(VenueSetupError) as refused:
            check_api_url(url, confirmed)
        message = str(refused.value)
        assert says in message and "\n" not in message and "PLANTED" not in message
