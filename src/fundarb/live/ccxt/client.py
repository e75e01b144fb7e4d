"""Build the async ccxt clients of the configured venues, and the market rules
(lot size, precision, minimum notional) every order is built against.

One client per ccxt exchange id: a config that trades spot and perp on the
same venue (Bybit) shares one client and so one rate limit. Clients are
ccxt.pro (websockets plus the async REST of ccxt.async_support) where ccxt
has a pro class, else plain ccxt.async_support (REST polling only).

``api_url`` points every REST and websocket URL at another server keeping
the paths (the loopback emulator: ``fundarb emulator``); ``sandbox`` switches
to the venue's testnet through ccxt's own ``set_sandbox_mode``. ccxt's own
rate limiter is off: requests go through ``RequestQueue`` instead.
``check_api_url`` is the rule for where signed requests may go.

ccxt writes the request's URL (its signed query string) and the venue's
answer into its error messages, and a 5xx body may echo the request's
headers: every error a client's REST call raises is scrubbed in place
(``fundarb.support.scrub``: the query string, credential headers and the client's
own keys masked) before anyone can print it; its type is kept.
"""

from __future__ import annotations

import ipaddress
import logging
import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any
from urllib.parse import urlsplit

import attrs

from fundarb.core.errors import FundarbError
from fundarb.live.ccxt.credentials import Credentials
from fundarb.support.scrub import scrub_exception, scrub_logger


class VenueSetupError(FundarbError, ValueError):
    """A venue that cannot be reached as configured; the message names it."""


class VenueUnreachable(VenueSetupError):
    """The venue did not answer (network, 5xx, timeouts): worth trying again later."""


# The venue refuses a signed request older than its receive window (Binance and
# Bybit ``recvWindow``, 5000 ms by default; at most 60000 ms). Past the window
# since a placement was sent, that placement can no longer land, so a re-send
# is safe. The window sent is this, or the request timeout plus a margin if
# that is longer: the request timeout always stays below it.
RECV_WINDOW_MS = 5_000
MAX_RECV_WINDOW_MS = 60_000
RECV_WINDOW_MARGIN_MS = 1_000


def recv_window_ms(timeout_ms: int) -> int:
    """The receive window to send with requests that time out after ``timeout_ms``."""
    return max(RECV_WINDOW_MS, int(timeout_ms) + RECV_WINDOW_MARGIN_MS)


@attrs.frozen
class Target:
    """Where the venues are: real (default), their sandbox, or a server that
    speaks their API at ``api_url`` (the emulator)."""

    api_url: str | None = None
    sandbox: bool = False
    timeout_ms: int = 10_000

    def __attrs_post_init__(self) -> None:
        if recv_window_ms(self.timeout_ms) > MAX_RECV_WINDOW_MS:
            raise VenueSetupError(f"a request timeout of {self.timeout_ms} ms leaves no receive window above it: "
                                  f"the venues accept at most {MAX_RECV_WINDOW_MS} ms; use "
                                  f"{MAX_RECV_WINDOW_MS - RECV_WINDOW_MARGIN_MS} ms or less")
        if self.api_url and self.sandbox:
            raise VenueSetupError("--api-url and --sandbox exclude each other: the sandbox is the venue's own testnet")


API_URL_SCHEMES = ("http", "https", "ws", "wss")


def _loopback(host: str) -> bool:
    host = host.rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def check_api_url(url: str, confirmed: bool) -> None:
    """Refuse (VenueSetupError, one line) an ``--api-url`` that would send
    signed requests where they should not go. Allowed: a loopback host
    (127.0.0.0/8, localhost, ::1) over http, https, ws or wss; another host
    only over https and only when ``confirmed`` (the operator said it is a
    server of theirs). Never allowed: a user or password in the URL (it would
    be sent and printed), a missing host. The message never repeats the URL."""
    try:
        parts = urlsplit(url.strip())
        host, _ = parts.hostname, parts.port  # .port raises on a port that is not a number
    except ValueError:
        raise VenueSetupError("--api-url is not a URL (scheme://host[:port][/path])") from None
    scheme = parts.scheme.lower()
    if scheme not in API_URL_SCHEMES:
        raise VenueSetupError("--api-url must be an http, https, ws or wss URL")
    if "@" in parts.netloc:
        raise VenueSetupError("--api-url must not carry a user or password: credentials come from "
                              "FUNDARB_<EXCHANGE>_API_KEY / _SECRET only")
    if not host:
        raise VenueSetupError("--api-url has no host")
    if _loopback(host):
        return
    if scheme != "https":
        raise VenueSetupError(f"--api-url: signed requests would go to {host}, not this machine, over plain "
                              f"{scheme}: a remote server must be reached over https")
    if not confirmed:
        raise VenueSetupError(f"--api-url: signed requests would go to {host}, not this machine; pass "
                              "--i-know-remote-api-url if it is a server you run and trust with the keys")


def connect(exchange_id: str, creds: Credentials, target: Target) -> Any:
    """An async ccxt client for ``exchange_id`` (not yet loaded)."""
    import ccxt.async_support as ccxt_async
    import ccxt.pro as ccxt_pro

    cls = getattr(ccxt_pro, exchange_id, None) or getattr(ccxt_async, exchange_id, None)
    if cls is None or exchange_id not in ccxt_async.exchanges:
        raise VenueSetupError(f"unknown exchange {exchange_id!r}: not a ccxt exchange id")
    config: dict[str, Any] = {"enableRateLimit": False, "timeout": target.timeout_ms,
                              "options": {"recvWindow": recv_window_ms(target.timeout_ms)}, **creds.ccxt_fields()}
    if not creds.present:
        config.pop("apiKey"), config.pop("secret")
    secrets = (creds.api_key, creds.secret, creds.password)
    if target.api_url:
        return scrubbed_errors(_pointed(cls, exchange_id, config, target.api_url), secrets)
    exchange = cls(config)
    if target.sandbox:
        if not exchange.urls.get("test"):  # ccxt knows no testnet URLs for it
            raise VenueSetupError(f"{exchange_id} has no sandbox (testnet) in ccxt; trade it without --sandbox "
                                  "or use the emulator (--api-url)")
        exchange.set_sandbox_mode(True)
    return scrubbed_errors(exchange, secrets)


def scrubbed_errors(exchange: Any, secrets: tuple[str, ...] = ()) -> Any:
    """``exchange`` whose REST calls raise their errors scrubbed in place (same
    object, same type: callers still catch ``ccxt.NetworkError`` and read the
    venue's error code), with ``secrets`` masked besides the configured ones;
    its logger scrubbed too."""
    secrets = tuple(s for s in secrets if s)
    fetch = exchange.fetch

    async def fetch_scrubbed(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        try:
            return await fetch(url, method, headers, body)
        except Exception as exc:
            scrub_exception(exc, secrets)
            raise

    exchange.fetch = fetch_scrubbed
    log = getattr(exchange, "logger", None)
    if isinstance(log, logging.Logger):
        scrub_logger(log, secrets)  # ccxt logs each request and answer (the key among the headers) at debug
    return exchange


def _pointed(cls: Any, exchange_id: str, config: dict[str, Any], api_url: str) -> Any:
    from fundarb.support.ccxt_urls import point_ccxt_pro
    from fundarb.venues import SUPPORTED, ccxt_config, quirks

    if exchange_id not in SUPPORTED:
        raise VenueSetupError(f"--api-url serves {', '.join(SUPPORTED)}; {exchange_id!r} is not one of them")
    # e.g. skip a probe of the account type a pointed host does not serve
    config["options"] = {**config.get("options", {}), **quirks(exchange_id).pointed_options}
    return point_ccxt_pro(cls(ccxt_config(exchange_id, **config)), api_url)


def _step(value: Any) -> Decimal | None:
    if value is None:
        return None
    step = Decimal(str(value))
    return step if step > 0 else None


@attrs.frozen
class MarketRules:
    """What the venue accepts for one market, in the leg's unit and quote currency.

    The leg's unit is BTC for spot and linear perps, and the contract for an
    inverse perp (``face`` USD each: its orders, fills and journal rows count
    contracts, whose BTC worth depends on the price). ``amount_step`` and
    ``min_amount`` are in the venue's amount unit (contracts of
    ``contract_size`` BTC for linear perps, BTC for spot, contracts for an
    inverse perp, where ``contract_size`` is 1); the methods take and return
    the leg's unit.
    """

    account: str
    symbol: str
    amount_step: Decimal | None
    min_amount: float
    max_market_amount: float
    min_cost: float
    contract_size: float = 1.0
    face: float = 0.0  # USD per contract of an inverse perp; 0: the leg trades BTC

    @classmethod
    def of(cls, exchange: Any, account: str, symbol: str) -> MarketRules:
        if symbol not in exchange.markets:
            raise VenueSetupError(f"{account}: {exchange.id} has no market {symbol!r}")
        m = exchange.market(symbol)
        limits = m.get("limits") or {}
        if exchange.precisionMode != 4:  # TICK_SIZE: precision is a step; DECIMAL_PLACES gives digits
            digits = m["precision"].get("amount")
            step = _step(10 ** -int(digits)) if digits is not None else None
        else:
            step = _step(m["precision"].get("amount"))
        market_max = (limits.get("market") or {}).get("max") or (limits.get("amount") or {}).get("max")
        size = float(m.get("contractSize") or 1.0)
        inverse = bool(m.get("inverse"))
        return cls(account, symbol, step, float((limits.get("amount") or {}).get("min") or 0.0),
                   float(market_max or math.inf), float((limits.get("cost") or {}).get("min") or 0.0),
                   1.0 if inverse else size, size if inverse else 0.0)

    @property
    def unit(self) -> str:
        return "contracts" if self.face else "BTC"

    @property
    def step_btc(self) -> Decimal:
        """The lot in the leg's unit (BTC; whole contracts of an inverse perp)."""
        return (self.amount_step or Decimal(0)) * Decimal(str(self.contract_size))

    def floor_btc(self, qty: float) -> float:
        """``qty`` (the leg's unit) rounded down to what the venue accepts."""
        step = self.step_btc
        if step <= 0:
            return qty
        return float((Decimal(str(qty)) / step).to_integral_value(ROUND_FLOOR) * step)

    def ceil_btc(self, qty: float) -> float:
        """``qty`` (the leg's unit) rounded up to the lot: the least the venue
        accepts that is not short of it (a float's last digit is not a lot)."""
        step = self.step_btc
        if step <= 0 or qty <= 0:
            return max(qty, 0.0)
        lots = (Decimal(str(qty)) / step).quantize(Decimal("1e-9")).to_integral_value(ROUND_CEILING)
        return float(lots * step)

    def amount(self, qty_btc: float) -> float:
        """The leg's unit -> the venue's amount unit (contracts for perps), in decimal:
        0.29 BTC at 0.01 BTC a contract is 29 contracts, not 28.999999999999996
        (which ccxt's precision rounding would send as 28.99)."""
        return float(Decimal(str(qty_btc)) / Decimal(str(self.contract_size)))

    def notional(self, qty: float, price: float) -> float:
        """Quote value of ``qty`` (the leg's unit) at ``price``: an inverse contract is worth its face."""
        return qty * self.face if self.face else qty * price

    def problems(self, qty_btc: float, price: float) -> list[str]:
        """Why the venue would refuse a market order of ``qty_btc`` (the leg's unit) at about ``price``."""
        out, unit = [], self.unit
        if self.floor_btc(qty_btc) != qty_btc:
            out.append(f"{self.account}: {qty_btc:g} {unit} is not a multiple of the lot size {self.step_btc:g}")
        amount = self.amount(qty_btc)
        if amount < self.min_amount:
            out.append(f"{self.account}: {qty_btc:g} {unit} is under the minimum order {self.min_amount * self.contract_size:g} {unit}")
        if amount > self.max_market_amount:
            out.append(f"{self.account}: {qty_btc:g} {unit} is over the largest market order {self.max_market_amount * self.contract_size:g} {unit}")
        if self.notional(qty_btc, price) < self.min_cost:
            out.append(f"{self.account}: {self.notional(qty_btc, price):,.2f} USDT is under the minimum notional {self.min_cost:,.2f} USDT")
        return out


def common_lot(a: MarketRules, b: MarketRules, qty: float) -> float:
    """The largest quantity <= ``qty`` that both markets accept as a lot (the
    legs must be equal for the pair to be delta neutral): a multiple of the
    least common multiple of the two lot steps."""
    steps = [s for s in (a.step_btc, b.step_btc) if s > 0]
    if not steps:
        return qty
    places = max(-int(s.normalize().as_tuple().exponent) for s in steps)  # a lot step is finite: an int exponent
    scale = Decimal(10) ** max(places, 0)
    step = Decimal(math.lcm(*(int(s * scale) for s in steps))) / scale
    return float((Decimal(str(qty)) / step).to_integral_value(ROUND_FLOOR) * step)
