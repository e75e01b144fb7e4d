"""Venue quirks: what fundarb must know of each venue beyond ccxt's unified
API, one module per venue (``binance``: ccxt ``binance`` and ``binanceusdm``;
``bybit``; ``hyperliquid``; ``coinbase`` and ``kraken``, spot venues), so that
generic code asks ``quirks(exchange.id)`` instead of testing ids or error texts.

``quirks`` refuses an id without a module (``UnknownVenue``, one line naming
the venues there are); ``quirks_or_plain`` answers for such an id with
ccxt's unified calls as they are (``base.plain``), for the code that serves
any ccxt venue. ``ccxt_config`` is the constructor config of a client of a
venue with a module, market loading kept to the markets fundarb trades
(``CCXT_OPTIONS``).

This package sits under ``config`` and over ``support``: it imports only the
standard library, ccxt, ``fundarb.core`` and ``fundarb.support``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from types import ModuleType
from typing import Any

from fundarb.venues import binance, bybit, coinbase, hyperliquid, kraken
from fundarb.venues.base import OrderLeg, UnknownVenue, VenueQuirks, plain

__all__ = ["CCXT_OPTIONS", "MODULES", "SUPPORTED", "OrderLeg", "UnknownVenue", "VenueQuirks", "ccxt_config", "load_only",
           "quirks", "quirks_or_plain"]

MODULES: tuple[ModuleType, ...] = (binance, bybit, hyperliquid, coinbase, kraken)
_QUIRKS: dict[str, VenueQuirks] = {i: m.quirks_of(i) for m in MODULES for i in m.IDS}
SUPPORTED: tuple[str, ...] = tuple(_QUIRKS)
# each venue's ccxt constructor options (market loading kept to what fundarb trades)
CCXT_OPTIONS: dict[str, dict[str, Any]] = {i: dict(q.ccxt_options) for i, q in _QUIRKS.items()}


def quirks(exchange_id: str) -> VenueQuirks:
    """The quirks of ccxt id ``exchange_id``; ``UnknownVenue`` for an id without a venue module."""
    found = _QUIRKS.get(exchange_id)
    if found is None:
        raise UnknownVenue(f"fundarb serves the venues {', '.join(SUPPORTED)}; {exchange_id!r} is not one of them")
    return found


def quirks_or_plain(exchange_id: str) -> VenueQuirks:
    """The quirks of ``exchange_id``, or ccxt's unified calls as they are for an id without a venue module."""
    return _QUIRKS.get(exchange_id) or plain(exchange_id)


def ccxt_config(exchange_id: str, **extra: Any) -> dict[str, Any]:
    """Constructor config of a ccxt client of ``exchange_id`` (a venue with a
    module): its ``CCXT_OPTIONS`` under ``extra``'s own options, and the rest of ``extra``."""
    options = {**copy.deepcopy(dict(quirks(exchange_id).ccxt_options)), **extra.pop("options", {})}
    return {"options": options, **extra}


def load_only(options: dict[str, Any], market_types: Iterable[str]) -> None:
    """Keep a built client's market loading (its ``options``) to ``market_types``,
    whichever shape (list, or dict with ``types``) its ccxt version uses. An
    option that names a method (Coinbase's ``fetchMarketsV3``) filters no
    types: it is left as it is."""
    types = list(market_types)
    current = options.get("fetchMarkets")
    if isinstance(current, str):
        return
    options["fetchMarkets"] = {**current, "types": types} if isinstance(current, dict) else types
