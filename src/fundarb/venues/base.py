"""The shape every venue module fills in: ``VenueQuirks``, what fundarb must
know of one ccxt exchange id beyond ccxt's unified API, and ``OrderLeg``, the
duck-typed market on one client the order look-ups are made through.

``plain`` is what fundarb assumes of a venue it has no module for: ccxt's
unified calls as they are, nothing more.

ccxt is imported where an error is looked at, not at import: the data
fetcher and the command line import this package without paying for ccxt.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import attrs

from fundarb.core.errors import FundarbError


class UnknownVenue(FundarbError, ValueError):
    """An exchange id fundarb has no venue module for; the message names the ones it has."""


class OrderLeg(Protocol):
    """One market on one ccxt client: ``call`` runs the client's method named
    ``method`` (through the caller's request queue, if it has one)."""

    @property
    def exchange(self) -> Any: ...

    @property
    def symbol(self) -> str: ...

    @property
    def market(self) -> dict[str, Any]: ...

    async def call(self, method: str, *args: Any) -> Any: ...


FindOrder = Callable[[OrderLeg, str], Awaitable[dict[str, Any] | None]]
ErrorTest = Callable[[BaseException], bool]
# (ccxt client, symbol, order type, side, amount in the venue's unit, client id) -> create_order's params
OrderParams = Callable[[Any, str, str, str, float, str], dict[str, Any]]


def client_id_params(exchange: Any, symbol: str, order_type: str, side: str, amount: float,
                     client_id: str) -> dict[str, Any]:
    """ccxt's unified params of an order: the client id as ``clientOrderId``, the rest as ccxt builds it."""
    return {"clientOrderId": client_id}


@attrs.frozen
class UnifiedFigures:
    """A unified account's margin as the venue states it, in USD: its equity,
    the margin balance (wallet at the collateral value, plus unrealised PnL),
    the initial and maintenance margin of its positions and orders, what is
    available for new ones, its maintenance-margin rate (liquidation at 1),
    and the tiered collateral value ratio of BTC ((up to BTC, ratio) pairs)."""

    equity: float
    margin_balance: float
    initial: float
    maintenance: float
    available: float
    mm_rate: float
    btc_tiers: tuple[tuple[float, float], ...]


ReadUnified = Callable[[OrderLeg], Awaitable[UnifiedFigures]]


@attrs.frozen(kw_only=True)
class VenueQuirks:
    """What fundarb must know of one ccxt exchange id beyond ccxt's unified API.

    ``find_order(leg, client_id)``: the venue's order with that client id in
    ccxt's shape, or None when the venue has none (other errors raise).
    ``order_unknown(exc)``: the error means "no such order". ``duplicate_order(exc)``:
    the error says the client id is already taken (the order is there: look it up).
    ``ccxt_options``: constructor options that keep market loading to the
    markets fundarb trades (``market_types``) and off endpoints it does not need;
    ``pointed_options``: further options for a client pointed at another host.
    ``page_limits``: rows per page of the funding and OHLCV history endpoints.
    ``spot_id``: the ccxt id of the spot markets of this id's venue.
    ``transfer_types``: universal transfer type by destination ccxt id, from
    this id's wallet (made through the ``transfer_client`` id's client).
    ``liquidation_style``: the liquidation formula its linear USDT perpetuals
    follow (``fundarb.core.liquidation``), None when fundarb does not model it.
    ``private_urls``: the names in ccxt's URL table of the hosts its private
    (order) requests go to, perp first when they differ.
    ``funding_sign``: what turns the amount of ccxt's ``fetch_funding_history``
    into the payment received (positive) or paid (negative).
    ``unified``: reads the venue's unified account figures and BTC collateral
    tiers (None: the venue has no unified account fundarb can read).
    ``order_params``: the params of ``create_order`` for an order under a
    client id (default: ccxt's unified ``clientOrderId``; a venue whose ccxt
    drops it, or sizes an order in another unit, says how to send it).
    ``idempotent_client_id``: a client id sent again is answered with the
    order it already names (no new order, no refusal), as Coinbase does.
    ``quote_poll``: the ccxt method a market feed polls the top of book with
    when it polls ('': ``fetch_bids_asks`` where ccxt has it natively, else
    ``fetch_ticker``), for a venue whose native one needs a key.
    ``backup_hosts``: by a host (``host[:port]``) of ccxt's URL table, REST or
    websocket, the venue's documented alternatives to it, in the order to try
    them (``fundarb.support.failover``); a host not listed has none.
    """

    exchange_id: str
    venue: str  # the venue module's name
    find_order: FindOrder
    order_unknown: ErrorTest
    duplicate_order: ErrorTest
    fetch_order_params: Mapping[str, Any] = attrs.field(factory=dict)
    market_types: tuple[str, ...] = ()
    ccxt_options: Mapping[str, Any] = attrs.field(factory=dict)
    pointed_options: Mapping[str, Any] = attrs.field(factory=dict)
    page_limits: tuple[int, int] = (100, 500)  # (funding, ohlcv)
    spot_id: str = ""
    transfer_types: Mapping[str, str] = attrs.field(factory=dict)
    transfer_client: str | None = None
    liquidation_style: str | None = None
    private_urls: tuple[str, ...] = ("private",)
    funding_sign: float = 1.0
    unified: ReadUnified | None = None
    order_params: OrderParams = client_id_params
    idempotent_client_id: bool = False
    quote_poll: str = ""
    backup_hosts: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)

    def fetch_params(self) -> dict[str, Any]:
        """Params of ``fetch_order`` by venue order id (a fresh dict)."""
        return dict(self.fetch_order_params)

    def transfer_type(self, to_id: str) -> str | None:
        """The venue's transfer type from this id's wallet to ``to_id``'s, or None when it has none."""
        return self.transfer_types.get(to_id)


def unknown_order_text(exc: BaseException) -> bool:
    """ccxt's OrderNotFound, or an exchange error whose text says the order does not exist."""
    import ccxt

    return isinstance(exc, ccxt.OrderNotFound) or (isinstance(exc, ccxt.ExchangeError)
                                                    and "does not exist" in str(exc).lower())


def duplicate_text(exc: BaseException) -> bool:
    """An error whose text calls the order a duplicate."""
    return "duplicate" in str(exc).lower()


async def fetch_by_client_id(leg: OrderLeg, client_id: str, key: str, unknown: ErrorTest) -> dict[str, Any] | None:
    """ccxt's ``fetch_order`` without a venue id, the client id under ``key``;
    None when ``unknown`` says the error means the venue has no such order."""
    import ccxt

    try:
        found: dict[str, Any] = await leg.call("fetch_order", None, leg.symbol, {key: client_id})
        return found
    except ccxt.ExchangeError as exc:
        if unknown(exc):
            return None
        raise


async def _plain_find_order(leg: OrderLeg, client_id: str) -> dict[str, Any] | None:
    return await fetch_by_client_id(leg, client_id, "clientOrderId", unknown_order_text)


def plain(exchange_id: str) -> VenueQuirks:
    """A venue fundarb has no module for: ccxt's unified calls as they are."""
    return VenueQuirks(exchange_id=exchange_id, venue="", find_order=_plain_find_order,
                       order_unknown=unknown_order_text, duplicate_order=duplicate_text, spot_id=exchange_id)
