"""Shared helpers for the unit and property suites: small builders only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fundarb.core.book import PositionBook
from fundarb.core.model import NS_PER_HOUR, Fill, Side
from fundarb.data.history import MarketHistory

SPOT = "ex:spot"
PERP = "ex:perp"
T0 = 1_700_000_000 * 1_000_000_000 // NS_PER_HOUR * NS_PER_HOUR  # an hour boundary


def make_fill(venue: str, side: Side, qty: float, price: float, mid: float | None = None,
              fee: float = 0.0, ts: int = T0, client_id: str = "c1") -> Fill:
    return Fill(ts, venue, client_id, side, qty, price, price if mid is None else mid, fee)


@pytest.fixture
def book() -> PositionBook:
    """65k spot cash, 35k perp collateral, nothing held."""
    return PositionBook.open(SPOT, PERP, 65_000.0, 35_000.0)


def synthetic_history(spot: np.ndarray, perp: np.ndarray, rates: np.ndarray,
                      start: int = T0, interval_hours: int = 8, first_offset_hours: int = 1) -> MarketHistory:
    """A synthetic MarketHistory (no real data): hourly spot/perp closes and one
    settlement every ``interval_hours`` from ``start + first_offset_hours``."""
    n = len(spot)
    hours = start + np.arange(n, dtype=np.int64) * NS_PER_HOUR
    fts = hours[first_offset_hours::interval_hours]
    k = len(fts)
    return MarketHistory(
        hours=hours,
        spot=np.asarray(spot, dtype=np.float64),
        perp=np.asarray(perp, dtype=np.float64),
        carried=np.zeros(n, dtype=bool),
        funding_ts=fts,
        funding_rate=np.asarray(rates, dtype=np.float64)[:k],
        funding_interval=np.full(k, float(interval_hours)),
        funding_mark=np.full(k, np.nan),
        sources=("synthetic",),
    )


@pytest.fixture(scope="session")
def real_history() -> MarketHistory:
    """The shipped real Binance history over the default config's window."""
    from fundarb.config import load
    from fundarb.data.history import load_history

    cfg = load(Path(__file__).parent.parent / "sims" / "baseline.toml")
    return load_history((cfg.spot.exchange, cfg.spot.symbol), (cfg.perp.exchange, cfg.perp.symbol),
                        cfg.data.start, cfg.data.end, cfg.data.max_price_gap_hours)
