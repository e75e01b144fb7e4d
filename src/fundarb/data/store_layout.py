"""Where a ``fundarb data fetch`` store keeps each series: the fetcher
writes there and the history loader reads from there."""

from __future__ import annotations

import re
from pathlib import Path


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def funding_path(store: Path, venue: str, symbol: str) -> Path:
    return store / "funding" / _safe(venue) / f"{_safe(symbol)}.parquet"


KLINE_LABEL = {"ohlcv": "OHLCV", "mark": "mark-price klines", "index": "index-price klines"}


def kline_path(store: Path, kind: str, venue: str, symbol: str, timeframe: str) -> Path:
    return store / kind / _safe(venue) / f"{_safe(symbol)}_{timeframe}.parquet"


def ohlcv_path(store: Path, venue: str, symbol: str, timeframe: str) -> Path:
    return kline_path(store, "ohlcv", venue, symbol, timeframe)
