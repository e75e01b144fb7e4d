"""The venues' margin tier tables, read from outside the core and handed to it
as ``fundarb.core.liquidation.MarginRule`` objects.

- ``shipped_rule(venue, symbol)``: from the dated snapshot shipped for
  backtests (``fundarb/data/shipped/margin_tiers.json``: its ``as_of`` and
  ``source`` say when and how it was written down). A market it does not
  hold gets a rule that raises ``LiquidationRuleMissing`` when used.
- ``rule_from_ccxt_tiers(venue, symbol, tiers)``: from what ccxt's
  ``fetch_leverage_tiers`` / ``fetch_market_leverage_tiers`` answered at run
  time (Binance USD-M ``/fapi/v1/leverageBracket``: the maintenance amount is
  each bracket's ``cum``; Bybit v5 ``/v5/market/risk-limit``: ``mmDeduction``,
  derived by the cum rule when the venue leaves it empty). An inverse market
  (a symbol settled in its base coin, ``BTC/USD:BTC``) gets the venue's
  inverse formula: Binance COIN-M ``/dapi/v2/leverageBracket`` brackets,
  whose qtyFloor/qtyCap (ccxt's minNotional/maxNotional) and ``cum`` are in
  the coin, and Bybit's inverse risk limits, valued in the coin.

Every table is checked on load (contiguous tiers from 0, the maintenance
amount rule); an error names the file or venue and the tier.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from fundarb.core.errors import FundarbError
from fundarb.core.liquidation import (
    BINANCE_COINM,
    BINANCE_USDM,
    BYBIT_INVERSE,
    BYBIT_LINEAR,
    HYPERLIQUID,
    MarginRule,
    MarginTier,
    expected_amount,
    is_inverse_symbol,
    rule_for,
)
from fundarb.venues import quirks_or_plain

SHIPPED_FILE = Path(__file__).resolve().parent / "shipped" / "margin_tiers.json"
# a venue's liquidation style (its quirks name one per exchange id) -> the style of
# its linear and of its inverse markets (None: that kind is not modelled there)
_BY_SETTLEMENT: dict[str, tuple[str | None, str | None]] = {
    BINANCE_USDM: (BINANCE_USDM, None),
    BINANCE_COINM: (None, BINANCE_COINM),
    BYBIT_LINEAR: (BYBIT_LINEAR, BYBIT_INVERSE),
    BYBIT_INVERSE: (BYBIT_LINEAR, BYBIT_INVERSE),
    HYPERLIQUID: (HYPERLIQUID, None),
}
# styles whose ccxt tiers carry Binance's maintenance amount ``cum``
_CUM_STYLES = (BINANCE_USDM, BINANCE_COINM)


class MarginTableError(FundarbError, ValueError):
    """A tier table that cannot be used; the message names where it came from and the tier."""


def load_tables(path: str | Path = SHIPPED_FILE) -> dict[tuple[str, str], MarginRule]:
    """Every market's rule in a margin tier file (the shipped snapshot's format)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
        as_of, source = str(doc["as_of"]), str(doc["source"])
        markets = doc["markets"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MarginTableError(f"{p}: not a margin tier file ({type(exc).__name__}: {exc})") from None
    out: dict[tuple[str, str], MarginRule] = {}
    for m in markets:
        try:
            tiers = tuple(MarginTier(float(t["floor"]), float(t["cap"]), float(t["mmr"]), float(t["amount"]),
                                     float(t["max_leverage"])) for t in m["tiers"])
            rule = MarginRule(m["venue"], m["symbol"], tiers, m["style"], as_of, source)
        except (ValueError, KeyError, TypeError) as exc:
            raise MarginTableError(f"{p}: {exc}") from None
        out[(rule.venue, rule.symbol)] = rule
    return out


@lru_cache(maxsize=4)
def _shipped(path: str) -> Mapping[tuple[str, str], MarginRule]:
    return MappingProxyType(load_tables(path))


def shipped_tables() -> Mapping[tuple[str, str], MarginRule]:
    return _shipped(str(SHIPPED_FILE))


def shipped_rule(venue: str, symbol: str) -> MarginRule:
    """The shipped snapshot's rule of (venue, symbol); unmodelled markets raise on use."""
    return rule_for(venue, symbol, shipped_tables())


def is_modelled(venue: str) -> bool:
    """Whether the venue's liquidation formula is modelled (its tiers may still come from the venue)."""
    return quirks_or_plain(venue).liquidation_style is not None


def style_for(venue: str, symbol: str) -> str | None:
    """The liquidation style of (venue, symbol): the venue's, made linear or
    inverse by the symbol's settlement; None when not modelled."""
    style = quirks_or_plain(venue).liquidation_style
    if style is None:
        return None
    pair = _BY_SETTLEMENT.get(style)
    if pair is None:
        return None
    return pair[1] if is_inverse_symbol(symbol) else pair[0]


def _number(x: Any) -> float | None:
    if x is None or x == "":
        return None
    return float(x)


def rule_from_ccxt_tiers(venue: str, symbol: str, tiers: Iterable[Mapping[str, Any]], as_of: str = "",
                         source: str = "") -> MarginRule:
    """A rule from ccxt leverage tier structures (minNotional, maxNotional,
    maintenanceMarginRate, maxLeverage, and the venue's row in ``info``;
    for an inverse market the notionals and amounts are in the coin).
    A market whose formula is not modelled gets the shipped snapshot's rule,
    which raises on use when the snapshot does not hold it either."""
    style = style_for(venue, symbol)
    if style is None:
        return shipped_rule(venue, symbol)
    rows = sorted(tiers, key=lambda t: float(t.get("minNotional") or 0.0))
    built: list[MarginTier] = []
    try:
        for row in rows:
            info = row.get("info") or {}
            amount = _number(info.get("cum") if style in _CUM_STYLES else info.get("mmDeduction"))
            tier = MarginTier(float(row.get("minNotional") or 0.0), float(row["maxNotional"]),
                              float(row["maintenanceMarginRate"]), 0.0, float(row.get("maxLeverage") or 0.0))
            if amount is None:  # not sent: the amount the cum rule gives (MM continuous across tiers)
                amount = expected_amount((*built, tier), len(built))
            built.append(MarginTier(tier.floor, tier.cap, tier.mmr, amount, tier.max_leverage))
        return MarginRule(venue, symbol, tuple(built), style, as_of,
                          source or f"fetched from {venue} at run time (ccxt leverage tiers)")
    except (ValueError, KeyError, TypeError) as exc:
        raise MarginTableError(f"margin tiers {venue} sent for {symbol}: {exc}") from None
