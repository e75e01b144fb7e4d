"""Record raw BTC exchange feeds with cryptofeed's own raw capture.

A recording is exactly what ``cryptofeed.raw_data_collection.playback`` reads
back: ``FeedHandler(raw_data_collection=AsyncFileCallback(out))`` writes
``<FEED>.0`` (the symbol-list REST reads and the ``configuration:`` line),
``<FEED>.ws.<n>.0`` (every websocket line as received, ``<ts>: <raw>``) and
``<FEED>.http.<n>.0`` (REST reads made while running, e.g. book snapshots).

Everything the user typed is checked before any network access (the feed's
symbol lookup is a REST call made when the feed object is built, so that
counts as connecting). Each capture goes into its own empty folder.

cryptofeed is imported only when a recording starts: ``fundarb`` commands that
do not record do not pay for its import.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import math
import re
import signal
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fundarb.core.errors import FundarbError

# fundarb/ccxt exchange id -> (cryptofeed feed class in cryptofeed.exchanges, what it carries)
EXCHANGES: dict[str, tuple[str, str]] = {
    "binance": ("Binance", "Binance spot"),
    "binanceusdm": ("BinanceFutures", "Binance USD-M futures and perpetuals"),
    "binancecoinm": ("BinanceDelivery", "Binance COIN-M (inverse) futures and perpetuals"),
    "bybit": ("Bybit", "Bybit spot and perpetuals"),
    "okx": ("OKX", "OKX spot, swaps and futures"),
    "coinbase": ("Coinbase", "Coinbase spot (Advanced Trade)"),
    "kraken": ("Kraken", "Kraken spot"),
    "krakenfutures": ("KrakenFutures", "Kraken futures and perpetuals"),
    "bitmex": ("Bitmex", "BitMEX perpetuals and futures"),
    "deribit": ("Deribit", "Deribit perpetuals and futures"),
}

# user-facing channel names; they are also the values of cryptofeed.defines
# TICKER, TRADES, L2_BOOK and FUNDING (checked in _cryptofeed_channel)
CHANNELS: tuple[str, ...] = ("ticker", "trades", "l2_book", "funding")

# no uvloop policy swap, no feedhandler.log in the working folder
CRYPTOFEED_CONFIG: dict[str, Any] = {"uvloop": False, "log": {"disabled": True}}

_RECEIVED = re.compile(r"^\d+(\.\d*)?: ")


class RecordError(FundarbError, ValueError):
    """A recording that cannot be started; the message names the bad input."""


@dataclass(frozen=True)
class RecordPlan:
    exchange: str
    feed_class: Any  # a cryptofeed Feed class
    symbols: tuple[str, ...]
    channels: tuple[str, ...]
    out: Path
    duration_s: float | None


@dataclass(frozen=True)
class Recording:
    out: Path
    feed_id: str
    files: tuple[tuple[str, int], ...]  # (file name, bytes), sorted by name
    messages: int  # websocket messages received and written
    stopped_by: str  # "duration" or "signal" (Ctrl-C / SIGTERM)

    @property
    def paths(self) -> list[str]:
        """The file list to hand to cryptofeed's ``playback(feed_id, paths)``."""
        return [str(self.out / name) for name, _ in self.files]


# ---------------------------------------------------------------- validation

def _split(values: str | Iterable[str] | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for v in values:
        for part in str(v).split(","):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return out


def _feed_class(exchange: str) -> Any:
    import cryptofeed.exchanges

    cls = getattr(cryptofeed.exchanges, EXCHANGES[exchange][0], None)
    if cls is None:
        raise RecordError(f"exchange {exchange!r}: the installed cryptofeed has no {EXCHANGES[exchange][0]} feed")
    return cls


def _cryptofeed_channel(name: str) -> str:
    from cryptofeed import defines

    cf = {"ticker": defines.TICKER, "trades": defines.TRADES, "l2_book": defines.L2_BOOK, "funding": defines.FUNDING}[name]
    assert cf == name, f"cryptofeed renamed channel {name} to {cf}"
    return cf


def _check_symbol(raw: str) -> str:
    sym = raw.upper()
    parts = sym.split("-")
    form = "cryptofeed's normalized form BASE-QUOTE[-PERP], e.g. BTC-USDT, BTC-USDT-PERP, BTC-USD-PERP"
    if len(parts) < 2 or not all(parts):
        raise RecordError(f"symbol {raw!r} is not in {form}")
    if parts[0] == "XBT":
        raise RecordError(f"symbol {raw!r}: write BTC, not XBT; cryptofeed names bitcoin BTC on every exchange (e.g. BTC-USD-PERP)")
    if parts[0] != "BTC":
        raise RecordError(f"symbol {raw!r}: this recorder records BTC only, and its base is {parts[0]}")
    if len(parts) > 3:
        raise RecordError(f"symbol {raw!r}: options are not recorded; give a spot, perpetual or dated future in {form}")
    return sym


def plan_recording(exchange: str, symbols: str | Iterable[str] | None, channels: str | Iterable[str] | None,
                   out: Path | str, duration_s: float | None = None) -> RecordPlan:
    """Check every input without touching the network or the disk.

    ``channels=None`` means every one of ticker, trades, l2_book, funding that
    the exchange's cryptofeed feed offers without API keys (funding only when
    every symbol is a perpetual). Raises RecordError naming the bad input.
    """
    ex = str(exchange).strip().lower()
    if ex not in EXCHANGES:
        raise RecordError(f"unknown exchange {exchange!r}; known: {', '.join(EXCHANGES)}")
    cls = _feed_class(ex)

    syms = [_check_symbol(s) for s in _split(symbols)]
    if not syms:
        raise RecordError("no symbol given; pass --symbol in cryptofeed's form, e.g. BTC-USDT or BTC-USDT-PERP")
    syms = list(dict.fromkeys(syms))
    all_perp = all(s.endswith("-PERP") for s in syms)

    def offered(name: str) -> bool:
        return _cryptofeed_channel(name) in cls.websocket_channels

    def needs_keys(name: str) -> bool:
        return bool(cls.is_authenticated_channel(_cryptofeed_channel(name)))

    if channels is None or (isinstance(channels, str) and not channels.strip()):
        chans = [c for c in CHANNELS if offered(c) and not needs_keys(c) and (c != "funding" or all_perp)]
        if not chans:
            raise RecordError(f"exchange {ex!r}: its cryptofeed feed offers none of {', '.join(CHANNELS)} without API keys")
    else:
        chans = [c.lower() for c in _split(channels)]
        if not chans:
            raise RecordError(f"no channel given; choose from {', '.join(CHANNELS)}")
        for c in chans:
            if c not in CHANNELS:
                raise RecordError(f"unknown channel {c!r}; choose from {', '.join(CHANNELS)}")
        for c in chans:
            if not offered(c):
                have = [x for x in CHANNELS if offered(x)]
                raise RecordError(f"channel {c!r} is not offered by cryptofeed's {cls.__name__} feed for {ex!r}; it offers {', '.join(have)}")
        for c in chans:
            if needs_keys(c):
                raise RecordError(f"channel {c!r} on {ex!r}: cryptofeed's {cls.__name__} feed subscribes to it "
                                  "only with API keys, which this recorder does not take")
        if "funding" in chans and not all_perp:
            spot = next(s for s in syms if not s.endswith("-PERP"))
            raise RecordError(f"channel 'funding' applies to perpetuals only, and {spot} is not one; record it without funding")
        chans = list(dict.fromkeys(chans))

    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise RecordError(f"--out {out} exists and is not a folder")
        if any(out.iterdir()):
            raise RecordError(f"--out {out} already holds files; each capture goes into its own empty folder")

    if duration_s is not None:
        try:
            d = float(duration_s)
        except (TypeError, ValueError):
            raise RecordError(f"--duration {duration_s!r} is not a number of seconds") from None
        if not math.isfinite(d) or d <= 0:
            raise RecordError(f"--duration {duration_s!r} must be a positive number of seconds")
        duration_s = d

    return RecordPlan(ex, cls, tuple(syms), tuple(chans), out, duration_s)


# ------------------------------------------------------------------ capture

def _capture_files(path: str):
    """cryptofeed's AsyncFileCallback with flushing made safe to repeat.

    Upstream ``stop()`` appends a newline to every file each time it runs
    (FeedHandler stop, atexit, garbage collection), and its async ``write``
    clears the buffer only after awaiting the disk, so a stop arriving during
    that await writes the same lines twice. Here the buffer is taken before
    writing, only pending lines are written, and ``close()`` drops the atexit
    hook. The line format is upstream's unchanged (``__call__`` is not touched).
    """
    from cryptofeed.raw_data_collection import AsyncFileCallback

    class CaptureFiles(AsyncFileCallback):
        def _append(self, uuid: str) -> None:
            lines, self.data[uuid] = self.data[uuid], []
            if not lines:
                return
            text = "\n".join(lines) + "\n"
            with open(f"{self.path}/{uuid}.{self.count[uuid]}", "a", encoding="utf-8") as fp:
                fp.write(text)
            self.pointer[uuid] += len(text.encode("utf-8"))
            if self.pointer[uuid] >= self.rotate:
                self.count[uuid] += 1
                self.pointer[uuid] = 0

        async def write(self, uuid):
            self._append(uuid)

        def stop(self):
            for uuid in list(self.data):
                self._append(uuid)

        def close(self) -> None:
            self.stop()
            atexit.unregister(self.__del__)

    return CaptureFiles(path)


class _OneLine(logging.Formatter):
    """cryptofeed's reconnect warnings as one line each, without tracebacks."""

    def format(self, record: logging.LogRecord) -> str:
        return f"cryptofeed: {' '.join(record.getMessage().split())}"


def _default_handler(raw_data_collection):
    from cryptofeed import FeedHandler

    return FeedHandler(config=CRYPTOFEED_CONFIG, raw_data_collection=raw_data_collection)


async def _ignore(obj, receipt_timestamp) -> None:
    return None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _symbol_urls(cls) -> list[str]:
    urls: list[str] = []
    for ep in cls.rest_endpoints:
        try:
            addr = ep.route("instruments")
        except Exception:  # noqa: BLE001 - only used to word an error
            continue
        urls.extend(addr if isinstance(addr, list) else [addr])
    return urls


def _build_feed(plan: RecordPlan):
    """Construct the feed; this reads the exchange's symbol list over REST."""
    from cryptofeed.exceptions import UnsupportedSymbol
    from cryptofeed.symbols import Symbols

    cls = plan.feed_class
    Symbols.data.pop(cls.id, None)  # read it afresh so this capture carries it for replay
    try:
        return cls(symbols=list(plan.symbols), channels=list(plan.channels), config=CRYPTOFEED_CONFIG,
                   callbacks={c: _ignore for c in plan.channels})
    except UnsupportedSymbol:
        listed = sorted(s for s in (Symbols.get(cls.id)[0] if Symbols.populated(cls.id) else {}) if s.split("-")[0] == "BTC")
        missing = [s for s in plan.symbols if s not in listed]
        shown = ", ".join(listed[:15]) + (", ..." if len(listed) > 15 else "")
        raise RecordError(f"symbol {', '.join(missing) or plan.symbols[0]} is not listed on {plan.exchange!r} "
                          f"(cryptofeed's symbol list from {', '.join(_symbol_urls(cls))}); BTC symbols there: {shown or 'none'}") from None
    except RecordError:
        raise
    except Exception as e:  # noqa: BLE001 - network, HTTP status, parse: all reported as one line
        raise RecordError(f"could not read {plan.exchange!r}'s symbol list from {', '.join(_symbol_urls(cls))}: {_one_line(e)}") from None


def _scan(out: Path) -> tuple[tuple[tuple[str, int], ...], int]:
    files = tuple(sorted((p.name, p.stat().st_size) for p in out.iterdir() if p.is_file()))
    messages = 0
    for name, _ in files:
        if ".ws." in name:
            with open(out / name, encoding="utf-8", errors="replace") as fp:
                messages += sum(1 for line in fp if _RECEIVED.match(line))
    return files, messages


def _remove_capture(out: Path, feed_id: str, made: list[Path]) -> None:
    """Undo a capture that never started: its files, then the folders we made."""
    if out.is_dir():
        for p in out.iterdir():
            if p.is_file() and p.name.startswith(f"{feed_id}."):
                p.unlink()
    for d in made:  # deepest first
        try:
            d.rmdir()
        except OSError:
            break


def start_recording(exchange: str, symbols: str | Iterable[str], channels: str | Iterable[str] | None,
                    out: Path, duration_s: float | None,
                    handler_factory: Callable[[Any], Any] | None = None) -> Recording:
    """Record ``channels`` of ``symbols`` on ``exchange`` into the empty folder ``out``.

    Runs until ``duration_s`` seconds have passed (None: until Ctrl-C/SIGTERM),
    then stops the feed handler, flushes and closes the capture files and
    prints what was written. ``handler_factory(raw_data_collection)`` builds
    the cryptofeed FeedHandler (default: ``FeedHandler(config=..., raw_data_collection=...)``).
    Raises RecordError for bad input (before any network) and for a failed
    symbol lookup (then nothing is left on disk).
    """
    plan = plan_recording(exchange, symbols, channels, out, duration_s)
    from cryptofeed.connection import Connection
    from cryptofeed.feedhandler import SIGNALS

    cls = plan.feed_class
    out = plan.out.absolute()
    made = [p for p in (out, *out.parents) if not p.exists()]
    out.mkdir(parents=True, exist_ok=True)

    print(f"recording {plan.exchange} {', '.join(plan.symbols)} [{', '.join(plan.channels)}] into {plan.out}"
          + (f" for {plan.duration_s:g} s" if plan.duration_s else "") + "; Ctrl-C stops", flush=True)

    main_thread = threading.current_thread() is threading.main_thread()
    saved_signals = {s: signal.getsignal(s) for s in SIGNALS} if main_thread else {}
    previous_raw_callback = Connection.raw_data_callback
    capture = _capture_files(str(out))
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    state = {"stopped_by": "signal"}
    log = logging.getLogger("feedhandler")
    log_handler = None
    if not log.handlers:  # cryptofeed's own logging is off (CRYPTOFEED_CONFIG): show its warnings briefly
        log_handler = logging.StreamHandler()
        log_handler.setLevel(logging.WARNING)
        log_handler.setFormatter(_OneLine())
        log.addHandler(log_handler)
    try:
        try:
            handler = (handler_factory or _default_handler)(capture)
            feed = _build_feed(plan)
            handler.add_feed(feed)
        except BaseException:
            Connection.raw_data_callback = previous_raw_callback
            capture.close()
            _remove_capture(out, cls.id, made)
            raise

        def on_duration() -> None:
            state["stopped_by"] = "duration"
            loop.stop()

        if plan.duration_s is not None:
            loop.call_later(plan.duration_s, on_duration)
        # SIGINT/SIGTERM raise SystemExit inside the loop; run() catches it,
        # stops the feeds, lets them close their connections and closes the loop
        handler.run(install_signal_handlers=main_thread)
    finally:
        Connection.raw_data_callback = previous_raw_callback
        capture.close()  # lines that arrived during the feeds' shutdown
        if not loop.is_closed():
            loop.close()
        asyncio.set_event_loop(None)
        if log_handler is not None:
            log.removeHandler(log_handler)
        for s, h in saved_signals.items():
            if h is not None:
                signal.signal(s, h)

    files, messages = _scan(out)
    rec = Recording(plan.out, cls.id, files, messages, state["stopped_by"])
    _print_summary(rec)
    return rec


def _print_summary(rec: Recording) -> None:
    why = "after the set duration" if rec.stopped_by == "duration" else "on request"
    print(f"stopped {why}: {rec.messages} websocket messages in {rec.out}", flush=True)
    width = max((len(n) for n, _ in rec.files), default=0)
    for name, size in rec.files:
        print(f"  {name:<{width}}  {size:>12,} bytes")
    if rec.messages == 0:
        print("  (no message was received: check the connection lines in the .ws. files)")
    print(f"replay: cryptofeed.raw_data_collection.playback({rec.feed_id!r}, <the files above>)", flush=True)
