"""The emulator from tests: start and stop a server, build real ccxt clients
pointed at it, and read the shipped closes it fills at (the oracle the tests
check its answers against).

With the test kit's pytest plugin loaded (``fundarb.testkit.pytest_plugin``),
a test asks for a fresh server by name::

    from fundarb.testkit.emulator.harness import ccxt_client

    def test_something(emulator, loopback_only):
        ex = ccxt_client(emulator, "binanceusdm")
        emulator.set_time("2024-01-10T08:30")
        ex.fetch_funding_rate("BTC/USDT:USDT")

``trading_client`` is the same with keys, for the trading endpoints; fund
its wallets first with ``emulator.accounts.fund(wallet, asset, amount)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import polars as pl

from fundarb.data.history import PRICES_FILE, SHIPPED_DIR, parse_time
from fundarb.testkit.emulator.server import EmulatorServer, ccxt_config, point_ccxt

EMULATOR_START = "2024-01-10T08:30"  # inside both venues' funding and the price window
MS_H = 3_600_000
SPOT_SYM, PERP_SYM = "BTC/USDT", "BTC/USDT:USDT"
KRAKEN_SECRET = "ZW11bGF0b3Itc2VjcmV0"  # base64 of "emulator-secret": Kraken's secrets are base64
# A TEST wallet for Hyperliquid clients: (address, private key). The key is
# sha256("fundarb emulator TEST wallet: holds nothing"), published here, so it
# must never hold anything; the address is the one that key signs as.
TEST_WALLET = ("0xeab9e1d3eec3ca4b8617fc8ec7d3991ec3a84849",
               "0x9fc75647ebf434ed6a76143563d38c3fde69f8dab97aa681ba805fd89f2492d8")


@contextmanager
def running_emulator(start: str | int | None = EMULATOR_START, seed: int = 0, port: int = 0) -> Iterator[EmulatorServer]:
    """A server of its own (own clock, faults and request log; the shipped
    data is loaded once per process), stopped when the block ends."""
    server = EmulatorServer(port=port, start=start, seed=seed)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def ccxt_client(server: EmulatorServer, exchange_id: str, **config: Any) -> Any:
    """A real ccxt client for ``exchange_id`` talking only to ``server``:
    rate limiter off (it throttles loopback too), options that avoid
    endpoints the emulator does not serve, a short timeout."""
    import ccxt

    config.setdefault("enableRateLimit", False)
    config.setdefault("timeout", 5000)
    exchange = getattr(ccxt, exchange_id)(ccxt_config(exchange_id, **config))
    return point_ccxt(exchange, server.base_url)


def trading_client(server: EmulatorServer, exchange_id: str, **config: Any) -> Any:
    """A real ccxt client with (fake) keys, for the signed endpoints. The
    emulator checks that calls are signed, not the HMAC. Bybit: preset the
    unified-account flags so ccxt skips account-type detection. Hyperliquid:
    a wallet address and private key (``TEST_WALLET``: a fixed TEST key that
    holds nothing anywhere; ccxt signs with it offline, the emulator checks a
    signature is present, not who signed)."""
    if exchange_id == "hyperliquid":
        config.setdefault("walletAddress", TEST_WALLET[0])
        config.setdefault("privateKey", TEST_WALLET[1])
        return ccxt_client(server, exchange_id, **config)
    config.setdefault("apiKey", "emulator-key")
    # Kraken's secrets are base64 (ccxt decodes one to sign)
    config.setdefault("secret", KRAKEN_SECRET if exchange_id == "kraken" else "emulator-secret")
    if exchange_id == "bybit":
        config["options"] = {"enableUnifiedAccount": True, "enableUnifiedMargin": False, **config.get("options", {})}
    return ccxt_client(server, exchange_id, **config)


# ---------------------------------------------------------------- the oracle: the parquet as shipped

def ms(text: str) -> int:
    """A UTC ISO time as ms."""
    return parse_time(text, "test") // 1_000_000


def shipped_closes() -> dict[str, pl.DataFrame]:
    """Shipped Binance hourly closes of spot and USD-M by ccxt symbol: open
    time, the instant the close is known (open + 1 h), and the close."""
    prices = pl.read_parquet(SHIPPED_DIR / PRICES_FILE)
    return {label: prices.filter((pl.col("market") == market) & (pl.col("symbol") == "BTCUSDT")).select(
                pl.col("open_time_ms"), (pl.col("open_time_ms") + MS_H).alias("close_ms"), pl.col("close")
            ).sort("open_time_ms")
            for market, label in (("spot", SPOT_SYM), ("perp_linear", PERP_SYM))}


def close_at(closes: dict[str, pl.DataFrame], symbol: str, now_ms: int) -> float:
    """The last close known at ``now_ms``: the price the emulator fills at."""
    return closes[symbol].filter(pl.col("close_ms") <= now_ms)["close"][-1]
