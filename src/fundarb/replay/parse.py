"""Replay venue: recorded exchange feeds become the simulator's market tape.

A recording is a folder with ``recording.toml`` naming its captures: one per
leg (spot, perp), each either a cryptofeed ``raw_data_collection`` capture
(replayed through ``cryptofeed.raw_data_collection.playback``) or a raw-line
Binance stream capture (``<receive ns> <raw JSON>`` lines, passed through
cryptofeed's own ``Binance``/``BinanceFutures``/``BinanceDelivery`` (COIN-M)
message handler). Parsing never touches the network: symbol tables are filled
locally before a feed is built.

Binance funding messages (``markPriceUpdate``) give the venue's mark and its
running funding rate ``r``, which is also the predicted rate (as the live feed
reads it): cryptofeed's ``Funding.predicted_rate`` holds the estimated settle
price ``P``, not a rate, and is not used. COIN-M quantities (book ticker sizes,
trade quantities) are contracts of a fixed USD size; they are turned into BTC
at the message's own price.

Parsed events are cached as parquet keyed by the captures' sha256, the parser
version and cryptofeed's version; a failed parse caches nothing. The tape then
drives the same ``SimExchange`` and ``Engine`` as a backtest: fills come from
the simulator's execution model against the replayed top of book.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import tempfile
import tomllib
import zlib
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import cattrs
import numpy as np
import polars as pl

from fundarb.core.errors import FundarbError
from fundarb.support.parquet import read_parquet, write_sealed

PARSER_VERSION = "3"  # 3: Binance funding messages give predicted = r, not cryptofeed's P; COIN-M raw lines
FORMAT_CRYPTOFEED = "cryptofeed"
FORMAT_BINANCE_LINES = "binance_lines"
ROLES = ("spot", "perp")
MANIFEST = "recording.toml"
NS = 1_000_000_000
MARK_SAMPLE_NS = NS  # perp mid stands in for the mark, at most once a second

# fundarb/ccxt exchange id -> cryptofeed feed id
CRYPTOFEED_IDS = {
    "binance": "BINANCE",
    "binanceusdm": "BINANCE_FUTURES",
    "binancecoinm": "BINANCE_DELIVERY",
    "bitmex": "BITMEX",
    "bybit": "BYBIT",
    "okx": "OKX",
    "coinbase": "COINBASE",
    "kraken": "KRAKEN",
    "krakenfutures": "KRAKEN_FUTURES",
    "deribit": "DERIBIT",
}
# raw-line captures: cryptofeed symbol -> (exchange symbol, instrument type)
BINANCE_LINE_SYMBOLS = {
    ("binance", "BTC-USDT"): ("BTCUSDT", "spot"),
    ("binanceusdm", "BTC-USDT-PERP"): ("BTCUSDT", "perpetual"),
    ("binancecoinm", "BTC-USD-PERP"): ("BTCUSD_PERP", "perpetual"),
}
# raw-line captures: exchange id -> cryptofeed feed class (in cryptofeed.exchanges)
BINANCE_LINE_FEEDS = {"binance": "Binance", "binanceusdm": "BinanceFutures", "binancecoinm": "BinanceDelivery"}
# inverse contracts whose quantities are counted in contracts of this many USD
CONTRACT_USD = {("binancecoinm", "BTC-USD-PERP"): 100.0}
# Binance funding messages: r is the running estimate of the next settlement, P a price
BINANCE_FUNDING = ("binanceusdm", "binancecoinm")

COLUMNS = {
    "ts": pl.Int64, "seq": pl.Int64, "kind": pl.Utf8, "bid": pl.Float64, "ask": pl.Float64,
    "bid_size": pl.Float64, "ask_size": pl.Float64, "price": pl.Float64, "qty": pl.Float64, "side": pl.Utf8,
    "rate": pl.Float64, "predicted_rate": pl.Float64, "next_funding_ts": pl.Int64, "mark": pl.Float64,
}


class ReplayError(FundarbError, ValueError):
    """A recording that cannot be replayed; the message names the file (and line)."""


def _one_of(*allowed: str) -> Any:
    """A validator whose message a user can read: the field, the value, what is allowed."""
    def check(inst: Any, attr: attrs.Attribute, value: str) -> None:
        if value not in allowed:
            raise ValueError(f"[[feeds]] {attr.name} {value!r} is not one of: {', '.join(allowed)}")
    return check


@attrs.frozen
class CaptureFeed:
    role: str = attrs.field(validator=_one_of(*ROLES))
    exchange: str = attrs.field(validator=_one_of(*CRYPTOFEED_IDS))
    symbol: str
    format: str = attrs.field(validator=_one_of(FORMAT_CRYPTOFEED, FORMAT_BINANCE_LINES))
    files: tuple[str, ...]


@attrs.frozen
class Recording:
    name: str
    description: str
    config: str  # a config in sims/ (by file name) or a path relative to the recording
    feeds: tuple[CaptureFeed, ...]
    folder: Path = Path(".")

    def paths(self, feed: CaptureFeed) -> list[Path]:
        return [self.folder / f for f in feed.files]

    def feed(self, role: str) -> CaptureFeed | None:
        return next((f for f in self.feeds if f.role == role), None)


def load_recording(folder: Path) -> Recording:
    path = folder / MANIFEST
    if not path.is_file():
        raise ReplayError(f"{folder}: not a recording (no {MANIFEST})")
    try:
        raw = tomllib.loads(path.read_text())
        rec = cattrs.Converter(forbid_extra_keys=True).structure(raw, Recording)
    except (tomllib.TOMLDecodeError, cattrs.BaseValidationError, ValueError, TypeError) as exc:
        from fundarb.config import describe_error

        raise ReplayError(f"{path}: {describe_error(exc)}") from None
    if not rec.feeds:
        raise ReplayError(f"{path}: no [[feeds]]")
    for f in rec.feeds:
        for p in (folder / name for name in f.files):
            if not p.is_file():
                raise ReplayError(f"{path}: capture file missing: {p}")
    return attrs.evolve(rec, folder=folder)


# --- parsed events ----------------------------------------------------------

class _Rows:
    """Column buffers of parsed events, one row per event."""

    def __init__(self) -> None:
        self.cols: dict[str, list] = {k: [] for k in COLUMNS}
        self.counts: dict[str, int] = {}

    def add(self, ts: int, kind: str, **values: Any) -> None:
        n = len(self.cols["ts"])
        for k, col in self.cols.items():
            col.append(values.get(k))
        self.cols["ts"][n] = ts
        self.cols["seq"][n] = n
        self.cols["kind"][n] = kind

    def count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.cols, schema=COLUMNS)


def _f(x: Any) -> float | None:
    return None if x is None else float(x)


def _ns(receipt: Any) -> int:
    """A receipt timestamp (seconds, as written in the capture) to ns, exactly."""
    return int(Decimal(str(receipt)) * NS)


def _btc(qty: Any, price: Any, contract_usd: float | None) -> float | None:
    """A quantity in BTC: as given, or contracts of ``contract_usd`` USD at ``price``."""
    if qty is None or contract_usd is None:
        return _f(qty)
    return float(qty) * contract_usd / float(price)


def _quote(rows: _Rows, ts: int, t: Any, sizes: tuple[Any, Any], contract_usd: float | None = None) -> None:
    rows.add(ts, "quote", bid=float(t.bid), ask=float(t.ask), bid_size=_btc(sizes[0], t.bid, contract_usd),
             ask_size=_btc(sizes[1], t.ask, contract_usd))


def _trade(rows: _Rows, ts: int, t: Any, contract_usd: float | None = None) -> None:
    rows.add(ts, "trade", price=float(t.price), qty=_btc(t.amount, t.price, contract_usd), side=str(t.side))


def _funding(rows: _Rows, ts: int, f: Any, exchange: str = "") -> None:
    nxt = getattr(f, "next_funding_time", None)
    predicted = f.rate if exchange in BINANCE_FUNDING else getattr(f, "predicted_rate", None)
    rows.add(ts, "funding", rate=_f(f.rate), predicted_rate=_f(predicted),
             next_funding_ts=None if nxt is None else int(Decimal(str(nxt)) * NS), mark=_f(getattr(f, "mark_price", None)))


# --- raw-line Binance captures ------------------------------------------------

_EVENT_COUNTS: dict[str, str] = {"markPriceUpdate": "mark_price", "aggTrade": "agg_trade"}


def _offline_feed(exchange: str, symbol: str, rows: _Rows, now: list[int]) -> Any:
    """A cryptofeed Binance/BinanceFutures/BinanceDelivery feed whose symbol
    table is filled locally, so building it reads nothing from the network."""
    import cryptofeed.exchanges
    from cryptofeed.defines import FUNDING, TICKER, TRADES
    from cryptofeed.symbols import Symbols

    cls = getattr(cryptofeed.exchanges, BINANCE_LINE_FEEDS[exchange])
    exchange_symbol, kind = BINANCE_LINE_SYMBOLS[(exchange, symbol)]
    Symbols.set(cls.id, {symbol: exchange_symbol}, {"instrument_type": {symbol: kind}})
    unit = CONTRACT_USD.get((exchange, symbol))

    async def on_ticker(t: Any, receipt: Any) -> None:
        _quote(rows, now[0], t, (t.raw.get("B"), t.raw.get("A")), unit)

    async def on_trade(t: Any, receipt: Any) -> None:
        _trade(rows, now[0], t, unit)

    async def on_funding(f: Any, receipt: Any) -> None:
        _funding(rows, now[0], f, exchange)

    callbacks: dict[str, Any] = {TICKER: on_ticker, TRADES: on_trade}
    if FUNDING in cls.websocket_channels:  # the futures feeds: markPrice
        callbacks[FUNDING] = on_funding
    return cls(symbols=[symbol], channels=list(callbacks), callbacks=callbacks)


def binance_trade(feed: Any, data: dict) -> Any:
    """cryptofeed's Binance handler parses ``aggTrade`` prints only; raw
    ``trade`` events carry the same fields but the trade id under ``t``. Build
    the same cryptofeed ``Trade`` its ``_trade`` builds (a test compares them)."""
    from cryptofeed.defines import BUY, SELL
    from cryptofeed.types import Trade

    return Trade(feed.id, feed.exchange_symbol_to_std_symbol(data["s"]), SELL if data["m"] else BUY,
                 Decimal(data["q"]), Decimal(data["p"]), feed.timestamp_normalize(data["T"]), id=str(data["t"]), raw=data)


def _parse_binance_lines(feed_spec: CaptureFeed, paths: list[Path]) -> _Rows:
    rows, now = _Rows(), [0]
    feed = _offline_feed(feed_spec.exchange, feed_spec.symbol, rows, now)
    exchange_symbol = BINANCE_LINE_SYMBOLS[(feed_spec.exchange, feed_spec.symbol)][0]
    unit = CONTRACT_USD.get((feed_spec.exchange, feed_spec.symbol))

    async def run() -> None:
        for path in paths:
            await _binance_file(path, feed, exchange_symbol, rows, now, unit)

    asyncio.run(run())
    return rows


async def _binance_file(path: Path, feed: Any, exchange_symbol: str, rows: _Rows, now: list[int], unit: float | None = None) -> None:
    lineno = 0
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                stamp, sep, raw = line.partition(" ")
                if not sep or not stamp.isdigit():
                    raise ReplayError(f"{path}:{lineno}: not '<receive ns> <raw JSON>'")
                try:
                    msg = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise ReplayError(f"{path}:{lineno}: not JSON ({exc.msg})") from None
                rows.count("messages")
                if not isinstance(msg, dict) or "stream" not in msg:
                    rows.count("rest_snapshot" if isinstance(msg, dict) and "lastUpdateId" in msg else "other")
                    continue
                data = msg.get("data") or {}
                if data.get("s") != exchange_symbol:
                    rows.count("other_symbol")
                    continue
                now[0] = int(stamp)
                event = data.get("e")
                if event == "trade":
                    _trade(rows, now[0], binance_trade(feed, data), unit)
                    rows.count("trade")
                elif event == "depthUpdate":
                    rows.count("depth_diff")  # top of book comes from bookTicker
                else:
                    await feed.message_handler(raw, None, now[0] / NS)
                    name = str(event or "other")
                    rows.count("book_ticker" if "A" in data or event == "bookTicker" else _EVENT_COUNTS.get(name, name))
    except (EOFError, gzip.BadGzipFile, zlib.error, UnicodeDecodeError, OSError) as exc:
        where = f"{path}:{lineno + 1}" if lineno else str(path)
        raise ReplayError(f"{where}: truncated or corrupt capture ({type(exc).__name__}: {exc})") from None


# --- cryptofeed raw_data_collection captures ----------------------------------

def _parse_cryptofeed(feed_spec: CaptureFeed, paths: list[Path]) -> _Rows:
    from cryptofeed.connection import HTTPAsyncConn, HTTPSync
    from cryptofeed.defines import FUNDING, TICKER, TRADES
    from cryptofeed.raw_data_collection import playback

    feed_id = CRYPTOFEED_IDS[feed_spec.exchange]
    header = next((p for p in paths if p.name == f"{feed_id}.0"), None)
    if header is None:
        raise ReplayError(f"{paths[0].parent}: no {feed_id}.0 header among {[p.name for p in paths]}")
    subscription = _subscription(header)
    rows = _Rows()

    def keep(obj: Any) -> bool:
        if obj.symbol != feed_spec.symbol:
            rows.count("other_symbol")
            return False
        return True

    async def on_ticker(t: Any, receipt: Any) -> None:
        if keep(t):
            raw = t.raw if isinstance(t.raw, dict) else {}
            bid_size, ask_size = raw.get("bidSize"), raw.get("askSize")
            sizes = (bid_size, ask_size)
            if feed_spec.exchange == "bitmex" and bid_size is not None and ask_size is not None:  # contracts of 1 USD
                mid = 0.5 * float(t.bid + t.ask)
                sizes = (float(bid_size) / mid, float(ask_size) / mid)
            _quote(rows, _ns(receipt), t, sizes)

    async def on_trade(t: Any, receipt: Any) -> None:
        if keep(t):
            _trade(rows, _ns(receipt), t, CONTRACT_USD.get((feed_spec.exchange, feed_spec.symbol)))

    async def on_funding(f: Any, receipt: Any) -> None:
        if keep(f):
            _funding(rows, _ns(receipt), f, feed_spec.exchange)

    wanted = {TICKER: on_ticker, TRADES: on_trade, FUNDING: on_funding}
    callbacks = {k: v for k, v in wanted.items() if k in subscription}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "cryptofeed.yaml"
        cfg.write_text("log:\n  filename: " + str(Path(tmp) / "feed.log") + "\n  level: WARNING\n")
        # playback swaps cryptofeed's HTTP reads for readers of the capture and puts them back only when it
        # ends normally: a capture that fails to play must not leave the process's later lookups reading it
        saved = HTTPSync.read, HTTPAsyncConn.read
        try:
            stats = playback(feed_id, [str(p.resolve()) for p in paths], callbacks=callbacks, config=str(cfg))
        except Exception as exc:
            raise ReplayError(f"{paths[-1]}: cryptofeed playback failed ({type(exc).__name__}: {exc})") from None
        finally:
            HTTPSync.read, HTTPAsyncConn.read = saved
    rows.counts["messages"] = int(stats.get("messages_processed", 0)) if isinstance(stats, dict) else 0
    return rows


def _subscription(header: Path) -> dict:
    try:
        for line in header.read_text(encoding="utf-8").splitlines():
            if line.startswith("configuration: "):
                return json.loads(line.split(": ", 1)[1])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReplayError(f"{header}: unreadable capture header ({exc})") from None
    raise ReplayError(f"{header}: capture header has no 'configuration:' line")


# --- parse with cache -----------------------------------------------------------

def capture_key(feed: CaptureFeed, paths: list[Path]) -> str:
    from importlib.metadata import version

    h = hashlib.sha256()
    h.update(json.dumps([PARSER_VERSION, version("cryptofeed"), feed.exchange, feed.symbol, feed.format]).encode())
    for p in paths:
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def default_cache_dir() -> Path:
    base = os.environ.get("FUNDARB_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "fundarb")
    return Path(base) / "replay"


@attrs.frozen
class ParsedFeed:
    feed: CaptureFeed
    events: pl.DataFrame
    counts: dict[str, int]
    key: str
    cached: bool


def parse_feed(rec: Recording, feed: CaptureFeed, cache_dir: Path | None = None) -> ParsedFeed:
    """Parse one capture into an event table (cached by content hash)."""
    paths = rec.paths(feed)
    key = capture_key(feed, paths)
    cache = (cache_dir or default_cache_dir()) / f"{key}.parquet"
    if cache.is_file():
        try:  # a sealed entry is read here; any other where its damage cannot crash us
            return ParsedFeed(feed, read_parquet(cache), _read_counts(cache), key, True)
        except (OSError, ValueError, pl.exceptions.PolarsError):
            pass  # an unreadable cache entry is parsed again and replaced
    parse = _parse_binance_lines if feed.format == FORMAT_BINANCE_LINES else _parse_cryptofeed
    if feed.format == FORMAT_BINANCE_LINES and (feed.exchange, feed.symbol) not in BINANCE_LINE_SYMBOLS:
        known = ", ".join(f"{e} {s}" for e, s in BINANCE_LINE_SYMBOLS)
        raise ReplayError(f"{rec.folder / MANIFEST}: no raw-line parser for {feed.exchange} {feed.symbol} (known: {known})")
    rows = parse(feed, paths)
    table = rows.frame().sort(["ts", "seq"])
    if not (table["kind"] == "quote").any():
        raise ReplayError(f"{paths[0]}: no {feed.symbol} quotes in the capture (is it BTC data?)")
    _write_cache(cache, table, rows.counts)
    return ParsedFeed(feed, table, dict(rows.counts), key, False)


def _write_cache(path: Path, table: pl.DataFrame, counts: dict[str, int]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.with_suffix(".counts.json").write_text(json.dumps(counts, sort_keys=True))
        os.replace(tmp.with_suffix(".counts.json"), path.with_suffix(".counts.json"))
        write_sealed(table, path)  # read back directly while its bytes are the ones written
    except OSError:
        pass  # a cache that cannot be written only costs time


def _read_counts(path: Path) -> dict[str, int]:
    return json.loads(path.with_suffix(".counts.json").read_text())


def mids(events: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    q = events.filter(pl.col("kind") == "quote")
    return q["ts"].to_numpy(), ((q["bid"] + q["ask"]) * 0.5).to_numpy()
