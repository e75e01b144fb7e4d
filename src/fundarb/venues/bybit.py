"""Bybit v5 (ccxt ``bybit``): spot, linear perpetuals and inverse perpetuals
(BTCUSD, 1 USD a contract, settled in BTC) on one unified account.

- ccxt's ``fetch_order`` needs the venue's order id (without one it sends
  ``orderId=None``) and Bybit has no ``fetch_orders``: an order is found by
  its client id (``orderLinkId``) through ``/v5/order/realtime`` (open and
  recent orders), then ``/v5/order/history``; ccxt parses the row.
- ccxt refuses ``fetch_order`` by venue id unless told the caller knows it
  reaches only the account's last 500 orders (``acknowledged``).
- A client id already taken: retCode 110072 "OrderLinkedID is duplicate".
- ccxt probes the account type (unified or not) through endpoints a pointed
  host (the emulator) does not serve: a pointed client is told the answer.
- Spot and perp share one unified wallet: there is nothing to transfer between them.
- The UNIFIED account states its own margin (``/v5/account/wallet-balance``)
  and BTC's tiered collateral value ratio (``/v5/spot-margin-trade/collateral``):
  a unified carry reads them (``unified_figures``) rather than computing them.
- A funding payment is an execution of execType Funding whose ``execFee`` is
  a fee (positive: paid, negative: received), and ccxt's
  ``fetch_funding_history`` passes it through as the amount: fundarb turns
  its sign (``funding_sign``).
- History pages: funding 200 rows, klines 1000.
"""

from __future__ import annotations

import math
from typing import Any

from fundarb.core.liquidation import BYBIT_LINEAR
from fundarb.venues.base import OrderLeg, UnifiedFigures, VenueQuirks, duplicate_text, unknown_order_text

BYBIT = "bybit"
IDS = (BYBIT,)

LOOKUP_ENDPOINTS = ("privateGetV5OrderRealtime", "privateGetV5OrderHistory")
FETCH_ORDER_PARAMS = {"acknowledged": True}
DUPLICATE_CODE = "110072"
MARKET_TYPES = ("spot", "linear", "inverse")
# the account-type probe is skipped: a unified trading account
POINTED_OPTIONS = {"enableUnifiedAccount": True, "enableUnifiedMargin": False}
# Bybit's alternative domain, for REST and the streams alike
BACKUP_HOSTS = {"api.bybit.com": ("api.bytick.com",), "stream.bybit.com": ("stream.bytick.com",)}
PAGE_LIMITS = (200, 1000)  # (funding, ohlcv)
FUNDING_SIGN = -1.0  # ccxt's funding amount is Bybit's execFee: positive when paid


def category(market: dict[str, Any]) -> str:
    """The v5 ``category`` of a ccxt market."""
    if market["spot"]:
        return "spot"
    return "inverse" if market.get("inverse") else "linear"


async def find_order(leg: OrderLeg, client_id: str) -> dict[str, Any] | None:
    """The order with ``client_id`` on ``leg``'s market (open or recent), or None."""
    market = leg.market
    request = {"category": category(market), "symbol": market["id"], "orderLinkId": client_id}
    for endpoint in LOOKUP_ENDPOINTS:
        reply = await leg.call(endpoint, request)
        rows = ((reply or {}).get("result") or {}).get("list") or []
        if rows:
            found: dict[str, Any] = leg.exchange.parse_order(rows[0], market)
            return found
    return None


async def unified_figures(leg: OrderLeg) -> UnifiedFigures:
    """The UNIFIED account's margin figures (``/v5/account/wallet-balance``:
    totalEquity, totalMarginBalance, totalInitialMargin,
    totalMaintenanceMargin, totalAvailableBalance, accountMMRate) and BTC's
    tiered collateral value ratio (``/v5/spot-margin-trade/collateral``), as
    Bybit states them."""
    wallet = await leg.call("privateGetV5AccountWalletBalance", {"accountType": "UNIFIED"})
    rows = ((wallet or {}).get("result") or {}).get("list") or []
    if not rows:
        raise ValueError("bybit: /v5/account/wallet-balance listed no UNIFIED account")
    row = rows[0]
    ratio = await leg.call("publicGetV5SpotMarginTradeCollateral", {"currency": "BTC"})
    table = next((c for c in ((ratio or {}).get("result") or {}).get("list") or [] if c.get("currency") == "BTC"), None)
    if table is None:
        raise ValueError("bybit: /v5/spot-margin-trade/collateral gave no BTC collateral ratio")
    tiers = tuple((float(t["maxQty"]) if t.get("maxQty") else math.inf, float(t["collateralRatio"]))
                  for t in sorted(table["collateralRatioList"], key=lambda t: float(t.get("minQty") or 0)))

    def number(key: str) -> float:
        text = row.get(key)
        return float(text) if text not in (None, "") else math.nan

    return UnifiedFigures(number("totalEquity"), number("totalMarginBalance"), number("totalInitialMargin"),
                          number("totalMaintenanceMargin"), number("totalAvailableBalance"), number("accountMMRate"),
                          tiers)


def order_unknown(exc: BaseException) -> bool:
    """ccxt's OrderNotFound, or an exchange error that says the order does not exist."""
    return unknown_order_text(exc)


def duplicate_order(exc: BaseException) -> bool:
    """The venue refused the client id as already taken."""
    return duplicate_text(exc) or DUPLICATE_CODE in str(exc)


def transfer_type(from_id: str, to_id: str) -> str | None:
    """None: spot and perp share the unified wallet."""
    return None


def ccxt_options(exchange_id: str = BYBIT) -> dict[str, Any]:
    return {"fetchMarkets": {"types": list(MARKET_TYPES)}}


def quirks_of(exchange_id: str) -> VenueQuirks:
    return VenueQuirks(
        exchange_id=exchange_id, venue="bybit", find_order=find_order, order_unknown=order_unknown,
        duplicate_order=duplicate_order, fetch_order_params=FETCH_ORDER_PARAMS, market_types=MARKET_TYPES,
        ccxt_options=ccxt_options(exchange_id), pointed_options=POINTED_OPTIONS, page_limits=PAGE_LIMITS,
        spot_id=BYBIT, liquidation_style=BYBIT_LINEAR, funding_sign=FUNDING_SIGN, unified=unified_figures,
        backup_hosts=BACKUP_HOSTS)
