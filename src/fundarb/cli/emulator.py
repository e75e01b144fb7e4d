"""`fundarb emulator`: the loopback exchange emulator of the test kit, served for manual runs."""

from __future__ import annotations

from typing import Optional

import typer

from fundarb.cli.common import fail


def emulator(
    port: int = typer.Option(8765, "--port", help="port on 127.0.0.1"),
    start: Optional[str] = typer.Option(None, "--start", help="the emulator clock, UTC ISO time inside the shipped data (default: its start)"),
    speed: float = typer.Option(0.0, "--speed", help="play the data forward this many seconds per second (default 0: the clock stays)"),
    fund: float = typer.Option(0.0, "--fund", help="USDT to put in each trading wallet (a synthetic balance), e.g. 100000"),
    api_key: Optional[list[str]] = typer.Option(None, "--api-key", help="accept only this API key (repeat for several; default: any key)"),
    fund_btc: float = typer.Option(0.0, "--fund-btc", help="BTC to put in each coin-margined wallet (Binance COIN-M, Bybit): an inverse short's initial margin"),
) -> None:
    """Serve Binance spot, USD-M and COIN-M, and Bybit v5 spot, linear and inverse (REST and websockets, market data and trading), and Coinbase and Kraken spot (REST), on 127.0.0.1 from the shipped real data, until Ctrl-C."""
    from fundarb.testkit.emulator.main import run_emulator

    try:
        run_emulator(port, start, speed, fund, api_key, fund_btc)
    except (ValueError, RuntimeError) as exc:
        fail(str(exc))
