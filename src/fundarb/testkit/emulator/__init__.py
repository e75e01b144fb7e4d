"""A loopback exchange emulator: Binance (spot, USD-M) and Bybit over REST and websockets, on 127.0.0.1."""
