"""`fundarb record`: raw BTC websocket feeds with cryptofeed's own capture."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fundarb.cli.common import fail
from fundarb.replay.record import EXCHANGES, RecordError, start_recording


def record_command(
    exchange: str = typer.Option(..., "--exchange", help=f"one of: {', '.join(EXCHANGES)}"),
    symbol: list[str] = typer.Option(..., "--symbol", help="BTC symbol in cryptofeed's form (BTC-USDT, BTC-USDT-PERP, BTC-USD-PERP); repeat or comma-separate"),
    channels: Optional[str] = typer.Option(None, "--channels", help="comma-separated from ticker,trades,l2_book,funding (default: all four the exchange offers)"),
    out: Path = typer.Option(..., "--out", help="new or empty folder for the capture, e.g. recordings/NAME"),
    duration: Optional[float] = typer.Option(None, "--duration", help="stop after SECONDS (default: run until Ctrl-C)"),
) -> None:
    """Record raw BTC websocket feeds with cryptofeed's raw capture, replayable with cryptofeed's playback."""
    try:
        start_recording(exchange, symbol, channels, out, duration)
    except RecordError as e:  # the line fundarb's app would print, for an app that mounts this command alone
        fail(str(e))
