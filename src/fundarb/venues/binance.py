"""Binance: the spot venue (ccxt ``binance``), the USD-M futures venue
(ccxt ``binanceusdm``) and the COIN-M futures venue (ccxt ``binancecoinm``:
inverse perpetuals such as BTCUSD_PERP, 100 USD a contract, margined and
settled in BTC), one account with three wallets.

- An order is found by its client id as ``origClientOrderId``.
- "No such order" is code -2013 ("Order does not exist."). ccxt maps the
  codes to its error classes by the venue's hostname: from another host
  (the emulator, a proxy) every code arrives as a plain ``ExchangeError``, so
  the code is read from the text.
- A client id already taken: spot -2010 "Duplicate order sent.", USD-M -4116
  "ClientOrderId is duplicated." (-4015 on older answers).
- Money moves between the spot wallet and a futures wallet by the universal
  transfer (``/sapi/v1/asset/transfer``, a spot endpoint: the spot client
  makes it): USDT to USD-M (``MAIN_UMFUTURE``), BTC to COIN-M (``MAIN_CMFUTURE``).
- History pages: funding 1000 rows, klines 1000 (spot) and 1500 (USD-M, COIN-M).
"""

from __future__ import annotations

from typing import Any

from fundarb.core.liquidation import BINANCE_COINM, BINANCE_USDM
from fundarb.venues.base import OrderLeg, VenueQuirks, duplicate_text, fetch_by_client_id, unknown_order_text

SPOT, USDM, COINM = "binance", "binanceusdm", "binancecoinm"
IDS = (SPOT, USDM, COINM)

CLIENT_ID_KEY = "origClientOrderId"
ORDER_UNKNOWN_CODE = "-2013"
DUPLICATE_CODES = ("-4015", "-4116")  # spot's -2010 also refuses for want of funds: there the text says "Duplicate"
# universal transfer types between the spot wallet and the USD-M futures wallet, by (from, to)
TRANSFER_TYPES = {(SPOT, USDM): "MAIN_UMFUTURE", (USDM, SPOT): "UMFUTURE_MAIN",
                  (SPOT, COINM): "MAIN_CMFUTURE", (COINM, SPOT): "CMFUTURE_MAIN"}
MARKET_TYPES = {SPOT: ("spot",), USDM: ("linear",), COINM: ("inverse",)}
# neither the currencies (a wallet endpoint) nor the margin pairs are needed to trade
LOAD_OPTIONS = {"fetchCurrencies": False, "fetchMargins": False}
PAGE_LIMITS = {SPOT: (1000, 1000), USDM: (1000, 1500), COINM: (1000, 1500)}  # (funding, ohlcv)
SPOT_OF = {SPOT: SPOT, USDM: SPOT, COINM: SPOT}
LIQUIDATION_STYLES = {USDM: BINANCE_USDM, COINM: BINANCE_COINM}
# ccxt's URL-table names of the hosts each id's private requests go to, perp first
PRIVATE_URLS = {USDM: ("fapiPrivate", "private"), COINM: ("dapiPrivate", "private")}
# the alternatives Binance documents: /api and /sapi on api-gcp and api1..api4, the spot
# streams on port 443 as well as 9443; the futures hosts (fapi, dapi, fstream, dstream) have none
BACKUP_HOSTS = {
    "api.binance.com": ("api-gcp.binance.com", "api1.binance.com", "api2.binance.com", "api3.binance.com",
                        "api4.binance.com"),
    "stream.binance.com:9443": ("stream.binance.com:443",),
}


def order_unknown(exc: BaseException) -> bool:
    """ccxt's OrderNotFound, or -2013 / "does not exist" in a plain exchange error (another host)."""
    import ccxt

    return unknown_order_text(exc) or (isinstance(exc, ccxt.ExchangeError) and ORDER_UNKNOWN_CODE in str(exc))


def duplicate_order(exc: BaseException) -> bool:
    """The venue refused the client id as already taken."""
    return duplicate_text(exc) or any(code in str(exc) for code in DUPLICATE_CODES)


async def find_order(leg: OrderLeg, client_id: str) -> dict[str, Any] | None:
    """The order with ``client_id`` on ``leg``'s market (open or not), or None."""
    return await fetch_by_client_id(leg, client_id, CLIENT_ID_KEY, order_unknown)


def transfer_type(from_id: str, to_id: str) -> str | None:
    """The universal transfer type from ``from_id``'s wallet to ``to_id``'s, or None."""
    return TRANSFER_TYPES.get((from_id, to_id))


def ccxt_options(exchange_id: str) -> dict[str, Any]:
    return {"fetchMarkets": {"types": list(MARKET_TYPES[exchange_id])}, **LOAD_OPTIONS}


def quirks_of(exchange_id: str) -> VenueQuirks:
    return VenueQuirks(
        exchange_id=exchange_id, venue="binance", find_order=find_order, order_unknown=order_unknown,
        duplicate_order=duplicate_order, market_types=MARKET_TYPES[exchange_id], ccxt_options=ccxt_options(exchange_id),
        page_limits=PAGE_LIMITS[exchange_id], spot_id=SPOT_OF[exchange_id],
        transfer_types={to: kind for (src, to), kind in TRANSFER_TYPES.items() if src == exchange_id},
        transfer_client=SPOT, liquidation_style=LIQUIDATION_STYLES.get(exchange_id),
        private_urls=PRIVATE_URLS.get(exchange_id, ("private",)), backup_hosts=BACKUP_HOSTS)
