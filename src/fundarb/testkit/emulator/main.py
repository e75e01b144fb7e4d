"""`fundarb emulator`: serve the emulator, REST and websockets, on 127.0.0.1 until Ctrl-C."""

from __future__ import annotations

import math
import time

import fundarb.testkit.emulator.ws  # noqa: F401  (mounts the websocket streams)
from fundarb.data.history import fmt_time
from fundarb.testkit.emulator.server import EmulatorServer

TRADING_WALLETS = ("binance", "binanceusdm", "bybit", "coinbase", "kraken")  # coinbase, kraken: spot (REST only)
COIN_WALLETS = ("binancecoinm", "bybit")  # the wallets an inverse perp margins in BTC


def run_emulator(port: int = 8765, start: str | None = None, speed: float = 0.0, fund: float = 0.0,
                 api_keys: list[str] | None = None, fund_btc: float = 0.0) -> None:
    """Serve on 127.0.0.1:``port`` until Ctrl-C, with the clock at ``start``;
    ``speed`` > 0 plays the real data forward that many seconds per second
    (0: the clock stays where it is). ``fund`` puts that many USDT (a
    SYNTHETIC balance) in each trading wallet, ``fund_btc`` that many BTC in
    each coin-margined one (the inverse short's initial margin); ``api_keys``,
    when given, are the only keys the signed endpoints accept."""
    if not (speed >= 0 and math.isfinite(speed)):
        raise ValueError(f"--speed must be a number >= 0, got {speed}")
    for name, amount, unit in (("--fund", fund, "USDT"), ("--fund-btc", fund_btc, "BTC")):
        if not (amount >= 0 and math.isfinite(amount)):
            raise ValueError(f"{name} must be a number of {unit} >= 0, got {amount}")
    server = EmulatorServer(port=port, start=start).start()
    if api_keys:
        server.accounts.api_keys = set(api_keys)
    for wallet in TRADING_WALLETS if fund else ():
        server.accounts.fund(wallet, "USDT", fund)
    for wallet in COIN_WALLETS if fund_btc else ():
        server.accounts.fund(wallet, "BTC", fund_btc)
    clock = f"{speed:g} s per second" if speed else "clock fixed"
    try:
        print(f"fundarb exchange emulator on {server.base_url}  (now {fmt_time(server.now_ns)} UTC, {clock})")
        print("venues: binance (/api/v3, /sapi), binanceusdm (/fapi), binancecoinm (/dapi), bybit (/v5: spot, linear, "
              "inverse); market data and trading, REST and websockets; coinbase (/api/v3/brokerage, /v2) and kraken "
              "(/0): spot BTC/USDT, REST only, at Binance's spot closes as their stand-in prices")
        if fund:
            print(f"wallets {', '.join(TRADING_WALLETS)}: {fund:,.2f} USDT each (synthetic balances)")
        if fund_btc:
            print(f"wallets {', '.join(COIN_WALLETS)}: {fund_btc:g} BTC each (synthetic balances)")
        print(f"API keys: {'only the ' + str(len(api_keys)) + ' given with --api-key' if api_keys else 'any (the signature is not checked)'}")
        print("point ccxt at it:")
        print("    from fundarb.support.ccxt_urls import point_ccxt; from fundarb.venues import ccxt_config")
        print(f"    ex = point_ccxt(ccxt.binanceusdm(ccxt_config('binanceusdm')), '{server.base_url}')")
        print("Ctrl-C stops it.", flush=True)
        while True:
            time.sleep(1.0 if speed else 3600)
            if speed:
                try:
                    server.advance(int(speed * 1e9))
                except ValueError:  # the end of the shipped data
                    print(f"the data ends at {fmt_time(server.now_ns)} UTC; the clock stops here", flush=True)
                    speed = 0.0
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
