"""Coinbase Advanced Trade (ccxt ``coinbase``): the spot venue of a carry
(``BTC/USDT``; Coinbase's perpetuals are not traded here).

- ccxt 4.5.90's ``create_order`` drops a ``clientOrderId`` and sends a random
  ``ccxt-<uuid>`` of its own: the client id goes as the venue's own
  ``client_order_id`` param (``order_params``).
- ccxt sizes a market buy in the quote (it wants a price, or the cost); the
  venue also takes a market buy by its base size (``market_market_ioc``
  ``base_size``, as its own SDK's ``market_order_buy`` sends it): a market
  buy's ``order_configuration`` goes whole, by base size, so both legs of a
  pair are sized in BTC.
- A ``client_order_id`` sent again makes no second order: the venue answers
  with the order that id already names (``idempotent_client_id``); there is no
  "duplicate" refusal.
- No endpoint finds an order by client id (get-order's ``client_order_id`` is
  deprecated): ``find_order`` reads the market's orders, newest first (list
  orders, a few pages of 100), and picks the one with that id.
- "No such order" is HTTP 404 ``NOT_FOUND``, "order with this orderID was not
  found", which ccxt 4.5.90 raises as a plain ExchangeError (its map's key for
  it reads "self orderID"): the words are read from the text. Cancelling an
  order that has already ended raises ccxt's BadRequest, without the reason.
- Insufficient funds is an HTTP 200 ``success: false`` answer whose
  ``preview_failure_reason`` ``PREVIEW_INSUFFICIENT_FUND`` ccxt raises as
  InsufficientFunds.
- The balance is read from the Advanced Trade accounts (``fetchBalance``:
  ``v3PrivateGetBrokerageAccounts``, available and on hold), not from ccxt's
  default Coinbase App accounts (one balance, holds included).
- The best bid/ask endpoint is private: a market feed polls the public ticker
  (``best_bid``, ``best_ask``) instead (``quote_poll``), so paper trading needs
  no key.
- ccxt always asks the futures product list too, and has no option to keep
  market loading to spot; the spot markets are what fundarb trades.
- Fees are charged in the quote (USDT), on buys and sells; ccxt reads the
  account's fee tier (``transaction_summary``) only when it has keys.
- Keys: an API key and secret (HMAC headers), or a CDP key (a key name
  ``organizations/.../apiKeys/...`` and an EC private key in PEM, ccxt signs a
  JWT), both as ``FUNDARB_COINBASE_API_KEY`` / ``_SECRET``.
- History pages: klines 300 (ccxt's cap; the venue refuses more than 350 a
  request); there is no funding history on a spot venue.
"""

from __future__ import annotations

from typing import Any

from fundarb.venues.base import OrderLeg, VenueQuirks, duplicate_text, unknown_order_text

COINBASE = "coinbase"
IDS = (COINBASE,)

MARKET_TYPES = ("spot",)
# the Advanced Trade accounts (available and hold) rather than the Coinbase App's (one balance)
CCXT_OPTIONS = {"fetchBalance": "v3PrivateGetBrokerageAccounts"}
PAGE_LIMITS = (0, 300)  # (funding: none on a spot venue, ohlcv)
LIST_ORDERS = "v3PrivateGetBrokerageOrdersHistoricalBatch"
LOOKUP_PAGE, LOOKUP_PAGES = 100, 5
ORDER_UNKNOWN_TEXT = "order with this orderid was not found"
QUOTE_POLL = "fetch_ticker"  # the public ticker carries best_bid / best_ask; best_bid_ask is private


def order_params(exchange: Any, symbol: str, order_type: str, side: str, amount: float,
                 client_id: str) -> dict[str, Any]:
    """``client_order_id`` (ccxt drops ``clientOrderId``); a spot market buy by base size."""
    params: dict[str, Any] = {"client_order_id": client_id}
    if order_type == "market" and side == "buy" and exchange.market(symbol).get("spot"):
        # ccxt would size it in the quote: the venue's base-size market buy, sent whole
        params["createMarketBuyOrderRequiresPrice"] = False
        params["order_configuration"] = {"market_market_ioc": {"base_size": exchange.amount_to_precision(symbol, amount)}}
    return params


async def find_order(leg: OrderLeg, client_id: str) -> dict[str, Any] | None:
    """The order with ``client_id`` on ``leg``'s market (open or not), or None."""
    market = leg.market
    request: dict[str, Any] = {"product_ids": market["id"], "limit": LOOKUP_PAGE}
    for _ in range(LOOKUP_PAGES):
        reply = await leg.call(LIST_ORDERS, dict(request))
        for row in (reply or {}).get("orders") or []:
            if row.get("client_order_id") == client_id:
                found: dict[str, Any] = leg.exchange.parse_order(row, market)
                return found
        cursor = (reply or {}).get("cursor")
        if not (reply or {}).get("has_next") or not cursor:
            break
        request["cursor"] = cursor
    return None


def order_unknown(exc: BaseException) -> bool:
    """ccxt's OrderNotFound, or the venue's "order with this orderID was not found" in a plain error."""
    return unknown_order_text(exc) or ORDER_UNKNOWN_TEXT in str(exc).lower()


def duplicate_order(exc: BaseException) -> bool:
    """The venue never refuses a client id as taken (it answers the order): only an error that says so."""
    return duplicate_text(exc)


def transfer_type(from_id: str, to_id: str) -> str | None:
    """None: no wallet of this venue is another venue's."""
    return None


def ccxt_options(exchange_id: str = COINBASE) -> dict[str, Any]:
    return dict(CCXT_OPTIONS)


def quirks_of(exchange_id: str) -> VenueQuirks:
    return VenueQuirks(
        exchange_id=exchange_id, venue="coinbase", find_order=find_order, order_unknown=order_unknown,
        duplicate_order=duplicate_order, market_types=MARKET_TYPES, ccxt_options=ccxt_options(exchange_id),
        page_limits=PAGE_LIMITS, spot_id=COINBASE, order_params=order_params, idempotent_client_id=True,
        quote_poll=QUOTE_POLL)
