"""A loopback exchange emulator: Binance (spot, USD-M, COIN-M) and Bybit (spot, linear, inverse) over REST and websockets, on 127.0.0.1."""
