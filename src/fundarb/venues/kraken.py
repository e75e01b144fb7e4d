"""Kraken (ccxt ``kraken``): the spot venue of a carry (``BTC/USDT``, Kraken's
XBTUSDT; its futures are another ccxt id, ``krakenfutures``, not traded here).

- A client id travels as ``cl_ord_id`` (what ccxt sends for ``clientOrderId``):
  a UUID or free text of at most 18 characters, unique among OPEN orders only.
  fundarb's client ids (``fa<config hash[:12]>-<seq>``) are free text up to
  sequence 999; a longer one goes as a UUID (``venue_client_id``: the 12 hash
  digits and the sequence as 20 decimal digits), and ``client_id_of`` reads it
  back.
- ccxt's ``fetch_order`` needs the venue's order id (without one it sends
  ``txid=None``): an order is found by its client id through ``OpenOrders``,
  then ``ClosedOrders``, both filtered by ``cl_ord_id``; ccxt parses the row.
- "No such order": ``QueryOrders`` of an id the venue does not know says
  ``EOrder:Invalid order`` (ccxt: InvalidOrder), ``CancelOrder`` of one that is
  not open ``EOrder:Unknown order`` (ccxt's cancel_order: OrderNotFound).
- Every refusal is HTTP 200 with the reason in the ``error`` list
  (``EOrder:Insufficient funds``: ccxt's InsufficientFunds; ``EAPI:Invalid
  key``: AuthenticationError; ``EAPI:Rate limit exceeded`` and
  ``EGeneral:Temporary lockout``: DDoSProtection).
- Fees are charged in the quote (USDT) by default, on buys and sells (order
  flag ``fciq``).
- ccxt loads the spot pairs only (``AssetPairs``), and the asset list first.
- Keys: the API secret is base64, as Kraken issues it (ccxt decodes it to sign).
- History pages: klines 720 (the venue answers at most the 720 most recent
  candles, whatever ``since`` asks: older history is not there); there is no
  funding history on a spot venue.
"""

from __future__ import annotations

import re
from typing import Any

from fundarb.venues.base import OrderLeg, VenueQuirks, duplicate_text, unknown_order_text

KRAKEN = "kraken"
IDS = (KRAKEN,)

MARKET_TYPES = ("spot",)
PAGE_LIMITS = (0, 720)  # (funding: none on a spot venue, ohlcv)
LOOKUP_ENDPOINTS = (("privatePostOpenOrders", "open"), ("privatePostClosedOrders", "closed"))
UNKNOWN_TEXTS = ("eorder:unknown order", "eorder:invalid order")
DUPLICATE_TEXT = "eorder:duplicate order"
FREE_TEXT_MAX = 18
_FUNDARB_ID = re.compile(r"^fa([0-9a-f]{12})-([0-9]{1,20})$")
_ID_UUID = re.compile(r"^([0-9a-f]{8})-([0-9a-f]{4})-([0-9]{4})-([0-9]{4})-([0-9]{12})$")


def venue_client_id(client_id: str) -> str:
    """The ``cl_ord_id`` of a client id: as it is when Kraken takes it as free
    text (at most 18 characters), else (a fundarb id of a long sequence) a
    UUID of its hash digits and its sequence as 20 decimal digits."""
    found = _FUNDARB_ID.match(client_id)
    if len(client_id) <= FREE_TEXT_MAX or found is None:
        return client_id
    digits = found.group(1) + f"{int(found.group(2)):020d}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def client_id_of(venue_id: str) -> str:
    """The client id a ``cl_ord_id`` stands for (``venue_client_id`` read back)."""
    found = _ID_UUID.match(venue_id)
    if found is None:
        return venue_id
    digits = "".join(found.groups())
    return f"fa{digits[:12]}-{int(digits[12:])}"


def order_params(exchange: Any, symbol: str, order_type: str, side: str, amount: float,
                 client_id: str) -> dict[str, Any]:
    """ccxt's ``clientOrderId`` (sent as ``cl_ord_id``), in a form Kraken takes."""
    return {"clientOrderId": venue_client_id(client_id)}


async def find_order(leg: OrderLeg, client_id: str) -> dict[str, Any] | None:
    """The order with ``client_id`` on ``leg``'s market (open, then closed), or None."""
    venue_id = venue_client_id(client_id)
    for endpoint, key in LOOKUP_ENDPOINTS:
        reply = await leg.call(endpoint, {"cl_ord_id": venue_id})
        rows = ((reply or {}).get("result") or {}).get(key) or {}
        for txid, row in rows.items():
            if row.get("cl_ord_id") == venue_id:
                found: dict[str, Any] = leg.exchange.parse_order({**row, "id": txid}, leg.market)
                return found
    return None


def order_unknown(exc: BaseException) -> bool:
    """ccxt's OrderNotFound, or the venue's words for an order it does not have."""
    text = str(exc).lower()
    return unknown_order_text(exc) or any(t in text for t in UNKNOWN_TEXTS)


def duplicate_order(exc: BaseException) -> bool:
    """The venue refused the client id as taken by an open order."""
    return duplicate_text(exc) or DUPLICATE_TEXT in str(exc).lower()


def transfer_type(from_id: str, to_id: str) -> str | None:
    """None: no wallet of this venue is another venue's."""
    return None


def ccxt_options(exchange_id: str = KRAKEN) -> dict[str, Any]:
    return {}


def quirks_of(exchange_id: str) -> VenueQuirks:
    return VenueQuirks(
        exchange_id=exchange_id, venue="kraken", find_order=find_order, order_unknown=order_unknown,
        duplicate_order=duplicate_order, market_types=MARKET_TYPES, ccxt_options=ccxt_options(exchange_id),
        page_limits=PAGE_LIMITS, spot_id=KRAKEN, order_params=order_params)
