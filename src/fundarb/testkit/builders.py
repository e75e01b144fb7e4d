"""Small builders the tests share: account names and an hour boundary, fills,
a strategy that never trades, synthetic histories, real rows re-shaped like a
venue's own answers, and a one-venue simulator fed by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from fundarb.config import VenueConfig
from fundarb.core.model import NS_PER_HOUR, Fill, MarketKind, Quote, Side
from fundarb.core.orders import Order, OrderStatus
from fundarb.data.history import FUNDING_FILE, PRICES_FILE, SHIPPED_DIR, MarketHistory
from fundarb.sim import SimExchange, SimVenueSpec
from fundarb.sim import queue as q

SPOT = "ex:spot"
PERP = "ex:perp"
T0 = 1_700_000_000 * 1_000_000_000 // NS_PER_HOUR * NS_PER_HOUR  # an hour boundary


class QuietStrategy:
    """A strategy that never trades (for tests of what the engine does without one)."""

    still_until = 0  # promises nothing: asked on every event, as CarryStrategy.still_until reads

    class signal:  # noqa: N801
        @staticmethod
        def on_settlement(*a: Any) -> None: pass

        @staticmethod
        def on_rate(*a: Any) -> None: pass

    def on_settlement(self, *a: Any) -> None:
        pass

    def on_rate(self, *a: Any) -> None:
        pass

    def decide(self, book: Any, mid: Any, now: int) -> list:
        return []

    def abandon(self, now: int) -> None:
        pass


def make_fill(venue: str, side: Side, qty: float, price: float, mid: float | None = None,
              fee: float = 0.0, ts: int = T0, client_id: str = "c1") -> Fill:
    return Fill(ts, venue, client_id, side, qty, price, price if mid is None else mid, fee)


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


# --- real rows re-shaped like a venue's own answers (SYNTHETIC changes) ------------------

VENUE_SHAPED_LABEL = "SYNTHETIC test variation of shipped binance BTCUSDT rows"
H_MS = 3_600_000
MARCH_2024_MS = (1_709_251_200_000, 1_711_929_600_000)  # 2024-03-01 .. 2024-04-01


def venue_shaped_folder(folder: Path, late_ms: int = 16, marks_from: int = 30, duplicate_every: int = 20) -> pl.DataFrame:
    """The shipped March 2024 rows re-shaped like Binance's own answers: every
    stamp 0..``late_ms`` ms late, the venue's mark on the rows from the
    ``marks_from``-th on (older rows carry none), and every
    ``duplicate_every``-th row sent twice. Marks are the perp close at the
    settlement hour plus 1 bp: SYNTHETIC, and the source column says so."""
    prices = pl.read_parquet(SHIPPED_DIR / PRICES_FILE).filter(
        (pl.col("open_time_ms") >= MARCH_2024_MS[0] - 2 * H_MS) & (pl.col("open_time_ms") < MARCH_2024_MS[1]))
    prices.write_parquet(folder / PRICES_FILE)
    perp_close = dict(zip((prices.filter(pl.col("market") == "perp_linear")["open_time_ms"] + H_MS).to_list(),
                          prices.filter(pl.col("market") == "perp_linear")["close"].to_list()))
    f = pl.read_parquet(SHIPPED_DIR / FUNDING_FILE).filter(
        (pl.col("venue") == "binance") & (pl.col("symbol") == "BTCUSDT")
        & (pl.col("funding_time_ms") >= MARCH_2024_MS[0]) & (pl.col("funding_time_ms") <= MARCH_2024_MS[1])).sort("funding_time_ms")
    t = f["funding_time_ms"].to_numpy()
    late = (t // H_MS * 7919) % (late_ms + 1)
    marks = [perp_close[int(x)] * 1.0001 if i >= marks_from else None for i, x in enumerate(t)]
    shaped = f.with_columns(pl.Series("funding_time_ms", t + late), pl.Series("mark_price", marks, dtype=pl.Float64),
                            pl.lit(VENUE_SHAPED_LABEL).alias("source"))
    dupes = shaped[::duplicate_every]
    pl.concat([shaped, dupes]).write_parquet(folder / FUNDING_FILE)
    return f


# --- one spot venue of the simulator, fed event by event ---------------------------------

SIM_SPOT = "sim:spot"


def bare_sim(latency_ms: float = 100.0) -> SimExchange:
    """A simulator of one spot venue (``SIM_SPOT``) without fees, spread or
    impact, a fixed latency and an empty tape: events reach it through ``push``."""
    venue = VenueConfig(exchange="sim", symbol="BTC/USDT", taker_fee=0.0, maker_fee=0.0, half_spread_bp_min=0.0,
                        half_spread_bp_max=0.0, impact_bp_per_btc=0.0, latency_ms_median=latency_ms,
                        latency_sigma=0.0, order_ttl_seconds=600.0)
    return SimExchange([SimVenueSpec(SIM_SPOT, MarketKind.SPOT, 1_000_000.0, venue)], iter(()),
                       np.random.SeedSequence(1))


def sim_buy(ts: int, cid: str = "o1", qty: float = 1.0) -> Order:
    """A submitted market buy of ``qty`` BTC at ``SIM_SPOT``."""
    o = Order(cid, SIM_SPOT, Side.BUY, qty, ts, "entry", 1)
    o.transition(OrderStatus.SUBMITTED, ts)
    return o


def sim_quote(ts: int, px: float) -> Quote:
    """A quote at ``SIM_SPOT`` with bid = ask = ``px``."""
    return Quote(ts, SIM_SPOT, px, px, 5.0, 5.0)


def push(sim: SimExchange, ev: Any, prio: int = q.P_QUOTE, on: Any = None) -> list:
    """Feed one event; what the simulator gives out, each also passed to ``on``."""
    out = []
    for x in sim.feed(ev.ts, prio, ev):
        out.append(x)
        if on is not None:
            on(x)
    return out
