"""Shared helpers for the unit and property suites: small builders only."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fundarb.core.book import PositionBook
from fundarb.core.model import NS_PER_HOUR, Fill, Side
from fundarb.data.history import FUNDING_FILE, PRICES_FILE, SHIPPED_DIR, MarketHistory

SPOT = "ex:spot"
PERP = "ex:perp"
T0 = 1_700_000_000 * 1_000_000_000 // NS_PER_HOUR * NS_PER_HOUR  # an hour boundary


@pytest.fixture(autouse=True)
def _own_lock_dir(tmp_path_factory, monkeypatch):
    """Each test's venue-account locks in a folder of its own (subprocesses
    inherit it): never the user's, and no test sees another's lock."""
    monkeypatch.setenv("FUNDARB_LOCK_DIR", str(tmp_path_factory.mktemp("locks")))


@pytest.fixture(scope="session", autouse=True)
def _own_promotion_key(tmp_path_factory):
    """One promotion key for the whole run, in a folder of its own
    (subprocesses inherit it): never the user's. Session scope, so records a
    module-scoped fixture promotes verify in every test of the module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FUNDARB_PROMOTION_KEY_FILE", str(tmp_path_factory.mktemp("promotion-key") / "promotion.key"))
        yield


class QuietStrategy:
    """A strategy that never trades (for tests of what the engine does without one)."""

    class signal:  # noqa: N801
        @staticmethod
        def on_settlement(*a): pass

        @staticmethod
        def on_rate(*a): pass

    def decide(self, book, mid, now):
        return []

    def abandon(self, now):
        pass


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


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class Blocked(list):
    """(host, port) of every refused lookup or connect."""

    def hosts(self) -> set[str]:
        return {a[0] for a in self}


@pytest.fixture
def loopback_only(monkeypatch) -> Blocked:
    """Only loopback is reachable: other DNS lookups and connects (socket,
    and aiohttp's own resolver, which bypasses getaddrinfo) raise and are
    recorded; proxy variables are cleared so loopback calls stay direct."""
    import aiohttp.resolver

    blocked = Blocked()
    real_gai, real_connect, real_connect_ex = socket.getaddrinfo, socket.socket.connect, socket.socket.connect_ex

    def name(host) -> str:
        return host.decode() if isinstance(host, bytes) else str(host)

    def getaddrinfo(host, port, *a, **k):
        if host is not None and name(host) not in LOOPBACK:
            blocked.append((name(host), port))
            raise socket.gaierror(socket.EAI_NONAME, f"network blocked in tests: {name(host)}")
        return real_gai(host, port, *a, **k)

    def check(address) -> None:
        if isinstance(address, tuple) and name(address[0]) not in LOOPBACK:
            blocked.append((name(address[0]), address[1]))
            raise ConnectionRefusedError(f"network blocked in tests: {address!r}")

    def connect(self, address):
        check(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        check(address)
        return real_connect_ex(self, address)

    async def resolve(self, host, port=0, family=socket.AF_INET):
        blocked.append((host, port))
        raise OSError(f"network blocked in tests: {host}")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(aiohttp.resolver.AsyncResolver, "resolve", resolve)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "WS_PROXY", "WSS_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "*")
    return blocked


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


