"""Hyperliquid (ccxt ``hyperliquid``): USDC-margined perpetuals (``BTC/USDC:USDC``)
with HOURLY funding, on a chain: the account is a wallet address, and ccxt
signs every action (EIP-712) with the wallet's private key (its credentials
are ``walletAddress`` and ``privateKey``, no API key and secret).

- Every request is a POST: ``/info`` (market data and, by address, the
  account's state: public, unsigned) or ``/exchange`` (signed actions).
- A client order id (``cloid``) must be 128 bits in hex, ``0x`` and 32 hex
  digits; ccxt sends ``clientOrderId`` as it is given. fundarb's client ids
  (``fa<config hash[:12]>-<seq>``, ``core.orders.client_order_id``) are not
  that, so they travel as ``cloid_of(client_id)`` (``order_params``): the 12
  hash digits and the sequence as 20 hex digits, which ``client_id_of`` turns
  back. An id that cannot be a cloid was never sent: no order. An order is
  found by its cloid through ``orderStatus`` (ccxt's ``fetch_order`` with
  ``clientOrderId``); the venue answers ``{"status": "unknownOid"}`` for an
  order it does not know, which ccxt raises as OrderNotFound, as it does a
  cancel's "Order was never placed, already canceled, or filled."
- A cloid already used: an order status error naming it a duplicate
  (ccxt: a plain ExchangeError; the venue's published error list does not
  word it, so the test is on "duplicate" in the text).
- ccxt loads spot, perp and builder-deployed (HIP-3) markets by default:
  fundarb loads the perps only (``swap``). Before its first trade ccxt
  approves a builder fee for ccxt's builder code (0.01% of every fill by
  default): fundarb turns that fee off (``builderFee``: ccxt then attaches the
  builder at 0%).
- Funding: ``userFunding``'s ``usdc`` is the payment received (positive) or
  paid (negative), and ccxt's ``fetch_funding_history`` passes it through as
  the amount (``funding_sign`` +1). Rates are per hour, settled every hour.
- ccxt's ``set_leverage`` sends ``isCross`` true unless told
  ``marginMode: isolated``.
- Liquidation: ``hyperliquid`` (``fundarb.core.liquidation``): maintenance
  margin half the initial margin at max leverage (BTC 40x: 1.25%).
- History pages: funding history 500 rows, candles 5000 (the venue fixes
  them: its history requests take no limit).
- fundarb trades no spot market there (a perp/perp leg): ``spot_id`` is
  empty, and the data fetcher fetches the perp's history alone.
- Not yet in fundarb's live layer: its credentials are an API key and
  secret (Hyperliquid wants ``walletAddress`` and ``privateKey``), its
  market orders carry no price (ccxt needs one to bound a Hyperliquid market
  order's slippage: without it ccxt raises ArgumentsRequired), and the
  reconciliation knows its own open orders by a ``fa`` client id (the venue
  reports the cloid: ``client_id_of`` turns it back).
- A 429 (rate or IP limit; the venue has no ban answer) is ccxt's
  RateLimitExceeded, a NetworkError but not a DDoSProtection.
"""

from __future__ import annotations

import re
from typing import Any

from fundarb.core.liquidation import HYPERLIQUID
from fundarb.venues.base import OrderLeg, VenueQuirks, duplicate_text, fetch_by_client_id, unknown_order_text

HYPERLIQUID_ID = "hyperliquid"
IDS = (HYPERLIQUID_ID,)

MARKET_TYPES = ("swap",)
PAGE_LIMITS = (500, 5000)  # (funding, ohlcv)
FUNDING_SIGN = 1.0  # userFunding's usdc is already signed as received
CLIENT_ID_KEY = "clientOrderId"
CLOID = re.compile(r"^0x[0-9a-f]{32}$")
_FUNDARB_ID = re.compile(r"^fa([0-9a-f]{12})-([0-9]+)$")
_SEQ_DIGITS = 20  # 80 bits of sequence


def cloid_of(client_id: str) -> str:
    """The venue's cloid of a fundarb client id (``fa<12 hex>-<seq>``): ``0x``,
    the 12 hash digits and the sequence in 20 hex digits; a cloid stays as it
    is. Anything else raises ValueError (the venue would refuse it)."""
    text = client_id.lower()
    if CLOID.match(text):
        return text
    m = _FUNDARB_ID.match(text)
    if m is None or int(m.group(2)) >= 16 ** _SEQ_DIGITS:
        raise ValueError(f"hyperliquid: client id {client_id!r} is neither a cloid (0x and 32 hex digits) "
                         f"nor a fundarb client id (fa<12 hex>-<sequence>)")
    return f"0x{m.group(1)}{int(m.group(2)):0{_SEQ_DIGITS}x}"


def client_id_of(cloid: str | None) -> str | None:
    """The fundarb client id ``cloid_of`` made ``cloid`` from; None for none or another cloid's shape."""
    text = (cloid or "").lower()
    if not CLOID.match(text):
        return None
    return f"fa{text[2:14]}-{int(text[14:], 16)}"


def order_unknown(exc: BaseException) -> bool:
    """ccxt's OrderNotFound (unknownOid, a cancel of a missing order) or a text saying so."""
    return unknown_order_text(exc)


def duplicate_order(exc: BaseException) -> bool:
    """The venue refused the cloid as already used."""
    return duplicate_text(exc)


async def find_order(leg: OrderLeg, client_id: str) -> dict[str, Any] | None:
    """The order with ``client_id`` (a fundarb client id or a cloid) on ``leg``'s
    market, open or not, through ``orderStatus`` by its cloid; None when the
    venue has none (an id that cannot be a cloid was never sent)."""
    try:
        cloid = cloid_of(client_id)
    except ValueError:
        return None
    return await fetch_by_client_id(leg, cloid, CLIENT_ID_KEY, order_unknown)


def order_params(exchange: Any, symbol: str, order_type: str, side: str, amount: float,
                 client_id: str) -> dict[str, Any]:
    """The client id as the venue's cloid (``cloid_of``) under ccxt's ``clientOrderId``."""
    return {CLIENT_ID_KEY: cloid_of(client_id)}


def ccxt_options(exchange_id: str = HYPERLIQUID_ID) -> dict[str, Any]:
    """The perps only; ccxt's builder fee off (it then approves and attaches its builder code at 0%)."""
    return {"fetchMarkets": {"types": list(MARKET_TYPES)}, "builderFee": False}


def quirks_of(exchange_id: str) -> VenueQuirks:
    return VenueQuirks(
        exchange_id=exchange_id, venue="hyperliquid", find_order=find_order, order_unknown=order_unknown,
        duplicate_order=duplicate_order, market_types=MARKET_TYPES, ccxt_options=ccxt_options(exchange_id),
        page_limits=PAGE_LIMITS, spot_id="", liquidation_style=HYPERLIQUID, funding_sign=FUNDING_SIGN,
        order_params=order_params)
