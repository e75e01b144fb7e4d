"""Build the test tape of recordings/binance_coinm_btcusd_2024-06-30: NOT a capture.

No real Binance COIN-M websocket capture is available offline, so this writes
raw-line files in the layout of a real one (``<receive ns> <raw JSON>``, one
Binance combined-stream envelope a line, as in
recordings/binance_btcusdt_2024-08-08) from the shipped REAL data:

- prices: the hourly closes in ``src/fundarb/data/shipped/prices_1h.parquet``
  (venue binance; spot BTCUSDT, perp_inverse BTCUSD_PERP) of the bars opened
  2024-06-30 20:00 .. 2024-07-01 00:00 UTC. A bar's close is stamped at its
  Binance kline close time (open + 1 h - 1 ms): the 23:00 bar's close comes
  1 ms before the 2024-07-01 00:00 settlement. Received at that instant (no
  latency is added).
- funding: the real BTCUSD_PERP settlements in
  ``src/fundarb/data/shipped/funding_settlements.parquet`` (venue binance).

One message per stream per hourly close:

- spot ``btcusdt@bookTicker``: ``b`` = ``a`` = the spot close (the data holds
  closes, not a book: no spread is invented). ``B``/``A`` are required by
  cryptofeed's spot handler to recognise a book ticker and are not in the data:
  they are ``SPOT_SIZE`` (5 BTC, the replay config's ``spot.depth_btc``, the
  depth the simulator assumes for a quote without sizes, so it changes nothing).
- perp ``btcusd_perp@bookTicker``: ``b`` = ``a`` = the COIN-M close; no
  ``B``/``A`` (sizes are not in the data and the COIN-M handler does not need
  them: the replay then takes ``perp.depth_btc``, as for history bars).
- perp ``btcusd_perp@markPrice`` (``markPriceUpdate``): ``p`` = the COIN-M close
  (the data has no mark series; backtests let the same close stand in), ``T``
  = the next real settlement, ``r`` = the last real settled rate (the data
  holds no running estimates: the loopback emulator's rule, no look-ahead),
  except on the close of the hour that ends at a settlement, which carries that
  settlement's real rate (Binance's running estimate at that instant is the
  rate it settles). No ``P`` (estimated settle price) or ``i`` (index): not in
  the data.
- update ids ``u`` are the event time in ms (not in the data).

Deterministic: the same data gives the same bytes (gzip without a timestamp).

    .venv/bin/python benchmarks/make_coinm_tape.py [--out recordings/binance_coinm_btcusd_2024-06-30]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from fundarb.data.history import FUNDING_FILE, PRICES_FILE, SHIPPED_DIR

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "recordings" / "binance_coinm_btcusd_2024-06-30"
FIRST_BAR = datetime(2024, 6, 30, 20, tzinfo=UTC)  # opens of the bars whose closes are replayed
LAST_BAR = datetime(2024, 7, 1, 0, tzinfo=UTC)
HOUR_MS = 3_600_000
SPOT_SIZE = "5.00000000"  # BTC: not in the data; the replay config's spot.depth_btc
SPOT_FILE = "spot_btcusdt_20240630.gz"
PERP_FILE = "coinm_btcusd_perp_20240630.gz"


def _dec(x: float, places: int) -> str:
    """``x`` as Binance writes it, with ``places`` decimals, exactly."""
    text = f"{x:.{places}f}"
    if float(text) != x:
        raise ValueError(f"{x!r} does not fit {places} decimals")
    return text


def _closes(market: str, symbol: str) -> dict[int, float]:
    """Close time (open + 1 h - 1 ms) -> close, for the window's bars."""
    p = pl.read_parquet(SHIPPED_DIR / PRICES_FILE).filter(
        (pl.col("venue") == "binance") & (pl.col("market") == market) & (pl.col("symbol") == symbol)
        & (pl.col("open_time_ms") >= int(FIRST_BAR.timestamp() * 1000)) & (pl.col("open_time_ms") <= int(LAST_BAR.timestamp() * 1000))
    ).sort("open_time_ms")
    expected = (int((LAST_BAR - FIRST_BAR).total_seconds()) // 3600) + 1
    if p.height != expected or p["close"].null_count():
        raise SystemExit(f"{market} {symbol}: {p.height} bars, {p['close'].null_count()} without a close; want {expected} closes")
    return {int(t) + HOUR_MS - 1: float(c) for t, c in zip(p["open_time_ms"], p["close"])}


def _settlements() -> list[tuple[int, float]]:
    f = pl.read_parquet(SHIPPED_DIR / FUNDING_FILE).filter((pl.col("venue") == "binance") & (pl.col("symbol") == "BTCUSD_PERP"))
    return sorted((int(t), float(r)) for t, r in zip(f["funding_time_ms"], f["funding_rate"]))


def _funding_at(ms: int, settlements: list[tuple[int, float]]) -> tuple[int, float]:
    """(next settlement time, r) a markPriceUpdate at ``ms`` carries."""
    nxt = next((t, r) for t, r in settlements if t > ms)
    if ms + 1 == nxt[0]:  # the close of the hour that ends at the settlement
        return nxt
    last = [r for t, r in settlements if t <= ms]
    return nxt[0], last[-1]


def _line(ms: int, stream: str, data: dict) -> str:
    return f"{ms * 1_000_000} {json.dumps({'stream': stream, 'data': data}, separators=(',', ':'))}\n"


def tape() -> dict[str, str]:
    """File name -> its text."""
    spot, perp, settlements = _closes("spot", "BTCUSDT"), _closes("perp_inverse", "BTCUSD_PERP"), _settlements()
    if spot.keys() != perp.keys():
        raise SystemExit("spot and COIN-M closes differ in time")
    spot_lines, perp_lines = [], []
    for ms in sorted(spot):
        s = _dec(spot[ms], 8)
        spot_lines.append(_line(ms, "btcusdt@bookTicker", {"u": ms, "s": "BTCUSDT", "b": s, "B": SPOT_SIZE, "a": s, "A": SPOT_SIZE}))
        p = _dec(perp[ms], 1)
        perp_lines.append(_line(ms, "btcusd_perp@bookTicker",
                                {"e": "bookTicker", "u": ms, "s": "BTCUSD_PERP", "ps": "BTCUSD", "b": p, "a": p, "T": ms, "E": ms}))
        nxt, rate = _funding_at(ms, settlements)
        perp_lines.append(_line(ms, "btcusd_perp@markPrice",
                                {"e": "markPriceUpdate", "E": ms, "s": "BTCUSD_PERP", "p": _dec(perp[ms], 8), "r": _dec(rate, 8), "T": nxt}))
    return {SPOT_FILE: "".join(spot_lines), PERP_FILE: "".join(perp_lines)}


def write(out: Path) -> dict[str, str]:
    """Write the tape into ``out``; file name -> sha256."""
    out.mkdir(parents=True, exist_ok=True)
    digests = {}
    for name, text in tape().items():
        with open(out / name, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            gz.write(text.encode())
        digests[name] = hashlib.sha256((out / name).read_bytes()).hexdigest()
    return digests


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    for name, digest in write(args.out).items():
        print(f"{digest}  {args.out / name}")


if __name__ == "__main__":
    main()
